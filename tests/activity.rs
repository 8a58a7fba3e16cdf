//! Revocation pushes and the activity log: signatures, idempotence, the scripted audit trail,
//! date-range boundaries, paging, CSV, tamper detection in redb and in the JSON Lines mirror.

mod common;

use common::*;
use http_body_util::BodyExt;
use keydrop::activity::{Kind, Record};
use serde_json::{json, Value};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

const TENANT: &str = "11111111-2222-4333-8444-555555555555";

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = admin_config(dir.path());
    cfg.revocation.push_secret = Some("s3cret".into());
    cfg.revocation.push_secrets = vec!["rotating-out".into()];
    if on_redb() {
        // The JSON Lines mirror is the embedded backend's (on PostgreSQL the database is the log).
        cfg.activity.jsonl_path = Some(dir.path().join("activity.jsonl"));
    }
    Server::start_with(dir, cfg).await
}

fn on_redb() -> bool {
    backend_under_test() == keydrop::config::Backend::Redb
}

/// Edits one stored record in the shared database (`from` → `to` in its JSON), as an attacker
/// with write access to the database would.
async fn tamper_in_postgres(url: &str, seq: u64, from: &str, to: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let n = client
        .execute("UPDATE activity SET json = replace(json, $2, $3) WHERE seq = $1", &[&(seq as i64), &from, &to])
        .await
        .unwrap();
    assert_eq!(n, 1);
}

/// Product with a file and keys, a customer, and `n` orders; returns the order ids.
async fn setup(s: &Server, n: usize) -> Vec<String> {
    s.api(
        "PUT",
        "/api/products/p",
        "global_admin",
        Some(json!({"name": "P", "kind": "perpetual", "unit_price_cents": 100,
          "currency": "USD", "cancel_policy": "standard", "key_required": true})),
    )
    .await;
    std::fs::write(s.files_dir().join("p.iso"), content(100_000, 3)).unwrap();
    s.api("PUT", "/api/products/p/files/pf", "global_admin", Some(json!({"path": "p.iso", "filename": "p.iso"}))).await;
    let keys: Vec<String> = (0..n).map(|i| format!("KEY-{i}")).collect();
    s.api("POST", "/api/products/p/keys", "global_admin", Some(json!({ "keys": keys }))).await;
    s.api(
        "POST",
        "/api/customers",
        "admin_agent",
        Some(json!({"tenant_id": TENANT, "domain": "c.com", "name": "C", "country": "US"})),
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..n {
        let (st, o) = s
            .api(
                "POST",
                &format!("/api/customers/{TENANT}/orders"),
                "admin_agent",
                Some(json!({"items": [{"product_id": "p", "quantity": 1}]})),
            )
            .await;
        assert_eq!(st, 201);
        ids.push(o["order_id"].as_str().unwrap().to_owned());
    }
    ids
}

async fn push_raw(s: &Server, body: &[u8], signature: Option<String>) -> (u16, Value) {
    let url = format!("http://{}/api/revocations", s.admin);
    within(10, "push", async {
        let c: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let mut b = http::Request::post(&url).header("content-type", "application/json");
        if let Some(sig) = signature {
            b = b.header("keydrop-signature", sig);
        }
        let resp =
            c.request(b.body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(body))).unwrap()).await.unwrap();
        let st = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (st, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    })
    .await
}

fn body_for(order: &str) -> Vec<u8> {
    json!({"order_id": order, "reason": "chargeback"}).to_string().into_bytes()
}

fn sign(secret: &str, s: &Server, body: &[u8], skew: i64) -> String {
    keydrop::push::sign(secret, s.state.now().timestamp() + skew, body)
}

async fn link_for(s: &Server, order: &str, max_uses: u32) -> String {
    let (st, dl) = s
        .api(
            "POST",
            &format!("/api/orders/{order}/downloads"),
            "admin_agent",
            Some(json!({"product_id": "p", "max_uses": max_uses})),
        )
        .await;
    assert_eq!(st, 201, "{dl}");
    dl["links"][0]["url"].as_str().unwrap().to_owned()
}

fn revoked_records(recs: &[Record], order: &str) -> usize {
    recs.iter().filter(|r| r.kind == Kind::OrderRevoked && r.order_id.as_deref() == Some(order)).count()
}

