//! The RMTP middle layer for a relay (seed 000, section 6.1), as a sans-IO
//! component for the mcaster: a small cache of the sequenced data it
//! forwarded, and a NACK table that aggregates NACKs from its members.
//!
//! The relay feeds [`NackCache::handle`] every rmcast packet it is about
//! to forward for a group (decoded, with the original sender from the
//! header) and gets a [`NackCacheDecision`]:
//!
//! - **Data** is cached (bounded by packets and bytes, oldest evicted) and
//!   forwarded unchanged. If NACK-table entries wait for it, they are
//!   deleted and `waiting` names the nodes that asked (the relay may
//!   restrict a retransmission to them; forwarding it to everyone is also
//!   correct).
//! - **A NACK** from member `M`: every sequence the cache holds is resent
//!   to `M` alone from the cache ([`Resend`], a retransmission as if from
//!   the original sender). For the others, the NACK table decides: if an
//!   entry for the sequence is younger than [`NackCacheConfig::nack_timeout`],
//!   `M` joins its waiters and the sequence is not forwarded (aggregation);
//!   otherwise the entry is created (or refreshed) and the sequence is
//!   forwarded towards the sender. The NACK is forwarded unchanged, trimmed
//!   to the sequences still needed ([`Forward::Replace`]), or not at all.
//!   As in 6.1, it is the receivers' job to NACK again when a retransmission
//!   does not come: an entry times out, and the next NACK goes upstream.
//! - **Obsolete** notices clear the NACK-table entries they cover
//!   (`waiting` names their waiters).
//! - Everything else is forwarded unchanged.
//!
//! Timed data is resent from the cache only with its time-to-live reduced
//! by the time it spent in the cache, and not at all once it ran out, so a
//! relay never makes a receiver deliver a timed parcel late.

use super::packet::{Data, Envelope, Nack, RmcastPacket};
use crate::id::{Incarnation, NodeId};
use crate::time::Instant;
use crate::wire::{DropCounters, MAX_MESSAGE};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// NACK cache settings (defaults for a LAN mcaster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NackCacheConfig {
    /// Most data packets cached. Default 1024.
    pub cache_packets: usize,
    /// Most payload bytes cached. Default 2 MiB.
    pub cache_bytes: usize,
    /// Most NACK-table entries (one per missing sequence); when full, NACKs
    /// for new sequences are forwarded without an entry. Default 4096.
    pub nack_entries: usize,
    /// Most waiters per entry. Default 64.
    pub waiters_per_entry: usize,
    /// Lifetime of a NACK-table entry: NACKs for the same sequence within
    /// it are aggregated, a later one goes upstream again. Default 20 ms
    /// (the receivers' default NACK retry).
    pub nack_timeout: Duration,
    /// Most sequences one NACK may name for the relay to process it; wider
    /// NACKs are forwarded unchanged. Default 4096.
    pub max_nack_span: u64,
}

impl Default for NackCacheConfig {
    fn default() -> Self {
        NackCacheConfig {
            cache_packets: 1024,
            cache_bytes: 2 << 20,
            nack_entries: 4096,
            waiters_per_entry: 64,
            nack_timeout: Duration::from_millis(20),
            max_nack_span: 4096,
        }
    }
}

/// What to do with a packet besides forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// Forward the packet as received.
    Unchanged,
    /// Forward this packet instead (a NACK trimmed to what must go
    /// upstream).
    Replace(Envelope),
    /// Do not forward it (a NACK answered from the cache or aggregated).
    Drop,
}

/// A cached packet to send to one node, with `from` and `from_incarnation`
/// (the original sender) in the header and the relayed flag set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resend {
    /// The node that asked.
    pub to: NodeId,
    /// The stream's sender.
    pub from: NodeId,
    /// Its incarnation.
    pub from_incarnation: Incarnation,
    /// The packet (a [`RmcastPacket::Data`] retransmission).
    pub packet: Envelope,
}

/// The NACK cache's decision for one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NackCacheDecision {
    /// Whether and what to forward.
    pub forward: Forward,
    /// Packets to send from the cache.
    pub resend: Vec<Resend>,
    /// For data (or an obsolete notice): the nodes whose NACKs it answers,
    /// in address order.
    pub waiting: Vec<NodeId>,
}

