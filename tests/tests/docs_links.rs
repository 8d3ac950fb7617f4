//! The docs are a map that stays inside the repository: every markdown link
//! in `README.md` and in the `.md` files under `docs/` names a file or
//! directory of this repository, relative to the page that links it, and
//! never a web address or a path outside the clone. The README stays short
//! enough to read as a first screen and a list of pages; the detail lives
//! in `docs/`.

use std::fs;
use std::path::{Component, Path, PathBuf};

/// The most lines the README may have.
const README_MAX_LINES: usize = 250;

/// The repository's root: the directory above this crate.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate lies inside the repository").to_path_buf()
}

/// `README.md` and every `.md` file under `docs/`, in a stable order.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut pages = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a readable directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "md") {
                pages.push(path);
            }
        }
    }
    pages.sort();
    pages
}

/// The target of every link `[text](target)` on `line`, without a title.
fn link_targets(line: &str) -> Vec<&str> {
    line.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &line[at + 2..];
            rest.find(')').map(|end| rest[..end].split_whitespace().next().unwrap_or(""))
        })
        .collect()
}

/// `path` with its `.` and `..` components resolved, without asking the
/// file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// What is wrong with a link to `target` from a page in `dir`, if anything.
fn problem(root: &Path, dir: &Path, target: &str) -> Option<&'static str> {
    if target.starts_with("http://") || target.starts_with("https://") {
        return Some("a web address");
    }
    if target.contains("../shared") {
        return Some("a path outside the repository");
    }
    let file = target.split('#').next().unwrap_or("");
    let path = normalize(&dir.join(file));
    if !path.starts_with(root) {
        Some("a path outside the repository")
    } else if !path.exists() {
        Some("no such file or directory")
    } else {
        None
    }
}

#[test]
fn every_link_in_the_docs_names_a_file_of_the_repository() {
    let root = root();
    let mut bad = Vec::new();
    for page in pages(&root) {
        let text = fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        let dir = page.parent().expect("a page lies in a directory");
        let name = page.strip_prefix(&root).unwrap_or(&page).display().to_string();
        let mut in_code = false;
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
            }
            if in_code {
                continue;
            }
            for target in link_targets(line).into_iter().filter(|t| !t.starts_with('#')) {
                if let Some(why) = problem(&root, dir, target) {
                    bad.push(format!("{name}:{}: ({target}) is {why}", number + 1));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{} bad links:\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn the_readme_is_a_map_not_a_wall() {
    let lines = fs::read_to_string(root().join("README.md")).expect("README.md is readable").lines().count();
    assert!(lines <= README_MAX_LINES, "README.md has {lines} lines, past {README_MAX_LINES}: move detail to docs/");
}
