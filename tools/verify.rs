//! `litestream verify`: check a replica without restoring it, and say
//! what a restore at each point would need.

use std::fmt::Write as _;
use std::time::Duration;

use lsw::layout::generation_name;
use lsw::time::rfc3339;
use lsw::verify::{GenerationReport, ReplicaReport, VerifyOptions};

use crate::cli;
use crate::logging::json_string;
use crate::validate::{human_bytes, human_duration, plural};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    litestream verify /backups/app\n  \
    litestream verify -sample 10% -json s3://bucket/app\n\n\
Exit status: 0 sound, 1 runtime failure (some objects unreadable) or -max-age exceeded, 2 usage, 3 damage (the first bad object is named).")]
pub struct VerifyArgs {
    /// The replica: a directory path, file:///path or s3://bucket/path.
    #[arg(value_name = "REPLICA_URL")]
    pub replica: String,

    /// Read and check only this share of the objects, e.g. 10%; the
    /// checks on the listing (gaps, overlaps, missing parts) cover all.
    #[arg(long, value_name = "N%", value_parser = parse_percent)]
    pub sample: Option<f64>,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,

    /// Exit 1 when the newest segment is older than this.
    #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration)]
    pub max_age: Option<Duration>,

    /// Objects read at once.
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let n: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("invalid share {s:?} (try 10%)"))?;
    if !(0.0..=100.0).contains(&n) {
        return Err(format!("share {s:?} is not between 0% and 100%"));
    }
    Ok(n / 100.0)
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let storage = lsw::storage::open(&args.replica)?;
    let opts = VerifyOptions {
        sample: args.sample.unwrap_or(1.0),
        parallelism: args.parallelism,
        seed: lsw::time::now_ms(),
    };
    let report = lsw::verify::verify(storage.as_ref(), &opts)?;
    if args.json {
        println!("{}", json(&report, opts.sample));
    } else {
        print!("{}", text(&report));
    }
    if let Some(p) = report.first_damage().or(report.first_unreadable()) {
        return Err(p.to_error().into());
    }
    if report.generations.is_empty() {
        return Err(
            lsw::Error::NotFound(format!("replica {} holds no backups", report.replica)).into(),
        );
    }
    if let (Some(limit), Some((ts, generation))) = (args.max_age, report.newest()) {
        let age = Duration::from_millis(lsw::time::now_ms().saturating_sub(ts));
        if age > limit {
            anyhow::bail!(
                "the newest segment (generation {}) is {} old, older than -max-age {}; is the replicator running?",
                generation_name(generation),
                human_duration(age),
                human_duration(limit)
            );
        }
    }
    Ok(())
}

fn text(r: &ReplicaReport) -> String {
    let mut out = String::new();
    let objects: usize = r.generations.iter().map(|g| g.objects).sum();
    let checked: usize = r.generations.iter().map(|g| g.checked).sum();
    let bytes: u64 = r.generations.iter().map(|g| g.bytes).sum();
    let _ = writeln!(
        out,
        "replica {}: {}, {objects} objects ({}); read and checked {checked} in {:.2}s",
        r.replica,
        plural(r.generations.len(), "generation"),
        human_bytes(bytes),
        r.elapsed.as_secs_f64()
    );
    for g in &r.generations {
        generation_text(&mut out, g);
    }
    out
}

fn generation_text(out: &mut String, g: &GenerationReport) {
    let _ = writeln!(
        out,
        "generation {}: {}; {} objects ({}), commits {} to {}{}",
        generation_name(g.generation),
        g.status(),
        g.objects,
        human_bytes(g.bytes),
        rfc3339(g.first_ts_ms),
        rfc3339(g.last_ts_ms),
        match g.vanished {
            0 => String::new(),
            n => format!(", {n} deleted while checking"),
        }
    );
    for s in &g.snapshots {
        let parts = if s.present == s.parts {
            plural(s.parts as usize, "part")
        } else {
            format!("{} of {} parts", s.present, s.parts)
        };
        let _ = writeln!(
            out,
            "  snapshot at txid {}: {parts} ({})",
            s.txid,
            human_bytes(s.bytes)
        );
    }
    for range in &g.ranges {
        let _ = writeln!(
            out,
            "  restorable: txids {}-{} ({} to {}) from the snapshot at txid {}, at {}; txid {} needs {} ({})",
            range.first_txid,
            range.last_txid,
            rfc3339(range.first_ts_ms),
            rfc3339(range.last_ts_ms),
            range.snapshot_txid,
            plural(range.points, "point"),
            range.last_txid,
            plural(range.segments, "object"),
            human_bytes(range.bytes)
        );
    }
    for p in &g.problems {
        let label = if p.kind.is_damage() { "damage" } else { "note" };
        let _ = writeln!(out, "  {label} ({}): {p}", p.kind.name());
    }
}

fn json(r: &ReplicaReport, sample: f64) -> String {
    let gens: Vec<String> = r
        .generations
        .iter()
        .map(|g| {
            let snapshots: Vec<String> = g
                .snapshots
                .iter()
                .map(|s| {
                    format!(
                        r#"{{"txid":{},"parts":{},"present":{},"bytes":{},"time":{}}}"#,
                        s.txid,
                        s.parts,
                        s.present,
                        s.bytes,
                        json_string(&rfc3339(s.timestamp_ms))
                    )
                })
                .collect();
            let ranges: Vec<String> = g
                .ranges
                .iter()
                .map(|x| {
                    format!(
                        r#"{{"snapshot_txid":{},"first_txid":{},"last_txid":{},"first_time":{},"last_time":{},"points":{},"segments":{},"bytes":{}}}"#,
                        x.snapshot_txid,
                        x.first_txid,
                        x.last_txid,
                        json_string(&rfc3339(x.first_ts_ms)),
                        json_string(&rfc3339(x.last_ts_ms)),
                        x.points,
                        x.segments,
                        x.bytes
                    )
                })
                .collect();
            let problems: Vec<String> = g
                .problems
                .iter()
                .map(|p| {
                    format!(
                        r#"{{"kind":{},"damage":{},"object":{},"detail":{},"txid":{}}}"#,
                        json_string(p.kind.name()),
                        p.kind.is_damage(),
                        json_string(&p.object),
                        json_string(&p.detail),
                        p.txid
                    )
                })
                .collect();
            format!(
                r#"{{"generation":{},"status":{},"objects":{},"bytes":{},"checked":{},"vanished":{},"first_time":{},"last_time":{},"snapshots":[{}],"restorable":[{}],"problems":[{}]}}"#,
                json_string(&generation_name(g.generation)),
                json_string(g.status()),
                g.objects,
                g.bytes,
                g.checked,
                g.vanished,
                json_string(&rfc3339(g.first_ts_ms)),
                json_string(&rfc3339(g.last_ts_ms)),
                snapshots.join(","),
                ranges.join(","),
                problems.join(",")
            )
        })
        .collect();
    format!(
        r#"{{"replica":{},"ok":{},"sample":{},"elapsed_ms":{},"generations":[{}]}}"#,
        json_string(&r.replica),
        r.first_damage().is_none() && r.first_unreadable().is_none(),
        sample,
        r.elapsed.as_millis(),
        gens.join(",")
    )
}
