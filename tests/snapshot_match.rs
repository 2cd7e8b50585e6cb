//! Capture merges the commits of one pass into one transaction; a
//! replica's snapshot of the live database read between two of them must
//! still be placed at a txid, with the pages of the state after it
//! (lib/src/snapshot_match.rs). Driven step by step, so the read lands
//! between two merged commits every time.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use lsw::capture::{Capture, CaptureOptions, FrameSink, Since};
use lsw::frames::Frame;
use lsw::live::{LiveReader, LiveSnapshot};
use lsw::log_tail::{LogHead, LogTail, Until};
use lsw::snapshot_match;

struct Discard;

impl FrameSink for Discard {
    fn send(&mut self, _: Frame) -> lsw::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> lsw::Result<()> {
        Ok(())
    }
}

type Pages = Vec<(u32, Vec<u8>)>;

fn all_pages(view: &LiveSnapshot) -> lsw::Result<Pages> {
    let mut pages = Vec::new();
    view.pages(&mut |pgno, data| {
        pages.push((pgno, data.to_vec()));
        Ok(())
    })?;
    Ok(pages)
}

/// A database with some rows, replicated by a capture driven step by
/// step, which has logged it as it is.
struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    conn: rusqlite::Connection,
    cap: Capture,
    head: Arc<LogHead>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, 4096);
    fill(&conn, 50, 300, 10, 1);
    let head = Arc::new(LogHead::new(lsw::shadow_log::state_dir(&db).join("log"), 1));
    let cap = Capture::start(&db, CaptureOptions::default(), Since::OwnLog, Some(head.clone()), &mut Discard).unwrap();
    Fixture { _dir: dir, db, conn, cap, head }
}

#[test]
fn a_read_between_two_merged_commits_becomes_the_state_after_their_txid() {
    let Fixture { _dir, db, conn, mut cap, head } = fixture();
    let before = cap.txid();
    // Commits A, not captured yet; the read stands after them. A replica
    // asks for MARKS before it reads, as replica_worker.rs does.
    fill(&conn, 20, 300, 10, 2);
    let marks = head.want_marks();
    let mut reader = LiveReader::open(&db).unwrap();
    let (read_pages, snapshot) = reader
        .with_snapshot(|view| {
            // Commits B, growing the database; one pass takes A and B.
            fill(&conn, 300, 1000, 60, 3);
            cap.step(&mut Discard)?;
            assert_eq!(cap.txid(), before + 1, "one pass, one transaction");
            let mut tail = LogTail::open(&head, cap.generation(), before)?.expect("the log holds the pass");
            let found = snapshot_match::find(&mut tail, &head, &view.state, Instant::now() + Duration::from_secs(10), &mut |_| Ok(()))?;
            assert!(found.between_commits(), "the read stood inside the merged transaction");
            assert_eq!(found.txid, before + 1);
            assert_eq!(found.checksum, cap.checksum());
            assert!(found.db_pages > view.state.db_pages, "B grew the database past the read");
            let mut pages = Vec::new();
            found.pages(
                |visit| view.pages(visit),
                &mut |pgno, data| {
                    pages.push((pgno, data));
                    Ok(())
                },
            )?;
            Ok((view.state.db_pages, pages))
        })
        .unwrap();
    drop(marks);
    // The snapshot is the database after B, page for page, not the read.
    let now = reader.with_snapshot(all_pages).unwrap();
    assert_eq!(snapshot.len(), now.len());
    assert!(snapshot == now, "the snapshot differs from the database after the merged commits");
    assert!(read_pages < now.len() as u32);
}

#[test]
fn a_read_at_a_commit_boundary_is_that_txid_and_bad_pages_are_refused() {
    let Fixture { _dir, db, conn, mut cap, head } = fixture();
    let before = cap.txid();
    fill(&conn, 40, 300, 10, 2);
    cap.step(&mut Discard).unwrap();
    let mut reader = LiveReader::open(&db).unwrap();
    reader
        .with_snapshot(|view| {
            let mut tail = LogTail::open(&head, cap.generation(), before)?.expect("the log holds the pass");
            let found = snapshot_match::find(&mut tail, &head, &view.state, Instant::now() + Duration::from_secs(10), &mut |_| Ok(()))?;
            assert!(!found.between_commits());
            assert_eq!((found.txid, found.db_pages), (before + 1, view.state.db_pages));
            // A page that is not what the log says fails the checksum.
            let err = found
                .pages(
                    |visit| {
                        view.pages(&mut |pgno, data| {
                            let mut data = data.to_vec();
                            if pgno == 2 {
                                data[100] ^= 1;
                            }
                            visit(pgno, &data)
                        })
                    },
                    &mut |_, _| Ok(()),
                )
                .unwrap_err()
                .to_string();
            assert!(err.contains("do not add up"), "{err}");
            Ok(())
        })
        .unwrap();
}

#[test]
fn marks_are_written_only_while_a_replica_asks_for_them() {
    let Fixture { _dir, conn, mut cap, head, .. } = fixture();
    let marks_of_next_pass = |cap: &mut Capture| {
        let before = cap.txid();
        fill(&conn, 30, 300, 10, before);
        cap.step(&mut Discard).unwrap();
        assert_eq!(cap.txid(), before + 1, "one pass, one transaction");
        let mut tail = LogTail::open(&head, cap.generation(), before).unwrap().expect("the log holds the pass");
        tail.read(&head.get(), Until::End, &mut |_| Ok(())).unwrap();
        assert_eq!(tail.checksum, cap.checksum(), "the log ends at the pass");
        tail.last_marks.len()
    };
    // Nobody reading: the pass is read through the wal-index, last
    // versions only, with no checksum per commit to record.
    assert_eq!(marks_of_next_pass(&mut cap), 0);
    let wanted = head.want_marks();
    assert_eq!(marks_of_next_pass(&mut cap), 2, "three commits merged: the checksums after the first two");
    drop(wanted);
    assert_eq!(marks_of_next_pass(&mut cap), 0);
}
