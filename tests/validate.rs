//! Validation: `litestream validate` (a verify-only restore, compared
//! with the live database), `litestream verify` (every object checked
//! without restoring), `-max-age`, and `replicate --validation-interval`.
//! Each kind of damage fails both commands with exit 3 naming the
//! object, and nothing is ever left on disk.

mod common;
#[path = "common/load.rs"]
mod load;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use load::{create_schema, wait_until, Load, LoadOptions, Proc};
use lsw::capture::{Capture, CaptureOptions, FrameSink};
use lsw::frames::Frame;
use lsw::push::Pusher;
use lsw::segmenter::{SegmentOptions, Segmenter};
use lsw::storage::file::FileStorage;

/// A database replicated segment by segment through the engine's own
/// stages: a snapshot in `part_bytes` parts, then one changes segment
/// per round of writes. The capture leaves its shadow log beside the
/// database, as a replicator would.
struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    db: PathBuf,
    replica: PathBuf,
    /// TMPDIR of every command run: must be empty after each.
    tmp: PathBuf,
}

struct Frames(Vec<Frame>);

impl FrameSink for Frames {
    fn send(&mut self, frame: Frame) -> lsw::Result<()> {
        self.0.push(frame);
        Ok(())
    }
    fn flush(&mut self) -> lsw::Result<()> {
        Ok(())
    }
}

fn replicate_rounds(db: &Path, replica: &Path, rounds: u64, part_bytes: usize, seed: u64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let storage = FileStorage::new(replica);
    let mut pusher = Pusher::new(&storage, None);
    let mut segmenter = Segmenter::new(SegmentOptions {
        part_bytes,
        sync_interval: Duration::from_secs(3600),
        ..SegmentOptions::default()
    });
    let mut sink = Frames(Vec::new());
    let mut cap = Capture::start(db, CaptureOptions::default(), lsw::capture::Since::Replica(None), None, &mut sink).unwrap();
    let mut ship = |sink: &mut Frames, segmenter: &mut Segmenter| {
        let mut out =
            |seg: lsw::segmenter::EncodedSegment| pusher.push(&seg.key, &seg.bytes).map(|_| ());
        for frame in sink.0.drain(..) {
            segmenter.push(frame, &mut out).unwrap();
        }
        segmenter.flush(&mut out).unwrap();
    };
    ship(&mut sink, &mut segmenter);
    for round in 0..rounds {
        fill(&conn, 20, 300, 10, seed * 1000 + round);
        cap.step(&mut sink).unwrap();
        ship(&mut sink, &mut segmenter);
    }
}

impl Fixture {
    fn new(rounds: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let (db, replica, tmp) = (root.join("app.db"), root.join("replica"), root.join("tmp"));
        std::fs::create_dir(&tmp).unwrap();
        let conn = create_db(&db, 4096);
        fill(&conn, 400, 600, 100, 1);
        replicate_rounds(&db, &replica, rounds, 64 << 10, 1);
        Fixture {
            _dir: dir,
            dir: root,
            db,
            replica,
            tmp,
        }
    }

    /// Segment files of the (single) generation, in name order.
    fn segments(&self) -> Vec<PathBuf> {
        segment_files(&self.replica)
    }

    fn changes(&self) -> Vec<PathBuf> {
        self.segments()
            .into_iter()
            .filter(|p| name(p).ends_with(".changes.lsw"))
            .collect()
    }

    fn run(&self, args: &[&str]) -> Run {
        Command::new(bin("litestream"))
            .args(args)
            .current_dir(&self.dir)
            .env("TMPDIR", &self.tmp)
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    }

