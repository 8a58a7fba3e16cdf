//! Support requests: refund or cancellation requests a partner files for a customer's order
//! or subscription. Every missing or wrong field is reported at once.

use super::customers::lookup;
use super::input::{got, Fields};
use super::to_json;
use super::views::SupportCreated;
use super::{new_id, Ctx, Reply};
use crate::activity::Kind;
use crate::error::ApiError;
use crate::model::{Contact, SupportRequest};
use http::StatusCode;
use serde_json::{Map, Value};

pub async fn create(ctx: &Ctx<'_>, body: &Map<String, Value>) -> Result<Reply, ApiError> {
    let mut f = Fields::new(body, &["customer", "order_id", "subscription_id", "reason", "amount_cents", "contact"]);
    let customer = f.req_str("customer", 253);
    let order_id = f.opt_str("order_id", 64);
    let subscription_id = f.opt_str("subscription_id", 64);
    if order_id.is_none() && subscription_id.is_none() && !f.has("order_id") && !f.has("subscription_id") {
        f.error("order_id", "order_id or subscription_id is required");
    }
    let reason = f.req_str("reason", 2000);
    let amount = f.req_u64("amount_cents", 0, 1_000_000_000_000);
    let contact = f.object("contact", &["name", "email", "phone"], |c| {
        let name = c.req_str("name", 200);
        let email = c.req_str("email", 254);
        let phone = c.req_str("phone", 32);
        if email.as_deref().is_some_and(|e| !e.contains('@') || e.starts_with('@') || e.ends_with('@')) {
            c.error("email", "must be an email address");
        }
        if phone.as_deref().is_some_and(|p| !p.bytes().any(|b| b.is_ascii_digit())) {
            c.error("phone", "must be a phone number");
        }
        Some(Contact { name: name?, email: email?, phone: phone? })
    });
    let found = match &customer {
        Some(c) => lookup(ctx, c).await?,
        None => None,
    };
    if customer.is_some() && found.is_none() {
        f.error("customer", "no such customer (give a tenant GUID or a domain)");
    }
    let referenced = order_id.as_ref().or(subscription_id.as_ref());
    let field = if order_id.is_some() { "order_id" } else { "subscription_id" };
    if let (Some(id), Some(c)) = (referenced, &found) {
        match ctx.state.store.order(id).await? {
            Some(o) if o.tenant_id == c.tenant_id => {
                if subscription_id.is_some() && !o.is_subscription() {
                    f.error("subscription_id", "is not a subscription");
                }
            }
            _ => f.error(field, "no such order for this customer"),
        }
    }
    f.finish()?;
    let tenant_id = got(found).tenant_id;
    let req = SupportRequest {
        request_id: new_id("sr_"),
        status: "open".into(),
        tenant_id: tenant_id.clone(),
        order_id,
        subscription_id,
        reason: got(reason),
        amount_cents: got(amount),
        contact: got(contact),
        created_at: ctx.state.now(),
        created_by: ctx.who.name.clone(),
    };
    let mut e = ctx.entry(Kind::SupportRequestCreated);
    e.tenant_id = Some(tenant_id);
    e.order_id = req.order_id.clone().or(req.subscription_id.clone());
    e.outcome = Some(req.request_id.clone());
    ctx.state.store.create_support_request(req.clone(), e).await?;
    Ok((StatusCode::CREATED, to_json(&SupportCreated { request_id: req.request_id, status: req.status })))
}

pub async fn get(ctx: &Ctx<'_>, request_id: &str) -> Result<Reply, ApiError> {
    let r: SupportRequest =
        ctx.state.store.support_request(request_id).await?.ok_or(ApiError::Missing { what: "support request" })?;
    Ok((StatusCode::OK, to_json(&r)))
}
