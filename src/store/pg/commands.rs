//! The admin API's commands on PostgreSQL, each one transaction. Rows a command decides on are
//! read `FOR UPDATE` (two nodes changing one order take turns); its records are appended to the
//! one chain and its gate changes versioned after the chain head is held ([`super::gates`]), so
//! versions follow commit order; a refusal returns before `COMMIT` and the transaction rolls
//! back. After the commit the node's own ledger hears of the gate change at once; other nodes
//! hear through `NOTIFY` and their version poll.

use super::kv::{self, Lock};
use super::{chain, classify, PgStore};
use crate::activity::Entry;
use crate::model::{
    Access, Customer, CustomerToken, FileRecord, Order, OrderGate, OrderStatus, Product, SupportRequest,
};
use crate::store::commands::{
    Attach, BuyRefused, Changed, CustomerExists, OnePerCustomer, OrderChange, OutOfKeys, Revoked,
};
use crate::store::StoreError;

use crate::store::keys::{
    self, file_key, CUSTOMERS, CUSTOMER_TOKENS, DOMAINS, FILES, KEY_POOL, LIVE_SUBSCRIPTIONS, META, ORDERS, ORDER_KEYS,
    PRODUCTS, SUPPORT, TENANT_ORDERS, TENANT_TOKENS,
};

