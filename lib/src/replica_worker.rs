//! One replica of a database inside the replicator: it follows the
//! shadow log from the replica's durable position, cuts segments with
//! its own sync interval, pushes them, and takes snapshots and enforces
//! retention on its own schedule. It never waits for capture or for the
//! other replicas, and they never wait for it (log_tail.rs).
//!
//! Snapshots come from the live database, not from capture: the worker
//! reads the database under a read transaction of its own, hashes it,
//! and finds in the log the txid after which the database had exactly
//! that checksum. That txid is what the snapshot is of; the log
//! continues it. A new generation, a replica that fell behind what the
//! log still holds, a new replica, and `snapshot-interval` all take this
//! one path.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::compactor::{CompactOptions, Compactor};
use crate::error::{Error, Result};
use crate::frames::Frame;
use crate::live::LiveReader;
use crate::log_tail::{HeadState, LogHead, LogTail, Until};
use crate::metrics::ReplicaMetrics;
use crate::pipeline::position_in;
use crate::plan::Catalog;
use crate::push::{Position, Pusher};
use crate::replicator::{Level, LogEvent, ReplicaSpec};
use crate::segmenter::{EncodedSegment, SegmentOptions, Segmenter};
use crate::snapshot_match;
use crate::storage::PutOutcome;
use crate::time::now_ms;

/// How long a snapshot waits for capture to log the state it read.
const SNAPSHOT_MATCH_DEADLINE: Duration = Duration::from_secs(30);
/// Longest wait between two looks at the head when nothing is due.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Backoff after a failed step: doubles from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(60));

pub(crate) struct Worker<'a> {
    db: &'a Path,
    slot: usize,
    spec: &'a ReplicaSpec,
    head: &'a LogHead,
    metrics: &'a ReplicaMetrics,
    log: &'a (dyn Fn(&LogEvent) + Sync),
    pusher: Pusher<'a>,
    /// The replica's listing: read at start, then kept up to date with
    /// what this worker stores and deletes (retention plans from it).
    catalog: Catalog,
    segmenter: Segmenter,
    /// Merges the changes segments stored in this run into bigger ones.
    compactor: Compactor,
    tail: Option<LogTail>,
    reader: Option<LiveReader>,
    /// When snapshots this worker stored were complete: (generation, txid).
    stored_snapshots: HashMap<(u64, u64), u64>,
    /// The newest snapshot in the replica: (generation, txid, when it was
    /// taken or, for one found at start, its commit time).
    last_snapshot: Option<(u64, u64, u64)>,
    started_ms: u64,
    retention_due: Instant,
}

impl<'a> Worker<'a> {
    /// Learn the replica's position from its listing. A failure here
    /// (wrong credentials, a missing bucket) is the caller's to report:
    /// nothing has been replicated yet.
    pub(crate) fn start(
        db: &'a Path,
        slot: usize,
        spec: &'a ReplicaSpec,
        head: &'a LogHead,
        metrics: &'a ReplicaMetrics,
        log: &'a (dyn Fn(&LogEvent) + Sync),
    ) -> Result<Self> {
        let storage = spec.storage.as_ref();
        let cat = Catalog::load(storage)?;
        let position = position_in(&cat, &storage.describe());
        let last_snapshot = position.and_then(|p| newest_snapshot(&cat, p.generation));
        let mut pusher = Pusher::new(storage, None);
        if let Some(p) = position {
            pusher.set_position(p);
            metrics.generation.set(p.generation);
            metrics.txid.set(p.txid);
        }
        Ok(Worker {
            db,
            slot,
            spec,
            head,
            metrics,
            log,
            pusher,
            catalog: cat,
            segmenter: Segmenter::new(segment_options(spec)),
            compactor: Compactor::new(CompactOptions::default()),
            tail: None,
            reader: None,
            stored_snapshots: HashMap::new(),
            last_snapshot,
            started_ms: now_ms(),
            retention_due: Instant::now() + spec.retention_check_interval,
        })
    }

    fn say(&self, level: Level, message: String) {
        (self.log)(&LogEvent {
            level,
            db: self.db,
            replica: Some(&self.spec.name),
            message,
        });
    }

