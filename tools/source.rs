//! What the positional argument of `restore`, `generations`, `snapshots`
//! and `wal` names, as Litestream reads it: a replica URL (`scheme://…`,
//! or a path that is not a configured database nor a file), or a
//! database of the config (DB_PATH) with its replicas. And, for a
//! restore, which of several replicas to restore from: the one whose plan
//! for the target reaches the newest commit, unless `-replica NAME` says.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lsw::plan::{plan_from, Catalog, Plan, PlanRequest};
use lsw::storage::Storage;

use crate::cli;
pub use crate::config::ConfigArgs;

/// One replica and the name it is shown and chosen by.
#[derive(Clone)]
pub struct NamedReplica {
    /// The config's `name:` (else its type), or for a URL its scheme
    /// (`file`, `s3`), as Litestream shows it.
    pub name: String,
    /// Where it is, for listings: the config's URL, or the argument.
    pub url: String,
    pub storage: Arc<dyn Storage>,
}

/// The replicas an argument names.
pub struct Source {
    /// The configured database, for the DB_PATH form.
    pub db: Option<PathBuf>,
    /// Where the config was read from, for messages.
    pub config: Option<PathBuf>,
    pub replicas: Vec<NamedReplica>,
}

impl Source {
    /// `/srv/app.db`, or the replica for a URL.
    pub fn describe(&self) -> String {
        match &self.db {
            Some(db) => db.display().to_string(),
            None => self.replicas[0].storage.describe(),
        }
    }
}

/// Resolve `arg` (DB_PATH or REPLICA_URL), keeping only the replica
/// named `only` when given. A URL is never looked up in the config; a
/// path is a database when the config has it, else a replica directory.
pub fn resolve(arg: &str, config: &ConfigArgs, only: Option<&str>) -> anyhow::Result<Source> {
    let is_url = arg.contains("://");
    let loaded = if is_url { None } else { config.load()? };
    if let Some(loaded) = &loaded {
        if let Some(db) = loaded.config.db(Path::new(arg)) {
            if db.replicas.is_empty() {
                return Err(cli::usage(format!(
                    "database {} has no replicas in {}",
                    db.path.display(),
                    loaded.path.display()
                )));
            }
            let replicas = db
                .replicas
                .iter()
                .map(|r| {
                    Ok(NamedReplica {
                        name: r.name.clone(),
                        url: r.url(),
                        storage: r.open()?,
                    })
                })
                .collect::<anyhow::Result<_>>()?;
            let source = Source {
                db: Some(db.path.clone()),
                config: Some(loaded.path.clone()),
                replicas,
            };
            return select(source, only);
        }
    }
    // A file is a database the config does not have; a directory, or
    // nothing yet, is a replica (one not written yet holds no backups,
    // as lsw-pull says, and -if-replica-exists accepts).
    if !is_url && Path::new(arg).exists() && !Path::new(arg).is_dir() {
        return Err(cli::usage(match &loaded {
            Some(l) => format!(
                "database not found in config: {arg} is not a database in {}, nor a replica directory",
                l.path.display()
            ),
            None => format!(
                "{arg} is a file, not a replica directory, and there is no config file to find it in as a database ({} does not exist; give one with -config PATH)",
                crate::config::DEFAULT_PATH
            ),
        }));
    }
    if only.is_some() {
        return Err(cli::usage(format!(
            "-replica NAME chooses among the replicas of a database in the config, and {arg} is a replica URL; give the database's path, or drop -replica"
        )));
    }
    let storage: Arc<dyn Storage> = lsw::storage::open(arg)?.into();
    Ok(Source {
        db: None,
        config: None,
        replicas: vec![NamedReplica {
            name: scheme_name(arg).to_string(),
            url: arg.to_string(),
            storage,
        }],
    })
}

/// A database's replicas, or only the one called `only`.
pub fn select(mut source: Source, only: Option<&str>) -> anyhow::Result<Source> {
    let Some(name) = only else {
        return Ok(source);
    };
    let names: Vec<String> = source.replicas.iter().map(|r| r.name.clone()).collect();
    source.replicas.retain(|r| r.name == name);
    if source.replicas.is_empty() {
        let db = source.describe_db();
        return Err(cli::usage(format!(
            "{db} has no replica named {name:?}{}; its replicas: {}",
            source
                .config
                .as_ref()
                .map(|c| format!(" in {}", c.display()))
                .unwrap_or_default(),
            names.join(", ")
        )));
    }
    Ok(source)
}

