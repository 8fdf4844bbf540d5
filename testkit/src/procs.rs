//! Child processes killed when dropped, signals, and log files.
//!
//! A [`Proc`] is SIGKILLed, continued (a SIGSTOPped process dies of
//! SIGKILL only once continued) and reaped when it is dropped, so a test
//! that fails leaves no daemon behind. Signals go through `kill(1)`: the
//! workspace has no libc binding.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Sends `signal` (e.g. `"KILL"`, `"STOP"`, `"CONT"`, `"TERM"`) to every
/// process of `pids` with one `kill` command, so they are hit within
/// microseconds of each other.
pub fn signal_all(pids: &[u32], signal: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run kill -{signal} {pids:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{signal} {pids:?} failed"))
    }
}

/// A file to send a child's output to (`Stdio::null()` if it cannot be
/// created).
pub fn log_file(path: &Path) -> Stdio {
    std::fs::File::create(path).map_or_else(|_| Stdio::null(), Stdio::from)
}

/// The last `n` lines of the file at `path` (empty if unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A child process, killed and reaped when dropped.
#[derive(Debug)]
pub struct Proc {
    /// Its name in messages.
    pub name: String,
    /// The process.
    pub child: Child,
    /// The file its output goes to, if any ([`Proc::spawn_logged`]).
    pub log: Option<PathBuf>,
}

impl Proc {
    /// Starts `cmd` (stdin closed; stdout and stderr as `cmd` says) as
    /// `name`.
    pub fn try_spawn(name: &str, cmd: &mut Command) -> std::io::Result<Proc> {
        let child = cmd.stdin(Stdio::null()).spawn()?;
        Ok(Proc::adopt(name, child))
    }

    /// Takes charge of a child started elsewhere (e.g. with its stdin
    /// piped), as `name`.
    pub fn adopt(name: &str, child: Child) -> Proc {
        Proc {
            name: name.to_string(),
            child,
            log: None,
        }
    }

    /// [`Proc::try_spawn`], panicking with the reason.
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        Proc::try_spawn(name, cmd).unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
    }

    /// Starts `cmd` as `name` with stdout discarded and stderr written to
    /// the file `log` (see [`Proc::log_tail`]).
    pub fn spawn_logged(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let mut p = Proc::spawn(name, cmd.stdout(Stdio::null()).stderr(log_file(log)));
        p.log = Some(log.to_path_buf());
        p
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `"STOP"`).
    pub fn try_signal(&self, signal: &str) -> Result<(), String> {
        signal_all(&[self.pid()], signal)
    }

    /// Sends `signal`; panics if `kill` fails.
    pub fn signal(&self, signal: &str) {
        if let Err(e) = self.try_signal(signal) {
            panic!("{}: {e}", self.name);
        }
    }

    /// Sends SIGTERM, ignoring a failure (the process may be gone).
    pub fn term(&self) {
        let _ = self.try_signal("TERM");
    }

    /// SIGKILL (and SIGCONT, in case it is stopped), and reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.try_signal("CONT");
        let _ = self.child.wait();
    }

    /// Whether it has exited: `Some(its exit code)` if so (`Some(None)`:
    /// killed by a signal).
    pub fn try_exit(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().ok().flatten().map(|s| s.code())
    }

    /// Waits up to `limit` (polling every 10 ms) for it to exit; as
    /// [`Proc::try_exit`], `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<Option<i32>> {
        crate::wait::until(limit, Duration::from_millis(10), || self.try_exit())
    }

    /// The last `n` lines of its log file (empty without one).
    pub fn log_tail(&self, n: usize) -> String {
        self.log.as_deref().map(|l| tail(l, n)).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_child_is_killed_on_drop_and_exit_codes_are_seen() {
        let p = Proc::spawn("sleep", Command::new("sleep").arg("30"));
        p.signal("STOP");
        let pid = p.pid();
        drop(p);
        assert!(
            !Path::new(&format!("/proc/{pid}/status")).exists() || {
                // A reaped pid may have been reused at once; only a zombie or a
                // stopped `sleep` of ours would be a failure.
                let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                !s.contains("sleep")
            }
        );
        let mut q = Proc::spawn("sh", Command::new("sh").args(["-c", "exit 3"]));
        assert_eq!(q.wait_exit(Duration::from_secs(10)), Some(Some(3)));
    }

    #[test]
    fn logs_are_captured_and_tailed() {
        let dir = std::env::temp_dir().join(format!("testkit-procs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("x.log");
        let mut p = Proc::spawn_logged(
            "sh",
            Command::new("sh").args(["-c", "echo one >&2; echo two >&2; echo three >&2"]),
            &log,
        );
        assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(Some(0)));
        assert_eq!(p.log_tail(2), "two\nthree");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
