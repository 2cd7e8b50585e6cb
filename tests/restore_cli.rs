//! `litestream restore` as Litestream v0.3 users know it: the DB_PATH
//! form through a config (to DB_PATH itself unless -o, from the replica
//! with the newest state or the one -replica names), the REPLICA_URL
//! form, -txid / -index / -timestamp against states of the source
//! copied while the replica held exactly them, -dry-run against what the
//! real restore fetched, the -if-* flags, refusals, and the progress
//! line (a terminal gets it, a pipe does not).
//!
//! Every restore is checked: integrity_check ok and byte-equal to the
//! source at the same txid.

mod common;
#[path = "common/load.rs"]
mod load;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use load::{replicate, wait_until};
use lsw::plan::Catalog;
use lsw::storage::file::FileStorage;
use rusqlite::Connection;
use serde_json::Value;

/// The source as it was when the replica held exactly txid `txid`.
struct State {
    txid: u64,
    /// A time after the commit of `txid` and before the next one (ms).
    after_ms: u64,
    /// The database file then, checkpointed.
    copy: PathBuf,
    rows: i64,
}

/// A database replicated by `litestream replicate` in rounds of writes,
/// with a copy of the database at the end of each round. The replicator
/// never checkpoints (thresholds out of reach) and neither does the
/// writer, so the database file only changes by its WAL, and a copy of
/// both taken while the writer waits is a committed state.
struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    db: PathBuf,
    replica: PathBuf,
    states: Vec<State>,
    /// A copy of the replica taken after the first round: an older replica.
    old_replica: PathBuf,
    config: PathBuf,
}

