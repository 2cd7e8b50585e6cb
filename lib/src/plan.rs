//! Restore planning from a listing alone (DESIGN.md §5, §6.5): choose a
//! generation, the newest complete snapshot at or before the target, and
//! the chain of changes segments that carries it to the target, with the
//! fewest objects where compacted segments offer a shortcut. No object
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
    // Every txid reachable from the snapshot, with the fewest segments
    // that reach it and the last of them. Overlapping segments (compacted
    // ones covering a run of smaller ones, a resend after a lost ack cut
    // at other boundaries) make several paths; the shortest is the one
    // with the fewest objects to fetch. `changes` is in txid order, so
    // every segment that ends where another starts is looked at first,
    // and a txid's count is final before anything continues from it.
    let mut reached: BTreeMap<u64, (usize, Option<usize>)> = BTreeMap::new();
    reached.insert(snap_txid, (0, None));
    for (i, (k, _)) in changes.iter().enumerate() {
        if k.name.min_txid <= snap_txid || !fits(k.name.max_txid, k.name.last_ts_ms) {
            continue;
        }
        let Some(&(count, _)) = reached.get(&(k.name.min_txid - 1)) else {
            continue;
        };
        let e = reached.entry(k.name.max_txid).or_insert((usize::MAX, None));
        if count + 1 < e.0 {
            *e = (count + 1, Some(i));
        }
    }
    let end = match req.target {
        Target::Txid(t) if reached.contains_key(&t) => t,
        _ => *reached.keys().next_back().expect("the snapshot is reached"),
    };
    let mut path = Vec::new();
    let mut at = end;
    while let Some((_, Some(i))) = reached.get(&at) {
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
            // The narrowest one, not a compacted segment around it.
            let straddling = changes
                .iter()
                .filter(|(k, _)| {
                    reached.contains_key(&(k.name.min_txid - 1)) && k.name.min_txid <= t && t < k.name.max_txid
                })
                .min_by_key(|(k, _)| k.name.max_txid - k.name.min_txid);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::SegmentName;

    const G: u64 = 0xaa;

    fn seg(min: u64, max: u64, kind: SegmentKind) -> (SegmentKey, u64) {
        let name = SegmentName {
            min_txid: min,
            max_txid: max,
            kind,
            last_ts_ms: 1_795_623_750_000 + max * 1000,
            part: 0,
            parts: 1,
        };
        (SegmentKey { generation: G, name }, 100 + max - min)
    }

    /// A snapshot at txid 1, changes 2-2 .. 41-41, and compacted
    /// segments over them as the replicator writes them.
    fn catalog(compacted: &[(u64, u64)]) -> Catalog {
        let mut segs = vec![seg(1, 1, SegmentKind::Snapshot)];
        segs.extend((2..=41).map(|t| seg(t, t, SegmentKind::Changes)));
        segs.extend(compacted.iter().map(|&(a, b)| seg(a, b, SegmentKind::Changes)));
        segs.sort();
        let mut cat = Catalog::default();
        cat.generations.insert(G, segs);
        cat
    }

    fn ranges(p: &Plan) -> Vec<(u64, u64)> {
        p.segments.iter().skip(1).map(|k| (k.name.min_txid, k.name.max_txid)).collect()
    }

    fn plan_to(cat: &Catalog, target: Target) -> Result<Plan> {
        plan_from(cat, &PlanRequest { generation: None, target }, "test")
    }

    #[test]
    fn the_chain_takes_the_fewest_segments() {
        // Level 0 by 4s, level 1 over 16.
        let cat = catalog(&[(2, 5), (6, 9), (10, 13), (14, 17), (2, 17), (18, 21), (22, 25)]);
        let p = plan_to(&cat, Target::Latest).unwrap();
        let mut want = vec![(2, 17), (18, 21), (22, 25)];
        want.extend((26..=41).map(|t| (t, t)));
        assert_eq!(ranges(&p), want);
        assert_eq!(p.txid, 41);
        assert_eq!(p.bytes, p.segments.iter().map(|k| 100 + k.name.max_txid - k.name.min_txid).sum::<u64>());
    }

    #[test]
    fn a_shortcut_found_late_wins_over_a_greedy_path() {
        // 2-9 then 10-13 is 2 segments; 2-5, 6-9, 10-13 would be 3.
        let cat = catalog(&[(2, 5), (6, 9), (10, 13), (2, 9)]);
        let p = plan_to(&cat, Target::Txid(13)).unwrap();
        assert_eq!(ranges(&p), vec![(2, 9), (10, 13)]);
    }

    #[test]
    fn a_txid_inside_a_compacted_segment_restores_through_the_small_ones() {
        let cat = catalog(&[(2, 5), (6, 9), (10, 13), (14, 17), (2, 17)]);
        let p = plan_to(&cat, Target::Txid(11)).unwrap();
        assert_eq!(ranges(&p), vec![(2, 5), (6, 9), (10, 10), (11, 11)]);
        assert_eq!(p.txid, 11);
        // A timestamp inside the range does the same.
        let ts = cat.generations[&G].iter().find(|(k, _)| k.name.min_txid == 11).unwrap().0.name.last_ts_ms;
        let p = plan_to(&cat, Target::Timestamp(ts + 500)).unwrap();
        assert_eq!(p.txid, 11);
        assert_eq!(p.segments.len(), 5);
    }

    #[test]
    fn a_txid_inside_a_segment_names_the_narrowest_one() {
        let mut cat = catalog(&[(2, 17)]);
        let segs = cat.generations.get_mut(&G).unwrap();
        // Only 10-13 holds txids 10-13: 11 is not a boundary.
        segs.retain(|(k, _)| !(10..=13).contains(&k.name.min_txid) || k.name.max_txid > 13);
        segs.push(seg(10, 13, SegmentKind::Changes));
        segs.sort();
        let e = plan_to(&cat, Target::Txid(11)).unwrap_err().to_string();
        assert!(e.contains("txids 10-13") && e.contains("txid 9 or 13"), "{e}");
    }
}
