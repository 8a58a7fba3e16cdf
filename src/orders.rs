//! The order lifecycle's rules, pure: validity of identifiers, markets and tax, cancellation
//! windows and policies, credit, suspension retention. Inputs (and `now`) in, decisions out.

use crate::model::{CancelPolicy, Order, OrderStatus, ProductKind};
use crate::terms::Mode;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// ISO 3166-1 alpha-2, officially assigned codes, plus `XK` (Kosovo): user-assigned in ISO
/// terms, but used by Microsoft's partner markets and by the shipped Azure reservations list.
const ISO_3166_ALPHA2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ \
BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ \
FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM \
JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT \
MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB \
SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ \
VA VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW";

/// The shipped market list `@azure-reservations` (config/markets/azure-reservations-unavailable.json).
const AZURE_RESERVATIONS: &str = include_str!("../config/markets/azure-reservations-unavailable.json");

pub fn is_country(code: &str) -> bool {
    code.len() == 2 && ISO_3166_ALPHA2.split_ascii_whitespace().any(|c| c == code)
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex, any case.
pub fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The named market lists a product's `unavailable_markets` may refer to.
pub fn market_list(name: &str) -> Option<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct File {
        markets: Vec<Market>,
    }
    #[derive(serde::Deserialize)]
    struct Market {
        code: String,
    }
    match name {
        "@azure-reservations" => {
            let f: File = serde_json::from_str(AZURE_RESERVATIONS).expect("shipped market list parses");
            Some(f.markets.into_iter().map(|m| m.code).collect())
        }
        _ => None,
    }
}

/// True if a product listing these markets may not be sold to a customer in `country`.
pub fn unavailable_in(markets: &[String], country: &str) -> bool {
    markets.iter().any(|m| match market_list(m) {
        Some(list) => list.iter().any(|c| c == country),
        None => m.eq_ignore_ascii_case(country),
    })
}

/// Prices exclude tax except for customers in Australia and Brazil.
pub fn tax_included(country: &str) -> bool {
    matches!(country, "AU" | "BR")
}

/// The largest money amount in a request or an answer: 2^53 − 1 minor units, the largest integer
/// every JSON client (a JavaScript `number`, a double) reads exactly (API.md §5.2).
pub const MAX_AMOUNT_CENTS: u64 = (1 << 53) - 1;

/// An order's total from `(unit price, quantity)` lines; `None` past [`MAX_AMOUNT_CENTS`].
pub fn order_total(lines: impl IntoIterator<Item = (u64, u32)>) -> Option<u64> {
    lines
        .into_iter()
        .try_fold(0u64, |sum, (price, qty)| sum.checked_add(price.checked_mul(u64::from(qty))?))
        .filter(|t| *t <= MAX_AMOUNT_CENTS)
}

/// The strictest policy among an order's items.
pub fn order_policy(order: &Order) -> CancelPolicy {
    order.items.iter().map(|i| i.cancel_policy).max().unwrap_or(CancelPolicy::Standard)
}

/// The status as of `now`: what the stored status becomes once every change the clock implies
/// is applied — a term ended without renewal, a scheduled cancellation, a suspension older than
/// its retention ([`crate::terms::advance`]).
pub fn effective_status(order: &Order, now: DateTime<Utc>, retention_days: u32) -> OrderStatus {
    crate::terms::advance(order, now, retention_days).0.status
}

/// Credit on cancelling at `now`: 100 % of perpetual items; for subscription items
/// `floor(total × unused seconds of the current term / term seconds)`. Nothing during a trial
/// (it cost nothing).
pub fn credit_cents(order: &Order, now: DateTime<Utc>) -> u64 {
    let mut perpetual = 0u128;
    let mut subscriptions = 0u128;
    for i in &order.items {
        let total = u128::from(i.unit_price_cents) * u128::from(i.quantity);
        match i.kind {
            ProductKind::Subscription => subscriptions += total,
            ProductKind::Perpetual => perpetual += total,
        }
    }
    let mut credit = perpetual;
    if let Some(t) = crate::terms::terms_of(order).filter(|t| !t.in_trial()) {
        let (start, end) = t.current(order.purchased_at);
        let term = (end - start).num_seconds().max(1) as i128;
        let unused = ((end - now).num_seconds() as i128).clamp(0, term) as u128;
        credit += subscriptions * unused / term as u128;
    }
    credit.min(u128::from(u64::MAX)) as u64
}

