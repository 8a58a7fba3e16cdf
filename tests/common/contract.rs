//! Every admin answer the suites see is checked against the server's own OpenAPI document
//! (`GET /api/openapi.json`): its status must be documented for the operation, and its JSON
//! must match the documented schema. The check is stricter than the document on one point: an
//! object may not carry a property its schema does not list (`additionalProperties: false`, or
//! `unevaluatedProperties: false` where a schema is composed with `allOf`), so a field added to
//! an answer but not to the document fails the test that sees it.

use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

struct Contract {
    doc: Value,
    /// Compiled validators by `method template status media`.
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

static CONTRACT: OnceLock<Contract> = OnceLock::new();

/// The document as the test server serves it (fetched once per test binary), made strict.
pub async fn document(admin: SocketAddr) -> &'static Value {
    if let Some(c) = CONTRACT.get() {
        return &c.doc;
    }
    let (status, _, body) = super::get(&format!("http://{admin}/api/openapi.json"), &[]).await.expect("openapi.json");
    assert_eq!(status, 200, "GET /api/openapi.json");
    let mut doc: Value = serde_json::from_slice(&body).expect("the OpenAPI document is JSON");
    make_strict(&mut doc);
    &CONTRACT.get_or_init(|| Contract { doc, validators: Mutex::default() }).doc
}

/// Adds `additionalProperties: false` to every component schema with properties that is not an
/// `allOf` member, and `unevaluatedProperties: false` to every `allOf`.
fn make_strict(doc: &mut Value) {
    let mut members = HashSet::new();
    mark_all_of(doc, &mut members);
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        for (name, s) in schemas.iter_mut() {
            if s.get("properties").is_some() && s.get("additionalProperties").is_none() && !members.contains(name) {
                s["additionalProperties"] = false.into();
            }
        }
    }
}

fn mark_all_of(v: &mut Value, members: &mut HashSet<String>) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Array(parts)) = o.get("allOf") {
                for p in parts {
                    if let Some(r) = p.get("$ref").and_then(Value::as_str) {
                        members.insert(r.rsplit('/').next().unwrap_or_default().to_owned());
                    }
                }
                o.insert("unevaluatedProperties".into(), false.into());
            }
            for (_, child) in o.iter_mut() {
                mark_all_of(child, members);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| mark_all_of(c, members)),
        _ => {}
    }
}

/// The documented path template `path` (without its query) falls under, if any.
fn template_of<'d>(doc: &'d Value, path: &str) -> Option<&'d str> {
    let segs: Vec<&str> = path.split('/').collect();
    doc["paths"].as_object()?.keys().map(String::as_str).find(|t| {
        let parts: Vec<&str> = t.split('/').collect();
        parts.len() == segs.len()
            && parts.iter().zip(&segs).all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s)
    })
}

/// Checks one answer: a documented operation must document `status`, and the body must match
/// its schema. Paths and methods the document does not list are the router's 404 and 405, which
/// the suites assert themselves; they must not answer 2xx.
pub async fn check(admin: SocketAddr, method: &str, path_and_query: &str, status: u16, body: &Value) {
    let doc = document(admin).await;
    let path = path_and_query.split('?').next().unwrap_or_default();
    let Some(template) = template_of(doc, path) else {
        assert!(status >= 400, "{method} {path} is not in the OpenAPI document but answered {status}");
        return;
    };
    let Some(op) = doc["paths"][template].get(method.to_ascii_lowercase()) else {
        assert!(status >= 400, "{method} {template} is not in the OpenAPI document but answered {status}");
        return;
    };
    let Some(response) = op["responses"].get(status.to_string()) else {
        panic!("{method} {template} answered {status}, which the OpenAPI document does not list; body {body}");
    };
    let media = if status < 400 { "application/json" } else { "application/problem+json" };
    let Some(schema) = response.pointer(&format!("/content/{}/schema", media.replace('/', "~1"))) else {
        assert!(body.is_null(), "{method} {template} {status}: the document gives no {media} body, but got {body}");
        return;
    };
    let key = format!("{method} {template} {status} {media}");
    let contract = CONTRACT.get().expect("fetched above");
    let validator = {
        let mut cache = contract.validators.lock().unwrap();
        cache
            .entry(key.clone())
            .or_insert_with(|| {
                let mut root = schema.clone();
                if let Some(o) = root.as_object_mut() {
                    o.insert("$schema".into(), json!("https://json-schema.org/draft/2020-12/schema"));
                    o.insert("components".into(), doc["components"].clone());
                }
                Arc::new(jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{key}: bad schema: {e}")))
            })
            .clone()
    };
    let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{key}: the answer breaks the OpenAPI document: {errors:#?}\nbody: {body:#}");
}
