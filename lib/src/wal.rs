//! Reading SQLite's write-ahead log (https://www.sqlite.org/fileformat2.html#walformat,
//! and wal.c): the 32-byte header, 24-byte frame headers, and the
//! cumulative checksum that makes a frame valid only if its salts match
//! the header's and its checksum continues the chain. The valid WAL ends
//! at the last commit frame of that chain; anything after is not yet (or
//! never) committed.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::frames::WalPosition;

pub const WAL_HEADER_LEN: usize = 32;
pub const FRAME_HEADER_LEN: usize = 24;
const WAL_MAGIC_LE: u32 = 0x377f_0682;
const WAL_MAGIC_BE: u32 = 0x377f_0683;
const WAL_VERSION: u32 = 3_007_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    /// Checksum words are big-endian (magic low bit set) or little-endian.
    pub big_endian: bool,
    pub page_size: u32,
    pub checkpoint_seq: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub checksum: (u32, u32),
}

/// SQLite's WAL checksum over `data` (a multiple of 8 bytes), continuing `s`.
pub fn wal_checksum(big_endian: bool, data: &[u8], s: (u32, u32)) -> (u32, u32) {
    let (mut s1, mut s2) = s;
    for c in data.chunks_exact(8) {
        let (x0, x1) = if big_endian {
            (
                u32::from_be_bytes(c[..4].try_into().unwrap()),
                u32::from_be_bytes(c[4..].try_into().unwrap()),
            )
        } else {
            (
                u32::from_le_bytes(c[..4].try_into().unwrap()),
                u32::from_le_bytes(c[4..].try_into().unwrap()),
            )
        };
        s1 = s1.wrapping_add(x0).wrapping_add(s2);
        s2 = s2.wrapping_add(x1).wrapping_add(s1);
    }
    (s1, s2)
}

impl WalHeader {
    /// Parse a header; `None` if it is not a valid WAL header (a WAL that
    /// SQLite has not written yet, or was reset, reads as empty).
    pub fn parse(b: &[u8; WAL_HEADER_LEN]) -> Option<Self> {
        let be = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap());
        let magic = be(0);
        if magic != WAL_MAGIC_LE && magic != WAL_MAGIC_BE {
            return None;
        }
        if be(4) != WAL_VERSION {
            return None;
        }
        let big_endian = magic & 1 == 1;
        let checksum = (be(24), be(28));
        if wal_checksum(big_endian, &b[..24], (0, 0)) != checksum {
            return None;
        }
        let page_size = be(8);
        if !crate::frames::valid_page_size(page_size) {
            return None;
        }
        Some(WalHeader {
            big_endian,
            page_size,
            checkpoint_seq: be(12),
            salt1: be(16),
            salt2: be(20),
            checksum,
        })
    }
}

/// One committed transaction read from the WAL.
#[derive(Debug, Clone)]
pub struct WalTxn {
    /// Pages in WAL order (a page may appear more than once; the last wins).
    pub pages: Vec<(u32, Vec<u8>)>,
    /// Database size in pages after the commit.
    pub db_pages: u32,
    /// Index (from 1) of the commit frame.
    pub last_frame: u64,
}

/// Reads the committed transactions of a WAL in order, verifying salts and
/// the checksum chain, and stops at the first frame that does not continue it.
pub struct WalReader {
    path: PathBuf,
    file: GrowingReader,
    pub header: WalHeader,
    chain: (u32, u32),
    frames_read: u64,
    /// Byte offset just past the last commit frame read.
    valid_end: u64,
}

