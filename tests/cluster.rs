//! Several keydrop nodes on one PostgreSQL (API.md §5.3), each a real server on 127.0.0.1:0
//! with its own `files_dir` and data dir, all pointing at one database and one KEK.

mod common;

use common::pg::Pg;
use common::*;
use http_body_util::BodyExt;
use keydrop::config::{Backend, Config};

use keydrop::store::Access;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

fn node_config(root: &std::path::Path, url: &str, kek: &[u8], node: &str) -> Config {
    let mut cfg = admin_config(root);
    cfg.links.max_uses = 1_000_000; // tests ask for the budget they need
    cfg.storage.backend = Backend::Postgres;
    cfg.storage.postgres_url = Some(url.to_owned());
    cfg.storage.node_id = Some(node.to_owned());
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("kek.key"), kek).unwrap();
    cfg.storage.kek_file = Some(root.join("kek.key"));
    cfg
}

struct Cluster {
    nodes: Vec<Server>,
}

impl Cluster {
    /// `n` nodes on the database at `url`; node 0 attaches `file_id` (`size` bytes) and every
    /// node gets the same bytes in its own files_dir.
    async fn start(url: &str, n: usize, file_id: &str, size: usize) -> (Cluster, Vec<u8>) {
        let kek = keydrop::secrets::random_bytes::<32>();
        let mut nodes = Vec::new();
        for i in 0..n {
            let dir = tempfile::tempdir().unwrap();
            let cfg = node_config(dir.path(), url, &kek, &format!("edge-{i}"));
            nodes.push(Server::start_with(dir, cfg).await);
        }
        let data = nodes[0].add_file(file_id, &format!("{file_id}.bin"), size).await;
        for n in &nodes[1..] {
            std::fs::write(n.files_dir().join(file_id), &data).unwrap();
        }
        nodes[0].open_order("o").await;
        (Cluster { nodes }, data)
    }

    /// The link as seen through node `i` (same token, that node's address).
    fn url_on(&self, link: &keydrop::links::IssuedLink, i: usize) -> String {
        link.url.replace(&self.nodes[0].public.to_string(), &self.nodes[i].public.to_string())
    }

