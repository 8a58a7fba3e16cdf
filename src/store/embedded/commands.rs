//! The admin API's storage, as named commands and reads shaped by their callers: handlers never
//! name a table or build a key (ARCHITECTURE.md, "the storage interface").
//!
//! Each command is one writer transaction that validates before it writes, so a domain refusal
//! (a customer that exists, an empty key pool, a cancellation the rules forbid) is returned as the
//! inner `Err` of `Result<Result<T, Refusal>, StoreError>` with nothing written, and only I/O
//! fails the outer one. A command's gate change reaches the ledger on commit, in commit order,
//! through the store's [`super::writer::GateSink`] — no caller forwards it. The rules themselves
//! (what a cancellation credits, which transition is allowed) stay pure in [`crate::orders`] and
//! the handlers; [`Embedded::change_order`] takes them as a function of the stored order.

use super::tx::{Tx, ORDER_LINKS};
use super::{Access, Embedded, FileRecord, OrderGate, StoreError};
use crate::activity::Entry;
use crate::model::{Customer, CustomerToken, Order, Product, SupportRequest};
use crate::store::commands::{
    Attach, BuyRefused, Changed, CustomerExists, OnePerCustomer, OrderChange, OutOfKeys, Revoked,
};

const GATES: &str = "order_gates";
use crate::store::keys::{
    self, CUSTOMERS, CUSTOMER_TOKENS, DOMAINS, FILES, KEY_POOL, LIVE_INDEXED, LIVE_SUBSCRIPTIONS, META, ORDERS,
    ORDER_KEYS, PRODUCTS, SUPPORT, TENANT_ORDERS, TENANT_TOKENS,
};

fn order_links(tx: &mut Tx<'_, '_>, order_id: &str) -> Result<usize, StoreError> {
    Ok(tx.scan_prefix(ORDER_LINKS, &format!("{order_id}\0"), usize::MAX)?.len())
}

fn gate_of(o: &Order, access: Access) -> OrderGate {
    OrderGate { access, tenant_id: Some(o.tenant_id.clone()) }
}

impl Embedded {
    // ---- catalog ----

    pub fn product(&self, product_id: &str) -> Result<Option<Product>, StoreError> {
        self.get_json(PRODUCTS, product_id)
    }

    pub fn products(&self) -> Result<Vec<Product>, StoreError> {
        self.scan_prefix(PRODUCTS, "", usize::MAX)?.iter().map(|(_, v)| Ok(serde_json::from_slice(v)?)).collect()
    }

    /// Creates or replaces a product; `true` if it was created.
    pub async fn put_product(&self, p: Product) -> Result<bool, StoreError> {
        self.writer()
            .txn(move |tx| {
                let existed = tx.get_raw(PRODUCTS, &p.product_id)?.is_some();
                tx.put_json(PRODUCTS, &p.product_id, &p)?;
                Ok(!existed)
            })
            .await
    }

    /// Keys left in a product's pool.
    pub fn keys_available(&self, product_id: &str) -> Result<usize, StoreError> {
        Ok(self.scan_prefix(KEY_POOL, &keys::pool_prefix(product_id), usize::MAX)?.len())
    }

    /// Adds sealed keys to a product's pool: `(added, available)`.
    pub async fn add_keys(&self, product_id: &str, sealed: Vec<Vec<u8>>) -> Result<(usize, usize), StoreError> {
        let pid = product_id.to_owned();
        self.writer()
            .txn(move |tx| {
                let counter = keys::pool_counter(&pid);
                let mut seq: u64 = tx.get_json(META, &counter)?.unwrap_or(0);
                for s in &sealed {
                    seq += 1;
                    tx.put_raw(KEY_POOL, &keys::pool_key(&pid, seq), s)?;
                }
                tx.put_json(META, &counter, &seq)?;
                let available = tx.scan_prefix(KEY_POOL, &keys::pool_prefix(&pid), usize::MAX)?.len();
                Ok((sealed.len(), available))
            })
            .await
    }

