//! S3 replicas against a real S3 server: moto_server on 127.0.0.1,
//! started by this test binary (once, shared by its tests) and stopped
//! when the binary exits. The pipe tools and `litestream restore` run as
//! real processes; faults come from a small TCP proxy in front of the
//! server that drops connections, answers 503 and cuts responses short.
//!
//! moto is installed by `just test` (`python3 -m pip install
//! 'moto[server]'`). Without it these tests fail, loudly: they never skip.

mod common;
#[path = "common/load.rs"]
mod load;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use lsw::storage::s3::{S3Config, S3Storage};
use lsw::storage::{PutOutcome, Storage};

// Distinctive so a leak into any output is easy to catch.
const KEY_ID: &str = "AKIDLSWTEST7QX2";
const SECRET: &str = "lswTestSecret/9f3kQ0zR";

// ---------------------------------------------------------------------
// The S3 server

/// A moto_server child. Its wrapper shell reads our end of a pipe and
/// kills the server when that pipe closes, which happens when this test
/// binary exits however it exits (statics are never dropped; the OS
/// closes the pipe).
struct Moto {
    port: u16,
    tls: bool,
    _wrapper: Child,
    _lifeline: ChildStdin,
}

static MOTO: OnceLock<Moto> = OnceLock::new();
/// A second server that checks credentials (all but its first request).
static MOTO_AUTH: OnceLock<Moto> = OnceLock::new();
/// A third one over TLS with a self-signed certificate.
static MOTO_TLS: OnceLock<Moto> = OnceLock::new();

fn moto() -> &'static Moto {
    MOTO.get_or_init(|| Moto::start(&[], false))
}

