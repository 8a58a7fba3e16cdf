//! `GET /api/openapi.json`: the admin API as an OpenAPI 3.1 document, built from the code it
//! describes so that it cannot drift from it:
//!
//! - paths and methods from the router's own table ([`crate::router::ADMIN_ROUTES`]), the one the
//!   requests are matched against;
//! - who may call each operation from the admin layer's own check ([`crate::admin::allowed`]),
//!   as the `x-keydrop-roles` extension;
//! - answer and problem schemas derived (`utoipa::ToSchema`) from the types the handlers
//!   serialize ([`crate::admin::views`], the model, [`crate::error::Problem`]);
//! - summaries, bodies and refusal codes from one exhaustive match ([`operations`]).
//!
//! utoipa is used for the schemas only: its `#[utoipa::path]` attributes would restate every
//! path and method beside the router's table, a second list that could disagree with the first.
//! The document is built once and served from memory.

mod operations;
mod requests;

pub use operations::{describe, Op};

use crate::admin::auth::{Principal, Role};
use crate::admin::views::*;
use crate::router::{Admin, Caller, ADMIN_ROUTES, OPENAPI_PATH};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(components(schemas(
    ProductView,
    FileView,
    ProductList,
    KeysAdded,
    crate::model::Customer,
    SoftwareList,
    OrderView,
    DownloadsIssued,
    KeyList,
    crate::orders::CancelPreview,
    CancelResult,
    crate::links::LinkStatus,
    LinkList,
    SupportCreated,
    crate::model::SupportRequest,
    ActivityPage,
    VerifyReport,
    RevocationResult,
    Me,
    TokenView,
    TokenList,
    TokenEnded,
    crate::error::Problem,
    requests::PutProductBody,
    requests::PutFileBody,
    requests::AddKeysBody,
    requests::CreateCustomerBody,
    requests::BuyBody,
    requests::DownloadsBody,
    requests::CancelBody,
    requests::PatchOrderBody,
    requests::SupportBody,
    requests::TokenBody,
    requests::RevocationBody,
)))]
struct Schemas;

/// The document's bytes, built on first use.
pub fn bytes() -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| serde_json::to_vec(&document()).expect("a JSON value serializes"))
}

/// The roles that may make `call`, by the admin layer's own check.
pub fn roles(call: &Admin) -> Vec<&'static str> {
    Role::ALL
        .into_iter()
        .filter(|&role| {
            let tenant_id = (role == Role::CustomerAdmin).then(|| "tenant".to_owned());
            crate::admin::allowed(call, &Principal { name: String::new(), role, tenant_id })
        })
        .map(Role::as_str)
        .collect()
}

