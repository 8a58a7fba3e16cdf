//! Parse, then dispatch: a request's listener, method-independent path becomes an [`Endpoint`],
//! and every endpoint declares who may call it. Unknown paths are [`Endpoint::NotFound`]; the
//! admin API (added on the admin listener) fails closed: an endpoint without a declared caller
//! does not exist.

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    Healthz,
    /// `/d/{token}` or `/d/{token}/{anything}`; the trailing name is not checked.
    Download {
        token: &'a str,
    },
    NotFound,
}

impl Endpoint<'_> {
    pub fn caller(&self) -> Option<Caller> {
        match self {
            Endpoint::Healthz => Some(Caller::Anyone),
            Endpoint::Download { .. } => Some(Caller::LinkHolder),
            Endpoint::NotFound => None,
        }
    }

    /// A short, secret-free name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::Healthz => "healthz",
            Endpoint::Download { .. } => "download",
            Endpoint::NotFound => "not_found",
        }
    }
}

/// Maps a raw (still percent-encoded) request path to an endpoint.
pub fn route(listener: Listener, path: &str) -> Endpoint<'_> {
    if path == "/healthz" {
        return Endpoint::Healthz;
    }
    if listener == Listener::Public {
        if let Some(rest) = path.strip_prefix("/d/") {
            let token = rest.split_once('/').map_or(rest, |(t, _)| t);
            if !token.is_empty() {
                return Endpoint::Download { token };
            }
        }
    }
    Endpoint::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_paths_with_and_without_name() {
        assert_eq!(route(Listener::Public, "/d/abc"), Endpoint::Download { token: "abc" });
        assert_eq!(route(Listener::Public, "/d/abc/Win%20Server.iso"), Endpoint::Download { token: "abc" });
        assert_eq!(route(Listener::Public, "/d/abc/a/b"), Endpoint::Download { token: "abc" });
        assert_eq!(route(Listener::Public, "/d/"), Endpoint::NotFound);
        assert_eq!(route(Listener::Public, "/d"), Endpoint::NotFound);
    }

    #[test]
    fn downloads_are_public_only_and_health_is_everywhere() {
        assert_eq!(route(Listener::Admin, "/d/abc"), Endpoint::NotFound);
        assert_eq!(route(Listener::Admin, "/healthz"), Endpoint::Healthz);
        assert_eq!(route(Listener::Public, "/healthz"), Endpoint::Healthz);
        assert_eq!(Endpoint::NotFound.caller(), None);
    }
}
