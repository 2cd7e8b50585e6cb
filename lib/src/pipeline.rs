//! The loops the pipe tools run around the engine's stages: capture
//! following a database (lsw-shadow) and segmenting a frame stream on a
//! clock (lsw-segment); and where a replica stands. The replicator
//! (replicator.rs) runs the same stages in one process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::capture::{Capture, CaptureOptions, Event, FrameSink, Since};
use crate::error::{Error, Result};
use crate::frames::Frame;
use crate::push::Position;
use crate::segmenter::{EncodedSegment, SegmentOptions, Segmenter};
use crate::storage::Storage;
use crate::watch::Watcher;

/// Run the segmenter over frames arriving on `rx` until END (or the
/// sender goes away, an error), cutting segments on time as well as on
/// input. Each finished segment goes to `out`.
pub fn segment_loop(
    rx: &Receiver<Result<Frame>>,
    opts: SegmentOptions,
    out: &mut dyn FnMut(EncodedSegment) -> Result<()>,
) -> Result<()> {
    let mut segmenter = Segmenter::new(opts);
    loop {
        let wait = segmenter
            .deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        match rx.recv_timeout(wait) {
            Ok(Ok(Frame::End { .. })) => return segmenter.flush(out),
            Ok(Ok(frame)) => segmenter.push(frame, out)?,
            // Write nothing further after bad input: the transactions not
            // yet cut stay unacknowledged upstream.
            Ok(Err(e)) => return Err(e),
            Err(RecvTimeoutError::Timeout) => segmenter.flush(out)?,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::Usage(
                    "the capture stage stopped without closing its stream".into(),
                ))
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LiveOptions {
    pub capture: CaptureOptions,
    /// Longest sleep between passes (the polling fallback, and the clock
    /// for idle checkpoints).
    pub monitor_interval: Duration,
    /// No acknowledgements will come: treat what was sent as durable and
    /// keep the shadow log short (a restart then starts a new generation).
    pub prune_when_sent: bool,
}

/// What a capture loop is told, and tells, besides its frames.
pub struct Hooks<'a> {
    pub stop: &'a (dyn Fn() -> bool + Sync),
    /// Where the replica stands (the shadow log is pruned up to it).
    pub acked: &'a mut dyn FnMut(&Capture) -> Result<Option<Position>>,
    pub on_event: &'a mut dyn FnMut(&Event),
    /// After every pass (metrics).
    pub after_pass: &'a mut dyn FnMut(&Capture),
}

/// lsw-shadow: follow `db` until `stop`, sending frames to `sink`.
/// `acked` reports the replica's durable position (pruning the shadow
/// log); with `prune_when_sent`, what was sent counts as durable.
pub fn capture_loop(
    db: &std::path::Path,
    opts: &LiveOptions,
    since: Option<Position>,
    sink: &mut dyn FrameSink,
    stop: &AtomicBool,
    acked: &mut dyn FnMut() -> Result<Option<Position>>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<()> {
    let cap = Capture::start(db, opts.capture.clone(), Since::Replica(since), None, sink)?;
    let prune_when_sent = opts.prune_when_sent;
    follow(
        cap,
        db,
        opts,
        sink,
        Hooks {
            stop: &|| stop.load(Ordering::Relaxed),
            acked: &mut |cap| match acked()? {
                Some(p) => Ok(Some(p)),
                None if prune_when_sent => Ok(Some(Position {
                    generation: cap.generation(),
                    txid: cap.txid(),
                })),
                None => Ok(None),
            },
            on_event,
            after_pass: &mut |_| {},
        },
    )
}

/// After a quiet moment, the second pass starts at most this long after
/// the first: each pass is an fsync of the shadow log and a wake-up of
/// every replica, and the commits made in between are merged into one
/// transaction. Measured under a 42,000 commits/s writer on 2 cores: one
/// pass per 2 ms cost the replicator 2.1 CPU s per 8 s, per 5 ms 1.95,
/// per 10 ms 1.7; without a pace there were about 1,800 passes a second,
/// and the writer ran 20% slower than with 5 ms. A commit on a quiet
/// database is not delayed.
const CAPTURE_PACE: Duration = Duration::from_millis(5);

/// Once two passes in a row found commits, the load is steady and the
/// passes start at most this often: a replica is then up to this much
/// (and one pass) behind. Measured under a 60,000 commits/s writer on 2
/// cores, replicator CPU per 1,000 commits: 2.0 ms at 5 ms, 1.55 ms at
/// 20 ms, 1.33 ms at 50 ms, and 200, 50 and 20 fsyncs of the shadow log
/// a second. The writer's own speed did not follow the pace (median of
/// 10 alternated pairs: 0.95 of its speed alone at 5 ms, 0.93 at 50 ms).
const STEADY_PACE: Duration = Duration::from_millis(20);

/// How often a wait for the WAL to change looks whether to stop, and
/// whether to let go of SQLite's checkpoint lock (checkpoint_guard.rs).
const STOP_CHECK: Duration = Duration::from_millis(200);

/// Run a started capture until `stop`: capture, checkpoint, prune, wait
/// for the WAL to change; then capture what is left and end the stream.
pub fn follow(
    mut cap: Capture,
    db: &std::path::Path,
    opts: &LiveOptions,
    sink: &mut dyn FrameSink,
    hooks: Hooks<'_>,
) -> Result<()> {
    let mut watcher = Watcher::new(db);
    let mut captured_before = 0;
    let interval = if opts.monitor_interval.is_zero() {
        Duration::from_secs(1)
    } else {
        opts.monitor_interval
    };
    loop {
        for e in cap.take_events() {
            (hooks.on_event)(&e);
        }
        if (hooks.stop)() {
            break;
        }
        let stepped_at = Instant::now();
        let captured = cap.step(sink)?;
        if let Some(p) = (hooks.acked)(&cap)? {
            cap.acknowledge(p)?;
        }
        (hooks.after_pass)(&cap);
        for e in cap.take_events() {
            (hooks.on_event)(&e);
        }
        if (hooks.stop)() {
            break;
        }
        // Under a steady load the next pass comes after the pace below,
        // and watching the WAL would only cost the writer (watch.rs).
        // Once it is watched again, one pass before waiting: commits made
        // while it was not woke nothing.
        let steady = captured > 0 && captured_before > 0;
        captured_before = captured;
        if steady {
            watcher.pause();
        } else if !watcher.resume() {
            // In slices: a stop signal is usually delivered to another
            // thread and does not interrupt this wait, and the interval
            // may be long.
            let until = Instant::now() + interval;
            loop {
                let left = until.saturating_duration_since(Instant::now());
                if watcher.wait(left.min(STOP_CHECK)) || left <= STOP_CHECK || (hooks.stop)() {
                    break;
                }
                cap.tend_checkpoint_lock();
            }
        }
        if captured > 0 {
            // Under load, one pass (and one fsync of the shadow log) per
            // pace at most: the commits made meanwhile share it. The first
            // commit after a quiet moment is captured at once.
            let pace = if steady { STEADY_PACE } else { CAPTURE_PACE };
            if let Some(rest) = (stepped_at + pace).checked_duration_since(Instant::now()) {
                std::thread::sleep(rest);
            }
        }
    }
    cap.finish(sink)
}

/// The replica's durable position: the end of the newest restorable
/// chain, found from a listing.
pub fn replica_position(storage: &dyn Storage) -> Result<Option<Position>> {
    let cat = crate::plan::Catalog::load(storage)?;
    Ok(position_in(&cat, &storage.describe()))
}

/// The end of the newest restorable chain of a listed replica.
pub fn position_in(cat: &crate::plan::Catalog, replica: &str) -> Option<Position> {
    if cat.generations.is_empty() {
        return None;
    }
    let req = crate::plan::PlanRequest {
        generation: None,
        target: crate::plan::Target::Latest,
    };
    crate::plan::plan_from(cat, &req, replica).ok().map(|p| Position {
        generation: p.generation,
        txid: p.txid,
    })
}
