//! Typed errors at the HTTP boundary and the one place that maps them to statuses and
//! `application/problem+json` bodies (RFC 9457) or localized HTML pages.
//!
//! 5xx bodies say nothing internal: an [`ApiError::Internal`] carries its cause for the log only,
//! and the client sees a generic text. Secrets never enter an error: variants carry codes, ids
//! and timestamps, never tokens or keys.

use crate::body::Body;
use crate::pages;
use chrono::{DateTime, SecondsFormat, Utc};
use http::{header, HeaderValue, Response, StatusCode};

/// A field-level validation message for `400 invalid_request`.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// A refusal as the API answers it (`application/problem+json`, RFC 9457): what
/// [`ApiError::problem_json`] serializes, and what the OpenAPI document describes.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    pub status: u16,
    /// The stable machine-readable code (API.md); the document lists each status's codes.
    pub code: String,
    pub title: String,
    pub detail: String,
    /// `400 invalid_request`: every field error at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// `410 expired`: when the link expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<String>,
    /// `409 already_subscribed`: the order that holds the product.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed token, bad signature, unknown link: one answer for all.
    #[error("invalid link")]
    Invalid,
    #[error("link expired")]
    Expired { expired_at: DateTime<Utc> },
    #[error("link budget exhausted")]
    Exhausted,
    #[error("order revoked")]
    Revoked,
    #[error("order suspended")]
    Suspended,
    #[error("unavailable")]
    Unavailable { retry_after_secs: u64 },
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    #[error("not found")]
    NotFound,
    #[error("invalid request")]
    InvalidRequest { errors: Vec<FieldError> },
    #[error("unauthenticated")]
    Unauthenticated,
    /// A revocation push whose signature is missing, wrong or stale.
    #[error("bad signature")]
    BadSignature,
    #[error("forbidden")]
    Forbidden,
    /// A 409 with one of the contract's codes (`customer_exists`, `out_of_keys`, `window_closed`…).
    #[error("conflict: {code}")]
    Conflict { code: &'static str, detail: String },
    #[error("unavailable in market")]
    UnavailableInMarket { detail: String },
    /// `409 already_subscribed`: a `one_per_customer` product the customer holds already
    /// (active or suspended) in `order_id` (API.md §5.5).
    #[error("already subscribed")]
    AlreadySubscribed { order_id: String, product_id: String },
    #[error("not found: {what}")]
    Missing { what: &'static str },
    /// A request body that did not arrive whole in time (`[server] body_read_timeout_secs`);
    /// the connection is closed after the answer.
    #[error("request body too slow")]
    RequestTimeout,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// `400 invalid_request` with one field error.
    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::InvalidRequest { errors: vec![FieldError { field: field.to_owned(), message: message.into() }] }
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::Conflict { code, detail: detail.into() }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid | ApiError::NotFound | ApiError::Missing { .. } => StatusCode::NOT_FOUND,
            ApiError::Unauthenticated | ApiError::BadSignature => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::Conflict { .. } | ApiError::AlreadySubscribed { .. } => StatusCode::CONFLICT,
            ApiError::UnavailableInMarket { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Expired { .. } | ApiError::Exhausted | ApiError::Revoked => StatusCode::GONE,
            ApiError::Suspended => StatusCode::FORBIDDEN,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code of API.md.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid => "invalid",
            ApiError::Expired { .. } => "expired",
            ApiError::Exhausted => "exhausted",
            ApiError::Revoked => "revoked",
            ApiError::Suspended => "suspended",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            ApiError::NotFound | ApiError::Missing { .. } => "not_found",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::BadSignature => "bad_signature",
            ApiError::Forbidden => "forbidden",
            ApiError::Conflict { code, .. } => code,
            ApiError::AlreadySubscribed { .. } => "already_subscribed",
            ApiError::UnavailableInMarket { .. } => "unavailable_in_market",
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The problem+json document (English).
    pub fn problem_json(&self) -> serde_json::Value {
        serde_json::to_value(self.problem()).unwrap_or_default()
    }

    /// The problem document as data.
    pub fn problem(&self) -> Problem {
        let (title, detail) = pages::text(self.code(), pages::Lang::En);
        let mut p = Problem {
            status: self.status().as_u16(),
            code: self.code().to_owned(),
            title: title.to_owned(),
            detail: detail.to_owned(),
            errors: None,
            expired_at: None,
            order_id: None,
        };
        match self {
            ApiError::Expired { expired_at } => {
                p.expired_at = Some(expired_at.to_rfc3339_opts(SecondsFormat::Secs, true));
            }
            ApiError::InvalidRequest { errors } => {
                if let Some(first) = errors.first() {
                    p.detail = format!("{}: {}", first.field, first.message);
                }
                p.errors = Some(errors.clone());
            }
            ApiError::Conflict { detail, .. } | ApiError::UnavailableInMarket { detail } => p.detail = detail.clone(),
            ApiError::Missing { what } => p.detail = format!("no such {what}"),
            ApiError::AlreadySubscribed { order_id, product_id } => {
                p.order_id = Some(order_id.clone());
                p.detail = format!(
                    "the customer already holds {product_id} in order {order_id}; reactivate it if it is suspended"
                );
            }
            _ => {}
        }
        p
    }

    /// Renders the refusal for a client: HTML if `accept` prefers it, else problem+json.
    pub fn into_response(self, accept: Option<&str>, accept_language: Option<&str>) -> Response<Body> {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "internal error");
        }
        let status = self.status();
        let (content_type, body) = if pages::prefers_html(accept) {
            let lang = pages::negotiate_lang(accept_language);
            ("text/html; charset=utf-8", pages::html_page(status.as_u16(), self.code(), lang))
        } else {
            ("application/problem+json", self.problem_json().to_string())
        };
        let mut resp = Response::new(Body::from_bytes(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            ApiError::Unavailable { retry_after_secs } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            ApiError::Unauthenticated => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RequestTimeout => {
                // The rest of the body may still be coming: the connection cannot be reused.
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::MethodNotAllowed { allow } => {
                h.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    h.insert(header::CONTENT_RANGE, v);
                }
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_status_and_code_table() {
        let now = Utc::now();
        let cases = [
            (ApiError::Invalid, 404, "invalid"),
            (ApiError::Expired { expired_at: now }, 410, "expired"),
            (ApiError::Exhausted, 410, "exhausted"),
            (ApiError::Revoked, 410, "revoked"),
            (ApiError::Suspended, 403, "suspended"),
            (ApiError::Unavailable { retry_after_secs: 1 }, 503, "unavailable"),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status().as_u16(), status);
            assert_eq!(e.code(), code);
            let p = e.problem_json();
            assert_eq!(p["status"], status);
            assert_eq!(p["code"], code);
        }
    }

    #[test]
    fn internal_errors_never_leak_their_cause() {
        let r = ApiError::Internal("secret path /etc/x".into()).into_response(None, None);
        assert_eq!(r.status(), 500);
        let Body::Bytes(Some(b)) = r.into_body() else { panic!() };
        assert!(!String::from_utf8_lossy(&b).contains("/etc/x"));
    }

    #[test]
    fn expired_problem_carries_expired_at() {
        let at = DateTime::parse_from_rfc3339("2026-11-21T08:30:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(ApiError::Expired { expired_at: at }.problem_json()["expired_at"], "2026-11-21T08:30:00Z");
    }
}
