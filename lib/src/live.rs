//! Comparing a restored state with the live database, without false
//! mismatches from timing.
//!
//! The replica lags the live database: by the time a validation has
//! restored txid T, the application has usually committed more, so "the
//! live database now" is not "the live database at T". Two comparisons
//! are sound, and `judge` uses both:
//!
//! 1. The live database read now (under a read transaction: the file
//!    overlaid with every committed WAL frame, as a snapshot is read) has
//!    the restored checksum: the two are identical, whatever the txids.
//! 2. The replicator's shadow log recorded the db checksum after every
//!    txid it captured, read from the live WAL at that moment. If it
//!    still holds txid T, that record is the live database at T: the
//!    restored checksum must equal it.
//!
//! And one that checks the capture itself: the shadow log also records
//! the WAL position (salts and byte offset) after each batch it captured.
//! A WAL incarnation only grows, so when the live read stands at exactly
//! a recorded position, the live database *is* the state after that
//! record's txid, and its checksum must equal the one recorded for it.
//!
//! Anything else (the shadow log pruned past T, another generation, no
//! shadow log at all) is "not compared", never a mismatch.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rusqlite::{config::DbConfig, Connection, OpenFlags};

use crate::checksum::page_hash;
use crate::dbfile::{wal_path, DbHeader, DB_HEADER_LEN};
use crate::error::{Error, Result};
use crate::frames::{
    decode_record, Frame, WalPosition, KIND_COMMIT, KIND_GENERATION, KIND_WAL_POSITION,
};
use crate::layout::generation_name;
use crate::snapshot::{begin_read, end_read, read_overlay, Overlay};
use crate::stream::{StreamKind, StreamReader};
use crate::wal;

/// Reads of a live WAL that kept restarting before giving up.
const MAX_ATTEMPTS: usize = 10;

/// The live database as one read found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveState {
    pub checksum: u64,
    pub page_size: u32,
    pub db_pages: u32,
    /// Where in the WAL the read stood; `None` without a valid WAL.
    pub position: Option<WalPosition>,
}

/// Reads a live database's state, repeatedly, from inside a process
/// that may also be replicating it.
///
/// Why not `snapshot::read_snapshot`: it opens and closes the database
/// file for each read, and closing *any* descriptor of a file drops every
/// POSIX lock the process holds on it, SQLite's included. In the
/// replicator that would drop the capture connections' SHARED lock, and
/// an application closing its last connection could then take EXCLUSIVE,
/// checkpoint past our read marks and delete the WAL. So this keeps one
/// descriptor of the database open for its whole life, asks SQLite (not
/// the file) whether the database is in WAL mode, and only opens and
/// closes the WAL file, on which SQLite holds no locks.
pub struct LiveReader {
    db: PathBuf,
    conn: Connection,
    file: std::sync::Arc<File>,
}

