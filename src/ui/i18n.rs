//! Every string the dashboard shows, in `en`, `zh-Hant`, `zh-Hans` and `ko`, and the formatting
//! of dates, numbers, sizes and money for each. Pure.
//!
//! The strings live in `src/ui/lang/<tag>.toml`, compiled into the binary and parsed once. English
//! is the reference: every other language must have exactly its keys (a unit test fails on a key
//! missing or extra in any language), and a key missing everywhere renders as `⟦key⟧`, which the
//! page tests look for.

use crate::pages::Lang;
use chrono::{DateTime, Datelike, Timelike, Utc};
use std::collections::HashMap;
use std::sync::LazyLock;

const SOURCES: [(Lang, &str); 4] = [
    (Lang::En, include_str!("lang/en.toml")),
    (Lang::ZhHant, include_str!("lang/zh-Hant.toml")),
    (Lang::ZhHans, include_str!("lang/zh-Hans.toml")),
    (Lang::Ko, include_str!("lang/ko.toml")),
];

type Catalog = HashMap<String, String>;

static CATALOGS: LazyLock<Vec<(Lang, Catalog)>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .map(|(lang, src)| {
            // A catalog that does not parse is a build mistake the unit tests catch; at run time
            // its strings fall back to English rather than taking the admin listener down.
            let parsed: Catalog = toml::from_str(src).unwrap_or_else(|e| {
                tracing::error!(lang = lang.tag(), error = %e, "dashboard strings do not parse");
                Catalog::new()
            });
            (*lang, parsed)
        })
        .collect()
});

fn catalog(lang: Lang) -> &'static Catalog {
    static EMPTY: LazyLock<Catalog> = LazyLock::new(Catalog::new);
    CATALOGS.iter().find(|(l, _)| *l == lang).map_or(&EMPTY, |(_, c)| c)
}

/// One language's strings and formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tr(pub Lang);

impl Tr {
    pub fn lang(self) -> Lang {
        self.0
    }

    /// The string for `key`; English when this language lacks it, `⟦key⟧` when both do.
    pub fn t(self, key: &str) -> String {
        catalog(self.0).get(key).or_else(|| catalog(Lang::En).get(key)).cloned().unwrap_or_else(|| format!("⟦{key}⟧"))
    }

    /// Whether the catalogs have `key` (optional strings, such as one per refusal code).
    pub fn has(self, key: &str) -> bool {
        catalog(Lang::En).contains_key(key)
    }

    /// [`Tr::t`] with `{name}` placeholders filled in.
    pub fn tf(self, key: &str, args: &[(&str, &str)]) -> String {
        let mut s = self.t(key);
        for (name, value) in args {
            s = s.replace(&format!("{{{name}}}"), value);
        }
        s
    }

    /// A calendar date: `Dec 2, 2026`, `2026年12月2日`, `2026년 12월 2일`.
    pub fn date(self, at: DateTime<Utc>) -> String {
        let (y, m, d) = (at.year(), at.month(), at.day());
        match self.0 {
            Lang::En => {
                const MONTHS: [&str; 12] =
                    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
                format!("{} {d}, {y}", MONTHS[(m - 1) as usize])
            }
            Lang::ZhHant | Lang::ZhHans => format!("{y}年{m}月{d}日"),
            Lang::Ko => format!("{y}년 {m}월 {d}일"),
        }
    }

    /// A date and a UTC time of day.
    pub fn datetime(self, at: DateTime<Utc>) -> String {
        let sep = if self.0 == Lang::En { ", " } else { " " };
        format!("{}{sep}{:02}:{:02} UTC", self.date(at), at.hour(), at.minute())
    }

    /// An RFC 3339 time from the API, formatted; the text itself when it does not parse.
    pub fn datetime_str(self, rfc3339: &str) -> String {
        parse_time(rfc3339).map_or_else(|| rfc3339.to_owned(), |t| self.datetime(t))
    }

    /// An RFC 3339 time from the API as a date.
    pub fn date_str(self, rfc3339: &str) -> String {
        parse_time(rfc3339).map_or_else(|| rfc3339.to_owned(), |t| self.date(t))
    }

    /// A whole number with thousands separators (all four languages group by three with `,`).
    pub fn number(self, n: u64) -> String {
        group(&n.to_string())
    }

    /// A size in bytes: `4.2 GB` (decimal units, as download managers show them).
    pub fn size(self, bytes: u64) -> String {
        const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
        if bytes < 1000 {
            return format!("{} {}", bytes, UNITS[0]);
        }
        let mut v = bytes as f64;
        let mut u = 0;
        while v >= 1000.0 && u < UNITS.len() - 1 {
            v /= 1000.0;
            u += 1;
        }
        format!("{v:.1} {}", UNITS[u])
    }

