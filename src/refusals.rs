//! Refusal records, coalesced (API.md §5.2): a correctly signed link that is refused — expired,
//! exhausted, revoked, suspended — is recorded at most once per second per link and refusal code,
//! as one `download.refused` record whose `count` says how many refusals it stands for.
//!
//! Without this, one signed link is a key to the log: every refusal was a record, so a flood of
//! requests on an expired link grew `data_dir` by gigabytes an hour. Now the log grows by at most
//! one record per second per (link, code), whatever the request rate.
//!
//! How the counts stay exact: each (link, code) has a window. The first refusal after a quiet
//! second is recorded at once (with every refusal held since the last record counted in); later
//! ones within the second are only counted, and the first of them is kept as the record's
//! representative (its address, user agent, range). A flusher ([`Coalescer::due`], called by the
//! server about every 250 ms) records what is held once its second has passed, and at shutdown
//! [`Coalescer::drain`] records the rest — so the counts add up to every refusal served. A window
//! with nothing held is forgotten after two seconds, so memory follows the links refused lately.
//! (A `kill -9` loses what was held, at most about a second's worth per link: refusal records may
//! lag, like every record that guards no byte.) Pure: `now` is passed in.

use crate::activity::Entry;
use crate::token::LinkId;
use dashmap::mapref::entry::Entry as Slot;
use dashmap::DashMap;
use std::time::{Duration, Instant};

/// The shortest time between two records of one (link, code).
pub const EVERY: Duration = Duration::from_secs(1);

struct Window {
    /// When this (link, code) was last recorded.
    written_at: Instant,
    /// Refusals served since then and not yet recorded.
    held: u64,
    /// The first of them, which the next record describes.
    first: Option<Entry>,
}

/// The windows of the links refused lately.
#[derive(Default)]
pub struct Coalescer {
    windows: DashMap<(LinkId, &'static str), Window>,
}

impl Coalescer {
    /// One refusal of `link` with `code`: the entry to record now (its `count` set), or `None` when
    /// it is held for the window's record. `entry` is only built when it is needed.
    pub fn refused(
        &self,
        link: LinkId,
        code: &'static str,
        now: Instant,
        entry: impl FnOnce() -> Entry,
    ) -> Option<Entry> {
        match self.windows.entry((link, code)) {
            Slot::Vacant(v) => {
                v.insert(Window { written_at: now, held: 0, first: None });
                Some(counted(entry(), 1))
            }
            Slot::Occupied(mut o) => {
                let w = o.get_mut();
                if now.saturating_duration_since(w.written_at) >= EVERY {
                    let e = w.first.take().unwrap_or_else(entry);
                    let n = std::mem::take(&mut w.held) + 1;
                    w.written_at = now;
                    Some(counted(e, n))
                } else {
                    w.held += 1;
                    if w.first.is_none() {
                        w.first = Some(entry());
                    }
                    None
                }
            }
        }
    }

    /// The records whose second has passed; forgets windows quiet for two seconds.
    pub fn due(&self, now: Instant) -> Vec<Entry> {
        let mut out = Vec::new();
        self.windows.retain(|_, w| {
            let quiet = now.saturating_duration_since(w.written_at);
            if w.held > 0 && quiet >= EVERY {
                out.extend(w.first.take().map(|e| counted(e, std::mem::take(&mut w.held))));
                w.written_at = now;
                return true;
            }
            w.held > 0 || quiet < 2 * EVERY
        });
        out
    }

    /// Every record still held, whatever its window (at shutdown).
    pub fn drain(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        self.windows.retain(|_, w| {
            out.extend(w.first.take().map(|e| counted(e, std::mem::take(&mut w.held))));
            false
        });
        out
    }

    /// Windows kept in memory.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

fn counted(mut e: Entry, n: u64) -> Entry {
    e.count = Some(n);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::Kind;

    fn entry(ip: &str) -> Entry {
        let mut e = Entry::new(Kind::DownloadRefused);
        e.ip = Some(ip.into());
        e
    }

    fn total(entries: &[Entry]) -> u64 {
        entries.iter().map(|e| e.count.unwrap()).sum()
    }

    #[test]
    fn the_first_refusal_is_recorded_at_once_and_the_rest_of_its_second_is_held() {
        let c = Coalescer::default();
        let t0 = Instant::now();
        let first = c.refused([1; 16], "exhausted", t0, || entry("a")).unwrap();
        assert_eq!(first.count, Some(1));
        for i in 1..1000u64 {
            let at = t0 + Duration::from_micros(i * 900);
            assert!(c.refused([1; 16], "exhausted", at, || entry("b")).is_none(), "held within the second");
        }
        assert!(c.due(t0 + Duration::from_millis(999)).is_empty(), "not before its second has passed");
        let due = c.due(t0 + EVERY);
        assert_eq!((due.len(), due[0].count, due[0].ip.as_deref()), (1, Some(999), Some("b")));
    }

    #[test]
    fn links_and_codes_have_windows_of_their_own() {
        let c = Coalescer::default();
        let t0 = Instant::now();
        assert!(c.refused([1; 16], "exhausted", t0, || entry("a")).is_some());
        assert!(c.refused([1; 16], "expired", t0, || entry("a")).is_some());
        assert!(c.refused([2; 16], "exhausted", t0, || entry("a")).is_some());
        assert!(c.refused([1; 16], "exhausted", t0, || entry("a")).is_none());
    }

    #[test]
    fn counts_add_up_to_every_refusal_at_most_one_record_per_second() {
        let c = Coalescer::default();
        let t0 = Instant::now();
        let (mut records, mut served) = (Vec::new(), 0u64);
        // 10 s of refusals every 3 ms, the flusher every 250 ms.
        for ms in 0..10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            if ms % 3 == 0 {
                served += 1;
                records.extend(c.refused([7; 16], "expired", now, || entry("x")));
            }
            if ms % 250 == 0 {
                records.extend(c.due(now));
            }
        }
        records.extend(c.drain());
        assert_eq!(total(&records), served);
        assert!(records.len() <= 11, "{} records in 10 s", records.len());
        assert!(c.is_empty());
    }

    #[test]
    fn quiet_windows_are_forgotten_and_a_later_refusal_is_recorded_at_once() {
        let c = Coalescer::default();
        let t0 = Instant::now();
        c.refused([3; 16], "revoked", t0, || entry("a"));
        assert!(c.due(t0 + Duration::from_millis(1500)).is_empty());
        assert_eq!(c.len(), 1);
        assert!(c.due(t0 + 2 * EVERY).is_empty());
        assert_eq!(c.len(), 0, "forgotten");
        let again = c.refused([3; 16], "revoked", t0 + 3 * EVERY, || entry("a")).unwrap();
        assert_eq!(again.count, Some(1));
    }
}
