//! The activity log for auditors (date range, kind, customer and order filters, paging, CSV;
//! who, what, when, from where) and the catalog for global admins (products, files with their
//! SHA-256 state, key pool counts). Both read through the API's own calls.

use super::layout::{dash, page};
use super::{enc, str_of as s, Out, View};
use crate::activity::Kind;
use crate::error::ApiError;
use crate::router::Admin;
use http::{header, HeaderValue, StatusCode};
use maud::html;
use serde_json::Value;

const FILTERS: [&str; 5] = ["from", "to", "kind", "tenant_id", "order_id"];
const PAGE: usize = 50;

/// The API query string for the page's filters (and cursor).
fn api_query(v: &View<'_>, after: Option<String>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for k in FILTERS {
        if let Some(x) = v.param(k) {
            q.append_pair(k, &x);
        }
    }
    if let Some(a) = after {
        q.append_pair("after_seq", &a);
    }
    q.append_pair("limit", &PAGE.to_string());
    q.finish()
}

/// `GET /ui/activity`.
pub async fn show(v: &View<'_>) -> Result<Out, ApiError> {
    let tr = v.tr;
    let got = v.api_q(Admin::Activity, Value::Null, Some(api_query(v, v.param("after_seq")))).await?;
    let records = got["records"].as_array().cloned().unwrap_or_default();
    let mut next = form_urlencoded::Serializer::new(String::new());
    for k in FILTERS {
        if let Some(x) = v.param(k) {
            next.append_pair(k, &x);
        }
    }
    let filters = next.finish();
    let kind = v.param("kind");
    let body = html! {
        form.card.filters method="get" action="/ui/activity" {
            @for (k, ty) in [("from", "date"), ("to", "date")] {
                label for={ "f-" (k) } { (tr.t(&format!("activity.{k}"))) }
                input id={ "f-" (k) } name=(k) type=(ty) value=[v.param(k)];
            }
            label for="f-kind" { (tr.t("activity.kind")) }
            select id="f-kind" name="kind" {
                option value="" { (tr.t("file.any")) }
                @for k in Kind::ALL { option value=(k.name()) selected[kind.as_deref() == Some(k.name())] { (k.name()) } }
            }
            @for k in ["tenant_id", "order_id"].into_iter().filter(|k| *k != "tenant_id" || v.who().tenant_id.is_none()) {
                label for={ "f-" (k) } { (tr.t(&format!("activity.{k}"))) }
                input id={ "f-" (k) } name=(k) type="text" maxlength="64" value=[v.param(k)];
            }
            button type="submit" { (tr.t("activity.apply")) }
        }
        p { a.button href={ "/ui/activity.csv?" (filters) } download="activity.csv" { (tr.t("activity.csv")) } }
        @if records.is_empty() { p { (tr.t("activity.none")) } } @else {
            div.scroll { table.activity {
                thead { tr {
                    th scope="col" { "#" } th scope="col" { (tr.t("activity.when")) } th scope="col" { (tr.t("activity.what")) }
                    th scope="col" { (tr.t("activity.who")) } th scope="col" { (tr.t("activity.where")) }
                    th scope="col" { (tr.t("activity.order_id")) } th scope="col" { (tr.t("activity.outcome")) }
                } }
                tbody { @for r in &records {
                    tr {
                        td { (r["seq"]) }
                        td { (tr.datetime_str(s(r, "at"))) }
                        td { code { (s(r, "kind")) } }
                        td { @if r["actor"].is_string() { (s(r, "actor")) } @else { (dash()) } }
                        td { @if r["ip"].is_string() { (s(r, "ip")) } @else { (dash()) } }
                        td { @if r["order_id"].is_string() { code { (s(r, "order_id")) } } @else { (dash()) } }
                        td { @if r["outcome"].is_string() { (s(r, "outcome")) } @else { (dash()) } }
                    }
                } }
            } }
        }
        @if let Some(n) = got["next_after_seq"].as_u64() {
            p { a.button rel="next" href={ "/ui/activity?" (filters) "&after_seq=" (n) } { (tr.t("activity.next")) } }
        }
    };
    Ok(Out::Page(StatusCode::OK, page(v, &tr.t("activity.title"), body)))
}

/// `GET /ui/activity.csv`: the same filters, as the API's CSV, one page of up to 1,000.
pub async fn csv(v: &View<'_>) -> Result<Out, ApiError> {
    let mut q = api_query(v, v.param("after_seq"));
    q = q.replace(&format!("limit={PAGE}"), "limit=1000");
    let mut r = crate::admin::activity_csv(&v.ctx(Some(q))).await?;
    r.headers_mut()
        .insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"activity.csv\""));
    Ok(Out::Raw(r))
}

/// `GET /ui/catalog` (global_admin): products, their files and key pools.
pub async fn catalog(v: &View<'_>) -> Result<Out, ApiError> {
    if !v.may(&Admin::PutProduct { product_id: String::new() }) {
        return Err(ApiError::Forbidden);
    }
    let tr = v.tr;
    let got = v.api(Admin::ListProducts, Value::Null).await?;
    let products = got["products"].as_array().cloned().unwrap_or_default();
    let body = html! {
        @for p in &products {
            section.card.product id={ "cat-" (s(p, "product_id")) } {
                h2 { (s(p, "name")) " " small { code { (s(p, "product_id")) } } }
                p {
                    (tr.t(&format!("kind.{}", s(p, "kind")))) " · "
                    (tr.money(p["unit_price_cents"].as_i64().unwrap_or(0), s(p, "currency"))) " · "
                    (tr.t(&format!("policy.{}", s(p, "cancel_policy")))) " · "
                    (tr.tf("catalog.keys", &[("n", &tr.number(p["keys_available"].as_u64().unwrap_or(0)))]))
                }
                div.scroll { table {
                    thead { tr {
                        th scope="col" { (tr.t("links.file")) } th scope="col" { (tr.t("file.version")) }
                        th scope="col" { (tr.t("file.language")) } th scope="col" { (tr.t("file.file_type")) }
                        th scope="col" { (tr.t("catalog.size")) } th scope="col" { "SHA-256" }
                    } }
                    tbody { @for f in p["files"].as_array().into_iter().flatten() {
                        tr {
                            td { (s(f, "filename")) @if !f["retired_at"].is_null() { " " small { (tr.t("catalog.retired")) } } }
                            td { (s(f, "version")) } td { (s(f, "language")) } td { (s(f, "file_type")) }
                            td { (tr.size(f["size"].as_u64().unwrap_or(0))) }
                            td { @if let Some(h) = f["sha256"].as_str() { code.sha { (h) } } @else { (tr.t("catalog.sha_pending")) } }
                        }
                    } }
                } }
            }
        }
        @if products.is_empty() { p { (tr.t("catalog.none")) } }
        p { a href={ "/ui/activity?kind=" (enc("link.issued")) } { (tr.t("nav.activity")) } }
    };
    Ok(Out::Page(StatusCode::OK, page(v, &tr.t("catalog.title"), body)))
}
