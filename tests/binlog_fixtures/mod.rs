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

/// The schema file (CREATE TABLE statements, for `replay --schema-from file:PATH`) of a fixture
/// whose tables were created before the file begins and whose table maps carry no column names
/// (no FULL row metadata): without it, its rows cannot be named. Each file says where its
/// definitions come from. None for the other fixtures: FULL metadata names their columns, or
/// the file's own CREATE TABLE statements do.
pub fn schema_file(fixture: &str) -> Option<PathBuf> {
    let schema = match fixture {
        "update-full-row.binlog"
        | "update-partial-row.binlog"
        | "write-full-row.binlog"
        | "write-partial-row.binlog" => "ndb_binlog_variants",
        "minimal_row_metadata.000001" => "minimal_row_metadata",
        "time_issue.000001" => "time_issue",
        "transaction_compression.000001" => "transaction_compression",
        "binlog_transaction_with_GTID_TAG.000001" => "binlog_transaction_with_GTID_TAG",
        _ => return None,
    };
    Some(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/binlog_fixtures")
            .join(format!("{schema}.sql")),
    )
}

/// `--schema-from file:PATH` for `fixture` (see [`schema_file`]), if it has a schema file.
pub fn schema_from(fixture: &str) -> Option<String> {
    schema_file(fixture).map(|p| format!("file:{}", p.display()))
}

/// The schema history `binsync replay` starts with for `--schema-from` (as its `main` reads
/// it): the catalog of a schema file; None without one. The tests read no server.
pub fn history(from: Option<&binsync::config::SchemaFrom>) -> Option<binsync::schema::Catalog> {
    match from? {
        binsync::config::SchemaFrom::File(path) => {
            Some(binsync::schema::ddl::catalog_from_file(path).unwrap_or_else(|e| panic!("{e}")))
        }
        binsync::config::SchemaFrom::Source(_) => panic!("the fixture tests read no server"),
    }
}

/// The catalog of `fixture`'s schema file, empty without one: what the decoder of
/// `binsync replay` starts from (the files' own DDL adds to it).
pub fn catalog(fixture: &str) -> binsync::schema::Catalog {
    schema_file(fixture)
        .map(|p| binsync::schema::ddl::catalog_from_file(&p).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_default()
}
