//! The mcaster's control messages (seed 003, section IV.A.2.b, figure 12):
//! `JOIN_GROUP` and `LEAVE_GROUP` from members, and the mcaster's answers.
//!
//! They travel as bodies of [`ProtocolId::Mcaster`](crate::id::ProtocolId)
//! packets (serde + bincode 2, bounded like every body). The thesis's
//! numeric codes are kept in [`Answer::code`] for logs and docs.

use crate::id::NodeId;
use crate::wire::SharedRing;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest group name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// How a member receives group traffic (the thesis's `lan` field, figure
/// 11): by IP multicast on its own LAN (mc), or only by unicast from the
/// mcaster (uc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReceiveMode {
    /// Unicast-capable only: the mcaster sends it a copy of every message.
    Uc,
    /// Multicast-capable: it receives the class D address itself.
    Mc,
}

impl fmt::Display for ReceiveMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReceiveMode::Uc => "uc",
            ReceiveMode::Mc => "mc",
        })
    }
}

/// A body of an [`ProtocolId::Mcaster`](crate::id::ProtocolId) packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum McasterMsg {
    /// `JOIN_GROUP` (120): register the sender (the packet's source) as a
    /// member of `group`, creating the group if needed. Members repeat it
    /// every refresh interval (soft state, as GMP refreshes joins).
    JoinGroup {
        /// The group's class D address and port.
        group: NodeId,
        /// The group's name (at most [`MAX_NAME_LEN`] bytes).
        name: String,
        /// How the member receives the group's traffic.
        kind: ReceiveMode,
    },
    /// `LEAVE_GROUP` (121): remove the sender from `group`.
    LeaveGroup {
        /// The group's class D address and port.
        group: NodeId,
    },
    /// The mcaster's answer to a `JOIN_GROUP` or `LEAVE_GROUP` about `group`.
    Reply {
        /// The group the request named.
        group: NodeId,
        /// The answer.
        answer: Answer,
    },
    /// A registered mserver hands the mcaster the cluster key ring its
    /// core-set committed (`msctl keys`), sealed under the ring both
    /// already hold. Repeated until [`McasterMsg::KeyRingAck`] names
    /// `epoch` (bounded). Not in the thesis.
    KeyRing {
        /// The sender's counter of ring changes (per sender incarnation):
        /// an older one than the last taken from that sender is stale.
        epoch: u64,
        /// The ring.
        ring: SharedRing,
    },
    /// The mcaster's acknowledgement of [`McasterMsg::KeyRing`] `epoch`
    /// (sent for a stale one too, so the sender stops repeating it).
    KeyRingAck {
        /// The epoch taken.
        epoch: u64,
    },
}

/// The mcaster's answers (figure 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Answer {
    /// `JOIN_ACK` (130): the member was added (the group created if new).
    JoinAck,
    /// `DUP_MEMBER` (131): the member was already listed; its registration
    /// was refreshed (the normal answer to a refresh).
    DupMember,
    /// `NEG_JOIN` (132): refused: not a multicast address, a bad name, a
    /// multicast member on an mcaster that cannot multicast, or a bound
    /// reached (too many groups or members).
    NegJoin,
    /// `LEAVE_ACK` (140): the member was removed (the group too, if it was
    /// the last).
    LeaveAck,
    /// `NO_GROUP` (141): no such group.
    NoGroup,
    /// `NO_MEMBER` (142): the sender is not a member of the group.
    NoMember,
    /// `NEG_LEAVE` (143): refused: the address is not a multicast group.
    NegLeave,
    /// `GROUP_EXISTS` (150): the join named a group address already
    /// listed under another name, or a name already listed under another
    /// address; nothing changed.
    GroupExists,
}

impl Answer {
    /// The thesis's message type number (figure 12).
    pub const fn code(self) -> u16 {
        match self {
            Answer::JoinAck => 130,
            Answer::DupMember => 131,
            Answer::NegJoin => 132,
            Answer::LeaveAck => 140,
            Answer::NoGroup => 141,
            Answer::NoMember => 142,
            Answer::NegLeave => 143,
            Answer::GroupExists => 150,
        }
    }

    /// The thesis's name.
    pub const fn name(self) -> &'static str {
        match self {
            Answer::JoinAck => "JOIN_ACK",
            Answer::DupMember => "DUP_MEMBER",
            Answer::NegJoin => "NEG_JOIN",
            Answer::LeaveAck => "LEAVE_ACK",
            Answer::NoGroup => "NO_GROUP",
            Answer::NoMember => "NO_MEMBER",
            Answer::NegLeave => "NEG_LEAVE",
            Answer::GroupExists => "GROUP_EXISTS",
        }
    }

    /// Whether the answer to a `JOIN_GROUP` means "registered".
    pub const fn is_registered(self) -> bool {
        matches!(self, Answer::JoinAck | Answer::DupMember)
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode_body, encode_body};

    #[test]
    fn messages_roundtrip() {
        let g = NodeId::v4(239, 1, 2, 3, 7000);
        for m in [
            McasterMsg::JoinGroup {
                group: g,
                name: "cs".into(),
                kind: ReceiveMode::Mc,
            },
            McasterMsg::LeaveGroup { group: g },
            McasterMsg::Reply {
                group: g,
                answer: Answer::GroupExists,
            },
        ] {
            let b = encode_body(&m).unwrap();
            assert_eq!(decode_body::<McasterMsg>(&b).unwrap(), m);
        }
    }

    #[test]
    fn codes_follow_figure_12() {
        assert_eq!(Answer::JoinAck.code(), 130);
        assert_eq!(Answer::GroupExists.code(), 150);
        assert_eq!(Answer::NegLeave.to_string(), "NEG_LEAVE (143)");
        assert!(Answer::DupMember.is_registered());
        assert!(!Answer::NegJoin.is_registered());
    }
}
