//! Secrets never reach the logs: with every tracing event captured at TRACE level, a full
//! session (keys uploaded, bought, disclosed, links issued and downloaded, a bad token tried,
//! dashboard sessions of a partner and of a customer token) leaves no activation key, admin or
//! customer token, link token, session cookie or CSRF token in any log line or activity record.
//! Its own test binary, because it installs a global subscriber.

mod common;
#[path = "common/ui.rs"]
mod ui;

use common::*;
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_key_or_token_appears_in_any_log_line() {
    let cap = Capture::default();
    let writer = cap.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let s = Server::start_admin().await;
    let tenant = "11111111-2222-4333-8444-555555555555";
    s.api(
        "PUT",
        "/api/products/p",
        "global_admin",
        Some(json!({"name": "P", "kind": "perpetual", "unit_price_cents": 1,
          "currency": "USD", "cancel_policy": "standard", "key_required": true})),
    )
    .await;
    std::fs::write(s.files_dir().join("p.bin"), b"payload").unwrap();
    s.api("PUT", "/api/products/p/files/pf", "global_admin", Some(json!({"path": "p.bin", "filename": "p.bin"}))).await;
    let secret_key = "SECRT-KEYXX-12345-ABCDE-ZZZZZ";
    assert_eq!(s.api("POST", "/api/products/p/keys", "global_admin", Some(json!({"keys": [secret_key]}))).await.0, 201);
    s.api(
        "POST",
        "/api/customers",
        "admin_agent",
        Some(json!({"tenant_id": tenant, "domain": "c.com", "name": "C", "country": "US"})),
    )
    .await;
    let (_, o) = s
        .api(
            "POST",
            &format!("/api/customers/{tenant}/orders"),
            "admin_agent",
            Some(json!({"items": [{"product_id": "p", "quantity": 1}]})),
        )
        .await;
    let oid = o["order_id"].as_str().unwrap();
    let (_, keys) = s.api("GET", &format!("/api/orders/{oid}/keys"), "admin_agent", None).await;
    assert_eq!(keys["keys"][0]["key"], secret_key);
    let (_, dl) =
        s.api("POST", &format!("/api/orders/{oid}/downloads"), "admin_agent", Some(json!({"product_id": "p"}))).await;
    let url = dl["links"][0]["url"].as_str().unwrap();
    let token = url.split("/d/").nth(1).unwrap().split('/').next().unwrap().to_owned();
    assert_eq!(get(url, &[]).await.unwrap().0, 200);
    let mut bad = token.clone();
    bad.replace_range(0..1, if bad.starts_with('A') { "B" } else { "A" });
    assert_eq!(get(&format!("http://{}/d/{bad}", s.public), &[]).await.unwrap().0, 404);
    s.api("GET", "/api/products", "", None).await; // unauthenticated attempt
                                                   // The dashboard: a partner's session, a customer token, the customer's own session.
    let mut partner = ui::Ui::sign_in(&s, "admin_agent").await;
    assert_eq!(partner.get(&format!("/ui/orders/{oid}")).await.status, 200);
    let (st, t) =
        s.api("POST", &format!("/api/customers/{tenant}/tokens"), "admin_agent", Some(json!({"name": "Jane"}))).await;
    assert_eq!(st, 201);
    let customer_token = t["token"].as_str().unwrap().to_owned();
    let mut customer = ui::Ui::sign_in_with(&s, &customer_token).await;
    let a = customer.post(&format!("/ui/orders/{oid}/downloads"), &[("product_id", "p")]).await;
    assert!(a.body.contains(secret_key), "the customer got its key");
    let sessions =
        [partner.cookie("kd_session").unwrap().to_owned(), customer.cookie("kd_session").unwrap().to_owned()];
    let csrfs = [partner.csrf.clone(), customer.csrf.clone()];
    let records = serde_json::to_string(&s.records().await).unwrap();
    s.stop().await;

    let logs = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("request"), "the capture works: {} bytes", logs.len());
    for (what, secret) in [
        ("activation key", secret_key.to_owned()),
        ("link token", token.clone()),
        ("tampered token", bad),
        ("admin token", token_for("admin_agent")),
        ("admin token", token_for("global_admin")),
        ("customer token", customer_token.clone()),
        ("session cookie", sessions[0].clone()),
        ("session cookie", sessions[1].clone()),
        ("CSRF token", csrfs[0].clone()),
        ("CSRF token", csrfs[1].clone()),
    ] {
        assert!(!logs.contains(&secret), "{what} appears in the logs");
        assert!(!records.contains(&secret), "{what} appears in the activity log");
    }
}
