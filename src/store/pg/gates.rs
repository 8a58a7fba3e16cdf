//! Order states across nodes: every gate change commits with a version and a `NOTIFY`; every
//! node `LISTEN`s on a dedicated connection and also polls `order_gates` for versions above the
//! last it applied — on each notification and at least every [`POLL`] (notifications sent while
//! a node was reconnecting are lost; the poll is what makes delivery certain).
//!
//! Versions follow commit order because a version is drawn only while the transaction holds the
//! chain head (`FOR UPDATE`, until its commit): a later version cannot commit before an earlier
//! one, so "everything above the last version applied" misses nothing.
//!
//! Freshness: the feed notes when a poll last succeeded. A node whose view is older than
//! `max_gate_staleness_ms` cannot promise that a cancel made elsewhere stops its downloads within
//! that time, so [`GateFeed::is_fresh`] turns false: the ledger refuses new downloads and cuts
//! the ones in flight until a poll succeeds again.

use super::classify;
use super::kv::Lock;
use crate::model::OrderGate;
use crate::store::{GateSink, StoreError};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};
use tokio_postgres::GenericClient;

/// The longest a node goes without asking for changes.
pub const POLL: Duration = Duration::from_millis(100);
const CHANNEL: &str = "keydrop_gates";

pub struct GateFeed {
    sink: Mutex<Option<Weak<dyn GateSink>>>,
    /// The highest version applied.
    applied: AtomicI64,
    /// When a poll last succeeded, in ms since `start`.
    confirmed_ms: AtomicU64,
    start: Instant,
    max_staleness: Duration,
}

/// A gate as stored, with its version.
pub async fn read(c: &impl GenericClient, order_id: &str, lock: Lock) -> Result<Option<(OrderGate, u64)>, StoreError> {
    let sql = match lock {
        Lock::None => "SELECT gate, version FROM order_gates WHERE order_id = $1",
        _ => "SELECT gate, version FROM order_gates WHERE order_id = $1 FOR UPDATE",
    };
    let row = c.query_opt(sql, &[&order_id]).await.map_err(classify)?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some((serde_json::from_str(r.get(0))?, r.get::<_, i64>(1) as u64))),
    }
}

impl GateFeed {
    pub fn new(max_staleness: Duration) -> GateFeed {
        GateFeed {
            sink: Mutex::new(None),
            applied: AtomicI64::new(0),
            confirmed_ms: AtomicU64::new(0),
            start: Instant::now(),
            max_staleness,
        }
    }

    pub fn set_sink(&self, sink: Weak<dyn GateSink>) {
        *self.sink.lock().expect("not poisoned") = Some(sink);
    }

    /// Writes a gate inside a transaction that already holds the chain head (every caller
    /// appends its record first), with the next version and a `NOTIFY` sent on commit.
    pub async fn put(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        order_id: &str,
        gate: &OrderGate,
    ) -> Result<(String, OrderGate, u64), StoreError> {
        tx.query_one("SELECT 1 FROM chain_head WHERE id = 1 FOR UPDATE", &[]).await.map_err(classify)?;
        let row = tx
            .query_one(
                "INSERT INTO order_gates (order_id, gate, version) VALUES ($1, $2, nextval('gate_version')) \
                 ON CONFLICT (order_id) DO UPDATE SET gate = EXCLUDED.gate, version = EXCLUDED.version RETURNING version",
                &[&order_id, &serde_json::to_string(gate)?],
            )
            .await
            .map_err(classify)?;
        let version: i64 = row.get(0);
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &version.to_string()]).await.map_err(classify)?;
        Ok((order_id.to_owned(), gate.clone(), version as u64))
    }

    /// Hands a committed change to the sink (newer versions win there).
    pub fn apply(&self, order_id: &str, gate: &OrderGate, version: u64) {
        let sink = self.sink.lock().expect("not poisoned").as_ref().and_then(Weak::upgrade);
        if let Some(s) = sink {
            s.gate_committed(order_id, gate, version);
        }
    }

    /// Did a poll succeed within the allowed staleness?
    pub fn is_fresh(&self) -> bool {
        let confirmed = Duration::from_millis(self.confirmed_ms.load(Ordering::Acquire));
        self.start.elapsed().saturating_sub(confirmed) <= self.max_staleness
    }

    fn confirm(&self, at: Instant) {
        let ms = at.duration_since(self.start).as_millis() as u64;
        self.confirmed_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// Applies every change above the last version applied; returns how many.
    async fn catch_up(&self, c: &impl GenericClient) -> Result<usize, StoreError> {
        let asked = Instant::now();
        let after = self.applied.load(Ordering::Acquire);
        let rows = c
            .query("SELECT order_id, gate, version FROM order_gates WHERE version > $1 ORDER BY version", &[&after])
            .await
            .map_err(classify)?;
        for r in &rows {
            let gate: OrderGate = serde_json::from_str(r.get(1))?;
            let version: i64 = r.get(2);
            self.apply(r.get(0), &gate, version as u64);
            self.applied.fetch_max(version, Ordering::AcqRel);
        }
        self.confirm(asked);
        Ok(rows.len())
    }

    /// Starts from the versions in the database now (gates before it are read on first use).
    pub async fn start_at_current(&self, c: &impl GenericClient) -> Result<(), StoreError> {
        let asked = Instant::now();
        let row = c.query_one("SELECT coalesce(max(version), 0) FROM order_gates", &[]).await.map_err(classify)?;
        self.applied.store(row.get(0), Ordering::Release);
        self.confirm(asked);
        Ok(())
    }

    /// Listens and polls until the feed is dropped; reconnects (and catches up by version)
    /// whenever the connection is lost.
    pub async fn run(feed: Weak<GateFeed>, pg: tokio_postgres::Config, tls: super::Tls) {
        loop {
            if let Err(e) = Self::session(&feed, &pg, &tls).await {
                tracing::warn!(error = %e, "gate feed lost its connection; reconnecting");
            }
            if feed.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Tells the sink whenever freshness changes (checked every few milliseconds, so a feed
    /// stuck on a dead connection is noticed on time, not when its query gives up).
    pub async fn watch(feed: Weak<GateFeed>) {
        let mut was = true;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let Some(me) = feed.upgrade() else { return };
            let fresh = me.is_fresh();
            if fresh != was {
                if fresh {
                    tracing::info!("order states confirmed again; serving");
                } else {
                    tracing::warn!(
                        max_staleness_ms = me.max_staleness.as_millis() as u64,
                        "order states not confirmed in time; refusing downloads"
                    );
                }
                let sink = me.sink.lock().expect("not poisoned").as_ref().and_then(Weak::upgrade);
                if let Some(s) = sink {
                    s.freshness(fresh);
                }
                was = fresh;
            }
        }
    }

    async fn session(feed: &Weak<GateFeed>, pg: &tokio_postgres::Config, tls: &super::Tls) -> Result<(), StoreError> {
        let notify = std::sync::Arc::new(tokio::sync::Notify::new());
        let (client, driver) = tls.connect(pg, notify.clone()).await?;
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await.map_err(classify)?;
        loop {
            let Some(me) = feed.upgrade() else { return Ok(()) };
            if driver.is_finished() {
                return Err(StoreError::DatabaseDown("notification connection closed".into()));
            }
            match tokio::time::timeout(me.max_staleness.max(POLL), me.catch_up(&client)).await {
                Ok(r) => {
                    r?;
                }
                Err(_) => return Err(StoreError::DatabaseDown("gate poll timed out".into())),
            }
            drop(me);
            let _ = tokio::time::timeout(POLL, notify.notified()).await;
        }
    }
}
