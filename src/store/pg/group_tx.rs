//! One group's transaction, pipelined: the statements that do not wait on each other's answers
//! go out together, so a group costs three round trips to the database instead of seven, and the
//! chain head — the one row every node's groups queue for — is held for one round trip plus the
//! `COMMIT`, not three.
//!
//! ```text
//!   BEGIN + lock the links (SELECT … ORDER BY link_id FOR UPDATE)        → admission, in Rust
//!   UPDATE links (net changes) + INSERT new links + the head FOR UPDATE  → seal, in Rust
//!   INSERT activity + move the head + COMMIT                             → the replies
//! ```
//!
//! Locks are taken links first, head last, as everywhere ([`super::group`] explains why). The
//! statements of one round trip are sent in order on one connection (tokio-postgres pipelines
//! queries polled together), and PostgreSQL runs them in that order; if one fails, the ones
//! after it in the transaction fail too and `COMMIT` becomes a rollback, and the first error is
//! what the group reports. A connection that saw an error is never given back to the pool: it is
//! dropped, so no later group can find it inside a half-finished transaction.

use super::chain::{self, Bodies, Head};
use super::classify;
use super::group::{Admission, Job};
use crate::activity::Entry;
use crate::clock::Clock;
use crate::model::LinkRecord;
use crate::store::StoreError;
use std::collections::HashMap;

const LOCK_LINKS: &str = "SELECT link_id, spent, budget FROM links WHERE link_id = ANY($1) ORDER BY link_id FOR UPDATE";
const UPDATE_LINKS: &str =
    "UPDATE links l SET spent = l.spent + u.delta FROM unnest($1::bytea[], $2::int8[]) AS u(id, delta) \
     WHERE l.link_id = u.id AND (l.spent + u.delta <= l.budget OR u.delta < 0)";
const INSERT_LINKS: &str = "INSERT INTO links (link_id, order_id, record, budget) \
     SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::int8[])";

/// Commits `group` as one transaction on a connection from `pool`; returns each reservation's
/// admission, in order.
pub async fn commit(
    pool: &deadpool_postgres::Pool,
    group: &[Job],
    node: &str,
    clock: &Clock,
) -> Result<Vec<Admission>, StoreError> {
    let client = pool.get().await.map_err(|e| StoreError::DatabaseDown(e.to_string()))?;
    match run(&client, group, node, clock).await {
        Ok(a) => Ok(a),
        Err(e) => {
            // Never back to the pool: it may be inside the failed transaction.
            drop(deadpool_postgres::Object::take(client));
            Err(e)
        }
    }
}

