//! One request body of the sync API, parsed and checked against the contract, versions 1, 2
//! and 3 (docs/sync-api.md, docs/sync-api.schema.json).
//!
//! The checks are as strict as the JSON Schema, plus what a schema cannot say: `count` matches
//! the operations, every `seq` lies within `first_seq..=last_seq` and rises within its entity's
//! list, an operation's `entity` names its list, `Idempotency-Key` equals `batch_id`, and a
//! ddl's `key` names columns of its `columns`. A reference receiver that lets a sender's
//! mistake through would hide it until production.
//!
//! Versions: a version 1 body holds row operations only (insert, update, delete); version 2
//! adds the operations on a whole entity type (ddl, truncate, drop), which carry no `id`. A
//! version 1 body with one of those is refused: a sender that says 1 promised a receiver that
//! knows nothing of them, and applying it anyway would hide the sender's mistake. Version 3
//! adds the initial snapshot's operations: `read` (a row as the snapshot read it, with `id`
//! and `after` like an insert, no `row`) and `snapshot_end` (no `id`; `since`); a version 1
//! or 2 body with one of those is refused the same way.
//!
//! Beyond the contract, what this receiver cannot store is refused here too, before anything
//! is applied: a body nested deeper than `--max-depth` ([`check_depth`]) and a `seq` above
//! `i64::MAX` (SQLite's INTEGER).
//!
//! Parsing borrows from the body: operation texts, ids and after-images are slices of it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The contract versions this receiver implements: 1 (row operations), 2 (also ddl,
/// truncate and drop) and 3 (also read and snapshot_end).
pub const CONTRACT_VERSIONS: [u64; 3] = [1, 2, 3];

/// The store keeps `seq` in an SQLite INTEGER (i64).
pub const MAX_STORED_SEQ: u64 = i64::MAX as u64;

/// Why a body is refused: a 400 answer with this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug)]
pub struct Batch<'a> {
    /// The body's contract version (one of [`CONTRACT_VERSIONS`]).
    pub version: u64,
    pub batch_id: Cow<'a, str>,
    /// Operations in the body.
    pub count: u64,
    /// Per entity type, its operations in `seq` order.
    pub entities: Vec<(String, Vec<Op<'a>>)>,
    /// FNV-1a of the body: tells a retry of a batch from another batch under the same id.
    pub fingerprint: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Insert,
    Update,
    Delete,
    /// Version 2: the table's definition changed; rows are kept.
    Ddl,
    /// Version 2: every row of the entity type is gone.
    Truncate,
    /// Version 2: the table is gone, with its rows.
    Drop,
    /// Version 3: a row of the initial snapshot, as of the chunk's binlog position; applied
    /// as an upsert of the whole row.
    Read,
    /// Version 3: the table's snapshot is complete; every row it has was sent with a `seq`
    /// above `since`, so rows last written below `since` are gone (a floor, like truncate).
    #[serde(rename = "snapshot_end")]
    SnapshotEnd,
}

impl OpKind {
    /// A row change, with an `id`; the others act on the whole entity type.
    pub fn is_row(self) -> bool {
        matches!(
            self,
            OpKind::Insert | OpKind::Update | OpKind::Delete | OpKind::Read
        )
    }

    /// The first contract version that has this operation.
    pub fn since_version(self) -> u64 {
        match self {
            OpKind::Insert | OpKind::Update | OpKind::Delete => 1,
            OpKind::Ddl | OpKind::Truncate | OpKind::Drop => 2,
            OpKind::Read | OpKind::SnapshotEnd => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Insert => "insert",
            OpKind::Update => "update",
            OpKind::Delete => "delete",
            OpKind::Ddl => "ddl",
            OpKind::Truncate => "truncate",
            OpKind::Drop => "drop",
            OpKind::Read => "read",
            OpKind::SnapshotEnd => "snapshot_end",
        }
    }
}

#[derive(Debug)]
pub struct Op<'a> {
    pub seq: u64,
    pub kind: OpKind,
    /// The id's JSON text without insignificant whitespace: the entity's key in the store.
    /// Empty for an operation on the whole entity type (`!kind.is_row()`).
    pub id: Cow<'a, str>,
    /// `"keyless": true`: the table has no primary key, `id` is the whole row, and the
    /// receiver counts identical rows.
    pub keyless: bool,
    /// The before image (update, delete).
    pub before: Option<&'a RawValue>,
    /// The after image (insert, update, read).
    pub after: Option<&'a RawValue>,
    /// The whole operation as sent.
    pub text: &'a str,
    /// Where the table lives on the source (`db`, `table`).
    pub db: Cow<'a, str>,
    pub table: Cow<'a, str>,
    /// ddl, truncate, drop: the statement that did it (None on row operations).
    pub statement: Option<Cow<'a, str>>,
    /// ddl: the new definition; None when the table no longer exists under this name
    /// (`columns` and `key` are `null`), and on every other kind.
    pub definition: Option<Definition>,
    /// snapshot_end: every row of the type was sent with a `seq` above this (None on every
    /// other kind).
    pub since: Option<u64>,
}

/// A ddl's table definition, as JSON text without insignificant whitespace.
#[derive(Debug)]
pub struct Definition {
    /// `[{"name":..,"type":..,"nullable":..,"json":..},...]` in table order.
    pub columns: String,
    /// The primary key's column names in key order; `[]`: no primary key.
    pub key: String,
}