impl Moto {
    fn start(env: &[(&str, &str)], tls: bool) -> Moto {
        let probe = Command::new("python3")
            .args(["-c", "import moto.server, flask, werkzeug"])
            .output();
        match probe {
            Ok(out) if out.status.success() => {}
            other => panic!(
                "moto_server is not installed, and the S3 tests need it (they do not skip):\n  \
                 python3 -m pip install 'moto[server]'   (`just test` does this)\n{other:?}"
            ),
        }
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log =
                std::env::temp_dir().join(format!("lsw-moto-{}-{port}.log", std::process::id()));
            let script = r#"python3 -m moto.server -H 127.0.0.1 -p "$1" $3 >"$2" 2>&1 &
m=$!
trap 'kill $m 2>/dev/null; rm -f "$2"' EXIT
trap 'exit 1' INT TERM HUP
cat >/dev/null"#;
            let mut cmd = Command::new("sh");
            cmd.args(["-c", script, "sh", &port.to_string(), log.to_str().unwrap()])
                .arg(if tls { "--ssl" } else { "" })
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("start sh for moto_server");
            let lifeline = child.stdin.take().unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    // Ready when it answers HTTP, not merely accepts.
                    if tls || http(port, "GET", "/moto-api/").is_some() {
                        return Moto {
                            port,
                            tls,
                            _wrapper: child,
                            _lifeline: lifeline,
                        };
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
                last_log = std::fs::read_to_string(&log).unwrap_or_default();
                if last_log.contains("Address already in use") {
                    break;
                }
            }
            drop(lifeline);
            let _ = child.wait();
        }
        panic!("moto_server did not come up on 127.0.0.1 within 60 s; its log:\n{last_log}");
    }

    fn endpoint(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if self.tls { "https" } else { "http" },
            self.port
        )
    }

    /// Create a bucket (moto accepts unsigned requests until told otherwise).
    fn bucket(&self, name: &str) -> String {
        if self.tls {
            let url = format!("{}/{name}", self.endpoint());
            let py = "import ssl,sys,urllib.request as u; u.urlopen(u.Request(sys.argv[1], method='PUT'), context=ssl._create_unverified_context())";
            let out = Command::new("python3")
                .args(["-c", py, &url])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "create bucket {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            assert_eq!(
                http(self.port, "PUT", &format!("/{name}")),
                Some(200),
                "create bucket {name}"
            );
        }
        name.to_string()
    }

    fn url(&self, bucket: &str, path: &str) -> String {
        format!("s3://{bucket}/{path}?endpoint={}", self.endpoint())
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One plain HTTP/1.1 request; the status code, if any answer came.
fn http(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    String::from_utf8_lossy(&resp)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------
// Running the tools

/// The environment every S3 command runs with: our test keys, and no
/// chance of the AWS chain reaching for a profile or the instance
/// metadata service.
fn s3_env(key_id: &str, secret: &str) -> String {
    format!(
        "export LITESTREAM_ACCESS_KEY_ID='{key_id}' LITESTREAM_SECRET_ACCESS_KEY='{secret}' \
         AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent\n\
         unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE\n"
    )
}

/// Run a script that must succeed with the test keys; returns stderr.
fn s3_ok(dir: &Path, script: &str) -> String {
    let stderr = sh_ok(dir, &format!("{}{script}", s3_env(KEY_ID, SECRET)));
    assert_no_secrets(&stderr);
    stderr
}

fn s3_run(dir: &Path, key_id: &str, secret: &str, script: &str) -> Output {
    sh(dir, &format!("{}{script}", s3_env(key_id, secret)))
}

fn assert_no_secrets(text: &str) {
    assert!(!text.contains(SECRET), "the secret key leaked:\n{text}");
    assert!(!text.contains(KEY_ID), "the access key id leaked:\n{text}");
}

/// `kind N` from a `requests: PUT 3, GET 0, …` line.
fn requests(stderr: &str, kind: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("requests:"))
        .unwrap_or_else(|| panic!("no request counts in:\n{stderr}"));
    let counts = line.split("requests:").nth(1).unwrap_or("");
    counts
        .split(',')
        .find_map(|p| p.trim().strip_prefix(kind)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {kind} count in {line:?}"))
}

/// A source database of about `rows * row_bytes` bytes.
fn source_db(dir: &Path, rows: usize, row_bytes: usize, seed: u64) {
    let conn = create_db(&dir.join("src.db"), 4096);
    fill(&conn, rows, row_bytes, 1000, seed);
}

// ---------------------------------------------------------------------
// Round trips

#[test]
fn pipeline_round_trip_through_s3() {
    let s3 = moto();
    let bucket = s3.bucket("round-trip");
    let url = s3.url(&bucket, "apps/main.db");
    let dir = tempfile::tempdir().unwrap();
    source_db(dir.path(), 3000, 200, 1);
    let pushed = s3_ok(
        dir.path(),
        &format!("lsw-shadow --once src.db | lsw-segment --part-size 64KiB | lsw-push -v '{url}'"),
    );
    assert!(requests(&pushed, "PUT") > 1, "{pushed}");
    assert_eq!(
        requests(&pushed, "LIST"),
        1,
        "one listing per generation: {pushed}"
    );
    let pulled = s3_ok(
        dir.path(),
        &format!("lsw-pull -v '{url}' | lsw-apply piped.db"),
    );
    assert_eq!(requests(&pulled, "PUT"), 0, "{pulled}");
    s3_ok(
        dir.path(),
        &format!("litestream restore -v -o meta.db '{url}'"),
    );
    assert_eq!(
        std::fs::read(dir.path().join("piped.db")).unwrap(),
        std::fs::read(dir.path().join("meta.db")).unwrap()
    );
    assert_restored_equals(&dir.path().join("piped.db"), &dir.path().join("src.db"));

    // More writes, a new generation: restore picks the latest.
    let conn = rusqlite::Connection::open(dir.path().join("src.db")).unwrap();
    fill(&conn, 500, 300, 100, 2);
    drop(conn);
    s3_ok(
        dir.path(),
        &format!("lsw-shadow --once src.db | lsw-segment | lsw-push '{url}'"),
    );
    s3_ok(
        dir.path(),
        &format!("litestream restore -o latest.db '{url}'"),
    );
    assert_restored_equals(&dir.path().join("latest.db"), &dir.path().join("src.db"));
}

#[test]
fn repush_costs_no_puts() {
    let s3 = moto();
    let bucket = s3.bucket("repush");
    let url = s3.url(&bucket, "db");
    let dir = tempfile::tempdir().unwrap();
    source_db(dir.path(), 2000, 200, 3);
    s3_ok(
        dir.path(),
        "lsw-shadow --once src.db | lsw-segment --part-size 64KiB > all.segs",
    );
    let first = s3_ok(dir.path(), &format!("lsw-push -v '{url}' < all.segs"));
    let stored = requests(&first, "PUT");
    assert!(stored > 1, "{first}");
    let again = s3_ok(dir.path(), &format!("lsw-push -v '{url}' < all.segs"));
    assert!(again.contains("stored 0 segments"), "{again}");
    assert_eq!(
        requests(&again, "PUT"),
        0,
        "a re-push uploads nothing: {again}"
    );
    assert_eq!(requests(&again, "LIST"), 1, "{again}");
    s3_ok(dir.path(), &format!("lsw-pull '{url}' | lsw-apply out.db"));
    assert_restored_equals(&dir.path().join("out.db"), &dir.path().join("src.db"));
}

/// The backend through the library: a multipart upload (small parts so
/// the test stays small), ranges of keys, delete, and a put that loses
/// the race to another writer (If-None-Match: * answered 412).
#[test]
fn multipart_upload_and_conditional_put() {
    let s3 = moto();
    let bucket = s3.bucket("library");
    let open = || {
        let mut c = S3Config::from_url(&s3.url(&bucket, "lib")).unwrap();
        c.access_key_id = Some(KEY_ID.into());
        c.secret_access_key = Some(SECRET.into());
        c.multipart_threshold = 6 << 20;
        c.part_size = 5 << 20;
        S3Storage::new(c).unwrap()
    };
    let a = open();
    assert_no_secrets(&format!("{a:?}"));
    let mut rng = Rng::new(9);
    let big: Vec<u8> = (0..(12 << 20) / 8)
        .flat_map(|_| rng.next().to_le_bytes())
        .collect();
    assert_eq!(a.put("g/big", &big).unwrap(), PutOutcome::Stored);
    let counts: std::collections::HashMap<_, _> = a.request_counts().into_iter().collect();
    // create + 3 parts + complete
    assert_eq!(counts["PUT"], 5, "{counts:?}");
    assert_eq!(a.get("g/big").unwrap(), big);
    // Bytes per operation: the parts carry the body, create and complete none.
    let bytes = |op| a.operations().into_iter().find(|c| c.operation == op).unwrap().bytes;
    assert_eq!(bytes(lsw::storage::Operation::Put), big.len() as u64);
    assert_eq!(bytes(lsw::storage::Operation::Get), big.len() as u64);
    assert_eq!(a.put("g/big", &big).unwrap(), PutOutcome::AlreadyPresent);

    // b lists g/ (empty of "g/small"), then a stores it: b's conditional
    // PUT must find it there.
    let b = open();
    assert_eq!(b.put("g/first", b"1").unwrap(), PutOutcome::Stored);
    assert_eq!(a.put("g/small", b"small").unwrap(), PutOutcome::Stored);
    assert_eq!(
        b.put("g/small", b"small").unwrap(),
        PutOutcome::AlreadyPresent
    );

    let keys: Vec<_> = a
        .list("g/")
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    assert_eq!(
        keys,
        [
            ("g/big".to_string(), big.len() as u64),
            ("g/first".into(), 1),
            ("g/small".into(), 5)
        ]
    );
    a.delete("g/small").unwrap();
    a.delete("g/small").unwrap(); // deleting what is gone is fine
    assert!(matches!(a.get("g/small"), Err(lsw::Error::NotFound(_))));
    assert_eq!(a.list("g/s").unwrap(), []);
}

// ---------------------------------------------------------------------
// Faults

/// A TCP proxy in front of the server. Each connection carries one
/// request (it adds `Connection: close`), and a share of them fail: the
/// connection is dropped before any answer, or answered 503 SlowDown, or
/// the response is cut off after a random number of bytes.
struct FaultyProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    stats: Arc<ProxyStats>,
}

#[derive(Default)]
struct ProxyStats {
    /// While set, every connection is closed at once, unread: the server
    /// is "down".
    outage: AtomicBool,
    refused: AtomicU64,
    requests: AtomicU64,
    dropped: AtomicU64,
    unavailable: AtomicU64,
    cut: AtomicU64,
    ranged: AtomicU64,
}

impl FaultyProxy {
    /// `faulty`: inject faults; otherwise only outages.
    fn start(upstream: u16, seed: u64, faulty: bool) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ProxyStats::default());
        let (stop2, stats2) = (stop.clone(), stats.clone());
        let upstream: SocketAddr = ([127, 0, 0, 1], upstream).into();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if stats2.outage.load(Ordering::Relaxed) {
                    stats2.refused.fetch_add(1, Ordering::Relaxed);
                    continue; // dropped: closed unread
                }
                let stats = stats2.clone();
                let roll = if faulty {
                    splitmix(seed ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
                } else {
                    99 // pass through
                };
                std::thread::spawn(move || {
                    let _ = proxy_one(conn, upstream, roll, &stats);
                });
            }
        });
        FaultyProxy { port, stop, stats }
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A well-mixed 64-bit hash of `x` (splitmix64), one roll per connection.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn proxy_one(
    mut client: TcpStream,
    upstream: SocketAddr,
    roll: u64,
    stats: &ProxyStats,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    // The request head, and whatever of the body came with it.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut chunk)?;
        if n == 0 || buf.len() > 1 << 16 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    if head.to_ascii_lowercase().contains("\r\nrange:") {
        stats.ranged.fetch_add(1, Ordering::Relaxed);
    }
    match roll % 100 {
        0..=11 => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            return client.shutdown(Shutdown::Both);
        }
        12..=23 => {
            stats.unavailable.fetch_add(1, Ordering::Relaxed);
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
            write!(
                client,
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            return client.shutdown(Shutdown::Both);
        }
        _ => {}
    }
    let cut_at = (roll % 100 >= 24 && roll % 100 <= 40).then(|| 200 + (roll >> 8) % (64 << 10));
    // One request per connection, so every request takes its own chances.
    let mut lines: Vec<&str> = head
        .trim_end()
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.insert(1, "Connection: close");
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(format!("{}\r\n\r\n", lines.join("\r\n")).as_bytes())?;
    up.write_all(&buf[head_end..])?;
    let (mut c2, mut u2) = (client.try_clone()?, up.try_clone()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
    });
    let mut sent = 0u64;
    loop {
        let n = up.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        if let Some(limit) = cut_at {
            if sent + n as u64 > limit {
                client.write_all(&chunk[..(limit - sent) as usize])?;
                stats.cut.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        client.write_all(&chunk[..n])?;
        sent += n as u64;
    }
    let _ = up.shutdown(Shutdown::Both);
    client.shutdown(Shutdown::Both)
}

#[test]
fn restore_survives_dropped_connections_503s_and_cut_downloads() {
    let s3 = moto();
    let bucket = s3.bucket("faults");
    let dir = tempfile::tempdir().unwrap();
    source_db(dir.path(), 12_000, 500, 4);
    // Segments of about 100 KiB, so many downloads are cut mid-body.
    s3_ok(
        dir.path(),
        &format!(
            "lsw-shadow --once src.db | lsw-segment --part-size 256KiB | lsw-push '{}'",
            s3.url(&bucket, "db")
        ),
    );
    let proxy = FaultyProxy::start(s3.port, 42, true);
    let url = format!("s3://{bucket}/db?endpoint=http://127.0.0.1:{}", proxy.port);
    let restored = s3_ok(
        dir.path(),
        &format!("litestream restore -v -o meta.db '{url}'"),
    );
    s3_ok(
        dir.path(),
        &format!("lsw-pull -v '{url}' | lsw-apply piped.db"),
    );
    assert_restored_equals(&dir.path().join("meta.db"), &dir.path().join("src.db"));
    assert_restored_equals(&dir.path().join("piped.db"), &dir.path().join("src.db"));

    let st = &proxy.stats;
    let (dropped, unavailable, cut, ranged) = (
        st.dropped.load(Ordering::Relaxed),
        st.unavailable.load(Ordering::Relaxed),
        st.cut.load(Ordering::Relaxed),
        st.ranged.load(Ordering::Relaxed),
    );
    eprintln!(
        "proxy: {} requests, {dropped} dropped, {unavailable} answered 503, {cut} cut short, {ranged} resumed by range\n{restored}",
        st.requests.load(Ordering::Relaxed)
    );
    assert!(
        dropped > 0 && unavailable > 0 && cut > 0,
        "the proxy injected too few faults"
    );
    assert!(ranged > 0, "no cut download was resumed by range");
    assert!(requests(&restored, "GET") > 10, "{restored}");
}

// ---------------------------------------------------------------------
// Errors: one clear line, exit 1, no secrets

/// The error line, and no more than a hint after it.
fn one_error_line(out: &Output, tool: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{tool} should exit 1:\n{stderr}"
    );
    assert_no_secrets(&stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        !lines.is_empty() && lines.len() <= 2,
        "one error line (and a hint) expected:\n{stderr}"
    );
    assert!(lines[0].starts_with(&format!("{tool}: ")), "{stderr}");
    if let Some(hint) = lines.get(1) {
        assert!(hint.starts_with("hint: "), "{stderr}");
    }
    lines[0].to_string()
}

