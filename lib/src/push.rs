//! The push stage: store each segment under its key, idempotently, and
//! track the durable position (the newest txid whose every segment is
//! stored), which `--ack FILE` publishes for lsw-shadow.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::layout::{generation_name, SegmentKey};
use crate::segment::{Segment, SegmentHeader, SegmentKind};
use crate::segmenter::EncodedSegment;
use crate::storage::{PutOutcome, Storage};

/// The durable position in the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub generation: u64,
    pub txid: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", generation_name(self.generation), self.txid)
    }
}

impl Position {
    /// Parse `GENERATION/TXID`.
    pub fn parse(s: &str) -> Option<Self> {
        let (g, t) = s.trim().split_once('/')?;
        Some(Position {
            generation: crate::layout::parse_generation(g)?,
            txid: t.parse().ok()?,
        })
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PushStats {
    pub stored: u64,
    pub skipped: u64,
    pub bytes: u64,
}

pub struct Pusher<'a> {
    storage: &'a dyn Storage,
    ack: Option<PathBuf>,
    position: Option<Position>,
    /// Snapshot parts stored so far: (generation, txid, count).
    snapshot_parts: Option<(u64, u64, u32)>,
    pub stats: PushStats,
}

impl<'a> Pusher<'a> {
    pub fn new(storage: &'a dyn Storage, ack: Option<PathBuf>) -> Self {
        Pusher {
            storage,
            ack,
            position: None,
            snapshot_parts: None,
            stats: PushStats::default(),
        }
    }

    pub fn position(&self) -> Option<Position> {
        self.position
    }

    /// Start from a position the replica already holds (from its listing).
    pub fn set_position(&mut self, position: Position) {
        self.position = Some(position);
    }

    /// Store one segment. Its key must be the one its header implies, so
    /// a stream cannot put bytes under a misleading name.
    pub fn push(&mut self, key: &SegmentKey, bytes: &[u8]) -> Result<PutOutcome> {
        // The whole segment is checked, not just its header: puts skip keys
        // already stored, so a damaged object would never be replaced.
        let header = Segment::decode(bytes, &key.to_string())?.header;
        self.put(key, &header, bytes)
    }

    /// Store a segment this process has just encoded (segment::encode),
    /// whose header is known and whose content checksum was computed from
    /// the pages themselves as they were compressed: decoding it again
    /// would only check zstd against itself, and cost a replicator under
    /// load a second copy of the segment's pages (measured: a quarter of
    /// its peak heap).
    pub fn push_encoded(&mut self, seg: &EncodedSegment) -> Result<PutOutcome> {
        self.put(&seg.key, &seg.header, &seg.bytes)
    }

    fn put(&mut self, key: &SegmentKey, header: &SegmentHeader, bytes: &[u8]) -> Result<PutOutcome> {
        let name = key.to_string();
        let implied = SegmentKey {
            generation: header.generation,
            name: header.into(),
        };
        if implied != *key {
            return Err(Error::integrity(
                &name,
                format!("its header describes {implied}"),
            ));
        }
        let outcome = self.storage.put(&name, bytes)?;
        match outcome {
            PutOutcome::Stored => {
                self.stats.stored += 1;
                self.stats.bytes += bytes.len() as u64;
            }
            PutOutcome::AlreadyPresent => self.stats.skipped += 1,
        }
        let reached = match header.kind {
            SegmentKind::Changes => Some(header.max_txid),
            SegmentKind::Snapshot => {
                let count = match self.snapshot_parts {
                    Some((g, t, n)) if g == header.generation && t == header.min_txid => n + 1,
                    _ => 1,
                };
                self.snapshot_parts = Some((header.generation, header.min_txid, count));
                (count == header.parts).then_some(header.min_txid)
            }
        };
        if let Some(txid) = reached {
            let pos = Position {
                generation: header.generation,
                txid,
            };
            self.position = Some(pos);
            if let Some(ack) = &self.ack {
                write_ack(ack, pos)?;
            }
        }
        Ok(outcome)
    }
}

/// Replace the ack file atomically with `GENERATION/TXID`.
pub fn write_ack(path: &Path, pos: Position) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&temp, format!("{pos}\n")).map_err(|e| Error::io("write", &temp, e))?;
    std::fs::rename(&temp, path).map_err(|e| Error::io("rename into place", path, e))
}

/// Read an ack file; `None` if it does not exist yet.
pub fn read_ack(path: &Path) -> Result<Option<Position>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Position::parse(&s).map(Some).ok_or_else(|| {
            Error::corrupt(
                path.display().to_string(),
                0,
                "not a GENERATION/TXID position",
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}
