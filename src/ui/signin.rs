//! Sign-in and sign-out. The token is typed once, checked exactly as the API checks a bearer
//! token, and never stored: the browser gets a session cookie instead. The sign-in form has its
//! own CSRF guard (a double-submit cookie), since there is no session yet to hold a token.

use super::layout::{notice, page};
use super::session::{self, random_token, same_secret, set_cookie};
use super::{Out, View};
use crate::admin::auth::{principal_for_token, resolve};
use crate::error::ApiError;
use http::{header, HeaderValue, StatusCode};
use maud::html;

/// The sign-in page, with a fresh double-submit token.
pub fn form(v: &View<'_>, problem: Option<&str>) -> Out {
    let tr = v.tr;
    let guard = random_token();
    let body = html! {
        @if let Some(p) = problem { (notice("error", &tr.t(p))) }
        form.card method="post" action="/ui/login" {
            input type="hidden" name="login_csrf" value=(guard);
            label for="token" { (tr.t("signin.token")) }
            input id="token" name="token" type="password" autocomplete="current-password" required
                maxlength="512" aria-describedby="token-help";
            p id="token-help" .help { (tr.t("signin.help")) }
            button type="submit" { (tr.t("signin.submit")) }
        }
    };
    let status = if problem.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    let mut r = Out::Page(status, page(v, &tr.t("signin.title"), body)).into_response();
    let c = set_cookie(session::LOGIN_COOKIE, &guard, 3600, v.secure, true);
    if let Ok(c) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    Out::Raw(r)
}

/// `POST /ui/login`: the token → a session cookie, then the principal's home page.
pub async fn login(v: &View<'_>) -> Out {
    let guard_ok = match (session::cookie(v.headers, session::LOGIN_COOKIE), v.field("login_csrf")) {
        (Some(c), Some(f)) => same_secret(c, &f),
        _ => false,
    };
    if !guard_ok {
        tracing::warn!("sign-in form without its CSRF cookie refused");
        return super::layout::refusal(v, StatusCode::FORBIDDEN, "csrf");
    }
    let token = v.field("token").unwrap_or_default();
    let who = match resolve(v.state, &token).await {
        Ok(p) => p,
        Err(e @ ApiError::Unavailable { .. }) => return super::layout::error(v, &e),
        Err(_) => {
            tracing::warn!(peer = %v.peer, "dashboard sign-in with an unknown token");
            return form(v, Some("signin.wrong"));
        }
    };
    tracing::info!(principal = %who.name, role = who.role.as_str(), "dashboard sign-in");
    let home = match &who.tenant_id {
        Some(t) => format!("/ui/customers/{}", super::enc(t)),
        None => "/ui/customers".to_owned(),
    };
    // A customer token (not a configured principal) is re-checked on every page.
    let credential = principal_for_token(&token, &v.state.config.principals)
        .is_err()
        .then(|| hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes())));
    let (cookie, _) = v.state.sessions.start(who, credential, v.state.now());
    let mut r = Out::Redirect(home).into_response();
    let max_age = session::LIFETIME.num_seconds();
    for c in [
        set_cookie(session::COOKIE, &cookie, max_age, v.secure, true),
        set_cookie(session::LOGIN_COOKIE, "", 0, v.secure, true),
    ] {
        if let Ok(c) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, c);
        }
    }
    Out::Raw(r)
}

/// `POST /ui/logout`: the session ends on the server and the cookie is deleted.
pub fn logout(v: &View<'_>) -> Out {
    if let Some(c) = session::cookie(v.headers, session::COOKIE) {
        v.state.sessions.end(c);
    }
    let mut r = Out::Redirect("/ui/login".into()).into_response();
    if let Ok(c) = HeaderValue::from_str(&set_cookie(session::COOKIE, "", 0, v.secure, true)) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    Out::Raw(r)
}
