//! The segment file: one object in the replica (man/lsw-format.5,
//! "SEGMENT FILE"). A fixed 100-byte header with its own CRC, a zstd body
//! of page records `pgno u32 · page`, and a CRC-32 trailer over the header
//! and the uncompressed body. Every name in the replica is derived from
//! the header, so a listing alone is enough to plan a restore.

use std::io::Write;

use crate::checksum::page_hash;
use crate::error::{Error, Result};
use crate::frames::valid_page_size;
use crate::time;

pub const SEGMENT_MAGIC: [u8; 4] = *b"LSWG";
pub const SEGMENT_VERSION: u16 = 1;
pub const COMPRESSION_ZSTD: u8 = 1;
/// Header size, including the header CRC at `OFF_HEADER_CRC`.
pub const HEADER_LEN: usize = 100;
pub const TRAILER_LEN: usize = 8;
/// Suffix of every segment name.
pub const NAME_SUFFIX: &str = ".lsw";

// Field offsets in the header (man/lsw-format.5).
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 4;
const OFF_KIND: usize = 6;
const OFF_COMPRESSION: usize = 7;
const OFF_GENERATION: usize = 8;
const OFF_MIN_TXID: usize = 16;
const OFF_MAX_TXID: usize = 24;
const OFF_PAGE_SIZE: usize = 32;
const OFF_DB_PAGES: usize = 36;
const OFF_FIRST_TS: usize = 40;
const OFF_LAST_TS: usize = 48;
const OFF_CHECKSUM_BEFORE: usize = 56;
const OFF_CHECKSUM_AFTER: usize = 64;
const OFF_PART: usize = 72;
const OFF_PARTS: usize = 76;
const OFF_PAGE_COUNT: usize = 80;
const OFF_FIRST_PGNO: usize = 84;
const OFF_BODY_LEN: usize = 88;
const OFF_HEADER_CRC: usize = 96;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SegmentKind {
    /// Part of the full database at one txid.
    Snapshot = 1,
    /// The pages changed by a run of transactions.
    Changes = 2,
}

/// Everything a segment says about itself; `name()` derives its object name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    pub kind: SegmentKind,
    pub generation: u64,
    pub min_txid: u64,
    pub max_txid: u64,
    pub page_size: u32,
    /// Database size in pages after `max_txid`.
    pub db_pages: u32,
    pub first_ts_ms: u64,
    pub last_ts_ms: u64,
    /// Changes: db checksum before `min_txid`. Snapshot: 0.
    pub checksum_before: u64,
    /// Changes: db checksum after `max_txid`. Snapshot part: XOR of the
    /// hashes of this part's pages, so the parts XOR to the db checksum.
    pub checksum_after: u64,
    /// Snapshot part number, from 0; 0 for changes.
    pub part: u32,
    /// Number of parts of the snapshot; 1 for changes.
    pub parts: u32,
    pub page_count: u32,
    /// Snapshot: page number of the part's first page; 0 for changes.
    pub first_pgno: u32,
}

impl SegmentHeader {
    pub fn body_len(&self) -> u64 {
        u64::from(self.page_count) * (4 + u64::from(self.page_size))
    }

