//! The schema history's model (issue 11): tables as their DDL left them, and DDL statements
//! read from the binlog applied to them ([`ddl`]).
//!
//! Why: without `binlog_row_metadata=FULL` a table-map event carries column types but no
//! names, key, ENUM/SET labels or JSON-ness; information_schema only knows the table as it is
//! *now*, so rows written before a DDL would be decoded with the wrong version. The history
//! holds every version, keyed by the position of the DDL that made it.
//!
//! Invariants:
//! - A [`Table`] lists its columns in table order, as a row image does.
//! - `complete == false` means the columns are not known (a `CREATE TABLE ... AS SELECT`, or
//!   a DDL the parser could not read): decoding a row of that version without FULL metadata is
//!   a definite error, never a guess.
//! - Names compare as MySQL compares them on Linux: databases and tables case-sensitively,
//!   columns and indexes case-insensitively.
//! - A table's entity id is its [`Table::key`]: the PRIMARY KEY, else the UNIQUE index the
//!   server promotes to primary key (InnoDB and MariaDB do; FULL metadata names it), so the
//!   id is the same with and without `binlog_row_metadata=FULL` and in the snapshot.
//! - `Table::unique` is in the server's order of its keys (what `SHOW CREATE TABLE` prints),
//!   kept by [`Table::sort_unique`] after every statement that rebuilds the table.

pub mod ddl;
pub mod history;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sqlparser::ast::DataType;

/// One column as its DDL declared it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// The declared type (sqlparser's reading of the DDL).
    pub data_type: DataType,
    pub nullable: bool,
    /// MySQL's `JSON` type, or MariaDB's `LONGTEXT ... CHECK (json_valid(col))`.
    pub json: bool,
    /// `CHARACTER SET binary`, or a binary string type (BINARY, VARBINARY, BLOB).
    pub binary: bool,
    /// A generated column (`GENERATED ALWAYS AS ...`).
    pub generated: bool,
}

impl Column {
    /// `unsigned` integer, decimal or float type.
    pub fn unsigned(&self) -> bool {
        let text = self.data_type.to_string().to_ascii_uppercase();
        text.contains("UNSIGNED")
    }

    /// The column as a `ddl` operation lists it (docs/sync-api.md): name, declared type,
    /// nullable, JSON.
    pub fn contract_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("name".into(), self.name.clone().into());
        m.insert("type".into(), self.data_type.to_string().into());
        m.insert("nullable".into(), self.nullable.into());
        m.insert("json".into(), self.json.into());
        m
    }

    /// ENUM or SET labels, in declaration order (empty for any other type).
    pub fn labels(&self) -> Vec<String> {
        match &self.data_type {
            DataType::Enum(members, _) => members
                .iter()
                .map(|m| match m {
                    sqlparser::ast::EnumMember::Name(n) => n.clone(),
                    sqlparser::ast::EnumMember::NamedValue(n, _) => n.clone(),
                })
                .collect(),
            DataType::Set(labels) => labels.clone(),
            _ => Vec::new(),
        }
    }
}

/// A UNIQUE index (other indexes are not tracked: they change no id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniqueKey {
    /// Its name, as `DROP INDEX` names it (an unnamed one is named after its first column, as
    /// the server names it).
    pub name: String,
    /// Column names, in key order.
    pub columns: Vec<String>,
    /// A column indexed by a prefix (`v(10)`) or an expression: never promoted.
    #[serde(default)]
    pub partial: bool,
    /// MariaDB's long unique (`USING HASH`, or BLOB/TEXT without a prefix): never promoted,
    /// and ordered after every other unique key.
    #[serde(default)]
    pub hash: bool,
}

/// A table version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub db: String,
    pub name: String,
    pub columns: Vec<Column>,
    /// The declared PRIMARY KEY's column names, in key order (empty: none). The id's columns
    /// are [`Table::key`], which falls back on a unique key without one.
    pub pk: Vec<String>,
    /// UNIQUE indexes, in the server's order (see [`Table::sort_unique`]). Absent from
    /// versions written before they were tracked: read as none.
    #[serde(default)]
    pub unique: Vec<UniqueKey>,
    /// Whether `columns` is the whole table (see the module docs).
    pub complete: bool,
}

impl Table {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// Declared primary key column indexes, in key order.
    pub fn pk_indexes(&self) -> Vec<usize> {
        self.pk
            .iter()
            .filter_map(|n| self.column_index(n))
            .collect()
    }

    /// The primary key as the server sees it, the entity id's columns in key order: the
    /// PRIMARY KEY, else the first unique key (in [`Table::unique`]'s order) whose columns
    /// are all NOT NULL and whole (no prefix, no hash), which MariaDB and InnoDB promote to
    /// primary key and `binlog_row_metadata=FULL` names. Empty: none (the id is the row).
    pub fn key(&self) -> &[String] {
        if !self.pk.is_empty() {
            return &self.pk;
        }
        self.unique
            .iter()
            .find(|u| self.promotable(u))
            .map(|u| u.columns.as_slice())
            .unwrap_or(&[])
    }

    /// [`Table::key`]'s column indexes, in key order.
    pub fn key_indexes(&self) -> Vec<usize> {
        self.key()
            .iter()
            .filter_map(|n| self.column_index(n))
            .collect()
    }

    /// Whether the server would take `u` as the primary key (of a table without one).
    fn promotable(&self, u: &UniqueKey) -> bool {
        !u.partial && !u.hash && !u.columns.is_empty() && u.columns.iter().all(|c| self.not_null(c))
    }

    fn not_null(&self, column: &str) -> bool {
        self.column_index(column)
            .is_some_and(|i| !self.columns[i].nullable)
    }

    /// Puts `unique` in the order the server stores keys in when it (re)builds a table (its
    /// `sort_keys`, a stable order over the keys as they were plus the added ones): long
    /// uniques last; before them, keys over NOT NULL columns first, and among those, keys
    /// without prefix parts first. MariaDB promotes the first of them, so after
    /// `MODIFY c ... NOT NULL` an older NOT NULL key stays ahead of `c`'s.
    pub fn sort_unique(&mut self) {
        let mut unique = std::mem::take(&mut self.unique);
        unique.sort_by_key(|u| {
            // Two long uniques keep their order whatever their columns.
            let nullable = !u.hash && !u.columns.iter().all(|c| self.not_null(c));
            (u.hash, nullable, u.partial && !u.hash)
        });
        self.unique = unique;
    }

    /// The unique key named `name`, if any.
    pub fn unique_index(&self, name: &str) -> Option<usize> {
        self.unique
            .iter()
            .position(|u| u.name.eq_ignore_ascii_case(name))
    }

    pub fn qualified(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }
}

/// A captured table whose definition at the stream's start is unknown (a DDL changed it
/// between the start and where the history was seeded): from the end of the DDL at
/// `file:end` on, `table` (read at the seed) holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub file: String,
    pub end: u64,
    pub table: Table,
}

/// Every table (and database) the history knows, as of one position.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    pub databases: BTreeSet<String>,
    pub tables: BTreeMap<(String, String), Table>,
}

impl Catalog {
    pub fn table(&self, db: &str, name: &str) -> Option<&Table> {
        self.tables.get(&(db.to_string(), name.to_string()))
    }

    pub fn insert(&mut self, table: Table) {
        self.databases.insert(table.db.clone());
        self.tables
            .insert((table.db.clone(), table.name.clone()), table);
    }

    pub fn remove(&mut self, db: &str, name: &str) -> Option<Table> {
        self.tables.remove(&(db.to_string(), name.to_string()))
    }
}
