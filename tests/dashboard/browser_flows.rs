//! The partner's workflow in a real headless Chromium: sign in, find, buy, get keys and
//! downloads, copy a link (read back from the clipboard) and download it with a real client;
//! the cancel dialog; languages; the CSP as the browser enforces it. Screenshots go to
//! `target/screenshots/`.

use super::browser::Browser;
use super::*;
use std::time::Duration;

async fn sign_in(b: &Browser, base: &str, role: &str) {
    b.goto(&format!("{base}/ui/login?lang=en")).await;
    b.fill("#token", &token_for(role)).await;
    b.click("form.card button[type=submit]").await;
    wait_path(b, "/ui/customers").await;
}

async fn wait_path(b: &Browser, prefix: &str) -> String {
    within(15, "navigation", async {
        loop {
            let p = b.path().await;
            if p.starts_with(prefix) {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

fn csp_messages(console: &[String]) -> Vec<&String> {
    console.iter().filter(|m| m.contains("Content Security Policy") || m.contains("Refused to")).collect()
}

#[tokio::test]
async fn a_partner_signs_in_finds_a_customer_buys_and_the_copied_link_downloads_the_right_bytes() {
    let s = Server::start_admin().await;
    let en = seed(&s).await;
    let base = format!("http://{}", s.admin);
    let b = Browser::start().await;
    b.goto(&format!("{base}/ui/login?lang=en")).await;
    b.screenshot("01-sign-in").await;
    sign_in(&b, &base, "admin_agent").await;
    b.fill("#q", DOMAIN).await;
    b.click("form[role=search] button").await;
    wait_path(&b, &format!("/ui/customers/{TENANT}")).await;
    assert!(b.text().await.contains("Nothing bought yet."));
    b.click("a.button[href$='/buy']").await;
    wait_path(&b, &format!("/ui/customers/{TENANT}/buy")).await;
    b.fill("#q-winsrv", "1").await;
    b.screenshot("02-buy").await;
    b.click("form.card button[type=submit]").await;
    let order_path = wait_path(&b, "/ui/orders/").await;
    assert!(b.text().await.contains("Bought."), "{}", b.text().await);

    // Expand the product: pick the language, Submit, then Get keys and downloads.
    b.find("#winsrv-language").await.select_by_value("en-US").await.unwrap();
    b.click("form.selectors button").await;
    wait_path(&b, "/ui/orders/").await;
    within(15, "selection applied", async {
        while !b.path().await.contains("language=en-US") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let listed = b.text().await;
    assert!(listed.contains("WinSrv2025_en-US.iso") && !listed.contains("WinSrv2025_zh-TW.iso"), "{listed}");
    b.screenshot("03-product-expanded").await;
    b.click("form.getkeys button").await;
    let key = b.find("#key").await.prop("value").await.unwrap();
    b.grant_clipboard().await;
    assert_eq!(key.as_deref(), Some(KEY));
    assert_eq!(b.count("li.download").await, 1, "one file for the chosen language");
    let url = b.find("li.download input.url").await.prop("value").await.unwrap().unwrap();
    b.click("li.download button[data-copy]").await;
    within(10, "copied", async {
        while b.find("li.download button[data-copy]").await.attr("data-done").await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let copied = b.run_async("const done = arguments[arguments.length - 1]; navigator.clipboard.readText().then(done, e => done('ERR ' + e));").await;
    assert_eq!(copied.as_str(), Some(url.as_str()), "the clipboard holds the link");
    assert!(b.text().await.contains("Copied"), "the button says so");
    b.screenshot("04-keys-and-downloads").await;

    // The copied link downloads the right bytes with a real HTTP client.
    let (st, _, body) = get(&url, &[]).await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(sha256_hex(&body), sha256_hex(&en));
    // Back on the order, the link is listed with its live state.
    b.goto(&format!("{base}{order_path}")).await;
    assert_eq!(b.count("tr[data-link]").await, 1);
    assert!(csp_messages(&b.console().await).is_empty(), "no CSP violation");
    b.close().await;
    s.stop().await;
}

#[tokio::test]
async fn the_cancel_dialog_shows_days_left_and_credit_and_cancelling_revokes_the_copied_link() {
    let s = Server::start_admin().await;
    seed(&s).await;
    let order = buy(&s).await;
    let (st, d) = s
        .api("POST", &format!("/api/orders/{order}/downloads"), "admin_agent", Some(json!({"product_id": "winsrv"})))
        .await;
    assert_eq!(st, 201);
    let url = d["links"][0]["url"].as_str().unwrap().to_owned();
    let (_, w) = s.api("GET", &format!("/api/orders/{order}/cancellation"), "admin_agent", None).await;
    let base = format!("http://{}", s.admin);
    let b = Browser::start().await;
    sign_in(&b, &base, "admin_agent").await;
    b.goto(&format!("{base}/ui/orders/{order}")).await;
    b.click("a.button.danger").await;
    wait_path(&b, &format!("/ui/orders/{order}/cancel")).await;
    let days = w["days_left"].as_i64().unwrap();
    assert!(days >= 59, "bought just now: {w}");
    assert_eq!(b.find("#days-left").await.text().await.unwrap(), format!("{days} days"));
    assert_eq!(b.find("#credit").await.text().await.unwrap(), "$1,200.00");
    assert!(!b.find("#deadline").await.text().await.unwrap().is_empty());
    b.screenshot("05-cancel-dialog").await;
    // Without the acknowledgement the browser does not send the form.
    b.click("section.dialog button.danger").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.path().await.ends_with("/cancel"), "still on the dialog");
    b.click("#ack").await;
    b.click("section.dialog button.danger").await;
    wait_path(&b, &format!("/ui/customers/{TENANT}?done=cancelled")).await;
    let row = b.find(&format!("tr[data-order='{order}']")).await;
    assert_eq!(row.attr("data-status").await.unwrap().as_deref(), Some("cancelled"));
    let cells = row.text().await.unwrap();
    assert!(cells.contains("Cancelled") && !cells.contains("Available"), "cancelled, without a key: {cells}");
    b.screenshot("06-software-cancelled").await;
    let (st, _, body) = get(&url, &[("accept", "application/json")]).await.unwrap();
    assert_eq!((st, problem(&body)["code"].as_str()), (410, Some("revoked")));
    b.close().await;
    s.stop().await;
}

#[tokio::test]
async fn traditional_chinese_shows_the_seeds_terms_pages_fit_360_px_and_the_csp_holds() {
    let s = Server::start_admin().await;
    seed(&s).await;
    let order = buy(&s).await;
    let base = format!("http://{}", s.admin);
    let b = Browser::start().await;
    sign_in(&b, &base, "admin_agent").await;
    b.goto(&format!("{base}/ui/customers/{TENANT}")).await;
    b.click("a[hreflang='zh-Hant']").await;
    within(15, "language switch", async {
        while !b.text().await.contains("取得金鑰和下載項目") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    b.screenshot("07-software-zh-Hant").await;
    b.goto(&format!("{base}/ui/orders/{order}")).await;
    b.click("form.getkeys button").await;
    b.find("#key").await;
    assert!(b.text().await.contains("複製連結"), "{}", b.text().await);
    b.screenshot("08-keys-zh-Hant").await;
    for (tag, name) in [("zh-Hans", "09-customer-zh-Hans"), ("ko", "10-customer-ko")] {
        b.goto(&format!("{base}/ui/customers/{TENANT}?lang={tag}")).await;
        b.screenshot(name).await;
    }
    // 360 px wide: nothing sticks out sideways.
    b.set_width(360).await;
    for (path, name) in [
        (format!("/ui/customers/{TENANT}?lang=en"), "11-software-360px"),
        (format!("/ui/orders/{order}"), "12-order-360px"),
    ] {
        b.goto(&format!("{base}{path}")).await;
        let fits = b.run_async("const done = arguments[arguments.length - 1]; done(document.documentElement.scrollWidth <= window.innerWidth + 1);").await;
        assert_eq!(fits, json!(true), "{path} overflows at 360 px");
        b.screenshot(name).await;
    }
    b.set_width(1280).await;
    for path in ["/ui/activity", "/ui/support", "/ui/customers"] {
        b.goto(&format!("{base}{path}")).await;
    }
    assert!(csp_messages(&b.console().await).is_empty(), "no CSP violation on any page");
    // The check can fail: an inline script injected into a page is refused and reported.
    let ran = b
        .run_async("const done = arguments[arguments.length - 1]; const s = document.createElement('script'); s.textContent = 'window.inlineRan = true'; document.body.appendChild(s); setTimeout(() => done(window.inlineRan === true), 100);")
        .await;
    assert_eq!(ran, json!(false), "the CSP stops inline script");
    let console = b.console().await;
    assert!(!csp_messages(&console).is_empty(), "the violation is seen: {console:?}");

    // A helpdesk agent is not offered Get keys and downloads.
    b.click("header .who button").await;
    wait_path(&b, "/ui/login").await;
    sign_in(&b, &base, "helpdesk_agent").await;
    b.goto(&format!("{base}/ui/orders/{order}")).await;
    assert_eq!(b.count("form.getkeys").await, 0);
    assert_eq!(b.count("a.button.danger").await, 0, "nor Cancel");
    b.close().await;
    s.stop().await;
}

#[tokio::test]
async fn a_customer_token_sees_its_own_software_and_downloads_and_another_tenants_order_is_not_found() {
    const OTHER: &str = "99999999-8888-4777-8666-555555555555";
    let s = Server::start_admin().await;
    let en = seed(&s).await;
    let mine = buy(&s).await;
    let (st, _) = s
        .api(
            "POST",
            "/api/customers",
            "admin_agent",
            Some(json!({"tenant_id": OTHER, "domain": "fabrikam.com", "name": "Fabrikam", "country": "US"})),
        )
        .await;
    assert_eq!(st, 201);
    let (st, o) = s
        .api(
            "POST",
            &format!("/api/customers/{OTHER}/orders"),
            "admin_agent",
            Some(json!({"items": [{"product_id": "winsrv", "quantity": 1}]})),
        )
        .await;
    assert_eq!(st, 201);
    let theirs = o["order_id"].as_str().unwrap().to_owned();
    let base = format!("http://{}", s.admin);
    let b = Browser::start().await;

    // The partner creates the customer's token on the customer's page.
    sign_in(&b, &base, "admin_agent").await;
    b.goto(&format!("{base}/ui/customers/{TENANT}")).await;
    b.fill("#token-name", "Jane at Contoso").await;
    b.click("#tokens form:last-of-type button").await;
    let token = b.find("#new-token").await.prop("value").await.unwrap().unwrap();
    assert!(token.starts_with("kdc_"), "{token}");
    b.screenshot("13-customer-token-created").await;
    b.click("header .who button").await;
    wait_path(&b, "/ui/login").await;

    // The customer signs in with it and lands on its own Software.
    b.fill("#token", &token).await;
    b.click("form.card button[type=submit]").await;
    wait_path(&b, &format!("/ui/customers/{TENANT}")).await;
    let text = b.text().await;
    assert!(text.contains("Windows Server 2025 Standard") && text.contains("My software"), "{text}");
    assert_eq!(b.count("a.button[href$='/buy']").await, 0, "a customer buys nothing here");
    assert_eq!(b.count("#tokens").await, 0, "nor manages tokens");
    b.screenshot("14-customer-self-service").await;
    b.click(&format!("tr[data-order='{mine}'] a.button")).await;
    wait_path(&b, &format!("/ui/orders/{mine}")).await;
    b.click("form.getkeys button").await;
    assert_eq!(b.find("#key").await.prop("value").await.unwrap().as_deref(), Some(KEY));
    let urls: Vec<String> = {
        let mut v = Vec::new();
        for e in b.client.find_all(fantoccini::Locator::Css("li.download input.url")).await.unwrap() {
            v.push(e.prop("value").await.unwrap().unwrap());
        }
        v
    };
    assert_eq!(urls.len(), 2, "both files of the product");
    let (st, _, body) = get(&urls[0], &[]).await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(sha256_hex(&body), sha256_hex(&en), "the English ISO, first by name");
    assert_eq!(b.count("a.button.danger").await, 0, "no Cancel for a customer");

    // Another tenant's order: not found, in the browser as over the API.
    b.goto(&format!("{base}/ui/orders/{theirs}")).await;
    assert!(b.text().await.contains("Nothing was found here."), "{}", b.text().await);
    b.goto(&format!("{base}/ui/customers/{OTHER}")).await;
    assert!(b.text().await.contains("Nothing was found here."));
    let (st, v) = s.api_as("GET", &format!("/api/orders/{theirs}"), &token, None).await;
    assert_eq!((st, v["code"].as_str()), (404, Some("not_found")));

    // The partner ends the token: the customer's session ends at its next page.
    let (_, list) = s.api("GET", &format!("/api/customers/{TENANT}/tokens"), "admin_agent", None).await;
    let id = list["tokens"][0]["token_id"].as_str().unwrap();
    assert_eq!(s.api("DELETE", &format!("/api/customers/{TENANT}/tokens/{id}"), "admin_agent", None).await.0, 200);
    b.goto(&format!("{base}/ui/customers/{TENANT}")).await;
    wait_path(&b, "/ui/login").await;
    b.close().await;
    s.stop().await;
}
