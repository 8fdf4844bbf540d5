//! `mserver`: a member of a core-set of the Membership Service (seed 003,
//! chapters III and IV; DESIGN.md sections 5 and 7). See `mserver --help`
//! and `docs/operations.md`.
#![forbid(unsafe_code)]

use clap::Parser;
use mserver::daemon::{self, Exit};
use mserver::settings::{Cli, Settings};
use std::process::ExitCode;

fn main() -> ExitCode {
    // clap prints usage errors and exits with code 2 itself.
    let cli = Cli::parse();
    let settings = match Settings::load(&cli, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mserver: {e:#}");
            return ExitCode::from(daemon_shell::exit::USAGE);
        }
    };
    if let Err(e) =
        membership::runtime::logging::init_logging(&settings.log_level, settings.log_format)
    {
        eprintln!("mserver: {e}");
        return ExitCode::from(2);
    }
    let system = actix::System::new();
    match system.block_on(daemon::run(settings)) {
        Ok(Exit::Left) => ExitCode::SUCCESS,
        Ok(Exit::LeaveTimedOut) => ExitCode::SUCCESS,
        Ok(Exit::CoreStopped) => ExitCode::FAILURE,
        Err(e) => {
            // Startup errors (a port in use, a group that cannot be
            // joined): unusable settings, one line.
            eprintln!("mserver: {e:#}");
            ExitCode::from(daemon_shell::exit::USAGE)
        }
    }
}