    /// The object name (without the generation directory).
    pub fn name(&self) -> String {
        SegmentName::from(self).to_string()
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&SEGMENT_MAGIC);
        h[OFF_VERSION..OFF_VERSION + 2].copy_from_slice(&SEGMENT_VERSION.to_be_bytes());
        h[OFF_KIND] = self.kind as u8;
        h[OFF_COMPRESSION] = COMPRESSION_ZSTD;
        let put64 = |h: &mut [u8; HEADER_LEN], off: usize, v: u64| {
            h[off..off + 8].copy_from_slice(&v.to_be_bytes())
        };
        let put32 = |h: &mut [u8; HEADER_LEN], off: usize, v: u32| {
            h[off..off + 4].copy_from_slice(&v.to_be_bytes())
        };
        put64(&mut h, OFF_GENERATION, self.generation);
        put64(&mut h, OFF_MIN_TXID, self.min_txid);
        put64(&mut h, OFF_MAX_TXID, self.max_txid);
        put32(&mut h, OFF_PAGE_SIZE, self.page_size);
        put32(&mut h, OFF_DB_PAGES, self.db_pages);
        put64(&mut h, OFF_FIRST_TS, self.first_ts_ms);
        put64(&mut h, OFF_LAST_TS, self.last_ts_ms);
        put64(&mut h, OFF_CHECKSUM_BEFORE, self.checksum_before);
        put64(&mut h, OFF_CHECKSUM_AFTER, self.checksum_after);
        put32(&mut h, OFF_PART, self.part);
        put32(&mut h, OFF_PARTS, self.parts);
        put32(&mut h, OFF_PAGE_COUNT, self.page_count);
        put32(&mut h, OFF_FIRST_PGNO, self.first_pgno);
        put64(&mut h, OFF_BODY_LEN, self.body_len());
        let crc = crc32fast::hash(&h[..OFF_HEADER_CRC]);
        put32(&mut h, OFF_HEADER_CRC, crc);
        h
    }

    /// Decode and check a header; `what` names the object in errors.
    pub fn decode(bytes: &[u8], what: &str) -> Result<Self> {
        let bad = |off: usize, reason: String| Error::corrupt(what, off as u64, reason);
        if bytes.len() < 4 || bytes[..4] != SEGMENT_MAGIC {
            return Err(bad(0, "bad magic: not a segment file".into()));
        }
        if bytes.len() < HEADER_LEN + TRAILER_LEN {
            return Err(bad(
                bytes.len(),
                format!(
                    "truncated segment: {} bytes, shorter than a header",
                    bytes.len()
                ),
            ));
        }
        let get64 = |off: usize| u64::from_be_bytes(bytes[off..off + 8].try_into().unwrap());
        let get32 = |off: usize| u32::from_be_bytes(bytes[off..off + 4].try_into().unwrap());
        let version = u16::from_be_bytes([bytes[OFF_VERSION], bytes[OFF_VERSION + 1]]);
        let crc = crc32fast::hash(&bytes[..OFF_HEADER_CRC]);
        if crc != get32(OFF_HEADER_CRC) {
            // Checked after the magic but before the version, so a flipped
            // version bit reads as damage, not as a newer format.
            return Err(bad(0, "header checksum mismatch".into()));
        }
        if version > SEGMENT_VERSION {
            return Err(Error::NewerFormat {
                what: what.to_string(),
                found: u32::from(version),
                supported: u32::from(SEGMENT_VERSION),
            });
        }
        if version == 0 {
            return Err(bad(OFF_VERSION, "segment version 0 is not valid".into()));
        }
        let kind = match bytes[OFF_KIND] {
            1 => SegmentKind::Snapshot,
            2 => SegmentKind::Changes,
            k => return Err(bad(OFF_KIND, format!("unknown segment kind {k}"))),
        };
        if bytes[OFF_COMPRESSION] != COMPRESSION_ZSTD {
            return Err(bad(
                OFF_COMPRESSION,
                format!("unknown compression {}", bytes[OFF_COMPRESSION]),
            ));
        }
        let h = SegmentHeader {
            kind,
            generation: get64(OFF_GENERATION),
            min_txid: get64(OFF_MIN_TXID),
            max_txid: get64(OFF_MAX_TXID),
            page_size: get32(OFF_PAGE_SIZE),
            db_pages: get32(OFF_DB_PAGES),
            first_ts_ms: get64(OFF_FIRST_TS),
            last_ts_ms: get64(OFF_LAST_TS),
            checksum_before: get64(OFF_CHECKSUM_BEFORE),
            checksum_after: get64(OFF_CHECKSUM_AFTER),
            part: get32(OFF_PART),
            parts: get32(OFF_PARTS),
            page_count: get32(OFF_PAGE_COUNT),
            first_pgno: get32(OFF_FIRST_PGNO),
        };
        if !valid_page_size(h.page_size) {
            return Err(bad(
                OFF_PAGE_SIZE,
                format!("invalid page size {}", h.page_size),
            ));
        }
        if h.min_txid == 0 || h.min_txid > h.max_txid {
            return Err(bad(
                OFF_MIN_TXID,
                format!("invalid txid range {}-{}", h.min_txid, h.max_txid),
            ));
        }
        if h.parts == 0 || h.part >= h.parts || (kind == SegmentKind::Changes && h.parts != 1) {
            return Err(bad(
                OFF_PART,
                format!("invalid part {} of {}", h.part, h.parts),
            ));
        }
        if kind == SegmentKind::Snapshot && h.min_txid != h.max_txid {
            return Err(bad(
                OFF_MIN_TXID,
                "snapshot spans more than one txid".into(),
            ));
        }
        if get64(OFF_BODY_LEN) != h.body_len() {
            return Err(bad(
                OFF_BODY_LEN,
                "body length does not match page count and page size".into(),
            ));
        }
        Ok(h)
    }
}

