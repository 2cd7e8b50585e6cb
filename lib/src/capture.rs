//! Live capture (DESIGN.md §4): follow a database's WAL and turn every
//! committed transaction into frames, logged and fsynced in the shadow
//! log before they are sent on, without ever letting a WAL frame be
//! overwritten before it is copied.
//!
//! The protection is a read transaction that is always held, handed from
//! one connection to the other and never let go first: a reader with a
//! read mark > 0 stops any WAL restart, one with mark 0 stops any backfill.
//! A handover copies the WAL to its end, begins the other connection's
//! read transaction, and only then ends the old one. When the new reader
//! gets mark 0 (the WAL was fully backfilled) the next application write
//! restarts the WAL exactly once, so a restart seen while running (salt-1
//! one higher) means the old WAL ended where we copied it. Anything else
//! is a discontinuity, bridged by comparing page hashes (one transaction
//! holding the difference) or by a new generation, never skipped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::checkpoint_guard::CheckpointGuard;
use crate::checksum::{page_hash, PageHashes};
use crate::dbfile::wal_path;
use crate::error::{Error, Result};
use crate::frames::{Frame, FrameWriter, WalPosition, MAX_MARKS};
use crate::layout::{generation_name, new_generation};
use crate::push::Position;
use crate::log_tail::LogHead;
use crate::merged::MergedPages;
use crate::shadow_log::{state_dir, Recovered, ShadowLog, ROTATE_BYTES};
use crate::snapshot::{begin_read, end_read, open_reader, read_snapshot, SnapshotEvent};
use crate::time::now_ms;
use crate::wal::{self, Resume, WalReader};
use crate::wal_index::{self, WalIndex};
use crate::write_lock;

/// Txid of the snapshot that starts a generation.
pub const FIRST_TXID: u64 = 1;
/// Bytes of pages read from the WAL per pass before they are logged,
/// fsynced and sent: what one pass holds in memory. Small enough to keep
/// the replicator's memory low under a heavy write load, large enough
/// that the fsync per pass stays a small cost (measured under ~20,000
/// transactions/s: peak RSS about half that of 64 MiB passes, CPU per
/// transaction the same within the noise).
const PASS_BYTES: usize = 4 << 20;
/// A discontinuity whose difference is larger than this share of the
/// database is a new history (a replaced database): start a new
/// generation instead. Below it, writes made while we were down, however
/// many, become one bridging transaction.
const MAX_DIFF_SHARE: f64 = 0.9;
/// Frames the WAL grows by before our read mark moves with it: SQLite's
/// default automatic checkpoint interval, so the application's own
/// checkpoints keep their usual pace.
const HANDOVER_FRAMES: u64 = 1000;
/// Least time between two checkpoints of the same kind under load.
const CHECKPOINT_GAP: Duration = Duration::from_secs(1);
/// Least time between two PASSIVE checkpoints while the WAL is past the
/// maximum and the next forced one is not due. The application's
/// automatic checkpoint usually takes the checkpoint lock when ours lets
/// go of it (checkpoint_guard.rs), and then backfills, inside one of its
/// commits, whatever our read mark allows: measured under a writer of
/// ~55,000 commits/s, 30,000-40,000 frames and 100 ms for that commit
/// when the only backfill was the forced checkpoint's, every 0.6 s; 12 to
/// 37 ms, ten times a second, at this gap (SQLite alone: none over 11 ms),
/// for the same throughput.
const LARGE_WAL_GAP: Duration = Duration::from_millis(100);
/// How long a forced checkpoint, holding the write lock, waits for an
/// application's checkpoint to let go of the checkpoint lock.
const FORCED_CHECKPOINT_WAIT: Duration = Duration::from_millis(20);
/// A forced checkpoint that found another checkpoint running is tried
/// again this soon (not after `CHECKPOINT_GAP`): that was bad luck, not a
/// reader holding the WAL.
const FORCED_RETRY_GAP: Duration = Duration::from_millis(100);
/// A forced checkpoint that led to a WAL restart is followed by the next
/// one no sooner than this, or than FORCED_SPACING times its own duration.
const FORCED_MIN_GAP: Duration = Duration::from_millis(500);
const FORCED_SPACING: u32 = 10;

#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Checkpoint (PASSIVE) once the WAL holds this many frames.
    pub min_checkpoint_pages: u64,
    /// Above this many frames, checkpoint under a short write lock.
    pub max_checkpoint_pages: u64,
    /// Checkpoint an idle database after this long without a commit.
    pub checkpoint_interval: Duration,
    /// How long to wait for the write lock of a forced checkpoint.
    pub write_lock_timeout: Duration,
    /// Where the shadow log lives (Litestream's `meta-path`); `None`:
    /// `.NAME-lsw` beside the database.
    pub state_dir: Option<PathBuf>,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            min_checkpoint_pages: 1000,
            max_checkpoint_pages: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            write_lock_timeout: Duration::from_millis(200),
            state_dir: None,
        }
    }
}

