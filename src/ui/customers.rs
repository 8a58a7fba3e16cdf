//! Customers: find one by domain or tenant GUID, create one, a customer's Software (every
//! purchase, cancelled ones without a key, days left to cancel), and buying software for it.

use super::layout::{csrf, dash, explain, notice, page, status_badge};
use super::{enc, str_of as s, Out, View};
use crate::error::ApiError;
use crate::router::Admin;
use http::StatusCode;
use maud::{html, Markup};
use serde_json::{json, Value};
use std::collections::HashMap;

/// `GET /ui/customers[?q=]`: the search, its result, and the create form.
pub async fn find(v: &View<'_>) -> Result<Out, ApiError> {
    let tr = v.tr;
    let q = v.param("q");
    let mut missing = false;
    if let Some(q) = &q {
        match v.api_q(Admin::FindCustomer, Value::Null, Some(format!("domain={}", enc(q)))).await {
            Ok(c) => return Ok(Out::Redirect(format!("/ui/customers/{}", enc(s(&c, "tenant_id"))))),
            Err(ApiError::Missing { .. }) => missing = true,
            Err(e) => return Err(e),
        }
    }
    let body = html! {
        form.card role="search" method="get" action="/ui/customers" {
            label for="q" { (tr.t("customers.find_label")) }
            div.row {
                input id="q" name="q" type="search" required maxlength="253" value=[q.as_deref()]
                    placeholder="contoso.com";
                button type="submit" { (tr.t("customers.find")) }
            }
        }
        @if missing { (notice("error", &tr.t("customers.not_found"))) }
        @if v.may(&Admin::CreateCustomer) { (create_form(v, None)) }
    };
    Ok(Out::Page(if missing { StatusCode::NOT_FOUND } else { StatusCode::OK }, page(v, &tr.t("customers.title"), body)))
}

fn create_form(v: &View<'_>, problem: Option<&ApiError>) -> Markup {
    let tr = v.tr;
    let val = |k: &str| v.field(k);
    html! {
        form.card method="post" action="/ui/customers" {
            h2 { (tr.t("customers.create")) }
            @if let Some(e) = problem {
                (notice("error", &explain(v, e.code())))
                @if let ApiError::InvalidRequest { errors } = e {
                    ul.errors { @for f in errors { li { (tr.t(&format!("customers.{}", f.field))) ": " (f.message) } } }
                }
            }
            (csrf(v))
            @for (field, kind, max) in [("tenant_id", "text", 36), ("domain", "text", 253), ("name", "text", 200), ("country", "text", 2)] {
                label for={ "c-" (field) } { (tr.t(&format!("customers.{field}"))) }
                input id={ "c-" (field) } name=(field) type=(kind) required maxlength=(max) value=[val(field)];
            }
            button type="submit" { (tr.t("customers.create_submit")) }
        }
    }
}

/// `POST /ui/customers`.
pub async fn create(v: &View<'_>) -> Result<Out, ApiError> {
    let body = json!({
        "tenant_id": v.field("tenant_id").unwrap_or_default(),
        "domain": v.field("domain").unwrap_or_default(),
        "name": v.field("name").unwrap_or_default(),
        "country": v.field("country").unwrap_or_default().to_ascii_uppercase(),
    });
    match v.api(Admin::CreateCustomer, body).await {
        Ok(c) => Ok(Out::Redirect(format!("/ui/customers/{}?done=created", enc(s(&c, "tenant_id"))))),
        Err(e @ (ApiError::InvalidRequest { .. } | ApiError::Conflict { .. })) => {
            let page = page(v, &v.tr.t("customers.title"), create_form(v, Some(&e)));
            Ok(Out::Page(e.status(), page))
        }
        Err(e) => Err(e),
    }
}

