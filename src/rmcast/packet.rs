//! The rmcast wire format: every datagram with [`ProtocolId::Rmcast`] has an
//! [`Envelope`] body (bincode via [`wire::encode_body`] /
//! [`wire::decode_body`]) that names the group and carries one
//! [`RmcastPacket`].
//!
//! The sender of a stream is always the packet header's source (with its
//! incarnation); receivers name the stream they mean by the sender's
//! incarnation (and, in multicast NACKs, the sender's address).
//!
//! [`ProtocolId::Rmcast`]: crate::id::ProtocolId::Rmcast

use crate::id::{Incarnation, NodeId};
use crate::rpc::blast::{MAX_FRAGMENTS, MIN_FRAGMENT_PAYLOAD};
use crate::rpc::Bytes;
use crate::wire::{self, BodyError, EncodeError, MAX_BODY, MAX_MESSAGE};
use serde::{Deserialize, Serialize};

/// Upper bound on the bytes an encoded [`Envelope`] carrying a
/// [`RmcastPacket::Data`] adds to its payload: the group address (at most 20
/// bytes for IPv6), the variant tags, the varint header fields (at most 9
/// bytes per `u64`, 5 per `u32`) and the payload's length prefix.
pub const DATA_OVERHEAD: usize = 72;

/// Largest fragment payload: a fragment must fit in one datagram body.
pub const MAX_FRAGMENT_PAYLOAD: usize = MAX_BODY - DATA_OVERHEAD;

/// Most ranges in one [`Nack`] (a receiver splits longer lists).
pub const MAX_NACK_RANGES: usize = 64;

/// The body of every rmcast datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The group (class D address) the packet belongs to, so a node in
    /// several groups can route unicast rmcast packets to the right core.
    pub group: NodeId,
    /// The packet.
    pub packet: RmcastPacket,
}

impl Envelope {
    /// Encodes the envelope as a datagram body.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let body = wire::encode_body(self)?;
        if body.len() > MAX_BODY {
            return Err(EncodeError::TooLarge {
                len: body.len(),
                limit: MAX_BODY,
            });
        }
        Ok(body)
    }

    /// Decodes a datagram body (bounded by [`wire::decode_body`]).
    pub fn decode(body: &[u8]) -> Result<Envelope, BodyError> {
        wire::decode_body(body)
    }

    /// The group an encoded envelope names, read from the front of `body`
    /// without decoding (or copying) the packet: how a node in several
    /// groups picks the core for a datagram. `None` if `body` is longer
    /// than [`MAX_BODY`] or does not start with a valid address; the rest
    /// is left for the core's full decode to check.
    pub fn peek_group(body: &[u8]) -> Option<NodeId> {
        if body.len() > MAX_BODY {
            return None;
        }
        let config = bincode::config::standard().with_limit::<MAX_BODY>();
        bincode::serde::decode_from_slice::<NodeId, _>(body, config)
            .ok()
            .map(|(group, _)| group)
    }
}

/// One rmcast packet. Who sends it to whom:
///
/// | variant | from | to |
/// |---|---|---|
/// | `Data` | sender | group |
/// | `BestEffort` | sender | group |
/// | `Sync` | sender | group |
/// | `Obsolete` | sender | group |
/// | `Nack` | receiver | group |
/// | `Hello` | receiver | sender |
/// | `Status` | receiver | sender |
/// | `Start` | sender | receiver |
/// | `NotReceiver` | sender | receiver |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RmcastPacket {
    /// One fragment of a sequenced (reliable or timed) parcel, first
    /// transmission or retransmission.
    Data(Data),
    /// One fragment of a best-effort parcel (unsequenced, never resent).
    BestEffort(BestEffortFragment),
    /// "I have transmitted every sequence below `next`": sent while some
    /// receiver has not acknowledged everything, so tail losses are found.
    Sync(Sync),
    /// "Sequences `from..to` are purged (expired timed parcels): skip them."
    Obsolete(Obsolete),
    /// A receiver is missing these sequences of `sender`'s stream.
    Nack(Nack),
    /// A receiver's first word on a stream: "what is my start, here is my
    /// window".
    Hello(Hello),
    /// A receiver's cumulative acknowledgement and MAB.
    Status(Status),
    /// The sender's answer to a `Hello`: where the receiver's stream starts.
    Start(Start),
    /// The sender's answer to a receiver it does not count as one.
    NotReceiver(NotReceiver),
}

