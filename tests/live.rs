//! Continuous capture: `litestream replicate` and the `lsw-shadow |
//! lsw-segment | lsw-push` pipeline follow a live database through page
//! sizes, VACUUM, shrinking, missing WALs, the application's own
//! checkpoints, and restarts after the database changed behind them.
//! Every restore equals the (checkpointed) source byte for byte.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rusqlite::Connection;

/// A replicator child that is killed if a test fails before stopping it,
/// and the shadow log lock it takes once it is running (its signal
/// handlers are installed by then).
struct Running(Option<Child>, PathBuf);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Running {
    /// SIGTERM once it runs, then wait (with a deadline) for a clean
    /// exit; returns stderr.
    fn stop(mut self) -> String {
        let pid = self.0.as_ref().unwrap().id();
        let lock = self.1.clone();
        wait_for("the replicator to take its lock", 30, || {
            let exited = self.0.as_mut().unwrap().try_wait().unwrap().is_some();
            exited || std::fs::read_to_string(&lock).is_ok_and(|p| p.trim() == pid.to_string())
        });
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        self.wait()
    }

    /// Wait (with a deadline) for a clean exit; returns stderr.
    fn wait(mut self) -> String {
        let mut child = self.0.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                assert!(status.success(), "replicator exited with {status}:\n{err}");
                return err;
            }
            assert!(Instant::now() < deadline, "replicator did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn replicate(dir: &Path, db: &str, replica: &str, extra: &[&str]) -> Running {
    replicate_args(dir, db, &[extra, &[db, replica]].concat())
}

/// `litestream replicate ARGS` replicating `db`.
fn replicate_args(dir: &Path, db: &str, args: &[&str]) -> Running {
    let child = Command::new(bin("litestream"))
        .arg("replicate")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = lsw::shadow_log::state_dir(&dir.join(db)).join("lock");
    Running(Some(child), lock)
}

/// `lsw-shadow --ack | lsw-segment | lsw-push --ack`, each stage a child.
struct Pipeline(Vec<Running>);

impl Pipeline {
    fn start(dir: &Path, db: &str, replica: &str, ack: &str) -> Self {
        let spawn = |name: &str, args: &[&str], stdin: Stdio| {
            Command::new(bin(name))
                .args(args)
                .current_dir(dir)
                .stdin(stdin)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut shadow = spawn("lsw-shadow", &["--ack", ack, db], Stdio::null());
        let mut segment = spawn("lsw-segment", &[], Stdio::from(shadow.stdout.take().unwrap()));
        let push = spawn("lsw-push", &["--ack", ack, replica], Stdio::from(segment.stdout.take().unwrap()));
        let lock = lsw::shadow_log::state_dir(&dir.join(db)).join("lock");
        let none = PathBuf::new();
        Pipeline(vec![Running(Some(shadow), lock), Running(Some(segment), none.clone()), Running(Some(push), none)])
    }

    /// SIGTERM lsw-shadow: it captures what is left and ends the stream,
    /// and the other stages drain and exit 0. Returns lsw-shadow's stderr.
    fn stop(mut self) -> String {
        let push = self.0.pop().unwrap();
        let segment = self.0.pop().unwrap();
        let log = self.0.pop().unwrap().stop();
        segment.wait();
        push.wait();
        log
    }
}

/// Wait until `cond` holds, polling, or fail after `secs`.
fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Segment files in the replica.
fn segments(replica: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for gen in std::fs::read_dir(replica.join("lsw1")).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(gen.path()).unwrap().flatten() {
            if !f.file_name().to_string_lossy().starts_with('.') {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

fn generations(replica: &Path) -> usize {
    std::fs::read_dir(replica.join("lsw1")).map_or(0, |d| d.count())
}

fn restore_and_compare(dir: &Path, replica: &str, out: &str, source: &str) {
    sh_ok(dir, &format!("litestream restore -o {out} {replica}"));
    assert_restored_equals(&dir.join(out), &dir.join(source));
}

fn writer(path: &Path) -> Connection {
    let c = Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

#[test]
fn follows_writes_at_page_sizes_512_4096_65536() {
    for page_size in [512, 4096, 65536] {
        let dir = tempfile::tempdir().unwrap();
        let conn = create_db(&dir.path().join("src.db"), page_size);
        fill(&conn, 500, 100, 50, 1);
        let r = replicate(dir.path(), "src.db", "rep", &["--min-checkpoint-page-count", "50"]);
        wait_for("the snapshot", 30, || !segments(&dir.path().join("rep")).is_empty());
        fill(&conn, 3000, 300, 30, u64::from(page_size));
        conn.execute("DELETE FROM t WHERE id % 3 = 0", []).unwrap();
        r.stop();
        drop(conn);
        assert_eq!(generations(&dir.path().join("rep")), 1);
        restore_and_compare(dir.path(), "rep", "out.db", "src.db");
    }
}

#[test]
fn vacuum_and_a_shrinking_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.db");
    let conn = create_db(&path, 4096);
    fill(&conn, 8000, 400, 800, 9);
    let r = replicate(dir.path(), "src.db", "rep", &[]);
    wait_for("the snapshot", 30, || !segments(&dir.path().join("rep")).is_empty());
    conn.execute("DELETE FROM t WHERE id > 500", []).unwrap();
    conn.execute_batch("VACUUM").unwrap();
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    fill(&conn, 200, 100, 10, 10);
    r.stop();
    drop(conn);
    assert!(pages < 200, "VACUUM should have shrunk the database, it has {pages} pages");
    restore_and_compare(dir.path(), "rep", "out.db", "src.db");
}

#[test]
fn the_applications_own_checkpoints_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.db");
    let conn = create_db(&path, 4096);
    let r = replicate(dir.path(), "src.db", "rep", &[]);
    wait_for("the snapshot", 30, || !segments(&dir.path().join("rep")).is_empty());
    let other = Connection::open(&path).unwrap();
    other.busy_timeout(Duration::from_millis(200)).unwrap();
    for (i, mode) in ["PASSIVE", "FULL", "RESTART", "TRUNCATE"].iter().cycle().take(12).enumerate() {
        fill(&conn, 300, 200, 30, i as u64);
        // RESTART and TRUNCATE may report busy while our reader holds a
        // mark; either way no transaction may be lost.
        let _ = other.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get::<_, i64>(0));
    }
    r.stop();
    drop((conn, other));
    restore_and_compare(dir.path(), "rep", "out.db", "src.db");
}

#[test]
fn missing_and_empty_wal_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.db");
    let conn = create_db(&path, 4096);
    fill(&conn, 1000, 100, 100, 3);
    drop(conn); // the last connection checkpoints and removes the WAL
    assert!(!dir.path().join("src.db-wal").exists());
    let r = replicate(dir.path(), "src.db", "rep", &[]);
    wait_for("the snapshot", 30, || !segments(&dir.path().join("rep")).is_empty());
    let conn = writer(&path);
    fill(&conn, 500, 100, 10, 4);
    r.stop();
    restore_and_compare(dir.path(), "rep", "out.db", "src.db");

    // An empty WAL (truncated by the application) at start.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(std::fs::metadata(dir.path().join("src.db-wal")).unwrap().len(), 0);
    let r = replicate(dir.path(), "src.db", "rep", &[]);
    fill(&conn, 500, 100, 10, 5);
    r.stop();
    drop(conn);
    restore_and_compare(dir.path(), "rep", "out2.db", "src.db");
}

#[test]
fn a_second_replicator_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let conn = create_db(&dir.path().join("src.db"), 4096);
    fill(&conn, 10, 10, 10, 1);
    let r = replicate(dir.path(), "src.db", "rep", &[]);
    wait_for("the snapshot", 30, || !segments(&dir.path().join("rep")).is_empty());
    let out = sh(dir.path(), "litestream replicate src.db rep2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("another replicator is already running"), "{err}");
    r.stop();
}

#[test]
fn restart_resumes_across_a_checkpoint_while_down() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.db");
    let conn = create_db(&path, 4096);
    fill(&conn, 1000, 200, 100, 1);
    let r = replicate(dir.path(), "src.db", "rep", &[]);
    fill(&conn, 1000, 200, 100, 2);
    r.stop();
    // While it is down: more writes, then the WAL is folded in and reset.
    fill(&conn, 1000, 200, 100, 3);
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)).unwrap();
    fill(&conn, 100, 200, 10, 4);
    let r = replicate(dir.path(), "src.db", "rep", &[]);
    fill(&conn, 100, 200, 10, 5);
    let log = r.stop();
    drop(conn);
    assert!(log.contains("resumed generation"), "{log}");
    assert!(log.contains("the WAL was restarted while capture was stopped"), "{log}");
    assert_eq!(generations(&dir.path().join("rep")), 1, "continuity should be proven, not restarted");
    restore_and_compare(dir.path(), "rep", "out.db", "src.db");
}

