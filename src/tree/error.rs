//! The errors an operator's tree request can end with (`msctl add-parent`,
//! `del-parent`, `leave --level N`; `docs/hierarchy.md`, "Interfaces").
//!
//! They travel in the admin RPC's answer (bincode) and `msctl` prints them
//! as `error: <kind>: <detail>` with exit code 1. No error leaves a
//! half-made change: a request refused before it starts changed nothing,
//! and a two-step change that fails after its first step is undone by the
//! task that made it (see [`super::task`]).

use crate::coreset::TreeOpError;
use serde::{Deserialize, Serialize};

/// Why an operator's tree request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TreeError {
    /// The request names a level this mserver does not belong to.
    #[error("this mserver belongs to levels 1 to {top}, not {level}")]
    NoSuchLevel {
        /// The level asked.
        level: u8,
        /// Our top level.
        top: u8,
    },
    /// The group is one of this mserver's chain already (names are the key
    /// that tells levels apart).
    #[error("group {0} is in this mserver's chain already")]
    InChain(String),
    /// The group's address is not an IPv4 multicast address with a port.
    #[error("{0} is not an IPv4 multicast address with a port")]
    NotMulticast(String),
    /// The group keeps this many parents already.
    #[error("our top group keeps {0} parents already (--max-parents)")]
    MaxParents(u8),
    /// Our top group's parents are in another parent group.
    #[error(
        "our top group's parents are in {recorded}; add a parent there, or del-parent them first"
    )]
    ParentGroupMismatch {
        /// The parent group the group records.
        recorded: String,
    },
    /// The parent group is of another level than one above ours.
    #[error("the parent group is of another level than {expected}")]
    LevelMismatch {
        /// The level it should be.
        expected: u8,
    },
    /// Our top is the deepest a chain goes.
    #[error("a chain has at most {0} levels")]
    TooDeep(u8),
    /// `del-parent` (or `leave --level 1` spelled so) at level 1.
    #[error("this mserver is in level 1 only: there is no parent role to leave (msctl leave leaves everything)")]
    DelParentAtLevel1,
    /// Too many requests are waiting.
    #[error("{0} tree requests are waiting already; try again later")]
    Busy(usize),
    /// The request did not finish within the tree task timeout (the task
    /// may still finish; `msctl tree` shows it).
    #[error("not finished within {timeout_ms} ms (phase: {phase}); msctl tree shows how it ends")]
    Timeout {
        /// Where it was.
        phase: String,
        /// The timeout.
        timeout_ms: u64,
    },
    /// Our group at the level concerned has no view now (joining,
    /// excluded and rejoining, or leaving).
    #[error("our group at level {0} has no view now (joining or leaving); try again")]
    NotMember(u8),
    /// The child set refused the change (it no longer fits the group).
    #[error("our group refused the change: {0}")]
    Refused(TreeOpError),
    /// The parent group did not admit us within the parent join timeout;
    /// the flag was undone.
    #[error("the parent group did not admit us in time (is it reachable?); undone")]
    NotAdmitted,
    /// The caller may not change this mserver (admin access:
    /// docs/security.md).
    #[error("{0}")]
    Denied(String),
    /// The request could not be read.
    #[error("{0}")]
    BadRequest(String),
    /// The mserver is leaving, or was excluded from the level concerned
    /// while the request ran.
    #[error("cancelled: {0}")]
    Cancelled(String),
}

impl TreeError {
    /// A short name for the kind of error (`msctl` prints `error: <kind>:
    /// <detail>`).
    pub fn kind(&self) -> &'static str {
        match self {
            TreeError::NoSuchLevel { .. } => "no-such-level",
            TreeError::InChain(_) => "in-chain",
            TreeError::NotMulticast(_) => "not-multicast",
            TreeError::MaxParents(_) => "max-parents",
            TreeError::ParentGroupMismatch { .. } => "parent-group-mismatch",
            TreeError::LevelMismatch { .. } => "level-mismatch",
            TreeError::TooDeep(_) => "too-deep",
            TreeError::DelParentAtLevel1 => "del-parent-at-level-1",
            TreeError::Busy(_) => "busy",
            TreeError::Timeout { .. } => "timeout",
            TreeError::NotMember(_) => "not-member",
            TreeError::Refused(_) => "refused",
            TreeError::NotAdmitted => "not-admitted",
            TreeError::Denied(_) => "denied",
            TreeError::BadRequest(_) => "bad-request",
            TreeError::Cancelled(_) => "cancelled",
        }
    }
}
