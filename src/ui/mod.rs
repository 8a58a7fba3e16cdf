//! The partner dashboard and customer self-service (API.md §5.4), served by the admin listener
//! at `/` and `/ui/…`: server-rendered HTML (maud), a little JavaScript for copy buttons, dialogs
//! and countdowns, in four languages.
//!
//! Every page goes through [`crate::admin::call`] with the signed-in principal — the same role
//! table and the same handlers as the JSON API — so a page can show less than the API allows but
//! never do more. What a role may not do is not offered ([`View::may`]) and is refused anyway.
//!
//! Layout: [`session`] (cookies, CSRF), [`i18n`] (strings and formats), [`layout`] (the page
//! shell, error pages), [`signin`], [`customers`] (find, create, Software, buy), [`orders`] (a
//! product expanded, get keys and downloads, subscriptions), [`cancel`] (the cancel dialog,
//! support requests), [`tokens`] (customer tokens), [`activity`] (the log, the catalog).
//!
//! A `customer_admin` (configured, or signed in with a partner-issued token) gets the same pages
//! narrowed to its tenant by the admin layer: its Software, keys and downloads, its activity.

mod activity;
mod cancel;
mod customers;
pub mod i18n;
mod layout;
mod orders;
pub mod session;
mod signin;
mod tokens;

use crate::admin::{self, auth::Principal, Ctx};
use crate::body::Body;
use crate::error::ApiError;
use crate::pages::{negotiate_lang, Lang};
use crate::router::Admin;
use crate::state::AppState;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use i18n::Tr;
use maud::Markup;
use serde_json::{Map, Value};
use session::Session;
use std::net::SocketAddr;
use std::sync::Arc;

/// No inline script or style, nothing from elsewhere, no framing (API.md §5.4).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// What a page handler answers.
pub enum Out {
    Page(StatusCode, Markup),
    /// `303 See Other` to a path of ours.
    Redirect(String),
    /// Anything else already built (CSV, assets).
    Raw(Response<Body>),
}

impl Out {
    /// The response: a page as HTML; a redirect only ever to a path of ours.
    pub fn into_response(self) -> Response<Body> {
        match self {
            Out::Page(status, markup) => {
                let mut r = Response::new(Body::from_bytes(markup.into_string()));
                *r.status_mut() = status;
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
                r
            }
            Out::Redirect(to) => {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::SEE_OTHER;
                let to = if to.starts_with('/') && !to.starts_with("//") { to } else { "/ui/".to_owned() };
                let v = HeaderValue::from_str(&to).unwrap_or(HeaderValue::from_static("/ui/"));
                r.headers_mut().insert(header::LOCATION, v);
                r
            }
            Out::Raw(r) => r,
        }
    }
}

/// One request to the dashboard, with its language and (when signed in) its session.
pub struct View<'a> {
    pub state: &'a Arc<AppState>,
    pub tr: Tr,
    pub session: Option<Session>,
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub form: Vec<(String, String)>,
    pub peer: SocketAddr,
    pub user_agent: Option<String>,
    pub headers: &'a HeaderMap,
    /// The admin listener speaks TLS: cookies get `Secure`.
    pub secure: bool,
}

impl View<'_> {
    /// The signed-in principal; pages behind sign-in only run with one.
    pub fn who(&self) -> &Principal {
        &self.session.as_ref().expect("page behind sign-in").who
    }

    /// May the signed-in principal make this call? (What is not allowed is not offered.)
    pub fn may(&self, call: &Admin) -> bool {
        self.session.as_ref().is_some_and(|s| admin::allowed(call, &s.who))
    }

    /// The admin layer's view of this request: the signed-in principal, with `query`.
    pub fn ctx(&self, query: Option<String>) -> Ctx<'_> {
        Ctx { state: self.state, who: self.who().clone(), peer: self.peer, user_agent: self.user_agent.clone(), query }
    }

    /// One admin call as the signed-in principal, with `query` as its query string.
    pub async fn api_q(&self, call: Admin, body: Value, query: Option<String>) -> Result<Value, ApiError> {
        let ctx = self.ctx(query);
        let obj: Map<String, Value> = match body {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        admin::call(&ctx, call, &obj).await.map(|(_, v)| v)
    }

    pub async fn api(&self, call: Admin, body: Value) -> Result<Value, ApiError> {
        self.api_q(call, body, None).await
    }

    /// A query-string parameter of this request.
    pub fn param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
    }

    /// A field of the posted form.
    pub fn field(&self, name: &str) -> Option<String> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    /// This page's address in another language (the switcher's links).
    pub fn in_lang(&self, lang: Lang) -> String {
        let kept: Vec<(String, String)> = form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .filter(|(k, _)| k != "lang")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.extend_pairs(kept);
        q.append_pair("lang", lang.tag());
        format!("{}?{}", self.path, q.finish())
    }
}

