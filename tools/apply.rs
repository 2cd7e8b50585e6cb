//! lsw-apply: rebuild a database from a segment or frame stream.

use std::path::PathBuf;

use clap::Parser;
use lsw::apply::ApplyOptions;

use crate::cli;

/// Rebuild a database from a segment stream (or a frame stream) on stdin
/// into OUT: built in a temporary file beside OUT, every checksum and the
/// chain checked, the final db checksum and PRAGMA integrity_check
/// verified, fsynced, then published. Refuses an existing OUT; leaves
/// nothing behind on failure.
///
/// Exit status: 0 ok, 1 runtime failure, 2 usage, 3 integrity failure.
#[derive(Debug, Parser)]
#[command(name = "lsw-apply", version)]
pub struct Args {
    /// The database to create.
    #[arg(value_name = "OUT")]
    pub out: PathBuf,

    /// Read the stream from FILE instead of stdin.
    #[arg(short, long, value_name = "FILE", default_value = "-")]
    pub input: PathBuf,

    /// Check everything, publish nothing (OUT is only used to place the
    /// temporary file).
    #[arg(long)]
    pub verify_only: bool,

    /// Skip PRAGMA integrity_check (the db checksum is still verified).
    #[arg(long)]
    pub no_integrity_check: bool,

    /// Threads that decompress and write snapshot parts.
    #[arg(long, default_value_t = 4)]
    pub parallelism: usize,

    /// Print a summary line to stderr.
    #[arg(short, long)]
    pub verbose: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (input, source) = cli::input(&args.input)?;
    crate::signals::remove_on_signal(&lsw::apply::temp_path_for(&args.out));
    let opts = ApplyOptions {
        integrity_check: !args.no_integrity_check,
        parallelism: args.parallelism,
        verify_only: args.verify_only,
    };
    let r = lsw::restore::apply_stream(input, &source, &args.out, opts)?;
    if args.verbose || args.verify_only {
        eprintln!(
            "lsw-apply: {} generation {} at txid {}: {} pages of {} bytes, checksum {:016x}",
            if args.verify_only {
                "verified"
            } else {
                "restored"
            },
            lsw::layout::generation_name(r.generation),
            r.txid,
            r.db_pages,
            r.page_size,
            r.checksum
        );
    }
    Ok(())
}
