//! The API token a command-line tool sends.

use std::path::PathBuf;

use anyhow::Context;

/// The token the CLI sends: `RINGUP_TOKEN`, else the file named by
/// `RINGUP_TOKEN_FILE`, else by `RINGUP_ADMIN_TOKEN_FILE` (a router's root
/// token, as in the router's container), else the local cluster's
/// `admin-token` (under `RINGUP_LOCAL_DIR`, by default `.ringup/local`) if
/// it exists.
pub fn token_from_env() -> anyhow::Result<Option<String>> {
    if let Ok(token) = std::env::var("RINGUP_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok(Some(token.trim().to_string()));
    }
    let named = std::env::var_os("RINGUP_TOKEN_FILE").or_else(|| std::env::var_os("RINGUP_ADMIN_TOKEN_FILE"));
    let (path, named) = match named {
        Some(path) => (PathBuf::from(path), true),
        None => {
            let dir =
                std::env::var_os("RINGUP_LOCAL_DIR").map_or_else(|| PathBuf::from(".ringup/local"), PathBuf::from);
            (dir.join("admin-token"), false)
        }
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if !named && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read the token file {}", path.display())),
    }
}
