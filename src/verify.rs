//! `keydrop verify-log`: recomputes the activity log's hash chain offline (the server must not
//! be running on the same data dir: redb allows one writer process).

use crate::activity::ChainVerifier;
use crate::store::scan_activity_offline;
use std::path::Path;

/// The result of a full check.
#[derive(Debug)]
pub struct Report {
    pub records: u64,
    pub last_hash: String,
    /// `None` when intact; otherwise the first bad record and why.
    pub first_bad: Option<(u64, String)>,
}

/// Verifies `data_dir/keydrop.redb`'s chain from the first record to the last.
pub fn verify_data_dir(data_dir: &Path) -> Result<Report, String> {
    let path = data_dir.join("keydrop.redb");
    if !path.exists() {
        return Err(format!("no database at {}", path.display()));
    }
    let mut v = ChainVerifier::default();
    let mut first_bad = None;
    scan_activity_offline(&path, |r| {
        let checked = match r {
            Ok(rec) => v.push(&rec).map_err(|e| (e.seq, e.reason)),
            Err(msg) => Err((v.count() + 1, msg)),
        };
        match checked {
            Ok(()) => true,
            Err(bad) => {
                first_bad = Some(bad);
                false
            }
        }
    })
    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(Report { records: v.count(), last_hash: v.last_hash().to_owned(), first_bad })
}
