//! The journal's tests: frames read back in order across reopens, torn tails, the older layout,
//! stale frames after a restart, the two files after a switch, a full disk.

use super::*;

fn payload(i: u8) -> FrameBuf {
    let mut f = FrameBuf::default();
    f.reserve(&[i; 24], 4096);
    f.record(u64::from(i), 1_000 + u64::from(i), br#"{"seq":1}"#);
    f.refund(&[i; 24], 96);
    f
}

/// A journal as the writer has it after recovery: read back, restarted.
fn open(path: &Path) -> Journal {
    let mut j = Journal::open(path, None).unwrap();
    let applied = j.read_back().unwrap().last().map_or(0, |f| f.number);
    j.restart(applied);
    j
}

/// A new journal holding frames 1–3.
fn open_with_three(path: &Path) -> Journal {
    let mut j = open(path);
    for i in 1..=3 {
        j.append(&payload(i)).unwrap();
    }
    j
}

fn ops(i: u8) -> Vec<JournalOp> {
    vec![
        JournalOp::Reserve { key: [i; 24], bytes: 4096 },
        JournalOp::Record { seq: u64::from(i), at_us: 1_000 + u64::from(i), json: br#"{"seq":1}"#.to_vec() },
        JournalOp::Refund { key: [i; 24], bytes: 96 },
    ]
}

#[test]
fn frames_read_back_in_order_after_reopening() {
    frames_read_back(true);
    frames_read_back(false);
}

/// `direct: false` is the buffered path taken where the filesystem refuses `O_DIRECT`.
fn frames_read_back(direct: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut j = open(&path);
    if !direct {
        j.sides[0].direct = None;
    }
    assert!(j.read_back().unwrap().is_empty());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), CAPACITY, "preallocated");
    for i in 1..=3 {
        assert_eq!(j.append(&payload(i)).unwrap(), u64::from(i));
        assert_eq!(j.offset(), u64::from(i) * BLOCK as u64, "each frame padded to one block");
    }
    drop(j);
    let mut j = Journal::open(&path, None).unwrap();
    let frames = j.read_back().unwrap();
    let got: Vec<_> = frames.iter().map(|f| (f.number, f.ops.clone())).collect();
    assert_eq!(got, (1..=3).map(|i| (u64::from(i), ops(i))).collect::<Vec<_>>());
    assert_eq!(j.next_frame(), 4);
}

#[test]
fn a_torn_or_corrupt_tail_ends_the_journal_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let j = open_with_three(&path);
    let third_at = 2 * payload(1).frame_len();
    drop(j);
    // Flip one payload byte of the third frame: a torn write looks the same to the checksum.
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, third_at + HEADER as u64 + 3).unwrap();
    f.write_all_at(&[b[0] ^ 1], third_at + HEADER as u64 + 3).unwrap();
    let frames = Journal::open(&path, None).unwrap().read_back().unwrap();
    assert_eq!(frames.iter().map(|f| f.number).collect::<Vec<_>>(), vec![1, 2]);
}

