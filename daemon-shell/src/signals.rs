//! The signals a daemon acts on: SIGTERM and SIGINT (stop: the mserver and
//! the member-interface leave gracefully first, as does `msctl --mi join`),
//! and SIGHUP: every daemon reloads its cluster key file then (the shared
//! loading and checks are [`crate::keys`]; each daemon's handler calls its
//! own key-reload function: the mcaster's `reload_keys`, the mserver's
//! `Daemon::reload_keys` over `mserver::security::reload`, the member
//! interface's `reload_keys`).

use std::fmt;
use std::io;
use tokio::signal::unix::{signal, SignalKind};

/// A signal that arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM.
    Terminate,
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGHUP.
    Hangup,
}

impl Signal {
    /// The signal's name for log lines: `SIGTERM`, `SIGINT`, `SIGHUP`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
            Signal::Hangup => "SIGHUP",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The installed signal streams. Must be created inside a tokio runtime
/// (an actix system is one).
#[derive(Debug)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// SIGTERM and SIGINT.
    ///
    /// # Errors
    ///
    /// The handlers cannot be installed; each daemon says what that means
    /// for it ("cannot install signal handlers").
    pub fn stop() -> io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: None,
        })
    }

    /// SIGTERM, SIGINT and SIGHUP.
    ///
    /// # Errors
    ///
    /// As [`Signals::stop`].
    pub fn stop_and_reload() -> io::Result<Self> {
        let mut s = Signals::stop()?;
        s.hup = Some(signal(SignalKind::hangup())?);
        Ok(s)
    }

    /// The next signal. Cancel-safe: a `tokio::select!` branch loses no
    /// signal.
    pub async fn recv(&mut self) -> Signal {
        let Signals { term, int, hup } = self;
        let hup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => Signal::Terminate,
            _ = int.recv() => Signal::Interrupt,
            _ = hup => Signal::Hangup,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_for_log_lines() {
        assert_eq!(Signal::Terminate.to_string(), "SIGTERM");
        assert_eq!(Signal::Interrupt.to_string(), "SIGINT");
        assert_eq!(Signal::Hangup.name(), "SIGHUP");
    }

    #[tokio::test]
    async fn a_hangup_is_received() {
        let mut signals = Signals::stop_and_reload().expect("handlers installed");
        let status = std::process::Command::new("kill")
            .arg("-HUP")
            .arg(std::process::id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
        let got = tokio::time::timeout(Duration::from_secs(5), signals.recv()).await;
        assert_eq!(got.ok(), Some(Signal::Hangup));
    }
}
