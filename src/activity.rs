//! The activity log's records and their hash chain. Pure: sealing and verification only; the
//! store's single writer decides `seq` and `at` and persists.
//!
//! ## Canonical form (so a third party can recompute every hash)
//!
//! `hash = hex(SHA-256(canonical ‖ prev_hash))`, where `prev_hash` is the previous record's `hash`
//! as 64 lowercase hex ASCII characters (64 `0`s before the first record), and `canonical` is the
//! record as compact JSON (no whitespace, `serde_json` escaping: only `"`, `\` and control
//! characters are escaped, other text is raw UTF-8) with exactly these keys in this order, absent
//! values as `null`:
//!
//! `seq, at, kind, actor, tenant_id, order_id, product_id, file_id, link_id, ip, user_agent,
//! range, bytes, outcome`, then `count` only when the record has one (a coalesced
//! `download.refused`, API.md §5.2), then `node` only when it has one (written on a shared
//! PostgreSQL database, §5.3) — so every record written before either existed keeps its hash.
//!
//! `seq` and `bytes` are JSON integers; `at` is RFC 3339 UTC with microseconds
//! (`2026-11-21T08:30:00.000000Z`). `seq` starts at 1 and has no gaps; `at` never decreases.

use ring::digest;
use serde::{Deserialize, Serialize};

/// The kinds of API.md §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Kind {
    #[serde(rename = "key.accessed")]
    KeyAccessed,
    #[serde(rename = "link.issued")]
    LinkIssued,
    #[serde(rename = "download.started")]
    DownloadStarted,
    #[serde(rename = "download.finished")]
    DownloadFinished,
    #[serde(rename = "download.refused")]
    DownloadRefused,
    #[serde(rename = "order.created")]
    OrderCreated,
    #[serde(rename = "order.cancelled")]
    OrderCancelled,
    #[serde(rename = "order.suspended")]
    OrderSuspended,
    #[serde(rename = "order.reactivated")]
    OrderReactivated,
    #[serde(rename = "order.revoked")]
    OrderRevoked,
    #[serde(rename = "support_request.created")]
    SupportRequestCreated,
    #[serde(rename = "order.renewed")]
    OrderRenewed,
    #[serde(rename = "order.trial_ended")]
    OrderTrialEnded,
    #[serde(rename = "order.expired")]
    OrderExpired,
    #[serde(rename = "order.cancellation_scheduled")]
    OrderCancellationScheduled,
}

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::KeyAccessed,
        Kind::LinkIssued,
        Kind::DownloadStarted,
        Kind::DownloadFinished,
        Kind::DownloadRefused,
        Kind::OrderCreated,
        Kind::OrderCancelled,
        Kind::OrderSuspended,
        Kind::OrderReactivated,
        Kind::OrderRevoked,
        Kind::SupportRequestCreated,
        Kind::OrderRenewed,
        Kind::OrderTrialEnded,
        Kind::OrderExpired,
        Kind::OrderCancellationScheduled,
    ];

    /// The contract name, as serialized (`download.started`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::KeyAccessed => "key.accessed",
            Kind::LinkIssued => "link.issued",
            Kind::DownloadStarted => "download.started",
            Kind::DownloadFinished => "download.finished",
            Kind::DownloadRefused => "download.refused",
            Kind::OrderCreated => "order.created",
            Kind::OrderCancelled => "order.cancelled",
            Kind::OrderSuspended => "order.suspended",
            Kind::OrderReactivated => "order.reactivated",
            Kind::OrderRevoked => "order.revoked",
            Kind::SupportRequestCreated => "support_request.created",
            Kind::OrderRenewed => "order.renewed",
            Kind::OrderTrialEnded => "order.trial_ended",
            Kind::OrderExpired => "order.expired",
            Kind::OrderCancellationScheduled => "order.cancellation_scheduled",
        }
    }
}

/// What a caller knows about an event; the writer seals it into a [`Record`]. The one list of
/// the record's fields: serialized in this order (after `seq` and `at`) it is the canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entry {
    pub kind: Kind,
    pub actor: Option<String>,
    pub tenant_id: Option<String>,
    pub order_id: Option<String>,
    pub product_id: Option<String>,
    pub file_id: Option<String>,
    pub link_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub range: Option<String>,
    pub bytes: Option<u64>,
    pub outcome: Option<String>,
    /// How many refusals a `download.refused` record stands for (API.md §5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// The node that wrote the record, on a shared database (API.md §5.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The canonical form: `{"seq":…,"at":…,` followed by an entry's [`Entry::body`].
