//! Live figures of a running replicator, for Prometheus and for logs.
//! The engine only counts (atomics, no locks on the hot path); the tools
//! render. One `DbMetrics` per database, one `ReplicaMetrics` per replica
//! of it, created before the replicator starts so a renderer can hold
//! them from the first scrape.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::storage::Storage;

/// A u64 that only the engine writes.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed)
    }
    pub fn add(&self, v: u64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.add(1)
    }
}

/// Everything one replicator process runs.
#[derive(Debug, Default)]
pub struct Metrics {
    pub dbs: Vec<Arc<DbMetrics>>,
}

/// One database: what capture sees.
#[derive(Debug, Default)]
pub struct DbMetrics {
    pub path: PathBuf,
    /// Size of the database file in bytes.
    pub db_bytes: Gauge,
    /// Size of the WAL file in bytes.
    pub wal_bytes: Gauge,
    /// Bytes held by the shadow log (captured, not yet on every replica).
    pub shadow_log_bytes: Gauge,
    /// The generation being captured (0 before the first).
    pub generation: Gauge,
    /// The last captured txid.
    pub txid: Gauge,
    /// Commit time (ms since the epoch) of the last captured txid.
    pub txid_time_ms: Gauge,
    /// Transactions (txids) captured since start: one per capture pass.
    pub transactions: Gauge,
    /// Checkpoints run, by cause: the WAL passed the minimum (PASSIVE),
    /// the maximum (forced: under our write lock), or the database went
    /// idle (PASSIVE). Each checkpoint counts once.
    pub checkpoints_passive: Gauge,
    pub checkpoints_forced: Gauge,
    pub checkpoints_idle: Gauge,
    /// New generations started (and why is logged).
    pub generations_started: Gauge,
    /// Capture passes that failed (each is logged).
    pub capture_errors: Gauge,
    pub replicas: Vec<Arc<ReplicaMetrics>>,
}

/// One replica of a database.
pub struct ReplicaMetrics {
    /// The config's `name`, else its type (`file`, `s3`).
    pub name: String,
    /// Where it is, for labels (never holds a credential).
    pub url: String,
    pub storage: Arc<dyn Storage>,
    /// Durable position: generation and txid the replica holds.
    pub generation: Gauge,
    pub txid: Gauge,
    /// Commit time (ms) of the durable txid: lag = db's txid time - this.
    pub txid_time_ms: Gauge,
    /// Segments stored (syncs), failed pushes, and time spent pushing.
    pub syncs: Gauge,
    pub sync_errors: Gauge,
    pub sync_micros: Gauge,
    pub segments_stored: Gauge,
    /// ... of which compacted segments (compactor.rs).
    pub segments_compacted: Gauge,
    pub bytes_stored: Gauge,
    pub snapshots: Gauge,
    /// Objects deleted by retention.
    pub retention_deleted: Gauge,
    pub validations_ok: Gauge,
    pub validations_error: Gauge,
    /// Time (ms since the epoch) of the last validation that passed.
    pub validation_last_ok_ms: Gauge,
}

impl std::fmt::Debug for ReplicaMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaMetrics").field("name", &self.name).field("url", &self.url).finish_non_exhaustive()
    }
}

impl ReplicaMetrics {
    /// The durable position, once there is one.
    pub fn position(&self) -> Option<crate::push::Position> {
        let generation = self.generation.get();
        (generation != 0).then(|| crate::push::Position {
            generation,
            txid: self.txid.get(),
        })
    }

    pub fn new(name: String, url: String, storage: Arc<dyn Storage>) -> Self {
        ReplicaMetrics {
            name,
            url,
            storage,
            generation: Gauge::default(),
            txid: Gauge::default(),
            txid_time_ms: Gauge::default(),
            syncs: Gauge::default(),
            sync_errors: Gauge::default(),
            sync_micros: Gauge::default(),
            segments_stored: Gauge::default(),
            segments_compacted: Gauge::default(),
            bytes_stored: Gauge::default(),
            snapshots: Gauge::default(),
            retention_deleted: Gauge::default(),
            validations_ok: Gauge::default(),
            validations_error: Gauge::default(),
            validation_last_ok_ms: Gauge::default(),
        }
    }
}