impl LiveReader {
    pub fn open(db: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| Error::sqlite("open", db, e))?;
        // Closing the last connection would otherwise checkpoint and
        // delete the WAL: a write nobody asked a validation for.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(|e| Error::sqlite("configure", db, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| Error::sqlite("configure", db, e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| Error::sqlite("read journal mode of", db, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::database(
                db,
                format!(
                    "not in WAL mode (journal_mode={mode}); it cannot be a replicated database"
                ),
            ));
        }
        // The process-wide descriptor: closing one of our own would drop
        // the replicator's SQLite locks (see dbfile::shared_handle).
        let file = crate::dbfile::shared_handle(db)?;
        Ok(LiveReader {
            db: db.to_path_buf(),
            conn,
            file,
        })
    }

    /// The database's checksum now, with the WAL position it was read at.
    pub fn read(&mut self) -> Result<LiveState> {
        self.with_snapshot(|s| Ok(s.state))
    }

    /// Run `f` on a consistent view of the database, read under one read
    /// transaction that is held until `f` returns: the view's pages can be
    /// read again (a snapshot upload hashes them first, to learn which
    /// txid they are, then sends them) and stay the same.
    pub fn with_snapshot<T>(&mut self, f: impl FnOnce(&LiveSnapshot) -> Result<T>) -> Result<T> {
        begin_read(&self.conn, &self.db)?;
        let result = self.view_under_transaction().and_then(|view| f(&view));
        let ended = end_read(&self.conn, &self.db);
        let result = result?;
        ended?;
        Ok(result)
    }

    fn view_under_transaction(&mut self) -> Result<LiveSnapshot<'_>> {
        let wal = wal_path(&self.db);
        let mut attempt = 0;
        let overlay = loop {
            let overlay = read_overlay(&wal)?;
            if wal::read_header(&wal)? == overlay.header {
                break overlay;
            }
            // The WAL restarted while we read it (our read mark was 0):
            // take a new read transaction and read again.
            attempt += 1;
            if attempt >= MAX_ATTEMPTS {
                return Err(Error::database(
                    &self.db,
                    "the WAL kept restarting while it was read; try again",
                ));
            }
            end_read(&self.conn, &self.db)?;
            begin_read(&self.conn, &self.db)?;
        };
        let file_len = self
            .file
            .metadata()
            .map_err(|e| Error::io("stat database", &self.db, e))?
            .len();
        let mut head = [0u8; DB_HEADER_LEN];
        let header = match self.file.read_exact_at(&mut head, 0) {
            Ok(()) => DbHeader::parse(&head),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
            Err(e) => return Err(Error::io("read database", &self.db, e)),
        };
        let page_size = match (overlay.header, header) {
            (Some(w), _) => w.page_size,
            (None, Some(h)) => h.page_size,
            (None, None) => {
                return Err(Error::database(
                    &self.db,
                    "empty file: not a SQLite database yet",
                ))
            }
        };
        let db_pages = match (overlay.db_pages, header) {
            (Some(n), _) => n,
            (None, Some(h)) if h.size_valid => h.db_pages,
            (None, _) => (file_len / u64::from(page_size)) as u32,
        };
        let mut view = LiveSnapshot {
            db: &self.db,
            file: &self.file,
            file_len,
            overlay,
            state: LiveState {
                checksum: 0,
                page_size,
                db_pages,
                position: None,
            },
        };
        let mut checksum = 0u64;
        view.pages(&mut |pgno, page| {
            checksum ^= page_hash(pgno, page);
            Ok(())
        })?;
        view.state.checksum = checksum;
        view.state.position = view.overlay.header.map(|_| view.overlay.position);
        Ok(view)
    }
}

/// The live database as one read transaction sees it (`LiveReader::with_snapshot`).
pub struct LiveSnapshot<'a> {
    db: &'a Path,
    file: &'a File,
    file_len: u64,
    overlay: Overlay,
    pub state: LiveState,
}

impl LiveSnapshot<'_> {
    /// Every page, in order, as the read transaction sees it.
    pub fn pages(&self, visit: &mut dyn FnMut(u32, &[u8]) -> Result<()>) -> Result<()> {
        let page_size = self.state.page_size;
        let mut buf = vec![0u8; page_size as usize];
        for pgno in 1..=self.state.db_pages {
            let page: &[u8] = match self.overlay.pages.get(&pgno) {
                Some(p) => p,
                None => {
                    // Past the end of the file a page reads as zeros (the
                    // lock-byte page), as in snapshot.rs.
                    let off = u64::from(pgno - 1) * u64::from(page_size);
                    buf.fill(0);
                    if off < self.file_len {
                        let n = ((self.file_len - off) as usize).min(buf.len());
                        self.file
                            .read_exact_at(&mut buf[..n], off)
                            .map_err(|e| Error::io("read database", self.db, e))?;
                    }
                    &buf
                }
            };
            visit(pgno, page)?;
        }
        Ok(())
    }
}

/// What a replicator's shadow log says about one generation.
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    /// The db checksum after each logged txid.
    pub checksums: BTreeMap<u64, u64>,
    /// WAL positions capture stood at, each with the txid it follows.
    pub positions: Vec<WalPosition>,
}

impl Recorded {
    /// The txid whose state the WAL position `p` is, if recorded.
    pub fn txid_at(&self, p: &WalPosition) -> Option<u64> {
        if p.offset == 0 {
            return None;
        }
        self.positions
            .iter()
            .find(|r| r.salt1 == p.salt1 && r.salt2 == p.salt2 && r.offset == p.offset)
            .map(|r| r.txid)
    }
}