/// One fragment of a sequenced parcel. A parcel of `count` fragments holds
/// the sequences `seq - index .. seq - index + count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    /// This fragment's sequence number in the sender's stream.
    pub seq: u64,
    /// The parcel (per sender incarnation, shared with best effort).
    pub parcel: u64,
    /// Which fragment, `0..count`.
    pub index: u32,
    /// Fragments in the parcel.
    pub count: u32,
    /// Bytes in the whole parcel.
    pub len: u32,
    /// Timed parcels: milliseconds left before the parcel is obsolete, as
    /// the sender computed it when it (re)transmitted this fragment,
    /// rounded down. `None`: reliable.
    pub ttl_ms: Option<u32>,
    /// A retransmission (answering a NACK) rather than the first send.
    pub retransmission: bool,
    /// The fragment's bytes.
    pub data: Bytes,
}

/// One fragment of a best-effort parcel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BestEffortFragment {
    /// The parcel (per sender incarnation, shared with sequenced parcels).
    pub parcel: u64,
    /// Which fragment, `0..count`.
    pub index: u32,
    /// Fragments in the parcel.
    pub count: u32,
    /// Bytes in the whole parcel.
    pub len: u32,
    /// The fragment's bytes.
    pub data: Bytes,
}

/// The sender's transmission point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sync {
    /// Every sequence below this was transmitted (or is obsolete).
    pub next: u64,
}

/// A purged range of the sender's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Obsolete {
    /// First purged sequence.
    pub from: u64,
    /// One past the last purged sequence.
    pub to: u64,
}

/// A negative acknowledgement, multicast so that other receivers missing
/// the same sequences wait (suppression) and relays can aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    /// The stream's sender.
    pub sender: NodeId,
    /// The stream's sender incarnation.
    pub sender_incarnation: Incarnation,
    /// The NACKing receiver's handshake epoch (see [`Hello::epoch`]).
    pub epoch: u64,
    /// Missing `[from, to)` ranges, ascending, at most [`MAX_NACK_RANGES`].
    pub ranges: Vec<(u64, u64)>,
}

impl Nack {
    /// Whether the ranges are well formed: at most [`MAX_NACK_RANGES`], each
    /// non-empty, ascending and disjoint.
    pub fn is_well_formed(&self) -> bool {
        if self.ranges.is_empty() || self.ranges.len() > MAX_NACK_RANGES {
            return false;
        }
        let mut prev_end = 0u64;
        for (i, &(from, to)) in self.ranges.iter().enumerate() {
            if from >= to || (i > 0 && from < prev_end) {
                return false;
            }
            prev_end = to;
        }
        true
    }

    /// Every sequence the NACK names (ranges are well formed).
    pub fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(|&(a, b)| a..b)
    }
}

/// A receiver's handshake request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender incarnation whose stream this is about.
    pub sender_incarnation: Incarnation,
    /// The receiver's handshake epoch for this stream: a counter unique in
    /// the receiver's life, new whenever the receiver starts the stream over
    /// (first contact, after the sender dropped it, after removing the
    /// sender from its set). A newer epoch from a receiver that the sender
    /// already heard gets a fresh start.
    pub epoch: u64,
    /// The receiver's window in packets: its first MAB is `start + window`.
    pub window: u32,
}

/// A receiver's advertisement: cumulative acknowledgement and MAB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The sender incarnation whose stream this is about.
    pub sender_incarnation: Incarnation,
    /// The receiver's handshake epoch.
    pub epoch: u64,
    /// Every sequence below this was received (or skipped as obsolete or
    /// not owed).
    pub next: u64,
    /// The maximum acceptable sequence (exclusive): the sender must not
    /// transmit a sequence at or above it.
    pub mab: u64,
}

/// The sender's answer to a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// The receiver incarnation this answers.
    pub receiver_incarnation: Incarnation,
    /// The epoch this answers.
    pub epoch: u64,
    /// The receiver is owed the sequenced parcels from this sequence on
    /// (always a parcel boundary).
    pub start: u64,
    /// The sender's transmission point ([`Sync::next`]).
    pub next: u64,
}

/// "You are not in my receiver set": the receiver drops the stream's state
/// and does not NACK it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotReceiver {
    /// The receiver incarnation this answers.
    pub receiver_incarnation: Incarnation,
    /// The epoch this answers.
    pub epoch: u64,
}