/// A frame as a build before the CRC layout wrote it (`"KDJ1"`, truncated SHA-256).
fn old_layout_frame(number: u64, payload: &FrameBuf) -> Vec<u8> {
    let len = payload.buf.len();
    let mut out = vec![0u8; padded(len)];
    out[..4].copy_from_slice(MAGIC_SHA);
    out[4..12].copy_from_slice(&number.to_le_bytes());
    out[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    out[16..HEADER].copy_from_slice(&checksum_sha(number, len as u32, &payload.buf));
    out[HEADER..HEADER + len].copy_from_slice(&payload.buf);
    out
}

#[test]
fn frames_an_older_build_wrote_still_read_back_and_new_ones_follow_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    drop(open(&path));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&old_layout_frame(1, &payload(1)), 0).unwrap();
    f.write_all_at(&old_layout_frame(2, &payload(2)), BLOCK as u64).unwrap();
    drop(f);
    let mut j = Journal::open(&path, None).unwrap();
    let frames = j.read_back().unwrap();
    assert_eq!(frames.iter().map(|f| (f.number, f.ops.clone())).collect::<Vec<_>>(), vec![(1, ops(1)), (2, ops(2))]);
    // This build appends after them (in practice it replays them and restarts at offset 0).
    j.offset = 2 * BLOCK as u64;
    assert_eq!(j.append(&payload(3)).unwrap(), 3);
    let mut head = [0u8; 4];
    j.sides[0].file.read_exact_at(&mut head, 2 * BLOCK as u64).unwrap();
    assert_eq!(&head, b"KDJ2", "new frames carry the CRC layout");
    drop(j);
    let frames = Journal::open(&path, None).unwrap().read_back().unwrap();
    assert_eq!(frames.iter().map(|f| f.number).collect::<Vec<_>>(), vec![1, 2, 3]);
    // An old-layout frame whose bytes changed fails its (SHA) checksum like a new one.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"X", BLOCK as u64 + HEADER as u64 + 1).unwrap();
    drop(f);
    let frames = Journal::open(&path, None).unwrap().read_back().unwrap();
    assert_eq!(frames.iter().map(|f| f.number).collect::<Vec<_>>(), vec![1]);
}

#[test]
fn after_a_restart_stale_frames_behind_the_new_ones_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut j = open(&path);
    for i in 1..=5 {
        j.append(&payload(i)).unwrap();
    }
    j.restart(5);
    let mut small = FrameBuf::default();
    small.reserve(&[9; 24], 1);
    assert_eq!(j.append(&small).unwrap(), 6);
    drop(j);
    let mut j = Journal::open(&path, None).unwrap();
    let frames = j.read_back().unwrap();
    assert_eq!(frames.len(), 1, "only frame 6; frames 1–5 behind it are stale");
    assert_eq!(frames[0].ops, vec![JournalOp::Reserve { key: [9; 24], bytes: 1 }]);
    assert_eq!(j.next_frame(), 7);
}

#[test]
fn after_a_switch_both_files_read_back_as_one_run_and_a_later_switch_writes_over_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.wal");
    let mut j = open_with_three(&path);
    // A checkpoint of frames 1–3 starts: 4 and 5 go to the second file while it commits.
    j.switch();
    assert_eq!(j.offset(), 0);
    assert_eq!(j.append(&payload(4)).unwrap(), 4);
    assert_eq!(j.append(&payload(5)).unwrap(), 5);
    assert!(second_path(&path).ends_with("journal.1.wal"));
    assert_eq!(std::fs::metadata(second_path(&path)).unwrap().len(), CAPACITY, "preallocated too");
    // A crash before the commit: every frame is read back, in order, from both files.
    let numbers = |frames: Vec<Frame>| frames.iter().map(|f| f.number).collect::<Vec<_>>();
    assert_eq!(numbers(read_file(&path).unwrap()), vec![1, 2, 3, 4, 5]);
    // The next checkpoint starts (the first one ended): frame 6 goes over frame 1.
    j.switch();
    assert_eq!(j.append(&payload(6)).unwrap(), 6);
    drop(j);
    let mut j = Journal::open(&path, None).unwrap();
    assert_eq!(numbers(j.read_back().unwrap()), vec![4, 5, 6], "frames 2 and 3 behind frame 6 are stale");
    assert_eq!(j.next_frame(), 7);
    // The runs are merged by number whichever file holds the older one.
    let mut j = open(&path);
    j.append(&payload(7)).unwrap();
    j.switch();
    j.append(&payload(8)).unwrap();
    drop(j);
    assert_eq!(numbers(read_file(&path).unwrap()), vec![7, 8]);
}

#[test]
fn a_full_disk_switch_fails_the_append_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let switch = DiskSwitch::default();
    let mut j = Journal::open(&path, Some(switch.clone())).unwrap();
    j.restart(0);
    switch.set_full(true);
    assert!(j.append(&payload(1)).is_err());
    switch.set_full(false);
    assert_eq!(j.append(&payload(1)).unwrap(), 1);
    assert_eq!(j.offset(), payload(1).frame_len());
}
