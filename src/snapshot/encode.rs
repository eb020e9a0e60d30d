//! One value of a chunk's row, as the server sends it in the binary protocol, written as the
//! binlog decoder writes the same value (`decode::value`'s table): the same helpers write the
//! text (charsets, base64, numbers, dates), so equal values give byte-identical JSON.
//!
//! What the session must be for that to hold (`chunk::prepare_session`): `time_zone` `+00:00`
//! (TIMESTAMP values arrive in UTC) and `character_set_results` NULL (strings arrive in their
//! column's charset, as the binlog has them, and are converted here as the decoder converts).
//! The binary protocol keeps FLOAT and DOUBLE exact (the text protocol prints FLOAT with six
//! digits) and dates with their microseconds.

use mysql_async::Value;

use super::plan::Kind;
use crate::decode::value::temporal::{push_date, push_frac, push_hms, push_time};
use crate::decode::value::write_text;
use crate::json::{push_f32, push_f64, push_i64, push_u64, write_base64_str};

/// Appends the JSON of `v`, a value of a column of `kind`; `Err` names what did not fit
/// (a value the server should not send for that type), and `out` is then left as it was.
pub(crate) fn write_value(kind: &Kind, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    let mark = out.len();
    let r = write_inner(kind, v, out);
    if r.is_err() {
        out.truncate(mark);
    }
    r
}