    /// Follow the log until capture has finished and everything it
    /// logged is in the replica (or `stop` while the replica is failing).
    /// `once`: enforce retention once before returning.
    pub(crate) fn run(mut self, stop: &AtomicBool, once: bool) -> Result<Option<Position>> {
        let mut failures = 0u32;
        let mut backoff_until: Option<Instant> = None;
        let mut last_error: Option<Error> = None;
        loop {
            let head = self.head.get();
            if backoff_until.is_none_or(|t| Instant::now() >= t) {
                backoff_until = None;
                match self.step(&head) {
                    Ok(()) => {
                        if failures > 0 {
                            self.say(Level::Info, format!("replica is working again after {failures} failed attempts"));
                        }
                        failures = 0;
                        last_error = None;
                    }
                    Err(e) => {
                        failures += 1;
                        self.metrics.sync_errors.inc();
                        self.reset();
                        let wait = backoff(failures);
                        self.say(Level::Error, format!("{e} (attempt {failures}; retrying in {}s)", wait.as_secs_f64()));
                        backoff_until = Some(Instant::now() + wait);
                        last_error = Some(e);
                    }
                }
            }
            if head.finished && head.generation != 0 && self.caught_up(&head) {
                if once && self.spec.retention.is_some() {
                    self.enforce_retention(&head)?;
                }
                return Ok(self.pusher.position());
            }
            if head.finished && (head.generation == 0 || stop.load(Ordering::Relaxed)) && last_error.is_some() {
                // Stopping while the replica fails: what is not pushed stays
                // in the shadow log for the next run.
                return Err(last_error.take().expect("an error"));
            }
            if head.finished && head.generation == 0 {
                return Ok(self.pusher.position());
            }
            let mut wait = IDLE_WAIT;
            for due in [self.segmenter.deadline(), backoff_until].into_iter().flatten() {
                wait = wait.min(due.saturating_duration_since(Instant::now()));
            }
            if head.finished {
                wait = wait.min(Duration::from_millis(50));
            }
            self.head.wait(head.seq, wait);
        }
    }

    /// Everything capture logged is in the replica.
    fn caught_up(&self, head: &HeadState) -> bool {
        self.tail.as_ref().is_some_and(|t| t.txid == head.txid && t.generation() == head.generation)
            && !self.segmenter.has_pending()
            && self.pusher.position() == Some(Position { generation: head.generation, txid: head.txid })
    }

    /// After a failure: forget what was read but not pushed, and read it
    /// again from the replica's durable position.
    fn reset(&mut self) {
        self.tail = None;
        self.segmenter = Segmenter::new(segment_options(self.spec));
        self.compactor.reset();
        self.hold_durable();
    }

    fn hold_durable(&self) {
        let need = self.pusher.position().map(|p| (p.generation, p.txid));
        self.head.hold(self.slot, need);
    }

    fn step(&mut self, head: &HeadState) -> Result<()> {
        if head.generation == 0 {
            return Ok(());
        }
        if self.tail.is_none() {
            self.follow(head)?;
        }
        if self.tail.is_none() {
            self.snapshot(head, "the replica holds nothing the shadow log continues")?;
        }
        if !head.finished && self.snapshot_due(head) {
            self.snapshot(head, "snapshot-interval")?;
        }
        let tail = self.tail.as_mut().expect("following the log");
        let (segmenter, pusher, metrics, catalog, compactor) =
            (&mut self.segmenter, &mut self.pusher, self.metrics, &mut self.catalog, &mut self.compactor);
        let read = tail.read(head, Until::End, &mut |frame| {
            segmenter.push(frame, &mut |seg| store(pusher, metrics, catalog, compactor, seg))
        })?;
        let due = self.segmenter.deadline().is_some_and(|d| Instant::now() >= d);
        if due || read.ended || head.finished {
            let (pusher, metrics, catalog, compactor) = (&mut self.pusher, self.metrics, &mut self.catalog, &mut self.compactor);
            self.segmenter.flush(&mut |seg| store(pusher, metrics, catalog, compactor, seg))?;
        }
        self.hold_durable();
        if read.ended {
            // The generation ended under us: the next step starts on the new one.
            self.tail = None;
        }
        if !head.finished && Instant::now() >= self.retention_due {
            self.retention_due = Instant::now() + self.spec.retention_check_interval;
            if self.spec.retention.is_some() {
                self.enforce_retention(head)?;
            }
        }
        Ok(())
    }

    /// Continue from the replica's position if the log still holds what
    /// follows it.
    fn follow(&mut self, head: &HeadState) -> Result<()> {
        let Some(p) = self.pusher.position().filter(|p| p.generation == head.generation) else {
            return Ok(());
        };
        if let Some(tail) = LogTail::open(self.head, p.generation, p.txid)? {
            self.segmenter = Segmenter::new(segment_options(self.spec));
            let generation = Frame::Generation {
                generation: tail.generation(),
                page_size: tail.page_size(),
            };
            self.segmenter.push(generation, &mut |_| Ok(()))?;
            self.tail = Some(tail);
        }
        Ok(())
    }