#[test]
fn wrong_credentials_fail_with_one_line() {
    // This server checks every request but the first (which makes the bucket).
    let s3 = MOTO_AUTH.get_or_init(|| Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "1")], false));
    let bucket = s3.bucket("locked");
    let url = s3.url(&bucket, "db");
    let dir = tempfile::tempdir().unwrap();
    source_db(dir.path(), 200, 100, 5);
    sh_ok(
        dir.path(),
        "lsw-shadow --once src.db | lsw-segment > all.segs",
    );
    for (tool, script) in [
        ("lsw-push", format!("lsw-push -v '{url}' < all.segs")),
        ("lsw-pull", format!("lsw-pull '{url}' > out.segs")),
        (
            "litestream",
            format!("litestream restore -o out.db '{url}'"),
        ),
    ] {
        let out = s3_run(dir.path(), KEY_ID, SECRET, &script);
        let line = one_error_line(&out, tool);
        assert!(line.contains("s3://locked/db"), "{line}");
        assert!(line.contains("access key"), "{line}");
    }
    assert!(!dir.path().join("out.db").exists());
}

#[test]
fn missing_bucket_is_named() {
    let s3 = moto();
    let dir = tempfile::tempdir().unwrap();
    source_db(dir.path(), 200, 100, 6);
    let url = s3.url("no-such-bucket-here", "db");
    for (tool, script) in [
        (
            "lsw-push",
            format!("lsw-shadow --once src.db | lsw-segment | lsw-push '{url}'"),
        ),
        (
            "litestream",
            format!("litestream restore -o out.db '{url}'"),
        ),
    ] {
        let line = one_error_line(&s3_run(dir.path(), KEY_ID, SECRET, &script), tool);
        assert!(
            line.contains("bucket \"no-such-bucket-here\" does not exist"),
            "{line}"
        );
    }
}

