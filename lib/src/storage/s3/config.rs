//! Settings of an S3 replica, as Litestream v0.3 users know them, and
//! their spelling as a URL for the pipe tools:
//!
//! ```text
//! s3://BUCKET/PATH?endpoint=http://127.0.0.1:9000&region=us-east-1&force-path-style=true&skip-verify=true
//! ```
//!
//! A YAML config fills the same struct field by field. Keys are never
//! taken from a URL (they would show in process lists and shell
//! histories), and `Debug` never shows them.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

/// Objects above this size are uploaded in parts.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 128 << 20;
/// Size of each part of a multipart upload.
pub const DEFAULT_PART_SIZE: u64 = 64 << 20;
/// How long one request is retried after its last progress.
pub const DEFAULT_RETRY_DEADLINE: Duration = Duration::from_secs(60);
/// S3 refuses parts smaller than this (except the last one).
const MIN_PART_SIZE: u64 = 5 << 20;

#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix of the replica inside the bucket, without leading or
    /// trailing `/` (empty: the bucket's root).
    pub path: String,
    /// `None`: us-east-1 when an endpoint is set, else asked of S3.
    pub region: Option<String>,
    /// An S3-compatible server (`https://minio.local:9000`).
    pub endpoint: Option<String>,
    /// `None`: path-style when an endpoint is set, virtual-hosted otherwise.
    pub force_path_style: Option<bool>,
    /// Accept any TLS certificate (self-signed stores).
    pub skip_verify: bool,
    /// `None`: `LITESTREAM_ACCESS_KEY_ID`/`LITESTREAM_SECRET_ACCESS_KEY`,
    /// then the AWS default chain (`AWS_*`, profile, instance role).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// A failing request is retried, with backoff, until it has made no
    /// progress for this long.
    pub retry_deadline: Duration,
    pub multipart_threshold: u64,
    pub part_size: u64,
}

impl S3Config {
    pub fn new(bucket: impl Into<String>, path: impl AsRef<str>) -> Self {
        S3Config {
            bucket: bucket.into(),
            path: path.as_ref().trim_matches('/').to_string(),
            region: None,
            endpoint: None,
            force_path_style: None,
            skip_verify: false,
            access_key_id: None,
            secret_access_key: None,
            retry_deadline: DEFAULT_RETRY_DEADLINE,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_size: DEFAULT_PART_SIZE,
        }
    }

