//! Order calls: buy, read, "get keys and downloads", keys, cancellation (preview and cancel),
//! subscriptions (suspend, reactivate, auto-renew). Each state change runs as one writer
//! transaction together with its gate change and activity record; the in-memory gate follows
//! after the commit, so the next download request already sees it.

use super::catalog::{files_of, load_product};
use super::input::{got, Fields};
use super::to_json;
use super::views::{CancelResult, DownloadsIssued, KeyList, KeyView, LinkList, OrderItemView, OrderView};
use super::{new_id, Ctx, Reply};
use crate::activity::Kind;
use crate::error::ApiError;
use crate::links::{issue_link, IssueError, IssueRequest};
use crate::model::{Customer, Order, OrderItem, OrderStatus, ProductKind};
use crate::orders::{cancellation as preview, effective_status, tax_included, unavailable_in};
use crate::store::commands::{BuyRefused, Changed, OnePerCustomer, OrderChange};
use crate::store::Access;
use crate::terms::{advance, Terms};
use http::StatusCode;
use serde_json::{Map, Value};

async fn load(ctx: &Ctx<'_>, order_id: &str) -> Result<Order, ApiError> {
    ctx.state.store.order(order_id).await?.ok_or(ApiError::Missing { what: "order" })
}

fn order_json(ctx: &Ctx<'_>, stored: &Order) -> Value {
    let retention = ctx.state.config.orders.suspension_retention_days;
    let (o, _) = advance(stored, ctx.state.now(), retention);
    let mut v = OrderView {
        order_id: o.order_id.clone(),
        tenant_id: o.tenant_id.clone(),
        status: o.status,
        purchased_at: o.purchased_at,
        items: o
            .items
            .iter()
            .map(|i| OrderItemView {
                item_id: i.item_id.clone(),
                product_id: i.product_id.clone(),
                kind: i.kind,
                quantity: i.quantity,
                unit_price_cents: i.unit_price_cents,
            })
            .collect(),
        currency: o.currency.clone(),
        total_cents: o.total_cents,
        tax_included: o.tax_included,
        auto_renew: o.auto_renew,
        suspended_at: o.suspended_at,
        cancelled_at: o.cancelled_at,
        credit_cents: o.credit_cents,
        term_start: None,
        term_end: None,
        trial_ends_at: None,
        cancel_at: None,
        data_deleted_at: None,
    };
    if let Some(t) = crate::terms::terms_of(&o) {
        let (start, end) = t.current(o.purchased_at);
        v.term_start = Some(start);
        v.term_end = Some(end);
        v.trial_ends_at = Some(t.trial_ends_at);
        v.cancel_at = Some(t.cancel_at);
        if o.status == OrderStatus::Suspended {
            v.data_deleted_at = Some(crate::terms::data_deleted_at(&o, retention));
        }
    }
    to_json(&v)
}

/// Refuses access to an order's keys and links unless it is active (and not revoked by a push).
async fn require_active(ctx: &Ctx<'_>, o: &Order) -> Result<(), ApiError> {
    match effective_status(o, ctx.state.now(), ctx.state.config.orders.suspension_retention_days) {
        OrderStatus::Cancelled | OrderStatus::Expired => return Err(ApiError::Revoked),
        OrderStatus::Suspended => return Err(ApiError::Suspended),
        OrderStatus::Active => {}
    }
    match ctx.state.ledger.gate(&o.order_id, Some(o.tenant_id.clone())).await?.access() {
        Access::Revoked => Err(ApiError::Revoked),
        Access::Suspended => Err(ApiError::Suspended),
        Access::Open => Ok(()),
    }
}