/// OpenAPI links between operations (for clients and stateful testing): what a call answers
/// that names the resource other calls take. `(from, to, [(parameter, runtime expression)])`.
const T: &str = "$response.body#/tenant_id";
const O: &str = "$response.body#/order_id";
const P: &str = "$response.body#/product_id";
/// `(from operation, to operation, [(parameter, runtime expression)])`.
type Link = (&'static str, &'static str, &'static [(&'static str, &'static str)]);
static LINKS: &[Link] = &[
    ("create_customer", "get_customer", &[("tenant_id", T)]),
    ("create_customer", "software", &[("tenant_id", T)]),
    ("create_customer", "buy", &[("tenant_id", T)]),
    ("create_customer", "create_customer_token", &[("tenant_id", T)]),
    ("create_customer", "list_customer_tokens", &[("tenant_id", T)]),
    ("create_customer_token", "end_customer_token", &[("tenant_id", T), ("token_id", "$response.body#/token_id")]),
    ("put_product", "get_product", &[("product_id", P)]),
    ("put_product", "add_keys", &[("product_id", P)]),
    ("put_product", "put_file", &[("product_id", P)]),
    ("buy", "get_order", &[("order_id", O)]),
    ("buy", "patch_order", &[("order_id", O)]),
    ("buy", "downloads", &[("order_id", O)]),
    ("buy", "keys", &[("order_id", O)]),
    ("buy", "cancellation", &[("order_id", O)]),
    ("buy", "cancel", &[("order_id", O)]),
    ("buy", "suspend", &[("order_id", O)]),
    ("buy", "reactivate", &[("order_id", O)]),
    ("buy", "order_links", &[("order_id", O)]),
    ("downloads", "get_link", &[("link_id", "$response.body#/links/0/link_id")]),
    ("create_support_request", "get_support_request", &[("request_id", "$response.body#/request_id")]),
];

fn links_from(op_id: &str) -> Option<Value> {
    let links: Map<String, Value> = LINKS
        .iter()
        .filter(|(from, _, _)| *from == op_id)
        .map(|(_, to, params)| {
            let params: Map<String, Value> = params.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
            ((*to).to_owned(), json!({ "operationId": to, "parameters": params }))
        })
        .collect();
    (!links.is_empty()).then_some(Value::Object(links))
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A problem answer whose `code` is one of `codes`.
fn problem(status: u16, codes: &[&str]) -> Value {
    let schema = json!({
        "allOf": [schema_ref("Problem"), {
            "properties": { "status": { "const": status }, "code": { "enum": codes } }
        }]
    });
    let mut r = json!({
        "description": format!("Refused: {}", codes.join(", ")),
        "content": { "application/problem+json": { "schema": schema } }
    });
    let header = match status {
        401 => Some(("WWW-Authenticate", "`Bearer`: a token is missing or not valid.")),
        503 => Some(("Retry-After", "Seconds to wait before trying again.")),
        _ => None,
    };
    if let Some((name, description)) = header {
        r["headers"] = json!({ name: { "description": description, "schema": { "type": "string" } } });
    }
    r
}

/// The refusals of `call`: its own and those every call can get, by status.
fn refusals(call: &Admin, op: &Op) -> Vec<(u16, Vec<&'static str>)> {
    let mut by_status: Vec<(u16, Vec<&'static str>)> = Vec::new();
    let mut add = |status: u16, codes: &[&'static str]| match by_status.iter_mut().find(|(s, _)| *s == status) {
        Some((_, have)) => have.extend(codes.iter().filter(|c| !have.contains(c)).collect::<Vec<_>>()),
        None => by_status.push((status, codes.to_vec())),
    };
    if op.body.is_some() || !op.query.is_empty() {
        add(400, &["invalid_request"]);
    }
    if *call == Admin::Revocation {
        add(401, &["bad_signature"]);
    } else {
        add(401, &["unauthenticated"]);
        add(403, &["forbidden"]);
    }
    add(404, &["not_found"]);
    if op.body.is_some() {
        add(408, &["request_timeout"]);
    }
    for (status, codes) in op.refusals {
        add(*status, codes);
    }
    add(500, &["internal"]);
    add(503, &["unavailable"]);
    by_status.sort_by_key(|(s, _)| *s);
    by_status
}

fn operation(template: &str, call: &Admin) -> Value {
    let op = describe(call);
    let mut params: Vec<Value> = template
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({ "name": name, "in": "path", "required": true,
                    "schema": { "type": "string", "minLength": 1, "maxLength": 200 } })
        })
        .collect();
    for (name, ty, required, description) in op.query {
        params.push(json!({ "name": name, "in": "query", "required": required, "description": description,
                            "schema": { "type": ty } }));
    }
    let mut responses = Map::new();
    for (status, schema) in op.ok {
        let mut content = json!({ "application/json": { "schema": schema_ref(schema) } });
        if *call == Admin::Activity {
            content["text/csv"] = json!({ "schema": { "type": "string" } });
        }
        let mut answer = json!({ "description": "Done", "content": content });
        if let Some(links) = links_from(call.name()) {
            answer["links"] = links;
        }
        responses.insert(status.to_string(), answer);
    }
    for (status, codes) in refusals(call, &op) {
        responses.insert(status.to_string(), problem(status, &codes));
    }
    let tag = template.trim_start_matches("/api/").split('/').next().unwrap_or("api");
    let mut v = json!({
        "operationId": call.name(),
        "summary": op.summary,
        "tags": [tag],
        "parameters": params,
        "responses": responses,
        "x-keydrop-roles": roles(call),
    });
    if let Some(body) = op.body {
        v["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": schema_ref(body) } }
        });
    }
    if matches!(call.caller(), Caller::SignedPush) {
        v["security"] = json!([]);
        v["parameters"].as_array_mut().expect("an array").push(json!({
            "name": "Keydrop-Signature", "in": "header", "required": true,
            "description": "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\" under a push secret>`",
            "schema": { "type": "string", "maxLength": 1024 }
        }));
    }
    v
}

/// The endpoints outside `/api/` that need no token: health, readiness, metrics, this document.
fn open_paths(paths: &mut Map<String, Value>) {
    let plain = |id: &str, summary: &str, ok: Value| {
        json!({ "get": { "operationId": id, "summary": summary, "tags": ["operations"], "security": [],
                         "responses": ok } })
    };
    let status = json!({ "type": "object", "properties": { "status": { "type": "string" } }, "required": ["status"] });
    paths.insert(
        "/healthz".into(),
        plain(
            "healthz",
            "The process answers",
            json!({ "200": { "description": "Alive",
            "content": { "application/json": { "schema": status } } } }),
        ),
    );
    paths.insert(
        "/readyz".into(),
        plain(
            "readyz",
            "Ready for new work: not draining, and the store commits",
            json!({
                "200": { "description": "Ready", "content": { "application/json": { "schema": status } } },
                "503": problem(503, &["unavailable"]),
            }),
        ),
    );
    paths.insert(
        "/metrics".into(),
        plain(
            "metrics",
            "Prometheus metrics (OpenMetrics text)",
            json!({ "200": { "description": "Metrics",
            "content": { "application/openmetrics-text": { "schema": { "type": "string" } } } } }),
        ),
    );
    paths.insert(
        OPENAPI_PATH.into(),
        plain(
            "openapi",
            "This document",
            json!({ "200": { "description": "OpenAPI 3.1",
            "content": { "application/json": { "schema": { "type": "object" } } } } }),
        ),
    );
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ADMIN_ROUTES {
        let placeholders: Vec<String> =
            route.path.split('/').filter(|s| s.starts_with('{')).map(String::from).collect();
        let mut item = Map::new();
        for (method, make) in route.methods {
            item.insert(method.as_str().to_ascii_lowercase(), operation(route.path, &make(&placeholders)));
        }
        paths.insert(route.path.into(), Value::Object(item));
    }
    open_paths(&mut paths);
    let components = serde_json::to_value(Schemas::openapi()).expect("the schemas serialize");
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "keydrop admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Catalog, customers, orders, keys and download links, the activity log. \
                Every call needs `Authorization: Bearer <token>` except the signed revocation push and \
                the open endpoints; `x-keydrop-roles` lists the roles that may make each call.",
        },
        "paths": paths,
        "components": {
            "schemas": components["components"]["schemas"],
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
        "security": [{ "bearer": [] }],
    })
}
