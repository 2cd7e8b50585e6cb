//! The replicator engine (lsw::replicator) driven through its API: many
//! replicas per database, a replica that is down while the others keep
//! up, snapshots on a schedule, retention, and -once. Every restore goes
//! through the real `litestream restore` and is checked byte for byte.

mod common;
#[path = "common/load.rs"]
mod load;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lsw::plan::Catalog;
use lsw::replicator::{DbSpec, LogEvent, ReplicaSpec, Replicator, RunOptions};
use lsw::storage::file::FileStorage;
use lsw::storage::{ObjectInfo, PutOutcome, Storage};

use common::{assert_restored_equals, create_db};
use load::{Load, LoadOptions};

/// A directory replica that can be switched off: every request fails
/// while it is down, as a replica behind a dead network would.
struct Switchable {
    inner: FileStorage,
    down: AtomicBool,
}

impl Switchable {
    fn check(&self, action: &'static str, key: &str) -> lsw::Result<()> {
        if self.down.load(Ordering::Relaxed) {
            return Err(lsw::Error::Remote {
                action,
                object: key.to_string(),
                reason: "the replica is switched off by the test".into(),
                hint: None,
            });
        }
        Ok(())
    }
}

impl Storage for Switchable {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn list(&self, prefix: &str) -> lsw::Result<Vec<ObjectInfo>> {
        self.check("list", prefix)?;
        self.inner.list(prefix)
    }
    fn get_into(&self, key: &str, buf: &mut Vec<u8>) -> lsw::Result<()> {
        self.check("get", key)?;
        self.inner.get_into(key, buf)
    }
    fn put(&self, key: &str, bytes: &[u8]) -> lsw::Result<PutOutcome> {
        self.check("put", key)?;
        self.inner.put(key, bytes)
    }
    fn delete(&self, key: &str) -> lsw::Result<()> {
        self.check("delete", key)?;
        self.inner.delete(key)
    }
}

fn source(dir: &Path) -> PathBuf {
    let db = dir.join("src.db");
    let conn = create_db(&db, 4096);
    load::create_schema(&conn);
    db
}

fn writes(seed: u64) -> LoadOptions {
    LoadOptions {
        seed,
        rows: (1, 8),
        payload: (20, 2000),
        pace: Duration::from_millis(2),
        ..Default::default()
    }
}

fn spec(db: &Path, replicas: Vec<ReplicaSpec>) -> DbSpec {
    DbSpec {
        path: db.to_path_buf(),
        live: lsw::pipeline::LiveOptions {
            monitor_interval: Duration::from_millis(200),
            ..Default::default()
        },
        replicas,
    }
}

fn replica(name: &str, storage: Arc<dyn Storage>) -> ReplicaSpec {
    let mut r = ReplicaSpec::new(name, storage);
    r.sync_interval = Duration::from_millis(100);
    r
}

/// A replicator running on a thread, with its log lines kept.
struct Running {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<lsw::Result<Vec<lsw::replicator::Outcome>>>>,
    lines: Arc<Mutex<Vec<String>>>,
    metrics: Arc<lsw::metrics::Metrics>,
}

