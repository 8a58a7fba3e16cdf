//! How the writer gathers a group: what the channel carries, and when a group is complete.
//!
//! The writer blocks for the first message — or, with records gathered, only until they fall
//! due — then takes whatever else is already waiting, up to [`MAX_BATCH`] batches. A group nobody
//! waits for first lingers ([`LINGER`]) for a batch somebody does, so settlements share a
//! reservation's commit instead of paying a durable write of their own.
//!
//! A lingering writer is not woken by every settlement that comes: it parks until the linger
//! ends, and only a sender of a batch somebody waits for (or of a reader's publish, or of the
//! stop) rings its [`Doorbell`]. At 1 MiB a download's settlement comes on its own, between
//! reservations, and each used to cost a futex wake-up on the worker and a switch on the writer.
//!
//! A group somebody waits for is never held: it is sealed at once with whatever was waiting.
//! (Until the eighteenth session a group under load first slept 100 µs — 300 before — to grow,
//! because each group paid a durable write of its own on the writer's thread. Now frames are
//! written on another thread, which takes every frame sealed meanwhile in one write
//! ([`super::flusher`]), so the groups that queue behind a write share it without waiting for a
//! fill.)

use super::writer::{Batch, Reply};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::{Duration, Instant};

/// The most batches one transaction takes.
pub const MAX_BATCH: usize = 4096;

/// What the writer's channel carries.
pub(super) enum Msg {
    Batch(Batch),
    /// Publish the records sealed so far (see [`super::pending`]), then answer.
    Publish(Reply),
    /// Finish what came before, then exit the thread (dropping the database handle).
    Stop,
}

/// What [`gather`] came back with.
pub(super) enum Gathered {
    /// A group to commit (perhaps empty if the writer is stopping). `force`: a reader asked for
    /// the gathered records to be published; `stopping`: the writer was told to stop (or every
    /// sender is gone) after this group.
    Group { force: bool, stopping: bool },
    /// Nothing came before the gathered records fell due.
    Due,
}

/// How the sender of a message somebody waits for wakes a lingering writer (see [`linger`]).
/// The sender sends first, then rings; the writer marks itself lingering, then looks at the
/// channel, then parks — each side's second step after a full fence, so either the writer
/// sees the message or the sender sees the mark and unparks it (a park token is never lost).
#[derive(Default)]
pub(super) struct Doorbell {
    lingering: AtomicBool,
    writer: OnceLock<Thread>,
}

impl Doorbell {
    /// Names the writer's thread (called on it, once, before it gathers).
    pub(super) fn answer_here(&self) {
        let _ = self.writer.set(std::thread::current());
    }

    /// Wakes the writer if it lingers. Call after sending an awaited message.
    pub(super) fn ring(&self) {
        fence(Ordering::SeqCst);
        if self.lingering.load(Ordering::Relaxed) {
            if let Some(t) = self.writer.get() {
                t.unpark();
            }
        }
    }
}

/// Gathers the next group into `group` (empty on entry): waits for a first message, no longer
/// than `due` if given, then takes what else is waiting, then lets a group nobody waits for
/// [`linger`] for `lingers` (the writer passes [`LINGER`]).
pub(super) fn gather(
    rx: &mpsc::Receiver<Msg>,
    bell: &Doorbell,
    due: Option<Instant>,
    group: &mut Vec<Batch>,
    lingers: Duration,
) -> Gathered {
    let first = match due {
        None => rx.recv().ok(),
        Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => return Gathered::Due,
            Err(RecvTimeoutError::Disconnected) => None,
        },
    };
    let mut force = false;
    let mut stopping = !first.is_some_and(|m| join(m, group, &mut force)) || take_waiting(rx, group, &mut force);
    if !stopping && !force && group.iter().all(|b| b.reply.is_none()) {
        stopping = linger(rx, bell, group, &mut force, lingers);
    }
    Gathered::Group { force, stopping }
}

/// Takes what is already waiting, up to [`MAX_BATCH`] batches in the group. Returns `true` if the
/// writer was told to stop.
fn take_waiting(rx: &mpsc::Receiver<Msg>, group: &mut Vec<Batch>, force: &mut bool) -> bool {
    while group.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(m) => {
                if !join(m, group, force) {
                    return true;
                }
            }
            Err(_) => break,
        }
    }
    false
}

