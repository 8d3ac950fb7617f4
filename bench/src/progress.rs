//! The progress line on stderr, once a second while the clients run:
//! elapsed time, requests and records so far with their rates over the
//! last second, and errors.
//!
//! On a terminal it is an `indicatif` spinner that rewrites itself in
//! place. Elsewhere (a log file, a pipe) indicatif draws nothing, so one
//! plain line a second is printed instead.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::oneshot;

/// Counters the clients add to and the progress line reads.
#[derive(Debug, Default)]
pub struct Progress {
    requests: AtomicU64,
    records: AtomicU64,
    errors: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    requests: u64,
    records: u64,
    errors: u64,
}

impl Progress {
    /// Counts one answered request: its records, or an error.
    pub fn count(&self, outcome: &Result<(u64, u64), String>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok((records, _)) => self.records.fetch_add(*records, Ordering::Relaxed),
            Err(_) => self.errors.fetch_add(1, Ordering::Relaxed),
        };
    }

    fn read(&self) -> Counts {
        Counts {
            requests: self.requests.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// One progress line: `now` after `elapsed`, with rates against `before`,
/// the counts one second earlier.
fn line(elapsed: Duration, now: Counts, before: Counts) -> String {
    format!(
        "{:>6.1}s  {} requests ({}/s)  {} records ({}/s)  {} errors",
        elapsed.as_secs_f64(),
        now.requests,
        now.requests - before.requests,
        now.records,
        now.records - before.records,
        now.errors
    )
}

/// Where the lines go: a spinner on a terminal, plain lines elsewhere.
enum Sink {
    Spinner(ProgressBar),
    Lines,
}

impl Sink {
    fn new() -> Self {
        if !std::io::stderr().is_terminal() {
            return Sink::Lines;
        }
        let style = ProgressStyle::with_template("{spinner} {msg}").expect("a valid progress template");
        let bar = ProgressBar::new_spinner().with_style(style);
        bar.enable_steady_tick(Duration::from_millis(250));
        Sink::Spinner(bar)
    }

    fn show(&self, line: String) {
        match self {
            Sink::Spinner(bar) => bar.set_message(line),
            Sink::Lines => eprintln!("{line}"),
        }
    }

    /// Leaves the last line on a terminal, if there was one.
    fn finish(self) {
        match self {
            Sink::Spinner(bar) if bar.message().is_empty() => bar.finish_and_clear(),
            Sink::Spinner(bar) => bar.finish(),
            Sink::Lines => {}
        }
    }
}

/// Shows a line a second from `started` until `stop` fires (or its sender
/// is dropped).
pub async fn show(progress: Arc<Progress>, started: Instant, mut stop: oneshot::Receiver<()>) {
    let sink = Sink::new();
    let mut before = Counts::default();
    let mut tick = tokio::time::interval_at((started + Duration::from_secs(1)).into(), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                let now = progress.read();
                sink.show(line(started.elapsed(), now, before));
                before = now;
            }
        }
    }
    sink.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_totals_and_the_last_seconds_rates() {
        let before = Counts { requests: 100, records: 5000, errors: 0 };
        let now = Counts { requests: 250, records: 12_500, errors: 2 };
        assert_eq!(
            line(Duration::from_millis(2500), now, before),
            "   2.5s  250 requests (150/s)  12500 records (7500/s)  2 errors"
        );
    }

    #[test]
    fn counting_adds_records_or_errors() {
        let progress = Progress::default();
        progress.count(&Ok((50, 9000)));
        progress.count(&Err("timeout".into()));
        assert_eq!(progress.read(), Counts { requests: 2, records: 50, errors: 1 });
    }
}
