//! MariaDB GTID positions: `domain-server-seq`, one per replication domain
//! (`0-1-100,1-2-7`), and the raw MariaDB events that carry them.
//!
//! Within a domain, sequence numbers only grow (with `gtid_strict_mode`), so a position is the
//! last GTID applied per domain and "already applied" means `seq <= position[domain].seq`.
//! mysql_common does not know MariaDB's event types 160..=163; `parse_gtid_event` and
//! `parse_gtid_list_event` read them from the event body (after the 19-byte header, without
//! the checksum), bounds-checked: a short body is an error, never a panic.

use std::collections::BTreeMap;
use std::fmt;

use super::GtidParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MariaGtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl fmt::Display for MariaGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl MariaGtid {
    pub fn parse(text: &str) -> Result<Self, GtidParseError> {
        let err = || GtidParseError::new(text, "expected domain-server-seq, e.g. 0-1-42");
        let mut it = text.trim().splitn(3, '-');
        let domain = it.next().and_then(|s| s.parse().ok()).ok_or_else(err)?;
        let server = it.next().and_then(|s| s.parse().ok()).ok_or_else(err)?;
        let seq = it.next().and_then(|s| s.parse().ok()).ok_or_else(err)?;
        Ok(MariaGtid {
            domain,
            server,
            seq,
        })
    }
}

/// The last GTID per domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidList {
    domains: BTreeMap<u32, MariaGtid>,
}

impl GtidList {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    pub fn parse(text: &str) -> Result<Self, GtidParseError> {
        let mut list = GtidList::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g = MariaGtid::parse(part)?;
            if list.domains.insert(g.domain, g).is_some() {
                return Err(GtidParseError::new(text, "a domain appears twice"));
            }
        }
        Ok(list)
    }

    /// Records `g` as the newest GTID of its domain.
    pub fn apply(&mut self, g: MariaGtid) {
        self.domains.insert(g.domain, g);
    }

    /// `g` is at or before this position in its domain.
    pub fn contains(&self, g: &MariaGtid) -> bool {
        self.domains
            .get(&g.domain)
            .is_some_and(|have| g.seq <= have.seq)
    }

    /// Every domain of `other` is at or before ours.
    pub fn is_superset_of(&self, other: &GtidList) -> bool {
        other.domains.values().all(|g| self.contains(g))
    }

    pub fn iter(&self) -> impl Iterator<Item = &MariaGtid> {
        self.domains.values()
    }
}

impl fmt::Display for GtidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.domains.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

pub const ANNOTATE_ROWS_EVENT: u8 = 160;
pub const BINLOG_CHECKPOINT_EVENT: u8 = 161;
pub const GTID_EVENT: u8 = 162;
pub const GTID_LIST_EVENT: u8 = 163;
pub const START_ENCRYPTION_EVENT: u8 = 164;
/// 165..=171: MariaDB's `log_bin_compress` events.
pub const FIRST_COMPRESSED_EVENT: u8 = 165;
pub const LAST_COMPRESSED_EVENT: u8 = 171;

/// `FL_STANDALONE`: the event group has no BEGIN/COMMIT (a DDL statement).
pub const FL_STANDALONE: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GtidEvent {
    pub gtid: MariaGtid,
    pub flags: u8,
}

impl GtidEvent {
    pub fn standalone(&self) -> bool {
        self.flags & FL_STANDALONE != 0
    }
}

#[derive(Debug, thiserror::Error)]
#[error("malformed MariaDB {what} event: {len} bytes")]
pub struct EventBodyError {
    pub what: &'static str,
    pub len: usize,
}

/// Body of a GTID event (162): seq u64, domain u32, flags u8, then optional fields we skip.
pub fn parse_gtid_event(body: &[u8], server_id: u32) -> Result<GtidEvent, EventBodyError> {
    let err = || EventBodyError {
        what: "GTID",
        len: body.len(),
    };
    let seq = u64::from_le_bytes(
        body.get(0..8)
            .ok_or_else(err)?
            .try_into()
            .map_err(|_| err())?,
    );
    let domain = u32::from_le_bytes(
        body.get(8..12)
            .ok_or_else(err)?
            .try_into()
            .map_err(|_| err())?,
    );
    let flags = *body.get(12).ok_or_else(err)?;
    Ok(GtidEvent {
        gtid: MariaGtid {
            domain,
            server: server_id,
            seq,
        },
        flags,
    })
}

/// Body of a GTID_LIST event (163): count (low 28 bits), then (domain u32, server u32, seq u64)*.
pub fn parse_gtid_list_event(body: &[u8]) -> Result<GtidList, EventBodyError> {
    let err = || EventBodyError {
        what: "GTID_LIST",
        len: body.len(),
    };
    let raw = u32::from_le_bytes(
        body.get(0..4)
            .ok_or_else(err)?
            .try_into()
            .map_err(|_| err())?,
    );
    let count = (raw & 0x0fff_ffff) as usize;
    let mut list = GtidList::new();
    for i in 0..count {
        let at = 4 + i * 16;
        let rec = body.get(at..at + 16).ok_or_else(err)?;
        let (d, rest) = rec.split_at(4);
        let (s, q) = rest.split_at(4);
        list.apply(MariaGtid {
            domain: u32::from_le_bytes(d.try_into().map_err(|_| err())?),
            server: u32::from_le_bytes(s.try_into().map_err(|_| err())?),
            seq: u64::from_le_bytes(q.try_into().map_err(|_| err())?),
        });
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_format_contains() {
        let l = GtidList::parse("1-2-7, 0-1-100").unwrap();
        assert_eq!(l.to_string(), "0-1-100,1-2-7");
        assert!(l.contains(&MariaGtid::parse("0-9-100").unwrap()));
        assert!(!l.contains(&MariaGtid::parse("0-1-101").unwrap()));
        assert!(!l.contains(&MariaGtid::parse("2-1-1").unwrap()));
        assert!(GtidList::parse("0-1-1,0-1-2").is_err());
        assert!(GtidList::parse("0-1").is_err());
        assert!(GtidList::parse("").unwrap().is_empty());
    }

    #[test]
    fn superset() {
        let a = GtidList::parse("0-1-10,1-1-5").unwrap();
        assert!(a.is_superset_of(&GtidList::parse("0-1-9").unwrap()));
        assert!(!a.is_superset_of(&GtidList::parse("0-1-11").unwrap()));
        assert!(!a.is_superset_of(&GtidList::parse("2-1-1").unwrap()));
    }

    #[test]
    fn raw_events() {
        let mut body = Vec::new();
        body.extend_from_slice(&42u64.to_le_bytes());
        body.extend_from_slice(&3u32.to_le_bytes());
        body.push(FL_STANDALONE);
        let ev = parse_gtid_event(&body, 7).unwrap();
        assert_eq!(ev.gtid.to_string(), "3-7-42");
        assert!(ev.standalone());
        assert!(parse_gtid_event(&body[..12], 7).is_err());

        let mut list = Vec::new();
        list.extend_from_slice(&2u32.to_le_bytes());
        for (d, s, q) in [(0u32, 1u32, 5u64), (1, 2, 9)] {
            list.extend_from_slice(&d.to_le_bytes());
            list.extend_from_slice(&s.to_le_bytes());
            list.extend_from_slice(&q.to_le_bytes());
        }
        assert_eq!(
            parse_gtid_list_event(&list).unwrap().to_string(),
            "0-1-5,1-2-9"
        );
        assert!(parse_gtid_list_event(&list[..30]).is_err());
    }
}
