//! `cargo bench --bench load [-- SCENARIO...]`: keydrop in-process on loopback, driven by a real
//! HTTP/1.1 client over keep-alive connections. Durable counting and logging are on, as in
//! production. Scenarios: `4k` (4 KiB files, 64 connections: downloads/s, p50/p99 time to first
//! byte), `4k-orders` (the same over links of 2,000 different orders and tenants), `1m` (1 MiB files, 64 connections: GB/s), `1g` (one 1 GiB file, one stream: GB/s),
//! `race` (1,000 concurrent GETs on a fresh 50-use link), `growth` (4 KiB downloads walking 1,000
//! links, then walking 1,000,000 links stored — every request a cold link), `mem` (resident memory
//! with 1,000 concurrent slow downloads of a 1 GiB file), `activity` (1,000,000 records over 10,000
//! orders and 1,000 tenants, then `GET /api/activity`'s query filtered by order, tenant and kind,
//! and a one-hour window: median time per page of 100). `KEYDROP_BENCH_SECS` sets the length of
//! the timed runs (default 10). Prints a table and writes `target/bench-load.json`.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use keydrop::catalog::FileSpec;
use keydrop::config::Config;
use keydrop::links::{issue_link, IssueRequest};
use keydrop::store::{Access, OrderGate};
use keydrop::{run, AppState, Listeners};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Bench {
    _dir: tempfile::TempDir,
    state: Arc<AppState>,
    addr: std::net::SocketAddr,
}

async fn start() -> Bench {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut cfg = Config::default();
    cfg.storage.data_dir = dir.path().join("data");
    cfg.storage.files_dir = dir.path().join("files");
    cfg.links.max_uses = 1_000_000; // budgets never run out in the timed runs
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = public.local_addr().unwrap();
    cfg.server.public_base_url = format!("http://{addr}");
    let state = AppState::open(cfg).await.unwrap();
    tokio::spawn(run(Listeners { public, admin }, state.clone(), std::future::pending()));
    state.ledger.set_access("bench-order", OrderGate { access: Access::Open, tenant_id: None }, None).await.unwrap();
    Bench { _dir: dir, state, addr }
}

impl Bench {
    async fn file(&self, id: &str, size: u64) {
        let path = self.state.config.storage.files_dir.join(id);
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(size).unwrap(); // sparse: zeros, served from the page cache
        drop(f);
        // Warm the page cache.
        let _ = std::fs::read(&path).map(|v| v.len());
        self.state
            .catalog
            .attach(FileSpec {
                file_id: id.into(),
                product_id: "bench".into(),
                path: id.into(),
                filename: format!("{id}.bin"),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    /// Issues `n` links concurrently (they share group commits) and returns their paths.
    async fn links(&self, file_id: &str, n: usize, max_uses: u32) -> Vec<String> {
        self.links_of_orders(file_id, n, max_uses, 1).await
    }

    /// Like [`Bench::links`], the links spread over `orders` orders (and as many tenants), so the
    /// activity records land on many index keys.
    async fn links_of_orders(&self, file_id: &str, n: usize, max_uses: u32, orders: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let state = self.state.clone();
            let file_id = file_id.to_owned();
            let (order_id, tenant_id) = match i % orders {
                0 if orders == 1 => ("bench-order".to_owned(), None),
                k => (format!("bench-order-{k}"), Some(format!("{k:08}-0000-4000-8000-000000000000"))),
            };
            set.spawn(async move {
                let l = issue_link(
                    &state,
                    IssueRequest {
                        order_id,
                        tenant_id,
                        product_id: "bench".into(),
                        file_id,
                        ttl_secs: None,
                        max_uses: Some(max_uses),
                        now: chrono::Utc::now(),
                        actor: "bench".into(),
                        ip: None,
                        user_agent: None,
                    },
                )
                .await
                .unwrap();
                l.url.split_once("/d/").map(|(_, t)| format!("/d/{t}")).unwrap()
            });
            if i % 512 == 511 {
                while let Some(r) = set.join_next().await {
                    out.push(r.unwrap());
                }
            }
        }
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap());
        }
        out
    }
}

