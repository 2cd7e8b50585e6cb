//! What a failed request means, and when to try it again: transient
//! failures (5xx, throttling, timeouts, refused or dropped connections)
//! are retried with exponential backoff and jitter until the request has
//! made no progress for the deadline; everything else becomes one error
//! line that names the bucket or object, with a hint where one helps.

use std::time::{Duration, Instant};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::S3Storage;
use crate::error::{Error, Result};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) const CREDENTIALS_HINT: &str = "check the keys: access-key-id/secret-access-key in the config, LITESTREAM_ACCESS_KEY_ID/LITESTREAM_SECRET_ACCESS_KEY, or the AWS_* variables and profile";

/// What one failed attempt means.
pub(super) enum Failure {
    /// Worth another attempt after a backoff; the text says why.
    Retry(String),
    Fatal(Error),
}

/// The request being made, for messages.
pub(super) struct Op {
    pub(super) action: &'static str,
    pub(super) object: String,
}

impl S3Storage {
    pub(super) fn missing_bucket(&self, op: &Op) -> Error {
        Error::Remote {
            action: op.action,
            object: op.object.clone(),
            reason: format!(
                "bucket {:?} does not exist at {}",
                self.config.bucket,
                self.config.endpoint_for_messages()
            ),
            hint: Some("create the bucket, or check its name and the region/endpoint settings"),
        }
    }

    /// Decide what a failed request means.
    pub(super) fn classify<E>(&self, op: &Op, err: SdkError<E, HttpResponse>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let remote = |reason: String, hint: Option<&'static str>| {
            Failure::Fatal(Error::Remote {
                action: op.action,
                object: op.object.clone(),
                reason,
                hint,
            })
        };
        let endpoint = self.config.endpoint_for_messages();
        match &err {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = se.err().code().unwrap_or("");
                let message = se.err().message().unwrap_or("");
                self.classify_status(op, status, code, message)
            }
            SdkError::TimeoutError(_) => Failure::Retry(format!("{endpoint} timed out")),
            SdkError::DispatchFailure(d) => {
                let why = innermost(&err);
                let tls = why.contains("certificate") || why.contains("UnknownIssuer");
                if tls {
                    remote(
                        format!("TLS to {endpoint}: {why}"),
                        Some("for a self-signed certificate add skip-verify=true (URL) or skip-verify: true (config)"),
                    )
                } else if d.is_user() {
                    remote(format!("cannot send to {endpoint}: {why}"), None)
                } else {
                    Failure::Retry(format!("cannot reach {endpoint}: {why}"))
                }
            }
            SdkError::ResponseError(_) => Failure::Retry(format!(
                "broken response from {endpoint}: {}",
                innermost(&err)
            )),
            SdkError::ConstructionFailure(_) => Failure::Fatal(Error::Usage(format!(
                "{} {}: {}",
                op.action,
                op.object,
                innermost(&err)
            ))),
            _ => Failure::Retry(innermost(&err)),
        }
    }

    pub(super) fn classify_status(
        &self,
        op: &Op,
        status: u16,
        code: &str,
        message: &str,
    ) -> Failure {
        const TRANSIENT: &[&str] = &[
            "SlowDown",
            "Throttling",
            "ThrottlingException",
            "RequestThrottled",
            "TooManyRequests",
            "RequestLimitExceeded",
            "BandwidthLimitExceeded",
            "RequestTimeout",
            "InternalError",
            "ServiceUnavailable",
            "OperationAborted",
            "ConditionalRequestConflict",
        ];
        let what = if code.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("{code}, HTTP {status}")
        };
        if status >= 500 || status == 429 || status == 408 || TRANSIENT.contains(&code) {
            return Failure::Retry(format!("the server answered {what}"));
        }
        let remote = |reason: String, hint: Option<&'static str>| {
            Failure::Fatal(Error::Remote {
                action: op.action,
                object: op.object.clone(),
                reason,
                hint,
            })
        };
        match (status, code) {
            (_, "NoSuchBucket") => Failure::Fatal(self.missing_bucket(op)),
            (404, _) => Failure::Fatal(Error::NotFound(format!(
                "{} {}: no such object",
                op.action, op.object
            ))),
            (_, "InvalidAccessKeyId") => remote(
                format!("the server does not know this access key id ({what})"),
                Some(CREDENTIALS_HINT),
            ),
            (_, "SignatureDoesNotMatch") => remote(
                format!("the secret access key does not match the access key id ({what})"),
                Some(CREDENTIALS_HINT),
            ),
            (_, "PermanentRedirect" | "AuthorizationHeaderMalformed") | (301, _) => remote(
                format!(
                    "bucket {:?} is in another region than {} ({what})",
                    self.config.bucket,
                    self.config.region.as_deref().unwrap_or("us-east-1")
                ),
                Some("set the bucket's region: region=REGION in the URL, or region: in the config"),
            ),
            (401 | 403, _) => remote(format!("access denied ({what})"), Some(CREDENTIALS_HINT)),
            _ if message.is_empty() => remote(format!("the server refused ({what})"), None),
            _ => remote(format!("{message} ({what})"), None),
        }
    }
}

