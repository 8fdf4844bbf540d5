//! `testkit`: the harness shared by every crate's real-process tests and by
//! `msbench` (a dev-dependency of the daemon crates, a dependency of the
//! benchmark; never published). It owns what those places used to copy:
//!
//! - [`bins`]: finding the workspace's binaries (`mserver`, `msctl`,
//!   `mcaster`, `member-interface`, `msbench`), one way for everyone;
//! - [`procs`]: child processes killed (and a stopped one continued) when
//!   dropped, also when a test panics; signals; logs to files and their
//!   tails;
//! - [`lines`]: capture of children's output lines (JSON lines kept per
//!   child), with bounded waits on what they printed;
//! - [`ports`]: free port choice;
//! - [`wait`]: polling a condition until it holds or a deadline passes;
//! - [`cluster`]: an mcaster and mservers on a loopback LAN as the mserver
//!   tests and `msbench` start them, and agreement of `msctl view` answers;
//! - [`http`]: a minimal GET for the daemons' `--http` endpoints;
//! - [`netns`]: a LAN of network namespaces (bridges, veth pairs, real IP
//!   multicast), deleted when dropped, also when a test fails.
//!
//! What is specific to one crate's tests (the mserver tests' `Cluster` with
//! its faults and partitions, the fake member interfaces, the mcaster
//! tests' member core) stays in that crate's tests.
//!
//! # Finding the binaries
//!
//! Cargo puts every binary of the workspace in `target/<profile>/`; a test
//! executable lives in `target/<profile>/deps/`, a binary such as `msbench`
//! in `target/<profile>/` itself. [`bins::bin_dir`] is that directory, found
//! from the running executable, and every lookup goes there:
//!
//! - **tests** call [`bins::bin`] (package and binary name). `cargo test
//!   --workspace` builds every package's binaries before any test runs (a
//!   package's binaries are built for its integration tests), so the file is
//!   there and fresh. When it is missing (one package tested alone, e.g.
//!   `cargo test -p mserver` needs the `mcaster` of another package), it is
//!   built once per test process with `cargo build -p PACKAGE --bin NAME`
//!   in the same profile (`test` for `target/debug`, `release` for
//!   `target/release`); the first such build may take minutes, as cargo
//!   resolves features for that package alone and compiles dependencies
//!   again. An existing binary of *another* package is not
//!   rebuilt: after changing that daemon, test with `--workspace` (or
//!   build it) so its binary is fresh.
//! - **`msbench`** calls [`bins::locate`], which looks in its own
//!   directory (`target/<profile>/`) and never builds: its error names the
//!   build command (`cargo build --release --workspace`).
//!
//! Test support may panic: every panic here says what failed and why.
//! `msbench`, which is not a test, uses only the functions that do not
//! (the `try_` ones, [`bins::locate`], [`netns`], [`wait`]).

// Test support owns the wall clock (bounded waits, deadlines).
#![allow(clippy::disallowed_methods)]

pub mod bins;
pub mod cluster;
pub mod http;
pub mod lines;
pub mod netns;
pub mod ports;
pub mod procs;
pub mod wait;

pub use bins::bin;
pub use lines::Lines;
pub use ports::{free_port, free_udp_port};
pub use procs::Proc;
