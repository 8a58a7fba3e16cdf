//! The admin API (API.md §4) on the admin listener: authenticate, check the endpoint's roles,
//! read the body, dispatch to one handler per call. Every answer is JSON; every refusal is a
//! problem body from [`crate::error`].

mod activity;
pub mod auth;
mod catalog;
mod customers;
pub mod input;
mod orders;
mod revocations;
mod support;
mod tokens;
pub mod views;

use crate::activity::{Entry, Kind};
use crate::body::Body;
use crate::error::ApiError;
use crate::router::{Admin, Caller};
use crate::state::AppState;
use auth::Principal;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde_json::{Map, Value};
use std::net::SocketAddr;
use std::sync::Arc;

/// What every handler gets: the state, the caller, and the request's identity for the log.
pub struct Ctx<'a> {
    pub state: &'a Arc<AppState>,
    pub who: Principal,
    pub peer: SocketAddr,
    pub user_agent: Option<String>,
    pub query: Option<String>,
}

impl<'a> Ctx<'a> {
    /// An activity entry with this call's actor, IP and user agent.
    pub fn entry(&self, kind: Kind) -> Entry {
        let mut e = Entry::new(kind);
        e.actor = Some(self.who.name.clone());
        e.ip = Some(self.peer.ip().to_string());
        e.user_agent = self.user_agent.clone();
        e
    }

    /// The same caller with another query string.
    pub fn with_query(&self, query: String) -> Ctx<'a> {
        Ctx {
            state: self.state,
            who: self.who.clone(),
            peer: self.peer,
            user_agent: self.user_agent.clone(),
            query: Some(query),
        }
    }

    /// A query-string parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name)
                .then(|| percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned())
        })
    }
}

pub type Reply = (StatusCode, Value);

/// Handles one admin call.
pub async fn handle<B>(
    state: &Arc<AppState>,
    call: Admin,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: B,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let user_agent: Option<String> =
        headers.get(header::USER_AGENT).map(|v| String::from_utf8_lossy(v.as_bytes()).chars().take(512).collect());
    if call == Admin::Revocation {
        // Signed instead of authenticated: the signature covers the raw body.
        let raw = input::read_bytes(body, 64 * 1024, body_deadline(state), "a push").await?;
        let sig = headers.get("keydrop-signature").and_then(|v| v.to_str().ok());
        let (status, value) = revocations::push(state, sig, &raw, peer, user_agent).await?;
        return Ok(json(status, &value));
    }
    let who = auth::resolve(state, auth::bearer(headers)?).await?;
    tracing::Span::current().record("principal", who.name.as_str());
    let obj: Map<String, Value> = if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        if !allowed(&call, &who) {
            return Err(ApiError::Forbidden);
        }
        input::read_object(body, state.config.server.admin_max_body_bytes, body_deadline(state)).await?
    } else {
        Map::new()
    };
    let ctx = Ctx { state, who, peer, user_agent, query: query.map(str::to_owned) };
    let wants_csv = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"));
    if call == Admin::Activity && wants_csv {
        return activity_csv(&ctx).await;
    }
    let (status, value) = self::call(&ctx, call, &obj).await?;
    Ok(json(status, &value))
}

/// A tenant's own principal reaches only its tenant: another tenant's customer or order is
/// `404`, exactly as one that does not exist (API.md §5.4).
async fn in_tenant(ctx: &Ctx<'_>, call: &Admin, own: &str) -> Result<(), ApiError> {
    match call {
        Admin::GetCustomer { tenant_id } | Admin::Software { tenant_id } if !tenant_id.eq_ignore_ascii_case(own) => {
            return Err(ApiError::Missing { what: "customer" });
        }
        Admin::Downloads { order_id }
        | Admin::Keys { order_id }
        | Admin::GetOrder { order_id }
        | Admin::OrderLinks { order_id } => {
            let theirs = ctx.state.store.order(order_id).await?.is_some_and(|o| o.tenant_id == own);
            if !theirs {
                return Err(ApiError::Missing { what: "order" });
            }
        }
        _ => {}
    }
    Ok(())
}

/// A query string with `tenant_id` forced to `own` (a customer's activity is its own only).
fn only_tenant(query: Option<&str>, own: &str) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k != "tenant_id" {
            q.append_pair(&k, &v);
        }
    }
    q.append_pair("tenant_id", own);
    q.finish()
}

/// `GET /api/activity` as CSV for an authenticated caller (the dashboard's download).
pub async fn activity_csv(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    if !allowed(&Admin::Activity, &ctx.who) {
        return Err(ApiError::Forbidden);
    }
    if let Some(own) = &ctx.who.tenant_id {
        return activity::csv(&ctx.with_query(only_tenant(ctx.query.as_deref(), own))).await;
    }
    activity::csv(ctx).await
}

/// Whether the caller's role may make this call at all (the endpoint's [`Caller`]).
pub fn allowed(call: &Admin, who: &Principal) -> bool {
    if who.role == auth::Role::CustomerAdmin {
        return who.tenant_id.is_some() && call.customer_may();
    }
    match call.caller() {
        Caller::Roles(roles) => roles.contains(&who.role),
        Caller::AnyPrincipal => true,
        Caller::Anyone | Caller::LinkHolder | Caller::SignedPush | Caller::Session => false,
    }
}

