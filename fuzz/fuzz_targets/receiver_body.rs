//! The receiver's request body checks (`binsync-receiver`'s `batch::parse`, the storing mode,
//! and `discard::envelope`, `--discard` mode) on one body, as the server calls them after
//! gunzip.
//!
//! Input: `[k][body]`. k % 3: no `Idempotency-Key` header, the key `mariadb-1-101-164` (the
//! seeds' batch id), or the key equal to the body's first 16 bytes (lossy UTF-8).
//!
//! Besides "no panic": a body the storing receiver accepts is strict JSON, so the discarding
//! receiver accepts it too, with the same `batch_id` and `count`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&k, body)) = data.split_first() else {
        return;
    };
    let own;
    let key = match k % 3 {
        0 => None,
        1 => Some("mariadb-1-101-164"),
        _ => {
            own = String::from_utf8_lossy(&body[..body.len().min(16)]).into_owned();
            Some(own.as_str())
        }
    };
    let (parsed, envelope) = binsync_receiver::fuzz_check_body(body, key);
    if let Ok(p) = parsed {
        match envelope {
            Ok(e) => assert_eq!(p, e, "the two modes read the envelope differently"),
            Err(e) => panic!("accepted as a batch {p:?} but not as JSON: {e}"),
        }
    }
});