#[test]
fn restart_after_the_wal_was_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.db");
    let conn = create_db(&path, 4096);
    fill(&conn, 1000, 200, 100, 1);
    let r = replicate(dir.path(), "src.db", "rep", &[]);
    fill(&conn, 200, 200, 10, 2);
    r.stop();
    fill(&conn, 200, 200, 10, 3);
    drop(conn); // last connection: checkpoint and delete the WAL
    assert!(!dir.path().join("src.db-wal").exists());
    let r = replicate(dir.path(), "src.db", "rep", &[]);
    let conn = writer(&path);
    fill(&conn, 200, 200, 10, 4);
    let log = r.stop();
    drop(conn);
    assert!(log.contains("resumed generation"), "{log}");
    assert_eq!(generations(&dir.path().join("rep")), 1);
    restore_and_compare(dir.path(), "rep", "out.db", "src.db");
}

#[test]
fn restart_after_the_database_was_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.db");
    let conn = create_db(&path, 4096);
    fill(&conn, 2000, 200, 100, 1);
    drop(conn);
    let r = replicate(dir.path(), "src.db", "rep", &[]);
    wait_for("the snapshot", 30, || !segments(&dir.path().join("rep")).is_empty());
    r.stop();
    // Another database put in its place.
    std::fs::remove_file(&path).unwrap();
    let conn = create_db(&path, 4096);
    fill(&conn, 6000, 150, 100, 99);
    drop(conn);
    let r = replicate(dir.path(), "src.db", "rep", &[]);
    let conn = writer(&path);
    fill(&conn, 10, 10, 1, 100);
    let log = r.stop();
    drop(conn);
    assert!(log.contains("new generation"), "{log}");
    assert_eq!(generations(&dir.path().join("rep")), 2);
    restore_and_compare(dir.path(), "rep", "out.db", "src.db");
}

