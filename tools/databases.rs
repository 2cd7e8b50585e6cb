//! `litestream databases`: the config's databases and their replicas, as
//! Litestream v0.3 prints them (aligned `path` and `replicas` columns), or
//! with `-json` every setting, for scripts. URLs never hold keys.

use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

use crate::config::{duration, ConfigArgs, DbConfig};
use crate::logging::json_string;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  litestream databases\n  litestream databases -config app.yml -json")]
pub struct DatabasesArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Print a JSON array: each database's path, meta_path and replicas
    /// (name, type, url, sync_interval, retention, …).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DatabasesArgs) -> anyhow::Result<()> {
    let loaded = args.config.load_required()?;
    let dbs = &loaded.config.dbs;
    let text = if args.json { json(dbs) } else { table(dbs) };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| lsw::Error::Stream { action: "write stdout", source: e })?;
    Ok(())
}

/// Columns padded to the widest cell plus two spaces, the last one not
/// padded (Go's tabwriter as Litestream sets it up).
pub fn table(dbs: &[DbConfig]) -> String {
    let rows: Vec<[String; 2]> = std::iter::once(["path".to_string(), "replicas".to_string()])
        .chain(dbs.iter().map(|db| {
            let names: Vec<&str> = db.replicas.iter().map(|r| r.name.as_str()).collect();
            [db.path.display().to_string(), names.join(",")]
        }))
        .collect();
    let width = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0) + 2;
    let mut out = String::new();
    for [path, replicas] in &rows {
        let _ = writeln!(out, "{path:<width$}{replicas}");
    }
    out
}

pub fn json(dbs: &[DbConfig]) -> String {
    let opt = |d: Option<Duration>| d.map_or("null".to_string(), |d| json_string(&duration::format(d)));
    let dbs: Vec<String> = dbs
        .iter()
        .map(|db| {
            let meta = db
                .meta_path
                .clone()
                .unwrap_or_else(|| lsw::shadow_log::state_dir(&db.path));
            let replicas: Vec<String> = db
                .replicas
                .iter()
                .map(|r| {
                    format!(
                        "      {{\"name\": {}, \"type\": {}, \"url\": {}, \"sync_interval\": {}, \"snapshot_interval\": {}, \"retention\": {}, \"retention_check_interval\": {}, \"validation_interval\": {}}}",
                        json_string(&r.name),
                        json_string(r.type_name()),
                        json_string(&r.url()),
                        opt(Some(r.sync_interval)),
                        opt(r.snapshot_interval),
                        opt(r.retention),
                        opt(Some(r.retention_check_interval)),
                        opt(r.validation_interval),
                    )
                })
                .collect();
            format!(
                "  {{\n    \"path\": {},\n    \"meta_path\": {},\n    \"replicas\": [{}]\n  }}",
                json_string(&db.path.display().to_string()),
                json_string(&meta.display().to_string()),
                if replicas.is_empty() {
                    String::new()
                } else {
                    format!("\n{}\n    ", replicas.join(",\n"))
                }
            )
        })
        .collect();
    if dbs.is_empty() {
        "[]\n".to_string()
    } else {
        format!("[\n{}\n]\n", dbs.join(",\n"))
    }
}
