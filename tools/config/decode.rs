//! From the YAML tree to `Config`: Litestream v0.3's keys, types and
//! defaults. A bad value is an error naming file, line and key; an
//! unknown key a warning (Litestream ignores it silently, and a typo then
//! goes unnoticed).

use std::time::Duration;

use lsw::replicator::Level;
use lsw::storage::s3::S3Config;

use super::yaml::{Key, Node, Value};
use super::{
    absolute, duration, Config, DbConfig, LogFormat, LoggingConfig, ReplicaConfig, ReplicaKind,
};

const TOP_KEYS: &[&str] = &[
    "addr",
    "exec",
    "access-key-id",
    "secret-access-key",
    "logging",
    "dbs",
];
const LOGGING_KEYS: &[&str] = &["level", "type", "stderr"];
const DB_KEYS: &[&str] = &[
    "path",
    "meta-path",
    "monitor-interval",
    "checkpoint-interval",
    "min-checkpoint-page-count",
    "max-checkpoint-page-count",
    "replicas",
];
const REPLICA_KEYS: &[&str] = &[
    "type",
    "name",
    "url",
    "path",
    "bucket",
    "region",
    "endpoint",
    "force-path-style",
    "skip-verify",
    "access-key-id",
    "secret-access-key",
    "sync-interval",
    "snapshot-interval",
    "retention",
    "retention-check-interval",
    "validation-interval",
    // Litestream's keys of other replica types, and its encryption.
    "host",
    "user",
    "password",
    "key-path",
    "account-name",
    "account-key",
    "age",
];
const S3_ONLY: &[&str] = &[
    "bucket",
    "region",
    "endpoint",
    "force-path-style",
    "skip-verify",
    "access-key-id",
    "secret-access-key",
];
const OTHER_TYPES: &[(&str, &str)] = &[
    ("host", "sftp"),
    ("user", "sftp"),
    ("password", "sftp"),
    ("key-path", "sftp"),
    ("account-name", "abs"),
    ("account-key", "abs"),
];
/// Replica types Litestream has and this project does not.
const UNSUPPORTED_TYPES: &[&str] = &["gcs", "abs", "sftp", "nats", "oss", "webdav"];

pub fn decode(root: &Node, file: &str) -> anyhow::Result<(Config, Vec<String>)> {
    let mut d = Decoder {
        file,
        warnings: Vec::new(),
    };
    let config = d.config(root)?;
    // In file order, whichever part of the file was read first.
    d.warnings.sort_by_key(|(line, _)| *line);
    Ok((config, d.warnings.into_iter().map(|(_, w)| w).collect()))
}

struct Decoder<'a> {
    file: &'a str,
    warnings: Vec<(usize, String)>,
}

/// The entries of one mapping, and where it is (`dbs[0].replicas[1]`).
struct Fields<'n> {
    entries: &'n [(Key, Node)],
    at: String,
    line: usize,
}

impl<'n> Fields<'n> {
    /// The value of `key`; `None` when absent or null.
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
            .filter(|v| !matches!(v.value, Value::Null))
    }

    /// `dbs[0].path`, or `addr` at the top.
    fn path(&self, key: &str) -> String {
        if self.at.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.at)
        }
    }
}

