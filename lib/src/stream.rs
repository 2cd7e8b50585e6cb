//! The framing shared by the frame stream and the segment stream
//! (man/lsw-format.5, "STREAM FRAMING").
//!
//! A stream is an 8-byte header (magic, version, flags) followed by
//! records `kind u8 · length u32 · payload · crc32 u32`, all big-endian,
//! the CRC-32 covering kind, length and payload. Decoding is
//! check-then-parse: the end of input between records is a clean end,
//! inside a record it is a truncation reported with its byte offset.

use std::io::{self, Read, Write};

use crate::error::{Error, Result};

/// Size of the stream header.
pub const STREAM_HEADER_LEN: usize = 8;
/// Size of a record's kind and length fields.
pub const RECORD_HEAD_LEN: usize = 5;
/// Size of a record's trailing CRC-32.
pub const RECORD_CRC_LEN: usize = 4;
/// The only stream version this build writes and reads.
pub const STREAM_VERSION: u16 = 1;

/// Which of the two streams a header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Frames,
    Segments,
}

impl StreamKind {
    pub const fn magic(self) -> [u8; 4] {
        match self {
            StreamKind::Frames => *b"LSWF",
            StreamKind::Segments => *b"LSWS",
        }
    }

    fn from_magic(magic: &[u8]) -> Option<Self> {
        match magic {
            b"LSWF" => Some(StreamKind::Frames),
            b"LSWS" => Some(StreamKind::Segments),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Frames => "frame stream",
            StreamKind::Segments => "segment stream",
        }
    }

    /// The largest payload a record of this stream may declare: a page of
    /// 64 KiB plus its fields for frames; a segment file for segments.
    pub fn max_payload(self) -> u32 {
        match self {
            StreamKind::Frames => 65536 + 64,
            StreamKind::Segments => 1 << 30,
        }
    }
}

/// One undecoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub kind: u8,
    /// Byte offset of the record's first byte in the stream.
    pub offset: u64,
    pub payload: Vec<u8>,
}

