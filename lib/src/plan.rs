//! Restore planning from a listing alone (DESIGN.md §5, §6.5): choose a
//! generation, the newest complete snapshot at or before the target, and
//! the chain of changes segments that carries it to the target. No object
//! body is read; the names say everything needed.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::layout::{generation_name, SegmentKey, LAYOUT_DIR, LAYOUT_VERSION};
use crate::segment::SegmentKind;
use crate::storage::Storage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The newest state the replica holds.
    Latest,
    /// The state right after this txid; it must end a segment.
    Txid(u64),
    /// The newest state committed at or before this time (ms since epoch).
    Timestamp(u64),
}

#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub generation: Option<u64>,
    pub target: Target,
}

/// Which segments to fetch, in the order to apply them.
#[derive(Debug, Clone)]
pub struct Plan {
    pub generation: u64,
    pub segments: Vec<SegmentKey>,
    /// Total bytes of the segments, from the listing.
    pub bytes: u64,
    /// The txid the restore reaches.
    pub txid: u64,
    /// Commit time of that txid (ms).
    pub timestamp_ms: u64,
}

/// Everything the replica holds, grouped by generation.
#[derive(Debug, Default)]
pub struct Catalog {
    pub generations: BTreeMap<u64, Vec<(SegmentKey, u64)>>,
}

impl Catalog {
    /// List the replica once. Objects that are not segments are ignored;
    /// a replica of a newer layout only is refused.
    pub fn load(storage: &dyn Storage) -> Result<Self> {
        let mut cat = Catalog::default();
        for obj in storage.list(&format!("{LAYOUT_DIR}/"))? {
            if let Some(key) = SegmentKey::parse(&obj.key) {
                cat.generations
                    .entry(key.generation)
                    .or_default()
                    .push((key, obj.size));
            }
        }
        if cat.generations.is_empty() {
            // Only now look for a newer layout, so the common case costs one listing.
            let newer = storage
                .list("lsw")?
                .into_iter()
                .filter_map(|o| {
                    o.key
                        .split('/')
                        .next()
                        .and_then(|d| d.strip_prefix("lsw")?.parse::<u32>().ok())
                })
                .max();
            if let Some(v) = newer.filter(|v| *v > LAYOUT_VERSION) {
                return Err(Error::NewerFormat {
                    what: format!("replica {}", storage.describe()),
                    found: v,
                    supported: LAYOUT_VERSION,
                });
            }
        }
        for segs in cat.generations.values_mut() {
            segs.sort();
        }
        Ok(cat)
    }

    /// The generation written to most recently (by last commit time).
    /// Generations without a complete snapshot (an upload cut short) are
    /// passed over: nothing in them can be restored.
    pub fn latest_generation(&self) -> Option<u64> {
        self.generations
            .iter()
            .filter(|(_, segs)| !complete_snapshots(segs).is_empty())
            .max_by_key(|(_, segs)| {
                segs.iter()
                    .map(|(k, _)| k.name.last_ts_ms)
                    .max()
                    .unwrap_or(0)
            })
            .map(|(g, _)| *g)
    }
}

/// The snapshots of one generation that have every part, by txid.
fn complete_snapshots(segs: &[(SegmentKey, u64)]) -> BTreeMap<u64, Vec<&(SegmentKey, u64)>> {
    let mut snapshots: BTreeMap<u64, Vec<&(SegmentKey, u64)>> = BTreeMap::new();
    for s in segs.iter().filter(|(k, _)| k.name.kind == SegmentKind::Snapshot) {
        snapshots.entry(s.0.name.min_txid).or_default().push(s);
    }
    snapshots.retain(|_, parts| {
        let n = parts[0].0.name.parts;
        parts.len() as u32 == n && parts.iter().enumerate().all(|(i, p)| p.0.name.part == i as u32 && p.0.name.parts == n)
    });
    snapshots
}

pub fn plan(storage: &dyn Storage, req: &PlanRequest) -> Result<Plan> {
    let cat = Catalog::load(storage)?;
    plan_from(&cat, req, &storage.describe())
}