/// Backoff with jitter under a deadline that restarts on progress.
pub(super) struct Retry {
    deadline: Duration,
    since: Instant,
    started: Instant,
    attempts: u32,
    backoff: Duration,
}

impl Retry {
    pub(super) fn new(deadline: Duration) -> Self {
        let now = Instant::now();
        Retry {
            deadline,
            since: now,
            started: now,
            attempts: 0,
            backoff: FIRST_BACKOFF,
        }
    }

    pub(super) fn progress(&mut self) {
        self.since = Instant::now();
        self.backoff = FIRST_BACKOFF;
    }

    /// Sleep before the next attempt, or give up with the last reason.
    pub(super) async fn wait(&mut self, op: &Op, why: String) -> Result<()> {
        self.attempts += 1;
        let delay = jitter(self.backoff);
        if self.since.elapsed() + delay > self.deadline {
            let unreachable = why.starts_with("cannot reach");
            return Err(Error::Remote {
                action: op.action,
                object: op.object.clone(),
                reason: format!(
                    "{why} (gave up after {} attempts in {:.0}s)",
                    self.attempts,
                    self.started.elapsed().as_secs_f64()
                ),
                hint: unreachable.then_some("check the endpoint setting and that the server is up"),
            });
        }
        tokio::time::sleep(delay).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }
}

/// A delay between half and all of `backoff`, so that many clients
/// failing together do not retry together.
fn jitter(backoff: Duration) -> Duration {
    let r = getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15) % 1_000_000;
    backoff / 2 + backoff.mul_f64(r as f64 / 2_000_000.0)
}

/// The most specific text of an error chain ("Connection refused"), which
/// is what a user can act on; the SDK's outer layers only say "dispatch
/// failure". Its first line only: errors are one line.
pub(super) fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let text = cur.to_string();
    let line = text
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches(['.', ':']);
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::super::S3Config;
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_all() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_millis(800));
            assert!(
                d >= Duration::from_millis(400) && d <= Duration::from_millis(800),
                "{d:?}"
            );
        }
    }

    #[test]
    fn statuses_are_classified() {
        let s =
            S3Storage::new(S3Config::from_url("s3://bkt/db?endpoint=http://127.0.0.1:1").unwrap())
                .unwrap();
        let op = s.op("get", "k");
        let retry =
            |status, code| matches!(s.classify_status(&op, status, code, ""), Failure::Retry(_));
        assert!(retry(503, "SlowDown"));
        assert!(retry(500, ""));
        assert!(retry(429, ""));
        assert!(retry(400, "RequestTimeout"));
        assert!(!retry(403, "InvalidAccessKeyId"));
        assert!(!retry(404, "NoSuchBucket"));
        assert!(!retry(400, "InvalidArgument"));
        match s.classify_status(&op, 404, "NoSuchBucket", "") {
            Failure::Fatal(e) => assert!(
                e.to_string().contains("bucket \"bkt\" does not exist"),
                "{e}"
            ),
            _ => unreachable!(),
        }
        match s.classify_status(&op, 404, "NoSuchKey", "") {
            Failure::Fatal(Error::NotFound(m)) => {
                assert_eq!(m, "get s3://bkt/db/k: no such object")
            }
            _ => panic!("NoSuchKey is NotFound"),
        }
    }
}
