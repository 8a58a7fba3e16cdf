//! The admin API end to end over HTTP against the real server: the partner's order lifecycle.

mod common;

use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const US_TENANT: &str = "11111111-2222-4333-8444-555555555555";

/// Catalog: a perpetual product with keys and one file; a customer in `country`.
async fn setup(s: &Server, tenant: &str, domain: &str, country: &str) -> Vec<u8> {
    let (st, _) = s
        .api(
            "PUT",
            "/api/products/winsrv",
            "global_admin",
            Some(json!({"name": "Windows Server 2022", "kind": "perpetual", "unit_price_cents": 123400, "currency": "USD",
                        "cancel_policy": "standard", "unavailable_markets": ["KP"], "key_required": true})),
        )
        .await;
    assert!(st == 201 || st == 200);
    let data = content(2 * 1024 * 1024 + 5, 7);
    std::fs::write(s.files_dir().join("ws2022.iso"), &data).unwrap();
    let (st, f) = s
        .api(
            "PUT",
            "/api/products/winsrv/files/ws-en",
            "global_admin",
            Some(json!({"version": "2022", "language": "en", "file_type": "iso", "path": "ws2022.iso", "filename": "Windows Server 2022 (繁體中文).iso"})),
        )
        .await;
    assert!(st == 201 || st == 200, "{f}");
    assert_eq!(f["size"], data.len() as u64);
    let keys: Vec<String> = (0..5).map(|i| format!("AAAAA-BBBBB-CCCCC-DDDDD-{i:05}")).collect();
    let (st, k) = s.api("POST", "/api/products/winsrv/keys", "global_admin", Some(json!({ "keys": keys }))).await;
    assert_eq!(st, 201, "{k}");
    let (st, c) = s
        .api(
            "POST",
            "/api/customers",
            "sales_agent",
            Some(json!({"tenant_id": tenant, "domain": domain, "name": "Contoso", "country": country})),
        )
        .await;
    assert_eq!(st, 201, "{c}");
    data
}

/// Cancels an order (acknowledged) as the partner's agent.
async fn cancel(s: &Server, order: &Value) -> (u16, Value) {
    let path = format!("/api/orders/{}/cancel", order["order_id"].as_str().unwrap());
    s.api("POST", &path, "admin_agent", Some(json!({"acknowledged": true}))).await
}

async fn buy(s: &Server, tenant: &str, body: Value) -> (u16, Value) {
    s.api("POST", &format!("/api/customers/{tenant}/orders"), "admin_agent", Some(body)).await
}

