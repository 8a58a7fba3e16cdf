//! Parse, then dispatch: a request's listener, method and path become an [`Endpoint`], and every
//! endpoint declares who may call it ([`Endpoint::caller`]). The admin API fails closed: a path
//! not listed here is `404`, a listed path with another method is `405`, and an admin endpoint
//! always needs an authenticated principal whose role is in its list.

use crate::admin::auth::Role;
use http::Method;
use percent_encoding::percent_decode_str;
use std::sync::LazyLock;

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Public,
    Admin,
}

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// No credentials: health checks.
    Anyone,
    /// Whoever holds a correctly signed link; the token is the credential.
    LinkHolder,
    /// Any authenticated principal.
    AnyPrincipal,
    /// An authenticated principal with one of these roles.
    Roles(&'static [Role]),
    /// The order system: a body signed with a push secret, no bearer token.
    SignedPush,
    /// A person signed in to the dashboard (a session cookie; the sign-in page for anyone).
    Session,
}

/// The admin API's calls (API.md §4), with their path parameters decoded. `Admin::iter()`
/// lists every call (with empty parameters), for the check that each is routed and documented.
#[derive(Debug, Clone, PartialEq, Eq, strum::EnumIter)]
pub enum Admin {
    PutProduct {
        product_id: String,
    },
    PutFile {
        product_id: String,
        file_id: String,
    },
    RetireFile {
        product_id: String,
        file_id: String,
    },
    AddKeys {
        product_id: String,
    },
    ListProducts,
    GetProduct {
        product_id: String,
    },
    CreateCustomer,
    FindCustomer,
    GetCustomer {
        tenant_id: String,
    },
    Buy {
        tenant_id: String,
    },
    Software {
        tenant_id: String,
    },
    GetOrder {
        order_id: String,
    },
    PatchOrder {
        order_id: String,
    },
    Downloads {
        order_id: String,
    },
    Keys {
        order_id: String,
    },
    Cancellation {
        order_id: String,
    },
    Cancel {
        order_id: String,
    },
    Suspend {
        order_id: String,
    },
    Reactivate {
        order_id: String,
    },
    GetLink {
        link_id: String,
    },
    CreateSupportRequest,
    GetSupportRequest {
        request_id: String,
    },
    Activity,
    VerifyActivity,
    Revocation,
    /// `GET /api/me` (API.md §5.4): who the caller is.
    Me,
    /// `GET /api/orders/{order_id}/links` (an addition): the order's links, newest first.
    OrderLinks {
        order_id: String,
    },
    /// `POST /api/customers/{tenant_id}/tokens` (API.md §5.4): a customer token, shown once.
    CreateCustomerToken {
        tenant_id: String,
    },
    /// `GET /api/customers/{tenant_id}/tokens` (an addition): the tenant's live tokens.
    ListCustomerTokens {
        tenant_id: String,
    },
    /// `DELETE /api/customers/{tenant_id}/tokens/{token_id}` (API.md §5.4).
    EndCustomerToken {
        tenant_id: String,
        token_id: String,
    },
}

use Role::*;
const GLOBAL: &[Role] = &[GlobalAdmin];
const AGENT: &[Role] = &[AdminAgent];
const SELLERS: &[Role] = &[AdminAgent, GlobalAdmin, SalesAgent];
const AGENT_OR_GLOBAL: &[Role] = &[AdminAgent, GlobalAdmin];
const LINK_READERS: &[Role] = &[AdminAgent, GlobalAdmin, HelpdeskAgent];
const AUDITORS: &[Role] = &[GlobalAdmin, AccountAdmin, ReferralAdmin, MarketingContentAdmin];

