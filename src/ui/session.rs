//! Dashboard sessions (API.md §5.4): an admin token is presented once, at sign-in; from then on
//! the browser holds a random session id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure`
//! over TLS) that expires after 12 hours, and every state-changing form carries the session's
//! CSRF token.
//!
//! Concurrency and lifetime: sessions live in this node's memory, in a `DashMap` keyed by the
//! SHA-256 of the cookie (the id itself is kept nowhere, so a memory dump or a log line cannot
//! replay it). A restart ends every session cleanly — the next page asks to sign in again — and
//! on several nodes a session belongs to the node that started it (a load balancer in front of
//! the admin listeners needs sticky sessions). `POST /ui/logout` removes the entry, so the cookie
//! is dead on the server, not just deleted in the browser. Expired entries are swept when a new
//! session starts; the map is bounded because only a valid token can start one.

use crate::admin::auth::Principal;
use crate::secrets::random_bytes;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use dashmap::DashMap;
use http::HeaderMap;

/// The session cookie's name.
pub const COOKIE: &str = "kd_session";
/// The sign-in form's double-submit cookie (CSRF before there is a session).
pub const LOGIN_COOKIE: &str = "kd_login";
/// The remembered language.
pub const LANG_COOKIE: &str = "kd_lang";
/// How long a session lasts.
pub const LIFETIME: Duration = Duration::hours(12);
/// At most this many live sessions per node; beyond it the oldest are ended.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in person.
#[derive(Debug, Clone)]
pub struct Session {
    pub who: Principal,
    /// For a session signed in with a partner-issued customer token: the token's SHA-256, so
    /// that ending the token ends the session too (checked on every page).
    pub credential: Option<String>,
    pub csrf: String,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// This node's sessions.
#[derive(Default)]
pub struct Sessions {
    map: DashMap<[u8; 32], Session>,
}

fn key(cookie: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, cookie.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

/// A fresh random token for a cookie or a form: 32 bytes, URL-safe base64.
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

impl Sessions {
    /// Starts a session; returns the cookie value (shown to the browser only) and the session.
    pub fn start(&self, who: Principal, credential: Option<String>, now: DateTime<Utc>) -> (String, Session) {
        self.sweep(now);
        let cookie = random_token();
        let s = Session { who, credential, csrf: random_token(), started_at: now, expires_at: now + LIFETIME };
        self.map.insert(key(&cookie), s.clone());
        (cookie, s)
    }

    /// The live session a cookie names.
    pub fn get(&self, cookie: &str, now: DateTime<Utc>) -> Option<Session> {
        if cookie.len() > 64 {
            return None;
        }
        let k = key(cookie);
        let s = self.map.get(&k)?.clone();
        if s.expires_at <= now {
            self.map.remove(&k);
            return None;
        }
        Some(s)
    }

    /// Ends the session a cookie names (logout).
    pub fn end(&self, cookie: &str) {
        self.map.remove(&key(cookie));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn sweep(&self, now: DateTime<Utc>) {
        self.map.retain(|_, s| s.expires_at > now);
        if self.map.len() >= MAX_SESSIONS {
            let mut starts: Vec<([u8; 32], DateTime<Utc>)> =
                self.map.iter().map(|e| (*e.key(), e.started_at)).collect();
            starts.sort_by_key(|(_, t)| *t);
            for (k, _) in starts.iter().take(self.map.len() + 1 - MAX_SESSIONS) {
                self.map.remove(k);
            }
        }
    }
}

/// Equality of two tokens in constant time ([`crate::secrets::same_secret`]).
pub fn same_secret(a: &str, b: &str) -> bool {
    crate::secrets::same_secret(a.as_bytes(), b.as_bytes())
}

/// A cookie's value from the request's `Cookie` headers (RFC 6265 §5.4).
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v.trim_matches('"')))
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, `Path=/`, `Secure` when over TLS;
/// `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64, secure: bool, http_only: bool) -> String {
    let mut c = format!("{name}={value}; Path=/; Max-Age={max_age_secs}; SameSite=Strict");
    if http_only {
        c.push_str("; HttpOnly");
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::auth::Role;

    fn who() -> Principal {
        Principal { name: "ana".into(), role: Role::AdminAgent, tenant_id: None }
    }

    #[test]
    fn a_session_lives_twelve_hours_and_ends_at_logout() {
        let s = Sessions::default();
        let t0 = Utc::now();
        let (cookie, started) = s.start(who(), None, t0);
        assert_eq!(s.get(&cookie, t0 + Duration::hours(11)).map(|x| x.csrf), Some(started.csrf));
        assert!(s.get(&cookie, t0 + Duration::hours(12)).is_none(), "expired at 12 h");
        let (cookie, _) = s.start(who(), None, t0);
        s.end(&cookie);
        assert!(s.get(&cookie, t0).is_none(), "logout ends it on the server");
        assert!(s.get("not-a-session", t0).is_none());
    }

    #[test]
    fn cookies_are_found_among_others_rfc6265() {
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, "a=1; kd_session=abc; kd_lang=ko".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, LANG_COOKIE), Some("ko"));
        assert_eq!(cookie(&h, "missing"), None);
        let c = set_cookie(COOKIE, "v", 43200, true, true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
