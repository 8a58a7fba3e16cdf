//! The lifecycle clock (API.md §5.5): applies, on time, the changes subscription terms make by
//! themselves — a trial's end, a renewal, an expiry, a scheduled cancellation, a suspension's
//! retention running out — whether or not anyone asks.
//!
//! Every `orders.lifecycle_tick_secs` (30 s by default, so a change is at most a minute late) the
//! clock reads the store's set of live subscriptions and, for each order whose next change is due
//! ([`terms::next_due`]), runs one store command ([`crate::store::Store::change_order`]) that
//! re-reads the order inside its transaction, advances it to now ([`terms::advance`]) and writes
//! the result with one activity record per change and, when the order ends, its gate closed —
//! so every link of the order is refused at once and downloads in flight are cut like any
//! revocation. Because the decision is taken on the order as stored *in* the transaction (on
//! PostgreSQL, its row held `FOR UPDATE`), a change is applied once: after a crash or a restart
//! the order is simply not due any more, and of two nodes ticking together the second finds
//! nothing to do.

use crate::activity::{Entry, Kind};
use crate::state::AppState;
use crate::store::commands::OrderChange;
use crate::store::{Access, StoreError};
use crate::terms::{advance, next_due, Event};
use std::sync::Arc;

/// The actor named in the clock's records.
pub const ACTOR: &str = "keydrop (lifecycle)";

/// Runs the clock until the task is dropped: ticks at start, then every `lifecycle_tick_secs`.
pub async fn run(state: Arc<AppState>) {
    match state.store.index_live_subscriptions().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(orders = n, "indexed live subscriptions stored before the lifecycle clock"),
        Err(e) => tracing::warn!(error = %e, "could not index live subscriptions; retrying at the next start"),
    }
    let every = std::time::Duration::from_secs(state.config.orders.lifecycle_tick_secs.max(1));
    loop {
        match tick(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(orders = n, "lifecycle clock applied term changes"),
            Err(e) => tracing::warn!(error = %e, "lifecycle clock tick failed; retrying at the next tick"),
        }
        tokio::time::sleep(every).await;
    }
}

/// One tick: applies every change due by now; returns how many orders changed.
pub async fn tick(state: &AppState) -> Result<usize, StoreError> {
    let retention = state.config.orders.suspension_retention_days;
    let mut changed = 0;
    for order_id in state.store.live_subscriptions().await? {
        let now = state.now();
        let Some(order) = state.store.order(&order_id).await? else { continue };
        if next_due(&order, retention).is_some_and(|due| due > now) {
            continue;
        }
        let applied = state
            .store
            .change_order(&order_id, move |stored, links| {
                Ok::<_, StoreError>(stored.and_then(|o| change(&o, now, retention, links)))
            })
            .await??;
        if applied.order.status != order.status || applied.order.terms != order.terms {
            changed += 1;
        }
    }
    Ok(changed)
}

/// What the clock writes for `stored` at `now`: the advanced order, one record per change, and a
/// closed gate if it ended. `None` when nothing is due — but a stored order that has ended
/// already is written back unchanged, which drops it from the live set.
fn change(
    stored: &crate::model::Order,
    now: chrono::DateTime<chrono::Utc>,
    retention: u32,
    links: usize,
) -> Option<OrderChange> {
    let (order, events) = advance(stored, now, retention);
    if events.is_empty() {
        return (!crate::store::keys::is_live(stored)).then(|| OrderChange {
            order,
            access: None,
            records: Vec::new(),
        });
    }
    let records = events.iter().map(|e| record(&order, *e, links)).collect();
    let ended = !crate::store::keys::is_live(&order);
    Some(OrderChange { order, access: ended.then_some(Access::Revoked), records })
}

fn record(order: &crate::model::Order, event: Event, links: usize) -> Entry {
    let at = event.at().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (kind, outcome) = match event {
        Event::TrialEnded(_) => (Kind::OrderTrialEnded, format!("trial_ended; at={at}")),
        Event::Renewed(_, n) => (Kind::OrderRenewed, format!("renewed; term={n}; at={at}")),
        Event::Expired(_) => (Kind::OrderExpired, format!("expired; at={at}; revoked_links={links}")),
        Event::RetentionEnded(_) => (Kind::OrderExpired, format!("retention_expired; at={at}; revoked_links={links}")),
        Event::Cancelled(_) => {
            (Kind::OrderCancelled, format!("cancelled at renewal; at={at}; credit_cents=0; revoked_links={links}"))
        }
    };
    let mut e = Entry::new(kind);
    e.actor = Some(ACTOR.into());
    e.tenant_id = Some(order.tenant_id.clone());
    e.order_id = Some(order.order_id.clone());
    e.product_id = (order.items.len() == 1).then(|| order.items[0].product_id.clone());
    e.outcome = Some(outcome);
    e
}
