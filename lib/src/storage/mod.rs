//! Where a replica lives. The trait is small on purpose: a backend is a
//! flat key space with list, get, atomic put and delete, and a new one is
//! one file (file.rs is the model; s3.rs the remote one).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

pub mod file;
pub mod s3;

/// One object under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the replica root, `/`-separated.
    pub key: String,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    /// An object of that key was already there (puts are idempotent:
    /// a key names immutable content).
    AlreadyPresent,
}

pub trait Storage: Send + Sync {
    /// The replica, for messages (`file:///var/backups/app`).
    fn describe(&self) -> String;
    /// Every object whose key starts with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.get_into(key, &mut buf)?;
        Ok(buf)
    }
    /// Read the object into `buf`, replacing what it held but keeping its
    /// allocation: a restore hands the same few buffers round, instead of
    /// paying for fresh memory (page faults, zeroing, unmapping) per object.
    fn get_into(&self, key: &str, buf: &mut Vec<u8>) -> Result<()>;
    /// The most gets worth running at once, whatever a restore's
    /// `--parallelism` asks for: where a get is CPU work, more only share
    /// the cores and delay the object the restore needs first.
    fn useful_parallel_gets(&self) -> usize {
        usize::MAX
    }
    /// Store atomically: readers see the whole object or none.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<PutOutcome>;
    fn delete(&self, key: &str) -> Result<()>;
    /// Requests made so far and the bytes they moved, one entry per
    /// `Operation` in `Operation::ALL` order (see `OperationCounters`);
    /// empty for a backend that does not count.
    fn operations(&self) -> Vec<OperationCount> {
        vec![]
    }
    /// Requests made so far, per kind (`PUT`, `GET`, `LIST`, `DELETE`,
    /// `HEAD`), for backends where requests cost money; empty elsewhere,
    /// so the tools print a `requests:` line only where it matters.
    fn request_counts(&self) -> Vec<(&'static str, u64)> {
        vec![]
    }
}

/// The kinds of request a backend makes, named as S3 names them. A
/// local backend counts its file operations under the same names: a
/// write is a PUT, a read a GET, a directory walk a LIST, an existence
/// check a HEAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Put,
    Get,
    List,
    Delete,
    Head,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::Put,
        Operation::Get,
        Operation::List,
        Operation::Delete,
        Operation::Head,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::Put => "PUT",
            Operation::Get => "GET",
            Operation::List => "LIST",
            Operation::Delete => "DELETE",
            Operation::Head => "HEAD",
        }
    }
}

/// What one operation has cost so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationCount {
    pub operation: Operation,
    /// Requests made, retries included (each is billed).
    pub requests: u64,
    /// Body bytes moved: sent by PUTs (every attempt, every part of a
    /// multipart upload), received by GETs (a download that breaks off
    /// counts what arrived). Zero for the other operations.
    pub bytes: u64,
}

/// Request and byte counters per operation for a backend to hold: one
/// relaxed atomic add per request, so counting costs nothing next to
/// the request itself, and a renderer may read them at any time.
#[derive(Debug, Default)]
pub struct OperationCounters {
    requests: [AtomicU64; 5],
    bytes: [AtomicU64; 5],
}

impl OperationCounters {
    /// One request of `op` is about to be made.
    pub fn request(&self, op: Operation) {
        self.requests[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `n` body bytes of `op` went out or came in.
    pub fn bytes(&self, op: Operation, n: u64) {
        self.bytes[op as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Every operation's figures, in `Operation::ALL` order.
    pub fn snapshot(&self) -> Vec<OperationCount> {
        Operation::ALL
            .iter()
            .map(|&op| OperationCount {
                operation: op,
                requests: self.requests[op as usize].load(Ordering::Relaxed),
                bytes: self.bytes[op as usize].load(Ordering::Relaxed),
            })
            .collect()
    }

    /// `(name, requests)` per operation, for `Storage::request_counts`.
    pub fn request_counts(&self) -> Vec<(&'static str, u64)> {
        self.snapshot()
            .iter()
            .map(|c| (c.operation.name(), c.requests))
            .collect()
    }
}

/// `PUT 3, GET 0, LIST 1, DELETE 0, HEAD 0`, or `None` for a backend that
/// does not report requests (see `Storage::request_counts`).
pub fn request_summary(storage: &dyn Storage) -> Option<String> {
    let counts = storage.request_counts();
    (!counts.is_empty()).then(|| {
        counts
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// Open the replica a URL or path names: `/path`, `file:///path`,
/// `s3://bucket/path?endpoint=…&region=…` (see `s3::S3Config::from_url`).
pub fn open(url: &str) -> Result<Box<dyn Storage>> {
    if url.is_empty() {
        return Err(Error::Usage("empty replica URL".into()));
    }
    if let Some(rest) = url.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(Error::Usage(format!(
                "{url}: a file URL needs an absolute path (file:///path)"
            )));
        }
        return Ok(Box::new(file::FileStorage::new(rest)));
    }
    if url.starts_with("s3://") {
        return Ok(Box::new(s3::S3Storage::new(s3::S3Config::from_url(url)?)?));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return Err(Error::Usage(format!(
            "{url}: unsupported replica scheme {scheme:?}; use a directory path, file:///path or s3://bucket/path"
        )));
    }
    Ok(Box::new(file::FileStorage::new(url)))
}
