//! `GET /api/activity` (date-range queries, cursor paging, CSV) and `GET /api/activity/verify`
//! (the hash chain, recomputed on the live server, and the JSON Lines mirror when configured).

use super::views::{ActivityPage, FirstBad, VerifyReport};
use super::Ctx;
use crate::activity::{time_bound, to_csv, Kind, Query};
use crate::body::Body;
use crate::error::ApiError;
use crate::verify::{read_mirror, verify_mirror_text, verify_store, Report};
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;

fn parse_query(ctx: &Ctx<'_>) -> Result<Query, ApiError> {
    let mut errors = Vec::new();
    let mut err =
        |field: &str, msg: &str| errors.push(crate::error::FieldError { field: field.into(), message: msg.into() });
    let mut q = Query { limit: 100, ..Query::default() };
    if let Some(from) = ctx.query_param("from") {
        q.from_us = time_bound(&from, false);
        if q.from_us.is_none() {
            err("from", "must be an RFC 3339 time or a date such as 2026-11-21");
        }
    }
    if let Some(to) = ctx.query_param("to") {
        q.to_us = time_bound(&to, true);
        if q.to_us.is_none() {
            err("to", "must be an RFC 3339 time or a date such as 2026-11-21");
        }
    }
    if let Some(kind) = ctx.query_param("kind") {
        q.kind = serde_json::from_value::<Kind>(json!(kind)).ok();
        if q.kind.is_none() {
            err("kind", "must be one of the activity kinds, such as download.started");
        }
    }
    q.tenant_id = ctx.query_param("tenant_id").map(|t| t.to_ascii_lowercase());
    q.order_id = ctx.query_param("order_id");
    if let Some(a) = ctx.query_param("after_seq") {
        match a.parse() {
            Ok(v) => q.after_seq = v,
            Err(_) => err("after_seq", "must be a whole number"),
        }
    }
    if let Some(l) = ctx.query_param("limit") {
        match l.parse::<usize>() {
            Ok(v) if (1..=1000).contains(&v) => q.limit = v,
            _ => err("limit", "must be a whole number from 1 to 1000"),
        }
    }
    if errors.is_empty() {
        Ok(q)
    } else {
        Err(ApiError::InvalidRequest { errors })
    }
}

/// `GET /api/activity` as JSON.
pub async fn query(ctx: &Ctx<'_>) -> Result<super::Reply, ApiError> {
    let q = parse_query(ctx)?;
    let started = std::time::Instant::now();
    let (records, next) = ctx.state.store.query_activity(&q).await?;
    tracing::debug!(records = records.len(), micros = started.elapsed().as_micros() as u64, "activity query");
    Ok((StatusCode::OK, super::to_json(&ActivityPage { records, next_after_seq: next })))
}

/// `GET /api/activity` with `Accept: text/csv`; the cursor goes in `Keydrop-Next-After-Seq`.
pub async fn csv(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let q = parse_query(ctx)?;
    let (records, next) = ctx.state.store.query_activity(&q).await?;
    let mut r = Response::new(Body::from_bytes(to_csv(&records)));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    if let Some(n) = next {
        r.headers_mut().insert("keydrop-next-after-seq", HeaderValue::from(n));
    }
    Ok(r)
}

fn report_view(r: &Report) -> VerifyReport {
    VerifyReport {
        ok: r.first_bad.is_none(),
        records: r.records,
        last_hash: r.last_hash.clone(),
        first_bad: r.first_bad.as_ref().map(|(seq, reason)| FirstBad { seq: *seq, reason: reason.clone() }),
        mirror: None,
    }
}

pub async fn verify(ctx: &Ctx<'_>) -> Result<super::Reply, ApiError> {
    let chain = verify_store(&ctx.state.store).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut v = report_view(&chain);
    if let Some(path) = &ctx.state.config.activity.jsonl_path {
        // The mirror is the embedded backend's (a shared database keeps no file of its own).
        let Some(store) = ctx.state.store.embedded() else {
            return Ok((StatusCode::OK, super::to_json(&v)));
        };
        let text = read_mirror(path).map_err(|e| ApiError::Internal(e.to_string()))?;
        store.publish().await?;
        let mirror = verify_mirror_text(&text, |seq| store.get_activity_raw(seq).ok().flatten());
        v.ok = chain.first_bad.is_none() && mirror.first_bad.is_none();
        v.mirror = Some(Box::new(report_view(&mirror)));
    }
    Ok((StatusCode::OK, super::to_json(&v)))
}
