//! The admin API's answers as types. Every handler builds one of these and serializes it, and
//! the OpenAPI document ([`crate::openapi`]) takes its response schemas from the same types
//! (`utoipa::ToSchema`), so a field added to an answer is a field added to the document: the two
//! cannot drift. Entities answered as stored (customers, support requests, link states) are the
//! model's own types; here are the answers that add to them or wrap them.

use crate::activity::Record;
use crate::links::{IssuedLink, LinkStatus};
use crate::model::{FileRecord, OrderStatus, Product, ProductKind};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// A product with its files (retired ones included, with `retired_at`) and its key pool.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductView {
    #[serde(flatten)]
    pub product: Product,
    pub files: Vec<FileView>,
    /// Activation keys not yet given to an order.
    pub keys_available: usize,
}

/// A file attached to a product.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileView {
    pub file_id: String,
    pub product_id: String,
    pub version: Option<String>,
    pub language: Option<String>,
    pub file_type: Option<String>,
    /// Relative to `files_dir`.
    pub path: String,
    pub filename: String,
    pub size: u64,
    pub sha256: Option<String>,
    /// Set once retired: no new links; issued ones keep serving.
    pub retired_at: Option<DateTime<Utc>>,
}

impl From<&FileRecord> for FileView {
    fn from(f: &FileRecord) -> FileView {
        FileView {
            file_id: f.file_id.clone(),
            product_id: f.product_id.clone(),
            version: f.version.clone(),
            language: f.language.clone(),
            file_type: f.file_type.clone(),
            path: f.path.clone(),
            filename: f.filename.clone(),
            size: f.size,
            sha256: f.sha256.clone(),
            retired_at: f.retired_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductList {
    pub products: Vec<ProductView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeysAdded {
    /// Keys new to the pool (a key already in it is not added twice).
    pub added: usize,
    pub available: usize,
}

/// One bought item in a customer's Software list.
#[derive(Debug, Serialize, ToSchema)]
pub struct SoftwareItem {
    pub order_id: String,
    pub item_id: String,
    pub product_id: String,
    pub name: String,
    pub kind: ProductKind,
    pub status: OrderStatus,
    pub purchased_at: DateTime<Utc>,
    /// The item has a key and its order is active.
    pub key_available: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SoftwareList {
    pub items: Vec<SoftwareItem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItemView {
    pub item_id: String,
    pub product_id: String,
    pub kind: ProductKind,
    pub quantity: u32,
    pub unit_price_cents: u64,
}

/// An order in the state the clock implies now (API.md §4, §5.5).
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    pub order_id: String,
    pub tenant_id: String,
    pub status: OrderStatus,
    pub purchased_at: DateTime<Utc>,
    pub items: Vec<OrderItemView>,
    pub currency: String,
    pub total_cents: u64,
    pub tax_included: bool,
    pub auto_renew: Option<bool>,
    pub suspended_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub credit_cents: Option<u64>,
    /// Subscriptions only: the current term.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term_start: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term_end: Option<DateTime<Utc>>,
    /// Subscriptions only (null outside a trial).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial_ends_at: Option<Option<DateTime<Utc>>>,
    /// Subscriptions only (null unless a cancellation is scheduled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_at: Option<Option<DateTime<Utc>>>,
    /// Suspended subscriptions only: when the retention period ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_deleted_at: Option<Option<DateTime<Utc>>>,
}

/// The answer to "get keys and downloads": the item's key (if it has one) and one link per
/// matching file.
#[derive(Debug, Serialize, ToSchema)]
pub struct DownloadsIssued {
    pub key: Option<String>,
    pub links: Vec<IssuedLink>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub item_id: String,
    pub product_id: String,
    pub key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// A cancellation: at once (`cancelled`, with credit and revoked links) or scheduled for the
/// term's end (`active`, with `cancel_at`).
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelResult {
    pub order_id: String,
    pub status: OrderStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_at: Option<DateTime<Utc>>,
    pub credit_cents: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_links: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LinkList {
    pub links: Vec<LinkStatus>,
}

/// A customer token as listed (never the token itself).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub token_id: String,
    pub tenant_id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// Only in the answer that creates it: shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenEnded {
    pub token_id: String,
    pub ended: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SupportCreated {
    pub request_id: String,
    pub status: String,
}

/// One page of the activity log; `next_after_seq` is the cursor of the next page, if any.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityPage {
    pub records: Vec<Record>,
    pub next_after_seq: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FirstBad {
    pub seq: u64,
    pub reason: String,
}

/// The chain's verification (and, with `jsonl_path` on redb, its mirror's).
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyReport {
    pub ok: bool,
    pub records: u64,
    pub last_hash: String,
    pub first_bad: Option<FirstBad>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub mirror: Option<Box<VerifyReport>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevocationResult {
    pub order_id: String,
    pub revoked_links: usize,
    /// The order was revoked before this push (a repeated push changes nothing).
    pub already_revoked: bool,
}

/// `GET /api/me`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub name: String,
    pub role: String,
    pub tenant_id: Option<String>,
}
