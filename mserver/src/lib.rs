//! The mserver daemon's library: its settings, the admin protocol shared
//! with `msctl`, the composite core that runs on its socket, and the actix
//! daemon around it (DESIGN.md sections 2, 3 and 7; seed 003, chapters III
//! and IV). The protocol itself is [`membership::coreset`]; nothing here
//! decides anything about it.
#![forbid(unsafe_code)]

pub mod daemon;
pub mod http;
pub mod security;
pub mod settings;

/// The admin protocol shared with `msctl` (in the library:
/// [`membership::mserver::admin`]).
pub use membership::mserver::admin;
/// The composite core (in the library, so the simulator and the benchmarks
/// run it: [`membership::mserver::node`]).
pub use membership::mserver::node;