pub async fn buy(ctx: &Ctx<'_>, tenant_id: &str, body: &Map<String, Value>) -> Result<Reply, ApiError> {
    let tenant_id = tenant_id.to_ascii_lowercase();
    let customer: Customer =
        ctx.state.store.customer(&tenant_id).await?.ok_or(ApiError::Missing { what: "customer" })?;
    let now = ctx.state.now();
    let mut f = Fields::new(body, &["items", "purchased_at"]);
    let items = f.objects("items", 100, &["product_id", "quantity"], |i| {
        let p = i.req_str("product_id", 64);
        let q = i.req_u64("quantity", 1, 100_000);
        Some((p?, q? as u32))
    });
    let purchased_at = f.opt_time("purchased_at");
    if purchased_at.is_some_and(|t| t > now) {
        f.error("purchased_at", "must not be in the future");
    }
    let mut lines = Vec::new();
    for (i, (pid, qty)) in items.clone().unwrap_or_default().into_iter().enumerate() {
        match load_product(ctx, &pid).await {
            Ok(p) => lines.push((p, qty)),
            Err(ApiError::Missing { .. }) => f.error(&format!("items[{i}].product_id"), "no such product"),
            Err(e) => return Err(e),
        }
    }
    if lines.windows(2).any(|w| w[0].0.currency != w[1].0.currency) {
        f.error("items", "all products of one order must have the same currency");
    }
    if lines.windows(2).any(|w| w[0].0.kind != w[1].0.kind) {
        f.error("items", "an order holds either perpetual or subscription products, not both");
    }
    // One schedule per order: its subscriptions renew, expire and are cancelled together.
    if lines.windows(2).any(|w| {
        (w[0].0.billing, w[0].0.term_days, w[0].0.trial_days) != (w[1].0.billing, w[1].0.term_days, w[1].0.trial_days)
    }) && lines.iter().all(|(p, _)| p.kind == ProductKind::Subscription)
    {
        f.error("items", "the subscriptions of one order must share their billing, term_days and trial_days");
    }
    let total = crate::orders::order_total(lines.iter().map(|(p, q)| (p.unit_price_cents, *q)));
    if total.is_none() {
        f.error("items", format!("the order's total must not exceed {} minor units", crate::orders::MAX_AMOUNT_CENTS));
    }
    f.finish()?;
    if let Some((p, _)) = lines.iter().find(|(p, _)| unavailable_in(&p.unavailable_markets, &customer.country)) {
        return Err(ApiError::UnavailableInMarket {
            detail: format!("{} is not available in {}", p.product_id, customer.country),
        });
    }
    let purchased_at = purchased_at.unwrap_or(now);
    let first = &lines[0].0;
    let terms = (first.kind == ProductKind::Subscription)
        .then(|| Terms::new(purchased_at, customer.created_at, first.billing, first.term_days, first.trial_days));
    let order = Order {
        order_id: new_id("ord_"),
        tenant_id: tenant_id.clone(),
        status: OrderStatus::Active,
        purchased_at,
        items: lines
            .iter()
            .map(|(p, q)| OrderItem {
                item_id: new_id("itm_"),
                product_id: p.product_id.clone(),
                kind: p.kind,
                quantity: *q,
                unit_price_cents: p.unit_price_cents,
                name: p.name.clone(),
                cancel_policy: p.cancel_policy,
                term_days: p.term_days,
                has_key: p.key_required,
                billing: p.billing,
            })
            .collect(),
        currency: lines[0].0.currency.clone(),
        total_cents: got(total),
        tax_included: tax_included(&customer.country),
        auto_renew: (lines[0].0.kind == ProductKind::Subscription).then_some(true),
        suspended_at: None,
        cancelled_at: None,
        credit_cents: None,
        cancel_reason: None,
        terms,
    };
    let mut created = ctx.entry(Kind::OrderCreated);
    created.tenant_id = Some(tenant_id.clone());
    created.order_id = Some(order.order_id.clone());
    created.product_id = (order.items.len() == 1).then(|| order.items[0].product_id.clone());
    created.outcome = Some("created".into());
    let exclusive = OnePerCustomer {
        products: lines.iter().filter(|(p, _)| p.one_per_customer).map(|(p, _)| p.product_id.clone()).collect(),
        now,
        retention_days: ctx.state.config.orders.suspension_retention_days,
    };
    ctx.state.store.buy(order.clone(), created, exclusive).await?.map_err(|e| match e {
        BuyRefused::OutOfKeys(e) => ApiError::conflict(
            "out_of_keys",
            format!("no activation keys left for {}; nothing was bought", e.product_id),
        ),
        BuyRefused::AlreadySubscribed { product_id, order_id } => ApiError::AlreadySubscribed { order_id, product_id },
    })?;
    Ok((StatusCode::CREATED, order_json(ctx, &order)))
}

pub async fn get(ctx: &Ctx<'_>, order_id: &str) -> Result<Reply, ApiError> {
    Ok((StatusCode::OK, order_json(ctx, &load(ctx, order_id).await?)))
}