/// A segment's object name, parsed: what planning needs without a GET.
///
/// `{min:016x}-{max:016x}.{last commit, compact UTC}.{kind}.lsw` where kind
/// is `changes` or `snapshot-{part:04}-of-{parts:04}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    pub min_txid: u64,
    pub max_txid: u64,
    pub kind: SegmentKind,
    pub last_ts_ms: u64,
    pub part: u32,
    pub parts: u32,
}

impl From<&SegmentHeader> for SegmentName {
    fn from(h: &SegmentHeader) -> Self {
        SegmentName {
            min_txid: h.min_txid,
            max_txid: h.max_txid,
            kind: h.kind,
            last_ts_ms: h.last_ts_ms,
            part: h.part,
            parts: h.parts,
        }
    }
}

impl std::fmt::Display for SegmentName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:016x}-{:016x}.{}.",
            self.min_txid,
            self.max_txid,
            time::compact(self.last_ts_ms)
        )?;
        match self.kind {
            SegmentKind::Changes => write!(f, "changes{NAME_SUFFIX}"),
            SegmentKind::Snapshot => write!(
                f,
                "snapshot-{:04}-of-{:04}{NAME_SUFFIX}",
                self.part, self.parts
            ),
        }
    }
}

impl SegmentName {
    /// Parse a name; `None` if it is not a segment name.
    pub fn parse(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(NAME_SUFFIX)?;
        let mut it = stem.splitn(4, '.');
        let range = it.next()?;
        let ts = format!("{}.{}", it.next()?, it.next()?);
        let kind = it.next()?;
        let (min, max) = range.split_once('-')?;
        if min.len() != 16 || max.len() != 16 {
            return None;
        }
        let min_txid = u64::from_str_radix(min, 16).ok()?;
        let max_txid = u64::from_str_radix(max, 16).ok()?;
        let last_ts_ms = time::parse_compact(&ts)?;
        let (kind, part, parts) = if kind == "changes" {
            (SegmentKind::Changes, 0, 1)
        } else {
            let rest = kind.strip_prefix("snapshot-")?;
            let (p, n) = rest.split_once("-of-")?;
            (SegmentKind::Snapshot, p.parse().ok()?, n.parse().ok()?)
        };
        let parsed = SegmentName {
            min_txid,
            max_txid,
            kind,
            last_ts_ms,
            part,
            parts,
        };
        // Only the canonical spelling is a segment name.
        (parsed.to_string() == name).then_some(parsed)
    }
}