/// `GET /ui/customers/{tenant}`: the customer and its Software.
pub async fn software(v: &View<'_>, tenant: &str) -> Result<Out, ApiError> {
    let tr = v.tr;
    let c = v.api(Admin::GetCustomer { tenant_id: tenant.to_owned() }, Value::Null).await?;
    let items = v.api(Admin::Software { tenant_id: tenant.to_owned() }, Value::Null).await?;
    let items = items["items"].as_array().cloned().unwrap_or_default();
    // How long each order may still be cancelled (asked once per order, for roles that may).
    let mut windows: HashMap<String, Value> = HashMap::new();
    for it in &items {
        let o = s(it, "order_id").to_owned();
        let call = Admin::Cancellation { order_id: o.clone() };
        if !windows.contains_key(&o) && v.may(&call) {
            if let Ok(w) = v.api(call, Value::Null).await {
                windows.insert(o, w);
            }
        }
    }
    let done = v.param("done");
    let tenant_id = s(&c, "tenant_id").to_owned();
    let tokens = super::tokens::section(v, &tenant_id).await?;
    let show_window = v.may(&Admin::Cancellation { order_id: String::new() });
    let body = html! {
        @if let Some(d) = done.filter(|d| ["created", "bought", "cancelled", "token_ended"].contains(&d.as_str())) {
            (notice("ok", &tr.t(&format!("done.{d}"))))
        }
        dl.facts {
            dt { (tr.t("customers.domain")) } dd { (s(&c, "domain")) }
            dt { (tr.t("customers.tenant_id")) } dd { code { (tenant_id) } }
            dt { (tr.t("customers.country_name")) } dd { (s(&c, "country")) }
        }
        h2 { (tr.t("software.title")) }
        @if v.may(&Admin::Buy { tenant_id: tenant_id.clone() }) {
            p { a.button href={ "/ui/customers/" (enc(&tenant_id)) "/buy" } { (tr.t("buy.title")) } }
        }
        @if items.is_empty() {
            p { (tr.t("software.none")) }
        } @else {
            div.scroll {
                table.software {
                    thead { tr {
                        th scope="col" { (tr.t("software.product")) }
                        th scope="col" { (tr.t("software.status")) }
                        th scope="col" { (tr.t("software.purchased")) }
                        @if show_window { th scope="col" { (tr.t("software.cancel_days_left")) } }
                        th scope="col" { (tr.t("software.key")) }
                        th scope="col" { span.sr { (tr.t("software.actions")) } }
                    } }
                    tbody {
                        @for it in &items {
                            @let order = s(it, "order_id");
                            @let status = s(it, "status");
                            tr data-order=(order) data-status=(status) {
                                td {
                                    a href={ "/ui/orders/" (enc(order)) "?product=" (enc(s(it, "product_id"))) } { (s(it, "name")) }
                                    br; small { (tr.t(&format!("kind.{}", s(it, "kind")))) " · " code { (order) } }
                                }
                                td { (status_badge(v, status)) }
                                td { (tr.date_str(s(it, "purchased_at"))) }
                                @if show_window { td {
                                    @match windows.get(order) {
                                        Some(w) if w["cancellable"] == true => { (tr.days(w["days_left"].as_i64().unwrap_or(0))) }
                                        Some(w) if status != "cancelled" => { small { (explain(v, w["code"].as_str().unwrap_or("not_cancellable"))) } }
                                        _ => { (dash()) }
                                    }
                                } }
                                td { @if it["key_available"] == true { (tr.t("software.key_yes")) } @else { (dash()) } }
                                td {
                                    @if status == "active" && v.may(&Admin::Downloads { order_id: order.to_owned() }) {
                                        a.button href={ "/ui/orders/" (enc(order)) "?product=" (enc(s(it, "product_id"))) } {
                                            (tr.t("software.get_keys"))
                                        }
                                    } @else if status != "cancelled" {
                                        a href={ "/ui/orders/" (enc(order)) } { (tr.t("software.details")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (tokens)
    };
    Ok(Out::Page(StatusCode::OK, page(v, s(&c, "name"), body)))
}

/// `GET /ui/customers/{tenant}/buy`: the catalog with quantities.
pub async fn buy_form(v: &View<'_>, tenant: &str, problem: Option<&ApiError>) -> Result<Out, ApiError> {
    let tr = v.tr;
    let c = v.api(Admin::GetCustomer { tenant_id: tenant.to_owned() }, Value::Null).await?;
    let products = v.api(Admin::ListProducts, Value::Null).await?;
    let products = products["products"].as_array().cloned().unwrap_or_default();
    let country = s(&c, "country");
    let body = html! {
        p { (tr.tf("buy.for", &[("name", s(&c, "name")), ("country", country)])) }
        @if ["AU", "BR"].contains(&country) { (notice("info", &tr.t("buy.tax_included"))) }
        @else { p.help { (tr.t("buy.tax_excluded")) } }
        @if let Some(e) = problem { (notice("error", &explain(v, e.code()))) }
        form.card method="post" action={ "/ui/customers/" (enc(tenant)) "/buy" } {
            (csrf(v))
            fieldset {
                legend { (tr.t("buy.pick")) }
                @for p in &products {
                    @let id = s(p, "product_id");
                    div.buyrow {
                        label for={ "q-" (id) } {
                            strong { (s(p, "name")) } " · " (tr.t(&format!("kind.{}", s(p, "kind"))))
                            " · " (tr.money(p["unit_price_cents"].as_i64().unwrap_or(0), s(p, "currency")))
                        }
                        input id={ "q-" (id) } name={ "qty." (id) } type="number" min="0" max="1000" value="0" inputmode="numeric";
                    }
                }
            }
            button type="submit" { (tr.t("buy.submit")) }
        }
    };
    let status = problem.map_or(StatusCode::OK, ApiError::status);
    Ok(Out::Page(status, page(v, &tr.t("buy.title"), body)))
}

/// `POST /ui/customers/{tenant}/buy`.
pub async fn buy(v: &View<'_>, tenant: &str) -> Result<Out, ApiError> {
    let items: Vec<Value> = v
        .form
        .iter()
        .filter_map(|(k, q)| Some((k.strip_prefix("qty.")?, q.trim().parse::<u64>().ok()?)))
        .filter(|(_, q)| *q > 0)
        .map(|(p, q)| json!({"product_id": p, "quantity": q}))
        .collect();
    if items.is_empty() {
        return buy_form(v, tenant, Some(&ApiError::field("items", "pick at least one product"))).await;
    }
    match v.api(Admin::Buy { tenant_id: tenant.to_owned() }, json!({ "items": items })).await {
        Ok(o) => Ok(Out::Redirect(format!("/ui/orders/{}?done=bought", enc(s(&o, "order_id"))))),
        Err(
            e @ (ApiError::UnavailableInMarket { .. }
            | ApiError::Conflict { .. }
            | ApiError::AlreadySubscribed { .. }
            | ApiError::InvalidRequest { .. }),
        ) => buy_form(v, tenant, Some(&e)).await,
        Err(e) => Err(e),
    }
}