    fn assert_nothing_left(&self) {
        let left: Vec<_> = std::fs::read_dir(&self.tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left behind in TMPDIR: {left:?}");
        let beside = files_containing(&self.dir, "lsw-restore");
        assert!(beside.is_empty(), "left behind: {beside:?}");
    }
}

fn segment_files(replica: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for g in std::fs::read_dir(replica.join("lsw1")).unwrap() {
        for f in std::fs::read_dir(g.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

impl Run {
    fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "{self:#?}");
        self
    }
}

/// The txid a segment name ends at.
fn max_txid(p: &Path) -> u64 {
    u64::from_str_radix(&name(p)[17..33], 16).unwrap()
}

#[test]
fn a_sound_replica_passes_validate_and_verify() {
    let f = Fixture::new(6);
    let last = max_txid(f.changes().last().unwrap());
    let snapshot_parts = f
        .segments()
        .iter()
        .filter(|p| name(p).contains(".snapshot-"))
        .count();
    assert!(
        snapshot_parts >= 3,
        "want a snapshot in several parts, got {snapshot_parts}"
    );

    let r = f.run(&["validate", "replica"]);
    r.ok();
    assert!(
        r.stdout.starts_with("valid: generation ")
            && r.stdout.contains(&format!("at txid {last} ")),
        "{r:#?}"
    );
    assert_eq!(r.stdout.lines().count(), 1, "one summary line: {r:#?}");
    assert!(
        r.stdout.contains("newest segment") && r.stdout.contains("restored and checked in"),
        "{r:#?}"
    );
    f.assert_nothing_left();

    // With the live database: idle and caught up, so identical.
    let r = f.run(&["validate", "-replica", "replica", "app.db"]);
    assert!(
        r.ok().stdout.contains("identical to the live database"),
        "{r:#?}"
    );
    // At an earlier txid the live database has moved on; the shadow log
    // still says what it was then.
    let earlier = max_txid(&f.changes()[2]);
    let r = f.run(&[
        "validate",
        "-txid",
        &earlier.to_string(),
        "-replica",
        "replica",
        "app.db",
    ]);
    assert!(
        r.ok().stdout.contains(&format!("at txid {earlier} ")),
        "{r:#?}"
    );
    assert!(
        r.stdout
            .contains("matches the live database at the same txid"),
        "{r:#?}"
    );
    f.assert_nothing_left();

    let r = f.run(&["verify", "replica"]);
    r.ok();
    assert!(r.stdout.contains(": ok;"), "{r:#?}");
    assert!(
        r.stdout.contains(&format!("restorable: txids 1-{last} ")),
        "{r:#?}"
    );
    assert!(
        r.stdout
            .contains(&format!("snapshot at txid 1: {snapshot_parts} parts")),
        "{r:#?}"
    );

    let r = f.run(&["verify", "-json", "-sample", "50%", "replica"]);
    r.ok();
    let json = r.stdout.trim();
    assert!(
        json.starts_with('{') && json.ends_with('}') && json.contains(r#""ok":true"#),
        "{json}"
    );
    assert!(
        json.contains(&format!(
            r#""snapshot_txid":1,"first_txid":1,"last_txid":{last},"#
        )),
        "{json}"
    );
    f.assert_nothing_left();
}

#[test]
fn a_database_path_needs_a_replica() {
    let f = Fixture::new(1);
    let r = f.run(&["validate", "app.db"]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("-replica"), "{r:#?}");
}

#[test]
fn max_age_alerts_on_a_stale_replica() {
    let f = Fixture::new(2);
    f.run(&["validate", "-max-age", "1h", "replica"]).ok();
    f.run(&["verify", "-max-age", "1h", "replica"]).ok();
    for cmd in ["validate", "verify"] {
        let r = f.run(&[cmd, "-max-age", "1ms", "replica"]);
        assert_eq!(r.code, 1, "{r:#?}");
        let line = r.stderr.lines().next().unwrap_or_default();
        assert!(
            line.contains("the newest segment") && line.contains("older than -max-age 1ms"),
            "{r:#?}"
        );
    }
    f.assert_nothing_left();
}

/// Damage the replica with `harm` (which returns what the error must
/// name); both commands must exit 3 naming it and leave nothing.
fn damaged(harm: impl FnOnce(&Fixture) -> String) {
    let f = Fixture::new(6);
    let named = harm(&f);
    for cmd in ["validate", "verify"] {
        let r = f.run(&[cmd, "replica"]);
        assert_eq!(r.code, 3, "{cmd}: {r:#?}");
        let first = r.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("litestream: lsw1/") && first.contains(&named),
            "{cmd} must name {named}: {r:#?}"
        );
        f.assert_nothing_left();
    }
}

#[test]
fn a_flipped_bit_is_named() {
    damaged(|f| {
        let victim = f.changes()[3].clone();
        let mut bytes = std::fs::read(&victim).unwrap();
        let i = bytes.len() / 2;
        bytes[i] ^= 0x10;
        std::fs::write(&victim, bytes).unwrap();
        name(&victim)
    });
}

#[test]
fn a_missing_middle_segment_is_named_by_its_txids() {
    damaged(|f| {
        let victim = f.changes()[2].clone();
        std::fs::remove_file(&victim).unwrap();
        name(&victim)[..33].to_string()
    });
}

#[test]
fn a_truncated_object_is_named() {
    damaged(|f| {
        let victim = f.changes()[4].clone();
        let len = std::fs::metadata(&victim).unwrap().len();
        std::fs::File::options()
            .write(true)
            .open(&victim)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        name(&victim)
    });
}

#[test]
fn a_segment_from_another_generation_is_named() {
    damaged(|f| {
        // A second database, replicated to a replica of its own.
        let other_db = f.dir.join("other.db");
        let other_replica = f.dir.join("other-replica");
        let conn = create_db(&other_db, 4096);
        fill(&conn, 100, 600, 100, 2);
        replicate_rounds(&other_db, &other_replica, 3, 64 << 10, 2);
        let stranger = segment_files(&other_replica)
            .into_iter()
            .rfind(|p| name(p).ends_with(".changes.lsw"))
            .unwrap();
        let victim = f.changes()[3].clone();
        std::fs::copy(&stranger, &victim).unwrap();
        name(&victim)
    });
}

#[test]
fn a_missing_snapshot_part_is_named() {
    damaged(|f| {
        let victim = f
            .segments()
            .into_iter()
            .find(|p| name(p).contains(".snapshot-0001-of-"))
            .unwrap();
        std::fs::remove_file(&victim).unwrap();
        name(&victim)
    });
}

#[test]
fn a_killed_validation_leaves_nothing() {
    let f = Fixture::new(3);
    // A segment that blocks whoever reads it: the restore is under way
    // (its temporary file exists) and stays there until killed.
    let victim = f.changes().last().unwrap().clone();
    std::fs::remove_file(&victim).unwrap();
    let c = std::ffi::CString::new(victim.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut cmd = Command::new(bin("litestream"));
    cmd.args(["validate", "replica"])
        .current_dir(&f.dir)
        .env("TMPDIR", &f.tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut p = Proc::spawn("litestream validate", cmd, &f.dir.join("validate.log"));
    wait_until(
        "the temporary restore file",
        Duration::from_secs(30),
        || !files_containing(&f.tmp, "lsw-restore").is_empty(),
    );
    p.signal(libc::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    f.assert_nothing_left();
}

#[test]
fn a_replica_unlike_the_live_history_is_a_mismatch() {
    let f = Fixture::new(4);
    let last = f.changes().last().unwrap().clone();
    let t = max_txid(&last);
    // The live database moves on (no replicator running)...
    let conn = rusqlite::Connection::open(&f.db).unwrap();
    fill(&conn, 5, 100, 5, 99);
    // ... and its shadow log says txid t had another content than the
    // replica's txid t: the replica holds someone else's history.
    let generation = lsw::layout::parse_generation(&name(last.parent().unwrap())).unwrap();
    let mut log = lsw::shadow_log::ShadowLog::open(&f.db, &lsw::shadow_log::state_dir(&f.db)).unwrap();
    log.start_file(
        generation,
        t + 1,
        &lsw::checksum::PageHashes::new(4096),
        Default::default(),
        true,
    )
    .unwrap();
    let commit = Frame::Commit {
        txid: t,
        db_pages: 1,
        timestamp_ms: 0,
        checksum_after: 0xdead_beef,
    };
    log.append(&commit).unwrap();
    log.sync().unwrap();
    drop(log);
    let r = f.run(&["validate", "-replica", "replica", "app.db"]);
    assert_eq!(r.code, 3, "{r:#?}");
    assert!(
        r.stderr.contains(&name(&last)) && r.stderr.contains(&format!("at txid {t}")),
        "{r:#?}"
    );
    // At a txid the shadow log no longer holds, nothing can be compared:
    // that is not a mismatch.
    let earlier = max_txid(&f.changes()[1]);
    let r = f.run(&[
        "validate",
        "-txid",
        &earlier.to_string(),
        "-replica",
        "replica",
        "app.db",
    ]);
    assert!(
        r.ok()
            .stdout
            .contains("not compared with the live database"),
        "{r:#?}"
    );
    f.assert_nothing_left();
}

#[test]
fn validation_inside_replicate_under_load_finds_no_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let (db, replica, tmp) = (
        dir.path().join("app.db"),
        dir.path().join("replica"),
        dir.path().join("tmp"),
    );
    std::fs::create_dir(&tmp).unwrap();
    create_schema(&create_db(&db, 4096));
    let mut load = Load::start(
        &db,
        LoadOptions {
            seed: load::seed("VALIDATE_SEED"),
            rows: (1, 20),
            payload: (10, 800),
            checkpoint_every: 50,
            pace: Duration::from_millis(2),
            ..LoadOptions::default()
        },
    );
    let mut cmd = Command::new(bin("litestream"));
    cmd.args([
        "replicate",
        "--sync-interval",
        "50ms",
        "--validation-interval",
        "100ms",
    ])
    .arg(&db)
    .arg(&replica)
    .env("TMPDIR", &tmp)
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    let log = dir.path().join("replicate.log");
    let mut rep = Proc::spawn("litestream replicate", cmd, &log);
    // A validation from outside while both run must pass too.
    wait_until("a first validation", Duration::from_secs(120), || {
        rep.stderr().contains("validation ok")
    });
    for _ in 0..3 {
        let out = Command::new(bin("litestream"))
            .arg("validate")
            .arg("-replica")
            .arg(&replica)
            .arg(&db)
            .env("TMPDIR", &tmp)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        load.check_alive();
    }
    rep.wait_for_log("validation ok", 20, Duration::from_secs(180));
    let stats = load.stop();
    assert!(
        stats.commits > 20,
        "the load committed only {} transactions",
        stats.commits
    );
    rep.signal(libc::SIGTERM);
    rep.wait_ok(Duration::from_secs(60));
    let err = rep.stderr();
    assert!(!err.contains("validation error"), "{err}");
    let runs: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("validation ok"))
        .collect();
    let compared = runs.iter().filter(|l| !l.contains("not compared")).count();
    assert!(
        runs.len() >= 20 && compared >= runs.len() / 2,
        "{} runs, {compared} compared with the live database:\n{err}",
        runs.len()
    );
    println!(
        "{} validation runs during {} commits, {compared} compared with the live database",
        runs.len(),
        stats.commits
    );
    let summary = err
        .lines()
        .find(|l| l.contains("validations:"))
        .unwrap_or_default();
    assert!(summary.contains(" 0 failed"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind in TMPDIR: {left:?}");
    check_restored_latest(&replica, dir.path());
}

/// The replica the scheduled validations passed also restores whole.
fn check_restored_latest(replica: &Path, dir: &Path) {
    let out = dir.join("restored.db");
    load::restore(replica, &out);
    load::check_restored(&out);
}
