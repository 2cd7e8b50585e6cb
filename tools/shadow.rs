//! lsw-shadow: capture a live SQLite database as a frame stream.

use std::path::PathBuf;

use clap::Parser;
use lsw::frames::FrameWriter;

use crate::cli;

/// Capture a live SQLite database (WAL mode) as a frame stream on stdout.
///
/// With --once: a new generation holding one consistent snapshot of the
/// database at its latest committed transaction, read under a read
/// transaction without taking the write lock; then exit. Applications keep
/// reading and writing meanwhile.
///
/// Exit status: 0 ok, 1 runtime failure, 2 usage, 3 integrity failure.
#[derive(Debug, Parser)]
#[command(
    name = "lsw-shadow",
    version,
    after_help = "Example:\n  lsw-shadow --once app.db | lsw-segment | lsw-push /backups/app"
)]
pub struct Args {
    /// The database file.
    #[arg(value_name = "DB")]
    pub db: PathBuf,

    /// Write one snapshot and exit.
    #[arg(long)]
    pub once: bool,

    /// Print a summary line to stderr.
    #[arg(short, long)]
    pub verbose: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !args.once {
        return Err(cli::usage(
            "continuous capture is not available yet; use --once for a snapshot",
        ));
    }
    let out = cli::binary_stdout()?;
    let mut w = FrameWriter::new(out)?;
    let (generation, info) = lsw::shadow::snapshot_once(&args.db, &mut w)?;
    w.finish()?;
    if args.verbose {
        eprintln!(
            "lsw-shadow: snapshot of {} ({} pages of {} bytes) as generation {}, txid {}",
            args.db.display(),
            info.db_pages,
            info.page_size,
            lsw::layout::generation_name(generation),
            lsw::shadow::FIRST_TXID
        );
    }
    Ok(())
}
