//! The `main` every daemon runs: its settings (or one line and exit 2),
//! logging, an actix system around the daemon, and the exit code it ends
//! with ([`crate::exit`]).

use crate::exit;
use crate::reload::init_logging;
use membership::runtime::logging::LogFormat;
use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

/// A daemon's end said on stderr in one line, `NAME: message`, with its
/// exit code.
#[derive(Debug)]
pub struct Fatal {
    code: u8,
    message: String,
}

impl Fatal {
    /// Unusable settings or a failed startup (a port in use, a group that
    /// cannot be joined): [`exit::USAGE`].
    pub fn usage(message: impl Display) -> Self {
        Fatal {
            code: exit::USAGE,
            message: message.to_string(),
        }
    }

    /// A failure while running: [`exit::FAILURE`].
    pub fn failure(message: impl Display) -> Self {
        Fatal {
            code: exit::FAILURE,
            message: message.to_string(),
        }
    }

    /// The exit code.
    pub fn code(&self) -> u8 {
        self.code
    }

    /// The line's message (without the daemon's name).
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A startup error: [`Fatal::usage`], with its causes on the same line
/// (`cannot listen on 127.0.0.1:7200: Address in use`).
impl From<anyhow::Error> for Fatal {
    fn from(e: anyhow::Error) -> Self {
        Fatal::usage(format!("{e:#}"))
    }
}

/// Runs a daemon named `name`: takes its loaded `settings` (an error is
/// said in one line, exit 2), installs the logger with the level and
/// format `logging` reads from them (an invalid filter: one line, exit 2),
/// then runs `daemon` in an actix system and exits with the code it
/// answers, or says its [`Fatal`] error and exits with that one's code.
pub fn run<S, F, Fut>(
    name: &str,
    settings: anyhow::Result<S>,
    logging: impl FnOnce(&S) -> (String, LogFormat),
    daemon: F,
) -> ExitCode
where
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = Result<u8, Fatal>>,
{
    let settings = match settings {
        Ok(s) => s,
        Err(e) => return say(name, e.into()),
    };
    let (level, format) = logging(&settings);
    if let Err(e) = init_logging(&level, format) {
        return say(name, Fatal::usage(e));
    }
    let system = actix::System::new();
    match system.block_on(daemon(settings)) {
        Ok(code) => ExitCode::from(code),
        Err(fatal) => say(name, fatal),
    }
}

/// Says `fatal` on stderr, `NAME: message`, and answers its exit code.
fn say(name: &str, fatal: Fatal) -> ExitCode {
    eprintln!("{name}: {}", fatal.message);
    ExitCode::from(fatal.code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn a_startup_error_is_one_line_with_its_causes_and_exit_2() {
        let e = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address in use");
        let e = Err::<(), _>(e)
            .context("cannot listen on 127.0.0.1:7200")
            .unwrap_err();
        let f = Fatal::from(e);
        assert_eq!(
            f.message(),
            "cannot listen on 127.0.0.1:7200: Address in use"
        );
        assert_eq!(f.code(), exit::USAGE);
    }

    #[test]
    fn a_failure_while_running_exits_1() {
        let f = Fatal::failure("the core stopped");
        assert_eq!((f.code(), f.message()), (exit::FAILURE, "the core stopped"));
    }
}