#[test]
fn restore_then_replicate_again() {
    let dir = tempfile::tempdir().unwrap();
    let conn = create_db(&dir.path().join("src.db"), 4096);
    fill(&conn, 1000, 200, 50, 1);
    let r = replicate(dir.path(), "src.db", "rep", &[]);
    fill(&conn, 500, 200, 50, 2);
    r.stop();
    drop(conn);
    // Lose the machine: restore elsewhere and replicate the copy to the same replica.
    sh_ok(dir.path(), "mkdir new && litestream restore -o new/app.db rep");
    let before = segments(&dir.path().join("rep")).len();
    let r = replicate(dir.path(), "new/app.db", "rep", &[]);
    let conn = writer(&dir.path().join("new/app.db"));
    fill(&conn, 300, 200, 30, 3);
    r.stop();
    drop(conn);
    assert!(segments(&dir.path().join("rep")).len() > before);
    restore_and_compare(dir.path(), "rep", "out.db", "new/app.db");
}

#[test]
fn pipeline_with_ack_resumes_and_matches_litestream_replicate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.db");
    let conn = create_db(&path, 4096);
    fill(&conn, 1000, 200, 100, 1);

    let pipeline = |dir: &Path| Pipeline::start(dir, "src.db", "piped", "ack");
    let p = pipeline(dir.path());
    wait_for("the ack file", 30, || dir.path().join("ack").exists());
    fill(&conn, 500, 200, 10, 2);
    p.stop();
    fill(&conn, 500, 200, 10, 3);
    let p = pipeline(dir.path());
    fill(&conn, 100, 200, 10, 4);
    let log = p.stop();
    assert!(log.contains("resumed generation"), "{log}");
    assert_eq!(generations(&dir.path().join("piped")), 1, "{log}");

    // The same database replicated by the meta-binary restores to the same bytes.
    let r = replicate(dir.path(), "src.db", "meta", &[]);
    wait_for("the snapshot", 30, || !segments(&dir.path().join("meta")).is_empty());
    r.stop();
    drop(conn);
    sh_ok(dir.path(), "lsw-pull piped | lsw-apply piped.db && litestream restore -o meta.db meta");
    assert_eq!(std::fs::read(dir.path().join("piped.db")).unwrap(), std::fs::read(dir.path().join("meta.db")).unwrap());
    assert_restored_equals(&dir.path().join("piped.db"), &path);
}

