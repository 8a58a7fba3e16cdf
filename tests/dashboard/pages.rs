//! The dashboard over plain HTTP: what the browser is sent (cookies, headers, forms, words).

use super::*;

const PAGES_TAGS: [(&str, &str); 4] = [
    ("en", "Get keys and downloads"),
    ("zh-Hant", "取得金鑰和下載項目"),
    ("zh-Hans", "获取密钥和下载"),
    ("ko", "키 및 다운로드 받기"),
];

#[tokio::test]
async fn signing_in_sets_a_strict_http_only_cookie_and_logout_ends_it_on_the_server() {
    let s = Server::start_admin().await;
    let mut anon = Ui::new(&s);
    let a = anon.get("/ui/customers").await;
    assert_eq!((a.status, a.headers["location"].to_str().unwrap()), (303, "/ui/login"), "pages need a session");
    let a = anon.get("/").await;
    assert_eq!(a.status, 303, "/ is the dashboard");

    // A wrong token: the form again, 401, and no session cookie.
    let page = anon.get("/ui/login").await;
    let guard = form_value(&page.body, "login_csrf").unwrap();
    let a = anon.send("POST", "/ui/login", Some(&[("login_csrf", &guard), ("token", "not-a-token")]), &[]).await;
    assert_eq!(a.status, 401);
    assert!(a.body.contains("That token is not valid."), "{}", a.body);
    assert!(!anon.cookies.iter().any(|(k, _)| k == "kd_session"));
    // The sign-in form without its double-submit cookie is refused even with a right token.
    let mut bare = Ui::new(&s);
    let a = bare
        .send("POST", "/ui/login", Some(&[("login_csrf", &guard), ("token", &token_for("admin_agent"))]), &[])
        .await;
    assert_eq!(a.status, 403);

    // The right token.
    let page = anon.get("/ui/login").await;
    let guard = form_value(&page.body, "login_csrf").unwrap();
    let token = token_for("admin_agent");
    let a = anon.send("POST", "/ui/login", Some(&[("login_csrf", &guard), ("token", &token)]), &[]).await;
    assert_eq!(a.status, 303);
    let set: Vec<&str> = a.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    let session = set.iter().find(|c| c.starts_with("kd_session=")).expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Max-Age=43200", "Path=/"] {
        assert!(session.contains(attr), "{attr} in {session}");
    }
    assert!(!session.contains("Secure"), "no Secure over plain HTTP");
    assert!(!set.iter().any(|c| c.contains(&token)), "the token is never put in a cookie");
    let a = anon.get("/ui/customers").await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains("admin_agent-user"), "the page says who is signed in");
    let csrf = form_value(&a.body, "csrf").unwrap();

    // Logout ends the session on the server: replaying the old cookie goes back to sign-in.
    let old = anon.cookies.clone();
    let a = anon.send("POST", "/ui/logout", Some(&[("csrf", &csrf)]), &[]).await;
    assert_eq!((a.status, a.headers["location"].to_str().unwrap()), (303, "/ui/login"));
    let mut replay = Ui { base: anon.base.clone(), cookies: old, csrf };
    let a = replay.get("/ui/customers").await;
    assert_eq!(a.status, 303, "a logged-out cookie is dead");
    s.stop().await;
}

