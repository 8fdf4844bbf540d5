//! The interceptor pipeline (seed 001, section 5.6; DESIGN.md section 4).
//!
//! Every datagram the socket actor sends or receives passes through a chain
//! of [`Interceptor`]s, which look at its header, length and UDP peer and
//! answer with a [`Verdict`]: pass it on, drop it (with a reason that is
//! counted), delay it, or send/deliver an extra copy. Verdicts compose along
//! the chain: the first drop wins and stops the chain, delays add up, copies
//! add up.
//!
//! [`Pipeline`] holds the three built-in interceptors, plus any custom ones:
//!
//! - [`TrafficCounter`]: packets and bytes in and out, per protocol and per
//!   peer (at most [`TrafficCounter::DEFAULT_MAX_PEERS`] peers; the rest are
//!   summed as "other");
//! - [`Filter`]: a firewall with allow and deny lists by peer and protocol;
//! - [`FaultInjector`]: loss, delay with jitter, duplication, and blocking
//!   given nodes in both directions ([`FaultConfig::block`]) or only what
//!   arrives from them ([`FaultConfig::block_in`], a one-way partition),
//!   switchable at run time (`SetFaults` on the socket actor).
//!
//! Order. Outbound: filter, custom, faults, then the counter (so it counts
//! what actually goes on the wire, duplicates included). Inbound: the counter
//! first (what arrived on the wire), then filter, custom, faults.
//!
//! Matching. A packet *involves* the node named in its header (the source
//! for inbound, the destination for outbound) and its UDP peer (where it came
//! from or goes to). Deny lists and blocks match if either is listed, so a
//! blocked node's traffic is blocked whether it comes directly or relayed by
//! an mcaster (whose header still names the original source), and blocking
//! the mcaster itself blocks everything it relays.

pub use crate::fault::{FaultConfig, FaultConfigError};
use crate::id::{NodeId, ProtocolId};
use crate::wire::Header;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

/// Which way a packet is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Arrived from the network, on its way to a core.
    Inbound,
    /// From a core (or a relay), on its way to the network.
    Outbound,
}

/// What an interceptor sees of a packet.
#[derive(Debug, Clone, Copy)]
pub struct PacketInfo<'a> {
    /// Which way it is going.
    pub direction: Direction,
    /// The packet header (checked, for inbound packets).
    pub header: &'a Header,
    /// The datagram's length in bytes (header, body and trailer).
    pub len: usize,
    /// The UDP peer: where it came from (inbound) or is sent to (outbound).
    pub peer: SocketAddr,
}

impl PacketInfo<'_> {
    /// The node named in the header: the source of an inbound packet, the
    /// destination of an outbound one.
    pub fn node(&self) -> NodeId {
        match self.direction {
            Direction::Inbound => self.header.source,
            Direction::Outbound => self.header.destination,
        }
    }

    /// Whether the header node or the UDP peer is in `set`.
    pub fn involves(&self, set: &BTreeSet<NodeId>) -> bool {
        !set.is_empty() && (set.contains(&self.node()) || set.contains(&NodeId::new(self.peer)))
    }

    /// The counter name for a drop of kind `what` in this direction.
    fn reason(&self, inbound: &'static str, outbound: &'static str) -> &'static str {
        match self.direction {
            Direction::Inbound => inbound,
            Direction::Outbound => outbound,
        }
    }
}

/// An interceptor's decision about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verdict {
    /// `Some(kind)`: drop the packet and count it under `kind`.
    pub drop: Option<&'static str>,
    /// Hold the packet this long before sending or delivering it.
    pub delay: Duration,
    /// Send or deliver this many extra copies.
    pub extra_copies: u32,
}

impl Verdict {
    /// Most extra copies a composed verdict asks for.
    pub const MAX_EXTRA_COPIES: u32 = 8;

    /// Let the packet through unchanged.
    pub const PASS: Verdict = Verdict {
        drop: None,
        delay: Duration::ZERO,
        extra_copies: 0,
    };

    /// Drop the packet, counting it under `kind`.
    pub const fn drop(kind: &'static str) -> Verdict {
        Verdict {
            drop: Some(kind),
            delay: Duration::ZERO,
            extra_copies: 0,
        }
    }

