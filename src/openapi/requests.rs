//! The admin API's request bodies as the document describes them. The bodies themselves are read
//! by [`crate::admin::input`]'s field checks, which report every bad field at once (a derived
//! deserializer stops at the first); these types only describe them, with the same limits the
//! handlers apply (lengths, ranges, choices). Every body is an object that refuses unknown
//! fields; strings must not be blank nor hold control characters.
#![allow(dead_code)] // read by `utoipa` only

use serde::Deserialize;
use utoipa::ToSchema;

/// `PUT /api/products/{product_id}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutProductBody {
    #[schema(max_length = 200)]
    name: String,
    kind: crate::model::ProductKind,
    /// Perpetual licences and subscriptions without `billing`: the term in days.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3650)]
    term_days: u32,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_u64)]
    unit_price_cents: u64,
    /// ISO 4217, e.g. `USD`.
    #[schema(pattern = "^[A-Z]{3}$")]
    currency: String,
    cancel_policy: crate::model::CancelPolicy,
    /// Calendar terms for a subscription; without it, `term_days`.
    #[serde(default)]
    #[schema(nullable = false)]
    billing: Option<crate::model::Billing>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 365)]
    trial_days: u32,
    #[serde(default)]
    one_per_customer: bool,
    /// Country codes and `@list` names.
    #[serde(default)]
    #[schema(max_items = 300)]
    unavailable_markets: Vec<String>,
    #[serde(default)]
    key_required: bool,
}

/// `PUT /api/products/{product_id}/files/{file_id}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutFileBody {
    #[serde(default)]
    #[schema(max_length = 64)]
    version: String,
    #[serde(default)]
    #[schema(max_length = 35)]
    language: String,
    #[serde(default)]
    #[schema(max_length = 32)]
    file_type: String,
    /// Relative to `files_dir`, staying inside it.
    #[schema(max_length = 1024)]
    path: String,
    /// The name the download is saved as (no `/` or `\`).
    #[schema(max_length = 255)]
    filename: String,
}

/// `POST /api/products/{product_id}/keys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddKeysBody {
    #[schema(min_items = 1, max_items = 10000)]
    keys: Vec<String>,
}

/// `POST /api/customers`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomerBody {
    /// The customer's tenant GUID.
    #[schema(
        max_length = 36,
        pattern = "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
    )]
    tenant_id: String,
    #[schema(max_length = 253)]
    domain: String,
    #[schema(max_length = 200)]
    name: String,
    /// ISO 3166-1 alpha-2.
    #[schema(pattern = "^[A-Za-z]{2}$")]
    country: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuyItem {
    #[schema(max_length = 64)]
    product_id: String,
    #[schema(minimum = 1, maximum = 100000)]
    quantity: u32,
}

/// `POST /api/customers/{tenant_id}/orders`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuyBody {
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<BuyItem>,
    /// Not in the future; defaults to now.
    #[serde(default)]
    #[schema(format = DateTime)]
    purchased_at: String,
}

/// `POST /api/orders/{order_id}/downloads`: links for the product's files matching the filters.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadsBody {
    #[schema(max_length = 64)]
    product_id: String,
    #[serde(default)]
    #[schema(max_length = 64)]
    version: String,
    #[serde(default)]
    #[schema(max_length = 35)]
    language: String,
    #[serde(default)]
    #[schema(max_length = 32)]
    file_type: String,
    /// Shortens the configured lifetime, never lengthens it.
    #[serde(default)]
    #[schema(minimum = 1)]
    ttl_seconds: u64,
    /// Lowers the configured `max_uses`, never raises it.
    #[serde(default)]
    #[schema(minimum = 1)]
    max_uses: u32,
}

/// `POST /api/orders/{order_id}/cancel`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Must be `true`: cancelling revokes every link and key of the order at once.
    acknowledged: bool,
    #[serde(default)]
    #[schema(max_length = 1000)]
    reason: String,
}

/// `PATCH /api/orders/{order_id}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchOrderBody {
    auto_renew: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactBody {
    #[schema(max_length = 200)]
    name: String,
    #[schema(max_length = 254)]
    email: String,
    #[schema(max_length = 32)]
    phone: String,
}

/// `POST /api/support-requests`: `order_id` or `subscription_id` is required.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SupportBody {
    /// A tenant GUID or a domain.
    #[schema(max_length = 253)]
    customer: String,
    #[serde(default)]
    #[schema(max_length = 64)]
    order_id: String,
    #[serde(default)]
    #[schema(max_length = 64)]
    subscription_id: String,
    #[schema(max_length = 2000)]
    reason: String,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_u64)]
    amount_cents: u64,
    contact: ContactBody,
}

/// `POST /api/customers/{tenant_id}/tokens`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    #[schema(max_length = 200)]
    name: String,
}

/// `POST /api/revocations`, signed with `Keydrop-Signature`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevocationBody {
    #[schema(max_length = 128)]
    order_id: String,
    #[serde(default)]
    #[schema(max_length = 1000)]
    reason: String,
}
