//! Prometheus metrics: the engine's replicator runs on a real database
//! and file replica while the tools' server is scraped over TCP. Every
//! page is checked against the text exposition format, and the request
//! counters against what the replica holds.

mod common;
#[path = "common/load.rs"]
mod load;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{create_db, fill};
use load::poll;
use lsw::pipeline::LiveOptions;
use lsw::replicator::{DbSpec, ReplicaSpec, Replicator, RunOptions};
use lsw::storage::file::FileStorage;

/// A series' labels, in order of appearance.
type Labels = Vec<(String, String)>;

/// A scraped page, checked and parsed.
struct Page {
    text: String,
    /// Every sample: metric name, labels, value.
    samples: Vec<(String, Labels, f64)>,
    types: BTreeMap<String, String>,
}

impl Page {
    /// The value of the one series of `name` whose labels include every
    /// `labels` pair.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let hits: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, ls, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert!(
            hits.len() <= 1,
            "{name}{labels:?} matches {} series:\n{}",
            hits.len(),
            self.text
        );
        hits.first().copied()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{}", self.text))
    }
}

/// Check `text` against the Prometheus text format (0.0.4) strictly:
/// only HELP and TYPE comments, each at most once per family and before
/// its samples; a family's samples contiguous; names, labels, escapes and
/// values well-formed; no series twice; counters not negative.
fn parse_page(text: &str) -> Page {
    assert!(text.ends_with('\n'), "the page does not end with a newline");
    let mut samples = Vec::new();
    let mut series = HashSet::new();
    let mut types = BTreeMap::new();
    let mut helps = HashSet::new();
    let mut finished = HashSet::new();
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", i + 1);
        assert!(!line.is_empty(), "{}: empty line", at());
        let family = if let Some(comment) = line.strip_prefix("# ") {
            let (kind, rest) = comment
                .split_once(' ')
                .unwrap_or_else(|| panic!("{}", at()));
            let (name, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(valid_name(name, true), "{}: bad metric name", at());
            match kind {
                "HELP" => {
                    assert!(helps.insert(name.to_string()), "{}: second HELP", at());
                    assert!(!types.contains_key(name), "{}: HELP after TYPE", at());
                    assert!(!arg.is_empty(), "{}: empty HELP", at());
                    assert!(
                        !arg.replace("\\\\", "").replace("\\n", "").contains('\\'),
                        "{}: bad escape",
                        at()
                    );
                }
                "TYPE" => {
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg),
                        "{}: bad type",
                        at()
                    );
                    assert!(
                        types.insert(name.to_string(), arg.to_string()).is_none(),
                        "{}: second TYPE",
                        at()
                    );
                }
                _ => panic!("{}: a comment other than HELP or TYPE", at()),
            }
            name.to_string()
        } else {
            let name_end = line
                .find(['{', ' '])
                .unwrap_or_else(|| panic!("{}: no value", at()));
            let name = &line[..name_end];
            assert!(valid_name(name, true), "{}: bad metric name", at());
            let (labels, rest) = if line[name_end..].starts_with('{') {
                parse_labels(&line[name_end + 1..]).unwrap_or_else(|e| panic!("{}: {e}", at()))
            } else {
                (vec![], &line[name_end..])
            };
            let mut seen = HashSet::new();
            assert!(
                labels.iter().all(|(k, _)| seen.insert(k.clone())),
                "{}: a label twice",
                at()
            );
            let mut fields = rest
                .strip_prefix(' ')
                .unwrap_or_else(|| panic!("{}: no space before the value", at()))
                .split(' ');
            let value = parse_value(fields.next().unwrap_or(""))
                .unwrap_or_else(|| panic!("{}: bad value", at()));
            if let Some(ts) = fields.next() {
                assert!(ts.parse::<i64>().is_ok(), "{}: bad timestamp", at());
            }
            assert!(fields.next().is_none(), "{}: trailing fields", at());
            let kind = types
                .get(name)
                .unwrap_or_else(|| panic!("{}: sample before its TYPE", at()));
            assert!(helps.contains(name), "{}: sample before its HELP", at());
            if kind == "counter" {
                assert!(value >= 0.0, "{}: negative counter", at());
            }
            let mut key = labels.clone();
            key.sort();
            assert!(
                series.insert((name.to_string(), key)),
                "{}: the same series twice",
                at()
            );
            samples.push((name.to_string(), labels, value));
            name.to_string()
        };
        if current.as_deref() != Some(family.as_str()) {
            assert!(
                !finished.contains(&family),
                "line {}: family {family} is split",
                i + 1
            );
            if let Some(prev) = current.replace(family.clone()) {
                finished.insert(prev);
            }
        }
    }
    assert_eq!(
        helps.len(),
        types.len(),
        "a family with HELP but no TYPE, or the reverse"
    );
    Page {
        text: text.to_string(),
        samples,
        types,
    }
}

