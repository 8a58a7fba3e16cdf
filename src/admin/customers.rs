//! Customer calls: create, look up by tenant GUID or domain, and the purchased-software list.

use super::input::{got, Fields};
use super::to_json;
use super::views::{SoftwareItem, SoftwareList};
use super::{Ctx, Reply};
use crate::error::ApiError;
use crate::model::{Customer, OrderStatus};
use crate::orders::{effective_status, is_country, is_guid};
use crate::store::commands::CustomerExists;
use http::StatusCode;
use serde_json::{Map, Value};

fn valid_domain(d: &str) -> bool {
    d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

pub async fn create(ctx: &Ctx<'_>, body: &Map<String, Value>) -> Result<Reply, ApiError> {
    let mut f = Fields::new(body, &["tenant_id", "domain", "name", "country"]);
    let tenant_id = f.req_str("tenant_id", 36);
    let domain = f.req_str("domain", 253).map(|d| d.to_ascii_lowercase());
    let name = f.req_str("name", 200);
    let country = f.req_str("country", 2);
    if tenant_id.as_deref().is_some_and(|t| !is_guid(t)) {
        f.error("tenant_id", "must be a GUID such as 3f2a9c4e-8d1b-4e6a-9f0c-5b7d2e1a4c8f");
    }
    if domain.as_deref().is_some_and(|d| !valid_domain(d)) {
        f.error("domain", "must be a domain name such as contoso.com");
    }
    if country.as_deref().is_some_and(|c| !is_country(c)) {
        f.error("country", "must be an ISO 3166-1 alpha-2 code such as US");
    }
    f.finish()?;
    let c = Customer {
        tenant_id: got(tenant_id).to_ascii_lowercase(),
        domain: got(domain),
        name: got(name),
        country: got(country),
        created_at: ctx.state.now(),
    };
    ctx.state.store.create_customer(c.clone()).await?.map_err(|e| {
        let what = match e {
            CustomerExists::TenantId => "a customer with this tenant_id exists",
            CustomerExists::Domain => "a customer with this domain exists",
        };
        ApiError::conflict("customer_exists", what)
    })?;
    Ok((StatusCode::CREATED, serde_json::to_value(&c).unwrap_or_default()))
}

/// A customer by tenant GUID (any case) or by domain.
pub async fn lookup(ctx: &Ctx<'_>, tenant_or_domain: &str) -> Result<Option<Customer>, ApiError> {
    let key = tenant_or_domain.to_ascii_lowercase();
    if is_guid(&key) {
        return Ok(ctx.state.store.customer(&key).await?);
    }
    Ok(ctx.state.store.customer_by_domain(&key).await?)
}

pub async fn get(ctx: &Ctx<'_>, tenant_id: &str) -> Result<Reply, ApiError> {
    let c: Customer = ctx
        .state
        .store
        .customer(&tenant_id.to_ascii_lowercase())
        .await?
        .ok_or(ApiError::Missing { what: "customer" })?;
    Ok((StatusCode::OK, to_json(&c)))
}

pub async fn find(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let domain = ctx.query_param("domain").ok_or_else(|| ApiError::field("domain", "is required"))?;
    let c = lookup(ctx, &domain).await?.ok_or(ApiError::Missing { what: "customer" })?;
    Ok((StatusCode::OK, to_json(&c)))
}

pub async fn software(ctx: &Ctx<'_>, tenant_id: &str) -> Result<Reply, ApiError> {
    let tenant_id = tenant_id.to_ascii_lowercase();
    ctx.state.store.customer(&tenant_id).await?.ok_or(ApiError::Missing { what: "customer" })?;
    let now = ctx.state.now();
    let retention = ctx.state.config.orders.suspension_retention_days;
    let mut items = Vec::new();
    for o in ctx.state.store.orders_of(&tenant_id).await? {
        let status = effective_status(&o, now, retention);
        for i in &o.items {
            items.push(SoftwareItem {
                order_id: o.order_id.clone(),
                item_id: i.item_id.clone(),
                product_id: i.product_id.clone(),
                name: i.name.clone(),
                kind: i.kind,
                status,
                purchased_at: o.purchased_at,
                key_available: i.has_key && status == OrderStatus::Active,
            });
        }
    }
    Ok((StatusCode::OK, to_json(&SoftwareList { items })))
}
