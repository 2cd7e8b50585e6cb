//! The replicator `litestream replicate` runs: any number of databases,
//! each with any number of replicas, in one process, with the same stage
//! code as the pipe tools. What to run is plain data (`DbSpec`,
//! `ReplicaSpec`); the tools build it from flags or a YAML config.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::capture::{Capture, Event, FrameSink, Since};
use crate::error::{Error, Result};
use crate::frames::Frame;
use crate::layout::generation_name;
use crate::log_tail::LogHead;
use crate::metrics::{DbMetrics, Metrics, ReplicaMetrics};
use crate::pipeline::{follow, Hooks, LiveOptions};
use crate::plan::{PlanRequest, Target};
use crate::push::Position;
use crate::replica_worker::Worker;
use crate::segmenter::SegmentOptions;
use crate::shadow_log::state_dir;
use crate::storage::Storage;
use crate::time::now_ms;
use crate::validate::{validate_every, RunOutcome, ValidateOptions, ValidationStats};

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
    ///
    /// A failure before anything runs (a database that cannot be
    /// captured, a replica that cannot be listed: wrong credentials, a
    /// missing bucket) stops everything and is returned. Later failures
    /// are logged and retried with backoff, each replica on its own: the
    /// shadow log keeps what a failing replica has not stored.
    pub fn run(self, opts: &RunOptions, stop: &AtomicBool, log: &(dyn Fn(&LogEvent) + Sync)) -> Result<Vec<Outcome>> {
        let abort = AtomicBool::new(false);
        let results: Vec<Result<Vec<Outcome>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .dbs
                .iter()
                .zip(&self.metrics.dbs)
                .map(|(db, metrics)| {
                    let abort = &abort;
                    scope.spawn(move || {
                        let r = run_db(db, metrics, opts.once, stop, abort, log);
                        if r.is_err() {
                            abort.store(true, Ordering::Relaxed);
                        }
                        r
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(Error::Usage("replicator thread panicked".into()))))
                .collect()
        });
        let mut out = Vec::new();
        let mut first_error = None;
        for r in results {
            match r {
                Ok(o) => out.extend(o),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// A frame sink that drops everything: in the replicator, replicas read
/// the shadow log, not capture's output.
struct Discard;

impl FrameSink for Discard {
    fn send(&mut self, _: Frame) -> Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// One database: capture on one thread, a worker per replica, and a
/// validator per replica that asks for one.
fn run_db(
    db: &DbSpec,
    metrics: &DbMetrics,
    once: bool,
    stop: &AtomicBool,
    abort: &AtomicBool,
    log: &(dyn Fn(&LogEvent) + Sync),
) -> Result<Vec<Outcome>> {
    let state = db.live.capture.state_dir.clone().unwrap_or_else(|| state_dir(&db.path));
    let head = Arc::new(LogHead::new(state.join("log"), db.replicas.len()));
    // Learn every replica's position before capture may prune the log.
    let mut workers = Vec::new();
    for (slot, (spec, m)) in db.replicas.iter().zip(&metrics.replicas).enumerate() {
        let worker = Worker::start(&db.path, slot, spec, &head, m, log)?;
        head.hold(slot, m.position().map(|p| (p.generation, p.txid)));
        workers.push(worker);
    }
    let capture_stop = AtomicBool::new(once);
    let stopping = || stop.load(Ordering::Relaxed) || abort.load(Ordering::Relaxed) || capture_stop.load(Ordering::Relaxed);
    // Workers stop on their own once capture has finished and they have
    // pushed what it logged; with `once` they must not retry forever.
    let worker_stop = AtomicBool::new(once);
    std::thread::scope(|scope| {
        let capture = scope.spawn(|| {
            let r = capture_thread(db, &head, metrics, &stopping, log);
            head.publish(|s| s.finished = true);
            r
        });
        let validators: Vec<_> = db
            .replicas
            .iter()
            .zip(&metrics.replicas)
            .filter_map(|(spec, m)| spec.validation_interval.map(|every| (spec, m, every)))
            .map(|(spec, m, every)| {
                let stopping = &stopping;
                let path = &db.path;
                let state = &state;
                scope.spawn(move || validate_loop(path, state, spec, m, every, stopping, log))
            })
            .collect();
        let handles: Vec<_> = workers
            .into_iter()
            .map(|w| {
                let (worker_stop, head) = (&worker_stop, &head);
                scope.spawn(move || {
                    let r = w.run(worker_stop, once);
                    head.nudge();
                    r
                })
            })
            .collect();
        // Capture sees a stop itself (`stopping`); once it has finished,
        // the workers drain the log and return.
        let captured = capture.join().unwrap_or_else(|_| Err(Error::Usage("capture thread panicked".into())));
        worker_stop.store(true, Ordering::Relaxed);
        head.nudge();
        let mut outcomes = Vec::new();
        let mut first_error = captured.err();
        for (h, spec) in handles.into_iter().zip(&db.replicas) {
            match h.join().unwrap_or_else(|_| Err(Error::Usage("replica thread panicked".into()))) {
                Ok(position) => outcomes.push(Outcome {
                    db: db.path.clone(),
                    replica: spec.name.clone(),
                    position,
                }),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        capture_stop.store(true, Ordering::Relaxed);
        for v in validators {
            let _ = v.join();
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(outcomes),
        }
    })
}

/// Capture until `stopping`, restarting after a failure (logged, with
/// backoff). A failure of the very first start is returned.
fn capture_thread(
    db: &DbSpec,
    head: &Arc<LogHead>,
    metrics: &DbMetrics,
    stopping: &(dyn Fn() -> bool + Sync),
    log: &(dyn Fn(&LogEvent) + Sync),
) -> Result<()> {
    let mut started = false;
    let mut failures = 0u32;
    loop {
        match capture_run(db, head, metrics, stopping, log, &mut started) {
            Ok(()) => return Ok(()),
            Err(e) if !started => return Err(e),
            Err(e) => {
                failures += 1;
                metrics.capture_errors.inc();
                let wait = Duration::from_millis(500).saturating_mul(1 << failures.min(7)).min(Duration::from_secs(60));
                log(&LogEvent {
                    level: Level::Error,
                    db: &db.path,
                    replica: None,
                    message: format!("capture stopped: {e}; restarting in {}s", wait.as_secs_f64()),
                });
                let until = Instant::now() + wait;
                while Instant::now() < until {
                    if stopping() {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

fn capture_run(
    db: &DbSpec,
    head: &Arc<LogHead>,
    metrics: &DbMetrics,
    stopping: &(dyn Fn() -> bool + Sync),
    log: &(dyn Fn(&LogEvent) + Sync),
    started: &mut bool,
) -> Result<()> {
    let mut sink = Discard;
    let cap = Capture::start(&db.path, db.live.capture.clone(), Since::OwnLog, Some(head.clone()), &mut sink)?;
    *started = true;
    let wal = crate::dbfile::wal_path(&db.path);
    let mut log_size_at: Option<Instant> = None;
    follow(
        cap,
        &db.path,
        &db.live,
        &mut sink,
        Hooks {
            stop: stopping,
            // The log is needed up to the oldest position a replica holds.
            acked: &mut |_| {
                let h = head.get();
                Ok(Some(Position {
                    generation: h.generation,
                    txid: head.prunable(h.generation, h.txid),
                }))
            },
            on_event: &mut |e| report(e, db, metrics, log),
            after_pass: &mut |cap| {
                let h = head.get();
                metrics.generation.set(h.generation);
                metrics.txid.set(h.txid);
                metrics.txid_time_ms.set(h.timestamp_ms);
                metrics.transactions.set(cap.stats.transactions);
                metrics.checkpoints_passive.set(cap.stats.min_checkpoints);
                metrics.checkpoints_forced.set(cap.stats.forced_checkpoints);
                metrics.checkpoints_idle.set(cap.stats.idle_checkpoints);
                metrics.db_bytes.set(std::fs::metadata(&db.path).map_or(0, |m| m.len()));
                metrics.wal_bytes.set(std::fs::metadata(&wal).map_or(0, |m| m.len()));
                if log_size_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    log_size_at = Some(Instant::now());
                    metrics.shadow_log_bytes.set(cap.log_bytes());
                }
            },
        },
    )
}

/// Log one of capture's events, and count new generations.
fn report(e: &Event, db: &DbSpec, metrics: &DbMetrics, log: &(dyn Fn(&LogEvent) + Sync)) {
    let level = match e {
        Event::NewGeneration { .. } => {
            metrics.generations_started.inc();
            Level::Info
        }
        Event::Resumed { .. } => Level::Info,
        Event::Bridged { .. } => Level::Warn,
        Event::Checkpoint { .. } | Event::CheckpointSkipped { .. } | Event::Pruned { .. } => Level::Debug,
    };
    log(&LogEvent {
        level,
        db: &db.path,
        replica: None,
        message: e.to_string(),
    });
}

/// `validation-interval`: a validation restore of the replica every
/// `every`, compared with the live database; one log line per run.
fn validate_loop(
    db: &Path,
    state: &Path,
    spec: &ReplicaSpec,
    metrics: &ReplicaMetrics,
    every: Duration,
    stopping: &dyn Fn() -> bool,
    log: &(dyn Fn(&LogEvent) + Sync),
) {
    let name = db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "db".into());
    let opts = ValidateOptions {
        request: PlanRequest {
            generation: None,
            target: Target::Latest,
        },
        scratch: std::env::temp_dir().join(format!("lsw-validate-{name}-{}", spec.name)),
        parallelism: 8,
        integrity_check: true,
        state_dir: Some(state.to_path_buf()),
    };
    let stats = ValidationStats::default();
    validate_every(spec.storage.as_ref(), &opts, Some(db), every, stopping, &stats, &mut |outcome| {
        let (level, message) = match outcome {
            RunOutcome::Ok(v) => {
                metrics.validations_ok.inc();
                metrics.validation_last_ok_ms.set(now_ms());
                let live = v.live.as_ref().map(|l| format!("; {l}")).unwrap_or_default();
                (
                    Level::Info,
                    format!(
                        "validation ok: generation {} at txid {} restored and checked in {:.2}s{live}",
                        generation_name(v.generation),
                        v.txid,
                        v.restore_time.as_secs_f64()
                    ),
                )
            }
            RunOutcome::Skipped(e) => (Level::Warn, format!("validation skipped: {e}")),
            RunOutcome::Failed(e) => {
                metrics.validations_error.inc();
                (Level::Error, format!("validation error: {e}"))
            }
        };
        log(&LogEvent {
            level,
            db,
            replica: Some(&spec.name),
            message,
        });
    });
    log(&LogEvent {
        level: Level::Info,
        db,
        replica: Some(&spec.name),
        message: format!("validations: {stats}"),
    });
}
