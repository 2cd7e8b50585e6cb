//! The shadow log: captured transactions kept on local disk, fsynced
//! before they leave lsw-shadow, until the replica acknowledges them
//! (DESIGN.md §4.4). It lives in a hidden directory beside the database:
//!
//! ```text
//! .app.db-lsw/lock                      flock: one replicator per database
//! .app.db-lsw/log/<first txid>.hashes   page hashes of the db at first txid - 1
//! .app.db-lsw/log/<first txid>.frames   GENERATION, then TXN/PAGE/COMMIT and
//!                                       WAL_POSITION records from first txid on
//! ```
//!
//! A `.frames` file uses the frame stream's framing (man/lsw-format.5,
//! "SHADOW LOG"). Only the newest file is appended to; a crash can leave a
//! torn tail after its last WAL_POSITION, which recovery cuts off.
//! Restart replays the newest `.hashes` file and the frames after it to
//! get back the db checksum state and the WAL position; older files stay
//! only until the replica has their transactions.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::checksum::PageHashes;
use crate::error::{Error, Result};
use crate::frames::{decode_record, Frame, FrameWriter, WalPosition};
use crate::stream::{StreamKind, StreamReader};

const HASHES_MAGIC: &[u8; 4] = b"LSWH";
const HASHES_VERSION: u16 = 1;
/// magic, version, reserved, generation, txid, page size, pages, checksum.
const HASHES_HEADER_LEN: usize = 4 + 2 + 2 + 8 + 8 + 4 + 4 + 8;
/// Start a new `.frames` file (with a new base) past this size.
pub const ROTATE_BYTES: u64 = 16 << 20;

/// The state directory of a database: `.NAME-lsw` beside it.
pub fn state_dir(db: &Path) -> PathBuf {
    let name = db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    db.with_file_name(format!(".{name}-lsw"))
}

/// What a restart recovers from the log.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub generation: u64,
    pub page_size: u32,
    /// The last transaction in the log.
    pub txid: u64,
    pub hashes: PageHashes,
    /// Where WAL capture stood after `position.txid` (≤ `txid`).
    pub position: WalPosition,
    /// The oldest txid the log can still resend.
    pub oldest_txid: u64,
}

struct Current {
    first_txid: u64,
    path: PathBuf,
    out: FrameWriter<BufWriter<File>>,
}

pub struct ShadowLog {
    dir: PathBuf,
    log: PathBuf,
    _lock: File,
    current: Option<Current>,
}

pub(crate) fn frames_name(first: u64) -> String {
    format!("{first:016x}.frames")
}

fn hashes_name(first: u64) -> String {
    format!("{first:016x}.hashes")
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync directory", dir, e))
}

impl ShadowLog {
    /// Open (creating) the state directory `dir` of `db` and take its
    /// lock; a second replicator of the same database is refused.
    pub fn open(db: &Path, dir: &Path) -> Result<Self> {
        let dir = dir.to_path_buf();
        let log = dir.join("log");
        fs::create_dir_all(&log).map_err(|e| Error::io("create state directory", &log, e))?;
        let lock_path = dir.join("lock");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io("open lock file", &lock_path, e))?;
        if !try_lock(&lock) {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
            return Err(Error::database(
                db,
                format!("another replicator is already running for this database{who}; stop it first (lock {})", lock_path.display()),
            ));
        }
        lock.set_len(0).map_err(|e| Error::io("write lock file", &lock_path, e))?;
        let _ = write!(lock, "{}", std::process::id());
        Ok(ShadowLog {
            dir,
            log,
            _lock: lock,
            current: None,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the `.frames` and `.hashes` files.
    pub fn log_dir(&self) -> &Path {
        &self.log
    }

    /// `(first txid, has .hashes)` of every `.frames` file, oldest first.
    fn files(&self) -> Result<Vec<(u64, bool)>> {
        Ok(list_frames(&self.log)?
            .into_iter()
            .map(|first| (first, self.log.join(hashes_name(first)).exists()))
            .collect())
    }

    /// Total bytes held by the log.
    pub fn size_bytes(&self) -> u64 {
        fs::read_dir(&self.log)
            .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    }

    /// Start a generation (or a new file of the current one): write the
    /// base hashes for `first_txid - 1`, then a `.frames` file that opens
    /// with GENERATION and the WAL position. With `fresh`, every older
    /// file is removed once the new base is durable.
    pub fn start_file(
        &mut self,
        generation: u64,
        first_txid: u64,
        hashes: &PageHashes,
        position: WalPosition,
        fresh: bool,
    ) -> Result<()> {
        self.sync()?;
        write_hashes(&self.log.join(hashes_name(first_txid)), generation, first_txid - 1, hashes)?;
        let path = self.log.join(frames_name(first_txid));
        // A new inode, never the old file truncated: a replica still
        // reading an abandoned generation's file of the same name keeps
        // reading what it opened.
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &path, e)),
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        let mut out = FrameWriter::new(BufWriter::with_capacity(256 << 10, file))?;
        out.write(&Frame::Generation {
            generation,
            page_size: hashes.page_size(),
        })?;
        out.write(&Frame::WalPosition(position))?;
        self.current = Some(Current { first_txid, path, out });
        self.sync()?;
        fsync_dir(&self.log)?;
        if fresh {
            for (first, _) in self.files()? {
                if first != first_txid {
                    self.remove(first)?;
                }
            }
        }
        Ok(())
    }

