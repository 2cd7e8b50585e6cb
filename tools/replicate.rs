//! `litestream replicate`: every database of the config (or the one named
//! with its replica URLs) captured, segmented and pushed in one process
//! by `lsw::replicator`, until SIGINT/SIGTERM (then everything captured
//! is flushed), `-once` is done, or the `-exec` child exits.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lsw::replicator::{Level, Replicator, RunOptions};
use lsw::storage::Storage;

use crate::config::{ConfigArgs, DbConfig, LoggingConfig, ReplicaConfig, ReplicaKind};
use crate::logging::Logger;
use crate::{cli, config, exec, signals};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    litestream replicate                                   (every database in /etc/litestream.yml)\n  \
    litestream replicate -config app.yml -exec 'myapp -port 8080'\n  \
    litestream replicate /srv/app.db file:///backups/app s3://bucket/app\n\n\
With -exec, signals go to the child and we exit with its status (128+N if signal N killed it)\n\
once everything captured is flushed. See litestream.yml(5) for the config file.")]
pub struct ReplicateArgs {
    /// The database file; without it, every database of the config.
    #[arg(value_name = "DB_PATH")]
    pub db: Option<PathBuf>,

    /// Where DB_PATH goes: a directory path, file:///path, or
    /// s3://BUCKET/PATH[?endpoint=URL&region=R&…].
    #[arg(value_name = "REPLICA_URL")]
    pub replicas: Vec<String>,

    #[command(flatten)]
    pub config: ConfigArgs,

    /// Run CMD (split into words like a shell would) once replication has
    /// started; forward signals to it; when it exits, flush and exit with
    /// its status. Overrides the config's exec.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,

    /// Capture what the databases hold now, push it to every replica, exit.
    #[arg(long)]
    pub once: bool,

    /// Cut a segment once its first commit is this old [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration)]
    pub sync_interval: Option<Duration>,

    /// Checkpoint (PASSIVE) once the WAL holds this many frames [default: 1000].
    #[arg(long, value_name = "N")]
    pub min_checkpoint_page_count: Option<u64>,

    /// Checkpoint under a short write lock above this many frames [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_checkpoint_page_count: Option<u64>,

    /// Checkpoint an idle database after this long without a commit [default: 1m].
    #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration)]
    pub checkpoint_interval: Option<Duration>,

    /// Longest sleep between checks (file-system events wake it sooner) [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration)]
    pub monitor_interval: Option<Duration>,

    /// Run a validation restore of the replica this often (e.g. 1h),
    /// compared with the live database; one log line per run.
    #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration)]
    pub validation_interval: Option<Duration>,

    /// Log at debug level: checkpoints, pruning, request counts.
    #[arg(short, long)]
    pub verbose: bool,
}

/// What to run, from the arguments or the config.
struct Plan {
    config_path: Option<PathBuf>,
    dbs: Vec<DbConfig>,
    logging: LoggingConfig,
    addr: Option<String>,
    exec: Option<String>,
}