/// Where frames go: a pipe (`FrameWriter`) or an in-process channel.
pub trait FrameSink {
    fn send(&mut self, frame: Frame) -> Result<()>;
    fn flush(&mut self) -> Result<()>;
}

impl<W: std::io::Write> FrameSink for FrameWriter<W> {
    fn send(&mut self, frame: Frame) -> Result<()> {
        self.write(&frame)
    }
    fn flush(&mut self) -> Result<()> {
        FrameWriter::flush(self)
    }
}

/// Something worth a log line.
#[derive(Debug, Clone)]
pub enum Event {
    NewGeneration { generation: u64, reason: String },
    Resumed { generation: u64, txid: u64, resent: u64 },
    Bridged { txid: u64, pages: u32, reason: String },
    Checkpoint {
        mode: &'static str,
        frames: u64,
        backfilled: u64,
        /// Forced only: how long the write lock took to get, and was held.
        lock: Option<(Duration, Duration)>,
    },
    CheckpointSkipped { reason: String },
    Pruned { files: u64, log_bytes: u64 },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::NewGeneration { generation, reason } => {
                write!(f, "new generation {}: {reason}", generation_name(*generation))
            }
            Event::Resumed { generation, txid, resent } => write!(
                f,
                "resumed generation {} at txid {txid}, resent {resent} transactions from the shadow log",
                generation_name(*generation)
            ),
            Event::Bridged { txid, pages, reason } => {
                write!(f, "{reason}; the database differs in {pages} pages, sent as transaction {txid}")
            }
            Event::Checkpoint { mode, frames, backfilled, lock } => {
                write!(f, "checkpoint ({mode}): {backfilled} of {frames} WAL frames backfilled")?;
                if let Some((waited, held)) = lock {
                    write!(f, "; write lock after {:.1} ms, held {:.1} ms", waited.as_secs_f64() * 1e3, held.as_secs_f64() * 1e3)?;
                }
                Ok(())
            }
            Event::CheckpointSkipped { reason } => write!(f, "checkpoint skipped: {reason}"),
            Event::Pruned { files, log_bytes } => {
                write!(f, "pruned {files} shadow log files; {log_bytes} bytes left")
            }
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct CaptureStats {
    /// Transactions (txids) captured: one per pass, whatever the number
    /// of SQLite commits it merged.
    pub transactions: u64,
    pub passive_checkpoints: u64,
    /// Why checkpoints ran: the WAL passed the minimum (PASSIVE), the
    /// database went idle (PASSIVE); past the maximum they are forced
    /// (`forced_checkpoints`, which also run a PASSIVE one first).
    pub min_checkpoints: u64,
    pub idle_checkpoints: u64,
    pub forced_checkpoints: u64,
    pub wal_restarts: u64,
}

pub struct Capture {
    db: PathBuf,
    wal_path: PathBuf,
    opts: CaptureOptions,
    readers: [Connection; 2],
    active: usize,
    writer: Connection,
    /// SQLite's checkpoint lock, held between our own checkpoints.
    guard: CheckpointGuard,
    log: ShadowLog,
    generation: u64,
    txid: u64,
    hashes: PageHashes,
    wal: Option<WalReader>,
    position: WalPosition,
    last_commit: Instant,
    idle_checkpointed: bool,
    /// Whether a WAL restart (salt-1 one higher) may be taken to mean
    /// "the old WAL ended where we copied it": true once we have copied
    /// the WAL to its end under the read transaction we hold, false while
    /// a restart is being resumed from the shadow log.
    restart_trusted: bool,
    last_forced: Option<Instant>,
    /// A forced checkpoint whose backfill ran (when it began), waiting for
    /// the checkpoint lock to take the write lock.
    forced_backfilled: Option<Instant>,
    /// `stats.wal_restarts` when the last forced checkpoint ran.
    restarts_at_forced: u64,
    /// `stats.wal_restarts` when we last moved off the read mark 0 a
    /// restart leaves us on.
    restarts_seen: u64,
    /// WAL frames (of the current incarnation) when our read transaction
    /// last began.
    handed_over_at: u64,
    last_passive: Option<Instant>,
    /// Commit time of `txid`, as captured (0 when only a base is known).
    last_commit_ms: u64,
    /// Followers of the log (the replicator's replicas), told after every fsync.
    head: Option<Arc<LogHead>>,
    events: Vec<Event>,
    pub stats: CaptureStats,
}

/// SQLite commits being merged into one transaction of ours.
struct Merging {
    checksum_before: u64,
    pages: MergedPages,
    /// The db checksum after each commit merged so far (after the group
    /// of them read through the wal-index, which counts as one).
    marks: Vec<u64>,
    /// Whether a replica asked for MARKS (LogHead::want_marks).
    keep_marks: bool,
}

impl Merging {
    /// Append the transaction's records to `frames`: TXN, its pages in
    /// page order, the MARKS of every commit but the last, COMMIT.
    fn close(mut self, txid: u64, timestamp_ms: u64, frames: &mut Vec<Frame>) {
        let checksum_after = self.marks.pop().expect("at least one commit");
        let db_pages = self.pages.db_pages();
        frames.push(Frame::Txn {
            txid,
            checksum_before: self.checksum_before,
        });
        frames.extend(self.pages.into_pages().into_iter().map(|(pgno, data)| Frame::Page { pgno, data }));
        if self.keep_marks && !self.marks.is_empty() {
            frames.push(Frame::Marks(self.marks));
        }
        frames.push(Frame::Commit {
            txid,
            db_pages,
            timestamp_ms,
            checksum_after,
        });
    }
}

/// Where capture starts from.
#[derive(Debug, Clone, Copy)]
pub enum Since {
    /// The replica's durable position, if known: the log is resumed when
    /// it continues that position (its transactions after it are resent),
    /// else a new generation starts (the pipe tools: downstream holds
    /// nothing but what was sent).
    Replica(Option<Position>),
    /// The log's own state: resumed whenever it verifies. For the
    /// replicator, whose replicas read the log themselves from their own
    /// positions.
    OwnLog,
}

impl Capture {
    /// Take the database's lock, recover the shadow log, and bring
    /// `sink` up to date: resume the logged generation if `since` (the
    /// replica's durable position) continues it, else start a new one
    /// with a snapshot.
    pub fn start(
        db: &Path,
        opts: CaptureOptions,
        since: Since,
        head: Option<Arc<LogHead>>,
        sink: &mut dyn FrameSink,
    ) -> Result<Self> {
        // The database first: a missing or unusable one must not leave a
        // state directory behind.
        let readers = [open_reader(db)?, open_reader(db)?];
        let log = ShadowLog::open(db, &opts.state_dir.clone().unwrap_or_else(|| state_dir(db)))?;
        let writer = open_reader(db)?;
        let guard = CheckpointGuard::open(db)?;
        begin_read(&readers[0], db)?;
        let mut cap = Capture {
            db: db.to_path_buf(),
            wal_path: wal_path(db),
            opts,
            readers,
            active: 0,
            writer,
            guard,
            log,
            generation: 0,
            txid: 0,
            hashes: PageHashes::new(4096),
            wal: None,
            position: WalPosition::default(),
            last_commit: Instant::now(),
            idle_checkpointed: false,
            restart_trusted: true,
            last_forced: None,
            forced_backfilled: None,
            restarts_at_forced: 0,
            restarts_seen: 0,
            handed_over_at: 0,
            last_passive: None,
            last_commit_ms: 0,
            head,
            events: Vec::new(),
            stats: CaptureStats::default(),
        };
        let recovered = cap.log.recover()?;
        let since = match (&recovered, since) {
            (Ok(rec), Since::OwnLog) => Some(Position {
                generation: rec.generation,
                txid: rec.txid,
            }),
            (Err(_), Since::OwnLog) => None,
            (_, Since::Replica(p)) => p,
        };
        let reason = match (recovered, since) {
            (Ok(rec), Some(p)) if p.generation == rec.generation && p.txid + 1 >= rec.oldest_txid && p.txid <= rec.txid => {
                cap.resume(rec, p.txid, sink)?;
                None
            }
            (Ok(rec), Some(p)) if p.generation == rec.generation => Some(format!(
                "the replica is at txid {} and the shadow log holds txids {}-{}",
                p.txid, rec.oldest_txid, rec.txid
            )),
            (Ok(rec), Some(p)) => Some(format!(
                "the replica holds generation {}, the shadow log {}",
                generation_name(p.generation),
                generation_name(rec.generation)
            )),
            (Ok(_), None) => Some("the replica's position is not known (give --since or --ack)".into()),
            (Err(why), _) => Some(why),
        };
        if let Some(reason) = reason {
            cap.new_generation(reason, sink)?;
        }
        sink.flush()?;
        cap.publish()?;
        Ok(cap)
    }