/// Build a segment file from its header fields and pages (ascending page
/// numbers). Fills in `page_count`.
///
/// The body is compressed as it is produced, never held whole: beside
/// the pages (which the caller holds) and the output, encoding needs only
/// zstd's own state. Measured under a heavy write load, a body copy was a
/// fifth of the replicator's peak memory.
pub fn encode<'a>(
    mut header: SegmentHeader,
    pages: impl IntoIterator<Item = (u32, &'a [u8])>,
    level: i32,
) -> Result<(SegmentHeader, Vec<u8>)> {
    let pages: Vec<(u32, &[u8])> = pages.into_iter().collect();
    header.page_count = pages.len() as u32;
    let head = header.encode();
    let body_len = pages.len() as u64 * (4 + u64::from(header.page_size));
    let mut logical = crc32fast::Hasher::new();
    logical.update(&head);
    let compress = |out: Vec<u8>, logical: &mut crc32fast::Hasher| -> std::io::Result<Vec<u8>> {
        let mut z = zstd::stream::write::Encoder::new(out, level)?;
        z.include_contentsize(true)?;
        z.set_pledged_src_size(Some(body_len))?;
        for (pgno, page) in &pages {
            debug_assert_eq!(page.len(), header.page_size as usize);
            let pgno = pgno.to_be_bytes();
            logical.update(&pgno);
            logical.update(page);
            z.write_all(&pgno)?;
            z.write_all(page)?;
        }
        z.finish()
    };
    let mut out = Vec::new();
    out.extend_from_slice(&head);
    let mut out = compress(out, &mut logical).map_err(|e| Error::stream("compress segment", e))?;
    let stored = crc32fast::hash(&out);
    out.extend_from_slice(&stored.to_be_bytes());
    out.extend_from_slice(&logical.finalize().to_be_bytes());
    Ok((header, out))
}

/// A decoded, fully checked segment: header and uncompressed body.
#[derive(Debug)]
pub struct Segment {
    pub header: SegmentHeader,
    body: Vec<u8>,
    /// Snapshot parts: the hash of each page, computed while checking the
    /// part checksum (the applier reuses them). Empty for changes.
    pub page_hashes: Vec<u64>,
}

impl Segment {
    /// Decode and verify a segment file: header CRC, body length, trailer
    /// CRC, page order, and (for snapshot parts) the part checksum.
    /// `what` names the object in errors. A restore decodes many: it
    /// keeps a `Decoder` instead.
    pub fn decode(bytes: &[u8], what: &str) -> Result<Self> {
        Decoder::new()?.decode(bytes, what)
    }

    fn check_pages(&self, what: &str) -> Result<Vec<u64>> {
        let mut check = PageCheck::new(&self.header);
        for (pgno, page) in self.pages() {
            check.page(pgno, page, what)?;
        }
        check.finish(what)
    }

    /// The pages, in ascending order.
    pub fn pages(&self) -> impl Iterator<Item = (u32, &[u8])> {
        page_records(&self.body, self.header.page_size)
    }
}

/// The page records `pgno u32 · page` of (a whole-record stretch of) a body.
pub fn page_records(body: &[u8], page_size: u32) -> impl Iterator<Item = (u32, &[u8])> {
    body.chunks_exact(4 + page_size as usize)
        .map(|c| (u32::from_be_bytes(c[..4].try_into().unwrap()), &c[4..]))
}

/// The checks on a body's pages, one page at a time: ascending numbers
/// within the database, and for a snapshot part, consecutive from its
/// first page and hashing to the part checksum.
struct PageCheck<'h> {
    header: &'h SegmentHeader,
    prev: u32,
    seen: u32,
    part_sum: u64,
    hashes: Vec<u64>,
}

impl<'h> PageCheck<'h> {
    fn new(header: &'h SegmentHeader) -> Self {
        let hashes = match header.kind {
            SegmentKind::Snapshot => Vec::with_capacity(header.page_count as usize),
            SegmentKind::Changes => Vec::new(),
        };
        PageCheck { header, prev: 0, seen: 0, part_sum: 0, hashes }
    }

    fn page(&mut self, pgno: u32, page: &[u8], what: &str) -> Result<()> {
        let h = self.header;
        let bad = |reason: String| Error::integrity(what.to_string(), reason);
        if pgno <= self.prev || pgno == 0 {
            return Err(bad(format!("page {pgno} out of order after page {}", self.prev)));
        }
        if pgno > h.db_pages {
            return Err(bad(format!(
                "page {pgno} is past the end of the database ({} pages)",
                h.db_pages
            )));
        }
        if h.kind == SegmentKind::Snapshot {
            if pgno != h.first_pgno + self.seen {
                return Err(bad(format!(
                    "snapshot page {pgno} where page {} belongs",
                    h.first_pgno + self.seen
                )));
            }
            let hash = page_hash(pgno, page);
            self.part_sum ^= hash;
            self.hashes.push(hash);
        }
        self.prev = pgno;
        self.seen += 1;
        Ok(())
    }