async fn run(
    c: &deadpool_postgres::ClientWrapper,
    group: &[Job],
    node: &str,
    clock: &Clock,
) -> Result<Vec<Admission>, StoreError> {
    let prepare = |sql: &'static str| async move { c.prepare_cached(sql).await.map_err(classify) };

    // 1. BEGIN and lock the group's links, in id order.
    let mut ids: Vec<[u8; 16]> = group
        .iter()
        .filter_map(|j| match j {
            Job::Reserve { link, .. } | Job::Settle { link, .. } => Some(*link),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let lock = prepare(LOCK_LINKS).await?;
    let arr: Vec<&[u8]> = ids.iter().map(|i| &i[..]).collect();
    let (_, rows) = tokio::try_join!(async { c.batch_execute("BEGIN").await.map_err(classify) }, async {
        if arr.is_empty() {
            Ok(Vec::new())
        } else {
            c.query(&lock, &[&arr]).await.map_err(classify)
        }
    })?;
    let mut links: HashMap<[u8; 16], (i64, i64, i64)> = HashMap::new(); // spent, budget, delta
    for r in rows {
        let id: &[u8] = r.get(0);
        let id: [u8; 16] = id.try_into().map_err(|_| StoreError::Corrupt("link id length".into()))?;
        links.insert(id, (r.get(1), r.get(2), 0));
    }

    // 2. Admission in arrival order; then the links' net changes, the new links and the head.
    let (admissions, entries, new_links) = admit(group, &mut links);
    let changed: Vec<(&[u8], i64)> = links.iter().filter(|(_, v)| v.2 != 0).map(|(k, v)| (&k[..], v.2)).collect();
    let (cids, deltas): (Vec<&[u8]>, Vec<i64>) = changed.iter().copied().unzip();
    let new = NewLinks::of(&new_links)?;
    let bodies = Bodies::of(&entries, node);
    let (update, insert_links, head_sql) =
        tokio::try_join!(prepare(UPDATE_LINKS), prepare(INSERT_LINKS), prepare(chain::HEAD))?;
    let (updated, _, head) = tokio::try_join!(
        async {
            if cids.is_empty() {
                Ok(0)
            } else {
                c.execute(&update, &[&cids, &deltas]).await.map_err(classify)
            }
        },
        async {
            if new.ids.is_empty() {
                Ok(0)
            } else {
                c.execute(&insert_links, &[&new.ids, &new.orders, &new.recs, &new.budgets]).await.map_err(classify)
            }
        },
        async {
            if bodies.is_empty() {
                Ok(None)
            } else {
                c.query_one(&head_sql, &[]).await.map(Some).map_err(classify)
            }
        },
    )?;
    if updated != changed.len() as u64 {
        return Err(StoreError::Bug(format!("{updated} of {} locked links updated", changed.len())));
    }

    // 3. The records sealed after the head, the head moved, COMMIT.
    let Some(head) = head else {
        c.batch_execute("COMMIT").await.map_err(classify)?;
        return Ok(admissions);
    };
    let sealed = bodies.seal(Head::from_row(&head), clock.now_micros())?;
    let (insert, moved) = tokio::try_join!(prepare(chain::INSERT), prepare(chain::MOVE_HEAD))?;
    tokio::try_join!(
        async { c.execute(&insert, &sealed.insert_params()).await.map_err(classify) },
        async { c.execute(&moved, &sealed.head_params()).await.map_err(classify) },
        async { c.batch_execute("COMMIT").await.map_err(classify) },
    )?;
    Ok(admissions)
}

/// Admission decided on the locked values, request by request in arrival order (a group may hold
/// more requests for one link than fit: exactly the ones that fit are admitted); settlements
/// refund what their reservation held and did not send. Returns the admissions, the records to
/// chain and the links to create.
fn admit<'g>(
    group: &'g [Job],
    links: &mut HashMap<[u8; 16], (i64, i64, i64)>,
) -> (Vec<Admission>, Vec<&'g Entry>, Vec<&'g LinkRecord>) {
    let mut admissions = Vec::new();
    let mut entries = Vec::new();
    let mut new_links = Vec::new();
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
                new_links.push(&**rec);
                entries.push(issued);
            }
            Job::Append { records, .. } => entries.extend(records.iter()),
            Job::Flush { .. } => {}
        }
    }
    (admissions, entries, new_links)
}

/// The columns of [`INSERT_LINKS`].
struct NewLinks<'g> {
    ids: Vec<Vec<u8>>,
    orders: Vec<&'g str>,
    recs: Vec<String>,
    budgets: Vec<i64>,
}

impl<'g> NewLinks<'g> {
    fn of(recs: &[&'g LinkRecord]) -> Result<NewLinks<'g>, StoreError> {
        let mut n = NewLinks { ids: Vec::new(), orders: Vec::new(), recs: Vec::new(), budgets: Vec::new() };
        for rec in recs {
            n.ids.push(hex::decode(&rec.link_id).map_err(|_| StoreError::Bug("link id is not hex".into()))?);
            n.orders.push(rec.order_id.as_str());
            n.recs.push(serde_json::to_string(rec)?);
            n.budgets.push(i64::try_from(rec.budget()).unwrap_or(i64::MAX));
        }
        Ok(n)
    }
}
