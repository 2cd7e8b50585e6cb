//! SQLite's wal-index (the `-shm` file, https://www.sqlite.org/walformat.html):
//! how far the WAL is committed, and which page each frame holds, without
//! reading the WAL.
//!
//! Capture uses it to read only the last version of each page a pass's
//! commits wrote (capture.rs). Frames up to the header's `mxFrame` are
//! committed and complete: SQLite writes them before it publishes the
//! header, which is how its own readers trust them without checksums.
//!
//! The index is read through the mapping SQLite made for one of our own
//! connections (`xShmMap` of the database's `sqlite3_file`), never through
//! a descriptor of our own: closing any descriptor of the `-shm` file
//! drops every POSIX lock this process holds on it, SQLite's included.
//! The memory is shared with other processes that write it, so every word
//! is read volatile, and a header is only taken when its two copies agree
//! and its checksum holds, as SQLite's readers do (wal.c, walIndexTryHdr).

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{fence, Ordering};

use rusqlite::{ffi, Connection};

use crate::error::{Error, Result};
use crate::wal::{wal_checksum, WalReader, FRAME_HEADER_LEN, WAL_HEADER_LEN};

/// Bytes of one wal-index region.
const REGION_BYTES: usize = 32 * 1024;
/// Page numbers per region, and in the first one, after the 136-byte
/// header (two copies of the 48-byte header and the checkpoint info).
const REGION_FRAMES: u32 = 4096;
const FIRST_REGION_FRAMES: u32 = 4062;
const HEADER_WORDS: usize = 136 / 4;
const HEADER_COPY_BYTES: usize = 48;
const INDEX_VERSION: u32 = 3_007_000;
/// The checkpoint lock's number among the index's locks (wal.c, WAL_CKPT_LOCK).
const CHECKPOINT_LOCK: c_int = 1;

/// One consistent copy of the wal-index header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    /// Frames committed in the WAL (index from 1 of the last commit frame).
    pub mx_frame: u32,
    /// Database size in pages after that commit.
    pub db_pages: u32,
    pub page_size: u32,
    /// The WAL's salts, as the WAL header holds them.
    pub salt1: u32,
    pub salt2: u32,
    /// The checksum chain after frame `mx_frame` (that frame's own).
    pub frame_checksum: (u32, u32),
}

/// The wal-index of the database `conn` is open on, borrowed for as long
/// as the connection.
pub struct WalIndex<'c> {
    file: *mut ffi::sqlite3_file,
    _conn: PhantomData<&'c Connection>,
}

impl<'c> WalIndex<'c> {
    /// `None` when SQLite keeps no shared wal-index for this connection
    /// (not in WAL mode yet, a VFS without shared memory).
    pub fn of(conn: &'c Connection) -> Option<Self> {
        let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
        // SAFETY: the handle is live for 'c; FILE_POINTER writes the
        // main database's sqlite3_file pointer into `file`.
        let rc = unsafe {
            ffi::sqlite3_file_control(
                conn.handle(),
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_FILE_POINTER,
                (&mut file as *mut *mut ffi::sqlite3_file).cast::<c_void>(),
            )
        };
        if rc != ffi::SQLITE_OK || file.is_null() {
            return None;
        }
        // SAFETY: a non-null file pointer of an open connection has methods.
        let methods = unsafe { (*file).pMethods };
        if methods.is_null() || unsafe { (*methods).iVersion } < 2 || unsafe { (*methods).xShmMap }.is_none() {
            return None;
        }
        Some(WalIndex { file, _conn: PhantomData })
    }

    /// Region `n` as SQLite has it mapped; `None` if it does not exist yet.
    fn region(&self, n: u32) -> Option<*const u32> {
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: checked in `of` that xShmMap exists; bExtend = 0 never
        // grows the file, and a missing region comes back as null.
        let rc = unsafe {
            let map = (*(*self.file).pMethods).xShmMap.expect("checked in of");
            map(self.file, n as c_int, REGION_BYTES as c_int, 0, &mut p as *mut *mut c_void)
        };
        (rc == ffi::SQLITE_OK && !p.is_null()).then_some(p as *const u32)
    }

