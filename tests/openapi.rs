//! The OpenAPI document (`GET /api/openapi.json`) against the router: every admin call is in it,
//! every documented path and method routes to the call it names, and the roles it lists are the
//! ones the server lets through. (That every answer matches the document is checked by every
//! suite: see `common::contract`.)

mod common;

use common::{within, Server};
use http::Method;
use keydrop::router::{route, Admin, Endpoint, Listener};
use serde_json::{json, Value};
use strum::IntoEnumIterator;

fn filled(template: &str) -> String {
    template.split('/').map(|s| if s.starts_with('{') { "sample-1" } else { s }).collect::<Vec<_>>().join("/")
}

#[tokio::test]
async fn the_document_is_openapi_3_1_served_without_a_token() {
    let s = Server::start_admin().await;
    let (status, headers, body) =
        within(10, "openapi", common::get(&format!("http://{}/api/openapi.json", s.admin), &[])).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"], json!({"type": "http", "scheme": "bearer"}));
    let revocation = &doc["paths"]["/api/revocations"]["post"];
    assert_eq!(revocation["security"], json!([]));
    assert!(revocation["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "Keydrop-Signature"));
    // Not under the admin token's check, and not on the public listener.
    let (status, _, _) = common::get(&format!("http://{}/api/openapi.json", s.public), &[]).await.unwrap();
    assert_eq!(status, 404);
    let (status, _) = s.api("POST", "/api/openapi.json", "", None).await;
    assert_eq!(status, 405);
    s.stop().await;
}

#[tokio::test]
async fn every_admin_call_is_documented_and_every_documented_path_routes_to_it() {
    let s = Server::start_admin().await;
    let doc = common::contract::document(s.admin).await;
    let mut documented = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let path = filled(template);
            let e = route(Listener::Admin, &m, &path);
            assert!(
                !matches!(e, Endpoint::NotFound | Endpoint::MethodNotAllowed { .. }),
                "{method} {template} is documented but not routed ({e:?})"
            );
            assert_eq!(e.name(), id, "{method} {template} routes to {} but is documented as {id}", e.name());
            if let Endpoint::Admin(call) = &e {
                let roles: Vec<&str> =
                    op["x-keydrop-roles"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
                assert_eq!(roles, keydrop::openapi::roles(call), "{id}: x-keydrop-roles");
                assert!(!op["responses"].as_object().unwrap().is_empty());
            }
            documented.push(id.to_owned());
        }
    }
    for call in Admin::iter() {
        assert!(
            documented.contains(&call.name().to_owned()),
            "{} is an admin call missing from the document",
            call.name()
        );
    }
    for open in ["healthz", "readyz", "metrics", "openapi"] {
        assert!(documented.contains(&open.to_owned()), "{open} missing from the document");
    }
    assert_eq!(documented.len(), Admin::iter().count() + 4, "one operation per call: {documented:?}");
    s.stop().await;
}

#[tokio::test]
async fn documented_roles_are_the_roles_the_server_lets_through() {
    let s = Server::start_admin().await;
    let doc = common::contract::document(s.admin).await;
    assert_eq!(doc["paths"]["/api/products/{product_id}"]["put"]["x-keydrop-roles"], json!(["global_admin"]));
    assert_eq!(
        doc["paths"]["/api/orders/{order_id}/keys"]["get"]["x-keydrop-roles"],
        json!(["admin_agent", "customer_admin"])
    );
    // The server agrees: a role the document does not list for PUT product is refused.
    let body = json!({"name": "X", "kind": "perpetual", "unit_price_cents": 1, "currency": "USD", "cancel_policy": "standard"});
    let (status, _) = s.api("PUT", "/api/products/p-x", "sales_agent", Some(body.clone())).await;
    assert_eq!(status, 403);
    let (status, _) = s.api("PUT", "/api/products/p-x", "global_admin", Some(body)).await;
    assert_eq!(status, 201);
    s.stop().await;
}

#[tokio::test]
async fn an_answer_with_an_undocumented_field_fails_the_contract_check() {
    let s = Server::start_admin().await;
    let (status, me) = s.api("GET", "/api/me", "global_admin", None).await;
    assert_eq!(status, 200);
    let admin = s.admin;
    let mut extra = me.clone();
    extra["surprise"] = json!(1);
    let caught = tokio::spawn(async move { common::contract::check(admin, "GET", "/api/me", 200, &extra).await }).await;
    assert!(caught.is_err_and(|e| e.is_panic()), "an extra field must fail the check");
    let wrong_type = json!({"name": 5, "role": "global_admin", "tenant_id": null});
    let caught =
        tokio::spawn(async move { common::contract::check(admin, "GET", "/api/me", 200, &wrong_type).await }).await;
    assert!(caught.is_err_and(|e| e.is_panic()), "a mistyped field must fail the check");
    // A composed schema (a product is its catalog fields plus files and keys) is strict too.
    let body = json!({"name": "X", "kind": "perpetual", "unit_price_cents": 1, "currency": "USD", "cancel_policy": "standard"});
    let (status, mut product) = s.api("PUT", "/api/products/p-x", "global_admin", Some(body)).await;
    assert_eq!(status, 201);
    assert_eq!(product["keys_available"], 0);
    product["surprise"] = json!(true);
    let caught =
        tokio::spawn(async move { common::contract::check(admin, "GET", "/api/products/p-x", 200, &product).await })
            .await;
    assert!(caught.is_err_and(|e| e.is_panic()), "an extra field in a composed answer must fail the check");
    // A problem's code must be one the document lists for its status.
    let odd = json!({"status": 404, "code": "gone_fishing", "title": "t", "detail": "d"});
    let caught =
        tokio::spawn(async move { common::contract::check(admin, "GET", "/api/products/p-x", 404, &odd).await }).await;
    assert!(caught.is_err_and(|e| e.is_panic()), "an undocumented problem code must fail the check");
    let undocumented_status =
        tokio::spawn(async move { common::contract::check(admin, "GET", "/api/me", 409, &json!({})).await }).await;
    assert!(undocumented_status.is_err_and(|e| e.is_panic()), "an undocumented status must fail the check");
    s.stop().await;
}

#[tokio::test]
async fn links_name_documented_operations_and_their_parameters() {
    let s = Server::start_admin().await;
    let doc = common::contract::document(s.admin).await;
    let mut ops = std::collections::HashMap::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            ops.insert(op["operationId"].as_str().unwrap().to_owned(), op.clone());
        }
    }
    let mut seen = 0;
    for op in ops.values() {
        for response in op["responses"].as_object().unwrap().values() {
            for link in response["links"].as_object().into_iter().flat_map(|l| l.values()) {
                let target = &ops[link["operationId"].as_str().unwrap()];
                for param in link["parameters"].as_object().unwrap().keys() {
                    let known = target["parameters"].as_array().unwrap().iter().any(|p| p["name"] == param.as_str());
                    assert!(known, "link to {} sets {param}, which it does not take", link["operationId"]);
                }
                seen += 1;
            }
        }
    }
    assert!(seen >= 20, "{seen} links");
    s.stop().await;
}
