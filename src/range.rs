//! `Range: bytes=…` for one representation of known length (RFC 9110 §14.1–14.2). Pure.
//!
//! [`bytes_range`] turns the raw header and the file length into a decision:
//! * no header, or a unit other than `bytes` → [`RangeDecision::Full`] (§14.2: an origin server
//!   MUST ignore a range unit it does not understand);
//! * one satisfiable range-spec → [`RangeDecision::Partial`] (answered with `206`);
//! * several range-specs of which any is satisfiable → `Full`: the contract lets us answer a
//!   multi-range request with `200` and the whole file instead of `multipart/byteranges`;
//! * nothing satisfiable, or a syntactically invalid `bytes=` set → [`RangeDecision::Unsatisfiable`]
//!   (`416` with `Content-Range: bytes */len`). §14.2 lets a server "ignore or reject" an invalid
//!   ranges-specifier; we reject, as nginx does, so a broken client learns of its mistake instead
//!   of silently paying for a whole file.
//!
//! Numbers too large for `u64` saturate: a `last-pos` past the end is clamped to the end as §14.1.2
//! says, a `first-pos` past the end is unsatisfiable. Nothing here can panic or overflow.

/// What to send for a `GET` of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeDecision {
    /// The whole representation, `200`.
    Full,
    /// Bytes `start..=end`, `206`; `end < len` always.
    Partial { start: u64, end: u64 },
    /// `416` with `Content-Range: bytes */len`.
    Unsatisfiable,
}

