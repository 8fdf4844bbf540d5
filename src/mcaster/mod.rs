//! The multicast emulator ("mcaster") as sans-IO cores (seed 003, section
//! IV.A, figures 6-12; DESIGN.md sections 1 and 4).
//!
//! Where a LAN or host has no IP multicast, members send their group
//! traffic to an **mcaster**, which copies it to every member of the group.
//! This module holds its protocol logic; the `mcaster` daemon only owns the
//! socket, the timer and the command line.
//!
//! Layering: the mcaster's messages and the member side
//! ([`Registration`](crate::mcaster_reg::Registration)) are in
//! [`crate::mcaster_reg`], below `rmcast` (whose `GroupEndpoint` registers
//! at an mcaster). This module, the mcaster's own core, is above `rmcast`:
//! it feeds rmcast's NACK cache ([`crate::rmcast::nack_cache`]). Nothing
//! below imports it.
//!
//! - [`Mcaster`] (the mcaster's core) keeps the **group lists** of figure 11:
//!   per group (a class D address and port, and a name) its members and
//!   their kind, [`ReceiveMode::Uc`](crate::mcaster_reg::ReceiveMode::Uc) or [`ReceiveMode::Mc`](crate::mcaster_reg::ReceiveMode::Mc). Members manage
//!   them with [`McasterMsg::JoinGroup`](crate::mcaster_reg::McasterMsg::JoinGroup) and [`McasterMsg::LeaveGroup`](crate::mcaster_reg::McasterMsg::LeaveGroup),
//!   answered as in figure 12 ([`Answer`](crate::mcaster_reg::Answer): `JOIN_ACK`, `DUP_MEMBER`,
//!   `NEG_JOIN`, `LEAVE_ACK`, `NO_GROUP`, `NO_MEMBER`, `NEG_LEAVE`,
//!   `GROUP_EXISTS`). A group is created by its first join and disappears
//!   with its last member.
//! - **Soft state** (seed 000, section 4, GMP): members repeat
//!   `JOIN_GROUP` every refresh interval (1 s); a member not refreshed for
//!   [`McasterConfig::member_ttl`] (3 s) is removed. So a member that died
//!   without `LEAVE_GROUP` expires, and a restarted mcaster relearns every
//!   group within one interval. The member side is [`Registration`](crate::mcaster_reg::Registration).
//! - **Relaying** (figure 8): every other packet whose header names a
//!   group is relayed to that group's members. From a uc sender, one copy
//!   goes to the class D address if any member is mc (the thesis's
//!   `mcflag`), and one by unicast to every other uc member; from an mc
//!   sender (whose packet the mc members already got), one copy to every uc
//!   member. The sender must be a member of the group.
//! - **The original sender is preserved.** Where the thesis adds an
//!   extended header, this mcaster forwards the datagram byte-for-byte
//!   ([`crate::sansio::Transmit::forward`]): its header already names the
//!   original sender and the group, so receivers never take the mcaster for
//!   the sender, and an authentication tag stays valid (the mcaster cannot
//!   forge one). Receivers see the mcaster as the UDP peer
//!   ([`crate::sansio::Incoming::peer`]) and `relayed = true`.
//! - **Authentication** (DESIGN.md section 4) happens before this core: the
//!   daemon's sockets open every datagram with a
//!   [`crate::wire::WireCodec`] holding the cluster key ring (header, CRC,
//!   AEAD tag, and a replay window per header source, as every member
//!   does), so forged, unauthenticated and replayed datagrams are dropped
//!   and counted there and never reach the core; the core's own answers
//!   are sealed, so signed with the ring's first key, by the same codec.
//!   A forward keeps the `RELAYED` header bit as the sender sealed it
//!   (clear): the bit is covered by the CRC and the tag, so the mcaster
//!   cannot set it, and receivers tell a relayed copy by its UDP peer. A
//!   receiver's replay window is keyed by the header source, so a datagram
//!   that reaches it twice (by IP multicast and through the mcaster, or a
//!   cache resend of one it already has) is dropped as `replayed` the
//!   second time. Tests: `auth_tests.rs`.
//! - **NACK aggregation** (seed 000, section 6.1): relayed rmcast
//!   datagrams feed a bounded [`crate::rmcast::nack_cache::NackCache`]
//!   ([`McasterConfig::nack_cache`]). A uc member's NACK is answered from the
//!   cache by forwarding the cached original sealed data datagrams to it
//!   alone (never re-sealed), and relayed unchanged unless fully answered
//!   or aggregated with a live NACK-table entry (then suppressed). A
//!   member that NACKs again a datagram already resent to it gets it again
//!   and its NACK goes upstream too ([`McasterCounters::nack_repeats`]): with
//!   a cluster key, a cached copy whose counter fell out of the member's
//!   replay window can never be accepted, and only the sender can seal a
//!   fresh one. See `docs/mcaster.md`, "NACK aggregation".
//!
//! Bad input never panics and never grows memory without bound: malformed
//! control messages, relay packets for unknown groups or from non-members,
//! packets already relayed, and our own class D copies looped back are
//! dropped and counted ([`McasterCounters::dropped`]); groups, members per
//! group and group names are bounded ([`McasterConfig`], [`MAX_NAME_LEN`](crate::mcaster_reg::MAX_NAME_LEN)),
//! and joins beyond a bound are answered `NEG_JOIN`.

mod core;

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod nack_tests;
#[cfg(test)]
mod ring_tests;
#[cfg(test)]
mod tests;

pub use self::core::{
    GroupInfo, Mcaster, McasterConfig, McasterCounters, McasterEvent, DEFAULT_MAX_GROUPS,
    DEFAULT_MAX_MEMBERS, DEFAULT_MEMBER_TTL, MAX_PENDING, MAX_RESENT_TO, MAX_RING_SOURCES,
};