impl Source {
    fn describe_db(&self) -> String {
        self.db.as_ref().map_or_else(
            || "the source".into(),
            |d| format!("database {}", d.display()),
        )
    }
}

/// `file` or `s3`: what Litestream calls a replica given by URL.
pub fn scheme_name(url: &str) -> &str {
    match url.split_once("://") {
        Some((scheme, _)) => scheme,
        None => "file",
    }
}

/// The replica chosen for a restore, its listing and its plan.
pub struct Chosen {
    pub replica: NamedReplica,
    pub catalog: Catalog,
    pub plan: Plan,
}

/// Plan `req` on every replica and take the one whose plan reaches the
/// newest commit (the first in config order on a tie). A replica that
/// cannot be listed or planned is passed over with a warning when
/// another can restore; when none can, the most telling error is
/// returned: the first that is not "holds no backups".
pub fn choose(
    replicas: &[NamedReplica],
    req: &PlanRequest,
    warn: &mut dyn FnMut(String),
) -> lsw::Result<Chosen> {
    let mut best: Option<Chosen> = None;
    let mut errors: Vec<(String, lsw::Error)> = Vec::new();
    for r in replicas {
        let describe = r.storage.describe();
        let planned = Catalog::load(r.storage.as_ref()).and_then(|catalog| {
            let plan = plan_from(&catalog, req, &describe)?;
            Ok((catalog, plan))
        });
        match planned {
            Ok((catalog, plan)) => {
                if best
                    .as_ref()
                    .is_none_or(|b| plan.timestamp_ms > b.plan.timestamp_ms)
                {
                    best = Some(Chosen {
                        replica: r.clone(),
                        catalog,
                        plan,
                    });
                }
            }
            Err(e) => errors.push((r.name.clone(), e)),
        }
    }
    match best {
        Some(chosen) => {
            if replicas.len() > 1 {
                for (name, e) in &errors {
                    if !is_empty_replica(e) {
                        warn(format!("replica {name} passed over: {e}"));
                    }
                }
            }
            Ok(chosen)
        }
        None => {
            let i = errors
                .iter()
                .position(|(_, e)| !is_empty_replica(e))
                .unwrap_or(0);
            Err(errors.swap_remove(i).1)
        }
    }
}

/// The error a replica without any backup gives.
pub fn is_empty_replica(e: &lsw::Error) -> bool {
    matches!(e, lsw::Error::NotFound(msg) if msg.contains("holds no backups"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsw::plan::Target;

    fn named(name: &str, url: &str) -> NamedReplica {
        NamedReplica {
            name: name.into(),
            url: url.into(),
            storage: lsw::storage::open(url).unwrap().into(),
        }
    }

    #[test]
    fn a_url_is_named_by_its_scheme() {
        assert_eq!(scheme_name("s3://bucket/app"), "s3");
        assert_eq!(scheme_name("file:///backups/app"), "file");
        assert_eq!(scheme_name("/backups/app"), "file");
    }

    #[test]
    fn replica_selection_by_name() {
        let source = || Source {
            db: Some("/srv/app.db".into()),
            config: Some("/etc/litestream.yml".into()),
            replicas: vec![named("a", "file:///tmp/a"), named("b", "file:///tmp/b")],
        };
        let s = select(source(), Some("b")).unwrap();
        assert_eq!(s.replicas.len(), 1);
        assert_eq!(s.replicas[0].name, "b");
        assert_eq!(select(source(), None).unwrap().replicas.len(), 2);
        let e = select(source(), Some("c")).err().unwrap().to_string();
        assert!(
            e.contains("database /srv/app.db has no replica named \"c\" in /etc/litestream.yml; its replicas: a, b"),
            "{e}"
        );
    }

    #[test]
    fn empty_replicas_give_the_no_backups_error() {
        let dir = tempfile::tempdir().unwrap();
        let url = |n: &str| format!("file://{}/{n}", dir.path().display());
        let replicas = [named("a", &url("a")), named("b", &url("b"))];
        let req = PlanRequest {
            generation: None,
            target: Target::Latest,
        };
        let e = choose(&replicas, &req, &mut |_| {}).err().unwrap();
        assert!(is_empty_replica(&e), "{e}");
    }
}
