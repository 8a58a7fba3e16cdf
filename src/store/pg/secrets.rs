//! Link-signing keys on a shared database: every node must verify links every other node
//! issued, so the key ring lives in the database, each key sealed under the key-encryption key
//! (the same `kek_file` on every node). The first node to start creates key 1; a node whose KEK
//! does not open the stored keys refuses to start rather than issue links nobody else accepts.

use super::kv::{self, Lock};
use super::PgStore;
use crate::keys::Sealer;
use crate::store::StoreError;

const META: &str = "meta";
const PREFIX: &str = "link_key\0";

/// Why the stored key ring cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    #[error("kek_file does not open the link-signing keys stored in the database (is it the same file as on the other nodes?)")]
    WrongKek,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PgStore {
    /// The link-signing keys, `(id, key)` in id order, creating key 1 on first start.
    pub async fn link_keys(&self, sealer: &Sealer) -> Result<Vec<(u32, Vec<u8>)>, KeyRingError> {
        let c = self.client().await?;
        let first = format!("{PREFIX}{:010}", 1);
        let fresh: [u8; 32] = crate::secrets::random_bytes();
        // Two nodes starting together: one insert wins, both read the winner's key back.
        kv::insert_new(&**c, META, &first, &sealer.seal(&first, &hex::encode(fresh))).await?;
        let mut keys = Vec::new();
        for (name, sealed) in kv::scan_prefix(&**c, META, PREFIX, usize::MAX, Lock::None).await? {
            let id: u32 = name[PREFIX.len()..].parse().map_err(|_| StoreError::Corrupt("link key id".into()))?;
            let key = sealer.open(&name, &sealed).map_err(|_| KeyRingError::WrongKek)?;
            keys.push((id, hex::decode(key).map_err(|_| StoreError::Corrupt("link key".into()))?));
        }
        Ok(keys)
    }

    /// Adds the next link-signing key (`keydrop rotate-link-key` on a shared database); every
    /// node signs with it from its next start, and keeps verifying the older ones.
    pub async fn add_link_key(&self, sealer: &Sealer) -> Result<u32, KeyRingError> {
        let next = self.link_keys(sealer).await?.last().map_or(1, |(id, _)| id + 1);
        let name = format!("{PREFIX}{next:010}");
        let key: [u8; 32] = crate::secrets::random_bytes();
        if !kv::insert_new(&**self.client().await?, META, &name, &sealer.seal(&name, &hex::encode(key))).await? {
            return Err(StoreError::Bug("another node added the same key id at once; run it again".into()).into());
        }
        Ok(next)
    }
}
