//! An order: its products expanded (version / language / file type → Submit → Get keys and
//! downloads), the key and fresh links with Download and Copy link, the links issued earlier
//! with their live state, and the subscription controls (suspend, reactivate, auto-renew).

use super::layout::{csrf, dash, notice, page, status_badge};
use super::{enc, str_of as s, Out, View};
use crate::error::ApiError;
use crate::router::Admin;
use http::StatusCode;
use maud::{html, Markup};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const FILTERS: [&str; 3] = ["version", "language", "file_type"];

/// The files of a product new links may be issued for, narrowed by the page's selection.
fn live_files(product: &Value) -> Vec<Value> {
    product["files"].as_array().into_iter().flatten().filter(|f| f["retired_at"].is_null()).cloned().collect()
}

/// `GET /ui/orders/{order}[?product=&version=&language=&file_type=]`.
pub async fn show(v: &View<'_>, order_id: &str) -> Result<Out, ApiError> {
    let tr = v.tr;
    let o = v.api(Admin::GetOrder { order_id: order_id.to_owned() }, Value::Null).await?;
    let status = s(&o, "status").to_owned();
    let mut product_ids: Vec<String> = Vec::new();
    for it in o["items"].as_array().into_iter().flatten() {
        let p = s(it, "product_id").to_owned();
        if !product_ids.contains(&p) {
            product_ids.push(p);
        }
    }
    let mut products = Vec::new();
    for p in &product_ids {
        products.push(v.api(Admin::GetProduct { product_id: p.clone() }, Value::Null).await?);
    }
    let links_call = Admin::OrderLinks { order_id: order_id.to_owned() };
    let links = if v.may(&links_call) { Some(v.api(links_call, Value::Null).await?) } else { None };
    let chosen = v.param("product").or_else(|| (product_ids.len() == 1).then(|| product_ids[0].clone()));
    let is_sub = o["items"].as_array().into_iter().flatten().any(|i| i["kind"] == "subscription");
    let currency = s(&o, "currency");
    let done = v.param("done");
    let body = html! {
        @if let Some(d) = done.filter(|d| ["bought", "suspended", "reactivated", "auto_renew"].contains(&d.as_str())) {
            (notice("ok", &tr.t(&format!("done.{d}"))))
        }
        dl.facts {
            dt { (tr.t("order.status")) } dd { (status_badge(v, &status)) }
            dt { (tr.t("order.customer")) } dd { a href={ "/ui/customers/" (enc(s(&o, "tenant_id"))) } { code { (s(&o, "tenant_id")) } } }
            dt { (tr.t("software.purchased")) } dd { (tr.datetime_str(s(&o, "purchased_at"))) }
            dt { (tr.t("order.total")) } dd {
                (tr.money(o["total_cents"].as_i64().unwrap_or(0), currency)) " "
                small { (tr.t(if o["tax_included"] == true { "order.tax_included" } else { "order.tax_excluded" })) }
            }
            @if let Some(c) = o["credit_cents"].as_i64() {
                dt { (tr.t("cancel.credit")) } dd { (tr.money(c, currency)) }
            }
            @if o["term_end"].is_string() {
                dt { (tr.t("order.term")) } dd #term { (tr.datetime_str(s(&o, "term_start"))) " – " (tr.datetime_str(s(&o, "term_end"))) }
            }
            @if o["trial_ends_at"].is_string() {
                dt { (tr.t("order.trial_ends")) } dd #trial-ends { (tr.datetime_str(s(&o, "trial_ends_at"))) }
            }
            @if o["cancel_at"].is_string() && status == "active" {
                dt { (tr.t("order.cancel_at")) } dd #cancel-at { (tr.datetime_str(s(&o, "cancel_at"))) }
            }
            @if o["data_deleted_at"].is_string() {
                dt { (tr.t("order.data_deleted")) } dd #data-deleted { (tr.datetime_str(s(&o, "data_deleted_at"))) }
            }
        }
        @if status == "cancelled" || status == "expired" { (notice("info", &tr.t("order.revoked_no_key"))) }
        @for p in &products {
            (product_section(v, order_id, &status, p, chosen.as_deref() == Some(s(p, "product_id"))))
        }
        @if is_sub { (subscription_controls(v, order_id, &o, &status)) }
        @if ["active", "suspended"].contains(&status.as_str()) && v.may(&Admin::Cancel { order_id: order_id.to_owned() }) {
            p { a.button.danger href={ "/ui/orders/" (enc(order_id)) "/cancel" } { (tr.t("cancel.open")) } }
        }
        @if let Some(l) = &links { (earlier_links(v, l, &products)) }
    };
    Ok(Out::Page(StatusCode::OK, page(v, &tr.tf("order.title", &[("id", order_id)]), body)))
}

