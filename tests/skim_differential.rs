//! Differential test: `skim` must accept exactly what serde_json accepts as a `Value` whose top
//! level is an object with `version` (u64), `batch_id` (string) and `count` (u64), and return
//! the same three values. Inputs: random JSON (from random `Value` trees and from a text-level
//! generator that also writes what `Value` never serializes: escapes, surrogates, odd numbers,
//! whitespace), then randomly mutated bytes. Fixed seeds, so failures reproduce.

use serde_json::{Map, Number, Value};

fn oracle(text: &[u8]) -> Option<(u64, String, u64)> {
    let Value::Object(map) = serde_json::from_slice(text).ok()? else {
        return None;
    };
    Some((
        map.get("version")?.as_u64()?,
        map.get("batch_id")?.as_str()?.to_owned(),
        map.get("count")?.as_u64()?,
    ))
}

#[derive(Default, Debug)]
struct Tally {
    cases: usize,
    accepted: usize,
}

fn check(text: &[u8], tally: &mut Tally) {
    let ours = binsync::receive::skim::skim(text);
    let theirs = oracle(text);
    tally.cases += 1;
    match (&ours, &theirs) {
        (Ok(e), Some((v, b, c))) => {
            tally.accepted += 1;
            assert_eq!(
                (e.version, &*e.batch_id, e.count),
                (*v, b.as_str(), *c),
                "different values for {:?}",
                String::from_utf8_lossy(text)
            );
        }
        (Err(_), None) => {}
        _ => panic!(
            "skim {ours:?} but serde_json {theirs:?} for {:?} (bytes {text:?})",
            String::from_utf8_lossy(text)
        ),
    }
}

const CHARS: &[char] = &[
    'a',
    'b',
    'z',
    'A',
    '0',
    '9',
    ' ',
    '"',
    '\\',
    '/',
    '\n',
    '\t',
    '\r',
    '\u{0}',
    '\u{1}',
    '\u{1f}',
    '\u{7f}',
    '\u{80}',
    'é',
    '\u{7ff}',
    '\u{800}',
    '€',
    '\u{fffd}',
    '\u{ffff}',
    '\u{10000}',
    '😀',
    '\u{10ffff}',
    '{',
    '}',
    '[',
    ']',
    ',',
    ':',
];

fn random_string(rng: &mut fastrand::Rng) -> String {
    let len = match rng.u8(..10) {
        0..=5 => rng.usize(..8),
        6..=8 => rng.usize(..40),
        _ => rng.usize(..200),
    };
    (0..len)
        .map(|_| {
            if rng.bool() {
                char::from(rng.u8(b' '..=b'~'))
            } else {
                CHARS[rng.usize(..CHARS.len())]
            }
        })
        .collect()
}

fn random_number(rng: &mut fastrand::Rng) -> Number {
    match rng.u8(..6) {
        0 => Number::from(rng.u64(..100)),
        1 => Number::from(rng.u64(..)),
        2 => Number::from(rng.i64(..)),
        3 => Number::from_f64(rng.f64() * 1000.0 - 500.0).unwrap(),
        4 => Number::from_f64(f64::from_bits(rng.u64(..))).unwrap_or_else(|| Number::from(0)),
        _ => Number::from_f64(10f64.powi(rng.i32(-320..309)) * rng.f64())
            .unwrap_or_else(|| Number::from(1)),
    }
}

fn random_value(rng: &mut fastrand::Rng, depth: usize) -> Value {
    let leaf = depth == 0 || rng.u8(..10) < 4;
    match rng.u8(..if leaf { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.bool()),
        2 => Value::Number(random_number(rng)),
        3 | 4 => Value::String(random_string(rng)),
        5 => Value::Array(
            (0..rng.usize(..6))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.usize(..6))
                .map(|_| (random_string(rng), random_value(rng, depth - 1)))
                .collect(),
        ),
    }
}

/// An envelope around random content; now and then a key is missing or has another type.
fn random_envelope(rng: &mut fastrand::Rng) -> Value {
    let mut map = Map::new();
    let depth = rng.usize(1..6);
    for _ in 0..rng.usize(..4) {
        map.insert(random_string(rng), random_value(rng, depth));
    }
    let odd = rng.u8(..10) == 0;
    let pick = |rng: &mut fastrand::Rng, good: Value| {
        if odd && rng.u8(..3) == 0 {
            random_value(rng, 1)
        } else {
            good
        }
    };
    if !(odd && rng.u8(..4) == 0) {
        let v = Value::from(rng.u64(..3));
        map.insert("version".into(), pick(rng, v));
    }
    if !(odd && rng.u8(..4) == 0) {
        let s = Value::String(random_string(rng));
        map.insert("batch_id".into(), pick(rng, s));
    }
    if !(odd && rng.u8(..4) == 0) {
        let n = Value::Number(if rng.bool() {
            rng.u64(..2000).into()
        } else {
            random_number(rng)
        });
        map.insert("count".into(), pick(rng, n));
    }
    if rng.bool() {
        let ops = (0..rng.usize(..4)).map(|_| random_value(rng, 4)).collect();
        map.insert("entities".into(), Value::Array(ops));
    }
    Value::Object(map)
}