pub fn run(args: ReplicateArgs) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    let log = Logger::new(&plan.logging, args.verbose);
    let exec_words = plan.exec.as_deref().map(exec::split).transpose()?;
    if args.once && exec_words.is_some() {
        return Err(cli::usage("-once and -exec do not go together: -once exits as soon as the databases are pushed"));
    }
    if let Some(words) = &exec_words {
        exec::check(words)?;
    }

    log.info("litestream-rs", &[("version", env!("CARGO_PKG_VERSION"))]);
    if let Some(p) = &plan.config_path {
        log.info("config", &[("path", &p.display().to_string())]);
    }
    let mut specs = Vec::new();
    for db in &plan.dbs {
        log.info("initialized db", &[("path", &db.path.display().to_string())]);
        let spec = db.spec()?;
        for r in &db.replicas {
            log.info(
                "replicating to",
                &[
                    ("db", &db.path.display().to_string()),
                    ("name", &r.name),
                    ("type", r.type_name()),
                    ("sync-interval", &config::duration::format(r.sync_interval)),
                    ("url", &r.url()),
                ],
            );
        }
        specs.push(spec);
    }
    let storages: Vec<(String, Arc<dyn Storage>)> = specs
        .iter()
        .flat_map(|d| d.replicas.iter().map(|r| (r.name.clone(), r.storage.clone())))
        .collect();
    let replicator = Replicator::new(specs)?;
    let _metrics = match &plan.addr {
        Some(addr) => {
            let server = crate::metrics::serve(addr, replicator.metrics())?;
            log.info("serving metrics on", &[("url", &format!("http://{}/metrics", server.addr))]);
            Some(server)
        }
        None => None,
    };
    if exec_words.is_some() {
        signals::install_forwarding();
    } else {
        signals::install();
    }

    let opts = RunOptions { once: args.once };
    let done = AtomicBool::new(false);
    let (result, child_code) = std::thread::scope(|scope| {
        if log.enabled(Level::Debug) {
            scope.spawn(|| report_requests(&storages, &log, &done));
        }
        let runner = scope.spawn(|| replicator.run(&opts, &signals::STOP, &|e| log.event(e)));
        let child_code = exec_words.as_ref().map(|words| supervise(words, &runner, &log));
        let result = runner.join().unwrap_or_else(|_| Err(lsw::Error::Usage("replicator thread panicked".into())));
        done.store(true, Ordering::Relaxed);
        (result, child_code)
    });

    // Requests cost money on S3: say how many, whether or not it failed.
    for (name, storage) in &storages {
        if let Some(counts) = lsw::storage::request_summary(storage.as_ref()) {
            log.info(&format!("requests: {counts}"), &[("replica", name)]);
        }
    }
    let outcomes = match (result, &child_code) {
        (Ok(o), _) => o,
        // The child's status is ours; the replication error is logged.
        (Err(e), Some(Ok(code))) if *code != 0 => {
            log.error(&e.to_string(), &[]);
            Vec::new()
        }
        (Err(e), _) => return Err(e.into()),
    };
    for o in &outcomes {
        if let Some(p) = o.position {
            log.db(Level::Info, &o.db, Some(&o.replica), &format!("stopped; the replica is durable at {p}"));
        }
    }
    match child_code {
        None | Some(Ok(0)) => Ok(()),
        Some(Ok(code)) => {
            // The child's status, exactly: not one of our own codes.
            std::process::exit(code.into());
        }
        Some(Err(e)) => Err(e),
    }
}

/// Start the `-exec` child, wait for it, stop replication when it exits.
/// If replication ends first (it failed), the child gets SIGTERM: an
/// application must not run on without its backup. Returns our exit
/// status (the child's) or why the child could not run.
fn supervise(
    words: &[String],
    runner: &std::thread::ScopedJoinHandle<'_, lsw::Result<Vec<lsw::replicator::Outcome>>>,
    log: &Logger,
) -> anyhow::Result<u8> {
    let stop_replication = || signals::STOP.store(true, Ordering::SeqCst);
    if signals::stop_requested() {
        // Stopped before the child started: do not start it.
        return Ok(0);
    }
    let mut child = match exec::spawn(words) {
        Ok(c) => c,
        Err(e) => {
            stop_replication();
            return Err(e);
        }
    };
    let pid = child.id();
    log.info("started child", &[("cmd", &words.join(" ")), ("pid", &pid.to_string())]);
    std::thread::scope(|scope| {
        let waiter = scope.spawn(move || exec::wait(&mut child));
        let mut terminated = false;
        while !waiter.is_finished() {
            if runner.is_finished() && !terminated {
                log.error("replication stopped; sending SIGTERM to the child", &[("pid", &pid.to_string())]);
                // SAFETY: kill(2) of our own child, not yet reaped (the
                // waiter has not returned).
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                terminated = true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop_replication();
        let status = waiter
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("waiter panicked")))
            .map_err(|e| anyhow::anyhow!("-exec {}: wait: {e}", words[0]))?;
        let code = exec::exit_code(status);
        log.info("child exited; flushing", &[("status", &code.to_string())]);
        Ok(code)
    })
}

