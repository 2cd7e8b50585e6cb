//! `litestream generations`, `snapshots` and `wal` on a replica written
//! under a write load: one generation by `litestream replicate`, a second
//! by the pipe tools (with multi-part snapshots). Every column is checked
//! against the replica's files (counts, txid ranges, sizes that sum to
//! the replica's bytes, times in order), `--json` against the table, the
//! DB_PATH form through a config against the URL form, and a restore of
//! each generation against the source as it was when it ended.

mod common;
#[path = "common/load.rs"]
mod load;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use load::{captured_txid, create_schema, replica_state, replicate, wait_until, Load, LoadOptions};
use lsw::layout::SegmentKey;
use lsw::segment::SegmentKind;
use serde_json::Value;

/// The pipe tools as children, killed if the test fails before `stop`.
struct Pipeline(Vec<Child>);

impl Drop for Pipeline {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Pipeline {
    fn start(dir: &Path, db: &Path, replica: &Path) -> Pipeline {
        let spawn = |name: &str, args: &[&str], stdin: Stdio| {
            Command::new(bin(name))
                .args(args)
                .current_dir(dir)
                .stdin(stdin)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        let mut shadow = spawn(
            "lsw-shadow",
            &["--ack", "ack", db.to_str().unwrap()],
            Stdio::null(),
        );
        let mut segment = spawn(
            "lsw-segment",
            &["--sync-interval", "50ms", "--part-size", "64KiB"],
            Stdio::from(shadow.stdout.take().unwrap()),
        );
        let push = spawn(
            "lsw-push",
            &["--ack", "ack", replica.to_str().unwrap()],
            Stdio::from(segment.stdout.take().unwrap()),
        );
        Pipeline(vec![shadow, segment, push])
    }

    /// SIGTERM lsw-shadow; every stage drains and exits 0.
    fn stop(mut self) {
        // SAFETY: kill(2) of our own child, not yet reaped.
        unsafe { libc::kill(self.0[0].id() as i32, libc::SIGTERM) };
        for c in &mut self.0 {
            let status = c.wait().unwrap();
            assert!(status.success(), "a pipeline stage exited with {status}");
        }
        self.0.clear();
    }
}

/// Generation name → segment files (key, size), from the file system.
fn files(replica: &Path) -> BTreeMap<String, Vec<(SegmentKey, u64)>> {
    let mut out: BTreeMap<String, Vec<(SegmentKey, u64)>> = BTreeMap::new();
    for g in std::fs::read_dir(replica.join("lsw1")).unwrap().flatten() {
        let gen = g.file_name().to_string_lossy().into_owned();
        for f in std::fs::read_dir(g.path()).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let key = SegmentKey::parse(&format!("lsw1/{gen}/{name}")).expect("a segment name");
            out.entry(gen.clone())
                .or_default()
                .push((key, f.metadata().unwrap().len()));
        }
    }
    for segs in out.values_mut() {
        segs.sort();
    }
    out
}

fn max_txid(replica: &Path, gen: Option<&str>) -> u64 {
    if !replica.join("lsw1").exists() {
        return 0;
    }
    files(replica)
        .iter()
        .filter(|(g, _)| gen.is_none_or(|x| x == g.as_str()))
        .flat_map(|(_, segs)| segs.iter().map(|(k, _)| k.name.max_txid))
        .max()
        .unwrap_or(0)
}

/// A complete snapshot exists in the generation other than `not`.
fn snapshot_in_new_generation(replica: &Path, not: Option<&str>) -> Option<String> {
    if !replica.join("lsw1").exists() {
        return None;
    }
    files(replica).into_iter().find_map(|(g, segs)| {
        let parts: Vec<_> = segs
            .iter()
            .filter(|(k, _)| k.name.kind == SegmentKind::Snapshot)
            .collect();
        let complete = parts
            .first()
            .is_some_and(|p| p.0.name.parts as usize == parts.len());
        (Some(g.as_str()) != not && complete).then_some(g)
    })
}

fn load_options(seed: u64) -> LoadOptions {
    LoadOptions {
        seed,
        rows: (1, 8),
        payload: (10, 1500),
        pace: Duration::from_millis(4),
        max_commits: Some(120),
        ..LoadOptions::default()
    }
}

/// Copy the (quiet) database and its WAL; fold the WAL into the copy.
fn copy_db(db: &Path, to: &Path) {
    std::fs::copy(db, to).unwrap();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    if wal.exists() {
        std::fs::copy(&wal, format!("{}-wal", to.display())).unwrap();
    }
    checkpoint(to);
}

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    db: PathBuf,
    replica: PathBuf,
    config: PathBuf,
    /// Generation → the source when it ended.
    ends: Vec<(String, PathBuf)>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (db, replica) = (root.join("app.db"), root.join("replica"));
    let conn = create_db(&db, 4096);
    create_schema(&conn);
    drop(conn);
    let mut ends = Vec::new();

