//! Crash soak: 20 cycles of `kill -9` at a random moment under mixed load — downloads racing for
//! small budgets, orders bought and links issued, orders cancelled — each followed by an offline
//! `keydrop verify-log` and a restart that must show: no link over its budget, every byte a client
//! received counted, every acknowledged admin write present, the activity chain intact with `seq`
//! gap-free. `KEYDROP_SOAK_SEED` replays a run (the seed is printed).

mod common;

use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CYCLES: u32 = 20;
const FILE_SIZE: usize = 64 * 1024;
const MAX_USES: u64 = 3;

/// xorshift64*: reproducible from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the server acknowledged, and what clients received.
#[derive(Default)]
struct Ledger {
    orders: Vec<String>,
    cancelled: HashSet<String>,
    /// link id → URL path
    links: Vec<(String, String)>,
    received: HashMap<String, u64>,
}

/// One admin call; `Err` when the server is gone (killed mid-call).
async fn call(admin: u16, method: &str, path: &str, role: &str, body: Option<Value>) -> Result<(u16, Value), String> {
    let c: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let raw = body.map(|b| b.to_string()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{admin}{path}"))
        .header("authorization", format!("Bearer {}", token_for(role)))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(raw)))
        .unwrap();
    let fut = async {
        let resp = c.request(req).await.map_err(|e| e.to_string())?;
        let st = resp.status().as_u16();
        let b = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((st, serde_json::from_slice(&b).unwrap_or(Value::Null)))
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await.map_err(|_| "timeout".to_string())?
}

