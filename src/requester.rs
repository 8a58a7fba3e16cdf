//! Who asked for a download, as the download's activity records name them.
//!
//! Every download makes two records, `download.started` and `download.finished`, and both name
//! the same link and the same requester. Built as [`Entry`]s, they cost sixteen strings a
//! download, copied out of the link and the request and freed again once serialized. On the
//! embedded backend the records are written as their canonical bodies instead: the link's part
//! once, when the link is cached ([`crate::ledger::HotLink`]), the requester's part from this
//! struct, which borrows the `User-Agent` header's bytes rather than copying them
//! ([`crate::canonical::download_body`]; the same bytes as the entry's, which its tests check).
//! PostgreSQL's records, and refusal records, are still made as entries, from the same values.

use crate::activity::{Entry, Kind};
use crate::ledger::HotLink;
use http::{header, HeaderMap, HeaderValue};
use std::borrow::Cow;
use std::net::IpAddr;

/// The requester's side of a download's records.
pub struct Requester {
    ip: String,
    user_agent: Option<HeaderValue>,
    /// The range served, as `bytes=first-last`, if not the whole file.
    range: Option<String>,
}

impl Requester {
    pub fn new(peer: IpAddr, headers: &HeaderMap, range: Option<String>) -> Requester {
        Requester { ip: ip_text(peer), user_agent: headers.get(header::USER_AGENT).cloned(), range }
    }

    /// The `User-Agent` as recorded: its bytes read as UTF-8 (invalid sequences replaced), at
    /// most 512 characters. One of at most 512 bytes has no more, and is taken whole.
    fn user_agent(&self) -> Option<Cow<'_, str>> {
        self.user_agent.as_ref().map(|v| {
            let s = String::from_utf8_lossy(v.as_bytes());
            if s.len() <= 512 {
                s
            } else {
                Cow::Owned(s.chars().take(512).collect())
            }
        })
    }

    /// This requester's record of `kind` on `link` as an entry (no `bytes`, no `outcome`).
    pub fn entry(&self, kind: Kind, link: &HotLink) -> Entry {
        let mut e = Entry::new(kind);
        e.actor = Some(ACTOR.into());
        e.tenant_id = link.tenant_id().map(str::to_owned);
        e.order_id = Some(link.rec.order_id.clone());
        e.product_id = Some(link.rec.product_id.clone());
        e.file_id = Some(link.rec.file_id.clone());
        e.link_id = Some(link.rec.link_id.clone());
        e.ip = Some(self.ip.clone());
        e.user_agent = self.user_agent().map(Cow::into_owned);
        e.range.clone_from(&self.range);
        e
    }

    /// The canonical body of this requester's record of `kind` on `link`: what
    /// [`Entry::body`] makes of [`Requester::entry`] with `bytes` and `outcome` set.
    pub fn body(&self, kind: Kind, link: &HotLink, bytes: Option<u64>, outcome: Option<&str>) -> Vec<u8> {
        let ua = self.user_agent();
        let requester = [Some(self.ip.as_str()), ua.as_deref(), self.range.as_deref()];
        crate::canonical::download_body(kind, link.subject(), requester, bytes, outcome)
    }
}

/// The actor of a download's records.
pub const ACTOR: &str = "customer";

/// An address as `IpAddr`'s `Display` writes it; an IPv4 address (the usual peer) without the
/// formatting machinery, which costs more than the rest of the record's strings together.
pub fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut s = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(itoa::Buffer::new().format(octet));
            }
            s
        }
        IpAddr::V6(v6) => v6.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::ip_text;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn an_address_reads_as_its_display_form() {
        for v4 in [0u32, 1, 0x7f00_0001, 0x0a00_00ff, 0xc0a8_6401, 0x0102_0304, 0xffff_ffff] {
            let ip = IpAddr::V4(Ipv4Addr::from(v4));
            assert_eq!(ip_text(ip), ip.to_string());
        }
        for v6 in [Ipv6Addr::LOCALHOST, "2001:db8::1".parse().unwrap(), "::ffff:10.0.0.1".parse().unwrap()] {
            assert_eq!(ip_text(IpAddr::V6(v6)), v6.to_string());
        }
    }
}
