//! litestream: the meta-binary. Runs the same engine stages as the pipe
//! tools, wired in one process. The subcommands are one table
//! (`Command`); each lives in its own module with its `Args` and `run`.

use clap::{Parser, Subcommand};

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
    /// Replicate the config's databases, or DB_PATH to REPLICA_URLs,
    /// continuously (capture, segment and push in one process) until
    /// SIGINT/SIGTERM or the -exec child exits, then flush and exit.
    ///
    /// It checkpoints each database itself (see --min-checkpoint-page-count
    /// and --max-checkpoint-page-count) and holds SQLite's checkpoint lock
    /// meanwhile: the application's own checkpoints (automatic or PRAGMA
    /// wal_checkpoint) report busy, so its commits do not each try one.
    Replicate(crate::replicate::ReplicateArgs),
    /// List the databases of the config file and their replicas.
    Databases(crate::databases::DatabasesArgs),
    /// Restore a database from a replica (plan, fetch and apply in one
    /// process): a database of the config from its newest replica, or a
    /// replica URL with -o.
    Restore(crate::restore::RestoreArgs),
    /// List the generations of a database's replicas (or of a replica
    /// URL): lag (behind the database's last change with DB_PATH, behind
    /// now with a URL), first and last commit, and the txids a restore
    /// reaches.
    Generations(crate::listings::ListArgs),
    /// List the snapshots of a database's replicas (or of a replica URL).
    Snapshots(crate::listings::ListArgs),
    /// List the changes segments of a database's replicas (or of a
    /// replica URL): one row per segment.
    Wal(crate::listings::ListArgs),
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

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Replicate(a) => crate::replicate::run(a),
        Command::Databases(a) => crate::databases::run(a),
        Command::Restore(a) => crate::restore::run(a),
        Command::Generations(a) => crate::listings::generations(a),
        Command::Snapshots(a) => crate::listings::snapshots(a),
        Command::Wal(a) => crate::listings::wal(a),
        Command::Validate(a) => crate::validate::run(a),
        Command::Verify(a) => crate::verify::run(a),
        Command::Version => {
            println!("litestream-rs {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}
