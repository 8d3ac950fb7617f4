//! The runner shared by the scripted scenario tests: a script is a list of
//! commands (`> command`), each followed by what it printed. The runner
//! replays every script of a directory and compares the whole text;
//! `UPDATE_SCRIPTS=1 cargo test` rewrites the files with what the code
//! prints now, for review in the diff.

use std::fmt::Write as _;
use std::path::Path;

/// Replays a script with `run`, which takes one command and returns what it
/// printed: keeps comments, blank lines and commands, and puts under each
/// command what it printed now.
pub fn replay(script: &str, mut run: impl FnMut(&str) -> String) -> String {
    let mut out = String::new();
    for line in script.lines() {
        if let Some(command) = line.strip_prefix("> ") {
            writeln!(out, "{line}").unwrap();
            for printed in run(command).lines() {
                writeln!(out, "{printed}").unwrap();
            }
        } else if line.is_empty() || line.starts_with('#') {
            writeln!(out, "{line}").unwrap();
        }
    }
    out
}

/// Replays every script in `dir` (relative to the crate) with `replay`,
/// which starts each from a fresh scene; fails listing the scripts whose
/// output differs.
pub fn check_scripts(dir: &str, replay: impl Fn(&str) -> String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty(), "no scripts in {}", dir.display());
    let mut failed = Vec::new();
    for file in files {
        let script = std::fs::read_to_string(&file).unwrap();
        let now = replay(&script);
        if now == script {
            continue;
        }
        if std::env::var_os("UPDATE_SCRIPTS").is_some() {
            std::fs::write(&file, &now).unwrap();
        } else {
            failed.push(format!("== {}\n-- expected\n{script}\n-- printed\n{now}", file.display()));
        }
    }
    assert!(failed.is_empty(), "scenarios differ:\n{}", failed.join("\n"));
}

/// Items separated by spaces.
pub fn list<T: ToString>(items: &[T]) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(" ")
}