/// A small database replicated to `rep` whose capture would wait a minute
/// between passes if nothing woke it, once its first snapshot is stored.
fn replicating_with_a_minute_monitor_interval() -> (tempfile::TempDir, Connection, Running) {
    let dir = tempfile::tempdir().unwrap();
    let conn = create_db(&dir.path().join("src.db"), 4096);
    fill(&conn, 20, 100, 10, 1);
    std::fs::write(
        dir.path().join("c.yml"),
        "dbs:\n  - path: src.db\n    monitor-interval: 60s\n    replicas:\n      - path: rep\n        sync-interval: 10ms\n",
    )
    .unwrap();
    let r = replicate_args(dir.path(), "src.db", &["-config", "c.yml"]);
    wait_for("the first snapshot", 30, || !segments(&dir.path().join("rep")).is_empty());
    (dir, conn, r)
}

/// Every commit on an idle database wakes capture at once, even when the
/// write to the WAL that wakes it comes before SQLite publishes the commit
/// in its wal-index (which capture reads): with a monitor interval of a
/// minute, a missed wake-up fails the deadline.
#[test]
fn each_commit_on_an_idle_database_is_captured_without_waiting_for_the_monitor_interval() {
    let (dir, conn, r) = replicating_with_a_minute_monitor_interval();
    let rep = dir.path().join("rep");
    for i in 0..10 {
        let n = segments(&rep).len();
        conn.execute("INSERT INTO t(body, n) VALUES ('x', ?1)", [i]).unwrap();
        wait_for(&format!("commit {i} to reach the replica"), 30, || segments(&rep).len() > n);
    }
    r.stop();
    restore_and_compare(dir.path(), "rep", "out.db", "src.db");
}

/// Under a steady load capture stops watching the WAL (each event costs
/// the writer) and runs on its pace; the first commit after the load must
/// still wake it, not wait for the monitor interval.
#[test]
fn a_commit_after_a_burst_is_captured_without_waiting_for_the_monitor_interval() {
    let (dir, conn, r) = replicating_with_a_minute_monitor_interval();
    let rep = dir.path().join("rep");
    for round in 0..3 {
        // Commits one after another for a while: several passes in a row
        // find new ones.
        fill(&conn, 3000, 100, 1, 10 + round);
        let n = segments(&rep).len();
        conn.execute("INSERT INTO t(body, n) VALUES ('last', ?1)", [round as i64]).unwrap();
        wait_for(&format!("the commit after burst {round} to reach the replica"), 30, || {
            segments(&rep).len() > n
        });
    }
    r.stop();
    restore_and_compare(dir.path(), "rep", "out.db", "src.db");
}

