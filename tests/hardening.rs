//! The second hardening round (API.md §5.1, §5.2), each finding as a user meets it over HTTP:
//! file ids per product, re-attach and retire, hard links and dot names, the push header's
//! limits, amounts that JSON carries exactly, duplicate keys, coalesced refusal records.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const T: &str = "22222222-3333-4444-8555-666666666666";

async fn product(s: &Server, id: &str) {
    let body = json!({"name": format!("Product {id}"), "kind": "perpetual", "unit_price_cents": 1000,
                      "currency": "USD", "cancel_policy": "standard", "unavailable_markets": []});
    let (st, v) = s.api("PUT", &format!("/api/products/{id}"), "global_admin", Some(body)).await;
    assert!(st == 201 || st == 200, "{v}");
}

async fn attach(s: &Server, product: &str, file: &str, path: &str, filename: &str) -> (u16, Value) {
    let body = json!({"version": "1", "language": "en", "file_type": "iso", "path": path, "filename": filename});
    s.api("PUT", &format!("/api/products/{product}/files/{file}"), "global_admin", Some(body)).await
}

async fn customer_and_order(s: &Server, product: &str) -> String {
    let c = json!({"tenant_id": T, "domain": "fabrikam.com", "name": "Fabrikam", "country": "US"});
    let (st, v) = s.api("POST", "/api/customers", "admin_agent", Some(c)).await;
    assert!(st == 201 || v["code"] == "customer_exists", "{v}");
    let body = json!({"items": [{"product_id": product, "quantity": 1}]});
    let (st, o) = s.api("POST", &format!("/api/customers/{T}/orders"), "admin_agent", Some(body)).await;
    assert_eq!(st, 201, "{o}");
    o["order_id"].as_str().unwrap().to_owned()
}

