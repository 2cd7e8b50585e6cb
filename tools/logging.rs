//! `litestream replicate`'s log: one line per event at or above the
//! level, in Litestream v0.3.13's own forms so that whatever reads its
//! logs keeps working: `key=value` text
//! (`time=2026-12-01T22:32:42.931Z level=INFO msg="new generation" db=/srv/app.db replica=s3`)
//! or one JSON object per line. To stderr, or stdout with `stderr: false`.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use lsw::replicator::{Level, LogEvent};

use crate::config::{LogFormat, LoggingConfig};

pub struct Logger {
    level: Level,
    format: LogFormat,
    stdout: bool,
    /// One line at a time, whole, from many threads.
    lock: Mutex<()>,
}

impl Logger {
    /// The config's logging; `verbose` (`-v`) lowers the level to debug.
    pub fn new(config: &LoggingConfig, verbose: bool) -> Self {
        Logger {
            level: if verbose { Level::Debug } else { config.level },
            format: config.format,
            stdout: !config.stderr,
            lock: Mutex::new(()),
        }
    }

    pub fn enabled(&self, level: Level) -> bool {
        level >= self.level
    }

    /// One line: `msg` and then `attrs` in order.
    pub fn log(&self, level: Level, msg: &str, attrs: &[(&str, &str)]) {
        if !self.enabled(level) {
            return;
        }
        let time = lsw::time::rfc3339(lsw::time::now_ms());
        let line = match self.format {
            LogFormat::Text => text_line(&time, level, msg, attrs),
            LogFormat::Json => json_line(&time, level, msg, attrs),
        };
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // A log that cannot be written is not worth failing replication for.
        if self.stdout {
            let _ = std::io::stdout().lock().write_all(line.as_bytes());
            let _ = std::io::stdout().flush();
        } else {
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    pub fn info(&self, msg: &str, attrs: &[(&str, &str)]) {
        self.log(Level::Info, msg, attrs)
    }

    pub fn debug(&self, msg: &str, attrs: &[(&str, &str)]) {
        self.log(Level::Debug, msg, attrs)
    }

    pub fn warn(&self, msg: &str, attrs: &[(&str, &str)]) {
        self.log(Level::Warn, msg, attrs)
    }

    pub fn error(&self, msg: &str, attrs: &[(&str, &str)]) {
        self.log(Level::Error, msg, attrs)
    }

    /// A line about one database (and replica).
    pub fn db(&self, level: Level, db: &Path, replica: Option<&str>, msg: &str) {
        let db = db.display().to_string();
        match replica {
            Some(r) => self.log(level, msg, &[("db", &db), ("replica", r)]),
            None => self.log(level, msg, &[("db", &db)]),
        }
    }

    /// An engine event.
    pub fn event(&self, e: &LogEvent) {
        self.db(e.level, e.db, e.replica, &e.message)
    }
}

fn text_line(time: &str, level: Level, msg: &str, attrs: &[(&str, &str)]) -> String {
    let mut line = format!("time={time} level={} msg={}", level.as_str(), text_value(msg));
    for (k, v) in attrs {
        let _ = write!(line, " {k}={}", text_value(v));
    }
    line.push('\n');
    line
}

/// As Go's slog: quoted when empty or holding a space, `=`, `"` or a
/// control character.
fn text_value(v: &str) -> String {
    let plain = !v.is_empty() && !v.chars().any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control());
    if plain {
        v.to_string()
    } else {
        json_string(v)
    }
}

fn json_line(time: &str, level: Level, msg: &str, attrs: &[(&str, &str)]) -> String {
    let mut line = format!(
        "{{\"time\":{},\"level\":{},\"msg\":{}",
        json_string(time),
        json_string(level.as_str()),
        json_string(msg)
    );
    for (k, v) in attrs {
        let _ = write!(line, ",{}:{}", json_string(k), json_string(v));
    }
    line.push_str("}\n");
    line
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_forms() {
        let t = text_line("T", Level::Info, "new generation", &[("db", "/srv/app.db"), ("replica", "s3")]);
        assert_eq!(t, "time=T level=INFO msg=\"new generation\" db=/srv/app.db replica=s3\n");
        assert_eq!(text_line("T", Level::Warn, "x", &[("k", "")]), "time=T level=WARN msg=x k=\"\"\n");
        let j = json_line("T", Level::Error, "a \"b\"\n", &[("db", "/a")]);
        assert_eq!(j, "{\"time\":\"T\",\"level\":\"ERROR\",\"msg\":\"a \\\"b\\\"\\n\",\"db\":\"/a\"}\n");
    }
}