    /// Tell the log's followers how far it is durable. Called right after
    /// an fsync of the log, so the file's length is what is durable.
    fn publish(&self) -> Result<()> {
        let Some(head) = &self.head else { return Ok(()) };
        let (current_first, durable_len) = self.log.current_file()?.unwrap_or((0, 0));
        head.publish(|s| {
            s.generation = self.generation;
            s.page_size = self.hashes.page_size();
            s.txid = self.txid;
            s.checksum = self.hashes.checksum();
            s.timestamp_ms = self.last_commit_ms;
            s.current_first = current_first;
            s.durable_len = durable_len;
        });
        Ok(())
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn txid(&self) -> u64 {
        self.txid
    }

    pub fn checksum(&self) -> u64 {
        self.hashes.checksum()
    }

    pub fn log_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    /// Events since the last call, for the caller to log.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn new_generation(&mut self, reason: String, sink: &mut dyn FrameSink) -> Result<()> {
        // A snapshot may take minutes: not with the checkpoint lock held,
        // which an application's recovery of the wal-index would need.
        self.guard.release();
        let generation = new_generation();
        let ts = now_ms();
        let mut hashes = None;
        let info = read_snapshot(&self.db, &self.readers[self.active], &mut |event| match event {
            SnapshotEvent::Start { page_size, db_pages } => {
                hashes = Some(PageHashes::new(page_size));
                sink.send(Frame::Generation { generation, page_size })?;
                sink.send(Frame::Snapshot {
                    txid: FIRST_TXID,
                    db_pages,
                    timestamp_ms: ts,
                })
            }
            SnapshotEvent::Page { pgno, data } => {
                hashes.as_mut().expect("start before pages").set(pgno, data);
                sink.send(Frame::Page { pgno, data: data.to_vec() })
            }
        })?;
        let mut hashes = hashes.unwrap_or_else(|| PageHashes::new(info.page_size));
        hashes.resize(info.db_pages);
        sink.send(Frame::Commit {
            txid: FIRST_TXID,
            db_pages: info.db_pages,
            timestamp_ms: ts,
            checksum_after: info.checksum,
        })?;
        let position = WalPosition {
            txid: FIRST_TXID,
            ..info.wal_position
        };
        self.log.start_file(generation, FIRST_TXID + 1, &hashes, position, true)?;
        self.generation = generation;
        self.txid = FIRST_TXID;
        self.hashes = hashes;
        self.last_commit_ms = ts;
        self.set_position(position)?;
        self.events.push(Event::NewGeneration { generation, reason });
        self.publish()
    }

