//! Rebuilds a database from segments or frames (DESIGN.md §6): into a
//! temporary file beside the target, checking the chain as it goes
//! (generation, txid continuity, db checksum before and after every
//! segment), then verifying the final checksum and `PRAGMA
//! integrity_check`, fsyncing and publishing with a no-clobber link.
//! Snapshot parts decompress and land in parallel.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags};

use crate::checksum::{page_hash, PageHashes};
use crate::error::{Error, Result};
use crate::frames::Frame;
use crate::layout::{generation_name, SegmentKey};
use crate::segment::{page_records, Checked, Decoder, SegmentHeader, SegmentKind};

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Run `PRAGMA integrity_check` before publishing.
    pub integrity_check: bool,
    /// Threads that decompress and write snapshot parts.
    pub parallelism: usize,
    /// Check everything but publish nothing.
    pub verify_only: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            integrity_check: true,
            parallelism: 4,
            verify_only: false,
        }
    }
}

/// What a finished restore produced.
#[derive(Debug, Clone)]
pub struct Restored {
    pub generation: u64,
    pub txid: u64,
    pub db_pages: u32,
    pub page_size: u32,
    pub checksum: u64,
    pub segments: u64,
    pub path: Option<PathBuf>,
}

/// The temporary file; removed on drop unless published.
struct TempFile {
    path: PathBuf,
    file: Arc<File>,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

struct Workers {
    jobs: Option<SyncSender<(String, Bytes)>>,
    results: Receiver<Result<Checked>>,
    handles: Vec<JoinHandle<()>>,
    sent: usize,
}

/// Where the chain stands.
#[derive(Debug, Clone, Copy)]
struct Position {
    txid: u64,
    db_pages: u32,
}

/// A snapshot whose parts are still arriving.
struct SnapshotState {
    txid: u64,
    parts: u32,
    db_pages: u32,
    seen: Vec<bool>,
}

pub struct Applier {
    target: PathBuf,
    opts: ApplyOptions,
    temp: TempFile,
    generation: Option<u64>,
    page_size: u32,
    hashes: PageHashes,
    position: Option<Position>,
    snapshot: Option<SnapshotState>,
    workers: Option<Workers>,
    done_parts: Vec<Checked>,
    segments: u64,
    /// Inside a frame-stream transaction: (txid, is snapshot).
    frame_txn: Option<(u64, bool)>,
    /// Decodes changes segments (snapshot parts: each worker has its own).
    decoder: Decoder,
    /// The temporary file's length in pages, so a commit that leaves the
    /// size alone costs no ftruncate.
    file_pages: u64,
}

/// The temporary file a restore into `target` builds (hidden, beside it,
/// named after our pid so a later restore can tell a dead one's leftovers).
pub fn temp_path_for(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "db".into());
    target.with_file_name(format!(".{name}.lsw-restore-{}", std::process::id()))
}

