//! `lsw::metrics::Metrics` in the Prometheus text exposition format
//! (version 0.0.4).
//!
//! Hand-written rather than through a client crate: the engine already
//! keeps its own atomics, so a crate would only add a registry to copy
//! them into on every scrape; the format is a few lines of text, and
//! tests/metrics.rs checks its grammar strictly.
//!
//! Names: Litestream v0.3's where the meaning is the same, so that its
//! dashboards keep working (`litestream_db_size`, `litestream_sync_count`,
//! `litestream_replica_operation_total`…; `litestream_txid` is v0.5's),
//! `lsw_` for the rest. Replica series carry Litestream's labels: `name`
//! (the replica's name) and `replica_type` (`file`, `s3`), plus `db` and
//! `url` (without credentials or query).

use std::fmt::Write;

use lsw::metrics::{DbMetrics, Metrics, ReplicaMetrics};
use lsw::storage::Operation;

/// The whole page for one scrape.
pub fn render(metrics: &Metrics) -> String {
    let mut page = Page::default();
    let dbs = &metrics.dbs;
    let replicas: Vec<(&DbMetrics, &ReplicaMetrics)> = dbs
        .iter()
        .flat_map(|db| db.replicas.iter().map(move |r| (db.as_ref(), r.as_ref())))
        .collect();

    page.family(
        "lsw_build_info",
        Gauge,
        "Always 1; the version of litestream-rs is the label.",
        [(
            vec![("version", env!("CARGO_PKG_VERSION").to_string())],
            Int(1),
        )],
    );

    // One database: what capture sees.
    let per_db = |value: fn(&DbMetrics) -> Value| {
        dbs.iter()
            .map(move |db| (db_labels(db), value(db)))
            .collect::<Vec<_>>()
    };
    page.family(
        "litestream_db_size",
        Gauge,
        "Size of the database file, in bytes.",
        per_db(|db| Int(db.db_bytes.get())),
    );
    page.family(
        "litestream_wal_size",
        Gauge,
        "Size of the WAL file, in bytes.",
        per_db(|db| Int(db.wal_bytes.get())),
    );
    page.family(
        "litestream_txid",
        Gauge,
        "The last captured transaction ID (txid) of the current generation.",
        per_db(|db| Int(db.txid.get())),
    );
    page.family(
        "lsw_generation_info",
        Gauge,
        "Always 1; the generation being captured is the label.",
        dbs.iter()
            .filter(|db| db.generation.get() != 0)
            .map(|db| {
                let mut labels = db_labels(db);
                labels.push(("generation", generation(db.generation.get())));
                (labels, Int(1))
            })
            .collect::<Vec<_>>(),
    );
    page.family(
        "lsw_txid_timestamp_seconds",
        Gauge,
        "Commit time of the last captured transaction, in seconds since the epoch.",
        per_db(|db| seconds(db.txid_time_ms.get(), 1000)),
    );
    page.family(
        "lsw_transactions_total",
        Counter,
        "Transactions (txids) captured since start: one per capture pass, however many SQLite commits it merged.",
        per_db(|db| Int(db.transactions.get())),
    );
    page.family(
        "litestream_checkpoint_count",
        Counter,
        "Checkpoints run since start, by SQLite checkpoint mode (every one is PASSIVE).",
        dbs.iter()
            .map(|db| {
                let mut labels = db_labels(db);
                labels.push(("mode", "PASSIVE".into()));
                let all = db.checkpoints_passive.get()
                    + db.checkpoints_forced.get()
                    + db.checkpoints_idle.get();
                (labels, Int(all))
            })
            .collect::<Vec<_>>(),
    );
    page.family(
        "lsw_checkpoints_total",
        Counter,
        "Checkpoints run since start, by cause: passive (the WAL passed the minimum), forced (past the maximum, under a short write lock), idle.",
        dbs.iter()
            .flat_map(|db| {
                [
                    ("passive", db.checkpoints_passive.get()),
                    ("forced", db.checkpoints_forced.get()),
                    ("idle", db.checkpoints_idle.get()),
                ]
                .map(|(kind, n)| {
                    let mut labels = db_labels(db);
                    labels.push(("kind", kind.into()));
                    (labels, Int(n))
                })
            })
            .collect::<Vec<_>>(),
    );
    page.family(
        "lsw_shadow_log_bytes",
        Gauge,
        "Bytes held by the shadow log: captured, not yet on every replica.",
        per_db(|db| Int(db.shadow_log_bytes.get())),
    );
    page.family(
        "lsw_generations_started_total",
        Counter,
        "New generations started since start (each is logged with its reason).",
        per_db(|db| Int(db.generations_started.get())),
    );
    page.family(
        "lsw_capture_errors_total",
        Counter,
        "Capture passes that failed (each is logged).",
        per_db(|db| Int(db.capture_errors.get())),
    );

    // One replica of a database.
    let per_replica = |value: fn(&DbMetrics, &ReplicaMetrics) -> Option<Value>| {
        replicas
            .iter()
            .filter_map(move |&(db, r)| Some((replica_labels(db, r), value(db, r)?)))
            .collect::<Vec<_>>()
    };
    page.family(
        "litestream_sync_count",
        Counter,
        "Segments pushed to the replica (syncs) since start.",
        per_replica(|_, r| Some(Int(r.syncs.get()))),
    );
    page.family(
        "litestream_sync_error_count",
        Counter,
        "Pushes to the replica that failed since start.",
        per_replica(|_, r| Some(Int(r.sync_errors.get()))),
    );
    page.family(
        "litestream_sync_seconds",
        Counter,
        "Time spent pushing to the replica, in seconds.",
        per_replica(|_, r| Some(seconds(r.sync_micros.get(), 1_000_000))),
    );
    page.family(
        "lsw_replica_txid",
        Gauge,
        "The durable transaction ID (txid) the replica holds.",
        per_replica(|_, r| Some(Int(r.txid.get()))),
    );
    page.family(
        "lsw_replica_generation_info",
        Gauge,
        "Always 1; the generation the replica's durable position is in is the label.",
        replicas
            .iter()
            .filter(|(_, r)| r.generation.get() != 0)
            .map(|&(db, r)| {
                let mut labels = replica_labels(db, r);
                labels.push(("generation", generation(r.generation.get())));
                (labels, Int(1))
            })
            .collect::<Vec<_>>(),
    );
    page.family(
        "lsw_replica_txid_timestamp_seconds",
        Gauge,
        "Commit time of the replica's durable transaction, in seconds since the epoch.",
        per_replica(|_, r| Some(seconds(r.txid_time_ms.get(), 1000))),
    );
    page.family(
        "lsw_replica_lag_seconds",
        Gauge,
        "Commit time of the last captured transaction minus that of the replica's durable one; 0 when caught up, absent while the replica holds nothing.",
        per_replica(lag_seconds),
    );
    page.family(
        "lsw_replica_txids_behind",
        Gauge,
        "Transactions captured that the replica does not hold yet.",
        per_replica(|db, r| Some(Int(txids_behind(db, r)))),
    );
    page.family(
        "lsw_replica_segments_stored_total",
        Counter,
        "Segments stored in the replica since start.",
        per_replica(|_, r| Some(Int(r.segments_stored.get()))),
    );
    page.family(
        "lsw_replica_segments_compacted_total",
        Counter,
        "Compacted segments (each covering a run of stored segments) stored in the replica since start.",
        per_replica(|_, r| Some(Int(r.segments_compacted.get()))),
    );
    page.family(
        "lsw_replica_stored_bytes_total",
        Counter,
        "Bytes of segments stored in the replica since start.",
        per_replica(|_, r| Some(Int(r.bytes_stored.get()))),
    );
    page.family(
        "lsw_replica_snapshots_total",
        Counter,
        "Snapshots stored in the replica since start.",
        per_replica(|_, r| Some(Int(r.snapshots.get()))),
    );
    page.family(
        "lsw_replica_retention_deleted_total",
        Counter,
        "Objects deleted from the replica by retention since start.",
        per_replica(|_, r| Some(Int(r.retention_deleted.get()))),
    );
    page.family(
        "litestream_replica_validation_total",
        Counter,
        "Validation restores of the replica since start, by result.",
        replicas
            .iter()
            .flat_map(|&(db, r)| {
                [
                    ("ok", r.validations_ok.get()),
                    ("error", r.validations_error.get()),
                ]
                .map(|(status, n)| {
                    let mut labels = replica_labels(db, r);
                    labels.push(("status", status.into()));
                    (labels, Int(n))
                })
            })
            .collect::<Vec<_>>(),
    );
    page.family(
        "lsw_replica_validation_last_ok_timestamp_seconds",
        Gauge,
        "When the last validation of the replica passed, in seconds since the epoch; 0 if none has.",
        per_replica(|_, r| Some(seconds(r.validation_last_ok_ms.get(), 1000))),
    );

    // Requests per operation, from the storage backend's own counters.
    let operations: Vec<_> = replicas
        .iter()
        .flat_map(|&(db, r)| {
            r.storage
                .operations()
                .into_iter()
                .map(move |c| (replica_labels(db, r), c))
        })
        .collect();
    page.family(
        "litestream_replica_operation_total",
        Counter,
        "Requests made to the replica since start, by operation (local backends count file operations under the same names), retries included.",
        operations
            .iter()
            .map(|(labels, c)| (with_operation(labels, c.operation), Int(c.requests)))
            .collect::<Vec<_>>(),
    );
    page.family(
        "litestream_replica_operation_bytes",
        Counter,
        "Body bytes sent by PUT and received by GET requests to the replica since start.",
        operations
            .iter()
            .filter(|(_, c)| matches!(c.operation, Operation::Put | Operation::Get))
            .map(|(labels, c)| (with_operation(labels, c.operation), Int(c.bytes)))
            .collect::<Vec<_>>(),
    );
    page.text
}

