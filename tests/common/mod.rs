//! Helpers shared by the integration tests: the real binaries, sample
//! databases, and the comparison every restore is checked with.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rusqlite::Connection;

/// Path of one of the project's binaries.
pub fn bin(name: &str) -> PathBuf {
    let var = format!("CARGO_BIN_EXE_{name}");
    std::env::var_os(&var)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{var} not set"))
}

/// How a process ended: its exit code (-1 if a signal killed it) and
/// what it printed.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Whether `script` (util-linux), which gives a command a terminal, is here.
pub fn script_available() -> bool {
    Command::new("script")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run `sh -c script` with the binaries' directory first on PATH.
pub fn sh(dir: &Path, script: &str) -> Output {
    let bindir = bin("lsw-shadow").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bindir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("sh")
        .arg("-c")
        .arg(format!("set -e\n{script}"))
        .current_dir(dir)
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("run sh")
}

/// Run a script that must succeed; returns its stderr.
pub fn sh_ok(dir: &Path, script: &str) -> String {
    let out = sh(dir, script);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "script failed ({}):\n{script}\nstderr:\n{stderr}",
        out.status
    );
    stderr
}

/// A new database in WAL mode with the given page size.
pub fn create_db(path: &Path, page_size: u32) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA page_size={page_size}; PRAGMA journal_mode=wal;"
    ))
    .unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    conn
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Text that compresses like real data: words and some hex.
    pub fn text(&mut self, len: usize) -> String {
        const WORDS: &[&str] = &[
            "alpha", "backup", "commit", "delta", "epoch", "frame", "gamma", "page", "query",
            "replica", "sqlite", "wal",
        ];
        let mut s = String::with_capacity(len + 16);
        while s.len() < len {
            if self.next() % 4 == 0 {
                s.push_str(&format!("{:x} ", self.next()));
            } else {
                s.push_str(WORDS[(self.next() % WORDS.len() as u64) as usize]);
                s.push(' ');
            }
        }
        s.truncate(len);
        s
    }
}

/// Fill a table `t(id, body)` with `rows` rows of about `row_bytes` each,
/// in transactions of `batch` rows.
pub fn fill(conn: &Connection, rows: usize, row_bytes: usize, batch: usize, seed: u64) {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, body TEXT, n INTEGER); CREATE INDEX IF NOT EXISTS t_n ON t(n);")
        .unwrap();
    let mut rng = Rng::new(seed);
    let mut done = 0;
    while done < rows {
        let tx = conn.unchecked_transaction().unwrap();
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO t(body, n) VALUES (?1, ?2)")
                .unwrap();
            for _ in 0..batch.min(rows - done) {
                stmt.execute(rusqlite::params![
                    rng.text(row_bytes),
                    (rng.next() % 1000) as i64
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
        done += batch;
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)` on `conn`, as the application would
/// run it: (busy, frames in the WAL, frames backfilled).
pub fn passive_checkpoint(conn: &Connection) -> (i64, i64, i64) {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
}

/// Fold the WAL into the database file so the file is the logical database.
pub fn checkpoint(path: &Path) {
    let conn = Connection::open(path).unwrap();
    let (busy, _, _): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(busy, 0, "checkpoint of {} was blocked", path.display());
}

pub fn integrity_ok(path: &Path) {
    let conn =
        Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let r: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(r, "ok", "integrity_check of {}", path.display());
}

/// The restored file equals the source (checkpointed first) byte for
/// byte, and passes integrity_check.
pub fn assert_restored_equals(restored: &Path, source: &Path) {
    checkpoint(source);
    let a = std::fs::read(restored).unwrap();
    let b = std::fs::read(source).unwrap();
    assert_eq!(
        a.len(),
        b.len(),
        "{} and {} differ in size",
        restored.display(),
        source.display()
    );
    if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!(
            "{} differs from {} at byte {i}",
            restored.display(),
            source.display()
        );
    }
    integrity_ok(restored);
}

/// Files in `dir` whose name contains `needle` (leftover temporaries).
pub fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(needle))
        .collect()
}

/// Replicate `db` to `replica` with the shell pipeline.
pub fn replicate_once(dir: &Path, db: &str, replica: &str) {
    sh_ok(
        dir,
        &format!("lsw-shadow --once {db} | lsw-segment | lsw-push {replica}"),
    );
}
