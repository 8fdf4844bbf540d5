//! Bounded per-protocol queues that never block the receiver (seed 000,
//! section 1.2): when a queue is full, the producer removes the **oldest**
//! entry to make room, and the drop is counted (`"queue_full"`).
//!
//! [`BoundedQueue`] is the plain data structure. [`PacketQueue`] wraps it
//! for sharing between the socket's receive loop (the producer: the socket
//! actor, or the primary driver that reads the socket itself) and one
//! driver (the consumer, possibly on another thread): a mutex (never held
//! across an await, uncontended in practice since the actors usually run on
//! the same thread) and a "notified" flag so that the producer sends at
//! most one wake-up per batch, however many packets arrive before the
//! consumer runs.
//!
//! The primary driver's own protocols are delivered to its core directly,
//! without a queue (see [`crate::runtime`]); their queues only carry
//! packets that an interceptor delayed.

use crate::id::NodeId;
use crate::sansio::Incoming;
use crate::time::Instant;
use crate::wire::Header;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

/// A FIFO of at most `capacity` items that drops its oldest item when a new
/// one arrives while it is full.
#[derive(Debug, Clone)]
pub struct BoundedQueue<T> {
    items: VecDeque<T>,
    capacity: usize,
    dropped: u64,
}

impl<T> BoundedQueue<T> {
    /// An empty queue holding at most `capacity` items (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        BoundedQueue {
            items: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            dropped: 0,
        }
    }

    /// Appends `item`; if the queue was full, removes and returns the oldest
    /// item (counted in [`BoundedQueue::dropped`]).
    pub fn push(&mut self, item: T) -> Option<T> {
        let evicted = if self.items.len() >= self.capacity {
            self.dropped += 1;
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        evicted
    }

    /// Removes the oldest item.
    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// Removes and returns every item, oldest first.
    pub fn take_all(&mut self) -> VecDeque<T> {
        std::mem::take(&mut self.items)
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no item is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The most items the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many items were dropped to make room since the queue was created.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// One datagram that passed the wire checks and the inbound interceptors,
/// waiting in a protocol queue for its core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundPacket {
    /// The checked header.
    pub header: Header,
    /// The UDP address it came from (the relay, for a relayed packet).
    pub from: SocketAddr,
    /// When the socket received it.
    pub received_at: Instant,
    /// The datagram as received, then (under a key ring) the decrypted body.
    datagram: Vec<u8>,
    /// Bytes of `datagram` that arrived on the socket.
    sealed_len: usize,
    body: Range<usize>,
}

impl InboundPacket {
    /// A packet whose body is `datagram[body]` (the range is clamped to the
    /// datagram, so a bad range yields a short body, never a panic).
    pub fn new(
        header: Header,
        from: SocketAddr,
        received_at: Instant,
        datagram: Vec<u8>,
        body: Range<usize>,
    ) -> Self {
        let end = body.end.min(datagram.len());
        let start = body.start.min(end);
        InboundPacket {
            header,
            from,
            received_at,
            sealed_len: datagram.len(),
            datagram,
            body: start..end,
        }
    }

    /// A packet from a datagram the codec opened: its body is the
    /// datagram's own bytes when it travelled in the clear, or the
    /// decrypted copy (kept after the datagram, which stays as received
    /// for a relay to forward).
    #[allow(clippy::ptr_arg)] // borrowed or owned decides where the body goes
    pub fn opened(
        header: Header,
        from: SocketAddr,
        received_at: Instant,
        datagram: &[u8],
        body: &std::borrow::Cow<'_, [u8]>,
    ) -> Self {
        match body {
            std::borrow::Cow::Borrowed(b) => {
                let start = crate::wire::HEADER_LEN;
                Self::new(
                    header,
                    from,
                    received_at,
                    datagram.to_vec(),
                    start..start + b.len(),
                )
            }
            std::borrow::Cow::Owned(b) => {
                let mut all = Vec::with_capacity(datagram.len() + b.len());
                all.extend_from_slice(datagram);
                all.extend_from_slice(b);
                InboundPacket {
                    header,
                    from,
                    received_at,
                    sealed_len: datagram.len(),
                    body: datagram.len()..all.len(),
                    datagram: all,
                }
            }
        }
    }

    /// The encoded body.
    pub fn body(&self) -> &[u8] {
        &self.datagram[self.body.clone()]
    }

    /// The whole datagram as received (header, body, trailer), e.g. for an
    /// mcaster relaying it unchanged.
    pub fn datagram(&self) -> &[u8] {
        &self.datagram[..self.sealed_len]
    }

    /// The original sender named in the header.
    pub fn source(&self) -> NodeId {
        self.header.source
    }

    /// The view a core gets in [`crate::sansio::Core::handle_packet`].
    pub fn incoming(&self) -> Incoming<'_> {
        let peer = NodeId::new(self.from);
        Incoming {
            source: self.header.source,
            source_incarnation: self.header.source_incarnation,
            destination: self.header.destination,
            protocol: self.header.protocol,
            relayed: self.header.relayed || peer != self.header.source,
            body: self.body(),
            peer,
            datagram: self.datagram(),
        }
    }
}