#[test]
fn unreachable_endpoint_gives_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there
    let started = Instant::now();
    let out = s3_run(
        dir.path(),
        KEY_ID,
        SECRET,
        &format!("litestream restore -o out.db 's3://bkt/db?endpoint=http://127.0.0.1:{port}&retry-deadline=2s'"),
    );
    let line = one_error_line(&out, "litestream");
    assert!(
        line.contains(&format!("cannot reach http://127.0.0.1:{port}")),
        "{line}"
    );
    assert!(line.contains("gave up after"), "{line}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn no_credentials_anywhere_fails_at_once() {
    let s3 = moto();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    // s3_env's settings, less the keys (IMDS stays disabled).
    let out = s3_run(
        dir.path(),
        "",
        "",
        &format!(
            "unset LITESTREAM_ACCESS_KEY_ID LITESTREAM_SECRET_ACCESS_KEY\nlsw-pull '{}' > x",
            s3.url("bkt", "db")
        ),
    );
    let line = one_error_line(&out, "lsw-pull");
    assert!(line.contains("no credentials found"), "{line}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn keys_are_refused_in_urls_without_echoing_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = sh(
        dir.path(),
        &format!("lsw-pull 's3://bkt/db?secret-access-key={SECRET}' > x"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_no_secrets(&stderr);
}

#[test]
fn skip_verify_accepts_a_self_signed_certificate() {
    let s3 = MOTO_TLS.get_or_init(|| Moto::start(&[], true));
    let bucket = s3.bucket("selfsigned");
    let dir = tempfile::tempdir().unwrap();
    source_db(dir.path(), 1000, 100, 7);
    let url = s3.url(&bucket, "db");
    // Verified TLS refuses the certificate at once, and says what to do.
    let out = s3_run(
        dir.path(),
        KEY_ID,
        SECRET,
        &format!("litestream restore -o out.db '{url}'"),
    );
    let line = one_error_line(&out, "litestream");
    assert!(
        line.contains("TLS") && line.contains("certificate"),
        "{line}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("skip-verify"));
    let url = format!("{url}&skip-verify=true");
    s3_ok(
        dir.path(),
        &format!("lsw-shadow --once src.db | lsw-segment | lsw-push '{url}'"),
    );
    s3_ok(dir.path(), &format!("litestream restore -o out.db '{url}'"));
    assert_restored_equals(&dir.path().join("out.db"), &dir.path().join("src.db"));
}

/// The server unreachable for 20 s while lsw-push runs (every connection
/// closed at once): the push waits it out within its retry deadline and
/// completes; nothing is lost.
#[test]
fn push_outlasts_a_20_second_outage() {
    let s3 = moto();
    let bucket = s3.bucket("outage");
    let dir = tempfile::tempdir().unwrap();
    source_db(dir.path(), 3000, 200, 8);
    s3_ok(
        dir.path(),
        "lsw-shadow --once src.db | lsw-segment --part-size 64KiB > all.segs",
    );
    let proxy = FaultyProxy::start(s3.port, 0, false);
    proxy.stats.outage.store(true, Ordering::Relaxed);
    let url = format!("s3://{bucket}/db?endpoint=http://127.0.0.1:{}", proxy.port);
    let push = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{}exec '{}' -v '{url}' < all.segs",
            s3_env(KEY_ID, SECRET),
            bin("lsw-push").display()
        ))
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(20));
    proxy.stats.outage.store(false, Ordering::Relaxed);
    let out = push.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_no_secrets(&stderr);
    assert!(
        proxy.stats.refused.load(Ordering::Relaxed) > 3,
        "the outage refused nothing"
    );
    s3_ok(
        dir.path(),
        &format!("litestream restore -o out.db '{}'", s3.url(&bucket, "db")),
    );
    assert_restored_equals(&dir.path().join("out.db"), &dir.path().join("src.db"));
}

