//! MySQL GTID sets: `uuid:1-5:7-9,uuid2:tag:1-3`.
//!
//! A set maps a source id (server UUID plus an optional 8.4 tag) to sorted, disjoint,
//! non-adjacent closed intervals of transaction numbers. Formatting is canonical (sorted by
//! UUID then tag, intervals merged), so two equal sets print the same text; that text is what
//! the checkpoint stores and what `COM_BINLOG_DUMP_GTID` receives.
//!
//! One transaction's GTID is a [`MysqlGtid`], `uuid:gno` or `uuid:tag:gno`.

use std::collections::BTreeMap;
use std::fmt;

use super::GtidParseError;

/// One transaction's GTID: `uuid:gno`, or `uuid:tag:gno` with an 8.4 tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlGtid {
    /// The source's server UUID, lowercase.
    pub uuid: String,
    /// Empty for untagged GTIDs.
    pub tag: String,
    /// The transaction number, from 1.
    pub gno: u64,
}

impl MysqlGtid {
    pub fn parse(text: &str) -> Result<Self, GtidParseError> {
        let err = |why: &str| GtidParseError::new(text, why);
        let mut pieces = text.trim().split(':');
        let uuid = pieces.next().unwrap_or_default().to_ascii_lowercase();
        if !is_uuid(&uuid) {
            return Err(err("expected a server UUID before the first ':'"));
        }
        let (tag, gno) = match (pieces.next(), pieces.next(), pieces.next()) {
            (Some(gno), None, None) => (String::new(), gno),
            (Some(tag), Some(gno), None) if is_tag(tag) => (tag.to_string(), gno),
            _ => return Err(err("expected uuid:gno or uuid:tag:gno")),
        };
        match gno.parse() {
            Ok(gno) if gno > 0 => Ok(MysqlGtid { uuid, tag, gno }),
            _ => Err(err("the transaction number is a positive integer")),
        }
    }
}

impl fmt::Display for MysqlGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tag.is_empty() {
            write!(f, "{}:{}", self.uuid, self.gno)
        } else {
            write!(f, "{}:{}:{}", self.uuid, self.tag, self.gno)
        }
    }
}

/// `(uuid, tag)`; the tag is empty for untagged GTIDs.
type SourceId = (String, String);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidSet {
    sets: BTreeMap<SourceId, Vec<(u64, u64)>>,
}

