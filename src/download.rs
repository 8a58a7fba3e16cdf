//! `GET`/`HEAD /d/{token}[/{name}]`: the customer's download, top to bottom.
//!
//! verify the token (no store touched for a bad one) → load the hot link → refuse if revoked,
//! expired, suspended → conditional request (`304`) → `Range` / `If-Range` → `HEAD` answers here
//! → reserve the response's bytes with the `download.started` record, durably (a
//! [`crate::ledger::Reservation`]) → stream → when the body ends or is dropped, the reservation
//! refunds what was not sent and queues `download.finished`.
//!
//! Refusals of a correctly signed link are logged as `download.refused`, at most once per second
//! per link and code ([`crate::refusals`]); a bad token is not (nothing trustworthy to log, and
//! logging it would let anyone fill the log).

use crate::activity::{Entry, Kind};
use crate::body::Body;
use crate::catalog::header_value;
use crate::error::ApiError;
use crate::ledger::{HotLink, Outcome, ReserveError};
use crate::links::{closed, Closed};
use crate::range::{bytes_range, RangeDecision};
use crate::representation::{if_none_match_hits, if_range_matches, not_modified_since};
use crate::requester::Requester;
use crate::state::AppState;
use crate::stream::{ConnDownloads, FileStream};
use chrono::{DateTime, TimeZone, Utc};
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;

/// Who is asking, for the activity log.
pub struct Client<'a> {
    pub peer: SocketAddr,
    /// HTTP/1.x: one response at a time on the connection.
    pub exclusive_wire: bool,
    pub headers: &'a HeaderMap,
    pub conn: &'a ConnDownloads,
}

impl Client<'_> {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A refusal's record: the requester as a download's records name it, and the raw `Range`.
    fn refused(&self, link: &HotLink, code: &str) -> Entry {
        let mut e = Requester::new(self.peer.ip(), self.headers, None).entry(Kind::DownloadRefused, link);
        e.outcome = Some(code.to_owned());
        e.range = self.header(header::RANGE).map(str::to_owned);
        e
    }
}

/// Handles one download request. Refusals come back as `Err` and are rendered by the caller.
pub async fn handle(
    state: &Arc<AppState>,
    method: &Method,
    token: &str,
    client: &Client<'_>,
    now: DateTime<Utc>,
) -> Result<Response<Body>, ApiError> {
    if *method != Method::GET && *method != Method::HEAD {
        return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" });
    }
    let claims = state.keys.verify(token).map_err(|_| ApiError::Invalid)?;
    // Lower-case hex from a stack buffer: no `String` per request.
    let mut hex_id = [0u8; 32];
    if hex::encode_to_slice(claims.link_id, &mut hex_id).is_ok() {
        tracing::Span::current().record("link_id", std::str::from_utf8(&hex_id).unwrap_or_default());
    }
    if state.is_draining() {
        return Err(ApiError::Unavailable { retry_after_secs: 5 });
    }
    let link = state.ledger.link(&claims.link_id).await.map_err(ApiError::from)?.ok_or(ApiError::Invalid)?;
    let refuse = |err: ApiError| {
        let code = err.code();
        let record =
            state.refusals.refused(claims.link_id, code, std::time::Instant::now(), || client.refused(&link, code));
        // A refusal record may lag: it never guards a byte.
        state.store.append_later(record.into_iter().collect());
        err
    };
    // A node that cannot confirm order states in time serves nothing (API.md §5.3).
    if !link.gate.is_fresh() {
        return Err(ApiError::Unavailable { retry_after_secs: 1 });
    }
    match closed(link.gate.access(), link.rec.expires_at, now.timestamp()) {
        Some(Closed::Revoked) => return Err(refuse(ApiError::Revoked)),
        Some(Closed::Expired) => {
            let expired_at = Utc.timestamp_opt(link.rec.expires_at, 0).single().unwrap_or_default();
            return Err(refuse(ApiError::Expired { expired_at }));
        }
        Some(Closed::Suspended) => return Err(refuse(ApiError::Suspended)),
        None => {}
    }
    let file = match state.catalog.served(&link.rec.product_id, &link.rec.file_id).await.map_err(ApiError::from)? {
        Some(f) => f,
        None => return Err(ApiError::Unavailable { retry_after_secs: 60 }),
    };
    let size = file.rec.size;

    let mut resp = Response::new(Body::empty());
    {
        // Room for every header below at once: the map is allocated once and never grows.
        let h = resp.headers_mut();
        *h = HeaderMap::with_capacity(10);
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
        h.insert(header::ETAG, file.values.etag.clone());
        h.insert(header::LAST_MODIFIED, file.values.last_modified.clone());
    }

    // Conditional GET (RFC 9110 §13.2.2): If-None-Match, else If-Modified-Since → 304, free.
    let not_modified = match client.header(header::IF_NONE_MATCH) {
        Some(inm) => if_none_match_hits(inm, &file.etag),
        None => client
            .header(header::IF_MODIFIED_SINCE)
            .is_some_and(|ims| not_modified_since(ims, u128::from(file.rec.mtime_ns))),
    };
    if not_modified {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(resp);
    }

    let range_header = client.headers.get(header::RANGE).map(HeaderValue::as_bytes);
    let if_range_ok = client
        .header(header::IF_RANGE)
        .is_none_or(|ir| if_range_matches(ir, &file.etag, u128::from(file.rec.mtime_ns)));
    let decision = if if_range_ok { bytes_range(range_header, size) } else { RangeDecision::Full };
    let (start, len) = match decision {
        RangeDecision::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { size }),
        RangeDecision::Full => (0, size),
        RangeDecision::Partial { start, end } => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            resp.headers_mut().insert(header::CONTENT_RANGE, header_value(&format!("bytes {start}-{end}/{size}")));
            (start, end - start + 1)
        }
    };
    {
        let h = resp.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(file.content_type));
        h.insert(header::CONTENT_DISPOSITION, file.values.content_disposition.clone());
        if let Some(d) = &file.values.repr_digest {
            h.insert(REPR_DIGEST, d.clone());
        }
    }
    // What this response costs: its bytes, or one unit for an empty file.
    let cost = if size == 0 { link.rec.unit } else { len };
    if *method == Method::HEAD {
        if state.ledger.spent(&link).await?.saturating_add(cost) > link.budget() {
            return Err(ApiError::Exhausted);
        }
        return Ok(resp);
    }

    let range = matches!(decision, RangeDecision::Partial { .. }).then(|| format!("bytes={start}-{}", start + len - 1));
    let who = Requester::new(client.peer.ip(), client.headers, range);
    let reservation = match state.ledger.reserve(&link, cost, len, who).await {
        Ok(r) if size == 0 => r.no_refund(),
        Ok(r) => r,
        Err(ReserveError::Exhausted) => return Err(refuse(ApiError::Exhausted)),
        Err(ReserveError::Store(e)) => return Err(e.into()),
    };
    if len == 0 {
        reservation.finish(0, Outcome::Complete);
        return Ok(resp);
    }
    let source = crate::stream::Source {
        file: file.file.clone(),
        start,
        len,
        memory: file.content.clone(),
        mapped: file.mapped.clone(),
    };
    let body = FileStream::new(source, link.gate.clone(), client.conn, client.exclusive_wire, reservation);
    *resp.body_mut() = Body::Stream(Box::pin(body));
    Ok(resp)
}

/// `Repr-Digest` (RFC 9530), a name `http` has no constant for.
const REPR_DIGEST: header::HeaderName = header::HeaderName::from_static("repr-digest");