    /// The snapshot part's page hashes (empty for changes).
    fn finish(self, what: &str) -> Result<Vec<u64>> {
        if self.header.kind == SegmentKind::Snapshot && self.part_sum != self.header.checksum_after {
            return Err(Error::integrity(
                what,
                "snapshot part checksum does not match its pages",
            ));
        }
        Ok(self.hashes)
    }
}

/// What `Decoder::decode_in_chunks` checked: the header and, for a
/// snapshot part, the hash of each page.
#[derive(Debug)]
pub struct Checked {
    pub header: SegmentHeader,
    pub page_hashes: Vec<u64>,
}

/// Body bytes decompressed at a time by `decode_in_chunks`: small enough
/// that checking and writing a chunk finds it still in the CPU's cache.
const CHUNK_BYTES: usize = 256 << 10;

/// Decodes segments one after another, reusing its zstd context and the
/// body buffer of the segment last handed back with `recycle`: a restore
/// of thousands of segments then allocates (and page-faults) neither per
/// segment.
pub struct Decoder {
    zstd: zstd::bulk::Decompressor<'static>,
    spare: Vec<u8>,
    /// For `decode_in_chunks`: its own streaming context and chunk buffer.
    stream: Option<zstd::stream::raw::Decoder<'static>>,
    chunk: Vec<u8>,
}

/// A segment's header, where its compressed body ends, and the CRC its
/// content must match; read once the stored CRC over the object holds.
struct Framing {
    header: SegmentHeader,
    /// End of the compressed body: the trailer starts here.
    body_end: usize,
    /// The trailer's CRC of the header and the uncompressed body.
    content_crc: u32,
}

impl Decoder {
    pub fn new() -> Result<Self> {
        Ok(Decoder {
            zstd: zstd::bulk::Decompressor::new()
                .map_err(|e| Error::stream("start zstd decompressor", e))?,
            spare: Vec::new(),
            stream: None,
            chunk: Vec::new(),
        })
    }

    /// The header, and the stored CRC over the object as kept.
    fn framing(bytes: &[u8], what: &str) -> Result<Framing> {
        let header = SegmentHeader::decode(bytes, what)?;
        let body_end = bytes.len() - TRAILER_LEN;
        let trailer = |i: usize| {
            u32::from_be_bytes(
                bytes[body_end + 4 * i..body_end + 4 * i + 4]
                    .try_into()
                    .unwrap(),
            )
        };
        if crc32fast::hash(&bytes[..body_end]) != trailer(0) {
            return Err(Error::corrupt(
                what,
                body_end as u64,
                "stored checksum mismatch (the object is damaged or truncated)",
            ));
        }
        if header.body_len() > 1 << 31 {
            return Err(Error::corrupt(
                what,
                OFF_BODY_LEN as u64,
                "body length over 2 GiB",
            ));
        }
        Ok(Framing { header, body_end, content_crc: trailer(1) })
    }

    /// Decode and verify a segment file (see `Segment::decode`).
    pub fn decode(&mut self, bytes: &[u8], what: &str) -> Result<Segment> {
        let Framing { header, body_end, content_crc } = Self::framing(bytes, what)?;
        let body_len = header.body_len();
        let mut body = std::mem::take(&mut self.spare);
        body.clear();
        // Room for exactly the declared length: a body that decompresses
        // to more does not fit, and fails here.
        body.reserve_exact(body_len as usize);
        let n = self
            .zstd
            .decompress_to_buffer(&bytes[HEADER_LEN..body_end], &mut body)
            .map_err(|e| {
                Error::corrupt(
                    what,
                    HEADER_LEN as u64,
                    format!("body does not decompress ({e})"),
                )
            })?;
        if n as u64 != body_len {
            return Err(Error::corrupt(
                what,
                HEADER_LEN as u64,
                format!("body is {n} bytes, the header says {body_len}"),
            ));
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes[..HEADER_LEN]);
        crc.update(&body);
        if crc.finalize() != content_crc {
            return Err(Error::corrupt(
                what,
                body_end as u64 + 4,
                "content checksum mismatch",
            ));
        }
        let mut seg = Segment {
            header,
            body,
            page_hashes: Vec::new(),
        };
        seg.page_hashes = seg.check_pages(what)?;
        Ok(seg)
    }

