//! `POST /api/revocations`: the order system's signed push. The signature is checked over the
//! raw body before anything is parsed; a good push revokes the order's links and keys in one
//! commit (with one `order.revoked` record) and cuts off its downloads in flight. Repeats are
//! idempotent (`already_revoked`, no new record). A push for an order not known yet is
//! remembered as a revoked gate, so links issued for that order later are refused.

use super::input::{got, Fields};
use super::views::RevocationResult;
use crate::activity::{Entry, Kind};
use crate::error::ApiError;
use crate::model::{Order, OrderStatus};
use crate::state::AppState;
use crate::store::commands::Revoked;
use http::StatusCode;
use serde_json::{Map, Value};
use std::net::SocketAddr;

pub async fn push(
    state: &AppState,
    signature: Option<&str>,
    raw: &[u8],
    peer: SocketAddr,
    user_agent: Option<String>,
) -> Result<super::Reply, ApiError> {
    if let Err(why) = crate::push::verify(&state.push_secrets, signature, raw, state.now().timestamp()) {
        tracing::warn!(%peer, reason = %why, "revocation push refused");
        return Err(ApiError::BadSignature);
    }
    let obj: Map<String, Value> = match super::input::parse_strict(raw)? {
        Value::Object(m) => m,
        _ => return Err(ApiError::field("body", "must be a JSON object")),
    };
    let mut f = Fields::new(&obj, &["order_id", "reason"]);
    let order_id = f.req_str("order_id", 128);
    let reason = f.opt_str("reason", 1000);
    f.finish()?;
    let order_id = got(order_id);
    let now = state.now();
    let mut rec = Entry::new(Kind::OrderRevoked);
    rec.actor = Some("order-system".into());
    rec.ip = Some(peer.ip().to_string());
    rec.user_agent = user_agent;
    rec.order_id = Some(order_id.clone());
    rec.outcome = Some(reason.clone().unwrap_or_else(|| "revoked".into()));
    let cancel = move |mut o: Order| {
        o.status = OrderStatus::Cancelled;
        o.cancelled_at = Some(now);
        o.cancel_reason = Some(format!("revoked by the order system: {}", reason.unwrap_or_default()));
        o
    };
    let Revoked { links, already } = state.store.revoke(&order_id, cancel, rec).await?;
    Ok((StatusCode::OK, super::to_json(&RevocationResult { order_id, revoked_links: links, already_revoked: already })))
}