    fn snapshot_due(&self, head: &HeadState) -> bool {
        let Some(every) = self.spec.snapshot_interval else { return false };
        match self.last_snapshot {
            // Nothing changed since the last one: an idle database costs nothing.
            Some((g, t, _)) if g == head.generation && t == head.txid => false,
            Some((_, _, at)) => now_ms().saturating_sub(at) >= every.as_millis() as u64,
            None => true,
        }
    }

    /// Store a snapshot of the live database as it is now, at the txid
    /// the log says it is, and follow the log from there.
    fn snapshot(&mut self, head: &HeadState, reason: &str) -> Result<()> {
        let started = Instant::now();
        // Following this generation: the changes up to the snapshot go to
        // the replica too (the snapshot cuts the segment there), and the
        // log stays held at the durable position. Otherwise they are
        // skipped (the snapshot holds them) and the log is held at its
        // head: whatever is read from the database next is at or after it.
        let (mut tail, following, state) = match self.tail.take() {
            Some(t) if t.generation() == head.generation => (t, true, self.head.get()),
            _ => {
                let state = self.head.hold_at_head(self.slot);
                let tail = LogTail::open(self.head, state.generation, state.txid)?.ok_or_else(|| {
                    Error::database(
                        self.head.log_dir(),
                        format!("the shadow log no longer holds txid {} of its own generation", state.txid),
                    )
                })?;
                (tail, false, state)
            }
        };
        let generation = tail.generation();
        if !following {
            self.segmenter = Segmenter::new(segment_options(self.spec));
            self.segmenter.push(
                Frame::Generation {
                    generation,
                    page_size: tail.page_size(),
                },
                &mut |_| Ok(()),
            )?;
        }
        if self.reader.is_none() {
            self.reader = Some(LiveReader::open(self.db)?);
        }
        let reader = self.reader.as_mut().expect("opened");
        let (segmenter, pusher, metrics, catalog, compactor, log_head) = (
            &mut self.segmenter,
            &mut self.pusher,
            self.metrics,
            &mut self.catalog,
            &mut self.compactor,
            self.head,
        );
        let stored_before = metrics.bytes_stored.get();
        // Capture writes the MARKS this read may need, from before it
        // begins until it is placed.
        let marks = log_head.want_marks();
        let (txid, parts) = reader.with_snapshot(|view| {
            let live = view.state;
            if live.page_size != tail.page_size() {
                return Err(Error::Usage(format!(
                    "the database's page size is {} but the shadow log's is {}; a new generation will follow",
                    live.page_size,
                    tail.page_size()
                )));
            }
            let deadline = Instant::now() + SNAPSHOT_MATCH_DEADLINE;
            let found = snapshot_match::find(&mut tail, log_head, &live, deadline, &mut |frame| {
                if following {
                    segmenter.push(frame, &mut |seg| store(pusher, metrics, catalog, compactor, seg))
                } else {
                    Ok(())
                }
            })?;
            drop(marks);
            let (txid, db_pages, checksum) = (found.txid, found.db_pages, found.checksum);
            let ts = match found.timestamp_ms {
                0 if state.txid == txid && state.timestamp_ms > 0 => state.timestamp_ms,
                0 => now_ms(),
                t => t,
            };
            let mut out = |seg: EncodedSegment| store(pusher, metrics, catalog, compactor, seg);
            segmenter.push(
                Frame::Snapshot {
                    txid,
                    db_pages,
                    timestamp_ms: ts,
                },
                &mut out,
            )?;
            let mut parts = 0u32;
            found.pages(
                |visit| view.pages(visit),
                &mut |pgno, data| {
                    segmenter.push(Frame::Page { pgno, data }, &mut |seg| {
                        parts = seg.header.parts;
                        out(seg)
                    })
                },
            )?;
            segmenter.push(
                Frame::Commit {
                    txid,
                    db_pages,
                    timestamp_ms: ts,
                    checksum_after: checksum,
                },
                &mut |seg| {
                    parts = seg.header.parts;
                    out(seg)
                },
            )?;
            Ok((txid, parts))
        })?;
        self.tail = Some(tail);
        self.hold_durable();
        self.metrics.snapshots.inc();
        let at = now_ms();
        self.stored_snapshots.insert((generation, txid), at);
        self.last_snapshot = Some((generation, txid, at));
        let bytes = self.metrics.bytes_stored.get() - stored_before;
        self.say(
            Level::Info,
            format!(
                "snapshot of generation {} at txid {txid} stored ({parts} part{}, {bytes} bytes, {:.2}s): {reason}",
                crate::layout::generation_name(generation),
                if parts == 1 { "" } else { "s" },
                started.elapsed().as_secs_f64()
            ),
        );
        Ok(())
    }