impl Bench {
    /// Stores `n` links straight through the writer, 10,000 per commit (setup for `growth`).
    async fn bulk_links(&self, file_id: &str, n: usize) -> Vec<String> {
        let size = self.state.catalog.record("bench", file_id).await.unwrap().unwrap().size;
        let mut paths = Vec::with_capacity(n);
        let mut ops = Vec::with_capacity(10_000);
        for i in 0..n {
            let id: [u8; 16] = keydrop::secrets::random_bytes();
            let expires = chrono::Utc::now().timestamp() + 86_400;
            paths.push(format!("/d/{}", self.state.keys.sign(&id, expires)));
            ops.push(keydrop::store::embedded::Op::PutLink(keydrop::store::LinkRecord {
                link_id: hex::encode(id),
                order_id: "bench-order".into(),
                tenant_id: None,
                product_id: "bench".into(),
                file_id: file_id.into(),
                key_id: self.state.keys.signing_key_id(),
                issued_at: 0,
                expires_at: expires,
                max_uses: 1_000_000,
                unit: size.max(1),
            }));
            if ops.len() == 10_000 || i + 1 == n {
                self.state
                    .store
                    .embedded()
                    .expect("benchmarks run on the embedded backend")
                    .writer()
                    .commit(std::mem::take(&mut ops))
                    .await
                    .unwrap();
            }
        }
        paths
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A download manager on a slow line: 4 KiB reads every 50 ms on a small receive buffer
/// (its own memory stays tiny, so the process's RSS is the server's).
async fn slow_client(addr: std::net::SocketAddr, path: &str, stop: Arc<AtomicBool>, got: Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    let _ = sock.set_recv_buffer_size(16 * 1024);
    let Ok(mut s) = sock.connect(addr).await else { return };
    let _ = s.write_all(format!("GET {path} HTTP/1.1\r\nHost: b\r\n\r\n").as_bytes()).await;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got.fetch_add(n as u64, Ordering::Relaxed),
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: std::net::SocketAddr) -> Sender {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// One GET on a keep-alive connection: (status, time to response head, body bytes).
async fn fetch(sender: &mut Sender, path: &str) -> (u16, Duration, u64) {
    let t0 = Instant::now();
    sender.ready().await.unwrap();
    let req = http::Request::get(path).header("host", "bench").body(Empty::new()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let ttfb = t0.elapsed();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        n += f.unwrap().into_data().map(|d| d.len() as u64).unwrap_or(0);
    }
    (status, ttfb, n)
}

struct LoadResult {
    requests: u64,
    refused: u64,
    bytes: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn load(addr: std::net::SocketAddr, paths: Arc<Vec<String>>, conns: usize, secs: u64) -> LoadResult {
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (stop, next, paths) = (stop.clone(), next.clone(), paths.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await;
            let (mut lat, mut refused, mut bytes) = (Vec::new(), 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize % paths.len();
                let (st, ttfb, n) = fetch(&mut sender, &paths[i]).await;
                if st != 200 {
                    refused += 1;
                }
                lat.push(ttfb);
                bytes += n;
            }
            (lat, refused, bytes)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut refused, mut bytes) = (Vec::new(), 0, 0);
    for t in tasks {
        let (l, r, b) = t.await.unwrap();
        lat.extend(l);
        refused += r;
        bytes += b;
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    LoadResult { requests: lat.len() as u64, refused, bytes, secs, p50_ms: pct(0.50), p99_ms: pct(0.99) }
}

/// The writer alone: groups of 64 downloads' records (started + finished, 2,000 orders and
/// tenants), journalled as under load; the best of five runs of 2,000 groups, in µs per download.
async fn writer_records(b: &Bench, json: &mut serde_json::Map<String, serde_json::Value>) {
    use keydrop::activity::{Entry, Kind};
    let writer = b.state.store.embedded().expect("benchmarks run on the embedded backend").writer().clone();
    let mut best = f64::MAX;
    let mut n = 0u64;
    for _ in 0..5 {
        let t0 = Instant::now();
        for _ in 0..2_000 {
            let mut pending = Vec::with_capacity(64);
            for _ in 0..64 {
                n += 1;
                let mut ops = Vec::with_capacity(3);
                ops.push(keydrop::store::embedded::Op::Reserve { key: [(n % 251) as u8; 24], bytes: 4096 });
                for kind in [Kind::DownloadStarted, Kind::DownloadFinished] {
                    let mut e = Entry::new(kind);
                    e.order_id = Some(format!("ord_{:06}", n % 2_000));
                    e.tenant_id = Some(format!("{:08}-0000-4000-8000-000000000000", n % 2_000));
                    e.link_id = Some(format!("{n:032x}"));
                    e.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64) bench".into());
                    e.bytes = Some(4096);
                    ops.push(keydrop::store::embedded::Op::append(e));
                }
                pending.push(writer.send_durable(ops).unwrap());
            }
            for p in pending {
                p.await.unwrap().unwrap();
            }
        }
        best = best.min(t0.elapsed().as_secs_f64() * 1e6 / 128_000.0);
    }
    println!("{:<34} {:>14}", "writer: 64-download groups", format!("{best:.2} µs/download"));
    json.insert("writer_us_per_download".into(), best.into());
}

/// Stores 1,000,000 records, then times filtered queries (the store call behind `GET /api/activity`).
async fn activity_queries(b: &Bench, json: &mut serde_json::Map<String, serde_json::Value>) {
    use keydrop::activity::{Entry, Kind, Query};
    let kinds = [Kind::DownloadStarted, Kind::DownloadFinished, Kind::LinkIssued, Kind::KeyAccessed];
    let t0 = Instant::now();
    let writer = b.state.store.embedded().expect("benchmarks run on the embedded backend").writer().clone();
    for c in 0..100u64 {
        let ops = (0..10_000u64)
            .map(|i| {
                let n = c * 10_000 + i;
                let mut e = Entry::new(kinds[(n % 4) as usize]);
                e.order_id = Some(format!("ord_{:06}", n % 10_000));
                e.tenant_id = Some(format!("{:08}-0000-4000-8000-000000000000", n % 1_000));
                e.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64) bench".into());
                e.bytes = Some(n);
                keydrop::store::embedded::Op::append(e)
            })
            .collect();
        writer.commit(ops).await.unwrap();
    }
    let stored = t0.elapsed().as_secs_f64();
    println!("{:<34} {:>14}", "  (stored 1,000,000 records)", format!("{stored:.1} s"));
    let any: Vec<_> = b.state.store.records_after(500_000, 1).await.unwrap();
    let at = keydrop::activity::at_micros(&any[0].at);
    let cases = [
        ("activity: by order (page of 100)", Query { order_id: Some("ord_004321".into()), ..Default::default() }),
        (
            "activity: by tenant (page of 100)",
            Query { tenant_id: Some("00000321-0000-4000-8000-000000000000".into()), ..Default::default() },
        ),
        ("activity: by kind (page of 100)", Query { kind: Some(Kind::KeyAccessed), ..Default::default() }),
        (
            "activity: one-hour window",
            Query {
                from_us: Some(at.saturating_sub(1_800_000_000)),
                to_us: Some(at + 1_800_000_000),
                ..Default::default()
            },
        ),
    ];
    for (name, q) in cases {
        let q = Query { limit: 100, after_seq: 400_000, ..q };
        let mut took = Vec::new();
        for _ in 0..21 {
            let t = Instant::now();
            let (recs, _) = b.state.store.query_activity(&q).await.unwrap();
            took.push(t.elapsed().as_secs_f64() * 1e3);
            assert!(!recs.is_empty(), "{name}: nothing found");
        }
        took.sort_by(f64::total_cmp);
        println!("{name:<34} {:>14}", format!("{:.2} ms", took[10]));
        json.insert(format!("activity_{}_ms", name.split_whitespace().nth(2).unwrap_or("x")), took[10].into());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |s: &str| args.is_empty() || args.iter().any(|a| a == s);
    let secs: u64 = std::env::var("KEYDROP_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut json = serde_json::Map::new();
    rt.block_on(async {
        let b = start().await;
        println!("{:<34} {:>14} {:>12} {:>10} {:>10}", "scenario", "rate", "throughput", "p50 ttfb", "p99 ttfb");
        if want("4k") {
            b.file("f4k", 4096).await;
            let paths = Arc::new(b.links("f4k", 2_000, 1_000).await);
            let r = load(b.addr, paths, 64, secs).await;
            let rate = r.requests as f64 / r.secs;
            println!(
                "{:<34} {:>10.0} /s {:>9.1} MB/s {:>7.2} ms {:>7.2} ms",
                "4 KiB x 64 conns",
                rate,
                r.bytes as f64 / r.secs / 1e6,
                r.p50_ms,
                r.p99_ms
            );
            assert_eq!(r.refused, 0, "budget ran out: issue more links");
            json.insert("4k_downloads_per_sec".into(), rate.into());
            json.insert("4k_p50_ttfb_ms".into(), r.p50_ms.into());
            json.insert("4k_p99_ttfb_ms".into(), r.p99_ms.into());
        }
        if want("4k-orders") {
            b.file("f4ko", 4096).await;
            let paths = Arc::new(b.links_of_orders("f4ko", 2_000, 1_000, 2_000).await);
            let r = load(b.addr, paths, 64, secs).await;
            let rate = r.requests as f64 / r.secs;
            println!("{:<34} {:>10.0} /s {:>24.2} ms", "4 KiB, 2,000 links of 2,000 orders", rate, r.p99_ms);
            assert_eq!(r.refused, 0, "budget ran out: issue more links");
            json.insert("4k_2000_orders_per_sec".into(), rate.into());
        }
        if want("1m") {
            b.file("f1m", 1 << 20).await;
            let paths = Arc::new(b.links("f1m", 1_000, 1_000).await);
            let r = load(b.addr, paths, 64, secs).await;
            let gbps = r.bytes as f64 / r.secs / 1e9;
            println!(
                "{:<34} {:>10.0} /s {:>9.2} GB/s {:>7.2} ms {:>7.2} ms",
                "1 MiB x 64 conns",
                r.requests as f64 / r.secs,
                gbps,
                r.p50_ms,
                r.p99_ms
            );
            json.insert("1m_gb_per_sec".into(), gbps.into());
        }
        if want("1g") {
            b.file("f1g", 1 << 30).await;
            let paths = b.links("f1g", 1, 50).await;
            let mut sender = connect(b.addr).await;
            fetch(&mut sender, &paths[0]).await; // warm
            let t0 = Instant::now();
            let (st, _, n) = fetch(&mut sender, &paths[0]).await;
            let gbps = n as f64 / t0.elapsed().as_secs_f64() / 1e9;
            assert_eq!((st, n), (200, 1 << 30));
            println!("{:<34} {:>14} {:>9.2} GB/s", "1 GiB, one stream", "", gbps);
            json.insert("1g_single_stream_gb_per_sec".into(), gbps.into());
        }
        if want("growth") {
            b.file("fg", 4096).await;
            let small = Arc::new(b.links("fg", 1_000, 1_000_000).await);
            let r = load(b.addr, small.clone(), 64, secs).await;
            let rate_1k = r.requests as f64 / r.secs;
            println!("{:<34} {:>10.0} /s {:>24.2} ms", "4 KiB, 1k links stored", rate_1k, r.p99_ms);
            let t0 = Instant::now();
            let many = Arc::new(b.bulk_links("fg", 1_000_000 - 1_000).await);
            println!("{:<34} {:>14}", "  (stored 999,000 more links)", format!("{:.1} s", t0.elapsed().as_secs_f64()));
            let r = load(b.addr, small, 64, secs).await;
            let rate_1m_hot = r.requests as f64 / r.secs;
            println!("{:<34} {:>10.0} /s {:>24.2} ms", "4 KiB, 1M stored, same 1k walked", rate_1m_hot, r.p99_ms);
            let r = load(b.addr, many, 64, secs).await;
            let rate_1m = r.requests as f64 / r.secs;
            println!("{:<34} {:>10.0} /s {:>24.2} ms", "4 KiB, 1M stored, all walked (cold)", rate_1m, r.p99_ms);
            println!(
                "{:<34} {:>14}",
                "  ratios vs 1k",
                format!("{:.2} / {:.2}", rate_1m_hot / rate_1k, rate_1m / rate_1k)
            );
            json.insert("growth_1m_stored_1k_walked_per_sec".into(), rate_1m_hot.into());
            json.insert("growth_1k_per_sec".into(), rate_1k.into());
            json.insert("growth_1m_per_sec".into(), rate_1m.into());
        }
        if want("mem") {
            b.file("fmem", 1 << 30).await;
            let path = b.links("fmem", 1, 1_000_000).await.remove(0);
            let before = rss_mib();
            let stop = Arc::new(AtomicBool::new(false));
            let got = Arc::new(AtomicU64::new(0));
            let mut clients = Vec::new();
            for _ in 0..1000 {
                let (stop, got, path, addr) = (stop.clone(), got.clone(), path.clone(), b.addr);
                clients.push(tokio::spawn(async move { slow_client(addr, &path, stop, got).await }));
            }
            tokio::time::sleep(Duration::from_secs(secs.min(10))).await;
            let during = rss_mib();
            stop.store(true, Ordering::Relaxed);
            for c in clients {
                let _ = c.await;
            }
            println!(
                "{:<34} {:>14}",
                "1,000 slow 1 GiB downloads",
                format!(
                    "RSS {during:.0} MiB (idle {before:.0}), {:.0} MiB sent",
                    got.load(Ordering::Relaxed) as f64 / 1048576.0
                )
            );
            json.insert("mem_rss_mib_1000_slow".into(), during.into());
        }
        if want("writer") {
            writer_records(&b, &mut json).await;
        }
        if want("activity") {
            activity_queries(&b, &mut json).await;
        }
        if want("race") {
            b.file("frace", 64 * 1024).await;
            let path = Arc::new(b.links("frace", 1, 50).await.remove(0));
            let barrier = Arc::new(tokio::sync::Barrier::new(1000));
            let addr = b.addr;
            let tasks: Vec<_> = (0..1000)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    tokio::spawn(async move {
                        let mut s = connect(addr).await;
                        barrier.wait().await;
                        fetch(&mut s, &path).await.0
                    })
                })
                .collect();
            let mut got = 0;
            for t in tasks {
                got += u32::from(t.await.unwrap() == 200);
            }
            println!("{:<34} {:>14}", "race: 1000 GETs on a 50-use link", format!("{got} got it"));
            json.insert("race_served".into(), got.into());
        }
    });
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../bench-load.json");
    std::fs::write(&out, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("figures written to {}", out.display());
}
