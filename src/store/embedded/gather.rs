//! How the writer gathers a group: what the channel carries, and when a group is complete.
//!
//! The writer blocks for the first message — or, with records gathered, only until they fall
//! due — then takes whatever else is already waiting, up to [`MAX_BATCH`] batches. A group nobody
//! waits for first lingers ([`LINGER`]) for a batch somebody does, so settlements share a
//! reservation's commit instead of paying a durable write of their own.

use super::writer::{Batch, Reply};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;

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
/// [`linger`].
pub(super) fn gather(rx: &mpsc::Receiver<Msg>, due: Option<Instant>, group: &mut Vec<Batch>) -> Gathered {
    let first = match due {
        None => rx.recv().ok(),
        Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => return Gathered::Due,
            Err(RecvTimeoutError::Disconnected) => None,
        },
    };
    let mut force = false;
    let mut stopping = !first.is_some_and(|m| join(m, group, &mut force));
    while !stopping && group.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(m) => stopping = !join(m, group, &mut force),
            Err(_) => break,
        }
    }
    if !stopping && !force && group.iter().all(|b| b.reply.is_none()) {
        stopping = linger(rx, group, &mut force);
    }
    Gathered::Group { force, stopping }
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
            return false;
        }
    }
    false
}

/// How long a group of batches nobody waits for may wait for one somebody does (see `linger`):
/// what a refund or a `download.finished` record may lag on disk, a bound on what a crash in
/// that window can take (a refund lost leaves the link charged for the bytes not sent; the
/// download's `download.started` is durable before its first byte regardless).
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

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
