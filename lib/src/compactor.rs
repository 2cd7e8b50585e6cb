//! Compaction of changes segments (man/lsw-format.5, "REPLICA LAYOUT"):
//! the replicator feeds every changes segment it has stored, in txid
//! order, and gets back now and then one bigger changes segment that
//! covers a run of them, so a restore fetches a few objects instead of
//! thousands. The small segments stay (a restore to any of their ends
//! still works); the planner takes the fewest objects to its target.
//!
//! Levels: level 0 merges `fan_in` stored segments into one; level 1
//! merges `fan_in` of those, and so on. With a fan-in of 16 and three
//! levels, compacted segments span 16, 256 and 4,096 stored segments,
//! and a chain of any length up to 4,096 segments restores through at
//! most 15 objects per level.
//!
//! A run is in memory only: the map page -> newest page bytes plus the
//! range's header fields. Anything that breaks continuity (another
//! generation, a txid or checksum that does not follow) starts over; so
//! does `reset` (the replicator calls it on a snapshot and after a
//! failure), so a compacted segment always covers a contiguous run of
//! segments stored by this process.

use crate::error::Result;
use crate::layout::SegmentKey;
use crate::merged::MergedPages;
use crate::segment::{self, Decoder, SegmentHeader, SegmentKind, SegmentName};
use crate::segmenter::EncodedSegment;

#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Segments (of the level below) merged into one.
    pub fan_in: usize,
    /// Levels of compaction; 0 turns it off.
    pub levels: usize,
    /// A level's run is cut once its pages pass this many bytes, however
    /// few segments it holds (so memory is bounded by `levels` times it).
    pub max_bytes: usize,
    /// A segment with more page bytes than this is no small segment:
    /// it ends the runs in progress and is not merged (fetching it is
    /// bandwidth, not requests, and merging it would only hold memory).
    pub max_input_bytes: usize,
    /// zstd level of the compacted segments.
    pub zstd_level: i32,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            fan_in: 16,
            levels: 3,
            // Measured under a heavy write load (one-row transactions at
            // ~25,000/s, 1 s segments): 16 MiB per level took the
            // replicator's peak RSS from 28 to 89 MB.
            max_bytes: 4 << 20,
            max_input_bytes: 1 << 20,
            zstd_level: 3,
        }
    }
}

/// Contiguous changes merged so far: what applying them in order does.
#[derive(Debug)]
struct Run {
    generation: u64,
    page_size: u32,
    min_txid: u64,
    max_txid: u64,
    first_ts_ms: u64,
    last_ts_ms: u64,
    checksum_before: u64,
    checksum_after: u64,
    pages: MergedPages,
    /// Segments of the level below merged into this run.
    inputs: usize,
}

impl Run {
    fn from_header(h: &SegmentHeader, pages: impl IntoIterator<Item = (u32, Vec<u8>)>) -> Run {
        Run {
            generation: h.generation,
            page_size: h.page_size,
            min_txid: h.min_txid,
            max_txid: h.max_txid,
            first_ts_ms: h.first_ts_ms,
            last_ts_ms: h.last_ts_ms,
            checksum_before: h.checksum_before,
            checksum_after: h.checksum_after,
            pages: MergedPages::new(h.page_size, pages, h.db_pages),
            inputs: 1,
        }
    }

    /// Whether `next` continues this run.
    fn continued_by(&self, next: &Run) -> bool {
        next.generation == self.generation
            && next.page_size == self.page_size
            && next.min_txid == self.max_txid + 1
            && next.checksum_before == self.checksum_after
    }

    /// Apply `next` on top (merged.rs).
    fn merge(&mut self, next: Run) {
        let db_pages = next.pages.db_pages();
        self.pages.apply(next.pages.into_pages(), db_pages);
        self.max_txid = next.max_txid;
        self.last_ts_ms = next.last_ts_ms;
        self.checksum_after = next.checksum_after;
        self.inputs += next.inputs;
    }

    fn bytes(&self) -> usize {
        self.pages.bytes()
    }

    fn header(&self) -> SegmentHeader {
        SegmentHeader {
            kind: SegmentKind::Changes,
            generation: self.generation,
            min_txid: self.min_txid,
            max_txid: self.max_txid,
            page_size: self.page_size,
            db_pages: self.pages.db_pages(),
            first_ts_ms: self.first_ts_ms,
            last_ts_ms: self.last_ts_ms,
            checksum_before: self.checksum_before,
            checksum_after: self.checksum_after,
            part: 0,
            parts: 1,
            page_count: 0,
            first_pgno: 0,
        }
    }
}

pub struct Compactor {
    opts: CompactOptions,
    /// One run in progress per level.
    runs: Vec<Option<Run>>,
    decoder: Option<Decoder>,
}

