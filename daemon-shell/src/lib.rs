//! What the daemon shells of the Membership Service share, so that each
//! daemon crate holds only its own settings, actors and command line.
//!
//! - [`settings`]: the settings layering every daemon uses (built-in
//!   defaults < TOML file < `MS_*` environment < command-line flags), with
//!   unknown keys in the file refused and misspelt `MS_*` variables caught.
//! - [`startup`]: the `main` skeleton: settings or one line and exit 2,
//!   logging, an actix system around the daemon, its exit code.
//! - [`multicast`]: the startup probe for `--multicast auto` and the group
//!   sockets (class D address joined, datagrams to the daemon's core).
//! - [`signals`]: SIGTERM, SIGINT and SIGHUP as one stream.
//! - [`keys`]: the cluster key ring settings (inline keys, key file,
//!   key-ring file) every daemon and `msctl` share.
//! - [`reload`]: what SIGHUP reloads (the log level through a reload
//!   layer; reload functions registered by the daemons).
//! - [`exit`]: the exit codes every daemon and tool uses.
//! - [`http`]: the `--http` endpoint (actix-web): `/healthz`, `/metrics`
//!   in the Prometheus text format, the metrics every socket has.
#![forbid(unsafe_code)]

pub mod exit;
pub mod http;
pub mod keys;
pub mod multicast;
pub mod reload;
pub mod settings;
pub mod signals;
pub mod startup;
