//! `litestream replicate`: capture, segment and push in one process.

use std::path::PathBuf;
use std::time::Duration;

use lsw::capture::CaptureOptions;
use lsw::pipeline::LiveOptions;
use lsw::replicator::{DbSpec, Level, ReplicaSpec, Replicator, RunOptions};

use crate::{cli, signals};

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


pub fn run(args: ReplicateArgs) -> anyhow::Result<()> {
    signals::install();
    let storage: std::sync::Arc<dyn lsw::storage::Storage> = lsw::storage::open(&args.replica)?.into();
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
    let mut replica = ReplicaSpec::new(storage_type(&args.replica), storage.clone());
    replica.sync_interval = args.sync_interval;
    let replicator = Replicator::new(vec![DbSpec {
        path: args.db.clone(),
        live,
        replicas: vec![replica],
    }])?;
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
        let r = replicator.run(&RunOptions::default(), &signals::STOP, &|event| {
            if verbose || event.level > Level::Debug {
                eprintln!("litestream: {}", event.message);
            }
        });
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
    for outcome in result? {
        if let Some(p) = outcome.position {
            eprintln!("litestream: stopped; the replica is durable at {p}");
        }
    }
    Ok(())
}

/// A replica's type, its name when the config gives none.
fn storage_type(url: &str) -> &'static str {
    if url.starts_with("s3://") {
        "s3"
    } else {
        "file"
    }
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