    /// Let it through after `delay`.
    pub const fn delay(delay: Duration) -> Verdict {
        Verdict {
            drop: None,
            delay,
            extra_copies: 0,
        }
    }

    /// Let it through, plus one extra copy.
    pub const fn duplicate() -> Verdict {
        Verdict {
            drop: None,
            delay: Duration::ZERO,
            extra_copies: 1,
        }
    }

    /// Whether the packet is dropped.
    pub fn is_drop(&self) -> bool {
        self.drop.is_some()
    }

    /// Composes with the verdict of the next interceptor, which is only
    /// asked if this one did not drop the packet.
    pub fn then(self, next: impl FnOnce() -> Verdict) -> Verdict {
        if self.is_drop() {
            return self;
        }
        let n = next();
        if n.is_drop() {
            return n;
        }
        Verdict {
            drop: None,
            delay: self.delay.saturating_add(n.delay),
            extra_copies: (self.extra_copies.saturating_add(n.extra_copies))
                .min(Self::MAX_EXTRA_COPIES),
        }
    }
}

/// A packet-processing plug-in (seed 001, 5.6). Both methods default to
/// [`Verdict::PASS`].
pub trait Interceptor: Send + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// A packet about to be sent.
    fn on_outbound(&mut self, packet: &PacketInfo<'_>) -> Verdict {
        let _ = packet;
        Verdict::PASS
    }

    /// A packet that arrived and passed the wire checks.
    fn on_inbound(&mut self, packet: &PacketInfo<'_>) -> Verdict {
        let _ = packet;
        Verdict::PASS
    }
}

// ---------------------------------------------------------------------------
// Traffic counter

/// Packets and bytes in each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficCounts {
    /// Packets received.
    pub packets_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
}

impl TrafficCounts {
    fn add(&mut self, direction: Direction, len: usize) {
        let len = len as u64;
        match direction {
            Direction::Inbound => {
                self.packets_in += 1;
                self.bytes_in += len;
            }
            Direction::Outbound => {
                self.packets_out += 1;
                self.bytes_out += len;
            }
        }
    }
}

/// A copy of a [`TrafficCounter`]'s counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficSnapshot {
    /// Everything.
    pub total: TrafficCounts,
    /// Per protocol.
    pub per_protocol: BTreeMap<ProtocolId, TrafficCounts>,
    /// Per peer (the node named in the header), for the first peers seen.
    pub per_peer: BTreeMap<NodeId, TrafficCounts>,
    /// Peers beyond the bound, summed.
    pub other_peers: TrafficCounts,
}

/// Counts the traffic that passes (the "traffic monitor" of seed 001, 5.6).
/// Never drops anything; memory is bounded by the number of protocols and
/// `max_peers`.
#[derive(Debug, Clone)]
pub struct TrafficCounter {
    snapshot: TrafficSnapshot,
    max_peers: usize,
}

impl Default for TrafficCounter {
    fn default() -> Self {
        TrafficCounter::new(Self::DEFAULT_MAX_PEERS)
    }
}

impl TrafficCounter {
    /// Peers tracked individually by default.
    pub const DEFAULT_MAX_PEERS: usize = 1024;

    /// A counter tracking at most `max_peers` peers individually.
    pub fn new(max_peers: usize) -> Self {
        TrafficCounter {
            snapshot: TrafficSnapshot::default(),
            max_peers,
        }
    }

    /// Records one packet.
    pub fn record(&mut self, packet: &PacketInfo<'_>) {
        let s = &mut self.snapshot;
        s.total.add(packet.direction, packet.len);
        s.per_protocol
            .entry(packet.header.protocol)
            .or_default()
            .add(packet.direction, packet.len);
        let node = packet.node();
        if let Some(c) = s.per_peer.get_mut(&node) {
            c.add(packet.direction, packet.len);
        } else if s.per_peer.len() < self.max_peers {
            s.per_peer
                .entry(node)
                .or_default()
                .add(packet.direction, packet.len);
        } else {
            s.other_peers.add(packet.direction, packet.len);
        }
    }

