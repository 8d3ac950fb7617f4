//! `ringup key add`: makes or extends a data key file for encryption at
//! rest (see the node's `--data-key-file`). Each line is `ID HEX`, a
//! 256-bit key; the highest id seals new values. Adding a key is rotating:
//! copy the file to every node and restart them one by one; values sealed
//! under older keys stay readable as long as their lines stay.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ring::rand::{SecureRandom, SystemRandom};

/// Arguments of `ringup key`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: KeyAction,
}

/// The key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Add a new random key to the file (made, readable by its owner only,
    /// if missing), with the next id; it seals every value written after
    /// the nodes restart with the file.
    Add {
        /// The key file.
        #[arg(long, env = "RINGUP_DATA_KEY_FILE")]
        file: PathBuf,
        /// Only make the file if it is missing; leave an existing one as it is.
        #[arg(long)]
        if_missing: bool,
    },
}

/// Runs `ringup key`.
pub fn run(args: KeyArgs) -> anyhow::Result<()> {
    match args.action {
        KeyAction::Add { file, if_missing } => {
            if if_missing && file.exists() {
                println!("{} exists; left as it is", file.display());
                return Ok(());
            }
            let id = add_key(&file)?;
            println!(
                "added data key {id} to {}; it seals new values once the nodes restart with the file",
                file.display()
            );
            Ok(())
        }
    }
}

/// Appends a new random key to `path` with the next id; returns the id.
pub fn add_key(path: &Path) -> anyhow::Result<u32> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut last = 0u32;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let id = line.split_whitespace().next().and_then(|id| id.parse::<u32>().ok());
        match id {
            Some(id) => last = last.max(id),
            None => bail!("{} is not a data key file: {line:?}", path.display()),
        }
    }
    let id = last.checked_add(1).context("no key id is left")?;
    let mut key = [0u8; 32];
    SystemRandom::new().fill(&mut key).map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if text.is_empty() {
        writeln!(file, "# ringup data keys: ID HEX (256 bits). The highest id seals new values;")?;
        writeln!(file, "# keep every older line while values sealed under it may remain.")?;
    }
    writeln!(file, "{id} {hex}")?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_added_with_the_next_id() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data-keys");
        assert_eq!(add_key(&file).unwrap(), 1);
        assert_eq!(add_key(&file).unwrap(), 2);
        let text = std::fs::read_to_string(&file).unwrap();
        let keys: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().all(|l| l.split_once(' ').unwrap().1.len() == 64), "{text}");
        assert_ne!(keys[0][2..], keys[1][2..], "random keys");
        std::fs::write(&file, "not a key file\n").unwrap();
        assert!(add_key(&file).is_err());
    }
}