fn gate_of(o: &Order, access: Access) -> OrderGate {
    OrderGate { access, tenant_id: Some(o.tenant_id.clone()) }
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Gate changes a transaction made: `(order, gate, version)`, for this node's sink once committed.
type Staged = Vec<(String, OrderGate, u64)>;

impl PgStore {
    /// Commits `tx`, then lets this node's ledger hear of its gate changes (other nodes hear
    /// through `NOTIFY` and their version poll). A command that refuses simply drops its
    /// transaction instead: PostgreSQL rolls back everything it wrote.
    async fn finish(&self, tx: Tx<'_>, gates: Staged) -> Result<(), StoreError> {
        tx.commit().await.map_err(classify)?;
        for (order_id, gate, version) in gates {
            self.gates.apply(&order_id, &gate, version);
        }
        Ok(())
    }

    async fn append_in(&self, tx: &Tx<'_>, records: &[&Entry]) -> Result<(), StoreError> {
        if !records.is_empty() {
            chain::append(tx, records, &self.node, self.clock.now_micros()).await?;
        }
        Ok(())
    }

    // ---- catalog ----

    pub async fn product(&self, product_id: &str) -> Result<Option<Product>, StoreError> {
        kv::get_json(&**self.client().await?, PRODUCTS, product_id, Lock::None).await
    }

    pub async fn products(&self) -> Result<Vec<Product>, StoreError> {
        let rows = kv::scan_prefix(&**self.client().await?, PRODUCTS, "", usize::MAX, Lock::None).await?;
        rows.iter().map(|(_, v)| Ok(serde_json::from_slice(v)?)).collect()
    }

    /// Creates or replaces a product; `true` if it was created.
    pub async fn put_product(&self, p: Product) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        let existed = kv::get_raw(&*tx, PRODUCTS, &p.product_id, Lock::Update).await?.is_some();
        kv::put_json(&*tx, PRODUCTS, &p.product_id, &p).await?;
        self.finish(tx, Vec::new()).await?;
        Ok(!existed)
    }

    pub async fn keys_available(&self, product_id: &str) -> Result<usize, StoreError> {
        kv::count_prefix(&**self.client().await?, KEY_POOL, &keys::pool_prefix(product_id)).await
    }

    /// Adds sealed keys to a product's pool: `(added, available)`. The counter row is locked, so
    /// two nodes adding keys at once number them apart.
    pub async fn add_keys(&self, product_id: &str, sealed: Vec<Vec<u8>>) -> Result<(usize, usize), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        let counter = keys::pool_counter(product_id);
        kv::insert_new(&*tx, META, &counter, b"0").await?;
        let mut seq: u64 = kv::get_json(&*tx, META, &counter, Lock::Update).await?.unwrap_or(0);
        for s in &sealed {
            seq += 1;
            kv::put_raw(&*tx, KEY_POOL, &keys::pool_key(product_id, seq), s).await?;
        }
        kv::put_json(&*tx, META, &counter, &seq).await?;
        let available = kv::count_prefix(&*tx, KEY_POOL, &keys::pool_prefix(product_id)).await?;
        self.finish(tx, Vec::new()).await?;
        Ok((sealed.len(), available))
    }

    // ---- files ----

    pub async fn file(&self, product_id: &str, file_id: &str) -> Result<Option<FileRecord>, StoreError> {
        kv::get_json(&**self.client().await?, FILES, &file_key(product_id, file_id), Lock::None).await
    }

    pub async fn files_of(&self, product_id: &str) -> Result<Vec<FileRecord>, StoreError> {
        let rows =
            kv::scan_prefix(&**self.client().await?, FILES, &file_key(product_id, ""), usize::MAX, Lock::None).await?;
        rows.iter().map(|(_, v)| Ok(serde_json::from_slice(v)?)).collect()
    }

    pub async fn attach_file(&self, rec: FileRecord) -> Result<Result<Attach, Box<FileRecord>>, StoreError> {
        let key = file_key(&rec.product_id, &rec.file_id);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        // Claim the id first, so two nodes attaching the same id cannot both create it.
        let created = kv::insert_new(&*tx, FILES, &key, &serde_json::to_vec(&rec)?).await?;
        let out = if created {
            Attach::Created(rec)
        } else {
            let old: FileRecord = kv::get_json(&*tx, FILES, &key, Lock::Update)
                .await?
                .ok_or_else(|| StoreError::Bug("file row vanished under its lock".into()))?;
            if old.path != rec.path || old.size != rec.size || old.filename != rec.filename {
                return Ok(Err(Box::new(old)));
            }
            let relabelled =
                FileRecord { version: rec.version, language: rec.language, file_type: rec.file_type, ..old };
            kv::put_json(&*tx, FILES, &key, &relabelled).await?;
            Attach::Existing(relabelled)
        };
        self.finish(tx, Vec::new()).await?;
        Ok(Ok(out))
    }

    pub async fn retire_file(
        &self,
        product_id: &str,
        file_id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<FileRecord>, StoreError> {
        let key = file_key(product_id, file_id);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        let Some(mut rec) = kv::get_json::<FileRecord>(&*tx, FILES, &key, Lock::Update).await? else {
            return Ok(None);
        };
        if rec.retired_at.is_none() {
            rec.retired_at = Some(now);
            kv::put_json(&*tx, FILES, &key, &rec).await?;
        }
        self.finish(tx, Vec::new()).await?;
        Ok(Some(rec))
    }

    pub async fn set_file_sha(
        &self,
        product_id: &str,
        file_id: &str,
        size: u64,
        sha256: String,
    ) -> Result<(), StoreError> {
        let key = file_key(product_id, file_id);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        if let Some(mut rec) =
            kv::get_json::<FileRecord>(&*tx, FILES, &key, Lock::Update).await?.filter(|r| r.size == size)
        {
            rec.sha256 = Some(sha256);
            kv::put_json(&*tx, FILES, &key, &rec).await?;
        }
        self.finish(tx, Vec::new()).await
    }

    // ---- customers ----

    pub async fn customer(&self, tenant_id: &str) -> Result<Option<Customer>, StoreError> {
        kv::get_json(&**self.client().await?, CUSTOMERS, tenant_id, Lock::None).await
    }

    pub async fn customer_by_domain(&self, domain: &str) -> Result<Option<Customer>, StoreError> {
        let c = self.client().await?;
        match kv::get_raw(&**c, DOMAINS, domain, Lock::None).await? {
            Some(t) => kv::get_json(&**c, CUSTOMERS, &String::from_utf8_lossy(&t), Lock::None).await,
            None => Ok(None),
        }
    }

    pub async fn create_customer(&self, c: Customer) -> Result<Result<(), CustomerExists>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(classify)?;
        if !kv::insert_new(&*tx, CUSTOMERS, &c.tenant_id, &serde_json::to_vec(&c)?).await? {
            return Ok(Err(CustomerExists::TenantId));
        }
        if !kv::insert_new(&*tx, DOMAINS, &c.domain, c.tenant_id.as_bytes()).await? {
            return Ok(Err(CustomerExists::Domain));
        }
        self.finish(tx, Vec::new()).await?;
        Ok(Ok(()))
    }

    // ---- orders ----

    pub async fn orders_of(&self, tenant_id: &str) -> Result<Vec<Order>, StoreError> {
        let c = self.client().await?;
        let index =
            kv::scan_prefix(&**c, TENANT_ORDERS, &keys::tenant_prefix(tenant_id), usize::MAX, Lock::None).await?;
        let mut out = Vec::new();
        for (k, _) in index.into_iter().rev() {
            if let Some(id) = keys::order_of_index(&k) {
                if let Some(o) = kv::get_json(&**c, ORDERS, id, Lock::None).await? {
                    out.push(o);
                }
            }
        }
        Ok(out)
    }

    pub async fn order(&self, order_id: &str) -> Result<Option<Order>, StoreError> {
        kv::get_json(&**self.client().await?, ORDERS, order_id, Lock::None).await
    }

    pub async fn order_key(&self, order_id: &str, item_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        kv::get_raw(&**self.client().await?, ORDER_KEYS, &keys::order_key(order_id, item_id), Lock::None).await
    }

    /// Buys: each key-requiring item takes a key no other node is taking (`SKIP LOCKED`); all
    /// or nothing.
    pub async fn buy(
        &self,
        o: Order,
        record: Entry,
        one_per_customer: OnePerCustomer,
    ) -> Result<Result<(), BuyRefused>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        if !one_per_customer.products.is_empty() {
            // The customer's row, held: buys for one customer take their turn here.
            kv::get_raw(&*tx, CUSTOMERS, &o.tenant_id, Lock::Update).await?;
            let index =
                kv::scan_prefix(&*tx, TENANT_ORDERS, &keys::tenant_prefix(&o.tenant_id), usize::MAX, Lock::None)
                    .await?;
            for (k, _) in index {
                let Some(id) = keys::order_of_index(&k) else { continue };
                let Some(held) = kv::get_json::<Order>(&*tx, ORDERS, id, Lock::None).await? else { continue };
                if let Some(product_id) = one_per_customer.held_in(&held) {
                    return Ok(Err(BuyRefused::AlreadySubscribed { product_id, order_id: held.order_id }));
                }
            }
        }
        let mut needed: std::collections::BTreeMap<&str, usize> = Default::default();
        for i in o.items.iter().filter(|i| i.has_key) {
            *needed.entry(i.product_id.as_str()).or_default() += 1;
        }
        let mut taken = Vec::new();
        for (pid, n) in &needed {
            let keys = kv::scan_prefix(&*tx, KEY_POOL, &keys::pool_prefix(pid), *n, Lock::SkipLocked).await?;
            if keys.len() < *n {
                return Ok(Err(BuyRefused::OutOfKeys(OutOfKeys { product_id: pid.to_string() })));
            }
            taken.extend(keys);
        }
        for i in o.items.iter().filter(|i| i.has_key) {
            let prefix = keys::pool_prefix(&i.product_id);
            let Some(idx) = taken.iter().position(|(k, _)| k.starts_with(&prefix)) else {
                return Err(StoreError::Bug("a counted key is missing".into()));
            };
            let (pool_key, sealed) = taken.remove(idx);
            kv::remove(&*tx, KEY_POOL, &pool_key).await?;
            kv::put_raw(&*tx, ORDER_KEYS, &keys::order_key(&o.order_id, &i.item_id), &sealed).await?;
        }
        kv::put_json(&*tx, ORDERS, &o.order_id, &o).await?;
        let index = keys::tenant_order(&o);
        kv::put_raw(&*tx, TENANT_ORDERS, &index, b"").await?;
        if keys::is_live(&o) {
            kv::put_raw(&*tx, LIVE_SUBSCRIPTIONS, &o.order_id, b"").await?;
        }
        self.append_in(&tx, &[&record]).await?;
        let gates = vec![self.gates.put(&tx, &o.order_id, &gate_of(&o, Access::Open)).await?];
        self.finish(tx, gates).await?;
        Ok(Ok(()))
    }

    async fn order_links(tx: &Tx<'_>, order_id: &str) -> Result<usize, StoreError> {
        let row =
            tx.query_one("SELECT count(*) FROM links WHERE order_id = $1", &[&order_id]).await.map_err(classify)?;
        Ok(row.get::<_, i64>(0) as usize)
    }

    /// The orders in [`LIVE_SUBSCRIPTIONS`] (for the lifecycle clock).
    pub async fn live_subscriptions(&self) -> Result<Vec<String>, StoreError> {
        let c = self.client().await?;
        Ok(kv::scan_prefix(&**c, LIVE_SUBSCRIPTIONS, "", usize::MAX, Lock::None)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Fills [`LIVE_SUBSCRIPTIONS`] from the orders stored before it existed (once per database);
    /// returns how many it added.
    pub async fn index_live_subscriptions(&self) -> Result<usize, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        if !kv::insert_new(&*tx, META, keys::LIVE_INDEXED, b"1").await? {
            return Ok(0);
        }
        let mut added = 0;
        for (id, raw) in kv::scan_prefix(&*tx, ORDERS, "", usize::MAX, Lock::None).await? {
            let o: Order = serde_json::from_slice(&raw)?;
            if keys::is_live(&o) {
                kv::put_raw(&*tx, LIVE_SUBSCRIPTIONS, &id, b"").await?;
                added += 1;
            }
        }
        tx.commit().await.map_err(classify)?;
        Ok(added)
    }

    /// Changes an order by a rule, the order's row held `FOR UPDATE` while `decide` runs.
    pub async fn change_order<E: Send + 'static>(
        &self,
        order_id: &str,
        decide: impl FnOnce(Option<Order>, usize) -> Result<Option<OrderChange>, E> + Send + 'static,
    ) -> Result<Result<Changed, E>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        let stored: Option<Order> = kv::get_json(&*tx, ORDERS, order_id, Lock::Update).await?;
        let unchanged = stored.clone();
        let links = Self::order_links(&tx, order_id).await?;
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
        kv::put_json(&*tx, ORDERS, order_id, &order).await?;
        if keys::is_live(&order) {
            kv::put_raw(&*tx, LIVE_SUBSCRIPTIONS, order_id, b"").await?;
        } else {
            kv::remove(&*tx, LIVE_SUBSCRIPTIONS, order_id).await?;
        }
        self.append_in(&tx, &records.iter().collect::<Vec<_>>()).await?;
        let mut gates = Vec::new();
        if let Some(a) = access {
            gates.push(self.gates.put(&tx, order_id, &gate_of(&order, a)).await?);
        }
        self.finish(tx, gates).await?;
        Ok(Ok(Changed { order, links }))
    }

    /// A revocation push (see [`crate::store::Store::revoke`]).
    pub async fn revoke(
        &self,
        order_id: &str,
        cancel: impl FnOnce(Order) -> Order + Send + 'static,
        mut record: Entry,
    ) -> Result<Revoked, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        // The order's row first (as every order change takes it), then its gate.
        let order: Option<Order> = kv::get_json(&*tx, ORDERS, order_id, Lock::Update).await?;
        let links = Self::order_links(&tx, order_id).await?;
        let gate = super::gates::read(&*tx, order_id, Lock::Update).await?.map(|(g, _)| g);
        if gate.as_ref().is_some_and(|g| g.access == Access::Revoked) {
            return Ok(Revoked { links, already: true });
        }
        let tenant = order.as_ref().map(|o| o.tenant_id.clone()).or(gate.and_then(|g| g.tenant_id));
        if let Some(o) = order {
            if matches!(o.status, OrderStatus::Active | OrderStatus::Suspended) {
                kv::put_json(&*tx, ORDERS, order_id, &cancel(o)).await?;
                kv::remove(&*tx, LIVE_SUBSCRIPTIONS, order_id).await?;
            }
        }
        record.tenant_id = tenant.clone();
        self.append_in(&tx, &[&record]).await?;
        let gates =
            vec![self.gates.put(&tx, order_id, &OrderGate { access: Access::Revoked, tenant_id: tenant }).await?];
        self.finish(tx, gates).await?;
        Ok(Revoked { links, already: false })
    }

    /// Sets an order's gate with its record (the ledger's own call).
    pub async fn set_gate(&self, order_id: &str, gate: OrderGate, record: Option<Entry>) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        if let Some(r) = &record {
            self.append_in(&tx, &[r]).await?;
        }
        let gates = vec![self.gates.put(&tx, order_id, &gate).await?];
        self.finish(tx, gates).await
    }

    // ---- support requests ----

    pub async fn create_support_request(&self, r: SupportRequest, record: Entry) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        kv::put_json(&*tx, SUPPORT, &r.request_id, &r).await?;
        self.append_in(&tx, &[&record]).await?;
        self.finish(tx, Vec::new()).await
    }

    pub async fn support_request(&self, request_id: &str) -> Result<Option<SupportRequest>, StoreError> {
        kv::get_json(&**self.client().await?, SUPPORT, request_id, Lock::None).await
    }

    // ---- customer tokens ----

    pub async fn create_customer_token(&self, sha256: String, t: CustomerToken) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        kv::put_json(&*tx, TENANT_TOKENS, &keys::tenant_token(&t.tenant_id, &t.token_id), &sha256).await?;
        kv::put_json(&*tx, CUSTOMER_TOKENS, &sha256, &t).await?;
        self.finish(tx, Vec::new()).await
    }

    pub async fn customer_token(&self, sha256: &str) -> Result<Option<CustomerToken>, StoreError> {
        kv::get_json(&**self.client().await?, CUSTOMER_TOKENS, sha256, Lock::None).await
    }

    pub async fn customer_tokens(&self, tenant_id: &str) -> Result<Vec<CustomerToken>, StoreError> {
        let c = self.client().await?;
        let mut out = Vec::new();
        for (_, sha) in
            kv::scan_prefix(&**c, TENANT_TOKENS, &keys::tenant_prefix(tenant_id), 10_000, Lock::None).await?
        {
            let sha: String = serde_json::from_slice(&sha).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.extend(kv::get_json::<CustomerToken>(&**c, CUSTOMER_TOKENS, &sha, Lock::None).await?);
        }
        Ok(out)
    }

    /// Ends a tenant's token; `false` if it has no such token.
    pub async fn end_customer_token(&self, tenant_id: &str, token_id: &str) -> Result<bool, StoreError> {
        let key = keys::tenant_token(tenant_id, token_id);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        let Some(sha) = kv::get_json::<String>(&*tx, TENANT_TOKENS, &key, Lock::Update).await? else {
            return Ok(false);
        };
        kv::remove(&*tx, TENANT_TOKENS, &key).await?;
        kv::remove(&*tx, CUSTOMER_TOKENS, &sha).await?;
        self.finish(tx, Vec::new()).await?;
        Ok(true)
    }
}