#[tokio::test]
async fn order_lifecycle_buy_download_cancel_revokes_links_and_keys() {
    let s = Server::start_admin().await;
    let data = setup(&s, US_TENANT, "contoso.com", "US").await;

    let (st, order) = buy(&s, US_TENANT, json!({"items": [{"product_id": "winsrv", "quantity": 2}]})).await;
    assert_eq!(st, 201, "{order}");
    assert_eq!(order["status"], "active");
    assert_eq!(order["total_cents"], 246800);
    assert_eq!(order["currency"], "USD");
    assert_eq!(order["tax_included"], false);
    assert_eq!(order["items"][0]["kind"], "perpetual");
    let oid = order["order_id"].as_str().unwrap().to_owned();

    // Get keys and downloads.
    let (st, dl) = s
        .api("POST", &format!("/api/orders/{oid}/downloads"), "admin_agent", Some(json!({"product_id": "winsrv"})))
        .await;
    assert_eq!(st, 201, "{dl}");
    assert_eq!(dl["key"], "AAAAA-BBBBB-CCCCC-DDDDD-00000");
    let link = &dl["links"][0];
    assert_eq!(link["max_uses"], 50);
    assert_eq!(link["size"], data.len() as u64);
    let url = link["url"].as_str().unwrap().to_owned();
    let (st, h, body) = get(&url, &[]).await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(sha256_hex(&body), sha256_hex(&data));
    assert!(h["content-disposition"].to_str().unwrap().contains("filename*=UTF-8''Windows%20Server%202022"));

    // Regeneration: a second call issues new links; both work.
    let (_, dl2) = s
        .api(
            "POST",
            &format!("/api/orders/{oid}/downloads"),
            "admin_agent",
            Some(json!({"product_id": "winsrv", "max_uses": 3})),
        )
        .await;
    assert_ne!(dl2["links"][0]["link_id"], link["link_id"]);
    assert_eq!(dl2["links"][0]["max_uses"], 3);
    let (_, ks) = s.api("GET", &format!("/api/orders/{oid}/keys"), "admin_agent", None).await;
    // One key per item (an item of quantity 2 is one volume key).
    assert_eq!(ks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(ks["keys"][0]["key"], "AAAAA-BBBBB-CCCCC-DDDDD-00000");
    let (st, ls) =
        s.api("GET", &format!("/api/links/{}", link["link_id"].as_str().unwrap()), "helpdesk_agent", None).await;
    assert_eq!((st, ls["state"].as_str().unwrap(), ls["downloads_used"].as_f64().unwrap()), (200, "active", 1.0));

    // A download in flight when the order is cancelled is cut off within a second.
    let slow = within(10, "get", client().request(request("GET", &url, &[]))).await.unwrap();
    let mut slow_body = slow.into_body();
    within(10, "frame", slow_body.frame()).await.unwrap().unwrap();
    let preview = s.api("GET", &format!("/api/orders/{oid}/cancellation"), "global_admin", None).await.1;
    assert_eq!(
        (preview["cancellable"].as_bool(), preview["code"].is_null(), preview["days_left"].as_i64()),
        (Some(true), true, Some(60))
    );
    assert_eq!(preview["credit_cents"], 246800);
    let (st, bad) =
        s.api("POST", &format!("/api/orders/{oid}/cancel"), "admin_agent", Some(json!({"reason": "oops"}))).await;
    assert_eq!(st, 400);
    assert_eq!(bad["errors"][0]["field"], "acknowledged");
    let cancelled_at = Instant::now();
    let (st, c) = s
        .api(
            "POST",
            &format!("/api/orders/{oid}/cancel"),
            "admin_agent",
            Some(json!({"acknowledged": true, "reason": "customer changed mind"})),
        )
        .await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(
        (c["status"].as_str(), c["credit_cents"].as_u64(), c["revoked_links"].as_u64()),
        (Some("cancelled"), Some(246800), Some(2))
    );
    let cut = within(5, "cut off", async {
        loop {
            match slow_body.frame().await {
                Some(Ok(_)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                Some(Err(_)) | None => return Instant::now(),
            }
        }
    })
    .await;
    assert!(cut - cancelled_at < Duration::from_secs(1) + Duration::from_millis(500));

    // Very next reads: the order is cancelled, links refused, keys gone, software shows it.
    assert_eq!(s.api("GET", &format!("/api/orders/{oid}"), "billing_admin", None).await.1["status"], "cancelled");
    let (st, _, b) = get(&url, &[]).await.unwrap();
    assert_eq!((st, problem(&b)["code"].as_str().unwrap()), (410, "revoked"));
    let (st, k) = s.api("GET", &format!("/api/orders/{oid}/keys"), "admin_agent", None).await;
    assert_eq!((st, k["code"].as_str().unwrap()), (410, "revoked"));
    let (st, _) = s
        .api("POST", &format!("/api/orders/{oid}/downloads"), "admin_agent", Some(json!({"product_id": "winsrv"})))
        .await;
    assert_eq!(st, 410);
    let (_, sw) = s.api("GET", &format!("/api/customers/{US_TENANT}/software"), "helpdesk_agent", None).await;
    let items = sw["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!((items[0]["status"].as_str(), items[0]["key_available"].as_bool()), (Some("cancelled"), Some(false)));
    assert!(items[0].get("key").is_none());
    let (st, again) =
        s.api("POST", &format!("/api/orders/{oid}/cancel"), "admin_agent", Some(json!({"acknowledged": true}))).await;
    assert_eq!((st, again["code"].as_str().unwrap()), (409, "already_cancelled"));

    // The activity log has the partner's actions with the principal as actor.
    let recs = s.records().await;
    let kinds: Vec<String> =
        recs.iter().map(|r| serde_json::to_value(r.kind).unwrap().as_str().unwrap().to_owned()).collect();
    for k in
        ["order.created", "key.accessed", "link.issued", "download.started", "download.finished", "order.cancelled"]
    {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
    assert!(recs
        .iter()
        .filter(|r| r.kind == keydrop::activity::Kind::KeyAccessed)
        .all(|r| r.actor.as_deref() == Some("admin_agent-user")));
    s.stop().await;
}

#[tokio::test]
async fn markets_tax_and_key_pool_rules() {
    let s = Server::start_admin().await;
    setup(&s, US_TENANT, "contoso.com", "US").await;
    let (st, _) = s
        .api("PUT", "/api/products/azres", "global_admin", Some(json!({"name": "Azure reservation", "kind": "subscription", "term_days": 365,
              "unit_price_cents": 1000, "currency": "USD", "cancel_policy": "standard", "unavailable_markets": ["@azure-reservations"]})))
        .await;
    assert_eq!(st, 201);
    for (tenant, domain, country) in [
        ("22222222-2222-4333-8444-555555555555", "cn.example", "CN"),
        ("33333333-2222-4333-8444-555555555555", "au.example", "AU"),
        ("44444444-2222-4333-8444-555555555555", "br.example", "BR"),
    ] {
        let (st, _) = s
            .api(
                "POST",
                "/api/customers",
                "admin_agent",
                Some(json!({"tenant_id": tenant, "domain": domain, "name": "X", "country": country})),
            )
            .await;
        assert_eq!(st, 201);
    }
    let (st, e) =
        buy(&s, "22222222-2222-4333-8444-555555555555", json!({"items": [{"product_id": "azres", "quantity": 1}]}))
            .await;
    assert_eq!((st, e["code"].as_str().unwrap()), (422, "unavailable_in_market"));
    let (st, o) =
        buy(&s, "33333333-2222-4333-8444-555555555555", json!({"items": [{"product_id": "azres", "quantity": 1}]}))
            .await;
    assert_eq!((st, o["tax_included"].as_bool()), (201, Some(true)));
    let (_, o) =
        buy(&s, "44444444-2222-4333-8444-555555555555", json!({"items": [{"product_id": "azres", "quantity": 1}]}))
            .await;
    assert_eq!(o["tax_included"], true);
    let (_, o) = buy(&s, US_TENANT, json!({"items": [{"product_id": "azres", "quantity": 1}]})).await;
    assert_eq!(o["tax_included"], false);

    // Pool: 5 keys. Six items need six keys: refused, nothing bought, pool untouched.
    let six: Vec<Value> = (0..6).map(|_| json!({"product_id": "winsrv", "quantity": 1})).collect();
    let before = s.api("GET", &format!("/api/customers/{US_TENANT}/software"), "admin_agent", None).await.1["items"]
        .as_array()
        .unwrap()
        .len();
    let (st, e) = buy(&s, US_TENANT, json!({ "items": six })).await;
    assert_eq!((st, e["code"].as_str().unwrap()), (409, "out_of_keys"));
    let after = s.api("GET", &format!("/api/customers/{US_TENANT}/software"), "admin_agent", None).await.1["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);
    assert_eq!(s.api("GET", "/api/products/winsrv", "helpdesk_agent", None).await.1["keys_available"], 5);
    let five: Vec<Value> = (0..5).map(|_| json!({"product_id": "winsrv", "quantity": 1})).collect();
    assert_eq!(buy(&s, US_TENANT, json!({ "items": five })).await.0, 201);
    let (st, e) = buy(&s, US_TENANT, json!({"items": [{"product_id": "winsrv", "quantity": 1}]})).await;
    assert_eq!((st, e["code"].as_str().unwrap()), (409, "out_of_keys"));
    // The catalog never shows keys.
    let (_, cat) = s.api("GET", "/api/products", "marketing_content_admin", None).await;
    assert!(!cat.to_string().contains("AAAAA-BBBBB"));
    s.stop().await;
}

#[tokio::test]
async fn cancellation_windows_policies_and_prorated_credit() {
    let s = Server::start_admin().await;
    setup(&s, US_TENANT, "contoso.com", "US").await;
    let now = chrono::Utc::now();
    let ago = |days: i64| (now - chrono::Duration::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    let (_, d59) =
        buy(&s, US_TENANT, json!({"items": [{"product_id": "winsrv", "quantity": 1}], "purchased_at": ago(59)})).await;
    let (_, d61) =
        buy(&s, US_TENANT, json!({"items": [{"product_id": "winsrv", "quantity": 1}], "purchased_at": ago(61)})).await;
    let p61 = s
        .api("GET", &format!("/api/orders/{}/cancellation", d61["order_id"].as_str().unwrap()), "admin_agent", None)
        .await
        .1;
    assert_eq!(
        (p61["cancellable"].as_bool(), p61["code"].as_str(), p61["days_left"].as_i64()),
        (Some(false), Some("window_closed"), Some(0))
    );
    let (st, e) = cancel(&s, &d61).await;
    assert_eq!((st, e["code"].as_str().unwrap()), (409, "window_closed"));
    let (st, c) = cancel(&s, &d59).await;
    assert_eq!((st, c["credit_cents"].as_u64()), (200, Some(123400)));
    let (st, _) = buy(&s, US_TENANT, json!({"items": [{"product_id": "winsrv", "quantity": 1}], "purchased_at": (now + chrono::Duration::days(1)).to_rfc3339()})).await;
    assert_eq!(st, 400, "purchased_at in the future");

    // Policies.
    for (pid, policy, code) in
        [("suse", "none", "not_cancellable"), ("esu", "support_request", "support_request_required")]
    {
        let (st, _) = s
            .api(
                "PUT",
                &format!("/api/products/{pid}"),
                "global_admin",
                Some(json!({"name": pid, "kind": "subscription", "term_days": 365,
                  "unit_price_cents": 5000, "currency": "USD", "cancel_policy": policy})),
            )
            .await;
        assert_eq!(st, 201);
        let (_, o) = buy(&s, US_TENANT, json!({"items": [{"product_id": pid, "quantity": 1}]})).await;
        let (st, e) = cancel(&s, &o).await;
        assert_eq!((st, e["code"].as_str().unwrap()), (409, code));
        let p = s
            .api("GET", &format!("/api/orders/{}/cancellation", o["order_id"].as_str().unwrap()), "global_admin", None)
            .await
            .1;
        assert_eq!(p["code"], code);
    }

    // Prorated subscription credit, to the cent.
    let (st, _) = s
        .api(
            "PUT",
            "/api/products/m365",
            "global_admin",
            Some(json!({"name": "M365", "kind": "subscription", "term_days": 365,
              "unit_price_cents": 123400, "currency": "USD", "cancel_policy": "standard"})),
        )
        .await;
    assert_eq!(st, 201);
    let purchased = now - chrono::Duration::days(10) - chrono::Duration::seconds(37);
    let purchased_s = purchased.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, o) =
        buy(&s, US_TENANT, json!({"items": [{"product_id": "m365", "quantity": 3}], "purchased_at": purchased_s}))
            .await;
    let (st, c) = cancel(&s, &o).await;
    assert_eq!(st, 200);
    let purchased = chrono::DateTime::parse_from_rfc3339(&purchased_s).unwrap();
    let cancelled = chrono::DateTime::parse_from_rfc3339(c["cancelled_at"].as_str().unwrap()).unwrap();
    let term: u128 = 365 * 86_400;
    let used = (cancelled - purchased).num_seconds() as u128;
    assert_eq!(c["credit_cents"].as_u64().unwrap() as u128, 370_200 * (term - used) / term);
    s.stop().await;
}

#[tokio::test]
async fn suspend_reactivate_and_retention_expiry() {
    let s = Server::start_admin().await;
    setup(&s, US_TENANT, "contoso.com", "US").await;
    let (st, _) = s
        .api(
            "PUT",
            "/api/products/sub",
            "global_admin",
            Some(json!({"name": "Sub", "kind": "subscription", "term_days": 30,
              "unit_price_cents": 900, "currency": "USD", "cancel_policy": "standard", "key_required": false})),
        )
        .await;
    assert_eq!(st, 201);
    std::fs::write(s.files_dir().join("sub.zip"), b"subscription payload").unwrap();
    s.api(
        "PUT",
        "/api/products/sub/files/sub-zip",
        "global_admin",
        Some(json!({"path": "sub.zip", "filename": "sub.zip"})),
    )
    .await;
    let (_, o) = buy(&s, US_TENANT, json!({"items": [{"product_id": "sub", "quantity": 1}]})).await;
    let oid = o["order_id"].as_str().unwrap().to_owned();
    assert_eq!(o["auto_renew"], true);
    let (_, dl) =
        s.api("POST", &format!("/api/orders/{oid}/downloads"), "admin_agent", Some(json!({"product_id": "sub"}))).await;
    assert!(dl["key"].is_null());
    let url = dl["links"][0]["url"].as_str().unwrap().to_owned();

    let (st, p) =
        s.api("PATCH", &format!("/api/orders/{oid}"), "global_admin", Some(json!({"auto_renew": false}))).await;
    assert_eq!((st, p["auto_renew"].as_bool()), (200, Some(false)));
    let (st, o) = s.api("POST", &format!("/api/orders/{oid}/suspend"), "admin_agent", None).await;
    assert_eq!((st, o["status"].as_str()), (200, Some("suspended")));
    let (st, _, b) = get(&url, &[]).await.unwrap();
    assert_eq!((st, problem(&b)["code"].as_str().unwrap()), (403, "suspended"));
    let (st, e) = s.api("GET", &format!("/api/orders/{oid}/keys"), "admin_agent", None).await;
    assert_eq!((st, e["code"].as_str().unwrap()), (403, "suspended"));
    let (st, _) =
        s.api("POST", &format!("/api/orders/{oid}/downloads"), "admin_agent", Some(json!({"product_id": "sub"}))).await;
    assert_eq!(st, 403);
    let (st, o) = s.api("POST", &format!("/api/orders/{oid}/reactivate"), "global_admin", None).await;
    assert_eq!((st, o["status"].as_str()), (200, Some("active")));
    assert_eq!(get(&url, &[]).await.unwrap().0, 200);

    // Perpetual software is not a subscription.
    let (_, perp) = buy(&s, US_TENANT, json!({"items": [{"product_id": "winsrv", "quantity": 1}]})).await;
    for action in ["suspend", "reactivate"] {
        let (st, e) = s
            .api("POST", &format!("/api/orders/{}/{action}", perp["order_id"].as_str().unwrap()), "admin_agent", None)
            .await;
        assert_eq!((st, e["code"].as_str().unwrap()), (409, "not_a_subscription"));
    }
    let (st, e) = s
        .api(
            "PATCH",
            &format!("/api/orders/{}", perp["order_id"].as_str().unwrap()),
            "admin_agent",
            Some(json!({"auto_renew": true})),
        )
        .await;
    assert_eq!((st, e["code"].as_str().unwrap()), (409, "not_a_subscription"));

    // Retention: suspended for more than 90 days → reactivate is 409, the order expired, links revoked.
    s.api("POST", &format!("/api/orders/{oid}/suspend"), "admin_agent", None).await;
    s.state.advance_clock(91 * 86_400);
    assert_eq!(s.api("GET", &format!("/api/orders/{oid}"), "admin_agent", None).await.1["status"], "expired");
    let (st, e) = s.api("POST", &format!("/api/orders/{oid}/reactivate"), "admin_agent", None).await;
    assert_eq!((st, e["code"].as_str().unwrap()), (409, "retention_expired"));
    let (st, _, b) = get(&url, &[]).await.unwrap();
    assert_eq!((st, problem(&b)["code"].as_str().unwrap()), (410, "revoked"));
    let kinds: Vec<_> = s.records().await.iter().map(|r| r.kind).collect();
    use keydrop::activity::Kind::*;
    for k in [OrderSuspended, OrderReactivated, OrderExpired] {
        assert!(kinds.contains(&k), "{k:?}");
    }
    // Applied once, by the lifecycle clock or by the reactivation that found it due.
    assert_eq!(kinds.iter().filter(|k| **k == OrderExpired).count(), 1);
    s.stop().await;
}

/// Every endpoint × every role: allowed roles never get 401/403, the others get 403; no token 401.
#[tokio::test]
async fn role_table_matches_the_contract() {
    let s = Server::start_admin().await;
    setup(&s, US_TENANT, "contoso.com", "US").await;
    let (_, o) = buy(&s, US_TENANT, json!({"items": [{"product_id": "winsrv", "quantity": 1}]})).await;
    let oid = o["order_id"].as_str().unwrap();
    let all = ROLES.to_vec();
    let table: Vec<(&str, String, Vec<&str>)> = vec![
        ("PUT", "/api/products/p9".into(), vec!["global_admin"]),
        ("PUT", "/api/products/winsrv/files/f9".into(), vec!["global_admin"]),
        ("POST", "/api/products/winsrv/keys".into(), vec!["global_admin"]),
        ("GET", "/api/products".into(), all.clone()),
        ("GET", "/api/products/winsrv".into(), all.clone()),
        ("POST", "/api/customers".into(), vec!["admin_agent", "global_admin", "sales_agent"]),
        ("GET", format!("/api/customers/{US_TENANT}"), all.clone()),
        ("GET", "/api/customers?domain=contoso.com".into(), all.clone()),
        ("POST", format!("/api/customers/{US_TENANT}/orders"), vec!["admin_agent", "global_admin", "sales_agent"]),
        ("GET", format!("/api/orders/{oid}"), all.clone()),
        ("GET", format!("/api/customers/{US_TENANT}/software"), all.clone()),
        ("POST", format!("/api/orders/{oid}/downloads"), vec!["admin_agent"]),
        ("GET", format!("/api/orders/{oid}/keys"), vec!["admin_agent"]),
        (
            "GET",
            "/api/links/00000000000000000000000000000000".into(),
            vec!["admin_agent", "global_admin", "helpdesk_agent"],
        ),
        ("GET", format!("/api/orders/{oid}/cancellation"), vec!["admin_agent", "global_admin"]),
        ("POST", "/api/orders/ord_nope/cancel".into(), vec!["admin_agent"]),
        ("POST", "/api/orders/ord_nope/suspend".into(), vec!["admin_agent", "global_admin"]),
        ("POST", "/api/orders/ord_nope/reactivate".into(), vec!["admin_agent", "global_admin"]),
        ("PATCH", "/api/orders/ord_nope".into(), vec!["admin_agent", "global_admin"]),
        ("POST", "/api/support-requests".into(), vec!["admin_agent", "global_admin"]),
        ("GET", "/api/support-requests/sr_nope".into(), vec!["admin_agent", "global_admin"]),
        (
            "GET",
            "/api/activity".into(),
            vec!["global_admin", "account_admin", "referral_admin", "marketing_content_admin"],
        ),
        ("GET", "/api/activity/verify".into(), vec!["global_admin"]),
    ];
    for (method, path, allowed) in &table {
        for role in ROLES {
            let (st, body) = s.api(method, path, role, Some(json!({}))).await;
            if allowed.contains(&role) {
                assert!(st != 401 && st != 403, "{method} {path} as {role}: {st} {body}");
                assert!(st < 500, "{method} {path} as {role}: {st}");
            } else {
                assert_eq!(st, 403, "{method} {path} as {role}: {body}");
                assert_eq!(body["code"], "forbidden");
            }
        }
        let (st, body) = s.api(method, path, "", None).await;
        assert_eq!((st, body["code"].as_str().unwrap()), (401, "unauthenticated"), "{method} {path}");
    }
    // Revocation pushes take no bearer token: without a signature they are 401 whatever the role.
    for role in ROLES {
        let (st, body) = s.api("POST", "/api/revocations", role, Some(json!({"order_id": oid}))).await;
        assert_eq!((st, body["code"].as_str().unwrap()), (401, "bad_signature"));
    }
    s.stop().await;

    // No principals configured: everything is refused.
    let closed = Server::start().await;
    assert_eq!(closed.api("GET", "/api/products", "global_admin", None).await.0, 401);
    closed.stop().await;
}

#[tokio::test]
async fn bad_json_gets_field_errors_never_5xx() {
    let s = Server::start_admin().await;
    setup(&s, US_TENANT, "contoso.com", "US").await;
    let path = format!("/api/customers/{US_TENANT}/orders");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "body"),
        (b"[1,2]".to_vec(), "body"),
        (br#"{"items": "winsrv"}"#.to_vec(), "items"),
        (br#"{"items": [{"product_id": 5, "quantity": 1}]}"#.to_vec(), "items[0].product_id"),
        (br#"{"items": [{"product_id": "winsrv", "quantity": -1}]}"#.to_vec(), "items[0].quantity"),
        (br#"{"items": [{"product_id": "winsrv", "quantity": 1}], "color": "red"}"#.to_vec(), "color"),
        (br#"{"items": [{"product_id": "nope", "quantity": 1}]}"#.to_vec(), "items[0].product_id"),
        (
            br#"{"items": [{"product_id": "winsrv", "quantity": 1}], "purchased_at": "yesterday"}"#.to_vec(),
            "purchased_at",
        ),
        (format!(r#"{{"items": [], "pad": "{}"}}"#, "x".repeat(1024 * 1024)).into_bytes(), "body"),
    ];
    for (body, field) in cases {
        let (st, e) = s.api_raw("POST", &path, "admin_agent", Some(body)).await;
        assert_eq!(st, 400, "{field}: {e}");
        assert_eq!(e["code"], "invalid_request");
        let fields: Vec<&str> = e["errors"].as_array().unwrap().iter().map(|x| x["field"].as_str().unwrap()).collect();
        assert!(fields.contains(&field), "{field} in {fields:?}");
    }
    // Customers: GUID, country, domain, duplicates.
    let (st, e) = s
        .api(
            "POST",
            "/api/customers",
            "admin_agent",
            Some(json!({"tenant_id": "nope", "domain": "x", "name": "", "country": "ZZ"})),
        )
        .await;
    assert_eq!(st, 400);
    let fields: Vec<&str> = e["errors"].as_array().unwrap().iter().map(|x| x["field"].as_str().unwrap()).collect();
    for f in ["tenant_id", "domain", "name", "country"] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }
    let (st, e) = s
        .api(
            "POST",
            "/api/customers",
            "admin_agent",
            Some(json!({"tenant_id": US_TENANT, "domain": "other.com", "name": "A", "country": "US"})),
        )
        .await;
    assert_eq!((st, e["code"].as_str().unwrap()), (409, "customer_exists"));
    // Files: paths stay inside files_dir.
    for p in ["../secret", "/etc/passwd", "missing.iso"] {
        let (st, e) = s
            .api("PUT", "/api/products/winsrv/files/x", "global_admin", Some(json!({"path": p, "filename": "x.iso"})))
            .await;
        assert_eq!((st, e["errors"][0]["field"].as_str().unwrap()), (400, "path"), "{p}");
    }
    // Links may be shortened, never lengthened.
    let (_, o) = buy(&s, US_TENANT, json!({"items": [{"product_id": "winsrv", "quantity": 1}]})).await;
    let dl = format!("/api/orders/{}/downloads", o["order_id"].as_str().unwrap());
    let (st, e) = s
        .api(
            "POST",
            &dl,
            "admin_agent",
            Some(json!({"product_id": "winsrv", "max_uses": 51, "ttl_seconds": 99_999_999})),
        )
        .await;
    assert_eq!(st, 400);
    assert_eq!(e["errors"].as_array().unwrap().len(), 2);
    let (st, ok) = s.api("POST", &dl, "admin_agent", Some(json!({"product_id": "winsrv", "ttl_seconds": 3600}))).await;
    assert_eq!(st, 201);
    let issued = chrono::DateTime::parse_from_rfc3339(ok["links"][0]["issued_at"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(ok["links"][0]["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires - issued).num_seconds(), 3600);
    let (st, _) = s.api("POST", &dl, "admin_agent", Some(json!({"product_id": "winsrv", "language": "fr"}))).await;
    assert_eq!(st, 404, "no file matches");
    s.stop().await;
}

#[tokio::test]
async fn support_requests_report_missing_fields_and_are_logged() {
    let s = Server::start_admin().await;
    setup(&s, US_TENANT, "contoso.com", "US").await;
    let (_, o) = buy(&s, US_TENANT, json!({"items": [{"product_id": "winsrv", "quantity": 1}]})).await;
    let (st, e) =
        s.api("POST", "/api/support-requests", "admin_agent", Some(json!({"contact": {"email": "nope"}}))).await;
    assert_eq!(st, 400);
    let fields: Vec<&str> = e["errors"].as_array().unwrap().iter().map(|x| x["field"].as_str().unwrap()).collect();
    for f in ["customer", "order_id", "reason", "amount_cents", "contact.name", "contact.email", "contact.phone"] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }
    let body = json!({"customer": "contoso.com", "order_id": o["order_id"], "reason": "Windows 7 ESU refund", "amount_cents": 5000,
                      "contact": {"name": "Ana", "email": "ana@contoso.com", "phone": "+1 425 555 0100"}});
    let (st, r) = s.api("POST", "/api/support-requests", "global_admin", Some(body)).await;
    assert_eq!((st, r["status"].as_str()), (201, Some("open")));
    let (st, g) = s
        .api("GET", &format!("/api/support-requests/{}", r["request_id"].as_str().unwrap()), "admin_agent", None)
        .await;
    assert_eq!((st, g["tenant_id"].as_str()), (200, Some(US_TENANT)));
    assert!(s.records().await.iter().any(|r| r.kind == keydrop::activity::Kind::SupportRequestCreated));
    let (_, c) = s.api("GET", "/api/customers?domain=CONTOSO.com", "referral_admin", None).await;
    assert_eq!(c["tenant_id"], US_TENANT);
    s.stop().await;
}

#[tokio::test]
async fn me_says_who_the_caller_is_and_needs_a_token() {
    let s = Server::start_admin().await;
    for role in ["admin_agent", "global_admin", "helpdesk_agent", "sales_agent", "account_admin"] {
        let (st, v) = s.api("GET", "/api/me", role, None).await;
        assert_eq!(st, 200, "{role}: {v}");
        assert_eq!(v["role"], role);
        assert_eq!(v["name"], format!("{role}-user"));
        assert!(v["tenant_id"].is_null(), "a partner belongs to no tenant: {v}");
        assert!(!v.to_string().contains(&token_for(role)), "the token is never echoed");
    }
    let (st, v) = s.api("GET", "/api/me", "", None).await;
    assert_eq!(st, 401, "{v}");
    let (st, _) = s.api("POST", "/api/me", "admin_agent", None).await;
    assert_eq!(st, 405);
    s.stop().await;
}

/// What a customer token may reach (API.md §5.4): its own tenant; another tenant's anything is
/// `404` as if it did not exist; partner calls are `403`; ending the token ends it at once.
#[tokio::test]
async fn customer_tokens_reach_their_own_tenant_only_and_end_at_once() {
    const OTHER: &str = "99999999-8888-4777-8666-555555555555";
    let s = Server::start_admin().await;
    setup(&s, US_TENANT, "contoso.com", "US").await;
    let (st, _) = s
        .api(
            "POST",
            "/api/customers",
            "sales_agent",
            Some(json!({"tenant_id": OTHER, "domain": "fabrikam.com", "name": "Fabrikam", "country": "US"})),
        )
        .await;
    assert_eq!(st, 201);
    let one = json!({"items": [{"product_id": "winsrv", "quantity": 1}]});
    let (_, mine) = buy(&s, US_TENANT, one.clone()).await;
    let (_, theirs) = buy(&s, OTHER, one).await;
    let (mine, theirs) = (mine["order_id"].as_str().unwrap(), theirs["order_id"].as_str().unwrap());

    let tokens = format!("/api/customers/{US_TENANT}/tokens");
    for role in ["helpdesk_agent", "sales_agent", "account_admin"] {
        let (st, _) = s.api("POST", &tokens, role, Some(json!({"name": "x"}))).await;
        assert_eq!(st, 403, "{role} may not issue customer tokens");
    }
    let (st, _) = s.api("POST", &tokens, "admin_agent", Some(json!({}))).await;
    assert_eq!(st, 400, "a name is required");
    let (st, _) = s
        .api(
            "POST",
            "/api/customers/00000000-0000-4000-8000-000000000000/tokens",
            "admin_agent",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(st, 404);
    let (st, t) = s.api("POST", &tokens, "admin_agent", Some(json!({"name": "Jane at Contoso"}))).await;
    assert_eq!(st, 201, "{t}");
    let token = t["token"].as_str().unwrap().to_owned();
    let token_id = t["token_id"].as_str().unwrap().to_owned();
    let as_customer = |m: &'static str, p: String, b: Option<Value>| {
        let token = token.clone();
        let s = &s;
        async move { s.api_as(m, &p, &token, b.map(|b| b.to_string().into_bytes())).await }
    };

    let (st, me) = as_customer("GET", "/api/me".into(), None).await;
    assert_eq!(
        (st, me["role"].as_str(), me["tenant_id"].as_str()),
        (200, Some("customer_admin"), Some(US_TENANT)),
        "{me}"
    );
    assert!(me["name"].as_str().unwrap().contains("Jane at Contoso"));
    // Its own tenant.
    assert_eq!(as_customer("GET", format!("/api/customers/{US_TENANT}"), None).await.0, 200);
    let (st, sw) = as_customer("GET", format!("/api/customers/{US_TENANT}/software"), None).await;
    assert_eq!((st, sw["items"].as_array().unwrap().len()), (200, 1));
    let (st, dl) =
        as_customer("POST", format!("/api/orders/{mine}/downloads"), Some(json!({"product_id": "winsrv"}))).await;
    assert_eq!(st, 201, "{dl}");
    assert!(dl["key"].as_str().unwrap().starts_with("AAAAA-"));
    assert_eq!(as_customer("GET", format!("/api/orders/{mine}/keys"), None).await.0, 200);
    // Another tenant's anything: 404, the same answer as for something that does not exist.
    for p in [
        format!("/api/customers/{OTHER}"),
        format!("/api/customers/{OTHER}/software"),
        format!("/api/orders/{theirs}"),
        format!("/api/orders/{theirs}/keys"),
        "/api/orders/ord_does_not_exist/keys".into(),
    ] {
        let (st, v) = as_customer("GET", p.clone(), None).await;
        assert_eq!((st, v["code"].as_str()), (404, Some("not_found")), "{p}: {v}");
    }
    let (st, _) =
        as_customer("POST", format!("/api/orders/{theirs}/downloads"), Some(json!({"product_id": "winsrv"}))).await;
    assert_eq!(st, 404);
    // Partner calls, even inside its own tenant: 403.
    let (st, _) = as_customer(
        "POST",
        format!("/api/customers/{US_TENANT}/orders"),
        Some(json!({"items": [{"product_id": "winsrv", "quantity": 1}]})),
    )
    .await;
    assert_eq!(st, 403);
    let (st, _) = as_customer("POST", format!("/api/orders/{mine}/cancel"), Some(json!({"acknowledged": true}))).await;
    assert_eq!(st, 403);
    assert_eq!(as_customer("GET", "/api/customers?domain=fabrikam.com".into(), None).await.0, 403);
    assert_eq!(as_customer("POST", tokens.clone(), Some(json!({"name": "more"}))).await.0, 403);
    // Its activity is its own, whatever it asks for.
    let (st, recs) = as_customer("GET", format!("/api/activity?tenant_id={OTHER}"), None).await;
    assert_eq!(st, 200, "{recs}");
    let recs = recs["records"].as_array().unwrap();
    assert!(!recs.is_empty() && recs.iter().all(|r| r["tenant_id"] == US_TENANT), "{recs:?}");
    assert!(recs
        .iter()
        .any(|r| r["kind"] == "key.accessed" && r["actor"].as_str().unwrap().contains("Jane at Contoso")));

    // Listed for the partner without the token; kept only as its SHA-256.
    let (st, list) = s.api("GET", &tokens, "admin_agent", None).await;
    assert_eq!((st, list["tokens"].as_array().unwrap().len()), (200, 1));
    assert_eq!(list["tokens"][0]["created_by"], "admin_agent-user");
    assert!(!list.to_string().contains(&token) && list["tokens"][0].get("token").is_none());
    if backend_under_test() == keydrop::config::Backend::Redb {
        s.state.store.flush().await.unwrap();
        for entry in std::fs::read_dir(s.dir.path().join("data")).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                    "{} holds the token",
                    path.display()
                );
            }
        }
    }
    // Ended: the next call with it is 401.
    let (st, v) = s.api("DELETE", &format!("{tokens}/{token_id}"), "admin_agent", None).await;
    assert_eq!((st, v["ended"].as_bool()), (200, Some(true)));
    assert_eq!(as_customer("GET", "/api/me".into(), None).await.0, 401);
    assert_eq!(s.api("DELETE", &format!("{tokens}/{token_id}"), "admin_agent", None).await.0, 404);
    s.stop().await;
}

/// A `customer_admin` can also be configured, with its tenant; without one the config is refused.
#[tokio::test]
async fn a_configured_customer_admin_belongs_to_its_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = admin_config(dir.path());
    cfg.principals.push(keydrop::config::Principal {
        name: "contoso-it".into(),
        role: "customer_admin".into(),
        token_sha256: sha256_hex(b"contoso-secret"),
        tenant_id: Some(US_TENANT.to_uppercase()),
    });
    let mut bad = cfg.clone();
    bad.principals.last_mut().unwrap().tenant_id = None;
    assert!(bad.validate().is_err(), "a customer_admin without a tenant is refused");
    let s = Server::start_with(dir, cfg).await;
    setup(&s, US_TENANT, "contoso.com", "US").await;
    let (st, me) = s.api_as("GET", "/api/me", "contoso-secret", None).await;
    assert_eq!((st, me["tenant_id"].as_str(), me["name"].as_str()), (200, Some(US_TENANT), Some("contoso-it")));
    assert_eq!(s.api_as("GET", &format!("/api/customers/{US_TENANT}/software"), "contoso-secret", None).await.0, 200);
    assert_eq!(s.api_as("GET", "/api/products", "contoso-secret", None).await.0, 403);
    s.stop().await;
}