    fn remove(&self, first: u64) -> Result<()> {
        for name in [frames_name(first), hashes_name(first)] {
            let p = self.log.join(name);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &p, e)),
            }
        }
        Ok(())
    }

    /// Append records to the current file (buffered until `sync`).
    pub fn append(&mut self, frame: &Frame) -> Result<()> {
        let cur = self.current.as_mut().ok_or_else(|| Error::Usage("shadow log has no open file".into()))?;
        cur.out.write(frame)
    }

    pub fn append_page(&mut self, pgno: u32, data: &[u8]) -> Result<()> {
        let cur = self.current.as_mut().ok_or_else(|| Error::Usage("shadow log has no open file".into()))?;
        cur.out.page(pgno, data)
    }

    /// Make everything appended durable.
    pub fn sync(&mut self) -> Result<()> {
        if let Some(cur) = &mut self.current {
            cur.out.flush()?;
            let file: &File = cur.out_file();
            file.sync_data().map_err(|e| Error::io("fsync", &cur.path, e))?;
        }
        Ok(())
    }

    /// The file being appended to: its first txid and its length now
    /// (right after `sync`, exactly what is durable).
    pub fn current_file(&self) -> Result<Option<(u64, u64)>> {
        let Some(cur) = &self.current else { return Ok(None) };
        let len = cur.out_file().metadata().map_err(|e| Error::io("stat", &cur.path, e))?.len();
        Ok(Some((cur.first_txid, len)))
    }

    /// Bytes in the current file.
    pub fn current_bytes(&self) -> u64 {
        self.current.as_ref().map_or(0, |c| c.out.written())
    }

    /// Remove files whose every transaction is at or below `acked`,
    /// keeping the newest file (it is being appended to, and its base is
    /// what a restart replays from).
    pub fn prune(&mut self, acked: u64) -> Result<u64> {
        let files = self.files()?;
        let mut removed = 0;
        for pair in files.windows(2) {
            let (first, next) = (pair[0].0, pair[1].0);
            if next - 1 <= acked {
                self.remove(first)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Replay the log: the newest base and every transaction after it.
    /// A torn record at the end of the newest file is cut off. `Ok(None)`
    /// when there is nothing usable (no log, or one that does not verify:
    /// the caller starts a new generation and says why).
    pub fn recover(&mut self) -> Result<std::result::Result<Recovered, String>> {
        let files = self.files()?;
        let Some(&(base_first, _)) = files.iter().rev().find(|(_, has)| *has) else {
            return Ok(Err("no shadow log".into()));
        };
        let (generation, base_txid, mut hashes) = match read_hashes(&self.log.join(hashes_name(base_first))) {
            Ok(h) => h,
            Err(e) => return Ok(Err(format!("base {} does not load: {e}", hashes_name(base_first)))),
        };
        if base_txid + 1 != base_first {
            return Ok(Err(format!("base {} is for txid {base_txid}", hashes_name(base_first))));
        }
        let mut txid = base_txid;
        let mut position = None;
        let later: Vec<u64> = files.iter().map(|f| f.0).filter(|f| *f >= base_first).collect();
        for (i, first) in later.iter().enumerate() {
            let last_file = i + 1 == later.len();
            let path = self.log.join(frames_name(*first));
            let replay = replay_file(&path, generation, &mut txid, &mut hashes, &mut position);
            match replay {
                Ok(valid_len) if last_file => {
                    // Cut a torn tail so appends continue after whole records.
                    let f = OpenOptions::new().write(true).open(&path).map_err(|e| Error::io("open", &path, e))?;
                    if f.metadata().map_err(|e| Error::io("stat", &path, e))?.len() != valid_len {
                        f.set_len(valid_len).map_err(|e| Error::io("truncate", &path, e))?;
                        f.sync_all().map_err(|e| Error::io("fsync", &path, e))?;
                    }
                }
                Ok(_) => {}
                Err(e) => return Ok(Err(format!("{} does not replay: {e}", path.display()))),
            }
        }
        let Some(position) = position else {
            return Ok(Err("the shadow log holds no WAL position".into()));
        };
        // Reopen the newest file for appending.
        let newest = *later.last().expect("the base's own file");
        let path = self.log.join(frames_name(newest));
        let file = OpenOptions::new().append(true).open(&path).map_err(|e| Error::io("open", &path, e))?;
        let out = FrameWriter::continue_stream(BufWriter::with_capacity(256 << 10, file));
        self.current = Some(Current {
            first_txid: newest,
            path,
            out,
        });
        Ok(Ok(Recovered {
            generation,
            page_size: hashes.page_size(),
            txid,
            hashes,
            position,
            oldest_txid: files.first().map_or(base_first, |f| f.0),
        }))
    }

    /// Every logged transaction after `after`, in order, to `emit`.
    pub fn resend(&self, after: u64, emit: &mut dyn FnMut(&Frame) -> Result<()>) -> Result<()> {
        let files = self.files()?;
        for (i, (first, _)) in files.iter().enumerate() {
            let next = files.get(i + 1).map_or(u64::MAX, |f| f.0);
            if next <= after + 1 {
                continue;
            }
            let path = self.log.join(frames_name(*first));
            let mut sending = false;
            read_records(&path, &mut |frame| {
                match &frame {
                    Frame::Txn { txid, .. } => sending = *txid > after,
                    Frame::Generation { .. } | Frame::WalPosition(_) | Frame::Marks(_) => return Ok(()),
                    _ => {}
                }
                if sending {
                    emit(&frame)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    pub fn first_txid_of_current(&self) -> Option<u64> {
        self.current.as_ref().map(|c| c.first_txid)
    }
}

impl Current {
    fn out_file(&self) -> &File {
        self.out.get_ref().get_ref()
    }
}

/// Take the lock without waiting on another replicator, but across a
/// moment's retries: a process that forks a child (another test, or our
/// own `-exec`) shares the lock's open file until the child execs, so a
/// lock released a moment ago can still look taken.
fn try_lock(lock: &File) -> bool {
    for attempt in 0..20 {
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return true;
        }
        if attempt < 19 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    false
}

/// The first txid of every `.frames` file in the log directory `log`, oldest first.
pub(crate) fn list_frames(log: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(log).map_err(|e| Error::io("list", log, e))? {
        let name = entry.map_err(|e| Error::io("list", log, e))?.file_name();
        let name = name.to_string_lossy();
        if let Some(first) = name.strip_suffix(".frames").and_then(|h| u64::from_str_radix(h, 16).ok()) {
            out.push(first);
        }
    }
    out.sort();
    Ok(out)
}

/// The db checksum the log's file starting at `first` builds on (the
/// state after txid `first - 1`), from its `.hashes` base.
pub(crate) fn base_checksum(log: &Path, first: u64) -> Result<u64> {
    let (_, _, hashes) = read_hashes(&log.join(hashes_name(first)))?;
    Ok(hashes.checksum())
}

/// Read a `.frames` file record by record; returns the length of its
/// whole records (a torn tail is not an error here).
fn read_records(path: &Path, visit: &mut dyn FnMut(Frame) -> Result<()>) -> Result<u64> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let name = path.display().to_string();
    let mut r = StreamReader::open(std::io::BufReader::with_capacity(1 << 20, file), &name, &[StreamKind::Frames])?;
    let mut page_size = 0;
    let mut valid = r.offset();
    loop {
        let raw = match r.next_raw() {
            Ok(Some(raw)) => raw,
            Ok(None) => return Ok(valid),
            // A torn or damaged tail: whole records before it stand.
            Err(Error::Corrupt { .. }) => return Ok(valid),
            Err(e) => return Err(e),
        };
        let frame = decode_record(&raw, page_size).map_err(|reason| Error::corrupt(&name, raw.offset, reason))?;
        if let Frame::Generation { page_size: ps, .. } = frame {
            page_size = ps;
        }
        // Capture ends every fsync with a WAL_POSITION: a COMMIT without
        // one after it was never fsynced, so never sent.
        let boundary = matches!(frame, Frame::WalPosition(_) | Frame::Generation { .. });
        visit(frame)?;
        if boundary {
            valid = r.offset();
        }
    }
}

/// What replay applied since the last WAL_POSITION, to undo it.
struct Unpositioned {
    /// The txid and database size at that WAL_POSITION.
    txid: u64,
    pages: u32,
    /// (page, hash before) of every hash changed since, in order.
    undo: Vec<(u32, u64)>,
}

/// Apply one file's transactions to `hashes`, checking the chain.
/// Transactions not followed by a WAL_POSITION (a torn tail: capture
/// writes one before every fsync) are undone.
fn replay_file(
    path: &Path,
    generation: u64,
    txid: &mut u64,
    hashes: &mut PageHashes,
    position: &mut Option<WalPosition>,
) -> Result<u64> {
    let name = path.display().to_string();
    let mut unpositioned: Option<Unpositioned> = None;
    let mut open: Option<u64> = None;
    let valid = read_records(path, &mut |frame| {
        match frame {
            Frame::Generation { generation: g, page_size } => {
                if g != generation || page_size != hashes.page_size() {
                    return Err(Error::integrity(&name, "generation or page size differs from the base"));
                }
            }
            Frame::Txn { txid: t, checksum_before } => {
                // A transaction at or below the base is already in it.
                if t > *txid {
                    if t != *txid + 1 || checksum_before != hashes.checksum() {
                        return Err(Error::integrity(&name, format!("transaction {t} does not follow txid {txid}")));
                    }
                    unpositioned.get_or_insert_with(|| Unpositioned {
                        txid: *txid,
                        pages: hashes.len(),
                        undo: Vec::new(),
                    });
                    open = Some(t);
                }
            }
            Frame::Page { pgno, data } => {
                if let (Some(_), Some(u)) = (open, unpositioned.as_mut()) {
                    u.undo.push((pgno, hashes.get(pgno).unwrap_or(0)));
                    hashes.set(pgno, &data);
                }
            }
            Frame::Commit { txid: t, db_pages, checksum_after, .. } => {
                if let Some(open_txid) = open.take() {
                    if let Some(u) = unpositioned.as_mut() {
                        // Pages a shrink drops, for an undo to restore.
                        u.undo.extend((db_pages + 1..=hashes.len()).map(|p| (p, hashes.get(p).unwrap_or(0))));
                    }
                    hashes.resize(db_pages);
                    if open_txid != t || hashes.checksum() != checksum_after {
                        return Err(Error::integrity(&name, format!("transaction {t} does not reproduce its checksum")));
                    }
                    *txid = t;
                }
            }
            Frame::WalPosition(p) => {
                *position = Some(p);
                unpositioned = None;
            }
            _ => {}
        }
        Ok(())
    })?;
    if let Some(u) = unpositioned {
        for (pgno, old) in u.undo.into_iter().rev() {
            hashes.set_hash(pgno, old);
        }
        hashes.resize(u.pages);
        *txid = u.txid;
    }
    Ok(valid)
}

fn write_hashes(path: &Path, generation: u64, txid: u64, hashes: &PageHashes) -> Result<()> {
    let mut buf = Vec::with_capacity(HASHES_HEADER_LEN + hashes.len() as usize * 8 + 4);
    buf.extend_from_slice(HASHES_MAGIC);
    buf.extend_from_slice(&HASHES_VERSION.to_be_bytes());
    buf.extend_from_slice(&0u16.to_be_bytes());
    buf.extend_from_slice(&generation.to_be_bytes());
    buf.extend_from_slice(&txid.to_be_bytes());
    buf.extend_from_slice(&hashes.page_size().to_be_bytes());
    buf.extend_from_slice(&hashes.len().to_be_bytes());
    buf.extend_from_slice(&hashes.checksum().to_be_bytes());
    for h in hashes.iter() {
        buf.extend_from_slice(&h.to_be_bytes());
    }
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_be_bytes());
    let temp = path.with_extension("hashes.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&temp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        fs::rename(&temp, path)
    };
    write().map_err(|e| Error::io("write", path, e))?;
    fsync_dir(path.parent().expect("log directory"))
}

fn read_hashes(path: &Path) -> Result<(u64, u64, PageHashes)> {
    let what = path.display().to_string();
    let buf = fs::read(path).map_err(|e| Error::io("read", path, e))?;
    if buf.len() < HASHES_HEADER_LEN + 4 || &buf[..4] != HASHES_MAGIC {
        return Err(Error::corrupt(&what, 0, "not a page-hashes file"));
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    if crc32fast::hash(body) != u32::from_be_bytes(crc.try_into().unwrap()) {
        return Err(Error::corrupt(&what, body.len() as u64, "checksum mismatch"));
    }
    let be64 = |o: usize| u64::from_be_bytes(body[o..o + 8].try_into().unwrap());
    let be32 = |o: usize| u32::from_be_bytes(body[o..o + 4].try_into().unwrap());
    let (generation, txid, page_size, pages, checksum) = (be64(8), be64(16), be32(24), be32(28), be64(32));
    if body.len() != HASHES_HEADER_LEN + pages as usize * 8 {
        return Err(Error::corrupt(&what, 28, "page count does not match the file size"));
    }
    let mut hashes = PageHashes::new(page_size);
    for (i, c) in body[HASHES_HEADER_LEN..].chunks_exact(8).enumerate() {
        hashes.set_hash(i as u32 + 1, u64::from_be_bytes(c.try_into().unwrap()));
    }
    if hashes.checksum() != checksum {
        return Err(Error::corrupt(&what, 32, "page hashes do not add up to the checksum"));
    }
    Ok((generation, txid, hashes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(byte: u8) -> Vec<u8> {
        vec![byte; 512]
    }

    /// A transaction whose WAL_POSITION did not make it to the log (capture
    /// writes one before every fsync) is undone on recovery, a shrink it
    /// made included, and cut off the file.
    #[test]
    fn recovery_ends_the_log_at_its_last_wal_position() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let state = dir.path().join("state");
        let mut base = PageHashes::new(512);
        for p in 1..=4 {
            base.set(p, &page(p as u8));
        }
        let position = |txid| WalPosition {
            txid,
            salt1: 1,
            salt2: 2,
            offset: 32 + txid * 100,
            chain1: 3,
            chain2: 4,
        };
        let mut log = ShadowLog::open(&db, &state).unwrap();
        log.start_file(7, 2, &base, position(1), true).unwrap();
        // txid 2: two commits merged, page 5 added.
        let mut after2 = base.clone();
        after2.set(2, &page(20));
        let mark = after2.checksum();
        after2.set(5, &page(50));
        let frames = [
            Frame::Txn { txid: 2, checksum_before: base.checksum() },
            Frame::Page { pgno: 2, data: page(20) },
            Frame::Page { pgno: 5, data: page(50) },
            Frame::Marks(vec![mark]),
            Frame::Commit { txid: 2, db_pages: 5, timestamp_ms: 1, checksum_after: after2.checksum() },
            Frame::WalPosition(position(2)),
        ];
        for f in &frames {
            log.append(f).unwrap();
        }
        log.sync().unwrap();
        let durable = log.current_file().unwrap().unwrap().1;
        // txid 3 rewrites page 1 and shrinks to 3 pages, but its
        // WAL_POSITION is missing.
        let mut after3 = after2.clone();
        after3.set(1, &page(10));
        after3.resize(3);
        for f in [
            Frame::Txn { txid: 3, checksum_before: after2.checksum() },
            Frame::Page { pgno: 1, data: page(10) },
            Frame::Commit { txid: 3, db_pages: 3, timestamp_ms: 2, checksum_after: after3.checksum() },
        ] {
            log.append(&f).unwrap();
        }
        log.sync().unwrap();
        drop(log);

        let mut log = ShadowLog::open(&db, &state).unwrap();
        let rec = log.recover().unwrap().unwrap();
        assert_eq!((rec.generation, rec.txid, rec.position), (7, 2, position(2)));
        assert_eq!((rec.hashes.len(), rec.hashes.checksum()), (5, after2.checksum()));
        let (first, len) = log.current_file().unwrap().unwrap();
        assert_eq!((first, len), (2, durable), "the tail after the last WAL_POSITION is cut off");
    }
}