#[tokio::test]
async fn signed_pushes_revoke_once_and_bad_ones_revoke_nothing() {
    let s = start().await;
    let ids = setup(&s, 3).await;
    let (a, b) = (&ids[0], &ids[1]);
    let url_a = link_for(&s, a, 5).await;
    let url_b = link_for(&s, b, 5).await;

    // Every bad signature: 401 bad_signature, nothing revoked.
    let body = body_for(a);
    let mut altered = body.clone();
    altered.extend_from_slice(b" ");
    let replay_body = body_for(b);
    let replay_sig = sign("s3cret", &s, &replay_body, 0);
    let cases: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        ("wrong secret", body.clone(), Some(sign("wrong", &s, &body, 0))),
        ("missing header", body.clone(), None),
        ("stale t", body.clone(), Some(sign("s3cret", &s, &body, -301))),
        ("future t", body.clone(), Some(sign("s3cret", &s, &body, 301))),
        ("altered body", altered, Some(sign("s3cret", &s, &body, 0))),
        ("garbage header", body.clone(), Some("t=now,v1=xyz".into())),
    ];
    for (what, b, sig) in cases {
        let (st, e) = push_raw(&s, &b, sig).await;
        assert_eq!((st, e["code"].as_str()), (401, Some("bad_signature")), "{what}");
    }
    // Replay of a correctly signed body after 301 s.
    s.state.advance_clock(301);
    let (st, _) = push_raw(&s, &replay_body, Some(replay_sig)).await;
    assert_eq!(st, 401, "replay after 301 s");
    assert_eq!(get(&url_a, &[]).await.unwrap().0, 200, "nothing was revoked");
    assert_eq!(get(&url_b, &[]).await.unwrap().0, 200);
    assert_eq!(revoked_records(&s.records().await, a), 0);

    // A good push (the rotating-out secret still works) with a download in flight.
    let slow = within(10, "get", client().request(request("GET", &url_a, &[]))).await.unwrap();
    let mut slow_body = slow.into_body();
    let t0 = Instant::now();
    let (st, r) = push_raw(&s, &body, Some(sign("rotating-out", &s, &body, -299))).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r, json!({"order_id": a, "revoked_links": 1, "already_revoked": false}));
    let ended = within(5, "cut", async {
        while let Some(f) = slow_body.frame().await {
            if f.is_err() {
                break;
            }
        }
        Instant::now()
    })
    .await;
    assert!(ended - t0 < Duration::from_secs(2));
    let (st, _, b2) = get(&url_a, &[]).await.unwrap();
    assert_eq!((st, problem(&b2)["code"].as_str().unwrap()), (410, "revoked"));
    assert_eq!(s.api("GET", &format!("/api/orders/{a}/keys"), "admin_agent", None).await.0, 410);

    // Idempotent: same answer, still one record.
    let (st, r2) = push_raw(&s, &body, Some(sign("s3cret", &s, &body, 0))).await;
    assert_eq!((st, r2["already_revoked"].as_bool(), r2["revoked_links"].as_u64()), (200, Some(true), Some(1)));
    assert_eq!(revoked_records(&s.records().await, a), 1);

    // An order not known yet: remembered, its later links refused.
    let unknown = "ord_from_upstream_42";
    let ub = body_for(unknown);
    let (st, r3) = push_raw(&s, &ub, Some(sign("s3cret", &s, &ub, 0))).await;
    assert_eq!((st, r3["revoked_links"].as_u64(), r3["already_revoked"].as_bool()), (200, Some(0), Some(false)));
    let refused = keydrop::links::issue_link(
        &s.state,
        keydrop::links::IssueRequest {
            order_id: unknown.into(),
            tenant_id: None,
            product_id: "prod-1".into(),
            file_id: "pf".into(),
            ttl_secs: None,
            max_uses: None,
            now: s.state.now(),
            actor: "t".into(),
            ip: None,
            user_agent: None,
        },
    )
    .await;
    assert!(matches!(refused, Err(keydrop::links::IssueError::Revoked)));

    // The shipped sender signs and sends (the real binary, which signs with the real clock).
    s.state.advance_clock(-301);
    let out = run_cli(
        vec!["push", "revoke", "--url", &format!("http://{}", s.admin), "--order", b, "--reason", "fraud"],
        Some("s3cret"),
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sent["already_revoked"], false);
    assert_eq!(get(&url_b, &[]).await.unwrap().0, 410);
    let out = run_cli(
        vec!["push", "revoke", "--url", &format!("http://{}", s.admin), "--order", b, "--secret", "wrong"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "a 401 is final: no retry loop");
    s.stop().await;
}

