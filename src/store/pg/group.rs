//! Group commit on PostgreSQL: each node keeps one writer task; what waits when it is free
//! becomes one READ COMMITTED transaction, and only after `COMMIT` does any request of the group
//! hear back — so no byte leaves for a reservation the database does not hold.
//!
//! One transaction, in this order (locks are always taken links first, chain head last, so two
//! nodes' groups — or a group and an admin command — cannot deadlock):
//! 1. `SELECT … FROM links WHERE link_id = ANY($ids) ORDER BY link_id FOR UPDATE`: the group's
//!    links locked in id order. The order of `UPDATE … FROM unnest(…)` itself is the plan's, so
//!    the sorted lock comes first;
//! 2. admission decided on the locked values, request by request in arrival order (a group may
//!    hold more requests for one link than fit: exactly the ones that fit are admitted), then one
//!    conditional `UPDATE links … FROM unnest($ids, $deltas) WHERE spent + delta <= budget`
//!    applies every link's net change (its row count is checked: a miss is a bug, and the whole
//!    transaction rolls back);
//! 3. the chain head `FOR UPDATE`, the group's records sealed after it (`at` never goes back,
//!    whatever the nodes' clocks say), one `INSERT … SELECT unnest(…)`, the head moved;
//! 4. `COMMIT`, then the replies.
//!
//! If the transaction fails, every request waiting in it gets the error (a `503`: nothing was
//! served); settlements, which nobody waits for, are kept and tried again with the next group,
//! so a short outage loses no `download.finished` record and no refund.