impl Applier {
    /// Start a restore into `target`, which must not exist.
    pub fn create(target: &Path, opts: ApplyOptions) -> Result<Self> {
        if !opts.verify_only && target.exists() {
            return Err(Error::database(
                target,
                "already exists; refusing to overwrite it (remove it or restore to another path)",
            ));
        }
        remove_stale_temps(target);
        let temp_path = temp_path_for(target);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp_path)
            .map_err(|e| Error::io("create temporary file", &temp_path, e))?;
        Ok(Applier {
            target: target.to_path_buf(),
            opts,
            temp: TempFile {
                path: temp_path,
                file: Arc::new(file),
                keep: false,
            },
            generation: None,
            page_size: 0,
            hashes: PageHashes::new(512),
            position: None,
            snapshot: None,
            workers: None,
            done_parts: Vec::new(),
            segments: 0,
            frame_txn: None,
            decoder: Decoder::new()?,
            file_pages: 0,
        })
    }

    fn set_generation(&mut self, generation: u64, page_size: u32, what: &str) -> Result<()> {
        match self.generation {
            Some(g) if g != generation => Err(Error::integrity(
                what,
                format!(
                    "belongs to generation {}, the restore is of generation {}",
                    generation_name(generation),
                    generation_name(g)
                ),
            )),
            Some(_) if page_size != self.page_size => Err(Error::integrity(
                what,
                format!("page size {page_size} differs from {}", self.page_size),
            )),
            Some(_) => Ok(()),
            None => {
                self.generation = Some(generation);
                self.page_size = page_size;
                self.hashes = PageHashes::new(page_size);
                Ok(())
            }
        }
    }

    /// Apply one segment file; `key` names it in errors.
    pub fn apply_segment(&mut self, key: &SegmentKey, bytes: Bytes) -> Result<()> {
        let what = key.to_string();
        let header = SegmentHeader::decode(&bytes, &what)?;
        let implied = SegmentKey {
            generation: header.generation,
            name: (&header).into(),
        };
        if implied != *key {
            return Err(Error::integrity(
                &what,
                format!("its header describes {implied}"),
            ));
        }
        self.set_generation(header.generation, header.page_size, &what)?;
        self.segments += 1;
        match header.kind {
            SegmentKind::Snapshot => self.snapshot_part(&header, what, bytes),
            SegmentKind::Changes => {
                self.finish_snapshot()?;
                let seg = self.decoder.decode(&bytes, &what)?;
                let applied = self.changes(&seg, &what);
                self.decoder.recycle(seg);
                applied
            }
        }
    }

    fn snapshot_part(&mut self, h: &SegmentHeader, what: String, bytes: Bytes) -> Result<()> {
        if self.position.is_some() {
            return Err(Error::integrity(
                &what,
                "a snapshot in the middle of a chain (expected changes)",
            ));
        }
        let s = self.snapshot.get_or_insert_with(|| SnapshotState {
            txid: h.min_txid,
            parts: h.parts,
            db_pages: h.db_pages,
            seen: vec![false; h.parts as usize],
        });
        if s.txid != h.min_txid || s.parts != h.parts || s.db_pages != h.db_pages {
            return Err(Error::integrity(
                &what,
                format!("snapshot part does not belong with the snapshot at txid {} ({} parts, {} pages)", s.txid, s.parts, s.db_pages),
            ));
        }
        if std::mem::replace(&mut s.seen[h.part as usize], true) {
            return Err(Error::integrity(
                &what,
                format!("snapshot part {} arrived twice", h.part),
            ));
        }
        let w = self
            .workers
            .get_or_insert_with(|| spawn_workers(self.temp.file.clone(), self.opts.parallelism));
        w.jobs
            .as_ref()
            .expect("workers running")
            .send((what, bytes))
            .map_err(|_| Error::Usage("snapshot workers stopped".into()))?;
        w.sent += 1;
        // Collect finished parts as we go, so an error surfaces early.
        while let Ok(done) = w.results.try_recv() {
            w.sent -= 1;
            self.done_parts.push(done?);
        }
        Ok(())
    }

    /// Wait for every snapshot part, check they tile the database, and
    /// account their pages in the running checksum.
    fn finish_snapshot(&mut self) -> Result<()> {
        if let Some(mut w) = self.workers.take() {
            drop(w.jobs.take());
            let mut first_err = None;
            for _ in 0..w.sent {
                match w.results.recv() {
                    Ok(Ok(done)) => self.done_parts.push(done),
                    Ok(Err(e)) => {
                        first_err.get_or_insert(e);
                    }
                    Err(_) => break,
                }
            }
            for h in w.handles {
                let _ = h.join();
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        let Some(s) = self.snapshot.take() else {
            return Ok(());
        };
        let what = format!(
            "snapshot at txid {} of generation {}",
            s.txid,
            generation_name(self.generation.unwrap_or(0))
        );
        if let Some(missing) = s.seen.iter().position(|x| !x) {
            return Err(Error::integrity(
                what,
                format!("part {missing} of {} is missing", s.parts),
            ));
        }
        let mut parts = std::mem::take(&mut self.done_parts);
        parts.sort_by_key(|p| p.header.part);
        let mut next = 1u32;
        for p in &parts {
            if p.header.page_count > 0 && p.header.first_pgno != next {
                return Err(Error::integrity(
                    &what,
                    format!(
                        "part {} starts at page {}, expected page {next}",
                        p.header.part, p.header.first_pgno
                    ),
                ));
            }
            for (i, h) in p.page_hashes.iter().enumerate() {
                self.hashes.set_hash(next + i as u32, *h);
            }
            next += p.header.page_count;
        }
        if next - 1 != s.db_pages {
            return Err(Error::integrity(
                &what,
                format!(
                    "parts hold {} pages, the database has {}",
                    next - 1,
                    s.db_pages
                ),
            ));
        }
        self.truncate(s.db_pages)?;
        self.position = Some(Position {
            txid: s.txid,
            db_pages: s.db_pages,
        });
        Ok(())
    }

    fn changes(&mut self, seg: &crate::segment::Segment, what: &str) -> Result<()> {
        let h = &seg.header;
        let Some(pos) = self.position else {
            return Err(Error::integrity(
                what,
                "changes without a snapshot before them",
            ));
        };
        if h.min_txid != pos.txid + 1 {
            return Err(Error::integrity(
                what,
                format!(
                    "starts at txid {}, but the chain is at txid {}",
                    h.min_txid, pos.txid
                ),
            ));
        }
        if h.checksum_before != self.hashes.checksum() {
            return Err(Error::integrity(
                what,
                format!(
                    "db checksum before is {:016x}, the restored database has {:016x}",
                    h.checksum_before,
                    self.hashes.checksum()
                ),
            ));
        }
        write_pages(&self.temp.file, self.page_size, seg.pages())
            .map_err(|e| Error::io("write", &self.temp.path, e))?;
        for (pgno, page) in seg.pages() {
            self.hashes.set(pgno, page);
            self.file_pages = self.file_pages.max(u64::from(pgno));
        }
        self.commit(h.max_txid, h.db_pages, h.checksum_after, what)
    }

    fn write_page(&mut self, pgno: u32, page: &[u8]) -> Result<()> {
        let off = u64::from(pgno - 1) * u64::from(self.page_size);
        self.temp
            .file
            .write_all_at(page, off)
            .map_err(|e| Error::io("write", &self.temp.path, e))?;
        self.hashes.set(pgno, page);
        self.file_pages = self.file_pages.max(u64::from(pgno));
        Ok(())
    }

    fn truncate(&mut self, db_pages: u32) -> Result<()> {
        if self.file_pages != u64::from(db_pages) {
            self.temp
                .file
                .set_len(u64::from(db_pages) * u64::from(self.page_size))
                .map_err(|e| Error::io("resize", &self.temp.path, e))?;
            self.file_pages = u64::from(db_pages);
        }
        self.hashes.resize(db_pages);
        Ok(())
    }

    fn commit(&mut self, txid: u64, db_pages: u32, checksum_after: u64, what: &str) -> Result<()> {
        self.truncate(db_pages)?;
        if self.hashes.checksum() != checksum_after {
            return Err(Error::integrity(
                what,
                format!(
                    "db checksum after txid {txid} is {:016x}, expected {checksum_after:016x}",
                    self.hashes.checksum()
                ),
            ));
        }
        self.position = Some(Position { txid, db_pages });
        Ok(())
    }

    /// Apply one record of a frame stream (from a `FrameReader`, so the
    /// grammar is already checked).
    pub fn apply_frame(&mut self, frame: Frame) -> Result<()> {
        let what = "frame stream";
        match frame {
            Frame::Generation {
                generation,
                page_size,
            } => {
                if self.generation.is_some_and(|g| g != generation) {
                    // A new generation in a frame stream starts over from its snapshot.
                    self.generation = None;
                    self.position = None;
                }
                self.set_generation(generation, page_size, what)?;
            }
            Frame::Snapshot { txid, .. } => {
                self.hashes = PageHashes::new(self.page_size);
                self.position = None;
                self.truncate(0)?;
                self.frame_txn = Some((txid, true));
            }
            Frame::Txn {
                txid,
                checksum_before,
            } => {
                let Some(pos) = self.position else {
                    return Err(Error::integrity(
                        what,
                        format!("transaction {txid} without a snapshot before it"),
                    ));
                };
                if txid != pos.txid + 1 || checksum_before != self.hashes.checksum() {
                    return Err(Error::integrity(
                        what,
                        format!(
                            "transaction {txid} does not follow txid {} (checksum {:016x})",
                            pos.txid,
                            self.hashes.checksum()
                        ),
                    ));
                }
                self.frame_txn = Some((txid, false));
            }
            Frame::Page { pgno, data } => self.write_page(pgno, &data)?,
            Frame::Commit {
                txid,
                db_pages,
                checksum_after,
                ..
            } => {
                self.frame_txn = None;
                self.segments += 1;
                self.commit(
                    txid,
                    db_pages,
                    checksum_after,
                    &format!("{what}, txid {txid}"),
                )?;
            }
            Frame::Heartbeat { .. } | Frame::End { .. } | Frame::WalPosition(_) | Frame::Marks(_) => {}
        }
        Ok(())
    }

    /// Verify the final state and publish it (or, verify-only, discard it).
    pub fn finish(mut self) -> Result<Restored> {
        self.finish_snapshot()?;
        let (Some(generation), Some(pos)) = (self.generation, self.position) else {
            return Err(Error::NotFound(
                "the input holds no snapshot: nothing to restore".into(),
            ));
        };
        let checksum = self.hashes.checksum();
        let what = format!(
            "restored database (generation {}, txid {})",
            generation_name(generation),
            pos.txid
        );
        // Every page is written: PRAGMA integrity_check (the slowest check
        // by far, and single-threaded) reads the file while this thread
        // re-reads it for the checksum and fsyncs it. Errors are reported
        // in that order whichever finishes first.
        let (file, path) = (&self.temp.file, &self.temp.path);
        let run_check = self.opts.integrity_check && pos.db_pages > 0;
        let (on_disk, synced, checked) = std::thread::scope(|scope| {
            let checked = run_check.then(|| scope.spawn(|| integrity_check(path, &what)));
            // Re-read what landed on disk: the running checksum covers what
            // we wrote, this covers what the file system gives back.
            let on_disk = file_checksum(file, path, self.page_size, pos.db_pages);
            // A verify-only run discards the file: nothing to make durable.
            let synced = match (&on_disk, self.opts.verify_only) {
                (Ok(_), false) => file.sync_all().map_err(|e| Error::io("fsync", path, e)),
                _ => Ok(()),
            };
            let checked = checked.map_or(Ok(()), |h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::integrity(&what, "integrity check panicked")))
            });
            (on_disk, synced, checked)
        });
        let on_disk = on_disk?;
        if on_disk != checksum {
            return Err(Error::integrity(
                what,
                format!("file reads back with checksum {on_disk:016x}, expected {checksum:016x}"),
            ));
        }
        synced?;
        checked?;
        let mut restored = Restored {
            generation,
            txid: pos.txid,
            db_pages: pos.db_pages,
            page_size: self.page_size,
            checksum,
            segments: self.segments,
            path: None,
        };
        if self.opts.verify_only {
            return Ok(restored);
        }
        std::fs::hard_link(&self.temp.path, &self.target).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::database(
                    &self.target,
                    "appeared while restoring; refusing to overwrite it",
                )
            } else {
                Error::io("publish", &self.target, e)
            }
        })?;
        std::fs::remove_file(&self.temp.path)
            .map_err(|e| Error::io("remove", &self.temp.path, e))?;
        self.temp.keep = true;
        let dir = self
            .target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync directory", dir, e))?;
        restored.path = Some(self.target.clone());
        Ok(restored)
    }
}

