//! Customer tokens (API.md §5.4): a partner gives a customer its own `customer_admin` access —
//! its Software, keys and downloads, its own activity — and ends it when it likes. The token is
//! shown once, in the answer that creates it; the store keeps only its SHA-256, so neither a
//! database dump nor a log line can be replayed. Ending a token ends it at once, on every node
//! (the next call with it is `401`; a dashboard session signed in with it ends at its next page).

use super::input::{got, Fields};
use super::to_json;
use super::views::{TokenEnded, TokenList, TokenView};
use super::{new_id, Ctx, Reply};
use crate::error::ApiError;
use crate::model::CustomerToken;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::StatusCode;
use serde_json::{Map, Value};

async fn customer_exists(ctx: &Ctx<'_>, tenant_id: &str) -> Result<String, ApiError> {
    let t = tenant_id.to_ascii_lowercase();
    ctx.state.store.customer(&t).await?.ok_or(ApiError::Missing { what: "customer" })?;
    Ok(t)
}

fn token_view(t: &CustomerToken) -> TokenView {
    TokenView {
        token_id: t.token_id.clone(),
        tenant_id: t.tenant_id.clone(),
        name: t.name.clone(),
        created_at: t.created_at,
        created_by: t.created_by.clone(),
        token: None,
    }
}

/// `POST /api/customers/{tenant_id}/tokens` `{"name"}` → `201 {"token_id", "token", …}`.
pub async fn create(ctx: &Ctx<'_>, tenant_id: &str, body: &Map<String, Value>) -> Result<Reply, ApiError> {
    let mut f = Fields::new(body, &["name"]);
    let name = f.req_str("name", 200);
    f.finish()?;
    let tenant_id = customer_exists(ctx, tenant_id).await?;
    let token = format!("kdc_{}", URL_SAFE_NO_PAD.encode(crate::secrets::random_bytes::<32>()));
    let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()));
    let t = CustomerToken {
        token_id: new_id("ctok_"),
        tenant_id,
        name: got(name),
        created_at: ctx.state.now(),
        created_by: ctx.who.name.clone(),
    };
    ctx.state.store.create_customer_token(sha256, t.clone()).await?;
    tracing::info!(token_id = %t.token_id, tenant_id = %t.tenant_id, by = %t.created_by, "customer token created");
    let mut v = token_view(&t);
    v.token = Some(token);
    Ok((StatusCode::CREATED, to_json(&v)))
}

/// `GET /api/customers/{tenant_id}/tokens`: the live tokens, never the tokens themselves.
pub async fn list(ctx: &Ctx<'_>, tenant_id: &str) -> Result<Reply, ApiError> {
    let tenant_id = customer_exists(ctx, tenant_id).await?;
    let tokens = ctx.state.store.customer_tokens(&tenant_id).await?;
    Ok((StatusCode::OK, to_json(&TokenList { tokens: tokens.iter().map(token_view).collect() })))
}

/// `DELETE /api/customers/{tenant_id}/tokens/{token_id}` → `200 {"token_id", "ended": true}`.
pub async fn end(ctx: &Ctx<'_>, tenant_id: &str, token_id: &str) -> Result<Reply, ApiError> {
    let tenant_id = customer_exists(ctx, tenant_id).await?;
    if !ctx.state.store.end_customer_token(&tenant_id, token_id).await? {
        return Err(ApiError::Missing { what: "token" });
    }
    tracing::info!(token_id, tenant_id = %tenant_id, by = %ctx.who.name, "customer token ended");
    Ok((StatusCode::OK, to_json(&TokenEnded { token_id: token_id.to_owned(), ended: true })))
}
