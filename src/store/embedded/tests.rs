//! The store's own tests: migrations of older data, the filter index across flushes and
//! restarts, per-batch rollback, error classes, a clean stop.

use super::offline::{journal_pending, legacy_records};
use super::*;
use crate::activity::{Entry, Kind};

#[test]
fn io_failures_are_transient_and_damage_or_bugs_are_not() {
    let enospc = || std::io::Error::from_raw_os_error(28);
    assert!(StoreError::Io(enospc()).is_transient());
    assert!(StoreError::Db(redb::Error::Io(enospc())).is_transient());
    assert!(StoreError::Db(redb::Error::PreviousIo).is_transient());
    assert!(StoreError::Closed.is_transient() && StoreError::Unavailable.is_transient());
    assert!(!StoreError::Corrupt("short file".into()).is_transient());
    assert!(!StoreError::Db(redb::Error::Corrupted("page".into())).is_transient());
    assert!(!StoreError::Bug("cannot happen".into()).is_transient());
    let undecodable = serde_json::from_slice::<FileRecord>(b"{").unwrap_err();
    assert!(!StoreError::Encoding(undecodable).is_transient());
}

/// Link `[i; 16]` of order `o{i}`: 50 uses of 100 bytes, never expiring.
pub(super) fn link(i: u8) -> LinkRecord {
    LinkRecord {
        link_id: hex::encode([i; 16]),
        order_id: format!("o{i}"),
        tenant_id: None,
        product_id: "p".into(),
        file_id: "f".into(),
        key_id: 1,
        issued_at: 1_700_000_000,
        expires_at: i64::MAX,
        max_uses: 50,
        unit: 100,
    }
}

fn pending_after_close(dir: &Path) -> bool {
    let db = redb::ReadOnlyDatabase::open(dir.join("keydrop.redb")).unwrap();
    journal_pending(&db.begin_read().unwrap(), &dir.join(JOURNAL_FILE)).unwrap()
}

/// redb makes a pending non-durable commit durable when the database closes cleanly, so after a
/// clean stop `keydrop.redb` is complete on its own (backups, offline readers).
#[tokio::test]
async fn a_clean_stop_makes_every_journalled_commit_durable_in_redb() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    for _ in 0..3 {
        let ops = vec![Op::Reserve { key: [7; 24], bytes: 10 }, Op::Append(Entry::new(Kind::DownloadStarted))];
        store.writer().commit(ops).await.unwrap();
    }
    assert!(!journal::read_file(&dir.path().join(JOURNAL_FILE)).unwrap().is_empty(), "journalled");
    store.close().await;
    drop(store);
    assert!(!pending_after_close(dir.path()), "redb alone holds everything after a clean stop");
    let db = redb::ReadOnlyDatabase::open(dir.path().join("keydrop.redb")).unwrap();
    let tx = db.begin_read().unwrap();
    assert_eq!(records::end(&tx.open_table(META).unwrap()).unwrap().next_seq, 4);
    assert_eq!(std::fs::read(dir.path().join(RECORDS_FILE)).unwrap().iter().filter(|b| **b == b'\n').count(), 3);
    assert_eq!(tx.open_table(SPENT).unwrap().get([7u8; 24].as_slice()).unwrap().map(|v| v.value()), Some(30));
}