/// Parses and checks a (decompressed) body. `idempotency_key` is the header, if sent.
pub fn parse<'a>(body: &'a [u8], idempotency_key: Option<&str>) -> Result<Batch<'a>, Invalid> {
    // serde's derived structs also accept arrays; the contract has objects only.
    if !starts_object(body) {
        return Err(Invalid(
            "the body must be a JSON object (the batch envelope)".into(),
        ));
    }
    // The version first, with every other field ignored: a future contract's body must be
    // refused for its version, not for a field this one does not know.
    let probe: Probe = serde_json::from_slice(body).map_err(|e| not_a_batch("the body", &e))?;
    let version = match probe.version {
        None => return Err(Invalid(
            "the body has no `version` (contract version 1, 2 or 3 expected; see docs/sync-api.md)"
                .into(),
        )),
        Some(v) => match v.as_u64() {
            Some(n) if CONTRACT_VERSIONS.contains(&n) => n,
            _ => {
                return Err(Invalid(format!(
                    "unsupported contract version {v}: this receiver implements versions 1, 2 and 3"
                )))
            }
        },
    };
    let env: Envelope<'a> =
        serde_json::from_slice(body).map_err(|e| not_a_batch("the body", &e))?;
    if env.batch_id.is_empty() {
        return Err(Invalid("`batch_id` is empty".into()));
    }
    if let Some(key) = idempotency_key {
        if key != env.batch_id {
            return Err(Invalid(format!(
                "the Idempotency-Key header `{key}` differs from batch_id `{}`; they must be equal",
                env.batch_id
            )));
        }
    }
    if env.first_seq == 0 || env.last_seq < env.first_seq {
        return Err(Invalid(format!(
            "first_seq {} and last_seq {} must satisfy 1 <= first_seq <= last_seq",
            env.first_seq, env.last_seq
        )));
    }
    // Every op's seq lies within the range: checking its end bounds them all.
    if env.last_seq > MAX_STORED_SEQ {
        return Err(Invalid(format!(
            "last_seq {} is above {MAX_STORED_SEQ}, the largest seq this receiver stores (an SQLite INTEGER)",
            env.last_seq
        )));
    }
    if !starts_object(env.source.get().as_bytes()) {
        return Err(Invalid("`source` must be a JSON object".into()));
    }
    serde_json::from_str::<Source>(env.source.get()).map_err(|e| not_a_batch("`source`", &e))?;
    if env.entities.is_empty() {
        return Err(Invalid(
            "`entities` is empty: a batch carries at least one operation".into(),
        ));
    }

    let mut total: u64 = 0;
    let mut entities = Vec::with_capacity(env.entities.len());
    for (entity, raws) in env.entities {
        if entity.is_empty() || entity.contains('\0') {
            return Err(Invalid(format!(
                "entity type name {entity:?} is empty or holds a NUL character"
            )));
        }
        if raws.is_empty() {
            return Err(Invalid(format!("entities.{entity} is an empty list")));
        }
        let mut ops = Vec::with_capacity(raws.len());
        let mut prev_seq = 0;
        for (i, raw) in raws.into_iter().enumerate() {
            let at = || format!("entities.{entity}[{i}]");
            let text = raw.get();
            if !starts_object(text.as_bytes()) {
                return Err(Invalid(format!(
                    "{}: an operation must be a JSON object",
                    at()
                )));
            }
            let wire: OpWire<'a> =
                serde_json::from_str(text).map_err(|e| not_a_batch(&at(), &e))?;
            let op = check_op(wire, text, &entity, version, env.first_seq, env.last_seq)
                .map_err(|m| Invalid(format!("{} (seq {}): {m}", at(), seq_hint(text))))?;
            if op.seq <= prev_seq {
                return Err(Invalid(format!(
                    "{}: seq {} follows seq {prev_seq}; operations of an entity type must be in rising seq order",
                    at(),
                    op.seq
                )));
            }
            prev_seq = op.seq;
            ops.push(op);
        }
        total += ops.len() as u64;
        entities.push((entity, ops));
    }
    if total != env.count {
        return Err(Invalid(format!(
            "`count` is {} but the batch holds {total} operations",
            env.count
        )));
    }
    Ok(Batch {
        version,
        batch_id: env.batch_id,
        count: total,
        entities,
        fingerprint: fnv1a(body),
    })
}

/// Parses and checks one operation on its own, as a JetStream message carries it (the
/// payload is exactly one operation object of a body at contract `version`): the same checks
/// as an operation in a body, without the envelope's. Gives the operation's entity type (its
/// `entity`) with it.
pub fn parse_op(text: &[u8], version: u64) -> Result<(Cow<'_, str>, Op<'_>), Invalid> {
    let text = std::str::from_utf8(text)
        .map_err(|e| Invalid(format!("the operation is not UTF-8 text: {e}")))?;
    if !starts_object(text.as_bytes()) {
        return Err(Invalid(
            "the operation is not a JSON object (not a binsync operation)".into(),
        ));
    }
    // An operation sits at depth 4 of a body: the same limit on what it may nest below it.
    check_depth(text.as_bytes(), crate::DEFAULT_MAX_DEPTH - 3)?;
    let wire: OpWire<'_> =
        serde_json::from_str(text).map_err(|e| not_a_batch("the operation", &e))?;
    if wire.seq == 0 || wire.seq > MAX_STORED_SEQ {
        return Err(Invalid(format!(
            "seq {} is outside 1..={MAX_STORED_SEQ} (the seqs this receiver stores)",
            wire.seq
        )));
    }
    if wire.entity.is_empty() || wire.entity.contains('\0') {
        return Err(Invalid(format!(
            "entity type name {:?} is empty or holds a NUL character",
            wire.entity
        )));
    }
    let entity = wire.entity.clone();
    let op = check_op(wire, text, &entity, version, 1, MAX_STORED_SEQ)
        .map_err(|m| Invalid(format!("the operation (seq {}): {m}", seq_hint(text))))?;
    Ok((entity, op))
}

fn check_op<'a>(
    w: OpWire<'a>,
    text: &'a str,
    entity: &str,
    version: u64,
    first_seq: u64,
    last_seq: u64,
) -> Result<Op<'a>, String> {
    if w.seq < first_seq || w.seq > last_seq {
        return Err(format!(
            "seq lies outside the batch's first_seq..=last_seq ({first_seq}..={last_seq})"
        ));
    }
    if w.entity != entity {
        return Err(format!(
            "its entity `{}` differs from the list it is in (`{entity}`)",
            w.entity
        ));
    }
    if w.db.is_empty() || w.table.is_empty() {
        return Err("`db` and `table` must not be empty".into());
    }
    if !is_utc_timestamp(&w.ts) {
        return Err(format!(
            "`ts` {:?} is not a UTC ISO-8601 time like 2026-11-24T07:37:31Z",
            w.ts
        ));
    }
    let needs = w.op.since_version();
    if version < needs {
        return Err(format!(
            "a `{}` operation needs contract version {needs}, but the body says version {version} (version 1 carries insert, update and delete only, version 2 also ddl, truncate and drop, version 3 also read and snapshot_end); a sender must send it as version {needs}",
            w.op.as_str()
        ));
    }
    if w.since.is_some() && w.op != OpKind::SnapshotEnd {
        let kind = w.op.as_str();
        return Err(format!(
            "{} {kind} must not carry `since` (only snapshot_end does)",
            article(kind)
        ));
    }
    if w.op.is_row() {
        check_row_op(w, text)
    } else if w.op == OpKind::SnapshotEnd {
        check_snapshot_end(w, text)
    } else {
        check_type_op(w, text)
    }
}

