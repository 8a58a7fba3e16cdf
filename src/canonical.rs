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

use crate::activity::Entry;

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
    out.extend_from_slice(b"\"kind\":\"");
    out.extend_from_slice(e.kind.name().as_bytes());
    out.push(b'"');
    let fields: [(&[u8], &Option<String>); 9] = [
        (b",\"actor\":", &e.actor),
        (b",\"tenant_id\":", &e.tenant_id),
        (b",\"order_id\":", &e.order_id),
        (b",\"product_id\":", &e.product_id),
        (b",\"file_id\":", &e.file_id),
        (b",\"link_id\":", &e.link_id),
        (b",\"ip\":", &e.ip),
        (b",\"user_agent\":", &e.user_agent),
        (b",\"range\":", &e.range),
    ];
    for (key, value) in fields {
        out.extend_from_slice(key);
        opt_str(&mut out, value.as_deref());
    }
    out.extend_from_slice(b",\"bytes\":");
    match e.bytes {
        Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"outcome\":");
    opt_str(&mut out, e.outcome.as_deref());
    // Written only when present, so records from before they existed keep their hashes.
    if let Some(n) = e.count {
        out.extend_from_slice(b",\"count\":");
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }
    if let Some(node) = e.node.as_deref() {
        out.extend_from_slice(b",\"node\":");
        json_str(&mut out, node);
    }
    out.push(b'}');
    out
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
    use crate::activity::Kind;
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
    }
}
