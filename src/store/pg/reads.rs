//! Reading the shared state: links, gates and the one activity log, from any node. A query by
//! order, tenant or kind walks that column's index in `seq` order; a time range starts at the
//! first record at or after `from`.

use super::kv::Lock;
use super::{classify, gates, PgStore};
use crate::activity::{Query, Record};
use crate::model::{LinkRecord, OrderGate};
use crate::store::StoreError;

/// Records read per round trip when scanning the whole log.
const SCAN_PAGE: i64 = 5_000;

impl PgStore {
    /// A link's record and its spent bytes.
    pub async fn link(&self, id: &[u8; 16]) -> Result<Option<(LinkRecord, u64)>, StoreError> {
        let c = self.client().await?;
        let row =
            c.query_opt("SELECT record, spent FROM links WHERE link_id = $1", &[&&id[..]]).await.map_err(classify)?;
        match row {
            None => Ok(None),
            Some(r) => Ok(Some((serde_json::from_str(r.get(0))?, r.get::<_, i64>(1) as u64))),
        }
    }

    /// An order's gate and the version it was set at.
    pub async fn gate(&self, order_id: &str) -> Result<Option<(OrderGate, u64)>, StoreError> {
        gates::read(&**self.client().await?, order_id, Lock::None).await
    }

    /// Up to `limit` records after `after_seq`, in `seq` order.
    pub async fn records_after(&self, after_seq: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT json FROM activity WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&(after_seq as i64), &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await
            .map_err(classify)?;
        rows.iter().map(|r| Ok(serde_json::from_str(r.get(0))?)).collect()
    }

    /// Runs an activity query; returns the records and, when `limit` cut it short, the cursor.
    pub async fn query_activity(&self, q: &Query) -> Result<(Vec<Record>, Option<u64>), StoreError> {
        let c = self.client().await?;
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let from = q.from_us.map(|v| v as i64);
        let to = q.to_us.map(|v| v as i64);
        let kind = q.kind.map(|k| k.name());
        let rows = c
            .query(
                "SELECT seq, json FROM activity WHERE seq > $1 \
                 AND ($2::int8 IS NULL OR at_us >= $2) AND ($3::int8 IS NULL OR at_us <= $3) \
                 AND ($4::text IS NULL OR kind = $4) AND ($5::text IS NULL OR tenant_id = $5) \
                 AND ($6::text IS NULL OR order_id = $6) ORDER BY seq LIMIT $7",
                &[&(q.after_seq as i64), &from, &to, &kind, &q.tenant_id, &q.order_id, &limit],
            )
            .await
            .map_err(classify)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(serde_json::from_str::<Record>(r.get(1))?);
        }
        let next = (q.limit > 0 && out.len() >= q.limit).then(|| out.last().map(|r| r.seq)).flatten();
        Ok((out, next))
    }

    /// One record exactly as stored.
    pub async fn get_activity_raw(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let c = self.client().await?;
        let row = c.query_opt("SELECT json FROM activity WHERE seq = $1", &[&(seq as i64)]).await.map_err(classify)?;
        Ok(row.map(|r| r.get::<_, String>(0).into_bytes()))
    }

    /// Feeds every record, in `seq` order, to `f` (stops when it returns `false`).
    pub async fn scan_activity(&self, mut f: impl FnMut(Result<Record, String>) -> bool) -> Result<(), StoreError> {
        let c = self.client().await?;
        let mut after = 0i64;
        loop {
            let rows = c
                .query("SELECT seq, json FROM activity WHERE seq > $1 ORDER BY seq LIMIT $2", &[&after, &SCAN_PAGE])
                .await
                .map_err(classify)?;
            if rows.is_empty() {
                return Ok(());
            }
            for r in &rows {
                after = r.get(0);
                let rec = serde_json::from_str::<Record>(r.get(1)).map_err(|e| format!("record {after}: {e}"));
                if !f(rec) {
                    return Ok(());
                }
            }
        }
    }

    pub async fn record_count(&self) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let row = c.query_one("SELECT seq FROM chain_head WHERE id = 1", &[]).await.map_err(classify)?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}