/// insert, update, delete: an `id`, a `row` index, and the images their kind needs; read:
/// like an insert (`id`, `after`) but without `row` (it belongs to no transaction).
fn check_row_op<'a>(w: OpWire<'a>, text: &'a str) -> Result<Op<'a>, String> {
    let kind = w.op.as_str();
    let a = article(kind);
    let Some(id) = w.id else {
        return Err(format!("{a} {kind} needs `id`"));
    };
    match (w.op, w.row.is_some()) {
        (OpKind::Read, true) => {
            return Err(
                "a read must not carry `row` (it belongs to no transaction of the binlog)".into(),
            )
        }
        (OpKind::Read, false) | (_, true) => {}
        (_, false) => return Err(format!("{a} {kind} needs `row`")),
    }
    let type_fields = [
        ("statement", w.statement.is_some()),
        ("columns", w.columns.is_some()),
        ("key", w.key.is_some()),
    ];
    if let Some((field, _)) = type_fields.iter().find(|(_, present)| *present) {
        return Err(format!(
            "{a} {kind} must not carry `{field}` (only ddl, truncate and drop do)"
        ));
    }
    let id = compact_json(id.get());
    if !id.starts_with('{') || id == "{}" {
        return Err("`id` must be a JSON object with at least one key column".into());
    }
    let object = |name: &str, v: Option<&RawValue>| match v {
        Some(v) if !v.get().starts_with('{') => Err(format!("`{name}` must be a JSON object")),
        _ => Ok(()),
    };
    object("before", w.before)?;
    object("after", w.after)?;
    let (need_before, need_after, need_changed) = match w.op {
        OpKind::Insert | OpKind::Read => (false, true, false),
        OpKind::Update => (true, true, true),
        _ => (true, false, false),
    };
    let presence = [
        ("before", need_before, w.before.is_some()),
        ("after", need_after, w.after.is_some()),
        ("changed", need_changed, w.changed.is_some()),
    ];
    for (field, needed, present) in presence {
        if needed != present {
            return Err(if needed {
                format!("{a} {kind} needs `{field}`")
            } else {
                format!("{a} {kind} must not carry `{field}`")
            });
        }
    }
    if let Some(changed) = &w.changed {
        let mut seen = std::collections::HashSet::with_capacity(changed.len());
        if let Some(twice) = changed.iter().find(|c| !seen.insert(c.as_str())) {
            return Err(format!("`changed` names column `{twice}` twice"));
        }
    }
    let keyless = match w.keyless {
        None => false,
        Some(true) => true,
        Some(false) => {
            return Err("`keyless` is either `true` or absent (a table with a key)".into())
        }
    };
    Ok(Op {
        seq: w.seq,
        kind: w.op,
        id,
        keyless,
        before: w.before,
        after: w.after,
        text,
        db: w.db,
        table: w.table,
        statement: None,
        definition: None,
        since: None,
    })
}