fn canonical_of(seq: u64, at: &str, body: &[u8]) -> Vec<u8> {
    let mut json = Vec::with_capacity(body.len() + at.len() + 200);
    json.extend_from_slice(b"{\"seq\":");
    json.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    json.extend_from_slice(b",\"at\":");
    serde_json::to_writer(&mut json, at).expect("a string serializes");
    json.push(b',');
    json.extend_from_slice(body);
    json
}

impl Entry {
    /// The entry's part of its record's canonical JSON: everything after `seq` and `at`,
    /// `"kind":…}`. Serializing it where the entry is made leaves the writer only what it assigns
    /// (see [`Record::seal_body`]).
    ///
    /// The same bytes as `serde_json` makes of the entry without its opening brace, written
    /// directly ([`crate::canonical`]).
    pub fn body(&self) -> Vec<u8> {
        crate::canonical::entry_body(self)
    }

    pub fn new(kind: Kind) -> Entry {
        Entry {
            kind,
            actor: None,
            tenant_id: None,
            order_id: None,
            product_id: None,
            file_id: None,
            link_id: None,
            ip: None,
            user_agent: None,
            range: None,
            bytes: None,
            outcome: None,
            count: None,
            node: None,
        }
    }
}

/// One record of the log, exactly the fields of API.md §4: `seq`, `at`, the [`Entry`]'s fields
/// (read through `Deref`), `prev_hash`, `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Record {
    pub seq: u64,
    pub at: String,
    #[serde(flatten)]
    pub entry: Entry,
    pub prev_hash: String,
    pub hash: String,
}

impl std::ops::Deref for Record {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        &self.entry
    }
}

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl Record {
    /// Seals an entry as record `seq` at time `at`, chained to `prev_hash`.
    pub fn seal(entry: Entry, seq: u64, at: String, prev_hash: &str) -> Record {
        let mut r = Record { seq, at, entry, prev_hash: prev_hash.to_owned(), hash: String::new() };
        r.hash = r.compute_hash();
        r
    }

    /// Seals an entry straight to its stored JSON, returning the bytes and the record's `hash`.
    /// Same bytes as `serde_json::to_vec(&Record::seal(..))`, with one serialization instead of
    /// two: the stored form is the canonical form with `prev_hash` and `hash` appended.
    pub fn seal_json(entry: &Entry, seq: u64, at: &str, prev_hash: &str) -> (Vec<u8>, String) {
        Record::seal_body(&entry.body(), seq, at, prev_hash)
    }

    /// [`Record::seal_json`] from an [`Entry::body`] serialized earlier.
    pub fn seal_body(body: &[u8], seq: u64, at: &str, prev_hash: &str) -> (Vec<u8>, String) {
        let mut json = canonical_of(seq, at, body);
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&json);
        ctx.update(prev_hash.as_bytes());
        let hash = hex_of(ctx.finish().as_ref());
        json.pop(); // the closing brace
        json.reserve(32 + prev_hash.len() + hash.len());
        json.extend_from_slice(b",\"prev_hash\":\"");
        json.extend_from_slice(prev_hash.as_bytes());
        json.extend_from_slice(b"\",\"hash\":\"");
        json.extend_from_slice(hash.as_bytes());
        json.extend_from_slice(b"\"}");
        (json, hash)
    }

    /// The canonical bytes that are hashed (before `prev_hash` is appended).
    pub fn canonical(&self) -> Vec<u8> {
        canonical_of(self.seq, &self.at, &self.entry.body())
    }

    /// `hex(SHA-256(canonical ‖ prev_hash))`.
    pub fn compute_hash(&self) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&self.canonical());
        ctx.update(self.prev_hash.as_bytes());
        hex_of(ctx.finish().as_ref())
    }
}

/// Lower-case hex of `bytes` (the same text as `hex::encode`, which builds its `String` one
/// `char` at a time: measurable on the writer, which hashes every record).
pub fn hex_of(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex::encode_to_slice(bytes, &mut out).expect("the buffer is twice the input");
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// The first place a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {seq}: {reason}")]
pub struct ChainError {
    pub seq: u64,
    pub reason: String,
}

/// Incremental chain verifier: feed records in `seq` order.
pub struct ChainVerifier {
    expected_seq: u64,
    prev_hash: String,
    last_at: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier { expected_seq: 1, prev_hash: GENESIS.to_owned(), last_at: String::new() }
    }
}

