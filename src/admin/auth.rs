//! Admin authentication: `Authorization: Bearer <token>` of a configured principal, matched by
//! the SHA-256 of the token against every principal's `token_sha256` in constant time (every
//! principal is compared, so timing says nothing about which prefix matched). No principals
//! configured means no admin access at all: authentication fails closed.

use crate::config::Principal as PrincipalConfig;
use crate::error::ApiError;
use http::HeaderMap;

/// The roles of API.md §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    AdminAgent,
    GlobalAdmin,
    BillingAdmin,
    SalesAgent,
    HelpdeskAgent,
    AccountAdmin,
    ReferralAdmin,
    MarketingContentAdmin,
    /// A customer's own administrator (API.md §5.4): one tenant, a few calls, nothing else.
    CustomerAdmin,
}

impl Role {
    pub const ALL: [Role; 9] = [
        Role::AdminAgent,
        Role::GlobalAdmin,
        Role::BillingAdmin,
        Role::SalesAgent,
        Role::HelpdeskAgent,
        Role::AccountAdmin,
        Role::ReferralAdmin,
        Role::MarketingContentAdmin,
        Role::CustomerAdmin,
    ];

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::AdminAgent => "admin_agent",
            Role::GlobalAdmin => "global_admin",
            Role::BillingAdmin => "billing_admin",
            Role::SalesAgent => "sales_agent",
            Role::HelpdeskAgent => "helpdesk_agent",
            Role::AccountAdmin => "account_admin",
            Role::ReferralAdmin => "referral_admin",
            Role::MarketingContentAdmin => "marketing_content_admin",
            Role::CustomerAdmin => "customer_admin",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// The one tenant a `customer_admin` belongs to (API.md §5.4); `None` for partner roles.
    pub tenant_id: Option<String>,
}

/// The bearer token of a request.
pub fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 512)
        .ok_or(ApiError::Unauthenticated)
}

/// Finds the configured principal a request's bearer token belongs to.
pub fn authenticate(headers: &HeaderMap, principals: &[PrincipalConfig]) -> Result<Principal, ApiError> {
    principal_for_token(bearer(headers)?, principals)
}

/// Finds whoever a token belongs to: a configured principal, else a partner-issued customer
/// token, looked up by its SHA-256 (one keyed read: bounded work for any token sent).
pub async fn resolve(state: &crate::state::AppState, token: &str) -> Result<Principal, ApiError> {
    match principal_for_token(token, &state.config.principals) {
        Ok(p) => Ok(p),
        Err(ApiError::Unauthenticated) if !token.is_empty() && token.len() <= 512 => {
            let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()));
            let t = state.store.customer_token(&sha).await?.ok_or(ApiError::Unauthenticated)?;
            Ok(Principal {
                name: format!("{} ({})", t.name, t.token_id),
                role: Role::CustomerAdmin,
                tenant_id: Some(t.tenant_id),
            })
        }
        Err(e) => Err(e),
    }
}

/// Finds the principal a token belongs to (the bearer header's, or one typed at sign-in).
pub fn principal_for_token(token: &str, principals: &[PrincipalConfig]) -> Result<Principal, ApiError> {
    if token.is_empty() || token.len() > 512 {
        return Err(ApiError::Unauthenticated);
    }
    let presented = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut found = None;
    for p in principals {
        let Ok(expected) = hex::decode(&p.token_sha256) else { continue };
        // Constant-time comparison of the digests; keep scanning to not reveal the position.
        let equal = crate::secrets::same_secret(&expected, presented.as_ref());
        if equal && found.is_none() {
            found = Some(p);
        }
    }
    let p = found.ok_or(ApiError::Unauthenticated)?;
    let role = Role::parse(&p.role).ok_or_else(|| {
        tracing::error!(principal = %p.name, "principal has an unknown role");
        ApiError::Forbidden
    })?;
    let tenant_id =
        if role == Role::CustomerAdmin { p.tenant_id.as_ref().map(|t| t.to_ascii_lowercase()) } else { None };
    if role == Role::CustomerAdmin && tenant_id.is_none() {
        return Err(ApiError::Forbidden);
    }
    Ok(Principal { name: p.name.clone(), role, tenant_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(name: &str, role: &str, token: &str) -> PrincipalConfig {
        PrincipalConfig {
            name: name.into(),
            role: role.into(),
            token_sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes())),
            tenant_id: None,
        }
    }

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn bearer_token_finds_its_principal() {
        let ps = [principal("alice", "admin_agent", "t-alice"), principal("bob", "global_admin", "t-bob")];
        let p = authenticate(&headers("Bearer t-bob"), &ps).unwrap();
        assert_eq!((p.name.as_str(), p.role), ("bob", Role::GlobalAdmin));
    }

    #[test]
    fn missing_wrong_or_unconfigured_fails_closed() {
        let ps = [principal("alice", "admin_agent", "t-alice")];
        assert!(matches!(authenticate(&HeaderMap::new(), &ps), Err(ApiError::Unauthenticated)));
        assert!(matches!(authenticate(&headers("Bearer nope"), &ps), Err(ApiError::Unauthenticated)));
        assert!(matches!(authenticate(&headers("Basic t-alice"), &ps), Err(ApiError::Unauthenticated)));
        assert!(matches!(authenticate(&headers("Bearer t-alice"), &[]), Err(ApiError::Unauthenticated)));
    }
}
