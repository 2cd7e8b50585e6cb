//! The YAML config file, as Litestream v0.3 reads it: found by `-config`,
//! else `$LITESTREAM_CONFIG`, else `/etc/litestream.yml`; `$VAR`/`${VAR}`
//! expanded in its text unless `-no-expand-env`; Litestream's keys and
//! defaults. Unlike Litestream, an unknown key is a warning naming its
//! line, and a bad value an error naming its line and key (exit 2).
//!
//! Files: yaml.rs parses with line numbers, expand.rs expands variables,
//! duration.rs reads Go durations, decode.rs turns the tree into `Config`,
//! replica.rs opens what a replica names. man/litestream.yml.5 documents
//! every key.

mod decode;
pub mod duration;
mod expand;
mod replica;
mod yaml;

use std::path::{Path, PathBuf};
use std::time::Duration;

use lsw::capture::CaptureOptions;
use lsw::pipeline::LiveOptions;
use lsw::replicator::{DbSpec, Level};

pub use replica::{s3_from_url, ReplicaConfig, ReplicaKind};

/// Where a config is looked for when neither `-config` nor
/// `$LITESTREAM_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/litestream.yml";
pub const ENV_VAR: &str = "LITESTREAM_CONFIG";

/// `-config PATH` and `-no-expand-env`, the same on every subcommand.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// The configuration file (default: $LITESTREAM_CONFIG, else
    /// /etc/litestream.yml).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Do not expand $VAR and ${VAR} in the configuration file.
    #[arg(long)]
    pub no_expand_env: bool,
}

impl ConfigArgs {
    /// The config, if there is one; its warnings are printed to stderr.
    pub fn load(&self) -> anyhow::Result<Option<Loaded>> {
        let loaded = load(self.config.as_deref(), !self.no_expand_env)?;
        if let Some(l) = &loaded {
            l.print_warnings();
        }
        Ok(loaded)
    }

    /// The config, which must exist (`replicate` without arguments,
    /// `databases`); its warnings are printed to stderr.
    pub fn load_required(&self) -> anyhow::Result<Loaded> {
        self.load()?.ok_or_else(|| {
            crate::cli::usage(format!(
                "no config file: {DEFAULT_PATH} does not exist; give one with -config PATH or ${ENV_VAR}"
            ))
        })
    }
}

/// A config file read and checked.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub config: Config,
    /// `FILE:LINE: unknown key …` lines, without the `litestream: warning: ` prefix.
    pub warnings: Vec<String>,
}