    /// Continue a logged generation: resend what the replica lacks, then
    /// pick the WAL up where capture stopped, or bridge the gap.
    fn resume(&mut self, rec: Recovered, acked: u64, sink: &mut dyn FrameSink) -> Result<()> {
        self.generation = rec.generation;
        self.txid = rec.txid;
        self.hashes = rec.hashes;
        sink.send(Frame::Generation {
            generation: rec.generation,
            page_size: self.hashes.page_size(),
        })?;
        let mut resent = 0;
        self.log.resend(acked, &mut |frame| {
            if matches!(frame, Frame::Commit { .. }) {
                resent += 1;
            }
            sink.send(frame.clone())
        })?;
        self.events.push(Event::Resumed {
            generation: rec.generation,
            txid: rec.txid,
            resent,
        });
        // Only the same WAL incarnation can be continued: while we were
        // down nothing protected the WAL, so any restart may have hidden
        // transactions from us.
        match WalReader::resume(&self.wal_path, &rec.position)? {
            Resume::Same(r) => {
                self.wal = Some(r);
                self.position = rec.position;
                // Recovery ends the log at a WAL position, so what follows
                // it in the WAL is new to the log.
                debug_assert_eq!(rec.txid, rec.position.txid);
                let limit = self.wal_len();
                self.restart_trusted = false;
                self.capture_to(limit, sink)?;
                self.restart_trusted = true;
                // Our new reader may hold mark 0 (the WAL was fully
                // backfilled while we were down), which lets one restart
                // overwrite frames we had not read yet: a restart now
                // does not prove we copied the old WAL to its end.
                let now = wal::read_header(&self.wal_path)?;
                let read = self.wal.as_ref().map(|r| (r.header.salt1, r.header.salt2));
                if now.map(|h| (h.salt1, h.salt2)) != read {
                    self.bridge("the WAL restarted while capture was resuming".into(), sink)?;
                }
            }
            Resume::NewIncarnation(_) => self.bridge("the WAL was restarted while capture was stopped".into(), sink)?,
            // Even a WAL that was absent when we stopped may have been
            // written, checkpointed and removed since.
            Resume::NoWal => self.bridge("the WAL was checkpointed or removed while capture was stopped".into(), sink)?,
        }
        Ok(())
    }

    fn set_position(&mut self, position: WalPosition) -> Result<()> {
        self.position = position;
        self.wal = match WalReader::resume(&self.wal_path, &position)? {
            Resume::Same(r) => Some(r),
            Resume::NewIncarnation(_) | Resume::NoWal => None,
        };
        Ok(())
    }