pub fn plan_from(cat: &Catalog, req: &PlanRequest, replica: &str) -> Result<Plan> {
    let generation = match req.generation {
        Some(g) => g,
        None => cat
            .latest_generation()
            .ok_or_else(|| Error::NotFound(format!("replica {replica} holds no backups")))?,
    };
    let segs = cat.generations.get(&generation).ok_or_else(|| {
        Error::NotFound(format!(
            "replica {replica} has no generation {}",
            generation_name(generation)
        ))
    })?;
    let gen_name = generation_name(generation);

    let snapshots = complete_snapshots(segs);
    let changes: Vec<&(SegmentKey, u64)> = segs
        .iter()
        .filter(|(k, _)| k.name.kind == SegmentKind::Changes)
        .collect();

    let fits = |txid: u64, ts: u64| match req.target {
        Target::Latest => true,
        Target::Txid(t) => txid <= t,
        Target::Timestamp(t) => ts <= t,
    };
    let (&snap_txid, parts) = snapshots
        .iter()
        .rev()
        .find(|(_, parts)| fits(parts[0].0.name.max_txid, parts[0].0.name.last_ts_ms))
        .ok_or_else(|| match snapshots.is_empty() {
            true => Error::NotFound(format!(
                "generation {gen_name} in {replica} has no complete snapshot"
            )),
            false => Error::NotFound(format!(
                "generation {gen_name} in {replica} has no snapshot at or before the target"
            )),
        })?;

    let mut plan = Plan {
        generation,
        segments: parts.iter().map(|p| p.0.clone()).collect(),
        bytes: parts.iter().map(|p| p.1).sum(),
        txid: snap_txid,
        timestamp_ms: parts[0].0.name.last_ts_ms,
    };
    // Every txid reachable from the snapshot, with the segment that
    // reached it. Overlapping segments (a resend after a lost ack, cut at
    // other boundaries) make several paths; any complete one will do, so
    // no greedy choice can strand the plan. `changes` is in txid order,
    // so a segment's start is settled before it is looked at.
    let mut reached: BTreeMap<u64, Option<usize>> = BTreeMap::new();
    reached.insert(snap_txid, None);
    for (i, (k, _)) in changes.iter().enumerate() {
        if k.name.min_txid > snap_txid
            && reached.contains_key(&(k.name.min_txid - 1))
            && fits(k.name.max_txid, k.name.last_ts_ms)
        {
            reached.entry(k.name.max_txid).or_insert(Some(i));
        }
    }
    let end = match req.target {
        Target::Txid(t) if reached.contains_key(&t) => t,
        _ => *reached.keys().next_back().expect("the snapshot is reached"),
    };
    let mut path = Vec::new();
    let mut at = end;
    while let Some(Some(i)) = reached.get(&at) {
        path.push(*i);
        at = changes[*i].0.name.min_txid - 1;
    }
    for i in path.into_iter().rev() {
        let (key, size) = changes[i];
        plan.txid = key.name.max_txid;
        plan.timestamp_ms = key.name.last_ts_ms;
        plan.bytes += size;
        plan.segments.push(key.clone());
    }

    // Say why the chain stopped where it did, if it is not where asked.
    let later = changes.iter().find(|(k, _)| k.name.max_txid > plan.txid);
    match req.target {
        Target::Txid(t) if plan.txid != t => {
            let straddling = changes.iter().find(|(k, _)| {
                reached.contains_key(&(k.name.min_txid - 1)) && k.name.min_txid <= t && t < k.name.max_txid
            });
            if let Some((k, _)) = straddling {
                return Err(Error::NotFound(format!(
                    "txid {t} is inside segment {k} (txids {}-{}); restore to txid {} or {} instead",
                    k.name.min_txid,
                    k.name.max_txid,
                    k.name.min_txid - 1,
                    k.name.max_txid
                )));
            }
            if later.is_none() {
                return Err(Error::NotFound(format!(
                    "generation {gen_name} in {replica} ends at txid {}; txid {t} is not there",
                    plan.txid
                )));
            }
            return Err(gap_error(
                &gen_name,
                replica,
                plan.txid,
                later.map(|l| &l.0),
            ));
        }
        Target::Latest if later.is_some() => {
            return Err(gap_error(
                &gen_name,
                replica,
                plan.txid,
                later.map(|l| &l.0),
            ));
        }
        _ => {}
    }
    Ok(plan)
}

fn gap_error(gen_name: &str, replica: &str, txid: u64, next: Option<&SegmentKey>) -> Error {
    let after = next.map_or(String::new(), |k| format!(" (the next segment is {k})"));
    Error::integrity(
        format!("generation {gen_name} in {replica}"),
        format!("the chain breaks after txid {txid}{after}; restore with -txid {txid} to get the state before the break"),
    )
}