    // Generation 1: litestream replicate under the load.
    let mut rep = replicate(
        &db,
        &replica,
        &["--sync-interval", "50ms"],
        &root.join("replicate.log"),
    );
    wait_until("the first snapshot", Duration::from_secs(30), || {
        snapshot_in_new_generation(&replica, None).is_some()
    });
    let first = snapshot_in_new_generation(&replica, None).unwrap();
    Load::start(&db, load_options(1)).stop_when_done();
    wait_until("generation 1 to catch up", Duration::from_secs(30), || {
        captured_txid(&db, &first).is_some_and(|t| max_txid(&replica, Some(&first)) == t)
    });
    rep.signal(libc::SIGTERM);
    rep.wait_ok(Duration::from_secs(30));
    let end1 = root.join("end1.db");
    copy_db(&db, &end1);
    ends.push((first.clone(), end1));

    // Generation 2: the pipe tools (no ack yet: a new generation).
    let pipeline = Pipeline::start(&root, &db, &replica);
    wait_until("the second snapshot", Duration::from_secs(30), || {
        snapshot_in_new_generation(&replica, Some(&first)).is_some()
    });
    let second = snapshot_in_new_generation(&replica, Some(&first)).unwrap();
    Load::start(&db, load_options(2)).stop_when_done();
    wait_until("generation 2 to catch up", Duration::from_secs(30), || {
        captured_txid(&db, &second).is_some_and(|t| max_txid(&replica, Some(&second)) == t)
    });
    pipeline.stop();
    let end2 = root.join("end2.db");
    copy_db(&db, &end2);
    ends.push((second, end2));

    let config = root.join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n      - name: backup\n        path: {}\n",
            db.display(),
            replica.display()
        ),
    )
    .unwrap();
    Fixture {
        _dir: dir,
        dir: root,
        db,
        replica,
        config,
        ends,
    }
}

trait StopWhenDone {
    fn stop_when_done(self) -> load::LoadStats;
}

impl StopWhenDone for Load {
    /// Wait for the load to reach its max_commits, then its stats.
    fn stop_when_done(mut self) -> load::LoadStats {
        wait_until("the load to finish", Duration::from_secs(60), || {
            self.check_alive();
            self.finished()
        });
        self.stop()
    }
}

