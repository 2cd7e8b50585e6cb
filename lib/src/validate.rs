//! Validation restores (`litestream validate`, and `replicate
//! --validation-interval`): restore a target state with a verify-only
//! applier — every segment decoded and its checksums checked, the chain
//! checked segment by segment, the final db checksum re-read from disk and
//! `PRAGMA integrity_check` run — into a temporary file that is never
//! published, then compare the result with the live database when there
//! is one (live.rs says how that avoids false mismatches).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::apply::{Applier, ApplyOptions};
use crate::error::{Error, Result};
use crate::fetch::fetch_ordered;
use crate::layout::SegmentKey;
use crate::live::{self, LiveCheck, LiveReader, RestoredState};
use crate::plan::{plan_from, Catalog, Plan, PlanRequest};
use crate::shadow_log::state_dir;
use crate::storage::Storage;
use crate::verify;

#[derive(Debug, Clone)]
pub struct ValidateOptions {
    pub request: PlanRequest,
    /// The restore builds its temporary file beside this path (which is
    /// never created): `.NAME.lsw-restore-PID`.
    pub scratch: PathBuf,
    pub parallelism: usize,
    pub integrity_check: bool,
    /// The live database's shadow log directory (`None`: `.NAME-lsw`
    /// beside it), for the comparison at the restored txid.
    pub state_dir: Option<PathBuf>,
}

/// A validation that passed.
#[derive(Debug, Clone)]
pub struct Validation {
    pub generation: u64,
    pub txid: u64,
    /// Commit time of `txid`.
    pub timestamp_ms: u64,
    pub checksum: u64,
    pub segments: usize,
    pub bytes: u64,
    /// The newest segment in the replica (any generation) and its commit time.
    pub newest: Option<(SegmentKey, u64)>,
    pub restore_time: Duration,
    /// `None` when there is no live database to compare with.
    pub live: Option<LiveCheck>,
}

impl Validation {
    /// How old the newest segment is at `now_ms`.
    pub fn newest_age(&self, now_ms: u64) -> Option<Duration> {
        self.newest
            .as_ref()
            .map(|(_, ts)| Duration::from_millis(now_ms.saturating_sub(*ts)))
    }
}

/// The newest segment of the replica, by commit time.
pub fn newest_segment(cat: &Catalog) -> Option<(SegmentKey, u64)> {
    cat.generations
        .values()
        .flatten()
        .max_by_key(|(k, _)| (k.name.last_ts_ms, k.name.max_txid))
        .map(|(k, _)| (k.clone(), k.name.last_ts_ms))
}

/// Choose what to restore. The latest state belongs to the generation
/// written to last: if that one is damaged, that is the finding (a quiet
/// fallback to an older generation would pass a replica whose newest
/// data cannot be restored). If it only lacks a complete snapshot
/// because the upload is still going, the plan's own choice stands.
fn choose(cat: &Catalog, req: &PlanRequest, replica: &str) -> Result<Plan> {
    let newest_gen = newest_segment(cat).map(|(k, _)| k.generation);
    if let Some(generation) = req.generation.or(newest_gen) {
        if let Some(segs) = cat.generations.get(&generation) {
            let req_here = PlanRequest {
                generation: Some(generation),
                target: req.target,
            };
            match plan_from(cat, &req_here, replica) {
                Ok(plan) => return Ok(plan),
                Err(e) => {
                    let report = verify::analyze(generation, segs);
                    if let Some(p) = report.first_damage() {
                        return Err(p.to_error());
                    }
                    if req.generation.is_some() || !matches!(e, Error::NotFound(_)) {
                        return Err(e);
                    }
                }
            }
        }
    }
    plan_from(cat, req, replica)
}

