//! A replica in an S3 bucket (AWS, or an S3-compatible store: MinIO,
//! Garage, R2, B2, Tigris), through aws-sdk-s3.
//!
//! The `Storage` trait is synchronous; this backend owns a small tokio
//! runtime and blocks on it. `Runtime::block_on` may be entered from many
//! std threads at once (lsw's parallel fetch does), each driving its own
//! request while the runtime's workers drive the sockets and timers. Do
//! not call it from inside another tokio runtime.
//!
//! Every request goes through one retry policy (retry.rs): transient
//! failures are retried with backoff and jitter under a no-progress
//! deadline, everything else fails at once with one line naming the
//! bucket or object. The SDK's own retries are off, so that policy and
//! the request counts are ours alone. Files: client.rs builds the SDK
//! client (HTTP, credentials, region), config.rs the settings, tls.rs the
//! skip-verify connector.

mod client;
mod config;
mod retry;
mod tls;

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;

pub use config::S3Config;
use retry::{innermost, Failure, Op, Retry};

use super::{ObjectInfo, Operation, OperationCount, OperationCounters, PutOutcome, Storage};
use crate::error::{Error, Result};

/// Waiting for response headers (and for each chunk of a body).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// An upload may take this much longer per byte (a 256 KiB/s floor).
const UPLOAD_BYTES_PER_SEC: u64 = 256 << 10;