    /// The counts so far.
    pub fn snapshot(&self) -> &TrafficSnapshot {
        &self.snapshot
    }

    /// Zeroes every count.
    pub fn reset(&mut self) {
        self.snapshot = TrafficSnapshot::default();
    }
}

impl Interceptor for TrafficCounter {
    fn name(&self) -> &'static str {
        "traffic-counter"
    }
    fn on_outbound(&mut self, packet: &PacketInfo<'_>) -> Verdict {
        self.record(packet);
        Verdict::PASS
    }
    fn on_inbound(&mut self, packet: &PacketInfo<'_>) -> Verdict {
        self.record(packet);
        Verdict::PASS
    }
}

// ---------------------------------------------------------------------------
// Filter

/// Firewall rules. An empty allow list allows everyone (or every protocol);
/// a deny list always wins over the allow list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilterConfig {
    /// If not empty, only packets whose header node or UDP peer is listed
    /// pass.
    pub allow_peers: BTreeSet<NodeId>,
    /// Packets whose header node or UDP peer is listed are dropped.
    pub deny_peers: BTreeSet<NodeId>,
    /// If not empty, only these protocols pass.
    pub allow_protocols: BTreeSet<ProtocolId>,
    /// These protocols are dropped.
    pub deny_protocols: BTreeSet<ProtocolId>,
}

/// The firewall interceptor (seed 001, 5.6): drops packets matching its
/// rejection rules, in both directions, counted as `filter_in` /
/// `filter_out`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    config: FilterConfig,
}

impl Filter {
    /// A filter with `config`.
    pub fn new(config: FilterConfig) -> Self {
        Filter { config }
    }

    /// The current rules.
    pub fn config(&self) -> &FilterConfig {
        &self.config
    }

    /// Replaces the rules.
    pub fn set_config(&mut self, config: FilterConfig) {
        self.config = config;
    }

    fn check(&self, packet: &PacketInfo<'_>) -> Verdict {
        let c = &self.config;
        let protocol = packet.header.protocol;
        let denied = packet.involves(&c.deny_peers)
            || c.deny_protocols.contains(&protocol)
            || (!c.allow_peers.is_empty() && !packet.involves(&c.allow_peers))
            || (!c.allow_protocols.is_empty() && !c.allow_protocols.contains(&protocol));
        if denied {
            Verdict::drop(packet.reason("filter_in", "filter_out"))
        } else {
            Verdict::PASS
        }
    }
}

impl Interceptor for Filter {
    fn name(&self) -> &'static str {
        "filter"
    }
    fn on_outbound(&mut self, packet: &PacketInfo<'_>) -> Verdict {
        self.check(packet)
    }
    fn on_inbound(&mut self, packet: &PacketInfo<'_>) -> Verdict {
        self.check(packet)
    }
}

// ---------------------------------------------------------------------------
// Fault injection

/// The fault-injection interceptor. Drops are counted as `fault_block_in`,
/// `fault_block_out`, `fault_drop_in` and `fault_drop_out`.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    config: FaultConfig,
    rng: StdRng,
}

impl Default for FaultInjector {
    fn default() -> Self {
        FaultInjector::new(None)
    }
}

impl FaultInjector {
    /// A clear injector whose RNG is seeded with `seed`, or from the OS
    /// entropy source if `None`.
    pub fn new(seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        FaultInjector {
            config: FaultConfig::default(),
            rng,
        }
    }

    /// The current faults.
    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    /// Replaces the faults (after validating them); reseeds the RNG if the
    /// config carries a seed. Returns the previous config.
    pub fn set_config(&mut self, config: FaultConfig) -> Result<FaultConfig, FaultConfigError> {
        config.validate()?;
        if let Some(seed) = config.seed {
            self.rng = StdRng::seed_from_u64(seed);
        }
        Ok(std::mem::replace(&mut self.config, config))
    }

    fn roll(&mut self, pct: f64) -> bool {
        pct > 0.0 && self.rng.random::<f64>() * 100.0 < pct
    }

