//! `mserver`: a member of a core-set of the Membership Service (seed 003,
//! chapters III and IV; DESIGN.md sections 5 and 7). See `mserver --help`
//! and `docs/operations.md`.
#![forbid(unsafe_code)]

use clap::Parser;
use daemon_shell::exit;
use mserver::daemon::{self, Exit};
use mserver::settings::{Cli, Settings};
use std::process::ExitCode;

fn main() -> ExitCode {
    // clap prints usage errors and exits with code 2 itself.
    let cli = Cli::parse();
    // SIGHUP: the log level from the file and environment again (flags
    // still win).
    daemon_shell::reload::register_log_level(|| Ok(Settings::load(&Cli::parse(), None)?.log_level));
    daemon_shell::startup::run(
        "mserver",
        Settings::load(&cli, None),
        |s| (s.log_level.clone(), s.log_format),
        // Startup errors (a port in use, a group that cannot be joined):
        // unusable settings, one line, exit 2.
        |s| async move {
            Ok(match daemon::run(s).await? {
                Exit::Left | Exit::LeaveTimedOut => exit::OK,
                Exit::CoreStopped => exit::FAILURE,
            })
        },
    )
}
