//! Link budgets in memory: "does this reservation fit?" is one atomic step per link.
//!
//! The dashmap caches, per link issued here or used since start, a [`HotLink`]: its record, its
//! spent bytes (durable reservations, plus reservations in flight, minus refunds not yet durable)
//! and a handle on its order's [`Gate`]. Entries are made when a link is issued here (nothing
//! spent yet) or loaded from the store on first use. The invariant that keeps memory and disk
//! honest (see [`crate::store`] for the writer's side):
//!
//! * a counter changes only under its link's mutex, and the matching op is sent to the writer in
//!   the same critical section, so disk applies the same deltas in the same order;
//! * a reservation is admitted in memory *before* it is made durable, and the response waits for
//!   durability before its first byte — so disk never promises bytes memory did not count;
//! * a refund is applied in memory first and made durable later (or lost in a crash, which leaves
//!   the bytes spent: never over budget);
//! * after a failed commit the store's epoch moves: the cache is dropped, the writer is flushed,
//!   and entries are reloaded from disk, which is the truth.
//!
//! Orders' gates (open / suspended / revoked) are cached the same way. Closing a gate is durable
//! first and then flips the in-memory flag, so the next request after the admin call returns is
//! refused; it also bumps a watch counter that every connection listens to, so downloads already
//! streaming on that order are cut off at once (see [`crate::server`]).

use crate::activity::{Entry, Kind};
use crate::metrics::LedgerMetrics;
use crate::requester::Requester;
use crate::store::pg::Admission;
use crate::store::{Access, GateSink, LinkRecord, OrderGate, Store, StoreError};

use crate::token::LinkId;
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// The hasher of the maps every download looks up (links and gates here, served files in
/// [`crate::catalog`]): foldhash, seeded per map, instead of the default SipHash, whose strength
/// is against keys an attacker picks. None of these are: a link is looked up only after its
/// token's signature checks, and order, product and file ids come from the admin API.
pub type Fast = foldhash::fast::RandomState;

mod hot;
pub use hot::{Gate, HotLink};

/// How a download ended, for its `download.finished` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    Aborted,
    Revoked,
    Suspended,
    ReadError,
    /// Cut because the node could no longer confirm order states (API.md §5.3).
    Unavailable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Aborted => "aborted",
            Outcome::Revoked => "revoked",
            Outcome::Suspended => "suspended",
            Outcome::ReadError => "read_error",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// Bytes of a link's budget held for one response, durable since [`Ledger::reserve`] returned.
/// [`Reservation::finish`] — or dropping it, which counts as nothing sent — settles it exactly
/// once: the bytes not sent go back to the budget and the `download.finished` record is queued.
pub struct Reservation {
    ledger: Arc<Ledger>,
    link: Arc<HotLink>,
    reserved: u64,
    /// False for a `GET` of an empty file, which costs its one unit whatever happens.
    refundable: bool,
    /// Who the `download.finished` record names; taken when it is made.
    requester: Option<Requester>,
}

impl Reservation {
    /// A reservation for a zero-byte file: nothing to hand back, whatever is sent.
    pub fn no_refund(mut self) -> Reservation {
        self.refundable = false;
        self
    }

    /// Settles with `sent` bytes delivered and how the response ended.
    pub fn finish(mut self, sent: u64, outcome: Outcome) {
        self.settle(sent, outcome);
    }

    fn settle(&mut self, sent: u64, outcome: Outcome) {
        let Some(who) = self.requester.take() else { return };
        let sent = sent.min(self.reserved);
        let refund = if self.refundable { self.reserved - sent } else { 0 };
        tracing::debug!(link_id = %self.link.rec.link_id, sent, refund, outcome = outcome.as_str(), "download ended");
        self.ledger.settle(&self.link, refund, &who, sent, outcome.as_str());
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.settle(0, Outcome::Aborted);
    }
}

impl GateSink for Ledger {
    fn gate_committed(&self, order_id: &str, gate: &OrderGate, version: u64) {
        self.gate_changed(order_id, gate, version);
    }

