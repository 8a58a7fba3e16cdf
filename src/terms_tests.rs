//! Boundaries of the term rules (API.md §5.5).

use super::*;
use crate::model::{CancelPolicy, OrderItem, ProductKind};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn order(purchased: &str, terms: Terms, auto_renew: bool) -> Order {
    Order {
        order_id: "o".into(),
        tenant_id: "t".into(),
        status: OrderStatus::Active,
        purchased_at: at(purchased),
        items: vec![OrderItem {
            item_id: "i".into(),
            product_id: "p".into(),
            kind: ProductKind::Subscription,
            quantity: 1,
            unit_price_cents: 1000,
            name: "P".into(),
            cancel_policy: CancelPolicy::Marketplace,
            term_days: terms.term_days,
            has_key: false,
            billing: terms.billing,
        }],
        currency: "USD".into(),
        total_cents: 1000,
        tax_included: false,
        auto_renew: Some(auto_renew),
        suspended_at: None,
        cancelled_at: None,
        credit_cents: None,
        cancel_reason: None,
        terms: Some(terms),
    }
}

fn monthly(purchased: &str) -> Terms {
    Terms::new(at(purchased), at(purchased), Some(Billing::Monthly), None, None)
}

#[test]
fn a_monthly_term_bought_on_31_january_ends_on_the_last_day_of_february_and_renews_on_the_31st() {
    let t = monthly("2027-01-31T10:00:00Z");
    assert_eq!(t.end_of(1), at("2027-02-28T10:00:00Z"));
    assert_eq!(t.end_of(2), at("2027-03-31T10:00:00Z"), "the schedule does not drift to the 28th");
    let leap = monthly("2028-01-31T10:00:00Z");
    assert_eq!(leap.end_of(1), at("2028-02-29T10:00:00Z"));
}

#[test]
fn an_annual_term_from_29_february_ends_on_28_february_and_returns_to_29_in_a_leap_year() {
    let t = Terms::new(at("2028-02-29T00:00:00Z"), at("2028-02-29T00:00:00Z"), Some(Billing::Annual), None, None);
    assert_eq!(t.end_of(1), at("2029-02-28T00:00:00Z"));
    assert_eq!(t.end_of(4), at("2032-02-29T00:00:00Z"));
}

#[test]
fn a_term_renews_with_auto_renew_and_expires_without_it_at_the_exact_second() {
    let o = order("2027-01-31T10:00:00Z", monthly("2027-01-31T10:00:00Z"), true);
    let (same, none) = advance(&o, at("2027-02-28T09:59:59Z"), 90);
    assert_eq!((same.status, none.len()), (OrderStatus::Active, 0));
    let (renewed, ev) = advance(&o, at("2027-02-28T10:00:00Z"), 90);
    assert_eq!(ev, vec![Event::Renewed(at("2027-02-28T10:00:00Z"), 2)]);
    assert_eq!(terms_of(&renewed).unwrap().current(renewed.purchased_at).1, at("2027-03-31T10:00:00Z"));
    assert_eq!(advance(&renewed, at("2027-02-28T10:00:00Z"), 90).1, vec![], "applied once");

    let off = order("2027-01-31T10:00:00Z", monthly("2027-01-31T10:00:00Z"), false);
    let (expired, ev) = advance(&off, at("2027-06-01T00:00:00Z"), 90);
    assert_eq!(ev, vec![Event::Expired(at("2027-02-28T10:00:00Z"))]);
    assert_eq!(expired.status, OrderStatus::Expired);
    assert_eq!(next_due(&expired, 90), None);
}

#[test]
fn a_clock_that_was_away_applies_every_renewal_in_order() {
    let o = order("2027-01-15T00:00:00Z", monthly("2027-01-15T00:00:00Z"), true);
    let (_, ev) = advance(&o, at("2027-04-20T00:00:00Z"), 90);
    let terms: Vec<u32> =
        ev.iter().filter_map(|e| if let Event::Renewed(_, n) = e { Some(*n) } else { None }).collect();
    assert_eq!(terms, vec![2, 3, 4]);
}

