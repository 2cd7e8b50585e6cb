//! Waking up when the WAL changes: inotify on the database's directory
//! (the WAL is created, written, truncated and deleted, so the directory
//! is watched rather than the file), with plain polling where inotify is
//! not available.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

pub struct Watcher {
    /// The inotify descriptor, or None when polling.
    fd: Option<i32>,
    /// The directory's watch, while it has one.
    watch: Option<i32>,
    dir: CString,
    /// File names whose events wake us (the database and its WAL).
    names: Vec<Vec<u8>>,
    buf: Vec<u8>,
}

/// What wakes us: the WAL written, created, replaced or deleted.
const MASK: u32 = libc::IN_MODIFY | libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE;

impl Watcher {
    /// Watch `db`'s directory for changes to `db` and `db-wal`.
    pub fn new(db: &Path) -> Self {
        let dir = db.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = db.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
        let mut wal = name.clone();
        wal.extend_from_slice(b"-wal");
        let dir = CString::new(dir.as_os_str().as_bytes()).unwrap_or_default();
        // SAFETY: a plain syscall; the descriptor is ours.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        let mut w = Watcher {
            fd: (fd >= 0).then_some(fd),
            watch: None,
            dir,
            names: vec![name, wal],
            buf: vec![0u8; 64 * 1024],
        };
        if !w.resume() {
            if let Some(fd) = w.fd.take() {
                // SAFETY: closing the descriptor we opened.
                unsafe { libc::close(fd) };
            }
        }
        w
    }

    /// Stop watching, until `resume`. Every write to a watched directory
    /// costs the writing process an event (allocated, then merged into the
    /// one before it): measured with a writer of one INSERT per
    /// transaction, about 6% of its time. Under load capture does not
    /// need the events, as it runs a pass every few milliseconds anyway.
    pub fn pause(&mut self) {
        if let (Some(fd), Some(wd)) = (self.fd, self.watch.take()) {
            // SAFETY: removing our own watch from our own descriptor.
            unsafe { libc::inotify_rm_watch(fd, wd) };
        }
    }

    /// Watch again after `pause`; true if the watch was added now.
    /// Changes made while paused wake nothing: the caller looks at the
    /// WAL once more before it waits.
    pub fn resume(&mut self) -> bool {
        let Some(fd) = self.fd else { return false };
        if self.watch.is_some() {
            return false;
        }
        // SAFETY: `dir` is a valid C string for the call's duration.
        let wd = unsafe { libc::inotify_add_watch(fd, self.dir.as_ptr(), MASK) };
        self.watch = (wd >= 0).then_some(wd);
        self.watch.is_some()
    }

    pub fn is_inotify(&self) -> bool {
        self.fd.is_some()
    }

    /// Wait until the database or its WAL changes, or `timeout` passes.
    /// Returns true if woken by a change. Signals end the wait early.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let (Some(fd), Some(_)) = (self.fd, self.watch) else {
            std::thread::sleep(timeout);
            return false;
        };
        if self.drain(fd) {
            return true;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one pollfd, valid for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        n > 0 && self.drain(fd)
    }

    /// Read all pending events; true if any concerns our files.
    fn drain(&mut self, fd: i32) -> bool {
        let mut hit = false;
        loop {
            // SAFETY: reading into our own buffer of the given length.
            let n = unsafe { libc::read(fd, self.buf.as_mut_ptr().cast(), self.buf.len()) };
            if n <= 0 {
                return hit;
            }
            let mut off = 0usize;
            let n = n as usize;
            let head = std::mem::size_of::<libc::inotify_event>();
            while off + head <= n {
                // SAFETY: the kernel wrote a whole event header at `off`.
                let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(self.buf[off..].as_ptr().cast()) };
                let name = &self.buf[off + head..(off + head + ev.len as usize).min(n)];
                let name = name.split(|b| *b == 0).next().unwrap_or(&[]);
                if self.names.iter().any(|w| w.as_slice() == name) {
                    hit = true;
                }
                off += head + ev.len as usize;
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(fd) = self.fd {
            // SAFETY: closing the descriptor we opened.
            unsafe { libc::close(fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_watch_wakes_nothing_and_a_resumed_one_wakes_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let wal = dir.path().join("app.db-wal");
        std::fs::write(&db, b"x").unwrap();
        let mut w = Watcher::new(&db);
        assert!(w.is_inotify());
        std::fs::write(&wal, b"1").unwrap();
        assert!(w.wait(Duration::from_secs(10)), "a write to the WAL should wake a watch");

        w.pause();
        std::fs::write(&wal, b"2").unwrap();
        assert!(w.resume(), "resume should add the watch again");
        // An event of the paused write would be queued already: no
        // waiting on time here.
        assert!(!w.wait(Duration::ZERO), "the write made while paused should have queued nothing");
        assert!(!w.resume(), "a second resume adds nothing");
        std::fs::write(&wal, b"3").unwrap();
        assert!(w.wait(Duration::from_secs(10)), "a resumed watch should wake");
    }
}
