//! Checkpoints committing on their own thread while journalled groups go on
//! ([`super::checkpointer`]): counters read exactly on either side of each commit, every record
//! kept and found by the filter index, and after a restart redb alone holds all of it.

use super::tests::link;
use super::*;
use crate::activity::{Entry, Kind, Query};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const LINKS: u8 = 8;

fn spent(store: &Embedded, i: u8) -> u64 {
    store.link(&[i; 16]).unwrap().expect("the link is stored").1
}

/// How many records of order `o{i}` a filtered query finds.
fn found(store: &Embedded, i: u8) -> usize {
    let (mut n, mut after) = (0, 0);
    loop {
        let q = Query { order_id: Some(format!("o{i}")), after_seq: after, limit: 1000, ..Default::default() };
        let (recs, next) = store.query_activity(&q).unwrap();
        n += recs.len();
        match next {
            Some(s) => after = s,
            None => return n,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_commit_beside_journalled_groups_and_nothing_is_counted_twice_or_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Embedded::open(dir.path()).unwrap());
    let keys: Vec<SpentKey> = (0..LINKS).map(|i| spent_key(&link(i))).collect();
    for i in 0..LINKS {
        store.writer().commit(vec![Op::PutLink(link(i))]).await.unwrap();
    }
    // A reader beside the writer: a counter counted twice, even for a moment, would go above
    // where it ends or come back down.
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let mut seen = vec![0u64; usize::from(LINKS)];
            let (mut reads, mut listed) = (0u64, 0usize);
            while !done.load(Ordering::Relaxed) {
                for i in 0..LINKS {
                    let now = spent(&store, i);
                    assert!(now >= seen[usize::from(i)], "link {i} went back from {} to {now}", seen[usize::from(i)]);
                    seen[usize::from(i)] = now;
                    reads += 1;
                }
                // The filter index's entries move from memory into the table on a checkpoint's
                // thread: a filtered query finds them on one side or the other, never neither.
                let now = found(&store, 0);
                assert!(now >= listed, "order o0's records went back from {listed} to {now}");
                listed = now;
            }
            (seen, reads)
        })
    };
    // 400 groups of 50 downloads: about 12 KiB of journal each, so some four checkpoints (and
    // two filter index flushes) commit while groups go on.
    let mut expect = vec![0u64; usize::from(LINKS)];
    for round in 0..400u64 {
        let mut ops = Vec::with_capacity(100);
        for d in 0..50u64 {
            let i = ((round * 50 + d) % u64::from(LINKS)) as u8;
            let bytes = 1 + (round * 7 + d) % 100;
            let mut e = Entry::new(Kind::DownloadStarted);
            e.order_id = Some(format!("o{i}"));
            ops.extend([Op::Reserve { key: keys[usize::from(i)], bytes }, Op::append(e)]);
            expect[usize::from(i)] += bytes;
        }
        store.writer().commit(ops).await.unwrap();
        let i = (round % u64::from(LINKS)) as u8;
        assert_eq!(spent(&store, i), expect[usize::from(i)], "link {i} after group {round}");
    }
    done.store(true, Ordering::Relaxed);
    let (seen, reads) = reader.join().expect("the reader saw every counter only grow");
    assert!(reads > 0);
    for i in 0..LINKS {
        assert!(seen[usize::from(i)] <= expect[usize::from(i)], "link {i} read above its total");
        assert_eq!(spent(&store, i), expect[usize::from(i)]);
    }
    let second = journal::second_path(&dir.path().join(JOURNAL_FILE));
    assert!(!journal::read_file(&second).unwrap().is_empty(), "checkpoints switched the journal to its second file");
    assert!(store.writer.stats.checkpoints.load(Ordering::Relaxed) >= 3, "checkpoints started on their own thread");

    store.publish().await.unwrap();
    assert_eq!(store.record_count().unwrap(), 20_000);
    for i in 0..LINKS {
        assert_eq!(found(&store, i), 2_500, "order o{i}'s records, filtered");
    }
    store.close().await;
    drop(store);

    // Reopened: redb holds every counter, and every record is where it was.
    let store = Embedded::open(dir.path()).unwrap();
    for i in 0..LINKS {
        assert_eq!(spent(&store, i), expect[usize::from(i)]);
        assert_eq!(found(&store, i), 2_500);
    }
    assert_eq!(store.record_count().unwrap(), 20_000);
    store.close().await;
}

/// The disk fills for a moment, again and again, while groups are journalled and checkpoints
/// start and commit on their thread: whichever step a failure hits (a group's frame, a
/// publication, a checkpoint's start or its commit), the writer reopens redb and replays both
/// journal files, and every download answered `Ok` is counted — once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filling_around_checkpoints_loses_no_answered_download_and_counts_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskSwitch::default();
    let store = Embedded::open_with(dir.path(), Default::default(), None, Some(disk.clone())).unwrap();
    let key = spent_key(&link(1));
    store.writer().commit(vec![Op::PutLink(link(1))]).await.unwrap();
    let (mut ok, mut failed, mut last, mut started) = (0u64, 0u64, 0u64, 0u64);
    let stats = store.writer().stats.clone();
    for round in 0..800u64 {
        let ops = (0..50).flat_map(|_| [Op::Reserve { key, bytes: 10 }, Op::append(Entry::new(Kind::DownloadStarted))]);
        // The disk fills 0–1.5 ms after a checkpoint started (while it commits, or just after),
        // and now and then elsewhere, for one group.
        let now_started = stats.checkpoints.load(Ordering::Relaxed);
        let full = now_started > started || round % 97 == 96;
        started = now_started;
        if full {
            std::thread::sleep(std::time::Duration::from_micros(round % 4 * 500));
            disk.set_full(true);
        }
        match store.writer().commit(ops.collect()).await {
            Ok(_) => ok += 500,
            Err(_) => failed += 500,
        }
        if full {
            disk.set_full(false);
        }
        // A read between failures: never below what was answered, never above what was sent.
        if let Ok(Some((_, now))) = store.link(&[1; 16]) {
            assert!(
                now >= last && now >= ok && now <= ok + failed,
                "round {round}: {now}, {ok} answered, {failed} failed"
            );
            last = now;
        }
    }
    assert!(stats.checkpoints.load(Ordering::Relaxed) >= 2, "checkpoints started on their own thread");
    assert!(stats.failed_commits.load(Ordering::Relaxed) > 0 && failed > 0, "the full disk failed something");
    store.writer().flush().await.unwrap();
    let now = spent(&store, 1);
    assert!(now >= ok && now <= ok + failed, "{now}: {ok} answered, {failed} failed");
    store.publish().await.unwrap();
    assert_eq!(store.record_count().unwrap(), now / 10, "one record per download counted");
    store.close().await;
    drop(store);
    let store = Embedded::open(dir.path()).unwrap();
    assert_eq!(spent(&store, 1), now, "reopened, the same count");
    assert_eq!(store.record_count().unwrap(), now / 10);
    store.close().await;
}