impl Fixture {
    fn litestream(&self, args: &[&str]) -> String {
        let out = Command::new(bin("litestream"))
            .args(args)
            .current_dir(&self.dir)
            .env_remove("LITESTREAM_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "litestream {args:?}: {stderr}");
        assert!(
            stderr.is_empty(),
            "litestream {args:?} printed to stderr: {stderr}"
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The listing's table and its JSON, checked to say the same.
    fn listing(&self, cmd: &str, extra: &[&str], columns: &[&str]) -> Vec<Value> {
        let url = self.replica.to_str().unwrap();
        let mut args = vec![cmd];
        args.extend_from_slice(extra);
        args.push(url);
        let table = self.litestream(&args);
        args.insert(1, "--json");
        let rows: Vec<Value> =
            serde_json::from_str(&self.litestream(&args)).expect("--json parses");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), rows.len() + 1, "{table}");
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(header, columns, "{table}");
        for (line, row) in lines[1..].iter().zip(&rows) {
            let mut cells: Vec<&str> = line.split_whitespace().collect();
            let mut want: Vec<String> = columns
                .iter()
                .map(|c| match &row[*c] {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
                .collect();
            // The lag grows between the two runs: only its form is compared.
            if let Some(i) = columns.iter().position(|c| *c == "lag") {
                let lag = cells[i];
                assert!(
                    lag.ends_with('s') && lag.starts_with(|c: char| c.is_ascii_digit()),
                    "lag {lag:?}"
                );
                cells.remove(i);
                want.remove(i);
            }
            assert_eq!(
                cells, want,
                "{cmd}: the table and the JSON differ:\n{table}"
            );
        }
        rows
    }
}

fn ms(time: &Value) -> u64 {
    lsw::time::parse_rfc3339(time.as_str().unwrap()).unwrap()
}

#[test]
fn listings_describe_the_replica_and_restores_reach_what_they_say() {
    let f = fixture();
    let on_disk = files(&f.replica);
    assert_eq!(on_disk.len(), 2);
    let (count, bytes) = replica_state(&f.replica);

    // generations
    let gens = f.listing(
        "generations",
        &[],
        &["name", "generation", "lag", "start", "end", "txids"],
    );
    assert_eq!(gens.len(), 2);
    let names: Vec<&str> = gens
        .iter()
        .map(|g| g["generation"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        on_disk.keys().map(String::as_str).collect::<Vec<_>>()
    );
    let mut total = 0;
    for g in &gens {
        let segs = &on_disk[g["generation"].as_str().unwrap()];
        let last = segs.iter().map(|(k, _)| k.name.max_txid).max().unwrap();
        assert_eq!(g["name"], "file");
        assert_eq!(g["txids"], format!("1-{last}"));
        assert_eq!(g["restorable"][0]["first_txid"], 1);
        assert_eq!(g["restorable"][0]["last_txid"], last);
        assert_eq!(g["objects"], segs.len());
        assert_eq!(g["bytes"], segs.iter().map(|s| s.1).sum::<u64>());
        assert_eq!(g["status"], "ok");
        let (start, end) = (ms(&g["start"]), ms(&g["end"]));
        assert!(start < end, "{g}");
        assert_eq!(
            end,
            segs.iter().map(|(k, _)| k.name.last_ts_ms).max().unwrap()
        );
        // Lag: since the newest commit (no database given).
        let lag = g["lag_ms"].as_u64().unwrap();
        assert!(lag > 0 && lag < 600_000, "{g}");
        total += g["bytes"].as_u64().unwrap();
    }
    assert_eq!(total, bytes, "the generations' bytes are the replica's");
    // The second generation began after the first ended.
    let by_time: Vec<&Value> = {
        let mut v: Vec<&Value> = gens.iter().collect();
        v.sort_by_key(|g| ms(&g["start"]));
        v
    };
    assert!(ms(&by_time[1]["start"]) >= ms(&by_time[0]["end"]));
    assert_eq!(by_time[0]["generation"], f.ends[0].0.as_str());

    // snapshots
    let snaps = f.listing(
        "snapshots",
        &[],
        &["replica", "generation", "index", "size", "created", "parts"],
    );
    assert_eq!(snaps.len(), 2, "one snapshot per generation");
    for s in &snaps {
        let segs = &on_disk[s["generation"].as_str().unwrap()];
        let parts: Vec<&(SegmentKey, u64)> = segs
            .iter()
            .filter(|(k, _)| k.name.kind == SegmentKind::Snapshot)
            .collect();
        assert_eq!(s["index"], 1);
        assert_eq!(s["size"], parts.iter().map(|p| p.1).sum::<u64>());
        assert_eq!(s["parts"], parts.len().to_string());
        assert_eq!(s["complete"], true);
        let g = gens
            .iter()
            .find(|g| g["generation"] == s["generation"])
            .unwrap();
        assert_eq!(s["created"], g["start"]);
    }
    // The pipe tools' snapshot was cut into 64 KiB parts.
    let second = &f.ends[1].0;
    let s2 = snaps
        .iter()
        .find(|s| s["generation"] == second.as_str())
        .unwrap();
    assert!(s2["parts_total"].as_u64().unwrap() > 1, "{s2}");

    // wal
    let wal = f.listing(
        "wal",
        &[],
        &["replica", "generation", "index", "txids", "size", "created"],
    );
    for g in &gens {
        let gen = g["generation"].as_str().unwrap();
        let rows: Vec<&Value> = wal.iter().filter(|w| w["generation"] == gen).collect();
        let changes: Vec<&(SegmentKey, u64)> = on_disk[gen]
            .iter()
            .filter(|(k, _)| k.name.kind == SegmentKind::Changes)
            .collect();
        assert_eq!(rows.len(), changes.len());
        assert!(rows.len() > 3, "a write load makes several segments");
        // The segments chain from txid 2 to the generation's last, in order.
        let mut next = 2;
        let mut prev_time = ms(&g["start"]);
        for (w, (key, size)) in rows.iter().zip(&changes) {
            assert_eq!(w["index"], next, "{w}");
            assert_eq!(w["first_txid"], next);
            assert_eq!(
                w["txids"],
                format!("{}-{}", w["first_txid"], w["last_txid"])
            );
            assert_eq!(w["key"], key.to_string());
            assert_eq!(w["size"], *size);
            let t = ms(&w["created"]);
            assert!(t >= prev_time, "times go back at {w}");
            prev_time = t;
            next = w["last_txid"].as_u64().unwrap() + 1;
        }
        assert_eq!(format!("1-{}", next - 1), g["txids"].as_str().unwrap());
        assert_eq!(prev_time, ms(&g["end"]));
    }
    // Snapshots and segments are every object of the replica.
    let listed: u64 = snaps
        .iter()
        .chain(&wal)
        .map(|r| r["size"].as_u64().unwrap())
        .sum();
    let objects: usize = snaps
        .iter()
        .map(|s| s["parts_total"].as_u64().unwrap() as usize)
        .sum::<usize>()
        + wal.len();
    assert_eq!((objects, listed), (count, bytes));

    // -generation filters.
    let only = f.listing(
        "wal",
        &["-generation", second],
        &["replica", "generation", "index", "txids", "size", "created"],
    );
    assert!(!only.is_empty() && only.iter().all(|w| w["generation"] == second.as_str()));

    // The DB_PATH form through the config: the same rows, named by the config.
    let cfg = f.config.to_str().unwrap();
    let db = f.db.to_str().unwrap();
    for cmd in ["generations", "snapshots", "wal"] {
        let by_url: Vec<Value> =
            serde_json::from_str(&f.litestream(&[cmd, "-json", f.replica.to_str().unwrap()]))
                .unwrap();
        let by_db: Vec<Value> =
            serde_json::from_str(&f.litestream(&[cmd, "-json", "-config", cfg, db])).unwrap();
        let by_name: Vec<Value> = serde_json::from_str(
            &f.litestream(&[cmd, "-json", "-config", cfg, "-replica", "backup", db]),
        )
        .unwrap();
        assert_eq!(by_db, by_name);
        assert_eq!(by_url.len(), by_db.len());
        let name = if cmd == "generations" {
            "name"
        } else {
            "replica"
        };
        for (u, d) in by_url.iter().zip(&by_db) {
            assert_eq!(d[name], "backup");
            for key in [
                "generation",
                "index",
                "size",
                "created",
                "txids",
                "start",
                "end",
            ] {
                assert_eq!(u[key], d[key], "{cmd} {key}");
            }
        }
        // Its table names the replica too.
        let table = f.litestream(&[cmd, "-config", cfg, db]);
        assert!(
            table.lines().skip(1).all(|l| l.starts_with("backup ")),
            "{table}"
        );
    }
    // With the database, generations' lag is behind the database, not now.
    let by_db: Vec<Value> =
        serde_json::from_str(&f.litestream(&["generations", "-json", "-config", cfg, db])).unwrap();
    let newest = by_db
        .iter()
        .find(|g| g["generation"] == second.as_str())
        .unwrap();
    assert!(newest["lag_ms"].as_u64().unwrap() < 60_000, "{newest}");

    // Each generation restores to its txid range's end, equal to the
    // source as it was when the generation ended.
    for (gen, end) in &f.ends {
        let g = gens
            .iter()
            .find(|g| g["generation"] == gen.as_str())
            .unwrap();
        let out = f.dir.join(format!("restored-{gen}.db"));
        let last = g["restorable"][0]["last_txid"].to_string();
        f.litestream(&[
            "restore",
            "-generation",
            gen,
            "-txid",
            &last,
            "-o",
            out.to_str().unwrap(),
            f.replica.to_str().unwrap(),
        ]);
        assert_restored_equals(&out, end);
    }
}
