//! The frame stream between lsw-shadow and lsw-segment (or lsw-apply):
//! a generation, then whole transactions, each a SNAPSHOT or TXN record,
//! its PAGE records and a COMMIT; an END record closes a complete stream.
//! Record layouts: man/lsw-format.5, "FRAME STREAM".

use std::io::{Read, Write};

use crate::error::{Error, Result};
use crate::stream::{Fields, RawRecord, StreamKind, StreamReader, StreamWriter};

pub const KIND_GENERATION: u8 = 0x01;
pub const KIND_SNAPSHOT: u8 = 0x02;
pub const KIND_TXN: u8 = 0x03;
pub const KIND_PAGE: u8 = 0x04;
pub const KIND_COMMIT: u8 = 0x05;
pub const KIND_HEARTBEAT: u8 = 0x06;
pub const KIND_END: u8 = 0x0f;
/// Only in the shadow log, never on a stream between tools.
pub const KIND_WAL_POSITION: u8 = 0x08;
/// Only in the shadow log, never on a stream between tools.
pub const KIND_MARKS: u8 = 0x09;
/// Most checksums one MARKS record holds (it must fit a frame-stream
/// record): capture starts another transaction past this many commits.
pub const MAX_MARKS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Every later record belongs to this generation, until the next one.
    Generation {
        generation: u64,
        page_size: u32,
    },
    /// The PAGE records up to the COMMIT are the whole database at `txid`:
    /// pages 1..=db_pages, each once, in ascending order, read at
    /// `timestamp_ms`.
    Snapshot {
        txid: u64,
        db_pages: u32,
        timestamp_ms: u64,
    },
    /// The PAGE records up to the COMMIT are the pages transaction `txid`
    /// wrote, applied on top of a database whose checksum is `checksum_before`.
    Txn {
        txid: u64,
        checksum_before: u64,
    },
    Page {
        pgno: u32,
        data: Vec<u8>,
    },
    Commit {
        txid: u64,
        db_pages: u32,
        timestamp_ms: u64,
        checksum_after: u64,
    },
    /// Nothing changed up to this time; keeps downstream clocks moving.
    Heartbeat {
        timestamp_ms: u64,
    },
    /// The stream is complete; `records` counts the records before it.
    End {
        records: u64,
    },
    /// Shadow log only: where in the WAL capture stands after `txid`.
    WalPosition(WalPosition),
    /// Shadow log only, inside a transaction before its COMMIT: the db
    /// checksum after each SQLite commit that capture merged into this
    /// transaction, but the last (its COMMIT has that one). A snapshot
    /// read between two of them is found here (snapshot_match.rs).
    Marks(Vec<u64>),
}

/// A place in the WAL: the incarnation (salts) and the byte offset just
/// past the last captured commit frame, with the checksum chain there.
/// `offset` 0 means no WAL header had been seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WalPosition {
    pub txid: u64,
    pub salt1: u32,
    pub salt2: u32,
    pub offset: u64,
    pub chain1: u32,
    pub chain2: u32,
}

/// A valid page size: a power of two from 512 to 65536.
pub fn valid_page_size(size: u32) -> bool {
    (512..=65536).contains(&size) && size.is_power_of_two()
}

/// Writes a frame stream.
pub struct FrameWriter<W: Write> {
    out: StreamWriter<W>,
    records: u64,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(inner: W) -> Result<Self> {
        Ok(FrameWriter {
            out: StreamWriter::new(inner, StreamKind::Frames)?,
            records: 0,
        })
    }

    fn record(&mut self, kind: u8, parts: &[&[u8]]) -> Result<()> {
        self.records += 1;
        self.out.record(kind, parts)
    }

