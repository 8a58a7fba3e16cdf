//! Subscriptions that live their term (API.md §5.5), through the admin API with the test clock:
//! product fields, order terms, one per customer, marketplace cancellation (immediate and
//! scheduled, and withdrawn). The rules' boundaries are unit-tested in `src/terms_tests.rs`.

mod common;

use common::*;
use serde_json::{json, Value};

const TENANT: &str = "21111111-2222-4333-8444-555555555555";

async fn customer(s: &Server) {
    let body = json!({"tenant_id": TENANT, "domain": "fabrikam.com", "name": "Fabrikam", "country": "US"});
    assert_eq!(s.api("POST", "/api/customers", "admin_agent", Some(body)).await.0, 201);
}

async fn product(s: &Server, id: &str, extra: Value) {
    let mut body = json!({"name": id, "kind": "subscription", "unit_price_cents": 3000, "currency": "USD",
        "cancel_policy": "marketplace", "key_required": false});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (st, p) = s.api("PUT", &format!("/api/products/{id}"), "global_admin", Some(body)).await;
    assert!(st == 201 || st == 200, "{p}");
}

async fn buy(s: &Server, id: &str) -> (u16, Value) {
    let body = json!({"items": [{"product_id": id, "quantity": 1}]});
    s.api("POST", &format!("/api/customers/{TENANT}/orders"), "admin_agent", Some(body)).await
}

async fn order(s: &Server, oid: &str) -> Value {
    s.api("GET", &format!("/api/orders/{oid}"), "admin_agent", None).await.1
}

fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap().into()
}

#[tokio::test]
async fn a_product_takes_billing_trial_and_one_per_customer_and_refuses_them_on_perpetual_software() {
    let s = Server::start_admin().await;
    product(&s, "m365", json!({"billing": "monthly", "trial_days": 30, "one_per_customer": true})).await;
    let (_, p) = s.api("GET", "/api/products/m365", "admin_agent", None).await;
    assert_eq!(
        (p["billing"].as_str(), p["trial_days"].as_u64(), p["one_per_customer"].as_bool()),
        (Some("monthly"), Some(30), Some(true))
    );
    assert_eq!(p["cancel_policy"], "marketplace");
    let bad = json!({"name": "x", "kind": "perpetual", "unit_price_cents": 1, "currency": "USD",
        "cancel_policy": "standard", "billing": "annual"});
    let (st, e) = s.api("PUT", "/api/products/perp", "global_admin", Some(bad)).await;
    assert_eq!((st, e["errors"][0]["field"].as_str()), (400, Some("billing")));
    let (st, e) = s
        .api(
            "PUT",
            "/api/products/sub",
            "global_admin",
            Some(json!({"name": "x", "kind": "subscription",
            "unit_price_cents": 1, "currency": "USD", "cancel_policy": "standard", "billing": "weekly"})),
        )
        .await;
    assert_eq!((st, e["errors"][0]["field"].as_str()), (400, Some("billing")));
}

#[tokio::test]
async fn an_order_answers_its_trial_and_term_and_a_second_buy_of_a_one_per_customer_offer_is_409_with_the_order() {
    let s = Server::start_admin().await;
    customer(&s).await;
    product(&s, "m365", json!({"billing": "monthly", "trial_days": 30, "one_per_customer": true})).await;
    let (st, o) = buy(&s, "m365").await;
    assert_eq!(st, 201, "{o}");
    let oid = o["order_id"].as_str().unwrap().to_owned();
    let bought = time(&o["purchased_at"]);
    assert_eq!(time(&o["trial_ends_at"]), bought + chrono::Duration::days(30));
    assert_eq!((time(&o["term_start"]), time(&o["term_end"])), (bought, bought + chrono::Duration::days(30)));

    let (st, e) = buy(&s, "m365").await;
    assert_eq!((st, e["code"].as_str(), e["order_id"].as_str()), (409, Some("already_subscribed"), Some(oid.as_str())));
    assert_eq!(s.api("POST", &format!("/api/orders/{oid}/suspend"), "admin_agent", None).await.0, 200);
    let (st, e) = buy(&s, "m365").await;
    assert_eq!(
        (st, e["order_id"].as_str()),
        (409, Some(oid.as_str())),
        "a suspended one is reactivated, not bought again"
    );
    let o = order(&s, &oid).await;
    // 90 days plus the 30 from the customer's creation (today) to the first paid term (the
    // trial's end): 120, the most there is.
    assert_eq!(time(&o["data_deleted_at"]), time(&o["suspended_at"]) + chrono::Duration::days(120), "{o}");

    assert_eq!(s.api("POST", &format!("/api/orders/{oid}/reactivate"), "admin_agent", None).await.0, 200);
    let (st, c) =
        s.api("POST", &format!("/api/orders/{oid}/cancel"), "admin_agent", Some(json!({"acknowledged": true}))).await;
    assert_eq!(
        (st, c["status"].as_str(), c["credit_cents"].as_u64()),
        (200, Some("cancelled"), Some(0)),
        "a trial credits nothing: {c}"
    );
    assert_eq!(buy(&s, "m365").await.0, 201, "allowed again after cancellation");
}