use super::{classify, format_at};
use crate::activity::{Entry, Record};
use crate::clock::Clock;
use crate::model::LinkRecord;
use crate::store::StoreError;
use std::collections::HashMap;
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
        match self.commit(&group).await {
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

    /// One transaction for the whole group; returns each reservation's admission, in order.
    async fn commit(&self, group: &[Job]) -> Result<Vec<Admission>, StoreError> {
        let mut client = self.pool.get().await.map_err(|e| StoreError::DatabaseDown(e.to_string()))?;
        let tx = client.transaction().await.map_err(classify)?;

        // 1. Lock the group's existing links in id order.
        let mut ids: Vec<[u8; 16]> = group
            .iter()
            .filter_map(|j| match j {
                Job::Reserve { link, .. } | Job::Settle { link, .. } => Some(*link),
                _ => None,
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut links: HashMap<[u8; 16], (i64, i64, i64)> = HashMap::new(); // spent, budget, delta
        if !ids.is_empty() {
            let arr: Vec<&[u8]> = ids.iter().map(|i| &i[..]).collect();
            let rows = tx
                .query(
                    &prepared(
                        &tx,
                        "SELECT link_id, spent, budget FROM links WHERE link_id = ANY($1) ORDER BY link_id FOR UPDATE",
                    )
                    .await?,
                    &[&arr],
                )
                .await
                .map_err(classify)?;
            for r in rows {
                let id: &[u8] = r.get(0);
                let id: [u8; 16] = id.try_into().map_err(|_| StoreError::Corrupt("link id length".into()))?;
                links.insert(id, (r.get(1), r.get(2), 0));
            }
        }

        // 2. Admission in arrival order, then one conditional update of the net changes.
        let mut admissions = Vec::new();
        let mut entries: Vec<&Entry> = Vec::new();
        let mut new_links: Vec<(&LinkRecord, u64)> = Vec::new();
        for j in group {
            match j {
                Job::Reserve { link, bytes, started, .. } => {
                    let bytes = i64::try_from(*bytes).unwrap_or(i64::MAX);
                    let a = match links.get_mut(link) {
                        Some((spent, budget, delta)) if spent.saturating_add(bytes) <= *budget => {
                            *spent += bytes;
                            *delta += bytes;
                            entries.push(started);
                            Admission::Granted { spent: *spent as u64 }
                        }
                        _ => Admission::Exhausted,
                    };
                    admissions.push(a);
                }
                Job::Settle { link, refund, finished } => {
                    if let Some((spent, _, delta)) = links.get_mut(link) {
                        let r = i64::try_from(*refund).unwrap_or(i64::MAX).min(*spent);
                        *spent -= r;
                        *delta -= r;
                    }
                    entries.push(finished);
                }
                Job::Issue { rec, issued, .. } => {
                    new_links.push((rec, rec.budget()));
                    entries.push(issued);
                }
                Job::Append { records, .. } => entries.extend(records.iter()),
                Job::Flush { .. } => {}
            }
        }
        let changed: Vec<(&[u8], i64)> = links.iter().filter(|(_, v)| v.2 != 0).map(|(k, v)| (&k[..], v.2)).collect();
        if !changed.is_empty() {
            let (cids, deltas): (Vec<&[u8]>, Vec<i64>) = changed.iter().copied().unzip();
            let n = tx
                .execute(
                    &prepared(&tx, "UPDATE links l SET spent = l.spent + u.delta FROM unnest($1::bytea[], $2::int8[]) AS u(id, delta) \
                     WHERE l.link_id = u.id AND (l.spent + u.delta <= l.budget OR u.delta < 0)").await?,
                    &[&cids, &deltas],
                )
                .await
                .map_err(classify)?;
            if n != changed.len() as u64 {
                return Err(StoreError::Bug(format!("{n} of {} locked links updated", changed.len())));
            }
        }
        if !new_links.is_empty() {
            let mut ids = Vec::new();
            let mut orders = Vec::new();
            let mut recs = Vec::new();
            let mut budgets = Vec::new();
            for (rec, budget) in &new_links {
                ids.push(hex::decode(&rec.link_id).map_err(|_| StoreError::Bug("link id is not hex".into()))?);
                orders.push(rec.order_id.as_str());
                recs.push(serde_json::to_string(rec)?);
                budgets.push(i64::try_from(*budget).unwrap_or(i64::MAX));
            }
            tx.execute(
                &prepared(
                    &tx,
                    "INSERT INTO links (link_id, order_id, record, budget) \
                 SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::int8[])",
                )
                .await?,
                &[&ids, &orders, &recs, &budgets],
            )
            .await
            .map_err(classify)?;
        }

        // 3. The records, chained after the head.
        if !entries.is_empty() {
            append(&tx, &entries, &self.node, self.clock.now_micros()).await?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(admissions)
    }
}

/// A statement prepared once per connection (the pool keeps its cache): one round trip per
/// statement instead of two.
async fn prepared(tx: &deadpool_postgres::Transaction<'_>, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
    tx.prepare_cached(sql).await.map_err(classify)
}

/// Appends `entries` to the one chain inside `tx`: takes the head `FOR UPDATE` (last of every
/// lock the transaction takes), seals each record after it, inserts them, moves the head.
pub async fn append(
    tx: &deadpool_postgres::Transaction<'_>,
    entries: &[&Entry],
    node: &str,
    now_us: u64,
) -> Result<u64, StoreError> {
    let head = tx
        .query_one(&prepared(tx, "SELECT seq, hash, at_us FROM chain_head WHERE id = 1 FOR UPDATE").await?, &[])
        .await
        .map_err(classify)?;
    let (mut seq, mut hash, head_at): (i64, String, i64) = (head.get(0), head.get(1), head.get(2));
    let at_us = (now_us as i64).max(head_at);
    let at = format_at(at_us as u64);
    let n = entries.len();
    let (mut seqs, mut kinds, mut tenants, mut orders, mut jsons) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for e in entries {
        seq += 1;
        let mut e = (*e).clone();
        e.node = Some(node.to_owned());
        let (json, h) = Record::seal_json(&e, seq as u64, &at, &hash);
        hash = h;
        seqs.push(seq);
        kinds.push(e.kind.name());
        tenants.push(e.tenant_id);
        orders.push(e.order_id);
        jsons.push(String::from_utf8(json).map_err(|e| StoreError::Bug(e.to_string()))?);
    }
    tx.execute(
        &prepared(tx, "INSERT INTO activity (seq, at_us, kind, tenant_id, order_id, node, json) \
         SELECT s, $2, k, t, o, $3, j FROM unnest($1::int8[], $4::text[], $5::text[], $6::text[], $7::text[]) AS u(s, k, t, o, j)").await?,
        &[&seqs, &at_us, &node, &kinds, &tenants, &orders, &jsons],
    )
    .await
    .map_err(classify)?;
    tx.execute(
        &prepared(tx, "UPDATE chain_head SET seq = $1, hash = $2, at_us = $3 WHERE id = 1").await?,
        &[&seq, &hash, &at_us],
    )
    .await
    .map_err(classify)?;
    Ok(seq as u64)
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