    /// Parse `s3://BUCKET[/PATH][?name=value&…]`. Parameters: `endpoint`,
    /// `region`, `force-path-style`, `skip-verify`, and this project's
    /// `retry-deadline` (`30s`, `5m`). Like Litestream, a bucket written
    /// as an AWS, DigitalOcean or Backblaze host name
    /// (`s3://b.s3.eu-west-1.amazonaws.com/db`) sets the region and
    /// endpoint it implies.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::Usage(format!("{url}: not an S3 URL (s3://BUCKET/PATH)")))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, path) = location.split_once('/').unwrap_or((location, ""));
        if host.contains('@') {
            // Never echo this URL: it holds a secret.
            return Err(Error::Usage(
                "an S3 URL must not hold credentials; set LITESTREAM_ACCESS_KEY_ID and LITESTREAM_SECRET_ACCESS_KEY (or the AWS_* variables) instead".into(),
            ));
        }
        if host.is_empty() {
            return Err(Error::Usage(format!(
                "{url}: the S3 URL names no bucket (s3://BUCKET/PATH)"
            )));
        }
        let mut config = S3Config::new(host, path);
        config.apply_host_conventions();
        if !query.is_empty() {
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let value = percent_decode(value);
                config.set(name, &value)?;
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Set one setting by its Litestream name (URL parameter or YAML key).
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let flag = |v: &str| match v.to_ascii_lowercase().as_str() {
            "" | "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(Error::Usage(format!(
                "S3 setting {name}: expected true or false, got {v:?}"
            ))),
        };
        match name {
            "endpoint" => {
                self.endpoint = (!value.is_empty()).then(|| normalize_endpoint(value));
            }
            "region" => self.region = (!value.is_empty()).then(|| value.to_string()),
            "force-path-style" | "forcePathStyle" => self.force_path_style = Some(flag(value)?),
            "skip-verify" | "skipVerify" => self.skip_verify = flag(value)?,
            "bucket" => self.bucket = value.to_string(),
            "path" => self.path = value.trim_matches('/').to_string(),
            "retry-deadline" => {
                self.retry_deadline = parse_seconds(value).ok_or_else(|| {
                    Error::Usage(format!(
                        "S3 setting retry-deadline: invalid duration {value:?} (try 30s, 5m)"
                    ))
                })?;
            }
            "access-key-id" | "secret-access-key" | "accessKeyId" | "secretAccessKey" => {
                return Err(Error::Usage(format!(
                    "S3 setting {name} is not accepted in a URL (it would show in process lists); set LITESTREAM_ACCESS_KEY_ID and LITESTREAM_SECRET_ACCESS_KEY instead"
                )));
            }
            _ => {
                return Err(Error::Usage(format!(
                    "unknown S3 setting {name:?} (known: endpoint, region, force-path-style, skip-verify, retry-deadline)"
                )))
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<()> {
        if self.bucket.is_empty() {
            return Err(Error::Usage("S3 replica: no bucket given".into()));
        }
        if self
            .bucket
            .bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')))
        {
            return Err(Error::Usage(format!(
                "S3 replica: invalid bucket name {:?}",
                self.bucket
            )));
        }
        if let Some(e) = &self.endpoint {
            let host = e
                .strip_prefix("https://")
                .or_else(|| e.strip_prefix("http://"))
                .unwrap_or("");
            if host.is_empty() || host.contains(char::is_whitespace) {
                return Err(Error::Usage(format!(
                    "S3 setting endpoint: invalid URL {e:?} (e.g. http://127.0.0.1:9000)"
                )));
            }
        }
        if self.part_size < MIN_PART_SIZE || self.multipart_threshold < self.part_size {
            return Err(Error::Usage(format!(
                "S3 replica: part size {} must be at least 5 MiB and at most the multipart threshold {}",
                self.part_size, self.multipart_threshold
            )));
        }
        Ok(())
    }

    /// Path-style addressing (`endpoint/bucket/key`) rather than
    /// virtual-hosted (`bucket.endpoint/key`).
    pub fn path_style(&self) -> bool {
        self.force_path_style.unwrap_or(self.endpoint.is_some())
    }

    /// The replica for messages: `s3://bucket/path`, no secrets.
    pub fn describe(&self) -> String {
        if self.path.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.path)
        }
    }

    /// Where requests go, for messages.
    pub fn endpoint_for_messages(&self) -> String {
        match (&self.endpoint, &self.region) {
            (Some(e), _) => e.clone(),
            (None, Some(r)) => format!("https://s3.{r}.amazonaws.com"),
            (None, None) => "https://s3.amazonaws.com".into(),
        }
    }

    /// Litestream's host-name conventions: `BUCKET.s3.REGION.amazonaws.com`,
    /// `BUCKET.REGION.digitaloceanspaces.com`,
    /// `BUCKET.s3.REGION.backblazeb2.com`.
    fn apply_host_conventions(&mut self) {
        let host = self.bucket.clone();
        if let Some(rest) = host.strip_suffix(".amazonaws.com") {
            // b.s3.REGION | b.s3-REGION | b.s3
            if let Some((bucket, region)) = rest.rsplit_once(".s3.") {
                self.bucket = bucket.into();
                self.region = Some(region.into());
            } else if let Some((bucket, region)) = rest.rsplit_once(".s3-") {
                self.bucket = bucket.into();
                self.region = Some(region.into());
            } else if let Some(bucket) = rest.strip_suffix(".s3") {
                self.bucket = bucket.into();
            }
        } else if let Some(rest) = host.strip_suffix(".digitaloceanspaces.com") {
            if let Some((bucket, region)) = rest.rsplit_once('.') {
                self.bucket = bucket.into();
                self.endpoint = Some(format!("https://{region}.digitaloceanspaces.com"));
                self.force_path_style = Some(false);
            }
        } else if let Some(rest) = host.strip_suffix(".backblazeb2.com") {
            if let Some((bucket, region)) = rest.rsplit_once(".s3.") {
                self.bucket = bucket.into();
                self.region = Some(region.into());
                self.endpoint = Some(format!("https://s3.{region}.backblazeb2.com"));
                self.force_path_style = Some(false);
            }
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("path", &self.path)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("skip_verify", &self.skip_verify)
            .field("access_key_id", &redact(&self.access_key_id))
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("retry_deadline", &self.retry_deadline)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .finish()
    }
}