impl Admin {
    /// The roles of API.md §4's table.
    pub fn caller(&self) -> Caller {
        match self {
            Admin::PutProduct { .. }
            | Admin::PutFile { .. }
            | Admin::RetireFile { .. }
            | Admin::AddKeys { .. }
            | Admin::VerifyActivity => Caller::Roles(GLOBAL),
            Admin::Activity => Caller::Roles(AUDITORS),
            Admin::Revocation => Caller::SignedPush,
            Admin::ListProducts
            | Admin::GetProduct { .. }
            | Admin::FindCustomer
            | Admin::GetCustomer { .. }
            | Admin::GetOrder { .. }
            | Admin::Software { .. }
            | Admin::Me => Caller::AnyPrincipal,
            Admin::CreateCustomer | Admin::Buy { .. } => Caller::Roles(SELLERS),
            Admin::Downloads { .. } | Admin::Keys { .. } | Admin::Cancel { .. } => Caller::Roles(AGENT),
            Admin::GetLink { .. } | Admin::OrderLinks { .. } => Caller::Roles(LINK_READERS),
            Admin::CreateCustomerToken { .. } | Admin::ListCustomerTokens { .. } | Admin::EndCustomerToken { .. } => {
                Caller::Roles(AGENT_OR_GLOBAL)
            }
            Admin::Cancellation { .. }
            | Admin::Suspend { .. }
            | Admin::Reactivate { .. }
            | Admin::PatchOrder { .. }
            | Admin::CreateSupportRequest
            | Admin::GetSupportRequest { .. } => Caller::Roles(AGENT_OR_GLOBAL),
        }
    }

    /// What a `customer_admin` may call (API.md §5.4) — its own customer, Software, keys and
    /// downloads, its own activity, who it is; and, added, its own orders, their links and the
    /// products it bought — always inside its tenant (checked by the admin layer). Nothing else.
    pub fn customer_may(&self) -> bool {
        matches!(
            self,
            Admin::GetCustomer { .. }
                | Admin::Software { .. }
                | Admin::Downloads { .. }
                | Admin::Keys { .. }
                | Admin::Activity
                | Admin::Me
                | Admin::GetOrder { .. }
                | Admin::OrderLinks { .. }
                | Admin::GetProduct { .. }
        )
    }

    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Admin::PutProduct { .. } => "put_product",
            Admin::PutFile { .. } => "put_file",
            Admin::RetireFile { .. } => "retire_file",
            Admin::AddKeys { .. } => "add_keys",
            Admin::ListProducts => "list_products",
            Admin::GetProduct { .. } => "get_product",
            Admin::CreateCustomer => "create_customer",
            Admin::FindCustomer => "find_customer",
            Admin::GetCustomer { .. } => "get_customer",
            Admin::Buy { .. } => "buy",
            Admin::Software { .. } => "software",
            Admin::GetOrder { .. } => "get_order",
            Admin::PatchOrder { .. } => "patch_order",
            Admin::Downloads { .. } => "downloads",
            Admin::Keys { .. } => "keys",
            Admin::Cancellation { .. } => "cancellation",
            Admin::Cancel { .. } => "cancel",
            Admin::Suspend { .. } => "suspend",
            Admin::Reactivate { .. } => "reactivate",
            Admin::GetLink { .. } => "get_link",
            Admin::CreateSupportRequest => "create_support_request",
            Admin::GetSupportRequest { .. } => "get_support_request",
            Admin::Activity => "activity",
            Admin::VerifyActivity => "verify_activity",
            Admin::Revocation => "revocation",
            Admin::Me => "me",
            Admin::OrderLinks { .. } => "order_links",
            Admin::CreateCustomerToken { .. } => "create_customer_token",
            Admin::ListCustomerTokens { .. } => "list_customer_tokens",
            Admin::EndCustomerToken { .. } => "end_customer_token",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint<'a> {
    Healthz,
    /// Ready to serve: not shutting down, and the store commits.
    Readyz,
    /// Prometheus text, admin listener only, no token.
    Metrics,
    /// The admin API's OpenAPI document (`GET /api/openapi.json`), admin listener, no token.
    OpenApi,
    /// `/d/{token}` or `/d/{token}/{anything}`; the trailing name is not checked.
    Download {
        token: &'a str,
    },
    Admin(Admin),
    /// The dashboard (API.md §5.4): `/` and `/ui/…` on the admin listener; its pages check
    /// their session and CSRF token themselves ([`crate::ui`]).
    Ui,
    MethodNotAllowed {
        allow: &'static str,
    },
    NotFound,
}

