//! lsw-pull: stream the segments that rebuild a chosen state.

use std::path::PathBuf;

use clap::Parser;

use crate::cli;
use crate::target::TargetArgs;

/// Stream, in order, the segments of a replica that rebuild the latest
/// state (or the one chosen by --generation, --txid, --timestamp) as a
/// segment stream on stdout. Plans from the listing alone; fetches in
/// parallel with bounded memory.
///
/// SRC is a directory path, file:///path, or s3://BUCKET/PATH[?endpoint=URL&region=R&…].
///
/// Exit status: 0 ok, 1 runtime failure, 2 usage, 3 integrity failure.
#[derive(Debug, Parser)]
#[command(
    name = "lsw-pull",
    version,
    after_help = "Example:\n  lsw-pull /backups/app | lsw-apply restored.db"
)]
pub struct Args {
    /// The replica.
    #[arg(value_name = "SRC")]
    pub src: String,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Objects fetched at once; from a directory replica at most one per
    /// core, since there a fetch is a copy the CPU makes.
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,

    /// Write the stream to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE", default_value = "-")]
    pub output: PathBuf,

    /// Print the plan's summary to stderr.
    #[arg(short, long)]
    pub verbose: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let storage = lsw::storage::open(&args.src)?;
    let out = cli::binary_output(&args.output)?;
    let plan = lsw::restore::pull(
        storage.as_ref(),
        &args.target.request(),
        args.parallelism,
        out,
    )?;
    if args.verbose {
        eprintln!(
            "lsw-pull: generation {} up to txid {} ({}): {} segments, {} bytes",
            lsw::layout::generation_name(plan.generation),
            plan.txid,
            lsw::time::rfc3339(plan.timestamp_ms),
            plan.segments.len(),
            plan.bytes
        );
        if let Some(counts) = lsw::storage::request_summary(storage.as_ref()) {
            eprintln!("lsw-pull: requests: {counts}");
        }
    }
    Ok(())
}