fn product_section(v: &View<'_>, order_id: &str, status: &str, p: &Value, open: bool) -> Markup {
    let tr = v.tr;
    let files = live_files(p);
    let picked = |k: &str| if open { v.param(k) } else { None };
    let matching: Vec<&Value> =
        files.iter().filter(|f| FILTERS.iter().all(|k| picked(k).is_none_or(|want| s(f, k) == want))).collect();
    let pid = s(p, "product_id");
    html! {
        details.product open[open] id={ "p-" (pid) } {
            summary { strong { (s(p, "name")) } " · " (tr.t(&format!("kind.{}", s(p, "kind")))) }
            form.selectors method="get" action={ "/ui/orders/" (enc(order_id)) } {
                input type="hidden" name="product" value=(pid);
                @for k in FILTERS {
                    @let values: BTreeSet<&str> = files.iter().map(|f| s(f, k)).collect();
                    div {
                        label for={ (pid) "-" (k) } { (tr.t(&format!("file.{k}"))) }
                        select id={ (pid) "-" (k) } name=(k) {
                            option value="" { (tr.t("file.any")) }
                            @for val in values { option value=(val) selected[picked(k).as_deref() == Some(val)] { (val) } }
                        }
                    }
                }
                button type="submit" { (tr.t("file.submit")) }
            }
            @if matching.is_empty() { p { (tr.t("file.none")) } } @else {
                ul.files {
                    @for f in &matching {
                        li { strong { (s(f, "filename")) } " · " (tr.size(f["size"].as_u64().unwrap_or(0)))
                            " · " (s(f, "version")) " · " (s(f, "language")) " · " (s(f, "file_type")) }
                    }
                }
            }
            @if status == "active" && v.may(&Admin::Downloads { order_id: order_id.to_owned() }) && !matching.is_empty() {
                (get_keys_form(v, order_id, pid, &picked, "software.get_keys"))
            }
        }
    }
}

fn get_keys_form(
    v: &View<'_>,
    order_id: &str,
    pid: &str,
    picked: &dyn Fn(&str) -> Option<String>,
    label: &str,
) -> Markup {
    html! {
        form.getkeys method="post" action={ "/ui/orders/" (enc(order_id)) "/downloads" } {
            (csrf(v))
            input type="hidden" name="product_id" value=(pid);
            @for k in FILTERS { @if let Some(val) = picked(k) { input type="hidden" name=(k) value=(val); } }
            button.primary type="submit" { (v.tr.t(label)) }
        }
    }
}

fn earlier_links(v: &View<'_>, l: &Value, products: &[Value]) -> Markup {
    let tr = v.tr;
    let links = l["links"].as_array().cloned().unwrap_or_default();
    let name_of = |pid: &str, fid: &str| -> String {
        products
            .iter()
            .filter(|p| s(p, "product_id") == pid)
            .flat_map(|p| p["files"].as_array().cloned().unwrap_or_default())
            .find(|f| s(f, "file_id") == fid)
            .map_or_else(|| fid.to_owned(), |f| s(&f, "filename").to_owned())
    };
    html! {
        h2 { (tr.t("links.earlier")) }
        @if links.is_empty() { p { (tr.t("links.none")) } } @else {
            div.scroll { table.links {
                thead { tr {
                    th scope="col" { (tr.t("links.file")) } th scope="col" { (tr.t("links.issued")) }
                    th scope="col" { (tr.t("links.expires")) } th scope="col" { (tr.t("links.used")) }
                    th scope="col" { (tr.t("links.state")) }
                } }
                tbody { @for k in &links {
                    tr data-link=(s(k, "link_id")) {
                        td { (name_of(s(k, "product_id"), s(k, "file_id"))) }
                        td { (tr.datetime_str(s(k, "issued_at"))) }
                        td { (tr.datetime_str(s(k, "expires_at"))) }
                        td { (format!("{:.1}", k["downloads_used"].as_f64().unwrap_or(0.0))) " / " (k["max_uses"]) }
                        td { (status_badge(v, s(k, "state"))) }
                    }
                } }
            } }
        }
    }
}