impl Endpoint<'_> {
    pub fn caller(&self) -> Option<Caller> {
        match self {
            Endpoint::Healthz | Endpoint::Readyz | Endpoint::Metrics | Endpoint::OpenApi => Some(Caller::Anyone),
            Endpoint::Download { .. } => Some(Caller::LinkHolder),
            Endpoint::Admin(a) => Some(a.caller()),
            Endpoint::Ui => Some(Caller::Session),
            Endpoint::MethodNotAllowed { .. } | Endpoint::NotFound => None,
        }
    }

    /// A short, secret-free name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::Healthz => "healthz",
            Endpoint::Readyz => "readyz",
            Endpoint::Metrics => "metrics",
            Endpoint::OpenApi => "openapi",
            Endpoint::Download { .. } => "download",
            Endpoint::Admin(a) => a.name(),
            Endpoint::Ui => "ui",
            Endpoint::MethodNotAllowed { .. } => "method_not_allowed",
            Endpoint::NotFound => "not_found",
        }
    }
}

/// Maps a request to an endpoint. `path` is the raw (percent-encoded) path without the query.
pub fn route<'a>(listener: Listener, method: &Method, path: &'a str) -> Endpoint<'a> {
    match path {
        "/healthz" => return Endpoint::Healthz,
        "/readyz" => return Endpoint::Readyz,
        _ => {}
    }
    match listener {
        Listener::Public => match path.strip_prefix("/d/") {
            Some(rest) => {
                let token = rest.split_once('/').map_or(rest, |(t, _)| t);
                if token.is_empty() {
                    Endpoint::NotFound
                } else {
                    Endpoint::Download { token }
                }
            }
            None => Endpoint::NotFound,
        },
        Listener::Admin if path == "/metrics" => Endpoint::Metrics,
        Listener::Admin if path == "/" || path == "/ui" || path.starts_with("/ui/") => Endpoint::Ui,
        Listener::Admin => admin_route(method, path),
    }
}

/// Builds an endpoint from its path parameters, in template order.
pub type Make = fn(&[String]) -> Admin;

/// One admin path: its template (`{name}` matches one non-empty segment of at most 200
/// characters, percent-decoded) and its methods, in the order `Allow` lists them.
pub struct Route {
    pub path: &'static str,
    pub methods: &'static [(Method, Make)],
}

macro_rules! make {
    ($variant:ident) => {
        (|_: &[String]| Admin::$variant) as Make
    };
    ($variant:ident, $a:ident) => {
        (|p: &[String]| Admin::$variant { $a: p[0].clone() }) as Make
    };
    ($variant:ident, $a:ident, $b:ident) => {
        (|p: &[String]| Admin::$variant { $a: p[0].clone(), $b: p[1].clone() }) as Make
    };
}