    /// Bring the log and the sink to the database's current state across a
    /// discontinuity: the pages whose hash changed become one transaction.
    /// A difference too large to be an edit (a replaced database) starts a
    /// new generation instead.
    fn bridge(&mut self, reason: String, sink: &mut dyn FrameSink) -> Result<()> {
        self.guard.release();
        let old = self.hashes.clone();
        let mut changed: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut page_size = old.page_size();
        let mut too_big = false;
        let limit = ((old.len().max(1) as f64) * MAX_DIFF_SHARE) as usize + 16;
        let info = read_snapshot(&self.db, &self.readers[self.active], &mut |event| {
            match event {
                SnapshotEvent::Start { page_size: ps, .. } => page_size = ps,
                SnapshotEvent::Page { pgno, data } => {
                    if !too_big && old.get(pgno) != Some(page_hash(pgno, data)) {
                        changed.push((pgno, data.to_vec()));
                        too_big = changed.len() > limit;
                    }
                }
            }
            Ok(())
        })?;
        if page_size != old.page_size() || too_big {
            let why = if page_size != old.page_size() { "the page size changed" } else { "most of the database changed" };
            return self.new_generation(format!("{reason}, and {why}"), sink);
        }
        let position = WalPosition {
            txid: self.txid + u64::from(!changed.is_empty() || info.db_pages != old.len()),
            ..info.wal_position
        };
        if position.txid > self.txid {
            let txid = position.txid;
            let ts = now_ms();
            let mut frames = vec![Frame::Txn {
                txid,
                checksum_before: self.hashes.checksum(),
            }];
            for (pgno, data) in &changed {
                self.hashes.set(*pgno, data);
            }
            self.hashes.resize(info.db_pages);
            debug_assert_eq!(self.hashes.checksum(), info.checksum);
            frames.extend(changed.iter().map(|(pgno, data)| Frame::Page { pgno: *pgno, data: data.clone() }));
            frames.push(Frame::Commit {
                txid,
                db_pages: info.db_pages,
                timestamp_ms: ts,
                checksum_after: self.hashes.checksum(),
            });
            self.log_and_send(frames, position, sink)?;
            self.txid = txid;
            self.last_commit_ms = ts;
            self.events.push(Event::Bridged {
                txid,
                pages: changed.len() as u32,
                reason,
            });
        } else {
            self.log.append(&Frame::WalPosition(position))?;
            self.log.sync()?;
        }
        self.set_position(position)?;
        self.publish()
    }

    /// Log `frames` and the new WAL position, fsync, then send (all but
    /// the shadow log's own MARKS).
    fn log_and_send(&mut self, frames: Vec<Frame>, position: WalPosition, sink: &mut dyn FrameSink) -> Result<()> {
        for f in &frames {
            self.log.append(f)?;
        }
        self.log.append(&Frame::WalPosition(position))?;
        self.log.sync()?;
        for f in frames {
            if !matches!(f, Frame::Marks(_)) {
                sink.send(f)?;
            }
        }
        sink.flush()
    }

    /// Copy every committed transaction the WAL holds beyond our position.
    /// Returns how many transactions (txids) that made.
    pub fn capture(&mut self, sink: &mut dyn FrameSink) -> Result<u64> {
        let limit = self.wal_len();
        self.capture_to(limit, sink)
    }

    /// The WAL file's length now: frames below it were written before
    /// this moment.
    fn wal_len(&self) -> u64 {
        std::fs::metadata(&self.wal_path).map_or(0, |m| m.len())
    }

