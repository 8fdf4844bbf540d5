//! Helpers shared by the real-process rmcast tests (`rmcast_process`,
//! `rmcast_netns`): the binaries (`msbench mcast-peer`, `mcaster`), child
//! processes killed on drop, and a reader of their JSON lines with bounded
//! waits (counted in slices, never by reading a clock).

// Every test binary compiles this module on its own and uses a subset.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

/// The `msbench` binary (built by cargo for this package's tests).
pub fn msbench() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_msbench"))
}

/// The `mcaster` binary of the workspace, next to `msbench` in the target
/// directory. `cargo test --workspace` builds it before any test runs;
/// when this test runs alone (`cargo test --test ...`) it is built here
/// once with the same profile (`cargo build --profile test -p mcaster`,
/// a no-op when fresh). Panics with the reason if there is none.
pub fn mcaster() -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let path = msbench().with_file_name("mcaster");
    let built = BUILT.get_or_init(|| {
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let out = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "--profile",
                "test",
                "-p",
                "mcaster",
                "--bin",
                "mcaster",
                "--manifest-path",
                manifest,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    if let Err(e) = built {
        assert!(path.exists(), "no mcaster binary and cannot build it: {e}");
        eprintln!("warning: could not rebuild mcaster ({e}); using {path:?}");
    }
    path
}

/// A free UDP port on `ip` (bound, then released).
pub fn free_port(ip: &str) -> u16 {
    std::net::UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// A child process, killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    /// Its name in logs.
    pub name: String,
    /// The process.
    pub child: Child,
}

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (by `kill -TERM`, this crate has no libc).
    pub fn term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
    }

    /// SIGKILL, and reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the exit up to `limit` (in 20 ms slices); its code, if it
    /// exited.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        for _ in 0..limit.as_millis() / 20 + 1 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One line from a child: (name, line), `None` at its end of output.
type Line = (String, Option<String>);

/// Reads the stdout (JSON lines) and stderr of children; keeps every JSON
/// object by child and a log of everything for failure messages.
pub struct Lines {
    tx: mpsc::Sender<Line>,
    rx: mpsc::Receiver<Line>,
    /// JSON objects per child, in order.
    pub json: BTreeMap<String, Vec<Value>>,
    /// Every line (for failure messages; the last lines are shown).
    pub log: Vec<String>,
}

impl Default for Lines {
    fn default() -> Self {
        Self::new()
    }
}

impl Lines {
    /// No child yet.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        Lines {
            tx,
            rx,
            json: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    /// Starts `cmd` as child `name` with piped stdout and stderr (lines of
    /// stderr only go to the log).
    pub fn spawn(&mut self, name: &str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        for (out, tag) in [
            (
                child
                    .stdout
                    .take()
                    .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
                "",
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
                "!",
            ),
        ] {
            let Some(out) = out else { continue };
            let tx = self.tx.clone();
            let who = format!("{tag}{name}");
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((who.clone(), Some(line))).is_err() {
                        return;
                    }
                }
                let _ = tx.send((who, None));
            });
        }
        Proc {
            name: name.to_string(),
            child,
        }
    }

    /// Takes lines until `done` holds or about `limit` passes without it
    /// (counted in 20 ms slices without a line, and at most a million
    /// lines); answers whether `done` held.
    pub fn pump(&mut self, limit: Duration, mut done: impl FnMut(&Lines) -> bool) -> bool {
        const SLICE: Duration = Duration::from_millis(20);
        let mut idle = limit.as_millis() / SLICE.as_millis();
        for _ in 0..1_000_000 {
            if done(self) {
                return true;
            }
            match self.rx.recv_timeout(SLICE) {
                Ok((who, Some(line))) => {
                    if let Some(name) = who.strip_prefix('!') {
                        self.log.push(format!("{name} (stderr): {line}"));
                        continue;
                    }
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        self.json.entry(who.clone()).or_default().push(v);
                    }
                    self.log.push(format!("{who}: {line}"));
                }
                Ok((who, None)) => self.log.push(format!("{who}: <eof>")),
                Err(mpsc::RecvTimeoutError::Timeout) if idle > 0 => idle -= 1,
                Err(_) => break,
            }
        }
        done(self)
    }

    /// The JSON objects of `name` whose `"event"` is `event`.
    pub fn events<'a>(
        &'a self,
        name: &str,
        event: &'a str,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.json
            .get(name)
            .into_iter()
            .flatten()
            .filter(move |v| v["event"] == event)
    }

    /// Whether `name` printed an `event`.
    pub fn has(&self, name: &str, event: &str) -> bool {
        self.events(name, event).next().is_some()
    }

    /// Position of the first `event` line of `name` among its JSON lines.
    pub fn position(&self, name: &str, event: &str) -> Option<usize> {
        self.json
            .get(name)?
            .iter()
            .position(|v| v["event"] == event)
    }

    /// The last `n` log lines, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let from = self.log.len().saturating_sub(n);
        self.log[from..].join("\n")
    }
}
