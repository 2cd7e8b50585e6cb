//! The two SQLite calls of a forced checkpoint (DESIGN.md §4), made so
//! that they succeed against a writer that never pauses.
//!
//! The write lock: SQLite's own busy handler (`busy_timeout`) sleeps 1,
//! 2, 5, 10, 15, 20, 25… ms between attempts. A writer committing tens of
//! thousands of small transactions a second holds the write lock most of
//! the time and lets go of it for microseconds between commits, so a few
//! attempts spread over 200 ms can all miss, and the checkpoint the WAL
//! needs to restart is skipped. Here an attempt is made every
//! `RETRY_GAP` until the deadline. Waiting costs the application nothing:
//! a `BEGIN IMMEDIATE` that finds the write lock taken lets go of its read
//! lock before the busy handler runs (btree.c, `btreeBeginTrans`), so
//! between attempts we hold no lock at all.
//!
//! The checkpoint lock: the moment we get the write lock is most often
//! the moment right after an application commit, when that connection
//! runs its own automatic (PASSIVE) checkpoint. A PASSIVE checkpoint that
//! finds the checkpoint lock taken returns SQLITE_BUSY at once and never
//! calls a busy handler (wal.c, `sqlite3WalCheckpoint`); with the write
//! lock ours, the other one ends soon, so `passive` retries for a short
//! while.

use std::time::{Duration, Instant};

use rusqlite::Connection;

/// Pause between two attempts at a lock: about the gap a fast writer
/// leaves between commits (the sleep itself lasts somewhat longer).
pub const RETRY_GAP: Duration = Duration::from_micros(20);

/// Take the write lock with `BEGIN IMMEDIATE`, retrying every
/// `RETRY_GAP` until `deadline`. On error (SQLITE_BUSY when the deadline
/// passed) no transaction is open.
pub fn begin_immediate(conn: &mut Connection, deadline: Instant) -> rusqlite::Result<()> {
    conn.busy_handler(Some(move |_attempts: i32| retry_before(deadline)))?;
    conn.execute_batch("BEGIN IMMEDIATE")
}

/// The busy handler: sleep a little and try again, unless the next try
/// would start past `deadline`.
fn retry_before(deadline: Instant) -> bool {
    if Instant::now() + RETRY_GAP >= deadline {
        return false;
    }
    std::thread::sleep(RETRY_GAP);
    true
}

/// What `PRAGMA wal_checkpoint(PASSIVE)` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    /// Another connection held the checkpoint lock: nothing was done.
    pub busy: bool,
    /// Frames in the WAL.
    pub frames: u64,
    /// Frames backfilled into the database (all of them, once it equals `frames`).
    pub backfilled: u64,
}

/// A PASSIVE checkpoint on `conn`, tried again every `RETRY_GAP` while
/// another connection holds the checkpoint lock, until `deadline`.
pub fn passive(conn: &Connection, deadline: Instant) -> rusqlite::Result<Checkpointed> {
    loop {
        let (busy, frames, backfilled): (i64, i64, i64) = conn
            .prepare_cached("PRAGMA wal_checkpoint(PASSIVE)")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        let got = Checkpointed {
            busy: busy != 0,
            frames: frames.max(0) as u64,
            backfilled: backfilled.max(0) as u64,
        };
        if !got.busy || !retry_before(deadline) {
            return Ok(got);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{ErrorCode, TransactionBehavior};

    fn wal_db(dir: &std::path::Path) -> (std::path::PathBuf, Connection) {
        let path = dir.join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))
            .unwrap();
        conn.execute_batch("CREATE TABLE t(x)").unwrap();
        (path, conn)
    }

    #[test]
    fn gives_up_at_the_deadline_while_the_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut app) = wal_db(dir.path());
        let tx = app
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let mut ours = Connection::open(&path).unwrap();
        let started = Instant::now();
        let err = begin_immediate(&mut ours, started + Duration::from_millis(30)).unwrap_err();
        assert_eq!(err.sqlite_error_code(), Some(ErrorCode::DatabaseBusy));
        // It tried until the deadline, not just once, and then stopped.
        assert!(
            started.elapsed() >= Duration::from_millis(29),
            "{:?}",
            started.elapsed()
        );
        assert!(ours.is_autocommit(), "no transaction is left open");
        tx.rollback().unwrap();
        begin_immediate(&mut ours, Instant::now() + Duration::from_secs(5)).unwrap();
        assert!(!ours.is_autocommit());
        ours.execute_batch("ROLLBACK").unwrap();
    }

    #[test]
    fn passive_reports_a_full_backfill() {
        let dir = tempfile::tempdir().unwrap();
        let (_path, app) = wal_db(dir.path());
        app.execute_batch("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)")
            .unwrap();
        let got = passive(&app, Instant::now() + Duration::from_millis(10)).unwrap();
        assert!(!got.busy);
        assert!(got.frames > 0);
        assert_eq!(got.frames, got.backfilled);
    }
}