/// How far the replica's durable position trails capture, in txids: all
/// of the current generation when the replica is still in another one.
fn txids_behind(db: &DbMetrics, r: &ReplicaMetrics) -> u64 {
    let txid = db.txid.get();
    if db.generation.get() == r.generation.get() {
        txid.saturating_sub(r.txid.get())
    } else {
        txid
    }
}

fn lag_seconds(db: &DbMetrics, r: &ReplicaMetrics) -> Option<Value> {
    if txids_behind(db, r) == 0 {
        return Some(Int(0));
    }
    let (captured, durable) = (db.txid_time_ms.get(), r.txid_time_ms.get());
    if captured == 0 || durable == 0 {
        return None;
    }
    Some(seconds(captured.saturating_sub(durable), 1000))
}

type Labels = Vec<(&'static str, String)>;

fn db_labels(db: &DbMetrics) -> Labels {
    vec![("db", db.path.display().to_string())]
}

fn replica_labels(db: &DbMetrics, r: &ReplicaMetrics) -> Labels {
    vec![
        ("db", db.path.display().to_string()),
        ("name", r.name.clone()),
        ("replica_type", replica_type(&r.url).to_string()),
        ("url", without_secrets(&r.url)),
    ]
}

fn with_operation(labels: &Labels, op: Operation) -> Labels {
    let mut labels = labels.clone();
    labels.push(("operation", op.name().into()));
    labels
}

/// `s3` for `s3://…`, `file` for a path or `file://…`.
fn replica_type(url: &str) -> &str {
    match url.split_once("://") {
        Some((scheme, _)) => scheme,
        None => "file",
    }
}

/// A URL fit for a label: no `user:password@`, no query (which may hold
/// keys).
fn without_secrets(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

fn generation(g: u64) -> String {
    format!("{g:016x}")
}

/// `n` of `per_second` units, in seconds.
fn seconds(n: u64, per_second: u64) -> Value {
    Float(n as f64 / per_second as f64)
}

#[derive(Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}
use Value::{Float, Int};

#[derive(Clone, Copy)]
enum Type {
    Counter,
    Gauge,
}
use Type::{Counter, Gauge};

#[derive(Default)]
struct Page {
    text: String,
}

impl Page {
    /// One metric family: HELP and TYPE, then its samples. A family
    /// without samples keeps its HELP and TYPE, so a scraper sees every
    /// name from the first scrape on.
    fn family(
        &mut self,
        name: &str,
        kind: Type,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, Value)>,
    ) {
        let kind = match kind {
            Counter => "counter",
            Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.text.push_str(name);
            if !labels.is_empty() {
                self.text.push('{');
                for (i, (label, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        self.text.push(',');
                    }
                    let _ = write!(self.text, "{label}=\"{}\"", escape_label(v));
                }
                self.text.push('}');
            }
            let _ = match value {
                Int(n) => writeln!(self.text, " {n}"),
                Float(x) => writeln!(self.text, " {x}"),
            };
        }
    }
}

/// A label value as the format wants it: `\`, `"` and newline escaped.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lsw::metrics::{DbMetrics, Metrics, ReplicaMetrics};

    use super::*;

    fn metrics(dir: &std::path::Path) -> (Metrics, Arc<dyn lsw::storage::Storage>) {
        let storage: Arc<dyn lsw::storage::Storage> =
            Arc::new(lsw::storage::file::FileStorage::new(dir));
        let replica = ReplicaMetrics::new(
            "backup".into(),
            "s3://u:p@bucket/app?key=x".into(),
            storage.clone(),
        );
        let db = DbMetrics {
            path: "/srv/a \"b\"\\.db".into(),
            replicas: vec![Arc::new(replica)],
            ..DbMetrics::default()
        };
        (
            Metrics {
                dbs: vec![Arc::new(db)],
            },
            storage,
        )
    }

    fn line<'a>(page: &'a str, prefix: &str) -> &'a str {
        page.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{page}"))
    }

    #[test]
    fn labels_are_escaped_and_urls_lose_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let (m, _) = metrics(dir.path());
        let page = render(&m);
        assert_eq!(
            line(&page, "litestream_db_size{"),
            r#"litestream_db_size{db="/srv/a \"b\"\\.db"} 0"#
        );
        assert_eq!(
            line(&page, "litestream_sync_count{"),
            r#"litestream_sync_count{db="/srv/a \"b\"\\.db",name="backup",replica_type="s3",url="s3://bucket/app"} 0"#
        );
        assert!(!page.contains("u:p") && !page.contains("key=x"), "{page}");
    }

    #[test]
    fn lag_and_txids_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (m, _) = metrics(dir.path());
        let (db, r) = (&m.dbs[0], &m.dbs[0].replicas[0]);
        // Nothing captured yet: caught up.
        assert!(line(&render(&m), "lsw_replica_lag_seconds{").ends_with(" 0"));
        db.generation.set(7);
        db.txid.set(10);
        db.txid_time_ms.set(1_700_000_010_500);
        // The replica holds nothing: behind by all, lag unknown.
        let page = render(&m);
        assert!(line(&page, "lsw_replica_txids_behind{").ends_with(" 10"));
        assert!(!page.contains("lsw_replica_lag_seconds{"), "{page}");
        assert!(line(&page, "lsw_generation_info{").contains(r#"generation="0000000000000007"} 1"#));
        r.generation.set(7);
        r.txid.set(4);
        r.txid_time_ms.set(1_700_000_008_000);
        let page = render(&m);
        assert!(line(&page, "lsw_replica_txids_behind{").ends_with(" 6"));
        assert!(line(&page, "lsw_replica_lag_seconds{").ends_with(" 2.5"));
        r.txid.set(10);
        r.txid_time_ms.set(1_700_000_010_500);
        assert!(line(&render(&m), "lsw_replica_lag_seconds{").ends_with(" 0"));
        // A new generation on the database: the old one's txids count for nothing.
        db.generation.set(8);
        db.txid.set(3);
        assert!(line(&render(&m), "lsw_replica_txids_behind{").ends_with(" 3"));
    }

    #[test]
    fn operations_come_from_the_backend() {
        let dir = tempfile::tempdir().unwrap();
        let (m, storage) = metrics(dir.path());
        storage.put("g/x", b"12345").unwrap();
        storage.get("g/x").unwrap();
        let page = render(&m);
        assert!(
            line(&page, "litestream_replica_operation_total{").contains(r#"operation="PUT"} 1"#)
        );
        assert!(
            line(&page, "litestream_replica_operation_bytes{").contains(r#"operation="PUT"} 5"#)
        );
        assert!(page.contains(r#"operation="GET"} 5"#), "{page}");
        assert!(!page.contains(r#"litestream_replica_operation_bytes{db="/srv/a \"b\"\\.db",name="backup",replica_type="s3",url="s3://bucket/app",operation="LIST"}"#));
    }
}
