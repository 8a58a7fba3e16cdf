//! Content negotiation for refusals and their localized HTML pages. Pure.
//!
//! A refusal is `application/problem+json` unless `Accept` prefers `text/html` (a browser), in
//! which case it is a small self-contained HTML page in the best of `en`, `zh-Hant`, `zh-Hans`
//! and `ko` that `Accept-Language` allows (English when nothing fits). Chinese tags without a
//! script are mapped by region: TW/HK/MO read Traditional, everything else Simplified.

/// The languages refusal pages are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    ZhHant,
    ZhHans,
    Ko,
}

impl Lang {
    pub const ALL: [Lang; 4] = [Lang::En, Lang::ZhHant, Lang::ZhHans, Lang::Ko];

    /// The language of one tag (`zh-TW`, `ko-KR`, `zh-Hant`…), if it is one of ours.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        lang_of(tag).filter(|_| tag != "*")
    }

    /// The language's name in itself, for the language switcher.
    pub fn native_name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::ZhHant => "繁體中文",
            Lang::ZhHans => "简体中文",
            Lang::Ko => "한국어",
        }
    }

    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::ZhHant => "zh-Hant",
            Lang::ZhHans => "zh-Hans",
            Lang::Ko => "ko",
        }
    }
}

/// Splits a header list into `(item, q)` pairs, dropping items with an unparseable or zero q.
fn weighted(header: &str) -> impl Iterator<Item = (&str, f32)> {
    header.split(',').filter_map(|part| {
        let mut pieces = part.split(';');
        let item = pieces.next()?.trim();
        let mut q = 1.0f32;
        for p in pieces {
            if let Some(v) = p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")) {
                q = v.trim().parse().ok().filter(|q: &f32| q.is_finite())?;
            }
        }
        (!item.is_empty() && q > 0.0).then_some((item, q.min(1.0)))
    })
}

fn lang_of(tag: &str) -> Option<Lang> {
    let t = tag.to_ascii_lowercase();
    let mut sub = t.split(['-', '_']);
    match sub.next()? {
        "en" | "*" => Some(Lang::En),
        "ko" => Some(Lang::Ko),
        "zh" => {
            let rest: Vec<&str> = sub.collect();
            if rest.contains(&"hant")
                || rest.iter().any(|r| matches!(*r, "tw" | "hk" | "mo")) && !rest.contains(&"hans")
            {
                Some(Lang::ZhHant)
            } else {
                Some(Lang::ZhHans)
            }
        }
        _ => None,
    }
}

/// The best page language for an `Accept-Language` header (RFC 9110 §12.5.4), English by default.
pub fn negotiate_lang(accept_language: Option<&str>) -> Lang {
    let Some(h) = accept_language else {
        return Lang::En;
    };
    let mut best: Option<(Lang, f32)> = None;
    for (tag, q) in weighted(h) {
        if let Some(lang) = lang_of(tag) {
            if best.is_none_or(|(_, bq)| q > bq) {
                best = Some((lang, q));
            }
        }
    }
    best.map_or(Lang::En, |(l, _)| l)
}

/// How well a media range from `Accept` matches `ty/sub`: `None` if not at all, otherwise its
/// specificity (2 exact, 1 `type/*`, 0 `*/*`).
fn specificity(range: &str, ty: &str, sub: &str) -> Option<u8> {
    let (rt, rs) = range.split_once('/')?;
    let (rt, rs) = (rt.trim(), rs.trim());
    match (rt == "*", rs == "*") {
        (true, true) => Some(0),
        (false, true) if rt.eq_ignore_ascii_case(ty) => Some(1),
        _ if rt.eq_ignore_ascii_case(ty) && rs.eq_ignore_ascii_case(sub) => Some(2),
        _ => None,
    }
}

