//! The member interface (MI) side of application groups: the protocol a
//! local process speaks to its host's MI over a Unix socket, and the client
//! library applications link (seed 003, section II.B.4 "Member Interfaces";
//! DESIGN.md section 6; the daemon + library split of seed 001 section 5.7
//! and seed 002).
//!
//! - [`proto`]: the frames (length prefix + bincode body, bounded), the
//!   version handshake, requests, answers and view events;
//! - [`Client`] and [`Membership`]: the async library (tokio): connect,
//!   create, join, receive every view of the group in order, look members
//!   up, leave; every call has a timeout;
//! - [`blocking`]: the same API for programs without an async runtime;
//! - [`daemon`]: the per-host MI daemon's parts (the Unix-socket frame
//!   pump for local processes, its settings, and the runner of the MI's
//!   sans-IO core, [`membership::mi::MiNode`]).
//!
//! The application-group vocabulary (names, views, options, errors) is
//! [`membership::appgroup`], re-exported here.
//!
//! ```no_run
//! # async fn demo() -> Result<(), member_interface::AppError> {
//! use member_interface::{Client, GroupOptions, MemberInfo, MemberName};
//! let client = Client::connect("/tmp/member-interface.sock").await?;
//! client.create_group("chat", GroupOptions::default()).await?;
//! let me = MemberInfo::new(MemberName::parse("alice")?);
//! let mut membership = client.join("chat", me).await?;
//! while let Ok(view) = membership.next_view().await {
//!     println!("view {} of {}: {} members", view.number, view.group, view.len());
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod blocking;
mod client;
pub mod daemon;
pub mod proto;

pub use client::{Client, ClientConfig, Membership, MAX_VIEW_QUEUE, OUT_QUEUE};
pub use membership::appgroup::{
    AppError, AppMember, AppView, GroupName, GroupOptions, MemberInfo, MemberKind, MemberName,
    MergeRule, NameError, Scope, SurviveRule,
};
pub use proto::MembershipId;

/// The socket the member-interface daemon listens on when started without
/// `--socket`: `$XDG_RUNTIME_DIR/member-interface.sock` when that variable
/// is set (and not empty), else `/tmp/member-interface.sock`. Connect to it
/// when the daemon runs with its defaults, as the same user.
pub fn default_socket_path() -> std::path::PathBuf {
    daemon::settings::default_socket(std::env::var_os("XDG_RUNTIME_DIR"))
}
