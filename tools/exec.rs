//! `replicate -exec CMD`: the application as our child. Its command line
//! is split into words as a shell would (no shell runs it); signals to us
//! are forwarded to it (signals.rs); when it exits, replication stops and
//! we exit with its status.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};

use crate::signals;

/// The words of `cmd` (`sh -c 'a; b'`, `"my app" --port 80`).
pub fn split(cmd: &str) -> anyhow::Result<Vec<String>> {
    let words = shell_words::split(cmd)
        .map_err(|e| crate::cli::usage(format!("-exec {cmd:?}: {e}")))?;
    if words.is_empty() {
        return Err(crate::cli::usage("-exec: empty command"));
    }
    Ok(words)
}

/// Check that the command can be started before replication starts
/// (a typo should cost one line, not a replication start and stop).
pub fn check(words: &[String]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let cmd = &words[0];
    let found = if cmd.contains('/') {
        runnable(std::path::Path::new(cmd))
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| runnable(&dir.join(cmd))))
    };
    if found {
        Ok(())
    } else {
        Err(anyhow::anyhow!("-exec {cmd}: command not found or not executable"))
    }
}

/// Start the child (stdin, stdout and stderr are ours) and forward
/// signals to it from now on.
pub fn spawn(words: &[String]) -> anyhow::Result<Child> {
    let child = Command::new(&words[0])
        .args(&words[1..])
        .spawn()
        .map_err(|e| anyhow::anyhow!("-exec {}: {e}", words[0]))?;
    signals::forward_to(child.id() as i32);
    Ok(child)
}

/// Wait for the child to exit; stop forwarding signals before it is
/// reaped (its pid could be reused after that).
pub fn wait(child: &mut Child) -> std::io::Result<ExitStatus> {
    let pid = child.id() as libc::id_t;
    loop {
        // SAFETY: a zeroed siginfo_t is valid for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // WNOWAIT: wait for the exit but leave the child a zombie, so
        // the pid stays ours until forwarding has stopped.
        let r = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            signals::forward_to(0);
            return Err(e);
        }
    }
    signals::forward_to(0);
    child.wait()
}

/// Our exit status for the child's: its code, or 128+N if signal N
/// killed it (as a shell reports it).
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => (128 + sig) as u8,
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(split("sh -c 'exit 3'").unwrap(), ["sh", "-c", "exit 3"]);
        assert_eq!(split(r#""my app" --name "a b""#).unwrap(), ["my app", "--name", "a b"]);
        assert!(split("  ").is_err());
        assert!(split("sh -c 'unclosed").is_err());
    }
}