fn write_inner(kind: &Kind, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    if let Value::NULL = v {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    match (kind, v) {
        (Kind::Int | Kind::Year, Value::Int(i)) => push_i64(out, *i),
        (Kind::Int | Kind::Year, Value::UInt(u)) => push_u64(out, *u),
        (Kind::Float, Value::Float(f)) => push_f32(out, *f),
        (Kind::Double, Value::Double(d)) => push_f64(out, *d),
        (Kind::Decimal { .. }, Value::Bytes(b)) => {
            if b.is_empty() || !b.iter().all(|c| c.is_ascii_digit() || b"-.".contains(c)) {
                return Err("DECIMAL text is not a number".into());
            }
            out.push(b'"');
            out.extend_from_slice(b);
            out.push(b'"');
        }
        (Kind::Date, Value::Date(y, m, d, ..)) => {
            if *m == 0 || *d == 0 {
                out.extend_from_slice(b"null");
            } else {
                out.push(b'"');
                push_date(out, *y as u32, *m as u32, *d as u32);
                out.push(b'"');
            }
        }
        (Kind::Datetime { fsp }, Value::Date(y, m, d, h, mi, s, us)) => {
            if *m == 0 || *d == 0 {
                out.extend_from_slice(b"null");
            } else {
                out.push(b'"');
                push_date(out, *y as u32, *m as u32, *d as u32);
                out.push(b'T');
                push_hms(out, *h as u32, *mi as u32, *s as u32);
                push_frac(out, *us, *fsp);
                out.push(b'"');
            }
        }
        (Kind::Timestamp { fsp }, Value::Date(y, m, d, h, mi, s, us)) => {
            // The zero TIMESTAMP (`0` seconds in the binlog) is `0000-00-00 00:00:00` here.
            if *m == 0 || *d == 0 {
                out.extend_from_slice(b"null");
            } else {
                out.push(b'"');
                push_date(out, *y as u32, *m as u32, *d as u32);
                out.push(b'T');
                push_hms(out, *h as u32, *mi as u32, *s as u32);
                push_frac(out, *us, *fsp);
                out.extend_from_slice(b"Z\"");
            }
        }
        (Kind::Time { fsp }, Value::Time(neg, days, h, mi, s, us)) => {
            let hours = days * 24 + *h as u32;
            push_time(out, *neg, hours, *mi as u32, *s as u32, *us, *fsp);
        }
        (Kind::Text(t) | Kind::Label(t), Value::Bytes(b)) => write_text(out, b, *t),
        (Kind::Json, Value::Bytes(b)) => write_json_text(out, b)?,
        (Kind::Bit, Value::Bytes(b)) => {
            if b.len() > 8 {
                return Err("BIT longer than 8 bytes".into());
            }
            push_u64(out, b.iter().fold(0u64, |a, &x| a << 8 | x as u64));
        }
        (Kind::Geometry, Value::Bytes(b)) => {
            // The server's value starts with the 4-byte SRID, as in the binlog.
            write_base64_str(out, b.get(4..).unwrap_or(b));
        }
        (Kind::Unsupported(t), _) => return Err(format!("type {t} is not supported")),
        (kind, v) => return Err(format!("unexpected value {v:?} for a {kind:?} column")),
    }
    Ok(())
}

/// MySQL's JSON as the server prints it (`{"a": 1, "b": [1, 2]}`), without the whitespace
/// between tokens, as the decoder writes binary JSON.
///
/// Not yet checked against a MySQL server's binlog for every value (doubles, opaque
/// values): the test double does not serve snapshots.
fn write_json_text(out: &mut Vec<u8>, s: &[u8]) -> Result<(), String> {
    if !crate::json::is_strict_json(s) {
        return Err("JSON column text is not JSON".into());
    }
    let mut in_str = false;
    let mut escaped = false;
    for &c in s {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(c);
            in_str = c == b'"';
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::schema::TextKind;

    fn enc(kind: Kind, v: Value) -> String {
        let mut out = Vec::new();
        write_value(&kind, &v, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn numbers_are_exact() {
        assert_eq!(
            enc(Kind::Int, Value::UInt(u64::MAX)),
            "18446744073709551615"
        );
        assert_eq!(enc(Kind::Int, Value::Int(i64::MIN)), "-9223372036854775808");
        assert_eq!(enc(Kind::Float, Value::Float(2.7182817)), "2.7182817");
        assert_eq!(
            enc(Kind::Double, Value::Double(0.1 + 0.2)),
            "0.30000000000000004"
        );
        let dec = Kind::Decimal {
            precision: 10,
            scale: 2,
        };
        assert_eq!(
            enc(dec.clone(), Value::Bytes(b"-1234.50".to_vec())),
            "\"-1234.50\""
        );
        let mut out = b"x".to_vec();
        assert!(write_value(&dec, &Value::Bytes(b"1e5".to_vec()), &mut out).is_err());
        assert_eq!(out, b"x");
    }

    #[test]
    fn temporals_match_the_decoder() {
        assert_eq!(
            enc(Kind::Date, Value::Date(2024, 2, 29, 0, 0, 0, 0)),
            "\"2024-02-29\""
        );
        assert_eq!(enc(Kind::Date, Value::Date(0, 0, 0, 0, 0, 0, 0)), "null");
        assert_eq!(
            enc(
                Kind::Datetime { fsp: 3 },
                Value::Date(2024, 2, 29, 23, 59, 59, 123_000)
            ),
            "\"2024-02-29T23:59:59.123\""
        );
        assert_eq!(
            enc(
                Kind::Datetime { fsp: 0 },
                Value::Date(2024, 0, 10, 0, 0, 0, 0)
            ),
            "null"
        );
        assert_eq!(
            enc(
                Kind::Timestamp { fsp: 6 },
                Value::Date(2024, 1, 1, 10, 0, 0, 654_321)
            ),
            "\"2024-01-01T10:00:00.654321Z\""
        );
        assert_eq!(
            enc(Kind::Time { fsp: 0 }, Value::Time(true, 34, 22, 59, 59, 0)),
            "\"-838:59:59\""
        );
        assert_eq!(
            enc(
                Kind::Time { fsp: 6 },
                Value::Time(false, 1, 1, 0, 0, 500_000)
            ),
            "\"25:00:00.500000\""
        );
    }

    #[test]
    fn strings_bits_and_geometry() {
        assert_eq!(
            enc(
                Kind::Text(TextKind::Latin1),
                Value::Bytes(b"caf\xe9".to_vec())
            ),
            "\"café\""
        );
        assert_eq!(
            enc(
                Kind::Text(TextKind::Binary),
                Value::Bytes(b"ab\0\0".to_vec())
            ),
            "\"YWIAAA==\""
        );
        assert_eq!(
            enc(Kind::Text(TextKind::Utf8), Value::Bytes(vec![0xff])),
            "\"/w==\""
        );
        assert_eq!(
            enc(
                Kind::Text(TextKind::JsonText),
                Value::Bytes(b" {\"a\": 1} ".to_vec())
            ),
            "{\"a\": 1}"
        );
        assert_eq!(
            enc(Kind::Json, Value::Bytes(b"{\"a\": [1, \"x y\"]}".to_vec())),
            "{\"a\":[1,\"x y\"]}"
        );
        assert_eq!(enc(Kind::Bit, Value::Bytes(vec![1, 0])), "256");
        assert_eq!(
            enc(Kind::Geometry, Value::Bytes(vec![0, 0, 0, 0, 1])),
            "\"AQ==\""
        );
        assert_eq!(
            enc(Kind::Label(TextKind::Utf8), Value::Bytes(Vec::new())),
            "\"\""
        );
        assert_eq!(enc(Kind::Int, Value::NULL), "null");
    }

    #[test]
    fn a_value_of_the_wrong_shape_is_an_error_not_a_guess() {
        let mut out = Vec::new();
        assert!(write_value(&Kind::Int, &Value::Bytes(b"1".to_vec()), &mut out).is_err());
        assert!(write_value(
            &Kind::Unsupported("inet6".into()),
            &Value::Bytes(vec![1]),
            &mut out
        )
        .is_err());
        assert!(out.is_empty());
    }
}