async fn downloads(s: &Server, order: &str, body: Value) -> (u16, Value) {
    s.api("POST", &format!("/api/orders/{order}/downloads"), "admin_agent", Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_id_attached_to_another_product_leaves_the_first_products_links_serving_its_own_bytes() {
    let s = Server::start_admin().await;
    let big = content(2 * 1024 * 1024 + 3, 1);
    let small = content(64 * 1024, 2);
    std::fs::write(s.files_dir().join("big.bin"), &big).unwrap();
    std::fs::write(s.files_dir().join("small.bin"), &small).unwrap();
    product(&s, "A").await;
    product(&s, "B").await;
    assert_eq!(attach(&s, "A", "x", "big.bin", "A-standard.iso").await.0, 201);
    let order = customer_and_order(&s, "A").await;
    let (st, dl) = downloads(&s, &order, json!({"product_id": "A", "max_uses": 2})).await;
    assert_eq!(st, 201, "{dl}");
    let url = dl["links"][0]["url"].as_str().unwrap().to_owned();

    // The attack: the same file id on product B, with another file and name.
    let (st, b) = attach(&s, "B", "x", "small.bin", "B-premium.iso").await;
    assert_eq!(st, 201, "a different product's file x is a different file: {b}");
    assert_eq!(b["product_id"], "B");

    // A still lists its file, and still issues links for it.
    let (_, a) = s.api("GET", "/api/products/A", "global_admin", None).await;
    assert_eq!(a["files"].as_array().unwrap().len(), 1, "{a}");
    assert_eq!(a["files"][0]["filename"], "A-standard.iso");
    let (st, again) = downloads(&s, &order, json!({"product_id": "A"})).await;
    assert_eq!(st, 201, "{again}");
    assert_eq!(again["links"][0]["size"], big.len() as u64);

    // A's old link serves A's bytes under A's name, two copies and no more.
    for _ in 0..2 {
        let (st, h, body) = within(30, "download", get(&url, &[])).await.unwrap();
        assert_eq!(st, 200);
        assert!(body.as_ref() == big.as_slice(), "A's link served {} bytes that are not A's file", body.len());
        assert!(h["content-disposition"].to_str().unwrap().contains("A-standard.iso"));
    }
    let (st, _, body) = get(&url, &[]).await.unwrap();
    assert_eq!((st, problem(&body)["code"].clone()), (410, json!("exhausted")));
    let link_id = dl["links"][0]["link_id"].as_str().unwrap();
    let (_, l) = s.api("GET", &format!("/api/links/{link_id}"), "admin_agent", None).await;
    assert_eq!((l["product_id"].as_str(), l["file_id"].as_str()), (Some("A"), Some("x")), "{l}");
    assert_eq!(l["downloads_used"], 2.0);
    s.stop().await;
}

#[tokio::test]
async fn re_attaching_the_same_file_is_200_a_different_one_409_and_a_retired_file_keeps_its_links() {
    let s = Server::start_admin().await;
    let data = content(100_000, 3);
    std::fs::write(s.files_dir().join("v1.iso"), &data).unwrap();
    std::fs::write(s.files_dir().join("v2.iso"), content(100_001, 4)).unwrap();
    product(&s, "P").await;
    assert_eq!(attach(&s, "P", "f", "v1.iso", "Setup.iso").await.0, 201);
    let (st, same) = attach(&s, "P", "f", "v1.iso", "Setup.iso").await;
    assert_eq!(st, 200, "identical re-PUT: {same}");
    assert_eq!(same["size"], 100_000);
    for (path, name) in [("v2.iso", "Setup.iso"), ("v1.iso", "Other.iso")] {
        let (st, v) = attach(&s, "P", "f", path, name).await;
        assert_eq!((st, v["code"].as_str()), (409, Some("file_exists")), "{path} {name}: {v}");
    }
    let (_, p) = s.api("GET", "/api/products/P", "global_admin", None).await;
    assert_eq!(p["files"][0]["filename"], "Setup.iso", "the refused PUTs changed nothing: {p}");

    let order = customer_and_order(&s, "P").await;
    let (_, dl) = downloads(&s, &order, json!({"product_id": "P"})).await;
    let url = dl["links"][0]["url"].as_str().unwrap().to_owned();

    let (st, gone) = s.api("DELETE", "/api/products/P/files/f", "admin_agent", None).await;
    assert_eq!(st, 403, "global_admin only: {gone}");
    let (st, gone) = s.api("DELETE", "/api/products/P/files/f", "global_admin", None).await;
    assert_eq!(st, 200, "{gone}");
    assert!(gone["retired_at"].is_string(), "{gone}");
    let (st, _) = s.api("DELETE", "/api/products/P/files/nope", "global_admin", None).await;
    assert_eq!(st, 404);

    let (st, v) = downloads(&s, &order, json!({"product_id": "P"})).await;
    assert_eq!((st, v["code"].as_str()), (404, Some("not_found")), "no new links for a retired file: {v}");
    let (st, _, body) = get(&url, &[]).await.unwrap();
    assert_eq!(st, 200, "a link issued before keeps serving");
    assert!(body.as_ref() == data.as_slice());
    s.stop().await;
}

#[tokio::test]
async fn hard_linked_files_and_dot_names_are_refused_at_attach() {
    let s = Server::start_admin().await;
    product(&s, "P").await;
    let outside = s.dir.path().join("secret.key");
    std::fs::write(&outside, b"not for download").unwrap();
    std::fs::hard_link(&outside, s.files_dir().join("innocent.iso")).unwrap();
    let (st, v) = attach(&s, "P", "h", "innocent.iso", "innocent.iso").await;
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("path")), "{v}");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("hard link"), "{v}");

    std::fs::write(s.files_dir().join("ok.iso"), b"ok").unwrap();
    for name in [".", "..", "", " "] {
        let (st, v) = attach(&s, "P", "d", "ok.iso", name).await;
        assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("filename")), "{name:?}: {v}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_file_that_gains_a_second_hard_link_after_attach_is_not_served() {
    let s = Server::start_admin().await;
    product(&s, "P").await;
    std::fs::write(s.files_dir().join("f.iso"), content(1000, 5)).unwrap();
    assert_eq!(attach(&s, "P", "f", "f.iso", "f.iso").await.0, 201);
    let order = customer_and_order(&s, "P").await;
    let (_, dl) = downloads(&s, &order, json!({"product_id": "P"})).await;
    std::fs::hard_link(s.files_dir().join("f.iso"), s.dir.path().join("elsewhere")).unwrap();
    let (st, _, body) = get(dl["links"][0]["url"].as_str().unwrap(), &[]).await.unwrap();
    assert_eq!((st, problem(&body)["code"].clone()), (503, json!("unavailable")));
    s.stop().await;
}

