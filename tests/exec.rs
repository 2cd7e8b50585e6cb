//! `litestream replicate -exec CMD`: the child's exit status becomes ours
//! (128+N when signal N killed it), signals to us go to the child, a
//! command that cannot start costs one line and exit 1, and everything
//! written before the child exited is in the replica.

mod common;
#[path = "common/load.rs"]
mod load;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use load::*;

/// A WAL database and a config replicating it to `replica/`.
struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    db: PathBuf,
    replica: PathBuf,
    config: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let db = d.join("app.db");
    let conn = create_db(&db, 4096);
    create_schema(&conn);
    let replica = d.join("replica");
    let config = d.join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n      - path: {}\n        sync-interval: 100ms\n",
            db.display(),
            replica.display()
        ),
    )
    .unwrap();
    Setup {
        _dir: dir,
        dir: d,
        db,
        replica,
        config,
    }
}

/// `litestream replicate -config … -exec CMD`, run in the setup's directory.
fn start(s: &Setup, exec: &str, log: &str) -> Proc {
    let mut cmd = Command::new(bin("litestream"));
    cmd.args(["replicate", "-config"])
        .arg(&s.config)
        .args(["-exec", exec])
        .current_dir(&s.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    Proc::spawn("litestream replicate -exec", cmd, &s.dir.join(log))
}

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn the_childs_exit_code_is_ours() {
    let s = setup();
    for code in [0, 3, 42] {
        let mut rep = start(&s, &format!("sh -c 'exit {code}'"), &format!("exit{code}.log"));
        let status = rep.wait_exit(LIMIT);
        assert_eq!(status.code(), Some(code), "{}", rep.stderr());
        assert!(rep.stderr().contains(&format!("msg=\"child exited; flushing\" status={code}")), "{}", rep.stderr());
    }
}

#[test]
fn a_child_killed_by_a_signal_gives_128_plus_n() {
    let s = setup();
    for (sig, name) in [(9, "KILL"), (15, "TERM")] {
        let mut rep = start(&s, &format!("sh -c 'kill -{name} $$'"), &format!("sig{sig}.log"));
        let status = rep.wait_exit(LIMIT);
        assert_eq!(status.code(), Some(128 + sig), "{}", rep.stderr());
    }
}

#[test]
fn sigterm_to_us_goes_to_the_child() {
    let s = setup();
    // The child says it is ready, traps SIGTERM, writes a file and exits 7.
    let script = "trap 'echo trapped > got-term; exit 7' TERM; echo > ready; while :; do sleep 0.05; done";
    let mut rep = start(&s, &format!("sh -c \"{script}\""), "term.log");
    wait_until("the child to be ready", LIMIT, || s.dir.join("ready").exists());
    rep.signal(libc::SIGTERM);
    let status = rep.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(7), "{}", rep.stderr());
    assert_eq!(std::fs::read_to_string(s.dir.join("got-term")).unwrap(), "trapped\n");
    // SIGHUP and SIGUSR1 are forwarded too, and do not stop us.
    let script = "trap 'echo hup >> got' HUP; trap 'echo usr1 >> got' USR1; trap 'exit 0' TERM; echo > ready2; while :; do sleep 0.05; done";
    let mut rep = start(&s, &format!("sh -c \"{script}\""), "hup.log");
    wait_until("the child to be ready", LIMIT, || s.dir.join("ready2").exists());
    rep.signal(libc::SIGHUP);
    wait_until("the child to get SIGHUP", LIMIT, || {
        std::fs::read_to_string(s.dir.join("got")).is_ok_and(|t| t.contains("hup"))
    });
    rep.signal(libc::SIGUSR1);
    wait_until("the child to get SIGUSR1", LIMIT, || {
        std::fs::read_to_string(s.dir.join("got")).is_ok_and(|t| t.contains("usr1"))
    });
    assert!(!rep.exited(), "a forwarded SIGHUP or SIGUSR1 stopped us:\n{}", rep.stderr());
    rep.signal(libc::SIGTERM);
    assert_eq!(rep.wait_exit(LIMIT).code(), Some(0), "{}", rep.stderr());
}

#[test]
fn a_missing_command_is_one_line_and_exit_1() {
    let s = setup();
    let mut rep = start(&s, "no-such-command-here --flag", "missing.log");
    let status = rep.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        rep.stderr(),
        "litestream: -exec no-such-command-here: command not found or not executable\n"
    );
    // Nothing was replicated: the check comes before replication starts.
    assert!(!s.replica.exists());
    // A command line that does not split is a usage error.
    let mut rep = start(&s, "sh -c 'unclosed", "unclosed.log");
    assert_eq!(rep.wait_exit(LIMIT).code(), Some(2));
    assert_eq!(rep.stderr().lines().count(), 1, "{}", rep.stderr());
}

/// Everything written while the child ran is in the replica once we exit
/// with the child's status: the application's writes, made while the
/// child waits for them to finish.
#[test]
fn everything_written_before_the_child_exits_is_in_the_replica() {
    let s = setup();
    let mut rep = start(&s, "sh -c 'while [ ! -f done ]; do sleep 0.02; done; exit 5'", "writes.log");
    let load = Load::start(
        &s.db,
        LoadOptions {
            seed: seed("EXEC_SEED"),
            pace: Duration::from_millis(1),
            ..LoadOptions::default()
        },
    );
    wait_until("300 commits and a segment", LIMIT, || {
        load.commits() > 300 && replica_state(&s.replica).0 > 1
    });
    let stats = load.stop();
    std::fs::write(s.dir.join("done"), "").unwrap();
    assert_eq!(rep.wait_exit(LIMIT).code(), Some(5), "{}", rep.stderr());
    let out = s.dir.join("restored.db");
    restore(&s.replica, &out);
    let rows = check_restored(&out);
    assert_restored_equals(&out, &s.db);
    println!("{} commits, {rows} rows restored", stats.commits);
}

/// `-exec` on the command line wins over the config's `exec`, and the
/// config's `exec` runs when no flag is given.
#[test]
fn exec_from_the_config() {
    let s = setup();
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("exec: sh -c 'exit 9'\n{text}")).unwrap();
    let mut cmd = Command::new(bin("litestream"));
    cmd.args(["replicate", "-config"]).arg(&s.config).stdin(Stdio::null()).stdout(Stdio::null());
    let mut rep = Proc::spawn("litestream replicate", cmd, &s.dir.join("config-exec.log"));
    assert_eq!(rep.wait_exit(LIMIT).code(), Some(9), "{}", rep.stderr());
    let mut rep = start(&s, "sh -c 'exit 4'", "flag-exec.log");
    assert_eq!(rep.wait_exit(LIMIT).code(), Some(4), "{}", rep.stderr());
}