/// The checks every fragment header must pass, shared by [`Data`] and
/// [`BestEffortFragment`]: `Err` names the drop-counter kind.
pub(crate) fn check_fragment(
    index: u32,
    count: u32,
    len: u32,
    data_len: usize,
    max_parcel: usize,
) -> Result<(), &'static str> {
    let len = u64::from(len);
    if len > max_parcel.min(MAX_MESSAGE) as u64 {
        return Err("parcel_too_large");
    }
    if count == 0 || count > MAX_FRAGMENTS || index >= count {
        return Err("absurd_fragment_index");
    }
    // Every fragment but a lone one carries at least MIN_FRAGMENT_PAYLOAD
    // bytes of the parcel, which bounds the count by the length.
    let most = len.div_ceil(MIN_FRAGMENT_PAYLOAD as u64).max(1);
    if u64::from(count) > most {
        return Err("absurd_fragment_count");
    }
    if data_len > MAX_FRAGMENT_PAYLOAD || data_len as u64 > len {
        return Err("absurd_fragment_size");
    }
    if count == 1 && data_len as u64 != len {
        return Err("absurd_fragment_size");
    }
    if u64::from(count) * (MAX_FRAGMENT_PAYLOAD as u64) < len {
        return Err("absurd_fragment_count");
    }
    Ok(())
}

impl Data {
    /// Validates the header against `max_parcel`; `Err` names the drop kind.
    pub(crate) fn check(&self, max_parcel: usize) -> Result<(), &'static str> {
        check_fragment(
            self.index,
            self.count,
            self.len,
            self.data.len(),
            max_parcel,
        )?;
        // The parcel's sequences must exist: first = seq - index, and
        // first + count must not overflow.
        let first = self
            .seq
            .checked_sub(u64::from(self.index))
            .ok_or("absurd_fragment_index")?;
        first
            .checked_add(u64::from(self.count))
            .ok_or("absurd_fragment_index")?;
        Ok(())
    }

    /// The parcel's first sequence (header checked).
    pub fn first(&self) -> u64 {
        self.seq.saturating_sub(u64::from(self.index))
    }

    /// One past the parcel's last sequence (header checked).
    pub fn end(&self) -> u64 {
        self.first().saturating_add(u64::from(self.count))
    }
}

impl BestEffortFragment {
    /// Validates the header against `max_parcel`; `Err` names the drop kind.
    pub(crate) fn check(&self, max_parcel: usize) -> Result<(), &'static str> {
        check_fragment(
            self.index,
            self.count,
            self.len,
            self.data.len(),
            max_parcel,
        )
    }
}

