//! An entry's part of its record's canonical JSON, written directly.
//!
//! Every download makes two records, and each record's JSON is made on the request's worker
//! ([`crate::activity::Entry::body`]). Through `serde_json` that costs the generic map machinery
//! and an escaping call per key and per value; the keys are fixed text, so here they are written
//! as they are, and only the values are escaped. The bytes must be exactly `serde_json`'s — every
//! stored hash depends on them — which the tests below check against `serde_json` itself, for
//! entries of every shape and strings of every kind (quotes, backslashes, control characters,
//! non-ASCII text): only `"`, `\` and the control characters below U+0020 are escaped, as `\"`,
//! `\\`, `\b`, `\f`, `\n`, `\r`, `\t` or `\u00xx` (lower-case hex); everything else, U+007F and
//! all non-ASCII text included, is copied as it is.

use crate::activity::{Entry, Kind};

/// `"kind":…}` for `entry`: its canonical JSON after `{"seq":…,"at":…,` (see [`crate::activity`]).
pub fn entry_body(e: &Entry) -> Vec<u8> {
    let strings = [
        &e.actor,
        &e.tenant_id,
        &e.order_id,
        &e.product_id,
        &e.file_id,
        &e.link_id,
        &e.ip,
        &e.user_agent,
        &e.range,
        &e.outcome,
        &e.node,
    ];
    let text: usize = strings.iter().map(|s| s.as_ref().map_or(0, String::len)).sum();
    // Keys, quotes and numbers take under 200 bytes; escapes may need more, and then it grows.
    let mut out = Vec::with_capacity(text + 200);
    kind_field(&mut out, e.kind);
    subject_fields(
        &mut out,
        [&e.actor, &e.tenant_id, &e.order_id, &e.product_id, &e.file_id, &e.link_id].map(Option::as_deref),
    );
    requester_fields(&mut out, [&e.ip, &e.user_agent, &e.range].map(Option::as_deref));
    tail(&mut out, e.bytes, e.outcome.as_deref(), e.count, e.node.as_deref());
    out
}

/// The fields that name who acted on what — `actor`, `tenant_id`, `order_id`, `product_id`,
/// `file_id`, `link_id` — as [`entry_body`] writes them after the kind: the same for every
/// download of a link, so written once per link ([`download_body`]).
pub fn subject_part(values: [Option<&str>; 6]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.iter().map(|v| v.map_or(0, str::len)).sum::<usize>() + 80);
    subject_fields(&mut out, values);
    out
}

/// A download record's body from its parts: exactly [`entry_body`] of the entry with those
/// values (no `count`, no `node`: the embedded backend's download records have neither).
pub fn download_body(
    kind: Kind,
    subject: &[u8],
    requester: [Option<&str>; 3],
    bytes: Option<u64>,
    outcome: Option<&str>,
) -> Vec<u8> {
    let text: usize = requester.iter().map(|v| v.map_or(0, str::len)).sum();
    let mut out = Vec::with_capacity(subject.len() + text + 120);
    kind_field(&mut out, kind);
    out.extend_from_slice(subject);
    requester_fields(&mut out, requester);
    tail(&mut out, bytes, outcome, None, None);
    out
}

fn kind_field(out: &mut Vec<u8>, kind: Kind) {
    out.extend_from_slice(b"\"kind\":\"");
    out.extend_from_slice(kind.name().as_bytes());
    out.push(b'"');
}

fn subject_fields(out: &mut Vec<u8>, values: [Option<&str>; 6]) {
    const KEYS: [&[u8]; 6] = [
        b",\"actor\":",
        b",\"tenant_id\":",
        b",\"order_id\":",
        b",\"product_id\":",
        b",\"file_id\":",
        b",\"link_id\":",
    ];
    for (key, value) in KEYS.into_iter().zip(values) {
        out.extend_from_slice(key);
        opt_str(out, value);
    }
}

/// `ip`, `user_agent`, `range`.
fn requester_fields(out: &mut Vec<u8>, values: [Option<&str>; 3]) {
    const KEYS: [&[u8]; 3] = [b",\"ip\":", b",\"user_agent\":", b",\"range\":"];
    for (key, value) in KEYS.into_iter().zip(values) {
        out.extend_from_slice(key);
        opt_str(out, value);
    }
}

fn tail(out: &mut Vec<u8>, bytes: Option<u64>, outcome: Option<&str>, count: Option<u64>, node: Option<&str>) {
    out.extend_from_slice(b",\"bytes\":");
    match bytes {
        Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"outcome\":");
    opt_str(out, outcome);
    // Written only when present, so records from before they existed keep their hashes.
    if let Some(n) = count {
        out.extend_from_slice(b",\"count\":");
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }
    if let Some(node) = node {
        out.extend_from_slice(b",\"node\":");
        json_str(out, node);
    }
    out.push(b'}');
}