    /// Delete what no restore inside the retention window needs
    /// (retention.rs), taking a snapshot first when the window holds none.
    fn enforce_retention(&mut self, head: &HeadState) -> Result<()> {
        let Some(window) = self.spec.retention else { return Ok(()) };
        let now = now_ms();
        let grace = self.spec.retention_check_interval.as_millis() as u64;
        let started = self.started_ms;
        let stored = &self.stored_snapshots;
        // A snapshot found at start counts as stored at start: a restore
        // that listed before then may still be fetching the older chain.
        let eligible = |g: u64, t: u64| stored.get(&(g, t)).copied().unwrap_or(started) + grace <= now;
        let plan = crate::retention::plan(&self.catalog, now, window.as_millis() as u64, &eligible);
        if plan.needs_snapshot && head.generation != 0 {
            self.snapshot(head, "retention: the window holds no snapshot")?;
        }
        for key in &plan.delete {
            self.spec.storage.delete(&key.to_string())?;
            self.metrics.retention_deleted.inc();
            if let Some(segs) = self.catalog.generations.get_mut(&key.generation) {
                segs.retain(|(k, _)| k != key);
                if segs.is_empty() {
                    self.catalog.generations.remove(&key.generation);
                }
            }
        }
        if !plan.delete.is_empty() {
            let base = plan
                .base
                .map(|(g, t)| format!("; restores start from the snapshot at txid {t} of generation {}", crate::layout::generation_name(g)))
                .unwrap_or_default();
            self.say(
                Level::Info,
                format!("retention: deleted {} objects older than {}{base}", plan.delete.len(), humantime(window)),
            );
        }
        Ok(())
    }
}

/// Store one segment, then the compacted segments it completes (a
/// snapshot part starts the compactor over).
fn store(
    pusher: &mut Pusher<'_>,
    metrics: &ReplicaMetrics,
    catalog: &mut Catalog,
    compactor: &mut Compactor,
    seg: EncodedSegment,
) -> Result<()> {
    push_one(pusher, metrics, catalog, &seg, false)?;
    for compacted in compactor.absorb(&seg)? {
        push_one(pusher, metrics, catalog, &compacted, true)?;
    }
    Ok(())
}

/// Push one segment, count it, and add it to the listing. A compacted
/// one holds nothing new: it is not a sync.
fn push_one(pusher: &mut Pusher<'_>, metrics: &ReplicaMetrics, catalog: &mut Catalog, seg: &EncodedSegment, compacted: bool) -> Result<()> {
    let started = Instant::now();
    let outcome = pusher.push_encoded(seg)?;
    if !compacted {
        metrics.syncs.inc();
        metrics.sync_micros.add(started.elapsed().as_micros() as u64);
    }
    if outcome == PutOutcome::Stored {
        metrics.segments_stored.inc();
        metrics.segments_compacted.add(u64::from(compacted));
        metrics.bytes_stored.add(seg.bytes.len() as u64);
    }
    let segs = catalog.generations.entry(seg.key.generation).or_default();
    if let Err(at) = segs.binary_search_by(|(k, _)| k.cmp(&seg.key)) {
        segs.insert(at, (seg.key.clone(), seg.bytes.len() as u64));
    }
    if let Some(p) = pusher.position() {
        if p.txid == seg.header.max_txid && p.generation == seg.header.generation {
            metrics.generation.set(p.generation);
            metrics.txid.set(p.txid);
            metrics.txid_time_ms.set(seg.header.last_ts_ms);
        }
    }
    Ok(())
}

fn segment_options(spec: &ReplicaSpec) -> SegmentOptions {
    SegmentOptions {
        sync_interval: spec.sync_interval,
        ..SegmentOptions::default()
    }
}

fn backoff(failures: u32) -> Duration {
    let (first, last) = BACKOFF;
    first.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(last)
}

/// The newest complete snapshot of `generation`: (generation, txid, commit time).
fn newest_snapshot(cat: &Catalog, generation: u64) -> Option<(u64, u64, u64)> {
    let segs = cat.generations.get(&generation)?;
    let mut parts: HashMap<u64, (u32, u32, u64)> = HashMap::new();
    for (k, _) in segs.iter().filter(|(k, _)| k.name.kind == crate::segment::SegmentKind::Snapshot) {
        let e = parts.entry(k.name.min_txid).or_insert((0, k.name.parts, k.name.last_ts_ms));
        e.0 += 1;
    }
    parts
        .into_iter()
        .filter(|(_, (have, want, _))| have == want)
        .max_by_key(|(txid, _)| *txid)
        .map(|(txid, (_, _, ts))| (generation, txid, ts))
}

/// `24h`, `90m`, `45s`.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
