//! `mserver`: a member of a core-set of the Membership Service (seed 003,
//! chapters III and IV; DESIGN.md sections 5 and 7). See `mserver --help`
//! and `docs/operations.md`.
#![forbid(unsafe_code)]

use clap::Parser;
use mserver::daemon::{self, Exit};
use mserver::settings::{Cli, LogFormat, Settings};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // clap prints usage errors and exits with code 2 itself.
    let cli = Cli::parse();
    let settings = match Settings::load(&cli, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mserver: {e:#}");
            return ExitCode::from(2);
        }
    };
    let filter =
        EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&settings.log_level));
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mserver: invalid log filter {:?}: {e}", settings.log_level);
            return ExitCode::from(2);
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match settings.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let system = actix::System::new();
    match system.block_on(daemon::run(settings)) {
        Ok(Exit::Left) => ExitCode::SUCCESS,
        Ok(Exit::LeaveTimedOut) => ExitCode::SUCCESS,
        Ok(Exit::CoreStopped) => ExitCode::FAILURE,
        Err(e) => {
            // Startup errors: a port in use, a group that cannot be joined.
            tracing::error!(error = %format!("{e:#}"), "mserver failed to start");
            eprintln!("mserver: {e:#}");
            ExitCode::from(2)
        }
    }
}
