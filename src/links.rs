//! Issuing download links and reporting a link's state. The admin API's "get keys and
//! downloads" calls [`issue_link`]; tests and the demo call it directly.

use crate::activity::{Entry, Kind};
use crate::state::AppState;
use crate::store::{Access, LinkRecord, StoreError};
use crate::token::LinkId;
use chrono::{DateTime, TimeZone, Utc};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;

/// Everything but RFC 3986 unreserved characters is encoded in the file-name path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub order_id: String,
    pub tenant_id: Option<String>,
    /// The file is `(product_id, file_id)`.
    pub product_id: String,
    pub file_id: String,
    /// Shortens the configured lifetime; never lengthens it.
    pub ttl_secs: Option<u64>,
    /// Lowers the configured `max_uses`; never raises it.
    pub max_uses: Option<u32>,
    pub now: DateTime<Utc>,
    pub actor: String,
    /// The caller's address and user agent, for the `link.issued` record.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedLink {
    pub link_id: String,
    pub url: String,
    #[serde(skip)]
    pub token: String,
    pub file_id: String,
    pub filename: String,
    pub size: u64,
    pub sha256: Option<String>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub max_uses: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("order revoked")]
    Revoked,
    #[error("order suspended")]
    Suspended,
    /// Unknown, or retired (no new links).
    #[error("unknown file")]
    UnknownFile,
    #[error("{0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `{public_base_url}/d/{token}/{url-encoded file name}`.
pub fn link_url(base: &str, token: &str, filename: &str) -> String {
    format!("{}/d/{token}/{}", base.trim_end_matches('/'), utf8_percent_encode(filename, SEGMENT))
}

fn ts(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

/// Issues a new link for one file of an order: durable (with its `link.issued` record) before it
/// returns. Refused for a revoked or suspended order — including an order only known from a
/// revocation push.
pub async fn issue_link(state: &AppState, req: IssueRequest) -> Result<IssuedLink, IssueError> {
    let gate = state.ledger.gate(&req.order_id, req.tenant_id.clone()).await?;
    match gate.access() {
        Access::Revoked => return Err(IssueError::Revoked),
        Access::Suspended => return Err(IssueError::Suspended),
        Access::Open => {}
    }
    let file = state
        .catalog
        .record(&req.product_id, &req.file_id)
        .await?
        .filter(|f| f.retired_at.is_none())
        .ok_or(IssueError::UnknownFile)?;
    let cfg = &state.config.links;
    let max_ttl = u64::from(cfg.ttl_days) * 86_400;
    let ttl = req.ttl_secs.unwrap_or(max_ttl).min(max_ttl);
    let max_uses = req.max_uses.unwrap_or(cfg.max_uses).min(cfg.max_uses);
    if ttl == 0 || max_uses == 0 {
        return Err(IssueError::Invalid("ttl_seconds and max_uses must be at least 1"));
    }
    let issued_at = req.now.timestamp();
    let expires_at = issued_at.saturating_add(ttl as i64);
    let id: LinkId = crate::secrets::random_bytes();
    let link_id = hex::encode(id);
    let token = state.keys.sign(&id, expires_at);
    let rec = LinkRecord {
        link_id: link_id.clone(),
        order_id: req.order_id.clone(),
        tenant_id: req.tenant_id.clone(),
        product_id: file.product_id.clone(),
        file_id: file.file_id.clone(),
        key_id: state.keys.signing_key_id(),
        issued_at,
        expires_at,
        max_uses,
        unit: file.size.max(1),
    };
    let mut e = Entry::new(Kind::LinkIssued);
    e.actor = Some(req.actor);
    e.ip = req.ip;
    e.user_agent = req.user_agent;
    e.tenant_id = rec.tenant_id.clone();
    e.order_id = Some(rec.order_id.clone());
    e.product_id = Some(rec.product_id.clone());
    e.file_id = Some(rec.file_id.clone());
    e.link_id = Some(link_id.clone());
    e.outcome = Some("issued".into());
    state.ledger.put_link(id, rec, e).await?;
    Ok(IssuedLink {
        url: link_url(&state.config.server.public_base_url, &token, &file.filename),
        link_id,
        token,
        file_id: file.file_id,
        filename: file.filename,
        size: file.size,
        sha256: file.sha256,
        issued_at: ts(issued_at),
        expires_at: ts(expires_at),
        max_uses,
    })
}

/// Why a correctly signed link is refused before its budget is even looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    Revoked,
    Expired,
    Suspended,
}

