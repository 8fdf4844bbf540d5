//! `mcaster`: the Membership Service's multicast emulator (seed 003,
//! section IV.A; DESIGN.md sections 1 and 7).
//!
//! An actix daemon around the sans-IO [`membership::relay::Relay`]: it owns
//! the UDP socket, the timer, the class D sockets of the groups it serves
//! (when its host can multicast), the command line and the logs. See
//! `docs/mcaster.md`.
#![forbid(unsafe_code)]

mod daemon;
mod settings;

use clap::Parser;
use settings::{Cli, LogFormat, Settings};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // clap prints usage errors and exits with code 2 itself.
    let cli = Cli::parse();
    let settings = match Settings::load(&cli, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcaster: {e:#}");
            return ExitCode::from(2);
        }
    };
    let filter =
        EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&settings.log_level));
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mcaster: invalid log filter {:?}: {e}", settings.log_level);
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
    let reload = move || Settings::load(&cli, None);
    match system.block_on(daemon::run(settings, reload)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "mcaster failed");
            eprintln!("mcaster: {e:#}");
            ExitCode::FAILURE
        }
    }
}
