//! Subjects of the JetStream sink: `PREFIX.<entity-token>.<partition>`.
//!
//! Invariants (docs/jetstream.md; consumers depend on them, so they never change):
//! - The entity token is the entity name escaped byte-wise: `[A-Za-z0-9_-]` stay, every other
//!   byte (`.`, `*`, `>`, whitespace, `~` itself, non-ASCII bytes) becomes `~XX` with two
//!   uppercase hex digits. The escaping is injective, so two entity types never share a token.
//! - The partition is FNV-1a 64-bit over the exact bytes of the operation's `id` object, modulo
//!   the number of partitions, in decimal: the same id lands in the same partition on every
//!   machine and every binsync version. Operations without an id go to partition 0.

/// The entity name as one valid subject token.
pub fn escape_token(entity: &str) -> String {
    let mut out = String::with_capacity(entity.len());
    for &b in entity.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push('~');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// FNV-1a, 64 bits (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The partition of an operation whose `id` object is `key` (empty: no id, partition 0).
pub fn partition(key: &[u8], partitions: u32) -> u32 {
    if key.is_empty() || partitions <= 1 {
        return 0;
    }
    (fnv1a64(key) % u64::from(partitions)) as u32
}

/// `PREFIX.<token>.<partition>`.
pub fn subject(prefix: &str, token: &str, partition: u32) -> String {
    format!("{prefix}.{token}.{partition}")
}

/// Why `prefix` cannot start subjects (None: it can): one or more tokens separated by `.`,
/// none empty, none holding a wildcard or whitespace.
pub fn prefix_problem(prefix: &str) -> Option<String> {
    if prefix.is_empty() {
        return Some("it is empty".into());
    }
    for token in prefix.split('.') {
        if token.is_empty() {
            return Some("it has an empty token (a leading, trailing or double `.`)".into());
        }
        if token == "*" || token == ">" || token.contains(['*', '>']) {
            return Some(format!("token `{token}` holds a wildcard"));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Some(format!("token `{token}` holds whitespace"));
        }
    }
    None
}

/// Does the stream subject `filter` (may hold `*` and `>`) match every subject `PREFIX.>` can?
pub fn covers(filter: &str, prefix: &str) -> bool {
    let f: Vec<&str> = filter.split('.').collect();
    let p: Vec<&str> = prefix.split('.').collect();
    for (i, ft) in f.iter().enumerate() {
        if *ft == ">" {
            // `>` matches one or more tokens; PREFIX.> always has at least one after p.
            return i <= p.len();
        }
        match p.get(i) {
            Some(pt) if *ft == "*" || ft == pt => {}
            // Position p.len() holds PREFIX.>'s `>`: only a `>` covers it (handled above).
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_plain_names_and_escapes_the_rest() {
        assert_eq!(escape_token("orders"), "orders");
        assert_eq!(escape_token("Order_items-2"), "Order_items-2");
        assert_eq!(escape_token("user.events"), "user~2Eevents");
        assert_eq!(escape_token("a b"), "a~20b");
        assert_eq!(escape_token("a*b>c"), "a~2Ab~3Ec");
        assert_eq!(escape_token("x~y"), "x~7Ey");
        assert_eq!(escape_token("tab\there"), "tab~09here");
        assert_eq!(escape_token("é"), "~C3~A9");
    }

    #[test]
    fn escaping_is_injective_on_tricky_pairs() {
        // `~` is escaped itself, so an escape sequence in a name cannot collide.
        assert_ne!(escape_token("a.b"), escape_token("a~2Eb"));
        assert_ne!(escape_token("a b"), escape_token("a_b"));
        for name in ["a.b", "a~2Eb", "a b", "x>", "*", "ü"] {
            let t = escape_token(name);
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-~".contains(&b)),
                "{t}"
            );
        }
    }

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference (Fowler/Noll/Vo) test suite.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn partitions_are_stable_golden_values() {
        // Computed independently (Python: FNV-1a 64 over the bytes, mod 8); a change here
        // moves every consumer group's partitions, so it must never happen.
        assert_eq!(fnv1a64(br#"{"id":1}"#), GOLDEN_ID1);
        assert_eq!(partition(br#"{"id":1}"#, 8), (GOLDEN_ID1 % 8) as u32);
        assert_eq!(partition(br#"{"id":1}"#, 8), GOLDEN_ID1_MOD8);
        assert_eq!(partition(br#"{"a":1,"b":"x"}"#, 1024), GOLDEN_AB_MOD1024);
        assert_eq!(partition(b"", 8), 0, "no id: partition 0");
        assert_eq!(partition(br#"{"id":1}"#, 1), 0);
    }

    const GOLDEN_ID1: u64 = 0xd51b_1db3_d1df_f09b;
    const GOLDEN_ID1_MOD8: u32 = 3;
    const GOLDEN_AB_MOD1024: u32 = 29;

    #[test]
    fn prefixes() {
        assert_eq!(prefix_problem("binsync"), None);
        assert_eq!(prefix_problem("cdc.prod"), None);
        assert!(prefix_problem("").is_some());
        assert!(prefix_problem("a..b").is_some());
        assert!(prefix_problem("a.").is_some());
        assert!(prefix_problem("a.*").is_some());
        assert!(prefix_problem("a>").is_some());
        assert!(prefix_problem("a b").is_some());
    }

    #[test]
    fn stream_subjects_covering_the_prefix() {
        assert!(covers("binsync.>", "binsync"));
        assert!(covers(">", "binsync"));
        assert!(covers("*.>", "binsync"));
        assert!(covers("cdc.>", "cdc.prod") && covers("cdc.*.>", "cdc.prod"));
        assert!(!covers("binsync.*", "binsync"), "one token only");
        assert!(
            !covers("binsync.*.*", "binsync"),
            "exactly our subjects today, but not PREFIX.> (the contract asks for that)"
        );
        assert!(!covers("other.>", "binsync"));
        assert!(!covers("binsync", "binsync"));
        assert!(!covers("cdc.prod.x.>", "cdc.prod"));
        assert!(covers("cdc.prod.>", "cdc.prod"));
    }
}
