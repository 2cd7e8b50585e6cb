//! The YAML config as Litestream v0.3 users write it: the documentation's
//! forms load to the expected values, every config error is one line
//! naming file:line and key (exit 2), unknown keys are warnings with their
//! line, `$VAR` expansion on and off, `litestream databases` (table and
//! JSON), and `litestream replicate` from a config and from the command
//! line, restored and compared byte for byte.

mod common;
#[path = "common/load.rs"]
mod load;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use load::*;
use lsw_tools::config::{self, LogFormat, ReplicaKind};

const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/configs").join(name)
}

/// `litestream ARGS` with no LITESTREAM_CONFIG unless `env` sets it.
fn litestream(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin("litestream"));
    cmd.args(args).env_remove("LITESTREAM_CONFIG").stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn load_fixture(name: &str) -> config::Config {
    let loaded = config::load(Some(&fixture(name)), true).unwrap().expect("the fixture exists");
    assert!(loaded.warnings.is_empty(), "{name}: {:?}", loaded.warnings);
    loaded.config
}

fn s3(r: &config::ReplicaConfig) -> &lsw::storage::s3::S3Config {
    match &r.kind {
        ReplicaKind::S3(c) => c,
        k => panic!("not an s3 replica: {k:?}"),
    }
}

const HOUR: u64 = 3600;

// ---------------------------------------------------------------------
// The documentation's configs

#[test]
fn s3_with_keys_at_the_top() {
    let c = load_fixture("s3-keys.yml");
    let db = &c.dbs[0];
    assert_eq!(db.path, Path::new("/var/lib/app/db"));
    let r = &db.replicas[0];
    assert_eq!((r.name.as_str(), r.type_name()), ("s3", "s3"));
    let s = s3(r);
    assert_eq!((s.bucket.as_str(), s.path.as_str()), ("mybkt.litestream.io", "db"));
    assert_eq!(s.access_key_id.as_deref(), Some(KEY_ID));
    assert_eq!(s.secret_access_key.as_deref(), Some(SECRET));
    assert_eq!(r.url(), "s3://mybkt.litestream.io/db");
    // Litestream's defaults.
    assert_eq!(r.sync_interval, Duration::from_secs(1));
    assert_eq!(r.retention, Some(Duration::from_secs(24 * HOUR)));
    assert_eq!(r.retention_check_interval, Duration::from_secs(HOUR));
    assert_eq!((r.snapshot_interval, r.validation_interval), (None, None));
    assert_eq!((db.min_checkpoint_page_count, db.max_checkpoint_page_count), (1000, 10_000));
    assert_eq!(db.monitor_interval, Duration::from_secs(1));
    assert_eq!(db.checkpoint_interval, Duration::from_secs(60));
    assert_eq!(db.meta_path, None);
    assert!(c.addr.is_none() && c.exec.is_none());
    assert_eq!(c.logging.format, LogFormat::Text);
}

#[test]
fn s3_compatible_store() {
    let c = load_fixture("s3-compatible.yml");
    let r = &c.dbs[0].replicas[0];
    let s = s3(r);
    assert_eq!((s.bucket.as_str(), s.path.as_str()), ("mybkt", "db"));
    assert_eq!(s.endpoint.as_deref(), Some("http://minio.internal:9000"));
    assert_eq!(s.region.as_deref(), Some("us-east-1"));
    assert!(s.path_style() && s.skip_verify);
    assert_eq!(s.access_key_id.as_deref(), Some("minioadmin"));
    assert_eq!(
        r.url(),
        "s3://mybkt/db?endpoint=http://minio.internal:9000&region=us-east-1&skip-verify=true"
    );
    // Litestream's MinIO form: s3://BUCKET.localhost:PORT/PATH.
    let s = s3(&c.dbs[1].replicas[0]);
    assert_eq!((s.bucket.as_str(), s.path.as_str()), ("mybkt", "other"));
    assert_eq!(s.endpoint.as_deref(), Some("http://localhost:9000"));
    assert!(s.path_style());
    // The keys never show.
    assert!(!format!("{c:?}").contains("minioadmin-secret"));
}