/// Read what the shadow log in `state_dir` recorded for `generation`;
/// `None` when there is no shadow log. Read-only and lock-free: a file
/// pruned meanwhile is skipped, and a torn tail (a record being
/// appended) ends a file, so whatever is returned was really logged.
pub fn read_recorded(state_dir: &Path, generation: u64) -> Result<Option<Recorded>> {
    // The log's files live in `log/` of the state directory (shadow_log.rs).
    let dir = state_dir.join("log");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("list", &dir, e)),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "frames"))
        .collect();
    files.sort();
    let mut rec = Recorded::default();
    // A txid logged twice with different checksums is not evidence of anything.
    let mut ambiguous = Vec::new();
    for path in files {
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let name = path.display().to_string();
        let Ok(mut r) = StreamReader::open(BufReader::new(file), &name, &[StreamKind::Frames])
        else {
            continue;
        };
        let mut ours = false;
        while let Ok(Some(raw)) = r.next_raw() {
            if !matches!(raw.kind, KIND_GENERATION | KIND_COMMIT | KIND_WAL_POSITION) {
                continue;
            }
            match decode_record(&raw, 0) {
                Ok(Frame::Generation { generation: g, .. }) => ours = g == generation,
                Ok(Frame::Commit {
                    txid,
                    checksum_after,
                    ..
                }) if ours => {
                    if rec
                        .checksums
                        .insert(txid, checksum_after)
                        .is_some_and(|old| old != checksum_after)
                    {
                        ambiguous.push(txid);
                    }
                }
                Ok(Frame::WalPosition(p)) if ours => rec.positions.push(p),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    for t in ambiguous {
        rec.checksums.remove(&t);
    }
    Ok(Some(rec))
}

/// The outcome of a live comparison that found no mismatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveCheck {
    /// The live database read now is identical to the restored one.
    Identical,
    /// The shadow log's record of the live database at the restored txid
    /// equals the restored checksum. `live_txid`: where the live database
    /// stood, when its read matched a recorded WAL position (and then its
    /// checksum matched the record too).
    Recorded { live_txid: Option<u64> },
    /// No sound comparison was possible; the reason.
    NotCompared(String),
}

impl std::fmt::Display for LiveCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LiveCheck::Identical => write!(f, "identical to the live database"),
            LiveCheck::Recorded { live_txid: None } => {
                write!(f, "matches the live database at the same txid (shadow log)")
            }
            LiveCheck::Recorded { live_txid: Some(l) } => write!(
                f,
                "matches the live database at the same txid (shadow log; the live database, now at txid {l}, matches it too)"
            ),
            LiveCheck::NotCompared(why) => write!(f, "not compared with the live database: {why}"),
        }
    }
}

/// The restored state being compared.
#[derive(Debug, Clone, Copy)]
pub struct RestoredState {
    pub generation: u64,
    pub txid: u64,
    pub checksum: u64,
}