impl GtidSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    pub fn parse(text: &str) -> Result<Self, GtidParseError> {
        let mut set = GtidSet::new();
        let cleaned: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if cleaned.is_empty() {
            return Ok(set);
        }
        for part in cleaned.split(',') {
            let err = |why: &str| GtidParseError::new(part, why);
            let mut pieces = part.split(':');
            let uuid = pieces.next().unwrap_or_default().to_ascii_lowercase();
            if !is_uuid(&uuid) {
                return Err(err("expected a server UUID before the first ':'"));
            }
            let mut tag = String::new();
            let mut saw_interval = false;
            for piece in pieces {
                if piece.starts_with(|c: char| c.is_ascii_digit()) {
                    let (a, b) = match piece.split_once('-') {
                        Some((a, b)) => (a, b),
                        None => (piece, piece),
                    };
                    let a: u64 = a.parse().map_err(|_| err("bad transaction number"))?;
                    let b: u64 = b.parse().map_err(|_| err("bad transaction number"))?;
                    if a == 0 || b < a {
                        return Err(err("intervals are 1-based and ascending, e.g. 1-5"));
                    }
                    set.add_interval(&uuid, &tag, a, b);
                    saw_interval = true;
                } else if is_tag(piece) {
                    tag = piece.to_string();
                } else {
                    return Err(err(
                        "expected an interval like 1-5 or a tag like [a-z_][a-z0-9_]*",
                    ));
                }
            }
            if !saw_interval {
                return Err(err("no interval after the UUID"));
            }
        }
        Ok(set)
    }

    /// Adds one transaction.
    pub fn add(&mut self, uuid: &str, tag: &str, gno: u64) {
        self.add_interval(uuid, tag, gno, gno);
    }

    /// Adds the transactions `first..=last` of one source (`tag` empty when untagged); an
    /// empty interval (`last < first`) adds nothing.
    pub fn add_interval(&mut self, uuid: &str, tag: &str, first: u64, last: u64) {
        if last < first {
            return;
        }
        let (a, b) = (first, last);
        let ivs = self
            .sets
            .entry((uuid.to_string(), tag.to_string()))
            .or_default();
        // Fast path: appending the next number, the common case while streaming.
        if let Some(last) = ivs.last_mut() {
            if a >= last.0 && a <= last.1.saturating_add(1) && b >= last.1 {
                last.1 = b;
                return;
            }
        }
        ivs.push((a, b));
        ivs.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ivs.len());
        for &(s, e) in ivs.iter() {
            match merged.last_mut() {
                Some(m) if s <= m.1.saturating_add(1) => m.1 = m.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *ivs = merged;
    }

    pub fn contains(&self, uuid: &str, tag: &str, gno: u64) -> bool {
        self.sets
            .get(&(uuid.to_string(), tag.to_string()))
            .is_some_and(|ivs| ivs.iter().any(|&(a, b)| a <= gno && gno <= b))
    }

    /// Every transaction of `other` is also in `self`.
    pub fn is_superset_of(&self, other: &GtidSet) -> bool {
        other.sets.iter().all(|(id, ivs)| {
            ivs.iter().all(|&(a, b)| {
                self.sets
                    .get(id)
                    .is_some_and(|mine| mine.iter().any(|&(x, y)| x <= a && b <= y))
            })
        })
    }

    pub fn merge(&mut self, other: &GtidSet) {
        for ((uuid, tag), ivs) in &other.sets {
            for &(a, b) in ivs {
                self.add_interval(uuid, tag, a, b);
            }
        }
    }

    /// The set a PREVIOUS_GTIDS event's body holds: every transaction in the binlog files
    /// before the one it opens. Read here, bounds-checked (mysql_common reserves room for the
    /// counts in the body before it reads them, and a damaged count asks for petabytes).
    ///
    /// The body: a u64 whose top byte is the format (0, or 1 for 8.4's tagged GTIDs) and whose
    /// other bytes count the source ids (bits 0..56; tagged: bits 8..56); then per source id
    /// its UUID (16 bytes), with format 1 its tag (a variable-length length, then the bytes),
    /// an interval count (u64) and the intervals, `[start, end)` as two u64.
    pub fn parse_previous_gtids(body: &[u8]) -> Result<GtidSet, String> {
        let mut rd = Rd(body);
        let header = rd.u64().ok_or("cut short in its header")?;
        let tagged = header >> 56 != 0;
        let count = if tagged {
            (header >> 8) & ((1 << 48) - 1)
        } else {
            header & ((1 << 56) - 1)
        };
        let mut set = GtidSet::new();
        for _ in 0..count {
            let uuid: &[u8; 16] = rd
                .take(16)
                .and_then(|u| u.try_into().ok())
                .ok_or("cut short in a source UUID")?;
            let uuid = format_uuid(uuid);
            let tag = if tagged {
                let len = rd.varlen().ok_or("cut short in a tag length")?;
                let tag = usize::try_from(len)
                    .ok()
                    .and_then(|n| rd.take(n))
                    .ok_or("cut short in a tag")?;
                match std::str::from_utf8(tag) {
                    Ok(t) if t.is_empty() || is_tag(t) => t,
                    _ => return Err(format!("invalid tag {}", String::from_utf8_lossy(tag))),
                }
            } else {
                ""
            };
            let n = rd.u64().ok_or("cut short in an interval count")?;
            if n > (rd.0.len() / 16) as u64 {
                return Err(format!("{n} intervals cannot fit in what is left"));
            }
            for _ in 0..n {
                let (start, end) = (rd.u64().unwrap_or(0), rd.u64().unwrap_or(0));
                if start == 0 {
                    return Err("an interval from transaction 0".into());
                }
                set.add_interval(&uuid, tag, start, end.saturating_sub(1));
            }
        }
        Ok(set)
    }

    /// The set as `mysql_common` dump-request blocks, one per (uuid, tag).
    pub fn to_sids(&self) -> Result<Vec<mysql_common::packets::Sid<'static>>, GtidParseError> {
        let mut out = Vec::new();
        for ((uuid, tag), ivs) in &self.sets {
            let mut text = uuid.clone();
            if !tag.is_empty() {
                text.push(':');
                text.push_str(tag);
            }
            for (a, b) in ivs {
                text.push_str(&format!(":{a}-{b}"));
            }
            let sid = text
                .parse()
                .map_err(|e: std::io::Error| GtidParseError::new(&text, &e.to_string()))?;
            out.push(sid);
        }
        Ok(out)
    }
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut prev_uuid: Option<&str> = None;
        for ((uuid, tag), ivs) in &self.sets {
            if prev_uuid == Some(uuid.as_str()) {
                // Same UUID, another tag: MySQL prints `uuid:1-5:tag:1-3`.
            } else {
                if prev_uuid.is_some() {
                    f.write_str(",")?;
                }
                f.write_str(uuid)?;
            }
            if !tag.is_empty() {
                write!(f, ":{tag}")?;
            }
            for &(a, b) in ivs {
                if a == b {
                    write!(f, ":{a}")?;
                } else {
                    write!(f, ":{a}-{b}")?;
                }
            }
            prev_uuid = Some(uuid);
        }
        Ok(())
    }
}