    /// Capture until our position reaches byte `limit` of the WAL (or no
    /// complete transaction is left). The limit keeps one step finite
    /// under a load that never pauses, so checkpoints get their turn.
    ///
    /// The SQLite commits read in one pass become one transaction of
    /// ours, holding the last version of each page they wrote. Usually
    /// only those versions are read (wal_index.rs); while a replica asks
    /// for MARKS the pass reads every frame and records the db checksum
    /// after each commit (shadow log only). An idle database's commits
    /// each get a pass, and a txid, of their own; under load this is what
    /// keeps the log's bytes, its fsyncs, the replicas' reading and our
    /// own reading of the WAL in proportion to the pages changed, not to
    /// the commits made.
    fn capture_to(&mut self, limit: u64, sink: &mut dyn FrameSink) -> Result<u64> {
        let Some(header) = wal::read_header(&self.wal_path)? else {
            return Ok(0); // no WAL, or reset and not written yet
        };
        let same = self.wal.as_ref().is_some_and(|r| r.header.salt1 == header.salt1 && r.header.salt2 == header.salt2);
        if !same {
            let known = self.position.offset > 0;
            let unproven = known && (!self.restart_trusted || header.salt1 != self.position.salt1.wrapping_add(1));
            if unproven || header.page_size != self.hashes.page_size() {
                self.bridge(
                    format!(
                        "the WAL changed under us (salt-1 {:#x} after {:#x})",
                        header.salt1, self.position.salt1
                    ),
                    sink,
                )?;
                return Ok(0);
            }
            // One restart since we last copied: the protocol guarantees
            // the old WAL ended where our copy did.
            if known {
                self.stats.wal_restarts += 1;
            }
            self.wal = WalReader::open(&self.wal_path)?;
            if self.wal.is_none() {
                return Ok(0);
            }
        }
        let mut total = 0;
        let head = self.head.clone();
        loop {
            // A replica placing a live read needs the db checksum after
            // every commit (MARKS): only reading the WAL frame by frame
            // gives those. Otherwise the wal-index tells which frames hold
            // the last version of each page, and only those are read.
            let (_pass, marks_wanted) = match &head {
                Some(h) => {
                    let (guard, wanted) = h.begin_pass();
                    (Some(guard), wanted)
                }
                None => (None, false),
            };
            let r = self.wal.as_mut().expect("WAL reader");
            let mut frames = Vec::new();
            let mut bytes = 0usize;
            let mut txid = self.txid;
            let mut last_ts = self.last_commit_ms;
            let mut merging: Option<Merging> = None;
            let mut caught_up = false;
            let ps = self.hashes.page_size() as usize;
            // Where reading frame by frame stops: the end of the WAL, or
            // after the wal-index, where the WAL ended just after it was
            // read. The index shows a commit only once SQLite publishes it,
            // after the last write to the WAL that woke us: a commit
            // written but not yet published is read frame by frame, or it
            // would wait for the next wake-up (a second, when idle).
            let mut tail_end = u64::MAX;
            let index = if marks_wanted { None } else { WalIndex::of(&self.readers[self.active]) };
            if let Some(index) = index {
                if let Some(pass) = wal_index::read_pass(r, &index, PASS_BYTES / ps, self.hashes.len())? {
                    tail_end = r.file().metadata().map_or(0, |m| m.len());
                    if pass.frames > 0 {
                        bytes = pass.pages.len() * ps;
                        let checksum_before = self.hashes.checksum();
                        for (pgno, data) in &pass.pages {
                            self.hashes.set(*pgno, data);
                        }
                        self.hashes.resize(pass.db_pages);
                        merging = Some(Merging {
                            checksum_before,
                            pages: MergedPages::new(ps as u32, pass.pages, pass.db_pages),
                            marks: vec![self.hashes.checksum()],
                            keep_marks: marks_wanted,
                        });
                    }
                }
            }
            while !caught_up && bytes < PASS_BYTES {
                if r.valid_end() >= tail_end {
                    caught_up = true;
                    break;
                }
                let Some(txn) = r.next_txn()? else {
                    caught_up = true;
                    break;
                };
                bytes += txn.pages.len() * self.hashes.page_size() as usize;
                let checksum_before = self.hashes.checksum();
                for (pgno, data) in &txn.pages {
                    self.hashes.set(*pgno, data);
                }
                self.hashes.resize(txn.db_pages);
                let m = match &mut merging {
                    Some(m) => {
                        m.pages.apply(txn.pages, txn.db_pages);
                        m
                    }
                    None => merging.insert(Merging {
                        checksum_before,
                        pages: MergedPages::new(self.hashes.page_size(), txn.pages, txn.db_pages),
                        marks: Vec::new(),
                        keep_marks: marks_wanted,
                    }),
                };
                m.marks.push(self.hashes.checksum());
                if m.marks.len() > MAX_MARKS {
                    txid += 1;
                    last_ts = now_ms();
                    merging.take().expect("merging").close(txid, last_ts, &mut frames);
                }
            }
            if let Some(m) = merging.take() {
                txid += 1;
                last_ts = now_ms();
                m.close(txid, last_ts, &mut frames);
            }
            if frames.is_empty() {
                return Ok(total);
            }
            let position = r.position(txid);
            self.log_and_send(frames, position, sink)?;
            self.stats.transactions += txid - self.txid;
            total += txid - self.txid;
            self.txid = txid;
            self.last_commit_ms = last_ts;
            self.position = position;
            self.last_commit = Instant::now();
            self.idle_checkpointed = false;
            if self.log.current_bytes() > ROTATE_BYTES {
                self.log.start_file(self.generation, txid + 1, &self.hashes, position, false)?;
            }
            self.publish()?;
            // Commits made since this pass began wait for the next step:
            // chasing a writer that never pauses here would fsync the log
            // once per handful of commits.
            if caught_up || position.offset >= limit {
                return Ok(total);
            }
        }
    }

