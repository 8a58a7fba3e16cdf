//! Customer tokens on a customer's page (partners with `admin_agent` or `global_admin`): the live
//! tokens, a form to create one (its token shown once, with a copy button), and End.

use super::layout::{csrf, notice, page};
use super::{enc, str_of as s, Out, View};
use crate::error::ApiError;
use crate::router::Admin;
use http::StatusCode;
use maud::{html, Markup};
use serde_json::{json, Value};

/// The tokens section of a customer's page; empty for roles that may not see it.
pub async fn section(v: &View<'_>, tenant: &str) -> Result<Markup, ApiError> {
    let call = Admin::ListCustomerTokens { tenant_id: tenant.to_owned() };
    if !v.may(&call) {
        return Ok(html! {});
    }
    let tr = v.tr;
    let got = v.api(call, Value::Null).await?;
    let tokens = got["tokens"].as_array().cloned().unwrap_or_default();
    let base = format!("/ui/customers/{}/tokens", enc(tenant));
    Ok(html! {
        section.card #tokens {
            h2 { (tr.t("tokens.title")) }
            p.help { (tr.t("tokens.help")) }
            @if tokens.is_empty() { p { (tr.t("tokens.none")) } } @else {
                ul.tokens {
                    @for t in &tokens {
                        li data-token=(s(t, "token_id")) {
                            strong { (s(t, "name")) } " · " (tr.datetime_str(s(t, "created_at"))) " · " (s(t, "created_by"))
                            form method="post" action={ (base) "/" (enc(s(t, "token_id"))) "/end" }
                                data-confirm=(tr.tf("tokens.end_confirm", &[("name", s(t, "name"))])) {
                                (csrf(v))
                                button.danger type="submit" { (tr.t("tokens.end")) }
                            }
                        }
                    }
                }
            }
            form method="post" action=(base) {
                (csrf(v))
                label for="token-name" { (tr.t("tokens.name")) }
                div.row {
                    input #token-name name="name" type="text" required maxlength="200";
                    button type="submit" { (tr.t("tokens.create")) }
                }
            }
        }
    })
}

/// `POST /ui/customers/{tenant}/tokens`: the new token, shown this once.
pub async fn create(v: &View<'_>, tenant: &str) -> Result<Out, ApiError> {
    let tr = v.tr;
    let name = v.field("name").unwrap_or_default();
    let t = v.api(Admin::CreateCustomerToken { tenant_id: tenant.to_owned() }, json!({ "name": name })).await?;
    let token = s(&t, "token");
    let body = html! {
        (notice("ok", &tr.tf("tokens.created", &[("name", s(&t, "name"))])))
        p { (tr.t("tokens.once")) }
        div.row {
            input #new-token readonly value=(token) aria-label=(tr.t("tokens.title"));
            button type="button" data-copy=(token) data-copied=(tr.t("common.copied")) { (tr.t("tokens.copy")) }
        }
        p { a href={ "/ui/customers/" (enc(tenant)) } { (tr.t("common.back")) } }
    };
    Ok(Out::Page(StatusCode::CREATED, page(v, &tr.t("tokens.title"), body)))
}

/// `POST /ui/customers/{tenant}/tokens/{token_id}/end`.
pub async fn end(v: &View<'_>, tenant: &str, token_id: &str) -> Result<Out, ApiError> {
    let call = Admin::EndCustomerToken { tenant_id: tenant.to_owned(), token_id: token_id.to_owned() };
    v.api(call, Value::Null).await?;
    Ok(Out::Redirect(format!("/ui/customers/{}?done=token_ended", enc(tenant))))
}
