//! On a shared database a node serves bytes its operator put on its own disk, not the bytes the
//! attach hashed (that may have run on another node): before a node serves a file, the file must
//! hash to the catalog's SHA-256. Hashing a multi-GB file is expensive, and any holder of a link
//! can ask for it, so each file is hashed **once**: concurrent first requests wait for that one
//! hash instead of starting their own, and the verdict — match or mismatch — is kept. It is
//! recomputed only when the file's size or mtime changes (an operator fixing a mismatched copy
//! needs no restart). At start a node checks every attached file in the background
//! ([`crate::catalog::Catalog::verify_all`]), so a wrong copy is in the log before anyone asks.

use dashmap::DashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What one hash found, and for which version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Verdict {
    len: u64,
    mtime_ns: i128,
    matches: bool,
}

/// One verdict per `(product_id, file_id)`, each behind its own lock (the single flight).
#[derive(Default)]
pub struct DigestChecks {
    verdicts: DashMap<(String, String), Arc<tokio::sync::Mutex<Option<Verdict>>>>,
}

fn stamp(path: &Path) -> Option<(u64, i128)> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta.modified().ok()?;
    let ns = match mtime.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    Some((meta.len(), ns))
}

impl DigestChecks {
    /// Whether the file at `path` hashes to `want` (lowercase hex SHA-256).
    pub async fn matches(&self, product_id: &str, file_id: &str, path: PathBuf, want: &str) -> bool {
        let slot = self.verdicts.entry((product_id.to_owned(), file_id.to_owned())).or_default().clone();
        let mut verdict = slot.lock().await;
        let Some((len, mtime_ns)) = stamp(&path) else {
            return false;
        };
        if let Some(v) = *verdict {
            if v.len == len && v.mtime_ns == mtime_ns {
                return v.matches;
            }
        }
        let got = tokio::task::spawn_blocking(move || crate::catalog::sha256_of(&path).ok()).await.ok().flatten();
        let matches = got.as_deref() == Some(want);
        *verdict = Some(Verdict { len, mtime_ns, matches });
        matches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
    }

    #[tokio::test]
    async fn a_file_is_hashed_once_and_again_only_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.bin");
        std::fs::write(&p, b"right bytes").unwrap();
        let checks = DigestChecks::default();
        let want = sha(b"right bytes");
        assert!(checks.matches("p", "f", p.clone(), &want).await);
        // Same size and mtime: the kept verdict answers, even though the bytes changed under it.
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        std::fs::write(&p, b"wrong bytes").unwrap();
        std::fs::File::options().write(true).open(&p).unwrap().set_modified(mtime).unwrap();
        assert!(checks.matches("p", "f", p.clone(), &want).await);
        // A different size is a different file: hashed again, and refused.
        std::fs::write(&p, b"wrong bytes, longer").unwrap();
        assert!(!checks.matches("p", "f", p.clone(), &want).await);
        // The operator puts the right copy back: served again without a restart.
        std::fs::write(&p, b"right bytes").unwrap();
        assert!(checks.matches("p", "f", p, &want).await);
    }

    #[tokio::test]
    async fn a_missing_file_does_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let checks = DigestChecks::default();
        assert!(!checks.matches("p", "f", dir.path().join("nope"), &sha(b"")).await);
    }
}