#[tokio::test]
async fn every_page_sends_a_strict_csp_and_forms_without_the_csrf_token_are_refused() {
    let s = Server::start_admin().await;
    seed(&s).await;
    let order = buy(&s).await;
    let mut ui = Ui::sign_in(&s, "admin_agent").await;
    for path in [
        "/ui/login".to_owned(),
        "/ui/customers".into(),
        format!("/ui/customers/{TENANT}"),
        format!("/ui/orders/{order}"),
    ] {
        let a = ui.get(&path).await;
        assert_eq!(a.status, 200, "{path}");
        let csp = a.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("default-src 'none'") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert_eq!(a.headers["x-frame-options"], "DENY");
        assert!(
            !a.body.contains("<script>") && !a.body.contains(" style=") && !a.body.contains(" onclick"),
            "{path}: inline script or style"
        );
    }
    let a = ui.get("/ui/app.js").await;
    assert_eq!((a.status, a.headers["content-type"].to_str().unwrap()), (200, "text/javascript; charset=utf-8"));

    let fields = [
        ("tenant_id", "0b9e2c1a-7f3d-4e5b-8a6c-1d2e3f4a5b6c"),
        ("domain", "fabrikam.com"),
        ("name", "Fabrikam"),
        ("country", "DE"),
    ];
    let a = ui.send("POST", "/ui/customers", Some(&fields), &[]).await;
    assert_eq!(a.status, 403, "no CSRF token");
    assert!(a.body.contains("was not sent from this dashboard"), "{}", a.body);
    let mut forged = fields.to_vec();
    forged.push(("csrf", "guessed-token-guessed-token-guessed-token-0000"));
    let a = ui.send("POST", "/ui/customers", Some(&forged), &[]).await;
    assert_eq!(a.status, 403, "a wrong CSRF token");
    let (st, _) = s.api("GET", "/api/customers?domain=fabrikam.com", "admin_agent", None).await;
    assert_eq!(st, 404, "nothing was created by the refused posts");
    // With the token, the same form creates the customer.
    let a = ui.post("/ui/customers", &fields).await;
    assert_eq!(a.status, 303, "{}", a.body);
    let (st, c) = s.api("GET", "/api/customers?domain=fabrikam.com", "admin_agent", None).await;
    assert_eq!((st, c["country"].as_str()), (200, Some("DE")));
    s.stop().await;
}

#[tokio::test]
async fn every_page_renders_in_all_four_languages_and_the_choice_is_remembered() {
    let s = Server::start_admin().await;
    seed(&s).await;
    let order = buy(&s).await;
    let mut agent = Ui::sign_in(&s, "admin_agent").await;
    let mut global = Ui::sign_in(&s, "global_admin").await;
    for (tag, get_keys) in PAGES_TAGS {
        let agent_pages = [
            "/ui/customers".to_owned(),
            format!("/ui/customers/{TENANT}"),
            format!("/ui/customers/{TENANT}/buy"),
            format!("/ui/orders/{order}"),
            format!("/ui/orders/{order}/cancel"),
            "/ui/support?customer=contoso.com".into(),
        ];
        for path in &agent_pages {
            let sep = if path.contains('?') { '&' } else { '?' };
            let a = agent.get(&format!("{path}{sep}lang={tag}")).await;
            assert_eq!(a.status, 200, "{tag} {path}: {}", a.body);
            assert!(a.body.contains(&format!("<html lang=\"{tag}\"")), "{tag} {path}");
            assert!(!a.body.contains('⟦'), "{tag} {path}: a string is missing: {}", a.body);
        }
        let a = agent.get(&format!("/ui/orders/{order}")).await;
        assert!(a.body.contains(get_keys), "{tag} remembered without ?lang=, with the seeds' term");
        let a = agent
            .post(&format!("/ui/orders/{order}/downloads"), &[("product_id", "winsrv"), ("language", "en-US")])
            .await;
        assert_eq!(a.status, 200, "{tag}: {}", a.body);
        assert!(!a.body.contains('⟦') && a.body.contains(KEY), "{tag}: the key is shown");
        let a = agent.post(&format!("/ui/customers/{TENANT}/tokens"), &[("name", "Jane")]).await;
        assert_eq!(a.status, 201, "{tag}: {}", a.body);
        assert!(!a.body.contains('⟦') && a.body.contains("kdc_"), "{tag}: the token page");
        for path in ["/ui/activity", "/ui/catalog"] {
            let a = global.get(&format!("{path}?lang={tag}")).await;
            assert_eq!(a.status, 200, "{tag} {path}");
            assert!(a.body.contains(&format!("<html lang=\"{tag}\"")) && !a.body.contains('⟦'), "{tag} {path}");
        }
    }
    let a = agent.get(&format!("/ui/orders/{order}?lang=zh-Hant")).await;
    assert!(a.body.contains("取得金鑰和下載項目"));
    let a = agent.post(&format!("/ui/orders/{order}/downloads"), &[("product_id", "winsrv")]).await;
    assert!(a.body.contains("複製連結"), "zh-Hant Copy link");
    // Accept-Language picks the language when nothing was chosen.
    let mut fresh = Ui::sign_in(&s, "admin_agent").await;
    fresh.cookies.retain(|(k, _)| k != "kd_lang");
    let a = fresh.send("GET", "/ui/customers", None, &[("accept-language", "ko-KR,ko;q=0.9")]).await;
    assert!(a.body.contains("<html lang=\"ko\"") && a.body.contains("고객"), "{}", a.body);
    s.stop().await;
}