/// The admin API's paths: the one table the router matches and the OpenAPI document describes
/// ([`crate::openapi`]), so the two cannot disagree.
pub static ADMIN_ROUTES: &[Route] = &[
    Route { path: "/api/products", methods: &[(Method::GET, make!(ListProducts))] },
    Route {
        path: "/api/products/{product_id}",
        methods: &[(Method::GET, make!(GetProduct, product_id)), (Method::PUT, make!(PutProduct, product_id))],
    },
    Route {
        path: "/api/products/{product_id}/files/{file_id}",
        methods: &[
            (Method::PUT, make!(PutFile, product_id, file_id)),
            (Method::DELETE, make!(RetireFile, product_id, file_id)),
        ],
    },
    Route { path: "/api/products/{product_id}/keys", methods: &[(Method::POST, make!(AddKeys, product_id))] },
    Route {
        path: "/api/customers",
        methods: &[(Method::GET, make!(FindCustomer)), (Method::POST, make!(CreateCustomer))],
    },
    Route { path: "/api/customers/{tenant_id}", methods: &[(Method::GET, make!(GetCustomer, tenant_id))] },
    Route { path: "/api/customers/{tenant_id}/orders", methods: &[(Method::POST, make!(Buy, tenant_id))] },
    Route {
        path: "/api/customers/{tenant_id}/tokens",
        methods: &[
            (Method::GET, make!(ListCustomerTokens, tenant_id)),
            (Method::POST, make!(CreateCustomerToken, tenant_id)),
        ],
    },
    Route {
        path: "/api/customers/{tenant_id}/tokens/{token_id}",
        methods: &[(Method::DELETE, make!(EndCustomerToken, tenant_id, token_id))],
    },
    Route { path: "/api/customers/{tenant_id}/software", methods: &[(Method::GET, make!(Software, tenant_id))] },
    Route {
        path: "/api/orders/{order_id}",
        methods: &[(Method::GET, make!(GetOrder, order_id)), (Method::PATCH, make!(PatchOrder, order_id))],
    },
    Route { path: "/api/orders/{order_id}/downloads", methods: &[(Method::POST, make!(Downloads, order_id))] },
    Route { path: "/api/orders/{order_id}/keys", methods: &[(Method::GET, make!(Keys, order_id))] },
    Route { path: "/api/orders/{order_id}/cancellation", methods: &[(Method::GET, make!(Cancellation, order_id))] },
    Route { path: "/api/orders/{order_id}/cancel", methods: &[(Method::POST, make!(Cancel, order_id))] },
    Route { path: "/api/orders/{order_id}/suspend", methods: &[(Method::POST, make!(Suspend, order_id))] },
    Route { path: "/api/orders/{order_id}/reactivate", methods: &[(Method::POST, make!(Reactivate, order_id))] },
    Route { path: "/api/orders/{order_id}/links", methods: &[(Method::GET, make!(OrderLinks, order_id))] },
    Route { path: "/api/links/{link_id}", methods: &[(Method::GET, make!(GetLink, link_id))] },
    Route { path: "/api/me", methods: &[(Method::GET, make!(Me))] },
    Route { path: "/api/activity", methods: &[(Method::GET, make!(Activity))] },
    Route { path: "/api/activity/verify", methods: &[(Method::GET, make!(VerifyActivity))] },
    Route { path: "/api/revocations", methods: &[(Method::POST, make!(Revocation))] },
    Route { path: "/api/support-requests", methods: &[(Method::POST, make!(CreateSupportRequest))] },
    Route {
        path: "/api/support-requests/{request_id}",
        methods: &[(Method::GET, make!(GetSupportRequest, request_id))],
    },
];

/// The path of the OpenAPI document (no token).
pub const OPENAPI_PATH: &str = "/api/openapi.json";

/// Each route's `Allow` value, in table order.
static ALLOW: LazyLock<Vec<String>> = LazyLock::new(|| {
    ADMIN_ROUTES.iter().map(|r| r.methods.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>().join(", ")).collect()
});

/// The path parameters of `segs` if it matches `template` (both without the leading `/`).
fn matches(template: &str, segs: &[String]) -> Option<Vec<String>> {
    let mut params = Vec::new();
    let mut parts = template.split('/');
    for seg in segs {
        let t = parts.next()?;
        if t.starts_with('{') {
            params.push(seg.clone());
        } else if t != seg {
            return None;
        }
    }
    parts.next().is_none().then_some(params)
}