    fn judge(&mut self, packet: &PacketInfo<'_>) -> Verdict {
        let c = &self.config;
        let blocked = match packet.direction {
            Direction::Inbound => packet.involves(&c.block) || packet.involves(&c.block_in),
            Direction::Outbound => packet.involves(&c.block),
        };
        if blocked {
            return Verdict::drop(packet.reason("fault_block_in", "fault_block_out"));
        }
        let (drop_pct, dup_pct, delay_ms, jitter_ms) =
            (c.drop_pct, c.duplicate_pct, c.delay_ms, c.jitter_ms);
        if self.roll(drop_pct) {
            return Verdict::drop(packet.reason("fault_drop_in", "fault_drop_out"));
        }
        let mut v = Verdict::PASS;
        if self.roll(dup_pct) {
            v.extra_copies = 1;
        }
        if delay_ms > 0 || jitter_ms > 0 {
            let jitter = if jitter_ms > 0 {
                self.rng.random_range(0..=jitter_ms)
            } else {
                0
            };
            v.delay = Duration::from_millis(delay_ms.saturating_add(jitter));
        }
        v
    }
}

impl Interceptor for FaultInjector {
    fn name(&self) -> &'static str {
        "fault-injector"
    }
    fn on_outbound(&mut self, packet: &PacketInfo<'_>) -> Verdict {
        self.judge(packet)
    }
    fn on_inbound(&mut self, packet: &PacketInfo<'_>) -> Verdict {
        self.judge(packet)
    }
}

// ---------------------------------------------------------------------------
// Pipeline

/// The two pipelines of one socket: the built-in interceptors, in the order
/// given in the module docs, plus custom ones added at run time.
pub struct Pipeline {
    /// The traffic counter.
    pub counter: TrafficCounter,
    /// The firewall.
    pub filter: Filter,
    /// The fault injector.
    pub faults: FaultInjector,
    custom: Vec<Box<dyn Interceptor>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let custom: Vec<&str> = self.custom.iter().map(|i| i.name()).collect();
        f.debug_struct("Pipeline")
            .field("filter", &self.filter)
            .field("faults", self.faults.config())
            .field("custom", &custom)
            .finish_non_exhaustive()
    }
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline::new(None)
    }
}

impl Pipeline {
    /// A pipeline that passes everything; `fault_seed` seeds the fault
    /// injector's RNG (`None`: from entropy).
    pub fn new(fault_seed: Option<u64>) -> Self {
        Pipeline {
            counter: TrafficCounter::default(),
            filter: Filter::default(),
            faults: FaultInjector::new(fault_seed),
            custom: Vec::new(),
        }
    }

    /// Appends a custom interceptor (after the filter, before the faults).
    pub fn push(&mut self, interceptor: Box<dyn Interceptor>) {
        self.custom.push(interceptor);
    }

