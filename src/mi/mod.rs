//! The member interface (MI), the per-host daemon's protocol as one sans-IO
//! core (seed 003, section II.B.4 "Member Interfaces"; section II.D for the
//! members a partition excludes; DESIGN.md section 6;
//! `docs/appgroups-design.md`). The MI counterpart of [`crate::mserver`]:
//! in the library so that the member-interface daemon and the simulator run
//! the very same rules.
//!
//! - [`sessions`]: the local processes' sessions (memberships per
//!   connection, views held back until a join is answered, de-duplicated
//!   views, `AlreadyMember`/`NotMember`, member ids minted from inputs,
//!   leaves on close) and their vocabulary ([`Op`], [`Reply`], [`Event`],
//!   [`MembershipId`]), which the client <-> MI protocol carries;
//! - [`node`]: [`MiNode`], the sessions and the MI's link to its mserver
//!   ([`crate::appgroup::agent::MiAgent`]) composed into one [`Core`](crate::sansio::Core).

pub mod node;
pub mod sessions;

pub use node::{MiNode, MiNodeEvent};
pub use sessions::{
    ConnId, Event, MemberIds, MembershipId, Op, Reply, SessionConfig, SessionOutput, Sessions,
    ToClient,
};
