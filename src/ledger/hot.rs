//! What the ledger keeps per order and per link in use: an order's [`Gate`] (its access state,
//! shared by its hot links and its downloads in flight) and a [`HotLink`] (the link's record, its
//! spent counter, and the fixed part of its download records, made once). Their counters change
//! only under the rules of [`crate::ledger`].

use crate::activity::{Entry, Kind};
use crate::requester::Requester;
use crate::store::embedded::budgets::Prepared;
use crate::store::embedded::index::{self, Tags};
use crate::store::{Access, LinkRecord};
use crate::token::LinkId;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// An order's access state, shared by all its hot links and downloads in flight.
#[derive(Debug)]
pub struct Gate {
    pub(super) access: AtomicU8,
    /// The commit order of the change that set `access`; older changes never overwrite newer.
    pub(super) version: Mutex<u64>,
    pub tenant_id: Option<String>,
    /// The ledger's "order states confirmed in time" (always true on the embedded backend).
    fresh: Arc<AtomicBool>,
}

impl Gate {
    pub(super) fn new(access: Access, tenant_id: Option<String>, version: u64, fresh: Arc<AtomicBool>) -> Gate {
        Gate { access: AtomicU8::new(access as u8), version: Mutex::new(version), tenant_id, fresh }
    }

    /// False while this node cannot confirm its order states (a shared database away): its
    /// downloads stop and new ones are refused, whatever the order's access.
    pub fn is_fresh(&self) -> bool {
        self.fresh.load(Ordering::Acquire)
    }

    pub fn access(&self) -> Access {
        match self.access.load(Ordering::Acquire) {
            0 => Access::Open,
            1 => Access::Suspended,
            _ => Access::Revoked,
        }
    }

    pub fn is_open(&self) -> bool {
        self.access() == Access::Open && self.is_fresh()
    }
}

/// A link in use.
#[derive(Debug)]
pub struct HotLink {
    pub id: LinkId,
    /// Where its counter lives on disk.
    pub(super) spent_key: crate::store::embedded::SpentKey,
    pub rec: LinkRecord,
    pub gate: Arc<Gate>,
    pub(super) spent: Mutex<u64>,
    /// Its download records' fixed part ([`crate::canonical::subject_part`]) and index tags
    /// (the kind's left 0), made once here rather than per download ([`crate::requester`]).
    subject: Box<[u8]>,
    tags: Tags,
}

impl HotLink {
    pub fn spent(&self) -> u64 {
        *self.spent.lock().expect("not poisoned")
    }

    /// `max_uses × unit` bytes.
    pub fn budget(&self) -> u64 {
        self.rec.budget()
    }

    /// The tenant its records name: the link's, else its order's.
    pub fn tenant_id(&self) -> Option<&str> {
        tenant_of(&self.rec, &self.gate)
    }

    /// Its download records' fixed part: `,"actor":…,"link_id":…`.
    pub fn subject(&self) -> &[u8] {
        &self.subject
    }

    pub(super) fn new(id: LinkId, rec: LinkRecord, gate: Arc<Gate>, spent: u64) -> HotLink {
        let tenant_id = tenant_of(&rec, &gate);
        let subject = crate::canonical::subject_part([
            Some(crate::requester::ACTOR),
            tenant_id,
            Some(&rec.order_id),
            Some(&rec.product_id),
            Some(&rec.file_id),
            Some(&rec.link_id),
        ]);
        let tags = index::tags(None, tenant_id, Some(&rec.order_id));
        HotLink {
            id,
            spent_key: crate::store::embedded::spent_key(&rec),
            rec,
            gate,
            spent: Mutex::new(spent),
            subject: subject.into_boxed_slice(),
            tags,
        }
    }

    /// One of its download records, ready for the writer.
    pub(super) fn prepared(&self, who: &Requester, kind: Kind, bytes: u64, outcome: &str) -> Prepared {
        let mut tags = self.tags;
        tags[0] = index::kind_tag(kind);
        Prepared::body(who.body(kind, self, Some(bytes), Some(outcome)), tags)
    }

    /// One of its download records as an entry (PostgreSQL's).
    pub(super) fn entry(&self, who: &Requester, kind: Kind, bytes: u64, outcome: &str) -> Entry {
        let mut e = who.entry(kind, self);
        e.bytes = Some(bytes);
        e.outcome = Some(outcome.to_owned());
        e
    }
}

/// The tenant a link's records name: the link's, else its order's.
fn tenant_of<'a>(rec: &'a LinkRecord, gate: &'a Gate) -> Option<&'a str> {
    rec.tenant_id.as_deref().or(gate.tenant_id.as_deref())
}
