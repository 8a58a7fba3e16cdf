//! `keydrop move-store` (API.md §5.3): a stopped redb node with orders, part-spent links and a
//! few thousand records, moved into an empty PostgreSQL database by the real binary, then served
//! by a PostgreSQL node: equal state, the chain intact, old links still working.

mod common;

use common::pg::Pg;
use common::*;
use keydrop::config::Backend;
use serde_json::json;

const TENANT_ID: &str = "11111111-2222-4333-8444-555555555555";

async fn order_with_link(s: &Server, n: u32) -> (String, (String, String)) {
    let (st, o) = s
        .api(
            "POST",
            &format!("/api/customers/{TENANT_ID}/orders"),
            "admin_agent",
            Some(json!({"items": [{"product_id": "p", "quantity": 1}]})),
        )
        .await;
    assert_eq!(st, 201, "{o}");
    let order = o["order_id"].as_str().unwrap().to_owned();
    let (st, dl) = s
        .api(
            "POST",
            &format!("/api/orders/{order}/downloads"),
            "admin_agent",
            Some(json!({"product_id": "p", "max_uses": n})),
        )
        .await;
    assert_eq!(st, 201, "{dl}");
    let link = &dl["links"][0];
    (order, (link["url"].as_str().unwrap().to_owned(), link["link_id"].as_str().unwrap().to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redb_node_moves_into_postgres_with_its_chain_and_spent_bytes_intact() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = admin_config(dir.path());
    cfg.storage.backend = Backend::Redb;
    cfg.storage.postgres_url = None;
    cfg.storage.kek_file = None;
    let s = Server::start_with(dir, cfg).await;
    s.api(
        "PUT",
        "/api/products/p",
        "global_admin",
        Some(json!({"name": "P", "kind": "perpetual", "unit_price_cents": 100,
        "currency": "USD", "cancel_policy": "standard", "key_required": true})),
    )
    .await;
    let data = content(100_000, 3);
    std::fs::write(s.files_dir().join("p.iso"), &data).unwrap();
    s.api("PUT", "/api/products/p/files/pf", "global_admin", Some(json!({"path": "p.iso", "filename": "p.iso"}))).await;
    let keys: Vec<String> = (0..10).map(|i| format!("KEY-{i}")).collect();
    s.api("POST", "/api/products/p/keys", "global_admin", Some(json!({ "keys": keys }))).await;
    s.api(
        "POST",
        "/api/customers",
        "admin_agent",
        Some(json!({"tenant_id": TENANT_ID, "domain": "c.com", "name": "C", "country": "US"})),
    )
    .await;
    let (order_a, (link_a, id_a)) = order_with_link(&s, 50).await;
    let (order_b, (link_b, id_b)) = order_with_link(&s, 50).await;
    // Part-spend: a full copy, a range, and one of them twice.
    assert_eq!(get(&link_a, &[]).await.unwrap().0, 200);
    assert_eq!(get(&link_a, &[("range", "bytes=0-999")]).await.unwrap().0, 206);
    assert_eq!(get(&link_b, &[]).await.unwrap().0, 200);
    // A few thousand records, and one order cancelled.
    let mut filler = Vec::new();
    for i in 0..3000u64 {
        let mut e = keydrop::activity::Entry::new(keydrop::activity::Kind::DownloadRefused);
        e.bytes = Some(i);
        filler.push(e);
    }
    s.state.store.append(filler).await.unwrap();
    let (st, v) = s
        .api("POST", &format!("/api/orders/{order_b}/cancel"), "admin_agent", Some(json!({"acknowledged": true})))
        .await;
    assert_eq!(st, 200, "{v}");
    let status = |s: &Server, id: &str| {
        let (state, id) = (s.state.clone(), id.to_owned());
        async move { keydrop::links::link_status(&state, &id, chrono::Utc::now()).await.unwrap().unwrap() }
    };
    let before_a = {
        s.state.store.flush().await.unwrap();
        status(&s, &id_a).await
    };
    let before_b = status(&s, &id_b).await;
    let (_, order_json) = s.api("GET", &format!("/api/orders/{order_a}"), "admin_agent", None).await;
    let (_, keys_json) = s.api("GET", &format!("/api/orders/{order_a}/keys"), "admin_agent", None).await;
    let records = s.records().await;
    let root = s.stop().await;

    // The real command, on the stopped node's config.
    let url = Pg::shared().fresh_database();
    let config = root.path().join("keydrop.toml");
    std::fs::write(&config, "[storage]\ndata_dir = \"data\"\nfiles_dir = \"files\"\n").unwrap();
    let out =
        std::process::Command::new(BIN).args(["move-store", "--to", &url, "--config"]).arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("{} activity records; chain intact", records.len())), "{text}");

    // A PostgreSQL node with the moved KEK serves the same state.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = admin_config(dir.path());
    cfg.storage.backend = Backend::Postgres;
    cfg.storage.postgres_url = Some(url);
    cfg.storage.kek_file = Some(root.path().join("data").join("kek.key"));
    cfg.storage.files_dir = root.path().join("files");
    let p = Server::start_with(dir, cfg).await;
    let after_a = status(&p, &id_a).await;
    let after_b = status(&p, &id_b).await;
    assert_eq!((after_a.bytes_spent, after_a.state), (before_a.bytes_spent, before_a.state));
    assert_eq!((after_b.bytes_spent, after_b.state), (before_b.bytes_spent, before_b.state));
    assert_eq!(after_b.state, "revoked");
    let moved = p.records().await;
    assert_eq!(moved[..records.len()], records[..], "every record, seq, at and hash as they were");
    let (_, v) = p.api("GET", "/api/activity/verify", "global_admin", None).await;
    assert_eq!(v["ok"].as_bool(), Some(true), "{v}");
    assert_eq!(p.api("GET", &format!("/api/orders/{order_a}"), "admin_agent", None).await.1, order_json);
    assert_eq!(
        p.api("GET", &format!("/api/orders/{order_a}/keys"), "admin_agent", None).await.1["keys"],
        keys_json["keys"]
    );
    // Old links keep working (their signing keys moved), the chain goes on from the moved head.
    let link_a_here = link_a.replace(&link_a.split('/').nth(2).unwrap().to_owned(), &p.public.to_string());
    let (st, _, body) = get(&link_a_here, &[]).await.unwrap();
    assert_eq!((st, body.len()), (200, data.len()));
    let (_, v) = p.api("GET", "/api/activity/verify", "global_admin", None).await;
    assert!(v["ok"].as_bool() == Some(true) && v["records"].as_u64() > Some(records.len() as u64), "{v}");
    p.stop().await;
}