/// A cursor over an event body.
struct Rd<'a>(&'a [u8]);

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// MySQL's variable-length integer: the trailing one bits of the first byte count the
    /// bytes after it; the value is the little-endian bytes shifted past those bits (all
    /// ones: the next 8 bytes, as they are).
    fn varlen(&mut self) -> Option<u64> {
        let ones = self.0.first()?.trailing_ones() as usize;
        if ones == 8 {
            self.take(1)?;
            return self.u64();
        }
        let mut raw = [0u8; 8];
        raw[..ones + 1].copy_from_slice(self.take(ones + 1)?);
        Some(u64::from_le_bytes(raw) >> (ones + 1))
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Formats a 16-byte SID as a lowercase UUID.
pub fn format_uuid(sid: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in sid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "4f22fb58-82db-22f2-af44-d91bb0530673";

    #[test]
    fn parses_and_formats_canonically() {
        let s = GtidSet::parse(&format!("{B}:1-3, {A}:7-9:1-5:6")).unwrap();
        assert_eq!(s.to_string(), format!("{A}:1-9,{B}:1-3"));
        assert_eq!(GtidSet::parse("").unwrap(), GtidSet::new());
    }

    #[test]
    fn tagged_gtids_of_8_4() {
        let s = GtidSet::parse(&format!("{A}:1-5:blue:1-3:7")).unwrap();
        assert!(s.contains(A, "", 5));
        assert!(s.contains(A, "blue", 7));
        assert!(!s.contains(A, "blue", 5));
        assert_eq!(s.to_string(), format!("{A}:1-5:blue:1-3:7"));
        assert_eq!(s.to_sids().unwrap().len(), 2);
    }

    #[test]
    fn add_contains_merge_superset() {
        let mut s = GtidSet::new();
        for n in [1, 2, 3, 5] {
            s.add(A, "", n);
        }
        assert_eq!(s.to_string(), format!("{A}:1-3:5"));
        assert!(!s.contains(A, "", 4));
        s.add(A, "", 4);
        assert_eq!(s.to_string(), format!("{A}:1-5"));
        let other = GtidSet::parse(&format!("{A}:2-3,{B}:1")).unwrap();
        assert!(!s.is_superset_of(&other));
        s.merge(&other);
        assert!(s.is_superset_of(&other));
        assert_eq!(s.to_string(), format!("{A}:1-5,{B}:1"));
    }

    #[test]
    fn intervals_and_previous_gtids_events() {
        use mysql_common::binlog::events::{PreviousGtidsEvent, PreviousGtidsSid};
        use mysql_common::packets::{GnoInterval, Tag};
        use mysql_common::proto::MySerialize;
        let mut s = GtidSet::new();
        s.add_interval(A, "", 5, 9);
        s.add_interval(A, "", 1, 3);
        s.add_interval(A, "", 4, 4);
        s.add_interval(A, "", 7, 6); // empty
        s.add_interval(B, "blue", 2, 2);
        assert_eq!(s.to_string(), format!("{A}:1-9,{B}:blue:2"));

        let sid = |uuid: &str| {
            let hex = uuid.replace('-', "");
            let mut bytes = [0u8; 16];
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap();
            }
            bytes
        };
        let body = |sids: Vec<PreviousGtidsSid<'static>>| {
            let mut out = Vec::new();
            PreviousGtidsEvent::new(sids).serialize(&mut out);
            out
        };
        // Written by mysql_common, read here: untagged, then tagged (8.4).
        let plain = body(vec![
            PreviousGtidsSid::new(sid(A), None, vec![GnoInterval::new(1, 6)]),
            PreviousGtidsSid::new(sid(B), None, vec![GnoInterval::new(8, 9)]),
        ]);
        assert_eq!(
            GtidSet::parse_previous_gtids(&plain).unwrap().to_string(),
            format!("{A}:1-5,{B}:8")
        );
        let long_tag = "t".repeat(32);
        let tagged = body(vec![
            PreviousGtidsSid::new(
                sid(A),
                None,
                vec![GnoInterval::new(1, 6), GnoInterval::new(8, 9)],
            ),
            PreviousGtidsSid::new(
                sid(A),
                Some(Tag::new("blue").unwrap()),
                vec![GnoInterval::new(1, 3)],
            ),
            PreviousGtidsSid::new(
                sid(B),
                Some(Tag::new(long_tag.clone()).unwrap()),
                vec![GnoInterval::new(7, 8)],
            ),
        ]);
        assert_eq!(
            GtidSet::parse_previous_gtids(&tagged).unwrap().to_string(),
            format!("{A}:1-5:8:blue:1-2,{B}:{long_tag}:7")
        );
        assert!(GtidSet::parse_previous_gtids(&[])
            .unwrap_err()
            .contains("header"));
        // Cut anywhere, or with a count far past the body: an error, no huge allocation.
        for body in [&plain, &tagged] {
            for cut in 8..body.len() {
                assert!(
                    GtidSet::parse_previous_gtids(&body[..cut]).is_err(),
                    "{cut}"
                );
            }
            let mut huge = body.clone();
            huge[1..7].fill(0xff);
            assert!(GtidSet::parse_previous_gtids(&huge).is_err());
        }
        let mut intervals = plain.clone();
        intervals[8 + 16..8 + 24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(GtidSet::parse_previous_gtids(&intervals).is_err());
    }

    #[test]
    fn one_transaction() {
        let g = MysqlGtid::parse(&format!("{A}:42")).unwrap();
        assert_eq!((g.tag.as_str(), g.gno), ("", 42));
        assert_eq!(g.to_string(), format!("{A}:42"));
        let t = MysqlGtid::parse(&format!("{}:blue:7", A.to_uppercase())).unwrap();
        assert_eq!(t.to_string(), format!("{A}:blue:7"));
        for bad in [
            A.to_string(),
            format!("{A}:0"),
            format!("{A}:1-3"),
            format!("{A}:Blue:1"),
            format!("{A}:blue:1:2"),
        ] {
            assert!(MysqlGtid::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        for bad in [
            "nope",
            A,
            &format!("{A}:0-3"),
            &format!("{A}:5-3"),
            &format!("{A}:Bad:1"),
        ] {
            let e = GtidSet::parse(bad).unwrap_err();
            assert!(!e.to_string().is_empty(), "{bad}");
        }
    }

    #[test]
    fn uuid_formatting() {
        let sid = [
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ];
        assert_eq!(format_uuid(&sid), A);
    }
}
