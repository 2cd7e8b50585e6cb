//! The restore side, wired two ways over the same parts: `pull` plans and
//! fetches into a segment stream (lsw-pull), `restore` plans, fetches and
//! applies in one process (`litestream restore`). lsw-apply feeds a
//! decoded stream to the same `Applier`.

use std::io::{Read, Write};
use std::path::Path;

use crate::apply::{Applier, ApplyOptions, Restored};
use crate::error::Result;
use crate::fetch::fetch_ordered;
use crate::frames::FrameReader;
use crate::layout::SegmentKey;
use crate::plan::{plan, Plan, PlanRequest};
use crate::segment_stream::{SegmentReader, SegmentWriter};
use crate::storage::Storage;
use crate::stream::{StreamKind, StreamReader};

/// Stream the planned segments, in order, as a segment stream.
pub fn pull<W: Write>(
    storage: &dyn Storage,
    req: &PlanRequest,
    parallelism: usize,
    out: W,
) -> Result<Plan> {
    let plan = plan(storage, req)?;
    let mut w = SegmentWriter::new(out)?;
    fetch_ordered(storage, &plan.segments, parallelism, &mut |key, bytes| {
        w.write(key, &bytes)
    })?;
    w.end()?;
    w.finish()?;
    Ok(plan)
}

/// How far a restore has come: reported after each segment is applied.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The segment just applied, and its size.
    pub segment: &'a SegmentKey,
    pub segment_bytes: u64,
    pub segments_done: usize,
    pub segments_total: usize,
    pub bytes_done: u64,
    /// From the listing (`Plan::bytes`).
    pub bytes_total: u64,
}

/// Plan, fetch and apply into `target`.
pub fn restore(
    storage: &dyn Storage,
    req: &PlanRequest,
    target: &Path,
    parallelism: usize,
    opts: ApplyOptions,
) -> Result<(Plan, Restored)> {
    let plan = plan(storage, req)?;
    let restored = restore_plan(storage, &plan, target, parallelism, opts, &mut |_| {})?;
    Ok((plan, restored))
}

/// Fetch and apply a plan made earlier (so a caller can choose among
/// replicas, or show the plan first), reporting each applied segment to
/// `progress`. The engine never prints: drawing progress is the caller's.
pub fn restore_plan(
    storage: &dyn Storage,
    plan: &Plan,
    target: &Path,
    parallelism: usize,
    opts: ApplyOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Restored> {
    let mut applier = Applier::create(target, opts)?;
    let (mut segments_done, mut bytes_done) = (0, 0);
    fetch_ordered(storage, &plan.segments, parallelism, &mut |key, bytes| {
        let segment_bytes = bytes.len() as u64;
        applier.apply_segment(key, bytes)?;
        segments_done += 1;
        bytes_done += segment_bytes;
        progress(&Progress {
            segment: key,
            segment_bytes,
            segments_done,
            segments_total: plan.segments.len(),
            bytes_done,
            bytes_total: plan.bytes,
        });
        Ok(())
    })?;
    applier.finish()
}

/// Apply a segment stream or a frame stream read from `input`.
pub fn apply_stream<R: Read>(
    input: R,
    source: &str,
    target: &Path,
    opts: ApplyOptions,
) -> Result<Restored> {
    let reader = StreamReader::open(input, source, &[StreamKind::Segments, StreamKind::Frames])?;
    let mut applier = Applier::create(target, opts)?;
    match reader.kind() {
        StreamKind::Segments => {
            let mut r = SegmentReader::new(reader);
            while let Some(rec) = r.next()? {
                applier.apply_segment(&rec.key, rec.bytes.into())?;
            }
        }
        StreamKind::Frames => {
            let mut r = FrameReader::new(reader);
            while let Some(frame) = r.next()? {
                applier.apply_frame(frame)?;
            }
        }
    }
    applier.finish()
}
