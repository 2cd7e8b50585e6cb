//! `litestream verify`: check a replica without restoring it.
//!
//! Two passes. The listing alone (names say everything, man/lsw-format.5)
//! gives each generation's shape: which snapshots are complete, which
//! txids a restore can reach and from where, and what breaks the chain
//! (a missing snapshot part, a gap, a segment that starts inside
//! another). Then every object (or a sample) is read and decoded, which
//! checks its checksums and that its header describes the key it is
//! stored under, and every db checksum an object states about a txid is
//! compared with what the others state about the same txid: a snapshot's
//! parts XOR to the checksum at its txid, a changes segment states the
//! checksum before its first txid and after its last. Two objects that
//! disagree cannot both belong to one history.
//!
//! Findings are `Problem`s, not errors: a report lists them all, and the
//! caller decides (the CLI exits 3 naming the first damaged object).
//! The listing pass is `listing.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorClass, Result};
use crate::layout::SegmentKey;
use crate::plan::Catalog;
use crate::segment::{Segment, SegmentHeader, SegmentKind};
use crate::storage::Storage;

mod listing;
pub use listing::analyze;

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Share of the objects to read and decode, 0.0–1.0 (1.0: all; the
    /// listing checks always cover everything).
    pub sample: f64,
    /// Objects read at once.
    pub parallelism: usize,
    /// Picks the sample; the same seed picks the same objects.
    pub seed: u64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            sample: 1.0,
            parallelism: 8,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProblemKind {
    /// A snapshot part is missing although later objects exist.
    MissingPart,
    /// No object holds some txids, so the chain breaks.
    Gap,
    /// A segment starts inside another and nothing reaches its end.
    Overlap,
    /// Two objects claim the same place with different content.
    Conflict,
    /// The object does not decode or fails a checksum.
    Corrupt,
    /// The object's header describes a different key (renamed into place).
    Misplaced,
    /// Objects state different db checksums for the same txid.
    Mismatch,
    /// The object could not be read (a runtime failure, not damage).
    Unreadable,
    /// A snapshot whose upload is in progress or was cut short; nothing
    /// depends on it yet (not damage).
    Incomplete,
    /// A segment no restore uses because others cover it (not damage).
    Redundant,
}

impl ProblemKind {
    /// Whether a restore is affected: the CLI exits 3 for these.
    pub fn is_damage(self) -> bool {
        !matches!(
            self,
            ProblemKind::Unreadable | ProblemKind::Incomplete | ProblemKind::Redundant
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::MissingPart => "missing-part",
            ProblemKind::Gap => "gap",
            ProblemKind::Overlap => "overlap",
            ProblemKind::Conflict => "conflict",
            ProblemKind::Corrupt => "corrupt",
            ProblemKind::Misplaced => "misplaced",
            ProblemKind::Mismatch => "mismatch",
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::Incomplete => "incomplete",
            ProblemKind::Redundant => "redundant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The object's key, or for a missing one its name with `*` where the
    /// listing cannot tell (`lsw1/GEN/00…05-00…09.*`).
    pub object: String,
    pub detail: String,
    /// Where in the generation's history it sits (for ordering).
    pub txid: u64,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.detail)
    }
}

impl Problem {
    /// The problem as the engine's error: integrity for damage (exit 3),
    /// runtime otherwise.
    pub fn to_error(&self) -> Error {
        if self.kind.is_damage() {
            Error::integrity(&self.object, &self.detail)
        } else {
            Error::Remote {
                action: "read",
                object: self.object.clone(),
                reason: self.detail.clone(),
                hint: None,
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotReport {
    pub txid: u64,
    pub parts: u32,
    /// Parts present in the listing.
    pub present: u32,
    pub bytes: u64,
    pub timestamp_ms: u64,
}

/// Txids a restore can reach from one snapshot, and what the furthest
/// of them needs. Restore points are the txids that end a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorableRange {
    pub snapshot_txid: u64,
    pub first_txid: u64,
    pub last_txid: u64,
    pub first_ts_ms: u64,
    pub last_ts_ms: u64,
    pub points: usize,
    /// Objects and bytes a restore to `last_txid` fetches.
    pub segments: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub struct GenerationReport {
    pub generation: u64,
    pub objects: usize,
    pub bytes: u64,
    /// Objects read and decoded.
    pub checked: usize,
    /// Objects listed but gone when read (deleted meanwhile, e.g. by retention).
    pub vanished: usize,
    pub first_ts_ms: u64,
    pub last_ts_ms: u64,
    pub snapshots: Vec<SnapshotReport>,
    pub ranges: Vec<RestorableRange>,
    /// In history order.
    pub problems: Vec<Problem>,
}

impl GenerationReport {
    pub fn first_damage(&self) -> Option<&Problem> {
        self.problems.iter().find(|p| p.kind.is_damage())
    }

    /// `ok`, `damaged`, `unreadable` (some objects could not be read),
    /// or `incomplete` (nothing restorable yet, and no damage).
    pub fn status(&self) -> &'static str {
        if self.first_damage().is_some() {
            "damaged"
        } else if self
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::Unreadable)
        {
            "unreadable"
        } else if self.ranges.is_empty() {
            "incomplete"
        } else {
            "ok"
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReplicaReport {
    pub replica: String,
    /// Oldest first.
    pub generations: Vec<GenerationReport>,
    pub elapsed: Duration,
}

impl ReplicaReport {
    pub fn first_damage(&self) -> Option<&Problem> {
        self.generations.iter().find_map(|g| g.first_damage())
    }

    pub fn first_unreadable(&self) -> Option<&Problem> {
        self.generations
            .iter()
            .flat_map(|g| &g.problems)
            .find(|p| p.kind == ProblemKind::Unreadable)
    }

    /// Commit time of the newest segment, and its generation.
    pub fn newest(&self) -> Option<(u64, u64)> {
        self.generations
            .iter()
            .filter(|g| g.objects > 0)
            .map(|g| (g.last_ts_ms, g.generation))
            .max()
    }
}

/// What reading one object found.
enum Outcome {
    Ok(SegmentHeader),
    Damaged(Problem),
    Unreadable(Problem),
    Vanished,
}

/// Read and decode one object: every checksum, and that its header
/// describes the key it is stored under.
fn check_object(storage: &dyn Storage, key: &SegmentKey) -> Outcome {
    let name = key.to_string();
    let problem = |kind, e: &Error| Problem {
        kind,
        object: name.clone(),
        // The error names the object already; keep only what it says of it.
        detail: e
            .to_string()
            .strip_prefix(&format!("{name}: "))
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string()),
        txid: key.name.min_txid,
    };
    let bytes = match storage.get(&name) {
        Ok(b) => b,
        Err(e) if e.class() == ErrorClass::Integrity => {
            return Outcome::Damaged(problem(ProblemKind::Corrupt, &e))
        }
        Err(e) => {
            // Deleted since the listing (retention) is not damage.
            return match storage.list(&name) {
                Ok(objs) if !objs.iter().any(|o| o.key == name) => Outcome::Vanished,
                _ => Outcome::Unreadable(problem(ProblemKind::Unreadable, &e)),
            };
        }
    };
    let header = match Segment::decode(&bytes, &name) {
        Ok(seg) => seg.header,
        Err(e) => return Outcome::Damaged(problem(ProblemKind::Corrupt, &e)),
    };
    let implied = SegmentKey {
        generation: header.generation,
        name: (&header).into(),
    };
    if implied != *key {
        return Outcome::Damaged(Problem {
            kind: ProblemKind::Misplaced,
            object: name,
            detail: format!("its header describes {implied}"),
            txid: key.name.min_txid,
        });
    }
    Outcome::Ok(header)
}

/// Read `keys` with `parallelism` threads; outcomes in the same order.
fn check_objects(storage: &dyn Storage, keys: &[&SegmentKey], parallelism: usize) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, Outcome)>> = Mutex::new(Vec::with_capacity(keys.len()));
    std::thread::scope(|scope| {
        for _ in 0..parallelism.clamp(1, 64).min(keys.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(key) = keys.get(i) else { return };
                let outcome = check_object(storage, key);
                done.lock().unwrap().push((i, outcome));
            });
        }
    });
    let mut done = done.into_inner().unwrap();
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, o)| o).collect()
}

