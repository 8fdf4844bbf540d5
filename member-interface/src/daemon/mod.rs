//! The per-host member-interface (MI) daemon (seed 003, section II.B.4
//! "Member Interfaces"; seed 001 section 5.7 and seed 002 for the daemon +
//! library split; DESIGN.md section 6; `docs/appgroups-design.md`).
//!
//! - [`server`]: the local side, the Unix-socket server application
//!   processes connect to with [`crate::Client`];
//! - [`uplink_api`]: the channel types between the server and the uplink
//!   (the MI's link to its mserver);
//! - [`settings`]: the daemon's command line.

pub mod server;
pub mod settings;
pub mod uplink;
pub mod uplink_api;

pub use server::{serve, Server, ServerConfig, ServerError, ServerStats};
pub use settings::{Args, LogFormat};
pub use uplink_api::{Downcall, UpCall, UpReply, UpRequest};