impl Running {
    fn start(dbs: Vec<DbSpec>, opts: RunOptions) -> Running {
        let r = Replicator::new(dbs).unwrap();
        let metrics = r.metrics();
        let stop = Arc::new(AtomicBool::new(false));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let handle = {
            let (stop, lines) = (stop.clone(), lines.clone());
            std::thread::spawn(move || {
                r.run(&opts, &stop, &|e: &LogEvent| {
                    let line = format!("{} {} {}: {}", e.level.as_str(), e.db.display(), e.replica.unwrap_or("-"), e.message);
                    eprintln!("{line}");
                    lines.lock().unwrap().push(line);
                })
            })
        };
        Running {
            stop,
            handle: Some(handle),
            lines,
            metrics,
        }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn finish(mut self) -> Vec<lsw::replicator::Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn restore(replica: &Path, out: &Path) {
    load::restore(replica, out);
}

/// Each replica restores to a database equal to `db`, byte for byte.
fn restores_equal_the_source(dir: &Path, replicas: &[&Path], db: &Path) {
    for (i, r) in replicas.iter().enumerate() {
        let out = dir.join(format!("restored-{i}.db"));
        restore(r, &out);
        assert_restored_equals(&out, db);
        load::check_restored(&out);
    }
}

/// (generation, txid) a replica holds, from its listing.
fn position(storage: &dyn Storage) -> Option<(u64, u64)> {
    lsw::pipeline::replica_position(storage).unwrap().map(|p| (p.generation, p.txid))
}

#[test]
fn two_replicas_each_restore_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let run = Running::start(
        vec![spec(
            &db,
            vec![
                replica("a", Arc::new(FileStorage::new(&a))),
                replica("b", Arc::new(FileStorage::new(&b))),
            ],
        )],
        RunOptions::default(),
    );
    let w = Load::start(&db, writes(1));
    load::wait_until("300 commits", Duration::from_secs(60), || w.commits() >= 300);
    w.stop();
    let outcomes = run.finish();
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0].position, outcomes[1].position, "both replicas end at the same txid");
    restores_equal_the_source(dir.path(), &[&a, &b], &db);
}

/// While one replica is down the other keeps up, capture keeps
/// checkpointing (the WAL stays short), and the shadow log holds what
/// the down replica lacks; once it is back it catches up.
#[test]
fn a_replica_that_is_down_holds_back_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let up = Arc::new(FileStorage::new(&a));
    let flaky = Arc::new(Switchable {
        inner: FileStorage::new(&b),
        down: AtomicBool::new(false),
    });
    let mut dbspec = spec(&db, vec![replica("up", up.clone()), replica("flaky", flaky.clone())]);
    dbspec.live.capture.min_checkpoint_pages = 100;
    dbspec.live.capture.max_checkpoint_pages = 400;
    let run = Running::start(vec![dbspec], RunOptions::default());
    load::wait_until("both replicas hold a snapshot", Duration::from_secs(30), || {
        position(up.as_ref()).is_some() && position(&flaky.inner).is_some()
    });
    flaky.down.store(true, Ordering::Relaxed);
    let w = Load::start(&db, writes(2));
    // The WAL header's salt-1 goes up by one at every WAL restart.
    let wal_salt = || {
        let mut b = [0u8; 20];
        std::fs::File::open(dir.path().join("src.db-wal"))
            .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, 0))
            .map_or(None, |_| Some(u32::from_be_bytes(b[16..20].try_into().unwrap())))
    };
    let salt_before = wal_salt();
    let checkpoints = || run.metrics.dbs[0].checkpoints_forced.get() + run.metrics.dbs[0].checkpoints_passive.get();
    let checkpoints_before = checkpoints();
    load::wait_until("1,500 commits and a WAL restart while a replica is down", Duration::from_secs(120), || {
        w.commits() >= 1_500 && wal_salt() != salt_before
    });
    w.stop();
    // The healthy replica has everything captured; the other has nothing new.
    let head = run.metrics.dbs[0].txid.get();
    load::wait_until("the healthy replica at the head", Duration::from_secs(30), || {
        position(up.as_ref()).map(|p| p.1) == Some(run.metrics.dbs[0].txid.get())
    });
    let flaky_at = position(&flaky.inner).unwrap().1;
    assert!(flaky_at < head, "the switched-off replica cannot have moved ({flaky_at} of {head})");
    // Capture kept checkpointing, and the WAL restarted (the wait above):
    // how far the WAL grows between restarts depends on the machine's
    // speed, so no byte bound is asserted here.
    assert!(checkpoints() >= checkpoints_before + 2, "capture stopped checkpointing while a replica was down");
    assert!(run.metrics.dbs[0].shadow_log_bytes.get() > 0);
    assert!(run.log().contains("switched off by the test"), "the failure is logged:\n{}", run.log());
    flaky.down.store(false, Ordering::Relaxed);
    load::wait_until("the other replica caught up", Duration::from_secs(60), || {
        position(&flaky.inner).map(|p| p.1) == Some(run.metrics.dbs[0].txid.get())
    });
    assert!(run.log().contains("working again"), "{}", run.log());
    run.finish();
    restores_equal_the_source(dir.path(), &[&a, &b], &db);
}

