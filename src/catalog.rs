//! Downloadable files: attaching them (path confined to `files_dir`, one hard link only, size and
//! mtime taken at once, SHA-256 computed once in the background and kept), retiring them, and the
//! cache of open files with their precomputed response headers that the download path serves from.
//!
//! A file is `(product_id, file_id)` (API.md §5.1) and never changes once attached: attaching the
//! same id again with the same path, size and file name changes nothing; anything else is
//! `file_exists` (a new build is a new `file_id`). So a link, which names its product and file,
//! serves exactly the bytes and name it was issued for. Retiring a file stops new links; issued
//! links keep serving it. The open file handle is cached, so replacing the file on disk under the
//! same path does not change what an already-loaded entry serves until restart.

use crate::ledger::Fast;
use crate::representation;
use crate::store::{FileRecord, Store, StoreError};
use base64::Engine;
use dashmap::DashMap;
use http::HeaderValue;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("path must be relative to files_dir and stay inside it")]
    OutsideFilesDir,
    #[error("file not found under files_dir")]
    Missing,
    #[error("not a regular file")]
    NotAFile,
    /// A second hard link could lead anywhere on the filesystem, and `canonicalize` cannot see it.
    #[error("the file has more than one hard link")]
    HardLinked,
    #[error("the file differs from the catalog's record")]
    Changed,
    /// The product already has a different file under this id.
    #[error("a different file is attached under this id")]
    Exists(Box<FileRecord>),
    #[error("no such file")]
    Unknown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an attachment names.
#[derive(Debug, Clone, Default)]
pub struct FileSpec {
    pub file_id: String,
    pub product_id: String,
    pub path: String,
    pub filename: String,
    pub version: Option<String>,
    pub language: Option<String>,
    pub file_type: Option<String>,
}

/// What [`Catalog::attach`] did.
pub use crate::store::commands::Attach as Attached;

/// Resolves `rel` under `files_dir`, refusing absolute paths, `..`, and symlinks that lead out.
pub fn confine(files_dir: &Path, rel: &str) -> Result<PathBuf, FileError> {
    let p = Path::new(rel);
    if rel.is_empty()
        || rel.contains('\0')
        || p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(FileError::OutsideFilesDir);
    }
    let root = files_dir.canonicalize().map_err(|_| FileError::Missing)?;
    let full = root.join(p).canonicalize().map_err(|_| FileError::Missing)?;
    if !full.starts_with(&root) {
        return Err(FileError::OutsideFilesDir);
    }
    Ok(full)
}

/// A file ready to serve: open handle and the header values every response repeats.
#[derive(Debug)]
pub struct ServedFile {
    pub rec: FileRecord,
    pub file: Arc<File>,
    /// The entity tag as text, for matching `If-None-Match` and `If-Range` against.
    pub etag: String,
    pub content_type: &'static str,
    /// The whole content of a small file (at most [`SMALL_FILE`] bytes), read once, so small
    /// downloads need no read at all.
    pub content: Option<bytes::Bytes>,
    /// A larger file's whole content as a read-only mapping ([`crate::mapped`]), when
    /// `storage.map_files` is on: chunks are slices of it, with no read and no copy.
    pub mapped: Option<bytes::Bytes>,
    /// The per-file header values, checked and copied once: a response clones them (a reference
    /// count) instead of building, validating and copying four strings per request.
    pub values: HeaderValues,
}

/// [`ServedFile`]'s per-file response header values.
#[derive(Debug)]
pub struct HeaderValues {
    pub etag: HeaderValue,
    pub last_modified: HeaderValue,
    pub content_disposition: HeaderValue,
    /// `sha-256=:<base64>:` once the digest is known.
    pub repr_digest: Option<HeaderValue>,
}

/// A header value from text the server built; text that is not visible ASCII (never expected:
/// every producer writes it) becomes `invalid` rather than failing the download.
pub fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Files up to this size are kept in memory once opened.
pub const SMALL_FILE: u64 = 64 * 1024;

/// The checks a catalog file passes at attach and again at open: a regular file with exactly one
/// hard link (API.md §5.1).
fn check_file(meta: &std::fs::Metadata) -> Result<(), FileError> {
    if !meta.is_file() {
        return Err(FileError::NotAFile);
    }
    if meta.nlink() != 1 {
        return Err(FileError::HardLinked);
    }
    Ok(())
}

