//! The page shell every dashboard page shares — header, navigation by role, the language
//! switcher, sign-out — and the error and refusal pages. Nothing here runs script inline: the
//! only script is `/ui/app.js`, the only style `/ui/app.css` (the CSP allows nothing else).

use super::{Out, View};
use crate::error::ApiError;
use crate::pages::Lang;
use crate::router::Admin;
use http::StatusCode;
use maud::{html, Markup, PreEscaped, DOCTYPE};

/// A whole page: `title` is the `<h1>` and the window title.
pub fn page(v: &View<'_>, title: &str, body: Markup) -> Markup {
    let tr = v.tr;
    html! {
        (DOCTYPE)
        html lang=(tr.lang().tag()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · keydrop" }
                link rel="stylesheet" href="/ui/app.css";
                script src="/ui/app.js" defer {}
            }
            body {
                a.skip href="#main" { (tr.t("nav.skip")) }
                header.top {
                    a.brand href="/ui/" { "keydrop" }
                    @if let Some(s) = &v.session {
                        nav aria-label=(tr.t("nav.label")) {
                            @if s.who.tenant_id.is_none() {
                                a href="/ui/customers" { (tr.t("nav.customers")) }
                            } @else if let Some(t) = &s.who.tenant_id {
                                a href={ "/ui/customers/" (super::enc(t)) } { (tr.t("nav.my_software")) }
                            }
                            @if v.may(&Admin::Activity) {
                                a href="/ui/activity" { (tr.t("nav.activity")) }
                            }
                            @if v.may(&Admin::PutProduct { product_id: String::new() }) {
                                a href="/ui/catalog" { (tr.t("nav.catalog")) }
                            }
                            @if v.may(&Admin::CreateSupportRequest) {
                                a href="/ui/support" { (tr.t("nav.support")) }
                            }
                        }
                        div.who {
                            span { (s.who.name) " · " (tr.t(&format!("role.{}", s.who.role.as_str()))) }
                            form method="post" action="/ui/logout" {
                                (csrf(v))
                                button type="submit" { (tr.t("nav.logout")) }
                            }
                        }
                    }
                    nav.langs aria-label=(tr.t("nav.language")) {
                        @for l in Lang::ALL {
                            @if l == tr.lang() {
                                span aria-current="true" lang=(l.tag()) { (l.native_name()) }
                            } @else {
                                a href=(v.in_lang(l)) lang=(l.tag()) hreflang=(l.tag()) { (l.native_name()) }
                            }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The session's CSRF token as a hidden form field.
pub fn csrf(v: &View<'_>) -> Markup {
    let token = v.session.as_ref().map(|s| s.csrf.as_str()).unwrap_or("");
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A short notice at the top of a page (`?done=…` after a form, or a refusal).
pub fn notice(kind: &str, text: &str) -> Markup {
    html! { p class={ "notice " (kind) } role="status" { (text) } }
}

/// The localized explanation of a refusal code: the dashboard's own string when it has one,
/// else the refusal pages' text.
pub fn explain(v: &View<'_>, code: &str) -> String {
    let key = format!("error.{code}");
    if v.tr.has(&key) {
        v.tr.t(&key)
    } else {
        crate::pages::text(code, v.tr.lang()).1.to_owned()
    }
}

/// An error from an admin call, as a page with the call's status.
pub fn error(v: &View<'_>, e: &ApiError) -> Out {
    if let ApiError::Internal(detail) = e {
        tracing::error!(error = %detail, "dashboard page failed");
    }
    let status = e.status();
    let body = html! {
        (notice("error", &explain(v, e.code())))
        @if let ApiError::InvalidRequest { errors } = e {
            ul.errors { @for f in errors { li { code { (f.field) } ": " (f.message) } } }
        }
        p { a href="/ui/" { (v.tr.t("common.home")) } }
        p { small { (status.as_u16()) " · " (e.code()) } }
    };
    Out::Page(status, page(v, &v.tr.t("error.title"), body))
}

/// A request refused before any call: no session, or a form without its CSRF token.
pub fn refusal(v: &View<'_>, status: StatusCode, what: &str) -> Out {
    let body = html! {
        (notice("error", &v.tr.t(&format!("refused.{what}"))))
        p { a href="/ui/login" { (v.tr.t("signin.title")) } }
    };
    Out::Page(status, page(v, &v.tr.t("error.title"), body))
}

/// A status as a badge, in the page's language.
pub fn status_badge(v: &View<'_>, status: &str) -> Markup {
    html! { span class={ "badge " (status) } { (v.tr.t(&format!("status.{status}"))) } }
}

/// Nothing, when a value is missing.
pub fn dash() -> Markup {
    PreEscaped("—".to_owned())
}
