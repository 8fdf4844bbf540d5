//! The ops the core-set commits for the registry ([`AppOp`], each with
//! the [`RequestId`] it answers) and what applying one gives
//! ([`Applied`], [`AppReply`]), plus an MI's attachment ([`MiRecord`]).

use crate::appgroup::error::AppError;
use crate::appgroup::names::GroupName;
use crate::appgroup::rules::GroupOptions;
use crate::appgroup::view::{AppMember, AppView};
use crate::id::NodeId;
use crate::wire::{decode_body, encode_body};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who asked for an op: the MI's id and its request counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// The MI (a UUID v7 taken when it starts).
    pub mi: Uuid,
    /// Its request counter.
    pub seq: u64,
}

/// One application-group change, as the core-set commits it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppOp {
    /// Create a group (it starts at view 0, with no members).
    Create {
        /// Who asked.
        req: RequestId,
        /// Its name.
        group: GroupName,
        /// Its options.
        options: GroupOptions,
    },
    /// A process joins a group through MI `req.mi`.
    Join {
        /// Who asked (the member's MI).
        req: RequestId,
        /// The group.
        group: GroupName,
        /// The member (its id chosen by the MI, a UUID v7).
        member: AppMember,
    },
    /// A member leaves (or its process died: its MI saw the connection
    /// close).
    Leave {
        /// Who asked.
        req: RequestId,
        /// The group.
        group: GroupName,
        /// The member's id.
        member: Uuid,
    },
    /// MIs failed (a crash, or the far side of a partition): every member
    /// they hosted is removed, in one view per group; then each group's
    /// survive rule decides whether the rest keeps running here (if not,
    /// the rest is removed as well, and reported lost).
    MiFailed {
        /// The MIs, each with the attachment (its `attach_seq`) the
        /// submitter saw fail: an MI that attached again since is spared.
        mis: Vec<(Uuid, u64)>,
    },
    /// After a core-set merge, the absorbed side's MI attachments (each
    /// kept unless this side knows a later attachment of that MI).
    Readmit {
        /// The MIs and their records.
        mis: Vec<(Uuid, MiRecord)>,
    },
    /// After a core-set merge, one group as the absorbed side had it (one
    /// op per group, or several for a big group, each with part of the
    /// members). The group's merge rule decides whether these members join
    /// this side's part; those that do not are reported lost.
    Reform {
        /// The group.
        group: GroupName,
        /// Its options (used if this side does not know the group).
        options: GroupOptions,
        /// The absorbed side's view number of the group.
        number: u64,
        /// The absorbed side's last view before the partition, if it had
        /// one (what the merge rule compares with).
        base: Option<Vec<AppMember>>,
        /// Members, with the MI that hosts each.
        members: Vec<(AppMember, Uuid)>,
    },
    /// MI `req.mi` attached to `mserver` (first, or again after a
    /// failover).
    Attach {
        /// Who asked (the MI).
        req: RequestId,
        /// Its host name (the `host` of its members).
        host: String,
        /// The mserver it attached to.
        mserver: NodeId,
    },
}

impl AppOp {
    /// The payload for `CoreSet::submit_app`.
    pub fn encode(&self) -> Result<Vec<u8>, AppError> {
        encode_body(self).map_err(|e| AppError::Internal(format!("cannot encode an app op: {e}")))
    }

    /// An op from a committed payload (bounded; names are validated on
    /// decode).
    pub fn decode(bytes: &[u8]) -> Result<AppOp, AppError> {
        decode_body(bytes).map_err(|e| AppError::Internal(format!("bad app op: {e}")))
    }

    /// The request it answers (none for `MiFailed`).
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            AppOp::Create { req, .. }
            | AppOp::Join { req, .. }
            | AppOp::Leave { req, .. }
            | AppOp::Attach { req, .. } => Some(*req),
            AppOp::MiFailed { .. } | AppOp::Readmit { .. } | AppOp::Reform { .. } => None,
        }
    }
}

/// What an op did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppReply {
    /// The group was created.
    Created,
    /// The member joined; the group's first view with it.
    Joined(AppView),
    /// The member left.
    Left,
    /// The MIs' members were removed (from this many groups).
    MiRemoved(usize),
    /// Attachments or a group part of an absorbed side were taken in.
    Reformed,
    /// The MI's attachment was recorded.
    Attached,
}

/// Where an MI is attached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MiRecord {
    /// The mserver it is attached to.
    pub mserver: NodeId,
    /// Its host name.
    pub host: String,
    /// The request counter of its latest attachment (its epoch).
    pub attach_seq: u64,
}

/// The outcome of applying one op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The request it answers (none for `MiFailed`).
    pub req: Option<RequestId>,
    /// Its result, the same at every mserver.
    pub result: Result<AppReply, AppError>,
    /// The views of the groups it changed: the commit's view of each (ops
    /// of one commit that change the same group share it); none for a
    /// duplicate or a refused op.
    pub views: Vec<AppView>,
    /// It was a duplicate of an op applied before.
    pub duplicate: bool,
    /// Members removed without asking, or not taken in at a merge, that
    /// their MI must be told about: `(group, member, MI)`.
    pub lost: Vec<(GroupName, Uuid, Uuid)>,
}