    /// Move the read transaction to the other connection without a gap:
    /// begin the new one, copy the WAL at least to where it ended when the
    /// new one began (the old reader still protects all of it), and only
    /// then end the old one. Whatever the new reader's mark, every frame
    /// that a restart could overwrite after that is already copied.
    fn handover(&mut self, sink: &mut dyn FrameSink) -> Result<()> {
        let next = 1 - self.active;
        begin_read(&self.readers[next], &self.db)?;
        let limit = self.wal_len();
        self.capture_to(limit, sink)?;
        end_read(&self.readers[self.active], &self.db)?;
        self.active = next;
        self.handed_over_at = self.wal.as_ref().map_or(0, |r| r.frames());
        Ok(())
    }

    /// PASSIVE checkpoint on the checkpoint guard's connection, which
    /// holds no read transaction; it waits for no reader or writer, only
    /// (until `deadline`) for another connection's checkpoint to end.
    fn passive(&mut self, deadline: Instant) -> Result<write_lock::Checkpointed> {
        self.guard.checkpoint(deadline).map_err(|e| Error::sqlite("checkpoint", &self.db, e))
    }

    /// Checkpoint so the WAL can restart, and hand the read transaction
    /// over so that a fully backfilled WAL leaves us at mark 0.
    fn checkpoint_passive(&mut self, sink: &mut dyn FrameSink) -> Result<bool> {
        self.last_passive = Some(Instant::now());
        self.handover(sink)?;
        let c = self.passive(Instant::now())?;
        let (frames, done) = (c.frames, c.backfilled);
        self.stats.passive_checkpoints += 1;
        self.events.push(Event::Checkpoint {
            mode: "passive",
            frames,
            backfilled: done,
            lock: None,
        });
        let full = frames > 0 && frames == done;
        if full {
            self.handover(sink)?;
        }
        Ok(full)
    }

    /// The WAL is past the maximum: make the quiet moment a restart needs
    /// by holding the write lock for one short checkpoint.
    /// False when the next one is not due yet.
    fn checkpoint_forced(&mut self, sink: &mut dyn FrameSink) -> Result<bool> {
        // After one that led to a restart (the WAL grew back under load),
        // again after FORCED_MIN_GAP, or FORCED_SPACING times what the last
        // one took if that is longer: each restart costs a writer that
        // never pauses (measured here: forcing one every 0.2-0.3 s cut a
        // 40,000 tx/s writer to 15,000-20,000), so the WAL is allowed to
        // grow back for a while. Otherwise, e.g. while an application
        // reader holds the WAL, at most once a second.
        let began = match self.forced_backfilled.take() {
            // The backfill ran in an earlier pass (below): on to the write
            // lock once the checkpoint lock is ours again.
            Some(backfilled) if backfilled.elapsed() < CHECKPOINT_GAP => {
                if !self.guard.is_held() {
                    self.forced_backfilled = Some(backfilled);
                    return Ok(true);
                }
                Instant::now()
            }
            _ => {
                let restarted = self.stats.wal_restarts > self.restarts_at_forced;
                let gap = if restarted { FORCED_MIN_GAP } else { CHECKPOINT_GAP };
                if self.last_forced.is_some_and(|t| t.elapsed() < gap) {
                    return Ok(false);
                }
                let began = Instant::now();
                self.last_forced = Some(began);
                self.restarts_at_forced = self.stats.wal_restarts;
                // Most of the backfill happens before the lock, so the lock
                // is short. Even a full backfill here does not end the
                // matter: under load the application appends again before
                // our next reader begins, so that reader gets a mark > 0
                // and the WAL cannot restart. Only the write lock makes the
                // quiet moment.
                let guarded = self.guard.is_held();
                self.checkpoint_passive(sink)?;
                if guarded && !self.guard.is_held() {
                    // The application's automatic checkpoint took the
                    // checkpoint lock in the moment ours let go of it (it
                    // tries after every commit), and backfills the WAL.
                    // Taking the write lock now would only wait for it
                    // (measured: held 20 ms for nothing, every other time);
                    // a later pass takes it once the lock is ours again.
                    self.forced_backfilled = Some(began);
                    return Ok(true);
                }
                began
            }
        };
        // Tried every few tens of microseconds (write_lock.rs): SQLite's
        // own busy handler, sleeping milliseconds between tries, misses
        // the short gaps a fast writer leaves between its commits.
        let started = Instant::now();
        if let Err(e) = write_lock::begin_immediate(&mut self.writer, started + self.opts.write_lock_timeout) {
            self.events.push(Event::CheckpointSkipped {
                reason: format!("write lock not available within {:?} ({e})", self.opts.write_lock_timeout),
            });
            return Ok(true);
        }
        let (waited, locked) = (started.elapsed(), Instant::now());
        let result = (|| {
            self.handover(sink)?;
            // The application's own automatic checkpoint may hold the
            // checkpoint lock right now; with the write lock ours it ends
            // soon, so wait for it a little (the write lock stays short).
            let c = self.passive(Instant::now() + FORCED_CHECKPOINT_WAIT)?;
            self.handover(sink)?;
            Ok::<_, Error>(c)
        })();
        let unlock = self.writer.execute_batch("ROLLBACK").map_err(|e| Error::sqlite("release write lock on", &self.db, e));
        let held = locked.elapsed();
        let c = result?;
        unlock?;
        self.stats.forced_checkpoints += 1;
        self.events.push(Event::Checkpoint {
            mode: "forced",
            frames: c.frames,
            backfilled: c.backfilled,
            lock: Some((waited, held)),
        });
        // Next one: after a full backfill the WAL restarts with the next
        // write, and `restarted` lets the spacing alone decide.
        self.last_forced = Some(began + (began.elapsed() * FORCED_SPACING).saturating_sub(FORCED_MIN_GAP));
        if c.busy || c.backfilled < c.frames {
            self.last_forced = if c.busy {
                Instant::now().checked_sub(CHECKPOINT_GAP.saturating_sub(FORCED_RETRY_GAP))
            } else {
                Some(began)
            };
            // Without a full backfill the WAL cannot restart: say why.
            self.events.push(Event::CheckpointSkipped {
                reason: if c.busy {
                    "forced checkpoint found another checkpoint running; the WAL cannot restart yet".into()
                } else {
                    "forced checkpoint could not backfill the whole WAL (a reader holds part of it); the WAL cannot restart yet".into()
                },
            });
        }
        Ok(true)
    }