fn valid_name(name: &str, colons: bool) -> bool {
    let mut chars = name.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    chars.next().is_some_and(ok_first) && chars.all(|c| ok_first(c) || c.is_ascii_digit())
}

/// `a="x",b="y"} rest` → the labels and ` rest`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let (name, rest) = s.split_once("=\"").ok_or("label without =\"")?;
        if !valid_name(name, false) || name.starts_with("__") {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("newline in label value".into()),
                (_, c) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        s = &rest[end + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s.is_empty()
            || s.contains(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E') =>
        {
            None
        }
        _ => s.parse().ok(),
    }
}

/// GET /metrics over TCP: the response head and the checked page.
fn scrape(addr: SocketAddr) -> (String, Page) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics server");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse::<usize>().ok());
    assert_eq!(length, Some(body.len()), "{head}");
    (head.to_string(), parse_page(body))
}

/// Objects in a file replica and their total size (hidden temporaries
/// aside, as the backend lists them).
fn replica_contents(root: &Path) -> (u64, u64) {
    let mut stack = vec![root.to_path_buf()];
    let (mut n, mut bytes) = (0, 0);
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
                bytes += meta.len();
            }
        }
    }
    (n, bytes)
}

/// Every field of lsw::metrics has its family on the page, with a type.
const FAMILIES: &[(&str, &str)] = &[
    ("lsw_build_info", "gauge"),
    ("litestream_db_size", "gauge"),
    ("litestream_wal_size", "gauge"),
    ("litestream_txid", "gauge"),
    ("lsw_generation_info", "gauge"),
    ("lsw_txid_timestamp_seconds", "gauge"),
    ("lsw_transactions_total", "counter"),
    ("litestream_checkpoint_count", "counter"),
    ("lsw_checkpoints_total", "counter"),
    ("lsw_shadow_log_bytes", "gauge"),
    ("lsw_generations_started_total", "counter"),
    ("lsw_capture_errors_total", "counter"),
    ("litestream_sync_count", "counter"),
    ("litestream_sync_error_count", "counter"),
    ("litestream_sync_seconds", "counter"),
    ("lsw_replica_txid", "gauge"),
    ("lsw_replica_generation_info", "gauge"),
    ("lsw_replica_txid_timestamp_seconds", "gauge"),
    ("lsw_replica_lag_seconds", "gauge"),
    ("lsw_replica_txids_behind", "gauge"),
    ("lsw_replica_segments_stored_total", "counter"),
    ("lsw_replica_segments_compacted_total", "counter"),
    ("lsw_replica_stored_bytes_total", "counter"),
    ("lsw_replica_snapshots_total", "counter"),
    ("lsw_replica_retention_deleted_total", "counter"),
    ("litestream_replica_validation_total", "counter"),
    ("lsw_replica_validation_last_ok_timestamp_seconds", "gauge"),
    ("litestream_replica_operation_total", "counter"),
    ("litestream_replica_operation_bytes", "counter"),
];