#[tokio::test]
async fn an_order_whose_total_would_pass_2_pow_53_is_400() {
    let s = Server::start_admin().await;
    let body = json!({"name": "Huge", "kind": "perpetual", "unit_price_cents": 1_000_000_000_000u64,
                      "currency": "USD", "cancel_policy": "standard", "unavailable_markets": []});
    assert_eq!(s.api("PUT", "/api/products/huge", "global_admin", Some(body)).await.0, 201);
    let c = json!({"tenant_id": T, "domain": "fabrikam.com", "name": "Fabrikam", "country": "US"});
    assert_eq!(s.api("POST", "/api/customers", "admin_agent", Some(c)).await.0, 201);
    let items: Vec<Value> = (0..100).map(|_| json!({"product_id": "huge", "quantity": 100_000})).collect();
    let (st, v) =
        s.api("POST", &format!("/api/customers/{T}/orders"), "admin_agent", Some(json!({ "items": items }))).await;
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("items")), "{v}");
    // 9,007 × 10^12 = 9.007e15 < 2^53 − 1: bought, and the total is exact.
    let items = json!([{"product_id": "huge", "quantity": 9007}]);
    let (st, o) =
        s.api("POST", &format!("/api/customers/{T}/orders"), "admin_agent", Some(json!({ "items": items }))).await;
    assert_eq!(st, 201, "{o}");
    assert_eq!(o["total_cents"].as_u64(), Some(9_007_000_000_000_000));
    s.stop().await;
}

#[tokio::test]
async fn a_key_given_twice_is_400_naming_it_and_form_encoded_content_type_is_still_json() {
    let s = Server::start_admin().await;
    let raw = br#"{"tenant_id":"22222222-3333-4444-8555-666666666666","domain":"a.com","domain":"b.com","name":"X","country":"US"}"#;
    let (st, v) = s.api_raw("POST", "/api/customers", "admin_agent", Some(raw.to_vec())).await;
    assert_eq!((st, v["errors"][0]["field"].as_str()), (400, Some("domain")), "{v}");
    let (st, _) = s.api("GET", &format!("/api/customers/{T}"), "admin_agent", None).await;
    assert_eq!(st, 404, "nothing was created");

    // `curl -d` sends application/x-www-form-urlencoded; the body is still read as JSON.
    let url = format!("http://{}/api/customers", s.admin);
    let body = json!({"tenant_id": T, "domain": "a.com", "name": "X", "country": "US"}).to_string();
    let (st, _) = post_form(&url, &body).await;
    assert_eq!(st, 201);
    s.stop().await;
}

async fn post_form(url: &str, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {}", token_for("admin_agent"));
    let headers = [("content-type", "application/x-www-form-urlencoded"), ("authorization", auth.as_str())];
    post(url, &headers, body.as_bytes()).await
}

/// One POST with `headers` and `body`: the status and the JSON answer.
async fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    use http_body_util::BodyExt;
    let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let mut req = http::Request::post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(http_body_util::Full::new(bytes::Bytes::from(body.to_owned()))).unwrap();
    within(10, "post", async {
        let resp = c.request(req).await.unwrap();
        let st = resp.status().as_u16();
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
    })
    .await
}

/// Sends `n` pushes with `header` and returns how long they took, one after another.
async fn pushes(s: &Server, header: &str, body: &[u8], n: usize) -> Duration {
    let url = format!("http://{}/api/revocations", s.admin);
    let t0 = Instant::now();
    for _ in 0..n {
        let (st, _) = push(&url, header, body).await;
        assert_eq!(st, 401);
    }
    t0.elapsed()
}