/// A batch that fails for its own reasons (here: a broken invariant after it wrote a value,
/// a record and a gate) fails alone: nothing of it is written, and the other batches of its
/// group commit, their records numbered as if it had never been.
#[tokio::test]
async fn a_failing_batch_rolls_back_alone_and_the_rest_of_its_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    let w = store.writer();
    // Hold the writer so the next batches share one group.
    let slow = w
        .send_durable(vec![Op::Txn(Box::new(|_| {
            std::thread::sleep(std::time::Duration::from_millis(200));
            Ok(Box::new(()) as Box<dyn std::any::Any + Send>)
        }))])
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let bad = w
        .send_durable(vec![Op::Txn(Box::new(|tx| {
            tx.put_raw("products", "ghost", b"{}")?;
            tx.put_gate("o-bad", &OrderGate { access: Access::Revoked, tenant_id: None })?;
            tx.append(Entry::new(Kind::OrderRevoked))?;
            Err(StoreError::Bug("refused after writing".into()))
        }))])
        .unwrap();
    let good = w
        .send_durable(vec![Op::Txn(Box::new(|tx| {
            tx.put_raw("products", "real", b"{}")?;
            tx.append(Entry::new(Kind::OrderCreated))?;
            Ok(Box::new(()) as Box<dyn std::any::Any + Send>)
        }))])
        .unwrap();
    slow.await.unwrap().unwrap();
    assert!(matches!(bad.await.unwrap(), Err(StoreError::Bug(_))));
    let committed = good.await.unwrap().unwrap();
    assert_eq!(committed.last_seq, Some(1), "the failed batch's record was never numbered");
    assert!(store.get_raw("products", "ghost").unwrap().is_none());
    assert!(store.gate("o-bad").unwrap().is_none());
    assert!(store.get_raw("products", "real").unwrap().is_some());
    let recs = store.records_after(0, 10).unwrap();
    assert_eq!(recs.iter().map(|r| r.kind).collect::<Vec<_>>(), vec![Kind::OrderCreated]);
    assert_eq!(store.writer().stats.failed_commits.load(Ordering::Relaxed), 0, "the group did not fail");
    store.close().await;
}

/// Past [`index::FLUSH_AT`] held entries a durable commit writes them out as chunks; queries
/// merge the chunks with what is held, before and after a restart.
#[tokio::test]
async fn filter_queries_merge_written_chunks_with_held_entries_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let orders = |n: u64| format!("o{}", n % 7);
    // 29 groups of 2,000 entries: written out at every 10th group, 9 groups' worth held.
    let expect: Vec<u64> = (0..29_000u64).filter(|n| n % 7 == 3).collect();
    let query = |store: &Embedded| {
        let mut got = Vec::new();
        let mut after = 0;
        loop {
            let q = crate::activity::Query {
                order_id: Some("o3".into()),
                after_seq: after,
                limit: 1000,
                ..Default::default()
            };
            let (recs, next) = store.query_activity(&q).unwrap();
            got.extend(recs.iter().map(|r| r.bytes.unwrap()));
            match next {
                Some(n) => after = n,
                None => return got,
            }
        }
    };
    {
        let store = Embedded::open(dir.path()).unwrap();
        for c in 0..29u64 {
            // Admin-like groups: durable redb commits, where a flush may happen.
            store
                .writer()
                .txn(move |tx| {
                    for i in 0..1000 {
                        let mut e = Entry::new(Kind::KeyAccessed);
                        e.order_id = Some(orders(c * 1000 + i));
                        e.bytes = Some(c * 1000 + i);
                        tx.append(e)?;
                    }
                    Ok(())
                })
                .await
                .unwrap();
        }
        let held = store.writer.recent.len();
        assert!(held > 0 && held < 58_000, "some entries were written out, some are held: {held}");
        assert_eq!(query(&store), expect);
        store.close().await;
    }
    let store = Embedded::open(dir.path()).unwrap();
    assert!(store.writer.recent.is_empty());
    assert_eq!(query(&store), expect, "after a restart, from the table alone");
    store.close().await;
}

