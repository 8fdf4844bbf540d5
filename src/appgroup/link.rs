//! The MI <-> mserver link: the RPC procedures and messages between a
//! member interface and the mserver it is attached to, and between
//! mservers for the registry's state transfer (seed 003, section II.B.4
//! "Member Interfaces"; DESIGN.md section 6; `docs/appgroups-design.md`).
//!
//! Everything travels as RPC calls (the project's CHAN over BLAST,
//! [`crate::rpc`]), so requests are retransmitted, executed at most once
//! and may be large (a registry snapshot of thousands of members):
//!
//! | procedure | caller -> callee | request | reply |
//! |---|---|---|---|
//! | [`PROC_MI_ATTACH`] | MI -> mserver | [`AttachRequest`] | [`AttachReply`] |
//! | [`PROC_MI_SUBMIT`] | MI -> mserver | [`SubmitRequest`] | [`SubmitReply`] (once committed) |
//! | [`PROC_MI_READ`] | MI or msctl -> mserver | [`ReadRequest`] | [`ReadReply`] |
//! | [`PROC_MI_QUERY`] | mserver -> MI | [`QueryRequest`] | [`QueryReply`] |
//! | [`PROC_MI_KEYRING`] | mserver -> MI | [`KeyRingPush`] | [`KeyRingTaken`] |
//! | [`PROC_REGISTRY_FETCH`] | mserver -> mserver | [`FetchRequest`] | [`FetchReply`] |
//!
//! The mserver's `QUERY` polls are also how it pushes views: a query
//! carries the views committed since the last one the MI acknowledged,
//! numbered by a per-MI sequence number, so an MI that answers a query has
//! every view before it, in order.
//!
//! After a key change commits (`msctl keys`), the mserver hands the new
//! cluster key ring to each MI attached to it ([`PROC_MI_KEYRING`]); like
//! every call under a ring it travels sealed, so encrypted under the key
//! the mserver signs with, which the MI holds.

use super::{AppError, AppMember, AppOp, AppReply, AppView, GroupName, GroupOptions, MemberName};
use crate::id::{CommitPosition, NodeId};
use crate::wire::SharedRing;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// MI -> mserver: attach (or re-attach after a failover).
pub const PROC_MI_ATTACH: u16 = 40;
/// MI -> mserver: submit an [`AppOp`]; answered once it committed.
pub const PROC_MI_SUBMIT: u16 = 41;
/// MI or msctl -> mserver: read the registry (a view, a member, every
/// group), answered at once from the mserver's copy.
pub const PROC_MI_READ: u16 = 42;
/// mserver -> MI: the liveness poll, carrying the views to deliver.
pub const PROC_MI_QUERY: u16 = 43;
/// mserver -> MI: the cluster key ring the core-set committed.
pub const PROC_MI_KEYRING: u16 = 44;
/// mserver -> mserver: a copy of the registry (state transfer to an
/// mserver that joined the core-set).
pub const PROC_REGISTRY_FETCH: u16 = 45;

/// Most views an MI may be behind on one group before its members there
/// are excluded rather than caught up (the registry keeps that many).
pub use super::registry::VIEW_HISTORY;

/// [`PROC_MI_ATTACH`]'s request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRequest {
    /// The MI's id (a UUID v7 taken when it starts).
    pub mi: Uuid,
    /// The MI's host name, the `host` of its members.
    pub host: String,
    /// The MI's request counter for this attachment (an attachment is an
    /// op like the others, deduplicated by its request id).
    pub seq: u64,
    /// For each group with members on this MI: the last view number the
    /// MI delivered, so the mserver can send the views it missed.
    pub have: Vec<(GroupName, u64)>,
}

/// [`PROC_MI_ATTACH`]'s reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachReply {
    /// The attachment committed, or why not ([`AppError::Busy`] while the
    /// mserver is not yet a member of its core-set or has no registry).
    pub result: Result<Attached, AppError>,
}

/// How an mserver polls the MIs attached to it ([`PROC_MI_QUERY`]), told
/// in every [`Attached`] answer. The mserver's query interval is the one
/// owner of every MI timing derived from it: the MI's silence timeout and
/// the mserver's orphan grace both come from [`PollTiming::silence_timeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollTiming {
    /// An attached MI is polled this often (the mserver's query interval;
    /// the next poll is sent this long after the last one was answered).
    pub interval: Duration,
    /// A poll unanswered this long fails the MI.
    pub timeout: Duration,
}

impl PollTiming {
    /// How long an MI goes without a poll before it takes its mserver for
    /// silent and attaches elsewhere: two poll periods plus the poll
    /// timeout (one poll may be late by a whole timeout of retransmissions,
    /// and the next one is sent an interval after it was answered). With
    /// the default timings (200 ms, 300 ms): 700 ms.
    pub fn silence_timeout(&self) -> Duration {
        self.interval.saturating_mul(2).saturating_add(self.timeout)
    }

