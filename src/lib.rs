//! keydrop: an edge server that delivers purchased software through signed, byte-budgeted
//! download links, with a tamper-evident activity log.
//!
//! Layout (imports point downwards only):
//!
//! | layer    | modules |
//! |----------|---------|
//! | face     | `main.rs` (CLI) · [`server`] (listeners, caps, shutdown) · [`tls`] (rustls, reload on SIGHUP) · [`observe`] (request log line, bytes sent) · [`counted`] (bytes written per socket) · [`h2_streams`] (HTTP/2 streams reset one by one) · [`router`] (Endpoint + who may call it) · [`demo`] · [`verify`] · [`sender`] (`keydrop push revoke`) |
//! | handlers | [`download`] (`GET`/`HEAD /d/…`) · [`stream`] (file body, settle on drop) · [`admin`] (the admin API: auth, catalog, customers, orders, support) |
//! | domain   | [`token`] · [`range`] · [`representation`] · [`ledger`] (link budgets) · [`links`] (issuing) · [`catalog`] (files) · [`activity`] (records, hash chain) · [`refusals`] (refusal records coalesced per link and second) · [`orders`] (lifecycle rules) · [`keys`] (keys at rest) · [`model`] (stored entities) · [`push`] (revocation push signatures) |
//! | store    | [`store`] (redb tables, reads) · [`store::writer`] (single writer, group commit) · [`store::journal`] (the download path's fsynced journal) · [`store::records`] (`activity.log`, the activity records) · [`store::disk`] (reopen after a failed write; the disk-full test hook) |
//! | shared   | [`config`] · [`metrics`] (Prometheus `/metrics`) · [`error`] (problem bodies, status mapping) · [`body`] · [`pages`] (localized refusal pages) · [`secrets`] · [`state`] |
//!
//! A download reads top to bottom in [`download::handle`]. The concurrency story — who writes
//! redb, how group commit batches, why the ledger's memory and the disk cannot disagree — is told
//! in [`store`] and [`ledger`].
#![forbid(unsafe_code)]

pub mod activity;
pub mod admin;
pub mod body;
pub mod catalog;
pub mod config;
pub mod counted;
pub mod demo;
pub mod download;
pub mod error;
pub mod h2_streams;
pub mod keys;
pub mod ledger;
pub mod links;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod orders;
pub mod pages;
pub mod push;
pub mod range;
pub mod refusals;
pub mod representation;
pub mod router;
pub mod secrets;
pub mod sender;
pub mod server;
pub mod state;
pub mod store;
pub mod stream;
pub mod tls;
pub mod token;
pub mod verify;

pub use server::{run, Listeners};
pub use state::AppState;