impl NackCacheDecision {
    fn unchanged() -> NackCacheDecision {
        NackCacheDecision {
            forward: Forward::Unchanged,
            resend: Vec::new(),
            waiting: Vec::new(),
        }
    }
}

/// NACK cache counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NackCacheStats {
    /// Data packets cached.
    pub cached: u64,
    /// Cached packets evicted by the limits.
    pub evicted: u64,
    /// NACKs handled.
    pub nacks: u64,
    /// NACKs forwarded (whole or trimmed).
    pub nacks_forwarded: u64,
    /// NACKs not forwarded (answered from the cache or aggregated).
    pub nacks_absorbed: u64,
    /// Sequences resent from the cache.
    pub cache_hits: u64,
    /// Sequences whose NACK joined a live entry instead of going upstream.
    pub aggregated: u64,
    /// Retransmissions (or obsolete notices) that answered waiting entries.
    pub answered: u64,
    /// Dropped or unprocessed packets, by kind.
    pub drops: DropCounters,
}

/// (group, sender, sender incarnation, sequence).
type Key = (NodeId, NodeId, Incarnation, u64);

#[derive(Debug)]
struct Cached {
    data: Data,
    at: Instant,
    order: u64,
}

#[derive(Debug)]
struct Entry {
    stamp: Instant,
    waiters: BTreeSet<NodeId>,
}

/// NACK aggregation and a retransmission cache for a relay. See the
/// [module docs](self).
#[derive(Debug)]
pub struct NackCache {
    config: NackCacheConfig,
    cache: BTreeMap<Key, Cached>,
    order: BTreeMap<u64, Key>,
    next_order: u64,
    bytes: usize,
    entries: BTreeMap<Key, Entry>,
    by_stamp: BTreeSet<(Instant, Key)>,
    stats: NackCacheStats,
}