fn write_config(root: &Path, port: u16, admin: u16) -> std::path::PathBuf {
    let mut text = format!(
        "[server]\npublic_listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
         public_base_url = \"http://127.0.0.1:{port}\"\n[storage]\ndata_dir = \"data\"\nfiles_dir = \"files\"\n"
    );
    for role in ["admin_agent", "global_admin"] {
        text += &format!(
            "[[principals]]\nname = \"{role}-user\"\nrole = \"{role}\"\ntoken_sha256 = \"{}\"\n",
            sha256_hex(token_for(role).as_bytes())
        );
    }
    let path = root.join("keydrop.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn start(config: &Path, admin: u16) -> Child {
    let child = spawn_serve(config, "error");
    within(20, "binary ready", async {
        while !matches!(call(admin, "GET", "/healthz", "admin_agent", None).await, Ok((200, _))) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    child
}

/// After a restart: everything acknowledged is there, and no link is over budget or undercounted.
async fn check(admin: u16, l: &Ledger, cycle: u32) {
    for o in &l.orders {
        let (st, v) = call(admin, "GET", &format!("/api/orders/{o}"), "admin_agent", None).await.unwrap();
        assert_eq!(st, 200, "cycle {cycle}: acknowledged order {o} lost: {v}");
        if l.cancelled.contains(o) {
            assert_eq!(v["status"], "cancelled", "cycle {cycle}: acknowledged cancel of {o} lost");
        }
    }
    let budget = MAX_USES * FILE_SIZE as u64;
    for (id, _) in &l.links {
        let (st, v) = call(admin, "GET", &format!("/api/links/{id}"), "admin_agent", None).await.unwrap();
        assert_eq!(st, 200, "cycle {cycle}: acknowledged link {id} lost: {v}");
        let spent = v["bytes_spent"].as_u64().unwrap();
        let got = l.received.get(id).copied().unwrap_or(0);
        assert!(spent <= budget, "cycle {cycle}: link {id} spent {spent} > budget {budget}");
        assert!(got <= spent, "cycle {cycle}: link {id}: clients received {got} bytes but only {spent} were counted");
    }
}

async fn download(port: u16, path: &str, ledger: &Mutex<Ledger>, id: &str) {
    let Ok(Ok(resp)) = tokio::time::timeout(
        Duration::from_secs(5),
        client().request(request("GET", &format!("http://127.0.0.1:{port}{path}"), &[])),
    )
    .await
    else {
        return;
    };
    if resp.status() != 200 {
        return;
    }
    let mut body = resp.into_body();
    while let Ok(Some(Ok(f))) = tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
        if let Some(d) = f.data_ref() {
            *ledger.lock().unwrap().received.entry(id.to_owned()).or_default() += d.len() as u64;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_kill_9_cycles_under_mixed_load_lose_nothing_and_never_overspend() {
    let seed = std::env::var("KEYDROP_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("soak seed {seed} (KEYDROP_SOAK_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("files")).unwrap();
    std::fs::write(root.path().join("files/f.bin"), content(FILE_SIZE, 7)).unwrap();
    let (port, admin) = (free_port(), free_port());
    let config = write_config(root.path(), port, admin);

    let mut child = start(&config, admin).await;
    let product = json!({"name": "P", "kind": "perpetual", "unit_price_cents": 1000, "currency": "USD",
        "cancel_policy": "standard", "unavailable_markets": [], "key_required": false});
    assert_eq!(call(admin, "PUT", "/api/products/p", "global_admin", Some(product)).await.unwrap().0, 201);
    let file = json!({"version": "1", "language": "en", "file_type": "iso", "path": "f.bin", "filename": "f.bin"});
    assert!(call(admin, "PUT", "/api/products/p/files/f", "global_admin", Some(file)).await.unwrap().0 < 300);
    let customer = json!({"tenant_id": TENANT, "domain": "contoso.com", "name": "Contoso", "country": "US"});
    assert_eq!(call(admin, "POST", "/api/customers", "admin_agent", Some(customer)).await.unwrap().0, 201);

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (mut served_total, mut records) = (0u64, String::new());
    for cycle in 1..=CYCLES {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        // Buyer: an order, then a fresh link for it.
        {
            let (ledger, stop) = (ledger.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({"items": [{"product_id": "p", "quantity": 1}]});
                    let Ok((201, o)) =
                        call(admin, "POST", &format!("/api/customers/{TENANT}/orders"), "admin_agent", Some(body))
                            .await
                    else {
                        continue;
                    };
                    let oid = o["order_id"].as_str().unwrap().to_owned();
                    ledger.lock().unwrap().orders.push(oid.clone());
                    let body = json!({"product_id": "p", "max_uses": MAX_USES});
                    if let Ok((201, d)) =
                        call(admin, "POST", &format!("/api/orders/{oid}/downloads"), "admin_agent", Some(body)).await
                    {
                        for l in d["links"].as_array().unwrap() {
                            let url = l["url"].as_str().unwrap();
                            let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
                            ledger.lock().unwrap().links.push((l["link_id"].as_str().unwrap().to_owned(), path));
                        }
                    }
                }
            }));
        }
        // Canceller: now and then, one of the acknowledged orders.
        {
            let (ledger, stop) = (ledger.clone(), stop.clone());
            let mut r = Rng(rng.next() | 1);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let pick = {
                        let l = ledger.lock().unwrap();
                        (!l.orders.is_empty()).then(|| l.orders[r.below(l.orders.len() as u64) as usize].clone())
                    };
                    let Some(oid) = pick else { continue };
                    let body = json!({"acknowledged": true});
                    if let Ok((200, _)) =
                        call(admin, "POST", &format!("/api/orders/{oid}/cancel"), "admin_agent", Some(body)).await
                    {
                        ledger.lock().unwrap().cancelled.insert(oid);
                    }
                }
            }));
        }
        // Downloaders: six clients racing over the links for their small budgets.
        for _ in 0..6 {
            let (ledger, stop) = (ledger.clone(), stop.clone());
            let mut r = Rng(rng.next() | 1);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let pick = {
                        let l = ledger.lock().unwrap();
                        (!l.links.is_empty()).then(|| l.links[r.below(l.links.len() as u64) as usize].clone())
                    };
                    match pick {
                        Some((id, path)) => download(port, &path, &ledger, &id).await,
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(150 + rng.below(850))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            within(30, "load task ends", t).await.unwrap();
        }
        let (ok, out) = verify_log(&config);
        assert!(ok, "cycle {cycle}: activity log after kill -9: {out}");
        records = out;

        child = start(&config, admin).await;
        let snapshot = {
            let l = ledger.lock().unwrap();
            Ledger {
                orders: l.orders.clone(),
                cancelled: l.cancelled.clone(),
                links: l.links.clone(),
                received: l.received.clone(),
            }
        };
        check(admin, &snapshot, cycle).await;
        served_total = snapshot.received.values().sum();
    }
    let l = std::mem::take(&mut *ledger.lock().unwrap());
    eprintln!(
        "soak: {CYCLES} kill -9 cycles; {} orders ({} cancelled), {} links, {} bytes received by clients; last verify-log: {}",
        l.orders.len(),
        l.cancelled.len(),
        l.links.len(),
        served_total,
        records.trim()
    );
    assert!(l.orders.len() >= CYCLES as usize && !l.cancelled.is_empty() && served_total > 0, "the load did run");
    child.kill().unwrap();
    child.wait().unwrap();
}
