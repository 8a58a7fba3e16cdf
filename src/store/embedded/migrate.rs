//! Stored data of older keydrop versions, moved to the current layout once, on open.

use super::{file_key, FileRecord, LinkRecord, StoreError, FILES, LINKS, META};
use redb::ReadableTable;

/// `meta` key: the stored data's layout version (u64, big-endian; absent = 1).
const SCHEMA: &str = "schema";
/// 2: files keyed by `(product_id, file_id)`, every link naming its product.
const SCHEMA_VERSION: u64 = 2;

/// Moves data stored by an older keydrop to the current layout, once, inside the opening
/// transaction. Version 1 keyed files by `file_id` alone, so attaching an id to a second product
/// re-pointed the first product's links at the second's file (API.md §5.1): each file moves to
/// `product_id \0 file_id`, and each link that did not record its product gets the product of
/// the file it named.
pub(super) fn migrate(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut meta = tx.open_table(META)?;
    let version = meta.get(SCHEMA)?.and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes)).unwrap_or(1);
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let mut files = tx.open_table(FILES)?;
    let mut product_of = std::collections::HashMap::new();
    let legacy: Vec<(String, Vec<u8>)> = files
        .iter()?
        .filter_map(|item| item.ok().map(|(k, v)| (k.value().to_owned(), v.value().to_vec())))
        .filter(|(k, _)| !k.contains('\0'))
        .collect();
    for (key, raw) in &legacy {
        let rec: FileRecord = serde_json::from_slice(raw)?;
        files.remove(key.as_str())?;
        files.insert(file_key(&rec.product_id, &rec.file_id).as_str(), raw.as_slice())?;
        product_of.insert(rec.file_id, rec.product_id);
    }
    let mut links = tx.open_table(LINKS)?;
    let mut fixed = Vec::new();
    for item in links.iter()? {
        let (k, v) = item?;
        let mut rec: LinkRecord = serde_json::from_slice(v.value())?;
        if rec.product_id.is_empty() {
            if let Some(p) = product_of.get(&rec.file_id) {
                rec.product_id.clone_from(p);
                fixed.push((k.value().to_vec(), serde_json::to_vec(&rec)?));
            }
        }
    }
    for (k, v) in &fixed {
        links.insert(k.as_slice(), v.as_slice())?;
    }
    meta.insert(SCHEMA, SCHEMA_VERSION.to_be_bytes().as_slice())?;
    if !legacy.is_empty() || !fixed.is_empty() {
        tracing::info!(files = legacy.len(), links = fixed.len(), "moved files under their products");
    }
    Ok(())
}