/// Reads the stream header and then records, one at a time.
pub struct StreamReader<R> {
    inner: R,
    kind: StreamKind,
    offset: u64,
    /// Name of the input in error messages ("stdin", a file name).
    source: String,
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl<R: Read> StreamReader<R> {
    /// Read and check the header. `expected` lists the stream kinds the
    /// caller accepts; another valid kind is reported by name so the user
    /// sees which tool belongs where.
    pub fn open(mut inner: R, source: &str, expected: &[StreamKind]) -> Result<Self> {
        let mut head = [0u8; STREAM_HEADER_LEN];
        let got =
            read_full(&mut inner, &mut head).map_err(|e| Error::stream("read stream header", e))?;
        let wanted = expected
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(" or ");
        if got == 0 {
            return Err(Error::corrupt(
                source,
                0,
                format!("empty input where a {wanted} was expected"),
            ));
        }
        let kind = StreamKind::from_magic(&head[..4.min(got)]).ok_or_else(|| {
            if head[..got].starts_with(&b"SQLite format 3"[..STREAM_HEADER_LEN]) {
                Error::corrupt(
                    source,
                    0,
                    format!("this is a SQLite database, not a {wanted}"),
                )
            } else {
                Error::corrupt(source, 0, format!("bad magic: not a {wanted}"))
            }
        })?;
        if got < STREAM_HEADER_LEN {
            return Err(Error::corrupt(
                source,
                got as u64,
                "truncated stream header",
            ));
        }
        let version = u16::from_be_bytes([head[4], head[5]]);
        if version > STREAM_VERSION {
            return Err(Error::NewerFormat {
                what: source.to_string(),
                found: u32::from(version),
                supported: u32::from(STREAM_VERSION),
            });
        }
        if version == 0 {
            return Err(Error::corrupt(source, 4, "stream version 0 is not valid"));
        }
        if head[6] != 0 || head[7] != 0 {
            return Err(Error::corrupt(
                source,
                6,
                "reserved header flags are not zero",
            ));
        }
        if !expected.contains(&kind) {
            return Err(Error::Usage(format!(
                "{source}: this is a {}, but a {wanted} is needed here{}",
                kind.name(),
                match kind {
                    StreamKind::Frames => " (pipe it through lsw-segment first)",
                    StreamKind::Segments => "",
                }
            )));
        }
        Ok(StreamReader {
            inner,
            kind,
            offset: STREAM_HEADER_LEN as u64,
            source: source.to_string(),
        })
    }

    /// Continue reading a stream whose header was checked before: `inner`
    /// is positioned at byte `offset`, a record boundary. For following a
    /// file that is still being appended to (the shadow log).
    pub fn resume(inner: R, source: &str, kind: StreamKind, offset: u64) -> Self {
        StreamReader {
            inner,
            kind,
            offset,
            source: source.to_string(),
        }
    }

    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// After the END record: the input must end too. Bytes after it are
    /// a second stream or garbage, and silently dropping them would lose
    /// whatever they carry.
    pub fn expect_end_of_input(&mut self) -> Result<()> {
        let mut b = [0u8; 1];
        let got = read_full(&mut self.inner, &mut b).map_err(|e| Error::stream("read stream", e))?;
        if got > 0 {
            return Err(self.corrupt(self.offset, "data after the END record"));
        }
        Ok(())
    }

    pub fn corrupt(&self, offset: u64, reason: impl Into<String>) -> Error {
        Error::corrupt(self.source.clone(), offset, reason)
    }

    /// The next record, or `None` at a clean end of input (between records).
    pub fn next_raw(&mut self) -> Result<Option<RawRecord>> {
        let start = self.offset;
        let mut head = [0u8; RECORD_HEAD_LEN];
        let got =
            read_full(&mut self.inner, &mut head).map_err(|e| Error::stream("read stream", e))?;
        if got == 0 {
            return Ok(None);
        }
        if got < RECORD_HEAD_LEN {
            return Err(self.corrupt(
                start + got as u64,
                "truncated stream: record header cut short",
            ));
        }
        let kind = head[0];
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if len > self.kind.max_payload() {
            return Err(self.corrupt(
                start + 1,
                format!(
                    "record declares {len} bytes, more than a {} allows ({})",
                    self.kind.name(),
                    self.kind.max_payload()
                ),
            ));
        }
        let mut payload = vec![0u8; len as usize];
        let got = read_full(&mut self.inner, &mut payload)
            .map_err(|e| Error::stream("read stream", e))?;
        if got < payload.len() {
            return Err(self.corrupt(
                start + (RECORD_HEAD_LEN + got) as u64,
                format!(
                    "truncated stream: record at byte {start} needs {len} payload bytes, got {got}"
                ),
            ));
        }
        let mut crc = [0u8; RECORD_CRC_LEN];
        let got =
            read_full(&mut self.inner, &mut crc).map_err(|e| Error::stream("read stream", e))?;
        let crc_at = start + (RECORD_HEAD_LEN + payload.len()) as u64;
        if got < RECORD_CRC_LEN {
            return Err(self.corrupt(
                crc_at + got as u64,
                "truncated stream: record checksum cut short",
            ));
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&head);
        h.update(&payload);
        if h.finalize() != u32::from_be_bytes(crc) {
            return Err(self.corrupt(start, "record checksum mismatch"));
        }
        self.offset = crc_at + RECORD_CRC_LEN as u64;
        Ok(Some(RawRecord {
            kind,
            offset: start,
            payload,
        }))
    }
}

/// Writes a stream header and records. Buffer the inner writer; call
/// `finish` to flush and see the error a closed pipe gives.
pub struct StreamWriter<W: Write> {
    inner: W,
    written: u64,
}

impl<W: Write> StreamWriter<W> {
    pub fn new(mut inner: W, kind: StreamKind) -> Result<Self> {
        let mut head = [0u8; STREAM_HEADER_LEN];
        head[..4].copy_from_slice(&kind.magic());
        head[4..6].copy_from_slice(&STREAM_VERSION.to_be_bytes());
        inner
            .write_all(&head)
            .map_err(|e| Error::stream("write stream", e))?;
        Ok(StreamWriter {
            inner,
            written: STREAM_HEADER_LEN as u64,
        })
    }

    /// A writer for a stream whose header was written earlier.
    pub fn continue_stream(inner: W) -> Self {
        StreamWriter { inner, written: 0 }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Write one record whose payload is the concatenation of `parts`.
    pub fn record(&mut self, kind: u8, parts: &[&[u8]]) -> Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len =
            u32::try_from(len).map_err(|_| Error::Usage("record larger than 4 GiB".into()))?;
        let mut head = [0u8; RECORD_HEAD_LEN];
        head[0] = kind;
        head[1..].copy_from_slice(&len.to_be_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&head);
        let w = |e| Error::stream("write stream", e);
        self.inner.write_all(&head).map_err(w)?;
        for p in parts {
            h.update(p);
            self.inner.write_all(p).map_err(w)?;
        }
        self.inner
            .write_all(&h.finalize().to_be_bytes())
            .map_err(w)?;
        self.written += (RECORD_HEAD_LEN + RECORD_CRC_LEN) as u64 + u64::from(len);
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.inner
            .flush()
            .map_err(|e| Error::stream("write stream", e))
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn finish(mut self) -> Result<W> {
        self.flush()?;
        Ok(self.inner)
    }
}

/// Big-endian field reader over a record payload; running out of bytes
/// is a corruption at the payload's offset.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Fields { buf, pos: 0 }
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    pub fn is_done(&self) -> bool {
        self.pos == self.buf.len()
    }
}