#[tokio::test]
async fn a_helpdesk_agent_is_not_offered_keys_and_a_forged_post_is_refused() {
    let s = Server::start_admin().await;
    seed(&s).await;
    let order = buy(&s).await;
    let mut desk = Ui::sign_in(&s, "helpdesk_agent").await;
    let a = desk.get(&format!("/ui/orders/{order}?product=winsrv")).await;
    assert_eq!(a.status, 200);
    assert!(!a.body.contains("Get keys and downloads") && !a.body.contains("/downloads\""), "not offered: {}", a.body);
    assert!(!a.body.contains("/cancel\""), "cancel not offered either");
    assert!(a.body.contains("Links issued earlier"), "a helpdesk agent may read link states");
    let a = desk.get(&format!("/ui/customers/{TENANT}")).await;
    assert!(!a.body.contains("Get keys and downloads"), "not offered on Software either");
    // The forged post, with a valid CSRF token: refused by the same role table as the API.
    let a = desk.post(&format!("/ui/orders/{order}/downloads"), &[("product_id", "winsrv")]).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(!a.body.contains(KEY));
    let a = desk.post(&format!("/ui/orders/{order}/cancel"), &[("acknowledged", "true")]).await;
    assert_eq!(a.status, 403);
    let (_, recs) = s.api("GET", &format!("/api/activity?order_id={order}"), "global_admin", None).await;
    let kinds: Vec<&str> = recs["records"].as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["order.created"], "no key accessed, no link issued, nothing cancelled");
    s.stop().await;
}

#[tokio::test]
async fn customers_are_found_by_domain_or_guid_and_refusals_show_as_the_api_gives() {
    let s = Server::start_admin().await;
    seed(&s).await;
    let mut ui = Ui::sign_in(&s, "admin_agent").await;
    for q in [DOMAIN, &TENANT.to_uppercase()] {
        let a = ui
            .get(&format!("/ui/customers?q={}", form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()))
            .await;
        assert_eq!(
            (a.status, a.headers["location"].to_str().unwrap()),
            (303, format!("/ui/customers/{TENANT}").as_str()),
            "{q}"
        );
    }
    let a = ui.get("/ui/customers?q=nobody.example").await;
    assert_eq!(a.status, 404);
    assert!(a.body.contains("No customer has this domain"));
    let a =
        ui.post("/ui/customers", &[("tenant_id", "nope"), ("domain", "x.com"), ("name", "X"), ("country", "ZZ")]).await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("Tenant ID (GUID)") && a.body.contains("must be a GUID"), "{}", a.body);

    // A market refusal and an empty key pool, as the API gives them, in the page's language.
    let (st, _) = s
        .api("PUT", "/api/products/azres", "global_admin", Some(json!({"name": "Azure reservation", "kind": "perpetual",
            "unit_price_cents": 100, "currency": "USD", "cancel_policy": "standard", "unavailable_markets": ["US"], "key_required": false})))
        .await;
    assert_eq!(st, 201);
    let a = ui.post(&format!("/ui/customers/{TENANT}/buy?lang=zh-Hant"), &[("qty.azres", "1")]).await;
    assert_eq!(a.status, 422);
    assert!(a.body.contains("此產品無法在客戶所在的國家/地區購買"), "{}", a.body);
    let a = ui.post(&format!("/ui/customers/{TENANT}/buy?lang=en"), &[("qty.winsrv", "1")]).await;
    assert_eq!(a.status, 303, "{}", a.body);
    let order = a.headers["location"].to_str().unwrap().to_owned();
    let a = ui.get(&order).await;
    assert!(a.body.contains("$1,200.00") && a.body.contains("excluding tax"), "{}", a.body);
    buy(&s).await;
    buy(&s).await;
    let a = ui.post(&format!("/ui/customers/{TENANT}/buy"), &[("qty.winsrv", "1")]).await;
    assert_eq!(a.status, 409, "the pool of three is empty");
    assert!(a.body.contains("no activation keys left"), "{}", a.body);
    s.stop().await;
}

