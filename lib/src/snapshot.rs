//! A consistent snapshot of a live database, read without a write lock
//! (DESIGN.md §4.6): under a read transaction, the database file overlaid
//! with every committed WAL frame. Holding the read transaction means no
//! checkpoint can change a database page we have not overlaid, and no
//! second WAL restart can happen; a first restart (possible when our read
//! mark is 0) shows up as a changed WAL header, and we read again.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rusqlite::{config::DbConfig, Connection, OpenFlags};

use crate::checksum::PageHashes;
use crate::dbfile::{self, wal_path};
use crate::error::{Error, Result};
use crate::frames::WalPosition;
use crate::wal::{self, WalReader};

/// How many times a WAL restart during the read is tolerated before
/// giving up (each retry needs a writer to restart the WAL again).
const MAX_ATTEMPTS: usize = 10;

/// A connection that never writes and never checkpoints: opening and
/// closing it leaves the database and its WAL exactly as they were.
pub fn open_reader(db: &Path) -> Result<Connection> {
    let header = dbfile::read_header(db)?;
    if let Some(h) = header {
        if !h.is_wal() {
            return Err(Error::database(
                db,
                "not in WAL mode (it uses a rollback journal); switch it once with: sqlite3 DB 'PRAGMA journal_mode=wal'",
            ));
        }
    }
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::sqlite("open", db, e))?;
    // The last connection to close would otherwise checkpoint and delete
    // the WAL: a write the user did not ask for.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(|e| Error::sqlite("configure", db, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| Error::sqlite("configure", db, e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(|e| Error::sqlite("read journal mode of", db, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::database(
            db,
            format!("not in WAL mode (journal_mode={mode}); switch it once with: sqlite3 DB 'PRAGMA journal_mode=wal'"),
        ));
    }
    Ok(conn)
}

/// Begin a read transaction: from here until it ends, the WAL cannot be
/// restarted more than once and nothing we have not seen is backfilled.
/// Capture hands its read transaction over on every pass, so the
/// statements are prepared once per connection (`prepare_cached`).
pub fn begin_read(conn: &Connection, db: &Path) -> Result<()> {
    conn.prepare_cached("BEGIN")
        .and_then(|mut s| s.execute([]))
        .and_then(|_| {
            conn.prepare_cached("SELECT count(*) FROM sqlite_schema")?
                .query_row([], |r| r.get::<_, i64>(0))
        })
        .map_err(|e| Error::sqlite("begin read transaction on", db, e))?;
    Ok(())
}

pub fn end_read(conn: &Connection, db: &Path) -> Result<()> {
    conn.prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(|e| Error::sqlite("end read transaction on", db, e))
}

/// What a snapshot read found.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub page_size: u32,
    pub db_pages: u32,
    pub checksum: u64,
    /// The WAL header the overlay was read under (None: no valid WAL).
    pub wal_header: Option<wal::WalHeader>,
    /// Where in the WAL the snapshot stands (txid 0: the caller's to set;
    /// offset 0 when there was no WAL).
    pub wal_position: WalPosition,
}

/// The committed WAL content, newest version of each page.
pub(crate) struct Overlay {
    pub(crate) pages: HashMap<u32, Vec<u8>>,
    pub(crate) db_pages: Option<u32>,
    pub(crate) header: Option<wal::WalHeader>,
    pub(crate) position: WalPosition,
}

pub(crate) fn read_overlay(wal: &Path) -> Result<Overlay> {
    let mut o = Overlay {
        pages: HashMap::new(),
        db_pages: None,
        header: None,
        position: WalPosition::default(),
    };
    let Some(mut r) = WalReader::open(wal)? else {
        return Ok(o);
    };
    o.header = Some(r.header);
    while let Some(txn) = r.next_txn()? {
        for (pgno, page) in txn.pages {
            o.pages.insert(pgno, page);
        }
        o.db_pages = Some(txn.db_pages);
        // A commit that shrinks the database drops pages past its end.
        o.pages.retain(|p, _| *p <= txn.db_pages);
    }
    o.position = r.position(0);
    Ok(o)
}

/// What a snapshot read hands to its visitor: first the shape, then
/// every page in order.
pub enum SnapshotEvent<'a> {
    Start { page_size: u32, db_pages: u32 },
    Page { pgno: u32, data: &'a [u8] },
}

/// Read a consistent snapshot of `db` while `conn` holds a read
/// transaction. Nothing is visited until the overlay is known to be stable.
pub fn read_snapshot(
    db: &Path,
    conn: &Connection,
    visit: &mut dyn FnMut(SnapshotEvent<'_>) -> Result<()>,
) -> Result<SnapshotInfo> {
    let wal = wal_path(db);
    let mut attempt = 0;
    let overlay = loop {
        let overlay = read_overlay(&wal)?;
        if wal::read_header(&wal)? == overlay.header {
            break overlay;
        }
        // The WAL was restarted while we read it: take a fresh read
        // transaction (the restart means our old one had mark 0) and read again.
        attempt += 1;
        if attempt >= MAX_ATTEMPTS {
            return Err(Error::database(
                db,
                "the WAL kept restarting while a snapshot was read; try again",
            ));
        }
        end_read(conn, db)?;
        begin_read(conn, db)?;
    };
    let header = dbfile::read_header(db)?;
    let file = dbfile::shared_handle(db)?;
    let file_len = file
        .metadata()
        .map_err(|e| Error::io("stat database", db, e))?
        .len();
    let page_size = match (overlay.header, header) {
        (Some(w), Some(h)) if w.page_size != h.page_size => {
            return Err(Error::database(
                db,
                format!(
                    "WAL page size {} differs from the database's {}",
                    w.page_size, h.page_size
                ),
            ))
        }
        (Some(w), _) => w.page_size,
        (None, Some(h)) => h.page_size,
        (None, None) => return Err(Error::database(db, "empty file: not a SQLite database yet")),
    };
    let db_pages = match (overlay.db_pages, header) {
        (Some(n), _) => n,
        (None, Some(h)) if h.size_valid => h.db_pages,
        (None, _) => (file_len / u64::from(page_size)) as u32,
    };
    visit(SnapshotEvent::Start {
        page_size,
        db_pages,
    })?;
    let mut hashes = PageHashes::new(page_size);
    let mut buf = vec![0u8; page_size as usize];
    for pgno in 1..=db_pages {
        let page: &[u8] = match overlay.pages.get(&pgno) {
            Some(p) => p,
            None => {
                read_page(&file, db, pgno, &mut buf, file_len)?;
                &buf
            }
        };
        hashes.set(pgno, page);
        visit(SnapshotEvent::Page { pgno, data: page })?;
    }
    Ok(SnapshotInfo {
        page_size,
        db_pages,
        checksum: hashes.checksum(),
        wal_header: overlay.header,
        wal_position: overlay.position,
    })
}

/// Read page `pgno` from the database file; past the end of the file a
/// page reads as zeros (the lock-byte page of a large database, for one).
fn read_page(file: &File, path: &Path, pgno: u32, buf: &mut [u8], file_len: u64) -> Result<()> {
    let off = u64::from(pgno - 1) * buf.len() as u64;
    buf.fill(0);
    if off >= file_len {
        return Ok(());
    }
    let n = ((file_len - off) as usize).min(buf.len());
    file.read_exact_at(&mut buf[..n], off)
        .map_err(|e| Error::io("read database", PathBuf::from(path), e))
}
