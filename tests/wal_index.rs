//! Capture reads a pass through SQLite's wal-index (lib/src/wal_index.rs),
//! reading only the last version of each page. It must leave exactly what
//! reading the WAL frame by frame and merging the commits leaves (pages,
//! size, and the WAL position with its checksum chain), or decline.

mod common;

use std::path::Path;

use common::*;
use lsw::merged::MergedPages;
use lsw::wal::WalReader;
use lsw::wal_index::{read_pass, WalIndex};
use rusqlite::Connection;

type Pages = Vec<(u32, Vec<u8>)>;

/// A writer that leaves checkpoints to the test, and a reader whose read
/// transaction keeps the WAL from restarting (and maps the wal-index).
fn open(db: &Path) -> (Connection, Connection) {
    let writer = create_db(db, 4096);
    writer.execute_batch("PRAGMA wal_autocheckpoint=0").unwrap();
    fill(&writer, 20, 300, 10, 1);
    let held = Connection::open(db).unwrap();
    held.execute_batch("BEGIN; SELECT count(*) FROM t;").unwrap();
    (writer, held)
}

/// Read every commit past `r`'s position frame by frame, merged.
fn merged_frame_by_frame(r: &mut WalReader, page_size: u32, db_pages_before: u32) -> (Pages, u32) {
    let mut merged = MergedPages::new(page_size, Vec::new(), db_pages_before);
    while let Some(txn) = r.next_txn().unwrap() {
        merged.apply(txn.pages, txn.db_pages);
    }
    let db_pages = merged.db_pages();
    (merged.into_pages().into_iter().collect(), db_pages)
}

fn page_count(conn: &Connection) -> u32 {
    conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap()
}

#[test]
fn a_pass_read_through_the_index_equals_the_merged_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let (writer, held) = open(&db);
    let wal = lsw::dbfile::wal_path(&db);
    let mut by_frames = WalReader::open(&wal).unwrap().expect("a WAL");
    let mut by_index = WalReader::open(&wal).unwrap().expect("a WAL");
    let index = WalIndex::of(&held).expect("a wal-index");
    let mut db_pages = 0;
    for round in 0..3u64 {
        // Inserts that grow the database, updates that rewrite the same
        // pages many times over, deletes that free pages.
        fill(&writer, 200, 300, 7, round + 2);
        for i in 0..50 {
            writer.execute("UPDATE t SET n = n + 1 WHERE id % 10 = ?1", [i % 10]).unwrap();
        }
        writer.execute("DELETE FROM t WHERE id % 3 = ?1", [round as i64]).unwrap();

        let (want, want_size) = merged_frame_by_frame(&mut by_frames, 4096, db_pages);
        let frames = by_frames.frames() - by_index.frames();
        let got = read_pass(&mut by_index, &index, usize::MAX, db_pages).unwrap().expect("read through the index");
        assert_eq!(got.frames, frames, "round {round}");
        assert!(want.len() as u64 * 5 < frames, "round {round}: pages were written over and over");
        assert_eq!(got.db_pages, want_size, "round {round}");
        assert!(got.pages == want, "round {round}: the last versions differ from the merged commits");
        assert_eq!(by_index.position(0), by_frames.position(0), "round {round}: position and checksum chain");
        db_pages = want_size;

        let again = read_pass(&mut by_index, &index, usize::MAX, db_pages).unwrap().expect("nothing new");
        assert_eq!((again.frames, again.pages.len()), (0, 0));
    }
    assert_eq!(db_pages, page_count(&writer));
}

#[test]
fn the_index_declines_what_only_the_commits_one_by_one_can_tell() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let (writer, held) = open(&db);
    fill(&writer, 600, 300, 50, 2);
    let wal = lsw::dbfile::wal_path(&db);
    let mut r = WalReader::open(&wal).unwrap().expect("a WAL");
    let index = WalIndex::of(&held).expect("a wal-index");
    let start = r.position(0);

    // More distinct pages than a pass may hold: the reader stays put.
    assert!(read_pass(&mut r, &index, 10, 0).unwrap().is_none());
    assert_eq!(r.position(0), start);

    // Caught up to here, then the database shrinks and grows again.
    let (_, mut db_pages) = merged_frame_by_frame(&mut r, 4096, 0);
    let at = r.position(0);
    let full = page_count(&writer);
    writer.execute_batch("DELETE FROM t WHERE id > 50; VACUUM;").unwrap();
    let shrunk = page_count(&writer);
    assert!(shrunk < full / 2, "VACUUM shrank the database ({full} -> {shrunk} pages)");
    fill(&writer, 200, 300, 50, 3);
    assert!(page_count(&writer) > shrunk);
    assert!(read_pass(&mut r, &index, usize::MAX, db_pages).unwrap().is_none(), "a regrowth is only seen commit by commit");
    assert_eq!(r.position(0), at);
    // Frame by frame takes it, and from there the index serves again.
    db_pages = merged_frame_by_frame(&mut r, 4096, db_pages).1;
    fill(&writer, 30, 300, 10, 4);
    let pass = read_pass(&mut r, &index, usize::MAX, db_pages).unwrap().expect("read through the index");
    assert_eq!(pass.db_pages, page_count(&writer));
}

/// Capture holds SQLite's checkpoint lock (lib/src/checkpoint_guard.rs):
/// the application's checkpoints are refused, ours run, and the lock is
/// let go of when the wal-index header needs the recovery that only the
/// lock allows, and when the guard is dropped.
#[test]
fn the_checkpoint_guard_refuses_the_applications_checkpoints_but_not_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.db");
    let app = create_db(&db, 4096);
    app.execute_batch("PRAGMA wal_autocheckpoint=0").unwrap();
    fill(&app, 200, 300, 10, 1);

    let mut guard = lsw::checkpoint_guard::CheckpointGuard::open(&db).unwrap();
    guard.refresh();
    assert!(guard.is_held(), "the lock should be free to take");
    let (busy, _, _) = passive_checkpoint(&app);
    assert_eq!(busy, 1, "the application's checkpoint should be refused");

    let ours = guard.checkpoint(std::time::Instant::now()).unwrap();
    assert!(!ours.busy && ours.frames > 0 && ours.backfilled == ours.frames, "{ours:?}");
    assert!(guard.is_held(), "the lock should be taken again after our checkpoint");

    // A writer that died publishing the wal-index header leaves its two
    // copies different. Rebuilding the index needs the checkpoint lock:
    // without letting go of it the next read would retry for seconds and
    // fail. (The descriptor is never closed: closing it would drop this
    // process's locks on the file, the guard's included.)
    fill(&app, 10, 300, 10, 2);
    let count = |c: &Connection| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0));
    let before = count(&app).unwrap();
    let shm = std::fs::OpenOptions::new().write(true).open(dir.path().join("src.db-shm")).unwrap();
    use std::os::unix::fs::FileExt;
    shm.write_all_at(&0x5a5a_5a5au32.to_ne_bytes(), 8).unwrap();
    std::mem::forget(shm);
    guard.refresh();
    assert!(!guard.is_held(), "an inconsistent header should make the guard let go");
    app.busy_timeout(std::time::Duration::ZERO).unwrap();
    assert_eq!(count(&app).unwrap(), before);
    guard.refresh();
    assert!(guard.is_held(), "the rebuilt header should let the guard hold the lock again");

    drop(guard);
    let (busy, frames, done) = passive_checkpoint(&app);
    assert_eq!((busy, done), (0, frames), "with the guard gone the application checkpoints again");
}