/// JSON text written directly, to reach what serializing a `Value` never produces.
struct Writer<'r> {
    rng: &'r mut fastrand::Rng,
    out: Vec<u8>,
}

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "0.5",
    "-0.0",
    "1e5",
    "1E+2",
    "1e-2",
    "2.5E-3",
    "1e308",
    "1e-400",
    "0e999999999999",
    "1.7976931348623157e308",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "12345678901234567890123",
    "4.9e-324",
    "123.456e7",
    "0.000001",
    "-0e2147483648",
    "1e-2147483649",
];

/// Out of f64 range for serde_json; rare, like `BAD_ESCAPES`.
const BAD_NUMBERS: &[&str] = &[
    "1e309",
    "1e400",
    "-1e400",
    "1.7976931348623158e308",
    "1e2147483647",
    "1e2147483648",
    "-2e99999999999",
];

const ESCAPES: &[&str] = &[
    "\\n",
    "\\\"",
    "\\\\",
    "\\/",
    "\\b",
    "\\f",
    "\\r",
    "\\t",
    "\\u0000",
    "\\u001F",
    "\\u00e9",
    "\\u20AC",
    "\\uFFFF",
    "\\ud83d\\ude00",
    "\\uDBFF\\uDFFF",
    "\\uE000\\uD7FF",
];

/// Each rare, so that a document usually holds at most one of them.
const BAD_ESCAPES: &[&str] = &[
    "\\ud800",
    "\\udc00",
    "\\uDFFF",
    "\\ud800\\u0041",
    "\\ud800\\ud800\\udc00",
    "\\uD800\\uDBFF",
    "\\ud800\\n",
    "\\x",
    "\\u12",
    "\\uZZZZ",
    "\\U0041",
    "\\'",
];

impl Writer<'_> {
    fn ws(&mut self) {
        if self.rng.u8(..4) == 0 {
            for _ in 0..self.rng.usize(1..3) {
                self.out.push(b" \t\r\n"[self.rng.usize(..4)]);
            }
        }
    }

    fn string(&mut self) {
        self.out.push(b'"');
        for _ in 0..self.rng.usize(..12) {
            match self.rng.u8(..8) {
                0 if self.rng.u8(..40) == 0 => self
                    .out
                    .extend_from_slice(BAD_ESCAPES[self.rng.usize(..BAD_ESCAPES.len())].as_bytes()),
                0 => self
                    .out
                    .extend_from_slice(ESCAPES[self.rng.usize(..ESCAPES.len())].as_bytes()),
                1 => {
                    let c = CHARS[self.rng.usize(..CHARS.len())];
                    if !matches!(c, '"' | '\\') && c >= ' ' {
                        self.out.extend_from_slice(c.to_string().as_bytes());
                    }
                }
                _ => self.out.push(self.rng.u8(b'a'..=b'z')),
            }
        }
        self.out.push(b'"');
    }

    fn value(&mut self, depth: usize) {
        self.ws();
        let leaf = depth == 0 || self.rng.u8(..10) < 5;
        match self.rng.u8(..if leaf { 4 } else { 6 }) {
            0 => self
                .out
                .extend_from_slice([&b"null"[..], b"true", b"false"][self.rng.usize(..3)]),
            1 if self.rng.u8(..30) == 0 => self
                .out
                .extend_from_slice(BAD_NUMBERS[self.rng.usize(..BAD_NUMBERS.len())].as_bytes()),
            1 => self
                .out
                .extend_from_slice(NUMBERS[self.rng.usize(..NUMBERS.len())].as_bytes()),
            2 => self.string(),
            3 => self
                .out
                .extend_from_slice(self.rng.u64(..1_000_000).to_string().as_bytes()),
            4 => {
                self.out.push(b'[');
                for i in 0..self.rng.usize(..5) {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.value(depth - 1);
                }
                self.ws();
                self.out.push(b']');
            }
            _ => {
                self.out.push(b'{');
                for i in 0..self.rng.usize(..5) {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.ws();
                    self.string();
                    self.ws();
                    self.out.push(b':');
                    self.value(depth - 1);
                }
                self.ws();
                self.out.push(b'}');
            }
        }
        self.ws();
    }

    fn envelope(&mut self) {
        self.ws();
        self.out.push(b'{');
        let mut members: Vec<Vec<u8>> = vec![
            b"\"version\":1".to_vec(),
            b"\"batch_id\":\"b-1\"".to_vec(),
            format!("\"count\":{}", self.rng.u64(..5000)).into_bytes(),
        ];
        for _ in 0..self.rng.usize(..4) {
            let start = self.out.len();
            self.string();
            self.out.push(b':');
            self.value(4);
            members.push(self.out.split_off(start));
        }
        // Envelope keys with odd values, escaped names or duplicates.
        if self.rng.u8(..3) == 0 {
            let key = [
                &b"\"version\""[..],
                b"\"batch_id\"",
                b"\"count\"",
                b"\"vers\\u0069on\"",
                b"\"count\\u0000\"",
            ][self.rng.usize(..5)];
            let start = self.out.len();
            self.out.extend_from_slice(key);
            self.out.push(b':');
            self.value(1);
            members.push(self.out.split_off(start));
        }
        self.rng.shuffle(&mut members);
        for (i, m) in members.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.ws();
            self.out.extend_from_slice(m);
        }
        self.ws();
        self.out.push(b'}');
        self.ws();
    }
}

