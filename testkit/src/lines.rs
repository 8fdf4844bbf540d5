//! Capture of children's output: each child's stdout and stderr are read
//! line by line on threads; [`Lines`] keeps every stdout line and every JSON
//! object per child, and a log of everything for failure messages, and
//! waits, always with a bound, for what a test expects to see.

use crate::procs::Proc;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One line from a child: (name, `true` for stderr, the line), or `None` at
/// the end of that output.
type Line = (String, bool, Option<String>);

/// How long one wait for a line lasts before the condition is looked at
/// again.
const SLICE: Duration = Duration::from_millis(20);
/// Most lines taken by one wait.
const MAX_LINES: usize = 1_000_000;

/// The output of a set of children.
pub struct Lines {
    tx: mpsc::Sender<Line>,
    rx: mpsc::Receiver<Line>,
    /// Every stdout line per child, in order.
    pub text: BTreeMap<String, Vec<String>>,
    /// The JSON objects among them, per child, in order.
    pub json: BTreeMap<String, Vec<Value>>,
    /// Every line of every child, `name: line` (`name (stderr): line`), for
    /// failure messages ([`Lines::tail`]).
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
            text: BTreeMap::new(),
            json: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    /// Starts `cmd` as child `name` (stdin closed, stdout and stderr read
    /// here).
    pub fn try_spawn(&mut self, name: &str, mut cmd: Command) -> std::io::Result<Proc> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        self.attach(name, &mut child);
        Ok(Proc::adopt(name, child))
    }

    /// [`Lines::try_spawn`], panicking with the reason.
    pub fn spawn(&mut self, name: &str, cmd: Command) -> Proc {
        self.try_spawn(name, cmd)
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
    }

    /// Reads the piped stdout and stderr of `child` (those that are piped
    /// and not taken yet) as child `name`.
    pub fn attach(&mut self, name: &str, child: &mut Child) {
        let outs: [(Option<Box<dyn Read + Send>>, bool); 2] = [
            (child.stdout.take().map(|o| Box::new(o) as _), false),
            (child.stderr.take().map(|o| Box::new(o) as _), true),
        ];
        for (out, is_err) in outs {
            let Some(out) = out else { continue };
            let tx = self.tx.clone();
            let who = name.to_string();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((who.clone(), is_err, Some(line))).is_err() {
                        return;
                    }
                }
                let _ = tx.send((who, is_err, None));
            });
        }
    }

    fn keep(&mut self, (who, is_err, line): Line) {
        match line {
            Some(line) if is_err => self.log.push(format!("{who} (stderr): {line}")),
            Some(line) => {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    self.json.entry(who.clone()).or_default().push(v);
                }
                self.log.push(format!("{who}: {line}"));
                self.text.entry(who).or_default().push(line);
            }
            None if is_err => self.log.push(format!("{who} (stderr): <eof>")),
            None => self.log.push(format!("{who}: <eof>")),
        }
    }

    /// Takes lines until `done` holds, or `deadline` passes, or `idle`
    /// passes without a line; whether `done` held.
    fn take(
        &mut self,
        deadline: Option<Instant>,
        idle: Duration,
        mut done: impl FnMut(&Lines) -> bool,
    ) -> bool {
        let mut quiet = idle.as_millis() / SLICE.as_millis();
        for _ in 0..MAX_LINES {
            if done(self) {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            match self.rx.recv_timeout(SLICE) {
                Ok(line) => self.keep(line),
                Err(mpsc::RecvTimeoutError::Timeout) if quiet > 0 => quiet -= 1,
                Err(_) => break,
            }
        }
        done(self)
    }

    /// Takes lines until `done` holds or about `limit` passes without a
    /// line (a stream of lines keeps it waiting, up to a million lines);
    /// whether `done` held.
    pub fn pump(&mut self, limit: Duration, done: impl FnMut(&Lines) -> bool) -> bool {
        self.take(None, limit, done)
    }

    /// Takes lines until `done` holds or `limit` has passed, lines or not;
    /// whether `done` held.
    pub fn wait(&mut self, limit: Duration, done: impl FnMut(&Lines) -> bool) -> bool {
        self.take(Some(Instant::now() + limit), limit, done)
    }

    /// The JSON objects of `name` whose `"event"` is `event`.
    pub fn events<'a>(&'a self, name: &str, event: &str) -> impl Iterator<Item = &'a Value> + 'a {
        let event = event.to_string();
        self.json
            .get(name)
            .into_iter()
            .flatten()
            .filter(move |v| v["event"] == event.as_str())
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

    /// The stdout lines of `name`.
    pub fn of(&self, name: &str) -> &[String] {
        self.text.get(name).map_or(&[], Vec::as_slice)
    }

    /// The last `n` log lines, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let from = self.log.len().saturating_sub(n);
        self.log[from..].join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_per_child_and_bounded_waits() {
        let mut lines = Lines::new();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            r#"echo '{"event":"ready"}'; echo plain; echo oops >&2; echo '{"event":"done","n":2}'"#,
        ]);
        let _p = lines.spawn("a", cmd);
        assert!(lines.pump(Duration::from_secs(10), |l| l.has("a", "done")));
        assert_eq!(lines.position("a", "done"), Some(1));
        assert_eq!(
            lines.events("a", "done").next().map(|v| v["n"].clone()),
            Some(2.into())
        );
        assert!(lines.of("a").contains(&"plain".to_string()));
        assert!(lines.wait(Duration::from_secs(10), |l| l
            .log
            .iter()
            .any(|x| x == "a (stderr): oops")));
        assert!(!lines.wait(Duration::from_millis(50), |l| l.has("a", "never")));
        assert!(lines.tail(100).contains("a: plain"));
    }
}
