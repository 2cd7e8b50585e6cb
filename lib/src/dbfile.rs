//! What we read from a SQLite database file's 100-byte header, and the
//! checks that turn "not SQLite" and "not in WAL mode" into clear errors.

use std::fs::File;
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::path::Path;

use crate::error::{Error, Result};

pub const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
pub const DB_HEADER_LEN: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbHeader {
    pub page_size: u32,
    /// "In-header database size", valid when `size_valid`.
    pub db_pages: u32,
    pub size_valid: bool,
    /// File format write/read versions: 1 = rollback journal, 2 = WAL.
    pub write_version: u8,
    pub read_version: u8,
}

impl DbHeader {
    pub fn parse(b: &[u8; DB_HEADER_LEN]) -> Option<Self> {
        if &b[..16] != SQLITE_MAGIC {
            return None;
        }
        let raw = u16::from_be_bytes([b[16], b[17]]);
        let page_size = if raw == 1 { 65536 } else { u32::from(raw) };
        let be32 = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap());
        // The in-header size is valid only if the change counter matches
        // "version-valid-for" (https://www.sqlite.org/fileformat2.html).
        let size_valid = be32(24) == be32(92) && be32(28) != 0;
        Some(DbHeader {
            page_size,
            db_pages: be32(28),
            size_valid,
            write_version: b[18],
            read_version: b[19],
        })
    }

    pub fn is_wal(&self) -> bool {
        self.write_version == 2 && self.read_version == 2
    }
}

/// A read-only descriptor of the database file that stays open for the
/// life of the process.
///
/// Closing any descriptor of a file drops every POSIX lock this process
/// holds on it, SQLite's included: a `File::open` + close of the database
/// while our connections are open would silently release their SHARED
/// lock, and an application closing its last connection could then take
/// EXCLUSIVE, checkpoint past our read marks and delete the WAL. So every
/// in-process read of the database file goes through one descriptor per
/// path that is never closed.
pub fn shared_handle(path: &Path) -> Result<Arc<File>> {
    static HANDLES: OnceLock<Mutex<HashMap<PathBuf, Arc<File>>>> = OnceLock::new();
    let key = std::fs::canonicalize(path).map_err(|e| Error::io("open database", path, e))?;
    let mut map = HANDLES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = map.get(&key) {
        // The same path may now name another file (a replaced database):
        // only reuse a descriptor of the file that is there.
        let same = f.metadata().ok().zip(std::fs::metadata(&key).ok()).is_some_and(|(a, b)| {
            use std::os::unix::fs::MetadataExt;
            a.ino() == b.ino() && a.dev() == b.dev()
        });
        if same {
            return Ok(f.clone());
        }
    }
    let f = Arc::new(File::open(&key).map_err(|e| Error::io("open database", path, e))?);
    // A replaced file's old descriptor stays in the map's past: keep it
    // open too (leaked on purpose), for the same reason.
    if let Some(old) = map.insert(key, f.clone()) {
        std::mem::forget(old);
    }
    Ok(f)
}

/// Read the header of `path`, failing clearly for a missing, empty or
/// non-SQLite file. An empty file is a database SQLite has not written yet.
pub fn read_header(path: &Path) -> Result<Option<DbHeader>> {
    let f = shared_handle(path)?;
    let mut b = [0u8; DB_HEADER_LEN];
    let mut got = 0;
    while got < b.len() {
        match f.read_at(&mut b[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(Error::io("read database", path, e)),
        }
    }
    if got == 0 {
        return Ok(None);
    }
    if got < DB_HEADER_LEN || &b[..16] != SQLITE_MAGIC {
        return Err(Error::database(path, "not a SQLite database (bad header)"));
    }
    let h = DbHeader::parse(&b)
        .ok_or_else(|| Error::database(path, "not a SQLite database (bad header)"))?;
    if !crate::frames::valid_page_size(h.page_size) {
        return Err(Error::database(
            path,
            format!("invalid page size {} in the database header", h.page_size),
        ));
    }
    Ok(Some(h))
}

/// The WAL file that belongs to a database.
pub fn wal_path(db: &Path) -> std::path::PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    s.into()
}