#[tokio::test]
async fn subscriptions_support_requests_and_the_activity_log_work_through_their_forms() {
    let s = Server::start_admin().await;
    seed(&s).await;
    let (st, o) = s
        .api(
            "POST",
            &format!("/api/customers/{TENANT}/orders"),
            "admin_agent",
            Some(json!({"items": [{"product_id": "m365", "quantity": 10}]})),
        )
        .await;
    assert_eq!(st, 201, "{o}");
    let sub = o["order_id"].as_str().unwrap().to_owned();
    let mut ui = Ui::sign_in(&s, "admin_agent").await;
    let page = ui.get(&format!("/ui/orders/{sub}")).await;
    assert!(
        page.body.contains("data-confirm=\"Suspend this subscription?"),
        "the suspend dialog names the date: {}",
        page.body
    );

    // Suspend, reactivate, auto-renew: each through its form, each as the API sees it.
    let path = format!("/ui/orders/{sub}/subscription");
    let a = ui.post(&path, &[("action", "suspend")]).await;
    assert_eq!(
        (a.status, a.headers["location"].to_str().unwrap()),
        (303, format!("/ui/orders/{sub}?done=suspended").as_str())
    );
    assert_eq!(s.api("GET", &format!("/api/orders/{sub}"), "admin_agent", None).await.1["status"], "suspended");
    let page = ui.get(&format!("/ui/orders/{sub}?done=suspended")).await;
    assert!(
        page.body.contains("Subscription suspended.") && page.body.contains("the data is deleted on"),
        "{}",
        page.body
    );
    let a = ui.post(&path, &[("action", "reactivate")]).await;
    assert_eq!(a.status, 303);
    assert_eq!(s.api("GET", &format!("/api/orders/{sub}"), "admin_agent", None).await.1["status"], "active");
    let before =
        s.api("GET", &format!("/api/orders/{sub}"), "admin_agent", None).await.1["auto_renew"].as_bool().unwrap();
    let flip = if before { "auto_renew_off" } else { "auto_renew_on" };
    assert_eq!(ui.post(&path, &[("action", flip)]).await.status, 303);
    assert_eq!(s.api("GET", &format!("/api/orders/{sub}"), "admin_agent", None).await.1["auto_renew"], !before);
    assert_eq!(ui.post(&path, &[("action", "explode")]).await.status, 400);

    // A support request from the form (the cancel dialog links here, customer and order filled in).
    let form = ui.get(&format!("/ui/support?customer={DOMAIN}&order_id={sub}")).await;
    assert!(form.body.contains(&format!("value=\"{sub}\"")) && form.body.contains("value=\"contoso.com\""));
    let fields = [
        ("customer", DOMAIN),
        ("order_id", sub.as_str()),
        ("reason", "Bought twice by mistake"),
        ("amount", "432.00"),
        ("contact_name", "Jane Doe"),
        ("contact_email", "jane@contoso.com"),
        ("contact_phone", "+1 425 555 0100"),
    ];
    let a = ui.post("/ui/support", &fields).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body.split("id=\"request-id\">").nth(1).and_then(|r| r.split('<').next()).unwrap().to_owned();
    let (st, r) = s.api("GET", &format!("/api/support-requests/{id}"), "admin_agent", None).await;
    assert_eq!((st, r["amount_cents"].as_u64()), (200, Some(43_200)), "{r}");
    let mut bad = fields.to_vec();
    bad[3] = ("amount", "lots");
    assert_eq!(ui.post("/ui/support", &bad).await.status, 400);

    // A policy refusal in the cancel dialog, explained, with the support form filled in.
    let (st, _) = s
        .api(
            "PUT",
            "/api/products/esu",
            "global_admin",
            Some(json!({"name": "Windows 7 ESU", "kind": "perpetual",
            "unit_price_cents": 5_000, "currency": "USD", "cancel_policy": "support_request", "key_required": false})),
        )
        .await;
    assert_eq!(st, 201);
    let (_, esu) = s
        .api(
            "POST",
            &format!("/api/customers/{TENANT}/orders"),
            "admin_agent",
            Some(json!({"items": [{"product_id": "esu", "quantity": 1}]})),
        )
        .await;
    let esu = esu["order_id"].as_str().unwrap();
    let a = ui.get(&format!("/ui/orders/{esu}/cancel")).await;
    assert!(a.body.contains("can only be cancelled through a support request"), "{}", a.body);
    assert!(a.body.contains(&format!("/ui/support?customer={TENANT}&amp;order_id={esu}")), "{}", a.body);
    assert!(!a.body.contains("name=\"acknowledged\""), "no cancel form when it cannot be cancelled");

    // The activity log for an auditor: filters, paging, CSV.
    let mut audit = Ui::sign_in(&s, "global_admin").await;
    let a = audit.get(&format!("/ui/activity?order_id={sub}&kind=order.suspended")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body.matches("<code>order.suspended</code>").count(), 1, "{}", a.body);
    assert!(a.body.contains("admin_agent-user") && a.body.contains("127.0.0.1"), "who and from where");
    let a = audit.get(&format!("/ui/activity.csv?order_id={sub}")).await;
    assert_eq!((a.status, a.headers["content-type"].to_str().unwrap()), (200, "text/csv; charset=utf-8"));
    assert!(a.body.lines().count() >= 5 && a.body.contains("order.reactivated"), "{}", a.body);
    assert_eq!(audit.get("/ui/activity?from=yesterday").await.status, 400, "a bad date is a 400 page");
    // An agent may not read the log: not offered, and refused.
    assert!(!ui.get("/ui/customers").await.body.contains("href=\"/ui/activity\""));
    assert_eq!(ui.get("/ui/activity").await.status, 403);
    assert_eq!(ui.get("/ui/catalog").await.status, 403);
    s.stop().await;
}

