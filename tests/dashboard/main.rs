//! The dashboard (API.md §5.4) end to end: sessions, CSRF, the CSP header and every page in
//! four languages over plain HTTP (`pages.rs`), and the partner's workflow in a real headless
//! Chromium (`browser_flows.rs`).

#[path = "../common/browser.rs"]
mod browser;
mod browser_flows;
#[path = "../common/mod.rs"]
mod common;
mod pages;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

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

/// A browser-less dashboard client: a cookie jar of one session, forms posted as a browser would.
pub struct Ui {
    pub base: String,
    pub cookies: Vec<(String, String)>,
    pub csrf: String,
}

pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// The value of `name="{field}" value="…"` in a page.
pub fn form_value(html: &str, field: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{field}\" value=\""))?;
    let rest = &html[at + field.len() + 15..];
    Some(rest[..rest.find('"')?].to_owned())
}

impl Ui {
    pub fn new(s: &Server) -> Ui {
        Ui { base: format!("http://{}", s.admin), cookies: Vec::new(), csrf: String::new() }
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        form: Option<&[(&str, &str)]>,
        extra: &[(&str, &str)],
    ) -> Answer {
        let url = format!("{}{path}", self.base);
        let body =
            form.map(|f| form_urlencoded::Serializer::new(String::new()).extend_pairs(f).finish()).unwrap_or_default();
        within(30, "dashboard request", async {
            let c: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let mut b = http::Request::builder().method(method).uri(&url).header("accept", "text/html");
            if form.is_some() {
                b = b.header("content-type", "application/x-www-form-urlencoded");
            }
            if !self.cookies.is_empty() {
                let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
                b = b.header("cookie", jar.join("; "));
            }
            for (k, v) in extra {
                b = b.header(*k, *v);
            }
            let resp = c.request(b.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            for sc in headers.get_all("set-cookie") {
                let sc = sc.to_str().unwrap();
                let (kv, _) = sc.split_once(';').unwrap_or((sc, ""));
                let (k, v) = kv.split_once('=').unwrap();
                self.cookies.retain(|(ck, _)| ck != k);
                if !sc.contains("Max-Age=0") {
                    self.cookies.push((k.to_owned(), v.to_owned()));
                }
            }
            let body = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
            Answer { status, headers, body }
        })
        .await
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        self.send("GET", path, None, &[]).await
    }

    /// Posts a form with this session's CSRF token added.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let csrf = self.csrf.clone();
        let mut f: Vec<(&str, &str)> = form.to_vec();
        f.push(("csrf", &csrf));
        self.send("POST", path, Some(&f), &[]).await
    }

    /// Signs in with a role's token, the way the sign-in form does.
    pub async fn sign_in(s: &Server, role: &str) -> Ui {
        let mut ui = Ui::new(s);
        let page = ui.get("/ui/login").await;
        assert_eq!(page.status, 200);
        let guard = form_value(&page.body, "login_csrf").expect("the sign-in form has its CSRF field");
        let token = token_for(role);
        let a = ui.send("POST", "/ui/login", Some(&[("login_csrf", &guard), ("token", &token)]), &[]).await;
        assert_eq!(a.status, 303, "signed in: {}", a.body);
        let home = ui.get("/ui/").await;
        assert_eq!(home.status, 303);
        let next = home.headers["location"].to_str().unwrap().to_owned();
        let page = ui.get(&next).await;
        ui.csrf = form_value(&page.body, "csrf").expect("a signed-in page carries the CSRF token");
        ui
    }
}