/// Runs the binary off the async threads (the server under test shares this runtime).
async fn run_cli(args: Vec<&str>, secret: Option<&str>) -> std::process::Output {
    let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
    let secret = secret.map(str::to_owned);
    within(
        60,
        "cli",
        tokio::task::spawn_blocking(move || {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_keydrop"));
            c.args(&args).env_remove("KEYDROP_PUSH_SECRET");
            if let Some(sec) = secret {
                c.env("KEYDROP_PUSH_SECRET", sec);
            }
            c.output().unwrap()
        }),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn scripted_session_leaves_exactly_the_expected_trail() {
    let s = start().await;
    let ids = setup(&s, 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    s.api("GET", &format!("/api/orders/{a}/keys"), "admin_agent", None).await;
    let url = link_for(&s, a, 3).await;
    assert_eq!(get(&url, &[("user-agent", "ua-one")]).await.unwrap().0, 200);
    wait_finished(&s, 1).await;
    assert_eq!(get(&url, &[("user-agent", "ua-two"), ("range", "bytes=0-99")]).await.unwrap().0, 206);
    wait_finished(&s, 2).await;
    assert_eq!(get(&url, &[("user-agent", "ua-three")]).await.unwrap().0, 200);
    wait_finished(&s, 3).await;
    assert_eq!(get(&url, &[("user-agent", "ua-four")]).await.unwrap().0, 410);
    s.api("POST", &format!("/api/orders/{a}/cancel"), "admin_agent", Some(json!({"acknowledged": true}))).await;
    let pb = body_for(b);
    assert_eq!(push_raw(&s, &pb, Some(sign("s3cret", &s, &pb, 0))).await.0, 200);

    let all = s.records().await;
    let first = all.iter().position(|r| r.kind == Kind::KeyAccessed).unwrap();
    let trail: Vec<TrailRow> = all[first..]
        .iter()
        .map(|r| (r.kind, r.actor.as_deref(), r.user_agent.as_deref(), r.range.as_deref(), r.bytes))
        .collect();
    let agent = Some("admin_agent-user");
    let customer = Some("customer");
    assert_eq!(
        trail[..11],
        [
            (Kind::KeyAccessed, agent, None, None, None),
            (Kind::KeyAccessed, agent, None, None, None),
            (Kind::LinkIssued, agent, None, None, None),
            (Kind::DownloadStarted, customer, Some("ua-one"), None, Some(100_000)),
            (Kind::DownloadFinished, customer, Some("ua-one"), None, Some(100_000)),
            (Kind::DownloadStarted, customer, Some("ua-two"), Some("bytes=0-99"), Some(100)),
            (Kind::DownloadFinished, customer, Some("ua-two"), Some("bytes=0-99"), Some(100)),
            (Kind::DownloadStarted, customer, Some("ua-three"), None, Some(100_000)),
            (Kind::DownloadFinished, customer, Some("ua-three"), None, Some(100_000)),
            (Kind::DownloadRefused, customer, Some("ua-four"), None, None),
            (Kind::OrderCancelled, agent, None, None, None),
        ]
    );
    assert_eq!(trail.len(), 12, "{trail:?}");
    assert_eq!((trail[11].0, trail[11].1), (Kind::OrderRevoked, Some("order-system")));
    let session = &all[first..];
    assert!(session[..11]
        .iter()
        .all(|r| r.tenant_id.as_deref() == Some(TENANT) && r.order_id.as_deref() == Some(a.as_str())));
    assert_eq!(session[11].order_id.as_deref(), Some(b.as_str()));
    assert_eq!(session[11].tenant_id.as_deref(), Some(TENANT));
    assert!(session.iter().all(|r| r.ip.as_deref() == Some("127.0.0.1")));
    assert_eq!(session[9].outcome.as_deref(), Some("exhausted"));
    let n = all.len();
    let url = s.state.config.storage.postgres_url.clone().unwrap_or_default();
    let dir = s.stop().await;

    // Offline: `keydrop verify-log` checks the chain and the JSON Lines mirror.
    let config = dir.path().join("keydrop.toml");
    if on_redb() {
        std::fs::write(&config, "[storage]\ndata_dir = \"data\"\n[activity]\njsonl_path = \"activity.jsonl\"\n")
            .unwrap();
    } else {
        let toml = format!("[storage]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\nkek_file = \"kek.key\"\ndata_dir = \"data\"\n");
        std::fs::write(&config, toml).unwrap();
    }
    let verify = |config: std::path::PathBuf| {
        std::process::Command::new(env!("CARGO_BIN_EXE_keydrop"))
            .arg("verify-log")
            .arg("--config")
            .arg(config)
            .output()
            .unwrap()
    };
    let out = verify(config.clone());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    if !on_redb() {
        // One chain in the database, read by `verify-log` from any node; then record 8 edited.
        assert!(text.contains(&format!("activity log intact: {n} records")), "{text}");
        tamper_in_postgres(&url, 8, "\"ip\":\"127.0.0.1\"", "\"ip\":\"127.0.0.2\"").await;
        let out = verify(config);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("BROKEN at record 8"), "{text}");
        return;
    }
    assert!(
        text.contains(&format!("JSON Lines mirror intact: {n} records")) && text.contains("activity log intact"),
        "{text}"
    );
    let mirror = dir.path().join("activity.jsonl");
    let lines = std::fs::read_to_string(&mirror).unwrap();
    assert_eq!(lines.lines().count(), n, "every committed record is mirrored");
    let mut bytes = lines.into_bytes();
    let pos = bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(6).unwrap().0 + 12; // inside line 8
    bytes[pos] ^= 0x01;
    std::fs::write(&mirror, bytes).unwrap();
    let out = verify(config);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("mirror BROKEN at record 8"), "{text}");
}

/// kind, actor, user agent, range, bytes.
type TrailRow<'a> = (Kind, Option<&'a str>, Option<&'a str>, Option<&'a str>, Option<u64>);

