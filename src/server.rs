//! The listeners: accept, cap, serve HTTP/1.1 and HTTP/2 (h2c) with hyper, and shut down
//! gracefully.
//!
//! [`run`] takes already-bound listeners (tests bind `127.0.0.1:0`), the shared state and a
//! shutdown future. Each connection runs in its own task, which also listens for two signals:
//! an order's gate closing (if an HTTP/1 download of that order streams on this connection, the
//! connection is dropped at once, even if the client stopped reading; an HTTP/2 download's stream
//! alone is reset, see [`crate::h2_streams`]) and the shutdown phases.
//!
//! Shutdown: stop accepting; refuse new downloads with `503`; ask every connection to finish its
//! current responses and close (`graceful_shutdown`); after `shutdown_grace_secs`, drop whatever is
//! left (each dropped body refunds its unsent bytes); then flush the store and stop its writer.

use crate::body::Body;
use crate::counted::{Counted, Written};
use crate::download::{self, Client};
use crate::error::ApiError;
use crate::metrics::{Code, ListenerLabel, RouteStatus};
use crate::observe::Observed;
use crate::router::{route, Endpoint, Listener};
use crate::state::AppState;
use crate::stream::ConnDownloads;
use dashmap::DashMap;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::Instrument;

/// `TCP_NOTSENT_LOWAT` for accepted sockets, in bytes.
pub const NOTSENT_LOWAT: u32 = 128 * 1024;

/// The two bound listeners.
pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd)]
enum Phase {
    Running,
    Draining,
    Stopped,
}

/// Serves until `shutdown` resolves, then shuts down gracefully (see the module docs).
pub async fn run(
    listeners: Listeners,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    // Every connection task holds a clone; when all are gone, `recv` returns `None`.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let cap = state.config.server.max_connections;
    // Each listener counts its own connections per address (API.md §5.2): downloads from an
    // office or a proxy must not lock that address out of the admin API.
    let public = tokio::spawn(accept_loop(
        listeners.public,
        Listener::Public,
        state.clone(),
        phase_rx.clone(),
        alive_tx.clone(),
        Arc::new(Semaphore::new(cap)),
        Arc::new(PerIp::default()),
    ));
    let admin = tokio::spawn(accept_loop(
        listeners.admin,
        Listener::Admin,
        state.clone(),
        phase_rx,
        alive_tx.clone(),
        Arc::new(Semaphore::new(cap)),
        Arc::new(PerIp::default()),
    ));
    drop(alive_tx);
    let flusher = tokio::spawn(flush_refusals(state.clone()));
    let lifecycle = tokio::spawn(crate::lifecycle::run(state.clone()));

    shutdown.await;
    tracing::info!("shutting down: no new connections, draining downloads");
    state.begin_draining();
    let _ = phase_tx.send(Phase::Draining);
    let _ = public.await;
    let _ = admin.await;
    let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
    if tokio::time::timeout(grace, alive_rx.recv()).await.is_err() {
        tracing::warn!("grace period over: cutting off the downloads still running");
        let _ = phase_tx.send(Phase::Stopped);
        let _ = tokio::time::timeout(Duration::from_secs(5), alive_rx.recv()).await;
    }
    flusher.abort();
    lifecycle.abort();
    state.store.append_later(state.refusals.drain());
    state.store.close().await;
    tracing::info!("store flushed; stopped");
    Ok(())
}

/// Records the refusals held for their second, about every 250 ms (see [`crate::refusals`]).
async fn flush_refusals(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        state.store.append_later(state.refusals.due(Instant::now()));
    }
}

async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    state: Arc<AppState>,
    mut phase: watch::Receiver<Phase>,
    alive: mpsc::Sender<()>,
    slots: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
) {
    let label = ListenerLabel { listener: if kind == Listener::Public { "public" } else { "admin" } };
    let tls = state.tls.as_ref().filter(|t| t.serves(kind == Listener::Public)).is_some();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = phase.wait_for(|p| *p != Phase::Running) => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Keep at most ~128 KiB of *unsent* data in the kernel (in-flight data is still governed
        // by the congestion window, so throughput is unaffected): when a client disconnects, what
        // sat unsent was never delivered, and this bounds how much of it a cut-off download is
        // charged for.
        let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(NOTSENT_LOWAT);
        let slot = slots.clone().try_acquire_owned().ok();
        let ip_slot = per_ip.acquire(peer.ip(), state.config.server.max_connections_per_ip);
        let (counted, written, read) = Counted::new(stream);
        let state = state.clone();
        let (Some(slot), Some(ip_slot)) = (slot, ip_slot) else {
            state.metrics.refused_connections.get_or_create(&label).inc();
            tokio::spawn(async move {
                if let Some(io) = handshake(counted, tls, &state).await {
                    refuse_over_cap(io).await;
                }
            });
            continue;
        };
        let (phase, alive, label) = (phase.clone(), alive.clone(), label.clone());
        tokio::spawn(async move {
            let open = state.metrics.open_connections.get_or_create(&label).clone();
            open.inc();
            if let Some(io) = handshake(counted, tls, &state).await {
                let conn = Conn { written, read, peer, kind };
                match io {
                    Io::Plain(io) => serve_connection(io, conn, state, phase).await,
                    Io::Tls(io) => serve_connection(*io, conn, state, phase).await,
                }
            }
            open.dec();
            drop((slot, ip_slot, alive));
        });
    }
}