/// The newest txid of the replica's only generation (0 if none).
fn replica_txid(replica: &Path) -> u64 {
    let Ok(cat) = Catalog::load(&FileStorage::new(replica)) else {
        return 0;
    };
    cat.generations
        .values()
        .flat_map(|segs| segs.iter().map(|(k, _)| k.name.max_txid))
        .max()
        .unwrap_or(0)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn rows(path: &Path) -> i64 {
    let conn =
        Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

impl Fixture {
    fn new(rounds: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let (db, replica) = (root.join("app.db"), root.join("replica"));
        std::fs::create_dir(root.join("states")).unwrap();
        let conn = create_db(&db, 4096);
        conn.execute_batch(
            "PRAGMA wal_autocheckpoint=0; CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT);",
        )
        .unwrap();
        let mut rep = replicate(
            &db,
            &replica,
            &[
                "--sync-interval",
                "50ms",
                "--min-checkpoint-page-count",
                "1000000",
                "--max-checkpoint-page-count",
                "2000000",
                "--checkpoint-interval",
                "1h",
            ],
            &root.join("replicate.log"),
        );
        let mut f = Fixture {
            _dir: dir,
            dir: root.clone(),
            db: db.clone(),
            replica: replica.clone(),
            states: Vec::new(),
            old_replica: root.join("old-replica"),
            config: root.join("litestream.yml"),
        };
        let mut rng = Rng::new(7);
        let mut last = 0;
        for round in 0..=rounds {
            if round > 0 {
                // A round: a few transactions of a few rows each.
                for _ in 0..(3 + rng.next() % 5) {
                    let tx = conn.unchecked_transaction().unwrap();
                    for _ in 0..(1 + rng.next() % 20) {
                        let len = 50 + (rng.next() % 2000) as usize;
                        tx.execute("INSERT INTO t(body) VALUES (?1)", [rng.text(len)])
                            .unwrap();
                    }
                    tx.commit().unwrap();
                }
            }
            // Capture may merge a round's commits into one txid: the one
            // the shadow log records for the database as it is now.
            // Before any, the replica's snapshot is txid 1.
            let txid = load::poll(Duration::from_secs(30), "the replica to hold the database", || {
                assert!(!rep.exited(), "replicate exited:\n{}", rep.stderr());
                let txid = match round {
                    0 => 1,
                    _ => load::captured_txid(&db, &load::generation_names(&replica).pop()?)?,
                };
                (replica_txid(&replica) == txid).then_some(txid)
            });
            assert!(txid > last, "a round's commits get a txid after the last round's");
            last = txid;
            f.states.push(f.copy_state(txid));
            if round == 1 {
                copy_dir(&replica, &f.old_replica);
            }
            // The next commit must be stamped later than this state's time.
            let after = f.states.last().unwrap().after_ms;
            wait_until("the clock to move on", Duration::from_secs(5), || {
                lsw::time::now_ms() > after
            });
        }
        drop(conn);
        rep.signal(libc::SIGTERM);
        rep.wait_ok(Duration::from_secs(30));
        std::fs::write(
            &f.config,
            format!(
                "dbs:\n  - path: {}\n    replicas:\n      - name: old\n        path: {}\n      - name: new\n        url: file://{}\n",
                db.display(),
                f.old_replica.display(),
                replica.display()
            ),
        )
        .unwrap();
        f
    }

    /// Copy the database and its WAL (the writer is waiting, nobody
    /// checkpoints), then fold the copy's WAL into it.
    fn copy_state(&self, txid: u64) -> State {
        let copy = self.dir.join("states").join(format!("{txid}.db"));
        std::fs::copy(&self.db, &copy).unwrap();
        let wal = self.dir.join("app.db-wal");
        if wal.exists() {
            std::fs::copy(&wal, self.dir.join("states").join(format!("{txid}.db-wal"))).unwrap();
        }
        checkpoint(&copy);
        State {
            txid,
            after_ms: lsw::time::now_ms(),
            rows: rows(&copy),
            copy,
        }
    }

    fn last(&self) -> &State {
        self.states.last().unwrap()
    }

    fn run(&self, args: &[&str]) -> Run {
        Command::new(bin("litestream"))
            .args(args)
            .current_dir(&self.dir)
            .env_remove("LITESTREAM_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    }

    fn run_ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "litestream {args:?}:\n{}", r.stderr);
        r
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn replica_url(&self) -> String {
        format!("file://{}", self.replica.display())
    }

    fn config_arg(&self) -> String {
        self.config.display().to_string()
    }
}

impl Run {
    /// Exactly one line on stderr, with the exit code and the words expected.
    fn one_line(&self, code: i32, words: &[&str]) {
        assert_eq!(self.code, code, "stderr:\n{}", self.stderr);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line expected:\n{}", self.stderr);
        for w in words {
            assert!(lines[0].contains(w), "{w:?} not in {:?}", lines[0]);
        }
    }
}

/// A restored file equals the state (byte for byte) and passes integrity_check.
fn check(restored: &Path, state: &State) {
    assert_restored_equals(restored, &state.copy);
    assert_eq!(rows(restored), state.rows);
}

#[test]
fn txid_index_and_timestamp_restore_the_state_the_replica_held() {
    let f = Fixture::new(3);
    let url = f.replica_url();
    let txids: Vec<u64> = f.states.iter().map(|s| s.txid).collect();
    assert!(txids.windows(2).all(|w| w[0] < w[1]), "{txids:?}");
    for s in &f.states {
        let by_txid = f.out(&format!("txid-{}.db", s.txid));
        let t = s.txid.to_string();
        f.run_ok(&[
            "restore",
            "-o",
            by_txid.to_str().unwrap(),
            "-txid",
            &t,
            &url,
        ]);
        check(&by_txid, s);

        // -index is the same number in hex, and gives the same file.
        let by_index = f.out(&format!("index-{}.db", s.txid));
        let hex = format!("{:x}", s.txid);
        f.run_ok(&[
            "restore",
            "-o",
            by_index.to_str().unwrap(),
            "-index",
            &hex,
            &url,
        ]);
        check(&by_index, s);
        assert_eq!(
            std::fs::read(&by_index).unwrap(),
            std::fs::read(&by_txid).unwrap()
        );

        // A time after this state's last commit and before the next one.
        let by_time = f.out(&format!("time-{}.db", s.txid));
        let ts = lsw::time::rfc3339(s.after_ms);
        f.run_ok(&[
            "restore",
            "-o",
            by_time.to_str().unwrap(),
            "-timestamp",
            &ts,
            &url,
        ]);
        check(&by_time, s);
    }
    // Rows grow from state to state, so each check above told them apart.
    let rows: Vec<i64> = f.states.iter().map(|s| s.rows).collect();
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "{rows:?}");

    // Latest, with a plain directory as the replica.
    let latest = f.out("latest.db");
    f.run_ok(&[
        "restore",
        "-o",
        latest.to_str().unwrap(),
        f.replica.to_str().unwrap(),
    ]);
    check(&latest, f.last());
    assert_restored_equals(&latest, &f.db);
}

#[test]
fn db_path_from_the_config_restores_the_newest_replica_to_db_path_unless_o() {
    let f = Fixture::new(2);
    let cfg = f.config_arg();
    let db = f.db.to_str().unwrap();

    // The database exists: a restore to it is refused, unchanged.
    let before = std::fs::read(&f.db).unwrap();
    let r = f.run(&["restore", "-config", &cfg, db]);
    r.one_line(1, &[db, "already exists"]);
    assert_eq!(std::fs::read(&f.db).unwrap(), before);
    // ... unless -if-db-not-exists, which says why it did nothing.
    let r = f.run(&["restore", "-config", &cfg, "-if-db-not-exists", db]);
    r.one_line(0, &[db, "already exists", "skipping"]);
    assert_eq!(std::fs::read(&f.db).unwrap(), before);

    // -o: the newest replica ("new", listed second) wins over "old".
    let out = f.out("by-config.db");
    f.run_ok(&["restore", "-config", &cfg, "-o", out.to_str().unwrap(), db]);
    check(&out, f.last());

    // -replica old: the state the old copy held (after round 1).
    let old = f.out("old.db");
    let r = f.run_ok(&[
        "restore",
        "-config",
        &cfg,
        "-replica",
        "old",
        "-o",
        old.to_str().unwrap(),
        "-v",
        db,
    ]);
    check(&old, &f.states[1]);
    assert!(r.stderr.contains("from replica old"), "{}", r.stderr);

    // Without -o, to DB_PATH itself once it is gone.
    std::fs::rename(&f.db, f.out("moved.db")).unwrap();
    let _ = std::fs::remove_file(f.out("app.db-wal"));
    let _ = std::fs::remove_file(f.out("app.db-shm"));
    f.run_ok(&["restore", "-config", &cfg, db]);
    check(&f.db, f.last());

    // An unknown replica name: one line naming it and the ones there are.
    let r = f.run(&[
        "restore", "-config", &cfg, "-replica", "nope", "-o", "x.db", db,
    ]);
    r.one_line(2, &["\"nope\"", db, "old, new"]);
    assert!(!f.out("x.db").exists());
    // A database file the config does not have.
    let r = f.run(&["restore", "-config", &cfg, "-o", "x.db", "moved.db"]);
    r.one_line(2, &["moved.db", "not found in config"]);
    // A path that does not exist is a replica not written yet.
    let r = f.run(&["restore", "-config", &cfg, "-o", "x.db", "nothing-here"]);
    r.one_line(1, &["nothing-here", "holds no backups"]);
    assert!(!f.out("nothing-here").exists() && !f.out("x.db").exists());
}

#[test]
fn dry_run_writes_nothing_and_plans_what_the_restore_fetches() {
    let f = Fixture::new(3);
    let url = f.replica_url();
    let target = &f.states[2];
    let t = target.txid.to_string();
    let out = f.out("dry.db");
    let listing = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = listing(&f.dir);
    let text = f.run_ok(&[
        "restore",
        "-dry-run",
        "-o",
        out.to_str().unwrap(),
        "-txid",
        &t,
        &url,
    ]);
    let json = f.run_ok(&[
        "restore",
        "-dry-run",
        "-json",
        "-o",
        out.to_str().unwrap(),
        "-txid",
        &t,
        &url,
    ]);
    assert_eq!(listing(&f.dir), before, "a dry run wrote something");
    assert!(!out.exists());

    let plan: Value = serde_json::from_str(&json.stdout).expect("the plan is JSON");
    assert_eq!(plan["txid"], target.txid);
    let segments = plan["segments"].as_array().unwrap();
    assert_eq!(plan["segment_count"], segments.len());
    let total: u64 = segments.iter().map(|s| s["bytes"].as_u64().unwrap()).sum();
    assert_eq!(plan["bytes"], total);
    assert_eq!(plan["requests"]["GET"], segments.len());
    assert_eq!(segments[0]["kind"], "snapshot");
    assert_eq!(segments.last().unwrap()["last_txid"], target.txid);
    // The text says the same.
    assert!(
        text.stdout.contains(&format!("txid {}", target.txid)),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains(&format!("{} segments, {total} bytes", segments.len())),
        "{}",
        text.stdout
    );
    for s in segments {
        assert!(
            text.stdout.contains(s["key"].as_str().unwrap()),
            "{}",
            text.stdout
        );
    }

    // The real restore applies exactly those segments, in that order.
    let r = f.run_ok(&[
        "restore",
        "-v",
        "-o",
        out.to_str().unwrap(),
        "-txid",
        &t,
        &url,
    ]);
    let applied: Vec<(String, u64)> = r
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("litestream: applied "))
        .map(|l| {
            let (key, size) = l.split_once(" (").unwrap();
            (
                key.to_string(),
                size.trim_end_matches(" bytes)").parse().unwrap(),
            )
        })
        .collect();
    let planned: Vec<(String, u64)> = segments
        .iter()
        .map(|s| {
            (
                s["key"].as_str().unwrap().to_string(),
                s["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(applied, planned);
    check(&out, target);
}

#[test]
fn if_flags_refusals_and_unknown_generations() {
    let f = Fixture::new(1);
    let url = f.replica_url();

    // An existing output is refused and left as it was.
    let existing = f.out("existing.db");
    std::fs::write(&existing, b"not a database, but mine").unwrap();
    let r = f.run(&["restore", "-o", existing.to_str().unwrap(), &url]);
    r.one_line(1, &["existing.db", "already exists"]);
    assert_eq!(
        std::fs::read(&existing).unwrap(),
        b"not a database, but mine"
    );
    let r = f.run(&[
        "restore",
        "-if-db-not-exists",
        "-o",
        existing.to_str().unwrap(),
        &url,
    ]);
    r.one_line(0, &["existing.db", "skipping"]);
    assert_eq!(
        std::fs::read(&existing).unwrap(),
        b"not a database, but mine"
    );

    // An empty replica: an error, or exit 0 with -if-replica-exists.
    let empty = f.out("empty");
    std::fs::create_dir(&empty).unwrap();
    let r = f.run(&["restore", "-o", "e.db", empty.to_str().unwrap()]);
    r.one_line(1, &["holds no backups"]);
    let r = f.run(&[
        "restore",
        "-if-replica-exists",
        "-o",
        "e.db",
        empty.to_str().unwrap(),
    ]);
    r.one_line(0, &["no backups", "skipping"]);
    assert!(!f.out("e.db").exists());
    // A replica with backups restores with -if-replica-exists.
    let out = f.out("ok.db");
    f.run_ok(&[
        "restore",
        "-if-replica-exists",
        "-o",
        out.to_str().unwrap(),
        &url,
    ]);
    check(&out, f.last());

    // An unknown generation: one line naming it.
    let r = f.run(&[
        "restore",
        "-generation",
        "0123456789abcdef",
        "-o",
        "g.db",
        &url,
    ]);
    r.one_line(1, &["0123456789abcdef"]);
    assert!(!f.out("g.db").exists());
    // The generation that is there.
    let generation = std::fs::read_dir(f.replica.join("lsw1"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned();
    let out = f.out("gen.db");
    f.run_ok(&[
        "restore",
        "-generation",
        &generation,
        "-o",
        out.to_str().unwrap(),
        &url,
    ]);
    check(&out, f.last());

    // A REPLICA_URL needs -o; -replica needs a configured database.
    let r = f.run(&["restore", &url]);
    r.one_line(2, &["-o"]);
    let r = f.run(&["restore", "-replica", "new", "-o", "r.db", &url]);
    r.one_line(2, &["-replica"]);
}


#[test]
fn the_progress_line_goes_to_a_terminal_and_not_to_a_pipe() {
    let f = Fixture::new(2);
    let url = f.replica_url();
    let litestream = bin("litestream");
    // --progress-after 0s: show it at once, so the test does not depend
    // on the restore taking a second.
    let restore = |out: &str| {
        format!(
            "{} restore --progress-after 0s -o {} {url}",
            litestream.display(),
            f.out(out).display()
        )
    };

    let piped = f.run(&["restore", "--progress-after", "0s", "-o", "piped.db", &url]);
    assert_eq!(piped.code, 0, "{}", piped.stderr);
    assert!(!piped.stderr.contains("restoring:"), "{}", piped.stderr);
    assert!(
        piped.stderr.is_empty(),
        "a quiet restore prints nothing: {}",
        piped.stderr
    );
    check(&f.out("piped.db"), f.last());

    if !script_available() {
        println!("note: skipping the terminal half: `script` (util-linux) is not available");
        return;
    }
    let out = Command::new("script")
        .args(["-qec", &restore("tty.db"), "/dev/null"])
        .current_dir(&f.dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("restoring: "), "{printed:?}");
    assert!(printed.contains(" segments, "), "{printed:?}");
    assert!(
        printed.contains("/s, done"),
        "the last update says done: {printed:?}"
    );
    // The line is erased at the end, so the terminal is left clean.
    assert!(
        printed
            .trim_end_matches(['\r', '\n'])
            .ends_with("\r\x1b[2K"),
        "{printed:?}"
    );
    check(&f.out("tty.db"), f.last());
}