#[tokio::test]
async fn the_trial_end_shows_the_first_paid_term_on_the_next_read() {
    let s = Server::start_admin().await;
    customer(&s).await;
    product(&s, "m365", json!({"billing": "monthly", "trial_days": 30})).await;
    let (_, o) = buy(&s, "m365").await;
    let oid = o["order_id"].as_str().unwrap().to_owned();
    let trial_end = time(&o["trial_ends_at"]);
    s.state.advance_clock(31 * 86_400);
    let o = order(&s, &oid).await;
    assert_eq!(time(&o["term_start"]), trial_end);
    assert_eq!(time(&o["term_end"]), trial_end.checked_add_months(chrono::Months::new(1)).unwrap());
    assert_eq!(o["status"], "active");
}

#[tokio::test]
async fn marketplace_cancellation_is_immediate_with_full_credit_within_24_hours_and_scheduled_after() {
    let s = Server::start_admin().await;
    customer(&s).await;
    product(&s, "monthly", json!({"billing": "monthly"})).await;
    let (_, a) = buy(&s, "monthly").await;
    let (_, b) = buy(&s, "monthly").await;
    let (a, b) = (a["order_id"].as_str().unwrap().to_owned(), b["order_id"].as_str().unwrap().to_owned());

    s.state.advance_clock(23 * 3600 + 59 * 60);
    let (_, p) = s.api("GET", &format!("/api/orders/{a}/cancellation"), "admin_agent", None).await;
    assert_eq!((p["mode"].as_str(), p["credit_cents"].as_u64()), (Some("immediate"), Some(3000)), "{p}");
    let (st, c) =
        s.api("POST", &format!("/api/orders/{a}/cancel"), "admin_agent", Some(json!({"acknowledged": true}))).await;
    assert_eq!((st, c["status"].as_str(), c["credit_cents"].as_u64()), (200, Some("cancelled"), Some(3000)));

    s.state.advance_clock(2 * 60);
    let (_, p) = s.api("GET", &format!("/api/orders/{b}/cancellation"), "admin_agent", None).await;
    assert_eq!((p["mode"].as_str(), p["credit_cents"].as_u64()), (Some("at_renewal"), Some(0)), "{p}");
    let (st, c) =
        s.api("POST", &format!("/api/orders/{b}/cancel"), "admin_agent", Some(json!({"acknowledged": true}))).await;
    let term_end = time(&order(&s, &b).await["term_end"]);
    assert_eq!((st, c["status"].as_str(), c["credit_cents"].as_u64()), (200, Some("active"), Some(0)), "{c}");
    assert_eq!(time(&c["cancel_at"]), term_end);
    let o = order(&s, &b).await;
    assert_eq!((o["status"].as_str(), o["auto_renew"].as_bool()), (Some("active"), Some(false)));
    let dl = s
        .api("POST", &format!("/api/orders/{b}/downloads"), "admin_agent", Some(json!({"product_id": "monthly"})))
        .await;
    assert_ne!(dl.0, 410, "the order keeps working until its term ends");
    assert!(s
        .records()
        .await
        .iter()
        .any(|r| r.kind.name() == "order.cancellation_scheduled" && r.order_id.as_deref() == Some(b.as_str())));

    // Withdrawn before the term ends: the order renews as before.
    let (st, o) = s.api("PATCH", &format!("/api/orders/{b}"), "admin_agent", Some(json!({"auto_renew": true}))).await;
    assert_eq!((st, o["cancel_at"].is_null(), o["auto_renew"].as_bool()), (200, true, Some(true)), "{o}");
    s.state.advance_clock(40 * 86_400);
    let o = order(&s, &b).await;
    assert_eq!(o["status"], "active", "renewed: {o}");
    assert!(time(&o["term_start"]) >= term_end);
}

