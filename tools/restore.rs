//! `litestream restore`: plan, fetch and apply in one process.

use std::path::PathBuf;

use lsw::apply::ApplyOptions;

use crate::signals;
use crate::target::TargetArgs;

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


pub fn run(args: RestoreArgs) -> anyhow::Result<()> {
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
