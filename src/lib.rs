//! keydrop: an edge server that delivers purchased software through signed, byte-budgeted
//! download links, with a tamper-evident activity log.
//!
//! Layout (imports point downwards only; the only upward references are doc links):
//!
//! | layer    | modules |
//! |----------|---------|
//! | face     | `main.rs` (CLI) · [`state`] (the composition root) · [`server`] (listeners, caps, shutdown) · [`h2_streams`] (HTTP/2 streams reset one by one) · [`tls`] (rustls, reload on SIGHUP) · [`observe`] (request log line, bytes sent) · [`logline`] (the plain-text line, formatted directly) · [`logbuf`] (log lines gathered per worker, written together) · [`logfile`] (a log file written back as it grows) · [`counted`] (bytes written per socket; mapped bodies sent by `sendfile`) · [`router`] (Endpoint + who may call it, the admin paths' table) · [`openapi`] (the admin API's document, from the router's table and the answers' types) · [`demo`] · [`verify`] · [`sender`] (`keydrop push revoke`) |
//! | handlers | [`download`] (`GET`/`HEAD /d/…`) · [`stream`] (file body, finishes its reservation on drop) · [`admin`] (the admin API: auth, catalog, customers, orders, support; its answers' types in `admin::views`) · [`ui`] (the dashboard: sessions, pages in four languages, all through [`admin::call`]) · [`links`] (issuing, link state) · [`lifecycle`] (the clock that applies term changes on time) · [`catalog`] (files: attach, retire, the open-file cache) · [`mapped`] (read-only file mappings and the list `sendfile` finds them in: the one `unsafe` module) · [`digest_check`] (a node's copy of a file is the catalog's, on a shared database) |
//! | storage  | [`store`] (the interface, an enum over the backends chosen at start: named commands' results in [`store::commands`], reads, gates, the activity log) · [`store::embedded`] (redb, one node: group commit, journal, record file, filter index, recovery, migration) · [`store::pg`] (PostgreSQL, several nodes: group transactions, the chain head, the gate feed) · [`ledger`] (link budgets, reservations, gates; admission in memory on redb, by the database on PostgreSQL) · [`requester`] (who a download's records name; their bodies from the link's fixed part) |
//! | domain   | [`model`] (entities) · [`orders`] (lifecycle rules) · [`terms`] (subscription terms: calendar months, trials, renewals, retention) · [`token`] · [`range`] · [`representation`] · [`activity`] (records, hash chain) · [`canonical`] (an entry's canonical JSON, written directly) · [`refusals`] (refusal records coalesced) · [`keys`] (keys at rest) · [`push`] (push signatures) — pure: no I/O, `now` passed in |
//! | shared   | [`config`] · [`clock`] · [`metrics`] (Prometheus `/metrics`) · [`error`] (problem bodies, status mapping) · [`body`] · [`pages`] (localized refusal pages) · [`secrets`] |
//!
//! Storage sits above the domain, not below it: its interface is shaped by its callers and
//! speaks the domain's types (`buy(Order)`, `change_order(rule)`), so the domain cannot depend on
//! it. Known exception: [`stream`] uses [`counted::Written`], the socket counter's handle.
//!
//! A download reads top to bottom in [`download::handle`]. The concurrency story — who writes
//! redb, how group commit batches, why the ledger's memory and the disk cannot disagree — is told
//! in [`store::embedded`] and [`ledger`]; across nodes, in [`store::pg`] and its `group` and `gates`.
// `deny`, not `forbid`: `mapped` is the one module allowed `unsafe` (read-only file mappings).
#![deny(unsafe_code)]

/// mimalloc, not glibc's allocator: a download allocates a few dozen small buffers on one worker
/// and frees some of them on another thread (records go to the writer), which glibc's arenas
/// handle with consolidations and locks that showed up in every 4 KiB profile (README,
/// "Benchmarks"). Declared in the library so that tests and benches run on the allocator the
/// binary ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod activity;
pub mod admin;
pub mod body;
pub mod canonical;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod counted;
pub mod demo;
pub mod digest_check;
pub mod download;
pub mod error;
pub mod h2_streams;
pub mod keys;
pub mod ledger;
pub mod lifecycle;
pub mod links;
pub mod logbuf;
pub mod logfile;
pub mod logline;
pub mod mapped;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod openapi;
pub mod orders;
pub mod pages;
pub mod push;
pub mod range;
pub mod refusals;
pub mod representation;
pub mod requester;
pub mod router;
pub mod secrets;
pub mod sender;
pub mod server;
pub mod state;
pub mod store;
pub mod stream;
pub mod terms;
pub mod tls;
pub mod token;
pub mod ui;
pub mod verify;

pub use server::{run, Listeners};
pub use state::AppState;
