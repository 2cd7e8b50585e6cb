//! Packs a frame stream into segments: snapshots into page-range parts of
//! bounded size, transactions into changes segments holding each page
//! once (its last version in the range). The flush policy (when to cut a
//! changes segment) lives here too, so lsw-segment and `litestream
//! replicate` batch alike.

use std::time::{Duration, Instant};

use crate::checksum::page_hash;
use crate::error::{Error, Result};
use crate::frames::Frame;
use crate::layout::SegmentKey;
use crate::merged::MergedPages;
use crate::segment::{self, SegmentHeader, SegmentKind, SegmentName};

#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// Uncompressed bytes of pages per snapshot part. A restore decodes
    /// parts in parallel, one per core, so smaller parts keep the cores
    /// busy to the end: measured on a 207 MB database (2 cores), 4 MiB
    /// parts restored in 0.19-0.21 s against 0.23-0.25 s with 16 MiB,
    /// peak RSS 24 against 64 MB, for a replica 0.16% larger.
    pub part_bytes: usize,
    /// Cut a changes segment once its pages pass this many bytes. The
    /// pages, and the segment being compressed from them, are most of a
    /// replicator's memory under a heavy write load: measured under a
    /// writer changing ~4 MB of pages a second, 2 MiB gave a peak RSS of
    /// 15-17 MB against 17-18 MB with 4 MiB, for half again as many
    /// segments. A segment per sync interval stays the rule below that.
    pub max_pending_bytes: usize,
    /// Cut a changes segment when its first commit is this old.
    pub sync_interval: Duration,
    /// zstd level of snapshots.
    pub level: i32,
    /// zstd level of changes segments: made all the time under load, where
    /// the replicator's CPU counts most. Measured under a ~47,000
    /// commits/s writer on 2 cores: level 1 instead of 3 cut the
    /// replicator's CPU by 15%; on realistic table pages it makes output
    /// about 18% larger, which snapshots (level 3) and compaction (which
    /// recompresses at its own level) do not inherit.
    pub changes_level: i32,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            part_bytes: 4 << 20,
            max_pending_bytes: 2 << 20,
            sync_interval: Duration::from_secs(1),
            level: 3,
            changes_level: 1,
        }
    }
}

/// A finished segment file and where it goes.
#[derive(Debug, Clone)]
pub struct EncodedSegment {
    pub key: SegmentKey,
    pub header: SegmentHeader,
    pub bytes: Vec<u8>,
}

struct SnapshotInProgress {
    txid: u64,
    db_pages: u32,
    timestamp_ms: u64,
    pages_per_part: u32,
    parts: u32,
    part: u32,
    buf: Vec<(u32, Vec<u8>)>,
    sum: u64,
}

struct TxnInProgress {
    txid: u64,
    checksum_before: u64,
    pages: Vec<(u32, Vec<u8>)>,
}

/// Committed transactions not yet cut into a segment.
struct Pending {
    min_txid: u64,
    max_txid: u64,
    first_ts_ms: u64,
    last_ts_ms: u64,
    checksum_before: u64,
    checksum_after: u64,
    pages: MergedPages,
    since: Instant,
}

/// Where the stream stands after the last commit.
#[derive(Debug, Clone, Copy)]
struct Position {
    txid: u64,
    checksum: u64,
}

pub struct Segmenter {
    opts: SegmentOptions,
    generation: u64,
    page_size: u32,
    position: Option<Position>,
    snapshot: Option<SnapshotInProgress>,
    txn: Option<TxnInProgress>,
    pending: Option<Pending>,
    last_flush: Option<Instant>,
}

impl Segmenter {
    pub fn new(opts: SegmentOptions) -> Self {
        Segmenter {
            opts,
            generation: 0,
            page_size: 0,
            position: None,
            snapshot: None,
            txn: None,
            pending: None,
            last_flush: None,
        }
    }