    /// How long the MIs of an mserver that left the view have to attach
    /// elsewhere before they are failed: two silence timeouts (they first
    /// notice the silence, then attach; 1.4 s with the default timings).
    pub fn orphan_grace(&self) -> Duration {
        self.silence_timeout().saturating_mul(2)
    }
}

/// A committed attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    /// How the mserver will poll the MI (the MI's silence timeout is
    /// derived from it).
    pub poll: PollTiming,
    /// The mservers of the core-set's current view (where to re-attach if
    /// this one fails).
    pub mservers: Vec<NodeId>,
    /// The views the MI missed, oldest first, for the groups of `have`:
    /// every view after the number it gave, up to the current one.
    pub views: Vec<AppView>,
    /// Members of this MI that the mserver could not catch up (more than
    /// [`VIEW_HISTORY`] views behind) or that are no longer in their group:
    /// `(group, member id)`.
    pub lost: Vec<(GroupName, Uuid)>,
}

/// [`PROC_MI_SUBMIT`]'s request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// The op, with the MI's request id in it.
    pub op: AppOp,
}

/// [`PROC_MI_SUBMIT`]'s reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitReply {
    /// The committed outcome (the same at every mserver), or a refusal
    /// before submission (not attached, not a member, queue full).
    pub result: Result<AppReply, AppError>,
}

/// [`PROC_MI_READ`]'s request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadRequest {
    /// A group's current view.
    View {
        /// The group.
        group: GroupName,
    },
    /// A member of a group, by name.
    Lookup {
        /// The group.
        group: GroupName,
        /// The member's name.
        name: MemberName,
    },
    /// Every group: its options and current view (`msctl groups`).
    Groups,
}

/// [`PROC_MI_READ`]'s reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadReply {
    /// A view.
    View(Result<AppView, AppError>),
    /// A member.
    Member(Result<AppMember, AppError>),
    /// Every group (or why not).
    Groups(Result<Vec<GroupInfo>, AppError>),
}

/// One application group as `msctl groups` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// Its options.
    pub options: GroupOptions,
    /// Its current view.
    pub view: AppView,
    /// It does not survive in this part of a partitioned core-set (its
    /// survive rule failed): no views, joins refused, until a merge.
    pub suspended: bool,
}

/// [`PROC_MI_QUERY`]'s request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRequest {
    /// The MI queried (a new life of an MI at the same address has another
    /// id, and answers `attached: false`).
    pub mi: Uuid,
    /// The mserver's attachment epoch for this MI (the request id of the
    /// committed attachment's seq): an MI that attached elsewhere since
    /// answers with `attached: false`.
    pub attach_seq: u64,
    /// Sequence number of the first view in `views` (views are numbered
    /// per MI from 1, one by one).
    pub first_seq: u64,
    /// Views to deliver, in commit order.
    pub views: Vec<AppView>,
    /// Members of this MI removed from their groups without the MI asking
    /// (their group did not survive a partition): `(group, member id)`.
    pub lost: Vec<(GroupName, Uuid)>,
    /// The mservers of the core-set's current view.
    pub mservers: Vec<NodeId>,
}

/// [`PROC_MI_QUERY`]'s reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryReply {
    /// The MI is attached to the querying mserver with this epoch.
    pub attached: bool,
    /// Every view up to this sequence number was delivered.
    pub acked_seq: u64,
}

/// [`PROC_REGISTRY_FETCH`]'s request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// The core-set commit the asker joined at: the copy must include
    /// everything committed up to at least that one.
    pub since_view: CommitPosition,
}

/// [`PROC_REGISTRY_FETCH`]'s reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchReply {
    /// The core-set commit the copy is as of (every application change
    /// committed up to this one is in it), and the registry's encoding
    /// ([`super::Registry::encode`]); or why not.
    pub result: Result<(CommitPosition, Vec<u8>), AppError>,
}

/// [`PROC_MI_KEYRING`]'s request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRingPush {
    /// The MI it is for (another life of an MI at the same address does
    /// not take it).
    pub mi: Uuid,
    /// The mserver's attachment epoch for this MI (as in
    /// [`QueryRequest::attach_seq`]): only the MI's own mserver is heard.
    pub attach_seq: u64,
    /// The mserver's counter of rings handed to this MI: an older one
    /// than the last taken is stale.
    pub epoch: u64,
    /// The ring.
    pub ring: SharedRing,
}

/// [`PROC_MI_KEYRING`]'s reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRingTaken {
    /// The MI took the ring (or already had a newer one from this
    /// mserver); `false`: it is not attached to the caller, or the ring is
    /// not valid.
    pub taken: bool,
}