    async fn stop(self) {
        for n in self.nodes {
            n.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_gets_over_three_nodes_serve_exactly_fifty_copies() {
    let url = Pg::shared().fresh_database();
    let (c, data) = Cluster::start(&url, 3, "mib", MIB).await;
    let link = c.nodes[0].issue("o", "mib", 50).await;
    let urls: Vec<String> = (0..3).map(|i| c.url_on(&link, i)).collect();
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let (url, gate) = (urls[i % 3].clone(), gate.clone());
            tokio::spawn(async move {
                let _p = gate.acquire().await.unwrap();
                get(&url, &[]).await.unwrap()
            })
        })
        .collect();
    let (mut ok, mut exhausted) = (0, 0);
    for t in tasks {
        let (st, _, b) = within(300, "get", t).await.unwrap();
        match st {
            200 => {
                assert_eq!(b.len(), data.len(), "a complete copy");
                ok += 1;
            }
            410 => {
                assert_eq!(problem(&b)["code"], "exhausted");
                exhausted += 1;
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&b)),
        }
    }
    assert_eq!((ok, exhausted), (50, 950));
    // Every node sees the same link state, and one chain with every node's records in it.
    for n in &c.nodes {
        let st = n.settled(&link).await;
        assert_eq!((st.bytes_spent, st.state), (50 * MIB as u64, "exhausted"));
    }
    // Held refusals are recorded about a second after they happen: once all 950 are in, the
    // chain stops growing, and the verification below counts what `records` holds.
    c.nodes[2].refusal_records(&link.link_id, "exhausted", 950).await;
    let records = c.nodes[2].records().await;
    assert!(records.windows(2).all(|w| w[1].seq == w[0].seq + 1), "seq is gap-free");
    let nodes: std::collections::BTreeSet<_> = records.iter().filter_map(|r| r.node.clone()).collect();
    assert_eq!(nodes.len(), 3, "records from every node: {nodes:?}");
    let (st, v) = c.nodes[1].api("GET", "/api/activity/verify", "global_admin", None).await;
    assert_eq!((st, v["ok"].as_bool(), v["records"].as_u64()), (200, Some(true), Some(records.len() as u64)), "{v}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_ranges_over_three_nodes_never_receive_more_than_the_budget() {
    let url = Pg::shared().fresh_database();
    let (c, data) = Cluster::start(&url, 3, "mib", MIB).await;
    let link = c.nodes[0].issue("o", "mib", 5).await;
    let tasks: Vec<_> = (0..300usize)
        .map(|i| {
            let url = c.url_on(&link, i % 3);
            let start = (i * 7919 * 4099) % MIB;
            let end = (start + 1 + (i * 104_729) % (MIB / 2)).min(MIB - 1);
            tokio::spawn(async move {
                let range = format!("bytes={start}-{end}");
                let (st, _, b) = get(&url, &[("range", &range)]).await.unwrap();
                (st, start, b)
            })
        })
        .collect();
    let mut received = 0u64;
    for t in tasks {
        let (st, start, b) = within(120, "range", t).await.unwrap();
        match st {
            206 => {
                assert_eq!(&b[..], &data[start..start + b.len()], "the bytes asked for");
                received += b.len() as u64;
            }
            410 => assert_eq!(problem(&b)["code"], "exhausted"),
            other => panic!("unexpected {other}"),
        }
    }
    let st = c.nodes[2].settled(&link).await;
    assert!(received <= 5 * MIB as u64, "received {received} of a {} budget", 5 * MIB);
    assert_eq!(st.bytes_spent, received, "every byte sent is counted, every unsent one refunded");
    assert_eq!(st.downloads_used, received as f64 / MIB as f64);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_on_one_node_refuses_and_cuts_on_the_others_within_a_second() {
    let url = Pg::shared().fresh_database();
    let size = 64 * MIB;
    let (c, _) = Cluster::start(&url, 3, "big", size).await;
    let link = c.nodes[0].issue("o", "big", 5).await;
    // Node C streams slowly; B has served the link before (its gate is cached).
    assert_eq!(send("HEAD", &c.url_on(&link, 1), &[]).await.unwrap().0, 200);
    let resp = within(30, "get", client().request(request("GET", &c.url_on(&link, 2), &[]))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let reader = read_slowly(resp);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let revoked_at = Instant::now();
    c.nodes[0].set_access("o", Access::Revoked).await;
    // The next request on B and on C is refused within a second.
    for i in [1, 2] {
        let u = c.url_on(&link, i);
        within(2, "refused elsewhere", async {
            loop {
                // A pooled connection the cut closed may fail once; the next attempt opens another.
                if let Ok((st, _, b)) = get(&u, &[("range", "bytes=0-0")]).await {
                    if st == 410 {
                        assert_eq!(problem(&b)["code"], "revoked");
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(revoked_at.elapsed() < Duration::from_secs(1), "node {i} refused after {:?}", revoked_at.elapsed());
    }
    let (n, ended, errored) = within(5, "cut off", reader).await.unwrap();
    assert!(n < size && errored, "the download on C is cut, not completed ({n} bytes)");
    assert!(ended.duration_since(revoked_at) < Duration::from_secs(1), "cut after {:?}", ended - revoked_at);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_away_means_503_never_an_uncounted_byte_and_nodes_recover_by_themselves() {
    // A cluster of its own: this test stops and kills it.
    let pg = Pg::start();
    let (c, data) = Cluster::start(&pg.url, 2, "kib", 64 * 1024).await;
    let link = c.nodes[0].issue("o", "kib", 100_000).await;
    let urls: Vec<String> = (0..2).map(|i| c.url_on(&link, i)).collect();
    let load = |secs: u64| {
        let urls = urls.clone();
        tokio::spawn(async move {
            let (mut ok, mut unavailable) = (0u64, 0u64);
            let until = Instant::now() + Duration::from_secs(secs);
            let mut i = 0;
            while Instant::now() < until {
                let (st, _, b) = get(&urls[i % 2], &[]).await.unwrap();
                match st {
                    200 => ok += 1,
                    503 => {
                        assert_eq!(problem(&b)["code"], "unavailable");
                        unavailable += 1;
                    }
                    other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&b)),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, unavailable)
        })
    };
    for (what, stop) in [("stopped", true), ("killed -9", false)] {
        let before = c.nodes[0].settled(&link).await.bytes_spent;
        let running = load(9);
        tokio::time::sleep(Duration::from_secs(1)).await;
        if stop {
            pg.stop();
        } else {
            pg.kill9();
        }
        // Not ready while it is away.
        within(5, "readyz 503", async {
            while send("GET", &format!("http://{}/readyz", c.nodes[1].public), &[]).await.unwrap().0 != 503 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        pg.start_again();
        let (ok, unavailable) = within(60, "load", running).await.unwrap();
        assert!(unavailable > 0, "{what}: downloads refused while the database is away");
        // Back by itself: every node serves again within seconds.
        for u in &urls {
            within(15, "recovered", async {
                loop {
                    let (st, _, b) = get(u, &[]).await.unwrap();
                    if st == 200 {
                        assert_eq!(&b[..], &data[..]);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await;
        }
        // Only counted bytes were served: every 200 is in the budget (plus the two checks).
        let after = c.nodes[1].settled(&link).await.bytes_spent;
        assert!(after - before >= (ok + 2) * data.len() as u64, "{what}: {ok} served, {} counted", after - before);
        println!("database {what}: {ok} served, {unavailable} × 503 meanwhile");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_with_sigkill_leaves_the_others_serving_and_never_spends_less_than_received() {
    let url = Pg::shared().fresh_database();
    let size = 256 * 1024;
    let (c, data) = Cluster::start(&url, 1, "kib", size).await;
    let link = c.nodes[0].issue("o", "kib", 100_000).await;
    // The second node is the real binary, so it can be killed with -9.
    let root = tempfile::tempdir().unwrap();
    let (public, admin) = (free_port(), free_port());
    std::fs::create_dir_all(root.path().join("files")).unwrap();
    std::fs::write(root.path().join("files").join("kib"), &data).unwrap();
    let kek = c.nodes[0].state.config.storage.kek_file.clone().unwrap();
    let toml = format!(
        "[server]\npublic_listen = \"127.0.0.1:{public}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
         public_base_url = \"http://127.0.0.1:{public}\"\n[links]\nmax_uses = 1000000\n\
         [storage]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\nnode_id = \"edge-killed\"\n\
         kek_file = \"{}\"\ndata_dir = \"data\"\nfiles_dir = \"files\"\n",
        kek.display()
    );
    std::fs::write(root.path().join("keydrop.toml"), toml).unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(root.path().join("keydrop.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let killed_url = link.url.replace(&c.nodes[0].public.to_string(), &format!("127.0.0.1:{public}"));
    within(30, "binary node ready", async {
        while !matches!(get(&format!("http://127.0.0.1:{public}/healthz"), &[]).await, Ok((200, _, _))) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // Load on both nodes; the binary node dies in the middle of it.
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let survivor_ok = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, u) in [link.url.clone(), killed_url.clone(), link.url.clone(), killed_url].into_iter().enumerate() {
        let (received, survivor_ok) = (received.clone(), survivor_ok.clone());
        tasks.push(tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(4);
            while Instant::now() < until {
                // A body cut by the kill still counts what arrived: read frame by frame.
                let Ok(resp) = client().request(request("GET", &u, &[])).await else { continue };
                let ok = resp.status() == 200;
                let mut body = resp.into_body();
                while let Some(Ok(f)) = body.frame().await {
                    received.fetch_add(
                        f.into_data().map(|d| d.len() as u64).unwrap_or(0),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                if ok && i % 2 == 0 {
                    survivor_ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let after_kill = survivor_ok.load(std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        within(60, "load", t).await.unwrap();
    }
    assert!(survivor_ok.load(std::sync::atomic::Ordering::Relaxed) > after_kill, "the surviving node kept serving");
    let spent = c.nodes[0].settled(&link).await.bytes_spent;
    let got = received.load(std::sync::atomic::Ordering::Relaxed);
    assert!(spent >= got, "spent {spent} < received {got}");
    println!("node killed -9 under load: received {got} bytes, {spent} spent");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_link_key_rotated_in_the_database_signs_on_nodes_started_after_and_old_links_keep_working() {
    let url = Pg::shared().fresh_database();
    let (c, data) = Cluster::start(&url, 1, "kib", 1024).await;
    assert_eq!(c.nodes[0].state.keys.signing_key_id(), 1);
    let old = c.nodes[0].issue("o", "kib", 5).await;
    let kek_path = c.nodes[0].state.config.storage.kek_file.clone().unwrap();
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("keydrop.toml");
    let toml =
        format!("[storage]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\nkek_file = \"{}\"\n", kek_path.display());
    std::fs::write(&config, toml).unwrap();
    let out = std::process::Command::new(BIN).args(["rotate-link-key", "--config"]).arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("new link-signing key 2"), "{text}");
    // A node started now signs with key 2 and still accepts links signed with key 1.
    let dir = tempfile::tempdir().unwrap();
    let kek = std::fs::read(&kek_path).unwrap();
    let cfg = node_config(dir.path(), &url, &kek, "edge-late");
    let n = Server::start_with(dir, cfg).await;
    assert_eq!((n.state.keys.signing_key_id(), n.state.keys.key_ids()), (2, vec![1, 2]));
    std::fs::write(n.files_dir().join("kib"), &data).unwrap();
    let here = old.url.replace(&c.nodes[0].public.to_string(), &n.public.to_string());
    let (st, _, body) = get(&here, &[]).await.unwrap();
    assert_eq!((st, body.len()), (200, data.len()));
    n.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_copy_of_a_file_differs_refuses_it_until_the_right_copy_is_back() {
    let url = Pg::shared().fresh_database();
    let (c, data) = Cluster::start(&url, 2, "iso", 64 * 1024).await;
    // Node 1's operator copied the wrong build: same name, same size, other bytes.
    let mut wrong = data.clone();
    wrong[1000] ^= 0xff;
    std::fs::write(c.nodes[1].files_dir().join("iso"), &wrong).unwrap();
    let link = c.nodes[0].issue("o", "iso", 50).await;
    for _ in 0..3 {
        let (st, h, b) = within(30, "get on the wrong copy", get(&c.url_on(&link, 1), &[])).await.unwrap();
        assert_eq!(st, 503, "{}", String::from_utf8_lossy(&b));
        assert_eq!(problem(&b)["code"], "unavailable");
        assert!(h.get("retry-after").is_some());
    }
    let (st, _, b) = within(30, "get on the right copy", get(&c.url_on(&link, 0), &[])).await.unwrap();
    assert_eq!((st, b.len()), (200, data.len()));
    assert_eq!(b, data);
    // Nothing was spent for the refusals: one copy served, by node 0.
    assert_eq!(c.nodes[1].settled(&link).await.bytes_spent, data.len() as u64);
    // The operator puts the right bytes in place: served again, no restart.
    std::fs::write(c.nodes[1].files_dir().join("iso"), &data).unwrap();
    let (st, _, b) = within(30, "get after the fix", get(&c.url_on(&link, 1), &[])).await.unwrap();
    assert_eq!((st, b == data), (200, true));
    c.stop().await;
}

/// Three nodes' lifecycle clocks tick together over one database: a term's end is applied once
/// (one `order.expired` record in the shared chain) and the order's links are refused on every
/// node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_lifecycle_clocks_apply_a_term_end_once() {
    use serde_json::json;
    let url = Pg::shared().fresh_database();
    let (c, _) = Cluster::start(&url, 3, "f", 1000).await;
    let n0 = &c.nodes[0];
    let tenant = "41111111-2222-4333-8444-555555555555";
    let body = json!({"tenant_id": tenant, "domain": "wingtip.com", "name": "Wingtip", "country": "US"});
    assert_eq!(n0.api("POST", "/api/customers", "admin_agent", Some(body)).await.0, 201);
    let product = json!({"name": "Sub", "kind": "subscription", "billing": "monthly", "unit_price_cents": 100,
        "currency": "USD", "cancel_policy": "standard"});
    assert_eq!(n0.api("PUT", "/api/products/sub", "global_admin", Some(product)).await.0, 201);
    for n in &c.nodes {
        std::fs::write(n.files_dir().join("sub.zip"), b"payload").unwrap();
    }
    let file = json!({"path": "sub.zip", "filename": "sub.zip"});
    assert_eq!(n0.api("PUT", "/api/products/sub/files/zip", "global_admin", Some(file)).await.0, 201);
    let order = json!({"items": [{"product_id": "sub", "quantity": 1}]});
    let (_, o) = n0.api("POST", &format!("/api/customers/{tenant}/orders"), "admin_agent", Some(order)).await;
    let oid = o["order_id"].as_str().unwrap().to_owned();
    n0.api("PATCH", &format!("/api/orders/{oid}"), "admin_agent", Some(json!({"auto_renew": false}))).await;
    let term_end: chrono::DateTime<chrono::Utc> =
        chrono::DateTime::parse_from_rfc3339(o["term_end"].as_str().unwrap()).unwrap().into();
    let secs = (term_end - chrono::Utc::now()).num_seconds() - 30;
    for n in &c.nodes {
        n.state.advance_clock(secs);
    }
    let (_, dl) = n0
        .api("POST", &format!("/api/orders/{oid}/downloads"), "admin_agent", Some(json!({"product_id": "sub"})))
        .await;
    let link_url = dl["links"][0]["url"].as_str().unwrap().to_owned();
    let on_2 = link_url.replace(&n0.public.to_string(), &c.nodes[2].public.to_string());
    assert_eq!(get(&on_2, &[]).await.unwrap().0, 200);
    for n in &c.nodes {
        n.state.advance_clock(31);
    }
    let expired = || async {
        n0.records()
            .await
            .into_iter()
            .filter(|r| r.kind.name() == "order.expired" && r.order_id.as_deref() == Some(oid.as_str()))
            .count()
    };
    within(15, "expired", async {
        while expired().await == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(3000)).await; // three more ticks on each node
    assert_eq!(expired().await, 1);
    let (st, _, b) = get(&on_2, &[]).await.unwrap();
    assert_eq!((st, problem(&b)["code"].as_str()), (410, Some("revoked")));
    c.stop().await;
}