/// The refusal order of the README ("revoked, then expired, then suspended, then exhausted"),
/// in one place: `None` when the order is open and the link unexpired (`now` in unix seconds).
pub fn closed(access: Access, expires_at: i64, now: i64) -> Option<Closed> {
    match access {
        Access::Revoked => Some(Closed::Revoked),
        _ if now >= expires_at => Some(Closed::Expired),
        Access::Suspended => Some(Closed::Suspended),
        Access::Open => None,
    }
}

/// A link's state as `GET /api/links/{id}` reports it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LinkStatus {
    pub link_id: String,
    pub order_id: String,
    pub product_id: String,
    pub file_id: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub max_uses: u32,
    pub bytes_spent: u64,
    pub downloads_used: f64,
    /// `active`, `expired`, `exhausted`, `revoked` or `suspended`.
    #[schema(value_type = String, pattern = "^(active|expired|exhausted|revoked|suspended)$")]
    pub state: &'static str,
}

/// An order's links, newest first, at most `limit`: found through the order's `link.issued`
/// records (the activity index by order and kind, on either backend), each with its live state.
pub async fn links_of_order(
    state: &AppState,
    order_id: &str,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<LinkStatus>, StoreError> {
    let mut q = crate::activity::Query {
        kind: Some(Kind::LinkIssued),
        order_id: Some(order_id.to_owned()),
        limit: 1000,
        ..Default::default()
    };
    let mut ids: std::collections::VecDeque<String> = Default::default();
    // Bounded work: at most 20 pages of the index, the newest `limit` ids kept.
    for _ in 0..20 {
        let (records, next) = state.store.query_activity(&q).await?;
        for r in records {
            if let Some(id) = r.link_id.clone() {
                ids.push_back(id);
                if ids.len() > limit {
                    ids.pop_front();
                }
            }
        }
        match next {
            Some(n) => q.after_seq = n,
            None => break,
        }
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids.iter().rev() {
        if let Some(s) = link_status(state, id, now).await? {
            out.push(s);
        }
    }
    Ok(out)
}

/// Reports a link by its hex id; `None` if unknown.
pub async fn link_status(
    state: &AppState,
    link_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<LinkStatus>, StoreError> {
    let Some(id) = hex::decode(link_id).ok().and_then(|v| LinkId::try_from(v).ok()) else {
        return Ok(None);
    };
    let Some(hot) = state.ledger.link(&id).await? else {
        return Ok(None);
    };
    let spent = state.ledger.spent(&hot).await?;
    let rec = &hot.rec;
    let st = match closed(hot.gate.access(), rec.expires_at, now.timestamp()) {
        Some(Closed::Revoked) => "revoked",
        Some(Closed::Expired) => "expired",
        Some(Closed::Suspended) => "suspended",
        None if spent >= hot.budget() => "exhausted",
        None => "active",
    };
    Ok(Some(LinkStatus {
        link_id: rec.link_id.clone(),
        order_id: rec.order_id.clone(),
        product_id: rec.product_id.clone(),
        file_id: rec.file_id.clone(),
        issued_at: ts(rec.issued_at),
        expires_at: ts(rec.expires_at),
        max_uses: rec.max_uses,
        bytes_spent: spent,
        downloads_used: spent as f64 / rec.unit as f64,
        state: st,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_order_is_revoked_then_expired_then_suspended() {
        let (past, future, now) = (10, 1_000, 100);
        assert_eq!(closed(Access::Revoked, past, now), Some(Closed::Revoked));
        assert_eq!(closed(Access::Suspended, past, now), Some(Closed::Expired));
        assert_eq!(closed(Access::Suspended, future, now), Some(Closed::Suspended));
        assert_eq!(closed(Access::Open, past, now), Some(Closed::Expired));
        assert_eq!(closed(Access::Open, now, now), Some(Closed::Expired), "expires_at itself is past");
        assert_eq!(closed(Access::Open, future, now), None);
    }
}