/// A string field of an API answer, empty when absent.
pub fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Serves one dashboard request (already routed to `/` or `/ui/…`).
pub async fn handle<B>(
    state: &Arc<AppState>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: B,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    match (method, segs.as_slice()) {
        (&Method::GET, ["ui", "app.js"]) => return Ok(asset(APP_JS, "text/javascript; charset=utf-8")),
        (&Method::GET, ["ui", "app.css"]) => return Ok(asset(APP_CSS, "text/css; charset=utf-8")),
        _ => {}
    }
    let secure = state.tls.as_ref().is_some_and(|t| t.serves(false));
    // The language: `?lang=` (remembered in a cookie), the cookie, then Accept-Language.
    let asked = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "lang")
        .and_then(|(_, v)| Lang::from_tag(&v));
    let lang = asked
        .or_else(|| session::cookie(headers, session::LANG_COOKIE).and_then(Lang::from_tag))
        .unwrap_or_else(|| negotiate_lang(headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok())));
    let now = state.now();
    let cookie = session::cookie(headers, session::COOKIE);
    let mut sess = cookie.and_then(|c| state.sessions.get(c, now));
    if let (Some(c), Some(sha)) = (cookie, sess.as_ref().and_then(|s| s.credential.clone())) {
        // A customer token ended by its partner ends the sessions signed in with it.
        if state.store.customer_token(&sha).await?.is_none() {
            state.sessions.end(c);
            sess = None;
        }
    }
    let form = if *method == Method::POST {
        let deadline = std::time::Duration::from_secs(state.config.server.body_read_timeout_secs);
        let raw = admin::input::read_bytes(body, state.config.server.admin_max_body_bytes, deadline, "a form").await?;
        form_urlencoded::parse(&raw).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
    } else {
        Vec::new()
    };
    let view = View {
        state,
        tr: Tr(lang),
        session: sess,
        method: method.clone(),
        path: path.to_owned(),
        query: query.map(str::to_owned),
        form,
        peer,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect()),
        headers,
        secure,
    };
    if let Some(s) = &view.session {
        tracing::Span::current().record("principal", s.who.name.as_str());
    }
    let mut resp = route(&view, &segs).await.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if asked.is_some() {
        let c = session::set_cookie(session::LANG_COOKIE, lang.tag(), 365 * 86_400, secure, false);
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}

fn asset(text: &'static str, ty: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from_bytes(text));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    r.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// Parse, then dispatch: sign-in pages for anyone, everything else behind a session, every
/// POST behind the session's CSRF token.
async fn route(v: &View<'_>, segs: &[&str]) -> Out {
    let get = v.method == Method::GET;
    let post = v.method == Method::POST;
    match segs {
        ["ui", "login"] if get => return signin::form(v, None),
        ["ui", "login"] if post => return signin::login(v).await,
        _ => {}
    }
    let Some(s) = &v.session else {
        return if get {
            Out::Redirect("/ui/login".into())
        } else {
            layout::refusal(v, StatusCode::FORBIDDEN, "session")
        };
    };
    if post && !v.field("csrf").is_some_and(|c| session::same_secret(&c, &s.csrf)) {
        tracing::warn!(principal = %s.who.name, "form without a valid CSRF token refused");
        return layout::refusal(v, StatusCode::FORBIDDEN, "csrf");
    }
    let out = match segs {
        [] | ["ui"] if get => Ok(Out::Redirect(home(v))),
        ["ui", "logout"] if post => Ok(signin::logout(v)),
        ["ui", "customers"] if get => customers::find(v).await,
        ["ui", "customers"] if post => customers::create(v).await,
        ["ui", "customers", t] if get => customers::software(v, t).await,
        ["ui", "customers", t, "buy"] if get => customers::buy_form(v, t, None).await,
        ["ui", "customers", t, "buy"] if post => customers::buy(v, t).await,
        ["ui", "customers", t, "tokens"] if post => tokens::create(v, t).await,
        ["ui", "customers", t, "tokens", k, "end"] if post => tokens::end(v, t, k).await,
        ["ui", "orders", o] if get => orders::show(v, o).await,
        ["ui", "orders", o, "downloads"] if post => orders::downloads(v, o).await,
        ["ui", "orders", o, "subscription"] if post => orders::subscription(v, o).await,
        ["ui", "orders", o, "cancel"] if get => cancel::dialog(v, o, None).await,
        ["ui", "orders", o, "cancel"] if post => cancel::cancel(v, o).await,
        ["ui", "support"] if get => cancel::support_form(v, None).await,
        ["ui", "support"] if post => cancel::support(v).await,
        ["ui", "activity"] if get => activity::show(v).await,
        ["ui", "activity.csv"] if get => activity::csv(v).await,
        ["ui", "catalog"] if get => activity::catalog(v).await,
        _ => Err(ApiError::NotFound),
    };
    out.unwrap_or_else(|e| layout::error(v, &e))
}

/// Where a principal starts: partners at the customer search, a customer at its own Software.
fn home(v: &View<'_>) -> String {
    match &v.who().tenant_id {
        Some(t) => format!("/ui/customers/{}", enc(t)),
        None => "/ui/customers".into(),
    }
}