impl NackCache {
    /// An empty cache and NACK table.
    pub fn new(config: NackCacheConfig) -> Self {
        NackCache {
            config,
            cache: BTreeMap::new(),
            order: BTreeMap::new(),
            next_order: 0,
            bytes: 0,
            entries: BTreeMap::new(),
            by_stamp: BTreeSet::new(),
            stats: NackCacheStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &NackCacheStats {
        &self.stats
    }

    /// Data packets cached.
    pub fn cached_packets(&self) -> usize {
        self.cache.len()
    }

    /// Their payload bytes.
    pub fn cached_bytes(&self) -> usize {
        self.bytes
    }

    /// Live NACK-table entries.
    pub fn nack_entries(&self) -> usize {
        self.entries.len()
    }

    /// Handles one packet the relay is about to forward for `envelope.group`,
    /// from `from` (the header's source) in its life `from_incarnation`.
    pub fn handle(
        &mut self,
        now: Instant,
        from: NodeId,
        from_incarnation: Incarnation,
        envelope: &Envelope,
    ) -> NackCacheDecision {
        self.expire(now);
        let group = envelope.group;
        match &envelope.packet {
            RmcastPacket::Data(d) => {
                if d.check(MAX_MESSAGE).is_err() {
                    self.stats.drops.record_kind("absurd_data");
                    return NackCacheDecision::unchanged();
                }
                let key = (group, from, from_incarnation, d.seq);
                self.insert(now, key, d.clone());
                let mut decision = NackCacheDecision::unchanged();
                if let Some(e) = self.remove_entry(&key) {
                    self.stats.answered += 1;
                    decision.waiting = e.waiters.into_iter().collect();
                }
                decision
            }
            RmcastPacket::Obsolete(o) => {
                let lo = (group, from, from_incarnation, o.from);
                let hi = (group, from, from_incarnation, o.to);
                let keys: Vec<Key> = if o.from < o.to {
                    self.entries.range(lo..hi).map(|(k, _)| *k).collect()
                } else {
                    Vec::new()
                };
                let mut waiting = BTreeSet::new();
                for k in keys {
                    if let Some(e) = self.remove_entry(&k) {
                        self.stats.answered += 1;
                        waiting.extend(e.waiters);
                    }
                }
                NackCacheDecision {
                    forward: Forward::Unchanged,
                    resend: Vec::new(),
                    waiting: waiting.into_iter().collect(),
                }
            }
            RmcastPacket::Nack(n) => self.on_nack(now, group, from, n),
            _ => NackCacheDecision::unchanged(),
        }
    }

    fn on_nack(
        &mut self,
        now: Instant,
        group: NodeId,
        from: NodeId,
        n: &Nack,
    ) -> NackCacheDecision {
        if !n.is_well_formed() {
            self.stats.drops.record_kind("malformed_nack");
            return NackCacheDecision {
                forward: Forward::Drop,
                resend: Vec::new(),
                waiting: Vec::new(),
            };
        }
        let span: u64 = n.ranges.iter().map(|(a, b)| b - a).sum();
        if span > self.config.max_nack_span {
            self.stats.drops.record_kind("nack_too_wide");
            return NackCacheDecision::unchanged();
        }
        self.stats.nacks += 1;
        let mut resend = Vec::new();
        let mut upstream: Vec<u64> = Vec::new();
        for seq in n.seqs() {
            let key = (group, n.sender, n.sender_incarnation, seq);
            if let Some(d) = self.fresh_copy(now, &key) {
                self.stats.cache_hits += 1;
                resend.push(Resend {
                    to: from,
                    from: n.sender,
                    from_incarnation: n.sender_incarnation,
                    packet: Envelope {
                        group,
                        packet: RmcastPacket::Data(d),
                    },
                });
                continue;
            }
            let max_waiters = self.config.waiters_per_entry;
            if let Some(e) = self.entries.get_mut(&key) {
                // A live entry: the NACK already went upstream.
                if e.waiters.len() < max_waiters {
                    e.waiters.insert(from);
                }
                self.stats.aggregated += 1;
                continue;
            }
            if self.entries.len() < self.config.nack_entries {
                self.entries.insert(
                    key,
                    Entry {
                        stamp: now,
                        waiters: BTreeSet::from([from]),
                    },
                );
                self.by_stamp.insert((now, key));
            } else {
                self.stats.drops.record_kind("nack_table_full");
            }
            upstream.push(seq);
        }
        let total = span as usize;
        let forward = if upstream.is_empty() {
            self.stats.nacks_absorbed += 1;
            Forward::Drop
        } else if upstream.len() == total {
            self.stats.nacks_forwarded += 1;
            Forward::Unchanged
        } else {
            self.stats.nacks_forwarded += 1;
            let mut ranges: Vec<(u64, u64)> = Vec::new();
            for x in upstream {
                match ranges.last_mut() {
                    Some((_, end)) if *end == x => *end = x + 1,
                    _ => ranges.push((x, x + 1)),
                }
            }
            // Trimming never adds ranges: at most as many as the NACK had
            // plus one per cached or aggregated hole, capped by the format.
            ranges.truncate(super::packet::MAX_NACK_RANGES);
            Forward::Replace(Envelope {
                group,
                packet: RmcastPacket::Nack(Nack {
                    ranges,
                    ..n.clone()
                }),
            })
        };
        NackCacheDecision {
            forward,
            resend,
            waiting: Vec::new(),
        }
    }

    /// A copy of a cached packet marked as a retransmission, with a timed
    /// parcel's time-to-live reduced by its time in the cache; `None` if
    /// not cached or run out.
    fn fresh_copy(&self, now: Instant, key: &Key) -> Option<Data> {
        let c = self.cache.get(key)?;
        let mut d = c.data.clone();
        d.retransmission = true;
        if let Some(ttl) = d.ttl_ms {
            let left = u128::from(ttl) * 1000;
            let waited = now.saturating_duration_since(c.at).as_micros();
            let rest_ms = left.saturating_sub(waited) / 1000;
            if rest_ms == 0 {
                return None;
            }
            d.ttl_ms = Some(u32::try_from(rest_ms).unwrap_or(u32::MAX));
        }
        Some(d)
    }

    fn insert(&mut self, now: Instant, key: Key, data: Data) {
        if let Some(old) = self.cache.remove(&key) {
            self.order.remove(&old.order);
            self.bytes = self.bytes.saturating_sub(old.data.data.len());
        }
        let len = data.data.len();
        if len > self.config.cache_bytes || self.config.cache_packets == 0 {
            return;
        }
        while self.cache.len() >= self.config.cache_packets
            || self.bytes.saturating_add(len) > self.config.cache_bytes
        {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            if let Some(c) = self.cache.remove(&victim) {
                self.bytes = self.bytes.saturating_sub(c.data.data.len());
                self.stats.evicted += 1;
            }
        }
        let order = self.next_order;
        self.next_order += 1;
        self.order.insert(order, key);
        self.bytes += len;
        self.stats.cached += 1;
        self.cache.insert(
            key,
            Cached {
                data,
                at: now,
                order,
            },
        );
    }

    fn remove_entry(&mut self, key: &Key) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.by_stamp.remove(&(e.stamp, *key));
        Some(e)
    }

    /// Deletes NACK-table entries older than the timeout.
    fn expire(&mut self, now: Instant) {
        while let Some(&(stamp, key)) = self.by_stamp.first() {
            if stamp + self.config.nack_timeout > now {
                break;
            }
            self.by_stamp.remove(&(stamp, key));
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::Bytes;

    fn group() -> NodeId {
        NodeId::v4(239, 1, 1, 1, 7000)
    }
    fn sender() -> NodeId {
        NodeId::v4(10, 0, 0, 1, 7000)
    }
    fn member(i: u8) -> NodeId {
        NodeId::v4(10, 0, 0, 10 + i, 7000)
    }
    fn inc() -> Incarnation {
        Incarnation::from_parts(5, [1; 10])
    }
    fn data(seq: u64, ttl_ms: Option<u32>) -> Envelope {
        Envelope {
            group: group(),
            packet: RmcastPacket::Data(Data {
                seq,
                parcel: seq,
                index: 0,
                count: 1,
                len: 3,
                ttl_ms,
                retransmission: false,
                data: Bytes(vec![seq as u8; 3]),
            }),
        }
    }
    fn nack(ranges: Vec<(u64, u64)>) -> Envelope {
        Envelope {
            group: group(),
            packet: RmcastPacket::Nack(Nack {
                sender: sender(),
                sender_incarnation: inc(),
                epoch: 1,
                ranges,
            }),
        }
    }
    fn ms(x: u64) -> Instant {
        Instant::from_millis(x)
    }

    #[test]
    fn cached_sequences_are_answered_locally_and_trimmed() {
        let mut r = NackCache::new(NackCacheConfig::default());
        for seq in [1, 2, 4] {
            let d = r.handle(ms(0), sender(), inc(), &data(seq, None));
            assert_eq!(d.forward, Forward::Unchanged);
        }
        assert_eq!(r.cached_packets(), 3);
        // Member 1 misses 1..5: 1, 2 and 4 come from the cache, 3 goes up.
        let m = member(1);
        let d = r.handle(ms(1), m, inc(), &nack(vec![(1, 5)]));
        let resent: Vec<u64> = d
            .resend
            .iter()
            .map(|x| match &x.packet.packet {
                RmcastPacket::Data(d) => {
                    assert!(d.retransmission);
                    d.seq
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(resent, vec![1, 2, 4]);
        assert!(d.resend.iter().all(|x| x.to == m && x.from == sender()));
        match d.forward {
            Forward::Replace(env) => assert_eq!(env, nack(vec![(3, 4)])),
            other => panic!("{other:?}"),
        }
        // All cached: nothing goes upstream.
        let d = r.handle(ms(2), member(2), inc(), &nack(vec![(1, 3)]));
        assert_eq!(d.forward, Forward::Drop);
        assert_eq!(d.resend.len(), 2);
        assert_eq!(r.stats().cache_hits, 5);
    }

    #[test]
    fn nacks_are_aggregated_until_the_entry_times_out() {
        let mut r = NackCache::new(NackCacheConfig::default());
        let d = r.handle(ms(0), member(1), inc(), &nack(vec![(7, 8)]));
        assert_eq!(d.forward, Forward::Unchanged);
        // A second member within the timeout: aggregated, not forwarded.
        let d = r.handle(ms(5), member(2), inc(), &nack(vec![(7, 8)]));
        assert_eq!(d.forward, Forward::Drop);
        assert_eq!(r.stats().aggregated, 1);
        // The retransmission passes: both waiters, entry deleted.
        let d = r.handle(ms(6), sender(), inc(), &data(7, None));
        assert_eq!(d.waiting, vec![member(1), member(2)]);
        assert_eq!(r.nack_entries(), 0);
        // Another loss of 8; the entry times out (20 ms) and the next NACK
        // goes upstream again (6.1: the receivers re-NACK).
        assert_eq!(
            r.handle(ms(10), member(1), inc(), &nack(vec![(8, 9)]))
                .forward,
            Forward::Unchanged
        );
        assert_eq!(
            r.handle(ms(29), member(1), inc(), &nack(vec![(8, 9)]))
                .forward,
            Forward::Drop
        );
        assert_eq!(
            r.handle(ms(31), member(1), inc(), &nack(vec![(8, 9)]))
                .forward,
            Forward::Unchanged
        );
        assert_eq!(r.stats().nacks_forwarded, 3);
        assert_eq!(r.stats().nacks_absorbed, 2);
    }

    #[test]
    fn other_incarnations_and_groups_do_not_mix() {
        let mut r = NackCache::new(NackCacheConfig::default());
        r.handle(ms(0), sender(), inc(), &data(1, None));
        let other = Incarnation::from_parts(6, [1; 10]);
        let mut n = nack(vec![(1, 2)]);
        if let RmcastPacket::Nack(x) = &mut n.packet {
            x.sender_incarnation = other;
        }
        let d = r.handle(ms(1), member(1), inc(), &n);
        assert!(d.resend.is_empty());
        assert_eq!(d.forward, Forward::Unchanged);
        let mut n = nack(vec![(1, 2)]);
        n.group = NodeId::v4(239, 9, 9, 9, 1);
        assert!(r.handle(ms(1), member(1), inc(), &n).resend.is_empty());
    }

    #[test]
    fn timed_data_is_resent_with_less_time_or_not_at_all() {
        let mut r = NackCache::new(NackCacheConfig::default());
        r.handle(ms(0), sender(), inc(), &data(1, Some(50)));
        let d = r.handle(ms(20), member(1), inc(), &nack(vec![(1, 2)]));
        match &d.resend[0].packet.packet {
            RmcastPacket::Data(x) => assert_eq!(x.ttl_ms, Some(30)),
            other => panic!("{other:?}"),
        }
        // Run out: the NACK goes to the sender (which answers Obsolete).
        let d = r.handle(ms(50), member(1), inc(), &nack(vec![(1, 2)]));
        assert!(d.resend.is_empty());
        assert_eq!(d.forward, Forward::Unchanged);
        let obsolete = Envelope {
            group: group(),
            packet: RmcastPacket::Obsolete(super::super::packet::Obsolete { from: 0, to: 5 }),
        };
        let d = r.handle(ms(51), sender(), inc(), &obsolete);
        assert_eq!(d.waiting, vec![member(1)]);
        assert_eq!(r.nack_entries(), 0);
    }

    #[test]
    fn bounded_cache_and_table_and_bad_nacks() {
        let config = NackCacheConfig {
            cache_packets: 4,
            cache_bytes: 10,
            nack_entries: 2,
            max_nack_span: 100,
            ..NackCacheConfig::default()
        };
        let mut r = NackCache::new(config);
        for seq in 0..10 {
            r.handle(ms(0), sender(), inc(), &data(seq, None));
            assert!(r.cached_packets() <= 4);
            assert!(r.cached_bytes() <= 10);
        }
        // 3 bytes each: at most 3 fit in 10 bytes; the newest are kept.
        assert_eq!(r.cached_packets(), 3);
        assert!(r.stats().evicted >= 7);
        let d = r.handle(ms(1), member(1), inc(), &nack(vec![(0, 4)]));
        assert!(d.resend.is_empty());
        assert_eq!(r.nack_entries(), 2);
        assert_eq!(r.stats().drops.get("nack_table_full"), 2);
        // Malformed and absurdly wide NACKs.
        let d = r.handle(ms(1), member(1), inc(), &nack(vec![(5, 5)]));
        assert_eq!(d.forward, Forward::Drop);
        let d = r.handle(ms(1), member(1), inc(), &nack(vec![(0, u64::MAX)]));
        assert_eq!(d.forward, Forward::Unchanged);
        assert_eq!(r.stats().drops.get("malformed_nack"), 1);
        assert_eq!(r.stats().drops.get("nack_too_wide"), 1);
        // Absurd data is not cached.
        let mut bad = data(50, None);
        if let RmcastPacket::Data(d) = &mut bad.packet {
            d.count = 0;
        }
        r.handle(ms(1), sender(), inc(), &bad);
        assert_eq!(r.stats().drops.get("absurd_data"), 1);
    }
}