/// Remove temporary files left beside `target` by restores that were
/// killed (their process no longer exists).
fn remove_stale_temps(target: &Path) {
    let Some(name) = target.file_name().map(|n| n.to_string_lossy().into_owned()) else { return };
    let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let prefix = format!(".{name}.lsw-restore-");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file.strip_prefix(&prefix).and_then(|p| p.parse::<i32>().ok()) else { continue };
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn spawn_workers(file: Arc<File>, n: usize) -> Workers {
    // Decoding is CPU-bound: more workers than cores only adds buffers
    // (each keeps a decoding context and a chunk) and contention on the
    // file.
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let n = n.min(cores).max(1);
    // A hand-over, not a queue: the fetcher's window is the read-ahead,
    // and parts queued here would only be more compressed parts held in
    // memory (measured: peak RSS of a 207 MB restore 80 -> 67 MB, its
    // time unchanged).
    let (jobs, job_rx) = mpsc::sync_channel::<(String, Bytes)>(0);
    let (res_tx, results) = mpsc::channel();
    let job_rx = Arc::new(std::sync::Mutex::new(job_rx));
    let handles = (0..n)
        .map(|_| {
            let job_rx = job_rx.clone();
            let res_tx = res_tx.clone();
            let file = file.clone();
            std::thread::spawn(move || {
                let mut decoder = match Decoder::new() {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = res_tx.send(Err(e));
                        return;
                    }
                };
                loop {
                    let job = job_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((what, bytes))) = job else { return };
                    let _ = res_tx.send(write_part(&file, &mut decoder, &what, bytes));
                }
            })
        })
        .collect();
    Workers {
        jobs: Some(jobs),
        results,
        handles,
        sent: 0,
    }
}