impl ChainVerifier {
    pub fn push(&mut self, r: &Record) -> Result<(), ChainError> {
        let fail = |reason: &str| Err(ChainError { seq: r.seq, reason: reason.to_owned() });
        if r.seq != self.expected_seq {
            return Err(ChainError { seq: self.expected_seq, reason: format!("missing; found seq {} instead", r.seq) });
        }
        if r.prev_hash != self.prev_hash {
            return fail("prev_hash does not match the previous record's hash");
        }
        if r.compute_hash() != r.hash {
            return fail("hash does not match the record's contents");
        }
        if r.at < self.last_at {
            return fail("time goes backwards");
        }
        self.expected_seq += 1;
        self.prev_hash.clone_from(&r.hash);
        self.last_at.clone_from(&r.at);
        Ok(())
    }

    /// Records verified so far.
    pub fn count(&self) -> u64 {
        self.expected_seq - 1
    }

    pub fn last_hash(&self) -> &str {
        &self.prev_hash
    }
}

/// An activity query (`GET /api/activity`), with its time bounds in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub from_us: Option<u64>,
    /// Inclusive.
    pub to_us: Option<u64>,
    pub kind: Option<Kind>,
    pub tenant_id: Option<String>,
    pub order_id: Option<String>,
    pub after_seq: u64,
    pub limit: usize,
}

impl Query {
    pub fn matches(&self, r: &Record) -> bool {
        self.kind.is_none_or(|k| k == r.kind)
            && self.tenant_id.as_ref().is_none_or(|t| r.tenant_id.as_ref() == Some(t))
            && self.order_id.as_ref().is_none_or(|o| r.order_id.as_ref() == Some(o))
    }
}

/// A `from`/`to` bound: an RFC 3339 time, or a date (`2026-11-21`) meaning the day's first
/// microsecond for `from` and its last for `to` (so `to` includes the whole day).
pub fn time_bound(s: &str, is_to: bool) -> Option<u64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return u64::try_from(t.timestamp_micros()).ok();
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let start = d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros();
    let us = if is_to { start + 86_400_000_000 - 1 } else { start };
    u64::try_from(us).ok()
}