fn admin_route<'a>(method: &Method, path: &str) -> Endpoint<'a> {
    if path == OPENAPI_PATH {
        return match *method {
            Method::GET | Method::HEAD => Endpoint::OpenApi,
            _ => Endpoint::MethodNotAllowed { allow: "GET" },
        };
    }
    if !path.starts_with("/api/") {
        return Endpoint::NotFound;
    }
    let mut segs = Vec::new();
    for raw in path[1..].split('/') {
        match percent_decode_str(raw).decode_utf8() {
            Ok(s) if !s.is_empty() && s.len() <= 200 => segs.push(s.into_owned()),
            _ => return Endpoint::NotFound,
        }
    }
    for (i, r) in ADMIN_ROUTES.iter().enumerate() {
        let Some(params) = matches(&r.path[1..], &segs) else { continue };
        return match r.methods.iter().find(|(m, _)| m == method) {
            Some((_, make)) => Endpoint::Admin(make(&params)),
            None => Endpoint::MethodNotAllowed { allow: ALLOW[i].as_str() },
        };
    }
    Endpoint::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_paths_with_and_without_name() {
        let g = Method::GET;
        assert_eq!(route(Listener::Public, &g, "/d/abc"), Endpoint::Download { token: "abc" });
        assert_eq!(route(Listener::Public, &g, "/d/abc/Win%20Server.iso"), Endpoint::Download { token: "abc" });
        assert_eq!(route(Listener::Public, &g, "/d/abc/a/b"), Endpoint::Download { token: "abc" });
        assert_eq!(route(Listener::Public, &g, "/d/"), Endpoint::NotFound);
        assert_eq!(route(Listener::Public, &g, "/d"), Endpoint::NotFound);
    }

    #[test]
    fn downloads_are_public_only_admin_is_admin_only_health_everywhere() {
        let g = Method::GET;
        assert_eq!(route(Listener::Admin, &g, "/d/abc"), Endpoint::NotFound);
        assert_eq!(route(Listener::Public, &g, "/api/products"), Endpoint::NotFound);
        assert_eq!(route(Listener::Admin, &g, "/healthz"), Endpoint::Healthz);
        assert_eq!(route(Listener::Admin, &g, "/metrics"), Endpoint::Metrics);
        assert_eq!(route(Listener::Public, &g, "/metrics"), Endpoint::NotFound);
        assert_eq!(route(Listener::Public, &g, "/healthz"), Endpoint::Healthz);
        assert_eq!(Endpoint::NotFound.caller(), None);
    }

    #[test]
    fn admin_paths_methods_and_roles() {
        let e = route(Listener::Admin, &Method::PUT, "/api/products/win%2011");
        assert_eq!(e, Endpoint::Admin(Admin::PutProduct { product_id: "win 11".into() }));
        assert_eq!(e.caller(), Some(Caller::Roles(&[Role::GlobalAdmin])));
        assert_eq!(
            route(Listener::Admin, &Method::DELETE, "/api/products/x"),
            Endpoint::MethodNotAllowed { allow: "GET, PUT" }
        );
        assert_eq!(
            route(Listener::Admin, &Method::GET, "/api/orders/o1/keys").caller(),
            Some(Caller::Roles(&[Role::AdminAgent]))
        );
        let retire = route(Listener::Admin, &Method::DELETE, "/api/products/p/files/f");
        assert_eq!(retire, Endpoint::Admin(Admin::RetireFile { product_id: "p".into(), file_id: "f".into() }));
        assert_eq!(retire.caller(), Some(Caller::Roles(&[Role::GlobalAdmin])));
        assert_eq!(route(Listener::Admin, &Method::GET, "/api/nope"), Endpoint::NotFound);
        assert_eq!(route(Listener::Admin, &Method::GET, "/api/orders//keys"), Endpoint::NotFound);
        assert_eq!(route(Listener::Admin, &Method::GET, "/api/orders/%ff/keys"), Endpoint::NotFound);
    }
}
