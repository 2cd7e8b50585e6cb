//! `litestream restore`: plan, fetch and apply in one process, in
//! Litestream's two forms (DB_PATH from the config, or REPLICA_URL with
//! -o), with a dry run that prints the plan and a progress line on a
//! terminal.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lsw::apply::ApplyOptions;
use lsw::layout::{generation_name, SegmentKey};
use lsw::segment::SegmentKind;
use lsw::time::rfc3339;
use serde_json::json;

use crate::cli;
use crate::progress::ProgressLine;
use crate::signals;
use crate::source::{self, Chosen, ConfigArgs, Source};
use crate::target::TargetArgs;
use crate::validate::{human_bytes, plural};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    litestream restore /srv/app.db                        (from the config, to /srv/app.db itself)\n  \
    litestream restore -o /tmp/app.db -replica s3 /srv/app.db\n  \
    litestream restore -o restored.db file:///backups/app\n  \
    litestream restore -dry-run -timestamp 2026-11-25T16:00:00Z /srv/app.db\n\n\
Exit status: 0 restored (or skipped by -if-db-not-exists / -if-replica-exists), 1 runtime failure, 2 usage, 3 integrity failure.")]
pub struct RestoreArgs {
    /// A database in the config (its replicas are the sources), or a
    /// replica: a directory, file:///path or s3://BUCKET/PATH[?endpoint=URL&region=R&…].
    #[arg(value_name = "DB_PATH | REPLICA_URL")]
    pub source: String,

    #[command(flatten)]
    pub config: ConfigArgs,

    /// The database to create (default: DB_PATH itself; required with a REPLICA_URL).
    #[arg(short, long, value_name = "PATH")]
    pub o: Option<PathBuf>,

    /// Restore from this replica of the database (default: the one with
    /// the newest restorable state).
    #[arg(long, value_name = "NAME")]
    pub replica: Option<String>,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Objects fetched at once; from a directory replica at most one per
    /// core, since there a fetch is a copy the CPU makes.
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,

    /// Exit 0 without restoring if the output database already exists.
    #[arg(long)]
    pub if_db_not_exists: bool,

    /// Exit 0 without restoring if no replica holds a backup.
    #[arg(long)]
    pub if_replica_exists: bool,

    /// Print the plan (generation, target txid and time, every segment
    /// and the requests) and exit without fetching or writing anything.
    #[arg(long)]
    pub dry_run: bool,

    /// With -dry-run: print the plan as JSON.
    #[arg(long, requires = "dry_run")]
    pub json: bool,

    /// Skip PRAGMA integrity_check (the db checksum is still verified).
    #[arg(long)]
    pub no_integrity_check: bool,

    /// Print each segment as it is applied, and a summary.
    #[arg(short, long)]
    pub verbose: bool,

    /// Show the progress line (on a terminal only) once a restore has run this long.
    #[arg(long, hide = true, value_name = "DURATION", default_value = "1s", value_parser = cli::parse_duration)]
    pub progress_after: Duration,
}

pub fn run(args: RestoreArgs) -> anyhow::Result<()> {
    let source = source::resolve(&args.source, &args.config, args.replica.as_deref())?;
    let output = match (&args.o, &source.db) {
        (Some(o), _) => o.clone(),
        (None, Some(db)) => db.clone(),
        (None, None) => {
            return Err(cli::usage(format!(
                "-o PATH is required when restoring from a replica URL ({})",
                args.source
            )))
        }
    };
    if args.if_db_not_exists && output.exists() {
        eprintln!(
            "litestream: {} already exists, skipping restore (-if-db-not-exists)",
            output.display()
        );
        return Ok(());
    }
    if !args.dry_run && output.exists() {
        return Err(lsw::Error::database(
            &output,
            "already exists; refusing to overwrite it (remove it or restore to another path with -o)",
        )
        .into());
    }

    let req = args.target.request();
    let chosen = match source::choose(&source.replicas, &req, &mut |w| {
        eprintln!("litestream: {w}")
    }) {
        Err(e) if args.if_replica_exists && source::is_empty_replica(&e) => {
            eprintln!(
                "litestream: no backups of {} found, skipping restore (-if-replica-exists)",
                source.describe()
            );
            return Ok(());
        }
        r => r?,
    };

    if args.dry_run {
        let out = if args.json {
            format!("{}\n", plan_json(&args, &source, &chosen, &output))
        } else {
            plan_text(&source, &chosen, &output)
        };
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
        return Ok(());
    }

    signals::remove_on_signal(&lsw::apply::temp_path_for(&output));
    let opts = ApplyOptions {
        integrity_check: !args.no_integrity_check,
        parallelism: args.parallelism.min(8),
        verify_only: false,
    };
    let started = std::time::Instant::now();
    let plan = &chosen.plan;
    let storage = chosen.replica.storage.as_ref();
    let mut line = ProgressLine::stderr(args.progress_after);
    let restored =
        lsw::restore::restore_plan(storage, plan, &output, args.parallelism, opts, &mut |p| {
            if args.verbose {
                line.clear();
                eprintln!(
                    "litestream: applied {} ({} bytes)",
                    p.segment, p.segment_bytes
                );
            }
            line.update(p);
        });
    line.clear();
    let restored = restored?;
    if args.verbose {
        eprintln!(
            "litestream: restored {} from replica {} ({}), generation {} at txid {} ({}): {}, {} bytes fetched in {:.2}s",
            output.display(),
            chosen.replica.name,
            storage.describe(),
            generation_name(restored.generation),
            restored.txid,
            rfc3339(plan.timestamp_ms),
            plural(restored.segments as usize, "segment"),
            plan.bytes,
            started.elapsed().as_secs_f64()
        );
        if let Some(counts) = lsw::storage::request_summary(storage) {
            eprintln!("litestream: requests: {counts}");
        }
    }
    Ok(())
}