impl Compactor {
    pub fn new(opts: CompactOptions) -> Self {
        let runs = (0..opts.levels).map(|_| None).collect();
        Compactor {
            opts,
            runs,
            decoder: None,
        }
    }

    /// Forget every run in progress.
    pub fn reset(&mut self) {
        self.runs.iter_mut().for_each(|r| *r = None);
    }

    /// Uncompressed page bytes held, all levels together.
    pub fn held_bytes(&self) -> usize {
        self.runs.iter().flatten().map(Run::bytes).sum()
    }

    /// Take in one changes segment that is now stored in the replica
    /// (a snapshot part resets). Returns the compacted segments to store,
    /// lowest level first, each covering a range that ends where `seg` does.
    pub fn absorb(&mut self, seg: &EncodedSegment) -> Result<Vec<EncodedSegment>> {
        if self.runs.is_empty() {
            return Ok(Vec::new());
        }
        let page_bytes = seg.header.page_count as usize * seg.header.page_size as usize;
        if seg.header.kind != SegmentKind::Changes || page_bytes > self.opts.max_input_bytes {
            self.reset();
            return Ok(Vec::new());
        }
        let decoder = match &mut self.decoder {
            Some(d) => d,
            None => self.decoder.insert(Decoder::new()?),
        };
        let decoded = decoder.decode(&seg.bytes, &seg.key.to_string())?;
        let pages = decoded.pages().map(|(n, d)| (n, d.to_vec()));
        let run = Run::from_header(&decoded.header, pages);
        decoder.recycle(decoded);
        let mut out = Vec::new();
        self.add(0, run, &mut out)?;
        Ok(out)
    }

    /// Merge `run` into `level`; cut the level when it is full and pass
    /// what it cut to the level above.
    fn add(&mut self, level: usize, run: Run, out: &mut Vec<EncodedSegment>) -> Result<()> {
        match &mut self.runs[level] {
            Some(r) if r.continued_by(&run) => r.merge(run),
            Some(_) => {
                // A break in continuity: nothing above continues either.
                self.runs[level..].iter_mut().for_each(|r| *r = None);
                self.runs[level] = Some(run);
            }
            slot @ None => *slot = Some(run),
        }
        let r = self.runs[level].as_ref().expect("a run");
        if r.inputs < self.opts.fan_in && r.bytes() < self.opts.max_bytes {
            return Ok(());
        }
        let cut = self.runs[level].take().expect("a run");
        // One input is a segment already stored (or cut below): nothing new.
        if cut.inputs > 1 {
            out.push(encode(&cut, self.opts.zstd_level)?);
        }
        if level + 1 < self.runs.len() {
            let mut up = cut;
            up.inputs = 1;
            self.add(level + 1, up, out)?;
        }
        Ok(())
    }
}

