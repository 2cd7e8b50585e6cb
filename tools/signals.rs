//! SIGINT and SIGTERM ask a running tool to finish cleanly: capture what
//! is left, flush, close the stream, exit 0. A second signal exits at once.

use std::sync::atomic::{AtomicBool, Ordering};

pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if STOP.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) };
    }
}

/// Install the handlers (without SA_RESTART, so a blocking wait returns).
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a plain handler is valid; the
        // handler only touches an atomic and calls _exit.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

static REMOVE_ON_SIGNAL: std::sync::OnceLock<std::ffi::CString> = std::sync::OnceLock::new();

extern "C" fn remove_and_exit(sig: libc::c_int) {
    if let Some(path) = REMOVE_ON_SIGNAL.get() {
        // SAFETY: unlink and _exit are async-signal-safe; the path lives
        // in a static that is never freed.
        unsafe { libc::unlink(path.as_ptr()) };
    }
    unsafe { libc::_exit(128 + sig) };
}

/// On SIGINT/SIGTERM/SIGHUP, remove `path` (a temporary file being
/// built) and exit: a killed restore leaves nothing behind.
pub fn remove_on_signal(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return };
    if REMOVE_ON_SIGNAL.set(c).is_err() {
        return;
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: as in `install`.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = remove_and_exit as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}
