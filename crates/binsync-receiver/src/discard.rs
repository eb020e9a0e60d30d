//! `--discard` mode's body check (benchmarks): plain serde_json over the whole body, the
//! envelope's `version`, `batch_id` and `count` kept, nothing else checked against the contract.
//!
//! A body passes exactly when `serde_json::from_slice::<serde_json::Value>` accepts it (grammar,
//! string escapes and surrogate pairs, UTF-8, numbers within f64 range, serde_json's nesting
//! limit) and its top level is an object whose `version` and `count` are unsigned integers and
//! whose `batch_id` is a string. As in a `Value`, a duplicated key counts with its last
//! occurrence. Unlike `serde::de::IgnoredAny`, the values it does not keep are still decoded
//! as a `Value` would decode them, so a body that a real receiver's JSON parser would refuse is
//! refused here too; unlike a `Value`, nothing is allocated for them.
//!
//! No tuned parser on purpose: a benchmark must measure binsync, not a receiver tuned for it.
//! The per-operation checks are the storing receiver's ([`crate::batch`]).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// What the discarding receiver keeps of a batch.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub version: u64,
    pub batch_id: Cow<'a, str>,
    pub count: u64,
}

/// Reads a (decompressed) body; see the module doc for what passes.
pub fn envelope(body: &[u8]) -> Result<Envelope<'_>, serde_json::Error> {
    serde_json::from_slice(body)
}

impl<'de> Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EnvelopeVisitor)
    }
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a batch envelope (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'de>, A::Error> {
        let (mut version, mut batch_id, mut count) = (None, None, None);
        while let Some(key) = map.next_key_seed(Read { keep_text: true })? {
            let Scalar::Text(key) = key else {
                // serde_json only has string keys.
                map.next_value_seed(Read { keep_text: false })?;
                continue;
            };
            let slot = match &*key {
                "version" => &mut version,
                "batch_id" => &mut batch_id,
                "count" => &mut count,
                _ => {
                    map.next_value_seed(Read { keep_text: false })?;
                    continue;
                }
            };
            let keep_text = key == "batch_id";
            *slot = Some(map.next_value_seed(Read { keep_text })?);
        }
        let unsigned = |field: &'static str, v: Option<Scalar<'de>>| match v {
            None => Err(de::Error::missing_field(field)),
            Some(Scalar::Unsigned(n)) => Ok(n),
            Some(_) => Err(de::Error::custom(format_args!(
                "`{field}` is not an unsigned integer"
            ))),
        };
        let version = unsigned("version", version)?;
        let count = unsigned("count", count)?;
        let batch_id = match batch_id {
            None => return Err(de::Error::missing_field("batch_id")),
            Some(Scalar::Text(id)) => id,
            Some(_) => return Err(de::Error::custom("`batch_id` is not a string")),
        };
        Ok(Envelope {
            version,
            batch_id,
            count,
        })
    }
}

/// Of one JSON value, what the envelope may keep.
enum Scalar<'a> {
    Unsigned(u64),
    Text(Cow<'a, str>),
    Other,
}

/// Reads one JSON value of any type, decoded as a `serde_json::Value` would be, keeping only
/// an unsigned integer or (with `keep_text`) a string at its top.
#[derive(Clone, Copy)]
struct Read {
    /// Copy a string that holds escapes (serde_json hands those over unescaped in a scratch
    /// buffer); strings without escapes are borrowed from the body either way.
    keep_text: bool,
}