impl Decoder<'_> {
    fn error(&self, line: usize, at: &str, msg: impl std::fmt::Display) -> anyhow::Error {
        crate::cli::usage(format!("{}:{line}: {at}: {msg}", self.file))
    }

    fn warn(&mut self, line: usize, msg: impl std::fmt::Display) {
        self.warnings
            .push((line, format!("{}:{line}: {msg}", self.file)));
    }

    /// A mapping's fields; a warning for each key not in `known`.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        at: &str,
        known: &[&str],
    ) -> anyhow::Result<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            let at = if at.is_empty() { "top level" } else { at };
            return Err(self.error(
                node.line,
                at,
                format!("expected a mapping of keys, got {}", node.value.kind()),
            ));
        };
        for (key, _) in entries {
            if !known.contains(&key.name.as_str()) {
                let place = if at.is_empty() {
                    "at the top level".to_string()
                } else {
                    format!("in {at}")
                };
                let hint = closest(&key.name, known)
                    .map(|k| format!("; did you mean {k:?}?"))
                    .unwrap_or_default();
                self.warn(
                    key.line,
                    format!("unknown key {:?} {place}, ignored{hint}", key.name),
                );
            }
        }
        Ok(Fields {
            entries,
            at: at.to_string(),
            line: node.line,
        })
    }

    fn string(&self, f: &Fields, key: &str) -> anyhow::Result<Option<(String, usize)>> {
        match f.get(key) {
            None => Ok(None),
            Some(Node {
                value: Value::Scalar { text, .. },
                line,
            }) => Ok(Some((text.clone(), *line))),
            Some(n) => Err(self.error(
                n.line,
                &f.path(key),
                format!("expected a value, got {}", n.value.kind()),
            )),
        }
    }

    /// A string that may be left empty (`exec: ""` is no command).
    fn non_empty(&self, f: &Fields, key: &str) -> anyhow::Result<Option<(String, usize)>> {
        Ok(self.string(f, key)?.filter(|(s, _)| !s.is_empty()))
    }

    fn boolean(&self, f: &Fields, key: &str) -> anyhow::Result<Option<bool>> {
        let Some((s, line)) = self.string(f, key)? else {
            return Ok(None);
        };
        // YAML 1.1's spellings too, as Litestream's Go decoder takes them.
        match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" => Ok(Some(true)),
            "false" | "no" | "n" | "off" => Ok(Some(false)),
            _ => Err(self.error(
                line,
                &f.path(key),
                format!("expected true or false, got {s:?}"),
            )),
        }
    }

    fn duration(&self, f: &Fields, key: &str) -> anyhow::Result<Option<(Duration, usize)>> {
        let Some((s, line)) = self.string(f, key)? else {
            return Ok(None);
        };
        duration::parse(&s)
            .map(|d| Some((d, line)))
            .map_err(|e| self.error(line, &f.path(key), e))
    }

    /// A duration that must be more than zero.
    fn interval(&self, f: &Fields, key: &str, default: Duration) -> anyhow::Result<Duration> {
        match self.duration(f, key)? {
            None => Ok(default),
            Some((d, line)) if d.is_zero() => {
                Err(self.error(line, &f.path(key), "must be more than 0"))
            }
            Some((d, _)) => Ok(d),
        }
    }

    /// A duration where 0 means never (`None`).
    fn optional_interval(
        &self,
        f: &Fields,
        key: &str,
        default: Option<Duration>,
    ) -> anyhow::Result<Option<Duration>> {
        Ok(match self.duration(f, key)? {
            None => default,
            Some((d, _)) => (!d.is_zero()).then_some(d),
        })
    }

    fn count(&self, f: &Fields, key: &str, default: u64) -> anyhow::Result<u64> {
        let Some((s, line)) = self.string(f, key)? else {
            return Ok(default);
        };
        match s.parse::<u64>() {
            Ok(0) => Err(self.error(line, &f.path(key), "must be more than 0")),
            Ok(n) => Ok(n),
            Err(_) => Err(self.error(
                line,
                &f.path(key),
                format!("expected a whole number, got {s:?}"),
            )),
        }
    }

    fn config(&mut self, root: &Node) -> anyhow::Result<Config> {
        let mut config = Config::default();
        if matches!(root.value, Value::Null) {
            return Ok(config);
        }
        let f = self.fields(root, "", TOP_KEYS)?;
        config.addr = self.non_empty(&f, "addr")?.map(|(s, _)| s);
        config.exec = self.non_empty(&f, "exec")?.map(|(s, _)| s);
        let keys = Credentials {
            id: self.non_empty(&f, "access-key-id")?.map(|(s, _)| s),
            secret: self.non_empty(&f, "secret-access-key")?.map(|(s, _)| s),
        };
        if let Some(node) = f.get("logging") {
            config.logging = self.logging(node)?;
        }
        match f.get("dbs") {
            None => {}
            Some(Node {
                value: Value::List(items),
                ..
            }) => {
                for (i, item) in items.iter().enumerate() {
                    let db = self.db(item, &format!("dbs[{i}]"), &keys)?;
                    if let Some(first) = config.dbs.iter().find(|d| d.path == db.path) {
                        return Err(self.error(
                            db.line,
                            &format!("dbs[{i}].path"),
                            format!(
                                "{} is listed twice (also at line {})",
                                db.path.display(),
                                first.line
                            ),
                        ));
                    }
                    config.dbs.push(db);
                }
            }
            Some(n) => {
                return Err(self.error(
                    n.line,
                    "dbs",
                    format!("expected a list, got {}", n.value.kind()),
                ))
            }
        }
        Ok(config)
    }

    fn logging(&mut self, node: &Node) -> anyhow::Result<LoggingConfig> {
        let f = self.fields(node, "logging", LOGGING_KEYS)?;
        let mut logging = LoggingConfig::default();
        if let Some((s, line)) = self.string(&f, "level")? {
            logging.level = match s.to_ascii_lowercase().as_str() {
                "debug" => Level::Debug,
                "info" => Level::Info,
                "warn" | "warning" => Level::Warn,
                "error" => Level::Error,
                _ => {
                    return Err(self.error(
                        line,
                        "logging.level",
                        format!("expected debug, info, warn or error, got {s:?}"),
                    ))
                }
            };
        }
        if let Some((s, line)) = self.string(&f, "type")? {
            logging.format = match s.to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(self.error(
                        line,
                        "logging.type",
                        format!("expected text or json, got {s:?}"),
                    ))
                }
            };
        }
        if let Some(b) = self.boolean(&f, "stderr")? {
            logging.stderr = b;
        }
        Ok(logging)
    }

    fn db(&mut self, node: &Node, at: &str, keys: &Credentials) -> anyhow::Result<DbConfig> {
        let f = self.fields(node, at, DB_KEYS)?;
        let Some((path, _)) = self.non_empty(&f, "path")? else {
            return Err(self.error(
                node.line,
                at,
                "no path; every database needs path: /path/to/app.db",
            ));
        };
        let mut db = DbConfig::new(&path);
        db.line = f.line;
        db.meta_path = self
            .non_empty(&f, "meta-path")?
            .map(|(s, _)| absolute(s.as_ref()));
        db.monitor_interval = self.interval(&f, "monitor-interval", db.monitor_interval)?;
        db.checkpoint_interval =
            self.interval(&f, "checkpoint-interval", db.checkpoint_interval)?;
        db.min_checkpoint_page_count = self.count(
            &f,
            "min-checkpoint-page-count",
            db.min_checkpoint_page_count,
        )?;
        db.max_checkpoint_page_count = self.count(
            &f,
            "max-checkpoint-page-count",
            db.max_checkpoint_page_count,
        )?;
        if db.max_checkpoint_page_count < db.min_checkpoint_page_count {
            let line = f
                .get("max-checkpoint-page-count")
                .or(f.get("min-checkpoint-page-count"))
                .map_or(f.line, |n| n.line);
            return Err(self.error(
                line,
                &f.path("max-checkpoint-page-count"),
                format!(
                    "{} is below min-checkpoint-page-count {}",
                    db.max_checkpoint_page_count, db.min_checkpoint_page_count
                ),
            ));
        }
        match f.get("replicas") {
            None => {}
            Some(Node {
                value: Value::List(items),
                ..
            }) => {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{at}.replicas[{i}]");
                    let replica = self.replica(item, &at, keys)?;
                    if let Some(first) = db.replicas.iter().find(|r| r.name == replica.name) {
                        return Err(self.error(
                            replica.line,
                            &at,
                            format!(
                                "a second replica named {:?} (the first is at line {}); give each a distinct name:",
                                replica.name, first.line
                            ),
                        ));
                    }
                    db.replicas.push(replica);
                }
            }
            Some(n) => {
                return Err(self.error(
                    n.line,
                    &f.path("replicas"),
                    format!("expected a list, got {}", n.value.kind()),
                ))
            }
        }
        Ok(db)
    }

    fn replica(
        &mut self,
        node: &Node,
        at: &str,
        keys: &Credentials,
    ) -> anyhow::Result<ReplicaConfig> {
        let f = self.fields(node, at, REPLICA_KEYS)?;
        if let Some((key, _)) = f.entries.iter().find(|(k, _)| k.name == "age") {
            return Err(self.error(
                key.line,
                &f.path("age"),
                "age encryption is not supported; remove it only if the replica may be stored unencrypted",
            ));
        }
        let url = self.non_empty(&f, "url")?;
        let path = self.non_empty(&f, "path")?;
        let given_type = self.non_empty(&f, "type")?;
        let url_type = url.as_ref().map(|(u, line)| {
            let scheme = u.split_once("://").map_or("file", |(s, _)| s);
            (scheme.to_ascii_lowercase(), *line)
        });
        let (kind, kind_line, kind_key) = match (&url_type, &given_type) {
            (Some((from_url, _)), Some((t, line))) if !from_url.eq_ignore_ascii_case(t) => {
                return Err(self.error(
                    *line,
                    &f.path("type"),
                    format!(
                        "type {t} does not match url {}, a {from_url} replica",
                        url.as_ref().unwrap().0
                    ),
                ))
            }
            (Some((t, line)), _) => (t.clone(), *line, "url"),
            (None, Some((t, line))) => (t.to_ascii_lowercase(), *line, "type"),
            (None, None) => ("file".to_string(), f.line, "type"),
        };
        let replica_kind = match kind.as_str() {
            "file" => self.file_replica(&f, url, path)?,
            "s3" => self.s3_replica(&f, url, path, keys)?,
            t if UNSUPPORTED_TYPES.contains(&t) => {
                return Err(self.error(
                    kind_line,
                    &f.path(kind_key),
                    format!("{t} replicas are not supported; litestream-rs replicates to file and s3 (S3-compatible stores included)"),
                ))
            }
            t => return Err(self.error(kind_line, &f.path(kind_key), format!("unknown replica type {t:?} (file or s3)"))),
        };
        for (key, other) in OTHER_TYPES {
            if let Some(n) = f.get(key) {
                self.warn(
                    n.line,
                    format!("key {key:?} in {at} applies to {other} replicas only, ignored"),
                );
            }
        }
        let mut r = ReplicaConfig::new(replica_kind);
        r.line = f.line;
        if let Some((name, _)) = self.non_empty(&f, "name")? {
            r.name = name;
        }
        r.sync_interval = self
            .duration(&f, "sync-interval")?
            .map_or(r.sync_interval, |(d, _)| d);
        r.snapshot_interval =
            self.optional_interval(&f, "snapshot-interval", r.snapshot_interval)?;
        r.retention = self.optional_interval(&f, "retention", r.retention)?;
        r.retention_check_interval =
            self.interval(&f, "retention-check-interval", r.retention_check_interval)?;
        r.validation_interval =
            self.optional_interval(&f, "validation-interval", r.validation_interval)?;
        Ok(r)
    }

    fn file_replica(
        &mut self,
        f: &Fields,
        url: Option<(String, usize)>,
        path: Option<(String, usize)>,
    ) -> anyhow::Result<ReplicaKind> {
        for key in S3_ONLY {
            if let Some(n) = f.get(key) {
                let msg = format!(
                    "key {key:?} in {} applies to s3 replicas only, ignored",
                    f.at
                );
                self.warn(n.line, msg);
            }
        }
        let dir = match (url, path) {
            (Some(_), Some((_, line))) => {
                return Err(self.error(
                    line,
                    &f.path("path"),
                    "a file replica takes url or path, not both",
                ))
            }
            (Some((u, line)), None) => match u.strip_prefix("file://") {
                Some(p) if p.starts_with('/') => p.to_string(),
                Some(_) => {
                    return Err(self.error(
                        line,
                        &f.path("url"),
                        format!("{u}: a file URL needs an absolute path (file:///path)"),
                    ))
                }
                None => u,
            },
            (None, Some((p, line))) => {
                if p.contains("://") {
                    return Err(self.error(
                        line,
                        &f.path("path"),
                        format!("{p} is a URL; give it as url: instead"),
                    ));
                }
                p
            }
            (None, None) => {
                return Err(self.error(
                    f.line,
                    &f.at,
                    "no url or path; give url: file:///DIR or path: DIR",
                ))
            }
        };
        Ok(ReplicaKind::File(absolute(dir.as_ref())))
    }

    fn s3_replica(
        &mut self,
        f: &Fields,
        url: Option<(String, usize)>,
        path: Option<(String, usize)>,
        keys: &Credentials,
    ) -> anyhow::Result<ReplicaKind> {
        let mut config = match &url {
            Some((u, line)) => {
                super::replica::s3_from_url(u).map_err(|e| self.error(*line, &f.path("url"), e))?
            }
            None => S3Config::new("", ""),
        };
        // Litestream's order: each key overrides what the URL says.
        for key in ["bucket", "region", "endpoint"] {
            if let Some((v, line)) = self.string(f, key)? {
                config
                    .set(key, &v)
                    .map_err(|e| self.error(line, &f.path(key), e))?;
            }
        }
        if let Some((p, line)) = &path {
            if p.contains("://") {
                return Err(self.error(
                    *line,
                    &f.path("path"),
                    format!("{p} is a URL; give it as url: instead"),
                ));
            }
            config.path = p.trim_matches('/').to_string();
        }
        if let Some(b) = self.boolean(f, "force-path-style")? {
            config.force_path_style = Some(b);
        }
        if let Some(b) = self.boolean(f, "skip-verify")? {
            config.skip_verify = b;
        }
        if config.bucket.is_empty() {
            let msg = if url.is_none() && path.is_none() {
                "no url or path; give url: s3://BUCKET/PATH, or bucket: and path:"
            } else {
                "an s3 replica needs a bucket (url: s3://BUCKET/PATH or bucket: BUCKET)"
            };
            return Err(self.error(f.line, &f.at, msg));
        }
        // Keys: the replica's own, else the top-level ones; else the
        // client looks in LITESTREAM_* and then the AWS chain.
        let id = self.non_empty(f, "access-key-id")?;
        let secret = self.non_empty(f, "secret-access-key")?;
        let (id, secret) = if id.is_some() || secret.is_some() {
            (id.map(|(s, _)| s), secret.map(|(s, _)| s))
        } else {
            (keys.id.clone(), keys.secret.clone())
        };
        if id.is_some() != secret.is_some() {
            let missing = if id.is_none() {
                "access-key-id"
            } else {
                "secret-access-key"
            };
            return Err(self.error(
                f.line,
                &f.at,
                format!("{missing} is missing; give both access-key-id and secret-access-key, or neither"),
            ));
        }
        config.access_key_id = id;
        config.secret_access_key = secret;
        config
            .validate()
            .map_err(|e| self.error(f.line, &f.at, e))?;
        Ok(ReplicaKind::S3(config))
    }
}

/// The top-level keys, used by S3 replicas that give none of their own.
struct Credentials {
    id: Option<String>,
    secret: Option<String>,
}

/// The known key nearest to a misspelt one, if it is near enough.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = (key.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}
