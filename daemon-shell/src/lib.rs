//! What the daemon shells of the Membership Service share, so that each
//! daemon crate holds only its own settings, actors and command line.
//!
//! - [`settings`]: the settings layering every daemon uses (built-in
//!   defaults < TOML file < `MS_*` environment < command-line flags), with
//!   unknown keys in the file refused and misspelt `MS_*` variables caught.
//! - [`exit`]: the exit codes every daemon and tool uses.
#![forbid(unsafe_code)]

pub mod exit;
pub mod settings;