#[tokio::test]
async fn a_subscription_page_shows_its_trial_and_term_and_the_cancel_dialog_says_it_cancels_at_renewal() {
    let s = Server::start_admin().await;
    seed(&s).await;
    let product = json!({"name": "Microsoft 365 E3", "kind": "subscription", "billing": "monthly", "trial_days": 30,
        "unit_price_cents": 3600, "currency": "USD", "cancel_policy": "marketplace"});
    // The seed's m365 becomes a monthly marketplace offer with a trial.
    assert_eq!(s.api("PUT", "/api/products/m365", "global_admin", Some(product)).await.0, 200);
    let (_, o) = s
        .api(
            "POST",
            &format!("/api/customers/{TENANT}/orders"),
            "admin_agent",
            Some(json!({"items": [{"product_id": "m365", "quantity": 1}]})),
        )
        .await;
    let oid = o["order_id"].as_str().unwrap().to_owned();
    let mut ui = Ui::sign_in(&s, "admin_agent").await;
    let page = ui.get(&format!("/ui/orders/{oid}?lang=en")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Free trial ends") && page.body.contains("id=\"trial-ends\""), "{}", page.body);
    assert!(page.body.contains("Current term"), "{}", page.body);
    // Two days into the first paid term: a marketplace cancellation now takes effect at renewal.
    s.state.advance_clock(32 * 86_400);
    let mut ui = Ui::sign_in(&s, "admin_agent").await; // sessions last 12 hours
    let dialog = ui.get(&format!("/ui/orders/{oid}/cancel")).await;
    assert!(dialog.body.contains("This cancels at the end of the current term"), "{}", dialog.body);
    let ko = ui.get(&format!("/ui/orders/{oid}/cancel?lang=ko")).await;
    assert!(ko.body.contains("현재 기간이 끝나는") && !ko.body.contains('⟦'), "{}", ko.body);
}
