//! The one activity chain on PostgreSQL: every node's records in one `activity` table, one
//! gap-free `seq`, one `prev_hash` chain, ordered by a single `chain_head` row that each writing
//! transaction takes `FOR UPDATE` — the last lock it takes, so the head is held for as short a
//! time as possible and never while waiting for another lock.
//!
//! Sealing is split so the work done while the head is held is only hashing: [`Bodies::of`]
//! serializes the records (each with this node's name) before the head is asked for, and
//! [`Bodies::seal`] chains them after the head once it arrives. `at` never goes back, whatever
//! the nodes' clocks say: a record is never dated before the head it follows.

use super::{classify, format_at};
use crate::activity::{Entry, Record};
use crate::store::StoreError;

/// The head, locked: the last lock any writing transaction takes.
pub const HEAD: &str = "SELECT seq, hash, at_us FROM chain_head WHERE id = 1 FOR UPDATE";
/// The sealed records, as one statement.
pub const INSERT: &str = "INSERT INTO activity (seq, at_us, kind, tenant_id, order_id, node, json) \
     SELECT s, $2, k, t, o, $3, j FROM unnest($1::int8[], $4::text[], $5::text[], $6::text[], $7::text[]) AS u(s, k, t, o, j)";
/// The head moved past them.
pub const MOVE_HEAD: &str = "UPDATE chain_head SET seq = $1, hash = $2, at_us = $3 WHERE id = 1";

/// Where the chain ends: the last record's `seq`, `hash` and time.
pub struct Head {
    pub seq: i64,
    pub hash: String,
    pub at_us: i64,
}

impl Head {
    pub fn from_row(row: &tokio_postgres::Row) -> Head {
        Head { seq: row.get(0), hash: row.get(1), at_us: row.get(2) }
    }
}

/// Records serialized for the chain, not yet sealed: what can be done before the head is held.
pub struct Bodies {
    kinds: Vec<&'static str>,
    tenants: Vec<Option<String>>,
    orders: Vec<Option<String>>,
    bodies: Vec<Vec<u8>>,
    node: String,
}

/// Records sealed after a head: the columns of [`INSERT`] and the head that follows them.
pub struct Sealed {
    pub seqs: Vec<i64>,
    pub kinds: Vec<&'static str>,
    pub tenants: Vec<Option<String>>,
    pub orders: Vec<Option<String>>,
    pub jsons: Vec<String>,
    pub node: String,
    pub head: Head,
}

impl Sealed {
    /// The parameters of [`INSERT`], in order.
    pub fn insert_params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 7] {
        [&self.seqs, &self.head.at_us, &self.node, &self.kinds, &self.tenants, &self.orders, &self.jsons]
    }

    /// The parameters of [`MOVE_HEAD`], in order.
    pub fn head_params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 3] {
        [&self.head.seq, &self.head.hash, &self.head.at_us]
    }
}

impl Bodies {
    pub fn of(entries: &[&Entry], node: &str) -> Bodies {
        let n = entries.len();
        let mut b = Bodies {
            kinds: Vec::with_capacity(n),
            tenants: Vec::with_capacity(n),
            orders: Vec::with_capacity(n),
            bodies: Vec::with_capacity(n),
            node: node.to_owned(),
        };
        for e in entries {
            let mut e = (*e).clone();
            e.node = Some(node.to_owned());
            b.bodies.push(e.body());
            b.kinds.push(e.kind.name());
            b.tenants.push(e.tenant_id);
            b.orders.push(e.order_id);
        }
        b
    }

    pub fn is_empty(&self) -> bool {
        self.bodies.is_empty()
    }

    /// Chains the records after `head`, dated `now_us` or the head's time if that is later.
    pub fn seal(self, head: Head, now_us: u64) -> Result<Sealed, StoreError> {
        let at_us = (now_us as i64).max(head.at_us);
        let at = format_at(at_us as u64);
        let (mut seq, mut hash) = (head.seq, head.hash);
        let mut seqs = Vec::with_capacity(self.bodies.len());
        let mut jsons = Vec::with_capacity(self.bodies.len());
        for body in &self.bodies {
            seq += 1;
            let (json, h) = Record::seal_body(body, seq as u64, &at, &hash);
            hash = h;
            seqs.push(seq);
            jsons.push(String::from_utf8(json).map_err(|e| StoreError::Bug(e.to_string()))?);
        }
        Ok(Sealed {
            seqs,
            kinds: self.kinds,
            tenants: self.tenants,
            orders: self.orders,
            jsons,
            node: self.node,
            head: Head { seq, hash, at_us },
        })
    }
}

/// Appends `entries` to the chain inside `tx`, one statement after another (the admin commands'
/// way; the download path's group commit pipelines the same statements): takes the head, seals
/// the records after it, inserts them, moves the head. Returns the last `seq`.
pub async fn append(
    tx: &deadpool_postgres::Transaction<'_>,
    entries: &[&Entry],
    node: &str,
    now_us: u64,
) -> Result<u64, StoreError> {
    let bodies = Bodies::of(entries, node);
    let head = tx.query_one(&tx.prepare_cached(HEAD).await.map_err(classify)?, &[]).await.map_err(classify)?;
    let sealed = bodies.seal(Head::from_row(&head), now_us)?;
    let insert = tx.prepare_cached(INSERT).await.map_err(classify)?;
    tx.execute(&insert, &sealed.insert_params()).await.map_err(classify)?;
    let moved = tx.prepare_cached(MOVE_HEAD).await.map_err(classify)?;
    tx.execute(&moved, &sealed.head_params()).await.map_err(classify)?;
    Ok(sealed.head.seq as u64)
}