    /// Attaches a file unless a different one holds its id (API.md §5.1): the refusal carries
    /// the file attached.
    pub async fn attach_file(&self, rec: FileRecord) -> Result<Result<Attach, Box<FileRecord>>, StoreError> {
        let key = keys::file_key(&rec.product_id, &rec.file_id);
        self.writer()
            .txn(move |tx| match tx.get_json::<FileRecord>(FILES, &key)? {
                None => {
                    tx.put_json(FILES, &key, &rec)?;
                    Ok(Ok(Attach::Created(rec)))
                }
                Some(old) if old.path == rec.path && old.size == rec.size && old.filename == rec.filename => {
                    let relabelled =
                        FileRecord { version: rec.version, language: rec.language, file_type: rec.file_type, ..old };
                    tx.put_json(FILES, &key, &relabelled)?;
                    Ok(Ok(Attach::Existing(relabelled)))
                }
                Some(old) => Ok(Err(Box::new(old))),
            })
            .await
    }

    /// Retires a file (once; later calls change nothing); `None` if there is no such file.
    pub async fn retire_file(
        &self,
        product_id: &str,
        file_id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<FileRecord>, StoreError> {
        let key = keys::file_key(product_id, file_id);
        self.writer()
            .txn(move |tx| {
                let Some(mut rec) = tx.get_json::<FileRecord>(FILES, &key)? else {
                    return Ok(None);
                };
                if rec.retired_at.is_none() {
                    rec.retired_at = Some(now);
                    tx.put_json(FILES, &key, &rec)?;
                }
                Ok(Some(rec))
            })
            .await
    }

    // ---- customers ----

    pub fn customer(&self, tenant_id: &str) -> Result<Option<Customer>, StoreError> {
        self.get_json(CUSTOMERS, tenant_id)
    }

    pub fn customer_by_domain(&self, domain: &str) -> Result<Option<Customer>, StoreError> {
        match self.get_raw(DOMAINS, domain)? {
            Some(t) => self.customer(&String::from_utf8_lossy(&t)),
            None => Ok(None),
        }
    }

    /// Creates a customer unless its tenant id or domain is taken.
    pub async fn create_customer(&self, c: Customer) -> Result<Result<(), CustomerExists>, StoreError> {
        self.writer()
            .txn(move |tx| {
                if tx.get_raw(CUSTOMERS, &c.tenant_id)?.is_some() {
                    return Ok(Err(CustomerExists::TenantId));
                }
                if tx.get_raw(DOMAINS, &c.domain)?.is_some() {
                    return Ok(Err(CustomerExists::Domain));
                }
                tx.put_json(CUSTOMERS, &c.tenant_id, &c)?;
                tx.put_raw(DOMAINS, &c.domain, c.tenant_id.as_bytes())?;
                Ok(Ok(()))
            })
            .await
    }

    /// A tenant's orders, newest first.
    pub fn orders_of(&self, tenant_id: &str) -> Result<Vec<Order>, StoreError> {
        let mut out = Vec::new();
        for (k, _) in self.scan_prefix(TENANT_ORDERS, &keys::tenant_prefix(tenant_id), usize::MAX)?.into_iter().rev() {
            if let Some(o) = keys::order_of_index(&k).map(|id| self.order(id)).transpose()?.flatten() {
                out.push(o);
            }
        }
        Ok(out)
    }

    // ---- orders ----

    /// The orders in [`LIVE_SUBSCRIPTIONS`] (for the lifecycle clock).
    pub fn live_subscriptions(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.scan_prefix(LIVE_SUBSCRIPTIONS, "", usize::MAX)?.into_iter().map(|(k, _)| k).collect())
    }

    /// Fills [`LIVE_SUBSCRIPTIONS`] from the orders stored before it existed (once per database:
    /// a mark in `meta` says it was done); returns how many it added.
    pub async fn index_live_subscriptions(&self) -> Result<usize, StoreError> {
        self.writer()
            .txn(|tx| {
                if tx.get_raw(META, LIVE_INDEXED)?.is_some() {
                    return Ok(0);
                }
                let mut added = 0;
                for (id, raw) in tx.scan_prefix(ORDERS, "", usize::MAX)? {
                    let o: Order = serde_json::from_slice(&raw)?;
                    if keys::is_live(&o) {
                        tx.put_raw(LIVE_SUBSCRIPTIONS, &id, b"")?;
                        added += 1;
                    }
                }
                tx.put_raw(META, LIVE_INDEXED, b"1")?;
                Ok(added)
            })
            .await
    }

    pub fn order(&self, order_id: &str) -> Result<Option<Order>, StoreError> {
        self.get_json(ORDERS, order_id)
    }

    /// The sealed key an order item took at purchase, if any.
    pub fn order_key(&self, order_id: &str, item_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_raw(ORDER_KEYS, &keys::order_key(order_id, item_id))
    }

