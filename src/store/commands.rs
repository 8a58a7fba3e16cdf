//! The admin API's commands, as the storage interface names them: their results and refusals
//! (both backends return these). Each command is atomic; a refusal writes nothing; a command's
//! gate change reaches the ledger on commit through the store's [`super::GateSink`].

use crate::activity::Entry;
use crate::model::{Access, FileRecord, Order};

/// Why a customer could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomerExists {
    TenantId,
    Domain,
}

/// A purchase refused because a product's pool has too few keys (nothing was bought).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfKeys {
    pub product_id: String,
}

/// The `one_per_customer` products of a buy, and how to tell whether an order of the customer
/// still holds one: its status as of `now` ([`crate::orders::effective_status`]), active or
/// suspended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnePerCustomer {
    pub products: Vec<String>,
    pub now: chrono::DateTime<chrono::Utc>,
    pub retention_days: u32,
}

impl OnePerCustomer {
    /// Which of the products `held` holds, if any.
    pub fn held_in(&self, held: &crate::model::Order) -> Option<String> {
        use crate::model::OrderStatus::{Active, Suspended};
        if !matches!(crate::orders::effective_status(held, self.now, self.retention_days), Active | Suspended) {
            return None;
        }
        held.items.iter().find(|i| self.products.contains(&i.product_id)).map(|i| i.product_id.clone())
    }
}

/// Why a buy wrote nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuyRefused {
    /// A key pool had fewer keys than the order's items need.
    OutOfKeys(OutOfKeys),
    /// The customer holds `product_id` (a `one_per_customer` product) in a live order already.
    AlreadySubscribed { product_id: String, order_id: String },
}

/// What a change of an order writes besides the order: its new access (with the gate's change
/// reaching the ledger on commit) and its activity record.
#[derive(Debug)]
pub struct OrderChange {
    pub order: Order,
    pub access: Option<Access>,
    /// Written in this order (the lifecycle clock may apply several changes at once).
    pub records: Vec<Entry>,
}

/// What [`super::Store::change_order`] reports.
#[derive(Debug)]
pub struct Changed {
    /// The order as stored now.
    pub order: Order,
    /// The links the order has (all revoked, when the change revoked it).
    pub links: usize,
}

/// What a revocation push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub links: usize,
    pub already: bool,
}

/// What [`super::Store::attach_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    Created(FileRecord),
    /// The same file (path, size, file name) was attached already; the labels are the new ones.
    Existing(FileRecord),
}
