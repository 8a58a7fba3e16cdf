//! A served file's representation metadata and the conditional-request rules that compare with
//! it (RFC 9110 §8.8 validators, §13.1 preconditions, RFC 6266 `Content-Disposition`). Pure.
//!
//! The strong `ETag` is derived from the file's identity on disk at attachment time (size and
//! modification time in nanoseconds), not from its SHA-256: the digest is computed in the
//! background and may arrive after the first download, and a validator that changed when it did
//! would make every resumed download restart from zero (`If-Range` would stop matching).

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// RFC 8187 `attr-char`: ALPHA / DIGIT / "!" / "#" / "$" / "&" / "+" / "-" / "." / "^" / "_" /
/// "`" / "|" / "~". Everything else is percent-encoded.
const ATTR_CHAR_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>` (RFC 6266 §4.3).
/// The fallback replaces non-ASCII, control characters, `"` and `\` with `_`, so it is always a
/// valid quoted-string; clients that know `filename*` (all current browsers, curl -J, wget) use the
/// exact UTF-8 name.
pub fn content_disposition(filename: &str) -> String {
    let fallback: String = filename
        .chars()
        .map(|c| if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' { c } else { '_' })
        .collect();
    let encoded = utf8_percent_encode(filename, ATTR_CHAR_ESCAPES);
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// A `Content-Type` for a file name by its extension; `application/octet-stream` otherwise.
pub fn content_type(filename: &str) -> &'static str {
    let ext = filename.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "iso" | "img" => "application/x-iso9660-image",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "xz" => "application/x-xz",
        "7z" => "application/x-7z-compressed",
        "exe" | "dll" => "application/vnd.microsoft.portable-executable",
        "msi" => "application/x-msi",
        "dmg" => "application/x-apple-diskimage",
        "pkg" => "application/vnd.apple.installer+xml",
        "deb" => "application/vnd.debian.binary-package",
        "rpm" => "application/x-rpm",
        "pdf" => "application/pdf",
        "txt" => "text/plain; charset=utf-8",
        "json" => "application/json",
        "vhd" | "vhdx" | "qcow2" | "bin" => "application/octet-stream",
        _ => "application/octet-stream",
    }
}

/// The strong entity tag for a file of `size` bytes last modified at `mtime_ns` (nanoseconds since
/// the Unix epoch), with its quotes.
pub fn etag(size: u64, mtime_ns: u128) -> String {
    format!("\"{size:x}-{mtime_ns:x}\"")
}

/// `Last-Modified` as an IMF-fixdate (RFC 9110 §5.6.7), whole seconds.
pub fn http_date(mtime_ns: u128) -> String {
    httpdate::fmt_http_date(system_time(mtime_ns))
}

fn system_time(ns: u128) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs((ns / 1_000_000_000).min(u64::MAX as u128) as u64)
}

/// Splits an `If-None-Match` / `If-Match`-style list into entity-tags, honouring quotes (an
/// `etagc` may contain a comma, RFC 9110 §8.8.3). Malformed members are skipped.
fn entity_tags(list: &str) -> Vec<(bool, &str)> {
    let mut out = Vec::new();
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return out;
        }
        let (weak, body) = match rest.strip_prefix("W/") {
            Some(b) => (true, b),
            None => (false, rest),
        };
        let Some(inner) = body.strip_prefix('"') else {
            // Not an entity-tag: skip to the next comma.
            rest = body.split_once(',').map_or("", |(_, r)| r);
            continue;
        };
        let Some(end) = inner.find('"') else {
            return out;
        };
        out.push((weak, &body[..end + 2]));
        rest = &inner[end + 1..];
    }
}

/// `If-None-Match` for GET/HEAD (RFC 9110 §13.1.2): true when the client's copy is current and
/// the answer is `304`. Uses the weak comparison; `*` matches any current representation.
pub fn if_none_match_hits(header: &str, current_etag: &str) -> bool {
    if header.trim() == "*" {
        return true;
    }
    entity_tags(header).iter().any(|(_, tag)| *tag == current_etag)
}

/// `If-Modified-Since` (RFC 9110 §13.1.3), evaluated only when there is no `If-None-Match`:
/// true when the file has not changed since the given date (answer `304`). An unparseable date
/// is ignored.
pub fn not_modified_since(header: &str, mtime_ns: u128) -> bool {
    match httpdate::parse_http_date(header.trim()) {
        Ok(since) => system_time(mtime_ns) <= since,
        Err(_) => false,
    }
}

/// `If-Range` (RFC 9110 §13.1.5): true when the `Range` may be honoured. An entity-tag must match
/// strongly (a weak tag never does); a date must equal `Last-Modified` exactly.
pub fn if_range_matches(header: &str, current_etag: &str, mtime_ns: u128) -> bool {
    let h = header.trim();
    if h.starts_with("W/") {
        return false;
    }
    if h.starts_with('"') {
        return h == current_etag;
    }
    match httpdate::parse_http_date(h) {
        Ok(date) => date == system_time(mtime_ns),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_has_ascii_fallback_and_rfc8187_utf8_name() {
        let cd = content_disposition("Windows Server 2022 (繁體中文).iso");
        assert_eq!(
            cd,
            "attachment; filename=\"Windows Server 2022 (____).iso\"; \
             filename*=UTF-8''Windows%20Server%202022%20%28%E7%B9%81%E9%AB%94%E4%B8%AD%E6%96%87%29.iso"
        );
    }

    #[test]
    fn content_disposition_fallback_cannot_break_out_of_its_quotes() {
        let cd = content_disposition("a\"b\\c\r\n.zip");
        assert!(cd.starts_with("attachment; filename=\"a_b_c__.zip\"; filename*=UTF-8''a%22b%5Cc%0D%0A.zip"));
    }

    #[test]
    fn content_type_by_extension() {
        assert_eq!(content_type("x.ISO"), "application/x-iso9660-image");
        assert_eq!(content_type("setup.exe"), "application/vnd.microsoft.portable-executable");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }

    #[test]
    fn if_none_match_uses_weak_comparison_rfc9110_13_1_2() {
        let tag = etag(10, 20);
        assert!(if_none_match_hits(&tag, &tag));
        assert!(if_none_match_hits(&format!("\"x\", W/{tag}"), &tag));
        assert!(if_none_match_hits("*", &tag));
        assert!(!if_none_match_hits("\"other\"", &tag));
        assert!(!if_none_match_hits("garbage, \"a,b\"", &tag));
        assert!(if_none_match_hits("\"a,b\"", "\"a,b\""));
    }

    #[test]
    fn if_range_needs_strong_match_or_exact_date_rfc9110_13_1_5() {
        let ns = 1_700_000_000u128 * 1_000_000_000;
        let tag = etag(10, ns);
        assert!(if_range_matches(&tag, &tag, ns));
        assert!(!if_range_matches(&format!("W/{tag}"), &tag, ns));
        assert!(!if_range_matches("\"stale\"", &tag, ns));
        assert!(if_range_matches(&http_date(ns), &tag, ns));
        assert!(!if_range_matches(&http_date(ns + 5_000_000_000), &tag, ns));
        assert!(!if_range_matches("not a date", &tag, ns));
    }

    #[test]
    fn if_modified_since_rfc9110_13_1_3() {
        let ns = 1_700_000_000u128 * 1_000_000_000;
        assert!(not_modified_since(&http_date(ns), ns));
        assert!(!not_modified_since(&http_date(ns - 10_000_000_000), ns));
        assert!(!not_modified_since("yesterday", ns));
    }
}
