//! Following the shadow log from inside the replicator (DESIGN.md §4.4).
//!
//! Capture appends every transaction to the shadow log and fsyncs it,
//! then publishes how far the log is durable (`LogHead`). Each replica
//! reads the log from its own position (`LogTail`), at its own pace: the
//! log on disk is the buffer between them, so a slow or offline replica
//! never holds back capture, the application's checkpoints, or the other
//! replicas, and costs no memory while it is behind. Replicas tell
//! capture what they still need (`LogHead::hold`), and the log is pruned
//! below the oldest need only.
//!
//! Only durable bytes are read: the head names the file being appended
//! to and its length after the last fsync, which always ends a whole
//! transaction. Older files of the generation are complete.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::frames::{decode_record, Frame};
use crate::shadow_log::{base_checksum, frames_name, list_frames};
use crate::stream::{StreamKind, StreamReader};

/// What capture has made durable, as it last published it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadState {
    /// Bumped on every publication, so a waiter can tell news from a timeout.
    pub seq: u64,
    /// The generation being captured; 0 before the first.
    pub generation: u64,
    pub page_size: u32,
    /// The last txid in the log, the db checksum after it, and its commit time.
    pub txid: u64,
    pub checksum: u64,
    pub timestamp_ms: u64,
    /// The file being appended to (its first txid) and its durable length.
    pub current_first: u64,
    pub durable_len: u64,
    /// Capture has stopped: nothing more will be appended by this run.
    pub finished: bool,
}

/// The meeting point of one capture and its replicas.
pub struct LogHead {
    log: PathBuf,
    state: Mutex<HeadState>,
    changed: Condvar,
    /// Per replica: `(generation, txid)` after which it still needs the log.
    holds: Mutex<Vec<Option<(u64, u64)>>>,
    /// Replicas reading the live database for a snapshot, which needs
    /// MARKS to be placed (snapshot_match.rs); without any, capture reads
    /// only the last version of each page (wal_index.rs) and writes none.
    marks_wanted: AtomicUsize,
    /// Held by capture while it reads one pass.
    pass: Mutex<()>,
}

/// Held while a replica's live read needs capture to write MARKS.
pub struct MarksWanted<'h>(&'h LogHead);

impl Drop for MarksWanted<'_> {
    fn drop(&mut self) {
        self.0.marks_wanted.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LogHead {
    /// `log` is the shadow log's file directory (`ShadowLog::log_dir`);
    /// `replicas` the number of followers that will hold positions.
    pub fn new(log: PathBuf, replicas: usize) -> Self {
        LogHead {
            log,
            state: Mutex::new(HeadState::default()),
            changed: Condvar::new(),
            holds: Mutex::new(vec![None; replicas]),
            marks_wanted: AtomicUsize::new(0),
            pass: Mutex::new(()),
        }
    }

    pub fn log_dir(&self) -> &Path {
        &self.log
    }

    /// Change the published state and wake every follower.
    pub fn publish(&self, change: impl FnOnce(&mut HeadState)) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut s);
        s.seq += 1;
        self.changed.notify_all();
    }

    pub fn get(&self) -> HeadState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Wait until something is published after `seen` (a `seq`), or
    /// `timeout` passes; returns the state either way.
    pub fn wait(&self, seen: u64, timeout: Duration) -> HeadState {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| s.seq == seen)
            .unwrap_or_else(|e| e.into_inner());
        s.clone()
    }

    /// Wake every follower without news (a stop request).
    pub fn nudge(&self) {
        self.publish(|_| {});
    }

    /// Ask capture for MARKS until the guard is dropped. Returns once any
    /// pass that began without them has ended: a live read begun after
    /// this lands in a pass that writes them, or exactly at the end of
    /// one that did not.
    pub fn want_marks(&self) -> MarksWanted<'_> {
        self.marks_wanted.fetch_add(1, Ordering::SeqCst);
        drop(self.pass.lock().unwrap_or_else(|e| e.into_inner()));
        MarksWanted(self)
    }

    /// For capture: hold this for the whole of a pass, and write MARKS in
    /// it if the bool says so.
    pub fn begin_pass(&self) -> (MutexGuard<'_, ()>, bool) {
        let guard = self.pass.lock().unwrap_or_else(|e| e.into_inner());
        (guard, self.marks_wanted.load(Ordering::SeqCst) > 0)
    }

    /// Replica `slot` needs the log after `txid` of `generation` (`None`:
    /// it needs nothing of it now).
    pub fn hold(&self, slot: usize, need: Option<(u64, u64)>) {
        let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = holds.get_mut(slot) {
            *h = need;
        }
    }

    /// Hold the log at what is published now, atomically with reading it:
    /// whatever a replica reads from the live database afterwards is at
    /// or after that txid, so nothing it will need can be pruned first.
    pub fn hold_at_head(&self, slot: usize) -> HeadState {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.hold(slot, Some((s.generation, s.txid)));
        s.clone()
    }

    /// The newest txid of `generation` that no replica needs any more:
    /// the log may drop everything up to it.
    pub fn prunable(&self, generation: u64, head_txid: u64) -> u64 {
        let holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        holds
            .iter()
            .flatten()
            .filter(|(g, _)| *g == generation)
            .map(|(_, t)| *t)
            .min()
            .unwrap_or(head_txid)
            .min(head_txid)
    }
}