/// A connection's transport, after the TLS handshake if the listener has TLS.
enum Io {
    Plain(TokioIo<Counted>),
    Tls(Box<TokioIo<tokio_rustls::server::TlsStream<Counted>>>),
}

/// Runs the TLS handshake (bounded by the header-read timeout) when `tls`; `None` if it failed.
async fn handshake(counted: Counted, tls: bool, state: &AppState) -> Option<Io> {
    let acceptor = match state.tls.as_ref() {
        Some(t) if tls => t.acceptor(),
        _ => return Some(Io::Plain(TokioIo::new(counted))),
    };
    let limit = Duration::from_secs(state.config.server.header_read_timeout_secs);
    match tokio::time::timeout(limit, acceptor.accept(counted)).await {
        Ok(Ok(s)) => Some(Io::Tls(Box::new(TokioIo::new(s)))),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// Open connections per client IP address.
#[derive(Default)]
pub struct PerIp(DashMap<IpAddr, usize>);

/// One connection's place in its IP's count; gives it back on drop.
pub struct IpSlot {
    map: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn acquire(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<IpSlot> {
        let mut n = self.0.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(IpSlot { map: self.clone(), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.map.0.remove_if_mut(&self.ip, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

/// Answers every request on an over-cap connection with `503` and closes it.
async fn refuse_over_cap(io: Io) {
    let svc = service_fn(|req: Request<Incoming>| async move {
        let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok());
        let lang = req.headers().get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
        Ok::<_, Infallible>(ApiError::Unavailable { retry_after_secs: 1 }.into_response(accept, lang))
    });
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1().keep_alive(false);
    let limit = Duration::from_secs(10);
    let _ = match io {
        Io::Plain(io) => tokio::time::timeout(limit, b.serve_connection(io, svc)).await,
        Io::Tls(io) => tokio::time::timeout(limit, b.serve_connection(*io, svc)).await,
    };
}

/// What a connection task knows about its connection.
struct Conn {
    written: Written,
    read: Written,
    peer: SocketAddr,
    kind: Listener,
}

async fn serve_connection<I>(io: I, c: Conn, state: Arc<AppState>, mut phase: watch::Receiver<Phase>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let Conn { written, read, peer, kind } = c;
    let downloads = ConnDownloads::new(Some(written.clone()));
    let mut revocations = state.ledger.revocations();
    let cfg = &state.config.server;
    let idle = Duration::from_secs(cfg.idle_timeout_secs);
    // HTTP/2 streams run as tasks a revocation can end one by one (see `h2_streams`).
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(crate::h2_streams::StreamExec::new(state.ledger.revocations()));
    // hyper's buffer cap bounds request heads (larger ones get 431) and what hyper queues of a
    // body; the default 64 KiB keeps about one chunk queued, which bounds what a cut-off
    // download can be charged beyond what it received.
    //
    // `half_close`: a client that shuts down its sending side after its request still gets the
    // response (RFC 9112 §9.6), and hyper does not read the socket while a response is being
    // made. Without it, hyper reads mid-message to notice a client gone early — and first
    // reserves 8 KiB of read buffer, which is a new allocation per request while the request's
    // head (held by the handler) shares the old one. A client that goes away is noticed when the
    // response's bytes cannot be written (README, "Decisions where the contract is silent").
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(cfg.header_read_timeout_secs))
        .half_close(true)
        .keep_alive(true)
        .max_headers(cfg.max_headers)
        .max_buf_size(cfg.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(cfg.max_header_bytes as u32);
    let svc = {
        let (state, downloads) = (state.clone(), downloads.clone());
        // The peer's text for every request's span, formatted once per connection.
        let peer_text: Arc<str> = peer.to_string().into();
        service_fn(move |req| {
            let (state, downloads, peer_text) = (state.clone(), downloads.clone(), peer_text.clone());
            async move { Ok::<_, Infallible>(handle(req, kind, peer, &peer_text, &state, &downloads).await) }
        })
    };
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut draining = false;
    // Idle: no byte moved either way since the last tick, for `idle` in a row.
    let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut moved, mut still_since) = (0u64, Instant::now());
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            Ok(()) = revocations.changed() => {
                if downloads.any_closed() {
                    tracing::info!(%peer, "order revoked or suspended: closing a connection with a download in flight");
                    return;
                }
            }
            Ok(_) = phase.changed() => {
                let p = *phase.borrow_and_update();
                if p == Phase::Stopped {
                    return;
                }
                if p == Phase::Draining && !draining {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tick.tick() => {
                let now_moved = written.get() + read.get();
                if now_moved != moved {
                    (moved, still_since) = (now_moved, Instant::now());
                } else if still_since.elapsed() >= idle {
                    tracing::debug!(%peer, idle_secs = idle.as_secs(), "closing an idle connection");
                    return;
                }
            }
        }
    }
}

/// One request: route, check the caller, dispatch, render refusals; one log line per request.
async fn handle(
    req: Request<Incoming>,
    kind: Listener,
    peer: SocketAddr,
    // `peer` as text, for the span (formatted once per connection).
    peer_text: &str,
    state: &Arc<AppState>,
    downloads: &ConnDownloads,
) -> Response<Observed> {
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    let endpoint = route(kind, req.method(), &path);
    let route_name = endpoint.name();
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        route = endpoint.name(),
        peer = %peer_text,
        link_id = tracing::field::Empty,
        principal = tracing::field::Empty,
    );
    let span_for_body = span.clone();
    async move {
        let (parts, body) = req.into_parts();
        let headers = &parts.headers;
        // A future is as large as its largest branch, and hyper moves the request's future
        // (memcpy) as it starts it: the admin, page and readiness futures (kilobytes each) are
        // boxed so that a download's does not pay to copy them (README, "Benchmarks").
        let result = match endpoint {
            Endpoint::Healthz => Ok(json_ok("{\"status\":\"ok\"}")),
            Endpoint::Readyz => Box::pin(readiness(state)).await,
            Endpoint::Metrics => Ok(metrics_text(state)),
            Endpoint::OpenApi => Ok(openapi_json()),
            Endpoint::Download { token } => {
                let exclusive_wire = parts.version < http::Version::HTTP_2;
                let client = Client { peer, exclusive_wire, headers, conn: downloads };
                download::handle(state, &parts.method, token, &client, state.now()).await
            }
            Endpoint::Admin(call) => {
                Box::pin(crate::admin::handle(state, call, &parts.method, headers, parts.uri.query(), body, peer)).await
            }
            Endpoint::Ui => {
                Box::pin(crate::ui::handle(
                    state,
                    &parts.method,
                    parts.uri.path(),
                    parts.uri.query(),
                    headers,
                    body,
                    peer,
                ))
                .await
            }
            Endpoint::MethodNotAllowed { allow } => Err(ApiError::MethodNotAllowed { allow }),
            Endpoint::NotFound => Err(ApiError::NotFound),
        };
        let resp = result.unwrap_or_else(|e| {
            state.metrics.refusals.get_or_create(&Code { code: e.code() }).inc();
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
            let lang = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
            e.into_response(accept, lang)
        });
        let status = resp.status().as_u16();
        state.metrics.requests.get_or_create(&RouteStatus { route: route_name, status }).inc();
        let sent = state.metrics.bytes_sent.clone();
        resp.map(|b| Observed::new(b, status, started, span_for_body, sent))
    }
    .instrument(span)
    .await
}

/// `/readyz`: 200 when the server takes new work — not shutting down, and a commit through the
/// store's writer completes within two seconds (so the disk accepts writes); else `503`.
async fn readiness(state: &AppState) -> Result<Response<Body>, ApiError> {
    if state.is_draining() {
        return Err(ApiError::Unavailable { retry_after_secs: 5 });
    }
    if !state.ledger.is_fresh() {
        tracing::error!("not ready: order states not confirmed within cluster.max_gate_staleness_ms");
        return Err(ApiError::Unavailable { retry_after_secs: 1 });
    }
    match tokio::time::timeout(Duration::from_secs(2), state.store.commit_check()).await {
        Ok(Ok(())) => Ok(json_ok("{\"status\":\"ready\"}")),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "not ready: the store cannot commit");
            Err(ApiError::Unavailable { retry_after_secs: 5 })
        }
        Err(_) => {
            tracing::error!("not ready: a commit took more than 2 s");
            Err(ApiError::Unavailable { retry_after_secs: 5 })
        }
    }
}

fn metrics_text(state: &AppState) -> Response<Body> {
    let mut r = Response::new(Body::from_bytes(state.metrics.render()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

fn openapi_json() -> Response<Body> {
    let mut r = Response::new(Body::from_bytes(crate::openapi::bytes()));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn json_ok(body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from_bytes(body));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
