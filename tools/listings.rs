//! `litestream generations`, `snapshots` and `wal`: Litestream v0.3's
//! listings, planned from the replica's listing alone (one LIST per
//! 1,000 objects on S3, no object read), through the engine's catalog
//! (`plan::Catalog`) and its listing analysis (`verify::analyze`).
//!
//! The columns are Litestream's where they mean the same, with our
//! values. Where Litestream shows a WAL index, we show the txid, in
//! decimal like every other txid we print (`-txid N`; `restore -index`
//! takes the same number in hex). Times are RFC 3339 in UTC, to the
//! millisecond. `--json` prints an array of objects with the table's
//! columns as keys (numbers exact), plus a few more.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use lsw::layout::generation_name;
use lsw::plan::Catalog;
use lsw::segment::SegmentKind;
use lsw::time::rfc3339;
use lsw::verify::GenerationReport;
use serde_json::{json, Value};

use crate::cli;
use crate::source::{self, ConfigArgs, NamedReplica, Source};
use crate::validate::human_duration;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    litestream generations /srv/app.db                (every replica of a database in the config)\n  \
    litestream snapshots -replica s3 /srv/app.db\n  \
    litestream wal -json s3://bucket/app\n\n\
The index column is the txid, in decimal; restore -index takes it in hex, -txid in decimal.\n\
Exit status: 0 ok, 1 runtime failure, 2 usage.")]
pub struct ListArgs {
    /// A database in the config (all its replicas are listed), or a
    /// replica: a directory, file:///path or s3://BUCKET/PATH[?…].
    #[arg(value_name = "DB_PATH | REPLICA_URL")]
    pub source: String,

    #[command(flatten)]
    pub config: ConfigArgs,

    /// Only this replica of the database.
    #[arg(long, value_name = "NAME")]
    pub replica: Option<String>,

    /// Only this generation.
    #[arg(long, value_name = "GEN", value_parser = cli::parse_generation)]
    pub generation: Option<u64>,

    /// Print a JSON array of objects (the table's columns, exact) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One generation of one replica, as the listing shows it.
struct Listed<'a> {
    replica: &'a NamedReplica,
    catalog_segments: &'a [(lsw::layout::SegmentKey, u64)],
    report: GenerationReport,
}

/// Each replica's catalog, in config order.
fn load(source: &Source) -> anyhow::Result<Vec<(&NamedReplica, Catalog)>> {
    source
        .replicas
        .iter()
        .map(|r| {
            let cat = Catalog::load(r.storage.as_ref())
                .with_context(|| format!("list replica {}", r.name))?;
            Ok((r, cat))
        })
        .collect()
}

fn each_generation<'a>(
    catalogs: &'a [(&'a NamedReplica, Catalog)],
    only: Option<u64>,
) -> Vec<Listed<'a>> {
    let mut out = Vec::new();
    for (replica, cat) in catalogs {
        for (&generation, segs) in &cat.generations {
            if only.is_some_and(|g| g != generation) {
                continue;
            }
            out.push(Listed {
                replica,
                catalog_segments: segs,
                report: lsw::verify::analyze(generation, segs),
            });
        }
    }
    out
}