pub struct S3Storage {
    config: S3Config,
    runtime: tokio::runtime::Runtime,
    /// Built on first use: it may have to ask S3 for the bucket's region
    /// and walk the AWS credentials chain.
    client: Mutex<Option<Client>>,
    /// Keys known to be stored, per directory (a key's prefix up to its
    /// last `/`), filled by one listing on the first put into it.
    stored: Mutex<HashMap<String, HashSet<String>>>,
    /// Send `If-None-Match: *` with puts; cleared if the store says 501.
    conditional_put: AtomicBool,
    /// Requests and bytes per operation, retries included.
    ops: OperationCounters,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl S3Storage {
    pub fn new(config: S3Config) -> Result<Self> {
        config.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lsw-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Remote {
                action: "start the S3 client for",
                object: config.describe(),
                reason: e.to_string(),
                hint: None,
            })?;
        Ok(S3Storage {
            config,
            runtime,
            client: Mutex::new(None),
            stored: Mutex::new(HashMap::new()),
            conditional_put: AtomicBool::new(true),
            ops: OperationCounters::default(),
        })
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    fn count(&self, kind: Operation) {
        self.ops.request(kind);
    }

    /// The replica path joined to a relative key or prefix.
    fn full_key(&self, key: &str) -> String {
        if self.config.path.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.config.path)
        }
    }

    fn op(&self, action: &'static str, key: &str) -> Op {
        Op {
            action,
            object: format!("s3://{}/{}", self.config.bucket, self.full_key(key)),
        }
    }

    fn client(&self) -> Result<Client> {
        let mut slot = self.client.lock().unwrap();
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let client = self.runtime.block_on(self.build_client())?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Make one request, with retries. `send(attempt)` issues it (attempt
    /// counts from 0). `settle(status, code, attempt)` may settle an
    /// error status before the usual classification: `Some(Ok(()))` ends
    /// the call with `Ok(None)`, `Some(Err(e))` with the error.
    async fn call<T, E, Fut>(
        &self,
        op: &Op,
        kind: Operation,
        limit: Duration,
        mut send: impl FnMut(u32) -> Fut,
        mut settle: impl FnMut(u16, &str, u32) -> Option<Result<()>>,
    ) -> Result<Option<T>>
    where
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let mut retry = Retry::new(self.config.retry_deadline);
        for attempt in 0.. {
            self.count(kind);
            let why = match tokio::time::timeout(limit, send(attempt)).await {
                Err(_) => format!("no response within {}s", limit.as_secs()),
                Ok(Ok(v)) => return Ok(Some(v)),
                Ok(Err(e)) => {
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    let code = e.code().unwrap_or("");
                    if let Some(settled) = status.and_then(|s| settle(s, code, attempt)) {
                        return settled.map(|()| None);
                    }
                    match self.classify(op, e) {
                        Failure::Retry(why) => why,
                        Failure::Fatal(e) => return Err(e),
                    }
                }
            };
            retry.wait(op, why).await?;
        }
        unreachable!("the attempt counter does not run out")
    }

    /// `call` for a request whose every error status is classified.
    async fn call_plain<T, E, Fut>(
        &self,
        op: &Op,
        kind: Operation,
        limit: Duration,
        send: impl FnMut(u32) -> Fut,
    ) -> Result<T>
    where
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match self.call(op, kind, limit, send, |_, _, _| None).await? {
            Some(v) => Ok(v),
            None => unreachable!("nothing settles a plain call early"),
        }
    }

    async fn list_async(&self, client: &Client, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let root = if self.config.path.is_empty() {
            String::new()
        } else {
            format!("{}/", self.config.path)
        };
        let full_prefix = format!("{root}{prefix}");
        let op = self.op("list", prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .call_plain(&op, Operation::List, RESPONSE_TIMEOUT, |_| {
                    client
                        .list_objects_v2()
                        .bucket(&self.config.bucket)
                        .prefix(&full_prefix)
                        .set_continuation_token(token.clone())
                        .send()
                })
                .await?;
            for obj in page.contents() {
                if let Some(key) = obj.key().and_then(|k| k.strip_prefix(&root)) {
                    out.push(ObjectInfo {
                        key: key.to_string(),
                        size: obj.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Download a whole object. A body that breaks off is resumed from the
    /// first missing byte (`Range`, and `If-Match` on the ETag so the
    /// pieces are of one object), so progress is never thrown away. The
    /// object lands in `buf`, cleared first, its allocation kept.
    async fn get_async(&self, client: &Client, key: &str, buf: &mut Vec<u8>) -> Result<()> {
        let op = self.op("get", key);
        let full = self.full_key(key);
        buf.clear();
        let mut body = Download {
            buf: std::mem::take(buf),
            ..Download::default()
        };
        let mut retry = Retry::new(self.config.retry_deadline);
        loop {
            let before = body.buf.len();
            match self.get_attempt(client, &op, &full, &mut body).await {
                Ok(()) => {
                    *buf = body.buf;
                    return Ok(());
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(why)) => {
                    if body.buf.len() > before {
                        retry.progress();
                    }
                    retry.wait(&op, why).await?;
                }
            }
        }
    }

    async fn get_attempt(
        &self,
        client: &Client,
        op: &Op,
        full: &str,
        dl: &mut Download,
    ) -> Result<(), Failure> {
        let resume_at = dl.buf.len() as u64;
        let mut req = client.get_object().bucket(&self.config.bucket).key(full);
        if resume_at > 0 {
            req = req
                .range(format!("bytes={resume_at}-"))
                .set_if_match(dl.etag.clone());
        }
        self.count(Operation::Get);
        let out = match tokio::time::timeout(RESPONSE_TIMEOUT, req.send()).await {
            Err(_) => return Err(Failure::Retry("no response within 30s".into())),
            Ok(Err(e)) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                if resume_at > 0 && status == Some(412) {
                    return Err(Failure::Fatal(Error::integrity(
                        &op.object,
                        "the object changed while it was being downloaded (its ETag no longer matches)",
                    )));
                }
                return Err(self.classify(op, e));
            }
            Ok(Ok(out)) => out,
        };
        if resume_at == 0 {
            dl.etag = out.e_tag().map(str::to_string);
            dl.total = out.content_length().map(|n| n.max(0) as u64);
            dl.buf.reserve(dl.total.unwrap_or(0) as usize);
            crate::huge_pages::advise(&mut dl.buf);
        } else {
            // A store that ignores Range sends the whole object: start over.
            let start = out.content_range().and_then(range_start);
            if start != Some(resume_at) {
                dl.buf.clear();
            }
        }
        let mut stream = out.body;
        loop {
            match tokio::time::timeout(RESPONSE_TIMEOUT, stream.next()).await {
                Err(_) => {
                    return Err(Failure::Retry(format!(
                        "download stalled at byte {}",
                        dl.buf.len()
                    )))
                }
                Ok(None) => break,
                Ok(Some(Ok(chunk))) => {
                    self.ops.bytes(Operation::Get, chunk.len() as u64);
                    dl.buf.extend_from_slice(&chunk)
                }
                Ok(Some(Err(e))) => {
                    return Err(Failure::Retry(format!(
                        "download broke off at byte {}: {}",
                        dl.buf.len(),
                        innermost(&e)
                    )))
                }
            }
        }
        match dl.total {
            Some(total) if (dl.buf.len() as u64) < total => Err(Failure::Retry(format!(
                "download broke off at byte {} of {total}",
                dl.buf.len()
            ))),
            Some(total) if (dl.buf.len() as u64) > total => Err(Failure::Fatal(Error::corrupt(
                &op.object,
                total,
                "the server sent more bytes than the object holds",
            ))),
            _ => Ok(()),
        }
    }

    /// One PUT, `If-None-Match: *` where the store supports it.
    async fn put_single(&self, client: &Client, key: &str, bytes: &[u8]) -> Result<PutOutcome> {
        let op = self.op("put", key);
        let full = self.full_key(key);
        let refused = Cell::new(None);
        self.call(
            &op,
            Operation::Put,
            upload_limit(bytes.len()),
            |_| {
                self.ops.bytes(Operation::Put, bytes.len() as u64);
                let mut req = client
                    .put_object()
                    .bucket(&self.config.bucket)
                    .key(&full)
                    .content_length(bytes.len() as i64)
                    .body(ByteStream::from(bytes.to_vec()));
                if self.conditional_put.load(Ordering::Relaxed) {
                    req = req.if_none_match("*");
                }
                req.send()
            },
            |status, _, attempt| self.put_refused(status, attempt, &refused),
        )
        .await?;
        Ok(refused.get().unwrap_or(PutOutcome::Stored))
    }

    /// What an error status means for a conditional PUT (or for the
    /// completion of a multipart upload).
    fn put_refused(
        &self,
        status: u16,
        attempt: u32,
        outcome: &Cell<Option<PutOutcome>>,
    ) -> Option<Result<()>> {
        match status {
            // The object exists. If an earlier attempt of ours may have
            // stored it before its answer was lost, it is ours.
            412 => {
                outcome.set(Some(if attempt > 0 {
                    PutOutcome::Stored
                } else {
                    PutOutcome::AlreadyPresent
                }));
                Some(Ok(()))
            }
            // The store does not implement conditional writes: fall back
            // to plain PUTs (keys name immutable content, so a repeat
            // upload stores the same bytes) and retry as for any 5xx.
            501 => {
                self.conditional_put.store(false, Ordering::Relaxed);
                None
            }
            _ => None,
        }
    }

    /// Multipart upload, for objects above `multipart_threshold`: parts of
    /// `part_size`, each retried on its own; the object appears only when
    /// the upload completes, so readers still see all of it or none.
    async fn put_multipart(&self, client: &Client, key: &str, bytes: &[u8]) -> Result<PutOutcome> {
        let op = self.op("put", key);
        let full = self.full_key(key);
        let bucket = &self.config.bucket;
        let created = self
            .call_plain(&op, Operation::Put, RESPONSE_TIMEOUT, |_| {
                client
                    .create_multipart_upload()
                    .bucket(bucket)
                    .key(&full)
                    .send()
            })
            .await?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let refused = Cell::new(None);
        let unparsed = Cell::new(false);
        let result = async {
            let mut parts = Vec::new();
            for (i, chunk) in bytes.chunks(self.config.part_size as usize).enumerate() {
                let number = i as i32 + 1;
                let done = self
                    .call_plain(&op, Operation::Put, upload_limit(chunk.len()), |_| {
                        self.ops.bytes(Operation::Put, chunk.len() as u64);
                        client
                            .upload_part()
                            .bucket(bucket)
                            .key(&full)
                            .upload_id(&upload_id)
                            .part_number(number)
                            .content_length(chunk.len() as i64)
                            .body(ByteStream::from(chunk.to_vec()))
                            .send()
                    })
                    .await?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(done.e_tag().map(str::to_string))
                        .build(),
                );
            }
            let manifest = CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build();
            self.call(
                &op,
                Operation::Put,
                upload_limit(bytes.len()),
                |_| {
                    let mut req = client
                        .complete_multipart_upload()
                        .bucket(bucket)
                        .key(&full)
                        .upload_id(&upload_id)
                        .multipart_upload(manifest.clone());
                    if self.conditional_put.load(Ordering::Relaxed) {
                        req = req.if_none_match("*");
                    }
                    req.send()
                },
                |status, code, attempt| match (status, code) {
                    // Completed by an earlier attempt whose answer was lost.
                    (404, _) if attempt > 0 => Some(Ok(())),
                    // A success whose body did not parse (moto names the
                    // root element differently from S3): look, below.
                    (200, "") => {
                        unparsed.set(true);
                        Some(Ok(()))
                    }
                    _ => self.put_refused(status, attempt, &refused),
                },
            )
            .await?;
            if unparsed.get() && self.head_size(client, key).await? != Some(bytes.len() as u64) {
                return Err(Error::Remote {
                    action: "put",
                    object: op.object.clone(),
                    reason: "the multipart upload was acknowledged, but the object is not there"
                        .into(),
                    hint: None,
                });
            }
            Ok(())
        }
        .await;
        if result.is_ok() && refused.get() != Some(PutOutcome::AlreadyPresent) {
            return Ok(PutOutcome::Stored);
        }
        // Do not leave the parts behind (they are billed until aborted).
        self.count(Operation::Delete);
        let _ = tokio::time::timeout(
            RESPONSE_TIMEOUT,
            client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send(),
        )
        .await;
        match result {
            Ok(_) => Ok(PutOutcome::AlreadyPresent),
            Err(e) => Err(e),
        }
    }

    /// The size of an object, `None` if there is none.
    async fn head_size(&self, client: &Client, key: &str) -> Result<Option<u64>> {
        let op = self.op("stat", key);
        let full = self.full_key(key);
        let out = self
            .call(
                &op,
                Operation::Head,
                RESPONSE_TIMEOUT,
                |_| {
                    client
                        .head_object()
                        .bucket(&self.config.bucket)
                        .key(&full)
                        .send()
                },
                |status, _, _| (status == 404).then_some(Ok(())),
            )
            .await?;
        Ok(out.map(|o| o.content_length().unwrap_or(0).max(0) as u64))
    }

    async fn delete_async(&self, client: &Client, key: &str) -> Result<()> {
        let op = self.op("delete", key);
        let full = self.full_key(key);
        self.call(
            &op,
            Operation::Delete,
            RESPONSE_TIMEOUT,
            |_| {
                client
                    .delete_object()
                    .bucket(&self.config.bucket)
                    .key(&full)
                    .send()
            },
            |status, _, _| (status == 404).then_some(Ok(())),
        )
        .await
        .map(|_| ())
    }

    /// Whether `key` is already stored, from one cached listing of its
    /// directory.
    ///
    /// Why a listing rather than only `If-None-Match: *`: a conditional
    /// PUT still sends the whole body and costs a PUT request even when
    /// the object exists, and older S3-compatible stores ignore the
    /// header. One LIST per generation per process makes a re-push cost
    /// no PUT at all and works everywhere; the conditional header is
    /// still sent, so two pushers racing on one key cannot both write.
    fn known(&self, key: &str) -> Result<bool> {
        let dir = key.rsplit_once('/').map_or("", |(d, _)| d);
        if let Some(keys) = self.stored.lock().unwrap().get(dir) {
            return Ok(keys.contains(key));
        }
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let keys: HashSet<String> = self.list(&prefix)?.into_iter().map(|o| o.key).collect();
        let hit = keys.contains(key);
        self.stored.lock().unwrap().insert(dir.to_string(), keys);
        Ok(hit)
    }

    fn remember(&self, key: &str, present: bool) {
        let dir = key.rsplit_once('/').map_or("", |(d, _)| d);
        if let Some(keys) = self.stored.lock().unwrap().get_mut(dir) {
            if present {
                keys.insert(key.to_string());
            } else {
                keys.remove(key);
            }
        }
    }
}

impl Storage for S3Storage {
    fn describe(&self) -> String {
        self.config.describe()
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let client = self.client()?;
        self.runtime.block_on(self.list_async(&client, prefix))
    }

    fn get_into(&self, key: &str, buf: &mut Vec<u8>) -> Result<()> {
        let client = self.client()?;
        self.runtime.block_on(self.get_async(&client, key, buf))
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<PutOutcome> {
        if self.known(key)? {
            return Ok(PutOutcome::AlreadyPresent);
        }
        let client = self.client()?;
        let outcome = if bytes.len() as u64 > self.config.multipart_threshold {
            self.runtime
                .block_on(self.put_multipart(&client, key, bytes))?
        } else {
            self.runtime
                .block_on(self.put_single(&client, key, bytes))?
        };
        self.remember(key, true);
        Ok(outcome)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let client = self.client()?;
        self.runtime.block_on(self.delete_async(&client, key))?;
        self.remember(key, false);
        Ok(())
    }

    fn operations(&self) -> Vec<OperationCount> {
        self.ops.snapshot()
    }

    fn request_counts(&self) -> Vec<(&'static str, u64)> {
        self.ops.request_counts()
    }
}

#[derive(Default)]
struct Download {
    buf: Vec<u8>,
    etag: Option<String>,
    total: Option<u64>,
}

fn upload_limit(len: usize) -> Duration {
    RESPONSE_TIMEOUT + Duration::from_secs(len as u64 / UPLOAD_BYTES_PER_SEC)
}

/// `bytes START-END/TOTAL` → START.
fn range_start(content_range: &str) -> Option<u64> {
    let spec = content_range.trim().strip_prefix("bytes")?.trim_start();
    spec.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_start() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes */200"), None);
    }
}