const INTERESTING: &[u8] =
    b"\"\\{}[],:0123456789-+.eEtfnu \t\r\n\x00\x01\x1f\x7f\x80\xbf\xc0\xc3\xe2\xed\xf0\xf4\xf5\xff";

fn mutate(rng: &mut fastrand::Rng, text: &mut Vec<u8>) {
    for _ in 0..rng.usize(1..4) {
        let len = text.len();
        if len == 0 {
            text.push(INTERESTING[rng.usize(..INTERESTING.len())]);
            continue;
        }
        let at = rng.usize(..len);
        match rng.u8(..9) {
            0 => text[at] ^= 1 << rng.u8(..8),
            1 | 2 => text[at] = INTERESTING[rng.usize(..INTERESTING.len())],
            3 => text.insert(at, INTERESTING[rng.usize(..INTERESTING.len())]),
            4 => {
                text.remove(at);
            }
            5 => {
                let end = (at + rng.usize(1..8)).min(len);
                text.drain(at..end);
            }
            6 => text.truncate(at),
            7 => {
                let end = (at + rng.usize(1..16)).min(len);
                let copy = text[at..end].to_vec();
                let to = rng.usize(..=len);
                text.splice(to..to, copy);
            }
            _ => {
                let snippet: &[u8] = [
                    &b"\\u"[..],
                    b"\\ud800",
                    b"\xf0\x9f\x98\x80",
                    b"e9",
                    b"[",
                    b"{\"a\":",
                    b",",
                    b"1.",
                    b"-",
                ][rng.usize(..9)];
                text.splice(at..at, snippet.iter().copied());
            }
        }
    }
}

#[test]
fn random_values_then_mutations() {
    let mut tally = Tally::default();
    for seed in 1..=4u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..4000 {
            let v = random_envelope(&mut rng);
            let text = if rng.bool() {
                serde_json::to_vec(&v)
            } else {
                serde_json::to_vec_pretty(&v)
            }
            .unwrap();
            check(&text, &mut tally);
            for _ in 0..3 {
                let mut m = text.clone();
                mutate(&mut rng, &mut m);
                check(&m, &mut tally);
            }
        }
    }
    eprintln!("values: {tally:?}");
    assert!(
        tally.accepted > tally.cases / 5,
        "too few accepted cases: {tally:?}"
    );
}

#[test]
fn random_text_then_mutations() {
    let mut tally = Tally::default();
    for seed in 100..=103u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..5000 {
            let mut w = Writer {
                rng: &mut rng,
                out: Vec::new(),
            };
            w.envelope();
            let text = w.out;
            check(&text, &mut tally);
            for _ in 0..3 {
                let mut m = text.clone();
                mutate(&mut rng, &mut m);
                check(&m, &mut tally);
            }
        }
    }
    eprintln!("text: {tally:?}");
    assert!(
        tally.accepted > tally.cases / 10,
        "too few accepted cases: {tally:?}"
    );
}

#[test]
fn random_nesting_depth() {
    let mut tally = Tally::default();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..400 {
        let depth = rng.usize(110..140);
        let mut v = String::new();
        let mut closes = Vec::new();
        for _ in 0..depth {
            if rng.bool() {
                v.push('[');
                closes.push(']');
            } else {
                v.push_str("{\"k\":");
                closes.push('}');
            }
        }
        v.push('0');
        v.extend(closes.iter().rev());
        let text = format!(r#"{{"version":1,"batch_id":"b","count":1,"x":{v}}}"#);
        check(text.as_bytes(), &mut tally);
        let mut m = text.into_bytes();
        mutate(&mut rng, &mut m);
        check(&m, &mut tally);
    }
    eprintln!("nesting: {tally:?}");
}