// ---------------------------------------------------------------------
// `litestream replicate` to S3

/// `litestream replicate [extra] src.db URL` with the test keys, stderr
/// to `replicate.log` in `dir`; killed if the test fails before it stops.
fn replicate_to(dir: &Path, url: &str, extra: &[&str]) -> load::Proc {
    let mut cmd = Command::new(bin("litestream"));
    cmd.arg("replicate")
        .args(extra)
        .arg("src.db")
        .arg(url)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .env("LITESTREAM_ACCESS_KEY_ID", KEY_ID)
        .env("LITESTREAM_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    ] {
        cmd.env_remove(var);
    }
    load::Proc::spawn("litestream replicate", cmd, &dir.join("replicate.log"))
}

/// SIGTERM, a clean exit within `limit`; its stderr (no secrets in it).
fn stop_replicator(mut r: load::Proc, limit: Duration) -> String {
    r.signal(libc::SIGTERM);
    r.wait_ok(limit);
    let log = r.stderr();
    assert_no_secrets(&log);
    log
}

/// The objects of a replica, listed directly (not through any proxy).
fn replica_objects(s3: &Moto, bucket: &str, path: &str) -> Vec<lsw::storage::ObjectInfo> {
    let mut c = S3Config::from_url(&s3.url(bucket, path)).unwrap();
    c.access_key_id = Some(KEY_ID.into());
    c.secret_access_key = Some(SECRET.into());
    S3Storage::new(c).unwrap().list("").unwrap()
}