/// Whether the sample includes `key`: a hash of the key and the seed, so
/// a sample is spread over the whole history and reproducible.
fn sampled(key: &SegmentKey, opts: &VerifyOptions) -> bool {
    if opts.sample >= 1.0 {
        return true;
    }
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(key.to_string().as_bytes(), opts.seed);
    (h as f64 / u64::MAX as f64) < opts.sample
}

/// Every db checksum the objects state about each txid must agree.
/// Objects are visited in history order, so the later of two that
/// disagree is the one named.
fn check_claims(
    generation: u64,
    checked: &[(&SegmentKey, SegmentHeader)],
    problems: &mut Vec<Problem>,
) {
    let mut claims: BTreeMap<u64, (u64, String)> = BTreeMap::new();
    let mut claim =
        |txid: u64, sum: u64, object: &SegmentKey, what: &str, problems: &mut Vec<Problem>| {
            match claims.get(&txid) {
                Some((other, by)) if *other != sum => problems.push(Problem {
                    kind: ProblemKind::Mismatch,
                    object: object.to_string(),
                    detail: format!("{what} txid {txid} is {sum:016x}, but {by} says {other:016x}"),
                    txid,
                }),
                Some(_) => {}
                None => {
                    claims.insert(txid, (sum, object.to_string()));
                }
            }
        };
    // Snapshots first: all parts read, tiling pages 1..=db_pages, their
    // part checksums XOR to the db checksum at their txid.
    let mut snapshots: BTreeMap<u64, Vec<&(&SegmentKey, SegmentHeader)>> = BTreeMap::new();
    for c in checked.iter().filter(|c| c.1.kind == SegmentKind::Snapshot) {
        snapshots.entry(c.1.min_txid).or_default().push(c);
    }
    for (txid, mut parts) in snapshots {
        let n = parts[0].1.parts;
        if parts.len() != n as usize {
            continue; // not all read (a sample, or damage reported already)
        }
        parts.sort_by_key(|p| p.1.part);
        let db_pages = parts[0].1.db_pages;
        let mut next = 1u32;
        let mut sum = 0u64;
        let mut bad = None;
        for (key, h) in &parts {
            if h.part as usize >= parts.len()
                || h.db_pages != db_pages
                || (h.page_count > 0 && h.first_pgno != next)
            {
                bad = Some((*key, format!("does not tile the snapshot at txid {txid}: part {} starts at page {}, expected page {next}", h.part, h.first_pgno)));
                break;
            }
            next += h.page_count;
            sum ^= h.checksum_after;
        }
        if bad.is_none() && next - 1 != db_pages {
            bad = Some((parts[n as usize - 1].0, format!("the parts of the snapshot at txid {txid} hold {} pages, the database has {db_pages}", next - 1)));
        }
        match bad {
            Some((key, detail)) => problems.push(Problem {
                kind: ProblemKind::Corrupt,
                object: key.to_string(),
                detail,
                txid,
            }),
            None => claim(
                txid,
                sum,
                parts[0].0,
                "the snapshot's db checksum at",
                problems,
            ),
        }
    }
    for (key, h) in checked.iter().filter(|c| c.1.kind == SegmentKind::Changes) {
        debug_assert_eq!(key.generation, generation);
        claim(
            h.min_txid - 1,
            h.checksum_before,
            key,
            "its db checksum before",
            problems,
        );
        claim(
            h.max_txid,
            h.checksum_after,
            key,
            "its db checksum after",
            problems,
        );
    }
}

