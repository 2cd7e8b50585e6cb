//! lsw-segment: pack a frame stream into segments.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;
use lsw::frames::{Frame, FrameReader};
use lsw::segment_stream::SegmentWriter;
use lsw::segmenter::SegmentOptions;

use crate::cli;

/// Pack a frame stream (stdin) into compressed, checksummed segments: a
/// segment stream on stdout.
///
/// Snapshots become page-range parts of at most --part-size; transactions
/// are batched into changes segments, each page once. A commit after a
/// quiet --sync-interval goes out at once; later ones are cut when the
/// first of them is --sync-interval old, past --max-size, or at the end.
///
/// Exit status: 0 ok, 1 runtime failure, 2 usage, 3 integrity failure.
#[derive(Debug, Parser)]
#[command(name = "lsw-segment", version)]
pub struct Args {
    /// Read the frame stream from FILE instead of stdin.
    #[arg(short, long, value_name = "FILE", default_value = "-")]
    pub input: PathBuf,

    /// Cut a changes segment once its first commit is this old.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = cli::parse_duration)]
    pub sync_interval: Duration,

    /// Uncompressed size of a snapshot part.
    #[arg(long, value_name = "SIZE", default_value = "4MiB", value_parser = cli::parse_size)]
    pub part_size: usize,

    /// Cut a changes segment once its pages pass this size.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = cli::parse_size)]
    pub max_size: usize,

    /// zstd compression level of snapshots (1-19).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,

    /// zstd compression level of changes segments (1-19): low, since they
    /// are made all the time under load.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub changes_level: i32,

    /// Print a summary line to stderr.
    #[arg(short, long)]
    pub verbose: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // In a pipeline, Ctrl-C reaches every stage: keep going until the
    // capture stage closes the stream, so nothing captured is dropped.
    crate::signals::install();
    let out = cli::binary_stdout()?;
    let (input, source) = cli::input(&args.input)?;
    let mut reader = FrameReader::open(input, &source)?;
    let mut writer = SegmentWriter::new(out)?;
    let opts = SegmentOptions {
        part_bytes: args.part_size,
        max_pending_bytes: args.max_size,
        sync_interval: args.sync_interval,
        level: args.level,
        changes_level: args.changes_level,
    };

    // Frames arrive on a thread of their own so a sync deadline can pass
    // while stdin is quiet.
    let (tx, rx) = mpsc::sync_channel::<lsw::Result<Frame>>(1024);
    std::thread::spawn(move || loop {
        let next = reader.next();
        let last = !matches!(next, Ok(Some(_)));
        if tx.send(next.map(|f| f.unwrap_or(Frame::End { records: 0 }))).is_err() || last {
            return;
        }
    });

    let (mut segments, mut bytes) = (0u64, 0u64);
    lsw::pipeline::segment_loop(&rx, opts, &mut |seg| {
        segments += 1;
        bytes += seg.bytes.len() as u64;
        writer.write(&seg.key, &seg.bytes)?;
        writer.flush()
    })?;
    writer.end()?;
    writer.finish()?;
    if args.verbose {
        eprintln!("lsw-segment: wrote {segments} segments, {bytes} bytes");
    }
    Ok(())
}
