//! Crash tests: an application load with random transaction sizes and
//! application checkpoints of every mode, while the replicator is killed
//! with SIGKILL at pseudo-random moments and restarted. After every kill
//! the replica restores to a database that passes integrity_check, holds
//! whole transactions only (`seq` ids 1..n, kv row 0 = n), and never
//! holds fewer transactions than after the previous kill. At the end the
//! replica equals the source byte for byte.
//!
//! Replay a run with `CRASH_SEED=<printed seed>`; `CRASH_ROUNDS=N` for
//! more rounds.

mod common;
#[path = "common/load.rs"]
mod load;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use load::*;

/// Replicator stand-ins the round loop drives.
trait Replicator {
    fn start(&mut self);
    /// kill -9 (a part of) the replicator; leaves nothing running.
    /// Returns what was killed.
    fn crash(&mut self, rng: &mut Rng) -> &'static str;
    /// Fails if the replicator stopped on its own.
    fn check_running(&mut self);
    /// Start, ask for a clean stop (SIGTERM), and wait for exit 0.
    fn start_and_stop_cleanly(&mut self);
}

fn rounds() -> usize {
    std::env::var("CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30)
}

/// The load both tests run: 1-50 inserts of 10-3000 bytes, kv updates,
/// an application checkpoint of a random mode after about one in 8
/// transactions, paced so the database stays tens of MB.
fn load_options(seed: u64) -> LoadOptions {
    LoadOptions {
        seed,
        busy_timeout: Duration::from_secs(5),
        retry_busy: false,
        checkpoint_every: 8,
        checkpoint_busy_timeout: Duration::from_millis(20),
        pace: Duration::from_millis(40),
        ..LoadOptions::default()
    }
}

/// Kill `rep` `rounds` times while `db` is under load, checking the
/// replica after each kill; then stop the load, run the replicator once
/// more to a clean stop, and compare.
fn crash_rounds(name: &str, dir: &Path, db: &Path, replica: &Path, rep: &mut dyn Replicator) {
    let seed = seed("CRASH_SEED");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let conn = create_db(db, 4096);
    create_schema(&conn);
    drop(conn);

    let mut load = Load::start(db, load_options(seed ^ 0x9e37_79b9_7f4a_7c15));
    rep.start();
    let out = dir.join("restored.db");
    let mut last_state = replica_state(replica);
    let mut prev_n = 0i64;
    let mut killed = std::collections::BTreeMap::<&str, usize>::new();
    let rounds = rounds();
    for round in 1..=rounds {
        wait_until(&format!("{name}: the replica to grow (round {round})"), Duration::from_secs(30), || {
            load.check_alive();
            rep.check_running();
            replica_state(replica) != last_state
        });
        let delay = Duration::from_millis(rng.next() % 301);
        std::thread::sleep(delay);
        let what = rep.crash(&mut rng);
        *killed.entry(what).or_default() += 1;
        last_state = replica_state(replica);

        restore(replica, &out);
        let n = check_restored(&out);
        remove_db(&out);
        assert!(n >= prev_n, "{name} round {round}: the replica went back from {prev_n} to {n} rows (kill -9 of {what})");
        println!(
            "{name} round {round:2}: killed {what} {delay:>5?} after growth; restored {n} rows ({} generations, {} commits)",
            generations(replica),
            load.commits()
        );
        prev_n = n;
        if round < rounds {
            rep.start();
        }
    }

    let stats = load.stop();
    rep.start_and_stop_cleanly();
    restore(replica, &out);
    let n = check_restored(&out);
    assert!(n >= prev_n, "{name}: the final restore has {n} rows, fewer than the {prev_n} of the last round");
    assert_eq!(n as u64, stats.rows, "{name}: the final restore has {n} rows, the application committed {}", stats.rows);
    assert_restored_equals(&out, db);
    let db_bytes = std::fs::metadata(db).unwrap().len();
    println!(
        "{name}: seed {seed}, {rounds} kill -9 rounds ({killed:?}), {} generations, {} commits, {} rows, {:.1} MB database, {:.1}s",
        generations(replica),
        stats.commits,
        stats.rows,
        db_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    println!(
        "{name}: application checkpoints {:?} of {CHECKPOINT_MODES:?}; returned busy=1 {:?}; failed with SQLITE_BUSY {:?}; longest transaction {:?}",
        stats.checkpoints, stats.checkpoints_incomplete, stats.checkpoints_busy_error, stats.max_txn
    );
}

// ---------------------------------------------------------------------
// a. litestream replicate, killed as a whole.

struct Meta {
    db: PathBuf,
    replica: PathBuf,
    logs: PathBuf,
    starts: usize,
    proc: Option<Proc>,
}

const META_FLAGS: &[&str] = &[
    "--sync-interval",
    "200ms",
    "--min-checkpoint-page-count",
    "300",
    "--max-checkpoint-page-count",
    "2000",
];

impl Replicator for Meta {
    fn start(&mut self) {
        self.starts += 1;
        let log = self.logs.join(format!("replicate-{}.log", self.starts));
        self.proc = Some(replicate(&self.db, &self.replica, META_FLAGS, &log));
    }

    fn crash(&mut self, _: &mut Rng) -> &'static str {
        self.proc.take().expect("running").kill9();
        "litestream replicate"
    }

    fn check_running(&mut self) {
        let p = self.proc.as_mut().expect("running");
        if p.exited() {
            panic!("litestream replicate stopped on its own; stderr:\n{}", p.stderr());
        }
    }

    fn start_and_stop_cleanly(&mut self) {
        self.start();
        let mut p = self.proc.take().unwrap();
        // The handler is installed before this line is printed.
        p.wait_for_log("litestream: replicating", 1, Duration::from_secs(30));
        p.signal(libc::SIGTERM);
        p.wait_ok(Duration::from_secs(60));
    }
}

#[test]
fn kill_litestream_replicate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("logs")).unwrap();
    let mut rep = Meta {
        db: d.join("app.db"),
        replica: d.join("replica"),
        logs: d.join("logs"),
        starts: 0,
        proc: None,
    };
    let (db, replica) = (rep.db.clone(), rep.replica.clone());
    crash_rounds("replicate", d, &db, &replica, &mut rep);
}