/// Reassembles a parcel from its fragments in index order, checking that
/// they agree; `None` if they do not describe one whole parcel of `len`
/// bytes.
pub(crate) fn assemble<'a>(
    len: u32,
    count: u32,
    frags: impl Iterator<Item = (u32, u32, u32, &'a [u8])>,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len as usize);
    let mut expected = 0u32;
    for (index, c, l, data) in frags {
        if index != expected || c != count || l != len {
            return None;
        }
        expected += 1;
        out.extend_from_slice(data);
        if out.len() > len as usize {
            return None;
        }
    }
    (expected == count && out.len() == len as usize).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, SocketAddr};

    fn inc() -> Incarnation {
        Incarnation::from_parts(1, [0xff; 10])
    }

    #[test]
    fn worst_case_data_fits_overhead() {
        let group = NodeId::new(SocketAddr::new(
            Ipv6Addr::new(0xff0e, 1, 2, 3, 4, 5, 6, 7).into(),
            65535,
        ));
        let payload = vec![0xAB; MAX_FRAGMENT_PAYLOAD];
        let env = Envelope {
            group,
            packet: RmcastPacket::Data(Data {
                seq: u64::MAX,
                parcel: u64::MAX,
                index: u32::MAX,
                count: u32::MAX,
                len: u32::MAX,
                ttl_ms: Some(u32::MAX),
                retransmission: true,
                data: Bytes(payload),
            }),
        };
        let body = env.encode().expect("fits one datagram");
        assert!(body.len() <= MAX_BODY);
        assert!(body.len() - MAX_FRAGMENT_PAYLOAD <= DATA_OVERHEAD);
        assert_eq!(Envelope::decode(&body).unwrap(), env);
    }

    #[test]
    fn every_packet_roundtrips() {
        let group = NodeId::v4(239, 1, 2, 3, 7000);
        let packets = vec![
            RmcastPacket::BestEffort(BestEffortFragment {
                parcel: 3,
                index: 0,
                count: 1,
                len: 2,
                data: Bytes(vec![1, 2]),
            }),
            RmcastPacket::Sync(Sync { next: 9 }),
            RmcastPacket::Obsolete(Obsolete { from: 1, to: 4 }),
            RmcastPacket::Nack(Nack {
                sender: NodeId::v4(10, 0, 0, 1, 1),
                sender_incarnation: inc(),
                epoch: 2,
                ranges: vec![(1, 2), (5, 9)],
            }),
            RmcastPacket::Hello(Hello {
                sender_incarnation: inc(),
                epoch: 1,
                window: 256,
            }),
            RmcastPacket::Status(Status {
                sender_incarnation: inc(),
                epoch: 1,
                next: 10,
                mab: 266,
            }),
            RmcastPacket::Start(Start {
                receiver_incarnation: inc(),
                epoch: 1,
                start: 4,
                next: 10,
            }),
            RmcastPacket::NotReceiver(NotReceiver {
                receiver_incarnation: inc(),
                epoch: 1,
            }),
        ];
        for packet in packets {
            let env = Envelope { group, packet };
            let body = env.encode().unwrap();
            assert_eq!(Envelope::decode(&body).unwrap(), env);
        }
        assert!(Envelope::decode(&[0xff; 7]).is_err());
    }

    #[test]
    fn peek_group_reads_the_front_only() {
        let group = NodeId::v4(239, 1, 2, 3, 7000);
        let env = Envelope {
            group,
            packet: RmcastPacket::Sync(Sync { next: 9 }),
        };
        let body = env.encode().unwrap();
        assert_eq!(Envelope::peek_group(&body), Some(group));
        // A truncated packet still names its group; the core's decode
        // rejects it later.
        assert_eq!(Envelope::peek_group(&body[..body.len() - 1]), Some(group));
        assert_eq!(Envelope::peek_group(&[]), None);
        assert_eq!(Envelope::peek_group(&[0xff; 3]), None);
        assert_eq!(Envelope::peek_group(&vec![0u8; MAX_BODY + 1]), None);
    }

    #[test]
    fn fragment_checks() {
        let max = 1 << 20;
        assert_eq!(check_fragment(0, 1, 10, 10, max), Ok(()));
        assert_eq!(
            check_fragment(0, 1, 10, 9, max),
            Err("absurd_fragment_size")
        );
        assert_eq!(
            check_fragment(1, 1, 10, 10, max),
            Err("absurd_fragment_index")
        );
        assert_eq!(
            check_fragment(0, 0, 10, 10, max),
            Err("absurd_fragment_index")
        );
        assert_eq!(
            check_fragment(0, 3, 1000, 500, max),
            Err("absurd_fragment_count")
        );
        assert_eq!(
            check_fragment(0, 2, (max + 1) as u32, 500, max),
            Err("parcel_too_large")
        );
        assert_eq!(
            check_fragment(0, MAX_FRAGMENTS + 1, u32::MAX, 500, usize::MAX),
            Err("parcel_too_large")
        );
        assert_eq!(check_fragment(0, 2, 2000, 1000, max), Ok(()));
        let d = Data {
            seq: 2,
            parcel: 0,
            index: 3,
            count: 4,
            len: 4000,
            ttl_ms: None,
            retransmission: false,
            data: Bytes(vec![0; 1000]),
        };
        assert_eq!(d.check(max), Err("absurd_fragment_index"));
        let d = Data {
            seq: u64::MAX,
            index: 0,
            ..d
        };
        assert_eq!(d.check(max), Err("absurd_fragment_index"));
    }

    #[test]
    fn assemble_checks_agreement() {
        let a: &[u8] = &[1, 2];
        let b: &[u8] = &[3];
        assert_eq!(
            assemble(3, 2, [(0, 2, 3, a), (1, 2, 3, b)].into_iter()),
            Some(vec![1, 2, 3])
        );
        assert_eq!(assemble(3, 2, [(0, 2, 3, a)].into_iter()), None);
        assert_eq!(
            assemble(3, 2, [(0, 2, 3, a), (1, 2, 4, b)].into_iter()),
            None
        );
        assert_eq!(
            assemble(4, 2, [(0, 2, 4, a), (1, 2, 4, b)].into_iter()),
            None
        );
        assert_eq!(
            assemble(3, 2, [(1, 2, 3, a), (0, 2, 3, b)].into_iter()),
            None
        );
    }
}