#[test]
fn file_replicas() {
    let c = load_fixture("file.yml");
    let urls: Vec<String> = c.dbs.iter().map(|d| d.replicas[0].url()).collect();
    assert_eq!(urls, ["file:///mnt/backups/db", "file:///mnt/backups/cache"]);
    assert!(c.dbs.iter().all(|d| d.replicas[0].name == "file"));
    assert!(c.db(Path::new("/var/lib/app/./cache.db")).is_some());
    assert!(c.db(Path::new("/var/lib/app/nope.db")).is_none());
}

#[test]
fn several_databases_with_their_settings() {
    let c = load_fixture("multiple.yml");
    let [users, orders] = c.dbs.as_slice() else { panic!("{c:?}") };
    assert_eq!(users.monitor_interval, Duration::from_millis(500));
    assert_eq!(users.checkpoint_interval, Duration::from_secs(30));
    assert_eq!((users.min_checkpoint_page_count, users.max_checkpoint_page_count), (500, 5000));
    let [local, offsite] = users.replicas.as_slice() else { panic!() };
    assert_eq!((local.name.as_str(), local.url()), ("local", "file:///mnt/backups/users".into()));
    assert_eq!(local.retention, Some(Duration::from_secs(72 * HOUR)));
    assert_eq!(local.retention_check_interval, Duration::from_secs(1800));
    assert_eq!((offsite.name.as_str(), offsite.type_name()), ("offsite", "s3"));
    assert_eq!(offsite.sync_interval, Duration::from_secs(10));
    assert_eq!(offsite.snapshot_interval, Some(Duration::from_secs(6 * HOUR)));
    assert_eq!(offsite.validation_interval, Some(Duration::from_secs(12 * HOUR)));
    assert_eq!(orders.meta_path.as_deref(), Some(Path::new("/var/lib/litestream/orders")));
    assert_eq!(orders.replicas[0].retention, Some(Duration::from_secs(168 * HOUR)));
    // meta-path is where the shadow log goes.
    let live = orders.live_options();
    assert_eq!(live.capture.state_dir.as_deref(), Some(Path::new("/var/lib/litestream/orders")));
    assert_eq!(users.live_options().capture.min_checkpoint_pages, 500);
}

