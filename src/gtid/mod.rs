//! Replication positions as values: MySQL GTID sets, MariaDB GTID lists, and the
//! flavor-neutral [`GtidPos`] the checkpoint stores; one transaction's [`Gtid`].
//!
//! All GTID arithmetic lives here: the decoder records each committed transaction with
//! [`GtidPos::apply`], and "has the stream reached that point" is [`GtidPos::covers`].

pub mod mariadb;
pub mod mysql;

use std::fmt;

pub use mariadb::{GtidList, MariaGtid};
pub use mysql::{GtidSet, MysqlGtid};

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

/// One transaction's GTID, in its server's dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gtid {
    /// `uuid:gno` or `uuid:tag:gno`.
    Mysql(MysqlGtid),
    /// `domain-server-seq`.
    Mariadb(MariaGtid),
}

impl Gtid {
    pub fn flavor(&self) -> Flavor {
        match self {
            Gtid::Mysql(_) => Flavor::Mysql,
            Gtid::Mariadb(_) => Flavor::Mariadb,
        }
    }
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gtid::Mysql(g) => g.fmt(f),
            Gtid::Mariadb(g) => g.fmt(f),
        }
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

    /// The position after `gtid` when nothing before it is known, if that is a position at
    /// all: a MariaDB position is the last GTID of each domain, so one GTID is its domain's
    /// whole position; a MySQL set must hold every transaction before it too, so `None`.
    pub fn from_lone(gtid: &Gtid) -> Option<GtidPos> {
        match gtid {
            Gtid::Mysql(_) => None,
            Gtid::Mariadb(g) => {
                let mut list = GtidList::new();
                list.apply(*g);
                Some(GtidPos::Mariadb(list))
            }
        }
    }

    /// Records the transaction `gtid` as applied (MySQL: adds it to the set; MariaDB: it
    /// becomes its domain's last GTID). A GTID of the other flavor changes nothing.
    pub fn apply(&mut self, gtid: &Gtid) {
        match (self, gtid) {
            (GtidPos::Mysql(set), Gtid::Mysql(g)) => set.add(&g.uuid, &g.tag, g.gno),
            (GtidPos::Mariadb(list), Gtid::Mariadb(g)) => list.apply(*g),
            _ => {}
        }
    }

    /// Whether the transaction `gtid` is applied in this position (MySQL: in the set;
    /// MariaDB: at or before its domain's last GTID, as `contains` decides). False across
    /// flavors.
    pub fn holds(&self, gtid: &Gtid) -> bool {
        match (self, gtid) {
            (GtidPos::Mysql(set), Gtid::Mysql(g)) => set.contains(&g.uuid, &g.tag, g.gno),
            (GtidPos::Mariadb(list), Gtid::Mariadb(g)) => list.contains(g),
            _ => false,
        }
    }

    /// Every transaction `other` holds is applied in `self` too (MySQL: a superset; MariaDB:
    /// every domain of `other` at or before ours). Always false across flavors.
    pub fn covers(&self, other: &GtidPos) -> bool {
        match (self, other) {
            (GtidPos::Mysql(mine), GtidPos::Mysql(theirs)) => mine.is_superset_of(theirs),
            (GtidPos::Mariadb(mine), GtidPos::Mariadb(theirs)) => mine.is_superset_of(theirs),
            _ => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "4f22fb58-82db-22f2-af44-d91bb0530673";

    fn mysql(text: &str) -> GtidPos {
        GtidPos::parse(Flavor::Mysql, text).unwrap()
    }

    fn maria(text: &str) -> GtidPos {
        GtidPos::parse(Flavor::Mariadb, text).unwrap()
    }

    fn my_gtid(text: &str) -> Gtid {
        Gtid::Mysql(MysqlGtid::parse(text).unwrap())
    }

    fn maria_gtid(text: &str) -> Gtid {
        Gtid::Mariadb(MariaGtid::parse(text).unwrap())
    }

    #[test]
    fn apply_mysql_transactions() {
        let mut pos = mysql(&format!("{A}:1-3"));
        pos.apply(&my_gtid(&format!("{A}:4")));
        pos.apply(&my_gtid(&format!("{A}:6")));
        pos.apply(&my_gtid(&format!("{A}:blue:1")));
        pos.apply(&my_gtid(&format!("{B}:9")));
        assert_eq!(pos.to_string(), format!("{A}:1-4:6:blue:1,{B}:9"));
        let g = my_gtid(&format!("{A}:blue:1"));
        assert_eq!(g.to_string(), format!("{A}:blue:1"));
        assert_eq!(g.flavor(), Flavor::Mysql);
    }

    #[test]
    fn apply_mariadb_transactions() {
        let mut pos = maria("0-1-10,1-2-5");
        pos.apply(&maria_gtid("0-3-11"));
        pos.apply(&maria_gtid("2-1-1"));
        assert_eq!(pos.to_string(), "0-3-11,1-2-5,2-1-1");
        assert_eq!(maria_gtid("0-3-11").to_string(), "0-3-11");
    }

    #[test]
    fn a_gtid_of_the_other_flavor_changes_nothing() {
        let mut my = mysql(&format!("{A}:1-3"));
        my.apply(&maria_gtid("0-1-4"));
        assert_eq!(my, mysql(&format!("{A}:1-3")));
        let mut ma = maria("0-1-3");
        ma.apply(&my_gtid(&format!("{A}:4")));
        assert_eq!(ma, maria("0-1-3"));
    }

    #[test]
    fn a_lone_gtid_is_a_position_only_for_mariadb() {
        assert_eq!(
            GtidPos::from_lone(&maria_gtid("3-7-42")),
            Some(maria("3-7-42"))
        );
        assert_eq!(GtidPos::from_lone(&my_gtid(&format!("{A}:42"))), None);
    }

    #[test]
    fn covers_mysql_sets() {
        let have = mysql(&format!("{A}:1-10:blue:1-2,{B}:1-5"));
        assert!(have.covers(&have));
        assert!(have.covers(&mysql(&format!("{A}:3-7,{B}:5"))));
        assert!(have.covers(&mysql(&format!("{A}:blue:2"))));
        assert!(have.covers(&mysql("")));
        assert!(!have.covers(&mysql(&format!("{A}:10-11"))));
        assert!(!have.covers(&mysql(&format!("{A}:red:1"))));
        assert!(!have.covers(&mysql(&format!("{A}:1-3,{B}:6"))));
        assert!(!mysql("").covers(&have));
    }

    #[test]
    fn covers_mariadb_lists() {
        let have = maria("0-1-10,1-2-5");
        assert!(have.covers(&have));
        assert!(have.covers(&maria("0-9-7")));
        assert!(have.covers(&maria("0-1-10,1-1-1")));
        assert!(have.covers(&maria("")));
        assert!(!have.covers(&maria("0-1-11")));
        assert!(!have.covers(&maria("2-1-1")));
        assert!(!maria("").covers(&have));
    }

    #[test]
    fn covers_is_false_across_flavors() {
        assert!(!mysql("").covers(&maria("")));
        assert!(!maria("").covers(&mysql("")));
        assert!(!maria("0-1-10").covers(&mysql(&format!("{A}:1"))));
        assert!(!mysql(&format!("{A}:1-10")).covers(&maria("0-1-1")));
    }
}