/// A database with the load's schema (tests/common/load.rs) and some rows.
fn load_db(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("src.db");
    let conn = create_db(&path, 4096);
    load::create_schema(&conn);
    path
}

fn small_load(seed: u64) -> load::LoadOptions {
    load::LoadOptions {
        seed,
        rows: (1, 8),
        payload: (20, 600),
        pace: Duration::from_millis(4),
        ..Default::default()
    }
}

/// Restore `url` and check it equals the source and holds every
/// committed transaction whole.
fn restore_equals_source(dir: &Path, url: &str, out: &str) -> i64 {
    s3_ok(dir, &format!("litestream restore -o {out} '{url}'"));
    assert_restored_equals(&dir.join(out), &dir.join("src.db"));
    load::check_restored(&dir.join(out))
}

#[test]
fn replicate_under_a_write_load_then_restore() {
    let s3 = moto();
    let bucket = s3.bucket("replicate");
    let url = s3.url(&bucket, "apps/live.db");
    let dir = tempfile::tempdir().unwrap();
    let db = load_db(dir.path());
    let started = Instant::now();
    let mut r = replicate_to(dir.path(), &url, &["--sync-interval", "500ms"]);
    load::wait_until(
        "the snapshot in the bucket",
        Duration::from_secs(30),
        || {
            assert!(!r.exited(), "replicate exited:\n{}", r.stderr());
            !replica_objects(s3, &bucket, "apps/live.db").is_empty()
        },
    );
    let load = load::Load::start(&db, small_load(11));
    std::thread::sleep(Duration::from_secs(6));
    let stats = load.stop();
    let log = stop_replicator(r, Duration::from_secs(60));
    let elapsed = started.elapsed();
    assert!(
        stats.commits > 100,
        "the load committed only {}",
        stats.commits
    );
    let rows = restore_equals_source(dir.path(), &url, "out.db");
    assert_eq!(rows as u64, stats.rows);

    // One PUT per object stored, and at most one changes segment per
    // sync interval; the listing is not repeated on every sync.
    let objects = replica_objects(s3, &bucket, "apps/live.db").len() as u64;
    let puts = requests(&log, "PUT");
    assert_eq!(puts, objects, "{log}");
    let intervals = elapsed.as_millis() as u64 / 500;
    assert!(
        puts <= intervals + 3,
        "{puts} PUTs in {intervals} sync intervals:\n{log}"
    );
    assert!(requests(&log, "LIST") <= 3, "{log}");
    eprintln!("{} commits in {elapsed:?}; {log}", stats.commits);
}