/// `snapshot-interval`: later snapshots in the same generation; a restore
/// from each point in between still works.
#[test]
fn snapshot_interval_adds_snapshots_to_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path());
    let a = dir.path().join("a");
    let storage = Arc::new(FileStorage::new(&a));
    let mut r = replica("a", storage.clone());
    r.snapshot_interval = Some(Duration::from_millis(300));
    let run = Running::start(vec![spec(&db, vec![r])], RunOptions::default());
    let w = Load::start(&db, writes(3));
    let snapshots = |s: &FileStorage| {
        let cat = Catalog::load(s).unwrap();
        let generations = cat.generations.len();
        let snaps: std::collections::BTreeSet<u64> = cat
            .generations
            .values()
            .flatten()
            .filter(|(k, _)| k.name.kind == lsw::segment::SegmentKind::Snapshot)
            .map(|(k, _)| k.name.min_txid)
            .collect();
        (generations, snaps)
    };
    load::wait_until("three snapshots", Duration::from_secs(60), || snapshots(storage.as_ref()).1.len() >= 3);
    w.stop();
    run.finish();
    let (generations, snaps) = snapshots(storage.as_ref());
    assert_eq!(generations, 1, "snapshots stay in one generation");
    let out = dir.path().join("latest.db");
    restore(&a, &out);
    assert_restored_equals(&out, &db);
    load::check_restored(&out);
    // The state at an earlier snapshot restores too.
    let second = *snaps.iter().nth(1).unwrap();
    let out = dir.path().join("second.db");
    common::sh_ok(dir.path(), &format!("litestream restore -txid {second} -o {} {}", out.display(), a.display()));
    load::check_restored(&out);
}

/// Retention deletes what no restore inside the window needs and keeps
/// the replica restorable; with nothing inside the window it snapshots.
#[test]
fn retention_deletes_the_old_chain_and_keeps_the_replica_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path());
    let a = dir.path().join("a");
    let storage = Arc::new(FileStorage::new(&a));
    let mut r = replica("a", storage.clone());
    r.retention = Some(Duration::from_millis(600));
    r.retention_check_interval = Duration::from_millis(300);
    let lists = |s: &FileStorage| {
        s.operations()
            .iter()
            .find(|o| o.operation == lsw::storage::Operation::List)
            .map_or(0, |o| o.requests)
    };
    let run = Running::start(vec![spec(&db, vec![r])], RunOptions::default());
    load::wait_until("the first snapshot", Duration::from_secs(30), || {
        run.metrics.dbs[0].replicas[0].snapshots.get() > 0
    });
    let listed_at_start = lists(storage.as_ref());
    let w = Load::start(&db, writes(4));
    load::wait_until("retention deleted something", Duration::from_secs(60), || {
        run.metrics.dbs[0].replicas[0].retention_deleted.get() >= 3
    });
    w.stop();
    run.finish();
    // Checks plan from the listing read at start, kept up to date.
    assert_eq!(lists(storage.as_ref()), listed_at_start, "retention listed the replica again");
    let first = first_snapshot_txid(&a);
    assert!(first > 1, "the generation's first snapshot is still there");
    let out = dir.path().join("out.db");
    restore(&a, &out);
    assert_restored_equals(&out, &db);
    load::check_restored(&out);
    common::sh_ok(dir.path(), &format!("litestream verify {}", a.display()));
}

