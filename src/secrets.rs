//! Secrets generated on first start into `data_dir` (mode 0600) and reused afterwards: the
//! link-signing key ring (`link-keys/<id>.key`, 32 random bytes each) and, later, the
//! key-encryption key. Contents never reach a log; only file names do.

use ring::rand::{SecureRandom, SystemRandom};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Fills `n` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).expect("the OS random source works");
    b
}

/// Equality of two secrets in time independent of where they differ (lengths are not secret).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads a secret file, or creates it with `len` random bytes and mode 0600 if it is missing.
/// Creation uses `create_new`, so two processes racing cannot both write different secrets.
pub fn load_or_create(path: &Path, len: usize) -> std::io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) if b.len() == len => return Ok(b),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} has the wrong length for a secret", path.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut secret = vec![0u8; len];
    SystemRandom::new().fill(&mut secret).map_err(|_| std::io::Error::other("OS random source failed"))?;
    write_new_secret(path, &secret)?;
    // Re-read: if another process won the race, its secret is the one to use.
    std::fs::read(path)
}

/// Writes a brand-new secret file with mode 0600 (fails if it exists).
pub fn write_new_secret(path: &Path, secret: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(secret)?;
            f.sync_all()
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn link_key_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("link-keys")
}

/// Loads every link-signing key in `data_dir/link-keys/` (`<id>.key`), creating key 1 on first
/// start. The highest id signs; every present key verifies; deleting a file retires a key.
pub fn load_link_keys(data_dir: &Path) -> std::io::Result<Vec<(u32, Vec<u8>)>> {
    let dir = link_key_dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".key"))
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(id) = id {
            keys.push((id, load_or_create(&path, 32)?));
        }
    }
    if keys.is_empty() {
        keys.push((1, load_or_create(&dir.join("1.key"), 32)?));
    }
    keys.sort_by_key(|(id, _)| *id);
    Ok(keys)
}

/// Adds a new signing key (the next id) and returns its id. Links signed by older keys keep
/// working until their key file is removed.
pub fn rotate_link_key(data_dir: &Path) -> std::io::Result<u32> {
    let next = load_link_keys(data_dir)?.last().map_or(1, |(id, _)| id + 1);
    load_or_create(&link_key_dir(data_dir).join(format!("{next}.key")), 32)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_a_0600_key_and_reuses_it() {
        let d = tempfile::tempdir().unwrap();
        let a = load_link_keys(d.path()).unwrap();
        let b = load_link_keys(d.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.path().join("link-keys/1.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn rotation_adds_a_newer_key_and_keeps_the_old() {
        let d = tempfile::tempdir().unwrap();
        load_link_keys(d.path()).unwrap();
        assert_eq!(rotate_link_key(d.path()).unwrap(), 2);
        let ids: Vec<u32> = load_link_keys(d.path()).unwrap().into_iter().map(|(i, _)| i).collect();
        assert_eq!(ids, vec![1, 2]);
    }
}
