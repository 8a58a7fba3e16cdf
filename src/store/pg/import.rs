//! `keydrop move-store`: a stopped embedded node's whole state into an empty database — the
//! admin entities row for row (same keys, same JSON), links with their spent bytes exactly,
//! order gates, the link-signing keys (sealed under the KEK the PostgreSQL nodes will use), and
//! the activity log record for record, its `seq`, `at` and hashes untouched, with the chain head
//! set to its last record, so `verify-log` passes on the result and the chain goes on from it.
//! One transaction: a failed move leaves the database empty.

use super::{classify, kv, PgStore};
use crate::keys::Sealer;
use crate::model::OrderGate;
use crate::store::{Embedded, StoreError};

/// What was moved.
#[derive(Debug, Default)]
pub struct Moved {
    pub rows: usize,
    pub links: usize,
    pub gates: usize,
    pub records: u64,
}

/// The key/value tables the database keeps as `kv` rows. `order_gates` has its own table; the
/// embedded backend's `order_links` index is `links.order_id` here; of `meta`, only the key
/// pools' counters mean anything outside redb.
const TABLES: [&str; 12] = [
    "files",
    "products",
    "customers",
    "customer_domains",
    "orders",
    "tenant_orders",
    "key_pool",
    "order_keys",
    "support_requests",
    "customer_tokens",
    "live_subscriptions",
    "tenant_tokens",
];

const BATCH: usize = 1000;

impl PgStore {
    pub async fn import(
        &self,
        src: &Embedded,
        sealer: &Sealer,
        link_keys: &[(u32, Vec<u8>)],
    ) -> Result<Moved, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        let head: i64 = tx.query_one("SELECT seq FROM chain_head WHERE id = 1", &[]).await.map_err(classify)?.get(0);
        let kv_rows: i64 = tx.query_one("SELECT count(*) FROM kv", &[]).await.map_err(classify)?.get(0);
        let link_rows: i64 = tx.query_one("SELECT count(*) FROM links", &[]).await.map_err(classify)?.get(0);
        if head != 0 || kv_rows != 0 || link_rows != 0 {
            return Err(StoreError::Bug("the target database is not empty".into()));
        }
        let mut moved = Moved::default();
        for table in TABLES {
            for (k, v) in src.table_rows(table)? {
                kv::put_raw(&*tx, table, &k, &v).await?;
                moved.rows += 1;
            }
        }
        for (k, v) in src.table_rows("meta")? {
            if k.starts_with("key_seq\0") {
                kv::put_raw(&*tx, "meta", &k, &v).await?;
                moved.rows += 1;
            }
        }
        for (id, key) in link_keys {
            let name = format!("link_key\0{id:010}");
            kv::put_raw(&*tx, "meta", &name, &sealer.seal(&name, &hex::encode(key))).await?;
        }
        for chunk in src.all_links()?.chunks(BATCH) {
            let mut ids = Vec::new();
            let (mut orders, mut recs, mut budgets, mut spent) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (rec, s) in chunk {
                ids.push(hex::decode(&rec.link_id).map_err(|_| StoreError::Corrupt("link id".into()))?);
                orders.push(rec.order_id.clone());
                recs.push(serde_json::to_string(rec)?);
                budgets.push(i64::try_from(rec.budget()).unwrap_or(i64::MAX));
                spent.push(i64::try_from(*s).unwrap_or(i64::MAX));
            }
            tx.execute(
                "INSERT INTO links (link_id, order_id, record, budget, spent) \
                 SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::int8[], $5::int8[])",
                &[&ids, &orders, &recs, &budgets, &spent],
            )
            .await
            .map_err(classify)?;
            moved.links += chunk.len();
        }
        for (order_id, v) in src.table_rows("order_gates")? {
            let gate: OrderGate = serde_json::from_slice(&v)?;
            tx.execute(
                "INSERT INTO order_gates (order_id, gate, version) VALUES ($1, $2, nextval('gate_version'))",
                &[&order_id, &serde_json::to_string(&gate)?],
            )
            .await
            .map_err(classify)?;
            moved.gates += 1;
        }
        // The log, in seq order, exactly as stored; the head at its last record.
        let mut records = Vec::new();
        let mut failed = None;
        src.publish().await?;
        src.scan_activity(|r| match r {
            Ok(r) => {
                records.push(r);
                true
            }
            Err(e) => {
                failed = Some(e);
                false
            }
        })?;
        if let Some(e) = failed {
            return Err(StoreError::Corrupt(format!("the source's activity log: {e}")));
        }
        for chunk in records.chunks(BATCH) {
            let (mut seqs, mut ats, mut kinds, mut tenants, mut orders, mut jsons) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for r in chunk {
                seqs.push(r.seq as i64);
                ats.push(crate::activity::at_micros(&r.at) as i64);
                kinds.push(r.kind.name());
                tenants.push(r.tenant_id.clone());
                orders.push(r.order_id.clone());
                jsons.push(serde_json::to_string(r)?);
            }
            tx.execute(
                "INSERT INTO activity (seq, at_us, kind, tenant_id, order_id, json) \
                 SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[])",
                &[&seqs, &ats, &kinds, &tenants, &orders, &jsons],
            )
            .await
            .map_err(classify)?;
        }
        if let Some(last) = records.last() {
            let at_us = crate::activity::at_micros(&last.at) as i64;
            tx.execute(
                "UPDATE chain_head SET seq = $1, hash = $2, at_us = $3 WHERE id = 1",
                &[&(last.seq as i64), &last.hash, &at_us],
            )
            .await
            .map_err(classify)?;
            moved.records = last.seq;
        }
        tx.commit().await.map_err(classify)?;
        Ok(moved)
    }
}
