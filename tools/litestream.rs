//! litestream: the meta-binary. Runs the same engine stages as the pipe
//! tools, wired in one process. Subcommands are one table (`Command`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use lsw::apply::ApplyOptions;

use std::time::Duration;

use lsw::capture::CaptureOptions;
use lsw::pipeline::LiveOptions;
use lsw::segmenter::SegmentOptions;

use crate::target::TargetArgs;
use crate::{cli, signals};

/// Continuous, verified backup of SQLite databases (litestream-rs).
///
/// Exit status: 0 ok, 1 runtime failure, 2 usage, 3 integrity failure.
#[derive(Debug, Parser)]
#[command(name = "litestream", version)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replicate a database continuously to a replica (capture, segment and
    /// push in one process) until SIGINT/SIGTERM, then flush and exit.
    Replicate(ReplicateArgs),
    /// Restore a database from a replica (plan, fetch and apply in one process).
    Restore(RestoreArgs),
    /// Validate a replica by restoring it into a temporary file: every
    /// checksum, the chain, integrity_check, and with a database the live
    /// state. Publishes nothing, leaves nothing behind.
    Validate(crate::validate::ValidateArgs),
    /// Check every object of a replica without restoring it, and report
    /// what a restore at each point needs.
    Verify(crate::verify::VerifyArgs),
    /// Print the version.
    Version,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  litestream restore -o restored.db file:///backups/app")]
pub struct RestoreArgs {
    /// The replica: a directory path, file:///path, or s3://BUCKET/PATH[?endpoint=URL&region=R&…].
    #[arg(value_name = "REPLICA_URL")]
    pub replica: String,

    /// The database to create.
    #[arg(short, long, value_name = "PATH")]
    pub o: PathBuf,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Objects fetched at once.
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,

    /// Exit 0 without restoring if the output database already exists.
    #[arg(long)]
    pub if_db_not_exists: bool,

    /// Exit 0 without restoring if the replica holds no backup.
    #[arg(long)]
    pub if_replica_exists: bool,

    /// Skip PRAGMA integrity_check (the db checksum is still verified).
    #[arg(long)]
    pub no_integrity_check: bool,

    /// Print a summary line to stderr.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  litestream replicate /srv/app.db file:///backups/app")]
pub struct ReplicateArgs {
    /// The database file.
    #[arg(value_name = "DB_PATH")]
    pub db: PathBuf,

    /// The replica: a directory path, file:///path, or s3://BUCKET/PATH[?endpoint=URL&region=R&…].
    #[arg(value_name = "REPLICA_URL")]
    pub replica: String,

    /// Cut a segment once its first commit is this old.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = cli::parse_duration)]
    pub sync_interval: Duration,

    /// Checkpoint (PASSIVE) once the WAL holds this many frames.
    #[arg(long, default_value_t = 1000)]
    pub min_checkpoint_page_count: u64,

    /// Checkpoint under a short write lock above this many frames.
    #[arg(long, default_value_t = 10_000)]
    pub max_checkpoint_page_count: u64,

    /// Checkpoint an idle database after this long without a commit.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = cli::parse_duration)]
    pub checkpoint_interval: Duration,

    /// Longest sleep between checks (file-system events wake it sooner).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = cli::parse_duration)]
    pub monitor_interval: Duration,

    /// Run a validation restore of the replica this often (e.g. 1h),
    /// compared with the live database; one log line per run.
    #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration)]
    pub validation_interval: Option<Duration>,