    /// Names of the custom interceptors, in order.
    pub fn custom_names(&self) -> Vec<&'static str> {
        self.custom.iter().map(|i| i.name()).collect()
    }

    /// Runs an outbound packet through the pipeline.
    pub fn outbound(&mut self, packet: &PacketInfo<'_>) -> Verdict {
        debug_assert_eq!(packet.direction, Direction::Outbound);
        let mut v = self.filter.on_outbound(packet);
        for i in &mut self.custom {
            v = v.then(|| i.on_outbound(packet));
        }
        v = v.then(|| self.faults.on_outbound(packet));
        if !v.is_drop() {
            for _ in 0..=v.extra_copies {
                self.counter.record(packet);
            }
        }
        v
    }

    /// Runs an inbound packet through the pipeline.
    pub fn inbound(&mut self, packet: &PacketInfo<'_>) -> Verdict {
        debug_assert_eq!(packet.direction, Direction::Inbound);
        let mut v = self.counter.on_inbound(packet);
        v = v.then(|| self.filter.on_inbound(packet));
        for i in &mut self.custom {
            v = v.then(|| i.on_inbound(packet));
        }
        v.then(|| self.faults.on_inbound(packet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Incarnation;

    const A: NodeId = NodeId::v4(127, 0, 0, 1, 1000);
    const B: NodeId = NodeId::v4(127, 0, 0, 1, 2000);
    const RELAY: NodeId = NodeId::v4(127, 0, 0, 1, 3000);

    fn header(source: NodeId, destination: NodeId) -> Header {
        Header {
            protocol: ProtocolId::Test,
            relayed: false,
            source,
            source_incarnation: Incarnation::NIL,
            destination,
        }
    }

    fn info(direction: Direction, h: &Header, peer: NodeId) -> PacketInfo<'_> {
        PacketInfo {
            direction,
            header: h,
            len: 100,
            peer: peer.addr(),
        }
    }

    #[test]
    fn verdicts_compose() {
        let d = Verdict::delay(Duration::from_millis(5));
        let v = d.then(Verdict::duplicate).then(|| d);
        assert_eq!(v.delay, Duration::from_millis(10));
        assert_eq!(v.extra_copies, 1);
        assert_eq!(v.then(|| Verdict::drop("x")).drop, Some("x"));
        let mut asked = false;
        let v = Verdict::drop("first").then(|| {
            asked = true;
            Verdict::PASS
        });
        assert_eq!(v.drop, Some("first"));
        assert!(!asked);
    }

    #[test]
    fn block_matches_header_and_peer_block_in_is_one_way() {
        let mut f = FaultInjector::new(Some(1));
        f.set_config(FaultConfig::clear().with_block_in(A)).unwrap();
        // From A, directly or relayed: dropped.
        let h = header(A, B);
        assert!(f.on_inbound(&info(Direction::Inbound, &h, A)).is_drop());
        assert!(f.on_inbound(&info(Direction::Inbound, &h, RELAY)).is_drop());
        // To A: passes (one-way).
        let h = header(B, A);
        assert!(!f.on_outbound(&info(Direction::Outbound, &h, A)).is_drop());

        f.set_config(FaultConfig::clear().with_block(A)).unwrap();
        assert_eq!(
            f.on_outbound(&info(Direction::Outbound, &h, A)).drop,
            Some("fault_block_out")
        );
        let h = header(A, B);
        assert_eq!(
            f.on_inbound(&info(Direction::Inbound, &h, RELAY)).drop,
            Some("fault_block_in")
        );
        // Blocking the relay blocks what it relays.
        f.set_config(FaultConfig::clear().with_block(RELAY))
            .unwrap();
        assert!(f.on_inbound(&info(Direction::Inbound, &h, RELAY)).is_drop());
        f.set_config(FaultConfig::clear()).unwrap();
        assert!(!f.on_inbound(&info(Direction::Inbound, &h, RELAY)).is_drop());
    }

    #[test]
    fn drop_rate_is_roughly_right_and_seeded() {
        let run = |seed| {
            let mut f = FaultInjector::new(None);
            f.set_config(FaultConfig::clear().with_drop_pct(20.0).with_seed(seed))
                .unwrap();
            let h = header(A, B);
            (0..1000)
                .filter(|_| f.on_inbound(&info(Direction::Inbound, &h, A)).is_drop())
                .count()
        };
        let n = run(7);
        assert!((120..=280).contains(&n), "{n}");
        assert_eq!(run(7), n);
    }

    #[test]
    fn duplicate_and_delay() {
        let mut f = FaultInjector::new(Some(3));
        f.set_config(
            FaultConfig::clear()
                .with_duplicate_pct(100.0)
                .with_delay_ms(10, 5),
        )
        .unwrap();
        let h = header(A, B);
        for _ in 0..50 {
            let v = f.on_outbound(&info(Direction::Outbound, &h, B));
            assert_eq!(v.extra_copies, 1);
            assert!(v.delay >= Duration::from_millis(10) && v.delay <= Duration::from_millis(15));
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut f = FaultInjector::new(Some(3));
        assert!(f
            .set_config(FaultConfig::clear().with_drop_pct(101.0))
            .is_err());
        assert!(f
            .set_config(FaultConfig::clear().with_duplicate_pct(f64::NAN))
            .is_err());
        assert!(f
            .set_config(FaultConfig::clear().with_delay_ms(60_000, 1))
            .is_err());
        assert!(f.config().is_clear());
        assert!(FaultConfig::clear().with_seed(4).is_clear());
        assert!(!FaultConfig::clear().with_block(A).is_clear());
    }

    #[test]
    fn fault_config_json_roundtrip() {
        let c = FaultConfig::clear()
            .with_drop_pct(12.5)
            .with_block(A)
            .with_block_in(B);
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("127.0.0.1:1000"), "{json}");
        assert_eq!(serde_json::from_str::<FaultConfig>(&json).unwrap(), c);
        // Missing fields default: `{}` is "clear".
        assert!(serde_json::from_str::<FaultConfig>("{}")
            .unwrap()
            .is_clear());
    }

    #[test]
    fn filter_allow_and_deny() {
        let mut f = Filter::default();
        let h = header(A, B);
        assert!(!f.on_inbound(&info(Direction::Inbound, &h, A)).is_drop());
        f.set_config(FilterConfig {
            deny_peers: [A].into(),
            ..Default::default()
        });
        assert_eq!(
            f.on_inbound(&info(Direction::Inbound, &h, A)).drop,
            Some("filter_in")
        );
        f.set_config(FilterConfig {
            allow_peers: [B].into(),
            ..Default::default()
        });
        assert!(f.on_inbound(&info(Direction::Inbound, &h, A)).is_drop());
        assert!(!f.on_outbound(&info(Direction::Outbound, &h, B)).is_drop());
        f.set_config(FilterConfig {
            deny_protocols: [ProtocolId::Test].into(),
            ..Default::default()
        });
        assert!(f.on_outbound(&info(Direction::Outbound, &h, B)).is_drop());
        f.set_config(FilterConfig {
            allow_protocols: [ProtocolId::Rpc].into(),
            ..Default::default()
        });
        assert_eq!(
            f.on_outbound(&info(Direction::Outbound, &h, B)).drop,
            Some("filter_out")
        );
    }

    #[test]
    fn counter_is_bounded_and_serializes() {
        let mut c = TrafficCounter::new(2);
        for port in 1..=5 {
            let h = header(NodeId::v4(127, 0, 0, 1, port), B);
            c.record(&info(Direction::Inbound, &h, A));
        }
        let s = c.snapshot();
        assert_eq!(s.per_peer.len(), 2);
        assert_eq!(s.other_peers.packets_in, 3);
        assert_eq!(s.total.packets_in, 5);
        assert_eq!(s.total.bytes_in, 500);
        assert_eq!(s.per_protocol[&ProtocolId::Test].packets_in, 5);
        let json = serde_json::to_string(s).unwrap();
        assert!(json.contains("Test"), "{json}");
        c.reset();
        assert_eq!(c.snapshot().total, TrafficCounts::default());
    }

    struct DropAll;
    impl Interceptor for DropAll {
        fn name(&self) -> &'static str {
            "drop-all"
        }
        fn on_inbound(&mut self, _: &PacketInfo<'_>) -> Verdict {
            Verdict::drop("custom")
        }
    }

    #[test]
    fn pipeline_orders_counter_and_custom() {
        let mut p = Pipeline::new(Some(1));
        p.push(Box::new(DropAll));
        assert_eq!(p.custom_names(), vec!["drop-all"]);
        let h = header(A, B);
        // Inbound: counted (on the wire), then dropped by the custom stage.
        assert_eq!(
            p.inbound(&info(Direction::Inbound, &h, A)).drop,
            Some("custom")
        );
        assert_eq!(p.counter.snapshot().total.packets_in, 1);
        // Outbound dropped by the fault injector: not counted.
        p.faults
            .set_config(FaultConfig::clear().with_block(B))
            .unwrap();
        assert!(p.outbound(&info(Direction::Outbound, &h, B)).is_drop());
        assert_eq!(p.counter.snapshot().total.packets_out, 0);
        // Duplicated outbound: both copies counted.
        p.faults
            .set_config(FaultConfig::clear().with_duplicate_pct(100.0))
            .unwrap();
        assert_eq!(
            p.outbound(&info(Direction::Outbound, &h, B)).extra_copies,
            1
        );
        assert_eq!(p.counter.snapshot().total.packets_out, 2);
        assert!(format!("{p:?}").contains("drop-all"));
    }
}