#[test]
fn exec_and_addr() {
    let c = load_fixture("exec.yml");
    assert_eq!(c.exec.as_deref(), Some(r#"/usr/local/bin/myapp -addr :8080 -dsn "/var/lib/app/db""#));
    let c = load_fixture("addr.yml");
    assert_eq!(c.addr.as_deref(), Some(":9090"));
    assert_eq!(c.logging.level, lsw::replicator::Level::Debug);
    assert_eq!(c.logging.format, LogFormat::Json);
    assert!(c.logging.stderr);
}

#[test]
fn environment_variables_expand() {
    let text = std::fs::read_to_string(fixture("env.yml")).unwrap();
    let env = |name: &str| {
        Some(match name {
            "APP_DATA" => "/srv/app",
            "REPLICA_BUCKET" => "from-env",
            "REPLICA_KEY_ID" => KEY_ID,
            "REPLICA_SECRET" => SECRET,
            _ => return None, // REPLICA_REGION unset: empty, as in Litestream
        }
        .to_string())
    };
    let (c, warnings) = config::parse(&text, "env.yml", true, &env).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.dbs[0].path, Path::new("/srv/app/db"));
    let s = s3(&c.dbs[0].replicas[0]);
    assert_eq!(s.bucket, "from-env");
    assert_eq!(s.access_key_id.as_deref(), Some(KEY_ID));
    assert_eq!(s.region, None);
}

/// The same through the binary, with real environment variables, and
/// `-no-expand-env` leaving them as they are.
#[test]
fn expansion_on_and_off_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("litestream.yml");
    std::fs::write(&file, "dbs:\n  - path: /data/$APP.db\n    replicas:\n      - path: /backups/${APP}\n").unwrap();
    let f = file.to_str().unwrap();
    let on = litestream(&["databases", "-config", f], &[("APP", "shop")]);
    assert!(on.status.success(), "{}", text(&on.stderr));
    assert_eq!(text(&on.stdout), "path           replicas\n/data/shop.db  file\n");
    let off = litestream(&["databases", "-config", f, "-no-expand-env", "-json"], &[("APP", "shop")]);
    assert!(off.status.success(), "{}", text(&off.stderr));
    let out = text(&off.stdout);
    assert!(out.contains(r#""path": "/data/$APP.db""#), "{out}");
    assert!(out.contains(r#""url": "file:///backups/${APP}""#), "{out}");
}

#[test]
fn example_config_loads_without_warnings() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/litestream.yml");
    let loaded = config::load(Some(&path), true).unwrap().unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(c.addr.as_deref(), Some("127.0.0.1:9090"));
    assert!(!c.dbs.is_empty() && c.dbs.iter().all(|d| !d.replicas.is_empty()));
}

// ---------------------------------------------------------------------
// Errors and warnings

#[test]
fn every_config_error_is_one_line_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "dbs:\n  - path: /a.db\n    replicas:\n      - path: /r\n        sync-interval: soon\n",
            ":5: dbs[0].replicas[0].sync-interval: invalid duration \"soon\"",
        ),
        ("dbs:\n  - path: /a.db\n    monitor-interval: 0\n", ":3: dbs[0].monitor-interval: must be more than 0"),
        ("dbs:\n  - replicas:\n      - path: /r\n", ":2: dbs[0]: no path"),
        ("dbs:\n  - path: /a.db\n    replicas:\n      - name: x\n", ":4: dbs[0].replicas[0]: no url or path"),
        (
            "dbs:\n  - path: /a.db\n    replicas:\n      - path: /r\n      - url: file:///s\n",
            ":5: dbs[0].replicas[1]: a second replica named \"file\" (the first is at line 4)",
        ),
        (
            "dbs:\n  - path: /srv/a.db\n    replicas: [{path: /r}]\n  - path: /srv/../srv/a.db\n",
            ":4: dbs[1].path: /srv/a.db is listed twice (also at line 2)",
        ),
        ("dbs:\n  - path: /a.db\n    replicas:\n      - type: gcs\n        bucket: b\n", ":4: dbs[0].replicas[0].type: gcs replicas are not supported"),
        ("dbs:\n  - path: /a.db\n    replicas:\n      - type: ftp\n        path: /r\n", ":4: dbs[0].replicas[0].type: unknown replica type \"ftp\""),
        ("dbs:\n  - path: /a.db\n    replicas:\n      - url: abs://acct@c/p\n", ":4: dbs[0].replicas[0].url: abs replicas are not supported"),
        ("dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://b/p\n        age:\n          recipients: [x]\n", ":5: dbs[0].replicas[0].age: age encryption is not supported"),
        ("dbs: /a.db\n", ":1: dbs: expected a list, got a value"),
        ("dbs:\n  - path: /a.db\n    replicas:\n      path: /r\n", ":4: dbs[0].replicas: expected a list, got a mapping"),
        ("dbs:\n  - path: [/a.db]\n", ":2: dbs[0].path: expected a value, got a list"),
        ("logging:\n  type: xml\n", ":2: logging.type: expected text or json, got \"xml\""),
        ("dbs:\n  - path: /a.db\n    max-checkpoint-page-count: -5\n", ":3: dbs[0].max-checkpoint-page-count: expected a whole number, got \"-5\""),
        ("dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://b/p\n        force-path-style: sometimes\n", ":5: dbs[0].replicas[0].force-path-style: expected true or false, got \"sometimes\""),
        ("dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://b/p\n        secret-access-key: only\n", ":4: dbs[0].replicas[0]: access-key-id is missing"),
        ("dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://b/p\n        endpoint: \"http://\"\n", ":4: dbs[0].replicas[0]: S3 setting endpoint: invalid URL"),
        ("dbs:\n  - path: /a.db\n    replicas:\n      - type: s3\n        path: db\n", ":4: dbs[0].replicas[0]: an s3 replica needs a bucket"),
        ("dbs:\n  - path: /a.db\n    replicas:\n      - path: s3://b/p\n", ":4: dbs[0].replicas[0].path: s3://b/p is a URL; give it as url: instead"),
        ("dbs:\n  - path: /a.db\n    replicas:\n      - type: s3\n        url: file:///r\n", ":4: dbs[0].replicas[0].type: type s3 does not match url file:///r"),
        ("dbs:\n  - path: /a.db\n  path: /b.db\n", ":3: invalid YAML"),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.yml"));
        std::fs::write(&file, yaml).unwrap();
        let out = litestream(&["databases", "-config", file.to_str().unwrap()], &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}\n{err}");
        assert_eq!(err.lines().count(), 1, "one line for:\n{yaml}\ngot:\n{err}");
        let want = format!("litestream: {}{want}", file.display());
        assert!(err.starts_with(&want), "for:\n{yaml}\ngot:  {err}want: {want}…");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn unknown_key_is_a_warning_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("litestream.yml");
    std::fs::write(
        &file,
        "dbs:\n  - path: /srv/app.db\n    replicas:\n      - url: s3://bkt/app\n\n\n        sync-intrval: 1s\n        colour: blue\nmetrics: true\n",
    )
    .unwrap();
    let out = litestream(&["databases", "-config", file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let f = file.display();
    assert_eq!(
        text(&out.stderr),
        format!(
            "litestream: warning: {f}:7: unknown key \"sync-intrval\" in dbs[0].replicas[0], ignored; did you mean \"sync-interval\"?\n\
             litestream: warning: {f}:8: unknown key \"colour\" in dbs[0].replicas[0], ignored\n\
             litestream: warning: {f}:9: unknown key \"metrics\" at the top level, ignored\n"
        )
    );
    assert_eq!(text(&out.stdout), "path         replicas\n/srv/app.db  s3\n");
}

#[test]
fn where_the_config_is_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, db: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("dbs:\n  - path: {db}\n")).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (a, b) = (write("a.yml", "/a.db"), write("b.yml", "/b.db"));
    // -config beats $LITESTREAM_CONFIG, which is used without it.
    let out = litestream(&["databases", "-config", &a], &[("LITESTREAM_CONFIG", &b)]);
    assert!(text(&out.stdout).contains("/a.db"), "{}", text(&out.stderr));
    let out = litestream(&["databases", "--config", &a], &[]);
    assert!(text(&out.stdout).contains("/a.db"), "{}", text(&out.stderr));
    let out = litestream(&["databases"], &[("LITESTREAM_CONFIG", &b)]);
    assert!(text(&out.stdout).contains("/b.db"), "{}", text(&out.stderr));
    // A file asked for must exist.
    let missing = dir.path().join("missing.yml");
    for args in [vec!["databases", "-config", missing.to_str().unwrap()], vec!["databases"]] {
        let out = litestream(&args, &[("LITESTREAM_CONFIG", missing.to_str().unwrap())]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(text(&out.stderr), format!("litestream: config file not found: {}\n", missing.display()));
    }
    // replicate without arguments needs a config, and says where it looked.
    if !Path::new("/etc/litestream.yml").exists() {
        let out = litestream(&["replicate"], &[]);
        assert_eq!(out.status.code(), Some(2));
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        for place in ["/etc/litestream.yml", "-config", "LITESTREAM_CONFIG"] {
            assert!(err.contains(place), "{err}");
        }
    }
}

#[test]
fn keys_never_shown() {
    let f = fixture("s3-keys.yml");
    for args in [
        vec!["databases", "-config", f.to_str().unwrap()],
        vec!["databases", "-json", "-config", f.to_str().unwrap()],
        vec!["replicate", "--help"],
        vec!["databases", "--help"],
    ] {
        let out = litestream(&args, &[]);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(!all.contains(SECRET) && !all.contains(KEY_ID), "{args:?}:\n{all}");
    }
    // Nor in an error about the replica that holds them.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yml");
    std::fs::write(
        &file,
        format!("dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://b/p\n        access-key-id: {KEY_ID}\n        secret-access-key: {SECRET}\n        sync-interval: x\n"),
    )
    .unwrap();
    let out = litestream(&["databases", "-config", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!text(&out.stderr).contains(SECRET), "{}", text(&out.stderr));
}

// ---------------------------------------------------------------------
// litestream databases

#[test]
fn databases_table_and_json() {
    let f = fixture("multiple.yml");
    let out = litestream(&["databases", "-config", f.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "path                    replicas\n\
         /var/lib/app/users.db   local,offsite\n\
         /var/lib/app/orders.db  s3\n"
    );
    let out = litestream(&["databases", "--json", "-config", f.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        r#"[
  {
    "path": "/var/lib/app/users.db",
    "meta_path": "/var/lib/app/.users.db-lsw",
    "replicas": [
      {"name": "local", "type": "file", "url": "file:///mnt/backups/users", "sync_interval": "1s", "snapshot_interval": null, "retention": "72h0m0s", "retention_check_interval": "30m0s", "validation_interval": null},
      {"name": "offsite", "type": "s3", "url": "s3://mybkt/users", "sync_interval": "10s", "snapshot_interval": "6h0m0s", "retention": "24h0m0s", "retention_check_interval": "1h0m0s", "validation_interval": "12h0m0s"}
    ]
  },
  {
    "path": "/var/lib/app/orders.db",
    "meta_path": "/var/lib/litestream/orders",
    "replicas": [
      {"name": "s3", "type": "s3", "url": "s3://mybkt/orders", "sync_interval": "1s", "snapshot_interval": null, "retention": "168h0m0s", "retention_check_interval": "1h0m0s", "validation_interval": null}
    ]
  }
]
"#
    );
}

// ---------------------------------------------------------------------
// litestream replicate

fn new_db(path: &Path) {
    let conn = create_db(path, 4096);
    create_schema(&conn);
}

fn small_load(db: &Path, seed: u64) -> Load {
    Load::start(
        db,
        LoadOptions {
            seed,
            pace: Duration::from_millis(2),
            ..LoadOptions::default()
        },
    )
}

/// Restore `replica` and compare it with `db` (no writer left).
fn restored_equals(replica: &Path, db: &Path, out: &Path) -> i64 {
    restore(replica, out);
    let n = check_restored(out);
    assert_restored_equals(out, db);
    n
}

#[test]
fn replicate_two_databases_from_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = (d.join("a.db"), d.join("b.db"));
    new_db(&a);
    new_db(&b);
    let file = d.join("litestream.yml");
    std::fs::write(
        &file,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n      - url: file://{}\n        sync-interval: 100ms\n\
             \x20 - path: {}\n    replicas:\n      - name: backup\n        path: {}\n",
            a.display(),
            d.join("rep-a").display(),
            b.display(),
            d.join("rep-b").display()
        ),
    )
    .unwrap();
    let seed = seed("CONFIG_SEED");
    let (load_a, load_b) = (small_load(&a, seed), small_load(&b, seed + 1));
    let mut cmd = Command::new(bin("litestream"));
    cmd.args(["replicate", "-config"]).arg(&file).stdin(Stdio::null()).stdout(Stdio::null());
    let mut rep = Proc::spawn("litestream replicate", cmd, &d.join("replicate.log"));
    wait_until("segments in both replicas and 200 commits", Duration::from_secs(60), || {
        replica_state(&d.join("rep-a")).0 > 1
            && replica_state(&d.join("rep-b")).0 > 1
            && load_a.commits() > 200
            && load_b.commits() > 200
    });
    let (sa, sb) = (load_a.stop(), load_b.stop());
    rep.signal(libc::SIGTERM);
    rep.wait_ok(Duration::from_secs(60));
    let log = rep.stderr();
    for needle in [
        format!("msg=config path={}", file.display()),
        format!("msg=\"initialized db\" path={}", a.display()),
        format!("name=backup type=file sync-interval=1s url=file://{}", d.join("rep-b").display()),
    ] {
        assert!(log.contains(&needle), "{needle:?} not in:\n{log}");
    }
    let na = restored_equals(&d.join("rep-a"), &a, &d.join("ra.db"));
    let nb = restored_equals(&d.join("rep-b"), &b, &d.join("rb.db"));
    assert!(na > 0 && nb > 0);
    println!("a: {} commits, b: {} commits; restored {na} and {nb} rows", sa.commits, sb.commits);
}

#[test]
fn replicate_from_the_command_line_with_a_file_url() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("app.db");
    new_db(&db);
    let replica = d.join("replica");
    let load = small_load(&db, seed("CONFIG_SEED"));
    let mut cmd = Command::new(bin("litestream"));
    cmd.args(["replicate", "-sync-interval", "100ms"])
        .arg(&db)
        .arg(format!("file://{}", replica.display()))
        .env_remove("LITESTREAM_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut rep = Proc::spawn("litestream replicate", cmd, &d.join("replicate.log"));
    wait_until("segments and 200 commits", Duration::from_secs(60), || {
        replica_state(&replica).0 > 1 && load.commits() > 200
    });
    load.stop();
    rep.signal(libc::SIGTERM);
    rep.wait_ok(Duration::from_secs(60));
    assert!(!rep.stderr().contains("msg=config"), "{}", rep.stderr());
    restored_equals(&replica, &db, &d.join("restored.db"));
    // A config and DB_PATH together is a usage error.
    let out = litestream(
        &["replicate", "-config", "x.yml", db.to_str().unwrap(), replica.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // And so is a tuning flag with a config: it belongs in the file.
    let f = fixture("file.yml");
    let out = litestream(&["replicate", "-config", f.to_str().unwrap(), "-sync-interval", "1s"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("set sync-interval in it"), "{}", text(&out.stderr));
}

/// `replicate -once` for cron: pushes what the database holds and exits;
/// the next run continues the same generation with only what changed.
#[test]
fn replicate_once_from_cron() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("app.db");
    new_db(&db);
    let replica = d.join("replica");
    let once = || {
        let out = litestream(&["replicate", "-once", db.to_str().unwrap(), replica.to_str().unwrap()], &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    let first = once();
    assert!(first.contains("durable at"), "{first}");
    // Small transactions: a cron job's worth of edits, not a new database.
    let load = Load::start(
        &db,
        LoadOptions {
            max_commits: Some(25),
            rows: (1, 2),
            payload: (10, 100),
            ..LoadOptions::default()
        },
    );
    wait_until("25 commits", Duration::from_secs(60), || load.finished());
    load.stop();
    let second = once();
    let position = |log: &str| {
        let at = log.rsplit("durable at ").next().unwrap().split_whitespace().next().unwrap();
        at.trim_end_matches('"').to_string()
    };
    let (p1, p2) = (position(&first), position(&second));
    let (g1, t1) = p1.split_once('/').unwrap();
    let (g2, t2) = p2.split_once('/').unwrap();
    assert_eq!(g1, g2, "the second run continues the generation:\n{second}");
    // The load's last connection checkpointed and removed the WAL when it
    // closed, so the 25 commits arrive as one bridging transaction.
    assert!(second.contains("sent as transaction"), "{second}");
    assert_eq!(t2.parse::<u64>().unwrap(), t1.parse::<u64>().unwrap() + 1, "{second}");
    assert_eq!(generations(&replica), 1);
    restored_equals(&replica, &db, &d.join("restored.db"));
}

/// snapshot-interval and retention from the config, through the real
/// binary: the oldest objects go, the replica still restores the source
/// and verifies, and the log says what retention did.
#[test]
fn retention_and_snapshot_interval_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("app.db");
    new_db(&db);
    let replica = d.join("replica");
    let file = d.join("litestream.yml");
    std::fs::write(
        &file,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n      - path: {}\n        sync-interval: 100ms\n        \
             snapshot-interval: 300ms\n        retention: 1s\n        retention-check-interval: 400ms\n",
            db.display(),
            replica.display()
        ),
    )
    .unwrap();
    let load = small_load(&db, seed("CONFIG_SEED"));
    let mut cmd = Command::new(bin("litestream"));
    cmd.args(["replicate", "-config"]).arg(&file).stdin(Stdio::null()).stdout(Stdio::null());
    let mut rep = Proc::spawn("litestream replicate", cmd, &d.join("replicate.log"));
    let oldest_snapshot = || {
        let cat = lsw::plan::Catalog::load(&lsw::storage::file::FileStorage::new(&replica)).unwrap();
        cat.generations
            .values()
            .flatten()
            .filter(|(k, _)| k.name.kind == lsw::segment::SegmentKind::Snapshot)
            .map(|(k, _)| k.name.min_txid)
            .min()
    };
    let mut first = None;
    wait_until("the first snapshot", Duration::from_secs(30), || {
        first = oldest_snapshot();
        first.is_some()
    });
    wait_until("retention to delete the first snapshot", Duration::from_secs(60), || {
        assert!(!rep.exited(), "{}", rep.stderr());
        oldest_snapshot() > first
    });
    load.stop();
    rep.signal(libc::SIGTERM);
    rep.wait_ok(Duration::from_secs(60));
    let log = rep.stderr();
    assert!(log.contains("retention: deleted"), "{log}");
    assert!(log.contains("snapshot-interval"), "{log}");
    restored_equals(&replica, &db, &d.join("restored.db"));
    let out = litestream(&["verify", replica.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
}
