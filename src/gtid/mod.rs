//! Replication positions as values: MySQL GTID sets, MariaDB GTID lists, and the
//! flavor-neutral [`GtidPos`] the checkpoint stores.

pub mod mariadb;
pub mod mysql;

use std::fmt;

pub use mariadb::{GtidList, MariaGtid};
pub use mysql::GtidSet;

#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid GTID `{text}`: {why}")]
pub struct GtidParseError {
    pub text: String,
    pub why: String,
}

impl GtidParseError {
    pub fn new(text: &str, why: &str) -> Self {
        Self {
            text: text.to_string(),
            why: why.to_string(),
        }
    }
}

/// Which server family, and so which GTID dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    Mysql,
    Mariadb,
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavor::Mysql => "mysql",
            Flavor::Mariadb => "mariadb",
        })
    }
}

/// The set of transactions applied, in the source's dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GtidPos {
    Mysql(GtidSet),
    Mariadb(GtidList),
}

impl GtidPos {
    pub fn empty(flavor: Flavor) -> Self {
        match flavor {
            Flavor::Mysql => GtidPos::Mysql(GtidSet::new()),
            Flavor::Mariadb => GtidPos::Mariadb(GtidList::new()),
        }
    }

    pub fn parse(flavor: Flavor, text: &str) -> Result<Self, GtidParseError> {
        Ok(match flavor {
            Flavor::Mysql => GtidPos::Mysql(GtidSet::parse(text)?),
            Flavor::Mariadb => GtidPos::Mariadb(GtidList::parse(text)?),
        })
    }

    pub fn flavor(&self) -> Flavor {
        match self {
            GtidPos::Mysql(_) => Flavor::Mysql,
            GtidPos::Mariadb(_) => Flavor::Mariadb,
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            GtidPos::Mysql(s) => s.is_empty(),
            GtidPos::Mariadb(l) => l.is_empty(),
        }
    }
}

impl fmt::Display for GtidPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidPos::Mysql(s) => s.fmt(f),
            GtidPos::Mariadb(l) => l.fmt(f),
        }
    }
}
