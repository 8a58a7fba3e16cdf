//! The download path's side of the storage interface: link budgets, links and order gates.
//!
//! These are the calls the [`crate::ledger`] makes. With redb the ledger's memory decides
//! whether a reservation fits (one process owns every counter) and the store only makes the
//! decision durable, in the ledger's order; so the reservation is *sent* under the link's lock
//! and *awaited* after it is released ([`Embedded::send_reservation`] → [`Durable`]). A backend
//! shared by several nodes decides admission itself and answers through the same [`Durable`].
//!
//! The ledger never builds a writer [`Op`]: what a download changes is named here.

use super::{writer::Committed, Embedded, Op, SpentKey, StoreError};
use crate::activity::Entry;
use crate::model::{LinkRecord, OrderGate};
use std::sync::Weak;
use tokio::sync::oneshot;

pub use super::writer::GateSink;

/// A record serialized where the request runs (not on the writer thread; see [`Op::append`]).
pub struct Prepared(Op);

impl Prepared {
    /// A record already serialized: its [`Entry::body`] and index tags.
    pub fn body(body: Vec<u8>, tags: super::index::Tags) -> Prepared {
        Prepared(Op::AppendBody { body, tags })
    }
}

/// A reservation on its way to disk: await it before the first byte leaves.
pub struct Durable(oneshot::Receiver<Result<Committed, StoreError>>);

impl Durable {
    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0.await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(StoreError::Closed),
        }
    }
}

impl Embedded {
    /// Queues `bytes` more spent on the link at `key`, with its `download.started` record.
    /// Synchronous, so the ledger calls it under the link's lock: disk applies reservations and
    /// refunds in memory's order.
    pub fn send_reservation(&self, key: SpentKey, bytes: u64, started: Prepared) -> Result<Durable, StoreError> {
        self.writer().send_durable(vec![Op::Reserve { key, bytes }, started.0]).map(Durable)
    }

    /// Queues a settlement without waiting: `refund` unsent bytes back (if any) and the
    /// `download.finished` record. A crash before it is durable leaves the bytes spent.
    pub fn send_settlement(&self, key: SpentKey, refund: u64, finished: Prepared) -> Result<(), StoreError> {
        let mut ops = Vec::with_capacity(2);
        if refund > 0 {
            ops.push(Op::Refund { key, bytes: refund });
        }
        ops.push(finished.0);
        self.writer().send(ops)
    }

    /// Stores a freshly issued link (nothing spent) with its `link.issued` record, durably.
    pub async fn issue_link(&self, rec: LinkRecord, issued: Entry) -> Result<(), StoreError> {
        self.writer().commit(vec![Op::PutLink(rec), Op::Append(issued)]).await.map(|_| ())
    }

    /// Sets an order's gate durably, with its activity record; sinks hear of it on commit.
    pub async fn set_gate(&self, order_id: &str, gate: OrderGate, record: Option<Entry>) -> Result<(), StoreError> {
        let order = order_id.to_owned();
        self.writer()
            .txn(move |tx| {
                tx.put_gate(&order, &gate)?;
                if let Some(r) = record {
                    tx.append(r)?;
                }
                Ok(())
            })
            .await
    }

    /// Waits until everything sent before is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.writer().flush().await
    }

    /// Registers a sink for committed gate changes (in commit order, before replies go out).
    pub fn on_gate_change(&self, sink: Weak<dyn GateSink>) {
        self.writer().on_gate_change(sink);
    }

    /// Records a file's SHA-256 once computed, durably.
    pub async fn set_file_sha(
        &self,
        product_id: &str,
        file_id: &str,
        size: u64,
        sha256: String,
    ) -> Result<(), StoreError> {
        let op = Op::SetFileSha { product_id: product_id.to_owned(), file_id: file_id.to_owned(), size, sha256 };
        self.writer().commit(vec![op]).await.map(|_| ())
    }

    /// Commit counters and latencies (for `/metrics` and benchmarks).
    pub fn stats(&self) -> &crate::store::stats::WriterStats {
        &self.writer().stats
    }
}