/// While replicating, the application's checkpoints are refused (the
/// replicator holds SQLite's checkpoint lock, so a writer past the
/// automatic checkpoint threshold does not checkpoint on every commit),
/// and the lock goes with the replicator.
#[test]
fn the_applications_checkpoints_wait_for_the_replicator_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let conn = create_db(&dir.path().join("src.db"), 4096);
    fill(&conn, 20, 100, 10, 1);
    let r = replicate(dir.path(), "src.db", "rep", &[]);
    let rep = dir.path().join("rep");
    wait_for("the first snapshot", 30, || !segments(&rep).is_empty());
    // A commit that has reached the replica was captured by a pass, and
    // every pass holds the lock. (A WAL this short is not checkpointed by
    // the replicator either, so the lock is not let go of meanwhile.)
    let n = segments(&rep).len();
    conn.execute("INSERT INTO t(body, n) VALUES ('x', 1)", []).unwrap();
    wait_for("the commit to reach the replica", 30, || segments(&rep).len() > n);
    assert_eq!(passive_checkpoint(&conn).0, 1, "the application's checkpoint should be refused while replicating");
    r.stop();
    let (busy, frames, done) = passive_checkpoint(&conn);
    assert_eq!((busy, done), (0, frames), "the lock should go with the replicator");
    restore_and_compare(dir.path(), "rep", "out.db", "src.db");
}

#[test]
fn an_idle_database_costs_no_writes_to_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let conn = create_db(&dir.path().join("src.db"), 4096);
    fill(&conn, 100, 100, 10, 1);
    let r = replicate(dir.path(), "src.db", "rep", &["--sync-interval", "100ms"]);
    fill(&conn, 10, 100, 1, 2);
    let mut n = 0;
    wait_for("the writes to reach the replica", 30, || {
        n += 1;
        let out = sh(dir.path(), &format!("litestream restore -o probe{n}.db rep"));
        out.status.success()
            && Connection::open(dir.path().join(format!("probe{n}.db")))
                .unwrap()
                .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                .unwrap()
                == 110
    });
    // Ten sync intervals of nothing: not one new object.
    let before = segments(&dir.path().join("rep"));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(segments(&dir.path().join("rep")), before);
    r.stop();
    drop(conn);
}

#[test]
fn database_over_1_gib_with_the_lock_byte_page() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.db");
    let conn = create_db(&path, 65536);
    conn.execute_batch("CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB)").unwrap();
    // Zero-filled blobs: quick to write and to compress, and enough pages
    // to put the database past the lock-byte page at offset 1 GiB.
    let tx = conn.unchecked_transaction().unwrap();
    for _ in 0..17_000 {
        tx.execute("INSERT INTO big(b) VALUES (zeroblob(65000))", []).unwrap();
    }
    tx.commit().unwrap();
    let size: i64 = conn.query_row("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size", [], |r| r.get(0)).unwrap();
    assert!(size > 1 << 30, "database is only {size} bytes");
    let r = replicate(dir.path(), "src.db", "rep", &[]);
    wait_for("the snapshot", 120, || segments(&dir.path().join("rep")).len() > 1);
    // Changes on both sides of the lock-byte page after the snapshot.
    conn.execute("UPDATE big SET b = randomblob(1000) WHERE id IN (1, 16000, 16999)", []).unwrap();
    conn.execute("INSERT INTO big(b) VALUES (randomblob(65000))", []).unwrap();
    r.stop();
    drop(conn);
    restore_and_compare(dir.path(), "rep", "out.db", "src.db");
}