/// `GET /api/orders/{order_id}/links`: the order's links (up to 200, newest first) and their state.
pub async fn links(ctx: &Ctx<'_>, order_id: &str) -> Result<Reply, ApiError> {
    let o = load(ctx, order_id).await?;
    let links = crate::links::links_of_order(ctx.state, &o.order_id, ctx.state.now(), 200).await?;
    Ok((StatusCode::OK, to_json(&LinkList { links })))
}

/// Decrypts the keys of an order's items (optionally of one product), writing `key.accessed`
/// for each, durably, before they are returned.
async fn open_keys(ctx: &Ctx<'_>, o: &Order, product: Option<&str>) -> Result<Vec<(String, String, String)>, ApiError> {
    let mut out = Vec::new();
    let mut records = Vec::new();
    for i in o.items.iter().filter(|i| i.has_key && product.is_none_or(|p| p == i.product_id)) {
        let Some(sealed) = ctx.state.store.order_key(&o.order_id, &i.item_id).await? else {
            continue;
        };
        let key = ctx.state.sealer.open(&i.product_id, &sealed).map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut e = ctx.entry(Kind::KeyAccessed);
        e.tenant_id = Some(o.tenant_id.clone());
        e.order_id = Some(o.order_id.clone());
        e.product_id = Some(i.product_id.clone());
        e.outcome = Some("disclosed".into());
        records.push(e);
        out.push((i.item_id.clone(), i.product_id.clone(), key));
    }
    ctx.state.store.append(records).await?;
    Ok(out)
}

pub async fn keys(ctx: &Ctx<'_>, order_id: &str) -> Result<Reply, ApiError> {
    let o = load(ctx, order_id).await?;
    require_active(ctx, &o).await?;
    let keys = open_keys(ctx, &o, None).await?;
    let keys = keys.into_iter().map(|(item_id, product_id, key)| KeyView { item_id, product_id, key }).collect();
    Ok((StatusCode::OK, to_json(&KeyList { keys })))
}

pub async fn downloads(ctx: &Ctx<'_>, order_id: &str, body: &Map<String, Value>) -> Result<Reply, ApiError> {
    let o = load(ctx, order_id).await?;
    let cfg = &ctx.state.config.links;
    let max_ttl = u64::from(cfg.ttl_days) * 86_400;
    let mut f = Fields::new(body, &["product_id", "version", "language", "file_type", "ttl_seconds", "max_uses"]);
    let product_id = f.req_str("product_id", 64);
    let version = f.opt_str("version", 64);
    let language = f.opt_str("language", 35);
    let file_type = f.opt_str("file_type", 32);
    let ttl = f.opt_u64("ttl_seconds", 1, max_ttl);
    let max_uses = f.opt_u64("max_uses", 1, u64::from(cfg.max_uses));
    if product_id.as_ref().is_some_and(|p| !o.items.iter().any(|i| &i.product_id == p)) {
        f.error("product_id", "is not part of this order");
    }
    f.finish()?;
    require_active(ctx, &o).await?;
    let product_id = got(product_id);
    let files: Vec<_> = files_of(ctx, &product_id)
        .await?
        .into_iter()
        .filter(|r| version.as_ref().is_none_or(|v| r.version.as_ref() == Some(v)))
        .filter(|r| language.as_ref().is_none_or(|v| r.language.as_ref() == Some(v)))
        .filter(|r| file_type.as_ref().is_none_or(|v| r.file_type.as_ref() == Some(v)))
        .collect();
    if files.is_empty() {
        return Err(ApiError::Missing { what: "file matching the request" });
    }
    let key = open_keys(ctx, &o, Some(&product_id)).await?.into_iter().next().map(|(_, _, k)| k);
    let mut links = Vec::new();
    for file in files {
        let req = IssueRequest {
            order_id: o.order_id.clone(),
            tenant_id: Some(o.tenant_id.clone()),
            product_id: product_id.clone(),
            file_id: file.file_id,
            ttl_secs: ttl,
            max_uses: max_uses.map(|m| m as u32),
            now: ctx.state.now(),
            actor: ctx.who.name.clone(),
            ip: Some(ctx.peer.ip().to_string()),
            user_agent: ctx.user_agent.clone(),
        };
        let link = issue_link(ctx.state, req).await.map_err(|e| match e {
            IssueError::Revoked => ApiError::Revoked,
            IssueError::Suspended => ApiError::Suspended,
            IssueError::UnknownFile => ApiError::Missing { what: "file" },
            IssueError::Invalid(m) => ApiError::field("max_uses", m),
            IssueError::Store(s) => s.into(),
        })?;
        links.push(link);
    }
    Ok((StatusCode::CREATED, to_json(&DownloadsIssued { key, links })))
}