impl WalReader {
    /// Open the WAL; `Ok(None)` if it does not exist or holds no valid header.
    pub fn open(path: &Path) -> Result<Option<Self>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open WAL", path, e)),
        };
        let mut file = GrowingReader::new(file);
        let mut b = [0u8; WAL_HEADER_LEN];
        match file.read_exact_or_eof(&mut b) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => return Err(Error::io("read WAL header", path, e)),
        }
        let Some(header) = WalHeader::parse(&b) else {
            return Ok(None);
        };
        Ok(Some(WalReader {
            path: path.to_path_buf(),
            file,
            chain: header.checksum,
            header,
            frames_read: 0,
            valid_end: WAL_HEADER_LEN as u64,
        }))
    }

    pub fn valid_end(&self) -> u64 {
        self.valid_end
    }

    /// Frames (committed) in this WAL incarnation up to `valid_end`.
    pub fn frames(&self) -> u64 {
        self.frames_read
    }

    /// Where this reader stands, as the position after `txid`.
    pub fn position(&self, txid: u64) -> WalPosition {
        WalPosition {
            txid,
            salt1: self.header.salt1,
            salt2: self.header.salt2,
            offset: self.valid_end,
            chain1: self.chain.0,
            chain2: self.chain.1,
        }
    }

    /// The WAL file, for reads at known offsets (wal_index.rs).
    pub(crate) fn file(&self) -> &File {
        &self.file.file
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Take the commits up to frame `frames` as read, ending with the
    /// checksum chain `chain` (read by wal_index.rs, without the frames
    /// in between).
    pub(crate) fn skip_to(&mut self, frames: u64, chain: (u32, u32)) {
        let frame = (FRAME_HEADER_LEN + self.header.page_size as usize) as u64;
        self.frames_read = frames;
        self.chain = chain;
        self.valid_end = WAL_HEADER_LEN as u64 + frames * frame;
        self.file.seek(self.valid_end);
    }

    /// Continue reading where `pos` left off, if the WAL is still the same
    /// incarnation (same salts) and holds at least that much.
    pub fn resume(path: &Path, pos: &WalPosition) -> Result<Resume> {
        let Some(mut r) = Self::open(path)? else { return Ok(Resume::NoWal) };
        if pos.offset == 0 {
            // No header had been seen: this is the first incarnation since.
            return Ok(Resume::NewIncarnation(r));
        }
        if r.header.salt1 != pos.salt1 || r.header.salt2 != pos.salt2 {
            return Ok(Resume::NewIncarnation(r));
        }
        let frame = (FRAME_HEADER_LEN + r.header.page_size as usize) as u64;
        if pos.offset < WAL_HEADER_LEN as u64 || (pos.offset - WAL_HEADER_LEN as u64) % frame != 0 {
            return Err(Error::corrupt(
                path.display().to_string(),
                pos.offset,
                "saved WAL position is not at a frame boundary",
            ));
        }
        r.file.seek(pos.offset);
        r.chain = (pos.chain1, pos.chain2);
        r.frames_read = (pos.offset - WAL_HEADER_LEN as u64) / frame;
        r.valid_end = pos.offset;
        Ok(Resume::Same(r))
    }

    /// The next committed transaction, or `None` where the valid WAL ends.
    pub fn next_txn(&mut self) -> Result<Option<WalTxn>> {
        let ps = self.header.page_size as usize;
        let mut pages = Vec::new();
        let mut chain = self.chain;
        let mut frames = self.frames_read;
        loop {
            let mut fh = [0u8; FRAME_HEADER_LEN];
            let read = self.file.read_exact_or_eof(&mut fh).and_then(|ok| {
                if ok {
                    self.file.read_vec_or_eof(ps)
                } else {
                    Ok(None)
                }
            });
            let Some(page) = read.map_err(|e| Error::io("read WAL", &self.path, e))? else {
                return self.end_at_valid();
            };
            let be = |o: usize| u32::from_be_bytes(fh[o..o + 4].try_into().unwrap());
            if be(8) != self.header.salt1 || be(12) != self.header.salt2 {
                return self.end_at_valid();
            }
            chain = wal_checksum(self.header.big_endian, &fh[..8], chain);
            chain = wal_checksum(self.header.big_endian, &page, chain);
            if chain != (be(16), be(20)) {
                return self.end_at_valid();
            }
            frames += 1;
            let pgno = be(0);
            let commit_size = be(4);
            pages.push((pgno, page));
            if commit_size != 0 {
                self.chain = chain;
                self.frames_read = frames;
                self.valid_end = WAL_HEADER_LEN as u64 + frames * (FRAME_HEADER_LEN + ps) as u64;
                return Ok(Some(WalTxn {
                    pages,
                    db_pages: commit_size,
                    last_frame: frames,
                }));
            }
        }
    }

    /// Leave the file positioned after the last commit, so a later call
    /// retries the frames that were not (yet) a complete transaction.
    fn end_at_valid(&mut self) -> Result<Option<WalTxn>> {
        self.file.seek(self.valid_end);
        Ok(None)
    }
}

/// Least bytes asked of the kernel after a reposition.
const MIN_READ: usize = 8 << 10;
/// Most bytes asked of the kernel at once.
const MAX_READ: usize = 1 << 20;

/// A forward reader of the WAL that asks the kernel for more only as the
/// frames read so far prove useful: after each reposition (the end of
/// every pass) the first read is small and each further one doubles. A
/// plain 1 MiB buffer would read a megabyte per pass even when a pass
/// finds one new frame, and after a WAL restart the bytes behind the new
/// frames are the old incarnation's, read and thrown away every pass.
struct GrowingReader {
    file: File,
    /// Read-ahead: `buf[pos..end]` are the file's bytes from `base + pos`.
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    base: u64,
    /// Bytes of `buf` already handed out.
    pos: usize,
    /// End of the bytes read into `buf`.
    end: usize,
    /// Size of the next read.
    want: usize,
}

impl GrowingReader {
    fn new(file: File) -> Self {
        GrowingReader {
            file,
            buf: Vec::new(),
            base: 0,
            pos: 0,
            end: 0,
            want: MIN_READ,
        }
    }

    /// Continue at byte `offset`, forgetting what was read ahead (the
    /// file may have changed there since).
    fn seek(&mut self, offset: u64) {
        self.base = offset;
        self.pos = 0;
        self.end = 0;
        self.want = MIN_READ;
    }