#[tokio::test]
async fn a_scheduled_cancellation_shows_the_order_cancelled_once_its_term_has_ended() {
    let s = Server::start_admin().await;
    customer(&s).await;
    product(&s, "annual", json!({"billing": "annual"})).await;
    let (_, o) = buy(&s, "annual").await;
    let oid = o["order_id"].as_str().unwrap().to_owned();
    s.state.advance_clock(15 * 86_400);
    let (_, p) = s.api("GET", &format!("/api/orders/{oid}/cancellation"), "admin_agent", None).await;
    assert_eq!(p["mode"], "at_renewal", "day 15 of an annual term: {p}");
    let (_, c) =
        s.api("POST", &format!("/api/orders/{oid}/cancel"), "admin_agent", Some(json!({"acknowledged": true}))).await;
    let cancel_at = time(&c["cancel_at"]);
    s.state.advance_clock((cancel_at - chrono::Utc::now()).num_seconds() + 86_400 * 16);
    let o = order(&s, &oid).await;
    assert_eq!(o["status"], "cancelled", "{o}");
    let (st, _) = s.api("GET", &format!("/api/orders/{oid}/keys"), "admin_agent", None).await;
    assert_eq!(st, 410);
}

/// The records of `kind` for `order_id`, once at least `n` are there (the clock ticks each second
/// in tests), then two more ticks later, so a change applied twice would show.
async fn records_of(s: &Server, order_id: &str, kind: &str, n: usize) -> Vec<keydrop::activity::Record> {
    let of = |recs: Vec<keydrop::activity::Record>| -> Vec<keydrop::activity::Record> {
        recs.into_iter().filter(|r| r.kind.name() == kind && r.order_id.as_deref() == Some(order_id)).collect()
    };
    within(15, "the lifecycle clock's records", async {
        while of(s.records().await).len() < n {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    of(s.records().await)
}

/// An order with one file, ready to download: its order id and a link.
async fn bought_with_link(s: &Server, product_id: &str) -> (String, String) {
    std::fs::write(s.files_dir().join(format!("{product_id}.zip")), b"the payload").unwrap();
    let file = json!({"path": format!("{product_id}.zip"), "filename": format!("{product_id}.zip")});
    let (st, _) = s.api("PUT", &format!("/api/products/{product_id}/files/zip"), "global_admin", Some(file)).await;
    assert_eq!(st, 201);
    let (st, o) = buy(s, product_id).await;
    assert_eq!(st, 201, "{o}");
    let oid = o["order_id"].as_str().unwrap().to_owned();
    let (st, dl) = s
        .api("POST", &format!("/api/orders/{oid}/downloads"), "admin_agent", Some(json!({"product_id": product_id})))
        .await;
    assert_eq!(st, 201, "{dl}");
    (oid, dl["links"][0]["url"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_monthly_term_without_auto_renew_expires_on_time_its_links_410_and_the_record_is_written_once() {
    let s = Server::start_admin().await;
    customer(&s).await;
    product(&s, "monthly", json!({"billing": "monthly", "cancel_policy": "standard", "one_per_customer": true})).await;
    let (oid, url) = bought_with_link(&s, "monthly").await;
    assert_eq!(
        s.api("PATCH", &format!("/api/orders/{oid}"), "admin_agent", Some(json!({"auto_renew": false}))).await.0,
        200
    );
    assert_eq!(get(&url, &[]).await.unwrap().0, 200);
    let term_end = time(&order(&s, &oid).await["term_end"]);
    s.state.advance_clock((term_end - chrono::Utc::now()).num_seconds() + 1);
    let expired = records_of(&s, &oid, "order.expired", 1).await;
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0].actor.as_deref(), Some(keydrop::lifecycle::ACTOR));
    let (st, _, body) = get(&url, &[]).await.unwrap();
    assert_eq!((st, problem(&body)["code"].as_str()), (410, Some("revoked")));
    assert_eq!(s.api("GET", &format!("/api/orders/{oid}/keys"), "admin_agent", None).await.0, 410);
    assert_eq!(order(&s, &oid).await["status"], "expired");
    let (_, sw) = s.api("GET", &format!("/api/customers/{TENANT}/software"), "admin_agent", None).await;
    assert_eq!(sw["items"][0]["status"], "expired");
    assert_eq!(buy(&s, "monthly").await.0, 201, "one per customer: allowed again once expired");
}

#[tokio::test]
async fn an_annual_term_with_auto_renew_renews_once_per_term_and_its_links_keep_working() {
    let s = Server::start_admin().await;
    customer(&s).await;
    product(&s, "annual", json!({"billing": "annual", "cancel_policy": "standard"})).await;
    let (oid, url) = bought_with_link(&s, "annual").await;
    let first_end = time(&order(&s, &oid).await["term_end"]);
    s.state.advance_clock((first_end - chrono::Utc::now()).num_seconds() + 60);
    let renewed = records_of(&s, &oid, "order.renewed", 1).await;
    assert_eq!(renewed.len(), 1, "{renewed:?}");
    assert!(renewed[0].outcome.as_deref().unwrap_or("").contains("term=2"), "{:?}", renewed[0].outcome);
    let o = order(&s, &oid).await;
    assert_eq!((o["status"].as_str(), time(&o["term_start"])), (Some("active"), first_end));
    assert_eq!(time(&o["term_end"]), first_end.checked_add_months(chrono::Months::new(12)).unwrap());
    // A link lives two weeks: a new one, issued in the second term, downloads.
    let (st, dl) = s
        .api("POST", &format!("/api/orders/{oid}/downloads"), "admin_agent", Some(json!({"product_id": "annual"})))
        .await;
    assert_eq!(st, 201, "{dl}");
    assert_eq!(get(dl["links"][0]["url"].as_str().unwrap(), &[]).await.unwrap().0, 200);
    let (st, _, body) = get(&url, &[]).await.unwrap();
    assert_eq!((st, problem(&body)["code"].as_str()), (410, Some("expired")), "the old link by its own two weeks");
}

#[tokio::test]
async fn a_trial_ends_on_time_and_a_scheduled_cancellation_revokes_the_links_at_the_term_end() {
    let s = Server::start_admin().await;
    customer(&s).await;
    product(&s, "trial", json!({"billing": "monthly", "trial_days": 14})).await;
    let (oid, url) = bought_with_link(&s, "trial").await;
    s.state.advance_clock(14 * 86_400 + 5);
    assert_eq!(records_of(&s, &oid, "order.trial_ended", 1).await.len(), 1);
    // Two days into the first paid term: past the marketplace's 24 hours, so scheduled.
    s.state.advance_clock(2 * 86_400);
    let (st, c) =
        s.api("POST", &format!("/api/orders/{oid}/cancel"), "admin_agent", Some(json!({"acknowledged": true}))).await;
    assert_eq!((st, c["status"].as_str()), (200, Some("active")), "{c}");
    let cancel_at = time(&c["cancel_at"]);
    drop(url);
    // A minute before the cancellation takes effect the order still works (a fresh link: links
    // live two weeks).
    s.state.advance_clock((cancel_at - s.state.now()).num_seconds() - 60);
    let (_, dl) = s
        .api("POST", &format!("/api/orders/{oid}/downloads"), "admin_agent", Some(json!({"product_id": "trial"})))
        .await;
    let url = dl["links"][0]["url"].as_str().unwrap().to_owned();
    assert_eq!(get(&url, &[]).await.unwrap().0, 200, "works until the term ends");
    s.state.advance_clock(61);
    let cancelled = records_of(&s, &oid, "order.cancelled", 1).await;
    assert_eq!(cancelled.len(), 1, "{cancelled:?}");
    let (st, _, body) = get(&url, &[]).await.unwrap();
    assert_eq!((st, problem(&body)["code"].as_str()), (410, Some("revoked")));
    let o = order(&s, &oid).await;
    assert_eq!((o["status"].as_str(), o["credit_cents"].as_u64()), (Some("cancelled"), Some(0)));
}

#[tokio::test]
async fn a_download_in_flight_is_cut_within_a_second_of_the_clock_applying_an_expiry() {
    let s = Server::start_admin().await;
    customer(&s).await;
    product(&s, "big", json!({"billing": "monthly", "cancel_policy": "standard"})).await;
    let size = 64 * 1024 * 1024;
    std::fs::write(s.files_dir().join("big.iso"), content(size, 3)).unwrap();
    let file = json!({"path": "big.iso", "filename": "big.iso"});
    assert_eq!(s.api("PUT", "/api/products/big/files/iso", "global_admin", Some(file)).await.0, 201);
    let (_, o) = buy(&s, "big").await;
    let oid = o["order_id"].as_str().unwrap().to_owned();
    s.api("PATCH", &format!("/api/orders/{oid}"), "admin_agent", Some(json!({"auto_renew": false}))).await;
    let term_end = time(&order(&s, &oid).await["term_end"]);
    // Into the term's last minute, then a fresh link and a slow download.
    s.state.advance_clock((term_end - s.state.now()).num_seconds() - 3);
    let (_, dl) =
        s.api("POST", &format!("/api/orders/{oid}/downloads"), "admin_agent", Some(json!({"product_id": "big"}))).await;
    let url = dl["links"][0]["url"].as_str().unwrap().to_owned();
    let resp = within(30, "get", client().request(request("GET", &url, &[]))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let reader = read_slowly(resp);
    s.state.advance_clock(10);
    let passed = std::time::Instant::now();
    let (n, ended, errored) = within(10, "cut off", reader).await.unwrap();
    assert!(n < size && errored, "cut, not completed: {n} bytes, errored {errored}");
    let expired = records_of(&s, &oid, "order.expired", 1).await;
    assert_eq!(expired.len(), 1);
    // The clock ticks each second here; the cut follows the gate's change within one more.
    let took = ended.duration_since(passed);
    assert!(took < std::time::Duration::from_millis(2500), "cut {took:?} after the term ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_racing_buys_of_a_one_per_customer_offer_make_one_order() {
    let s = std::sync::Arc::new(Server::start_admin().await);
    customer(&s).await;
    product(&s, "one", json!({"billing": "monthly", "one_per_customer": true})).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { buy(&s, "one").await })
        })
        .collect();
    let mut made = Vec::new();
    let mut refused = Vec::new();
    for t in tasks {
        let (st, v) = within(60, "buy", t).await.unwrap();
        match st {
            201 => made.push(v["order_id"].as_str().unwrap().to_owned()),
            409 => refused.push(v["order_id"].as_str().unwrap().to_owned()),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(refused.iter().all(|o| *o == made[0]), "every refusal names the one order");
    let (_, sw) = s.api("GET", &format!("/api/customers/{TENANT}/software"), "admin_agent", None).await;
    assert_eq!(sw["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_suspended_subscription_reactivates_one_second_before_its_data_deletion_and_not_one_second_after() {
    let s = Server::start_admin().await;
    customer(&s).await;
    product(&s, "annual", json!({"billing": "annual", "cancel_policy": "standard"})).await;
    let mut deleted = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (_, o) = buy(&s, "annual").await;
        let oid = o["order_id"].as_str().unwrap().to_owned();
        let (st, o) = s.api("POST", &format!("/api/orders/{oid}/suspend"), "admin_agent", None).await;
        assert_eq!(st, 200);
        // The customer was created today, the first paid term starts today: 90 days.
        assert_eq!(time(&o["data_deleted_at"]), time(&o["suspended_at"]) + chrono::Duration::days(90));
        deleted.push(time(&o["data_deleted_at"]));
        ids.push(oid);
    }
    s.state.advance_clock((deleted[0] - s.state.now()).num_seconds() - 1);
    let (st, o) = s.api("POST", &format!("/api/orders/{}/reactivate", ids[0]), "admin_agent", None).await;
    assert_eq!((st, o["status"].as_str()), (200, Some("active")), "{o}");
    s.state.advance_clock(3);
    let (st, e) = s.api("POST", &format!("/api/orders/{}/reactivate", ids[1]), "admin_agent", None).await;
    assert_eq!((st, e["code"].as_str()), (409, Some("retention_expired")), "{e}");
    assert_eq!(order(&s, &ids[1]).await["status"], "expired");
    assert_eq!(records_of(&s, &ids[1], "order.expired", 1).await.len(), 1, "recorded once");
}