    /// Log checkpoints and pruning too.
    #[arg(short, long)]
    pub verbose: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Replicate(a) => replicate(a),
        Command::Restore(a) => restore(a),
        Command::Validate(a) => crate::validate::run(a),
        Command::Verify(a) => crate::verify::run(a),
        Command::Version => {
            println!("litestream-rs {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

fn replicate(args: ReplicateArgs) -> anyhow::Result<()> {
    signals::install();
    let storage = lsw::storage::open(&args.replica)?;
    let live = LiveOptions {
        capture: CaptureOptions {
            min_checkpoint_pages: args.min_checkpoint_page_count,
            max_checkpoint_pages: args
                .max_checkpoint_page_count
                .max(args.min_checkpoint_page_count),
            checkpoint_interval: args.checkpoint_interval,
            ..CaptureOptions::default()
        },
        monitor_interval: args.monitor_interval,
        prune_when_sent: false,
    };
    let segments = SegmentOptions {
        sync_interval: args.sync_interval,
        ..SegmentOptions::default()
    };
    let verbose = args.verbose;
    eprintln!(
        "litestream: replicating {} to {}",
        args.db.display(),
        storage.describe()
    );
    let storage = storage.as_ref();
    let done = std::sync::atomic::AtomicBool::new(false);
    let stop = || signals::stop_requested() || done.load(std::sync::atomic::Ordering::Relaxed);
    let result = std::thread::scope(|scope| {
        if verbose && lsw::storage::request_summary(storage).is_some() {
            scope.spawn(|| report_requests(storage, &done));
        }
        let (db, stop) = (&args.db, &stop);
        let validator = args
            .validation_interval
            .map(|every| scope.spawn(move || crate::validate::scheduled(storage, db, every, stop)));
        let r = lsw::pipeline::replicate(
            &args.db,
            storage,
            &live,
            segments,
            &signals::STOP,
            &|line| {
                if verbose || !(line.starts_with("checkpoint") || line.starts_with("pruned")) {
                    eprintln!("litestream: {line}");
                }
            },
        );
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(stats) = validator.and_then(|v| v.join().ok()) {
            eprintln!("litestream: validations: {stats}");
        }
        r
    });
    // Requests cost money on S3: say how many, whether or not it failed.
    if let Some(counts) = lsw::storage::request_summary(storage) {
        eprintln!("litestream: requests: {counts}");
    }
    if let Some(p) = result? {
        eprintln!("litestream: stopped; the replica is durable at {p}");
    }
    Ok(())
}

/// With `-v`: the request counts so far, once a minute while they change.
fn report_requests(storage: &dyn lsw::storage::Storage, done: &std::sync::atomic::AtomicBool) {
    const EVERY: Duration = Duration::from_secs(60);
    let mut last = lsw::storage::request_summary(storage);
    let mut since = std::time::Instant::now();
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if since.elapsed() >= EVERY {
            since = std::time::Instant::now();
            let now = lsw::storage::request_summary(storage);
            if now != last {
                if let Some(counts) = &now {
                    eprintln!("litestream: requests so far: {counts}");
                }
                last = now;
            }
        }
    }
}

fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    if args.if_db_not_exists && args.o.exists() {
        eprintln!(
            "litestream: {} already exists, skipping restore",
            args.o.display()
        );
        return Ok(());
    }
    let storage = lsw::storage::open(&args.replica)?;
    signals::remove_on_signal(&lsw::apply::temp_path_for(&args.o));
    let opts = ApplyOptions {
        integrity_check: !args.no_integrity_check,
        parallelism: args.parallelism.min(8),
        verify_only: false,
    };
    let started = std::time::Instant::now();
    let result = lsw::restore::restore(
        storage.as_ref(),
        &args.target.request(),
        &args.o,
        args.parallelism,
        opts,
    );
    let (plan, restored) = match result {
        Err(lsw::Error::NotFound(msg))
            if args.if_replica_exists && msg.contains("holds no backups") =>
        {
            eprintln!("litestream: {msg}, skipping restore");
            return Ok(());
        }
        r => r?,
    };
    if args.verbose {
        eprintln!(
            "litestream: restored {} from generation {} at txid {} ({}): {} segments, {} bytes fetched in {:.2}s",
            args.o.display(),
            lsw::layout::generation_name(restored.generation),
            restored.txid,
            lsw::time::rfc3339(plan.timestamp_ms),
            restored.segments,
            plan.bytes,
            started.elapsed().as_secs_f64()
        );
        if let Some(counts) = lsw::storage::request_summary(storage.as_ref()) {
            eprintln!("litestream: requests: {counts}");
        }
    }
    Ok(())
}
