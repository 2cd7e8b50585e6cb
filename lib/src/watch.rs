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
    /// File names whose events wake us (the database and its WAL).
    names: Vec<Vec<u8>>,
    buf: Vec<u8>,
}

impl Watcher {
    /// Watch `db`'s directory for changes to `db` and `db-wal`.
    pub fn new(db: &Path) -> Self {
        let dir = db.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = db.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
        let mut wal = name.clone();
        wal.extend_from_slice(b"-wal");
        let fd = (|| {
            let dir = CString::new(dir.as_os_str().as_bytes()).ok()?;
            // SAFETY: plain syscalls on a descriptor we own.
            let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            if fd < 0 {
                return None;
            }
            let mask = libc::IN_MODIFY | libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE;
            // SAFETY: `dir` is a valid C string for the call's duration.
            if unsafe { libc::inotify_add_watch(fd, dir.as_ptr(), mask) } < 0 {
                unsafe { libc::close(fd) };
                return None;
            }
            Some(fd)
        })();
        Watcher {
            fd,
            names: vec![name, wal],
            buf: vec![0u8; 64 * 1024],
        }
    }

    pub fn is_inotify(&self) -> bool {
        self.fd.is_some()
    }

    /// Wait until the database or its WAL changes, or `timeout` passes.
    /// Returns true if woken by a change. Signals end the wait early.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let Some(fd) = self.fd else {
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