/// The txid of the oldest snapshot in a replica.
fn first_snapshot_txid(replica: &Path) -> u64 {
    let cat = Catalog::load(&FileStorage::new(replica)).unwrap();
    cat
        .generations
        .values()
        .flatten()
        .filter(|(k, _)| k.name.kind == lsw::segment::SegmentKind::Snapshot)
        .map(|(k, _)| k.name.min_txid)
        .min()
        .unwrap()
}

/// `once`: what the database holds now goes to every replica, then it
/// returns; a second run adds only what changed.
#[test]
fn once_pushes_what_is_there_and_returns() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path());
    let a = dir.path().join("a");
    let storage: Arc<dyn Storage> = Arc::new(FileStorage::new(&a));
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("BEGIN; INSERT INTO seq(payload) VALUES (randomblob(3000)); UPDATE kv SET v = 1 WHERE k = 0; COMMIT;").unwrap();
    let once = || {
        Replicator::new(vec![spec(&db, vec![replica("a", storage.clone())])])
            .unwrap()
            .run(&RunOptions { once: true }, &AtomicBool::new(false), &|e| eprintln!("{}", e.message))
            .unwrap()
    };
    let first = once();
    let p1 = first[0].position.unwrap();
    conn.execute_batch("BEGIN; INSERT INTO seq(payload) VALUES (randomblob(3000)); UPDATE kv SET v = 2 WHERE k = 0; COMMIT;").unwrap();
    let second = once();
    let p2 = second[0].position.unwrap();
    assert_eq!(p1.generation, p2.generation, "the second run continues the generation");
    assert_eq!(p2.txid, p1.txid + 1, "one transaction more");
    drop(conn);
    let out = dir.path().join("out.db");
    restore(&a, &out);
    assert_restored_equals(&out, &db);
}

/// The source as it is now, read under a read transaction (the file
/// overlaid with the WAL), written to `out`: what a restore to the
/// current txid must equal.
fn copy_source(db: &Path, out: &Path) {
    let mut reader = lsw::live::LiveReader::open(db).unwrap();
    let mut bytes = Vec::new();
    reader
        .with_snapshot(|view| {
            view.pages(&mut |_, page| {
                bytes.extend_from_slice(page);
                Ok(())
            })
        })
        .unwrap();
    std::fs::write(out, bytes).unwrap();
}

/// `litestream restore -dry-run -json`: (txid, the planned segments' ranges).
fn dry_run(replica: &Path, target: &[&str]) -> (u64, Vec<(u64, u64)>) {
    let o = std::process::Command::new(common::bin("litestream"))
        .args(["restore", "-dry-run", "-json", "-o", "/nonexistent/out.db"])
        .args(target)
        .arg(replica)
        .output()
        .unwrap();
    assert!(o.status.success(), "dry run: {}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ranges = plan["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["first_txid"].as_u64().unwrap(), s["last_txid"].as_u64().unwrap()))
        .collect();
    (plan["txid"].as_u64().unwrap(), ranges)
}

