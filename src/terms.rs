//! Subscription terms as pure rules (API.md §5.5): calendar months and years, free trials,
//! renewals on one schedule, expiry, scheduled (marketplace) cancellations and the retention of a
//! suspended subscription. Everything takes `now`; nothing here reads a clock or a store.
//!
//! An order keeps its schedule as [`Terms`]: the *anchor* (when the first paid term starts — the
//! end of the trial, or the purchase) and how many paid terms have started. Term `n` runs from
//! `end(n − 1)` to `end(n)`, both counted from the anchor, so renewals stay on one schedule: a
//! monthly term anchored on 31 January ends on 28 (or 29) February, the next on 31 March —
//! never drifting to the 28th. [`advance`] applies every change the clock implies, in time
//! order, and says which it applied; the lifecycle clock stores its result (writing one record
//! per event), and reads show it without storing, so a read never shows a state the clock has
//! already passed.

use crate::model::{Billing, Order, OrderStatus};
use chrono::{DateTime, Duration, Months, Utc};
use serde::{Deserialize, Serialize};

/// A suspended subscription is kept at most this long (API.md §5.5), when the configured base is
/// not longer itself.
pub const MAX_RETENTION_DAYS: u32 = 120;

/// The most term changes one [`advance`] applies (a monthly order left alone for 80 years).
const MAX_STEPS: usize = 1000;

/// An order's subscription schedule, as stored with the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    /// When the first paid term starts: the end of the trial, or the purchase.
    pub anchor: DateTime<Utc>,
    /// The end of the free trial, if the order started with one.
    pub trial_ends_at: Option<DateTime<Utc>>,
    /// Paid terms started so far: 0 during the trial.
    pub paid_terms: u32,
    pub billing: Option<Billing>,
    pub term_days: Option<u32>,
    /// Days of suspension retention on top of the base: the whole days from the customer's
    /// creation to the anchor (API.md §5.5).
    pub retention_bonus_days: u32,
    /// A scheduled cancellation: the order is cancelled when the term ending then ends.
    pub cancel_at: Option<DateTime<Utc>>,
}

impl Terms {
    /// The schedule of a new order bought at `purchased_at` by a customer created at
    /// `customer_created`.
    pub fn new(
        purchased_at: DateTime<Utc>,
        customer_created: DateTime<Utc>,
        billing: Option<Billing>,
        term_days: Option<u32>,
        trial_days: Option<u32>,
    ) -> Terms {
        let trial_ends_at = trial_days.filter(|d| *d > 0).map(|d| purchased_at + Duration::days(i64::from(d)));
        let anchor = trial_ends_at.unwrap_or(purchased_at);
        Terms {
            anchor,
            trial_ends_at,
            paid_terms: if trial_ends_at.is_some() { 0 } else { 1 },
            billing,
            term_days,
            retention_bonus_days: (anchor - customer_created).num_days().clamp(0, i64::from(MAX_RETENTION_DAYS)) as u32,
            cancel_at: None,
        }
    }

    /// The end of paid term `n` (`n = 0`: the anchor).
    pub fn end_of(&self, n: u32) -> DateTime<Utc> {
        let months = match self.billing {
            Some(Billing::Monthly) => Some(n),
            Some(Billing::Annual) => Some(n.saturating_mul(12)),
            None => None,
        };
        match months {
            Some(m) => self.anchor.checked_add_months(Months::new(m)).unwrap_or(DateTime::<Utc>::MAX_UTC),
            None => {
                let days = i64::from(self.term_days.unwrap_or(0).max(1)) * i64::from(n);
                self.anchor.checked_add_signed(Duration::days(days)).unwrap_or(DateTime::<Utc>::MAX_UTC)
            }
        }
    }

    pub fn in_trial(&self) -> bool {
        self.paid_terms == 0
    }

    /// The current term (the trial while in it): `(start, end)`.
    pub fn current(&self, purchased_at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        if self.in_trial() {
            (purchased_at, self.anchor)
        } else {
            (self.end_of(self.paid_terms - 1), self.end_of(self.paid_terms))
        }
    }

    /// Whether terms are months (for the marketplace windows); day-counted terms under a year count
    /// as monthly.
    pub fn is_monthly(&self) -> bool {
        match self.billing {
            Some(b) => b == Billing::Monthly,
            None => self.term_days.unwrap_or(0) < 365,
        }
    }
}

/// The schedule an order runs on: its stored [`Terms`], or, for a subscription stored before
/// terms were kept, a paid term from its purchase (`None` for perpetual software).
pub fn terms_of(order: &Order) -> Option<Terms> {
    if !order.is_subscription() {
        return None;
    }
    order.terms.clone().or_else(|| {
        let days = order.items.iter().find_map(|i| i.term_days);
        Some(Terms {
            anchor: order.purchased_at,
            trial_ends_at: None,
            paid_terms: 1,
            billing: order.items.iter().find_map(|i| i.billing),
            term_days: days,
            retention_bonus_days: 0,
            cancel_at: None,
        })
    })
}