impl ServedFile {
    fn open(files_dir: &Path, rec: FileRecord, map_files: bool) -> Result<ServedFile, FileError> {
        let full = confine(files_dir, &rec.path)?;
        let mut file = File::open(full).map_err(|_| FileError::Missing)?;
        let meta = file.metadata().map_err(|_| FileError::Missing)?;
        check_file(&meta)?;
        if meta.len() != rec.size {
            return Err(FileError::Changed);
        }
        let content = if rec.size <= SMALL_FILE {
            let mut buf = Vec::with_capacity(rec.size as usize);
            file.read_to_end(&mut buf).map_err(|_| FileError::Missing)?;
            (buf.len() as u64 == rec.size).then(|| bytes::Bytes::from(buf))
        } else {
            None
        };
        let mapped = match (content.is_none() && map_files).then(|| crate::mapped::map(&file, rec.size)) {
            Some(Ok(m)) => Some(m),
            Some(Err(e)) => {
                tracing::warn!(file_id = %rec.file_id, error = %e, "mapping failed; served by reads");
                None
            }
            None => None,
        };
        let repr_digest = rec
            .sha256
            .as_deref()
            .and_then(|h| hex::decode(h).ok())
            .map(|raw| format!("sha-256=:{}:", base64::engine::general_purpose::STANDARD.encode(raw)));
        let etag = representation::etag(rec.size, u128::from(rec.mtime_ns));
        let values = HeaderValues {
            etag: header_value(&etag),
            last_modified: header_value(&representation::http_date(u128::from(rec.mtime_ns))),
            content_disposition: header_value(&representation::content_disposition(&rec.filename)),
            repr_digest: repr_digest.as_deref().map(header_value),
        };
        Ok(ServedFile {
            etag,
            content_type: representation::content_type(&rec.filename),
            values,
            content,
            mapped,
            file: Arc::new(file),
            rec,
        })
    }
}

/// The catalog of files, backed by the store.
/// A file's SHA-256 (hex), read in 1 MiB pieces.
pub(crate) fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex::encode(ctx.finish()))
}

pub struct Catalog {
    store: Arc<Store>,
    files_dir: PathBuf,
    /// product_id → file_id → open file: two lookups by `&str`, no key to build per request.
    served: DashMap<String, DashMap<String, Arc<ServedFile>, Fast>, Fast>,
    /// On a shared database: whether this node's copy of each file is the catalog's.
    digests: crate::digest_check::DigestChecks,
    /// `storage.map_files`: serve larger files from read-only mappings.
    map_files: bool,
}

impl Catalog {
    pub fn new(store: Arc<Store>, files_dir: PathBuf, map_files: bool) -> Catalog {
        Catalog {
            store,
            files_dir,
            served: DashMap::with_hasher(Fast::default()),
            digests: Default::default(),
            map_files,
        }
    }

    pub fn files_dir(&self) -> &Path {
        &self.files_dir
    }

    fn forget(&self, product_id: &str, file_id: &str) {
        if let Some(files) = self.served.get(product_id) {
            files.remove(file_id);
        }
    }