#[test]
fn scrape_a_running_replicator() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let replica_root = dir.path().join("replica");
    let conn = create_db(&db_path, 4096);
    fill(&conn, 2_000, 200, 500, 1);

    let storage: Arc<dyn lsw::storage::Storage> = Arc::new(FileStorage::new(&replica_root));
    let mut replica = ReplicaSpec::new("file", storage);
    replica.sync_interval = Duration::from_millis(50);
    let live = LiveOptions {
        monitor_interval: Duration::from_millis(50),
        ..LiveOptions::default()
    };
    let replicator = Replicator::new(vec![DbSpec {
        path: db_path.clone(),
        live,
        replicas: vec![replica],
    }])
    .unwrap();
    let server = lsw_tools::metrics::serve("127.0.0.1:0", replicator.metrics()).unwrap();

    let db = db_path.display().to_string();
    let url = replica_root.display().to_string();
    let labels = [
        ("db", db.as_str()),
        ("name", "file"),
        ("replica_type", "file"),
        ("url", url.as_str()),
    ];
    let put = |op: &'static str| {
        let mut l = labels.to_vec();
        l.push(("operation", op));
        l
    };

    // Before the replicator runs: every family, with HELP and TYPE.
    let (head, page) = scrape(server.addr);
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    for (name, kind) in FAMILIES {
        assert_eq!(
            page.types.get(*name).map(String::as_str),
            Some(*kind),
            "{name}:\n{}",
            page.text
        );
    }
    assert_eq!(
        page.types.len(),
        FAMILIES.len(),
        "a family this test does not know:\n{}",
        page.text
    );
    assert_eq!(
        page.value("litestream_replica_operation_total", &put("PUT")),
        0.0
    );

    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let run = scope.spawn(|| replicator.run(&RunOptions::default(), &stop, &|_| {}));
        let running = || assert!(!run.is_finished(), "the replicator stopped early");

        // The snapshot is pushed: PUTs show up while it runs.
        let first = poll(Duration::from_secs(60), "the first PUT", || {
            running();
            let (_, page) = scrape(server.addr);
            let puts = page.value("litestream_replica_operation_total", &put("PUT"));
            (puts > 0.0).then_some(puts)
        });
        // More transactions: more PUTs, on a later scrape.
        fill(&conn, 500, 200, 100, 2);
        poll(
            Duration::from_secs(60),
            "PUTs of the new transactions",
            || {
                running();
                let (_, page) = scrape(server.addr);
                (page.value("litestream_replica_operation_total", &put("PUT")) > first)
                    .then_some(())
            },
        );
        stop.store(true, Ordering::SeqCst);
        run.join().unwrap().unwrap();
    });

    // Stopped, so nothing moves: the counters match what the replica holds.
    let (_, page) = scrape(server.addr);
    let (objects, bytes) = replica_contents(&replica_root);
    assert!(objects >= 2, "{objects} objects in the replica");
    assert_eq!(
        page.value("litestream_replica_operation_total", &put("PUT")),
        objects as f64,
        "{}",
        page.text
    );
    assert_eq!(
        page.value("litestream_replica_operation_bytes", &put("PUT")),
        bytes as f64,
        "{}",
        page.text
    );
    assert_eq!(
        page.value("litestream_replica_operation_total", &put("DELETE")),
        0.0
    );
    assert!(page.value("litestream_replica_operation_total", &put("LIST")) >= 1.0);
    assert_eq!(
        page.get("litestream_replica_operation_bytes", &put("LIST")),
        None,
        "LIST moves no body"
    );
    assert_eq!(
        page.value(
            "litestream_replica_validation_total",
            &[("db", &db), ("status", "ok")]
        ),
        0.0
    );
    assert_eq!(
        page.value(
            "litestream_checkpoint_count",
            &[("db", &db), ("mode", "PASSIVE")]
        ),
        0.0
    );
    assert_eq!(
        page.value("lsw_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );

    // What capture saw: the database file as it is (nothing has written
    // since), and a txid the replica holds all of after the final flush.
    let db_size = page.value("litestream_db_size", &[("db", &db)]);
    let file_size = std::fs::metadata(&db_path).unwrap().len() as f64;
    drop(conn);
    assert_eq!(db_size, file_size, "litestream_db_size");
    let (captured, durable) = (
        page.value("litestream_txid", &[("db", &db)]),
        page.value("lsw_replica_txid", &labels),
    );
    assert!(captured > 1.0, "litestream_txid {captured}");
    assert_eq!(durable, captured, "{}", page.text);
    assert_eq!(page.value("lsw_replica_txids_behind", &labels), 0.0, "{}", page.text);
    assert_eq!(page.value("lsw_replica_lag_seconds", &labels), 0.0, "{}", page.text);

    // Other paths are not found; the server stops when dropped.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET /debug HTTP/1.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    let addr = server.addr;
    drop(server);
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening on {addr}"
    );
}

