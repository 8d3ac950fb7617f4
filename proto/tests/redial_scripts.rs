//! Scripted scenarios of [`Redial`], a client's choice of when to dial its
//! peer: each file in `tests/redial/` is a list of commands (`> command`),
//! each followed by what the core printed (see `support` for the runner).
//!
//! Commands, with times in milliseconds from the script's start:
//!
//! ```text
//! > need T                 a caller needs a connection at T; prints the decision and the state
//! > dialed T ok            the dial in flight connected at T
//! > dialed T fails REASON  the dial in flight failed at T; prints the backoff and the state
//! ```

// The runner; this script needs no `list`.
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use ringup_proto::redial::Redial;

struct Scene {
    origin: Instant,
    redial: Redial,
}

impl Scene {
    fn at(&self, ms: &str) -> Instant {
        self.origin + Duration::from_millis(ms.parse().unwrap())
    }

    fn run(&mut self, command: &str) -> String {
        let words: Vec<&str> = command.split_whitespace().collect();
        match words.as_slice() {
            ["need", t] => {
                let decision = self.redial.need(self.at(t));
                format!("{decision} | {}", self.redial)
            }
            ["dialed", t, "ok"] => {
                self.redial.dialed(self.at(t), Ok(()));
                format!("{}", self.redial)
            }
            ["dialed", t, "fails", reason @ ..] => {
                let backoff = self.redial.dialed(self.at(t), Err(reason.join(" ")));
                format!("backoff {backoff:?} | {}", self.redial)
            }
            _ => panic!("unknown command: {command}"),
        }
    }
}

#[test]
fn redial_scripts() {
    support::check_scripts("tests/redial", |script| {
        let mut scene = Scene { origin: Instant::now(), redial: Redial::default() };
        support::replay(script, |command| scene.run(command))
    });
}