/// A record's `at` from microseconds since the epoch: RFC 3339 UTC with microseconds.
pub fn format_at(us: u64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(i64::try_from(us).unwrap_or(i64::MAX)).unwrap_or_default();
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses a record's `at` into microseconds.
pub fn at_micros(at: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(at).map_or(0, |t| t.timestamp_micros().max(0) as u64)
}

/// The column order of the CSV export: the record's fields in API order, then the columns added
/// later (at the end, so readers of the first columns by position keep working).
pub const CSV_COLUMNS: [&str; 18] = [
    "seq",
    "at",
    "kind",
    "actor",
    "tenant_id",
    "order_id",
    "product_id",
    "file_id",
    "link_id",
    "ip",
    "user_agent",
    "range",
    "bytes",
    "outcome",
    "prev_hash",
    "hash",
    "count",
    "node",
];

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// RFC 4180 CSV with a header row; absent values are empty fields.
pub fn to_csv(records: &[Record]) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push_str("\r\n");
    for r in records {
        let v = serde_json::to_value(r).unwrap_or_default();
        let row: Vec<String> = CSV_COLUMNS
            .iter()
            .map(|c| match &v[*c] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => csv_field(s),
                other => csv_field(&other.to_string()),
            })
            .collect();
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_of_is_the_lower_case_hex_every_stored_hash_uses() {
        let digest = digest::digest(&digest::SHA256, b"keydrop");
        assert_eq!(hex_of(digest.as_ref()), hex::encode(digest.as_ref()));
        assert_eq!(hex_of(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex_of(&[]), "");
    }

    #[test]
    fn date_bounds_cover_the_whole_day_and_times_are_exact() {
        let from = time_bound("2026-11-21", false).unwrap();
        let to = time_bound("2026-11-21", true).unwrap();
        assert_eq!(to - from, 86_400_000_000 - 1);
        assert_eq!(time_bound("2026-11-21T00:00:00Z", false), Some(from));
        assert_eq!(time_bound("2026-11-21T08:30:00.5+00:00", true), Some(from + 30_600_500_000));
        assert_eq!(time_bound("yesterday", false), None);
    }

    #[test]
    fn sealing_straight_to_json_stores_the_same_bytes_and_hash_as_the_record() {
        let mut e = Entry::new(Kind::DownloadFinished);
        e.user_agent = Some("curl/8 \"quoted\" \u{7} 繁體".into());
        e.link_id = Some("ab".repeat(16));
        e.bytes = Some(4096);
        let at = "2026-11-21T08:30:00.000001Z";
        let (json, hash) = Record::seal_json(&e, 7, at, GENESIS);
        let r = Record::seal(e, 7, at.to_owned(), GENESIS);
        assert_eq!(json, serde_json::to_vec(&r).unwrap());
        assert_eq!(hash, r.hash);
        let back: Record = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.compute_hash(), back.hash);
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let mut r = chain(1).remove(0);
        r.entry.user_agent = Some("Mozilla/5.0 (X11, \"quoted\")".into());
        let csv = to_csv(&[r]);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], CSV_COLUMNS.join(","));
        assert!(lines[1].contains(",\"Mozilla/5.0 (X11, \"\"quoted\"\")\","));
    }

    fn chain(n: u64) -> Vec<Record> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let mut e = Entry::new(Kind::DownloadStarted);
                e.bytes = Some(seq * 10);
                e.user_agent = Some("curl/8 \"quoted\" 繁體".into());
                let r = Record::seal(e, seq, format!("2026-11-21T08:30:{seq:02}.000000Z"), &prev);
                prev.clone_from(&r.hash);
                r
            })
            .collect()
    }

    #[test]
    fn canonical_form_is_the_documented_one() {
        let r = &chain(1)[0];
        let c = String::from_utf8(r.canonical()).unwrap();
        assert_eq!(
            c,
            r#"{"seq":1,"at":"2026-11-21T08:30:01.000000Z","kind":"download.started","actor":null,"tenant_id":null,"order_id":null,"product_id":null,"file_id":null,"link_id":null,"ip":null,"user_agent":"curl/8 \"quoted\" 繁體","range":null,"bytes":10,"outcome":null}"#
        );
        let expected = hex::encode(digest::digest(&digest::SHA256, format!("{c}{GENESIS}").as_bytes()));
        assert_eq!(r.hash, expected);
    }

    #[test]
    fn a_count_is_hashed_after_outcome_and_a_record_without_one_is_hashed_as_before() {
        let mut e = Entry::new(Kind::DownloadRefused);
        e.outcome = Some("exhausted".into());
        let plain = Record::seal(e.clone(), 1, "2026-11-21T08:30:01.000000Z".into(), GENESIS);
        assert!(String::from_utf8(plain.canonical()).unwrap().ends_with(r#""outcome":"exhausted"}"#));
        e.count = Some(7);
        let (json, hash) = Record::seal_json(&e, 1, "2026-11-21T08:30:01.000000Z", GENESIS);
        let r: Record = serde_json::from_slice(&json).unwrap();
        assert_eq!(r.count, Some(7));
        assert!(String::from_utf8(r.canonical()).unwrap().ends_with(r#""outcome":"exhausted","count":7}"#));
        assert_eq!((r.compute_hash(), hash.clone()), (hash, r.hash.clone()));
        let mut forged = r.clone();
        forged.entry.count = Some(1);
        assert_ne!(forged.compute_hash(), r.hash, "the count is covered by the hash");
    }

    #[test]
    fn intact_chain_verifies() {
        let mut v = ChainVerifier::default();
        for r in chain(5) {
            v.push(&r).unwrap();
        }
        assert_eq!(v.count(), 5);
    }

    #[test]
    fn tampering_is_found_at_the_changed_record() {
        let mut c = chain(5);
        c[2].entry.bytes = Some(1);
        let mut v = ChainVerifier::default();
        let err = c.iter().try_for_each(|r| v.push(r)).unwrap_err();
        assert_eq!(err.seq, 3);
    }

    #[test]
    fn a_removed_record_is_found() {
        let mut c = chain(5);
        c.remove(1);
        let mut v = ChainVerifier::default();
        assert_eq!(c.iter().try_for_each(|r| v.push(r)).unwrap_err().seq, 2);
    }

    #[test]
    fn kind_names_are_their_serialized_names() {
        use Kind::*;
        let all = [
            KeyAccessed,
            LinkIssued,
            DownloadStarted,
            DownloadFinished,
            DownloadRefused,
            OrderCreated,
            OrderCancelled,
            OrderSuspended,
            OrderReactivated,
            OrderRevoked,
            SupportRequestCreated,
        ];
        for k in all {
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
        }
    }

    #[test]
    fn kinds_serialize_as_contract_names() {
        assert_eq!(serde_json::to_string(&Kind::SupportRequestCreated).unwrap(), "\"support_request.created\"");
        assert_eq!(serde_json::to_string(&Kind::KeyAccessed).unwrap(), "\"key.accessed\"");
    }
}