/// Litestream prepends `https://` to an endpoint without a scheme.
fn normalize_endpoint(e: &str) -> String {
    let (scheme, rest) = if let Some(rest) = e.strip_prefix("http://") {
        ("http://", rest)
    } else {
        ("https://", e.strip_prefix("https://").unwrap_or(e))
    };
    format!("{scheme}{}", rest.trim_end_matches('/'))
}

fn parse_seconds(s: &str) -> Option<Duration> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_every_setting() {
        let c = S3Config::from_url(
            "s3://bkt/some/db/?endpoint=http://127.0.0.1:9000&region=eu-west-1&force-path-style=false&skip-verify=true&retry-deadline=5s",
        )
        .unwrap();
        assert_eq!(c.bucket, "bkt");
        assert_eq!(c.path, "some/db");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert!(!c.path_style());
        assert!(c.skip_verify);
        assert_eq!(c.retry_deadline, Duration::from_secs(5));
        assert_eq!(c.describe(), "s3://bkt/some/db");
    }

    #[test]
    fn endpoint_implies_path_style_and_https() {
        let c = S3Config::from_url("s3://bkt?endpoint=minio.local%3A9000").unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("https://minio.local:9000"));
        assert!(c.path_style());
        assert_eq!(c.path, "");
        assert!(!S3Config::from_url("s3://bkt/db").unwrap().path_style());
    }

    #[test]
    fn aws_and_other_host_names() {
        let c = S3Config::from_url("s3://bkt.s3.eu-central-1.amazonaws.com/db").unwrap();
        assert_eq!(
            (c.bucket.as_str(), c.region.as_deref()),
            ("bkt", Some("eu-central-1"))
        );
        let c = S3Config::from_url("s3://bkt.nyc3.digitaloceanspaces.com/db").unwrap();
        assert_eq!(c.bucket, "bkt");
        assert_eq!(
            c.endpoint.as_deref(),
            Some("https://nyc3.digitaloceanspaces.com")
        );
        assert!(!c.path_style());
        let c = S3Config::from_url("s3://bkt.s3.us-west-000.backblazeb2.com/db").unwrap();
        assert_eq!(c.region.as_deref(), Some("us-west-000"));
    }

    #[test]
    fn refusals_never_echo_secrets() {
        let e = S3Config::from_url("s3://AKIDSECRET:hunter2@bkt/db").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = S3Config::from_url("s3://bkt/db?secret-access-key=hunter2").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(S3Config::from_url("s3://bkt/db?colour=blue").is_err());
        assert!(S3Config::from_url("s3:///db").is_err());
        assert!(S3Config::from_url("s3://bkt/db?skip-verify=maybe").is_err());
        assert!(S3Config::from_url("s3://bkt/db?endpoint=http://").is_err());
    }

    #[test]
    fn debug_redacts_keys() {
        let mut c = S3Config::new("bkt", "db");
        c.access_key_id = Some("AKIAEXAMPLEKEYID".into());
        c.secret_access_key = Some("wJalrXUtnFEMI/K7MDENG".into());
        let d = format!("{c:?}");
        assert!(
            !d.contains("AKIAEXAMPLEKEYID") && !d.contains("wJalrXUtnFEMI"),
            "{d}"
        );
        assert!(d.contains("<redacted>"));
    }
}