fn write_part(file: &File, decoder: &mut Decoder, what: &str, bytes: Bytes) -> Result<Checked> {
    // A chunk at a time, each written while still in the CPU's cache: a
    // worker holds 256 KiB of decoded pages instead of a whole part (16
    // MiB then), and its writes interleave with its decoding instead of
    // queueing on the file's lock at the end of every part. Measured on a
    // 207 MB restore: peak RSS 108 -> 80 MB, and 0.82 -> 0.62 s where
    // fresh memory is dear (a VM whose freed memory the host reclaims).
    let checked = decoder.decode_in_chunks(&bytes, what, &mut |h, records| {
        write_pages(file, h.page_size, page_records(records, h.page_size))
            .map_err(|e| Error::io("write", PathBuf::from(what), e))
    })?;
    // The compressed object is spent: back to the fetcher's pool.
    drop(bytes);
    let h = &checked.header;
    start_writeback(file, u64::from(h.first_pgno.max(1) - 1) * u64::from(h.page_size), u64::from(h.page_count) * u64::from(h.page_size));
    Ok(checked)
}

/// Start writing a just-written snapshot part to the disk, without
/// waiting: the final fsync then finds little left to write, instead of
/// the whole database (measured on a 207 MB restore: 80 ms of a 350 ms
/// restore went to that fsync). Only a hint: a failed write-back is
/// reported by that fsync, which every restore does.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: sync_file_range only reads its integer arguments.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset as libc::off64_t, len as libc::off64_t, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Most pages one `pwritev` takes (Linux's IOV_MAX).
const MAX_IOV: usize = 1024;

