//! Cancelling: the dialog with the deadline, the days left and the credit, which needs an
//! explicit acknowledgement; policy refusals explained, with the support-request form (the
//! seeds' fields, customer and order filled in) where a request is the only way.

use super::layout::{csrf, explain, notice, page};
use super::{enc, str_of as s, Out, View};
use crate::error::ApiError;
use crate::router::Admin;
use http::StatusCode;
use maud::html;
use serde_json::{json, Value};

/// `GET /ui/orders/{order}/cancel`: what cancelling would do now.
pub async fn dialog(v: &View<'_>, order_id: &str, problem: Option<&ApiError>) -> Result<Out, ApiError> {
    let tr = v.tr;
    let o = v.api(Admin::GetOrder { order_id: order_id.to_owned() }, Value::Null).await?;
    let w = v.api(Admin::Cancellation { order_id: order_id.to_owned() }, Value::Null).await?;
    let currency = s(&o, "currency");
    let tenant = s(&o, "tenant_id");
    let code = w["code"].as_str();
    let back = format!("/ui/orders/{}", enc(order_id));
    let body = html! {
        section.dialog role="dialog" aria-modal="false" aria-labelledby="cancel-h" {
            h2 id="cancel-h" { (tr.tf("cancel.heading", &[("id", order_id)])) }
            @if let Some(e) = problem { (notice("error", &explain(v, e.code()))) }
            @if w["cancellable"] == true {
                dl.facts {
                    dt { (tr.t("cancel.deadline")) } dd #deadline { (tr.datetime_str(s(&w, "deadline"))) }
                    dt { (tr.t("cancel.days_left")) } dd #days-left { (tr.days(w["days_left"].as_i64().unwrap_or(0))) }
                    dt { (tr.t("cancel.credit")) } dd #credit { (tr.money(w["credit_cents"].as_i64().unwrap_or(0), currency)) }
                }
                @if w["mode"] == "at_renewal" {
                    p #mode { (tr.tf("cancel.at_renewal", &[("date", &tr.datetime_str(s(&w, "deadline")))])) }
                } @else {
                    p #mode { (tr.t("cancel.effect")) }
                }
                form method="post" action={ "/ui/orders/" (enc(order_id)) "/cancel" } {
                    (csrf(v))
                    label for="reason" { (tr.t("cancel.reason")) }
                    textarea id="reason" name="reason" maxlength="2000" rows="2" {}
                    div.check {
                        input id="ack" type="checkbox" name="acknowledged" value="true" required;
                        label for="ack" { (tr.t("cancel.acknowledge")) }
                    }
                    div.row {
                        button.danger type="submit" { (tr.t("cancel.confirm")) }
                        a.button href=(back) { (tr.t("cancel.keep")) }
                    }
                }
            } @else {
                (notice("info", &explain(v, code.unwrap_or("not_cancellable"))))
                @if code == Some("support_request_required") && v.may(&Admin::CreateSupportRequest) {
                    p { a.button href={ "/ui/support?customer=" (enc(tenant)) "&order_id=" (enc(order_id)) } { (tr.t("cancel.to_support")) } }
                }
                p { a href=(back) { (tr.t("common.back")) } }
            }
        }
    };
    let status = problem.map_or(StatusCode::OK, ApiError::status);
    Ok(Out::Page(status, page(v, &tr.t("cancel.title"), body)))
}

/// `POST /ui/orders/{order}/cancel`.
pub async fn cancel(v: &View<'_>, order_id: &str) -> Result<Out, ApiError> {
    let mut body = json!({ "acknowledged": v.field("acknowledged").as_deref() == Some("true") });
    if let Some(r) = v.field("reason") {
        body["reason"] = r.into();
    }
    let o = v.api(Admin::GetOrder { order_id: order_id.to_owned() }, Value::Null).await?;
    match v.api(Admin::Cancel { order_id: order_id.to_owned() }, body).await {
        Ok(_) => Ok(Out::Redirect(format!("/ui/customers/{}?done=cancelled", enc(s(&o, "tenant_id"))))),
        Err(e @ (ApiError::InvalidRequest { .. } | ApiError::Conflict { .. })) => dialog(v, order_id, Some(&e)).await,
        Err(e) => Err(e),
    }
}