    pub fn write(&mut self, frame: &Frame) -> Result<()> {
        match frame {
            Frame::Generation {
                generation,
                page_size,
            } => self.record(
                KIND_GENERATION,
                &[&generation.to_be_bytes(), &page_size.to_be_bytes()],
            ),
            Frame::Snapshot {
                txid,
                db_pages,
                timestamp_ms,
            } => self.record(
                KIND_SNAPSHOT,
                &[
                    &txid.to_be_bytes(),
                    &db_pages.to_be_bytes(),
                    &timestamp_ms.to_be_bytes(),
                ],
            ),
            Frame::Txn {
                txid,
                checksum_before,
            } => self.record(
                KIND_TXN,
                &[&txid.to_be_bytes(), &checksum_before.to_be_bytes()],
            ),
            Frame::Page { pgno, data } => self.page(*pgno, data),
            Frame::Commit {
                txid,
                db_pages,
                timestamp_ms,
                checksum_after,
            } => self.record(
                KIND_COMMIT,
                &[
                    &txid.to_be_bytes(),
                    &db_pages.to_be_bytes(),
                    &timestamp_ms.to_be_bytes(),
                    &checksum_after.to_be_bytes(),
                ],
            ),
            Frame::Heartbeat { timestamp_ms } => {
                self.record(KIND_HEARTBEAT, &[&timestamp_ms.to_be_bytes()])
            }
            Frame::End { .. } => self.end(),
            Frame::WalPosition(p) => self.record(
                KIND_WAL_POSITION,
                &[
                    &p.txid.to_be_bytes(),
                    &p.salt1.to_be_bytes(),
                    &p.salt2.to_be_bytes(),
                    &p.offset.to_be_bytes(),
                    &p.chain1.to_be_bytes(),
                    &p.chain2.to_be_bytes(),
                ],
            ),
            Frame::Marks(marks) => {
                let bytes: Vec<u8> = marks.iter().flat_map(|m| m.to_be_bytes()).collect();
                self.record(KIND_MARKS, &[&bytes])
            }
        }
    }

    /// Continue appending to a stream whose header (and records) are
    /// already written, as the shadow log does after a restart.
    pub fn continue_stream(inner: W) -> Self {
        FrameWriter {
            out: StreamWriter::continue_stream(inner),
            records: 0,
        }
    }

    pub fn get_ref(&self) -> &W {
        self.out.get_ref()
    }

    pub fn written(&self) -> u64 {
        self.out.written()
    }

    /// A PAGE record without copying the page into a `Frame`.
    pub fn page(&mut self, pgno: u32, data: &[u8]) -> Result<()> {
        self.record(KIND_PAGE, &[&pgno.to_be_bytes(), data])
    }

    /// Write the END record (counting the records before it).
    pub fn end(&mut self) -> Result<()> {
        let n = self.records;
        self.out.record(KIND_END, &[&n.to_be_bytes()])
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush()
    }

    pub fn finish(self) -> Result<W> {
        self.out.finish()
    }
}

/// Where the reader is in the stream's grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first GENERATION.
    Start,
    /// Between transactions.
    Idle,
    /// Inside a snapshot; `next` is the page number expected next.
    Snapshot {
        txid: u64,
        db_pages: u32,
        next: u32,
    },
    /// Inside a transaction.
    Txn {
        txid: u64,
    },
    Ended,
}

/// Reads a frame stream and checks its grammar, so consumers see only
/// well-formed transactions. Anything else is an error naming the byte.
pub struct FrameReader<R> {
    input: StreamReader<R>,
    state: State,
    page_size: u32,
    records: u64,
}

impl<R: Read> FrameReader<R> {
    pub fn new(input: StreamReader<R>) -> Self {
        FrameReader {
            input,
            state: State::Start,
            page_size: 0,
            records: 0,
        }
    }

