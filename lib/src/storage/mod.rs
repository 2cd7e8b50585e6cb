//! Where a replica lives. The trait is small on purpose: a backend is a
//! flat key space with list, get, atomic put and delete, and a new one is
//! one file (file.rs is the model; s3.rs the remote one).

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
    fn get(&self, key: &str) -> Result<Vec<u8>>;
    /// Store atomically: readers see the whole object or none.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<PutOutcome>;
    fn delete(&self, key: &str) -> Result<()>;
    /// Requests made so far, per kind (`PUT`, `GET`, `LIST`, `DELETE`,
    /// `HEAD`), for backends where requests cost money; empty elsewhere.
    fn request_counts(&self) -> Vec<(&'static str, u64)> {
        vec![]
    }
}

/// `PUT 3, GET 0, LIST 1, DELETE 0, HEAD 0`, or `None` for a backend that
/// does not count requests.
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
