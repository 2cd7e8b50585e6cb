//! The progress line of a long restore: bytes fetched of the total,
//! segments, rate and time left, redrawn in place on stderr. Only on a
//! terminal (a log file or a pipe gets no carriage-return litter), and
//! only once the restore has run for `delay`, so quick restores print
//! nothing. The engine reports each applied segment; this draws.
//!
//! Written by hand rather than with a progress-bar crate: one line,
//! redrawn from the restore's own callback, is all it needs.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use lsw::restore::Progress;

use crate::validate::human_bytes;

/// Redraw at most this often.
const REDRAW: Duration = Duration::from_millis(200);

pub struct ProgressLine {
    started: Instant,
    delay: Duration,
    enabled: bool,
    last_draw: Option<Instant>,
    /// Something is drawn and must be cleared before anything else prints.
    drawn: bool,
}

impl ProgressLine {
    /// A progress line on stderr, if stderr is a terminal.
    pub fn stderr(delay: Duration) -> Self {
        ProgressLine {
            started: Instant::now(),
            delay,
            enabled: std::io::stderr().is_terminal(),
            last_draw: None,
            drawn: false,
        }
    }

    pub fn update(&mut self, p: &Progress) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let elapsed = now - self.started;
        let last = p.segments_done == p.segments_total;
        if elapsed < self.delay || (!last && self.last_draw.is_some_and(|t| now - t < REDRAW)) {
            return;
        }
        self.last_draw = Some(now);
        let line = render(p, elapsed);
        let mut err = std::io::stderr().lock();
        // \r and erase-line: redraw in place.
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        self.drawn = true;
    }

    /// Erase the line, so what follows starts on a clean one.
    pub fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `restoring: 12.0 MiB of 48.0 MiB (25%), 3 of 40 segments, 6.0 MiB/s, 6s left`
pub fn render(p: &Progress, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = p.bytes_done as f64 / secs;
    let pct = match p.bytes_total {
        0 => 100,
        t => (p.bytes_done.min(t) * 100 / t) as u32,
    };
    let left = p.bytes_total.saturating_sub(p.bytes_done);
    let eta = if left == 0 {
        "done".to_string()
    } else if rate > 0.0 {
        format!(
            "{} left",
            eta_text(Duration::from_secs_f64(left as f64 / rate))
        )
    } else {
        "time left unknown".to_string()
    };
    format!(
        "restoring: {} of {} ({pct}%), {} of {} segments, {}/s, {eta}",
        human_bytes(p.bytes_done),
        human_bytes(p.bytes_total),
        p.segments_done,
        p.segments_total,
        human_bytes(rate as u64),
    )
}

fn eta_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{}s", s.max(1)),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsw::layout::SegmentKey;

    #[test]
    fn the_line_says_how_far_and_how_long() {
        let key = SegmentKey::parse(
            "lsw1/0123456789abcdef/0000000000000002-0000000000000005.20261125T162230.123Z.changes.lsw",
        );
        let key = key.expect("a valid key");
        let p = Progress {
            segment: &key,
            segment_bytes: 1 << 20,
            segments_done: 3,
            segments_total: 12,
            bytes_done: 4 << 20,
            bytes_total: 16 << 20,
        };
        let line = render(&p, Duration::from_secs(2));
        assert!(line.contains("4.0 MiB of 16.0 MiB (25%)"), "{line}");
        assert!(line.contains("3 of 12 segments"), "{line}");
        assert!(line.contains("2.0 MiB/s"), "{line}");
        assert!(line.contains("6s left"), "{line}");
        assert_eq!(eta_text(Duration::from_secs(125)), "2m05s");
        assert_eq!(eta_text(Duration::from_secs(7300)), "2h01m");
    }
}