/// `GET /api/orders/{id}/cancellation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CancelPreview {
    pub cancellable: bool,
    /// `None`, or the 409 code cancelling would get now.
    #[schema(value_type = Option<String>)]
    pub code: Option<&'static str>,
    pub deadline: DateTime<Utc>,
    pub days_left: i64,
    pub credit_cents: u64,
    /// How a cancellation now takes effect: at once, or at the end of the term (API.md §5.5).
    pub mode: Mode,
}

/// May `order` be cancelled at `now`, until when, for what credit, and how.
///
/// Under the marketplace policy a cancellation is always possible: within the marketplace window
/// ([`crate::terms::marketplace_mode`]) at once with the full credit of the term (the window's end
/// is the deadline); later it is scheduled for the term's end (the deadline), without credit.
pub fn cancellation(order: &Order, now: DateTime<Utc>, window_days: u32, retention_days: u32) -> CancelPreview {
    let (current, _) = crate::terms::advance(order, now, retention_days);
    let order = &current;
    let mut mode = Mode::Immediate;
    let mut deadline = order.purchased_at + Duration::days(i64::from(window_days));
    let code = match order.status {
        OrderStatus::Cancelled => Some("already_cancelled"),
        OrderStatus::Expired => Some("not_cancellable"),
        _ => match order_policy(order) {
            CancelPolicy::None => Some("not_cancellable"),
            CancelPolicy::SupportRequest => Some("support_request_required"),
            CancelPolicy::Standard if now >= deadline => Some("window_closed"),
            CancelPolicy::Standard => None,
            CancelPolicy::Marketplace => {
                mode = crate::terms::marketplace_mode(order, now);
                let term_end = crate::terms::terms_of(order).map(|t| t.current(order.purchased_at).1);
                match (mode, crate::terms::marketplace_window_end(order), term_end) {
                    (Mode::Immediate, Some(window_end), _) => deadline = window_end,
                    (_, _, Some(end)) => deadline = end,
                    _ => {}
                }
                None
            }
        },
    };
    let left = (deadline - now).num_seconds();
    let days_left = if left <= 0 { 0 } else { (left + 86_399) / 86_400 };
    let credit = match (code, mode, order_policy(order)) {
        (Some(_), _, _) | (None, Mode::AtRenewal, _) => 0,
        (None, Mode::Immediate, CancelPolicy::Marketplace) => {
            if crate::terms::terms_of(order).is_some_and(|t| t.in_trial()) {
                0
            } else {
                order.total_cents
            }
        }
        (None, Mode::Immediate, _) => credit_cents(order, now),
    };
    CancelPreview { cancellable: code.is_none(), code, deadline, days_left, credit_cents: credit, mode }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OrderItem;

    #[test]
    fn an_order_total_stays_within_what_json_numbers_carry_exactly() {
        assert_eq!(order_total([(100, 3), (1, 1)]), Some(301));
        assert_eq!(order_total([(MAX_AMOUNT_CENTS, 1)]), Some(MAX_AMOUNT_CENTS));
        assert_eq!(order_total([(MAX_AMOUNT_CENTS, 1), (1, 1)]), None);
        // 100 lines × quantity 100,000 × 10^12: 10^19, past 2^53 and close to u64's end.
        assert_eq!(order_total(std::iter::repeat_n((1_000_000_000_000, 100_000), 100)), None);
        assert_eq!(order_total([(u64::MAX, 2)]), None, "no overflow wraps around");
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn order(kind: ProductKind, policy: CancelPolicy, price: u64, qty: u32, term: Option<u32>) -> Order {
        Order {
            order_id: "o".into(),
            tenant_id: "t".into(),
            status: OrderStatus::Active,
            purchased_at: at("2026-01-01T00:00:00Z"),
            items: vec![OrderItem {
                item_id: "i".into(),
                product_id: "p".into(),
                kind,
                quantity: qty,
                unit_price_cents: price,
                name: "P".into(),
                cancel_policy: policy,
                term_days: term,
                has_key: false,
                billing: None,
            }],
            currency: "USD".into(),
            total_cents: price * u64::from(qty),
            tax_included: false,
            auto_renew: None,
            suspended_at: None,
            cancelled_at: None,
            credit_cents: None,
            cancel_reason: None,
            terms: None,
        }
    }

    #[test]
    fn window_is_sixty_days_from_purchase() {
        let o = order(ProductKind::Perpetual, CancelPolicy::Standard, 1000, 1, None);
        let day59 = cancellation(&o, at("2026-03-01T00:00:00Z"), 60, 90);
        assert_eq!((day59.cancellable, day59.code, day59.days_left), (true, None, 1));
        assert_eq!(day59.deadline, at("2026-03-02T00:00:00Z"));
        assert_eq!(day59.credit_cents, 1000);
        let day60 = cancellation(&o, at("2026-03-02T00:00:00Z"), 60, 90);
        assert_eq!(day60.code, Some("window_closed"));
        let day61 = cancellation(&o, at("2026-03-03T00:00:00Z"), 60, 90);
        assert_eq!(
            (day61.cancellable, day61.code, day61.days_left, day61.credit_cents),
            (false, Some("window_closed"), 0, 0)
        );
    }

    #[test]
    fn policies_give_their_codes() {
        let now = at("2026-01-02T00:00:00Z");
        let none = order(ProductKind::Subscription, CancelPolicy::None, 10, 1, Some(365));
        assert_eq!(cancellation(&none, now, 60, 90).code, Some("not_cancellable"));
        let sr = order(ProductKind::Perpetual, CancelPolicy::SupportRequest, 10, 1, None);
        assert_eq!(cancellation(&sr, now, 60, 90).code, Some("support_request_required"));
        let mut done = order(ProductKind::Perpetual, CancelPolicy::Standard, 10, 1, None);
        done.status = OrderStatus::Cancelled;
        assert_eq!(cancellation(&done, now, 60, 90).code, Some("already_cancelled"));
    }

    #[test]
    fn subscription_credit_is_prorated_by_unused_seconds_floor() {
        // 365-day term, 123400 cents × 3; 10 days and 1 second used.
        let o = order(ProductKind::Subscription, CancelPolicy::Standard, 123_400, 3, Some(365));
        let now = at("2026-01-11T00:00:01Z");
        let term = 365u128 * 86_400;
        let unused = term - (10 * 86_400 + 1);
        let expected = (370_200u128 * unused / term) as u64;
        assert_eq!(credit_cents(&o, now), expected);
        assert_eq!(expected, 360_057); // floor(370200 × 30671999 / 31536000) = 360057.4…
        assert_eq!(credit_cents(&o, at("2027-06-01T00:00:00Z")), 0);
        assert_eq!(credit_cents(&o, o.purchased_at), 370_200);
    }

    #[test]
    fn suspension_expires_after_retention() {
        let mut o = order(ProductKind::Subscription, CancelPolicy::Standard, 1, 1, Some(30));
        o.status = OrderStatus::Suspended;
        o.suspended_at = Some(at("2026-01-01T00:00:00Z"));
        assert_eq!(effective_status(&o, at("2026-03-31T00:00:00Z"), 90), OrderStatus::Suspended);
        assert_eq!(effective_status(&o, at("2026-04-02T00:00:00Z"), 90), OrderStatus::Expired);
    }

    #[test]
    fn markets_tax_and_identifiers() {
        assert!(is_country("AU") && is_country("TW") && !is_country("XX") && !is_country("au") && !is_country("USA"));
        assert!(
            is_guid("3f2a9c4e-8d1b-4e6a-9f0c-5b7d2e1a4c8f")
                && !is_guid("3f2a9c4e-8d1b-4e6a-9f0c")
                && !is_guid("zzzzzzzz-8d1b-4e6a-9f0c-5b7d2e1a4c8f")
        );
        assert!(tax_included("AU") && tax_included("BR") && !tax_included("US"));
        let azure = market_list("@azure-reservations").unwrap();
        assert_eq!(azure.len(), 106);
        assert!(azure.iter().all(|c| is_country(c)), "every shipped code is ISO 3166-1");
        assert!(unavailable_in(&["@azure-reservations".into()], "CN"));
        assert!(!unavailable_in(&["@azure-reservations".into()], "US"));
        assert!(unavailable_in(&["KP".into()], "KP"));
    }
}
