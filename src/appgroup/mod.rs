//! Application groups: the types an application, its member interface (MI)
//! and the mservers share (seed 003, chapter II: sections B.2 "Name Scope
//! Control", B.3 "Membership Scope Control", B.4 "Member Interfaces", and
//! section D "Partition Resolution Protocol"; DESIGN.md section 6).
//!
//! An **application group** is a named set of application processes. A
//! process joins through the MI of its host and, from then on, receives
//! every view of its group, in order, or is excluded. This module holds
//! what every layer agrees on, encodable with serde + bincode 2 like the
//! rest of the protocol:
//!
//! - names: [`GroupName`] (unique under the group's name-scope),
//!   [`MemberName`] (unique inside its group) and [`MemberKind`] (a short
//!   tag the partition rules can test), each validated when built *and*
//!   when decoded, so a name that arrived over a socket is as valid as one
//!   typed in code;
//! - members and views: [`MemberInfo`] (what a joiner asks for),
//!   [`AppMember`] (a member as the group sees it: name, kind, a UUID v7
//!   and its host), [`AppView`] (a group's numbered view, members in join
//!   order);
//! - the creation options [`GroupOptions`]: the name-scope and the
//!   membership-scope ([`Scope`]), and the partition rules, a
//!   [`SurviveRule`] (which parts of a partitioned group keep running) and
//!   a [`MergeRule`] (which parts merge again when they hear each other);
//! - the typed errors an application sees, [`AppError`];
//! - the replicated [`Registry`] of groups that every mserver of a
//!   core-set applies the committed [`AppOp`]s to (`registry/`);
//! - [`link`]: the MI <-> mserver RPC procedures and messages;
//! - [`service`]: the mserver's sans-IO application-group service;
//! - [`agent`]: the MI's sans-IO link to its mserver.

pub mod agent;
mod error;
pub mod link;
mod names;
mod registry;
mod rules;
pub mod service;
mod view;

pub use error::AppError;
pub use names::{GroupName, MemberKind, MemberName, NameError, MAX_KIND, MAX_NAME};
pub use registry::{
    AppOp, AppReply, Applied, MiRecord, Registry, RequestId, HISTORY_MEMBERS, MAX_GROUPS,
    MAX_GROUP_MEMBERS, MAX_HOST, MAX_MIS, MAX_REMEMBERED,
};
pub use rules::{GroupOptions, MergeRule, Scope, SurviveRule};
pub use view::{AppMember, AppView, MemberInfo};
