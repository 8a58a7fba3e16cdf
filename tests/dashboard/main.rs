//! The dashboard (API.md §5.4) end to end: sessions, CSRF, the CSP header and every page in
//! four languages over plain HTTP (`pages.rs`), and the partner's workflow in a real headless
//! Chromium (`browser_flows.rs`).

#[path = "../common/browser.rs"]
mod browser;
mod browser_flows;
#[path = "../common/mod.rs"]
mod common;
mod pages;
#[path = "../common/ui.rs"]
mod ui;

use common::*;
use serde_json::json;
pub use ui::*;

pub const DOMAIN: &str = "contoso.com";
pub const KEY: &str = "KD7QX-9WZ2M-4HT8R-PL3VN-6YB1C";

/// A catalog and a customer, through the API: Windows Server in two languages (a key pool of
/// three), a subscription, and Contoso (US). Returns the English ISO's bytes.
pub async fn seed(s: &Server) -> Vec<u8> {
    let en = content(300_000, 7);
    let zh = content(200_000, 8);
    std::fs::create_dir_all(s.files_dir()).unwrap();
    std::fs::write(s.files_dir().join("winsrv-en.iso"), &en).unwrap();
    std::fs::write(s.files_dir().join("winsrv-zh.iso"), &zh).unwrap();
    let calls = [
        (
            "PUT",
            "/api/products/winsrv",
            json!({"name": "Windows Server 2025 Standard", "kind": "perpetual",
            "unit_price_cents": 120_000, "currency": "USD", "cancel_policy": "standard", "key_required": true}),
        ),
        (
            "PUT",
            "/api/products/winsrv/files/f-en",
            json!({"version": "2025", "language": "en-US",
            "file_type": "ISO x64", "path": "winsrv-en.iso", "filename": "WinSrv2025_en-US.iso"}),
        ),
        (
            "PUT",
            "/api/products/winsrv/files/f-zh",
            json!({"version": "2025", "language": "zh-TW",
            "file_type": "ISO x64", "path": "winsrv-zh.iso", "filename": "WinSrv2025_zh-TW.iso"}),
        ),
        (
            "POST",
            "/api/products/winsrv/keys",
            json!({"keys": [KEY, "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE", "FFFFF-GGGGG-HHHHH-JJJJJ-KKKKK"]}),
        ),
        (
            "PUT",
            "/api/products/m365",
            json!({"name": "Microsoft 365 E3", "kind": "subscription", "term_days": 365,
            "unit_price_cents": 43_200, "currency": "USD", "cancel_policy": "standard", "key_required": false}),
        ),
        (
            "POST",
            "/api/customers",
            json!({"tenant_id": TENANT, "domain": DOMAIN, "name": "Contoso Ltd", "country": "US"}),
        ),
    ];
    for (m, p, b) in calls {
        let (st, v) = s.api(m, p, "global_admin", Some(b)).await;
        assert!(st == 200 || st == 201, "{m} {p}: {st} {v}");
    }
    within(30, "digests", async {
        loop {
            let (_, p) = s.api("GET", "/api/products/winsrv", "global_admin", None).await;
            if p["files"].as_array().unwrap().iter().all(|f| f["sha256"].is_string()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    en
}

/// Buys Windows Server for Contoso through the API; the order id.
pub async fn buy(s: &Server) -> String {
    let (st, o) = s
        .api(
            "POST",
            &format!("/api/customers/{TENANT}/orders"),
            "admin_agent",
            Some(json!({"items": [{"product_id": "winsrv", "quantity": 1}]})),
        )
        .await;
    assert_eq!(st, 201, "{o}");
    o["order_id"].as_str().unwrap().to_owned()
}
