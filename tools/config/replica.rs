//! One replica of a configured database: where it is (a directory or an
//! S3 location with its settings) and its schedule. `Debug` and `url()`
//! never show keys.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lsw::replicator::{ReplicaSpec, DEFAULT_RETENTION, DEFAULT_RETENTION_CHECK_INTERVAL};
use lsw::storage::s3::{S3Config, S3Storage};
use lsw::storage::{file::FileStorage, Storage};

#[derive(Debug, Clone)]
pub enum ReplicaKind {
    /// A directory (absolute).
    File(PathBuf),
    /// An S3 bucket and prefix; its `Debug` redacts the keys.
    S3(S3Config),
}

#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// The config's `name`, else the type (`file`, `s3`).
    pub name: String,
    pub kind: ReplicaKind,
    pub sync_interval: Duration,
    pub snapshot_interval: Option<Duration>,
    /// `None`: keep everything (`retention: 0`).
    pub retention: Option<Duration>,
    pub retention_check_interval: Duration,
    pub validation_interval: Option<Duration>,
    /// Line of the entry in the file.
    pub line: usize,
}

impl ReplicaConfig {
    /// A replica with Litestream's defaults.
    pub fn new(kind: ReplicaKind) -> Self {
        let name = match kind {
            ReplicaKind::File(_) => "file",
            ReplicaKind::S3(_) => "s3",
        };
        ReplicaConfig {
            name: name.into(),
            kind,
            sync_interval: Duration::from_secs(1),
            snapshot_interval: None,
            retention: Some(DEFAULT_RETENTION),
            retention_check_interval: DEFAULT_RETENTION_CHECK_INTERVAL,
            validation_interval: None,
            line: 0,
        }
    }

    /// `file` or `s3`.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            ReplicaKind::File(_) => "file",
            ReplicaKind::S3(_) => "s3",
        }
    }

    /// The replica as a URL for messages and listings: `file:///path` or
    /// `s3://bucket/path` with its non-default settings as parameters
    /// (`?endpoint=…&force-path-style=true`), never a key. The pipe tools
    /// open the same URL (given the keys in the environment).
    pub fn url(&self) -> String {
        match &self.kind {
            ReplicaKind::File(p) => format!("file://{}", p.display()),
            ReplicaKind::S3(c) => {
                let mut params = Vec::new();
                if let Some(e) = &c.endpoint {
                    params.push(format!("endpoint={e}"));
                }
                if let Some(r) = &c.region {
                    params.push(format!("region={r}"));
                }
                if let Some(f) = c.force_path_style {
                    if f != c.endpoint.is_some() {
                        params.push(format!("force-path-style={f}"));
                    }
                }
                if c.skip_verify {
                    params.push("skip-verify=true".into());
                }
                if params.is_empty() {
                    c.describe()
                } else {
                    format!("{}?{}", c.describe(), params.join("&"))
                }
            }
        }
    }

    /// Open the replica's storage (an S3 client is built on first use).
    pub fn open(&self) -> anyhow::Result<Arc<dyn Storage>> {
        Ok(match &self.kind {
            ReplicaKind::File(p) => Arc::new(FileStorage::new(p.clone())),
            ReplicaKind::S3(c) => Arc::new(S3Storage::new(c.clone())?),
        })
    }

    /// What the replicator runs for this replica.
    pub fn spec(&self) -> anyhow::Result<ReplicaSpec> {
        let mut spec = ReplicaSpec::new(self.name.clone(), self.open()?);
        spec.sync_interval = self.sync_interval;
        spec.snapshot_interval = self.snapshot_interval;
        spec.retention = self.retention;
        spec.retention_check_interval = self.retention_check_interval;
        spec.validation_interval = self.validation_interval;
        Ok(spec)
    }
}

/// An S3 replica URL, as `S3Config::from_url` reads it, plus
/// Litestream's form for a local MinIO: `s3://BUCKET.localhost:9000/PATH`
/// (endpoint http://localhost:9000, region us-east-1, path-style).
pub fn s3_from_url(url: &str) -> lsw::Result<S3Config> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, path) = location.split_once('/').unwrap_or((location, ""));
        let (name, port) = host.rsplit_once(':').map_or((host, None), |(h, p)| (h, Some(p)));
        if let Some(bucket) = name.strip_suffix(".localhost").filter(|b| !b.is_empty()) {
            let query = if query.is_empty() { String::new() } else { format!("?{query}") };
            let mut c = S3Config::from_url(&format!("s3://{bucket}/{path}{query}"))?;
            if c.endpoint.is_none() {
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                c.endpoint = Some(format!("http://localhost{port}"));
            }
            c.region.get_or_insert_with(|| "us-east-1".into());
            return Ok(c);
        }
    }
    S3Config::from_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minio_on_localhost() {
        let c = s3_from_url("s3://mybkt.localhost:9000/db").unwrap();
        assert_eq!((c.bucket.as_str(), c.path.as_str()), ("mybkt", "db"));
        assert_eq!(c.endpoint.as_deref(), Some("http://localhost:9000"));
        assert_eq!(c.region.as_deref(), Some("us-east-1"));
        assert!(c.path_style());
        assert_eq!(s3_from_url("s3://b/p").unwrap().endpoint, None);
    }

    #[test]
    fn url_shows_settings_not_keys() {
        let mut c = S3Config::new("bkt", "db");
        c.endpoint = Some("http://127.0.0.1:9000".into());
        c.access_key_id = Some("AKIAEXAMPLE".into());
        c.secret_access_key = Some("s3cr3t".into());
        let r = ReplicaConfig::new(ReplicaKind::S3(c));
        assert_eq!(r.url(), "s3://bkt/db?endpoint=http://127.0.0.1:9000");
        let d = format!("{r:?}");
        assert!(!d.contains("AKIAEXAMPLE") && !d.contains("s3cr3t"), "{d}");
        let f = ReplicaConfig::new(ReplicaKind::File("/backups/app".into()));
        assert_eq!(
            (f.url().as_str(), f.name.as_str()),
            ("file:///backups/app", "file")
        );
    }
}