impl RangeDecision {
    /// Number of body bytes this decision sends for a representation of `len` bytes.
    pub fn body_len(&self, len: u64) -> u64 {
        match *self {
            RangeDecision::Full => len,
            RangeDecision::Partial { start, end } => end - start + 1,
            RangeDecision::Unsatisfiable => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-` or `first-last`.
    Int { first: u64, last: Option<u64> },
    /// `-suffix`.
    Suffix(u64),
}

/// Decides what a `Range` header (raw bytes, as received) asks for, for a representation of
/// `len` bytes. See the module documentation for the rules.
pub fn bytes_range(header: Option<&[u8]>, len: u64) -> RangeDecision {
    let Some(raw) = header else {
        return RangeDecision::Full;
    };
    let Ok(text) = std::str::from_utf8(raw) else {
        return RangeDecision::Unsatisfiable;
    };
    let text = text.trim();
    let Some((unit, set)) = text.split_once('=') else {
        // No `=`: not a ranges-specifier at all; a unit we do not understand (RFC 9110 §14.2).
        return if text.eq_ignore_ascii_case("bytes") { RangeDecision::Unsatisfiable } else { RangeDecision::Full };
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeDecision::Full;
    }
    let mut specs = 0usize;
    let mut first_satisfiable = None;
    for item in set.split(',') {
        let item = item.trim_matches([' ', '\t']);
        if item.is_empty() {
            continue; // the #rule allows empty list elements (RFC 9110 §5.6.1)
        }
        let Some(spec) = parse_spec(item) else {
            return RangeDecision::Unsatisfiable;
        };
        specs += 1;
        if first_satisfiable.is_none() {
            first_satisfiable = resolve(spec, len);
        }
    }
    match (specs, first_satisfiable) {
        (0, _) => RangeDecision::Unsatisfiable,
        (_, None) => RangeDecision::Unsatisfiable,
        (1, Some((start, end))) => {
            if len == 0 {
                RangeDecision::Full
            } else {
                RangeDecision::Partial { start, end }
            }
        }
        (_, Some(_)) => RangeDecision::Full,
    }
}

fn parse_spec(item: &str) -> Option<Spec> {
    let (a, b) = item.split_once('-')?;
    if a.is_empty() {
        return Some(Spec::Suffix(number(b)?));
    }
    let first = number(a)?;
    let last = if b.is_empty() { None } else { Some(number(b)?) };
    if matches!(last, Some(l) if l < first) {
        return None; // RFC 9110 §14.1.1: last-pos < first-pos is invalid
    }
    Some(Spec::Int { first, last })
}

/// 1*DIGIT, saturating at `u64::MAX`.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))))
}

/// The inclusive byte span a spec selects, if satisfiable (RFC 9110 §14.1.1–14.1.2). For an
/// empty representation only a non-zero suffix is satisfiable; it selects nothing, and the
/// caller answers `200` with the (empty) whole.
fn resolve(spec: Spec, len: u64) -> Option<(u64, u64)> {
    match spec {
        Spec::Int { first, last } => (first < len).then(|| (first, last.map_or(len - 1, |l| l.min(len - 1)))),
        Spec::Suffix(0) => None,
        Spec::Suffix(_) if len == 0 => Some((0, 0)),
        Spec::Suffix(n) => Some((len - n.min(len), len - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::RangeDecision::*;
    use super::*;

    fn r(h: &str, len: u64) -> RangeDecision {
        bytes_range(Some(h.as_bytes()), len)
    }

    #[test]
    fn absent_header_means_whole_representation() {
        assert_eq!(bytes_range(None, 10), Full);
    }

    #[test]
    fn rfc9110_14_1_2_examples_on_10000_bytes() {
        assert_eq!(r("bytes=0-499", 10_000), Partial { start: 0, end: 499 });
        assert_eq!(r("bytes=500-999", 10_000), Partial { start: 500, end: 999 });
        assert_eq!(r("bytes=-500", 10_000), Partial { start: 9_500, end: 9_999 });
        assert_eq!(r("bytes=9500-", 10_000), Partial { start: 9_500, end: 9_999 });
        assert_eq!(r("bytes=0-0", 10_000), Partial { start: 0, end: 0 });
        assert_eq!(r("bytes=-1", 10_000), Partial { start: 9_999, end: 9_999 });
    }

    #[test]
    fn last_pos_beyond_end_is_clamped_rfc9110_14_1_2() {
        assert_eq!(r("bytes=5-999999", 10), Partial { start: 5, end: 9 });
        assert_eq!(r("bytes=0-99999999999999999999999999", 10), Partial { start: 0, end: 9 });
    }

    #[test]
    fn suffix_longer_than_file_selects_whole_file() {
        assert_eq!(r("bytes=-50", 10), Partial { start: 0, end: 9 });
    }

    #[test]
    fn first_pos_at_or_past_end_is_unsatisfiable_rfc9110_15_5_17() {
        assert_eq!(r("bytes=10-", 10), Unsatisfiable);
        assert_eq!(r("bytes=99999999999999999999999-", 10), Unsatisfiable);
        assert_eq!(r("bytes=-0", 10), Unsatisfiable);
        assert_eq!(r("bytes=0-0", 0), Unsatisfiable);
    }

    #[test]
    fn invalid_bytes_specifier_is_rejected_rfc9110_14_2() {
        for h in [
            "bytes=",
            "bytes=abc",
            "bytes=5-2",
            "bytes=--1",
            "bytes=1-2-3",
            "bytes=0x10-",
            "bytes",
            "bytes= - ",
            "bytes=+1-2",
        ] {
            assert_eq!(r(h, 100), Unsatisfiable, "{h}");
        }
        assert_eq!(bytes_range(Some(&[0xff, 0xfe]), 100), Unsatisfiable);
    }

    #[test]
    fn unknown_unit_is_ignored_rfc9110_14_2() {
        assert_eq!(r("items=0-5", 100), Full);
        assert_eq!(r("none", 100), Full);
    }

    #[test]
    fn unit_is_case_insensitive_and_whitespace_tolerated() {
        assert_eq!(r(" Bytes = 1-2 ", 100), Partial { start: 1, end: 2 });
        assert_eq!(r("bytes=1-2, ", 100), Partial { start: 1, end: 2 });
    }

    #[test]
    fn several_ranges_get_the_whole_file_unless_none_is_satisfiable() {
        assert_eq!(r("bytes=0-1,5-6", 100), Full);
        assert_eq!(r("bytes=200-300,400-", 100), Unsatisfiable);
        let many = format!("bytes={}", (0..5000).map(|i| format!("{i}-{i}")).collect::<Vec<_>>().join(","));
        assert_eq!(r(&many, 100), Full);
    }

    #[test]
    fn empty_file_with_suffix_range_is_whole_empty_file() {
        assert_eq!(r("bytes=-5", 0), Full);
    }

    #[test]
    fn body_len_counts_inclusive_span() {
        assert_eq!(Partial { start: 2, end: 5 }.body_len(100), 4);
        assert_eq!(Full.body_len(100), 100);
        assert_eq!(Unsatisfiable.body_len(100), 0);
    }
}