/// The q an `Accept` header gives `ty/sub`: that of its most specific matching range.
fn quality(accept: &str, ty: &str, sub: &str) -> f32 {
    let mut best: Option<(u8, f32)> = None;
    for (range, q) in weighted(accept) {
        if let Some(s) = specificity(range, ty, sub) {
            if best.is_none_or(|(bs, _)| s > bs) {
                best = Some((s, q));
            }
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

/// True when `Accept` prefers `text/html` over JSON problem bodies (RFC 9110 §12.5.1); ties go
/// to JSON, so `*/*` (curl, wget, scripts) gets JSON.
pub fn prefers_html(accept: Option<&str>) -> bool {
    let Some(a) = accept else { return false };
    let html = quality(a, "text", "html");
    let json = quality(a, "application", "problem+json").max(quality(a, "application", "json"));
    html > json
}

/// Localized title and explanation for a refusal code.
pub fn text(code: &str, lang: Lang) -> (&'static str, &'static str) {
    use Lang::*;
    match (code, lang) {
        ("invalid", En) => ("Link not valid", "This download link is not valid. Check that it was copied completely, or ask your partner to issue a new link."),
        ("invalid", ZhHant) => ("連結無效", "此下載連結無效。請確認連結已完整複製，或請您的合作夥伴重新產生連結。"),
        ("invalid", ZhHans) => ("链接无效", "此下载链接无效。请确认链接已完整复制，或请您的合作伙伴重新生成链接。"),
        ("invalid", Ko) => ("유효하지 않은 링크", "이 다운로드 링크는 유효하지 않습니다. 링크가 완전히 복사되었는지 확인하거나 파트너에게 새 링크를 요청하세요."),
        ("expired", En) => ("Link expired", "This download link has expired. Please ask your partner to issue a new link."),
        ("expired", ZhHant) => ("連結已過期", "此下載連結已過期。請聯絡您的合作夥伴重新產生連結。"),
        ("expired", ZhHans) => ("链接已过期", "此下载链接已过期。请联系您的合作伙伴重新生成链接。"),
        ("expired", Ko) => ("링크 만료", "이 다운로드 링크는 만료되었습니다. 파트너에게 새 링크를 요청하세요."),
        ("exhausted", En) => ("Download limit reached", "This download link has been used up. Please ask your partner to issue a new link."),
        ("exhausted", ZhHant) => ("已達下載次數上限", "此下載連結的下載次數已用完。請聯絡您的合作夥伴重新產生連結。"),
        ("exhausted", ZhHans) => ("已达到下载次数上限", "此下载链接的下载次数已用完。请联系您的合作伙伴重新生成链接。"),
        ("exhausted", Ko) => ("다운로드 한도 도달", "이 다운로드 링크의 사용 횟수가 모두 소진되었습니다. 파트너에게 새 링크를 요청하세요."),
        ("revoked", En) => ("Link revoked", "This order was cancelled or revoked, so its downloads are no longer available. Contact your partner if you think this is a mistake."),
        ("revoked", ZhHant) => ("連結已撤銷", "此訂單已取消或撤銷，因此無法再下載。如有疑問，請聯絡您的合作夥伴。"),
        ("revoked", ZhHans) => ("链接已撤销", "此订单已取消或撤销，因此无法再下载。如有疑问，请联系您的合作伙伴。"),
        ("revoked", Ko) => ("링크 취소됨", "이 주문이 취소되거나 철회되어 더 이상 다운로드할 수 없습니다. 문제가 있다고 생각되면 파트너에게 문의하세요."),
        ("suspended", En) => ("Subscription suspended", "The subscription for this download is suspended. Downloads resume when your partner reactivates it."),
        ("suspended", ZhHant) => ("訂閱已暫停", "此下載所屬的訂閱已暫停。合作夥伴重新啟用後即可繼續下載。"),
        ("suspended", ZhHans) => ("订阅已暂停", "此下载所属的订阅已暂停。合作伙伴重新激活后即可继续下载。"),
        ("suspended", Ko) => ("구독 일시 중지됨", "이 다운로드의 구독이 일시 중지되었습니다. 파트너가 다시 활성화하면 다운로드를 재개할 수 있습니다."),
        ("unavailable", En) => ("Temporarily unavailable", "The download service is busy or restarting. Please try again in a moment."),
        ("unavailable", ZhHant) => ("暫時無法使用", "下載服務忙碌中或正在重新啟動，請稍後再試。"),
        ("unavailable", ZhHans) => ("暂时不可用", "下载服务繁忙或正在重启，请稍后再试。"),
        ("unavailable", Ko) => ("일시적으로 사용할 수 없음", "다운로드 서비스가 혼잡하거나 다시 시작하는 중입니다. 잠시 후 다시 시도하세요."),
        ("range_not_satisfiable", _) => ("Range not satisfiable", "The requested byte range is not valid for this file. Retry without a Range header."),
        ("method_not_allowed", _) => ("Method not allowed", "Download links answer GET and HEAD only."),
        ("not_found", _) => ("Not found", "There is nothing at this address."),
        ("invalid_request", _) => ("Invalid request", "The request could not be understood."),
        ("unauthenticated", _) => ("Unauthenticated", "Send Authorization: Bearer <token> of a configured principal."),
        ("bad_signature", _) => ("Bad signature", "The Keydrop-Signature header is missing, does not match, or its timestamp is more than 300 seconds away."),
        ("forbidden", _) => ("Forbidden", "Your role may not do this."),
        ("unavailable_in_market", _) => ("Unavailable in market", "This product is not sold in the customer's country."),
        ("customer_exists", _) => ("Customer exists", "A customer with this tenant id or domain already exists."),
        ("out_of_keys", _) => ("Out of keys", "The product's key pool is empty; nothing was bought."),
        ("window_closed", _) => ("Cancellation window closed", "The cancellation window has passed."),
        ("not_cancellable", _) => ("Not cancellable", "This order cannot be cancelled."),
        ("support_request_required", _) => ("Support request required", "This order can only be cancelled through a support request."),
        ("already_cancelled", _) => ("Already cancelled", "This order was cancelled already."),
        ("not_a_subscription", _) => ("Not a subscription", "Only subscriptions can be suspended, reactivated or renewed."),
        ("request_timeout", _) => ("Request timeout", "The request body did not arrive in time; the connection is closed. Send the whole body at once."),
        ("file_exists", _) => ("File exists", "This product already has a different file under this file_id. Attach a new build under a new file_id."),
        ("already_subscribed", _) => ("Already subscribed", "The customer already holds this subscription; a suspended one is reactivated, not bought again."),
        ("retention_expired", _) => ("Retention expired", "The suspension lasted longer than the retention period; the order has expired."),
        _ => ("Error", "The request could not be completed. Please try again later."),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A complete HTML refusal page.
pub fn html_page(status: u16, code: &str, lang: Lang) -> String {
    let (title, detail) = text(code, lang);
    format!(
        "<!doctype html>\n<html lang=\"{tag}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}}\
h1{{font-size:1.4rem}}small{{color:#777}}</style></head>\
<body><h1>{title}</h1><p>{detail}</p><p><small>{status} · {code}</small></p></body></html>\n",
        tag = lang.tag(),
        title = escape(title),
        detail = escape(detail),
        code = escape(code),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_highest_q_supported_tag_rfc9110_12_5_4() {
        assert_eq!(negotiate_lang(None), Lang::En);
        assert_eq!(negotiate_lang(Some("fr-FR, ko;q=0.8, en;q=0.5")), Lang::Ko);
        assert_eq!(negotiate_lang(Some("zh-TW,zh;q=0.9")), Lang::ZhHant);
        assert_eq!(negotiate_lang(Some("zh-Hant-HK")), Lang::ZhHant);
        assert_eq!(negotiate_lang(Some("zh-CN,zh;q=0.9,en;q=0.8")), Lang::ZhHans);
        assert_eq!(negotiate_lang(Some("zh")), Lang::ZhHans);
        assert_eq!(negotiate_lang(Some("de, fr")), Lang::En);
        assert_eq!(negotiate_lang(Some("ko;q=0, en")), Lang::En);
        assert_eq!(negotiate_lang(Some(";;;,q=,,")), Lang::En);
    }

    #[test]
    fn browsers_get_html_scripts_get_json_rfc9110_12_5_1() {
        assert!(prefers_html(Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")));
        assert!(!prefers_html(Some("*/*")));
        assert!(!prefers_html(None));
        assert!(!prefers_html(Some("application/json, text/html;q=0.5")));
        assert!(prefers_html(Some("text/*")));
    }

    #[test]
    fn html_page_is_localized_and_escaped() {
        let p = html_page(410, "expired", Lang::ZhHant);
        assert!(p.contains("lang=\"zh-Hant\"") && p.contains("連結已過期"));
        assert!(html_page(404, "<x>", Lang::En).contains("&lt;x&gt;"));
    }
}
