//! HTTP/2 streams as tasks that a revocation can end one at a time (API.md §5.2: revoking an
//! order cuts that order's downloads, not other downloads sharing an HTTP/2 connection).
//!
//! hyper runs every HTTP/2 stream as a task of its own, spawned through the connection's
//! executor. [`StreamExec`] spawns each inside a [`STREAM`] scope, so a download streaming in it
//! registers its order's gate there (see [`crate::stream`]), and races it against the ledger's
//! gate changes: when the stream's order closes, the task is dropped, and dropping a stream h2
//! has not finished sends `RST_STREAM` for it alone. That matters when the client has stopped
//! reading: hyper then never polls the body, so the body's own gate check cannot run. The
//! dropped body settles as every body does, refunding what it did not send. HTTP/1 connections
//! carry one response at a time and are still cut whole (see [`crate::server`]).

use crate::stream::{StreamGates, STREAM};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;

/// The executor of one connection's HTTP/2 streams.
#[derive(Clone)]
pub struct StreamExec {
    /// Bumped by the ledger on every gate change.
    revocations: watch::Receiver<u64>,
}

impl StreamExec {
    pub fn new(revocations: watch::Receiver<u64>) -> StreamExec {
        StreamExec { revocations }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        let gates = Arc::new(StreamGates::default());
        let mut changes = self.revocations.clone();
        let watched = gates.clone();
        tokio::spawn(STREAM.scope(gates, async move {
            let closed = async {
                loop {
                    if changes.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    if watched.any_closed() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = stream => {}
                () = closed => tracing::info!("order revoked or suspended: resetting its HTTP/2 stream"),
            }
        }));
    }
}