    /// Buys: takes one key per key-requiring item from the pools (all or nothing), stores the
    /// order, opens its gate and appends `record`.
    pub async fn buy(
        &self,
        order: Order,
        record: Entry,
        one_per_customer: OnePerCustomer,
    ) -> Result<Result<(), BuyRefused>, StoreError> {
        self.writer()
            .txn(move |tx| {
                let o = order;
                if !one_per_customer.products.is_empty() {
                    for (k, _) in tx.scan_prefix(TENANT_ORDERS, &keys::tenant_prefix(&o.tenant_id), usize::MAX)? {
                        let Some(id) = keys::order_of_index(&k) else { continue };
                        let Some(held) = tx.get_json::<Order>(ORDERS, id)? else { continue };
                        if let Some(product_id) = one_per_customer.held_in(&held) {
                            return Ok(Err(BuyRefused::AlreadySubscribed { product_id, order_id: held.order_id }));
                        }
                    }
                }
                // Check every pool first: an order that cannot get all its keys buys nothing.
                let mut needed: std::collections::BTreeMap<&str, usize> = Default::default();
                for i in o.items.iter().filter(|i| i.has_key) {
                    *needed.entry(i.product_id.as_str()).or_default() += 1;
                }
                let mut taken = Vec::new();
                for (pid, n) in &needed {
                    let keys = tx.scan_prefix(KEY_POOL, &keys::pool_prefix(pid), *n)?;
                    if keys.len() < *n {
                        return Ok(Err(BuyRefused::OutOfKeys(OutOfKeys { product_id: pid.to_string() })));
                    }
                    taken.extend(keys);
                }
                for i in o.items.iter().filter(|i| i.has_key) {
                    let prefix = keys::pool_prefix(&i.product_id);
                    let Some(idx) = taken.iter().position(|(k, _)| k.starts_with(&prefix)) else {
                        // Cannot happen (every pool was counted above); never panic in the writer.
                        return Err(StoreError::Bug("key pool changed under the transaction".into()));
                    };
                    let (pool_key, sealed) = taken.remove(idx);
                    tx.remove(KEY_POOL, &pool_key)?;
                    tx.put_raw(ORDER_KEYS, &keys::order_key(&o.order_id, &i.item_id), &sealed)?;
                }
                tx.put_json(ORDERS, &o.order_id, &o)?;
                let index = keys::tenant_order(&o);
                tx.put_raw(TENANT_ORDERS, &index, b"")?;
                if keys::is_live(&o) {
                    tx.put_raw(LIVE_SUBSCRIPTIONS, &o.order_id, b"")?;
                }
                tx.put_gate(&o.order_id, &gate_of(&o, Access::Open))?;
                tx.append(record)?;
                Ok(Ok(()))
            })
            .await
    }