    /// Attaches a file: checks the path, records size and mtime durably, and starts the SHA-256
    /// in a background thread (`Repr-Digest` appears once it is stored). The same file again is
    /// [`Attached::Existing`]; a different path, size or file name under the id is
    /// [`FileError::Exists`]. The check and the write are one store transaction.
    pub async fn attach(self: &Arc<Self>, spec: FileSpec) -> Result<Attached, FileError> {
        let full = confine(&self.files_dir, &spec.path)?;
        let meta = std::fs::metadata(&full).map_err(|_| FileError::Missing)?;
        check_file(&meta)?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64);
        let rec = FileRecord {
            file_id: spec.file_id,
            product_id: spec.product_id,
            path: spec.path,
            filename: spec.filename,
            size: meta.len(),
            mtime_ns,
            sha256: None,
            version: spec.version,
            language: spec.language,
            file_type: spec.file_type,
            retired_at: None,
        };
        let outcome = self.store.attach_file(rec).await?.map_err(FileError::Exists)?;
        let rec = match &outcome {
            Attached::Created(r) | Attached::Existing(r) => r,
        };
        self.forget(&rec.product_id, &rec.file_id);
        if rec.sha256.is_none() {
            let me = self.clone();
            let (pid, fid, size) = (rec.product_id.clone(), rec.file_id.clone(), rec.size);
            let rt = tokio::runtime::Handle::current();
            std::thread::Builder::new()
                .name("keydrop-sha256".into())
                .spawn(move || me.compute_digest(&rt, &pid, &fid, &full, size))
                .map_err(StoreError::from)?;
        }
        Ok(outcome)
    }

    /// Retires a file: no new links are issued for it; links issued already keep serving it.
    /// Retiring again changes nothing.
    pub async fn retire(
        &self,
        product_id: &str,
        file_id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<FileRecord, FileError> {
        let rec = self.store.retire_file(product_id, file_id, now).await?.ok_or(FileError::Unknown)?;
        self.forget(product_id, file_id);
        Ok(rec)
    }

    /// Hashes the file, stores the digest, and refreshes the cached entry.
    fn compute_digest(&self, rt: &tokio::runtime::Handle, product_id: &str, file_id: &str, path: &Path, size: u64) {
        match sha256_of(path) {
            Ok(sha256) => {
                // Durable first (this is a blocking thread), then drop the stale entry.
                if rt.block_on(self.store.set_file_sha(product_id, file_id, size, sha256)).is_ok() {
                    self.forget(product_id, file_id);
                }
            }
            Err(e) => tracing::warn!(product_id, file_id, error = %e, "could not hash file"),
        }
    }

    /// The stored record of a file.
    pub async fn record(&self, product_id: &str, file_id: &str) -> Result<Option<FileRecord>, StoreError> {
        self.store.file(product_id, file_id).await
    }

    /// The files attached to a product, retired ones included.
    pub async fn files_of(&self, product_id: &str) -> Result<Vec<FileRecord>, StoreError> {
        self.store.files_of(product_id).await
    }

    /// The servable file, opening and caching it on first use; `None` if unknown, missing, or no
    /// longer the file that was attached (size changed, a second hard link).
    pub async fn served(&self, product_id: &str, file_id: &str) -> Result<Option<Arc<ServedFile>>, StoreError> {
        if let Some(s) = self.served.get(product_id).and_then(|files| files.get(file_id).map(|f| f.clone())) {
            return Ok(Some(s));
        }
        let Some(rec) = self.store.file(product_id, file_id).await? else {
            return Ok(None);
        };
        // On a shared database the bytes on this node's disk were put there by its operator, not
        // by the attach that hashed them: they must be the catalog's bytes before one is served.
        let check_digest = matches!(&*self.store, Store::Postgres(_)).then(|| rec.sha256.clone()).flatten();
        let opened = match ServedFile::open(&self.files_dir, rec, self.map_files) {
            Ok(s) => match check_digest {
                Some(want) => {
                    let same = match confine(&self.files_dir, &s.rec.path) {
                        Ok(path) => self.digests.matches(product_id, file_id, path, &want).await,
                        Err(_) => false,
                    };
                    if same {
                        Ok(s)
                    } else {
                        Err(FileError::Changed)
                    }
                }
                None => Ok(s),
            },
            Err(e) => Err(e),
        };
        match opened {
            Ok(s) => {
                let files = self.served.entry(product_id.to_owned()).or_default();
                let s = files.entry(file_id.to_owned()).or_insert(Arc::new(s)).clone();
                Ok(Some(s))
            }
            Err(e) => {
                tracing::error!(product_id, file_id, error = %e, "attached file cannot be served");
                Ok(None)
            }
        }
    }

    /// Opens (and on a shared database, checks the digest of) every attached file once, in the
    /// background at start: a node's wrong or missing copy is logged before anyone asks for it,
    /// and the first downloads do not wait for the hash.
    pub async fn verify_all(&self) {
        let Ok(products) = self.store.products().await else {
            return;
        };
        for p in products {
            let Ok(files) = self.store.files_of(&p.product_id).await else {
                continue;
            };
            for f in files {
                let _ = self.served(&p.product_id, &f.file_id).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_never_escape_files_dir() {
        let root = tempfile::tempdir().unwrap();
        let files = root.path().join("files");
        std::fs::create_dir(&files).unwrap();
        std::fs::write(files.join("ok.iso"), b"x").unwrap();
        std::fs::write(root.path().join("secret"), b"s").unwrap();
        assert!(confine(&files, "ok.iso").is_ok());
        assert!(confine(&files, "./ok.iso").is_ok());
        for bad in ["../secret", "/etc/passwd", "a/../../secret", "", "ok.iso\0"] {
            assert!(matches!(confine(&files, bad), Err(FileError::OutsideFilesDir)), "{bad:?}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.path().join("secret"), files.join("link")).unwrap();
            assert!(matches!(confine(&files, "link"), Err(FileError::OutsideFilesDir)));
        }
        assert!(matches!(confine(&files, "nope.iso"), Err(FileError::Missing)));
    }

    #[test]
    fn a_second_hard_link_is_refused_wherever_it_points() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("one"), b"x").unwrap();
        assert!(check_file(&std::fs::metadata(root.path().join("one")).unwrap()).is_ok());
        std::fs::hard_link(root.path().join("one"), root.path().join("two")).unwrap();
        for name in ["one", "two"] {
            let meta = std::fs::metadata(root.path().join(name)).unwrap();
            assert!(matches!(check_file(&meta), Err(FileError::HardLinked)), "{name}");
        }
        assert!(matches!(check_file(&std::fs::metadata(root.path()).unwrap()), Err(FileError::NotAFile)));
    }
}
