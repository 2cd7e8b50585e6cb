//! Retention (DESIGN.md §5): delete what no restore inside the window
//! needs, from a listing alone, and never the newest restorable chain.
//!
//! A restore to any moment of the window `[now - retention, now]` needs,
//! in the generation written to last, the newest complete snapshot
//! committed at or before the window's start (the *base*) and every
//! segment after it. Everything of that generation up to the base's txid
//! (older snapshots, changes segments ending at or before it) is
//! deletable; so is every other generation whose last commit is older
//! than the window (restores pick the generation written to last).
//!
//! The listing is the replicator's own: read once at start and kept up
//! to date with what it stores and deletes, so a check costs no request
//! and an idle database none at all.
//!
//! Two guards keep a listing-based restore from losing objects under
//! it: a snapshot only becomes a base once it has been in the replica
//! for `grace` (a restore that listed before it existed may still be
//! fetching the older chain), and when no base qualifies nothing of the
//! generation is deleted. When the window holds no snapshot at all, the
//! replicator takes one, so the next check has a base once it ages.

use std::collections::BTreeMap;

use crate::layout::SegmentKey;
use crate::plan::Catalog;
use crate::segment::SegmentKind;

/// What a retention check decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Objects to delete, oldest first.
    pub delete: Vec<SegmentKey>,
    /// The snapshot the kept chain starts from: (generation, txid).
    pub base: Option<(u64, u64)>,
    /// No complete snapshot of the newest generation was committed inside
    /// the window, and the database changed after the newest one: take
    /// one now, so that it can be a base later. (An unchanged database
    /// needs none: its newest snapshot already is every state since.)
    pub needs_snapshot: bool,
}

