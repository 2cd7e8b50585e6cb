//! The segment stream between lsw-segment, lsw-push, lsw-pull and
//! lsw-apply: one SEGMENT record per segment file, carrying its key in
//! the replica and its bytes, and an END record (man/lsw-format.5,
//! "SEGMENT STREAM").

use std::io::{Read, Write};

use crate::error::{Error, Result};
use crate::layout::SegmentKey;
use crate::stream::{Fields, StreamKind, StreamReader, StreamWriter};

pub const KIND_SEGMENT: u8 = 0x11;
pub const KIND_END: u8 = 0x1f;

/// One segment as it travels: where it goes in the replica and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRecord {
    pub key: SegmentKey,
    pub bytes: Vec<u8>,
}

pub struct SegmentWriter<W: Write> {
    out: StreamWriter<W>,
    records: u64,
}

impl<W: Write> SegmentWriter<W> {
    pub fn new(inner: W) -> Result<Self> {
        Ok(SegmentWriter {
            out: StreamWriter::new(inner, StreamKind::Segments)?,
            records: 0,
        })
    }

    pub fn write(&mut self, key: &SegmentKey, bytes: &[u8]) -> Result<()> {
        let name = key.to_string();
        let len = u16::try_from(name.len())
            .map_err(|_| Error::Usage(format!("segment key too long: {name}")))?;
        self.out
            .record(KIND_SEGMENT, &[&len.to_be_bytes(), name.as_bytes(), bytes])?;
        self.records += 1;
        Ok(())
    }

    pub fn end(&mut self) -> Result<()> {
        self.out.record(KIND_END, &[&self.records.to_be_bytes()])
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush()
    }

    pub fn finish(self) -> Result<W> {
        self.out.finish()
    }
}

pub struct SegmentReader<R> {
    input: StreamReader<R>,
    records: u64,
    ended: bool,
}

impl<R: Read> SegmentReader<R> {
    pub fn new(input: StreamReader<R>) -> Self {
        SegmentReader {
            input,
            records: 0,
            ended: false,
        }
    }

    pub fn open(inner: R, source: &str) -> Result<Self> {
        Ok(Self::new(StreamReader::open(
            inner,
            source,
            &[StreamKind::Segments],
        )?))
    }

    pub fn source(&self) -> &str {
        self.input.source()
    }

    /// The next segment; `None` after the END record.
    pub fn next(&mut self) -> Result<Option<SegmentRecord>> {
        if self.ended {
            return Ok(None);
        }
        let Some(raw) = self.input.next_raw()? else {
            return Err(self.input.corrupt(
                self.input.offset(),
                "stream ends without an END record (the writer stopped early)",
            ));
        };
        let bad = |reason: String| self.input.corrupt(raw.offset, reason);
        let mut f = Fields::new(&raw.payload);
        match raw.kind {
            KIND_SEGMENT => {
                let n = f
                    .u16()
                    .ok_or_else(|| bad("segment record too short".into()))?;
                let name = f
                    .take(n as usize)
                    .ok_or_else(|| bad("segment record too short".into()))?;
                let name = std::str::from_utf8(name)
                    .map_err(|_| bad("segment key is not UTF-8".into()))?;
                let key = SegmentKey::parse(name)
                    .ok_or_else(|| bad(format!("not a segment key: {name:?}")))?;
                self.records += 1;
                Ok(Some(SegmentRecord {
                    key,
                    bytes: f.rest().to_vec(),
                }))
            }
            KIND_END => {
                let n = f
                    .u64()
                    .filter(|_| f.is_done())
                    .ok_or_else(|| bad("END record has a wrong length".into()))?;
                if n != self.records {
                    return Err(bad(format!(
                        "END record counts {n} segments, the stream had {}",
                        self.records
                    )));
                }
                self.input.expect_end_of_input()?;
                self.ended = true;
                Ok(None)
            }
            other => Err(bad(format!(
                "unknown record kind {other:#04x} in a segment stream"
            ))),
        }
    }
}
