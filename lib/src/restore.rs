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

/// Plan, fetch and apply into `target`.
pub fn restore(
    storage: &dyn Storage,
    req: &PlanRequest,
    target: &Path,
    parallelism: usize,
    opts: ApplyOptions,
) -> Result<(Plan, Restored)> {
    let plan = plan(storage, req)?;
    let mut applier = Applier::create(target, opts)?;
    fetch_ordered(storage, &plan.segments, parallelism, &mut |key, bytes| {
        applier.apply_segment(key, bytes)
    })?;
    let restored = applier.finish()?;
    Ok((plan, restored))
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
                applier.apply_segment(&rec.key, rec.bytes)?;
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
