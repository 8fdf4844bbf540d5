//! The simulated network: per-link models and network faults (DESIGN.md
//! section 3).
//!
//! Every directed pair of nodes has a [`LinkConfig`] (the default one unless
//! [`crate::sim::Simulator::set_link`] overrode it). On top of the links sit
//! the network faults:
//!
//! - a symmetric **partition** into sets: two nodes can talk iff they are in
//!   the same set. Nodes that no set lists (including nodes added later)
//!   together form one extra set, "the rest". A new partition replaces the
//!   previous one.
//! - **one-way blocks**: datagrams from `from` to `to` are dropped, the other
//!   direction is untouched.
//! - **clogs**: all traffic into and out of a clogged node is *held*, not
//!   dropped, until the clog ends; then it continues with its normal
//!   latency (a congested switch port or a saturated NIC queue).
//!
//! Partitions and blocks are checked when a datagram is sent and again when
//! it arrives, so a cut also loses the datagrams in flight. Dropped datagrams
//! are counted at the intended receiver.

use crate::id::NodeId;
use crate::time::Instant;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The behaviour of one directed link.
///
/// Probabilities are in `[0, 1]` and are drawn independently per datagram
/// (per copy for corruption, truncation and reordering). Latency is uniform in
/// `[latency_min, latency_max]`, so any jitter already reorders datagrams;
/// `reorder` adds an extra uniform delay in `[0, reorder_delay]` to a
/// fraction of them.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    /// Smallest one-way latency.
    pub latency_min: Duration,
    /// Largest one-way latency.
    pub latency_max: Duration,
    /// Probability that a datagram is held back by an extra delay.
    pub reorder: f64,
    /// The largest extra delay of a reordered datagram.
    pub reorder_delay: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram arrives twice (each copy with its own
    /// latency, corruption and truncation).
    pub duplicate: f64,
    /// Probability that a copy has one to three random bits flipped.
    pub corrupt: f64,
    /// Probability that a copy is cut at a random shorter length.
    pub truncate: f64,
}

impl Default for LinkConfig {
    /// [`LinkConfig::lan`].
    fn default() -> Self {
        LinkConfig::lan()
    }
}

impl LinkConfig {
    /// A clean LAN link: 100 to 500 microseconds, no faults.
    pub fn lan() -> Self {
        LinkConfig {
            latency_min: Duration::from_micros(100),
            latency_max: Duration::from_micros(500),
            reorder: 0.0,
            reorder_delay: Duration::from_millis(5),
            loss: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            truncate: 0.0,
        }
    }

    /// A clean link with a fixed latency (no jitter, so FIFO).
    pub fn fixed(latency: Duration) -> Self {
        LinkConfig {
            latency_min: latency,
            latency_max: latency,
            ..LinkConfig::lan()
        }
    }

    /// This link with latency uniform in `[min, max]`.
    pub fn with_latency(mut self, min: Duration, max: Duration) -> Self {
        self.latency_min = min;
        self.latency_max = max;
        self
    }

    /// This link with loss probability `p`.
    pub fn with_loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }

    /// This link with duplication probability `p`.
    pub fn with_duplicate(mut self, p: f64) -> Self {
        self.duplicate = p;
        self
    }

    /// This link with probability `p` of an extra delay up to `delay`.
    pub fn with_reorder(mut self, p: f64, delay: Duration) -> Self {
        self.reorder = p;
        self.reorder_delay = delay;
        self
    }

    /// This link with corruption probability `p`.
    pub fn with_corrupt(mut self, p: f64) -> Self {
        self.corrupt = p;
        self
    }

    /// This link with truncation probability `p`.
    pub fn with_truncate(mut self, p: f64) -> Self {
        self.truncate = p;
        self
    }

    /// Checks that probabilities are in `[0, 1]` and `min <= max`.
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("reorder", self.reorder),
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
            ("truncate", self.truncate),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("link {name} probability {p} is not in [0, 1]"));
            }
        }
        if self.latency_min > self.latency_max {
            return Err(format!(
                "link latency_min {:?} exceeds latency_max {:?}",
                self.latency_min, self.latency_max
            ));
        }
        Ok(())
    }
}

/// True with probability `p`; draws from `rng` only when `0 < p < 1`, so a
/// disabled fault does not shift the random stream.
pub(crate) fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    if p <= 0.0 {
        false
    } else if p >= 1.0 {
        true
    } else {
        rng.random::<f64>() < p
    }
}

/// A uniform duration in `[min, max]` (draws nothing when they are equal).
pub(crate) fn uniform(rng: &mut ChaCha8Rng, min: Duration, max: Duration) -> Duration {
    let lo = u64::try_from(min.as_micros()).unwrap_or(u64::MAX);
    let hi = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
    if hi <= lo {
        return Duration::from_micros(lo);
    }
    Duration::from_micros(rng.random_range(lo..=hi))
}

/// Flips one to three distinct random bits of `bytes` (nothing if empty).
pub(crate) fn corrupt(rng: &mut ChaCha8Rng, bytes: &mut [u8]) {
    if bytes.is_empty() {
        return;
    }
    let flips = rng.random_range(1..=3usize);
    let mut chosen = [usize::MAX; 3];
    let mut k = 0;
    // Distinct bits, so the copy is always really changed (a byte has 8 bits,
    // so three distinct ones always exist).
    while k < flips {
        let bit = rng.random_range(0..bytes.len() * 8);
        if !chosen[..k].contains(&bit) {
            chosen[k] = bit;
            k += 1;
            bytes[bit / 8] ^= 1 << (bit % 8);
        }
    }
}

