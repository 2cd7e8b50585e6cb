//! SIGINT and SIGTERM ask a running tool to finish cleanly: capture what
//! is left, flush, close the stream, exit 0. A second signal exits at once.
//! While `replicate -exec` runs a child, those and SIGHUP, SIGQUIT,
//! SIGUSR1 and SIGUSR2 go to the child instead (`forward_to`).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

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

/// The signals `replicate -exec` hands on to its child.
pub const FORWARDED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The child signals go to (0: none, act on them as `install` does).
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; the pid is our child, not yet
        // reaped (it is cleared before the child is reaped).
        unsafe { libc::kill(pid, sig) };
    } else if sig == libc::SIGINT || sig == libc::SIGTERM {
        on_signal(sig);
    }
}

/// Install the forwarding handler for every signal in `FORWARDED`:
/// while a child is set they go to it, else SIGINT/SIGTERM stop us and
/// the others are ignored.
pub fn install_forwarding() {
    for sig in FORWARDED {
        // SAFETY: as in `install`; the handler calls only kill and _exit.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Send forwarded signals to `pid` (0: to nobody any more). Clear it
/// before reaping the child, so a signal never reaches a reused pid.
pub fn forward_to(pid: i32) {
    CHILD.store(pid, Ordering::SeqCst);
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
