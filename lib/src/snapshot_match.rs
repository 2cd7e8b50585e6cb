//! Placing a live read of the database in the shadow log, for a snapshot
//! a replica takes of the live database (replica_worker.rs): which txid it
//! is of, and its pages as they are right after that txid.
//!
//! The read's db checksum is looked up in the log. Capture merges the
//! commits of one pass into one transaction (capture.rs), so the read may
//! stand between two of them: its checksum is then in that transaction's
//! MARKS, and the snapshot is of that txid. The read with the pages the
//! transaction holds laid over it is the state after it: a merged
//! transaction holds every page its commits changed (merged.rs), so a page
//! it does not hold is the same at both points.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::checksum::PageHashes;
use crate::error::{Error, Result};
use crate::frames::Frame;
use crate::live::LiveState;
use crate::log_tail::{LogHead, LogTail, Until};

/// Where a live read stands in the log.
#[derive(Debug)]
pub struct Match {
    /// The txid the snapshot is of.
    pub txid: u64,
    /// The database's size and checksum right after it.
    pub db_pages: u32,
    pub checksum: u64,
    /// Commit time of `txid` (0 when the tail stood on a base).
    pub timestamp_ms: u64,
    /// The pages `txid` wrote, last version, when the read stood between
    /// two of its commits; empty when the read is the state after it.
    overlay: BTreeMap<u32, Vec<u8>>,
    page_size: u32,
    /// The read's own size.
    read_pages: u32,
    between: bool,
}

/// The last transaction a log read delivered.
#[derive(Default)]
struct LastTxn {
    pages: BTreeMap<u32, Vec<u8>>,
    db_pages: Option<u32>,
}

impl LastTxn {
    fn see(&mut self, frame: &Frame) {
        match frame {
            Frame::Txn { .. } => *self = LastTxn::default(),
            Frame::Page { pgno, data } => {
                self.pages.insert(*pgno, data.clone());
            }
            Frame::Commit { db_pages, .. } => self.db_pages = Some(*db_pages),
            _ => {}
        }
    }
}

/// Read `tail` on (every frame read goes to `visit`) until it reaches the
/// state `live` was read at, waiting for capture to log it until
/// `deadline`. An error if the log's generation ends first.
pub fn find(
    tail: &mut LogTail,
    head: &LogHead,
    live: &LiveState,
    deadline: Instant,
    visit: &mut dyn FnMut(Frame) -> Result<()>,
) -> Result<Match> {
    let mut last = LastTxn::default();
    loop {
        let now = head.get();
        let read = tail.read(&now, Until::Checksum(live.checksum), &mut |frame| {
            last.see(&frame);
            visit(frame)
        })?;
        let between = tail.last_marks.contains(&live.checksum);
        if tail.checksum == live.checksum || between {
            return Ok(Match {
                txid: tail.txid,
                db_pages: if between { last.db_pages.unwrap_or(live.db_pages) } else { live.db_pages },
                checksum: tail.checksum,
                timestamp_ms: tail.timestamp_ms,
                overlay: if between { last.pages } else { BTreeMap::new() },
                page_size: live.page_size,
                read_pages: live.db_pages,
                between,
            });
        }
        if read.ended || now.generation != tail.generation() {
            return Err(Error::Usage("a new generation started while a snapshot was read; trying again".into()));
        }
        if Instant::now() >= deadline {
            return Err(Error::database(
                head.log_dir(),
                format!(
                    "the database read for a snapshot (checksum {:016x}) did not appear in the shadow log in time; trying again",
                    live.checksum
                ),
            ));
        }
        head.wait(now.seq, Duration::from_millis(100));
    }
}

impl Match {
    /// Whether the read stood between two commits of `txid`.
    pub fn between_commits(&self) -> bool {
        self.between
    }

    /// The snapshot's pages 1..=db_pages in order, to `emit`: the read's
    /// (`read` visits them in order) with `txid`'s pages over them. They
    /// must add up to `checksum`, or the snapshot is not emitted whole.
    pub fn pages(
        mut self,
        read: impl FnOnce(&mut dyn FnMut(u32, &[u8]) -> Result<()>) -> Result<()>,
        emit: &mut dyn FnMut(u32, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let mut hashes = PageHashes::new(self.page_size);
        let db_pages = self.db_pages;
        let mut put = |pgno: u32, data: Vec<u8>| {
            hashes.set(pgno, &data);
            emit(pgno, data)
        };
        read(&mut |pgno, data| match pgno {
            p if p > db_pages => Ok(()),
            p => put(p, self.overlay.remove(&p).unwrap_or_else(|| data.to_vec())),
        })?;
        // Pages the transaction added past the read's end; one it did not
        // write reads as zeros, as past the end of a file.
        for pgno in self.read_pages + 1..=db_pages {
            let data = self.overlay.remove(&pgno).unwrap_or_else(|| vec![0u8; self.page_size as usize]);
            put(pgno, data)?;
        }
        hashes.resize(db_pages);
        if hashes.checksum() != self.checksum {
            return Err(Error::Usage(format!(
                "the snapshot's pages do not add up to the checksum of txid {} ({:016x}, not {:016x}); trying again",
                self.txid,
                hashes.checksum(),
                self.checksum
            )));
        }
        Ok(())
    }
}
