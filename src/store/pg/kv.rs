//! The admin entities on PostgreSQL: one `kv (tbl, key, value)` table holding the same keys and
//! JSON values as the embedded backend's key/value tables (so `move-store` copies rows as they
//! are), read and written inside a command's transaction. A command that must not race another
//! node reads its rows `FOR UPDATE`; the key pool is taken `FOR UPDATE SKIP LOCKED`, so two nodes
//! buying at once take different keys instead of waiting on each other.

use super::classify;
use crate::store::StoreError;
use serde::{de::DeserializeOwned, Serialize};
use tokio_postgres::GenericClient;

/// How a read locks what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    None,
    /// Held until the transaction ends: nobody else changes these rows meanwhile.
    Update,
    /// Locked rows are passed over (another node is taking them).
    SkipLocked,
}

impl Lock {
    fn sql(self) -> &'static str {
        match self {
            Lock::None => "",
            Lock::Update => " FOR UPDATE",
            Lock::SkipLocked => " FOR UPDATE SKIP LOCKED",
        }
    }
}

/// The first key after every key that starts with `prefix` (UTF-8 never contains 0xFF).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    end.push(0xFF);
    end
}

pub async fn get_raw(c: &impl GenericClient, tbl: &str, key: &str, lock: Lock) -> Result<Option<Vec<u8>>, StoreError> {
    let sql = format!("SELECT value FROM kv WHERE tbl = $1 AND key = $2{}", lock.sql());
    let row = c.query_opt(&sql, &[&tbl, &key.as_bytes()]).await.map_err(classify)?;
    Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
}

pub async fn get_json<T: DeserializeOwned>(
    c: &impl GenericClient,
    tbl: &str,
    key: &str,
    lock: Lock,
) -> Result<Option<T>, StoreError> {
    Ok(get_raw(c, tbl, key, lock).await?.map(|v| serde_json::from_slice(&v)).transpose()?)
}

pub async fn put_raw(c: &impl GenericClient, tbl: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO kv (tbl, key, value) VALUES ($1, $2, $3) ON CONFLICT (tbl, key) DO UPDATE SET value = EXCLUDED.value",
        &[&tbl, &key.as_bytes(), &value],
    )
    .await
    .map_err(classify)?;
    Ok(())
}

pub async fn put_json<T: Serialize + Sync>(
    c: &impl GenericClient,
    tbl: &str,
    key: &str,
    v: &T,
) -> Result<(), StoreError> {
    put_raw(c, tbl, key, &serde_json::to_vec(v)?).await
}

/// Inserts unless the key exists; `false` if it did.
pub async fn insert_new(c: &impl GenericClient, tbl: &str, key: &str, value: &[u8]) -> Result<bool, StoreError> {
    let n = c
        .execute(
            "INSERT INTO kv (tbl, key, value) VALUES ($1, $2, $3) ON CONFLICT (tbl, key) DO NOTHING",
            &[&tbl, &key.as_bytes(), &value],
        )
        .await
        .map_err(classify)?;
    Ok(n == 1)
}

pub async fn remove(c: &impl GenericClient, tbl: &str, key: &str) -> Result<(), StoreError> {
    c.execute("DELETE FROM kv WHERE tbl = $1 AND key = $2", &[&tbl, &key.as_bytes()]).await.map_err(classify)?;
    Ok(())
}

/// Up to `limit` `(key, value)` pairs whose key starts with `prefix`, in key order.
pub async fn scan_prefix(
    c: &impl GenericClient,
    tbl: &str,
    prefix: &str,
    limit: usize,
    lock: Lock,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let sql = format!(
        "SELECT key, value FROM kv WHERE tbl = $1 AND key >= $2 AND key < $3 ORDER BY key LIMIT $4{}",
        lock.sql()
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = c.query(&sql, &[&tbl, &prefix.as_bytes(), &prefix_end(prefix), &limit]).await.map_err(classify)?;
    rows.iter()
        .map(|r| {
            let k: Vec<u8> = r.get(0);
            let k = String::from_utf8(k).map_err(|_| StoreError::Corrupt(format!("{tbl}: key is not UTF-8")))?;
            Ok((k, r.get(1)))
        })
        .collect()
}

/// How many keys start with `prefix`.
pub async fn count_prefix(c: &impl GenericClient, tbl: &str, prefix: &str) -> Result<usize, StoreError> {
    let row = c
        .query_one(
            "SELECT count(*) FROM kv WHERE tbl = $1 AND key >= $2 AND key < $3",
            &[&tbl, &prefix.as_bytes(), &prefix_end(prefix)],
        )
        .await
        .map_err(classify)?;
    Ok(row.get::<_, i64>(0) as usize)
}