/// `download.finished` is queued when a body ends; wait for it so the trail's order is fixed.
async fn wait_finished(s: &Server, n: usize) {
    within(10, "finished records", async {
        while s.records().await.iter().filter(|r| r.kind == Kind::DownloadFinished).count() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

fn at_us(r: &Record) -> u64 {
    keydrop::activity::at_micros(&r.at)
}

#[tokio::test]
async fn queries_by_date_paging_csv_and_tamper_detection() {
    let s = start().await;
    let ids = setup(&s, 1).await;
    // Three records an hour apart (separate commits).
    for _ in 0..3 {
        s.state.advance_clock(3600);
        s.api("GET", &format!("/api/orders/{}/keys", ids[0]), "admin_agent", None).await;
    }
    let all = s.records().await;
    let keys: Vec<&Record> = all.iter().filter(|r| r.kind == Kind::KeyAccessed).collect();
    assert_eq!(keys.len(), 3);
    let q = |query: String| {
        let s = &s;
        async move {
            let (st, v) = s.api("GET", &format!("/api/activity?{query}"), "account_admin", None).await;
            assert_eq!(st, 200, "{query}: {v}");
            serde_json::from_value::<Vec<Record>>(v["records"].clone()).unwrap()
        }
    };
    let enc = |r: &Record| r.at.replace(':', "%3A").replace('+', "%2B");
    // from is inclusive at the exact time, exclusive one microsecond later.
    let got = q(format!("kind=key.accessed&from={}", enc(keys[1]))).await;
    assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![keys[1].seq, keys[2].seq]);
    let later = chrono::DateTime::from_timestamp_micros(at_us(keys[1]) as i64 + 1)
        .unwrap()
        .to_rfc3339()
        .replace(':', "%3A")
        .replace('+', "%2B");
    assert_eq!(q(format!("kind=key.accessed&from={later}")).await.len(), 1);
    // to is inclusive.
    let got = q(format!("kind=key.accessed&to={}", enc(keys[1]))).await;
    assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![keys[0].seq, keys[1].seq]);
    // A date as `to` includes that whole day; the day before includes nothing of it.
    let day = &keys[2].at[..10];
    assert!(q(format!("to={day}")).await.iter().any(|r| r.seq == keys[2].seq) || !keys[2].at.starts_with(day));
    let before = (chrono::NaiveDate::parse_from_str(&keys[0].at[..10], "%Y-%m-%d").unwrap()
        - chrono::Duration::days(1))
    .to_string();
    assert!(q(format!("to={before}")).await.iter().all(|r| r.at[..10] <= *before));
    assert_eq!(q(format!("tenant_id={TENANT}&kind=key.accessed")).await.len(), 3);
    assert_eq!(q("order_id=ord_none".into()).await.len(), 0);

    // Paging returns every record exactly once, in order.
    let mut paged = Vec::new();
    let mut after = 0u64;
    loop {
        let (_, v) = s.api("GET", &format!("/api/activity?limit=2&after_seq={after}"), "referral_admin", None).await;
        let page: Vec<Record> = serde_json::from_value(v["records"].clone()).unwrap();
        paged.extend(page);
        match v["next_after_seq"].as_u64() {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(paged, s.records().await);

    // CSV parses back to the same rows.
    let resp = within(
        10,
        "csv",
        client().request(
            http::Request::get(format!("http://{}/api/activity?limit=1000", s.admin))
                .header("accept", "text/csv")
                .header("authorization", format!("Bearer {}", token_for("marketing_content_admin")))
                .body(http_body_util::Empty::new())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let rows = parse_csv(&csv);
    assert_eq!(rows[0], keydrop::activity::CSV_COLUMNS.iter().map(|c| c.to_string()).collect::<Vec<_>>());
    let records = s.records().await;
    assert_eq!(rows.len() - 1, records.len());
    for (row, r) in rows[1..].iter().zip(&records) {
        let v = serde_json::to_value(r).unwrap();
        for (col, cell) in keydrop::activity::CSV_COLUMNS.iter().zip(row) {
            let expected = match &v[*col] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert_eq!(cell, &expected, "{col}");
        }
    }
    // Bad queries are 400; roles per the contract.
    assert_eq!(s.api("GET", "/api/activity?limit=5000", "global_admin", None).await.0, 400);
    assert_eq!(s.api("GET", "/api/activity?from=yesterday", "global_admin", None).await.0, 400);
    assert_eq!(s.api("GET", "/api/activity?kind=nope", "global_admin", None).await.0, 400);
    assert_eq!(s.api("GET", "/api/activity", "admin_agent", None).await.0, 403);

    // Verification: intact, then a byte flipped in the mirror, then in the record file.
    let (st, v) = s.api("GET", "/api/activity/verify", "global_admin", None).await;
    assert_eq!(v["records"].as_u64(), Some(records.len() as u64));
    let target = records[2].seq;
    if !on_redb() {
        assert_eq!((st, v["ok"].as_bool()), (200, Some(true)), "{v}");
        // The same edit in the shared database: verification names the record.
        let url = s.state.config.storage.postgres_url.clone().unwrap();
        tamper_in_postgres(&url, target, "\"ip\":\"127.0.0.1\"", "\"ip\":\"127.0.0.2\"").await;
        let (_, v) = s.api("GET", "/api/activity/verify", "global_admin", None).await;
        assert_eq!((v["ok"].as_bool(), v["first_bad"]["seq"].as_u64()), (Some(false), Some(target)), "{v}");
        s.stop().await;
        return;
    }
    assert_eq!((st, v["ok"].as_bool(), v["mirror"]["ok"].as_bool()), (200, Some(true), Some(true)), "{v}");
    let mirror = s.dir.path().join("activity.jsonl");
    let text = std::fs::read_to_string(&mirror).unwrap();
    let flipped: String = text
        .lines()
        .map(|l| {
            if l.contains(&format!("\"seq\":{target},")) {
                l.replacen("\"kind\"", "\"kinD\"", 1)
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    std::fs::write(&mirror, &flipped).unwrap();
    let (_, v) = s.api("GET", "/api/activity/verify", "global_admin", None).await;
    assert_eq!((v["ok"].as_bool(), v["mirror"]["first_bad"]["seq"].as_u64()), (Some(false), Some(target)), "{v}");
    std::fs::write(&mirror, &text).unwrap();

    // The same edit in the record file the server reads (same length, in place).
    let log = s.dir.path().join("data").join(keydrop::store::RECORDS_FILE);
    let stored = std::fs::read_to_string(&log).unwrap();
    let line = stored.lines().find(|l| l.contains(&format!("\"seq\":{target},"))).unwrap();
    let at = line.as_ptr() as usize - stored.as_ptr() as usize + line.find("127.0.0.1").unwrap();
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().write_all_at(b"127.0.0.2", at as u64).unwrap();
    let (_, v) = s.api("GET", "/api/activity/verify", "global_admin", None).await;
    assert_eq!((v["ok"].as_bool(), v["first_bad"]["seq"].as_u64()), (Some(false), Some(target)), "{v}");
    assert_eq!(v["mirror"]["first_bad"]["seq"].as_u64(), Some(target), "the mirror no longer matches the store either");
    s.stop().await;
}

/// A small RFC 4180 reader for the test.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut cell, mut quoted, mut chars) = (Vec::new(), String::new(), false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if cell.is_empty() => quoted = true,
            (',', false) => row.push(std::mem::take(&mut cell)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => cell.push(c),
        }
    }
    rows
}

#[tokio::test]
async fn one_hour_window_over_100k_records() {
    let s = start().await;
    // 100 commits of 1,000 records, a day apart: 100,000 records over 100 days.
    for day in 0..100 {
        let ops: Vec<_> = (0..1000)
            .map(|i| {
                let mut e = keydrop::activity::Entry::new(Kind::DownloadFinished);
                e.order_id = Some(format!("ord_{day}"));
                e.bytes = Some(i);
                e
            })
            .collect();
        s.state.store.append(ops).await.unwrap();
        s.state.advance_clock(86_400);
    }
    let all = s.state.store.record_count().await.unwrap();
    assert!(all >= 100_000);
    let probe = s.state.store.records_after(50_000, 1).await.unwrap().remove(0);
    let from = chrono::DateTime::parse_from_rfc3339(&probe.at).unwrap() - chrono::Duration::minutes(30);
    let to = from + chrono::Duration::hours(1);
    let path = format!(
        "/api/activity?limit=1000&from={}&to={}",
        from.to_rfc3339().replace(':', "%3A").replace('+', "%2B"),
        to.to_rfc3339().replace(':', "%3A").replace('+', "%2B")
    );
    let t0 = Instant::now();
    let (st, v) = s.api("GET", &path, "global_admin", None).await;
    let took = t0.elapsed();
    assert_eq!(st, 200);
    let recs: Vec<Record> = serde_json::from_value(v["records"].clone()).unwrap();
    assert_eq!(recs.len(), 1000);
    assert!(recs.iter().all(|r| r.order_id == probe.order_id));
    println!("one-hour window over {all} records: {} records in {took:?} (HTTP round trip, debug build)", recs.len());
    s.stop().await;
}

#[tokio::test]
async fn filters_by_order_tenant_and_kind_page_through_exactly_the_matching_records() {
    let s = start().await;
    // 20,000 records over 200 orders of 20 tenants, three kinds, in 20 commits.
    let kinds = [Kind::DownloadStarted, Kind::DownloadFinished, Kind::LinkIssued];
    for c in 0..20u64 {
        let ops: Vec<_> = (0..1000u64)
            .map(|i| {
                let n = c * 1000 + i;
                let mut e = keydrop::activity::Entry::new(kinds[(n % 3) as usize]);
                e.order_id = Some(format!("ord_{}", n % 200));
                e.tenant_id = Some(format!("{:08}-0000-4000-8000-000000000000", n % 20));
                e.bytes = Some(n);
                e
            })
            .collect();
        s.state.store.append(ops).await.unwrap();
    }
    let page = |q: String| {
        let s = &s;
        async move {
            let mut out: Vec<Record> = Vec::new();
            let mut after = 0u64;
            loop {
                let (st, v) =
                    s.api("GET", &format!("/api/activity?{q}&limit=37&after_seq={after}"), "global_admin", None).await;
                assert_eq!(st, 200, "{v}");
                out.extend(serde_json::from_value::<Vec<Record>>(v["records"].clone()).unwrap());
                match v["next_after_seq"].as_u64() {
                    Some(n) => after = n,
                    None => return out,
                }
            }
        }
    };
    let bytes = |r: &[Record]| r.iter().map(|r| r.bytes.unwrap()).collect::<Vec<_>>();
    let by_order = page("order_id=ord_7".into()).await;
    assert_eq!(bytes(&by_order), (0..20_000u64).filter(|n| n % 200 == 7).collect::<Vec<_>>());
    let tenant = format!("{:08}-0000-4000-8000-000000000000", 3);
    let by_tenant = page(format!("tenant_id={tenant}")).await;
    assert_eq!(bytes(&by_tenant), (0..20_000u64).filter(|n| n % 20 == 3).collect::<Vec<_>>());
    let by_kind = page("kind=link.issued".into()).await;
    assert_eq!(bytes(&by_kind), (0..20_000u64).filter(|n| n % 3 == 2).collect::<Vec<_>>());
    let both = page(format!("tenant_id={tenant}&kind=download.started")).await;
    assert_eq!(bytes(&both), (0..20_000u64).filter(|n| n % 20 == 3 && n % 3 == 0).collect::<Vec<_>>());
    let none = page("order_id=ord_nope".into()).await;
    assert!(none.is_empty());
    s.stop().await;
}