/// Where a read stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Everything durable.
    End,
    /// Before the first transaction after which the database's checksum
    /// is this (or at once, if it is already), or right after the one
    /// that passed through it between two of the commits it merged (its
    /// `last_marks` hold it).
    Checksum(u64),
}

/// What a read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadOutcome {
    /// Whole transactions delivered.
    pub txns: u64,
    /// The log does not continue this generation past `txid` any more (a
    /// new generation started, or the files are gone): follow the head anew.
    pub ended: bool,
}

/// One replica's reading position in the shadow log.
pub struct LogTail {
    log: PathBuf,
    generation: u64,
    page_size: u32,
    /// First txid of the file being read, and that file.
    first: u64,
    file: File,
    /// Byte offset of the next record in `file`.
    offset: u64,
    /// The last transaction read, the db checksum after it, and its
    /// commit time (0 when the position came from a base, not a commit).
    pub txid: u64,
    pub checksum: u64,
    pub timestamp_ms: u64,
    /// The MARKS of the last transaction this read delivered: the db
    /// checksum between each two of the commits it merged.
    pub last_marks: Vec<u64>,
}

impl LogTail {
    /// A tail positioned right after `txid` of `generation`, or `None`
    /// when the log does not hold what follows it (pruned, another
    /// generation, or not captured yet).
    pub fn open(head: &LogHead, generation: u64, txid: u64) -> Result<Option<LogTail>> {
        let state = head.get();
        if generation == 0 || state.generation != generation || txid > state.txid {
            return Ok(None);
        }
        let log = head.log_dir();
        let Some(first) = list_frames(log)?.into_iter().rev().find(|f| *f <= txid + 1) else {
            return Ok(None);
        };
        let Some(mut tail) = Self::open_file(log, generation, first)? else {
            return Ok(None);
        };
        let r = tail.skip_to(&state, txid)?;
        Ok(r.then_some(tail))
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Open the file starting at `first`, positioned after its opening
    /// records, if it belongs to `generation`.
    fn open_file(log: &Path, generation: u64, first: u64) -> Result<Option<LogTail>> {
        let path = log.join(frames_name(first));
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let name = path.display().to_string();
        let mut r = StreamReader::open(BufReader::new(&file), &name, &[StreamKind::Frames])?;
        let page_size = match r.next_raw()? {
            Some(raw) => match decode_record(&raw, 0) {
                Ok(Frame::Generation { generation: g, page_size }) if g == generation => page_size,
                Ok(Frame::Generation { .. }) => return Ok(None),
                _ => return Err(Error::corrupt(&name, raw.offset, "a shadow log file must open with GENERATION")),
            },
            None => return Ok(None),
        };
        let offset = r.offset();
        // The base: the state after txid first - 1.
        let checksum = match base_checksum(log, first) {
            Ok(c) => c,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(LogTail {
            log: log.to_path_buf(),
            generation,
            page_size,
            first,
            file,
            offset,
            txid: first - 1,
            checksum,
            timestamp_ms: 0,
            last_marks: Vec::new(),
        }))
    }

    /// Read (and drop) transactions up to `txid`; false if the log ends
    /// before it.
    fn skip_to(&mut self, head: &HeadState, txid: u64) -> Result<bool> {
        while self.txid < txid {
            let limit = self.limit(head)?;
            if self.offset >= limit {
                return Ok(false);
            }
            let target = txid;
            self.read_file(limit, &mut |t| t.txid >= target, &mut |_| Ok(()))?;
        }
        Ok(self.txid == txid)
    }

    fn is_current(&self, head: &HeadState) -> bool {
        head.generation == self.generation && head.current_first == self.first
    }

    /// How far the file may be read: its durable length while capture
    /// appends to it, all of it once capture has moved on.
    fn limit(&self, head: &HeadState) -> Result<u64> {
        if self.is_current(head) {
            return Ok(head.durable_len);
        }
        let path = self.log.join(frames_name(self.first));
        Ok(self.file.metadata().map_err(|e| Error::io("stat", &path, e))?.len())
    }

    /// Deliver whole transactions (their TXN, PAGE and COMMIT frames) from
    /// the durable log to `visit`, until `until`.
    pub fn read(&mut self, head: &HeadState, until: Until, visit: &mut dyn FnMut(Frame) -> Result<()>) -> Result<ReadOutcome> {
        let mut out = ReadOutcome::default();
        self.last_marks.clear();
        let reached = |t: &LogTail| match until {
            Until::End => false,
            Until::Checksum(c) => t.checksum == c || t.last_marks.contains(&c),
        };
        loop {
            if reached(self) {
                return Ok(out);
            }
            let limit = self.limit(head)?;
            if self.offset < limit {
                out.txns += self.read_file(limit, &reached, visit)?;
                continue;
            }
            if self.is_current(head) {
                return Ok(out);
            }
            // The file is complete: the next one starts right after it.
            match Self::open_file(&self.log, self.generation, self.txid + 1)? {
                Some(next) if next.checksum == self.checksum => {
                    let (txid, ts) = (self.txid, self.timestamp_ms);
                    *self = next;
                    self.timestamp_ms = ts;
                    debug_assert_eq!(self.txid, txid);
                }
                Some(_) => {
                    return Err(Error::integrity(
                        self.log.join(frames_name(self.txid + 1)).display().to_string(),
                        format!("its base does not continue txid {} of the previous file", self.txid),
                    ))
                }
                None => {
                    out.ended = true;
                    return Ok(out);
                }
            }
        }
    }

    /// Read whole transactions of the current file up to byte `limit`,
    /// stopping before one when `stop` says so. Returns how many.
    fn read_file(
        &mut self,
        limit: u64,
        stop: &dyn Fn(&LogTail) -> bool,
        visit: &mut dyn FnMut(Frame) -> Result<()>,
    ) -> Result<u64> {
        let path = self.log.join(frames_name(self.first));
        let name = path.display().to_string();
        let mut file = &self.file;
        file.seek(SeekFrom::Start(self.offset)).map_err(|e| Error::io("seek", &path, e))?;
        let input = BufReader::with_capacity(256 << 10, file.take(limit - self.offset));
        let mut r = StreamReader::resume(input, &name, StreamKind::Frames, self.offset);
        let mut txns = 0;
        let mut open: Option<u64> = None;
        loop {
            if open.is_none() && stop(self) {
                return Ok(txns);
            }
            let Some(raw) = r.next_raw()? else {
                if let Some(t) = open {
                    return Err(Error::corrupt(&name, r.offset(), format!("transaction {t} is cut short")));
                }
                self.offset = r.offset();
                return Ok(txns);
            };
            let frame = decode_record(&raw, self.page_size).map_err(|reason| Error::corrupt(&name, raw.offset, reason))?;
            match &frame {
                Frame::WalPosition(_) => {
                    if open.is_none() {
                        self.offset = r.offset();
                    }
                    continue;
                }
                Frame::Marks(marks) if open.is_some() => {
                    self.last_marks.clone_from(marks);
                    continue;
                }
                Frame::Txn { txid, checksum_before } => {
                    self.last_marks.clear();
                    if *txid != self.txid + 1 || *checksum_before != self.checksum {
                        return Err(Error::integrity(
                            &name,
                            format!("transaction {txid} at byte {} does not follow txid {}", raw.offset, self.txid),
                        ));
                    }
                    open = Some(*txid);
                }
                Frame::Page { .. } if open.is_some() => {}
                Frame::Commit { txid, timestamp_ms, checksum_after, .. } if open == Some(*txid) => {
                    self.txid = *txid;
                    self.checksum = *checksum_after;
                    self.timestamp_ms = *timestamp_ms;
                    self.offset = r.offset();
                    open = None;
                    txns += 1;
                }
                _ => return Err(Error::corrupt(&name, raw.offset, "unexpected record in the shadow log")),
            }
            visit(frame)?;
        }
    }
}
