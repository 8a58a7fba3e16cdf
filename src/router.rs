//! Parse, then dispatch: a request's listener, method and path become an [`Endpoint`], and every
//! endpoint declares who may call it ([`Endpoint::caller`]). The admin API fails closed: a path
//! not listed here is `404`, a listed path with another method is `405`, and an admin endpoint
//! always needs an authenticated principal whose role is in its list.

use crate::admin::auth::Role;
use http::Method;
use percent_encoding::percent_decode_str;

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

/// The admin API's calls (API.md §4), with their path parameters decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
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
            Endpoint::Healthz | Endpoint::Readyz | Endpoint::Metrics => Some(Caller::Anyone),
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

fn admin_route<'a>(method: &Method, path: &str) -> Endpoint<'a> {
    let Some(rest) = path.strip_prefix("/api/") else { return Endpoint::NotFound };
    let mut segs = Vec::new();
    for raw in rest.split('/') {
        match percent_decode_str(raw).decode_utf8() {
            Ok(s) if !s.is_empty() && s.len() <= 200 => segs.push(s.into_owned()),
            _ => return Endpoint::NotFound,
        }
    }
    let m = method;
    let pick = |options: &[(Method, Admin)], allow: &'static str| -> Endpoint<'a> {
        match options.iter().find(|(om, _)| om == m) {
            Some((_, a)) => Endpoint::Admin(a.clone()),
            None => Endpoint::MethodNotAllowed { allow },
        }
    };
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    use Method as M;
    match s.as_slice() {
        ["products"] => pick(&[(M::GET, Admin::ListProducts)], "GET"),
        ["products", p] => {
            let id = p.to_string();
            pick(
                &[
                    (M::GET, Admin::GetProduct { product_id: id.clone() }),
                    (M::PUT, Admin::PutProduct { product_id: id }),
                ],
                "GET, PUT",
            )
        }
        ["products", p, "files", f] => {
            let (product_id, file_id) = (p.to_string(), f.to_string());
            pick(
                &[
                    (M::PUT, Admin::PutFile { product_id: product_id.clone(), file_id: file_id.clone() }),
                    (M::DELETE, Admin::RetireFile { product_id, file_id }),
                ],
                "PUT, DELETE",
            )
        }
        ["products", p, "keys"] => pick(&[(M::POST, Admin::AddKeys { product_id: p.to_string() })], "POST"),
        ["customers"] => pick(&[(M::POST, Admin::CreateCustomer), (M::GET, Admin::FindCustomer)], "GET, POST"),
        ["customers", t] => pick(&[(M::GET, Admin::GetCustomer { tenant_id: t.to_string() })], "GET"),
        ["customers", t, "orders"] => pick(&[(M::POST, Admin::Buy { tenant_id: t.to_string() })], "POST"),
        ["customers", t, "tokens"] => pick(
            &[
                (M::POST, Admin::CreateCustomerToken { tenant_id: t.to_string() }),
                (M::GET, Admin::ListCustomerTokens { tenant_id: t.to_string() }),
            ],
            "GET, POST",
        ),
        ["customers", t, "tokens", k] => pick(
            &[(M::DELETE, Admin::EndCustomerToken { tenant_id: t.to_string(), token_id: k.to_string() })],
            "DELETE",
        ),
        ["customers", t, "software"] => pick(&[(M::GET, Admin::Software { tenant_id: t.to_string() })], "GET"),
        ["orders", o] => {
            let id = o.to_string();
            pick(
                &[(M::GET, Admin::GetOrder { order_id: id.clone() }), (M::PATCH, Admin::PatchOrder { order_id: id })],
                "GET, PATCH",
            )
        }
        ["orders", o, "downloads"] => pick(&[(M::POST, Admin::Downloads { order_id: o.to_string() })], "POST"),
        ["orders", o, "keys"] => pick(&[(M::GET, Admin::Keys { order_id: o.to_string() })], "GET"),
        ["orders", o, "cancellation"] => pick(&[(M::GET, Admin::Cancellation { order_id: o.to_string() })], "GET"),
        ["orders", o, "cancel"] => pick(&[(M::POST, Admin::Cancel { order_id: o.to_string() })], "POST"),
        ["orders", o, "suspend"] => pick(&[(M::POST, Admin::Suspend { order_id: o.to_string() })], "POST"),
        ["orders", o, "reactivate"] => pick(&[(M::POST, Admin::Reactivate { order_id: o.to_string() })], "POST"),
        ["orders", o, "links"] => pick(&[(M::GET, Admin::OrderLinks { order_id: o.to_string() })], "GET"),
        ["links", l] => pick(&[(M::GET, Admin::GetLink { link_id: l.to_string() })], "GET"),
        ["me"] => pick(&[(M::GET, Admin::Me)], "GET"),
        ["activity"] => pick(&[(M::GET, Admin::Activity)], "GET"),
        ["activity", "verify"] => pick(&[(M::GET, Admin::VerifyActivity)], "GET"),
        ["revocations"] => pick(&[(M::POST, Admin::Revocation)], "POST"),
        ["support-requests"] => pick(&[(M::POST, Admin::CreateSupportRequest)], "POST"),
        ["support-requests", r] => pick(&[(M::GET, Admin::GetSupportRequest { request_id: r.to_string() })], "GET"),
        _ => Endpoint::NotFound,
    }
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