/// The checker itself rejects what it must, so a page passing it means
/// something.
#[test]
fn the_format_checker_rejects_bad_pages() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\na_total{x=\"2\\\"\\n\\\\\"} 3.5\n";
    assert_eq!(parse_page(good).samples.len(), 2);
    let bad = [
        "a 1\n",                                         // no TYPE
        "# TYPE a gauge\n# HELP a A.\na 1\n",            // HELP after TYPE
        "# HELP a A.\n# TYPE a gauge\na 1\na 1\n",       // a series twice
        "# HELP a A.\n# TYPE a gauge\na{x=\"1} 1\n",     // unterminated
        "# HELP a A.\n# TYPE a gauge\na{x=\"\\t\"} 1\n", // bad escape
        "# HELP a A.\n# TYPE a gauge\na 1\n# HELP b B.\n# TYPE b gauge\nb 1\na{x=\"1\"} 1\n", // split family
        "# HELP a A.\n# TYPE a counter\na -1\n", // negative counter
        "# HELP a A.\n# TYPE a gauge\na one\n",  // bad value
        "# HELP a A.\n# TYPE a gauge\na 1",      // no final newline
        "# HELP 1a A.\n# TYPE 1a gauge\n1a 1\n", // bad name
        "# HELP a A.\n# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n", // a label twice
    ];
    for page in bad {
        let caught = std::panic::catch_unwind(|| parse_page(page)).is_err();
        assert!(caught, "accepted:\n{page}");
    }
}

/// `addr` in the config: `litestream replicate` serves the same page, with
/// what capture sees of the database.
#[test]
fn litestream_replicate_serves_metrics_on_the_configs_addr() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let conn = create_db(&db_path, 4096);
    fill(&conn, 1_000, 200, 250, 3);
    let config = dir.path().join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "addr: 127.0.0.1:0\ndbs:\n  - path: {}\n    replicas:\n      - path: {}\n",
            db_path.display(),
            dir.path().join("replica").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("replicate.log");
    let mut child = std::process::Command::new(common::bin("litestream"))
        .args(["replicate", "-config"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let scraped = std::panic::catch_unwind(|| {
        let addr: SocketAddr = poll(Duration::from_secs(60), "the metrics address in the log", || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let url = text.split("url=http://").nth(1)?;
            url.split('/').next()?.parse().ok()
        });
        let db = db_path.display().to_string();
        poll(Duration::from_secs(60), "the database's size and txid", || {
            let (_, page) = scrape(addr);
            let size = page.get("litestream_db_size", &[("db", &db)])?;
            let txid = page.get("litestream_txid", &[("db", &db)])?;
            (size > 0.0 && txid >= 1.0).then_some(())
        });
    });
    // SAFETY: kill(2) of our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    if let Err(e) = scraped {
        panic!("{:?}\nlog:\n{}", e.downcast_ref::<String>(), std::fs::read_to_string(&log).unwrap_or_default());
    }
    assert!(status.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    drop(conn);
}