/// A database from before the filter index has records but no index: the first start builds it
/// from the record file, and filtered queries find exactly what a scan would.
#[tokio::test]
async fn the_filter_index_of_a_database_from_before_it_is_built_on_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Embedded::open(dir.path()).unwrap();
        for batch in 0..3u64 {
            let ops = (0..100u64)
                .map(|i| {
                    let mut e = Entry::new(if i % 2 == 0 { Kind::DownloadStarted } else { Kind::KeyAccessed });
                    e.order_id = Some(format!("o{}", i % 10));
                    e.bytes = Some(batch * 100 + i);
                    Op::Append(e)
                })
                .collect();
            store.writer().commit(ops).await.unwrap();
        }
        store.close().await;
    }
    {
        // What an older keydrop left: no index table, no flag.
        let db = redb::Database::open(dir.path().join("keydrop.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.delete_table(index::ACTIVITY_IX).unwrap();
        tx.open_table(META).unwrap().remove("activity_ix_through").unwrap();
        tx.commit().unwrap();
    }
    let store = Embedded::open(dir.path()).unwrap();
    let q = crate::activity::Query { order_id: Some("o3".into()), limit: 1000, ..Default::default() };
    let (found, next) = store.query_activity(&q).unwrap();
    let bytes: Vec<u64> = found.iter().map(|r| r.bytes.unwrap()).collect();
    assert_eq!(bytes, (0..300u64).filter(|n| n % 10 == 3).collect::<Vec<_>>());
    assert_eq!(next, None);
    let q = crate::activity::Query { kind: Some(Kind::KeyAccessed), limit: 1000, ..Default::default() };
    assert_eq!(store.query_activity(&q).unwrap().0.len(), 150);
    // New records are indexed as they are written.
    let mut e = Entry::new(Kind::KeyAccessed);
    e.order_id = Some("o3".into());
    store.writer().commit(vec![Op::append(e)]).await.unwrap();
    store.publish().await.unwrap();
    let q = crate::activity::Query { order_id: Some("o3".into()), limit: 1000, ..Default::default() };
    assert_eq!(store.query_activity(&q).unwrap().0.len(), 31);
    store.close().await;
}

/// A database from before files belonged to products keyed them by `file_id` alone, and its
/// links may not name their product: the first start moves each file under its product and
/// gives each such link the product of its file, once.
#[tokio::test]
async fn files_and_links_of_a_database_from_before_file_ids_per_product_are_moved_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let link_id = [9u8; 16];
    {
        let db = redb::Database::create(dir.path().join("keydrop.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut files = tx.open_table(FILES).unwrap();
            let old = serde_json::json!({"file_id": "x", "product_id": "A", "path": "big.bin",
                "filename": "A.iso", "size": 64, "mtime_ns": 1, "sha256": null, "version": "1",
                "language": null, "file_type": null});
            files.insert("x", old.to_string().as_bytes()).unwrap();
            let mut links = tx.open_table(LINKS).unwrap();
            let link = serde_json::json!({"link_id": hex::encode(link_id), "order_id": "o", "tenant_id": null,
                "product_id": null, "file_id": "x", "key_id": 1, "issued_at": 5, "expires_at": 99,
                "max_uses": 2, "unit": 64});
            links.insert(link_id.as_slice(), link.to_string().as_bytes()).unwrap();
        }
        tx.commit().unwrap();
    }
    let store = Embedded::open(dir.path()).unwrap();
    let file = store.file("A", "x").unwrap().expect("moved under its product");
    assert_eq!((file.filename.as_str(), file.size, file.version.as_deref()), ("A.iso", 64, Some("1")));
    assert_eq!(store.file("B", "x").unwrap(), None);
    assert_eq!(store.files_of("A").unwrap(), vec![file]);
    let (link, _) = store.link(&link_id).unwrap().unwrap();
    assert_eq!((link.product_id.as_str(), link.file_id.as_str()), ("A", "x"));
    assert!(store.get_raw("files", "x").unwrap().is_none(), "the old key is gone");
    store.close().await;
    drop(store);
    // A second start finds nothing left to move and changes nothing.
    let store = Embedded::open(dir.path()).unwrap();
    assert_eq!(store.files_of("A").unwrap().len(), 1);
    store.close().await;
}

/// A database written before the record file keeps its records in the `activity` table; the
/// first start moves them, in order and byte for byte, and the chain goes on from them.
#[tokio::test]
async fn records_of_a_database_from_before_the_record_file_are_moved_to_it_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut stored = Vec::new();
    {
        let db = redb::Database::create(dir.path().join("keydrop.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(LEGACY_ACTIVITY).unwrap();
            let mut prev = crate::activity::GENESIS.to_owned();
            for seq in 1..=3u64 {
                let mut e = Entry::new(Kind::DownloadStarted);
                e.bytes = Some(seq * 100);
                let (json, hash) = Record::seal_json(&e, seq, "2026-01-01T00:00:00.000000Z", &prev);
                t.insert(seq, json.as_slice()).unwrap();
                stored.push(json);
                prev = hash;
            }
        }
        tx.commit().unwrap();
    }
    let store = Embedded::open(dir.path()).unwrap();
    for seq in 1..=3u64 {
        assert_eq!(store.get_activity_raw(seq).unwrap().as_deref(), Some(stored[seq as usize - 1].as_slice()));
    }
    let next = store.writer().commit(vec![Op::Append(Entry::new(Kind::DownloadFinished))]).await.unwrap();
    assert_eq!(next.last_seq, Some(4));
    store.publish().await.unwrap();
    let mut verifier = crate::activity::ChainVerifier::default();
    store.scan_activity(|r| verifier.push(&r.unwrap()).is_ok()).unwrap();
    assert_eq!(verifier.count(), 4, "one unbroken chain across the move");
    store.close().await;
    drop(store);
    let db = redb::ReadOnlyDatabase::open(dir.path().join("keydrop.redb")).unwrap();
    assert!(!legacy_records(&db.begin_read().unwrap()).unwrap(), "the old table is gone");
}

/// Journalled records reach the record file in batches (see [`pending`]): once work stops they
/// appear within [`pending::PUBLISH_AFTER`] on their own, and a reader that asks
/// ([`Embedded::publish`]) sees every record committed before it at once.
#[tokio::test]
async fn journalled_records_are_published_on_their_own_and_at_once_when_a_reader_asks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    let download = || vec![Op::Reserve { key: [3; 24], bytes: 10 }, Op::append(Entry::new(Kind::DownloadStarted))];
    for _ in 0..20 {
        store.writer().commit(download()).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while store.record_count().unwrap() < 20 {
        assert!(std::time::Instant::now() < deadline, "published on their own: {}", store.record_count().unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    for round in 1..=5u64 {
        for _ in 0..20 {
            store.writer().commit(download()).await.unwrap();
        }
        store.publish().await.unwrap();
        assert_eq!(store.record_count().unwrap(), 20 + round * 20);
        assert_eq!(store.records_after(0, 1000).unwrap().len() as u64, 20 + round * 20);
    }
    store.close().await;
}

/// Batches nobody waits for (a settlement: refund and `download.finished`) wait for the next
/// batch somebody does and share its commit; alone, they are committed once `LINGER` has passed.
#[tokio::test]
async fn a_settlement_rides_with_the_next_reservation_or_commits_alone_after_the_linger() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    let w = store.writer();
    let commits = || w.stats.commits.load(std::sync::atomic::Ordering::Relaxed);
    let settle = || vec![Op::Refund { key: [9; 24], bytes: 4 }, Op::Append(Entry::new(Kind::DownloadFinished))];
    w.commit(vec![Op::Reserve { key: [9; 24], bytes: 100 }]).await.unwrap();
    let (before, sent) = (commits(), std::time::Instant::now());
    w.send(settle()).unwrap();
    w.commit(vec![Op::Reserve { key: [9; 24], bytes: 10 }]).await.unwrap();
    // Queued within the linger (the usual case; a machine too busy to get here in time proves
    // nothing either way): the two share one commit.
    if sent.elapsed() < writer::LINGER {
        assert_eq!(commits() - before, 1, "the settlement and the reservation shared one commit");
    }

    // Alone, a settlement is committed once the linger has passed, not before.
    let (before, sent) = (commits(), std::time::Instant::now());
    w.send(settle()).unwrap();
    while commits() == before {
        assert!(sent.elapsed() < std::time::Duration::from_secs(5), "a settlement alone was never committed");
        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
    }
    assert!(sent.elapsed() >= writer::LINGER, "committed after {:?}, before the linger", sent.elapsed());
    store.close().await;
    drop(store);
    let db = redb::ReadOnlyDatabase::open(dir.path().join("keydrop.redb")).unwrap();
    let spent =
        db.begin_read().unwrap().open_table(SPENT).unwrap().get([9u8; 24].as_slice()).unwrap().map(|v| v.value());
    assert_eq!(spent, Some(100 - 4 + 10 - 4), "both settlements were applied");
}

/// On a multi-threaded runtime a group's answers are sent by a task of that runtime; a store
/// whose runtime is gone (a tool, or a test that outlived its runtime) is answered by the writer
/// itself — either way every durable batch is answered, with its own result, in order.
#[test]
fn answers_arrive_from_the_runtime_task_and_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store = first.block_on(async { Embedded::open(dir.path()).unwrap() });
    let commit_three = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let w = store.writer();
            let pending: Vec<_> = (0..3u8)
                .map(|_| w.send_durable(vec![Op::Append(Entry::new(Kind::DownloadStarted))]).unwrap())
                .collect();
            let mut seqs = Vec::new();
            for rx in pending {
                let answered = tokio::time::timeout(std::time::Duration::from_secs(10), rx).await;
                seqs.push(answered.expect("answered in time").unwrap().unwrap().last_seq.unwrap());
            }
            seqs
        })
    };
    assert_eq!(commit_three(&first), vec![1, 2, 3]);
    drop(first); // the answering task goes with its runtime
    let second = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    assert_eq!(commit_three(&second), vec![4, 5, 6]);
    second.block_on(store.close());
}

