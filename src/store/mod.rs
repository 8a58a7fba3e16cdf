//! The storage interface: what the handlers and the ledger ask of the durable state, shaped by
//! them — links and their budgets, order gates, files, the admin API's named commands
//! ([`commands`]), the activity log, health — over one of two backends, chosen once at start:
//!
//! * [`embedded`]: redb in `data_dir`, one node; admission is the ledger's memory, made durable
//!   by one writer thread's group commit (its concurrency story is told there);
//! * [`pg`]: PostgreSQL shared by several nodes; admission is the database's conditional update
//!   inside each node's group transaction.
//!
//! `Store` is an enum, not a trait object: the set of backends is closed (both are compiled in),
//! the calls are `async` (a trait object would box every returned future, a per-request
//! allocation on the download path), and generic commands (`change_order(rule)`) stay generic.
//! Every method below is one `match`; what a backend does is in its own module.
//!
//! A domain refusal (an empty key pool, a window closed) is the inner `Err` of
//! `Result<Result<T, Refusal>, StoreError>` and writes nothing; [`StoreError`] is what storage
//! itself failed at, transient ([`StoreError::is_transient`]: 503 and retry) or not (500).

pub mod commands;
pub mod embedded;
pub mod keys;
pub mod pg;
pub mod stats;

use crate::activity::{Entry, Query, Record};
pub use crate::model::{Access, FileRecord, LinkRecord, OrderGate};
use crate::model::{Customer, CustomerToken, Order, Product, SupportRequest};
use crate::token::LinkId;
use commands::{Attach, BuyRefused, Changed, CustomerExists, OnePerCustomer, OrderChange, Revoked};
pub use embedded::{disk::DiskSwitch, journal, scan_activity_offline, Embedded, JOURNAL_FILE, RECORDS_FILE};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    #[error("encoding: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the store's writer has stopped")]
    Closed,
    #[error("commit failed: {0}")]
    CommitFailed(String),
    #[error("the database is being reopened after a failed write")]
    Unavailable,
    /// A shared database that cannot be reached, or refused for a reason that passes (its
    /// connection lost, shutting down, a deadlock or serialization failure).
    #[error("database unavailable: {0}")]
    DatabaseDown(String),
    #[error("damaged: {0}")]
    Corrupt(String),
    /// An invariant of the code itself failed ("cannot happen").
    #[error("internal: {0}")]
    Bug(String),
}

impl StoreError {
    /// Would the same call likely succeed later — an I/O error, a full disk, a database being
    /// reopened or away, a shutdown? Otherwise the data or the code is wrong (a damaged file, a
    /// stored value that does not decode, a broken invariant) and retrying will not help.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Io(_)
            | StoreError::Closed
            | StoreError::CommitFailed(_)
            | StoreError::Unavailable
            | StoreError::DatabaseDown(_) => true,
            StoreError::Db(e) => matches!(
                e,
                redb::Error::Io(_)
                    | redb::Error::PreviousIo
                    | redb::Error::DatabaseAlreadyOpen
                    | redb::Error::DatabaseClosed
                    | redb::Error::WouldBlock
                    | redb::Error::TransactionInProgress
                    | redb::Error::ReadTransactionStillInUse(_)
            ),
            StoreError::Encoding(_) | StoreError::Corrupt(_) | StoreError::Bug(_) => false,
        }
    }
}

macro_rules! redb_from {
    ($($t:ty),*) => {$(impl From<$t> for StoreError {
        fn from(e: $t) -> Self { StoreError::Db(e.into()) }
    })*};
}
redb_from!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// Hears of every committed gate change, in commit order, before the change's command returns
/// (the ledger: so in-memory gates follow the store), on whichever node it was made.
pub trait GateSink: Send + Sync {
    /// `version` increases with every change (a newer version always wins).
    fn gate_committed(&self, order_id: &str, gate: &OrderGate, version: u64);

    /// Whether order states are confirmed fresh enough to serve (a shared database: false
    /// while it cannot be reached; never called by the embedded backend).
    fn freshness(&self, _fresh: bool) {}
}

/// The durable state, on the backend chosen at start.
pub enum Store {
    Embedded(Embedded),
    Postgres(pg::PgStore),
}

