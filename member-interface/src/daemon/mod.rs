//! The per-host member-interface (MI) daemon (seed 003, section II.B.4
//! "Member Interfaces"; seed 001 section 5.7 and seed 002 for the daemon +
//! library split; DESIGN.md section 6; `docs/appgroups-design.md`). It holds
//! no protocol state: the MI's rules are the library's sans-IO
//! [`membership::mi::MiNode`].
//!
//! - [`server`]: the local side, the Unix-socket frame pump application
//!   processes connect to with [`crate::Client`], and its port to the core;
//! - [`uplink`]: runs the core on the runtime's driver and bridges it to
//!   the server's port;
//! - [`settings`]: the daemon's command line.

pub mod server;
pub mod settings;
pub mod uplink;

pub use server::{
    serve, CorePort, FromCore, Server, ServerConfig, ServerError, ServerStats, ToCore,
};
pub use settings::{Args, LogFormat};