    pub fn open(inner: R, source: &str) -> Result<Self> {
        Ok(Self::new(StreamReader::open(
            inner,
            source,
            &[StreamKind::Frames],
        )?))
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// The next frame; `None` once the END record has been read.
    pub fn next(&mut self) -> Result<Option<Frame>> {
        if self.state == State::Ended {
            return Ok(None);
        }
        let Some(raw) = self.input.next_raw()? else {
            let at = self.input.offset();
            let msg = if self.records == 0 {
                "stream has no records (the writer stopped before it began)".to_string()
            } else {
                "stream ends without an END record (the writer stopped early)".to_string()
            };
            return Err(self.input.corrupt(at, msg));
        };
        let frame = self.decode(&raw)?;
        self.check_grammar(&frame, raw.offset)?;
        if self.state == State::Ended {
            self.input.expect_end_of_input()?;
        }
        self.records += 1;
        Ok(Some(frame))
    }

    fn decode(&self, raw: &RawRecord) -> Result<Frame> {
        let frame = decode_record(raw, self.page_size).map_err(|reason| self.input.corrupt(raw.offset, reason))?;
        if matches!(frame, Frame::WalPosition(_) | Frame::Marks(_)) {
            return Err(self.input.corrupt(raw.offset, "a shadow-log record in a frame stream"));
        }
        Ok(frame)
    }

    fn check_grammar(&mut self, frame: &Frame, at: u64) -> Result<()> {
        let bad = |msg: String| Err(Error::corrupt(self.input.source(), at, msg));
        self.state = match (self.state, frame) {
            (State::Start | State::Idle, Frame::Generation { page_size, .. }) => {
                if !valid_page_size(*page_size) {
                    return bad(format!("invalid page size {page_size}"));
                }
                self.page_size = *page_size;
                State::Idle
            }
            (State::Idle, Frame::Snapshot { txid, db_pages, .. }) => State::Snapshot {
                txid: *txid,
                db_pages: *db_pages,
                next: 1,
            },
            (State::Idle, Frame::Txn { txid, .. }) => State::Txn { txid: *txid },
            (State::Idle | State::Start, Frame::Heartbeat { .. }) => self.state,
            (
                State::Snapshot {
                    txid,
                    db_pages,
                    next,
                },
                Frame::Page { pgno, .. },
            ) => {
                if *pgno != next || *pgno > db_pages {
                    return bad(format!(
                        "snapshot page {pgno} out of order (expected page {next} of {db_pages})"
                    ));
                }
                State::Snapshot {
                    txid,
                    db_pages,
                    next: next + 1,
                }
            }
            (State::Txn { txid }, Frame::Page { pgno, .. }) => {
                if *pgno == 0 {
                    return bad("page number 0".into());
                }
                State::Txn { txid }
            }
            (
                State::Snapshot {
                    txid,
                    db_pages,
                    next,
                },
                Frame::Commit {
                    txid: c,
                    db_pages: n,
                    ..
                },
            ) => {
                if *c != txid || *n != db_pages || next != db_pages.wrapping_add(1) {
                    return bad(format!(
                        "snapshot at txid {txid} of {db_pages} pages closed by commit of txid {c} with {n} pages after {} pages",
                        next - 1
                    ));
                }
                State::Idle
            }
            (State::Txn { txid }, Frame::Commit { txid: c, .. }) => {
                if *c != txid {
                    return bad(format!("transaction {txid} closed by commit of txid {c}"));
                }
                State::Idle
            }
            (State::Idle | State::Start, Frame::End { records }) => {
                if *records != self.records {
                    return bad(format!(
                        "END record counts {records} records, the stream had {}",
                        self.records
                    ));
                }
                State::Ended
            }
            (state, frame) => {
                let what = match frame {
                    Frame::Generation { .. } => "GENERATION",
                    Frame::Snapshot { .. } => "SNAPSHOT",
                    Frame::Txn { .. } => "TXN",
                    Frame::Page { .. } => "PAGE",
                    Frame::Commit { .. } => "COMMIT",
                    Frame::Heartbeat { .. } => "HEARTBEAT",
                    Frame::End { .. } => "END",
                    Frame::WalPosition(_) => "WAL_POSITION",
                    Frame::Marks(_) => "MARKS",
                };
                let place = match state {
                    State::Start => "before the first GENERATION",
                    State::Idle => "between transactions",
                    State::Snapshot { .. } | State::Txn { .. } => "inside a transaction",
                    State::Ended => "after END",
                };
                return bad(format!("unexpected {what} record {place}"));
            }
        };
        Ok(())
    }
}


/// Decode one record of a frame stream or shadow log; the error is the
/// reason, for the caller to place at the record's offset.
pub fn decode_record(raw: &RawRecord, page_size: u32) -> std::result::Result<Frame, String> {
    let bad_len = || format!("record of kind {:#04x} has a wrong length ({} bytes)", raw.kind, raw.payload.len());
    let mut f = Fields::new(&raw.payload);
    let frame = match raw.kind {
        KIND_GENERATION => Frame::Generation {
            generation: f.u64().ok_or_else(bad_len)?,
            page_size: f.u32().ok_or_else(bad_len)?,
        },
        KIND_SNAPSHOT => Frame::Snapshot {
            txid: f.u64().ok_or_else(bad_len)?,
            db_pages: f.u32().ok_or_else(bad_len)?,
            timestamp_ms: f.u64().ok_or_else(bad_len)?,
        },
        KIND_TXN => Frame::Txn {
            txid: f.u64().ok_or_else(bad_len)?,
            checksum_before: f.u64().ok_or_else(bad_len)?,
        },
        KIND_PAGE => {
            let pgno = f.u32().ok_or_else(bad_len)?;
            let data = f.rest().to_vec();
            if data.len() != page_size as usize {
                return Err(format!("page {pgno} has {} bytes, the page size is {page_size}", data.len()));
            }
            Frame::Page { pgno, data }
        }
        KIND_COMMIT => Frame::Commit {
            txid: f.u64().ok_or_else(bad_len)?,
            db_pages: f.u32().ok_or_else(bad_len)?,
            timestamp_ms: f.u64().ok_or_else(bad_len)?,
            checksum_after: f.u64().ok_or_else(bad_len)?,
        },
        KIND_HEARTBEAT => Frame::Heartbeat {
            timestamp_ms: f.u64().ok_or_else(bad_len)?,
        },
        KIND_END => Frame::End {
            records: f.u64().ok_or_else(bad_len)?,
        },
        KIND_WAL_POSITION => Frame::WalPosition(WalPosition {
            txid: f.u64().ok_or_else(bad_len)?,
            salt1: f.u32().ok_or_else(bad_len)?,
            salt2: f.u32().ok_or_else(bad_len)?,
            offset: f.u64().ok_or_else(bad_len)?,
            chain1: f.u32().ok_or_else(bad_len)?,
            chain2: f.u32().ok_or_else(bad_len)?,
        }),
        KIND_MARKS => {
            let rest = f.rest();
            if rest.is_empty() || !rest.len().is_multiple_of(8) {
                return Err(bad_len());
            }
            Frame::Marks(rest.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes"))).collect())
        }
        other => return Err(format!("unknown record kind {other:#04x} in a frame stream")),
    };
    if !f.is_done() {
        return Err(bad_len());
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_stream() -> Vec<u8> {
        let mut w = FrameWriter::new(Vec::new()).unwrap();
        w.write(&Frame::Generation {
            generation: 0x0123456789abcdef,
            page_size: 512,
        })
        .unwrap();
        w.write(&Frame::Snapshot {
            txid: 1,
            db_pages: 2,
            timestamp_ms: 5,
        })
        .unwrap();
        w.page(1, &[1u8; 512]).unwrap();
        w.page(2, &[2u8; 512]).unwrap();
        w.write(&Frame::Commit {
            txid: 1,
            db_pages: 2,
            timestamp_ms: 5,
            checksum_after: 9,
        })
        .unwrap();
        w.write(&Frame::Txn {
            txid: 2,
            checksum_before: 9,
        })
        .unwrap();
        w.page(2, &[3u8; 512]).unwrap();
        w.write(&Frame::Commit {
            txid: 2,
            db_pages: 2,
            timestamp_ms: 6,
            checksum_after: 10,
        })
        .unwrap();
        w.end().unwrap();
        w.finish().unwrap()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Frame>> {
        let mut r = FrameReader::open(bytes, "test")?;
        let mut out = Vec::new();
        while let Some(f) = r.next()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn round_trip() {
        let frames = read_all(&sample_stream()).unwrap();
        assert_eq!(frames.len(), 9);
        assert_eq!(frames[8], Frame::End { records: 8 });
    }

    #[test]
    fn every_truncated_prefix_fails() {
        let s = sample_stream();
        for n in 0..s.len() {
            let err = read_all(&s[..n]).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "prefix {n}: {err}");
        }
    }

    #[test]
    fn every_flipped_bit_fails() {
        let s = sample_stream();
        for i in 0..s.len() {
            for bit in 0..8 {
                let mut t = s.clone();
                t[i] ^= 1 << bit;
                assert!(
                    read_all(&t).is_err(),
                    "flipping bit {bit} of byte {i} went unnoticed"
                );
            }
        }
    }
}