// ---------------------------------------------------------------------
// b. lsw-shadow --ack A DB | lsw-segment | lsw-push --ack A DIR, one
// stage killed at a time.

struct Pipeline {
    db: PathBuf,
    replica: PathBuf,
    ack: PathBuf,
    logs: PathBuf,
    starts: usize,
    /// shadow, segment, push
    stages: Vec<Proc>,
}

const STAGES: [&str; 3] = ["lsw-shadow", "lsw-segment", "lsw-push"];

impl Replicator for Pipeline {
    fn start(&mut self) {
        assert!(self.stages.is_empty());
        self.starts += 1;
        let log = |stage: &str| self.logs.join(format!("{stage}-{}.log", self.starts));
        // Each Command is a temporary, dropped at once, so this process
        // keeps no end of a pipe open: a stage's death breaks its pipes.
        let mut shadow = Proc::spawn(
            "lsw-shadow",
            {
                let mut c = Command::new(bin("lsw-shadow"));
                c.args(["--min-checkpoint-page-count", "300", "--max-checkpoint-page-count", "2000", "--ack"])
                    .arg(&self.ack)
                    .arg(&self.db)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped());
                c
            },
            &log("lsw-shadow"),
        );
        let mut segment = Proc::spawn(
            "lsw-segment",
            {
                let mut c = Command::new(bin("lsw-segment"));
                c.args(["--sync-interval", "200ms"])
                    .stdin(Stdio::from(shadow.child().stdout.take().unwrap()))
                    .stdout(Stdio::piped());
                c
            },
            &log("lsw-segment"),
        );
        let push = Proc::spawn(
            "lsw-push",
            {
                let mut c = Command::new(bin("lsw-push"));
                c.arg("--ack")
                    .arg(&self.ack)
                    .arg(&self.replica)
                    .stdin(Stdio::from(segment.child().stdout.take().unwrap()))
                    .stdout(Stdio::null());
                c
            },
            &log("lsw-push"),
        );
        self.stages = vec![shadow, segment, push];
    }

    fn crash(&mut self, rng: &mut Rng) -> &'static str {
        let k = (rng.next() % 3) as usize;
        self.stages[k].kill9();
        // The others see their pipes break and must stop on their own.
        for (i, p) in self.stages.iter_mut().enumerate() {
            if i != k {
                p.wait_exit(Duration::from_secs(20));
            }
        }
        self.stages.clear();
        STAGES[k]
    }

    fn check_running(&mut self) {
        for p in &mut self.stages {
            if p.exited() {
                panic!("{} stopped on its own; stderr:\n{}", p.name, p.stderr());
            }
        }
    }

    fn start_and_stop_cleanly(&mut self) {
        self.start();
        // lsw-shadow logs a resumed or new generation once it is running,
        // after installing its signal handler.
        self.stages[0].wait_for_log("lsw-shadow: ", 1, Duration::from_secs(30));
        self.stages[0].signal(libc::SIGTERM);
        for p in &mut self.stages {
            p.wait_ok(Duration::from_secs(60));
        }
        self.stages.clear();
    }
}

#[test]
fn kill_pipeline_stages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("logs")).unwrap();
    let mut rep = Pipeline {
        db: d.join("app.db"),
        replica: d.join("replica"),
        ack: d.join("ack"),
        logs: d.join("logs"),
        starts: 0,
        stages: Vec::new(),
    };
    let (db, replica) = (rep.db.clone(), rep.replica.clone());
    crash_rounds("pipeline", d, &db, &replica, &mut rep);
}