/// The databases and settings to run: from DB_PATH and REPLICA_URLs, or
/// from the config.
fn plan(args: &ReplicateArgs) -> anyhow::Result<Plan> {
    let Some(db) = &args.db else {
        return plan_from_config(args);
    };
    if args.replicas.is_empty() {
        return Err(cli::usage(format!(
            "{}: give at least one REPLICA_URL (or no arguments, to replicate the config's databases)",
            db.display()
        )));
    }
    if args.config.config.is_some() {
        return Err(cli::usage("give either -config or DB_PATH REPLICA_URL, not both"));
    }
    let mut spec = DbConfig::new(db);
    if let Some(v) = args.min_checkpoint_page_count {
        spec.min_checkpoint_page_count = v;
    }
    if let Some(v) = args.max_checkpoint_page_count {
        spec.max_checkpoint_page_count = v;
    }
    spec.checkpoint_interval = args.checkpoint_interval.unwrap_or(spec.checkpoint_interval);
    spec.monitor_interval = args.monitor_interval.unwrap_or(spec.monitor_interval);
    for url in &args.replicas {
        let mut r = ReplicaConfig::new(replica_kind(url)?);
        // Litestream names replicas by type; a second of one type gets a number.
        let base = r.type_name();
        let same = spec.replicas.iter().filter(|o| o.type_name() == base).count();
        if same > 0 {
            r.name = format!("{base}{}", same + 1);
        }
        r.sync_interval = args.sync_interval.unwrap_or(r.sync_interval);
        r.validation_interval = args.validation_interval;
        spec.replicas.push(r);
    }
    Ok(Plan {
        config_path: None,
        dbs: vec![spec],
        logging: LoggingConfig::default(),
        addr: None,
        exec: args.exec.clone(),
    })
}

fn plan_from_config(args: &ReplicateArgs) -> anyhow::Result<Plan> {
    let tuning = [
        ("sync-interval", args.sync_interval.is_some()),
        ("min-checkpoint-page-count", args.min_checkpoint_page_count.is_some()),
        ("max-checkpoint-page-count", args.max_checkpoint_page_count.is_some()),
        ("checkpoint-interval", args.checkpoint_interval.is_some()),
        ("monitor-interval", args.monitor_interval.is_some()),
        ("validation-interval", args.validation_interval.is_some()),
    ];
    if let Some((flag, _)) = tuning.iter().find(|(_, given)| *given) {
        return Err(cli::usage(format!(
            "-{flag} applies to the DB_PATH REPLICA_URL form; with a config, set {flag} in it (see litestream.yml(5))"
        )));
    }
    let loaded = args.config.load_required()?;
    let file = loaded.path.display().to_string();
    let config = loaded.config;
    if config.dbs.is_empty() {
        return Err(cli::usage(format!(
            "{file}: no databases to replicate; list them under dbs: (see litestream.yml(5))"
        )));
    }
    for (i, db) in config.dbs.iter().enumerate() {
        if db.replicas.is_empty() {
            return Err(cli::usage(format!(
                "{file}:{}: dbs[{i}]: no replicas; add replicas: with a url: or path: for {}",
                db.line,
                db.path.display()
            )));
        }
    }
    Ok(Plan {
        config_path: Some(loaded.path),
        dbs: config.dbs,
        logging: config.logging,
        addr: config.addr,
        exec: args.exec.clone().or(config.exec),
    })
}

/// A replica URL as the command line gives it.
fn replica_kind(url: &str) -> anyhow::Result<ReplicaKind> {
    if url.starts_with("s3://") {
        return Ok(ReplicaKind::S3(config::s3_from_url(url)?));
    }
    // Checks the URL's form (file:// needs an absolute path, known schemes).
    lsw::storage::open(url)?;
    let path = url.strip_prefix("file://").unwrap_or(url);
    Ok(ReplicaKind::File(config::absolute(path.as_ref())))
}

/// At debug level: each S3 replica's request counts, once a minute
/// while they change.
fn report_requests(storages: &[(String, Arc<dyn Storage>)], log: &Logger, done: &AtomicBool) {
    const EVERY: Duration = Duration::from_secs(60);
    let summary = || -> Vec<Option<String>> {
        storages.iter().map(|(_, s)| lsw::storage::request_summary(s.as_ref())).collect()
    };
    if summary().iter().all(Option::is_none) {
        return;
    }
    let mut last = summary();
    let mut since = std::time::Instant::now();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if since.elapsed() >= EVERY {
            since = std::time::Instant::now();
            let now = summary();
            for (i, counts) in now.iter().enumerate() {
                if let Some(c) = counts.as_ref().filter(|c| last[i].as_ref() != Some(*c)) {
                    log.debug(&format!("requests so far: {c}"), &[("replica", &storages[i].0)]);
                }
            }
            last = now;
        }
    }
}