impl Loaded {
    pub fn print_warnings(&self) {
        for w in &self.warnings {
            eprintln!("litestream: warning: {w}");
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Serve Prometheus metrics here (`:9090`, `127.0.0.1:9090`).
    pub addr: Option<String>,
    /// Run this command as a child while replicating (`-exec`).
    pub exec: Option<String>,
    pub logging: LoggingConfig,
    pub dbs: Vec<DbConfig>,
}

impl Config {
    /// The database configured at `path` (compared as absolute paths).
    pub fn db(&self, path: &Path) -> Option<&DbConfig> {
        let want = absolute(path);
        if let Some(db) = self.dbs.iter().find(|d| d.path == want) {
            return Some(db);
        }
        // The same file through a symlink or a different spelling.
        let real = std::fs::canonicalize(&want).ok()?;
        self.dbs
            .iter()
            .find(|d| std::fs::canonicalize(&d.path).ok().as_deref() == Some(real.as_path()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LoggingConfig {
    pub level: Level,
    pub format: LogFormat,
    /// Log to stderr (the default); `stderr: false` logs to stdout, as
    /// Litestream does.
    pub stderr: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: Level::Info,
            format: LogFormat::Text,
            stderr: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DbConfig {
    /// Absolute, `~` expanded.
    pub path: PathBuf,
    /// Where the shadow log lives (`None`: beside the database).
    pub meta_path: Option<PathBuf>,
    pub monitor_interval: Duration,
    pub checkpoint_interval: Duration,
    pub min_checkpoint_page_count: u64,
    pub max_checkpoint_page_count: u64,
    pub replicas: Vec<ReplicaConfig>,
    /// Line of the entry in the file.
    pub line: usize,
}

impl DbConfig {
    /// A database with Litestream's defaults and no replica.
    pub fn new(path: impl AsRef<Path>) -> Self {
        let capture = CaptureOptions::default();
        DbConfig {
            path: absolute(path.as_ref()),
            meta_path: None,
            monitor_interval: Duration::from_secs(1),
            checkpoint_interval: capture.checkpoint_interval,
            min_checkpoint_page_count: capture.min_checkpoint_pages,
            max_checkpoint_page_count: capture.max_checkpoint_pages,
            replicas: Vec::new(),
            line: 0,
        }
    }

    /// How to capture this database.
    pub fn live_options(&self) -> LiveOptions {
        LiveOptions {
            capture: CaptureOptions {
                min_checkpoint_pages: self.min_checkpoint_page_count,
                max_checkpoint_pages: self
                    .max_checkpoint_page_count
                    .max(self.min_checkpoint_page_count),
                checkpoint_interval: self.checkpoint_interval,
                state_dir: self.meta_path.clone(),
                ..CaptureOptions::default()
            },
            monitor_interval: self.monitor_interval,
            prune_when_sent: false,
        }
    }

    /// What the replicator runs for this database: every replica opened.
    pub fn spec(&self) -> anyhow::Result<DbSpec> {
        Ok(DbSpec {
            path: self.path.clone(),
            live: self.live_options(),
            replicas: self
                .replicas
                .iter()
                .map(ReplicaConfig::spec)
                .collect::<anyhow::Result<_>>()?,
        })
    }
}

/// Find, read, expand and decode the config. `explicit` is `-config`;
/// without it `$LITESTREAM_CONFIG` is used, else `/etc/litestream.yml`
/// if it exists (`None` when it does not).
pub fn load(explicit: Option<&Path>, expand_env: bool) -> anyhow::Result<Option<Loaded>> {
    let from_env = std::env::var_os(ENV_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let (path, required) = match (explicit, from_env) {
        (Some(p), _) => (p.to_path_buf(), true),
        (None, Some(p)) => (p, true),
        (None, None) => (PathBuf::from(DEFAULT_PATH), false),
    };
    let path = expand_home(&path);
    let text = match std::fs::read(&path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| {
            crate::cli::usage(format!(
                "{}: not a text file (UTF-8 YAML expected)",
                path.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(crate::cli::usage(format!(
                "config file not found: {}",
                path.display()
            )))
        }
        Err(e) => return Err(lsw::Error::io("read", &path, e).into()),
    };
    let (config, warnings) = parse(&text, &path.display().to_string(), expand_env, &|name| {
        std::env::var(name).ok()
    })?;
    Ok(Some(Loaded {
        path,
        config,
        warnings,
    }))
}

/// Decode config text; `file` names it in messages, `env` looks up
/// variables when `expand_env`.
pub fn parse(
    text: &str,
    file: &str,
    expand_env: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(Config, Vec<String>)> {
    let text = if expand_env {
        expand::expand(text, env)
    } else {
        text.to_string()
    };
    let tree = yaml::parse(&text).map_err(|e| {
        crate::cli::usage(format!("{file}:{}: invalid YAML: {}", e.line, e.message))
    })?;
    decode::decode(&tree, file)
}

/// `~` and `~/…` as the home directory.
pub fn expand_home(path: &Path) -> PathBuf {
    let Some(s) = path.to_str() else {
        return path.to_path_buf();
    };
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    match s {
        "~" => home().unwrap_or_else(|| path.to_path_buf()),
        _ => match (s.strip_prefix("~/"), home()) {
            (Some(rest), Some(h)) => h.join(rest),
            _ => path.to_path_buf(),
        },
    }
}

/// `~` expanded, made absolute against the current directory, and `.`
/// and `..` resolved by name (as Go's `filepath.Abs`).
pub fn absolute(path: &Path) -> PathBuf {
    use std::path::Component;
    let path = expand_home(path);
    let joined = if path.is_absolute() {
        path
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "BUCKET").then(|| "env-bucket".to_string())
    }

    fn parse_ok(text: &str) -> (Config, Vec<String>) {
        parse(text, "test.yml", true, &env).unwrap()
    }

    fn parse_err(text: &str) -> String {
        let e = parse(text, "test.yml", true, &env).unwrap_err();
        assert!(e.downcast_ref::<crate::cli::UsageError>().is_some(), "{e}");
        e.to_string()
    }

    #[test]
    fn full_config() {
        let (c, w) = parse_ok(
            "addr: \":9090\"\nexec: myapp -port 8080\naccess-key-id: AKIATOP\nsecret-access-key: topsecret\n\
             logging:\n  level: debug\n  type: json\n  stderr: false\n\
             dbs:\n  - path: /srv/a.db\n    meta-path: /var/lib/a\n    monitor-interval: 500ms\n    min-checkpoint-page-count: 10\n    max-checkpoint-page-count: 20\n\
             \x20   replicas:\n      - url: s3://$BUCKET/a\n        retention: 72h\n        sync-interval: 10s\n\
             \x20     - name: local\n        path: /backups/a\n        snapshot-interval: 1h30m\n        validation-interval: 0\n",
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.addr.as_deref(), Some(":9090"));
        assert_eq!(c.exec.as_deref(), Some("myapp -port 8080"));
        assert_eq!(
            (c.logging.level, c.logging.format, c.logging.stderr),
            (Level::Debug, LogFormat::Json, false)
        );
        let db = &c.dbs[0];
        assert_eq!(db.path, PathBuf::from("/srv/a.db"));
        assert_eq!(db.meta_path.as_deref(), Some(Path::new("/var/lib/a")));
        assert_eq!(db.monitor_interval, Duration::from_millis(500));
        assert_eq!(
            (db.min_checkpoint_page_count, db.max_checkpoint_page_count),
            (10, 20)
        );
        let [s3, local] = db.replicas.as_slice() else {
            panic!()
        };
        assert_eq!(
            (s3.name.as_str(), s3.url()),
            ("s3", "s3://env-bucket/a".to_string())
        );
        let ReplicaKind::S3(cfg) = &s3.kind else {
            panic!()
        };
        assert_eq!(cfg.access_key_id.as_deref(), Some("AKIATOP"));
        assert_eq!(s3.retention, Some(Duration::from_secs(72 * 3600)));
        assert_eq!(s3.sync_interval, Duration::from_secs(10));
        assert_eq!(
            (local.name.as_str(), local.url()),
            ("local", "file:///backups/a".to_string())
        );
        assert_eq!(local.snapshot_interval, Some(Duration::from_secs(5400)));
        assert_eq!(local.validation_interval, None);
        assert!(c.db(Path::new("/srv/../srv/a.db")).is_some());
        assert!(!format!("{c:?}").contains("topsecret"));
    }

    #[test]
    fn unknown_keys_warn_with_line_and_suggestion() {
        let (c, w) = parse_ok("dbs:\n  - path: /a.db\n    replicas:\n      - path: /r\n        sync-intrval: 1s\nfrobnicate: 1\n");
        assert_eq!(c.dbs.len(), 1);
        assert_eq!(
            w,
            [
                "test.yml:5: unknown key \"sync-intrval\" in dbs[0].replicas[0], ignored; did you mean \"sync-interval\"?",
                "test.yml:6: unknown key \"frobnicate\" at the top level, ignored",
            ]
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            ("dbs:\n  - path: /a.db\n    replicas:\n      - path: /r\n        sync-interval: 1x\n", "test.yml:5: dbs[0].replicas[0].sync-interval: invalid duration \"1x\""),
            ("dbs:\n  - replicas: []\n", "test.yml:2: dbs[0]: no path"),
            ("dbs:\n  - path: /a.db\n    replicas:\n      - name: x\n", "test.yml:4: dbs[0].replicas[0]: no url or path"),
            ("dbs:\n  - path: /a.db\n    replicas:\n      - path: /r\n      - path: /s\n", "test.yml:5: dbs[0].replicas[1]: a second replica named \"file\""),
            ("dbs:\n  - path: /a.db\n  - path: /b/../a.db\n", "test.yml:3: dbs[1].path: /a.db is listed twice"),
            ("dbs:\n  - path: /a.db\n    replicas:\n      - type: gcs\n        bucket: b\n", "test.yml:4: dbs[0].replicas[0].type: gcs replicas are not supported"),
            ("dbs:\n  - path: /a.db\n    replicas:\n      - url: sftp://h/p\n", "test.yml:4: dbs[0].replicas[0].url: sftp replicas are not supported"),
            ("dbs: /a.db\n", "test.yml:1: dbs: expected a list, got a value"),
            ("logging:\n  level: loud\n", "test.yml:2: logging.level: expected debug, info, warn or error"),
            ("dbs:\n  - path: /a.db\n    min-checkpoint-page-count: many\n", "test.yml:3: dbs[0].min-checkpoint-page-count: expected a whole number"),
            ("dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://b/p\n        skip-verify: maybe\n", "test.yml:5: dbs[0].replicas[0].skip-verify: expected true or false"),
            ("dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://b/p\n        access-key-id: AKIAONLY\n", "test.yml:4: dbs[0].replicas[0]: secret-access-key is missing"),
            ("dbs:\n  - path: /a.db\n    replicas:\n      - url: file:///r\n        path: /s\n", "test.yml:5: dbs[0].replicas[0].path: a file replica takes url or path, not both"),
            ("dbs:\n  - path: /a.db\n   bad indent\n", "test.yml:"),
        ];
        for (text, want) in cases {
            let got = parse_err(text);
            assert!(
                got.starts_with(want),
                "{text:?}:\n got  {got}\n want {want}…"
            );
            assert!(!got.contains('\n'), "{got}");
        }
    }

    #[test]
    fn expansion_on_and_off() {
        let text = "dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://${BUCKET}/x\n";
        let (c, _) = parse(text, "t", true, &env).unwrap();
        assert_eq!(c.dbs[0].replicas[0].url(), "s3://env-bucket/x");
        let e = parse(text, "t", false, &env).unwrap_err().to_string();
        assert!(e.starts_with("t:4: dbs[0].replicas[0].url:"), "{e}");
    }

    #[test]
    fn absolute_cleans() {
        assert_eq!(
            absolute(Path::new("/srv/./x/../app.db")),
            PathBuf::from("/srv/app.db")
        );
        assert!(absolute(Path::new("app.db")).is_absolute());
    }
}