    /// The header, if a consistent copy could be read (a writer caught
    /// publishing one leaves the copies different: try again).
    pub fn header(&self) -> Option<IndexHeader> {
        let base = self.region(0)?;
        let mut copies = [[0u32; HEADER_COPY_BYTES / 4]; 2];
        for (i, copy) in copies.iter_mut().enumerate() {
            for (w, word) in copy.iter_mut().enumerate() {
                // SAFETY: region 0 is REGION_BYTES long; both copies are
                // within its first 96 bytes.
                *word = unsafe { std::ptr::read_volatile(base.add(i * HEADER_COPY_BYTES / 4 + w)) };
            }
            // Copy 0 first, then copy 1: SQLite writes them the other way round.
            fence(Ordering::SeqCst);
        }
        let [h, other] = copies;
        if h != other {
            return None;
        }
        let mut bytes = [0u8; HEADER_COPY_BYTES];
        for (b, w) in bytes.chunks_exact_mut(4).zip(h) {
            b.copy_from_slice(&w.to_ne_bytes());
        }
        let is_init = bytes[12];
        let native_big = cfg!(target_endian = "big");
        if h[0] != INDEX_VERSION || is_init == 0 || wal_checksum(native_big, &bytes[..40], (0, 0)) != (h[10], h[11]) {
            return None;
        }
        let sz = u16::from_ne_bytes([bytes[14], bytes[15]]) as u32;
        let salt = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
        Some(IndexHeader {
            mx_frame: h[4],
            db_pages: h[5],
            page_size: (sz & 0xfe00) + ((sz & 1) << 16),
            salt1: salt(32),
            salt2: salt(36),
            frame_checksum: (h[6], h[7]),
        })
    }

    /// Take (`true`) or let go of (`false`) SQLite's checkpoint lock
    /// (wal-index lock 1) exclusively, through this connection's handle of
    /// the index, without waiting. False when another connection (in any
    /// process) holds it. The lock is this connection's as far as SQLite
    /// knows, so the connection must not checkpoint while holding it.
    pub fn lock_checkpoints(&self, take: bool) -> bool {
        // The handle of the index exists only once it is mapped: xShmLock
        // on an unmapped one would dereference nothing.
        if self.region(0).is_none() {
            return false;
        }
        // SAFETY: `of` checked that the file has methods (version 2 or
        // more, which have xShmLock's slot).
        let Some(lock) = (unsafe { (*(*self.file).pMethods).xShmLock }) else { return false };
        let flags = ffi::SQLITE_SHM_EXCLUSIVE | if take { ffi::SQLITE_SHM_LOCK } else { ffi::SQLITE_SHM_UNLOCK };
        // SAFETY: the file is open and its index mapped (above); offset
        // 1, one lock, is WAL_CKPT_LOCK (wal.c).
        unsafe { lock(self.file, CHECKPOINT_LOCK, 1, flags) == ffi::SQLITE_OK }
    }

    /// Call `visit(frame, pgno)` for frames `from..=to` in order. False if
    /// a region they need is not mapped (the caller reads the WAL instead).
    pub fn page_numbers(&self, from: u32, to: u32, visit: &mut dyn FnMut(u32, u32)) -> bool {
        let mut frame = from;
        while frame <= to {
            let (region, first, first_word) = if frame <= FIRST_REGION_FRAMES {
                (0, 1, HEADER_WORDS)
            } else {
                let r = (frame - FIRST_REGION_FRAMES - 1) / REGION_FRAMES + 1;
                (r, FIRST_REGION_FRAMES + (r - 1) * REGION_FRAMES + 1, 0)
            };
            let Some(base) = self.region(region) else { return false };
            let last = to.min(first + if region == 0 { FIRST_REGION_FRAMES } else { REGION_FRAMES } - 1);
            for f in frame..=last {
                // SAFETY: the word index is below REGION_FRAMES (+ the
                // header words in region 0), inside the mapped region.
                let pgno = unsafe { std::ptr::read_volatile(base.add(first_word + (f - first) as usize)) };
                visit(f, pgno);
            }
            frame = last + 1;
        }
        true
    }
}

/// What the commits past a reader's position left: the last version of
/// each page they wrote, within the database's size after the last one.
#[derive(Debug, Default)]
pub struct IndexedPass {
    /// In page order.
    pub pages: Vec<(u32, Vec<u8>)>,
    pub db_pages: u32,
    /// WAL frames the pass covered; 0 when there was nothing new.
    pub frames: u64,
}