/// The server unreachable for 20 s while `litestream replicate` follows a
/// write load: it waits the outage out, catches up, and loses nothing.
#[test]
fn replicate_outlasts_a_20_second_outage() {
    let s3 = moto();
    let bucket = s3.bucket("replicate-outage");
    let dir = tempfile::tempdir().unwrap();
    let db = load_db(dir.path());
    let proxy = FaultyProxy::start(s3.port, 0, false);
    let via_proxy = format!("s3://{bucket}/db?endpoint=http://127.0.0.1:{}", proxy.port);
    let mut r = replicate_to(dir.path(), &via_proxy, &["--sync-interval", "200ms"]);
    let mut load = load::Load::start(&db, small_load(12));
    load::wait_until(
        "the snapshot in the bucket",
        Duration::from_secs(30),
        || {
            assert!(!r.exited(), "replicate exited:\n{}", r.stderr());
            !replica_objects(s3, &bucket, "db").is_empty()
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    proxy.stats.outage.store(true, Ordering::Relaxed);
    let before = load.commits();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_secs(1));
        load.check_alive();
        assert!(
            !r.exited(),
            "replicate gave up during the outage:\n{}",
            r.stderr()
        );
    }
    let during = load.commits() - before;
    let stored_during = replica_objects(s3, &bucket, "db").len();
    proxy.stats.outage.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(8));
    let stats = load.stop();
    let log = stop_replicator(r, Duration::from_secs(90));
    assert!(
        during > 100,
        "the load committed only {during} during the outage"
    );
    assert!(
        proxy.stats.refused.load(Ordering::Relaxed) > 3,
        "the outage refused nothing"
    );
    assert!(
        replica_objects(s3, &bucket, "db").len() > stored_during,
        "nothing reached the bucket after the outage"
    );
    let rows = restore_equals_source(dir.path(), &s3.url(&bucket, "db"), "out.db");
    assert_eq!(rows as u64, stats.rows, "{log}");
    eprintln!("{log}");
}

/// An idle database under `litestream replicate` costs no PUT: over
/// twenty sync intervals and several idle checkpoints nothing is stored,
/// and the replicator's own count of PUTs is exactly the objects stored
/// before it went idle.
#[test]
fn an_idle_database_costs_no_puts() {
    let s3 = moto();
    let bucket = s3.bucket("idle");
    let url = s3.url(&bucket, "db");
    let dir = tempfile::tempdir().unwrap();
    let db = load_db(dir.path());
    let mut r = replicate_to(
        dir.path(),
        &url,
        &[
            "-v",
            "--sync-interval",
            "100ms",
            "--monitor-interval",
            "100ms",
            "--checkpoint-interval",
            "300ms",
        ],
    );
    // Some writes, all of them in the bucket, then nothing.
    let stats = load::Load::start(
        &db,
        load::LoadOptions {
            max_commits: Some(50),
            ..small_load(13)
        },
    );
    load::wait_until("the load", Duration::from_secs(30), || stats.finished());
    let stats = stats.stop();
    let probe = dir.path().join("probe.db");
    let mut n = 0;
    load::wait_until("the writes in the bucket", Duration::from_secs(30), || {
        assert!(!r.exited(), "replicate exited:\n{}", r.stderr());
        n += 1;
        load::remove_db(&probe);
        let out = s3_run(
            dir.path(),
            KEY_ID,
            SECRET,
            &format!("litestream restore -o probe.db '{url}'"),
        );
        out.status.success() && load::check_restored(&probe) as u64 == stats.rows
    });
    let before = replica_objects(s3, &bucket, "db");
    std::thread::sleep(Duration::from_secs(2));
    let after = replica_objects(s3, &bucket, "db");
    let log = stop_replicator(r, Duration::from_secs(30));
    assert_eq!(before, after, "objects stored while idle:\n{log}");
    assert!(
        log.contains("checkpoint"),
        "no idle checkpoint was logged:\n{log}"
    );
    assert_eq!(
        requests(&log, "PUT"),
        after.len() as u64,
        "PUTs beyond the objects stored before going idle:\n{log}"
    );
    assert!(requests(&log, "LIST") <= 3, "{log}");
    assert_eq!(requests(&log, "GET"), 0, "{log}");
    restore_equals_source(dir.path(), &url, "out.db");
    eprintln!("{log}");
}

