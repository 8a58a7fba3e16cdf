//! Disk full: when the store cannot commit, downloads are refused with `503` (never served
//! uncounted), admin writes fail with `503`, `/readyz` says so, and the server recovers by itself
//! when space returns. Two ways to fill the disk: a storage backend whose writes fail with
//! `ENOSPC` on demand (always runs), and a real tmpfs filled to the last byte (runs where the
//! test may mount one, i.e. as root; otherwise it says so and passes).

mod common;

use common::*;
use keydrop::store::DiskSwitch;
use std::time::Duration;

/// A valid new-customer body, different for each `i`.
fn customer(i: u32) -> serde_json::Value {
    serde_json::json!({
        "tenant_id": format!("3f2a9c4e-8d1b-4e6a-9f0c-{i:012x}"),
        "domain": format!("customer-{i}.example.com"),
        "name": format!("Customer {i} {}", "x".repeat(150)),
        "country": "US",
    })
}

async fn readyz(s: &Server) -> u16 {
    get(&format!("http://{}/readyz", s.admin), &[]).await.unwrap().0
}

/// The activity log verifies and its `seq` has no gaps.
async fn assert_log_intact(s: &Server) {
    let (st, v) = s.api("GET", "/api/activity/verify", "global_admin", None).await;
    assert_eq!((st, v["ok"].as_bool()), (200, Some(true)), "{v}");
    let seqs: Vec<u64> = s.records().await.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "seq has gaps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_downloads_with_503_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = admin_config(dir.path());
    let disk = DiskSwitch::default();
    let s = Server::start_full(dir, cfg, Some(disk.clone())).await;
    let data = s.add_file("f", "f.bin", 200_000).await;
    s.open_order("o").await;
    let link = s.issue("o", "f", 5).await;
    assert_eq!(get(&link.url, &[]).await.unwrap().0, 200);
    let before = s.settled(&link).await;
    assert_eq!(before.downloads_used, 1.0);

    disk.set_full(true);
    for _ in 0..5 {
        let (st, h, b) = get(&link.url, &[]).await.unwrap();
        assert_eq!(st, 503, "served while the store cannot count: {}", String::from_utf8_lossy(&b[..b.len().min(200)]));
        assert_eq!(problem(&b)["code"], "unavailable");
        assert!(h.contains_key("retry-after"));
    }
    assert_eq!(readyz(&s).await, 503);
    let (st, v) = s.api("POST", "/api/customers", "admin_agent", Some(customer(1))).await;
    assert_eq!(st, 503, "an admin write acknowledged while nothing can be written: {v}");

    disk.set_full(false);
    within(10, "ready again", async {
        while readyz(&s).await != 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let (st, _, b) = get(&link.url, &[]).await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(sha256_hex(&b), sha256_hex(&data));
    let after = s.settled(&link).await;
    assert_eq!(after.downloads_used, 2.0, "the refused requests cost nothing, the two served ones one each");
    let (st, v) = s.api("POST", "/api/customers", "admin_agent", Some(customer(1))).await;
    assert_eq!(st, 201, "{v}");
    assert_log_intact(&s).await;
    s.stop().await;
}

/// Mounts a tmpfs of `mib` MiB at `at`; false if this process may not.
fn mount_tmpfs(at: &std::path::Path, mib: u32) -> bool {
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_full_tmpfs_never_serves_uncounted_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    if !mount_tmpfs(&data_dir, 16) {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the DiskSwitch test covers the path");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(data_dir.clone());
    let cfg = admin_config(dir.path());
    let s = Server::start_with(dir, cfg).await;
    s.add_file("f", "f.bin", 4096).await;
    s.open_order("o").await;
    let link = s.issue("o", "f", 50).await;
    assert_eq!(get(&link.url, &[]).await.unwrap().0, 200);

    // Fill the filesystem to the last byte.
    let filler = data_dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0xa5u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
    }
    // Keep downloading and issuing links until the store fails to commit; every 200 must be
    // counted, so what the server reports spent always covers what it served.
    let (mut served, mut refused) = (0u32, 0u32);
    for i in 0..2000 {
        let (st, _, b) = get(&link.url, &[]).await.unwrap();
        match st {
            200 => served += 1,
            503 => {
                assert_eq!(problem(&b)["code"], "unavailable");
                refused += 1;
            }
            410 => break,
            other => panic!("unexpected {other}"),
        }
        // Admin writes grow the database so that a commit needs fresh pages.
        let (st, v) = s.api("POST", "/api/customers", "admin_agent", Some(customer(i))).await;
        assert!(st == 201 || st == 503, "admin write answered {st}: {v}");
        if refused >= 3 {
            break;
        }
    }
    assert!(refused >= 3, "the disk never filled ({served} served)");
    eprintln!("tmpfs full: {served} downloads served and counted, then {refused} refused with 503");
    // (`/readyz` may already say 200 here: an empty probe commit can fit in recycled pages.)

    std::fs::remove_file(&filler).unwrap();
    within(15, "ready again", async {
        while readyz(&s).await != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(get(&link.url, &[]).await.unwrap().0, 200);
    served += 2; // the one before filling, the one just now
    let st = s.settled(&link).await;
    assert!(
        st.downloads_used >= served as f64 - 1e-9,
        "served {served} full downloads but only {} were counted",
        st.downloads_used
    );
    assert_log_intact(&s).await;
    s.stop().await;
}
