//! lsw-push: store a segment stream in a replica.

use std::path::PathBuf;

use clap::Parser;
use lsw::push::Pusher;
use lsw::segment_stream::SegmentReader;

use crate::cli;

/// Store each segment of a segment stream (stdin) in a replica, atomically
/// and idempotently: a segment already there is skipped.
///
/// DEST is a directory path, file:///path, or s3://BUCKET/PATH[?endpoint=URL&region=R&…].
///
/// Exit status: 0 ok, 1 runtime failure, 2 usage, 3 integrity failure.
#[derive(Debug, Parser)]
#[command(name = "lsw-push", version)]
pub struct Args {
    /// The replica.
    #[arg(value_name = "DEST")]
    pub dest: String,

    /// Read the segment stream from FILE instead of stdin.
    #[arg(short, long, value_name = "FILE", default_value = "-")]
    pub input: PathBuf,

    /// After each durable position, replace FILE with GENERATION/TXID.
    #[arg(long, value_name = "FILE")]
    pub ack: Option<PathBuf>,

    /// Print a summary line to stderr.
    #[arg(short, long)]
    pub verbose: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // In a pipeline, Ctrl-C reaches every stage: keep storing until the
    // stream ends, so everything captured becomes durable.
    crate::signals::install();
    let storage = lsw::storage::open(&args.dest)?;
    let (input, source) = cli::input(&args.input)?;
    let mut reader = SegmentReader::open(input, &source)?;
    let mut pusher = Pusher::new(storage.as_ref(), args.ack.clone());
    while let Some(rec) = reader.next()? {
        pusher.push(&rec.key, &rec.bytes)?;
    }
    if args.verbose {
        let s = pusher.stats;
        let pos = pusher
            .position()
            .map_or("nothing".to_string(), |p| p.to_string());
        eprintln!(
            "lsw-push: stored {} segments ({} bytes), {} already present; durable at {pos}",
            s.stored, s.bytes, s.skipped
        );
        if let Some(counts) = lsw::storage::request_summary(storage.as_ref()) {
            eprintln!("lsw-push: requests: {counts}");
        }
    }
    Ok(())
}