pub async fn cancellation(ctx: &Ctx<'_>, order_id: &str) -> Result<Reply, ApiError> {
    let o = load(ctx, order_id).await?;
    let cfg = &ctx.state.config.orders;
    let p = preview(&o, ctx.state.now(), cfg.cancel_window_days, cfg.suspension_retention_days);
    Ok((StatusCode::OK, serde_json::to_value(p).unwrap_or_default()))
}

/// Changes an order by `decide` in one store command (404 if it is gone; a refusal writes
/// nothing).
async fn change_order(
    ctx: &Ctx<'_>,
    order_id: &str,
    decide: impl FnOnce(Order, usize) -> Result<Option<OrderChange>, ApiError> + Send + 'static,
) -> Result<Changed, ApiError> {
    let change = move |stored: Option<Order>, links| match stored {
        Some(o) => decide(o, links),
        None => Err(ApiError::Missing { what: "order" }),
    };
    ctx.state.store.change_order(order_id, change).await?
}

pub async fn cancel(ctx: &Ctx<'_>, order_id: &str, body: &Map<String, Value>) -> Result<Reply, ApiError> {
    load(ctx, order_id).await?;
    let mut f = Fields::new(body, &["acknowledged", "reason"]);
    let ack = f.opt_bool("acknowledged");
    let reason = f.opt_str("reason", 1000);
    if ack != Some(true) {
        f.error("acknowledged", "must be true: cancelling revokes every link and key of the order at once");
    }
    f.finish()?;
    let now = ctx.state.now();
    let (window, retention) =
        (ctx.state.config.orders.cancel_window_days, ctx.state.config.orders.suspension_retention_days);
    let mut rec = ctx.entry(Kind::OrderCancelled);
    let changed = change_order(ctx, order_id, move |stored, links| {
        // Decided on the order as the clock has it; the clock's own changes are its to record.
        let (current, _) = advance(&stored, now, retention);
        let mut o = stored;
        let p = preview(&current, now, window, retention);
        if let Some(code) = p.code {
            return Err(ApiError::conflict(code, "the order cannot be cancelled now"));
        }
        rec.tenant_id = Some(o.tenant_id.clone());
        rec.order_id = Some(o.order_id.clone());
        rec.bytes = None;
        if p.mode == crate::terms::Mode::AtRenewal {
            // Marketplace, past its window: the order works until its term ends (API.md §5.5).
            let no_terms = || ApiError::Internal("marketplace order without terms".into());
            let end = crate::terms::terms_of(&current).ok_or_else(no_terms)?.current(o.purchased_at).1;
            let mut t = crate::terms::terms_of(&o).ok_or_else(no_terms)?;
            t.cancel_at = Some(end);
            o.terms = Some(t);
            o.auto_renew = Some(false);
            o.cancel_reason = reason;
            rec.kind = Kind::OrderCancellationScheduled;
            rec.outcome =
                Some(format!("scheduled; cancel_at={}", end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
            return Ok(Some(OrderChange { order: o, access: None, records: vec![rec] }));
        }
        o.status = OrderStatus::Cancelled;
        o.cancelled_at = Some(now);
        o.credit_cents = Some(p.credit_cents);
        o.cancel_reason = reason;
        rec.outcome = Some(format!("cancelled; credit_cents={}; revoked_links={links}", p.credit_cents));
        Ok(Some(OrderChange { order: o, access: Some(Access::Revoked), records: vec![rec] }))
    })
    .await?;
    let Changed { order: o, links } = changed;
    if o.status == OrderStatus::Active {
        let cancel_at = o.terms.as_ref().and_then(|t| t.cancel_at);
        return Ok((
            StatusCode::OK,
            to_json(&CancelResult {
                order_id: o.order_id,
                status: OrderStatus::Active,
                cancelled_at: None,
                cancel_at,
                credit_cents: Some(0),
                revoked_links: None,
            }),
        ));
    }
    Ok((
        StatusCode::OK,
        to_json(&CancelResult {
            order_id: o.order_id,
            status: OrderStatus::Cancelled,
            cancelled_at: o.cancelled_at,
            cancel_at: None,
            credit_cents: o.credit_cents,
            revoked_links: Some(links),
        }),
    ))
}

/// Runs a subscription state change: `decide` gets the order and returns the new status and
/// gate, or a refusal; a `None` status means "already there" (answered without writing).
async fn subscription_change(
    ctx: &Ctx<'_>,
    order_id: &str,
    kind: Kind,
    decide: impl FnOnce(&Order, chrono::DateTime<chrono::Utc>) -> Result<Option<(OrderStatus, Access)>, ApiError>
        + Send
        + 'static,
) -> Result<Reply, ApiError> {
    load(ctx, order_id).await?;
    let now = ctx.state.now();
    let retention = ctx.state.config.orders.suspension_retention_days;
    let rec = ctx.entry(kind);
    let changed = change_order(ctx, order_id, move |mut o, _| {
        if !o.is_subscription() {
            return Err(ApiError::conflict("not_a_subscription", "only subscriptions can be suspended or reactivated"));
        }
        let mut e = rec;
        e.tenant_id = Some(o.tenant_id.clone());
        e.order_id = Some(o.order_id.clone());
        if effective_status(&o, now, retention) == OrderStatus::Expired && o.status == OrderStatus::Suspended {
            // Retention passed: the order expires now, its links are revoked.
            o.status = OrderStatus::Expired;
            e.kind = Kind::OrderExpired;
            e.outcome = Some("retention_expired".into());
            return Ok(Some(OrderChange { order: o, access: Some(Access::Revoked), records: vec![e] }));
        }
        let Some((status, access)) = decide(&o, now)? else { return Ok(None) };
        o.status = status;
        o.suspended_at = (status == OrderStatus::Suspended).then_some(now);
        e.outcome = Some(format!("{status:?}").to_lowercase());
        Ok(Some(OrderChange { order: o, access: Some(access), records: vec![e] }))
    })
    .await?;
    let o = changed.order;
    if o.status == OrderStatus::Expired {
        return Err(ApiError::conflict(
            "retention_expired",
            "the suspension outlasted the retention period; the order has expired",
        ));
    }
    Ok((StatusCode::OK, order_json(ctx, &o)))
}

pub async fn suspend(ctx: &Ctx<'_>, order_id: &str) -> Result<Reply, ApiError> {
    subscription_change(ctx, order_id, Kind::OrderSuspended, |o, _| match o.status {
        OrderStatus::Active => Ok(Some((OrderStatus::Suspended, Access::Suspended))),
        OrderStatus::Suspended => Ok(None),
        OrderStatus::Cancelled | OrderStatus::Expired => Err(ApiError::Revoked),
    })
    .await
}

pub async fn reactivate(ctx: &Ctx<'_>, order_id: &str) -> Result<Reply, ApiError> {
    subscription_change(ctx, order_id, Kind::OrderReactivated, |o, _| match o.status {
        OrderStatus::Suspended => Ok(Some((OrderStatus::Active, Access::Open))),
        OrderStatus::Active => Ok(None),
        OrderStatus::Cancelled => Err(ApiError::Revoked),
        OrderStatus::Expired => Err(ApiError::conflict("retention_expired", "the order has expired")),
    })
    .await
}

pub async fn patch(ctx: &Ctx<'_>, order_id: &str, body: &Map<String, Value>) -> Result<Reply, ApiError> {
    let o = load(ctx, order_id).await?;
    let mut f = Fields::new(body, &["auto_renew"]);
    let auto_renew = f.req_bool("auto_renew");
    f.finish()?;
    if !o.is_subscription() {
        return Err(ApiError::conflict("not_a_subscription", "auto_renew applies to subscriptions only"));
    }
    let auto_renew = got(auto_renew);
    let (now, retention) = (ctx.state.now(), ctx.state.config.orders.suspension_retention_days);
    let updated = change_order(ctx, order_id, move |mut o, _| {
        if matches!(advance(&o, now, retention).0.status, OrderStatus::Cancelled | OrderStatus::Expired) {
            return Err(ApiError::Revoked);
        }
        o.auto_renew = Some(auto_renew);
        if auto_renew {
            // Withdraws a scheduled cancellation (API.md §5.5).
            if let Some(t) = o.terms.as_mut() {
                t.cancel_at = None;
            }
        }
        Ok(Some(OrderChange { order: o, access: None, records: Vec::new() }))
    })
    .await?
    .order;
    Ok((StatusCode::OK, order_json(ctx, &updated)))
}