/// One arm per backend: `on!(self, s => expr)` evaluates `expr` with `s` bound to the backend.
macro_rules! on {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Embedded($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// The embedded backend, when that is the one in use (benchmarks drive its writer).
    pub fn embedded(&self) -> Option<&Embedded> {
        match self {
            Store::Embedded(s) => Some(s),
            Store::Postgres(_) => None,
        }
    }

    /// Bumped whenever a commit failed in a way that may leave caches ahead of the store.
    pub fn epoch(&self) -> u64 {
        on!(self, s => s.epoch())
    }

    /// False while the store cannot take writes (a database being reopened, or unreachable).
    pub fn is_open(&self) -> bool {
        on!(self, s => s.is_open())
    }

    /// Makes everything sent so far durable and stops the writer.
    pub async fn close(&self) {
        on!(self, s => s.close().await)
    }

    /// Waits until everything sent before is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        on!(self, s => s.flush().await)
    }

    /// Health: does a commit (or a round trip to the database) complete now?
    pub async fn commit_check(&self) -> Result<(), StoreError> {
        on!(self, s => s.commit_check().await)
    }

    /// Commit counters and latencies (for `/metrics` and benchmarks).
    pub fn stats(&self) -> &stats::WriterStats {
        on!(self, s => s.stats())
    }

    /// Registers the sink committed gate changes reach, in commit order (on any node).
    pub fn on_gate_change(&self, sink: std::sync::Weak<dyn GateSink>) {
        on!(self, s => s.on_gate_change(sink))
    }

    // ---- links and gates ----

    /// A link's record and its spent bytes.
    pub async fn link(&self, id: &LinkId) -> Result<Option<(LinkRecord, u64)>, StoreError> {
        match self {
            Store::Embedded(s) => s.link(id),
            Store::Postgres(s) => s.link(id).await,
        }
    }

    /// Stores a freshly issued link (nothing spent) with its `link.issued` record, durably.
    pub async fn issue_link(&self, rec: LinkRecord, issued: Entry) -> Result<(), StoreError> {
        on!(self, s => s.issue_link(rec, issued).await)
    }

    /// An order's gate and the version it was set at (0: older than any change this process
    /// will hear of — the embedded backend, whose changes all pass through this process).
    pub async fn gate(&self, order_id: &str) -> Result<Option<(OrderGate, u64)>, StoreError> {
        match self {
            Store::Embedded(s) => Ok(s.gate(order_id)?.map(|g| (g, 0))),
            Store::Postgres(s) => s.gate(order_id).await,
        }
    }

    /// Sets an order's gate durably with its record; sinks hear of it on commit.
    pub async fn set_gate(&self, order_id: &str, gate: OrderGate, record: Option<Entry>) -> Result<(), StoreError> {
        on!(self, s => s.set_gate(order_id, gate, record).await)
    }

    // ---- files ----

    pub async fn file(&self, product_id: &str, file_id: &str) -> Result<Option<FileRecord>, StoreError> {
        match self {
            Store::Embedded(s) => s.file(product_id, file_id),
            Store::Postgres(s) => s.file(product_id, file_id).await,
        }
    }

    /// The files attached to a product (retired ones included), in `file_id` order.
    pub async fn files_of(&self, product_id: &str) -> Result<Vec<FileRecord>, StoreError> {
        match self {
            Store::Embedded(s) => s.files_of(product_id),
            Store::Postgres(s) => s.files_of(product_id).await,
        }
    }

    /// Attaches a file unless a different one holds its id (the refusal carries the one there).
    pub async fn attach_file(&self, rec: FileRecord) -> Result<Result<Attach, Box<FileRecord>>, StoreError> {
        on!(self, s => s.attach_file(rec).await)
    }

    /// Retires a file (once); `None` if there is no such file.
    pub async fn retire_file(
        &self,
        product_id: &str,
        file_id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<FileRecord>, StoreError> {
        on!(self, s => s.retire_file(product_id, file_id, now).await)
    }

    /// Records a file's SHA-256 once computed (nothing if the file is gone or changed size).
    pub async fn set_file_sha(
        &self,
        product_id: &str,
        file_id: &str,
        size: u64,
        sha256: String,
    ) -> Result<(), StoreError> {
        on!(self, s => s.set_file_sha(product_id, file_id, size, sha256).await)
    }

    // ---- catalog and customers ----

    pub async fn product(&self, product_id: &str) -> Result<Option<Product>, StoreError> {
        match self {
            Store::Embedded(s) => s.product(product_id),
            Store::Postgres(s) => s.product(product_id).await,
        }
    }

    pub async fn products(&self) -> Result<Vec<Product>, StoreError> {
        match self {
            Store::Embedded(s) => s.products(),
            Store::Postgres(s) => s.products().await,
        }
    }

    /// Creates or replaces a product; `true` if it was created.
    pub async fn put_product(&self, p: Product) -> Result<bool, StoreError> {
        on!(self, s => s.put_product(p).await)
    }

    /// Keys left in a product's pool.
    pub async fn keys_available(&self, product_id: &str) -> Result<usize, StoreError> {
        match self {
            Store::Embedded(s) => s.keys_available(product_id),
            Store::Postgres(s) => s.keys_available(product_id).await,
        }
    }

    /// Adds sealed keys to a product's pool: `(added, available)`.
    pub async fn add_keys(&self, product_id: &str, sealed: Vec<Vec<u8>>) -> Result<(usize, usize), StoreError> {
        on!(self, s => s.add_keys(product_id, sealed).await)
    }

    pub async fn customer(&self, tenant_id: &str) -> Result<Option<Customer>, StoreError> {
        match self {
            Store::Embedded(s) => s.customer(tenant_id),
            Store::Postgres(s) => s.customer(tenant_id).await,
        }
    }

    pub async fn customer_by_domain(&self, domain: &str) -> Result<Option<Customer>, StoreError> {
        match self {
            Store::Embedded(s) => s.customer_by_domain(domain),
            Store::Postgres(s) => s.customer_by_domain(domain).await,
        }
    }

    /// Creates a customer unless its tenant id or domain is taken.
    pub async fn create_customer(&self, c: Customer) -> Result<Result<(), CustomerExists>, StoreError> {
        on!(self, s => s.create_customer(c).await)
    }

    // ---- orders ----

    /// A tenant's orders, newest first.
    pub async fn orders_of(&self, tenant_id: &str) -> Result<Vec<Order>, StoreError> {
        match self {
            Store::Embedded(s) => s.orders_of(tenant_id),
            Store::Postgres(s) => s.orders_of(tenant_id).await,
        }
    }

    /// The subscription orders still active or suspended (what the lifecycle clock looks at).
    pub async fn live_subscriptions(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Embedded(s) => s.live_subscriptions(),
            Store::Postgres(s) => s.live_subscriptions().await,
        }
    }

    /// Adds the live subscriptions stored before the live set existed (once per database).
    pub async fn index_live_subscriptions(&self) -> Result<usize, StoreError> {
        on!(self, s => s.index_live_subscriptions().await)
    }

    pub async fn order(&self, order_id: &str) -> Result<Option<Order>, StoreError> {
        match self {
            Store::Embedded(s) => s.order(order_id),
            Store::Postgres(s) => s.order(order_id).await,
        }
    }

    /// The sealed key an order item took at purchase, if any.
    pub async fn order_key(&self, order_id: &str, item_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Embedded(s) => s.order_key(order_id, item_id),
            Store::Postgres(s) => s.order_key(order_id, item_id).await,
        }
    }

    /// Buys: one key per key-requiring item from the pools (all or nothing), the order, its
    /// open gate and `record`. A `one_per_customer` product that the customer holds in an order
    /// active or suspended as of `one_per_customer.now` refuses the buy, checked in the same
    /// transaction (on PostgreSQL with the customer's row locked), so racing buys cannot both pass.
    pub async fn buy(
        &self,
        order: Order,
        record: Entry,
        one_per_customer: OnePerCustomer,
    ) -> Result<Result<(), BuyRefused>, StoreError> {
        on!(self, s => s.buy(order, record, one_per_customer).await)
    }

    /// Changes an order by a rule (see [`Embedded::change_order`]).
    pub async fn change_order<E: Send + 'static>(
        &self,
        order_id: &str,
        decide: impl FnOnce(Option<Order>, usize) -> Result<Option<OrderChange>, E> + Send + 'static,
    ) -> Result<Result<Changed, E>, StoreError> {
        on!(self, s => s.change_order(order_id, decide).await)
    }

    /// A revocation push (see [`Embedded::revoke`]).
    pub async fn revoke(
        &self,
        order_id: &str,
        cancel: impl FnOnce(Order) -> Order + Send + 'static,
        record: Entry,
    ) -> Result<Revoked, StoreError> {
        on!(self, s => s.revoke(order_id, cancel, record).await)
    }

    // ---- support requests ----

    pub async fn create_support_request(&self, r: SupportRequest, record: Entry) -> Result<(), StoreError> {
        on!(self, s => s.create_support_request(r, record).await)
    }

    /// Stores a partner-issued customer token under its SHA-256 (API.md §5.4).
    pub async fn create_customer_token(&self, sha256: String, t: CustomerToken) -> Result<(), StoreError> {
        on!(self, s => s.create_customer_token(sha256, t).await)
    }

    /// The customer token whose SHA-256 (hex) this is.
    pub async fn customer_token(&self, sha256: &str) -> Result<Option<CustomerToken>, StoreError> {
        match self {
            Store::Embedded(s) => s.customer_token(sha256),
            Store::Postgres(s) => s.customer_token(sha256).await,
        }
    }

    /// A tenant's live tokens.
    pub async fn customer_tokens(&self, tenant_id: &str) -> Result<Vec<CustomerToken>, StoreError> {
        match self {
            Store::Embedded(s) => s.customer_tokens(tenant_id),
            Store::Postgres(s) => s.customer_tokens(tenant_id).await,
        }
    }

    /// Ends a tenant's token at once; `false` when the tenant has no such token.
    pub async fn end_customer_token(&self, tenant_id: &str, token_id: &str) -> Result<bool, StoreError> {
        on!(self, s => s.end_customer_token(tenant_id, token_id).await)
    }

    pub async fn support_request(&self, request_id: &str) -> Result<Option<SupportRequest>, StoreError> {
        match self {
            Store::Embedded(s) => s.support_request(request_id),
            Store::Postgres(s) => s.support_request(request_id).await,
        }
    }

    // ---- the activity log ----

    /// Appends records durably.
    pub async fn append(&self, records: Vec<Entry>) -> Result<(), StoreError> {
        on!(self, s => s.append(records).await)
    }

    /// Queues records that may lag (refusals: they guard no byte) without waiting.
    pub fn append_later(&self, records: Vec<Entry>) {
        on!(self, s => s.append_later(records))
    }

    /// Up to `limit` records with `seq > after_seq`, in order.
    pub async fn records_after(&self, after_seq: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        match self {
            Store::Embedded(s) => s.published().await?.records_after(after_seq, limit),
            Store::Postgres(s) => s.records_after(after_seq, limit).await,
        }
    }

    /// An activity query: the matching records and, if `limit` cut it short, the next cursor.
    pub async fn query_activity(&self, q: &Query) -> Result<(Vec<Record>, Option<u64>), StoreError> {
        match self {
            Store::Embedded(s) => s.published().await?.query_activity(q),
            Store::Postgres(s) => s.query_activity(q).await,
        }
    }

    /// One record exactly as stored.
    pub async fn get_activity_raw(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Embedded(s) => s.published().await?.get_activity_raw(seq),
            Store::Postgres(s) => s.get_activity_raw(seq).await,
        }
    }

    /// Feeds every record, in `seq` order, to `f` (stops when it returns `false`).
    pub async fn scan_activity(&self, f: impl FnMut(Result<Record, String>) -> bool) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.published().await?.scan_activity(f),
            Store::Postgres(s) => s.scan_activity(f).await,
        }
    }

    pub async fn record_count(&self) -> Result<u64, StoreError> {
        match self {
            Store::Embedded(s) => s.published().await?.record_count(),
            Store::Postgres(s) => s.record_count().await,
        }
    }
}
