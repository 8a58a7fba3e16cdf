//! Group commit on PostgreSQL: each node keeps one writer task; what waits when it is free
//! becomes one READ COMMITTED transaction ([`super::group_tx`]), and only after `COMMIT` does
//! any request of the group hear back — so no byte leaves for a reservation the database does not
//! hold.
//!
//! Locks are always taken links first (in id order), chain head last, so two nodes' groups — or
//! a group and an admin command — cannot deadlock. Up to [`IN_FLIGHT`] groups of one node commit
//! at once; a settlement is only ever sent after its reservation committed, so no group can
//! overtake what it depends on.
//!
//! If the transaction fails, every request waiting in it gets the error (a `503`: nothing was
//! served); settlements, which nobody waits for, are kept and tried again with the next group,
//! so a short outage loses no `download.finished` record and no refund.

use super::group_tx;
use crate::activity::Entry;
use crate::clock::Clock;
use crate::model::LinkRecord;
use crate::store::StoreError;
use tokio::sync::{mpsc, oneshot};

/// The most jobs one transaction takes.
pub const MAX_GROUP: usize = 4096;
/// Groups committing at once on one node.
pub const IN_FLIGHT: usize = 2;
/// Settlements kept for the next try while the database is away; beyond this the oldest are
/// dropped (their bytes stay spent: the safe side) with a warning.
const MAX_KEPT: usize = 100_000;

/// The answer to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Held, durably; `spent` is the link's spent bytes after it.
    Granted {
        spent: u64,
    },
    Exhausted,
}

pub enum Job {
    Reserve {
        link: [u8; 16],
        bytes: u64,
        started: Entry,
        reply: oneshot::Sender<Result<Admission, StoreError>>,
    },
    Settle {
        link: [u8; 16],
        refund: u64,
        finished: Entry,
    },
    Issue {
        rec: Box<LinkRecord>,
        issued: Entry,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Append {
        records: Vec<Entry>,
        reply: Option<oneshot::Sender<Result<(), StoreError>>>,
    },
    /// Answers once every job sent before it has committed (groups in flight commit in any
    /// order, so this waits for all of them).
    Flush {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

pub struct Writer {
    pub pool: deadpool_postgres::Pool,
    pub node: String,
    pub clock: Clock,
    pub stats: std::sync::Arc<crate::store::stats::WriterStats>,
}

impl Writer {
    /// Runs until every sender is gone. Up to [`IN_FLIGHT`] groups commit at once: the next
    /// group locks its links and prepares while the one before waits for its `COMMIT` (the chain
    /// head orders them; a settlement is only ever sent after its reservation committed, so no
    /// group can overtake what it depends on).
    pub async fn run(self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let me = std::sync::Arc::new(self);
        let mut kept: Vec<Job> = Vec::new();
        let mut running = tokio::task::JoinSet::new();
        loop {
            let mut group = std::mem::take(&mut kept);
            if group.is_empty() {
                tokio::select! {
                    j = rx.recv() => match j {
                        Some(j) => group.push(j),
                        None => break,
                    },
                    Some(done) = running.join_next(), if !running.is_empty() => {
                        kept = me.after(done).await;
                        continue;
                    }
                }
            }
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(j) => group.push(j),
                    Err(_) => break,
                }
            }
            // A flush ends the group: what came before it commits, then everything in flight.
            let flush_at = group.iter().position(|j| matches!(j, Job::Flush { .. }));
            let mut flush = None;
            if let Some(at) = flush_at {
                let rest = group.split_off(at + 1);
                if let Some(Job::Flush { reply }) = group.pop() {
                    flush = Some(reply);
                }
                kept = rest;
            }
            if let Some(reply) = flush {
                if !group.is_empty() {
                    let w = me.clone();
                    running.spawn(async move { w.commit_and_answer(group).await });
                }
                let mut again = Vec::new();
                while let Some(done) = running.join_next().await {
                    again.extend(done.unwrap_or_default());
                }
                let _ = reply.send(if again.is_empty() {
                    Ok(())
                } else {
                    Err(StoreError::DatabaseDown("earlier writes are waiting for the database".into()))
                });
                again.append(&mut kept);
                kept = again;
                continue;
            }
            while running.len() >= IN_FLIGHT {
                if let Some(done) = running.join_next().await {
                    group.extend(me.after(done).await);
                }
            }
            let w = me.clone();
            running.spawn(async move { w.commit_and_answer(group).await });
        }
        while let Some(done) = running.join_next().await {
            let _ = me.after(done).await;
        }
    }

    /// What a finished commit left to try again (nothing, unless it failed: then it waits a
    /// little, so as not to spin against a database that is away).
    async fn after(&self, done: Result<Vec<Job>, tokio::task::JoinError>) -> Vec<Job> {
        let mut kept = done.unwrap_or_default();
        if !kept.is_empty() {
            if kept.len() > MAX_KEPT {
                let drop = kept.len() - MAX_KEPT;
                tracing::warn!(dropped = drop, "settlements dropped while the database is away");
                kept.drain(..drop);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        kept
    }

    async fn commit_and_answer(&self, group: Vec<Job>) -> Vec<Job> {
        let began = std::time::Instant::now();
        match group_tx::commit(&self.pool, &group, &self.node, &self.clock).await {
            Ok(admissions) => {
                use std::sync::atomic::Ordering::Relaxed;
                self.stats.commits.fetch_add(1, Relaxed);
                self.stats.batches.fetch_add(group.len() as u64, Relaxed);
                self.stats.observe_commit(group.len(), began.elapsed());
                answer(group, admissions);
                Vec::new()
            }
            Err(e) => {
                self.stats.failed_commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %e, jobs = group.len(), "group commit failed");
                fail(group, &e)
            }
        }
    }
}

fn answer(group: Vec<Job>, admissions: Vec<Admission>) {
    let mut admissions = admissions.into_iter();
    for j in group {
        match j {
            Job::Reserve { reply, .. } => {
                let _ = reply.send(admissions.next().ok_or(StoreError::Bug("admissions".into())));
            }
            Job::Issue { reply, .. } => {
                let _ = reply.send(Ok(()));
            }
            Job::Append { reply: Some(reply), .. } => {
                let _ = reply.send(Ok(()));
            }
            Job::Settle { .. } | Job::Append { reply: None, .. } => {}
            Job::Flush { reply } => {
                let _ = reply.send(Ok(()));
            }
        }
    }
}

/// Fails every waiting job of a failed group; returns the settlements and unacknowledged records
/// to try again.
fn fail(group: Vec<Job>, e: &StoreError) -> Vec<Job> {
    let err =
        || if e.is_transient() { StoreError::DatabaseDown(e.to_string()) } else { StoreError::Bug(e.to_string()) };
    let mut kept = Vec::new();
    for j in group {
        match j {
            Job::Reserve { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Job::Issue { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Job::Append { reply: Some(reply), .. } => {
                let _ = reply.send(Err(err()));
            }
            Job::Flush { reply } => {
                let _ = reply.send(Err(err()));
            }
            j @ (Job::Settle { .. } | Job::Append { reply: None, .. }) => kept.push(j),
        }
    }
    kept
}