/// The first row field `w` carries (`id`, `keyless`, `row`, `changed`, `before`, `after`),
/// which an operation on a whole entity type must not.
fn row_field(w: &OpWire<'_>) -> Option<&'static str> {
    [
        ("id", w.id.is_some()),
        ("keyless", w.keyless.is_some()),
        ("row", w.row.is_some()),
        ("changed", w.changed.is_some()),
        ("before", w.before.is_some()),
        ("after", w.after.is_some()),
    ]
    .into_iter()
    .find_map(|(f, present)| present.then_some(f))
}

/// snapshot_end (version 3): no row fields, no `statement`, `columns` or `key`; a `since`
/// below its own `seq` (every row of the snapshot was sent between the two).
fn check_snapshot_end<'a>(w: OpWire<'a>, text: &'a str) -> Result<Op<'a>, String> {
    let ddl_field = [
        ("statement", w.statement.is_some()),
        ("columns", w.columns.is_some()),
        ("key", w.key.is_some()),
    ]
    .into_iter()
    .find_map(|(f, present)| present.then_some(f));
    if let Some(field) = row_field(&w).or(ddl_field) {
        return Err(format!(
            "a snapshot_end acts on the whole entity type and must not carry `{field}`"
        ));
    }
    let Some(since) = w.since else {
        return Err("a snapshot_end needs `since`".into());
    };
    if since > MAX_STORED_SEQ {
        return Err(format!(
            "`since` {since} is above {MAX_STORED_SEQ}, the largest seq this receiver stores (an SQLite INTEGER)"
        ));
    }
    if since >= w.seq {
        return Err(format!(
            "`since` {since} is not below the snapshot_end's own seq {}: the snapshot's rows are sent between the two",
            w.seq
        ));
    }
    Ok(Op {
        seq: w.seq,
        kind: w.op,
        id: Cow::Borrowed(""),
        keyless: false,
        before: None,
        after: None,
        text,
        db: w.db,
        table: w.table,
        statement: None,
        definition: None,
        since: Some(since),
    })
}

/// ddl, truncate, drop (version 2): no row fields, a `statement`, and for a ddl the new
/// `columns` and `key` (both `null` when the table no longer exists under this name).
fn check_type_op<'a>(w: OpWire<'a>, text: &'a str) -> Result<Op<'a>, String> {
    let kind = w.op.as_str();
    if let Some(field) = row_field(&w) {
        return Err(format!(
            "a {kind} acts on the whole entity type and must not carry `{field}`"
        ));
    }
    let statement = match w.statement {
        Some(s) if !s.is_empty() => s,
        Some(_) => return Err("`statement` is empty".into()),
        None => return Err(format!("a {kind} needs `statement`")),
    };
    let definition = match (w.op, w.columns, w.key) {
        (OpKind::Ddl, None, _) => {
            return Err(
                "a ddl needs `columns` (`null` when the table no longer exists under this name)"
                    .into(),
            )
        }
        (OpKind::Ddl, _, None) => {
            return Err(
                "a ddl needs `key` (`null` when the table no longer exists under this name)"
                    .into(),
            )
        }
        (OpKind::Ddl, Some(None), Some(None)) => None,
        (OpKind::Ddl, Some(Some(columns)), Some(Some(key))) => {
            Some(check_definition(columns, key)?)
        }
        (OpKind::Ddl, _, _) => {
            return Err("`columns` and `key` are either both `null` (the table no longer exists under this name) or both given".into())
        }
        (_, Some(_), _) => return Err(format!("a {kind} must not carry `columns`")),
        (_, _, Some(_)) => return Err(format!("a {kind} must not carry `key`")),
        (_, None, None) => None,
    };
    Ok(Op {
        seq: w.seq,
        kind: w.op,
        id: Cow::Borrowed(""),
        keyless: false,
        before: None,
        after: None,
        text,
        db: w.db,
        table: w.table,
        statement: Some(Cow::Owned(statement)),
        definition,
        since: None,
    })
}

/// A ddl's `columns` (objects of exactly name, type, nullable, json; at least one; names
/// unique) and `key` (names of those columns, each once).
fn check_definition(columns: &RawValue, key: &RawValue) -> Result<Definition, String> {
    let items: Vec<&RawValue> = serde_json::from_str(columns.get())
        .map_err(|e| format!("`columns` must be an array of column objects: {e}"))?;
    if items.is_empty() {
        return Err("`columns` is empty: a table has at least one column".into());
    }
    let mut names = std::collections::HashSet::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        // serde's derived structs also accept arrays; a column is an object.
        if !starts_object(item.get().as_bytes()) {
            return Err(format!("`columns[{i}]` must be a JSON object"));
        }
        let column: ColumnWire =
            serde_json::from_str(item.get()).map_err(|e| format!("`columns[{i}]`: {e}"))?;
        if column.name.is_empty() || column.sql_type.is_empty() {
            return Err(format!(
                "`columns[{i}]`: `name` and `type` must not be empty"
            ));
        }
        if !names.insert(column.name.clone()) {
            return Err(format!("`columns` names column `{}` twice", column.name));
        }
    }
    let key_names: Vec<String> = serde_json::from_str(key.get())
        .map_err(|e| format!("`key` must be an array of column names: {e}"))?;
    let mut seen = std::collections::HashSet::with_capacity(key_names.len());
    for name in &key_names {
        if !names.contains(name) {
            return Err(format!(
                "`key` names column `{name}`, which is not in `columns`"
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(format!("`key` names column `{name}` twice"));
        }
    }
    Ok(Definition {
        columns: compact_json(columns.get()).into_owned(),
        key: compact_json(key.get()).into_owned(),
    })
}

/// "an insert", "a delete": for messages.
fn article(kind: &str) -> &'static str {
    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the shape binsync writes (and the schema's pattern).
fn is_utc_timestamp(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() < 20 || b[b.len() - 1] != b'Z' {
        return false;
    }
    let fixed = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    let rest = &b[19..b.len() - 1];
    fixed
        && (rest.is_empty()
            || (rest[0] == b'.'
                && (2..=10).contains(&rest.len())
                && rest[1..].iter().all(u8::is_ascii_digit)))
}

/// JSON text without whitespace outside strings, so `{"id": 5}` and `{"id":5}` are one key.
/// Key order is kept: it is the primary key's column order.
pub fn compact_json(text: &str) -> Cow<'_, str> {
    // One pass; the text is copied only from the first whitespace outside a string on.
    let mut out: Option<String> = None;
    let (mut in_str, mut escaped) = (false, false);
    for (i, c) in text.char_indices() {
        let keep = if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            true
        } else {
            in_str = c == '"';
            !matches!(c, ' ' | '\t' | '\n' | '\r')
        };
        match (&mut out, keep) {
            (Some(o), true) => o.push(c),
            (None, false) => out = Some(text[..i].to_string()),
            _ => {}
        }
    }
    out.map_or(Cow::Borrowed(text), Cow::Owned)
}

/// Refuses a body whose arrays and objects nest deeper than `max`, counting the body object as
/// depth 1 (so `entities` is 2, an entity type's list 3, an operation 4, its `id`, `before`
/// and `after` 5, and a column value that is an array or object 6). One pass over the bytes,
/// before any parser recurses into them; brackets inside strings do not count.
pub fn check_depth(body: &[u8], max: usize) -> Result<(), Invalid> {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for (at, &b) in body.iter().enumerate() {
        if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(Invalid(format!(
                        "the body nests arrays and objects more than {max} deep (at byte {at}; the batch is depth 1, a column value of an operation starts at depth 6): this receiver refuses what it could not read back (--max-depth)"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            // A number's first byte (outside strings, nothing else starts with these): one
            // that overflows a double is refused, as the JSON reader of `dump` refuses it.
            b'-' | b'0'..=b'9' if at == 0 || !is_number_byte(body[at - 1]) => {
                let len = body[at..]
                    .iter()
                    .take_while(|&&c| is_number_byte(c))
                    .count();
                let token = &body[at..at + len];
                if token.iter().any(|&c| c == b'e' || c == b'E') || len > 300 {
                    let finite = std::str::from_utf8(token)
                        .ok()
                        .and_then(|t| t.parse::<f64>().ok())
                        .is_none_or(f64::is_finite);
                    if !finite {
                        return Err(Invalid(format!(
                            "a number out of a double's range at byte {at}: this receiver refuses what it could not read back"
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_number_byte(c: u8) -> bool {
    matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
}

fn starts_object(text: &[u8]) -> bool {
    text.trim_ascii_start().first() == Some(&b'{')
}

/// FNV-1a 64: stable across runs and platforms, which a persisted fingerprint needs.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn not_a_batch(what: &str, e: &serde_json::Error) -> Invalid {
    use serde_json::error::Category;
    Invalid(match e.classify() {
        Category::Syntax | Category::Eof => format!("{what} is not valid JSON: {e}"),
        Category::Data | Category::Io => {
            format!("{what} does not follow the sync API contract: {e}")
        }
    })
}

/// The op's `seq` for an error message, found without trusting the rest of it.
fn seq_hint(text: &str) -> String {
    #[derive(Deserialize)]
    struct SeqOnly {
        seq: Option<serde_json::Value>,
    }
    serde_json::from_str::<SeqOnly>(text)
        .ok()
        .and_then(|s| s.seq)
        .map_or_else(|| "?".into(), |v| v.to_string())
}

#[derive(Deserialize)]
struct Probe {
    version: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    // Checked by the probe; here so that the strict parse accepts it.
    #[allow(dead_code)]
    version: u64,
    #[serde(borrow)]
    batch_id: Cow<'a, str>,
    #[serde(borrow)]
    source: &'a RawValue,
    first_seq: u64,
    last_seq: u64,
    count: u64,
    #[serde(borrow)]
    entities: BTreeMap<String, Vec<&'a RawValue>>,
}

/// Checked for shape only: `seq` orders operations whatever server wrote them (a switchover
/// changes the source and keeps the numbering).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Source {
    flavor: Flavor,
    server_id: u32,
    // `deserialize_with` makes the field required even though it may be null.
    #[serde(deserialize_with = "Option::deserialize")]
    server_uuid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Flavor {
    Mysql,
    Mariadb,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpWire<'a> {
    seq: u64,
    op: OpKind,
    #[serde(borrow)]
    db: Cow<'a, str>,
    #[serde(borrow)]
    table: Cow<'a, str>,
    #[serde(borrow)]
    entity: Cow<'a, str>,
    // `present`: absent is None, but `null` is a value (and refused), as in the schema.
    // Row operations need `id` and `row`; operations on a whole entity type carry neither.
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(rename = "gtid", deserialize_with = "Option::deserialize")]
    _gtid: Option<AnyStr>,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(default, deserialize_with = "present")]
    row: Option<u64>,
    #[serde(rename = "file")]
    _file: AnyStr,
    #[serde(rename = "offset")]
    _offset: u64,
    #[serde(default, deserialize_with = "present")]
    changed: Option<Vec<String>>,
    #[serde(default, borrow, deserialize_with = "present")]
    before: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    after: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "present")]
    keyless: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    statement: Option<String>,
    // ddl: present and `null` when the table no longer exists under this name.
    #[serde(default, borrow, deserialize_with = "present")]
    columns: Option<Option<&'a RawValue>>,
    #[serde(default, borrow, deserialize_with = "present")]
    key: Option<Option<&'a RawValue>>,
    // snapshot_end only.
    #[serde(default, deserialize_with = "present")]
    since: Option<u64>,
}

/// One of a ddl's `columns`: checked, kept as the text it came in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnWire {
    name: String,
    #[serde(rename = "type")]
    sql_type: String,
    #[serde(rename = "nullable")]
    _nullable: bool,
    #[serde(rename = "json")]
    _json: bool,
}

fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A JSON string whose text is not needed: checked, not kept.
struct AnyStr;

impl<'de> Deserialize<'de> for AnyStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyStr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<AnyStr, E> {
                Ok(AnyStr)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(seq: u64, kind: &str, id: i64) -> serde_json::Value {
        let mut v = json!({"seq": seq, "op": kind, "db": "shop", "table": "products",
            "entity": "products", "id": {"id": id}, "gtid": "0-1-77",
            "ts": "2026-11-24T07:37:31Z", "row": 0, "file": "mariadb-bin.000001", "offset": 1234});
        let obj = v.as_object_mut().unwrap();
        match kind {
            "insert" => {
                obj.insert("after".into(), json!({"id": id, "price": 1}));
            }
            "update" => {
                obj.insert("changed".into(), json!(["price"]));
                obj.insert("before".into(), json!({"id": id, "price": 1}));
                obj.insert("after".into(), json!({"id": id, "price": 2}));
            }
            _ => {
                obj.insert("before".into(), json!({"id": id, "price": 1}));
            }
        }
        v
    }

    fn body(ops: Vec<serde_json::Value>) -> serde_json::Value {
        let seqs: Vec<u64> = ops.iter().map(|o| o["seq"].as_u64().unwrap()).collect();
        json!({"version": 1, "batch_id": "b-1",
            "source": {"flavor": "mariadb", "server_id": 1, "server_uuid": null},
            "first_seq": seqs.iter().min(), "last_seq": seqs.iter().max(), "count": ops.len(),
            "entities": {"products": ops}})
    }

    fn parse_value(v: &serde_json::Value) -> Result<u64, Invalid> {
        let text = serde_json::to_vec(v).unwrap();
        parse(&text, None).map(|b| b.count)
    }

    fn refused(v: serde_json::Value, needle: &str) {
        let err = parse_value(&v).expect_err("must be refused");
        assert!(err.0.contains(needle), "`{err}` should mention `{needle}`");
    }

    #[test]
    fn a_well_formed_batch_parses() {
        let b = body(vec![
            op(1, "insert", 1),
            op(2, "update", 1),
            op(3, "delete", 1),
        ]);
        assert_eq!(parse_value(&b).unwrap(), 3);
    }

    /// One operation on its own (a JetStream message's payload): the checks of an operation
    /// in a body, against the message's contract version.
    #[test]
    fn a_single_operation_is_checked_as_in_a_body() {
        let text = serde_json::to_vec(&op(7, "update", 3)).unwrap();
        let (entity, parsed) = parse_op(&text, 1).unwrap();
        assert_eq!(
            (&*entity, parsed.seq, &*parsed.id),
            ("products", 7, "{\"id\":3}")
        );
        let refused = |text: &[u8], version: u64, needle: &str| {
            let err = parse_op(text, version).expect_err("must be refused");
            assert!(err.0.contains(needle), "`{err}` should mention `{needle}`");
        };
        refused(&text[..20], 1, "not valid JSON");
        refused(b"[1]", 1, "not a JSON object");
        let mut no_seq = op(7, "insert", 3);
        no_seq.as_object_mut().unwrap().remove("seq");
        refused(
            &serde_json::to_vec(&no_seq).unwrap(),
            1,
            "missing field `seq`",
        );
        refused(
            &serde_json::to_vec(&op(0, "insert", 3)).unwrap(),
            1,
            "seq 0 is outside",
        );
        let mut read = op(8, "insert", 3);
        read["op"] = "read".into();
        read.as_object_mut().unwrap().remove("row");
        let read = serde_json::to_vec(&read).unwrap();
        refused(&read, 2, "needs contract version 3");
        assert!(parse_op(&read, 3).is_ok());
        let mut unknown = op(9, "insert", 3);
        unknown["extra"] = 1.into();
        refused(
            &serde_json::to_vec(&unknown).unwrap(),
            1,
            "unknown field `extra`",
        );
    }

    #[test]
    fn mistakes_are_named() {
        refused(json!([1, 2]), "must be a JSON object");
        let mut b = body(vec![op(1, "insert", 1)]);
        b["source"] = json!(["mariadb", 1, null]);
        refused(b, "`source` must be a JSON object");
        let mut b = body(vec![op(1, "insert", 1)]);
        b["entities"]["products"][0] = json!([1, "insert"]);
        refused(b, "an operation must be a JSON object");
        refused(json!({"version": 4}), "unsupported contract version 4");
        refused(
            json!({"version": "2"}),
            "unsupported contract version \"2\"",
        );
        refused(json!({"batch_id": "x"}), "no `version`");
        let mut b = body(vec![op(1, "insert", 1)]);
        b["count"] = json!(2);
        refused(b, "`count` is 2");
        let mut b = body(vec![op(1, "insert", 1)]);
        b["extra"] = json!(1);
        refused(b, "unknown field `extra`");
        let mut b = body(vec![op(1, "insert", 1)]);
        b["source"].as_object_mut().unwrap().remove("server_uuid");
        refused(b, "missing field `server_uuid`");
        refused(
            body(vec![op(2, "insert", 1), op(1, "insert", 2)]),
            "rising seq order",
        );
        let mut o = op(1, "update", 1);
        o.as_object_mut().unwrap().remove("changed");
        refused(body(vec![o]), "an update needs `changed`");
        let mut o = op(1, "delete", 1);
        o["after"] = json!({"id": 1});
        refused(body(vec![o]), "must not carry `after`");
        let mut o = op(1, "update", 1);
        o["changed"] = json!(["price", "price"]);
        refused(body(vec![o]), "names column `price` twice");
        let mut o = op(1, "insert", 1);
        o["op"] = json!("upsert");
        refused(body(vec![o]), "unknown variant `upsert`");
        let mut o = op(1, "insert", 1);
        o["entity"] = json!("users");
        refused(body(vec![o]), "differs from the list");
        let mut o = op(1, "insert", 1);
        o["id"] = json!({});
        refused(body(vec![o]), "at least one key column");
        let mut o = op(1, "insert", 1);
        o["ts"] = json!("yesterday");
        refused(body(vec![o]), "`ts`");
        let mut o = op(1, "insert", 1);
        o.as_object_mut().unwrap().remove("gtid");
        refused(body(vec![o]), "missing field `gtid`");
        let mut b = body(vec![op(5, "insert", 1)]);
        b["first_seq"] = json!(6);
        b["last_seq"] = json!(9);
        refused(b, "outside");
        let text = serde_json::to_vec(&body(vec![op(1, "insert", 1)])).unwrap();
        let err = parse(&text, Some("other")).unwrap_err();
        assert!(err.0.contains("Idempotency-Key"), "{err}");
        assert!(parse(b"{\"version\":1,", None)
            .unwrap_err()
            .0
            .contains("not valid JSON"));
    }

    /// A ddl, truncate or drop of `shop.products` as binsync's decoder writes it.
    fn type_op(seq: u64, kind: &str) -> serde_json::Value {
        let mut v = json!({"seq": seq, "op": kind, "db": "shop", "table": "products",
            "entity": "products", "gtid": "0-1-9", "ts": "2026-11-24T07:37:31Z",
            "file": "mariadb-bin.000001", "offset": 1234});
        let obj = v.as_object_mut().unwrap();
        let statement = match kind {
            "ddl" => {
                obj.insert(
                    "columns".into(),
                    json!([{"name": "id", "type": "int(11)", "nullable": false, "json": false},
                           {"name": "price", "type": "decimal(10,2)", "nullable": true, "json": false}]),
                );
                obj.insert("key".into(), json!(["id"]));
                "ALTER TABLE products ADD COLUMN price DECIMAL(10,2)"
            }
            "truncate" => "TRUNCATE TABLE products",
            _ => "DROP TABLE products",
        };
        obj.insert("statement".into(), json!(statement));
        v
    }

    fn versioned(version: u64, ops: Vec<serde_json::Value>) -> serde_json::Value {
        let mut b = body(ops);
        b["version"] = json!(version);
        b
    }

    #[test]
    fn version_2_carries_ddl_truncate_and_drop_among_row_operations() {
        let b = versioned(
            2,
            vec![
                op(1, "insert", 1),
                type_op(2, "ddl"),
                op(3, "update", 1),
                type_op(4, "truncate"),
                type_op(5, "drop"),
            ],
        );
        let text = serde_json::to_vec(&b).unwrap();
        let parsed = parse(&text, None).unwrap();
        assert_eq!((parsed.version, parsed.count), (2, 5));
        let ops = &parsed.entities[0].1;
        let kinds: Vec<OpKind> = ops.iter().map(|o| o.kind).collect();
        use OpKind::*;
        assert_eq!(kinds, [Insert, Ddl, Update, Truncate, Drop]);
        let ddl = &ops[1];
        assert_eq!(ddl.id, "", "an operation on the type has no id");
        assert_eq!(
            ddl.statement.as_deref(),
            Some("ALTER TABLE products ADD COLUMN price DECIMAL(10,2)")
        );
        let def = ddl
            .definition
            .as_ref()
            .expect("a ddl carries its definition");
        assert_eq!(def.key, r#"["id"]"#);
        let columns: serde_json::Value = serde_json::from_str(&def.columns).unwrap();
        assert_eq!(columns, type_op(2, "ddl")["columns"]);
        assert!(
            !def.columns.contains(' '),
            "kept without whitespace: {}",
            def.columns
        );
        assert_eq!(ops[3].statement.as_deref(), Some("TRUNCATE TABLE products"));
        assert!(ops[3].definition.is_none());
        // Row operations of a version 2 body are what they were in version 1.
        assert_eq!(ops[0].id, r#"{"id":1}"#);
        assert!(ops[0].statement.is_none());

        // Renamed away: `columns` and `key` both null.
        let mut gone = type_op(1, "ddl");
        gone["statement"] = json!("RENAME TABLE products TO products_old");
        gone["columns"] = json!(null);
        gone["key"] = json!(null);
        let text = serde_json::to_vec(&versioned(2, vec![gone])).unwrap();
        let parsed = parse(&text, None).unwrap();
        assert!(parsed.entities[0].1[0].definition.is_none());
        // No primary key: an empty `key`.
        let mut keyless = type_op(1, "ddl");
        keyless["key"] = json!([]);
        assert_eq!(parse_value(&versioned(2, vec![keyless])).unwrap(), 1);
        // A version 1 body is still taken as it was.
        let text = serde_json::to_vec(&body(vec![op(1, "insert", 1)])).unwrap();
        assert_eq!(parse(&text, None).unwrap().version, 1);
    }

    #[test]
    fn a_version_1_body_with_a_version_2_operation_is_refused() {
        for kind in ["ddl", "truncate", "drop"] {
            let err = parse_value(&versioned(1, vec![op(1, "insert", 1), type_op(2, kind)]))
                .expect_err("a version 1 body cannot carry it");
            assert!(
                err.0
                    .contains(&format!("a `{kind}` operation needs contract version 2")),
                "{err}"
            );
            assert!(err.0.contains("entities.products[1]"), "{err}");
        }
    }

    #[test]
    fn operations_on_a_type_carry_exactly_their_fields() {
        let edit = |kind: &str, f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
            let mut o = type_op(1, kind);
            f(o.as_object_mut().unwrap());
            versioned(2, vec![o])
        };
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (
                edit("truncate", &|o| {
                    o.insert("id".into(), json!({"id": 1}));
                }),
                "a truncate acts on the whole entity type and must not carry `id`",
            ),
            (
                edit("drop", &|o| {
                    o.insert("row".into(), json!(0));
                }),
                "must not carry `row`",
            ),
            (
                edit("ddl", &|o| {
                    o.insert("keyless".into(), json!(true));
                }),
                "must not carry `keyless`",
            ),
            (
                edit("ddl", &|o| {
                    o.insert("after".into(), json!({"id": 1}));
                }),
                "must not carry `after`",
            ),
            (
                edit("truncate", &|o| {
                    o.insert("columns".into(), json!(null));
                }),
                "a truncate must not carry `columns`",
            ),
            (
                edit("drop", &|o| {
                    o.insert("key".into(), json!([]));
                }),
                "a drop must not carry `key`",
            ),
            (
                edit("truncate", &|o| {
                    o.remove("statement");
                }),
                "a truncate needs `statement`",
            ),
            (
                edit("drop", &|o| {
                    o.insert("statement".into(), json!(""));
                }),
                "`statement` is empty",
            ),
            (
                edit("drop", &|o| {
                    o.insert("statement".into(), json!(null));
                }),
                "invalid type: null",
            ),
            (
                edit("ddl", &|o| {
                    o.remove("columns");
                }),
                "a ddl needs `columns`",
            ),
            (
                edit("ddl", &|o| {
                    o.remove("key");
                }),
                "a ddl needs `key`",
            ),
            (
                edit("ddl", &|o| {
                    o.insert("key".into(), json!(null));
                }),
                "either both `null`",
            ),
            (
                edit("ddl", &|o| {
                    o.insert("columns".into(), json!(null));
                }),
                "either both `null`",
            ),
            (
                edit("ddl", &|o| {
                    o.insert("columns".into(), json!([]));
                }),
                "`columns` is empty",
            ),
            (
                edit("ddl", &|o| {
                    o.insert("columns".into(), json!({"id": "int"}));
                }),
                "`columns` must be an array",
            ),
            (
                edit("ddl", &|o| {
                    o.insert("columns".into(), json!([["id", "int", false, false]]));
                }),
                "`columns[0]` must be a JSON object",
            ),
            (
                edit("ddl", &|o| {
                    o.insert(
                        "columns".into(),
                        json!([{"name": "id", "type": "int", "nullable": false}]),
                    );
                }),
                "missing field `json`",
            ),
            (
                edit("ddl", &|o| {
                    o.insert("columns".into(), json!([{"name": "id", "type": "int", "nullable": false, "json": false, "default": 0}]));
                }),
                "unknown field `default`",
            ),
            (
                edit("ddl", &|o| {
                    o.insert("columns".into(), json!([{"name": "id", "type": "int", "nullable": false, "json": false},
                                                  {"name": "id", "type": "int", "nullable": false, "json": false}]));
                }),
                "`columns` names column `id` twice",
            ),
            (
                edit("ddl", &|o| {
                    o.insert("key".into(), json!(["sku"]));
                }),
                "`key` names column `sku`, which is not in `columns`",
            ),
            (
                edit("ddl", &|o| {
                    o.insert("key".into(), json!(["id", "id"]));
                }),
                "`key` names column `id` twice",
            ),
            (
                edit("ddl", &|o| {
                    o.insert("key".into(), json!("id"));
                }),
                "`key` must be an array",
            ),
        ];
        for (b, needle) in cases {
            refused(b, needle);
        }
        // Row operations keep theirs: an `id` and a `row`, and none of the type's fields.
        let mut o = op(1, "insert", 1);
        o.as_object_mut().unwrap().remove("id");
        refused(versioned(2, vec![o]), "an insert needs `id`");
        let mut o = op(1, "delete", 1);
        o.as_object_mut().unwrap().remove("row");
        refused(versioned(2, vec![o]), "a delete needs `row`");
        let mut o = op(1, "update", 1);
        o["statement"] = json!("UPDATE products SET price = 2");
        refused(
            versioned(2, vec![o]),
            "an update must not carry `statement`",
        );
        let mut o = op(1, "insert", 1);
        o["id"] = json!(null);
        refused(versioned(2, vec![o]), "`id` must be a JSON object");
    }

    #[test]
    fn keyless_is_true_or_absent() {
        let mut o = op(1, "insert", 1);
        o["keyless"] = json!(true);
        let text = serde_json::to_vec(&body(vec![o.clone()])).unwrap();
        let parsed = parse(&text, None).unwrap();
        assert!(parsed.entities[0].1[0].keyless);
        o["keyless"] = json!(false);
        refused(body(vec![o.clone()]), "either `true` or absent");
        o["keyless"] = json!(null);
        refused(body(vec![o]), "invalid type: null");
    }

    #[test]
    fn a_seq_beyond_what_sqlite_stores_is_refused() {
        let big = i64::MAX as u64 + 1;
        let mut b = body(vec![op(big, "insert", 1)]);
        b["first_seq"] = json!(big);
        b["last_seq"] = json!(big);
        refused(b, "the largest seq this receiver stores");
    }

    #[test]
    fn nesting_is_measured_outside_strings() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(check_depth(br#"{"a":[1.5e308,-2E-400,"1e999",12]}"#, 64).is_ok());
        assert!(check_depth(br#"{"a":1.5e+315}"#, 64).is_err());
        assert!(check_depth(nested(64).as_bytes(), 64).is_ok());
        let err = check_depth(nested(65).as_bytes(), 64).unwrap_err();
        assert!(err.0.contains("more than 64 deep"), "{err}");
        assert!(err.0.contains("--max-depth"), "{err}");
        // Brackets in strings, escaped quotes included, are text.
        let text = format!("{{\"a\":\"\\\"{}\"}}", "[".repeat(100));
        assert!(check_depth(text.as_bytes(), 2).is_ok(), "{text}");
        // Siblings do not add up.
        assert!(check_depth(b"{\"a\":[[]],\"b\":[[]]}", 3).is_ok());
    }

    #[test]
    fn null_gtid_and_fractional_ts_are_fine() {
        let mut o = op(1, "insert", 1);
        o["gtid"] = json!(null);
        o["ts"] = json!("2026-11-24T07:37:31.250000Z");
        assert_eq!(parse_value(&body(vec![o])).unwrap(), 1);
    }

    #[test]
    fn ids_are_compacted_but_keep_their_order() {
        assert_eq!(
            compact_json("{\"b\": 1, \"a\" : \"x y\\\" z\"}"),
            "{\"b\":1,\"a\":\"x y\\\" z\"}"
        );
        assert!(matches!(compact_json("{\"a\":1}"), Cow::Borrowed(_)));
    }

    /// A read of `products` id `id` (contract v3), as binsync's snapshot writes it.
    fn read_op(seq: u64, id: i64) -> serde_json::Value {
        json!({"seq": seq, "op": "read", "db": "shop", "table": "products",
            "entity": "products", "id": {"id": id}, "gtid": null,
            "ts": "2026-11-24T07:37:31.123456Z", "file": "mariadb-bin.000001", "offset": 4,
            "after": {"id": id, "price": 1}})
    }

    /// A snapshot_end of `products` (contract v3).
    fn snapshot_end_op(seq: u64, since: u64) -> serde_json::Value {
        json!({"seq": seq, "op": "snapshot_end", "db": "shop", "table": "products",
            "entity": "products", "gtid": null, "ts": "2026-11-24T07:37:31Z",
            "file": "mariadb-bin.000001", "offset": 4, "since": since})
    }

    #[test]
    fn version_3_carries_read_and_snapshot_end_among_the_others() {
        let b = versioned(
            3,
            vec![
                op(1, "insert", 1),
                type_op(2, "truncate"),
                read_op(3, 2),
                read_op(4, 3),
                snapshot_end_op(5, 0),
            ],
        );
        let text = serde_json::to_vec(&b).unwrap();
        let parsed = parse(&text, None).unwrap();
        assert_eq!((parsed.version, parsed.count), (3, 5));
        let ops = &parsed.entities[0].1;
        use OpKind::*;
        let kinds: Vec<OpKind> = ops.iter().map(|o| o.kind).collect();
        assert_eq!(kinds, [Insert, Truncate, Read, Read, SnapshotEnd]);
        assert_eq!(ops[2].id, r#"{"id":2}"#);
        assert_eq!(ops[2].after.unwrap().get(), r#"{"id":2,"price":1}"#);
        assert_eq!((ops[2].since, ops[4].since), (None, Some(0)));
        assert!(ops[4].id.is_empty());
        // A keyless read, and a since right below the snapshot_end's own seq.
        let mut keyless = read_op(1, 1);
        keyless["keyless"] = json!(true);
        let text = serde_json::to_vec(&versioned(3, vec![keyless, snapshot_end_op(9, 8)])).unwrap();
        let parsed = parse(&text, None).unwrap();
        assert!(parsed.entities[0].1[0].keyless);
        assert_eq!(parsed.entities[0].1[1].since, Some(8));
        // Version 1 and 2 bodies are still taken as they were.
        assert_eq!(
            parse_value(&versioned(1, vec![op(1, "insert", 1)])).unwrap(),
            1
        );
        assert_eq!(
            parse_value(&versioned(2, vec![type_op(1, "drop")])).unwrap(),
            1
        );
    }

    #[test]
    fn a_version_1_or_2_body_with_a_version_3_operation_is_refused() {
        for version in [1, 2] {
            for o in [read_op(2, 1), snapshot_end_op(2, 1)] {
                let kind = o["op"].as_str().unwrap().to_string();
                let err = parse_value(&versioned(version, vec![op(1, "insert", 1), o]))
                    .expect_err("a version 1 or 2 body cannot carry it");
                assert!(
                    err.0.contains(&format!(
                        "a `{kind}` operation needs contract version 3, but the body says version {version}"
                    )),
                    "{err}"
                );
            }
        }
        // A version 2 operation in a version 1 body still names version 2.
        let err = parse_value(&versioned(1, vec![type_op(1, "drop")])).unwrap_err();
        assert!(err.0.contains("needs contract version 2"), "{err}");
    }

    #[test]
    fn read_and_snapshot_end_carry_exactly_their_fields() {
        let edit =
            |o: serde_json::Value, f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
                let mut o = o;
                f(o.as_object_mut().unwrap());
                versioned(3, vec![o])
            };
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (
                edit(read_op(1, 1), &|o| {
                    o.remove("id");
                }),
                "a read needs `id`",
            ),
            (
                edit(read_op(1, 1), &|o| {
                    o.remove("after");
                }),
                "a read needs `after`",
            ),
            (
                edit(read_op(1, 1), &|o| {
                    o.insert("row".into(), json!(0));
                }),
                "a read must not carry `row`",
            ),
            (
                edit(read_op(1, 1), &|o| {
                    o.insert("before".into(), json!({"id": 1}));
                }),
                "a read must not carry `before`",
            ),
            (
                edit(read_op(1, 1), &|o| {
                    o.insert("changed".into(), json!([]));
                }),
                "a read must not carry `changed`",
            ),
            (
                edit(read_op(1, 1), &|o| {
                    o.insert("statement".into(), json!("x"));
                }),
                "a read must not carry `statement`",
            ),
            (
                edit(read_op(1, 1), &|o| {
                    o.insert("since".into(), json!(0));
                }),
                "a read must not carry `since`",
            ),
            (
                edit(type_op(1, "truncate"), &|o| {
                    o.insert("since".into(), json!(0));
                }),
                "a truncate must not carry `since`",
            ),
            (
                edit(snapshot_end_op(2, 1), &|o| {
                    o.remove("since");
                }),
                "a snapshot_end needs `since`",
            ),
            (
                edit(snapshot_end_op(2, 1), &|o| {
                    o.insert("id".into(), json!({"id": 1}));
                }),
                "a snapshot_end acts on the whole entity type and must not carry `id`",
            ),
            (
                edit(snapshot_end_op(2, 1), &|o| {
                    o.insert("keyless".into(), json!(true));
                }),
                "must not carry `keyless`",
            ),
            (
                edit(snapshot_end_op(2, 1), &|o| {
                    o.insert("statement".into(), json!("x"));
                }),
                "must not carry `statement`",
            ),
            (
                edit(snapshot_end_op(2, 1), &|o| {
                    o.insert("after".into(), json!({}));
                }),
                "must not carry `after`",
            ),
            (
                edit(snapshot_end_op(2, 1), &|o| {
                    o.insert("since".into(), json!(-1));
                }),
                "does not follow the sync API contract",
            ),
            (
                edit(snapshot_end_op(2, 1), &|o| {
                    o.insert("since".into(), json!(null));
                }),
                "does not follow the sync API contract",
            ),
            (
                edit(snapshot_end_op(2, 1), &|o| {
                    o.insert("since".into(), json!(1.5));
                }),
                "does not follow the sync API contract",
            ),
            (
                edit(snapshot_end_op(2, 1), &|o| {
                    o.insert("since".into(), json!(2));
                }),
                "`since` 2 is not below the snapshot_end's own seq 2",
            ),
            (
                edit(snapshot_end_op(2, 1), &|o| {
                    o.insert("since".into(), json!(u64::MAX));
                }),
                "is above 9223372036854775807",
            ),
        ];
        for (body, needle) in cases {
            refused(body, needle);
        }
    }
}
