//! A database through all five tools to a directory replica and back:
//! every restore equals the source byte for byte and passes
//! integrity_check, and `litestream restore` gives the same file as
//! `lsw-pull | lsw-apply`.

mod common;

use std::path::Path;

use common::*;
use rusqlite::Connection;

/// Replicate with the pipeline (small parts, so snapshots have many),
/// restore both ways, compare both with the source.
fn round_trip(dir: &Path, db: &str) {
    sh_ok(dir, &format!("lsw-shadow --once {db} | lsw-segment --part-size 64KiB | lsw-push rep"));
    sh_ok(dir, "lsw-pull rep | lsw-apply piped.db");
    sh_ok(dir, "litestream restore -o meta.db file://$PWD/rep");
    assert_eq!(std::fs::read(dir.join("piped.db")).unwrap(), std::fs::read(dir.join("meta.db")).unwrap());
    assert_restored_equals(&dir.join("piped.db"), &dir.join(db));
    assert!(files_containing(dir, "lsw-restore").is_empty());
}

#[test]
fn page_sizes_512_4096_65536() {
    for page_size in [512, 4096, 65536] {
        let dir = tempfile::tempdir().unwrap();
        let conn = create_db(&dir.path().join("src.db"), page_size);
        fill(&conn, 3000, 200, 500, u64::from(page_size));
        drop(conn);
        round_trip(dir.path(), "src.db");
        let conn = Connection::open(dir.path().join("piped.db")).unwrap();
        let ps: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        assert_eq!(ps, page_size);
    }
}

#[test]
fn empty_database() {
    let dir = tempfile::tempdir().unwrap();
    drop(create_db(&dir.path().join("src.db"), 4096));
    round_trip(dir.path(), "src.db");
}

#[test]
fn freelist_after_large_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let conn = create_db(&dir.path().join("src.db"), 4096);
    fill(&conn, 20_000, 300, 2000, 7);
    conn.execute("DELETE FROM t WHERE id % 4 != 0", []).unwrap();
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0)).unwrap();
    assert!(free > 100, "expected a large freelist, got {free}");
    drop(conn);
    round_trip(dir.path(), "src.db");
}

#[test]
fn pending_wal_frames_are_included() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.db");
    let conn = create_db(&path, 4096);
    conn.execute_batch("PRAGMA wal_autocheckpoint=0").unwrap();
    fill(&conn, 5000, 100, 100, 3);
    let wal = std::fs::metadata(dir.path().join("src.db-wal")).unwrap().len();
    assert!(wal > 1 << 20, "the WAL should hold the writes, it is {wal} bytes");
    // The connection stays open, so nothing is checkpointed while we read.
    sh_ok(dir.path(), "lsw-shadow --once src.db | lsw-segment | lsw-push rep && lsw-pull rep | lsw-apply out.db");
    let rows: i64 = Connection::open(dir.path().join("out.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 5000);
    drop(conn);
    assert_restored_equals(&dir.path().join("out.db"), &path);
}

#[test]
fn shrunk_database_after_vacuum() {
    let dir = tempfile::tempdir().unwrap();
    let conn = create_db(&dir.path().join("src.db"), 1024);
    fill(&conn, 10_000, 200, 1000, 11);
    conn.execute_batch("DELETE FROM t WHERE id > 100; VACUUM;").unwrap();
    drop(conn);
    round_trip(dir.path(), "src.db");
}

#[test]
fn frame_stream_applies_directly() {
    let dir = tempfile::tempdir().unwrap();
    let conn = create_db(&dir.path().join("src.db"), 4096);
    fill(&conn, 2000, 100, 200, 5);
    drop(conn);
    sh_ok(dir.path(), "lsw-shadow --once src.db | lsw-apply out.db");
    assert_restored_equals(&dir.path().join("out.db"), &dir.path().join("src.db"));
}

#[test]
fn push_is_idempotent_and_generations_are_selectable() {
    let dir = tempfile::tempdir().unwrap();
    let conn = create_db(&dir.path().join("src.db"), 4096);
    fill(&conn, 1000, 100, 100, 1);
    sh_ok(dir.path(), "lsw-shadow --once src.db | lsw-segment > first.segs");
    sh_ok(dir.path(), "lsw-push rep < first.segs");
    let again = sh_ok(dir.path(), "lsw-push -v rep < first.segs");
    assert!(again.contains("stored 0 segments"), "{again}");
    assert!(again.contains("already present"), "{again}");
    sh_ok(dir.path(), "lsw-apply first.db < first.segs");

    // A second generation with more rows becomes the latest.
    fill(&conn, 1000, 100, 100, 2);
    drop(conn);
    sh_ok(dir.path(), "lsw-shadow --once src.db | lsw-segment | lsw-push rep");
    sh_ok(dir.path(), "lsw-pull rep | lsw-apply latest.db");
    assert_restored_equals(&dir.path().join("latest.db"), &dir.path().join("src.db"));

    // The first generation is still there by name.
    let first_gen = std::fs::read_dir(dir.path().join("rep/lsw1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|g| {
            let out = sh(dir.path(), &format!("lsw-pull --generation {g} rep | lsw-apply check-{g}.db"));
            assert!(out.status.success());
            std::fs::read(dir.path().join(format!("check-{g}.db"))).unwrap() == std::fs::read(dir.path().join("first.db")).unwrap()
        });
    assert!(first_gen.is_some(), "the first generation should restore to the first state");

    let out = sh(dir.path(), "lsw-pull --txid 7 rep > /dev/null");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ends at txid 1"));
}

#[test]
fn snapshot_while_a_writer_commits_is_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.db");
    let conn = create_db(&path, 4096);
    conn.execute_batch("CREATE TABLE seq(id INTEGER PRIMARY KEY, pad TEXT)").unwrap();
    drop(conn);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let conn = Connection::open(&path).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 200 {
                conn.execute("INSERT INTO seq(pad) VALUES (hex(randomblob(300)))", []).unwrap();
                n += 1;
            }
            n
        })
    };
    for i in 0..5 {
        sh_ok(dir.path(), &format!("lsw-shadow --once src.db | lsw-apply snap{i}.db"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    for i in 0..5 {
        let snap = dir.path().join(format!("snap{i}.db"));
        integrity_ok(&snap);
        let (count, max): (i64, Option<i64>) = Connection::open(&snap)
            .unwrap()
            .query_row("SELECT count(*), max(id) FROM seq", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        // Every committed insert up to some point, and none after it.
        assert_eq!(Some(count), max.or(Some(0)), "snapshot {i} is not a prefix of the writes");
        assert!(count as u64 <= written);
    }
}

#[test]
fn database_of_200_mb() {
    let dir = tempfile::tempdir().unwrap();
    let conn = create_db(&dir.path().join("src.db"), 4096);
    fill(&conn, 400_000, 480, 20_000, 42);
    drop(conn);
    let size = std::fs::metadata(dir.path().join("src.db")).unwrap().len();
    assert!(size > 200_000_000, "database is only {size} bytes");
    sh_ok(dir.path(), "lsw-shadow --once src.db | lsw-segment | lsw-push rep");
    sh_ok(dir.path(), "lsw-pull rep | lsw-apply piped.db");
    sh_ok(dir.path(), "litestream restore -o meta.db rep");
    assert_eq!(std::fs::read(dir.path().join("piped.db")).unwrap(), std::fs::read(dir.path().join("meta.db")).unwrap());
    assert_restored_equals(&dir.path().join("piped.db"), &dir.path().join("src.db"));
}