/// Read the commits past `r`'s position through the wal-index, reading
/// from the WAL only the last version of each page, and move `r` past
/// them. `Ok(None)` when this cannot be done exactly, and the caller
/// reads the WAL frame by frame instead:
/// - the index is not consistent with the WAL `r` reads (another
///   incarnation, a restart while we read, a frame whose header does not
///   say what the index does);
/// - more than `max_pages` distinct pages: a pass stays bounded in memory,
///   and only the frame-by-frame reader can stop between commits;
/// - the database shrank and grew again within the pass: a page it
///   brought back without writing must read as zeros (merged.rs), and
///   only the commits one by one show which pages those are. Every change
///   of size rewrites page 1 with the new size at byte 28, so the versions
///   of page 1 the pass holds show whether that happened.
pub fn read_pass(r: &mut WalReader, index: &WalIndex, max_pages: usize, db_pages_before: u32) -> Result<Option<IndexedPass>> {
    let wal = r.header;
    let Some(h) = index.header() else { return Ok(None) };
    if (h.salt1, h.salt2) != (wal.salt1, wal.salt2) || h.page_size != wal.page_size {
        return Ok(None);
    }
    let from = r.frames();
    let to = u64::from(h.mx_frame);
    if to <= from {
        return Ok((to == from).then(IndexedPass::default));
    }
    let mut last: HashMap<u32, u32> = HashMap::new();
    let mut page_one = Vec::new();
    // The page of the last frame, the commit frame.
    let mut commit_pgno = 0;
    let mapped = index.page_numbers(from as u32 + 1, h.mx_frame, &mut |frame, pgno| {
        if pgno == 1 {
            page_one.push(frame);
        }
        last.insert(pgno, frame);
        commit_pgno = pgno;
    });
    if !mapped || last.len() > max_pages {
        return Ok(None);
    }
    let ps = wal.page_size as usize;
    let at = |frame: u32| WAL_HEADER_LEN as u64 + u64::from(frame - 1) * (FRAME_HEADER_LEN + ps) as u64;
    let file = r.file();
    let read = |buf: &mut [u8], offset: u64| -> Result<bool> {
        match file.read_exact_at(buf, offset) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(Error::io("read WAL", r.path(), e)),
        }
    };
    // The sizes the pass went through, in order, from page 1's header.
    let mut sizes = vec![db_pages_before];
    for &frame in &page_one {
        let mut b = [0u8; 100];
        if !read(&mut b, at(frame) + FRAME_HEADER_LEN as u64)? {
            return Ok(None);
        }
        let be = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap());
        // The in-header size is only current when the change counter
        // matches version-valid-for (https://www.sqlite.org/fileformat2.html).
        if be(28) == 0 || be(24) != be(92) {
            return Ok(None);
        }
        sizes.push(be(28));
    }
    sizes.push(h.db_pages);
    if grows_after_shrinking(&sizes) {
        return Ok(None);
    }
    let frame_is = |fh: &[u8], pgno: u32| {
        let be = |o: usize| u32::from_be_bytes(fh[o..o + 4].try_into().unwrap());
        be(0) == pgno && be(8) == wal.salt1 && be(12) == wal.salt2
    };
    let mut wanted: Vec<(u32, u32)> = last.into_iter().filter(|&(pgno, _)| pgno <= h.db_pages).map(|(pgno, frame)| (frame, pgno)).collect();
    wanted.sort_unstable();
    let mut pages = Vec::with_capacity(wanted.len());
    for (frame, pgno) in wanted {
        let mut buf = vec![0u8; FRAME_HEADER_LEN + ps];
        if !read(&mut buf, at(frame))? || !frame_is(&buf, pgno) {
            return Ok(None);
        }
        buf.drain(..FRAME_HEADER_LEN);
        pages.push((pgno, buf));
    }
    // The last frame is the commit the header describes.
    let mut fh = [0u8; FRAME_HEADER_LEN];
    if !read(&mut fh, at(h.mx_frame))? {
        return Ok(None);
    }
    let be = |o: usize| u32::from_be_bytes(fh[o..o + 4].try_into().unwrap());
    if !frame_is(&fh, commit_pgno) || be(4) != h.db_pages || (be(16), be(20)) != h.frame_checksum {
        return Ok(None);
    }
    // A restart while we read would have published new salts before
    // writing a single frame over the ones we read (wal.c, walRestartHdr).
    match index.header() {
        Some(now) if (now.salt1, now.salt2) == (h.salt1, h.salt2) && now.mx_frame >= h.mx_frame => {}
        _ => return Ok(None),
    }
    pages.sort_unstable_by_key(|&(pgno, _)| pgno);
    r.skip_to(to, h.frame_checksum);
    Ok(Some(IndexedPass {
        pages,
        db_pages: h.db_pages,
        frames: to - from,
    }))
}

/// Whether a sequence of database sizes grows again after a shrink.
fn grows_after_shrinking(sizes: &[u32]) -> bool {
    let mut low: Option<u32> = None;
    for w in sizes.windows(2) {
        if low.is_some_and(|l| w[1] > l) {
            return true;
        }
        if w[1] < w[0] {
            low = Some(low.map_or(w[1], |l| l.min(w[1])));
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::grows_after_shrinking;

    #[test]
    fn a_shrink_followed_by_growth_is_seen() {
        assert!(!grows_after_shrinking(&[10, 10, 12, 15]));
        assert!(!grows_after_shrinking(&[10, 8, 8, 5]));
        assert!(!grows_after_shrinking(&[10, 12, 9]));
        assert!(grows_after_shrinking(&[10, 8, 9]));
        assert!(grows_after_shrinking(&[10, 12, 9, 11]));
    }
}