/// A journalled group's counter changes reach redb only when its records are published (see
/// [`unapplied`]); until then a reader of the link gets them from memory, exactly once — before
/// the publication, after it, and after a failed commit, when the journal's replay holds them.
#[tokio::test]
async fn journalled_counter_changes_are_read_back_exactly_once_before_and_after_they_reach_redb() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskSwitch::default();
    let store = Embedded::open_with(dir.path(), Default::default(), None, Some(disk.clone())).unwrap();
    let rec = link(5);
    let key = spent_key(&rec);
    let in_redb = || {
        let tx = store.database().unwrap().begin_read().unwrap();
        tx.open_table(SPENT).unwrap().get(key.as_slice()).unwrap().map(|v| v.value())
    };
    let spent = || store.link(&[5; 16]).unwrap().expect("the link is stored").1;
    let download = |bytes| vec![Op::Reserve { key, bytes }, Op::append(Entry::new(Kind::DownloadStarted))];

    // Issuing is a durable redb commit: nothing is left unpublished after it, so the next
    // journalled group does not publish.
    store.writer().commit(vec![Op::PutLink(rec.clone())]).await.unwrap();
    store.writer().commit(download(100)).await.unwrap();
    assert_eq!(in_redb(), Some(0), "redb does not hold the journalled reservation yet");
    assert_eq!(spent(), 100);

    store.publish().await.unwrap();
    assert_eq!(in_redb(), Some(100), "published with the records");
    assert_eq!(spent(), 100, "not counted twice");

    store.writer().commit(download(100)).await.unwrap();
    store.writer().send(vec![Op::Refund { key, bytes: 30 }, Op::append(Entry::new(Kind::DownloadFinished))]).unwrap();
    store.writer().flush().await.unwrap();
    assert_eq!(spent(), 170);

    // A failed commit: the writer reopens redb and replays the journal, whose frames hold every
    // change answered so far; the failed group's reservation is not among them.
    disk.set_full(true);
    assert!(store.writer().commit(download(100)).await.is_err());
    disk.set_full(false);
    store.writer().commit(download(100)).await.unwrap();
    assert_eq!(spent(), 270);
    store.publish().await.unwrap();
    assert_eq!((in_redb(), spent()), (Some(270), 270));
    store.close().await;
}