/// Compare a restored state with the live database `db` (module docs),
/// whose shadow log is in `state_dir`. `what` names the restored state
/// in errors (its last segment).
pub fn judge(
    restored: RestoredState,
    live: &LiveState,
    recorded: Option<&Recorded>,
    db: &Path,
    state_dir: &Path,
    what: &str,
) -> Result<LiveCheck> {
    let RestoredState {
        generation,
        txid,
        checksum,
    } = restored;
    if live.checksum == checksum {
        return Ok(LiveCheck::Identical);
    }
    let Some(rec) = recorded else {
        return Ok(LiveCheck::NotCompared(format!(
            "it differs from the restored state and has no shadow log ({}) to say whether it has only moved on",
            state_dir.display()
        )));
    };
    let live_txid = live.position.and_then(|p| rec.txid_at(&p));
    if let Some(l) = live_txid {
        if let Some(&logged) = rec.checksums.get(&l) {
            if logged != live.checksum {
                return Err(Error::integrity(
                    format!("live database {}", db.display()),
                    format!(
                        "at txid {l} of generation {} it reads with db checksum {:016x}, but the replicator captured {logged:016x} for that txid",
                        generation_name(generation),
                        live.checksum
                    ),
                ));
            }
        }
        if l == txid {
            return Err(Error::integrity(
                what,
                format!(
                    "the restored database at txid {txid} has db checksum {checksum:016x}, the live database at the same txid {:016x}",
                    live.checksum
                ),
            ));
        }
    }
    match rec.checksums.get(&txid) {
        Some(&logged) if logged == checksum => Ok(LiveCheck::Recorded { live_txid }),
        Some(&logged) => Err(Error::integrity(
            what,
            format!(
                "the restored database at txid {txid} has db checksum {checksum:016x}, but the live database had {logged:016x} at that txid (recorded in {})",
                state_dir.display()
            ),
        )),
        None if rec.checksums.is_empty() => Ok(LiveCheck::NotCompared(format!(
            "the live database has moved on, and its shadow log holds nothing of generation {}",
            generation_name(generation)
        ))),
        None => Ok(LiveCheck::NotCompared(format!(
            "the live database has moved on, and its shadow log holds txids {}-{} of generation {}, not txid {txid}",
            rec.checksums.keys().next().unwrap(),
            rec.checksums.keys().next_back().unwrap(),
            generation_name(generation)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(txid: u64, offset: u64) -> WalPosition {
        WalPosition {
            txid,
            salt1: 7,
            salt2: 9,
            offset,
            chain1: 0,
            chain2: 0,
        }
    }

    fn live(checksum: u64, offset: u64) -> LiveState {
        LiveState {
            checksum,
            page_size: 4096,
            db_pages: 2,
            position: Some(pos(0, offset)),
        }
    }

    fn rec() -> Recorded {
        Recorded {
            checksums: [(10, 0xa), (11, 0xb), (12, 0xc)].into_iter().collect(),
            positions: vec![pos(10, 1000), pos(12, 3000)],
        }
    }

    fn restored(txid: u64, checksum: u64) -> RestoredState {
        RestoredState {
            generation: 1,
            txid,
            checksum,
        }
    }

    fn judge_it(r: RestoredState, l: LiveState, rec: Option<&Recorded>) -> Result<LiveCheck> {
        judge(r, &l, rec, Path::new("/x/app.db"), Path::new("/x/.app.db-lsw"), "seg")
    }

    #[test]
    fn identical_content_needs_no_txid() {
        assert_eq!(
            judge_it(restored(3, 0x5), live(0x5, 1), None).unwrap(),
            LiveCheck::Identical
        );
    }

    #[test]
    fn a_lagging_replica_is_compared_with_the_record() {
        // The live database moved on to a position nobody recorded yet.
        let r = judge_it(restored(11, 0xb), live(0xd, 4000), Some(&rec())).unwrap();
        assert_eq!(r, LiveCheck::Recorded { live_txid: None });
        // ... or to one recorded, whose checksum matches.
        let r = judge_it(restored(11, 0xb), live(0xc, 3000), Some(&rec())).unwrap();
        assert_eq!(
            r,
            LiveCheck::Recorded {
                live_txid: Some(12)
            }
        );
    }

    #[test]
    fn a_restored_state_unlike_the_record_is_a_mismatch() {
        let e = judge_it(restored(11, 0xbb), live(0xd, 4000), Some(&rec())).unwrap_err();
        assert!(e.to_string().contains("at txid 11"), "{e}");
        assert_eq!(e.class(), crate::ErrorClass::Integrity);
    }

    #[test]
    fn a_live_read_at_the_restored_txid_must_be_identical() {
        let e = judge_it(restored(12, 0xc0), live(0xc, 3000), Some(&rec())).unwrap_err();
        assert_eq!(e.class(), crate::ErrorClass::Integrity);
    }

    #[test]
    fn a_live_read_unlike_its_record_indicts_the_capture() {
        let e = judge_it(restored(11, 0xb), live(0xee, 1000), Some(&rec())).unwrap_err();
        assert!(e.to_string().contains("replicator captured"), "{e}");
    }

    #[test]
    fn without_evidence_nothing_is_a_mismatch() {
        for r in [None, Some(Recorded::default())] {
            let got = judge_it(restored(11, 0xb), live(0xd, 4000), r.as_ref()).unwrap();
            assert!(matches!(got, LiveCheck::NotCompared(_)), "{got:?}");
        }
        let got = judge_it(restored(5, 0x5), live(0xd, 4000), Some(&rec())).unwrap();
        assert!(matches!(got, LiveCheck::NotCompared(_)), "{got:?}");
    }
}