fn kind_name(key: &SegmentKey) -> String {
    match key.name.kind {
        SegmentKind::Snapshot => {
            format!("snapshot part {} of {}", key.name.part + 1, key.name.parts)
        }
        SegmentKind::Changes => "changes".into(),
    }
}

/// The LIST requests planning made (from the backend's counts; a
/// backend that does not count, the file one, listed once), and the
/// GETs the restore would make: one per segment.
fn requests(chosen: &Chosen) -> (u64, u64) {
    let counts = chosen.replica.storage.request_counts();
    let list = counts
        .iter()
        .find(|(k, _)| *k == "LIST")
        .map_or(1, |(_, n)| *n);
    (list, chosen.plan.segments.len() as u64)
}

fn segment_sizes(chosen: &Chosen) -> Vec<(&SegmentKey, u64)> {
    let sizes = chosen.catalog.generations.get(&chosen.plan.generation);
    chosen
        .plan
        .segments
        .iter()
        .map(|k| {
            let size = sizes
                .and_then(|segs| segs.iter().find(|(s, _)| s == k))
                .map_or(0, |(_, n)| *n);
            (k, size)
        })
        .collect()
}

fn plan_text(source: &Source, chosen: &Chosen, output: &Path) -> String {
    use std::fmt::Write as _;
    let plan = &chosen.plan;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "restore {} to {} from replica {} ({})",
        source.describe(),
        output.display(),
        chosen.replica.name,
        chosen.replica.storage.describe()
    );
    let _ = writeln!(
        out,
        "generation {}, txid {} (committed {})",
        generation_name(plan.generation),
        plan.txid,
        rfc3339(plan.timestamp_ms)
    );
    for (key, size) in segment_sizes(chosen) {
        let _ = writeln!(
            out,
            "  {key}  txids {}-{}  {}  {size} bytes",
            key.name.min_txid,
            key.name.max_txid,
            kind_name(key)
        );
    }
    let (list, get) = requests(chosen);
    let _ = writeln!(
        out,
        "total: {}, {} bytes ({})",
        plural(plan.segments.len(), "segment"),
        plan.bytes,
        human_bytes(plan.bytes)
    );
    let _ = writeln!(
        out,
        "requests: {list} LIST (made while planning), {get} GET (one per segment)"
    );
    if output.exists() {
        let _ = writeln!(
            out,
            "note: {} exists; a restore would refuse to overwrite it (use -o)",
            output.display()
        );
    }
    out
}

fn plan_json(args: &RestoreArgs, source: &Source, chosen: &Chosen, output: &Path) -> String {
    let plan = &chosen.plan;
    let segments: Vec<serde_json::Value> = segment_sizes(chosen)
        .into_iter()
        .map(|(key, size)| {
            json!({
                "key": key.to_string(),
                "kind": match key.name.kind {
                    SegmentKind::Snapshot => "snapshot",
                    SegmentKind::Changes => "changes",
                },
                "part": key.name.part,
                "parts": key.name.parts,
                "first_txid": key.name.min_txid,
                "last_txid": key.name.max_txid,
                "time": rfc3339(key.name.last_ts_ms),
                "bytes": size,
            })
        })
        .collect();
    let (list, get) = requests(chosen);
    json!({
        "source": args.source,
        "db": source.db.as_ref().map(|d| d.display().to_string()),
        "replica": chosen.replica.name,
        "url": chosen.replica.url,
        "output": output.display().to_string(),
        "output_exists": output.exists(),
        "generation": generation_name(plan.generation),
        "txid": plan.txid,
        "time": rfc3339(plan.timestamp_ms),
        "segments": segments,
        "segment_count": plan.segments.len(),
        "bytes": plan.bytes,
        "requests": { "LIST": list, "GET": get },
    })
    .to_string()
}