/// When S3 stays unreachable past the retry deadline, `litestream
/// replicate` says so at once, in one line with the S3 error, even while
/// the database stays idle, and keeps running: the shadow log holds the
/// transaction, and once S3 is back the replica gets it without a restart.
#[test]
fn replicate_reports_an_s3_failure_and_catches_up_after_it() {
    let s3 = moto();
    let bucket = s3.bucket("replicate-gives-up");
    let dir = tempfile::tempdir().unwrap();
    let db = load_db(dir.path());
    let proxy = FaultyProxy::start(s3.port, 0, false);
    let url = format!(
        "s3://{bucket}/db?endpoint=http://127.0.0.1:{}&retry-deadline=3s",
        proxy.port
    );
    let mut r = replicate_to(dir.path(), &url, &["--sync-interval", "100ms"]);
    load::wait_until(
        "the snapshot in the bucket",
        Duration::from_secs(30),
        || {
            assert!(!r.exited(), "replicate exited:\n{}", r.stderr());
            !replica_objects(s3, &bucket, "db").is_empty()
        },
    );
    proxy.stats.outage.store(true, Ordering::Relaxed);
    // One transaction for the push to fail on, then nothing.
    let one = load::Load::start(
        &db,
        load::LoadOptions {
            max_commits: Some(1),
            ..small_load(14)
        },
    );
    load::wait_until("one commit", Duration::from_secs(30), || one.finished());
    assert_eq!(one.stop().commits, 1);
    r.wait_for_log("gave up after", 1, Duration::from_secs(30));
    assert!(!r.exited(), "replicate exited:\n{}", r.stderr());
    let log = r.stderr();
    assert_no_secrets(&log);
    let line = log.lines().find(|l| l.contains("gave up after")).unwrap();
    assert!(
        line.contains("put s3://replicate-gives-up/db/") && line.contains("retrying in"),
        "the error line should be the S3 error and say what happens next:\n{log}"
    );
    // S3 is back: the same process catches up.
    proxy.stats.outage.store(false, Ordering::Relaxed);
    r.wait_for_log("working again", 1, Duration::from_secs(120));
    let log = stop_replicator(r, Duration::from_secs(60));
    assert!(log.contains("requests: PUT"), "{log}");
    // Byte-equal to the source after the transaction made during the outage.
    restore_equals_source(dir.path(), &s3.url(&bucket, "db"), "out.db");
}

/// Litestream's own shape of config: two databases, each with a
/// directory and an S3 replica (keys in the config, endpoint and
/// path-style as for any S3-compatible store). All four restore the
/// database they belong to.
#[test]
fn two_databases_with_a_directory_and_an_s3_replica_each() {
    let s3 = moto();
    let bucket = s3.bucket("two-dbs");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dbs = [d.join("a.db"), d.join("b.db")];
    for db in &dbs {
        let conn = create_db(db, 4096);
        load::create_schema(&conn);
    }
    let mut yaml = format!("access-key-id: {KEY_ID}\nsecret-access-key: {SECRET}\ndbs:\n");
    for (i, db) in dbs.iter().enumerate() {
        yaml.push_str(&format!(
            "  - path: {db}\n    replicas:\n      - name: local\n        path: {local}\n        sync-interval: 100ms\n      \
             - name: remote\n        type: s3\n        bucket: {bucket}\n        path: db{i}\n        endpoint: {endpoint}\n        \
             region: us-east-1\n        force-path-style: true\n        sync-interval: 100ms\n",
            db = db.display(),
            local = d.join(format!("local{i}")).display(),
            endpoint = s3.endpoint(),
        ));
    }
    let config = d.join("litestream.yml");
    std::fs::write(&config, yaml).unwrap();
    let loads: Vec<_> = dbs
        .iter()
        .enumerate()
        .map(|(i, db)| load::Load::start(db, small_load(40 + i as u64)))
        .collect();
    let mut cmd = Command::new(bin("litestream"));
    cmd.args(["replicate", "-config"])
        .arg(&config)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut r = load::Proc::spawn("litestream replicate", cmd, &d.join("replicate.log"));
    load::wait_until("segments in all four replicas", Duration::from_secs(60), || {
        assert!(!r.exited(), "replicate exited:\n{}", r.stderr());
        (0..2).all(|i| {
            load::replica_state(&d.join(format!("local{i}"))).0 > 1 && replica_objects(s3, &bucket, &format!("db{i}")).len() > 1
        }) && loads.iter().all(|l| l.commits() > 100)
    });
    for l in loads {
        l.stop();
    }
    let log = stop_replicator(r, Duration::from_secs(60));
    assert!(!log.contains(SECRET) && !log.contains(KEY_ID), "{log}");
    for (i, db) in dbs.iter().enumerate() {
        for (name, url) in [
            ("local", d.join(format!("local{i}")).display().to_string()),
            ("remote", s3.url(&bucket, &format!("db{i}"))),
        ] {
            let out = d.join(format!("{name}{i}.db"));
            s3_ok(d, &format!("litestream restore -o {} '{url}'", out.display()));
            assert_restored_equals(&out, db);
            load::check_restored(&out);
        }
    }
}