fn print(args: &ListArgs, columns: &[&str], rows: Vec<Value>) -> anyhow::Result<()> {
    let text = if args.json {
        format!("{}\n", Value::Array(rows))
    } else {
        table(columns, &rows)
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// A table like Go's tabwriter as Litestream sets it up: each column as
/// wide as its widest cell plus two spaces, the last one unpadded.
fn table(columns: &[&str], rows: &[Value]) -> String {
    let cells: Vec<Vec<String>> = std::iter::once(columns.iter().map(|c| c.to_string()).collect())
        .chain(rows.iter().map(|row| {
            columns
                .iter()
                .map(|c| match &row[*c] {
                    Value::String(s) => s.clone(),
                    Value::Null => "-".into(),
                    v => v.to_string(),
                })
                .collect()
        }))
        .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}", w = widths[i] + 2);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// When the database last changed (its file or its WAL), for the lag
/// of the DB_PATH form; None when it cannot be read.
fn db_updated_ms(db: &Path) -> Option<u64> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    [db.to_path_buf(), wal.into()]
        .iter()
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .max()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
}

/// `litestream generations`: per replica and generation, how far it lags,
/// the commit times it spans, and the txids a restore can reach.
pub fn generations(args: ListArgs) -> anyhow::Result<()> {
    let source = source::resolve(&args.source, &args.config, args.replica.as_deref())?;
    let catalogs = load(&source)?;
    // Litestream's lag: how far the replica is behind the database when
    // there is one, else behind now.
    let reference = source
        .db
        .as_deref()
        .and_then(db_updated_ms)
        .unwrap_or_else(lsw::time::now_ms);
    let rows = each_generation(&catalogs, args.generation)
        .into_iter()
        .map(|l| {
            let g = &l.report;
            let lag_ms = reference.saturating_sub(g.last_ts_ms);
            let txids: Vec<String> = g
                .ranges
                .iter()
                .map(|r| format!("{}-{}", r.first_txid, r.last_txid))
                .collect();
            let restorable: Vec<Value> = g
                .ranges
                .iter()
                .map(|r| {
                    json!({
                        "first_txid": r.first_txid,
                        "last_txid": r.last_txid,
                        "first_time": rfc3339(r.first_ts_ms),
                        "last_time": rfc3339(r.last_ts_ms),
                        "snapshot_txid": r.snapshot_txid,
                    })
                })
                .collect();
            json!({
                "name": l.replica.name,
                "url": l.replica.url,
                "generation": generation_name(g.generation),
                "lag": human_duration(Duration::from_millis(lag_ms)),
                "lag_ms": lag_ms,
                "start": rfc3339(g.first_ts_ms),
                "end": rfc3339(g.last_ts_ms),
                "txids": if txids.is_empty() { "none".to_string() } else { txids.join(",") },
                "restorable": restorable,
                "objects": g.objects,
                "bytes": g.bytes,
                "status": g.status(),
            })
        })
        .collect();
    print(
        &args,
        &["name", "generation", "lag", "start", "end", "txids"],
        rows,
    )
}

/// `litestream snapshots`: every snapshot, complete or not.
pub fn snapshots(args: ListArgs) -> anyhow::Result<()> {
    let source = source::resolve(&args.source, &args.config, args.replica.as_deref())?;
    let catalogs = load(&source)?;
    let mut rows = Vec::new();
    for l in each_generation(&catalogs, args.generation) {
        for s in &l.report.snapshots {
            let parts = if s.present == s.parts {
                s.parts.to_string()
            } else {
                format!("{} of {}", s.present, s.parts)
            };
            rows.push(json!({
                "replica": l.replica.name,
                "url": l.replica.url,
                "generation": generation_name(l.report.generation),
                "index": s.txid,
                "size": s.bytes,
                "created": rfc3339(s.timestamp_ms),
                "parts": parts,
                "parts_present": s.present,
                "parts_total": s.parts,
                "complete": s.present == s.parts,
            }));
        }
    }
    print(
        &args,
        &["replica", "generation", "index", "size", "created", "parts"],
        rows,
    )
}

/// `litestream wal`: one row per changes segment.
pub fn wal(args: ListArgs) -> anyhow::Result<()> {
    let source = source::resolve(&args.source, &args.config, args.replica.as_deref())?;
    let catalogs = load(&source)?;
    let mut rows = Vec::new();
    for l in each_generation(&catalogs, args.generation) {
        for (key, size) in l
            .catalog_segments
            .iter()
            .filter(|(k, _)| k.name.kind == SegmentKind::Changes)
        {
            rows.push(json!({
                "replica": l.replica.name,
                "url": l.replica.url,
                "generation": generation_name(l.report.generation),
                "index": key.name.min_txid,
                "txids": format!("{}-{}", key.name.min_txid, key.name.max_txid),
                "first_txid": key.name.min_txid,
                "last_txid": key.name.max_txid,
                "size": size,
                "created": rfc3339(key.name.last_ts_ms),
                "key": key.to_string(),
            }));
        }
    }
    print(
        &args,
        &["replica", "generation", "index", "txids", "size", "created"],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_pads_like_tabwriter() {
        let rows = vec![
            json!({"name": "r1", "size": 504, "created": "2026-12-01T22:32:35.000Z"}),
            json!({"name": "replica-two", "size": 7, "created": null}),
        ];
        let t = table(&["name", "size", "created"], &rows);
        assert_eq!(
            t,
            "name         size  created\n\
             r1           504   2026-12-01T22:32:35.000Z\n\
             replica-two  7     -\n"
        );
    }
}