fn encode(run: &Run, zstd_level: i32) -> Result<EncodedSegment> {
    let (header, bytes) = segment::encode(run.header(), run.pages.iter(), zstd_level)?;
    Ok(EncodedSegment {
        key: SegmentKey {
            generation: header.generation,
            name: SegmentName::from(&header),
        },
        header,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::checksum::page_hash;
    use crate::segment::Segment;

    const PS: u32 = 512;
    const G: u64 = 0xabc;

    /// A toy database: pages by number, its size and checksum.
    #[derive(Clone, Default, PartialEq, Debug)]
    struct Db {
        pages: Vec<Vec<u8>>,
    }

    impl Db {
        fn checksum(&self) -> u64 {
            self.pages
                .iter()
                .enumerate()
                .fold(0, |acc, (i, p)| acc ^ page_hash(i as u32 + 1, p))
        }

        /// What restore does with a changes segment: write the pages,
        /// then truncate or extend (with zeros) to its db size.
        fn apply(&mut self, seg: &Segment) {
            for (pgno, data) in seg.pages() {
                let i = pgno as usize - 1;
                if self.pages.len() <= i {
                    self.pages.resize(i + 1, vec![0; PS as usize]);
                }
                self.pages[i] = data.to_vec();
            }
            self.pages
                .resize(seg.header.db_pages as usize, vec![0; PS as usize]);
        }
    }

    /// Writes one segment per (db size, pages written) step, the way the
    /// segmenter does: txids one each, checksums of the toy database.
    struct History {
        db: Db,
        txid: u64,
        segments: Vec<EncodedSegment>,
    }

    impl History {
        fn new(db_pages: u32) -> History {
            let db = Db {
                pages: (1..=db_pages).map(|n| vec![n as u8; PS as usize]).collect(),
            };
            History {
                db,
                txid: 1,
                segments: Vec::new(),
            }
        }

        fn step(&mut self, db_pages: u32, writes: &[(u32, u8)]) -> EncodedSegment {
            let before = self.db.checksum();
            let mut pages: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
            for &(pgno, fill) in writes {
                pages.insert(pgno, vec![fill; PS as usize]);
            }
            pages.split_off(&(db_pages + 1));
            self.txid += 1;
            let header = SegmentHeader {
                kind: SegmentKind::Changes,
                generation: G,
                min_txid: self.txid,
                max_txid: self.txid,
                page_size: PS,
                db_pages,
                first_ts_ms: 1_000 + self.txid,
                last_ts_ms: 1_000 + self.txid,
                checksum_before: before,
                checksum_after: 0,
                part: 0,
                parts: 1,
                page_count: 0,
                first_pgno: 0,
            };
            // Apply first to learn the checksum after.
            let (_, probe) = segment::encode(header.clone(), pages.iter().map(|(n, d)| (*n, d.as_slice())), 1).unwrap();
            self.db.apply(&Segment::decode(&probe, "probe").unwrap());
            let header = SegmentHeader {
                checksum_after: self.db.checksum(),
                ..header
            };
            let seg = encode_pages(header, &pages);
            self.segments.push(seg.clone());
            seg
        }
    }

    fn encode_pages(header: SegmentHeader, pages: &BTreeMap<u32, Vec<u8>>) -> EncodedSegment {
        let (header, bytes) = segment::encode(header, pages.iter().map(|(n, d)| (*n, d.as_slice())), 1).unwrap();
        EncodedSegment {
            key: SegmentKey {
                generation: G,
                name: SegmentName::from(&header),
            },
            header,
            bytes,
        }
    }

    fn opts(fan_in: usize, levels: usize) -> CompactOptions {
        CompactOptions {
            fan_in,
            levels,
            max_bytes: 1 << 30,
            max_input_bytes: 1 << 30,
            zstd_level: 1,
        }
    }

    fn decode(seg: &EncodedSegment) -> Segment {
        Segment::decode(&seg.bytes, "test").unwrap()
    }

    /// The start state, the small segments applied one by one, and the
    /// compacted one applied alone must agree, checksums included.
    fn check_equivalent(start: &Db, small: &[EncodedSegment], compacted: &EncodedSegment) {
        let c = &compacted.header;
        assert_eq!(c.min_txid, small[0].header.min_txid);
        assert_eq!(c.max_txid, small.last().unwrap().header.max_txid);
        assert_eq!(c.checksum_before, start.checksum());
        assert_eq!(c.first_ts_ms, small[0].header.first_ts_ms);
        assert_eq!(c.last_ts_ms, small.last().unwrap().header.last_ts_ms);
        let mut one_by_one = start.clone();
        for s in small {
            one_by_one.apply(&decode(s));
        }
        let mut at_once = start.clone();
        at_once.apply(&decode(compacted));
        assert_eq!(at_once, one_by_one);
        assert_eq!(c.checksum_after, at_once.checksum());
        assert_eq!(c.db_pages as usize, at_once.pages.len());
    }

    #[test]
    fn merged_pages_equal_applying_in_order() {
        let mut h = History::new(4);
        let start = h.db.clone();
        let mut c = Compactor::new(opts(4, 1));
        let steps: [(u32, &[(u32, u8)]); 4] = [
            (4, &[(1, 10), (3, 11)]),
            (5, &[(3, 12), (5, 13)]),
            (5, &[(1, 14)]),
            (6, &[(6, 15), (2, 16)]),
        ];
        let mut out = Vec::new();
        for (i, (n, w)) in steps.iter().enumerate() {
            let seg = h.step(*n, w);
            out = c.absorb(&seg).unwrap();
            assert_eq!(out.is_empty(), i < 3, "cut after the 4th segment only");
        }
        assert_eq!(out.len(), 1);
        let pages: Vec<(u32, u8)> = decode(&out[0]).pages().map(|(n, d)| (n, d[0])).collect();
        assert_eq!(pages, vec![(1, 14), (2, 16), (3, 12), (5, 13), (6, 15)]);
        check_equivalent(&start, &h.segments, &out[0]);
        assert_eq!(out[0].key.name.to_string(), format!("{}", out[0].header.name()));
        assert_eq!(c.held_bytes(), 0, "a cut run is let go");
    }

    #[test]
    fn a_shrinking_database_drops_pages_past_its_end() {
        let mut h = History::new(8);
        let start = h.db.clone();
        let mut c = Compactor::new(opts(3, 1));
        assert!(c.absorb(&h.step(8, &[(7, 1), (8, 2), (2, 3)])).unwrap().is_empty());
        // VACUUM-like shrink to 5 pages, then growth to 7 that writes only
        // page 7: page 6 reads as zeros after the small segments, and must
        // in the compacted one too (not the 8-page state's page 6).
        assert!(c.absorb(&h.step(5, &[(1, 4)])).unwrap().is_empty());
        let out = c.absorb(&h.step(7, &[(7, 5)])).unwrap();
        assert_eq!(out.len(), 1);
        let seg = decode(&out[0]);
        assert_eq!(seg.header.db_pages, 7);
        let pages: Vec<(u32, u8)> = seg.pages().map(|(n, d)| (n, d[0])).collect();
        assert_eq!(pages, vec![(1, 4), (2, 3), (6, 0), (7, 5)]);
        check_equivalent(&start, &h.segments, &out[0]);
    }

    #[test]
    fn the_memory_cap_cuts_a_run_early() {
        let mut h = History::new(64);
        let mut c = Compactor::new(CompactOptions {
            max_bytes: 3 * PS as usize,
            ..opts(100, 1)
        });
        assert!(c.absorb(&h.step(64, &[(1, 1)])).unwrap().is_empty());
        assert!(c.absorb(&h.step(64, &[(1, 2)])).unwrap().is_empty(), "one distinct page");
        assert!(c.absorb(&h.step(64, &[(2, 3)])).unwrap().is_empty());
        let out = c.absorb(&h.step(64, &[(3, 4)])).unwrap();
        assert_eq!(out.len(), 1, "three pages reach the cap");
        assert_eq!((out[0].header.min_txid, out[0].header.max_txid), (2, 5));
        // One segment over the cap alone is already stored: nothing new.
        let big: Vec<(u32, u8)> = (1..=4).map(|n| (n, 9)).collect();
        assert!(c.absorb(&h.step(64, &big)).unwrap().is_empty());
        assert_eq!(c.held_bytes(), 0);
    }

    #[test]
    fn a_big_segment_ends_the_runs_and_is_not_merged() {
        let mut h = History::new(8);
        let mut c = Compactor::new(CompactOptions {
            max_input_bytes: 2 * PS as usize,
            ..opts(2, 2)
        });
        assert!(c.absorb(&h.step(8, &[(1, 1)])).unwrap().is_empty());
        let big: Vec<(u32, u8)> = (1..=3).map(|n| (n, 7)).collect();
        assert!(c.absorb(&h.step(8, &big)).unwrap().is_empty());
        assert_eq!(c.held_bytes(), 0, "the run before it is dropped, the big one not taken in");
        // Small ones after it compact again, from where they start.
        assert!(c.absorb(&h.step(8, &[(2, 2)])).unwrap().is_empty());
        let out = c.absorb(&h.step(8, &[(3, 3)])).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].header.min_txid, out[0].header.max_txid), (4, 5));
    }

    #[test]
    fn levels_compact_the_compacted() {
        let mut h = History::new(16);
        let start = h.db.clone();
        let mut c = Compactor::new(opts(3, 2));
        let mut all = Vec::new();
        for i in 0..9u32 {
            let seg = h.step(16 + i, &[(1 + i % 5, i as u8), (16 + i, 100 + i as u8)]);
            all.extend(c.absorb(&seg).unwrap());
        }
        let ranges: Vec<(u64, u64)> = all.iter().map(|s| (s.header.min_txid, s.header.max_txid)).collect();
        assert_eq!(ranges, vec![(2, 4), (5, 7), (8, 10), (2, 10)], "level 1 right after the level 0 that ends it");
        check_equivalent(&start, &h.segments[0..3], &all[0]);
        check_equivalent(&start, &h.segments, &all[3]);
    }

    #[test]
    fn a_break_in_continuity_starts_over() {
        let mut h = History::new(4);
        let mut c = Compactor::new(opts(2, 2));
        let a = h.step(4, &[(1, 1)]);
        let _lost = h.step(4, &[(2, 2)]);
        let b = h.step(4, &[(3, 3)]);
        assert!(c.absorb(&a).unwrap().is_empty());
        // b does not follow a (a segment in between was not fed): b starts a new run.
        assert!(c.absorb(&b).unwrap().is_empty());
        let d = h.step(4, &[(4, 4)]);
        let out = c.absorb(&d).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].header.min_txid, out[0].header.max_txid), (4, 5));
        // A reset (snapshot, new generation, failure) forgets everything.
        c.reset();
        assert!(c.absorb(&h.step(4, &[(1, 5)])).unwrap().is_empty());
        assert_eq!(c.held_bytes(), PS as usize);
    }

    #[test]
    fn no_levels_no_compaction() {
        let mut h = History::new(4);
        let mut c = Compactor::new(opts(1, 0));
        assert!(c.absorb(&h.step(4, &[(1, 1)])).unwrap().is_empty());
    }
}
