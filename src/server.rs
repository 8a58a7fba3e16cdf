//! The listeners: accept, cap, serve HTTP/1.1 and HTTP/2 (h2c) with hyper, and shut down
//! gracefully.
//!
//! [`run`] takes already-bound listeners (tests bind `127.0.0.1:0`), the shared state and a
//! shutdown future. Each connection runs in its own task, which also listens for two signals:
//! an order's gate closing (if a download of that order streams on this connection, the
//! connection is dropped at once, even if the client stopped reading) and the shutdown phases.
//!
//! Shutdown: stop accepting; refuse new downloads with `503`; ask every connection to finish its
//! current responses and close (`graceful_shutdown`); after `shutdown_grace_secs`, drop whatever is
//! left (each dropped body refunds its unsent bytes); then flush the store and stop its writer.

use crate::body::Body;
use crate::counted::{Counted, Written};
use crate::download::{self, Client};
use crate::error::ApiError;
use crate::router::{route, Endpoint, Listener};
use crate::state::AppState;
use crate::stream::ConnDownloads;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
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
    let public = tokio::spawn(accept_loop(
        listeners.public,
        Listener::Public,
        state.clone(),
        phase_rx.clone(),
        alive_tx.clone(),
        Arc::new(Semaphore::new(cap)),
    ));
    let admin = tokio::spawn(accept_loop(
        listeners.admin,
        Listener::Admin,
        state.clone(),
        phase_rx,
        alive_tx.clone(),
        Arc::new(Semaphore::new(cap)),
    ));
    drop(alive_tx);

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
    state.store.close().await;
    tracing::info!("store flushed; stopped");
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    state: Arc<AppState>,
    mut phase: watch::Receiver<Phase>,
    alive: mpsc::Sender<()>,
    slots: Arc<Semaphore>,
) {
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
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse_over_cap(TokioIo::new(stream)));
            continue;
        };
        let (counted, written) = Counted::new(stream);
        let io = TokioIo::new(counted);
        let (state, phase, alive) = (state.clone(), phase.clone(), alive.clone());
        tokio::spawn(async move {
            serve_connection(io, written, peer, kind, state, phase).await;
            drop(permit);
            drop(alive);
        });
    }
}

/// Answers every request on an over-cap connection with `503` and closes it.
async fn refuse_over_cap(io: TokioIo<tokio::net::TcpStream>) {
    let svc = service_fn(|req: Request<Incoming>| async move {
        let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok());
        let lang = req.headers().get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
        Ok::<_, Infallible>(ApiError::Unavailable { retry_after_secs: 1 }.into_response(accept, lang))
    });
    let conn = hyper::server::conn::http1::Builder::new().keep_alive(false).serve_connection(io, svc);
    let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
}

async fn serve_connection(
    io: TokioIo<Counted>,
    written: Written,
    peer: SocketAddr,
    kind: Listener,
    state: Arc<AppState>,
    mut phase: watch::Receiver<Phase>,
) {
    let downloads = ConnDownloads::new(Some(written));
    let mut revocations = state.ledger.revocations();
    let svc = {
        let downloads = downloads.clone();
        service_fn(move |req| {
            let (state, downloads) = (state.clone(), downloads.clone());
            async move { Ok::<_, Infallible>(handle(req, kind, peer, &state, &downloads).await) }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A 64 KiB buffer cap keeps at most about one body chunk queued in hyper (and bounds request
    // heads at 64 KiB: larger ones get 431).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true)
        .max_buf_size(64 * 1024);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(256);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut draining = false;
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
        }
    }
}

/// One request: route, check the caller, dispatch, render refusals; one log line per request.
async fn handle(
    req: Request<Incoming>,
    kind: Listener,
    peer: SocketAddr,
    state: &Arc<AppState>,
    downloads: &ConnDownloads,
) -> Response<Body> {
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    let endpoint = route(kind, req.method(), &path);
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        route = endpoint.name(),
        %peer,
        link_id = tracing::field::Empty,
        principal = tracing::field::Empty,
    );
    async move {
        let (parts, body) = req.into_parts();
        let headers = &parts.headers;
        let result = match endpoint {
            Endpoint::Healthz => Ok(json_ok("{\"status\":\"ok\"}")),
            Endpoint::Readyz => readiness(state).await,
            Endpoint::Download { token } => {
                let exclusive_wire = parts.version < http::Version::HTTP_2;
                let client = Client { peer, exclusive_wire, headers, conn: downloads };
                download::handle(state, &parts.method, token, &client, state.now()).await
            }
            Endpoint::Admin(call) => {
                crate::admin::handle(state, call, &parts.method, headers, parts.uri.query(), body, peer).await
            }
            Endpoint::MethodNotAllowed { allow } => Err(ApiError::MethodNotAllowed { allow }),
            Endpoint::NotFound => Err(ApiError::NotFound),
        };
        let resp = result.unwrap_or_else(|e| {
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
            let lang = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
            e.into_response(accept, lang)
        });
        tracing::info!(status = resp.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
        resp
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
    match tokio::time::timeout(Duration::from_secs(2), state.store.writer().flush()).await {
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

fn json_ok(body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from_bytes(body));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
