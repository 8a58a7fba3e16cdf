//! `keydrop verify-log`: recomputes the activity log's hash chain offline (the server must not
//! be running on the same data dir: redb allows one writer process).

use crate::activity::{ChainVerifier, Record};
use crate::store::{scan_activity_offline, Store, StoreError};
use std::path::{Path, PathBuf};

/// Why a verification could not run at all (a broken chain is a [`Report`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no database at {0}")]
    NoDatabase(PathBuf),
    #[error("cannot read the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot read {path}: {source}")]
    Mirror { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
}

/// The result of a full check.
#[derive(Debug)]
pub struct Report {
    pub records: u64,
    pub last_hash: String,
    /// `None` when intact; otherwise the first bad record and why.
    pub first_bad: Option<(u64, String)>,
}

/// Feeds records to a verifier, stopping at the first bad one.
fn checker<'a>(
    v: &'a mut ChainVerifier,
    first_bad: &'a mut Option<(u64, String)>,
) -> impl FnMut(Result<Record, String>) -> bool + 'a {
    move |r| {
        let checked = match r {
            Ok(rec) => v.push(&rec).map_err(|e| (e.seq, e.reason)),
            Err(msg) => Err((v.count() + 1, msg)),
        };
        match checked {
            Ok(()) => true,
            Err(bad) => {
                *first_bad = Some(bad);
                false
            }
        }
    }
}

/// Verifies a live store's chain (`GET /api/activity/verify`).
pub async fn verify_store(store: &Store) -> Result<Report, VerifyError> {
    let mut v = ChainVerifier::default();
    let mut first_bad = None;
    store.scan_activity(checker(&mut v, &mut first_bad)).await?;
    Ok(Report { records: v.count(), last_hash: v.last_hash().to_owned(), first_bad })
}

/// Verifies the chain in a shared PostgreSQL database (any node, server running or not).
pub async fn verify_postgres(config: &crate::config::Config) -> Result<Report, VerifyError> {
    let url = config.storage.postgres_url().unwrap_or_default();
    let opts = crate::store::pg::PgOptions::new(&url, &config.storage.node_id());
    let store = Store::Postgres(crate::store::pg::PgStore::open(&opts, Default::default()).await?);
    let report = verify_store(&store).await;
    store.close().await;
    report
}

/// `keydrop rotate-link-key` on a shared database: the next key, sealed under the KEK.
pub async fn rotate_link_key_postgres(config: &crate::config::Config) -> Result<u32, String> {
    let kek_path = config.storage.kek_file.clone().ok_or("kek_file is required with postgres")?;
    let kek = std::fs::read(&kek_path).map_err(|e| format!("{}: {e}", kek_path.display()))?;
    if kek.len() != 32 {
        return Err(format!("{}: a KEK is 32 bytes", kek_path.display()));
    }
    let opts =
        crate::store::pg::PgOptions::new(&config.storage.postgres_url().unwrap_or_default(), &config.storage.node_id());
    let store = crate::store::pg::PgStore::open(&opts, Default::default()).await.map_err(|e| e.to_string())?;
    let id = store.add_link_key(&crate::keys::Sealer::new(&kek)).await.map_err(|e| e.to_string());
    store.close().await;
    id
}

/// `keydrop move-store`: the stopped embedded node of `config` into the empty database at `to`,
/// then the chain verified there. Returns a summary for the operator.
pub async fn move_store(config: &crate::config::Config, to: &str) -> Result<String, VerifyError> {
    let data_dir = &config.storage.data_dir;
    if !data_dir.join("keydrop.redb").exists() {
        return Err(VerifyError::NoDatabase(data_dir.join("keydrop.redb")));
    }
    let kek_path = config.storage.kek_file.clone().unwrap_or_else(|| data_dir.join("kek.key"));
    let kek = std::fs::read(&kek_path).map_err(|source| VerifyError::File { path: kek_path.clone(), source })?;
    let sealer = crate::keys::Sealer::new(&kek);
    let link_keys = crate::secrets::load_link_keys(data_dir)
        .map_err(|source| VerifyError::File { path: data_dir.clone(), source })?;
    let src = crate::store::Embedded::open(data_dir)?;
    let opts = crate::store::pg::PgOptions::new(to, &config.storage.node_id());
    let dst = crate::store::pg::PgStore::open(&opts, Default::default()).await?;
    let moved = dst.import(&src, &sealer, &link_keys).await;
    src.close().await;
    let moved = moved?;
    let store = Store::Postgres(dst);
    let report = verify_store(&store).await?;
    store.close().await;
    Ok(format!(
        "moved {} rows, {} links, {} order states, {} activity records; chain {} ({} records, last hash {}); \
         point every node's kek_file at {}",
        moved.rows,
        moved.links,
        moved.gates,
        moved.records,
        if report.first_bad.is_none() { "intact" } else { "BROKEN" },
        report.records,
        report.last_hash,
        kek_path.display()
    ))
}

/// Verifies a JSON Lines mirror on its own (its chain) and against the store's records:
/// every line must be the stored record with the same `seq`, byte for byte.
pub fn verify_mirror(path: &Path, stored: impl Fn(u64) -> Option<Vec<u8>>) -> Result<Report, VerifyError> {
    Ok(verify_mirror_text(&read_mirror(path)?, stored))
}

/// The mirror's bytes, read once: a running server reads them before it makes the store's
/// records visible up to now, so every line read has its stored record to compare with.
pub fn read_mirror(path: &Path) -> Result<Vec<u8>, VerifyError> {
    std::fs::read(path).map_err(|source| VerifyError::Mirror { path: path.to_owned(), source })
}

/// [`verify_mirror`] of bytes already read.
pub fn verify_mirror_text(text: &[u8], stored: impl Fn(u64) -> Option<Vec<u8>>) -> Report {
    let mut v = ChainVerifier::default();
    let mut first_bad = None;
    for (i, line) in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        let expected_seq = i as u64 + 1;
        let rec: Record = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => {
                first_bad = Some((expected_seq, format!("mirror line {} is not a record: {e}", i + 1)));
                break;
            }
        };
        if let Err(e) = v.push(&rec) {
            first_bad = Some((e.seq, format!("mirror: {}", e.reason)));
            break;
        }
        if stored(rec.seq).as_deref() != Some(line) {
            first_bad = Some((rec.seq, "mirror line differs from the stored record".into()));
            break;
        }
    }
    Report { records: v.count(), last_hash: v.last_hash().to_owned(), first_bad }
}

/// Verifies `data_dir/keydrop.redb`'s chain from the first record to the last.
pub fn verify_data_dir(data_dir: &Path) -> Result<Report, VerifyError> {
    let path = data_dir.join("keydrop.redb");
    if !path.exists() {
        return Err(VerifyError::NoDatabase(path));
    }
    let mut v = ChainVerifier::default();
    let mut first_bad = None;
    scan_activity_offline(&path, checker(&mut v, &mut first_bad))?;
    Ok(Report { records: v.count(), last_hash: v.last_hash().to_owned(), first_bad })
}

/// Verifies the JSON Lines mirror of an offline data dir against its database.
pub fn verify_mirror_offline(data_dir: &Path, mirror: &Path) -> Result<Report, VerifyError> {
    let mut stored = std::collections::HashMap::new();
    scan_activity_offline(&data_dir.join("keydrop.redb"), |r| {
        if let Ok(r) = r {
            stored.insert(r.seq, serde_json::to_vec(&r).unwrap_or_default());
        }
        true
    })?;
    verify_mirror(mirror, |seq| stored.get(&seq).cloned())
}