fn opt_str(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// True for the bytes JSON strings escape.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// `s` as a JSON string, escaped exactly as `serde_json` escapes it (module docs).
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Most values (ids, addresses, dates) need no escape at all: one pass, one copy.
    if !bytes.iter().fold(false, |any, &b| any | needs_escape(b)) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
                continue;
            }
        };
        out.extend_from_slice(&[b'\\', short]);
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `serde_json` makes of the entry, without its opening brace: the reference.
    fn by_serde(e: &Entry) -> Vec<u8> {
        serde_json::to_vec(e).unwrap()[1..].to_vec()
    }

    #[test]
    fn every_kind_with_no_fields_and_a_download_with_all_of_them_match_serde_json() {
        for kind in Kind::ALL {
            let e = Entry::new(kind);
            assert_eq!(String::from_utf8(entry_body(&e)).unwrap(), String::from_utf8(by_serde(&e)).unwrap());
        }
        let mut e = Entry::new(Kind::DownloadFinished);
        e.actor = Some("customer".into());
        e.tenant_id = Some("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee".into());
        e.order_id = Some("ord_1".into());
        e.product_id = Some("studio".into());
        e.file_id = Some("iso".into());
        e.link_id = Some("f1d814d98043aa23d503a2a9ed37716e".into());
        e.ip = Some("2001:db8::1".into());
        e.user_agent = Some("Mozilla/5.0 \"quoted\" back\\slash\ttab\u{1}\u{7f} 中文 한국어".into());
        e.range = Some("bytes=0-99".into());
        e.bytes = Some(u64::MAX);
        e.outcome = Some("complete".into());
        e.count = Some(7);
        e.node = Some("edge-1".into());
        assert_eq!(String::from_utf8(entry_body(&e)).unwrap(), String::from_utf8(by_serde(&e)).unwrap());
    }

    #[test]
    fn every_control_character_is_escaped_as_serde_json_escapes_it() {
        for c in (0u8..0x80).map(char::from) {
            let mut ours = Vec::new();
            json_str(&mut ours, &format!("a{c}b"));
            assert_eq!(ours, serde_json::to_vec(&format!("a{c}b")).unwrap(), "U+{:04X}", c as u32);
        }
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(
            proptest::string::string_regex("(.|[\\x00-\\x1f\"\\\\\u{7f}\u{80}-\u{10ffff}]){0,40}").unwrap(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn any_entry_is_written_byte_for_byte_as_serde_json_writes_it(
            kind in 0usize..Kind::ALL.len(),
            s in proptest::collection::vec(text(), 11),
            bytes in proptest::option::of(any::<u64>()),
            count in proptest::option::of(any::<u64>()),
        ) {
            let mut e = Entry::new(Kind::ALL[kind]);
            let mut s = s.into_iter();
            let mut next = || s.next().unwrap();
            (e.actor, e.tenant_id, e.order_id, e.product_id, e.file_id) = (next(), next(), next(), next(), next());
            (e.link_id, e.ip, e.user_agent, e.range, e.outcome, e.node) = (next(), next(), next(), next(), next(), next());
            e.bytes = bytes;
            e.count = count;
            prop_assert_eq!(entry_body(&e), by_serde(&e));
        }

        #[test]
        fn a_download_body_from_parts_is_the_entrys_body(
            kind in 0usize..Kind::ALL.len(),
            s in proptest::collection::vec(text(), 10),
            bytes in proptest::option::of(any::<u64>()),
        ) {
            let mut e = Entry::new(Kind::ALL[kind]);
            let mut s = s.into_iter();
            let mut next = || s.next().unwrap();
            (e.actor, e.tenant_id, e.order_id, e.product_id, e.file_id) = (next(), next(), next(), next(), next());
            (e.link_id, e.ip, e.user_agent, e.range, e.outcome) = (next(), next(), next(), next(), next());
            e.bytes = bytes;
            let subject = subject_part(
                [&e.actor, &e.tenant_id, &e.order_id, &e.product_id, &e.file_id, &e.link_id].map(Option::as_deref),
            );
            let requester = [&e.ip, &e.user_agent, &e.range].map(Option::as_deref);
            prop_assert_eq!(download_body(e.kind, &subject, requester, e.bytes, e.outcome.as_deref()), by_serde(&e));
        }
    }
}