#[test]
fn a_trial_ends_into_the_first_paid_term_which_then_follows_the_schedule() {
    let t = Terms::new(at("2027-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"), Some(Billing::Monthly), None, Some(30));
    assert_eq!((t.trial_ends_at, t.paid_terms), (Some(at("2027-01-31T00:00:00Z")), 0));
    let o = order("2027-01-01T00:00:00Z", t, false);
    assert_eq!(marketplace_mode(&o, at("2027-01-20T00:00:00Z")), Mode::Immediate, "a trial is cancelled at once");
    let (paid, ev) = advance(&o, at("2027-01-31T00:00:00Z"), 90);
    assert_eq!(ev, vec![Event::TrialEnded(at("2027-01-31T00:00:00Z"))]);
    let terms = terms_of(&paid).unwrap();
    assert_eq!(terms.current(paid.purchased_at), (at("2027-01-31T00:00:00Z"), at("2027-02-28T00:00:00Z")));
    assert_eq!(advance(&paid, at("2027-02-28T00:00:00Z"), 90).1, vec![Event::Expired(at("2027-02-28T00:00:00Z"))]);
}

#[test]
fn marketplace_monthly_is_immediate_for_24_hours_after_the_order_or_a_renewal_annual_for_14_days() {
    let o = order("2027-03-01T00:00:00Z", monthly("2027-03-01T00:00:00Z"), true);
    assert_eq!(marketplace_mode(&o, at("2027-03-01T23:59:00Z")), Mode::Immediate);
    assert_eq!(marketplace_mode(&o, at("2027-03-02T00:01:00Z")), Mode::AtRenewal);
    let (renewed, _) = advance(&o, at("2027-04-01T12:00:00Z"), 90);
    assert_eq!(marketplace_mode(&renewed, at("2027-04-01T12:00:00Z")), Mode::Immediate, "12 h after the renewal");
    let a = Terms::new(at("2027-03-01T00:00:00Z"), at("2027-03-01T00:00:00Z"), Some(Billing::Annual), None, None);
    let annual = order("2027-03-01T00:00:00Z", a, true);
    assert_eq!(marketplace_mode(&annual, at("2027-03-14T00:00:00Z")), Mode::Immediate, "day 13");
    assert_eq!(marketplace_mode(&annual, at("2027-03-16T00:00:00Z")), Mode::AtRenewal, "day 15");
}

#[test]
fn a_scheduled_cancellation_takes_effect_at_the_term_end_and_not_before() {
    let mut t = monthly("2027-03-01T00:00:00Z");
    t.cancel_at = Some(t.end_of(1));
    let o = order("2027-03-01T00:00:00Z", t, false);
    assert_eq!(advance(&o, at("2027-03-31T23:59:59Z"), 90).0.status, OrderStatus::Active);
    let (done, ev) = advance(&o, at("2027-04-01T00:00:00Z"), 90);
    assert_eq!(ev, vec![Event::Cancelled(at("2027-04-01T00:00:00Z"))]);
    assert_eq!(
        (done.status, done.cancelled_at, done.credit_cents),
        (OrderStatus::Cancelled, Some(at("2027-04-01T00:00:00Z")), Some(0))
    );
}

#[test]
fn retention_is_90_days_plus_the_days_from_the_customers_creation_to_the_first_paid_term_at_most_120() {
    let same_day =
        Terms::new(at("2027-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"), Some(Billing::Annual), None, None);
    let mut o = order("2027-01-01T00:00:00Z", same_day, true);
    assert_eq!(retention_days(90, &o), 90);
    o.terms.as_mut().unwrap().retention_bonus_days = 12;
    assert_eq!(retention_days(90, &o), 102);
    let long_ago =
        Terms::new(at("2027-01-01T00:00:00Z"), at("2020-01-01T00:00:00Z"), Some(Billing::Annual), None, None);
    let mut old = order("2027-01-01T00:00:00Z", long_ago, true);
    assert_eq!(retention_days(90, &old), 120);

    old.status = OrderStatus::Suspended;
    old.suspended_at = Some(at("2027-02-01T00:00:00Z"));
    let deleted = data_deleted_at(&old, 90).unwrap();
    assert_eq!(deleted, at("2027-06-01T00:00:00Z"), "120 days after the suspension");
    assert_eq!(advance(&old, deleted - Duration::seconds(1), 90).0.status, OrderStatus::Suspended);
    let (gone, ev) = advance(&old, deleted, 90);
    assert_eq!((gone.status, ev), (OrderStatus::Expired, vec![Event::RetentionEnded(deleted)]));
}

#[test]
fn a_subscription_stored_before_terms_runs_one_term_of_its_days_from_its_purchase() {
    let mut o = order("2027-01-01T00:00:00Z", monthly("2027-01-01T00:00:00Z"), false);
    o.terms = None;
    o.items[0].billing = None;
    o.items[0].term_days = Some(365);
    assert_eq!(next_due(&o, 90), Some(at("2028-01-01T00:00:00Z")));
    assert_eq!(advance(&o, at("2028-01-01T00:00:00Z"), 90).0.status, OrderStatus::Expired);
}