/// `GET /ui/support[?customer=&order_id=]`: the support-request form.
pub async fn support_form(v: &View<'_>, problem: Option<&ApiError>) -> Result<Out, ApiError> {
    if !v.may(&Admin::CreateSupportRequest) {
        return Err(ApiError::Forbidden);
    }
    let tr = v.tr;
    let val = |k: &str| v.field(k).or_else(|| v.param(k));
    let body = html! {
        @if let Some(e) = problem {
            (notice("error", &explain(v, e.code())))
            @if let ApiError::InvalidRequest { errors } = e {
                ul.errors { @for f in errors { li { (tr.t(&format!("support.{}", f.field.replace('.', "_")))) ": " (f.message) } } }
            }
        }
        form.card method="post" action="/ui/support" {
            (csrf(v))
            @for (field, kind) in [("customer", "text"), ("order_id", "text"), ("subscription_id", "text"), ("amount", "text")] {
                label for={ "s-" (field) } { (tr.t(&format!("support.{field}"))) }
                input id={ "s-" (field) } name=(field) type=(kind) maxlength="253" value=[val(field)]
                    required[field == "customer" || field == "amount"] inputmode=[(field == "amount").then_some("decimal")];
            }
            label for="s-reason" { (tr.t("support.reason")) }
            textarea id="s-reason" name="reason" required maxlength="2000" rows="3" { (val("reason").unwrap_or_default()) }
            fieldset {
                legend { (tr.t("support.contact")) }
                @for (field, kind) in [("contact_name", "text"), ("contact_email", "email"), ("contact_phone", "tel")] {
                    label for={ "s-" (field) } { (tr.t(&format!("support.{field}"))) }
                    input id={ "s-" (field) } name=(field) type=(kind) required maxlength="254" value=[val(field)];
                }
            }
            button type="submit" { (tr.t("support.submit")) }
        }
    };
    let status = problem.map_or(StatusCode::OK, ApiError::status);
    Ok(Out::Page(status, page(v, &tr.t("support.title"), body)))
}

/// An amount typed as `12.34` (or `12,34`) → cents.
fn cents(typed: &str) -> Option<u64> {
    let t = typed.trim().replace(',', ".");
    let (whole, frac) = t.split_once('.').unwrap_or((&t, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 2 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let frac: u64 = if frac.is_empty() { 0 } else { format!("{frac:0<2}").parse().ok()? };
    whole.checked_mul(100)?.checked_add(frac)
}

/// `POST /ui/support`.
pub async fn support(v: &View<'_>) -> Result<Out, ApiError> {
    let tr = v.tr;
    let mut body = json!({
        "customer": v.field("customer").unwrap_or_default(),
        "reason": v.field("reason").unwrap_or_default(),
        "contact": {
            "name": v.field("contact_name").unwrap_or_default(),
            "email": v.field("contact_email").unwrap_or_default(),
            "phone": v.field("contact_phone").unwrap_or_default(),
        },
    });
    for k in ["order_id", "subscription_id"] {
        if let Some(x) = v.field(k) {
            body[k] = x.into();
        }
    }
    match v.field("amount").as_deref().map(cents) {
        Some(Some(c)) => body["amount_cents"] = c.into(),
        _ => return support_form(v, Some(&ApiError::field("amount", "must be an amount such as 12.50"))).await,
    }
    match v.api(Admin::CreateSupportRequest, body).await {
        Ok(r) => {
            let html = html! {
                (notice("ok", &tr.tf("support.created", &[("id", s(&r, "request_id"))])))
                p { code #request-id { (s(&r, "request_id")) } " · " (tr.t("support.status")) ": " (tr.t(&format!("status.{}", s(&r, "status")))) }
            };
            Ok(Out::Page(StatusCode::CREATED, page(v, &tr.t("support.title"), html)))
        }
        Err(e @ ApiError::InvalidRequest { .. }) => support_form(v, Some(&e)).await,
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn typed_amounts_become_cents() {
        assert_eq!(super::cents("12.5"), Some(1250));
        assert_eq!(super::cents("12,34"), Some(1234));
        assert_eq!(super::cents("7"), Some(700));
        assert_eq!(super::cents("1.234"), None);
        assert_eq!(super::cents("abc"), None);
        assert_eq!(super::cents(""), None);
    }
}
