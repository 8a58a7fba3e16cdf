//! Commit counters both backends keep, for `/metrics` and the benchmarks' batch-size figures.

use std::sync::atomic::AtomicU64;

/// Counters for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub commits: AtomicU64,
    pub batches: AtomicU64,
    pub ops: AtomicU64,
    pub failed_commits: AtomicU64,
    /// Checkpoints handed to a thread of their own (the embedded backend's, see its `checkpointer`).
    pub checkpoints: AtomicU64,
    /// Commit latency and batch size, exported at `/metrics`.
    pub metrics: crate::metrics::WriterMetrics,
}

impl WriterStats {
    pub fn observe_commit(&self, batches: usize, took: std::time::Duration) {
        self.metrics.observe_commit(batches, took);
    }
}