/// A group nobody waits for — settlements (a refund and a `download.finished` record) and
/// refusal records — waits up to `lingers` ([`LINGER`]) for a batch somebody does wait for (a
/// reservation, an admin command, a reader's publish) and rides along with its commit, instead
/// of paying a durable write of its own. Meanwhile the writer takes what comes whenever it wakes
/// and parks in between: more settlements do not wake it, a [`Doorbell`] ring does. Returns
/// `true` if the writer was told to stop.
fn linger(
    rx: &mpsc::Receiver<Msg>,
    bell: &Doorbell,
    group: &mut Vec<Batch>,
    force: &mut bool,
    lingers: Duration,
) -> bool {
    let until = Instant::now() + lingers;
    bell.lingering.store(true, Ordering::Relaxed);
    fence(Ordering::SeqCst);
    let stopping = loop {
        if take_waiting(rx, group, force) {
            break true;
        }
        // A reader's publish joins with a reply slot too.
        let awaited = group.iter().any(|b| b.reply.is_some());
        let now = Instant::now();
        if awaited || group.len() >= MAX_BATCH || now >= until {
            break false;
        }
        std::thread::park_timeout(until - now);
    };
    bell.lingering.store(false, Ordering::Relaxed);
    stopping
}

/// How long a group of batches nobody waits for may wait for one somebody does (see `linger`):
/// what a refund or a `download.finished` record may lag on disk, a bound on what a crash in
/// that window can take (a refund lost leaves the link charged for the bytes not sent; the
/// download's `download.started` is durable before its first byte regardless).
pub const LINGER: Duration = Duration::from_millis(2);

/// Adds a message to the group: a reader's publish joins as a batch without ops and makes the
/// group publish (`force`). `false` for [`Msg::Stop`].
fn join(m: Msg, group: &mut Vec<Batch>, force: &mut bool) -> bool {
    match m {
        Msg::Batch(b) => group.push(b),
        Msg::Publish(r) => {
            *force = true;
            group.push(Batch { ops: Vec::new(), reply: Some(r) });
        }
        Msg::Stop => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(tx: &mpsc::Sender<Msg>) {
        let (reply, _) = tokio::sync::oneshot::channel();
        tx.send(Msg::Batch(Batch { ops: Vec::new(), reply: Some(reply) })).unwrap();
    }

    /// Gathers `queued` waiting batches while another thread sends one more 50 ms in.
    fn gathered_with_one_late(queued: usize) -> usize {
        let (tx, rx) = mpsc::channel();
        for _ in 0..queued {
            batch(&tx);
        }
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            batch(&tx);
        });
        let mut group = Vec::new();
        assert!(matches!(gather(&rx, &Doorbell::default(), None, &mut group, LINGER), Gathered::Group { .. }));
        late.join().unwrap();
        group.len()
    }

    #[test]
    fn a_group_somebody_waits_for_is_sealed_at_once_with_what_was_waiting() {
        assert_eq!(gathered_with_one_late(1), 1, "a lone request is never held");
        assert_eq!(gathered_with_one_late(40), 40, "nor is a group under load");
        assert_eq!(gathered_with_one_late(MAX_BATCH + 3), MAX_BATCH, "at most MAX_BATCH in one group");
    }

    fn settlement(tx: &mpsc::Sender<Msg>) {
        tx.send(Msg::Batch(Batch { ops: Vec::new(), reply: None })).unwrap();
    }

    /// A writer lingering for `lingers` on a first settlement, in its own thread, as the real
    /// writer does; `then` sends more from this thread. The group's size and how long the
    /// gather took.
    fn lingered(lingers: Duration, then: impl FnOnce(&mpsc::Sender<Msg>, &Doorbell)) -> (usize, Duration) {
        let (tx, rx) = mpsc::channel();
        let bell = std::sync::Arc::new(Doorbell::default());
        let (ready_tx, ready) = mpsc::channel();
        let writer_bell = bell.clone();
        let writer = std::thread::spawn(move || {
            writer_bell.answer_here();
            ready_tx.send(()).unwrap();
            let mut group = Vec::new();
            let started = Instant::now();
            let g = gather(&rx, &writer_bell, None, &mut group, lingers);
            assert!(matches!(g, Gathered::Group { stopping: false, .. }));
            (group.len(), started.elapsed())
        });
        ready.recv().unwrap();
        settlement(&tx);
        then(&tx, &bell);
        writer.join().unwrap()
    }

    #[test]
    fn a_ring_wakes_a_lingering_writer_long_before_its_linger_ends() {
        let (n, took) = lingered(Duration::from_secs(30), |tx, bell| {
            std::thread::sleep(Duration::from_millis(20));
            settlement(tx);
            batch(tx);
            bell.ring();
        });
        assert_eq!(n, 3, "the settlements ride along with the awaited batch");
        assert!(took < Duration::from_secs(15), "woken by the ring, not by the linger's end: {took:?}");
    }

    #[test]
    fn more_settlements_do_not_end_a_linger_and_go_with_its_group() {
        let lingers = Duration::from_millis(300);
        let (n, took) = lingered(lingers, |tx, _| {
            for _ in 0..5 {
                std::thread::sleep(Duration::from_millis(10));
                settlement(tx);
            }
        });
        assert_eq!(n, 6);
        assert!(took >= lingers, "a group nobody waits for waits out its linger: {took:?}");
    }
}