    fn freshness(&self, fresh: bool) {
        self.fresh.store(fresh, Ordering::Release);
        if !fresh {
            // Every download in flight re-checks its gate, which now reads "not fresh".
            self.revocations.send_modify(|n| *n += 1);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("budget exhausted")]
    Exhausted,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outcome a `download.started` record states.
const RESERVED: &str = "reserved";

/// Hot links kept before idle ones are evicted.
pub const MAX_HOT_LINKS: usize = 100_000;

pub struct Ledger {
    store: Arc<Store>,
    links: DashMap<LinkId, Arc<HotLink>, Fast>,
    max_hot: usize,
    gates: DashMap<String, Arc<Gate>, Fast>,
    /// The store epoch this cache was loaded under.
    epoch: AtomicU64,
    revocations: watch::Sender<u64>,
    /// Order states confirmed in time (see [`Gate::is_fresh`]); shared by every gate.
    fresh: Arc<AtomicBool>,
    /// Reservations, refunds and downloads in flight, exported at `/metrics`.
    pub metrics: LedgerMetrics,
}

impl Ledger {
    pub fn new(store: Arc<Store>) -> Ledger {
        Ledger::with_capacity(store, MAX_HOT_LINKS)
    }

    /// A ledger that keeps at most about `max_hot` links in memory. When it grows past that, the
    /// entries nobody holds are dropped: a request awaiting its reservation, or a body streaming,
    /// holds its entry's `Arc`, so an entry with no other holder has no reservation in flight and
    /// memory equals disk (except refunds still queued, which a reload sees as spent: the safe side).
    pub fn with_capacity(store: Arc<Store>, max_hot: usize) -> Ledger {
        let epoch = AtomicU64::new(store.epoch());
        Ledger {
            store,
            links: DashMap::with_hasher(Fast::default()),
            max_hot,
            gates: DashMap::with_hasher(Fast::default()),
            epoch,
            revocations: watch::channel(0).0,
            fresh: Arc::new(AtomicBool::new(true)),
            metrics: LedgerMetrics::default(),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A receiver that changes whenever some order's gate closes.
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// Drops the caches if a commit failed since they were loaded, after letting the writer
    /// apply everything already queued (so a reload cannot miss an in-flight reservation).
    async fn revalidate(&self) -> Result<(), StoreError> {
        let current = self.store.epoch();
        if self.epoch.load(Ordering::Acquire) != current {
            self.store.flush().await?;
            self.links.clear();
            self.gates.clear();
            self.epoch.store(current, Ordering::Release);
        }
        Ok(())
    }

    /// The hot entry for a link, loading it from the store on first use; `None` if unknown.
    pub async fn link(&self, id: &LinkId) -> Result<Option<Arc<HotLink>>, StoreError> {
        self.revalidate().await?;
        if let Some(l) = self.links.get(id) {
            return Ok(Some(l.clone()));
        }
        let Some((rec, spent)) = self.store.link(id).await? else {
            return Ok(None);
        };
        let gate = self.gate(&rec.order_id, rec.tenant_id.clone()).await?;
        Ok(Some(self.cache(*id, rec, gate, spent)))
    }

    /// Caches a link's entry unless one is there already (two loaders may race: the first insert
    /// wins and both use it), then evicts idle entries if the cache has grown past its bound.
    fn cache(&self, id: LinkId, rec: LinkRecord, gate: Arc<Gate>, spent: u64) -> Arc<HotLink> {
        let hot = Arc::new(HotLink::new(id, rec, gate, spent));
        let hot = self.links.entry(id).or_insert(hot).clone();
        if self.links.len() > self.max_hot {
            self.links.retain(|_, v| Arc::strong_count(v) > 1);
        }
        hot
    }

    /// The gate of an order (open if the store has none).
    pub async fn gate(&self, order_id: &str, tenant_id: Option<String>) -> Result<Arc<Gate>, StoreError> {
        if let Some(g) = self.gates.get(order_id) {
            return Ok(g.clone());
        }
        let fresh = self.fresh.clone();
        let gate = match self.store.gate(order_id).await? {
            Some((g, version)) => Gate::new(g.access, g.tenant_id.or(tenant_id), version, fresh),
            None => Gate::new(Access::Open, tenant_id, 0, fresh),
        };
        // A change applied meanwhile is in the map already, and wins.
        Ok(self.gates.entry(order_id.to_owned()).or_insert(Arc::new(gate)).clone())
    }

    /// Reserves `cost` bytes of a link's budget together with its `download.started` record
    /// (promising `bytes`, naming `who`), and returns once both are durable. Refused with
    /// [`ReserveError::Exhausted`] if it does not fit. The [`Reservation`] settles when it is
    /// finished or dropped: what was not sent goes back to the budget and `download.finished`
    /// (made only once the reservation holds, so a refusal costs no second record) is recorded
    /// with the bytes sent and the outcome.
    pub async fn reserve(
        self: &Arc<Self>,
        link: &Arc<HotLink>,
        cost: u64,
        bytes: u64,
        who: Requester,
    ) -> Result<Reservation, ReserveError> {
        self.admit(link, cost, bytes, &who).await?;
        Ok(Reservation {
            ledger: self.clone(),
            link: link.clone(),
            reserved: cost,
            refundable: true,
            requester: Some(who),
        })
    }

    async fn admit(&self, link: &Arc<HotLink>, cost: u64, bytes: u64, who: &Requester) -> Result<(), ReserveError> {
        let store = match &*self.store {
            Store::Embedded(s) => s,
            Store::Postgres(pg) => {
                // Admission is the database's: the group's conditional update decides.
                let started = link.entry(who, Kind::DownloadStarted, bytes, RESERVED);
                return match pg.reserve(link.id, cost, started).await? {
                    Admission::Granted { spent } => {
                        *link.spent.lock().expect("not poisoned") = spent;
                        self.metrics.reservations.inc();
                        self.metrics.reserved_bytes.inc_by(cost);
                        self.metrics.in_flight.inc();
                        Ok(())
                    }
                    Admission::Exhausted => Err(ReserveError::Exhausted),
                };
            }
        };
        // Serialized before the lock, not under it.
        let started = link.prepared(who, Kind::DownloadStarted, bytes, RESERVED);
        let sent = std::time::Instant::now();
        let pending = {
            let mut spent = link.spent.lock().expect("not poisoned");
            if spent.saturating_add(cost) > link.budget() {
                return Err(ReserveError::Exhausted);
            }
            let durable = store.send_reservation(link.spent_key, cost, started)?;
            *spent += cost;
            durable
        };
        let durable = pending.wait().await;
        self.metrics.reserve_wait.observe(sent.elapsed().as_secs_f64());
        match durable {
            Ok(()) => {
                self.metrics.reservations.inc();
                self.metrics.reserved_bytes.inc_by(cost);
                self.metrics.in_flight.inc();
                Ok(())
            }
            Err(e) => {
                // Not durable: give the bytes back in memory (the epoch bump reloads the cache).
                let mut spent = link.spent.lock().expect("not poisoned");
                *spent = spent.saturating_sub(cost);
                Err(e.into())
            }
        }
    }

    /// Hands back `refund` unsent bytes and queues the `download.finished` record of `sent`
    /// bytes. Does not wait.
    fn settle(&self, link: &HotLink, refund: u64, who: &Requester, sent: u64, outcome: &str) {
        self.metrics.in_flight.dec();
        if refund > 0 {
            self.metrics.refunds.inc();
            self.metrics.refunded_bytes.inc_by(refund);
        }
        let store = match &*self.store {
            Store::Embedded(s) => s,
            Store::Postgres(pg) => {
                let finished = link.entry(who, Kind::DownloadFinished, sent, outcome);
                if let Err(e) = pg.settle(link.id, refund, finished) {
                    tracing::warn!(error = %e, "settle after the writer stopped; the bytes stay spent");
                }
                return;
            }
        };
        let finished = link.prepared(who, Kind::DownloadFinished, sent, outcome);
        let mut spent = link.spent.lock().expect("not poisoned");
        if let Err(e) = store.send_settlement(link.spent_key, refund, finished) {
            tracing::warn!(error = %e, "settle after the writer stopped; the bytes stay spent");
            return;
        }
        *spent = spent.saturating_sub(refund);
    }

    /// Registers a freshly issued link (durably, with its `link.issued` record), and caches it:
    /// a link is usually downloaded soon after it is issued, and its first download then does
    /// not read it back. Nothing is spent on it yet — nobody holds its token before this returns —
    /// so its counter starts at zero; an entry already there (not possible without the token)
    /// would win. A commit failing meanwhile moves the store's epoch and the next lookup drops the
    /// cache, this entry with it.
    pub async fn put_link(&self, id: LinkId, rec: LinkRecord, issued: Entry) -> Result<(), StoreError> {
        self.store.issue_link(rec.clone(), issued).await?;
        // The link is issued; caching it is a head start only, so an order gate that cannot be
        // read now leaves it to be loaded on first use.
        if let Ok(gate) = self.gate(&rec.order_id, rec.tenant_id.clone()).await {
            self.cache(id, rec, gate, 0);
        }
        Ok(())
    }

    /// Sets an order's access durably (with its activity record); memory follows on commit
    /// (`GateSink`). Closing a gate notifies every connection so in-flight downloads of that
    /// order stop at once.
    pub async fn set_access(&self, order_id: &str, gate: OrderGate, record: Option<Entry>) -> Result<(), StoreError> {
        self.store.set_gate(order_id, gate, record).await
    }

    /// Applies a committed gate change to memory, unless a newer change got there first. A
    /// gate not cached yet is cached as the change says (it is the newest state there is).
    fn gate_changed(&self, order_id: &str, gate: &OrderGate, version: u64) {
        let g = self
            .gates
            .entry(order_id.to_owned())
            .or_insert_with(|| Arc::new(Gate::new(gate.access, gate.tenant_id.clone(), 0, self.fresh.clone())))
            .clone();
        {
            let mut v = g.version.lock().expect("not poisoned");
            if *v > version {
                return;
            }
            *v = version;
            g.access.store(gate.access as u8, Ordering::Release);
        }
        if gate.access != Access::Open {
            self.revocations.send_modify(|n| *n += 1);
        }
    }

    /// Are order states confirmed fresh enough to serve? (See [`Gate::is_fresh`].)
    pub fn is_fresh(&self) -> bool {
        self.fresh.load(Ordering::Acquire)
    }

    /// Registers `ledger` with its store, so committed gate changes reach it (`GateSink`).
    pub fn listen(ledger: &Arc<Ledger>) {
        let weak: std::sync::Weak<Ledger> = Arc::downgrade(ledger);
        ledger.store.on_gate_change(weak);
    }

    /// A link's spent bytes as the store holds them now: the counter in memory on the embedded
    /// backend (it is the truth there), a read of the shared database otherwise (other nodes
    /// spend too).
    pub async fn spent(&self, link: &HotLink) -> Result<u64, StoreError> {
        match &*self.store {
            Store::Embedded(_) => Ok(link.spent()),
            Store::Postgres(pg) => Ok(pg.link(&link.id).await?.map_or(0, |(_, spent)| spent)),
        }
    }

    /// Number of links cached.
    pub fn hot_links(&self) -> usize {
        self.links.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u8) -> LinkRecord {
        LinkRecord {
            link_id: hex::encode([i; 16]),
            order_id: "o".into(),
            tenant_id: None,
            product_id: "p".into(),
            file_id: "f".into(),
            key_id: 1,
            issued_at: 0,
            expires_at: i64::MAX,
            max_uses: 2,
            unit: 100,
        }
    }

    #[tokio::test]
    async fn idle_links_are_evicted_and_reload_with_their_spending() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::Embedded(crate::store::Embedded::open(dir.path()).unwrap()));
        let ledger = Arc::new(Ledger::with_capacity(store.clone(), 4));
        for i in 0..10u8 {
            ledger.put_link([i; 16], record(i), Entry::new(Kind::LinkIssued)).await.unwrap();
        }
        let held = ledger.link(&[0; 16]).await.unwrap().unwrap();
        let who = || Requester::new(std::net::Ipv4Addr::LOCALHOST.into(), &http::HeaderMap::new(), None);
        let mut open = vec![ledger.reserve(&held, 150, 150, who()).await.unwrap()];
        for i in 1..10u8 {
            let l = ledger.link(&[i; 16]).await.unwrap().unwrap();
            // Finished in full: nothing handed back, and the entry is no longer held.
            ledger.reserve(&l, 100, 100, who()).await.unwrap().finish(100, Outcome::Complete);
        }
        assert!(ledger.hot_links() <= 5, "bounded: {}", ledger.hot_links());
        // Issuing caches the new link with nothing spent; its budget holds as a loaded one's does.
        ledger.put_link([42; 16], record(42), Entry::new(Kind::LinkIssued)).await.unwrap();
        let fresh = ledger.link(&[42; 16]).await.unwrap().unwrap();
        assert_eq!(fresh.spent(), 0);
        assert!(matches!(ledger.reserve(&fresh, 201, 201, who()).await, Err(ReserveError::Exhausted)));
        ledger.reserve(&fresh, 200, 200, who()).await.unwrap().finish(200, Outcome::Complete);
        assert!(matches!(ledger.reserve(&fresh, 1, 1, who()).await, Err(ReserveError::Exhausted)));
        // The held entry was never evicted; an evicted one reloads with its durable spending.
        assert!(Arc::ptr_eq(&held, &ledger.link(&[0; 16]).await.unwrap().unwrap()));
        let again = ledger.link(&[1; 16]).await.unwrap().unwrap();
        assert_eq!(again.spent(), 100);
        assert!(matches!(ledger.reserve(&again, 101, 101, who()).await, Err(ReserveError::Exhausted)));
        open.push(ledger.reserve(&again, 100, 100, who()).await.unwrap());
        // Dropping a reservation unfinished hands its bytes back.
        drop(open);
        store.flush().await.unwrap();
        assert_eq!((held.spent(), again.spent()), (0, 100));
        store.close().await;
    }

    #[tokio::test]
    async fn an_issued_link_is_hot_before_its_first_download() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::Embedded(crate::store::Embedded::open(dir.path()).unwrap()));
        let ledger = Arc::new(Ledger::new(store.clone()));
        ledger.put_link([9; 16], record(9), Entry::new(Kind::LinkIssued)).await.unwrap();
        assert_eq!(ledger.hot_links(), 1, "cached when issued, not when first downloaded");
        let hot = ledger.link(&[9; 16]).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&hot, &ledger.link(&[9; 16]).await.unwrap().unwrap()));
        assert_eq!(ledger.hot_links(), 1);
        store.close().await;
    }
}
