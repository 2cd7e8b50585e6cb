//! lsw-shadow: capture a live SQLite database as a frame stream.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use lsw::capture::CaptureOptions;
use lsw::frames::FrameWriter;
use lsw::pipeline::LiveOptions;
use lsw::push::{read_ack, Position};

use crate::{cli, signals};

/// Capture a live SQLite database (WAL mode) as a frame stream on stdout.
///
/// Emits a snapshot when a generation starts, then every committed
/// transaction as it commits, whole and in order, after copying it into
/// the shadow log (.DB-lsw/ beside the database) and fsyncing it (under
/// load, the commits read in one pass, at most one per 20 ms, as one
/// transaction with the last version of each page). Holds a
/// read transaction so no WAL frame is overwritten before it is copied,
/// and checkpoints: PASSIVE above --min-checkpoint-page-count frames,
/// under a short write lock above --max-checkpoint-page-count, and when
/// idle. Meanwhile it holds SQLite's checkpoint lock: the application's
/// own checkpoints (automatic or PRAGMA wal_checkpoint) report busy, so
/// its commits do not each try one. SIGINT/SIGTERM: capture what is
/// left, end the stream, exit 0.
///
/// With --ack FILE (written by lsw-push --ack), the shadow log keeps
/// transactions until the replica has them, and a restart resends what
/// the replica lacks. Without it, a restart starts a new generation.
///
/// With --once: one consistent snapshot as a new generation, then exit
/// (no shadow log, no lock, nothing written beside the database).
///
/// Exit status: 0 ok, 1 runtime failure, 2 usage, 3 integrity failure.
#[derive(Debug, Parser)]
#[command(
    name = "lsw-shadow",
    version,
    after_help = "Examples:\n  lsw-shadow app.db | lsw-segment | lsw-push --ack ack /backups/app   (with --ack ack)\n  lsw-shadow --once app.db | lsw-segment | lsw-push /backups/app"
)]
pub struct Args {
    /// The database file.
    #[arg(value_name = "DB")]
    pub db: PathBuf,

    /// Write one snapshot and exit.
    #[arg(long)]
    pub once: bool,

    /// The replica's durable position, GENERATION/TXID: resend from there.
    #[arg(long, value_name = "GEN/TXID", value_parser = parse_position)]
    pub since: Option<Position>,

    /// The file lsw-push --ack writes: the replica's durable position.
    #[arg(long, value_name = "FILE")]
    pub ack: Option<PathBuf>,

    /// Checkpoint (PASSIVE) once the WAL holds this many frames.
    #[arg(long, default_value_t = 1000)]
    pub min_checkpoint_page_count: u64,

    /// Checkpoint under a short write lock above this many frames.
    #[arg(long, default_value_t = 10_000)]
    pub max_checkpoint_page_count: u64,

    /// Checkpoint an idle database after this long without a commit.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = cli::parse_duration)]
    pub checkpoint_interval: Duration,

    /// Longest wait for the write lock of a forced checkpoint.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = cli::parse_duration)]
    pub write_lock_timeout: Duration,

    /// Longest sleep between checks (file-system events wake it sooner).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = cli::parse_duration)]
    pub monitor_interval: Duration,

    /// Log checkpoints and pruning too, not only generations and resumes.
    #[arg(short, long)]
    pub verbose: bool,
}

fn parse_position(s: &str) -> Result<Position, String> {
    Position::parse(s).ok_or_else(|| format!("invalid position {s:?} (GENERATION/TXID, e.g. 0123456789abcdef/42)"))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let out = cli::binary_stdout()?;
    let mut w = FrameWriter::new(out)?;
    if args.once {
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
        return Ok(());
    }
    signals::install();
    let since = match (&args.since, &args.ack) {
        (Some(p), _) => Some(*p),
        (None, Some(ack)) => read_ack(ack)?,
        (None, None) => None,
    };
    let live = LiveOptions {
        capture: CaptureOptions {
            min_checkpoint_pages: args.min_checkpoint_page_count,
            max_checkpoint_pages: args.max_checkpoint_page_count.max(args.min_checkpoint_page_count),
            checkpoint_interval: args.checkpoint_interval,
            write_lock_timeout: args.write_lock_timeout,
            state_dir: None,
        },
        monitor_interval: args.monitor_interval,
        prune_when_sent: args.ack.is_none(),
    };
    let verbose = args.verbose;
    let ack = args.ack.clone();
    lsw::pipeline::capture_loop(
        &args.db,
        &live,
        since,
        &mut w,
        &signals::STOP,
        &mut || match &ack {
            Some(path) => read_ack(path),
            None => Ok(None),
        },
        &mut |event| {
            let routine = matches!(
                event,
                lsw::capture::Event::Checkpoint { .. } | lsw::capture::Event::Pruned { .. }
            );
            if verbose || !routine {
                eprintln!("lsw-shadow: {event}");
            }
        },
    )?;
    w.finish()?;
    Ok(())
}
