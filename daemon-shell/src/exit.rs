//! Exit codes, the same for every daemon and for `msctl`.
//!
//! - 0: done (a daemon that left gracefully or was told to stop);
//! - 1: a failure while running (the core stopped; a command that failed);
//! - 2: bad usage or unusable settings: a bad flag, config file or variable,
//!   an address that cannot be bound (a port in use), a group address that
//!   cannot be joined. Nothing was started; fix the command and run again.

/// Done.
pub const OK: u8 = 0;
/// A failure while running.
pub const FAILURE: u8 = 1;
/// Bad usage or unusable settings (clap also exits 2 for usage errors).
pub const USAGE: u8 = 2;