impl<'de> DeserializeSeed<'de> for Read {
    type Value = Scalar<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Scalar<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Read {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Other)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Unsigned(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<'de>, E> {
        // As `Value` files a non-negative i64: a positive integer.
        Ok(u64::try_from(v).map_or(Scalar::Other, Scalar::Unsigned))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Other)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar<'de>, E> {
        Ok(if self.keep_text {
            Scalar::Text(Cow::Owned(v.to_owned()))
        } else {
            Scalar::Other
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
        let inner = Read { keep_text: false };
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(Scalar::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
        let inner = Read { keep_text: false };
        while map.next_key_seed(inner)?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(Scalar::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition this module implements without building a `Value`.
    fn oracle(text: &[u8]) -> Option<(u64, String, u64)> {
        let serde_json::Value::Object(map) = serde_json::from_slice(text).ok()? else {
            return None;
        };
        Some((
            map.get("version")?.as_u64()?,
            map.get("batch_id")?.as_str()?.to_owned(),
            map.get("count")?.as_u64()?,
        ))
    }

    /// Asserts that [`envelope`] and the oracle agree on `text`, and returns the verdict.
    #[track_caller]
    fn agree(text: &[u8]) -> Option<Envelope<'_>> {
        let ours = envelope(text);
        match (&ours, oracle(text)) {
            (Ok(e), Some((v, b, c))) => {
                assert_eq!((e.version, &*e.batch_id, e.count), (v, b.as_str(), c))
            }
            (Err(_), None) => {}
            (ours, theirs) => panic!(
                "envelope {ours:?} but serde_json::Value {theirs:?} for {:?}",
                String::from_utf8_lossy(text)
            ),
        }
        ours.ok()
    }

    /// `value` inside an otherwise valid envelope.
    fn wrap(value: &[u8]) -> Vec<u8> {
        let mut v = br#"{"version":1,"batch_id":"b-1","count":2,"x":"#.to_vec();
        v.extend_from_slice(value);
        v.push(b'}');
        v
    }

    #[test]
    fn a_batch_envelope_is_read() {
        let text = br#"{"version":1,"batch_id":"mariadb-1-1-1000","source":{"flavor":"mariadb","server_id":1,"server_uuid":null},"first_seq":1,"last_seq":1000,"count":1000,"entities":{"products":[]}}"#;
        let e = agree(text).unwrap();
        assert_eq!(
            (e.version, &*e.batch_id, e.count),
            (1, "mariadb-1-1-1000", 1000)
        );
        assert!(matches!(e.batch_id, Cow::Borrowed(_)));
        let text = b" \r\n{ \"count\" : 7 ,\n\"batch_id\"\t:\"b\" , \"version\" : 18446744073709551615 } \n";
        assert_eq!(agree(text).unwrap().version, u64::MAX);
    }

    #[test]
    fn escapes_in_keys_and_batch_id_are_decoded() {
        let e = agree(br#"{"vers\u0069on":1,"batch_id":"a\"b\/\u00e9\ud83d\ude00","count":1}"#)
            .unwrap();
        assert_eq!(e.batch_id, "a\"b/é😀");
    }

    #[test]
    fn missing_or_mistyped_envelope_keys_are_refused() {
        for text in [
            &br#"{"batch_id":"b","count":1}"#[..],
            br#"{"version":1,"count":1}"#,
            br#"{"version":1,"batch_id":"b"}"#,
            br#"{}"#,
            br#"{"Version":1,"batch_id":"b","count":1}"#,
            br#"{"version":"1","batch_id":"b","count":1}"#,
            br#"{"version":1.0,"batch_id":"b","count":1}"#,
            br#"{"version":-1,"batch_id":"b","count":1}"#,
            br#"{"version":-0,"batch_id":"b","count":1}"#,
            br#"{"version":null,"batch_id":"b","count":1}"#,
            br#"{"version":18446744073709551616,"batch_id":"b","count":1}"#,
            br#"{"version":1,"batch_id":1,"count":1}"#,
            br#"{"version":1,"batch_id":["b"],"count":1}"#,
            br#"{"version":1,"batch_id":"b","count":0.5}"#,
            br#"{"version":1,"batch_id":"b","nested":{"count":1}}"#,
        ] {
            assert!(agree(text).is_none(), "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn a_duplicated_key_counts_with_its_last_occurrence() {
        let e = agree(
            br#"{"version":"x","batch_id":1,"count":[],"version":2,"batch_id":"b","count":3}"#,
        )
        .unwrap();
        assert_eq!((e.version, &*e.batch_id, e.count), (2, "b", 3));
        assert!(agree(br#"{"version":1,"batch_id":"b","count":3,"version":"x"}"#).is_none());
    }

    #[test]
    fn the_top_level_must_be_one_object() {
        for text in [
            &b""[..],
            b"null",
            b"[]",
            br#"[{"version":1,"batch_id":"b","count":1}]"#,
            br#"{"version":1,"batch_id":"b","count":1"#,
            br#"{"version":1,"batch_id":"b","count":1}{}"#,
            br#"{"version":1,"batch_id":"b","count":1} x"#,
            b"\xef\xbb\xbf{\"version\":1,\"batch_id\":\"b\",\"count\":1}",
        ] {
            assert!(agree(text).is_none(), "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn values_it_does_not_keep_are_still_strict_json() {
        for ok in [
            &br#""\u00e9\ud83d\ude00\n""#[..],
            b"[1,-2,3.5e-7,true,false,null,{},[]]",
            br#"{"a":1,"a":[2]}"#,
            b"1e308",
        ] {
            assert!(
                agree(&wrap(ok)).is_some(),
                "{}",
                String::from_utf8_lossy(ok)
            );
        }
        // What `IgnoredAny` would let through, then plain syntax errors.
        for bad in [
            &br#""\ud800""#[..],
            br#""\udc00x""#,
            b"\"\xc3\x28\"",
            b"\"\xed\xa0\x80\"",
            b"1e400",
            b"-1e400",
            br#"{"\ud800":1}"#,
            b"\"\x01\"",
            br#""\x""#,
            b"[1,]",
            b"01",
            b"1.",
            b"nul",
        ] {
            assert!(
                agree(&wrap(bad)).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn nesting_stops_where_serde_json_stops() {
        // serde_json fails on the 128th open container; the envelope is the first.
        let nest = |n: usize| format!("{}0{}", "[".repeat(n), "]".repeat(n));
        assert!(agree(&wrap(nest(126).as_bytes())).is_some());
        assert!(agree(&wrap(nest(127).as_bytes())).is_none());
        assert!(envelope(&wrap("[".repeat(100_000).as_bytes())).is_err());
    }
}
