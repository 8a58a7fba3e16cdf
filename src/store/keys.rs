//! The admin entities' table names and key encodings, one set for both backends: the embedded
//! backend's key/value tables and PostgreSQL's `kv (tbl, key, value)` rows use the same names
//! and keys, so `move-store` copies rows as they are. Composite keys join their parts with `\0`.

use crate::model::Order;

pub const PRODUCTS: &str = "products";
pub const CUSTOMERS: &str = "customers";
/// domain (lowercase) → tenant_id.
pub const DOMAINS: &str = "customer_domains";
pub const ORDERS: &str = "orders";
/// [`tenant_order`] → nothing: a tenant's orders in purchase order.
pub const TENANT_ORDERS: &str = "tenant_orders";
/// [`pool_key`] → sealed key.
pub const KEY_POOL: &str = "key_pool";
/// [`order_key`] → sealed key.
pub const ORDER_KEYS: &str = "order_keys";
pub const SUPPORT: &str = "support_requests";
/// SHA-256 of a customer token (hex) → CustomerToken.
pub const CUSTOMER_TOKENS: &str = "customer_tokens";
/// [`tenant_token`] → the token's SHA-256 (hex, JSON): a tenant's tokens, for listing and ending.
pub const TENANT_TOKENS: &str = "tenant_tokens";
/// order_id → nothing: the subscription orders still active or suspended, which the
/// lifecycle clock looks at (API.md §5.5). Kept by every write of an order ([`is_live`]).
pub const LIVE_SUBSCRIPTIONS: &str = "live_subscriptions";
/// The `meta` key that says [`LIVE_SUBSCRIPTIONS`] holds every live order stored before it.
pub const LIVE_INDEXED: &str = "live_subscriptions_indexed";
/// [`file_key`] → FileRecord.
pub const FILES: &str = "files";
pub const META: &str = "meta";

/// Whether `order` belongs in [`LIVE_SUBSCRIPTIONS`]: a subscription not cancelled or expired.
pub fn is_live(order: &Order) -> bool {
    order.is_subscription()
        && matches!(order.status, crate::model::OrderStatus::Active | crate::model::OrderStatus::Suspended)
}

/// A file's key: `product_id \0 file_id`.
pub fn file_key(product_id: &str, file_id: &str) -> String {
    format!("{product_id}\0{file_id}")
}

/// Where a product's pool keys start: `product_id \0`.
pub fn pool_prefix(product_id: &str) -> String {
    format!("{product_id}\0")
}

/// A pool key: `product_id \0 seq` (20 digits, so keys sort in the order they were added).
pub fn pool_key(product_id: &str, seq: u64) -> String {
    format!("{product_id}\0{seq:020}")
}

/// The counter numbering a product's pool keys, in `meta`.
pub fn pool_counter(product_id: &str) -> String {
    format!("key_seq\0{product_id}")
}

/// The key an order item took: `order_id \0 item_id`.
pub fn order_key(order_id: &str, item_id: &str) -> String {
    format!("{order_id}\0{item_id}")
}

/// Where a tenant's order index starts: `tenant_id \0`.
/// A tenant's token in [`TENANT_TOKENS`]: `tenant_id \0 token_id`.
pub fn tenant_token(tenant_id: &str, token_id: &str) -> String {
    format!("{tenant_id}\0{token_id}")
}

pub fn tenant_prefix(tenant_id: &str) -> String {
    format!("{tenant_id}\0")
}

/// An order's index entry: `tenant_id \0 purchased_at \0 order_id`.
pub fn tenant_order(o: &Order) -> String {
    format!("{}\0{}\0{}", o.tenant_id, o.purchased_at.format("%Y%m%dT%H%M%S%.6f"), o.order_id)
}

/// The order id at the end of a [`tenant_order`] key.
pub fn order_of_index(key: &str) -> Option<&str> {
    key.rsplit('\0').next()
}
