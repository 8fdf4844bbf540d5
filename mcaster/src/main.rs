//! `mcaster`: the Membership Service's multicast emulator (seed 003,
//! section IV.A; DESIGN.md sections 1 and 7).
//!
//! An actix daemon around the sans-IO [`membership::mcaster::Mcaster`]: it owns
//! the UDP socket, the timer, the class D sockets of the groups it serves
//! (when its host can multicast), the command line and the logs. See
//! `docs/mcaster.md`.
#![forbid(unsafe_code)]

mod daemon;
mod http;
mod settings;

use clap::Parser;
use settings::{Cli, Settings};
use std::process::ExitCode;

fn main() -> ExitCode {
    // clap prints usage errors and exits with code 2 itself.
    let cli = Cli::parse();
    // SIGHUP: the log level from the file and environment again (flags
    // still win).
    daemon_shell::reload::register_log_level(|| Ok(Settings::load(&Cli::parse(), None)?.log_level));
    daemon_shell::startup::run(
        "mcaster",
        Settings::load(&cli, None),
        |s| (s.log_level.clone(), s.log_format),
        // Startup errors (a port in use, a group socket that cannot be
        // opened): unusable settings, one line, exit 2 as the mserver.
        move |s| async move {
            daemon::run(s, move || Settings::load(&cli, None)).await?;
            Ok(daemon_shell::exit::OK)
        },
    )
}
