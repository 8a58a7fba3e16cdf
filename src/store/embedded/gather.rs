//! How the writer gathers a group: what the channel carries, and when a group is complete.
//!
//! The writer blocks for the first message — or, with records gathered, only until they fall
//! due — then takes whatever else is already waiting, up to [`MAX_BATCH`] batches. A group nobody
//! waits for first lingers ([`LINGER`]) for a batch somebody does, so settlements share a
//! reservation's commit instead of paying a durable write of their own.
//!
//! Under load — the first take already held [`FILL_FROM`] batches or more — the writer then
//! sleeps [`FILL`] and takes what came meanwhile, once. A group's costs are mostly its own, not
//! its batches' (a durable journal write, a redb transaction, the writer's sleep and wake-ups
//! around both), so a group twice as large halves them per download; and while the writer
//! sleeps, a sender's message wakes nobody. A lone request (an idle server) is never held.

use super::writer::{Batch, Reply};
use std::sync::mpsc::{self, RecvTimeoutError};
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

/// Gathers the next group into `group` (empty on entry): waits for a first message, no longer
/// than `due` if given, then takes what else is waiting, then lets a group nobody waits for
/// [`linger`], or a group under load fill for `fill` (the writer passes [`FILL`]).
pub(super) fn gather(
    rx: &mpsc::Receiver<Msg>,
    due: Option<Instant>,
    group: &mut Vec<Batch>,
    fill: Duration,
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
        stopping = linger(rx, group, &mut force);
    } else if !stopping && !force && (FILL_FROM..MAX_BATCH).contains(&group.len()) {
        std::thread::sleep(fill);
        stopping = take_waiting(rx, group, &mut force);
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
/// refusal records — waits up to [`LINGER`] for a batch somebody does wait for (a reservation, an
/// admin command, a reader's publish) and rides along with its commit, instead of paying a
/// durable write of its own. Returns `true` if the writer was told to stop.
fn linger(rx: &mpsc::Receiver<Msg>, group: &mut Vec<Batch>, force: &mut bool) -> bool {
    let until = Instant::now() + LINGER;
    while group.len() < MAX_BATCH {
        let Ok(m) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) else {
            return false;
        };
        let awaited = !matches!(&m, Msg::Batch(b) if b.reply.is_none());
        if !join(m, group, force) {
            return true;
        }
        if awaited {
            // Whatever else came meanwhile goes too.
            return take_waiting(rx, group, force);
        }
    }
    false
}

/// How long a group of batches nobody waits for may wait for one somebody does (see `linger`):
/// what a refund or a `download.finished` record may lag on disk, a bound on what a crash in
/// that window can take (a refund lost leaves the link charged for the bytes not sent; the
/// download's `download.started` is durable before its first byte regardless).
pub const LINGER: Duration = Duration::from_millis(2);

/// How long a group under load fills before it is committed (see the module's notes).
pub const FILL: Duration = Duration::from_micros(300);

/// A first take of this many batches or more means load: the group fills for [`FILL`].
pub const FILL_FROM: usize = 4;

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

    /// Gathers with a long fill while another thread sends one more batch 50 ms in.
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
        assert!(matches!(gather(&rx, None, &mut group, Duration::from_millis(400)), Gathered::Group { .. }));
        late.join().unwrap();
        group.len()
    }

    #[test]
    fn a_group_under_load_fills_and_takes_what_came_meanwhile() {
        assert_eq!(gathered_with_one_late(FILL_FROM), FILL_FROM + 1);
    }

    #[test]
    fn a_group_below_the_load_mark_is_committed_at_once() {
        assert_eq!(gathered_with_one_late(1), 1, "a lone request is never held");
        assert_eq!(gathered_with_one_late(FILL_FROM - 1), FILL_FROM - 1);
    }
}