/// What happened when the producer pushed into a [`PacketQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    /// The oldest packet was dropped to make room.
    pub evicted: bool,
    /// The consumer has not been told about waiting packets yet: the
    /// producer should wake it (exactly once until it takes the batch).
    pub wake: bool,
}

#[derive(Debug)]
struct Shared {
    queue: BoundedQueue<InboundPacket>,
    notified: bool,
}

/// A [`BoundedQueue`] of [`InboundPacket`]s shared between the socket actor
/// and the driver of one protocol.
#[derive(Debug)]
pub struct PacketQueue {
    shared: Mutex<Shared>,
}

impl PacketQueue {
    /// An empty queue of at most `capacity` packets.
    pub fn new(capacity: usize) -> Self {
        PacketQueue {
            shared: Mutex::new(Shared {
                queue: BoundedQueue::new(capacity),
                notified: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock cannot leave the queue inconsistent
        // (every operation is a single VecDeque call), so poisoning is ignored.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Producer side: appends `packet`, dropping the oldest if full.
    pub fn push(&self, packet: InboundPacket) -> PushOutcome {
        let mut s = self.lock();
        let evicted = s.queue.push(packet).is_some();
        let wake = !s.notified;
        s.notified = true;
        PushOutcome { evicted, wake }
    }

    /// Consumer side: takes every waiting packet, oldest first, and re-arms
    /// the wake-up for the next push.
    pub fn take_all(&self) -> VecDeque<InboundPacket> {
        let mut s = self.lock();
        s.notified = false;
        s.queue.take_all()
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether no packet is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most packets the queue holds.
    pub fn capacity(&self) -> usize {
        self.lock().queue.capacity()
    }

    /// Packets dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.lock().queue.dropped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Incarnation, ProtocolId};

    #[test]
    fn drops_oldest_when_full() {
        let mut q = BoundedQueue::new(3);
        for i in 0..3 {
            assert_eq!(q.push(i), None);
        }
        assert_eq!(q.push(3), Some(0));
        assert_eq!(q.push(4), Some(1));
        assert_eq!(q.dropped(), 2);
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.take_all().into_iter().collect::<Vec<_>>(), vec![3, 4]);
        assert!(q.is_empty());
        assert_eq!(q.capacity(), 3);
    }

    #[test]
    fn zero_capacity_means_one() {
        let mut q = BoundedQueue::new(0);
        assert_eq!(q.push('a'), None);
        assert_eq!(q.push('b'), Some('a'));
        assert_eq!(q.pop(), Some('b'));
    }

    fn packet(n: u8) -> InboundPacket {
        let header = Header {
            protocol: ProtocolId::Test,
            relayed: false,
            source: NodeId::v4(127, 0, 0, 1, 1),
            source_incarnation: Incarnation::NIL,
            destination: NodeId::v4(127, 0, 0, 1, 2),
        };
        InboundPacket::new(
            header,
            "127.0.0.1:1".parse().unwrap(),
            Instant::ZERO,
            vec![n, n],
            1..99,
        )
    }

    #[test]
    fn packet_queue_wakes_once_per_batch_and_drops_oldest() {
        let q = PacketQueue::new(2);
        assert!(q.push(packet(1)).wake);
        assert!(!q.push(packet(2)).wake);
        let o = q.push(packet(3));
        assert!(o.evicted && !o.wake);
        assert_eq!(q.dropped(), 1);
        let batch: Vec<u8> = q.take_all().iter().map(|p| p.body()[0]).collect();
        assert_eq!(batch, vec![2, 3]);
        assert!(q.is_empty());
        assert!(q.push(packet(4)).wake);
        assert_eq!(q.capacity(), 2);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn body_range_is_clamped() {
        let p = packet(7);
        assert_eq!(p.body(), &[7]);
        assert_eq!(p.incoming().body, &[7]);
        assert_eq!(p.datagram().len(), 2);
    }
}
