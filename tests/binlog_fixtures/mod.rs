//! Where the real binlog files of `shared/fixtures/mysql-binlogs/` are: the nearest such
//! folder above this crate (the main checkout and its worktrees sit at different depths).

// Each test crate that includes this module uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The fixtures folder; panics with the places it looked when there is none.
pub fn dir() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .map(|a| a.join("shared/fixtures/mysql-binlogs"))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no shared/fixtures/mysql-binlogs in {} or a folder above it",
                crate_dir.display()
            )
        })
}

/// Every binlog file of the fixtures folder, sorted by name.
pub fn files() -> Vec<PathBuf> {
    let dir = dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "README.md")
        .collect();
    files.sort();
    files
}