/// Decide retention for `cat` at `now_ms`. `window_ms` is the retention
/// period; `eligible(generation, txid)` says whether a snapshot has been
/// in the replica long enough to be a base (the grace guard).
pub fn plan(cat: &Catalog, now_ms: u64, window_ms: u64, eligible: &dyn Fn(u64, u64) -> bool) -> RetentionPlan {
    let start = now_ms.saturating_sub(window_ms);
    let mut out = RetentionPlan::default();
    let Some(latest) = cat.latest_generation() else {
        return out;
    };
    for (&generation, segs) in &cat.generations {
        if generation == latest {
            continue;
        }
        let newest = segs.iter().map(|(k, _)| k.name.last_ts_ms).max().unwrap_or(0);
        if newest < start {
            out.delete.extend(segs.iter().map(|(k, _)| k.clone()));
        }
    }
    let segs = &cat.generations[&latest];
    // Complete snapshots by txid: (parts present, parts wanted, time).
    let mut snapshots: BTreeMap<u64, (u32, u32, u64)> = BTreeMap::new();
    for (k, _) in segs.iter().filter(|(k, _)| k.name.kind == SegmentKind::Snapshot) {
        let e = snapshots.entry(k.name.min_txid).or_insert((0, k.name.parts, k.name.last_ts_ms));
        e.0 += 1;
    }
    let complete: Vec<(u64, u64)> = snapshots
        .iter()
        .filter(|(_, (have, want, _))| have == want)
        .map(|(&txid, &(_, _, ts))| (txid, ts))
        .collect();
    let newest = complete.last().map_or(0, |&(txid, _)| txid);
    let changed_since = segs
        .iter()
        .any(|(k, _)| k.name.kind == SegmentKind::Changes && k.name.max_txid > newest);
    out.needs_snapshot = changed_since && !complete.iter().any(|&(_, ts)| ts > start);
    let base = complete
        .iter()
        .rev()
        .find(|&&(txid, ts)| ts <= start && eligible(latest, txid))
        .map(|&(txid, _)| txid);
    if let Some(base) = base {
        out.base = Some((latest, base));
        out.delete.extend(
            segs.iter()
                .map(|(k, _)| k)
                .filter(|k| {
                    let is_base = k.name.kind == SegmentKind::Snapshot && k.name.min_txid == base;
                    k.name.max_txid <= base && !is_base
                })
                .cloned(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::SegmentName;

    const H: u64 = 3_600_000;

    fn key(generation: u64, min: u64, max: u64, ts: u64, kind: SegmentKind, part: u32, parts: u32) -> (SegmentKey, u64) {
        (
            SegmentKey {
                generation,
                name: SegmentName {
                    min_txid: min,
                    max_txid: max,
                    kind,
                    last_ts_ms: ts,
                    part,
                    parts,
                },
            },
            100,
        )
    }

    fn snap(g: u64, txid: u64, ts: u64) -> (SegmentKey, u64) {
        key(g, txid, txid, ts, SegmentKind::Snapshot, 0, 1)
    }

    fn changes(g: u64, min: u64, max: u64, ts: u64) -> (SegmentKey, u64) {
        key(g, min, max, ts, SegmentKind::Changes, 0, 1)
    }

    fn catalog(segs: Vec<(SegmentKey, u64)>) -> Catalog {
        let mut cat = Catalog::default();
        for s in segs {
            cat.generations.entry(s.0.generation).or_default().push(s);
        }
        for v in cat.generations.values_mut() {
            v.sort();
        }
        cat
    }

    fn names(p: &RetentionPlan) -> Vec<(u64, u64, u64)> {
        p.delete.iter().map(|k| (k.generation, k.name.min_txid, k.name.max_txid)).collect()
    }

    #[test]
    fn keeps_the_newest_snapshot_at_or_before_the_window_and_everything_after() {
        let now = 100 * H;
        let cat = catalog(vec![
            snap(1, 1, 10 * H),
            changes(1, 2, 5, 20 * H),
            snap(1, 5, 30 * H),
            changes(1, 6, 9, 70 * H),
            snap(1, 9, 80 * H),
            changes(1, 10, 12, 90 * H),
        ]);
        let p = plan(&cat, now, 24 * H, &|_, _| true);
        // The window starts at 76h. The snapshot at txid 9 (80h) is inside
        // it, so the base is the one at txid 5 (30h).
        assert_eq!(p.base, Some((1, 5)));
        assert_eq!(names(&p), vec![(1, 1, 1), (1, 2, 5)]);
        assert!(!p.needs_snapshot);
    }

    #[test]
    fn without_an_old_enough_snapshot_nothing_is_deleted_and_a_snapshot_is_asked_for() {
        let cat = catalog(vec![snap(1, 1, 90 * H), changes(1, 2, 3, 95 * H)]);
        let p = plan(&cat, 100 * H, 24 * H, &|_, _| true);
        assert_eq!(p.base, None);
        assert!(p.delete.is_empty());
        assert!(!p.needs_snapshot, "the snapshot at 90h is inside the window");
        let p = plan(&cat, 200 * H, 24 * H, &|_, _| true);
        assert_eq!(p.base, Some((1, 1)));
        assert!(p.delete.is_empty(), "the base and what follows it stay");
        assert!(p.needs_snapshot);
    }

    #[test]
    fn an_unchanged_database_needs_no_new_snapshot() {
        let cat = catalog(vec![snap(1, 1, 10 * H), changes(1, 2, 5, 20 * H), snap(1, 5, 30 * H)]);
        let p = plan(&cat, 100 * H, 24 * H, &|_, _| true);
        assert!(!p.needs_snapshot);
        assert_eq!(p.base, Some((1, 5)));
        assert_eq!(names(&p), vec![(1, 1, 1), (1, 2, 5)]);
    }

    #[test]
    fn a_compacted_segment_across_the_base_stays_and_the_chain_after_it_too() {
        let now = 100 * H;
        let mut segs = vec![snap(1, 1, 10 * H), snap(1, 5, 30 * H), changes(1, 2, 9, 85 * H)];
        segs.extend((2..=9).map(|t| changes(1, t, t, (10 + 10 * t) * H)));
        let cat = catalog(segs);
        let p = plan(&cat, now, 24 * H, &|_, _| true);
        assert_eq!(p.base, Some((1, 5)));
        // What ends at or before the base goes; 2-9 ends after it and stays
        // (a restore from the base cannot use it, a later check deletes it).
        assert_eq!(names(&p), vec![(1, 1, 1), (1, 2, 2), (1, 3, 3), (1, 4, 4), (1, 5, 5)]);
        // What is left restores to the newest txid.
        let mut kept = Catalog::default();
        for (g, segs) in &cat.generations {
            let left: Vec<_> = segs.iter().filter(|(k, _)| !p.delete.contains(k)).cloned().collect();
            kept.generations.insert(*g, left);
        }
        let req = crate::plan::PlanRequest {
            generation: None,
            target: crate::plan::Target::Latest,
        };
        let restore = crate::plan::plan_from(&kept, &req, "test").unwrap();
        assert_eq!(restore.txid, 9);
    }

    #[test]
    fn a_snapshot_in_the_grace_period_is_not_a_base() {
        let cat = catalog(vec![snap(1, 1, 10 * H), changes(1, 2, 5, 20 * H), snap(1, 5, 30 * H)]);
        let p = plan(&cat, 100 * H, 24 * H, &|_, txid| txid != 5);
        assert_eq!(p.base, Some((1, 1)));
        assert!(p.delete.is_empty());
    }

    #[test]
    fn an_incomplete_snapshot_is_never_a_base() {
        let cat = catalog(vec![
            snap(1, 1, 10 * H),
            key(1, 5, 5, 30 * H, SegmentKind::Snapshot, 0, 2),
            changes(1, 2, 9, 40 * H),
        ]);
        let p = plan(&cat, 100 * H, 24 * H, &|_, _| true);
        assert_eq!(p.base, Some((1, 1)));
        assert!(p.delete.is_empty());
    }

    #[test]
    fn old_generations_go_whole_when_their_last_commit_is_before_the_window() {
        let cat = catalog(vec![
            snap(7, 1, 10 * H),
            changes(7, 2, 3, 50 * H),
            snap(8, 1, 60 * H),
            changes(8, 2, 3, 99 * H),
        ]);
        let p = plan(&cat, 100 * H, 24 * H, &|_, _| true);
        assert_eq!(names(&p), vec![(7, 1, 1), (7, 2, 3)]);
        // Generation 8's only snapshot is the base; nothing of it goes.
        assert_eq!(p.base, Some((8, 1)));
        // A generation still written inside the window stays.
        let p = plan(&cat, 60 * H, 24 * H, &|_, _| true);
        assert!(names(&p).iter().all(|n| n.0 != 7));
    }
}