    /// An amount in minor units of `currency`, with the symbol this language uses for it.
    pub fn money(self, cents: i64, currency: &str) -> String {
        let code = currency.to_ascii_uppercase();
        let digits = if matches!(code.as_str(), "JPY" | "KRW" | "TWD") { 0 } else { 2 };
        let abs = cents.unsigned_abs();
        let amount = if digits == 0 {
            // Zero-decimal currencies still arrive in hundredths from the API's cents.
            group(&(abs / 100).to_string())
        } else {
            format!("{}.{:02}", group(&(abs / 100).to_string()), abs % 100)
        };
        let sign = if cents < 0 { "-" } else { "" };
        match symbol(self.0, &code) {
            Some(sym) => format!("{sign}{sym}{amount}"),
            None => format!("{sign}{code} {amount}"),
        }
    }

    /// `n days`, in this language.
    pub fn days(self, n: i64) -> String {
        let key = if n == 1 { "unit.day" } else { "unit.days" };
        self.tf(key, &[("n", &n.to_string())])
    }
}

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

fn group(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn symbol(lang: Lang, code: &str) -> Option<&'static str> {
    use Lang::*;
    Some(match (code, lang) {
        ("USD", En) => "$",
        ("USD", _) => "US$",
        ("EUR", _) => "€",
        ("GBP", _) => "£",
        ("JPY", En | Ko) => "¥",
        ("JPY", _) => "JP¥",
        ("KRW", _) => "₩",
        ("CNY", ZhHans) => "¥",
        ("CNY", _) => "CN¥",
        ("TWD", ZhHant) => "$",
        ("TWD", _) => "NT$",
        ("HKD", _) => "HK$",
        ("AUD", En) => "A$",
        ("AUD", _) => "AU$",
        ("BRL", _) => "R$",
        ("CAD", En) => "CA$",
        ("CAD", _) => "CA$",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn every_language_has_exactly_the_english_keys() {
        let en: std::collections::BTreeSet<&String> = catalog(Lang::En).keys().collect();
        assert!(en.len() > 50, "the English catalog parsed: {} keys", en.len());
        for (lang, src) in SOURCES {
            let parsed: Catalog = toml::from_str(src).unwrap_or_else(|e| panic!("{}: {e}", lang.tag()));
            let keys: std::collections::BTreeSet<&String> = parsed.keys().collect();
            let missing: Vec<_> = en.difference(&keys).collect();
            let extra: Vec<_> = keys.difference(&en).collect();
            assert!(missing.is_empty() && extra.is_empty(), "{}: missing {missing:?}, extra {extra:?}", lang.tag());
            for (k, v) in &parsed {
                assert!(!v.trim().is_empty(), "{}: {k} is empty", lang.tag());
            }
        }
    }

    #[test]
    fn the_seeds_own_terms() {
        assert_eq!(Tr(Lang::ZhHant).t("software.get_keys"), "取得金鑰和下載項目");
        assert_eq!(Tr(Lang::ZhHant).t("link.copy"), "複製連結");
        assert_eq!(Tr(Lang::ZhHans).t("software.get_keys"), "获取密钥和下载");
        assert_eq!(Tr(Lang::ZhHans).t("link.copy"), "复制链接");
        assert_eq!(Tr(Lang::Ko).t("software.get_keys"), "키 및 다운로드 받기");
        assert_eq!(Tr(Lang::Ko).t("link.copy"), "링크 복사");
        assert_eq!(Tr(Lang::En).t("software.get_keys"), "Get keys and downloads");
    }

    #[test]
    fn a_key_missing_everywhere_is_marked() {
        assert_eq!(Tr(Lang::Ko).t("no.such.key"), "⟦no.such.key⟧");
    }

    #[test]
    fn dates_numbers_sizes_and_money_per_language() {
        let t = Utc.with_ymd_and_hms(2026, 12, 2, 9, 5, 0).unwrap();
        assert_eq!(Tr(Lang::En).date(t), "Dec 2, 2026");
        assert_eq!(Tr(Lang::ZhHant).date(t), "2026年12月2日");
        assert_eq!(Tr(Lang::Ko).datetime(t), "2026년 12월 2일 09:05 UTC");
        assert_eq!(Tr(Lang::En).datetime(t), "Dec 2, 2026, 09:05 UTC");
        assert_eq!(Tr(Lang::En).number(1_234_567), "1,234,567");
        assert_eq!(Tr(Lang::En).number(999), "999");
        assert_eq!(Tr(Lang::En).size(4_700_000_000), "4.7 GB");
        assert_eq!(Tr(Lang::En).size(512), "512 B");
        assert_eq!(Tr(Lang::En).money(123_456, "USD"), "$1,234.56");
        assert_eq!(Tr(Lang::ZhHant).money(123_456, "USD"), "US$1,234.56");
        assert_eq!(Tr(Lang::ZhHans).money(5_000, "CNY"), "¥50.00");
        assert_eq!(Tr(Lang::Ko).money(1_200_000, "KRW"), "₩12,000");
        assert_eq!(Tr(Lang::En).money(-250, "CHF"), "-CHF 2.50");
        assert_eq!(Tr(Lang::Ko).days(3), "3일");
        assert_eq!(Tr(Lang::En).days(1), "1 day");
    }
}
