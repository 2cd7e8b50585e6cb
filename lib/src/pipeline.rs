//! The stages wired together in one process, as `litestream replicate`
//! runs them: capture → segment → push over channels, the same code the
//! pipe tools run over pipes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::capture::{Capture, CaptureOptions, Event, FrameSink};
use crate::error::{Error, Result};
use crate::frames::Frame;
use crate::push::{Position, Pusher};
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

/// A `FrameSink` feeding a channel.
pub struct ChannelSink(pub SyncSender<Result<Frame>>);

impl FrameSink for ChannelSink {
    fn send(&mut self, frame: Frame) -> Result<()> {
        self.0
            .send(Ok(frame))
            .map_err(|_| Error::Usage("the replica stage stopped".into()))
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
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

/// Follow `db` until `stop` is set, sending frames to `sink`. `acked`
/// reports the replica's durable position (pruning the shadow log).
pub fn capture_loop(
    db: &std::path::Path,
    opts: &LiveOptions,
    since: Option<Position>,
    sink: &mut dyn FrameSink,
    stop: &AtomicBool,
    acked: &mut dyn FnMut() -> Result<Option<Position>>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<()> {
    let mut cap = Capture::start(db, opts.capture.clone(), since, sink)?;
    let mut watcher = Watcher::new(db);
    let interval = if opts.monitor_interval.is_zero() {
        Duration::from_secs(1)
    } else {
        opts.monitor_interval
    };
    loop {
        for e in cap.take_events() {
            on_event(&e);
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        cap.step(sink)?;
        if let Some(p) = acked()? {
            cap.acknowledge(p)?;
        } else if opts.prune_when_sent {
            cap.acknowledge(Position {
                generation: cap.generation(),
                txid: cap.txid(),
            })?;
        }
        for e in cap.take_events() {
            on_event(&e);
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        watcher.wait(interval);
    }
    cap.finish(sink)
}

/// The replica's durable position: the end of the newest restorable
/// chain, found from a listing.
pub fn replica_position(storage: &dyn Storage) -> Result<Option<Position>> {
    let cat = crate::plan::Catalog::load(storage)?;
    if cat.generations.is_empty() {
        return Ok(None);
    }
    let req = crate::plan::PlanRequest {
        generation: None,
        target: crate::plan::Target::Latest,
    };
    Ok(crate::plan::plan_from(&cat, &req, &storage.describe())
        .ok()
        .map(|p| Position {
            generation: p.generation,
            txid: p.txid,
        }))
}

/// `litestream replicate DB URL`: capture, segment and push in one
/// process until `stop`, then flush everything captured.
pub fn replicate(
    db: &std::path::Path,
    storage: &dyn Storage,
    live: &LiveOptions,
    segments: SegmentOptions,
    stop: &AtomicBool,
    on_event: &(dyn Fn(&str) + Sync),
) -> Result<Option<Position>> {
    let since = replica_position(storage)?;
    let durable: Arc<Mutex<Option<Position>>> = Arc::new(Mutex::new(None));
    let capture_failed = AtomicBool::new(false);
    let push_failed = AtomicBool::new(false);
    // Frames in flight between capture and segmenter: a page each at most,
    // so 1024 bound this buffer to 4 MiB of 4 KiB pages (64 MiB at the
    // largest page size) and still let capture run ahead of a flush.
    let (tx, rx) = mpsc::sync_channel::<Result<Frame>>(1024);
    let result = std::thread::scope(|scope| {
        let capture = {
            let durable = durable.clone();
            let live = live.clone();
            let (capture_failed, push_failed) = (&capture_failed, &push_failed);
            scope.spawn(move || {
                let mut sink = ChannelSink(tx.clone());
                let r = capture_loop(
                    db,
                    &live,
                    since,
                    &mut sink,
                    stop,
                    // Checked on every pass, so an idle database does not
                    // keep the capture running after the push stage failed.
                    &mut || {
                        if push_failed.load(Ordering::Relaxed) {
                            return Err(Error::Usage("the replica stage stopped".into()));
                        }
                        Ok(*durable.lock().unwrap())
                    },
                    &mut |e| on_event(&e.to_string()),
                );
                if let Err(e) = &r {
                    capture_failed.store(true, Ordering::Relaxed);
                    // Tell the push stage to stop without flushing a half stream.
                    let _ = tx.send(Err(Error::Usage(format!("capture stopped: {e}"))));
                }
                r
            })
        };
        let mut pusher = Pusher::new(storage, None);
        let pushed = segment_loop(&rx, segments, &mut |seg| {
            pusher.push(&seg.key, &seg.bytes)?;
            *durable.lock().unwrap() = pusher.position();
            Ok(())
        });
        // Whichever stage failed first holds the cause; the other one's
        // error only says that its partner stopped.
        let capture_first = capture_failed.load(Ordering::Relaxed);
        if pushed.is_err() {
            push_failed.store(true, Ordering::Relaxed);
        }
        drop(rx);
        let captured = capture
            .join()
            .unwrap_or_else(|_| Err(Error::Usage("capture thread panicked".into())));
        match (captured, pushed) {
            (Err(e), _) if capture_first => Err(e),
            (_, Err(e)) | (Err(e), Ok(())) => Err(e),
            (Ok(()), Ok(())) => Ok(pusher.position()),
        }
    });
    result
}