/// One admin call by an authenticated caller, with its JSON body already read: the role check,
/// then the handler. The API and the dashboard both come through here, so a page can never do
/// what the API would refuse.
pub async fn call(ctx: &Ctx<'_>, call: Admin, obj: &Map<String, Value>) -> Result<Reply, ApiError> {
    if !allowed(&call, &ctx.who) {
        return Err(ApiError::Forbidden);
    }
    let scoped;
    let ctx = match &ctx.who.tenant_id {
        Some(own) => {
            in_tenant(ctx, &call, own).await?;
            if call == Admin::Activity {
                scoped = ctx.with_query(only_tenant(ctx.query.as_deref(), own));
                &scoped
            } else {
                ctx
            }
        }
        None => ctx,
    };
    let state = ctx.state;
    Ok(match call {
        Admin::PutProduct { product_id } => catalog::put_product(ctx, &product_id, obj).await?,
        Admin::PutFile { product_id, file_id } => catalog::put_file(ctx, &product_id, &file_id, obj).await?,
        Admin::RetireFile { product_id, file_id } => catalog::retire_file(ctx, &product_id, &file_id).await?,
        Admin::AddKeys { product_id } => catalog::add_keys(ctx, &product_id, obj).await?,
        Admin::ListProducts => catalog::list(ctx).await?,
        Admin::GetProduct { product_id } => catalog::get(ctx, &product_id).await?,
        Admin::CreateCustomer => customers::create(ctx, obj).await?,
        Admin::FindCustomer => customers::find(ctx).await?,
        Admin::GetCustomer { tenant_id } => customers::get(ctx, &tenant_id).await?,
        Admin::Software { tenant_id } => customers::software(ctx, &tenant_id).await?,
        Admin::Buy { tenant_id } => orders::buy(ctx, &tenant_id, obj).await?,
        Admin::GetOrder { order_id } => orders::get(ctx, &order_id).await?,
        Admin::PatchOrder { order_id } => orders::patch(ctx, &order_id, obj).await?,
        Admin::Downloads { order_id } => orders::downloads(ctx, &order_id, obj).await?,
        Admin::Keys { order_id } => orders::keys(ctx, &order_id).await?,
        Admin::Cancellation { order_id } => orders::cancellation(ctx, &order_id).await?,
        Admin::Cancel { order_id } => orders::cancel(ctx, &order_id, obj).await?,
        Admin::Suspend { order_id } => orders::suspend(ctx, &order_id).await?,
        Admin::Reactivate { order_id } => orders::reactivate(ctx, &order_id).await?,
        Admin::GetLink { link_id } => match crate::links::link_status(state, &link_id, state.now()).await? {
            Some(s) => (StatusCode::OK, to_json(&s)),
            None => return Err(ApiError::Missing { what: "link" }),
        },
        Admin::OrderLinks { order_id } => orders::links(ctx, &order_id).await?,
        Admin::CreateCustomerToken { tenant_id } => tokens::create(ctx, &tenant_id, obj).await?,
        Admin::ListCustomerTokens { tenant_id } => tokens::list(ctx, &tenant_id).await?,
        Admin::EndCustomerToken { tenant_id, token_id } => tokens::end(ctx, &tenant_id, &token_id).await?,
        Admin::CreateSupportRequest => support::create(ctx, obj).await?,
        Admin::GetSupportRequest { request_id } => support::get(ctx, &request_id).await?,
        Admin::Activity => activity::query(ctx).await?,
        Admin::VerifyActivity => activity::verify(ctx).await?,
        Admin::Revocation => return Err(ApiError::Internal("revocation reached the bearer path".into())),
        Admin::Me => (
            StatusCode::OK,
            to_json(&views::Me {
                name: ctx.who.name.clone(),
                role: ctx.who.role.as_str().to_owned(),
                tenant_id: ctx.who.tenant_id.clone(),
            }),
        ),
    })
}

fn body_deadline(state: &AppState) -> std::time::Duration {
    std::time::Duration::from_secs(state.config.server.body_read_timeout_secs)
}

/// The one place a storage failure becomes an answer, for the admin API and downloads alike:
/// transient ones (I/O, a full disk, shutdown) are `503` with `Retry-After`; the rest (damaged
/// data, a broken invariant) are `500`, saying nothing. The log says everything.
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        if e.is_transient() {
            tracing::error!(error = %e, "store unavailable");
            ApiError::Unavailable { retry_after_secs: 5 }
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

/// An answer's JSON (its type is in [`views`] or the model, and so in the OpenAPI document).
pub fn to_json<T: serde::Serialize>(view: &T) -> Value {
    serde_json::to_value(view).unwrap_or_default()
}

/// A JSON response.
pub fn json(status: StatusCode, value: &Value) -> Response<Body> {
    let mut r = Response::new(Body::from_bytes(value.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A fresh id: `prefix` and 16 random hex digits.
pub fn new_id(prefix: &str) -> String {
    let raw: [u8; 8] = crate::secrets::random_bytes();
    format!("{prefix}{}", hex::encode(raw))
}

/// Identifiers chosen by callers (product and file ids): 1–64 of `A-Z a-z 0-9 . _ -`.
pub fn check_id(field: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(ApiError::field(field, "must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'"));
    }
    Ok(())
}
