//! `litestream validate`: a validation restore, for cron and monitoring.
//! (`replicate` schedules the same validation in the engine, per replica.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use lsw::validate::{ValidateOptions, Validation};

use crate::cli;
use crate::target::TargetArgs;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    litestream validate /backups/app\n  \
    litestream validate -replica s3://bucket/app /srv/app.db   (also compares with the live database)\n  \
    litestream validate -max-age 10m /backups/app              (cron: exit 1 when backups stop)\n\n\
Exit status: 0 valid, 1 runtime failure or -max-age exceeded, 2 usage, 3 damage (the first bad object is named).")]
pub struct ValidateArgs {
    /// The replica; or, with -replica, the live database to compare with.
    #[arg(value_name = "DB_PATH | REPLICA_URL")]
    pub path: Option<String>,

    /// The replica, when the argument is the live database.
    #[arg(long, value_name = "URL")]
    pub replica: Option<String>,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Exit 1 when the newest segment is older than this (a database
    /// with no writes writes no segments either).
    #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration)]
    pub max_age: Option<Duration>,

    /// Where the temporary restore goes (default: $TMPDIR, else /tmp).
    /// It needs room for the whole database and is removed afterwards.
    #[arg(long, value_name = "DIR")]
    pub temp_dir: Option<PathBuf>,

    /// Objects fetched at once; from a directory replica at most one per
    /// core, since there a fetch is a copy the CPU makes.
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,

    /// Skip PRAGMA integrity_check (the db checksum is still verified).
    #[arg(long)]
    pub no_integrity_check: bool,
}

/// Where a validation builds its temporary file: beside
/// `DIR/lsw-validate-NAME`, named after our pid.
pub fn scratch_path(dir: Option<&Path>, name: &str) -> PathBuf {
    dir.map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("lsw-validate-{name}"))
}

pub fn run(args: ValidateArgs) -> anyhow::Result<()> {
    let (replica, db) = match (&args.replica, &args.path) {
        (Some(r), db) => (r.clone(), db.as_ref().map(PathBuf::from)),
        (None, Some(p)) if Path::new(p).is_file() => {
            return Err(cli::usage(format!(
                "{p} is a database: give its replica with -replica URL (replicas from a config file come later)"
            )))
        }
        (None, Some(p)) => (p.clone(), None),
        (None, None) => return Err(cli::usage("give a replica URL, or a database and -replica URL")),
    };
    let storage = lsw::storage::open(&replica)?;
    let scratch = scratch_path(args.temp_dir.as_deref(), "db");
    crate::signals::remove_on_signal(&lsw::apply::temp_path_for(&scratch));
    let opts = ValidateOptions {
        request: args.target.request(),
        scratch,
        parallelism: args.parallelism,
        integrity_check: !args.no_integrity_check,
        state_dir: None,
    };
    let mut reader = match &db {
        Some(db) => Some(lsw::live::LiveReader::open(db)?),
        None => None,
    };
    let live = db.as_deref().zip(reader.as_mut());
    let v = lsw::validate::validate(
        storage.as_ref(),
        &opts,
        live,
        &crate::signals::stop_requested,
    )?;
    println!("{}", summary(&v));
    if let (Some(limit), Some(age)) = (args.max_age, v.newest_age(lsw::time::now_ms())) {
        if age > limit {
            let key = v
                .newest
                .as_ref()
                .map(|(k, _)| k.to_string())
                .unwrap_or_default();
            anyhow::bail!(
                "the newest segment ({key}) is {} old, older than -max-age {}; is the replicator running?",
                human_duration(age),
                human_duration(limit)
            );
        }
    }
    Ok(())
}

/// The one line a validation that passed prints.
pub fn summary(v: &Validation) -> String {
    let age = v
        .newest_age(lsw::time::now_ms())
        .map_or("none".into(), |a| format!("{} old", human_duration(a)));
    let mut line = format!(
        "valid: generation {} at txid {} ({}): {}, {} restored and checked in {:.2}s; newest segment {age}",
        lsw::layout::generation_name(v.generation),
        v.txid,
        lsw::time::rfc3339(v.timestamp_ms),
        plural(v.segments, "segment"),
        human_bytes(v.bytes),
        v.restore_time.as_secs_f64(),
    );
    if let Some(live) = &v.live {
        line.push_str(&format!("; {live}"));
    }
    line
}

/// `1 segment`, `2 segments`.
pub fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `850ms`, `3.2s`, `12m3s`, `5h7m`, `3d4h`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}