/// Compaction: under a write load with a 10 ms sync interval the
/// replicator stores many small changes segments and, over them,
/// compacted ones; a restore takes the compacted ones (far fewer
/// objects) and equals the source, and a restore to a txid inside a
/// compacted range goes through the small ones and equals the source
/// as it was at that txid.
#[test]
fn compacted_segments_make_restores_fetch_few_objects() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path());
    let a = dir.path().join("a");
    let storage = Arc::new(FileStorage::new(&a));
    let mut r = replica("a", storage.clone());
    r.sync_interval = Duration::from_millis(10);
    let run = Running::start(vec![spec(&db, vec![r])], RunOptions::default());
    let m = run.metrics.clone();
    let changes = || -> Vec<(u64, u64)> {
        let cat = Catalog::load(storage.as_ref()).unwrap();
        cat.generations
            .values()
            .flatten()
            .filter(|(k, _)| k.name.kind == lsw::segment::SegmentKind::Changes)
            .map(|(k, _)| (k.name.min_txid, k.name.max_txid))
            .collect()
    };
    // Bursts of writes with pauses in between: at each pause the source
    // is copied, so the state at that txid is known exactly.
    let mut pauses: Vec<(u64, PathBuf)> = Vec::new();
    let inside = |t: u64, segs: &[(u64, u64)]| segs.iter().any(|&(lo, hi)| lo <= t && t < hi);
    let covers = |(lo, hi): (u64, u64), (l, h): (u64, u64)| lo <= l && h <= hi;
    let is_compacted = |s: (u64, u64), segs: &[(u64, u64)]| segs.iter().any(|&c| c != s && covers(s, c));
    for round in 0.. {
        let w = Load::start(
            &db,
            LoadOptions {
                max_commits: Some(150),
                ..writes(20 + round)
            },
        );
        load::wait_until("the burst", Duration::from_secs(60), || w.finished());
        w.stop();
        // Capture may not have read the burst's last commits yet: wait
        // for the txid the shadow log records for the database as it is.
        let txid = load::poll(Duration::from_secs(30), "the replica to hold the database", || {
            let t = load::captured_txid(&db, &load::generation_names(&a).pop()?)?;
            (m.dbs[0].replicas[0].txid.get() == t).then_some(t)
        });
        if round < 4 {
            let copy = dir.path().join(format!("source-at-{txid}.db"));
            copy_source(&db, &copy);
            pauses.push((txid, copy));
        }
        let segs = changes();
        // A compacted segment of compacted segments.
        let level1 = segs.iter().any(|&s| segs.iter().any(|&c| c != s && covers(s, c) && is_compacted(c, &segs)));
        let pause_inside = pauses.iter().any(|(t, _)| inside(*t, &segs));
        if round >= 4 && level1 && pause_inside {
            break;
        }
        assert!(round < 200, "no compacted segment over a pause after {round} bursts:\n{segs:?}");
    }
    run.finish();

    let segs = changes();
    let compacted = m.dbs[0].replicas[0].segments_compacted.get();
    assert!(compacted > 0);
    let small = segs.len() as u64 - compacted;
    assert!(small > 2 * 16, "the load stored {small} small segments");
    let (txid, plan) = dry_run(&a, &[]);
    println!("{small} small segments, {compacted} compacted; a restore to txid {txid} fetches {}", plan.len());
    assert_eq!(txid, m.dbs[0].txid.get());
    assert!(
        plan.len() * 5 < small as usize,
        "the plan fetches {} objects of {small} small segments: {plan:?}",
        plan.len()
    );
    assert!(plan.iter().any(|&s| is_compacted(s, &segs)), "a compacted segment is used: {plan:?}");
    let out = dir.path().join("latest.db");
    restore(&a, &out);
    assert_restored_equals(&out, &db);
    load::check_restored(&out);

    // Each pause inside a compacted range: the plan goes around it, and
    // the restore equals the source at that txid.
    let mut checked = 0;
    for (t, copy) in &pauses {
        let (txid, plan) = dry_run(&a, &["-txid", &t.to_string()]);
        assert_eq!(txid, *t);
        assert!(plan.iter().all(|&(_, hi)| hi <= *t), "{plan:?}");
        let out = dir.path().join(format!("at-{t}.db"));
        common::sh_ok(dir.path(), &format!("litestream restore -txid {t} -o {} {}", out.display(), a.display()));
        assert_restored_equals(&out, copy);
        load::check_restored(&out);
        checked += usize::from(inside(*t, &segs));
    }
    assert!(checked > 0, "no pause fell inside a compacted segment");
    common::sh_ok(dir.path(), &format!("litestream verify {}", a.display()));
}