/// Restore and check; compare with the live database when `live` is
/// given (`db` names it in messages). `cancel` is polled between
/// segments. Nothing is left on disk, whatever the outcome.
pub fn validate(
    storage: &dyn Storage,
    opts: &ValidateOptions,
    live: Option<(&std::path::Path, &mut LiveReader)>,
    cancel: &dyn Fn() -> bool,
) -> Result<Validation> {
    let cat = Catalog::load(storage)?;
    let plan = choose(&cat, &opts.request, &storage.describe())?;
    let started = Instant::now();
    let mut applier = Applier::create(
        &opts.scratch,
        ApplyOptions {
            integrity_check: opts.integrity_check,
            parallelism: opts.parallelism.min(8),
            verify_only: true,
        },
    )?;
    fetch_ordered(
        storage,
        &plan.segments,
        opts.parallelism,
        &mut |key, bytes| {
            if cancel() {
                return Err(Error::stream(
                    "validate",
                    std::io::Error::new(std::io::ErrorKind::Interrupted, "stopped"),
                ));
            }
            applier.apply_segment(key, bytes)
        },
    )?;
    let restored = applier.finish()?;
    let restore_time = started.elapsed();
    let last = plan
        .segments
        .last()
        .map(|k| k.to_string())
        .unwrap_or_default();
    let live = match live {
        None => None,
        Some((db, reader)) => {
            // Read the live database first, then the shadow log: the
            // capture may record the live position a moment later.
            let state = reader.read()?;
            let dir = opts.state_dir.clone().unwrap_or_else(|| state_dir(db));
            let recorded = live::read_recorded(&dir, restored.generation)?;
            let r = RestoredState {
                generation: restored.generation,
                txid: restored.txid,
                checksum: restored.checksum,
            };
            Some(live::judge(r, &state, recorded.as_ref(), db, &dir, &last)?)
        }
    };
    Ok(Validation {
        generation: restored.generation,
        txid: restored.txid,
        timestamp_ms: plan.timestamp_ms,
        checksum: restored.checksum,
        segments: plan.segments.len(),
        bytes: plan.bytes,
        newest: newest_segment(&cat),
        restore_time,
        live,
    })
}

/// Counts for metrics: validations that passed, failed, or could not run
/// yet (the replica holds nothing restorable), and when one last passed.
#[derive(Debug, Default)]
pub struct ValidationStats {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub skipped: AtomicU64,
    pub last_ok_ms: AtomicU64,
}

impl std::fmt::Display for ValidationStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ok, {} failed, {} skipped",
            self.ok.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.skipped.load(Ordering::Relaxed)
        )
    }
}

/// One scheduled run's outcome.
pub enum RunOutcome {
    Ok(Validation),
    /// Nothing to validate yet (no complete backup in the replica).
    Skipped(Error),
    Failed(Error),
}

/// Validate every `interval` (measured from the end of the previous run)
/// until `stop` says so, handing each outcome to `report`. For a
/// replicator: the live database is `db`, read through one `LiveReader`
/// kept for the whole loop (see live.rs for why it must not be reopened).
pub fn validate_every(
    storage: &dyn Storage,
    opts: &ValidateOptions,
    db: Option<&std::path::Path>,
    interval: Duration,
    stop: &dyn Fn() -> bool,
    stats: &ValidationStats,
    report: &mut dyn FnMut(&RunOutcome),
) {
    let mut reader: Option<LiveReader> = None;
    loop {
        // Wait in short slices so a stop is seen promptly.
        let until = Instant::now() + interval;
        while Instant::now() < until {
            if stop() {
                return;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
        if stop() {
            return;
        }
        let result = (|| {
            let live = match db {
                Some(db) => {
                    if reader.is_none() {
                        reader = Some(LiveReader::open(db)?);
                    }
                    Some((db, reader.as_mut().expect("opened")))
                }
                None => None,
            };
            validate(storage, opts, live, stop)
        })();
        if stop() && result.is_err() {
            return; // cut short by the stop, not a finding
        }
        let outcome = match result {
            Ok(v) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                stats
                    .last_ok_ms
                    .store(crate::time::now_ms(), Ordering::Relaxed);
                RunOutcome::Ok(v)
            }
            Err(e @ Error::NotFound(_)) => {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
                RunOutcome::Skipped(e)
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                RunOutcome::Failed(e)
            }
        };
        report(&outcome);
    }
}
