//! `mcaster`: the Membership Service's multicast emulator (seed 003,
//! section IV.A; DESIGN.md sections 1 and 7).
//!
//! An actix daemon around the sans-IO [`membership::mcaster::Mcaster`]: it owns
//! the UDP socket, the timer, the class D sockets of the groups it serves
//! (when its host can multicast), the command line and the logs. See
//! `docs/mcaster.md`.
#![forbid(unsafe_code)]

mod daemon;
mod settings;

use clap::Parser;
use settings::{Cli, Settings};
use std::process::ExitCode;

fn main() -> ExitCode {
    // clap prints usage errors and exits with code 2 itself.
    let cli = Cli::parse();
    let settings = match Settings::load(&cli, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcaster: {e:#}");
            return ExitCode::from(daemon_shell::exit::USAGE);
        }
    };
    if let Err(e) =
        membership::runtime::logging::init_logging(&settings.log_level, settings.log_format)
    {
        eprintln!("mcaster: {e}");
        return ExitCode::from(2);
    }
    let system = actix::System::new();
    let reload = move || Settings::load(&cli, None);
    match system.block_on(daemon::run(settings, reload)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Startup errors (a port in use, a group socket that cannot be
            // opened): unusable settings, one line, exit 2 as the mserver.
            eprintln!("mcaster: {e:#}");
            ExitCode::from(daemon_shell::exit::USAGE)
        }
    }
}
