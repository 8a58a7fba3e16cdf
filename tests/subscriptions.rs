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
