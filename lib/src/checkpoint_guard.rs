//! Holding SQLite's checkpoint lock while capture runs, so that the
//! application's automatic checkpoints leave the WAL to ours.
//!
//! Capture always holds a read transaction (capture.rs), so the WAL grows
//! past SQLite's automatic checkpoint threshold (1,000 frames) between two
//! of our checkpoints. Past it, every application commit runs a PASSIVE
//! checkpoint (wal.c, `sqlite3WalDefaultHook`), which sorts the WAL's new
//! frames, backfills what our read mark allows and fsyncs the database,
//! on the application's thread. Measured with a writer of one INSERT per
//! transaction: that took it from about 16 to 21 µs of CPU a commit. The
//! same writer with its automatic checkpoint switched off ran as fast with
//! the replicator as without it.
//!
//! A checkpoint that finds the checkpoint lock taken returns SQLITE_BUSY
//! at once, without calling a busy handler (wal.c, `sqlite3WalCheckpoint`),
//! so while we hold it an application commit pays one failed lock call
//! instead. Capture's own checkpoints (at `min-checkpoint-page-count`, and
//! forced at `max-checkpoint-page-count`) then keep the WAL bounded, as
//! Litestream's do.
//!
//! The lock is let go of:
//! - around each of our own checkpoints (our other connections are
//!   refused it too while this one holds it);
//! - whenever the wal-index header is not consistent (a writer died
//!   publishing it): a connection that finds it so must rebuild the index,
//!   and that recovery needs the checkpoint lock (wal.c, `walIndexRecover`).
//!   SQLite retries it for about ten seconds before failing with
//!   SQLITE_PROTOCOL; capture looks at the header every pass and at least
//!   every 200 ms while it waits (pipeline.rs, `STOP_CHECK`), and not at all
//!   while it reads a snapshot, which it does without the lock;
//! - when capture ends, and with the process (POSIX locks die with it).

use std::path::Path;
use std::time::Instant;

use rusqlite::Connection;

use crate::error::Result;
use crate::snapshot::{begin_read, end_read, open_reader};
use crate::wal_index::WalIndex;
use crate::write_lock::{self, Checkpointed};

pub struct CheckpointGuard {
    /// A connection of its own, which never checkpoints: SQLite counts the
    /// lock as this connection's.
    conn: Connection,
    held: bool,
}

impl CheckpointGuard {
    /// A guard on `db`, not holding the lock yet.
    pub fn open(db: &Path) -> Result<Self> {
        let conn = open_reader(db)?;
        // A read transaction makes SQLite open and map the wal-index for
        // this connection; the mapping stays until it closes.
        begin_read(&conn, db)?;
        end_read(&conn, db)?;
        Ok(CheckpointGuard { conn, held: false })
    }

    /// Whether the lock is ours.
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Hold the lock while the wal-index header is consistent, let go of
    /// it otherwise (see the module comment). A checkpoint running in
    /// another connection keeps it from us until the next call.
    pub fn refresh(&mut self) {
        let Some(index) = WalIndex::of(&self.conn) else { return };
        let consistent = index.header().is_some();
        if !consistent {
            self.release();
        } else if !self.held {
            self.held = index.lock_checkpoints(true);
        }
    }

    /// A PASSIVE checkpoint (`write_lock::passive`) on this connection,
    /// letting go of the lock just before SQLite takes it again for the
    /// checkpoint. The application's automatic checkpoint, tried after
    /// every commit, usually takes it in between under load and backfills
    /// in our place (capture.rs, `LARGE_WAL_GAP`); under the write lock no
    /// commit, so no such checkpoint, can.
    pub fn checkpoint(&mut self, deadline: Instant) -> rusqlite::Result<Checkpointed> {
        self.release();
        let c = write_lock::passive(&self.conn, deadline);
        self.refresh();
        c
    }

    /// Let go of the lock (until the next `refresh`).
    pub fn release(&mut self) {
        if self.held {
            if let Some(index) = WalIndex::of(&self.conn) {
                index.lock_checkpoints(false);
            }
            self.held = false;
        }
    }
}

impl Drop for CheckpointGuard {
    /// SQLite does not let go of a lock it did not take when the
    /// connection closes (os_unix.c, `unixShmUnmap`): the lock would stay
    /// with this process, and the process's other connections would never
    /// get it.
    fn drop(&mut self) {
        self.release();
    }
}