async fn push(url: &str, header: &str, body: &[u8]) -> (u16, Value) {
    post(url, &[("keydrop-signature", header)], body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_with_900_signatures_is_401_and_costs_no_more_than_one_with_a_single_wrong_signature() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = admin_config(dir.path());
    cfg.revocation.push_secret = Some("push-secret".into());
    let s = Server::start_with(dir, cfg).await;
    // A body near the 64 KiB cap: each HMAC over it is real work.
    let body = format!(r#"{{"order_id":"ord_x","reason":"{}"}}"#, "r".repeat(60_000)).into_bytes();
    let t = chrono::Utc::now().timestamp();
    let one = format!("t={t},v1={}", "ab".repeat(32));
    let many = format!("t={t},{}", vec![format!("v1={}", "ab".repeat(32)); 900].join(","));
    let (st, v) = push(&format!("http://{}/api/revocations", s.admin), &many, &body).await;
    assert_eq!((st, v["code"].as_str()), (401, Some("bad_signature")), "{v}");
    // Warm up, then compare the two kinds of refusal, interleaved so noise hits both alike.
    pushes(&s, &one, &body, 5).await;
    let (mut t_one, mut t_many) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..5 {
        t_one += pushes(&s, &one, &body, 10).await;
        t_many += pushes(&s, &many, &body, 10).await;
    }
    assert!(
        t_many < t_one * 2 + Duration::from_millis(50),
        "900 values took {t_many:?} for 50 pushes against {t_one:?} with one value"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_refusals_on_one_link_are_a_few_records_whose_counts_add_up_to_all_of_them() {
    let s = Server::start().await;
    s.add_file("f", "f.bin", 1000).await;
    s.open_order("o").await;
    let link = s.issue("o", "f", 1).await;
    assert_eq!(get(&link.url, &[]).await.unwrap().0, 200);
    let before = s.records().await.len();
    let log = s.state.config.storage.data_dir.join(keydrop::store::RECORDS_FILE);
    let log_before = std::fs::metadata(&log).unwrap().len();

    // 3,000 refusals from 20 keep-alive clients at once.
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let url = link.url.clone();
        tasks.spawn(async move {
            let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
            for _ in 0..150 {
                let resp = c.request(request("GET", &url, &[])).await.unwrap();
                assert_eq!(resp.status(), 410);
                http_body_util::BodyExt::collect(resp.into_body()).await.unwrap();
            }
        });
    }
    within(60, "3,000 refusals", async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await;
    let seconds = t0.elapsed().as_secs_f64();
    let refused = s.refusal_records(&link.link_id, "exhausted", 3000).await;
    println!("3,000 refusals in {seconds:.2} s: {} records", refused.len());
    assert!(
        refused.len() as f64 <= seconds + 2.0,
        "{} records for 3,000 refusals in {seconds:.2} s: more than one a second",
        refused.len()
    );
    assert!(refused.windows(2).all(|w| w[0].at < w[1].at), "one record per window");
    let grew = s.records().await.len() - before;
    assert_eq!(grew, refused.len(), "nothing else was written");
    let bytes = std::fs::metadata(&log).unwrap().len() - log_before;
    assert!(bytes < 1000 * (refused.len() as u64 + 1), "the log grew by {bytes} bytes");
    s.stop().await;
}

#[tokio::test]
async fn refusals_held_at_shutdown_are_recorded_before_the_store_closes() {
    let s = Server::start().await;
    s.add_file("f", "f.bin", 10).await;
    s.open_order("o").await;
    let link = s.issue("o", "f", 5).await;
    s.set_access("o", keydrop::store::Access::Revoked).await;
    for _ in 0..10 {
        assert_eq!(get(&link.url, &[]).await.unwrap().0, 410);
    }
    let state = s.state.clone();
    let _dir = s.stop().await;
    let mut total = 0;
    state
        .store
        .scan_activity(|r| {
            let r = r.unwrap();
            if r.kind == keydrop::activity::Kind::DownloadRefused {
                total += r.count.unwrap_or(1);
            }
            true
        })
        .await
        .unwrap();
    assert_eq!(total, 10);
}