/// Days a suspended subscription is kept: the base plus the order's bonus, at most
/// [`MAX_RETENTION_DAYS`] (or the base, if that is longer).
pub fn retention_days(base: u32, order: &Order) -> u32 {
    let bonus = order.terms.as_ref().map_or(0, |t| t.retention_bonus_days);
    base.saturating_add(bonus).min(MAX_RETENTION_DAYS.max(base))
}

/// When a suspended order's data is deleted (its retention ends), if it is suspended.
pub fn data_deleted_at(order: &Order, base_retention: u32) -> Option<DateTime<Utc>> {
    match (order.status, order.suspended_at) {
        (OrderStatus::Suspended, Some(at)) => {
            Some(at + Duration::days(i64::from(retention_days(base_retention, order))))
        }
        _ => None,
    }
}

/// A change the clock made to an order, at the time it took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The trial ended; the first paid term started.
    TrialEnded(DateTime<Utc>),
    /// A new term started (`auto_renew`); its number.
    Renewed(DateTime<Utc>, u32),
    /// The term ended without renewal.
    Expired(DateTime<Utc>),
    /// A scheduled cancellation took effect at the term's end.
    Cancelled(DateTime<Utc>),
    /// A suspension outlasted its retention.
    RetentionEnded(DateTime<Utc>),
}

impl Event {
    pub fn at(&self) -> DateTime<Utc> {
        match *self {
            Event::TrialEnded(t) | Event::Renewed(t, _) | Event::Expired(t) | Event::Cancelled(t) => t,
            Event::RetentionEnded(t) => t,
        }
    }
}

/// Applies to `order` every change due at or before `now`, in time order; returns the order as
/// of `now` and the changes, oldest first (none: the order is as stored). Idempotent: advancing
/// the result again at the same `now` changes nothing, which is what makes the clock apply each
/// change once however often (and on however many nodes) it runs.
pub fn advance(order: &Order, now: DateTime<Utc>, base_retention: u32) -> (Order, Vec<Event>) {
    let mut o = order.clone();
    let mut events = Vec::new();
    let Some(mut t) = terms_of(&o) else { return (o, events) };
    while events.len() < MAX_STEPS {
        if o.status == OrderStatus::Suspended {
            if let Some(end) = data_deleted_at(&o, base_retention).filter(|end| now >= *end) {
                o.status = OrderStatus::Expired;
                events.push(Event::RetentionEnded(end));
            }
            break;
        }
        if o.status != OrderStatus::Active {
            break;
        }
        let (_, end) = t.current(o.purchased_at);
        if now < end {
            break;
        }
        if t.cancel_at.is_some_and(|c| c <= end) {
            o.status = OrderStatus::Cancelled;
            o.cancelled_at = Some(end);
            o.credit_cents = Some(0);
            events.push(Event::Cancelled(end));
            break;
        }
        if t.in_trial() {
            t.paid_terms = 1;
            events.push(Event::TrialEnded(end));
            continue;
        }
        if o.auto_renew == Some(true) {
            t.paid_terms += 1;
            events.push(Event::Renewed(end, t.paid_terms));
            continue;
        }
        o.status = OrderStatus::Expired;
        events.push(Event::Expired(end));
        break;
    }
    if !events.is_empty() {
        o.terms = Some(t);
    }
    (o, events)
}

/// When the clock next has something to do for `order` (`None`: nothing will ever happen by
/// itself).
pub fn next_due(order: &Order, base_retention: u32) -> Option<DateTime<Utc>> {
    let t = terms_of(order)?;
    match order.status {
        OrderStatus::Active => Some(t.current(order.purchased_at).1),
        OrderStatus::Suspended => data_deleted_at(order, base_retention),
        OrderStatus::Cancelled | OrderStatus::Expired => None,
    }
}

/// How a marketplace cancellation at `now` takes effect (API.md §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// At once, with full credit of the term.
    Immediate,
    /// At the end of the term (`cancel_at`), without credit.
    AtRenewal,
}

/// When the marketplace window for cancelling at once closes: 24 hours after the order or latest
/// renewal (monthly), 14 days after (annual). `None` while nothing limits it: in a trial (which
/// costs nothing) or for software without terms.
pub fn marketplace_window_end(order: &Order) -> Option<DateTime<Utc>> {
    let t = terms_of(order).filter(|t| !t.in_trial())?;
    let (start, _) = t.current(order.purchased_at);
    let window = if t.is_monthly() { Duration::hours(24) } else { Duration::days(14) };
    Some(start.max(order.purchased_at) + window)
}

/// The marketplace rule: inside the window ([`marketplace_window_end`]) at once, later at
/// renewal.
pub fn marketplace_mode(order: &Order, now: DateTime<Utc>) -> Mode {
    match marketplace_window_end(order) {
        Some(end) if now > end => Mode::AtRenewal,
        _ => Mode::Immediate,
    }
}

#[cfg(test)]
#[path = "terms_tests.rs"]
mod tests;
