//! Helpers for the crash and contention tests: child processes that are
//! killed on every exit path, an application write load on a thread of
//! its own, and the checks a restored replica must pass.
//!
//! Included with `#[path = "common/load.rs"] mod load;` next to `mod common;`.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::common::{bin, Rng};

/// Seed from `var` if set, else from the clock; printed so a failure can
/// be replayed with `var=SEED`.
pub fn seed(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("{var}={seed}");
    seed
}

/// Poll `cond` every 10 ms until it holds; fail after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    poll(limit, what, || cond().then_some(()))
}

/// Poll `check` until it returns `Some`, failing after `limit`.
pub fn poll<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child process, SIGKILLed and reaped when dropped unless it has been
/// waited for. Its stderr goes to a file, so nothing blocks on a full pipe.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Spawn `cmd` with stderr to `log` (appended). stdin/stdout are as
    /// the caller set them.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let err = File::options().create(true).append(true).open(log).unwrap();
        let child = cmd
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("running")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: a plain kill(2) of our own child, not yet reaped.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait for exit within `limit`; fails (after a kill) on timeout.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                self.kill9();
                panic!(
                    "{} did not exit within {limit:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait for a clean exit (status 0) within `limit`.
    pub fn wait_ok(&mut self, limit: Duration) {
        let status = self.wait_exit(limit);
        assert!(
            status.success(),
            "{} exited with {status}; stderr:\n{}",
            self.name,
            self.stderr()
        );
    }

    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            None => true,
            Some(c) => c.try_wait().unwrap().is_some(),
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the stderr log holds `needle` `count` times in all.
    pub fn wait_for_log(&mut self, needle: &str, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.stderr().matches(needle).count() >= count {
                return;
            }
            if self.exited() {
                panic!(
                    "{} exited before logging {needle:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not log {needle:?} within {limit:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `litestream replicate [extra] DB REPLICA` with stderr to `log`.
pub fn replicate(db: &Path, replica: &Path, extra: &[&str], log: &Path) -> Proc {
    let mut cmd = Command::new(bin("litestream"));
    cmd.arg("replicate")
        .args(extra)
        .arg(db)
        .arg(replica)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    Proc::spawn("litestream replicate", cmd, log)
}

/// Non-hidden files under `replica`/lsw1 and their total size: it changes
/// whenever a segment is stored (segments are never rewritten in place).
pub fn replica_state(replica: &Path) -> (usize, u64) {
    fn walk(dir: &Path, acc: &mut (usize, u64)) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                walk(&e.path(), acc);
            } else {
                acc.0 += 1;
                acc.1 += meta.len();
            }
        }
    }
    let mut acc = (0, 0);
    walk(&replica.join("lsw1"), &mut acc);
    acc
}

/// The txid of `generation` (16 hex digits) that the database is at now,
/// once its shadow log has captured the database as it is: a replica is
/// caught up when it holds this txid. Under load, capture merges commits
/// into transactions, so a count of commits does not give it.
pub fn captured_txid(db: &Path, generation: &str) -> Option<u64> {
    let generation = u64::from_str_radix(generation, 16).ok()?;
    let live = lsw::live::LiveReader::open(db).ok()?.read().ok()?;
    let recorded = lsw::live::read_recorded(&lsw::shadow_log::state_dir(db), generation).ok()??;
    let (txid, checksum) = recorded.checksums.iter().next_back()?;
    (*checksum == live.checksum).then_some(*txid)
}

/// The names of the replica's generations (directories under lsw1/).
pub fn generation_names(replica: &Path) -> Vec<String> {
    std::fs::read_dir(replica.join("lsw1"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Generations in the replica (directories under lsw1/).
pub fn generations(replica: &Path) -> usize {
    std::fs::read_dir(replica.join("lsw1"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .count()
}

// ---------------------------------------------------------------------
// The application load.

/// Rows of `kv`; row 0 always holds the largest `seq` id, updated in the
/// same transaction as the inserts, so a restore that splits a
/// transaction shows.
pub const KV_ROWS: i64 = 16;

/// The load's schema: `seq(id INTEGER PRIMARY KEY, payload BLOB)` and a
/// small `kv` table. `conn` is a fresh WAL database.
pub fn create_schema(conn: &Connection) {
    conn.execute_batch(
        "CREATE TABLE seq(id INTEGER PRIMARY KEY, payload BLOB);
         CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER NOT NULL, note TEXT);",
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for k in 0..KV_ROWS {
        tx.execute("INSERT INTO kv(k, v, note) VALUES (?1, 0, '')", [k])
            .unwrap();
    }
    tx.commit().unwrap();
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub seed: u64,
    /// Application busy_timeout; 0 means none.
    pub busy_timeout: Duration,
    /// Retry a transaction after SQLITE_BUSY (counted); otherwise BUSY fails the load.
    pub retry_busy: bool,
    /// Inserts per transaction, uniformly in this range.
    pub rows: (u64, u64),
    /// Payload bytes per row, uniformly in this range.
    pub payload: (usize, usize),
    /// kv rows updated per transaction besides row 0, uniformly in 0..=this.
    pub kv_updates: u64,
    /// Run an application checkpoint of a random mode after about one in
    /// this many transactions (0: never), on its own connection with
    /// `checkpoint_busy_timeout`.
    pub checkpoint_every: u64,
    pub checkpoint_busy_timeout: Duration,
    /// Sleep up to this long (uniformly) between transactions, to pace the load.
    pub pace: Duration,
    /// Stop after this many commits (also stops on the stop flag).
    pub max_commits: Option<u64>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            seed: 1,
            busy_timeout: Duration::from_secs(5),
            retry_busy: false,
            rows: (1, 50),
            payload: (10, 3000),
            kv_updates: 3,
            checkpoint_every: 0,
            checkpoint_busy_timeout: Duration::from_millis(50),
            pace: Duration::ZERO,
            max_commits: None,
        }
    }
}

pub const CHECKPOINT_MODES: [&str; 4] = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"];

#[derive(Debug, Default, Clone)]
pub struct LoadStats {
    pub commits: u64,
    pub rows: u64,
    /// SQLITE_BUSY errors the application saw (each followed at once by a retry).
    pub busy: u64,
    /// Transactions that saw at least one SQLITE_BUSY.
    pub busy_txns: u64,
    /// Application checkpoints run, by mode (CHECKPOINT_MODES order).
    pub checkpoints: [u64; 4],
    /// ... of which returned busy = 1 (could not finish).
    pub checkpoints_incomplete: [u64; 4],
    /// ... and of which failed with SQLITE_BUSY.
    pub checkpoints_busy_error: [u64; 4],
    /// Longest time one transaction took, retries included.
    pub max_txn: Duration,
}

/// A running load. `commits` is live; `stop()` ends it and returns the stats.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub commits: Arc<AtomicU64>,
    handle: Option<JoinHandle<LoadStats>>,
    /// The stats of a load that ended on its own (max_commits).
    done: Option<LoadStats>,
}

impl Load {
    pub fn start(db: &Path, opts: LoadOptions) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let db = db.to_path_buf();
        let handle = {
            let (stop, commits) = (stop.clone(), commits.clone());
            std::thread::spawn(move || run_load(&db, &opts, &stop, &commits))
        };
        Load {
            stop,
            commits,
            handle: Some(handle),
            done: None,
        }
    }

    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Fails (with the load's own panic message) if the load thread died.
    pub fn check_alive(&mut self) {
        if self.handle.as_ref().is_some_and(|h| h.is_finished()) {
            match self.handle.take().unwrap().join() {
                Ok(stats) => self.done = Some(stats),
                Err(e) => std::panic::resume_unwind(e),
            }
        }
    }

    pub fn finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    pub fn stop(mut self) -> LoadStats {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(stats) = self.done.take() {
            return stats;
        }
        match self.handle.take().expect("load already joined").join() {
            Ok(stats) => stats,
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DatabaseBusy)
}

fn run_load(db: &Path, opts: &LoadOptions, stop: &AtomicBool, commits: &AtomicU64) -> LoadStats {
    let conn = Connection::open(db).unwrap();
    conn.busy_timeout(opts.busy_timeout).unwrap();
    let ck = if opts.checkpoint_every > 0 {
        let ck = Connection::open(db).unwrap();
        ck.busy_timeout(opts.checkpoint_busy_timeout).unwrap();
        Some(ck)
    } else {
        None
    };
    let mut rng = Rng::new(opts.seed);
    let mut next_id: i64 = conn
        .query_row("SELECT coalesce(max(id), 0) FROM seq", [], |r| r.get(0))
        .unwrap();
    let mut stats = LoadStats::default();
    let range = |rng: &mut Rng, (lo, hi): (u64, u64)| lo + rng.next() % (hi - lo + 1);
    while !stop.load(Ordering::Relaxed) && opts.max_commits.is_none_or(|m| stats.commits < m) {
        // The transaction's content, fixed before the first attempt.
        let rows = range(&mut rng, opts.rows);
        let payloads: Vec<Vec<u8>> = (0..rows)
            .map(|_| {
                let len = range(&mut rng, (opts.payload.0 as u64, opts.payload.1 as u64)) as usize;
                rng.text(len).into_bytes()
            })
            .collect();
        let kv: Vec<(i64, i64)> = (0..rng.next() % (opts.kv_updates + 1))
            .map(|_| {
                (
                    1 + (rng.next() % (KV_ROWS as u64 - 1)) as i64,
                    (rng.next() >> 1) as i64,
                )
            })
            .collect();
        let started = Instant::now();
        let busy_before = stats.busy;
        loop {
            match write_txn(&conn, next_id, &payloads, &kv) {
                Ok(()) => break,
                Err(e) if is_busy(&e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    assert!(
                        opts.retry_busy,
                        "the application got SQLITE_BUSY (busy_timeout {:?}): {e}",
                        opts.busy_timeout
                    );
                    stats.busy += 1;
                }
                Err(e) => panic!("application transaction failed: {e}"),
            }
        }
        stats.max_txn = stats.max_txn.max(started.elapsed());
        stats.busy_txns += u64::from(stats.busy > busy_before);
        next_id += rows as i64;
        stats.rows += rows;
        stats.commits += 1;
        commits.store(stats.commits, Ordering::Relaxed);

        if let Some(ck) = &ck {
            if rng.next() % opts.checkpoint_every == 0 {
                let m = (rng.next() % 4) as usize;
                stats.checkpoints[m] += 1;
                let r = ck.query_row(
                    &format!("PRAGMA wal_checkpoint({})", CHECKPOINT_MODES[m]),
                    [],
                    |r| r.get::<_, i64>(0),
                );
                match r {
                    Ok(0) => {}
                    Ok(_) => stats.checkpoints_incomplete[m] += 1,
                    Err(e) if is_busy(&e) => stats.checkpoints_busy_error[m] += 1,
                    Err(e) => panic!(
                        "application checkpoint ({}) failed: {e}",
                        CHECKPOINT_MODES[m]
                    ),
                }
            }
        }
        if !opts.pace.is_zero() {
            let us = rng.next() % (opts.pace.as_micros() as u64 + 1);
            std::thread::sleep(Duration::from_micros(us));
        }
    }
    stats
}

fn write_txn(
    conn: &Connection,
    first_id: i64,
    payloads: &[Vec<u8>],
    kv: &[(i64, i64)],
) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    {
        let mut ins = conn.prepare_cached("INSERT INTO seq(id, payload) VALUES (?1, ?2)")?;
        for (i, p) in payloads.iter().enumerate() {
            ins.execute(rusqlite::params![first_id + 1 + i as i64, p])?;
        }
        let mut upd = conn.prepare_cached("UPDATE kv SET v = ?2, note = ?3 WHERE k = ?1")?;
        upd.execute(rusqlite::params![
            0,
            first_id + payloads.len() as i64,
            "max seq id"
        ])?;
        for (k, v) in kv {
            upd.execute(rusqlite::params![k, v, format!("{v:x}")])?;
        }
    }
    conn.execute_batch("COMMIT")
}

// ---------------------------------------------------------------------
// Checks on a restored database.

/// `seq` holds exactly ids 1..=n, kv row 0 says n (so no transaction was
/// split), and integrity_check passes. Returns n.
pub fn check_restored(path: &Path) -> i64 {
    try_check_restored(path).unwrap_or_else(|e| panic!("{e}"))
}

/// `check_restored`, with Err saying what is wrong.
pub fn try_check_restored(path: &Path) -> Result<i64, String> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| e.to_string())?;
    let q = |sql: &str| -> Result<(i64, i64, i64), String> {
        conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| format!("{}: {sql}: {e}", path.display()))
    };
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| format!("{}: integrity_check: {e}", path.display()))?;
    if check != "ok" {
        return Err(format!("{}: integrity_check: {check}", path.display()));
    }
    let (count, max, min) =
        q("SELECT count(*), coalesce(max(id), 0), coalesce(min(id), 1) FROM seq")?;
    if count != max || min != 1 {
        return Err(format!(
            "{}: seq ids are not 1..n (count {count}, min {min}, max {max})",
            path.display()
        ));
    }
    let (v0, _, _) = q("SELECT v, 0, 0 FROM kv WHERE k = 0")?;
    if v0 != max {
        return Err(format!(
            "{}: kv row 0 says {v0} but seq ends at {max}: a transaction was split",
            path.display()
        ));
    }
    Ok(max)
}

/// `litestream restore -o out replica` (out removed first); fails with
/// its stderr if the restore fails.
pub fn restore(replica: &Path, out: &Path) {
    if let Err(e) = try_restore(replica, out) {
        panic!("{e}");
    }
}

/// `litestream restore -o out replica` (out removed first); Err says why.
pub fn try_restore(replica: &Path, out: &Path) -> Result<(), String> {
    remove_db(out);
    let o = Command::new(bin("litestream"))
        .arg("restore")
        .arg("-o")
        .arg(out)
        .arg(replica)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    match o.status.success() {
        true => Ok(()),
        false => Err(format!(
            "litestream restore -o {} {} failed ({}):\n{}",
            out.display(),
            replica.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )),
    }
}

/// The replica's objects, relative to its root, sorted (for failure messages).
pub fn replica_listing(replica: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(replica, replica, &mut out);
    out.sort();
    out
}

/// Remove a restored database and any -wal/-shm beside it.
pub fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}
