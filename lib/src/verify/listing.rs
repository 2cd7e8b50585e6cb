//! The shape of a generation from its listing alone: which snapshots
//! are complete, which txids a restore can reach and from where, and
//! what breaks the chain (a missing snapshot part, a gap, a segment that
//! starts inside another). No object is read.

use std::collections::{BTreeMap, BTreeSet};

use super::{GenerationReport, Problem, ProblemKind, RestorableRange, SnapshotReport};
use crate::layout::{generation_prefix, SegmentKey};
use crate::segment::{SegmentKind, SegmentName};

/// The shape of one generation from its listing (`segs` sorted).
pub fn analyze(generation: u64, segs: &[(SegmentKey, u64)]) -> GenerationReport {
    let prefix = generation_prefix(generation);
    let mut problems = Vec::new();
    let changes: Vec<&(SegmentKey, u64)> = segs
        .iter()
        .filter(|(k, _)| k.name.kind == SegmentKind::Changes)
        .collect();
    let newest = segs.iter().map(|(k, _)| k.name.max_txid).max().unwrap_or(0);

    // Snapshots: complete ones start routes; incomplete ones are damage
    // once anything later exists, since uploads go in txid order.
    let mut by_txid: BTreeMap<u64, Vec<&(SegmentKey, u64)>> = BTreeMap::new();
    for s in segs
        .iter()
        .filter(|(k, _)| k.name.kind == SegmentKind::Snapshot)
    {
        by_txid.entry(s.0.name.min_txid).or_default().push(s);
    }
    let mut snapshots = Vec::new();
    let mut complete: BTreeMap<u64, (usize, u64, u64)> = BTreeMap::new();
    let mut incomplete = BTreeSet::new();
    for (&txid, parts) in &by_txid {
        let first = &parts[0].0.name;
        let (n, ts) = (first.parts, first.last_ts_ms);
        let mut present = vec![false; n as usize];
        let mut conflict = false;
        for (key, _) in parts {
            let p = &key.name;
            if p.parts != n || p.last_ts_ms != ts || p.part >= n || present[p.part as usize] {
                conflict = true;
                problems.push(Problem {
                    kind: ProblemKind::Conflict,
                    object: key.to_string(),
                    detail: format!(
                        "does not fit the snapshot at txid {txid} of {} ({n} parts): two snapshots at one txid",
                        parts[0].0
                    ),
                    txid,
                });
                continue;
            }
            present[p.part as usize] = true;
        }
        let count = present.iter().filter(|p| **p).count();
        let bytes = parts.iter().map(|p| p.1).sum();
        snapshots.push(SnapshotReport {
            txid,
            parts: n,
            present: count as u32,
            bytes,
            timestamp_ms: ts,
        });
        if count == n as usize && !conflict {
            complete.insert(txid, (n as usize, bytes, ts));
            continue;
        }
        incomplete.insert(txid);
        if newest > txid {
            for part in (0..n).filter(|i| !present[*i as usize]) {
                let name = SegmentName {
                    min_txid: txid,
                    max_txid: txid,
                    kind: SegmentKind::Snapshot,
                    last_ts_ms: ts,
                    part,
                    parts: n,
                };
                problems.push(Problem {
                    kind: ProblemKind::MissingPart,
                    object: format!("{prefix}{name}"),
                    detail: format!(
                        "missing: part {part} of the {n}-part snapshot at txid {txid}, on which txids {}-{newest} depend",
                        txid + 1
                    ),
                    txid,
                });
            }
        } else {
            problems.push(Problem {
                kind: ProblemKind::Incomplete,
                object: prefix.clone(),
                detail: format!("the snapshot at txid {txid} has {count} of {n} parts: an upload in progress or cut short; nothing depends on it"),
                txid,
            });
        }
    }

    // Routes: from each complete snapshot, follow every changes segment
    // that starts right after a reachable txid. Segments are sorted by
    // first txid, so a txid's route is final before anything starts after it.
    // Where two routes reach a txid, keep what a restore would use: the
    // newer snapshot, then fewer segments.
    #[derive(Clone, Copy)]
    struct Route {
        snapshot: u64,
        segments: usize,
        bytes: u64,
        ts: u64,
    }
    let mut reach: BTreeMap<u64, Route> = complete
        .iter()
        .map(|(&t, &(segments, bytes, ts))| {
            let r = Route {
                snapshot: t,
                segments,
                bytes,
                ts,
            };
            (t, r)
        })
        .collect();
    let mut reachable = vec![false; changes.len()];
    for (i, (key, size)) in changes.iter().enumerate() {
        let (min, max) = (key.name.min_txid, key.name.max_txid);
        if min == 0 || min > max {
            problems.push(Problem {
                kind: ProblemKind::Corrupt,
                object: key.to_string(),
                detail: format!("its name holds an invalid txid range {min}-{max}"),
                txid: min,
            });
            reachable[i] = true; // reported; keep it out of the chain analysis
            continue;
        }
        let Some(from) = reach.get(&(min - 1)).copied() else {
            continue;
        };
        reachable[i] = true;
        let cand = Route {
            snapshot: from.snapshot,
            segments: from.segments + 1,
            bytes: from.bytes + size,
            ts: key.name.last_ts_ms,
        };
        reach
            .entry(max)
            .and_modify(|r| {
                if (cand.snapshot, std::cmp::Reverse(cand.segments))
                    > (r.snapshot, std::cmp::Reverse(r.segments))
                {
                    *r = cand;
                }
            })
            .or_insert(cand);
    }

    let mut ranges: BTreeMap<u64, RestorableRange> = BTreeMap::new();
    for (&txid, r) in &reach {
        let range = ranges.entry(r.snapshot).or_insert(RestorableRange {
            snapshot_txid: r.snapshot,
            first_txid: txid,
            last_txid: txid,
            first_ts_ms: r.ts,
            last_ts_ms: r.ts,
            points: 0,
            segments: 0,
            bytes: 0,
        });
        range.last_txid = txid;
        range.last_ts_ms = r.ts;
        range.points += 1;
        range.segments = r.segments;
        range.bytes = r.bytes;
    }

    // Why each unreachable segment cannot be reached; one problem per
    // break (the segments after a break follow from it).
    let unreachable_ends: BTreeSet<u64> = changes
        .iter()
        .zip(&reachable)
        .filter(|(_, r)| !**r)
        .map(|(c, _)| c.0.name.max_txid)
        .collect();
    for (i, (key, _)) in changes.iter().enumerate() {
        if reachable[i] {
            continue;
        }
        let (min, max) = (key.name.min_txid, key.name.max_txid);
        if reach.contains_key(&max) {
            problems.push(Problem {
                kind: ProblemKind::Redundant,
                object: key.to_string(),
                detail: format!("unused: txid {max} is restorable through other segments"),
                txid: min,
            });
            continue;
        }
        if unreachable_ends.contains(&(min - 1)) || incomplete.contains(&(min - 1)) {
            continue;
        }
        let inside = changes
            .iter()
            .zip(&reachable)
            .find(|((d, _), r)| **r && d.name.min_txid < min && min <= d.name.max_txid);
        if let Some(((d, _), _)) = inside {
            problems.push(Problem {
                kind: ProblemKind::Overlap,
                object: key.to_string(),
                detail: format!(
                    "starts at txid {min}, inside {d} (txids {}-{}), so no restore reaches txid {max}",
                    d.name.min_txid, d.name.max_txid
                ),
                txid: min,
            });
            continue;
        }
        let prev = segs
            .iter()
            .map(|(k, _)| k.name.max_txid)
            .filter(|t| *t < min)
            .max();
        let first_missing = prev.map_or(1, |p| p + 1);
        let detail = match prev {
            Some(p) => format!(
                "missing: no object holds txids {first_missing}-{}, so the chain breaks after txid {p} and {key} cannot be reached",
                min - 1
            ),
            None => format!(
                "missing: no snapshot starts the chain before {key}; nothing up to txid {max} can be restored"
            ),
        };
        problems.push(Problem {
            kind: ProblemKind::Gap,
            object: format!("{prefix}{first_missing:016x}-{:016x}.*", min - 1),
            detail,
            txid: first_missing,
        });
    }
    problems.sort_by_key(|p| (p.txid, p.kind));

    GenerationReport {
        generation,
        objects: segs.len(),
        bytes: segs.iter().map(|s| s.1).sum(),
        checked: 0,
        vanished: 0,
        first_ts_ms: segs
            .iter()
            .map(|(k, _)| k.name.last_ts_ms)
            .min()
            .unwrap_or(0),
        last_ts_ms: segs
            .iter()
            .map(|(k, _)| k.name.last_ts_ms)
            .max()
            .unwrap_or(0),
        snapshots,
        ranges: ranges.into_values().collect(),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 0x00000000000000aa;

    fn key(
        min: u64,
        max: u64,
        kind: SegmentKind,
        part: u32,
        parts: u32,
        ts: u64,
    ) -> (SegmentKey, u64) {
        let name = SegmentName {
            min_txid: min,
            max_txid: max,
            kind,
            last_ts_ms: 1_795_623_750_000 + ts,
            part,
            parts,
        };
        (
            SegmentKey {
                generation: G,
                name,
            },
            100,
        )
    }

    fn snap(txid: u64, part: u32, parts: u32) -> (SegmentKey, u64) {
        key(txid, txid, SegmentKind::Snapshot, part, parts, txid)
    }

    fn ch(min: u64, max: u64) -> (SegmentKey, u64) {
        key(min, max, SegmentKind::Changes, 0, 1, max)
    }

    fn run(mut segs: Vec<(SegmentKey, u64)>) -> GenerationReport {
        segs.sort();
        analyze(G, &segs)
    }

    fn kinds(r: &GenerationReport) -> Vec<ProblemKind> {
        r.problems.iter().map(|p| p.kind).collect()
    }

    #[test]
    fn a_whole_chain_is_one_range() {
        let r = run(vec![snap(1, 0, 2), snap(1, 1, 2), ch(2, 5), ch(6, 9)]);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.ranges.len(), 1);
        let range = &r.ranges[0];
        assert_eq!((range.first_txid, range.last_txid, range.points), (1, 9, 3));
        assert_eq!((range.segments, range.bytes), (4, 400));
        assert_eq!(r.status(), "ok");
    }

    #[test]
    fn a_missing_middle_segment_is_a_gap_named_by_txids() {
        let r = run(vec![snap(1, 0, 1), ch(2, 5), ch(10, 12), ch(13, 14)]);
        assert_eq!(kinds(&r), vec![ProblemKind::Gap]);
        let p = &r.problems[0];
        assert!(
            p.object.ends_with("0000000000000006-0000000000000009.*"),
            "{p}"
        );
        assert!(
            p.detail.contains("txids 6-9") && p.detail.contains("after txid 5"),
            "{p}"
        );
        assert_eq!(r.ranges[0].last_txid, 5);
        assert_eq!(r.status(), "damaged");
    }

    #[test]
    fn a_missing_snapshot_part_is_named_when_later_objects_exist() {
        let r = run(vec![snap(1, 0, 3), snap(1, 2, 3), ch(2, 5)]);
        assert_eq!(kinds(&r), vec![ProblemKind::MissingPart]);
        assert!(
            r.problems[0].object.ends_with(".snapshot-0001-of-0003.lsw"),
            "{}",
            r.problems[0]
        );
        assert!(r.ranges.is_empty());
    }

    #[test]
    fn an_upload_in_progress_is_not_damage() {
        let r = run(vec![snap(1, 0, 3), snap(1, 1, 3)]);
        assert_eq!(kinds(&r), vec![ProblemKind::Incomplete]);
        assert_eq!(r.status(), "incomplete");
        assert!(r.first_damage().is_none());
    }

    #[test]
    fn changes_without_a_snapshot_are_a_gap_from_txid_1() {
        let r = run(vec![ch(2, 5), ch(6, 7)]);
        assert_eq!(kinds(&r), vec![ProblemKind::Gap]);
        assert!(r.problems[0]
            .object
            .ends_with("0000000000000001-0000000000000001.*"));
    }

    #[test]
    fn overlaps_break_only_when_nothing_else_reaches_their_end() {
        // 8-12 starts inside 5-10 and nothing else reaches 12.
        let r = run(vec![snap(1, 0, 1), ch(2, 4), ch(5, 10), ch(8, 12)]);
        assert_eq!(kinds(&r), vec![ProblemKind::Overlap]);
        // 8-12 is redundant when 11-12 continues the chain.
        let r = run(vec![
            snap(1, 0, 1),
            ch(2, 4),
            ch(5, 10),
            ch(8, 12),
            ch(11, 12),
        ]);
        assert_eq!(kinds(&r), vec![ProblemKind::Redundant]);
        assert!(r.first_damage().is_none());
        // Two splits of the same txids are both fine.
        let r = run(vec![snap(1, 0, 1), ch(2, 4), ch(2, 6), ch(5, 6)]);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    #[test]
    fn compacted_segments_are_no_overlap_and_shorten_the_route() {
        // 2-5 covers 2-2 .. 5-5 (compaction); 2-9 covers 2-5 and 6-9.
        let mut segs = vec![snap(1, 0, 1), ch(2, 5), ch(6, 9), ch(2, 9), ch(10, 10)];
        segs.extend((2..=9).map(|t| ch(t, t)));
        let r = run(segs);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.ranges.len(), 1);
        let range = &r.ranges[0];
        assert_eq!((range.first_txid, range.last_txid, range.points), (1, 10, 10));
        // The snapshot, 2-9 and 10-10.
        assert_eq!(range.segments, 3);
    }

    #[test]
    fn a_later_snapshot_starts_its_own_range() {
        let r = run(vec![snap(1, 0, 1), ch(2, 5), snap(5, 0, 1), ch(6, 8)]);
        assert!(r.problems.is_empty());
        let ranges: Vec<_> = r
            .ranges
            .iter()
            .map(|g| (g.snapshot_txid, g.first_txid, g.last_txid))
            .collect();
        // Txid 5 is restored from its own snapshot, not through 2-5.
        assert_eq!(ranges, vec![(1, 1, 1), (5, 5, 8)]);
        assert_eq!(r.ranges[1].segments, 2);
    }

    #[test]
    fn conflicting_snapshot_parts_are_reported() {
        let mut other = snap(1, 1, 2);
        other.0.name.last_ts_ms += 1;
        let r = run(vec![snap(1, 0, 2), snap(1, 1, 2), other, ch(2, 3)]);
        assert!(
            kinds(&r).contains(&ProblemKind::Conflict),
            "{:?}",
            r.problems
        );
    }
}