/// Write pages (ascending page numbers) at their offsets: each run of
/// consecutive pages in one `pwritev`, straight from the decoded body
/// with the page-number fields skipped, so a 256 KiB chunk of a snapshot
/// part is one system call instead of sixty-four.
fn write_pages<'a>(
    file: &File,
    page_size: u32,
    pages: impl Iterator<Item = (u32, &'a [u8])>,
) -> std::io::Result<()> {
    let mut iov: Vec<libc::iovec> = Vec::new();
    let (mut first, mut next) = (0u32, 0u32);
    for (pgno, page) in pages {
        if !iov.is_empty() && (pgno != next || iov.len() == MAX_IOV) {
            pwritev_all(file, &mut iov, u64::from(first - 1) * u64::from(page_size))?;
            iov.clear();
        }
        if iov.is_empty() {
            first = pgno;
        }
        iov.push(libc::iovec {
            iov_base: page.as_ptr() as *mut libc::c_void,
            iov_len: page.len(),
        });
        next = pgno + 1;
    }
    if !iov.is_empty() {
        pwritev_all(file, &mut iov, u64::from(first - 1) * u64::from(page_size))?;
    }
    Ok(())
}

/// `pwritev` until every buffer is written (it may write less).
fn pwritev_all(file: &File, mut iov: &mut [libc::iovec], mut offset: u64) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    while !iov.is_empty() {
        // SAFETY: every iovec points into a page slice borrowed for the
        // whole call (`write_pages`' lifetime 'a), and the count is the
        // slice's length (at most MAX_IOV).
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                offset as libc::off_t,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut n = n as usize;
        offset += n as u64;
        while n > 0 {
            if n >= iov[0].iov_len {
                n -= iov[0].iov_len;
                iov = &mut iov[1..];
            } else {
                // SAFETY: n < iov_len, so the pointer stays inside its page.
                iov[0].iov_base = unsafe { (iov[0].iov_base as *mut u8).add(n) } as *mut libc::c_void;
                iov[0].iov_len -= n;
                n = 0;
            }
        }
    }
    Ok(())
}

