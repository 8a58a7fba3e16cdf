//! Prometheus metrics, served as text at `GET /metrics` on the admin listener (no token, like
//! `/healthz`; the admin listener is the operator's side).
//!
//! Counters live where the events happen and are registered here once: the ledger counts
//! reservations, refunds and downloads in flight ([`LedgerMetrics`]); the store's writer times
//! its group commits ([`WriterMetrics`]); the server counts requests, refusals, bytes sent and
//! open connections. Every metric handle is a cheap `Arc` clone, so the hot paths only touch
//! atomics (and, for labelled families, a read lock on the label map).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Code {
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: &'static str,
}

/// What the ledger counts.
#[derive(Clone, Debug)]
pub struct LedgerMetrics {
    pub reservations: Counter,
    pub reserved_bytes: Counter,
    pub refunds: Counter,
    pub refunded_bytes: Counter,
    pub in_flight: Gauge,
    /// From a reservation handed to the store to its being durable (what a download waits for
    /// before its first byte).
    pub reserve_wait: Histogram,
}

impl Default for LedgerMetrics {
    fn default() -> LedgerMetrics {
        LedgerMetrics {
            reservations: Counter::default(),
            reserved_bytes: Counter::default(),
            refunds: Counter::default(),
            refunded_bytes: Counter::default(),
            in_flight: Gauge::default(),
            reserve_wait: latency_histogram(),
        }
    }
}

/// The buckets of the store's latencies (a group commit, a reservation's wait): 50 µs … ~1.6 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// What the store's writer measures per group commit.
#[derive(Clone, Debug)]
pub struct WriterMetrics {
    pub commit_seconds: Histogram,
    pub batch_size: Histogram,
    pub failed_commits: Counter,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics {
            commit_seconds: latency_histogram(),
            // 1 … 4096 batches per commit
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            failed_commits: Counter::default(),
        }
    }
}

impl WriterMetrics {
    pub fn observe_commit(&self, batches: usize, took: std::time::Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.batch_size.observe(batches as f64);
    }
}

/// The server's metrics and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RouteStatus, Counter>,
    pub refusals: Family<Code, Counter>,
    pub bytes_sent: Counter,
    pub open_connections: Family<ListenerLabel, Gauge>,
    pub refused_connections: Family<ListenerLabel, Counter>,
}

impl Metrics {
    pub fn new(ledger: &LedgerMetrics, writer: &WriterMetrics) -> Metrics {
        let mut r = Registry::with_prefix("keydrop");
        let requests = Family::<RouteStatus, Counter>::default();
        r.register("requests", "HTTP requests answered, by route and status", requests.clone());
        let refusals = Family::<Code, Counter>::default();
        r.register("refusals", "Requests refused, by problem code", refusals.clone());
        let bytes_sent = Counter::default();
        r.register_with_unit("sent", "Response body bytes handed to the connection", Unit::Bytes, bytes_sent.clone());
        let open_connections = Family::<ListenerLabel, Gauge>::default();
        r.register("open_connections", "Connections open, by listener", open_connections.clone());
        let refused_connections = Family::<ListenerLabel, Counter>::default();
        r.register(
            "refused_connections",
            "Connections answered 503 over the global or per-IP cap",
            refused_connections.clone(),
        );
        r.register("reservations", "Download reservations made durable", ledger.reservations.clone());
        r.register_with_unit(
            "reserved",
            "Bytes reserved against link budgets",
            Unit::Bytes,
            ledger.reserved_bytes.clone(),
        );
        r.register("refunds", "Downloads that handed unsent bytes back", ledger.refunds.clone());
        r.register_with_unit("refunded", "Unsent bytes handed back", Unit::Bytes, ledger.refunded_bytes.clone());
        r.register("downloads_in_flight", "Downloads streaming now", ledger.in_flight.clone());
        r.register_with_unit(
            "reserve_wait",
            "From a download's reservation handed to the store to its being durable",
            Unit::Seconds,
            ledger.reserve_wait.clone(),
        );
        r.register_with_unit(
            "commit_duration",
            "Group commit latency (apply and fsync)",
            Unit::Seconds,
            writer.commit_seconds.clone(),
        );
        r.register("commit_batch_size", "Requests sharing one group commit", writer.batch_size.clone());
        r.register(
            "failed_commits",
            "Group commits that failed (disk full, I/O errors)",
            writer.failed_commits.clone(),
        );
        Metrics { registry: r, requests, refusals, bytes_sent, open_connections, refused_connections }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_labels() {
        let (l, w) = (LedgerMetrics::default(), WriterMetrics::default());
        let m = Metrics::new(&l, &w);
        m.requests.get_or_create(&RouteStatus { route: "download", status: 200 }).inc();
        l.reserved_bytes.inc_by(4096);
        w.observe_commit(3, std::time::Duration::from_micros(300));
        let text = m.render();
        assert!(text.contains("keydrop_requests_total{route=\"download\",status=\"200\"} 1"), "{text}");
        assert!(text.contains("keydrop_reserved_bytes_total 4096"), "{text}");
        assert!(text.contains("keydrop_commit_batch_size_count 1"), "{text}");
        assert!(text.contains("keydrop_commit_duration_seconds_bucket{le=\"0.0004\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