    /// Changes an order by a rule: `decide` gets the order as stored (`None` if there is none)
    /// and the number of its links, inside the transaction, and answers what to write — or
    /// nothing (`Ok(None)`: the order is already as asked), or a refusal, which writes nothing.
    pub async fn change_order<E: Send + 'static>(
        &self,
        order_id: &str,
        decide: impl FnOnce(Option<Order>, usize) -> Result<Option<OrderChange>, E> + Send + 'static,
    ) -> Result<Result<Changed, E>, StoreError> {
        let id = order_id.to_owned();
        self.writer()
            .txn(move |tx| {
                let stored: Option<Order> = tx.get_json(ORDERS, &id)?;
                let unchanged = stored.clone();
                let links = order_links(tx, &id)?;
                let change = match decide(stored, links) {
                    Ok(c) => c,
                    Err(e) => return Ok(Err(e)),
                };
                let Some(OrderChange { order, access, records }) = change else {
                    return match unchanged {
                        Some(order) => Ok(Ok(Changed { order, links })),
                        None => Err(StoreError::Bug("no order to keep".into())),
                    };
                };
                tx.put_json(ORDERS, &id, &order)?;
                if keys::is_live(&order) {
                    tx.put_raw(LIVE_SUBSCRIPTIONS, &id, b"")?;
                } else {
                    tx.remove(LIVE_SUBSCRIPTIONS, &id)?;
                }
                if let Some(a) = access {
                    tx.put_gate(&id, &gate_of(&order, a))?;
                }
                for r in records {
                    tx.append(r)?;
                }
                Ok(Ok(Changed { order, links }))
            })
            .await
    }

    /// A revocation push: the order (known or not yet) is revoked with `record`, and a known
    /// active or suspended order becomes cancelled by `cancel`; an order revoked already is left
    /// alone.
    pub async fn revoke(
        &self,
        order_id: &str,
        cancel: impl FnOnce(Order) -> Order + Send + 'static,
        mut record: Entry,
    ) -> Result<Revoked, StoreError> {
        let id = order_id.to_owned();
        self.writer()
            .txn(move |tx| {
                let links = order_links(tx, &id)?;
                let gate: Option<OrderGate> = tx.get_json(GATES, &id)?;
                if gate.as_ref().is_some_and(|g| g.access == Access::Revoked) {
                    return Ok(Revoked { links, already: true });
                }
                let order: Option<Order> = tx.get_json(ORDERS, &id)?;
                let tenant = order.as_ref().map(|o| o.tenant_id.clone()).or(gate.and_then(|g| g.tenant_id));
                if let Some(o) = order {
                    if matches!(o.status, crate::model::OrderStatus::Active | crate::model::OrderStatus::Suspended) {
                        tx.put_json(ORDERS, &id, &cancel(o))?;
                        tx.remove(LIVE_SUBSCRIPTIONS, &id)?;
                    }
                }
                tx.put_gate(&id, &OrderGate { access: Access::Revoked, tenant_id: tenant.clone() })?;
                record.tenant_id = tenant;
                tx.append(record)?;
                Ok(Revoked { links, already: false })
            })
            .await
    }

    /// Queues records that may lag (refusals: they guard no byte) without waiting.
    pub fn append_later(&self, records: Vec<Entry>) {
        if records.is_empty() {
            return;
        }
        if let Err(e) = self.writer().send(records.into_iter().map(super::Op::append).collect()) {
            tracing::warn!(error = %e, "records after the writer stopped are lost");
        }
    }

    /// Health: does a commit complete now (the disk takes writes)?
    pub async fn commit_check(&self) -> Result<(), StoreError> {
        self.writer().flush().await
    }

    /// Appends records durably (the `key.accessed` of keys about to be shown).
    pub async fn append(&self, records: Vec<Entry>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.writer().commit(records.into_iter().map(super::Op::Append).collect()).await.map(|_| ())
    }

    // ---- support requests ----

    pub async fn create_support_request(&self, r: SupportRequest, record: Entry) -> Result<(), StoreError> {
        self.writer()
            .txn(move |tx| {
                tx.put_json(SUPPORT, &r.request_id, &r)?;
                tx.append(record)?;
                Ok(())
            })
            .await
    }

    pub fn support_request(&self, request_id: &str) -> Result<Option<SupportRequest>, StoreError> {
        self.get_json(SUPPORT, request_id)
    }

    // ---- customer tokens ----

    pub async fn create_customer_token(&self, sha256: String, t: CustomerToken) -> Result<(), StoreError> {
        self.writer()
            .txn(move |tx| {
                tx.put_json(TENANT_TOKENS, &keys::tenant_token(&t.tenant_id, &t.token_id), &sha256)?;
                tx.put_json(CUSTOMER_TOKENS, &sha256, &t)?;
                Ok(())
            })
            .await
    }

    pub fn customer_token(&self, sha256: &str) -> Result<Option<CustomerToken>, StoreError> {
        self.get_json(CUSTOMER_TOKENS, sha256)
    }

    pub fn customer_tokens(&self, tenant_id: &str) -> Result<Vec<CustomerToken>, StoreError> {
        let mut out = Vec::new();
        for (_, sha) in self.scan_prefix(TENANT_TOKENS, &keys::tenant_prefix(tenant_id), 10_000)? {
            let sha: String = serde_json::from_slice(&sha)?;
            out.extend(self.customer_token(&sha)?);
        }
        Ok(out)
    }

    /// Ends a tenant's token; `false` if it has no such token.
    pub async fn end_customer_token(&self, tenant_id: &str, token_id: &str) -> Result<bool, StoreError> {
        let key = keys::tenant_token(tenant_id, token_id);
        self.writer()
            .txn(move |tx| {
                let Some(sha) = tx.get_json::<String>(TENANT_TOKENS, &key)? else { return Ok(false) };
                tx.remove(TENANT_TOKENS, &key)?;
                tx.remove(CUSTOMER_TOKENS, &sha)?;
                Ok(true)
            })
            .await
    }
}