/// Verify every generation of the replica.
pub fn verify(storage: &dyn Storage, opts: &VerifyOptions) -> Result<ReplicaReport> {
    let started = Instant::now();
    let cat = Catalog::load(storage)?;
    let mut reports = Vec::new();
    for (&generation, segs) in &cat.generations {
        let mut report = analyze(generation, segs);
        let keys: Vec<&SegmentKey> = segs
            .iter()
            .map(|(k, _)| k)
            .filter(|k| sampled(k, opts))
            .collect();
        let outcomes = check_objects(storage, &keys, opts.parallelism);
        let mut good = Vec::new();
        for (key, outcome) in keys.iter().zip(outcomes) {
            match outcome {
                Outcome::Ok(h) => {
                    report.checked += 1;
                    good.push((*key, h));
                }
                Outcome::Damaged(p) => {
                    report.checked += 1;
                    report.problems.push(p);
                }
                Outcome::Unreadable(p) => report.problems.push(p),
                Outcome::Vanished => report.vanished += 1,
            }
        }
        check_claims(generation, &good, &mut report.problems);
        // A restore stops at a damaged object: the ranges are those of
        // the listing without them.
        let bad: BTreeSet<&str> = report
            .problems
            .iter()
            .filter(|p| {
                matches!(
                    p.kind,
                    ProblemKind::Corrupt | ProblemKind::Misplaced | ProblemKind::Mismatch
                )
            })
            .map(|p| p.object.as_str())
            .collect();
        if !bad.is_empty() {
            let usable: Vec<(SegmentKey, u64)> = segs
                .iter()
                .filter(|(k, _)| !bad.contains(k.to_string().as_str()))
                .cloned()
                .collect();
            report.ranges = analyze(generation, &usable).ranges;
        }
        report.problems.sort_by_key(|p| (p.txid, p.kind));
        report.problems.dedup();
        reports.push(report);
    }
    reports.sort_by_key(|r| (r.first_ts_ms, r.generation));
    Ok(ReplicaReport {
        replica: storage.describe(),
        generations: reports,
        elapsed: started.elapsed(),
    })
}