fn subscription_controls(v: &View<'_>, order_id: &str, o: &Value, status: &str) -> Markup {
    let tr = v.tr;
    let call = Admin::Suspend { order_id: order_id.to_owned() };
    let retention = v.state.config.orders.suspension_retention_days as i64;
    let goes = tr.date(v.state.now() + chrono::Duration::days(retention));
    let action = format!("/ui/orders/{}/subscription", enc(order_id));
    html! {
        section.card {
            h2 { (tr.t("sub.title")) }
            p { (tr.t("sub.auto_renew")) ": " (tr.t(if o["auto_renew"] == true { "common.on" } else { "common.off" })) }
            @if let Some(at) = o["suspended_at"].as_str() {
                @let deleted = super::i18n::parse_time(at).map(|t| tr.date(t + chrono::Duration::days(retention)));
                p { (tr.tf("sub.data_goes", &[("date", deleted.as_deref().unwrap_or(at))])) }
            }
            @if v.may(&call) {
                div.row {
                    @if status == "active" {
                        form method="post" action=(action) data-confirm=(tr.tf("sub.suspend_confirm", &[("date", &goes)])) {
                            (csrf(v)) input type="hidden" name="action" value="suspend";
                            button type="submit" { (tr.t("sub.suspend")) }
                        }
                    }
                    @if status == "suspended" {
                        form method="post" action=(action) {
                            (csrf(v)) input type="hidden" name="action" value="reactivate";
                            button type="submit" { (tr.t("sub.reactivate")) }
                        }
                    }
                    form method="post" action=(action) {
                        (csrf(v))
                        input type="hidden" name="action" value=(if o["auto_renew"] == true { "auto_renew_off" } else { "auto_renew_on" });
                        button type="submit" { (tr.t(if o["auto_renew"] == true { "sub.auto_renew_off" } else { "sub.auto_renew_on" })) }
                    }
                }
            }
        }
    }
}

/// `POST /ui/orders/{order}/subscription`: suspend, reactivate, or switch auto-renew.
pub async fn subscription(v: &View<'_>, order_id: &str) -> Result<Out, ApiError> {
    let id = order_id.to_owned();
    let (call, body, done) = match v.field("action").as_deref() {
        Some("suspend") => (Admin::Suspend { order_id: id }, Value::Null, "suspended"),
        Some("reactivate") => (Admin::Reactivate { order_id: id }, Value::Null, "reactivated"),
        Some("auto_renew_on") => (Admin::PatchOrder { order_id: id }, json!({"auto_renew": true}), "auto_renew"),
        Some("auto_renew_off") => (Admin::PatchOrder { order_id: id }, json!({"auto_renew": false}), "auto_renew"),
        _ => return Err(ApiError::field("action", "must be suspend, reactivate, auto_renew_on or auto_renew_off")),
    };
    v.api(call, body).await?;
    Ok(Out::Redirect(format!("/ui/orders/{}?done={done}", enc(order_id))))
}

/// `POST /ui/orders/{order}/downloads`: Get keys and downloads — the key and fresh links.
pub async fn downloads(v: &View<'_>, order_id: &str) -> Result<Out, ApiError> {
    let tr = v.tr;
    let pid = v.field("product_id").unwrap_or_default();
    let mut body = json!({ "product_id": pid });
    for k in FILTERS {
        if let Some(val) = v.field(k) {
            body[k] = val.into();
        }
    }
    let got = v.api(Admin::Downloads { order_id: order_id.to_owned() }, body).await?;
    let links = got["links"].as_array().cloned().unwrap_or_default();
    let picked = |k: &str| v.field(k);
    let html = html! {
        @if let Some(key) = got["key"].as_str() {
            section.card.key {
                h2 { (tr.t("keys.key")) }
                div.row {
                    input #key readonly value=(key) aria-label=(tr.t("keys.key"));
                    button type="button" data-copy=(key) data-copied=(tr.t("common.copied")) { (tr.t("keys.copy")) }
                }
            }
        } @else { p { (tr.t("keys.no_key")) } }
        h2 { (tr.t("keys.downloads")) }
        ul.downloads {
            @for l in &links {
                @let url = s(l, "url");
                li.download data-link=(s(l, "link_id")) {
                    strong { (s(l, "filename")) } " · " (tr.size(l["size"].as_u64().unwrap_or(0)))
                    dl.facts {
                        dt { "SHA-256" } dd { @if let Some(h) = l["sha256"].as_str() { code.sha { (h) } } @else { (dash()) } }
                        dt { (tr.t("links.expires")) } dd {
                            (tr.datetime_str(s(l, "expires_at"))) " "
                            small data-until=(s(l, "expires_at")) {}
                        }
                        dt { (tr.t("links.left")) } dd { (l["max_uses"]) }
                    }
                    input.url readonly value=(url) aria-label=(tr.t("links.url"));
                    div.row {
                        a.button.primary href=(url) { (tr.t("links.download")) }
                        button type="button" data-copy=(url) data-copied=(tr.t("common.copied")) { (tr.t("link.copy")) }
                    }
                }
            }
        }
        (get_keys_form(v, order_id, &pid, &picked, "keys.regenerate"))
        p { a href={ "/ui/orders/" (enc(order_id)) "?product=" (enc(&pid)) } { (tr.t("keys.back")) } }
    };
    Ok(Out::Page(StatusCode::OK, page(v, &tr.t("keys.title"), html)))
}
