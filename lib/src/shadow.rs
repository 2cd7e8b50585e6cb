//! The capture stage. `snapshot_once` writes a new generation holding one
//! consistent snapshot of a live database, read without a write lock.

use std::io::Write;
use std::path::Path;

use crate::error::Result;
use crate::frames::{Frame, FrameWriter};
use crate::layout::new_generation;
use crate::snapshot::{
    begin_read, end_read, open_reader, read_snapshot, SnapshotEvent, SnapshotInfo,
};
use crate::time::now_ms;

/// Txid of the snapshot that starts a generation.
pub const FIRST_TXID: u64 = 1;

/// Write GENERATION, SNAPSHOT, its pages, COMMIT and END for `db`.
pub fn snapshot_once<W: Write>(db: &Path, out: &mut FrameWriter<W>) -> Result<(u64, SnapshotInfo)> {
    let conn = open_reader(db)?;
    begin_read(&conn, db)?;
    let generation = new_generation();
    let timestamp_ms = now_ms();
    let info = read_snapshot(db, &conn, &mut |event| match event {
        SnapshotEvent::Start {
            page_size,
            db_pages,
        } => {
            out.write(&Frame::Generation {
                generation,
                page_size,
            })?;
            out.write(&Frame::Snapshot {
                txid: FIRST_TXID,
                db_pages,
                timestamp_ms,
            })
        }
        SnapshotEvent::Page { pgno, data } => out.page(pgno, data),
    })?;
    out.write(&Frame::Commit {
        txid: FIRST_TXID,
        db_pages: info.db_pages,
        timestamp_ms,
        checksum_after: info.checksum,
    })?;
    out.end()?;
    end_read(&conn, db)?;
    Ok((generation, info))
}