    /// One pass: capture, then checkpoint if the WAL calls for it.
    pub fn step(&mut self, sink: &mut dyn FrameSink) -> Result<u64> {
        self.tend_checkpoint_lock();
        let n = self.capture(sink)?;
        let frames = self.wal.as_ref().map_or(0, |r| r.frames());
        // Under a steady load a checkpoint per commit would cost the
        // writer an fsync each time; one a second keeps up. Past the
        // maximum, between forced checkpoints, one every LARGE_WAL_GAP.
        let large = frames >= self.opts.max_checkpoint_pages;
        let gap = if large { LARGE_WAL_GAP } else { CHECKPOINT_GAP };
        let passive_due = self.last_passive.is_none_or(|t| t.elapsed() >= gap);
        if large && self.checkpoint_forced(sink)? {
            // It ran, or waits for the checkpoint lock: nothing more now.
        } else if frames >= self.opts.min_checkpoint_pages && passive_due {
            self.checkpoint_passive(sink)?;
            self.stats.min_checkpoints += 1;
        } else if frames > 0 && !self.idle_checkpointed && self.last_commit.elapsed() >= self.opts.checkpoint_interval {
            self.checkpoint_passive(sink)?;
            self.idle_checkpointed = true;
            self.stats.idle_checkpoints += 1;
        } else if self.stats.wal_restarts > self.restarts_seen || frames >= self.handed_over_at + HANDOVER_FRAMES {
            // Move our read mark, which bounds what the application's own
            // automatic checkpoints may backfill (when they run: not while
            // the checkpoint guard holds their lock), at their pace: every
            // HANDOVER_FRAMES frames. Moving it on every pass would make
            // the application backfill a few frames and fsync the
            // database after almost every commit; moving it rarely, make
            // it backfill a second's worth in one commit. And at once
            // after a WAL restart, which leaves us on read mark 0: held
            // while the WAL grows again, mark 0 makes every automatic
            // checkpoint index the whole WAL before finding that it may
            // not backfill (wal.c, walCheckpoint), slowing the writer
            // down by the commit.
            self.restarts_seen = self.stats.wal_restarts;
            self.handover(sink)?;
        }
        Ok(n)
    }

    /// Hold SQLite's checkpoint lock, or let go of it if the wal-index
    /// needs rebuilding (checkpoint_guard.rs): called between passes as
    /// well, so an application waits for that at most a fraction of a
    /// second.
    pub fn tend_checkpoint_lock(&mut self) {
        self.guard.refresh();
    }

    /// The replica holds everything up to `acked`: drop it from the log.
    pub fn acknowledge(&mut self, acked: Position) -> Result<()> {
        if acked.generation != self.generation {
            return Ok(());
        }
        let files = self.log.prune(acked.txid)?;
        if files > 0 {
            self.events.push(Event::Pruned {
                files,
                log_bytes: self.log.size_bytes(),
            });
        }
        Ok(())
    }

    /// Capture what is left and close the stream.
    pub fn finish(mut self, sink: &mut dyn FrameSink) -> Result<()> {
        self.capture(sink)?;
        sink.send(Frame::End { records: 0 })?;
        sink.flush()
    }
}
