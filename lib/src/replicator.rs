//! The replicator `litestream replicate` runs: any number of databases,
//! each with any number of replicas, in one process, with the same stage
//! code as the pipe tools. What to run is plain data (`DbSpec`,
//! `ReplicaSpec`); the tools build it from flags or a YAML config.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::metrics::{DbMetrics, Metrics, ReplicaMetrics};
use crate::pipeline::LiveOptions;
use crate::push::Position;
use crate::segmenter::SegmentOptions;
use crate::storage::Storage;

/// Default retention: what restores within the last 24 hours need.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Default time between retention checks.
pub const DEFAULT_RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// One replica of a database.
#[derive(Clone)]
pub struct ReplicaSpec {
    /// For logs and metrics: the config's `name`, else its type.
    pub name: String,
    pub storage: Arc<dyn Storage>,
    /// Cut a changes segment once its first commit is this old.
    pub sync_interval: Duration,
    /// Take a new snapshot this often (`None`: only when retention needs one).
    pub snapshot_interval: Option<Duration>,
    /// Keep what a restore to any moment of this window needs; older
    /// objects are deleted. `None`: keep everything.
    pub retention: Option<Duration>,
    pub retention_check_interval: Duration,
    /// Run a validation restore this often, compared with the live database.
    pub validation_interval: Option<Duration>,
}

impl ReplicaSpec {
    /// A replica with Litestream's defaults.
    pub fn new(name: impl Into<String>, storage: Arc<dyn Storage>) -> Self {
        ReplicaSpec {
            name: name.into(),
            storage,
            sync_interval: SegmentOptions::default().sync_interval,
            snapshot_interval: None,
            retention: Some(DEFAULT_RETENTION),
            retention_check_interval: DEFAULT_RETENTION_CHECK_INTERVAL,
            validation_interval: None,
        }
    }
}

/// One database and where it goes.
#[derive(Clone)]
pub struct DbSpec {
    pub path: PathBuf,
    pub live: LiveOptions,
    pub replicas: Vec<ReplicaSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// Something worth a log line: one per meaningful event, never per sync.
#[derive(Debug, Clone)]
pub struct LogEvent<'a> {
    pub level: Level,
    pub db: &'a Path,
    /// The replica's name, when the event is about one.
    pub replica: Option<&'a str>,
    pub message: String,
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Capture what the database holds now, push it to every replica,
    /// and return (for cron-style backups).
    pub once: bool,
}

/// Where each replica ended up.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub db: PathBuf,
    pub replica: String,
    pub position: Option<Position>,
}

pub struct Replicator {
    dbs: Vec<DbSpec>,
    metrics: Arc<Metrics>,
}

impl Replicator {
    pub fn new(dbs: Vec<DbSpec>) -> Result<Self> {
        for (i, db) in dbs.iter().enumerate() {
            if db.replicas.is_empty() {
                return Err(Error::Usage(format!("{}: no replica to replicate to", db.path.display())));
            }
            if dbs[..i].iter().any(|d| d.path == db.path) {
                return Err(Error::Usage(format!("{}: listed twice", db.path.display())));
            }
        }
        let metrics = Metrics {
            dbs: dbs
                .iter()
                .map(|d| {
                    Arc::new(DbMetrics {
                        path: d.path.clone(),
                        replicas: d
                            .replicas
                            .iter()
                            .map(|r| Arc::new(ReplicaMetrics::new(r.name.clone(), r.storage.describe(), r.storage.clone())))
                            .collect(),
                        ..DbMetrics::default()
                    })
                })
                .collect(),
        };
        Ok(Replicator {
            dbs,
            metrics: Arc::new(metrics),
        })
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Replicate every database to every replica until `stop` (or, with
    /// `once`, until what is there now is pushed), then flush everything
    /// captured. Returns each replica's durable position.
    pub fn run(self, opts: &RunOptions, stop: &AtomicBool, log: &(dyn Fn(&LogEvent) + Sync)) -> Result<Vec<Outcome>> {
        if opts.once {
            return Err(Error::Usage("replicate once is not implemented yet".into()));
        }
        let results: Vec<Result<Vec<Outcome>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .dbs
                .iter()
                .map(|db| scope.spawn(move || run_db(db, stop, log)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(Error::Usage("replicator thread panicked".into()))))
                .collect()
        });
        let mut out = Vec::new();
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }
}

fn run_db(db: &DbSpec, stop: &AtomicBool, log: &(dyn Fn(&LogEvent) + Sync)) -> Result<Vec<Outcome>> {
    let [replica] = db.replicas.as_slice() else {
        return Err(Error::Usage(format!(
            "{}: more than one replica per database is not implemented yet",
            db.path.display()
        )));
    };
    let segments = SegmentOptions {
        sync_interval: replica.sync_interval,
        ..SegmentOptions::default()
    };
    let position = crate::pipeline::replicate(
        &db.path,
        replica.storage.as_ref(),
        &db.live,
        segments,
        stop,
        &|line| {
            let level = if line.starts_with("checkpoint") || line.starts_with("pruned") {
                Level::Debug
            } else {
                Level::Info
            };
            log(&LogEvent {
                level,
                db: &db.path,
                replica: None,
                message: line.to_string(),
            })
        },
    )?;
    Ok(vec![Outcome {
        db: db.path.clone(),
        replica: replica.name.clone(),
        position,
    }])
}
