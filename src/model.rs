//! The domain's entities: products, files, customers, orders, links, order gates and support
//! requests — as they are stored (JSON) and, mostly, as they are answered. Plain data; the
//! storage layer keeps them, the rules in [`crate::orders`] and [`crate::links`] decide about them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProductKind {
    Perpetual,
    Subscription,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelPolicy {
    /// Cancellable within the window (60 days by default).
    Standard,
    /// The marketplace rule (API.md §5.5): at once with full credit within 24 hours of the order
    /// or latest renewal (monthly) or 14 days (annual); later, at the end of the term.
    Marketplace,
    /// Only through a support request (e.g. Windows 7 ESU).
    SupportRequest,
    /// Never (e.g. SUSE / Red Hat plans).
    None,
}

/// A subscription's term in calendar units (API.md §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Billing {
    /// One calendar month from the term's start.
    Monthly,
    /// One calendar year from the term's start.
    Annual,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Product {
    pub product_id: String,
    pub name: String,
    pub kind: ProductKind,
    pub term_days: Option<u32>,
    pub unit_price_cents: u64,
    pub currency: String,
    pub cancel_policy: CancelPolicy,
    /// As given: country codes and `@list` names.
    pub unavailable_markets: Vec<String>,
    pub key_required: bool,
    pub updated_at: DateTime<Utc>,
    /// Calendar terms; without it, `term_days`.
    #[serde(default)]
    pub billing: Option<Billing>,
    /// A free trial every new order of this product starts with.
    #[serde(default)]
    pub trial_days: Option<u32>,
    /// A customer may hold one active or suspended order of this product.
    #[serde(default)]
    pub one_per_customer: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Customer {
    pub tenant_id: String,
    pub domain: String,
    pub name: String,
    pub country: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Active,
    Suspended,
    Cancelled,
    /// Suspended past the retention period.
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    pub item_id: String,
    pub product_id: String,
    pub kind: ProductKind,
    pub quantity: u32,
    pub unit_price_cents: u64,
    /// Name and policy at purchase time, so later catalog edits do not rewrite history.
    #[serde(default)]
    pub name: String,
    #[serde(default = "standard")]
    pub cancel_policy: CancelPolicy,
    #[serde(default)]
    pub term_days: Option<u32>,
    /// Whether an activation key was taken from the pool for this item.
    #[serde(default)]
    pub has_key: bool,
    #[serde(default)]
    pub billing: Option<Billing>,
}

fn standard() -> CancelPolicy {
    CancelPolicy::Standard
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub tenant_id: String,
    pub status: OrderStatus,
    pub purchased_at: DateTime<Utc>,
    pub items: Vec<OrderItem>,
    pub currency: String,
    pub total_cents: u64,
    pub tax_included: bool,
    #[serde(default)]
    pub auto_renew: Option<bool>,
    #[serde(default)]
    pub suspended_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub cancelled_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub credit_cents: Option<u64>,
    #[serde(default)]
    pub cancel_reason: Option<String>,
    /// The subscription's schedule (API.md §5.5), see [`crate::terms`]. Absent in orders stored
    /// before terms were kept: those start their first paid term at purchase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms: Option<crate::terms::Terms>,
}

impl Order {
    pub fn is_subscription(&self) -> bool {
        self.items.iter().any(|i| i.kind == ProductKind::Subscription)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Contact {
    pub name: String,
    pub email: String,
    pub phone: String,
}

/// A customer's own API token (API.md §5.4), issued by a partner and kept only as the SHA-256
/// of the token: the token itself is shown once, at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CustomerToken {
    pub token_id: String,
    pub tenant_id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// The partner principal that issued it.
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SupportRequest {
    pub request_id: String,
    pub status: String,
    pub tenant_id: String,
    pub order_id: Option<String>,
    pub subscription_id: Option<String>,
    pub reason: String,
    pub amount_cents: u64,
    pub contact: Contact,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// A download link as stored. Budget arithmetic uses `unit` = the file's size at issue time (1
/// for an empty file, whose every `GET` costs one unit).
///
/// A link names its file by `(product_id, file_id)` (API.md §5.1); attached files never change,
/// so a link serves exactly the bytes and name it was issued for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    pub link_id: String,
    pub order_id: String,
    pub tenant_id: Option<String>,
    /// Empty only in links stored before files belonged to products, until the store's migration fills it.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub product_id: String,
    pub file_id: String,
    pub key_id: u32,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    pub max_uses: u32,
    pub unit: u64,
}

impl LinkRecord {
    /// `max_uses × unit` bytes.
    pub fn budget(&self) -> u64 {
        u64::from(self.max_uses).saturating_mul(self.unit)
    }
}

/// A downloadable file attached to a product, identified by `(product_id, file_id)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub file_id: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub product_id: String,
    /// Relative to `files_dir`, already checked not to leave it.
    pub path: String,
    pub filename: String,
    pub size: u64,
    pub mtime_ns: u64,
    pub sha256: Option<String>,
    pub version: Option<String>,
    pub language: Option<String>,
    pub file_type: Option<String>,
    /// Set by `DELETE /api/products/{p}/files/{f}`: no new links; issued ones keep serving.
    #[serde(default)]
    pub retired_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// What the download path needs to know about an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Open,
    Suspended,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderGate {
    pub access: Access,
    pub tenant_id: Option<String>,
}