    /// When the pending changes must be cut, if any are pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending
            .as_ref()
            .map(|p| p.since + self.opts.sync_interval)
    }

    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Feed one frame (from a `FrameReader`, so the grammar is already
    /// checked); finished segments go to `out`.
    pub fn push(
        &mut self,
        frame: Frame,
        out: &mut dyn FnMut(EncodedSegment) -> Result<()>,
    ) -> Result<()> {
        match frame {
            Frame::Generation {
                generation,
                page_size,
            } => {
                self.flush(out)?;
                self.generation = generation;
                self.page_size = page_size;
                self.position = None;
            }
            Frame::Snapshot {
                txid,
                db_pages,
                timestamp_ms,
            } => {
                // Segments must reach the replica in txid order.
                self.flush(out)?;
                let per_part = (self.opts.part_bytes / self.page_size as usize).max(1) as u32;
                self.snapshot = Some(SnapshotInProgress {
                    txid,
                    db_pages,
                    timestamp_ms,
                    pages_per_part: per_part,
                    parts: db_pages.div_ceil(per_part).max(1),
                    part: 0,
                    buf: Vec::new(),
                    sum: 0,
                });
            }
            Frame::Txn {
                txid,
                checksum_before,
            } => {
                if let Some(p) = self.position {
                    if txid != p.txid + 1 || checksum_before != p.checksum {
                        return Err(Error::integrity(
                            "frame stream",
                            format!(
                                "transaction {txid} (checksum before {checksum_before:016x}) does not follow txid {} (checksum {:016x})",
                                p.txid, p.checksum
                            ),
                        ));
                    }
                }
                self.txn = Some(TxnInProgress {
                    txid,
                    checksum_before,
                    pages: Vec::new(),
                });
            }
            Frame::Page { pgno, data } => {
                if let Some(s) = &mut self.snapshot {
                    s.buf.push((pgno, data));
                    if s.buf.len() as u32 == s.pages_per_part {
                        let seg = self.cut_snapshot_part()?;
                        out(seg)?;
                    }
                } else if let Some(t) = &mut self.txn {
                    t.pages.push((pgno, data));
                }
            }
            Frame::Commit {
                txid,
                db_pages,
                timestamp_ms,
                checksum_after,
            } => {
                if let Some(s) = &self.snapshot {
                    // The last part is cut here; an empty database still
                    // gets one (empty) part so the snapshot exists.
                    if !s.buf.is_empty() || s.part < s.parts {
                        let seg = self.cut_snapshot_part()?;
                        out(seg)?;
                    }
                    let s = self.snapshot.take().expect("snapshot in progress");
                    if s.sum != checksum_after {
                        return Err(Error::integrity(
                            "frame stream",
                            format!("snapshot at txid {txid}: pages hash to {:016x}, the commit says {checksum_after:016x}", s.sum),
                        ));
                    }
                    self.last_flush = Some(Instant::now());
                } else if let Some(t) = self.txn.take() {
                    self.add_pending(t, db_pages, timestamp_ms, checksum_after);
                    if self.should_cut_now() {
                        self.flush(out)?;
                    }
                }
                self.position = Some(Position {
                    txid,
                    checksum: checksum_after,
                });
            }
            Frame::Heartbeat { .. } | Frame::End { .. } | Frame::WalPosition(_) | Frame::Marks(_) => {}
        }
        Ok(())
    }

    fn add_pending(&mut self, t: TxnInProgress, db_pages: u32, ts: u64, checksum_after: u64) {
        let Some(p) = &mut self.pending else {
            self.pending = Some(Pending {
                min_txid: t.txid,
                max_txid: t.txid,
                first_ts_ms: ts,
                last_ts_ms: ts,
                checksum_before: t.checksum_before,
                checksum_after,
                pages: MergedPages::new(self.page_size, t.pages, db_pages),
                since: Instant::now(),
            });
            return;
        };
        p.pages.apply(t.pages, db_pages);
        p.max_txid = t.txid;
        p.last_ts_ms = ts;
        p.checksum_after = checksum_after;
    }

    /// Leading edge: the first commit after a quiet sync interval goes out
    /// at once; later ones wait for the deadline or the size limit.
    fn should_cut_now(&self) -> bool {
        let Some(p) = &self.pending else { return false };
        let bytes = p.pages.bytes();
        let quiet = self
            .last_flush
            .is_none_or(|t| t.elapsed() >= self.opts.sync_interval);
        bytes >= self.opts.max_pending_bytes || quiet
    }

    /// Cut the pending changes into a segment, if there are any.
    pub fn flush(&mut self, out: &mut dyn FnMut(EncodedSegment) -> Result<()>) -> Result<()> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let header = SegmentHeader {
            kind: SegmentKind::Changes,
            generation: self.generation,
            min_txid: p.min_txid,
            max_txid: p.max_txid,
            page_size: self.page_size,
            db_pages: p.pages.db_pages(),
            first_ts_ms: p.first_ts_ms,
            last_ts_ms: p.last_ts_ms,
            checksum_before: p.checksum_before,
            checksum_after: p.checksum_after,
            part: 0,
            parts: 1,
            page_count: 0,
            first_pgno: 0,
        };
        let seg = self.encode(header, p.pages.iter())?;
        self.last_flush = Some(Instant::now());
        out(seg)
    }

    fn cut_snapshot_part(&mut self) -> Result<EncodedSegment> {
        let s = self.snapshot.as_mut().expect("snapshot in progress");
        let buf = std::mem::take(&mut s.buf);
        let part_sum = buf.iter().fold(0u64, |acc, (n, d)| acc ^ page_hash(*n, d));
        s.sum ^= part_sum;
        let header = SegmentHeader {
            kind: SegmentKind::Snapshot,
            generation: self.generation,
            min_txid: s.txid,
            max_txid: s.txid,
            page_size: self.page_size,
            db_pages: s.db_pages,
            first_ts_ms: s.timestamp_ms,
            last_ts_ms: s.timestamp_ms,
            checksum_before: 0,
            checksum_after: part_sum,
            part: s.part,
            parts: s.parts,
            page_count: 0,
            first_pgno: buf.first().map_or(0, |p| p.0),
        };
        s.part += 1;
        self.encode(header, buf.iter().map(|(n, d)| (*n, d.as_slice())))
    }

    fn encode<'a>(
        &self,
        header: SegmentHeader,
        pages: impl Iterator<Item = (u32, &'a [u8])>,
    ) -> Result<EncodedSegment> {
        let level = match header.kind {
            SegmentKind::Snapshot => self.opts.level,
            SegmentKind::Changes => self.opts.changes_level,
        };
        let (header, bytes) = segment::encode(header, pages, level)?;
        Ok(EncodedSegment {
            key: SegmentKey {
                generation: header.generation,
                name: SegmentName::from(&header),
            },
            header,
            bytes,
        })
    }
}