    /// Fill `out` from the file; `Ok(false)` if the file ends first (the
    /// caller then repositions).
    fn read_exact_or_eof(&mut self, out: &mut [u8]) -> io::Result<bool> {
        if self.end - self.pos < out.len() && !self.fill(out.len())? {
            return Ok(false);
        }
        out.copy_from_slice(&self.buf[self.pos..self.pos + out.len()]);
        self.pos += out.len();
        Ok(true)
    }

    /// `n` bytes from the file in a new vector (a page: no zeroing first).
    fn read_vec_or_eof(&mut self, n: usize) -> io::Result<Option<Vec<u8>>> {
        if self.end - self.pos < n && !self.fill(n)? {
            return Ok(None);
        }
        let v = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(Some(v))
    }

    /// Read until at least `need` bytes are ahead of `pos`; false if the
    /// file ends first.
    fn fill(&mut self, need: usize) -> io::Result<bool> {
        // Keep the unread tail at the front, then read at least what is missing.
        self.buf.copy_within(self.pos..self.end, 0);
        self.base += self.pos as u64;
        self.end -= self.pos;
        self.pos = 0;
        let n = self.want.max(need - self.end);
        self.want = (self.want * 2).min(MAX_READ);
        if self.buf.len() < self.end + n {
            self.buf.resize(self.end + n, 0);
        }
        let stop = self.end + n;
        while self.end < stop {
            match self.file.read_at(&mut self.buf[self.end..stop], self.base + self.end as u64) {
                Ok(0) => break,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.end >= need)
    }
}

/// What `WalReader::resume` found.
pub enum Resume {
    /// The same incarnation: reading continues after the position.
    Same(WalReader),
    /// Another incarnation (restarted, truncated and rewritten, replaced):
    /// reading starts at its first frame.
    NewIncarnation(WalReader),
    /// No WAL, or one without a valid header (empty, truncated).
    NoWal,
}

/// Read just the WAL header, to see whether the WAL was restarted. Called
/// on every capture pass: it reads the 32 header bytes and nothing more.
pub fn read_header(path: &Path) -> Result<Option<WalHeader>> {
    use std::os::unix::fs::FileExt;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open WAL", path, e)),
    };
    let mut b = [0u8; WAL_HEADER_LEN];
    match file.read_exact_at(&mut b, 0) {
        Ok(()) => Ok(WalHeader::parse(&b)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(Error::io("read WAL header", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn growing_reader_reads_across_refills_and_forgets_on_seek() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3 * MAX_READ as u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mut r = GrowingReader::new(File::open(&path).unwrap());
        // Odd sizes, so reads straddle every refill boundary.
        let mut off = 0;
        let mut chunk = vec![0u8; 4096 + 24];
        while off + chunk.len() <= data.len() {
            assert!(r.read_exact_or_eof(&mut chunk).unwrap());
            assert_eq!(chunk, data[off..off + chunk.len()]);
            off += chunk.len();
        }
        assert!(!r.read_exact_or_eof(&mut chunk).unwrap(), "past the end");
        // Read ahead, then the file changes behind the read position: after
        // a seek the reader sees the new bytes, not its stale copy.
        r.seek(100);
        let mut one = [0u8; 10];
        assert!(r.read_exact_or_eof(&mut one).unwrap());
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[7u8; 10], 110).unwrap();
        r.seek(110);
        assert!(r.read_exact_or_eof(&mut one).unwrap());
        assert_eq!(one, [7u8; 10]);
        // A file that grows after an end of file was seen.
        let len = data.len() as u64;
        r.seek(len);
        assert!(!r.read_exact_or_eof(&mut one).unwrap());
        f.write_all_at(&[9u8; 10], len).unwrap();
        r.seek(len);
        assert!(r.read_exact_or_eof(&mut one).unwrap());
        assert_eq!(one, [9u8; 10]);
        f.flush().unwrap();
    }

    #[test]
    fn reads_every_committed_transaction_of_a_real_wal() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))
            .unwrap();
        conn.execute_batch("PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x)")
            .unwrap();
        for i in 0..300 {
            conn.execute("INSERT INTO t VALUES (?1)", [format!("{i:0>2000}")])
                .unwrap();
        }
        let wal = dir.path().join("t.db-wal");
        let mut r = WalReader::open(&wal).unwrap().expect("a WAL");
        let mut txns = 0;
        while r.next_txn().unwrap().is_some() {
            txns += 1;
        }
        assert_eq!(txns, 301, "the CREATE TABLE and every INSERT");
        assert_eq!(r.valid_end(), std::fs::metadata(&wal).unwrap().len());
        assert_eq!(read_header(&wal).unwrap(), Some(r.header));
        // More commits after the reader reached the end are picked up.
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        assert!(r.next_txn().unwrap().is_some());
        assert!(r.next_txn().unwrap().is_none());
    }
}