    /// Decode and verify a segment file as `decode` does, but a chunk of
    /// page records at a time, never holding the whole body: each chunk
    /// goes to `sink` once its pages pass the per-page checks, while it is
    /// still in the CPU's cache. The checks on the whole body (length,
    /// content CRC, part checksum) can only be made at the end, so what
    /// `sink` got is provisional until this returns `Ok`: a restore writes
    /// it to a temporary file that an error discards.
    pub fn decode_in_chunks(
        &mut self,
        bytes: &[u8],
        what: &str,
        sink: &mut dyn FnMut(&SegmentHeader, &[u8]) -> Result<()>,
    ) -> Result<Checked> {
        use zstd::stream::raw::Operation;
        let Framing { header, body_end, content_crc } = Self::framing(bytes, what)?;
        let body_len = header.body_len();
        let not_zstd = |e: std::io::Error| {
            Error::corrupt(what, HEADER_LEN as u64, format!("body does not decompress ({e})"))
        };
        let z = match &mut self.stream {
            Some(z) => z,
            empty => empty.insert(
                zstd::stream::raw::Decoder::new()
                    .map_err(|e| Error::stream("start zstd decompressor", e))?,
            ),
        };
        // After an error the context may be mid-frame.
        z.reinit().map_err(|e| Error::stream("reset zstd decompressor", e))?;
        let record = 4 + header.page_size as usize;
        let chunk_len = record * (CHUNK_BYTES / record).max(1);
        self.chunk.resize(chunk_len, 0);
        let mut input = &bytes[HEADER_LEN..body_end];
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes[..HEADER_LEN]);
        let mut check = PageCheck::new(&header);
        let mut produced = 0u64;
        let mut frame_ended = false;
        loop {
            // Fill the chunk, or decompress all there is.
            let mut filled = 0;
            while filled < chunk_len {
                let s = z.run_on_buffers(input, &mut self.chunk[filled..]).map_err(not_zstd)?;
                if s.bytes_read == 0 && s.bytes_written == 0 {
                    break;
                }
                input = &input[s.bytes_read..];
                filled += s.bytes_written;
                // A call that makes no progress after a frame ends asks
                // for the next one: only progress tells the frame's end.
                frame_ended = s.remaining == 0;
            }
            produced += filled as u64;
            if produced > body_len {
                return Err(Error::corrupt(
                    what,
                    HEADER_LEN as u64,
                    format!("body is longer than the {body_len} bytes the header says"),
                ));
            }
            if filled == 0 {
                break;
            }
            // A chunk is whole records; only a body of the wrong length
            // (caught just below) can end in part of one.
            let chunk = &self.chunk[..filled - filled % record];
            crc.update(&self.chunk[..filled]);
            for (pgno, page) in page_records(chunk, header.page_size) {
                check.page(pgno, page, what)?;
            }
            sink(&header, chunk)?;
        }
        if produced != body_len || !frame_ended {
            return Err(Error::corrupt(
                what,
                HEADER_LEN as u64,
                format!("body is {produced} bytes, the header says {body_len}"),
            ));
        }
        if crc.finalize() != content_crc {
            return Err(Error::corrupt(
                what,
                body_end as u64 + 4,
                "content checksum mismatch",
            ));
        }
        let page_hashes = check.finish(what)?;
        Ok(Checked { header, page_hashes })
    }

    /// Keep `seg`'s body buffer for the next `decode`.
    pub fn recycle(&mut self, seg: Segment) {
        if seg.body.capacity() > self.spare.capacity() {
            self.spare = seg.body;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_header() -> SegmentHeader {
        SegmentHeader {
            kind: SegmentKind::Changes,
            generation: 0x0123456789abcdef,
            min_txid: 2,
            max_txid: 3,
            page_size: 512,
            db_pages: 3,
            first_ts_ms: 1_795_623_750_000,
            last_ts_ms: 1_795_623_750_123,
            checksum_before: 7,
            checksum_after: 8,
            part: 0,
            parts: 1,
            page_count: 0,
            first_pgno: 0,
        }
    }

    fn sample() -> Vec<u8> {
        let a = [1u8; 512];
        let b = [2u8; 512];
        encode(sample_header(), [(1, &a[..]), (3, &b[..])], 3)
            .unwrap()
            .1
    }

    #[test]
    fn round_trip_and_name() {
        let bytes = sample();
        let seg = Segment::decode(&bytes, "x").unwrap();
        assert_eq!(seg.header.page_count, 2);
        assert_eq!(seg.pages().map(|p| p.0).collect::<Vec<_>>(), vec![1, 3]);
        let name = seg.header.name();
        assert_eq!(
            name,
            "0000000000000002-0000000000000003.20261125T162230.123Z.changes.lsw"
        );
        assert_eq!(
            SegmentName::parse(&name),
            Some(SegmentName::from(&seg.header))
        );
        let snap = SegmentName {
            kind: SegmentKind::Snapshot,
            part: 1,
            parts: 12,
            ..SegmentName::from(&seg.header)
        };
        assert!(snap.to_string().ends_with(".snapshot-0001-of-0012.lsw"));
        assert_eq!(SegmentName::parse(&snap.to_string()), Some(snap));
        assert_eq!(
            SegmentName::parse("0000000000000002-0000000000000003.x.changes.lsw"),
            None
        );
    }

    #[test]
    fn one_decoder_reuses_its_buffer_across_sizes() {
        let big: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 512]).collect();
        let header = SegmentHeader {
            db_pages: 40,
            ..sample_header()
        };
        let big_seg = encode(header, big.iter().enumerate().map(|(i, p)| (i as u32 + 1, &p[..])), 3)
            .unwrap()
            .1;
        let mut d = Decoder::new().unwrap();
        let seg = d.decode(&big_seg, "big").unwrap();
        assert_eq!(seg.pages().count(), 40);
        assert!(seg.pages().all(|(n, p)| p == &big[n as usize - 1][..]));
        d.recycle(seg);
        // A smaller segment into the larger recycled buffer: exactly its pages.
        let small = d.decode(&sample(), "small").unwrap();
        assert_eq!(small.pages().map(|p| p.0).collect::<Vec<_>>(), vec![1, 3]);
        d.recycle(small);
        // Damage is still caught with a recycled buffer.
        let mut bad = big_seg.clone();
        let n = bad.len();
        bad[n - 12] ^= 1;
        assert!(d.decode(&bad, "bad").is_err());
        assert_eq!(d.decode(&big_seg, "big").unwrap().pages().count(), 40);
    }

    /// A snapshot part of `n` pages of `size` bytes, page i filled with i.
    fn snapshot_part(n: u32, size: u32) -> (Vec<Vec<u8>>, Vec<u8>) {
        let pages: Vec<Vec<u8>> = (1..=n).map(|i| vec![i as u8; size as usize]).collect();
        let sum = pages.iter().enumerate().fold(0, |s, (i, p)| s ^ page_hash(i as u32 + 1, p));
        let header = SegmentHeader {
            kind: SegmentKind::Snapshot,
            min_txid: 3,
            max_txid: 3,
            page_size: size,
            db_pages: n,
            checksum_before: 0,
            checksum_after: sum,
            first_pgno: 1,
            ..sample_header()
        };
        let bytes = encode(header, pages.iter().enumerate().map(|(i, p)| (i as u32 + 1, &p[..])), 3).unwrap().1;
        (pages, bytes)
    }

    /// Every page `decode_in_chunks` hands over, and the chunk lengths.
    fn chunked(d: &mut Decoder, bytes: &[u8]) -> (Result<Checked>, Vec<(u32, Vec<u8>)>, Vec<usize>) {
        let (mut pages, mut chunks) = (Vec::new(), Vec::new());
        let r = d.decode_in_chunks(bytes, "x", &mut |h, records| {
            chunks.push(records.len());
            pages.extend(page_records(records, h.page_size).map(|(n, p)| (n, p.to_vec())));
            Ok(())
        });
        (r, pages, chunks)
    }

    #[test]
    fn chunks_hold_whole_records_and_match_the_whole_decode() {
        // 1,500 records of 516 bytes: 508 to a chunk, so three chunks,
        // the last one short.
        let (pages, bytes) = snapshot_part(1500, 512);
        let mut d = Decoder::new().unwrap();
        let whole = d.decode(&bytes, "x").unwrap();
        for _ in 0..2 {
            // Twice: the second run reuses the context and the chunk buffer.
            let (r, got, chunks) = chunked(&mut d, &bytes);
            let checked = r.unwrap();
            assert_eq!(checked.header, whole.header);
            assert_eq!(checked.page_hashes, whole.page_hashes);
            assert_eq!(chunks, [508 * 516, 508 * 516, 484 * 516]);
            assert_eq!(got.len(), 1500);
            assert!(got.iter().all(|(n, p)| *p == pages[*n as usize - 1]));
        }
    }

    #[test]
    fn chunked_decode_fails_where_the_whole_decode_does() {
        let (_, part) = snapshot_part(3, 512);
        let mut d = Decoder::new().unwrap();
        for bytes in [sample(), part] {
            assert!(chunked(&mut d, &bytes).0.is_ok());
            assert_every_damage_fails(&bytes, |t| chunked(&mut d, t).0.is_err());
            // An error leaves the decoder fit for the next segment.
            assert!(chunked(&mut d, &bytes).0.is_ok());
        }
    }

    #[test]
    fn chunked_decode_checks_the_body_length_and_hands_over_no_bad_page() {
        // The header and stored CRC rewritten to claim `pages` pages.
        let claim = |bytes: &[u8], pages: u32| {
            let mut h = SegmentHeader::decode(bytes, "x").unwrap();
            h.page_count = pages;
            let mut t = bytes.to_vec();
            t[..HEADER_LEN].copy_from_slice(&h.encode());
            let end = t.len() - TRAILER_LEN;
            let stored = crc32fast::hash(&t[..end]);
            t[end..end + 4].copy_from_slice(&stored.to_be_bytes());
            t
        };
        let (_, part) = snapshot_part(1000, 512);
        let mut d = Decoder::new().unwrap();
        for pages in [999, 1001] {
            let err = chunked(&mut d, &claim(&part, pages)).0.unwrap_err().to_string();
            assert!(err.contains("the header says"), "{pages} pages: {err}");
        }
        // Page 3 of a database of 2 pages: refused before the sink sees it.
        let a = [1u8; 512];
        let header = SegmentHeader { db_pages: 2, ..sample_header() };
        let bytes = encode(header, [(1, &a[..]), (3, &a[..])], 3).unwrap().1;
        let (r, got, _) = chunked(&mut d, &bytes);
        assert!(r.unwrap_err().to_string().contains("past the end"));
        assert!(got.is_empty(), "the sink got {:?}", got.iter().map(|p| p.0).collect::<Vec<_>>());
    }

    #[test]
    fn every_truncation_and_flipped_bit_fails() {
        assert_every_damage_fails(&sample(), |t| Segment::decode(t, "x").is_err());
    }

    /// `fails` holds for every proper prefix of `bytes` and for every
    /// copy with one bit flipped.
    fn assert_every_damage_fails(bytes: &[u8], mut fails: impl FnMut(&[u8]) -> bool) {
        for n in 0..bytes.len() {
            assert!(fails(&bytes[..n]), "prefix {n}");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut t = bytes.to_vec();
                t[i] ^= 1 << bit;
                assert!(fails(&t), "bit {bit} of byte {i}");
            }
        }
    }
}