/// The db checksum of a file's first `db_pages` pages, read and hashed
/// by a few threads (the checksum is an XOR, so ranges combine in any
/// order).
pub fn file_checksum(file: &File, path: &Path, page_size: u32, db_pages: u32) -> Result<u64> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4) as u32;
    // Small ranges are not worth a thread.
    let threads = threads.min(db_pages / 1024 + 1);
    let per = db_pages.div_ceil(threads.max(1));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let first = 1 + t * per;
                let last = ((t + 1) * per).min(db_pages);
                scope.spawn(move || range_checksum(file, path, page_size, first, last))
            })
            .collect();
        handles.into_iter().try_fold(0u64, |sum, h| {
            let part = h.join().unwrap_or_else(|_| Err(Error::io("read back", path, std::io::Error::other("reader thread panicked"))))?;
            Ok(sum ^ part)
        })
    })
}

/// The XOR of the page hashes of pages `first..=last` of a file, read in
/// chunks small enough to be hashed while still in the CPU's cache.
fn range_checksum(file: &File, path: &Path, page_size: u32, first: u32, last: u32) -> Result<u64> {
    let chunk_pages = ((256 << 10) / page_size).max(1);
    let mut buf = vec![0u8; (chunk_pages * page_size) as usize];
    let mut sum = 0u64;
    let mut pgno = first;
    while pgno <= last {
        let n = chunk_pages.min(last - pgno + 1);
        let bytes = &mut buf[..(n * page_size) as usize];
        file.read_exact_at(bytes, u64::from(pgno - 1) * u64::from(page_size))
            .map_err(|e| Error::io("read back", path, e))?;
        for (i, page) in bytes.chunks_exact(page_size as usize).enumerate() {
            sum ^= page_hash(pgno + i as u32, page);
        }
        pgno += n;
    }
    Ok(sum)
}

/// `PRAGMA integrity_check` on a file nobody else has open, without
/// creating -wal or -shm files beside it.
pub fn integrity_check(path: &Path, what: &str) -> Result<()> {
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' | '?' | '#' => uri.push_str(&format!("%{:02X}", c as u32)),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    let conn = Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| Error::sqlite("open for integrity check", path, e))?;
    // Through a memory map the check reads pages without copying them
    // into SQLite's cache (measured: about a fifth less CPU).
    let _ = conn.query_row("PRAGMA mmap_size = 1099511627776", [], |r| r.get::<_, i64>(0));
    let mut stmt = conn
        .prepare("PRAGMA integrity_check")
        .map_err(|e| Error::integrity(what, format!("integrity check cannot run: {e}")))?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| Error::integrity(what, format!("integrity check cannot run: {e}")))?;
    if rows != ["ok"] {
        return Err(Error::integrity(
            what,
            format!("integrity check failed: {}", rows.join("; ")),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(pgno: u32, size: usize) -> Vec<u8> {
        (0..size).map(|i| (pgno as usize * 31 + i) as u8).collect()
    }

    #[test]
    fn write_pages_places_runs_gaps_and_long_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        // A run longer than one pwritev takes, a gap, a single page, another run.
        let pgnos: Vec<u32> = (1..=MAX_IOV as u32 + 5).chain([2000]).chain(2002..2010).collect();
        let pages: Vec<Vec<u8>> = pgnos.iter().map(|&p| page(p, 512)).collect();
        write_pages(&file, 512, pgnos.iter().copied().zip(pages.iter().map(|p| p.as_slice()))).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 2009 * 512);
        for pgno in 1..=2009u32 {
            let got = &bytes[(pgno as usize - 1) * 512..pgno as usize * 512];
            if pgnos.contains(&pgno) {
                assert_eq!(got, page(pgno, 512).as_slice(), "page {pgno}");
            } else {
                assert!(got.iter().all(|b| *b == 0), "hole at page {pgno}");
            }
        }
        let hashes = pgnos.iter().fold(0, |s, &p| s ^ page_hash(p, &page(p, 512)));
        let holes = (1..=2009u32).filter(|p| !pgnos.contains(p)).fold(0, |s, p| s ^ page_hash(p, &[0u8; 512]));
        assert_eq!(file_checksum(&file, &path, 512, 2009).unwrap(), hashes ^ holes);
    }
}