/// Cuts `bytes` at a random strictly shorter length (nothing if empty).
pub(crate) fn truncate(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    let len = rng.random_range(0..bytes.len());
    bytes.truncate(len);
}

/// Links, partitions, blocks, clogs and multicast group memberships.
#[derive(Debug, Default)]
pub(crate) struct Network {
    pub(crate) default_link: LinkConfig,
    links: BTreeMap<(NodeId, NodeId), LinkConfig>,
    /// Set index of every listed node while a partition is in force.
    partition: Option<BTreeMap<NodeId, usize>>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    clogs: BTreeMap<NodeId, Instant>,
    groups: BTreeMap<NodeId, BTreeSet<NodeId>>,
}

impl Network {
    pub(crate) fn new(default_link: LinkConfig) -> Self {
        Network {
            default_link,
            ..Network::default()
        }
    }

    /// The model of the link `from -> to`.
    pub(crate) fn link(&self, from: NodeId, to: NodeId) -> &LinkConfig {
        self.links.get(&(from, to)).unwrap_or(&self.default_link)
    }

    pub(crate) fn set_link(&mut self, from: NodeId, to: NodeId, link: LinkConfig) {
        self.links.insert((from, to), link);
    }

    pub(crate) fn clear_link(&mut self, from: NodeId, to: NodeId) {
        self.links.remove(&(from, to));
    }

    /// Replaces the partition (see the module docs for unlisted nodes).
    pub(crate) fn partition(&mut self, sets: &[Vec<NodeId>]) -> Result<(), String> {
        let mut map = BTreeMap::new();
        for (i, set) in sets.iter().enumerate() {
            for n in set {
                if let Some(j) = map.insert(*n, i) {
                    if j != i {
                        return Err(format!("node {n} is listed in partition sets {j} and {i}"));
                    }
                }
            }
        }
        self.partition = Some(map);
        Ok(())
    }

    pub(crate) fn block_one_way(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    pub(crate) fn unblock_one_way(&mut self, from: NodeId, to: NodeId) {
        self.blocked.remove(&(from, to));
    }

    /// Removes the partition, every one-way block and every clog.
    pub(crate) fn heal(&mut self) {
        self.partition = None;
        self.blocked.clear();
        self.clogs.clear();
    }

    pub(crate) fn clog(&mut self, node: NodeId, until: Instant) {
        self.clogs.insert(node, until);
    }

    pub(crate) fn unclog(&mut self, node: NodeId) {
        self.clogs.remove(&node);
    }

    /// Whether a partition or a block stops datagrams from `from` to `to`.
    pub(crate) fn is_open(&self, from: NodeId, to: NodeId) -> bool {
        if self.blocked.contains(&(from, to)) {
            return false;
        }
        match &self.partition {
            None => true,
            Some(map) => {
                let side = |n: NodeId| map.get(&n).copied().unwrap_or(usize::MAX);
                side(from) == side(to)
            }
        }
    }

    /// Whether a partition is in force.
    pub(crate) fn is_partitioned(&self) -> bool {
        self.partition.is_some()
    }

    /// When the clog of `node` ends, if it is clogged at `now`.
    pub(crate) fn clogged_until(&self, node: NodeId, now: Instant) -> Option<Instant> {
        self.clogs.get(&node).copied().filter(|t| *t > now)
    }

    pub(crate) fn join_group(&mut self, node: NodeId, group: NodeId) {
        self.groups.entry(group).or_default().insert(node);
    }

    pub(crate) fn leave_group(&mut self, node: NodeId, group: NodeId) {
        if let Some(members) = self.groups.get_mut(&group) {
            members.remove(&node);
            if members.is_empty() {
                self.groups.remove(&group);
            }
        }
    }

    /// The members of `group`, in address order.
    pub(crate) fn group_members(&self, group: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.groups.get(&group).into_iter().flatten().copied()
    }
}

/// Whether `id` is a multicast group address (IPv4 class D or IPv6 `ff00::/8`).
pub fn is_group(id: NodeId) -> bool {
    id.addr().ip().is_multicast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn n(i: u8) -> NodeId {
        NodeId::v4(10, 0, 0, i, 7000)
    }

    #[test]
    fn partition_sets_and_the_rest() {
        let mut net = Network::default();
        net.partition(&[vec![n(1), n(2)], vec![n(3)]]).unwrap();
        assert!(net.is_open(n(1), n(2)));
        assert!(!net.is_open(n(1), n(3)));
        assert!(!net.is_open(n(3), n(2)));
        // Unlisted nodes form one more set.
        assert!(net.is_open(n(4), n(5)));
        assert!(!net.is_open(n(4), n(1)));
        assert!(net.partition(&[vec![n(1)], vec![n(1), n(2)]]).is_err());
        net.heal();
        assert!(net.is_open(n(1), n(3)));
    }

    #[test]
    fn sampling_stays_in_bounds() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..1000 {
            let d = uniform(
                &mut rng,
                Duration::from_micros(10),
                Duration::from_micros(20),
            );
            assert!((10..=20).contains(&d.as_micros()));
            let mut v = vec![0u8; 7];
            truncate(&mut rng, &mut v);
            assert!(v.len() < 7);
            let mut w = vec![0u8; 9];
            corrupt(&mut rng, &mut w);
            assert!(w.iter().any(|b| *b != 0));
        }
        assert!(!chance(&mut rng, 0.0));
        assert!(chance(&mut rng, 1.0));
        assert!(LinkConfig::lan().with_loss(1.5).validate().is_err());
        assert!(LinkConfig::lan()
            .with_latency(Duration::from_millis(2), Duration::from_millis(1))
            .validate()
            .is_err());
    }
}
