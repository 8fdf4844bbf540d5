//! One node's rmcast over a real transport: a [`GroupEndpoint`] holds one
//! [`Rmcast`] per group, demultiplexes the node's rmcast datagrams between
//! them, and gets group traffic onto the LAN by IP multicast, through an
//! mcaster, or both (seed 003, section IV.A, figure 6; DESIGN.md section 4,
//! "rmcast ... runs the same over real IP multicast and over the mcaster").
//!
//! It is a sans-IO [`Core`] like the cores it holds, so a process runs it
//! on one socket with `runtime::spawn_core` (protocols
//! [`ProtocolId::Rmcast`] and [`ProtocolId::Mcaster`]) and the simulator
//! runs it unchanged.
//!
//! - **Demultiplexing.** Every rmcast datagram, multicast or unicast,
//!   carries an [`Envelope`] naming its group; the endpoint reads the group
//!   from the front of the body ([`Envelope::peek_group`]) and hands the
//!   datagram to that group's core. Datagrams for groups it does not hold
//!   are dropped and counted ([`EndpointStats::drops`]).
//! - **Transports** ([`Transport`]): with [`Transport::Multicast`] group
//!   transmits go to the class D address (the process joins it on its
//!   socket). With [`Transport::Mcaster`] (a `uc` member on a host or LAN
//!   without multicast) the endpoint embeds a [`Registration`]: every group
//!   added is joined at the mcaster as `uc` and refreshed every
//!   [`EndpointConfig::refresh_interval`], so a restarted mcaster relearns
//!   it within one interval, and group transmits go by unicast to the
//!   mcaster ([`Registration::route`]). [`Transport::MulticastWithMcaster`]
//!   (an `mc` member of a mixed LAN) sends to the class D address itself
//!   and also registers as `mc`, so that the mcaster passes its traffic on
//!   to the LAN's `uc` members. Unicast rmcast packets (`Status`, `Hello`,
//!   `Start`, `NotReceiver`) always go straight to their node.
//! - **The layer above** adds and removes groups ([`GroupEndpoint::add_group`],
//!   [`GroupEndpoint::remove_group`]), gives each its view
//!   ([`GroupEndpoint::set_receivers`]) and sends parcels
//!   ([`GroupEndpoint::send`]); events come back tagged with their group
//!   ([`EndpointEvent`]). Errors are typed ([`EndpointError`]).
//!
//! Bounded: at most [`EndpointConfig::max_groups`] groups (each bounded by
//! its [`RmcastConfig`]); the registration holds at most as many.

use super::{Delivery, Envelope, ParcelId, Rmcast, RmcastConfig, RmcastEvent, SendError};
use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::mcaster_reg::{
    ReceiveMode, Registration, RegistrationConfig, RegistrationEvent, DEFAULT_REFRESH_INTERVAL,
    MAX_NAME_LEN,
};
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::{earliest, Instant};
use crate::wire::DropCounters;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;
use thiserror::Error;

/// Default bound on the groups one endpoint holds.
pub const DEFAULT_MAX_GROUPS: usize = 64;

/// How group traffic reaches the LAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Every member multicasts: group transmits go to the class D address
    /// (the process joins each group on its socket). No mcaster.
    Multicast,
    /// An `mc` member of a mixed LAN (thesis figure 6): group transmits go
    /// to the class D address, and every group is registered as `mc` with
    /// this mcaster, which passes the traffic on to `uc` members.
    MulticastWithMcaster {
        /// The mcaster's address.
        mcaster: NodeId,
    },
    /// A `uc` member: every group is registered as `uc` with this mcaster,
    /// and group transmits go to it by unicast (the header still names the
    /// group).
    Mcaster {
        /// The mcaster's address.
        mcaster: NodeId,
    },
}

impl Transport {
    /// The mcaster and the kind this member registers as, if any.
    pub fn registration(&self) -> Option<(NodeId, ReceiveMode)> {
        match *self {
            Transport::Multicast => None,
            Transport::MulticastWithMcaster { mcaster } => Some((mcaster, ReceiveMode::Mc)),
            Transport::Mcaster { mcaster } => Some((mcaster, ReceiveMode::Uc)),
        }
    }
}

/// Settings of a [`GroupEndpoint`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointConfig {
    /// How group traffic reaches the LAN.
    pub transport: Transport,
    /// The settings of every group's [`Rmcast`] (all members of a group
    /// should use the same).
    pub rmcast: RmcastConfig,
    /// Most groups held at once (clamped to 1..=256, the registration's
    /// bound). Default [`DEFAULT_MAX_GROUPS`].
    pub max_groups: usize,
    /// Interval between two `JOIN_GROUP` refreshes at the mcaster (default
    /// one second); unused with [`Transport::Multicast`].
    pub refresh_interval: Duration,
}

impl EndpointConfig {
    /// Defaults with `transport`.
    pub fn new(transport: Transport) -> Self {
        EndpointConfig {
            transport,
            rmcast: RmcastConfig::default(),
            max_groups: DEFAULT_MAX_GROUPS,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
        }
    }
}

/// What a [`GroupEndpoint`] reports to the layer above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointEvent {
    /// An event of one group's [`Rmcast`].
    Rmcast {
        /// The group.
        group: NodeId,
        /// The event.
        event: RmcastEvent,
    },
    /// The mcaster registration (each names its group): `Registered`,
    /// `Relearned` (the mcaster had forgotten us, e.g. it restarted),
    /// `Refused`, `Left`.
    Registration(RegistrationEvent),
}

/// Why a [`GroupEndpoint`] call was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EndpointError {
    /// The address is not a multicast group.
    #[error("{0} is not a multicast group address")]
    NotAGroup(NodeId),
    /// The group is not held here.
    #[error("unknown group {0}")]
    UnknownGroup(NodeId),
    /// The group is held already.
    #[error("group {0} added already")]
    AlreadyAdded(NodeId),
    /// [`EndpointConfig::max_groups`] groups are held already.
    #[error("at most {limit} groups")]
    TooManyGroups {
        /// The bound.
        limit: usize,
    },
    /// The group name is empty or longer than [`MAX_NAME_LEN`] bytes.
    #[error("group name must be 1 to {MAX_NAME_LEN} bytes")]
    BadName,
    /// The group's core refused the parcel.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// Counters of a [`GroupEndpoint`] (each group's own are in its
/// [`Rmcast::stats`], the registration's in [`Registration::counters`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Rmcast datagrams handed to a group's core.
    pub demuxed: u64,
    /// Dropped datagrams by kind: `bad_envelope` (no group can be read),
    /// `unknown_group`, `no_registration` (an mcaster packet without an
    /// mcaster), `wrong_protocol`.
    pub drops: DropCounters,
}

/// One node's rmcast in any number of groups, over IP multicast or an
/// mcaster; see the [module docs](self).
#[derive(Debug)]
pub struct GroupEndpoint {
    me: NodeId,
    incarnation: Incarnation,
    config: EndpointConfig,
    rng: ChaCha8Rng,
    groups: BTreeMap<NodeId, Rmcast>,
    registration: Option<Registration>,
    out: VecDeque<Transmit>,
    events: VecDeque<EndpointEvent>,
    stats: EndpointStats,
}

impl GroupEndpoint {
    /// The endpoint of node `me` in its life `incarnation`; `seed` seeds
    /// the groups' RNGs (each group draws its own from it). No group yet.
    pub fn new(me: NodeId, incarnation: Incarnation, config: EndpointConfig, seed: u64) -> Self {
        let mut config = config;
        config.max_groups = config
            .max_groups
            .clamp(1, crate::mcaster_reg::registration::MAX_REGISTERED_GROUPS);
        let registration = config.transport.registration().map(|(mcaster, kind)| {
            Registration::new(RegistrationConfig {
                refresh_interval: config.refresh_interval,
                ..RegistrationConfig::new(mcaster, kind)
            })
        });
        GroupEndpoint {
            me,
            incarnation,
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            groups: BTreeMap::new(),
            registration,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: EndpointStats::default(),
        }
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.me
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// The settings.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// The endpoint's own counters.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    /// The mcaster registration, if the transport has one.
    pub fn registration(&self) -> Option<&Registration> {
        self.registration.as_ref()
    }

    /// The groups held, in address order.
    pub fn groups(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.groups.keys().copied()
    }

    /// One group's core (for its stats and introspection).
    pub fn group(&self, group: NodeId) -> Option<&Rmcast> {
        self.groups.get(&group)
    }

    /// Starts taking part in `group` (a class D address and port) named
    /// `name` (the mcaster lists groups by name too): a new [`Rmcast`]
    /// with an empty view, and a registration at the mcaster if the
    /// transport has one.
    pub fn add_group(
        &mut self,
        now: Instant,
        group: NodeId,
        name: &str,
    ) -> Result<(), EndpointError> {
        if !group.addr().ip().is_multicast() {
            return Err(EndpointError::NotAGroup(group));
        }
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(EndpointError::BadName);
        }
        if self.groups.contains_key(&group) {
            return Err(EndpointError::AlreadyAdded(group));
        }
        if self.groups.len() >= self.config.max_groups {
            return Err(EndpointError::TooManyGroups {
                limit: self.config.max_groups,
            });
        }
        let seed = self.rng.next_u64();
        let core = Rmcast::new(
            self.me,
            self.incarnation,
            group,
            self.config.rmcast.clone(),
            seed,
        );
        self.groups.insert(group, core);
        if let Some(reg) = &mut self.registration {
            reg.join(now, group, name);
        }
        self.drain_registration();
        Ok(())
    }

    /// Stops taking part in `group`: its core and everything it held are
    /// dropped (nothing more is sent or delivered for it), and the
    /// registration leaves the group at the mcaster.
    pub fn remove_group(&mut self, now: Instant, group: NodeId) -> Result<(), EndpointError> {
        if self.groups.remove(&group).is_none() {
            return Err(EndpointError::UnknownGroup(group));
        }
        if let Some(reg) = &mut self.registration {
            reg.leave(now, group);
        }
        self.drain_registration();
        Ok(())
    }

    /// Sets `group`'s view (see [`Rmcast::set_receivers`]).
    pub fn set_receivers(
        &mut self,
        now: Instant,
        group: NodeId,
        receivers: BTreeSet<NodeId>,
    ) -> Result<(), EndpointError> {
        let core = self
            .groups
            .get_mut(&group)
            .ok_or(EndpointError::UnknownGroup(group))?;
        core.set_receivers(now, receivers);
        self.drain_group(group);
        Ok(())
    }

    /// Sends `payload` to `group` in mode `mode` (see [`Rmcast::send`]).
    pub fn send(
        &mut self,
        now: Instant,
        group: NodeId,
        payload: Vec<u8>,
        mode: Delivery,
    ) -> Result<ParcelId, EndpointError> {
        let core = self
            .groups
            .get_mut(&group)
            .ok_or(EndpointError::UnknownGroup(group))?;
        let r = core.send(now, payload, mode);
        self.drain_group(group);
        Ok(r?)
    }

    /// Moves `group`'s transmits (routed for the transport) and events to
    /// the endpoint's queues.
    fn drain_group(&mut self, group: NodeId) {
        let Some(core) = self.groups.get_mut(&group) else {
            return;
        };
        while let Some(t) = core.poll_transmit() {
            let t = match &self.registration {
                Some(reg) => reg.route(t),
                None => t,
            };
            self.out.push_back(t);
        }
        while let Some(event) = core.poll_event() {
            self.events
                .push_back(EndpointEvent::Rmcast { group, event });
        }
    }

    fn drain_registration(&mut self) {
        let Some(reg) = &mut self.registration else {
            return;
        };
        while let Some(t) = reg.poll_transmit() {
            self.out.push_back(t);
        }
        while let Some(e) = reg.poll_event() {
            self.events.push_back(EndpointEvent::Registration(e));
        }
    }
}

impl Core for GroupEndpoint {
    type Event = EndpointEvent;

    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        match packet.protocol {
            ProtocolId::Rmcast => {
                let Some(group) = Envelope::peek_group(packet.body) else {
                    return self.stats.drops.record_kind("bad_envelope");
                };
                let Some(core) = self.groups.get_mut(&group) else {
                    return self.stats.drops.record_kind("unknown_group");
                };
                self.stats.demuxed += 1;
                core.handle_packet(now, packet);
                self.drain_group(group);
            }
            ProtocolId::Mcaster => match &mut self.registration {
                Some(reg) => {
                    reg.handle(now, &packet);
                    self.drain_registration();
                }
                None => self.stats.drops.record_kind("no_registration"),
            },
            _ => self.stats.drops.record_kind("wrong_protocol"),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(reg) = &mut self.registration {
            reg.handle_timeout(now);
        }
        self.drain_registration();
        let due: Vec<NodeId> = self
            .groups
            .iter()
            .filter(|(_, c)| c.poll_timeout().is_some_and(|t| t <= now))
            .map(|(g, _)| *g)
            .collect();
        for group in due {
            if let Some(core) = self.groups.get_mut(&group) {
                core.handle_timeout(now);
            }
            self.drain_group(group);
        }
    }

    fn handle_unreachable(&mut self, now: Instant, node: NodeId) {
        let groups: Vec<NodeId> = self.groups.keys().copied().collect();
        for group in groups {
            if let Some(core) = self.groups.get_mut(&group) {
                core.handle_unreachable(now, node);
            }
            self.drain_group(group);
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.registration.as_ref().and_then(|r| r.poll_timeout());
        for core in self.groups.values() {
            t = earliest(t, core.poll_timeout());
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcaster_reg::{Answer, McasterMsg};
    use crate::wire::{decode_body, encode_body};

    const G1: NodeId = NodeId::v4(239, 1, 1, 1, 7000);
    const G2: NodeId = NodeId::v4(239, 1, 1, 2, 7000);
    const A: NodeId = NodeId::v4(10, 0, 0, 1, 7000);
    const B: NodeId = NodeId::v4(10, 0, 0, 2, 7000);
    const MCASTER: NodeId = NodeId::v4(10, 0, 0, 100, 7100);

    fn inc(n: u64) -> Incarnation {
        Incarnation::from_parts(1_700_000_000_000 + n, [n as u8; 10])
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn endpoint(me: NodeId, n: u64, transport: Transport) -> GroupEndpoint {
        GroupEndpoint::new(me, inc(n), EndpointConfig::new(transport), n)
    }

    fn drain(e: &mut GroupEndpoint) -> (Vec<Transmit>, Vec<EndpointEvent>) {
        let mut ts = Vec::new();
        while let Some(t) = e.poll_transmit() {
            ts.push(t);
        }
        let mut es = Vec::new();
        while let Some(ev) = e.poll_event() {
            es.push(ev);
        }
        (ts, es)
    }

    /// Delivers `ts` from `from` to `to` as if every datagram arrived
    /// (group datagrams to every member, unicast only to its node).
    fn deliver(now: Instant, from: &GroupEndpoint, ts: &[Transmit], to: &mut GroupEndpoint) {
        for t in ts {
            if t.destination != to.node() && !t.destination.addr().ip().is_multicast() {
                continue;
            }
            if t.protocol != ProtocolId::Rmcast {
                continue;
            }
            to.handle_packet(
                now,
                Incoming::direct(
                    from.node(),
                    from.incarnation(),
                    t.destination,
                    t.protocol,
                    &t.body,
                ),
            );
        }
    }

    fn delivered(events: &[EndpointEvent]) -> Vec<(NodeId, Vec<u8>)> {
        events
            .iter()
            .filter_map(|e| match e {
                EndpointEvent::Rmcast {
                    group,
                    event: RmcastEvent::Delivered { payload, .. },
                } => Some((*group, payload.clone())),
                _ => None,
            })
            .collect()
    }

    /// Runs `a` and `b` against each other (every datagram arrives) until
    /// both are quiet or 2 s of virtual time passed; returns b's events.
    fn exchange(a: &mut GroupEndpoint, b: &mut GroupEndpoint) -> Vec<EndpointEvent> {
        let mut now = t(0);
        let mut b_events = Vec::new();
        for _ in 0..10_000 {
            let (ta, _) = drain(a);
            deliver(now, a, &ta, b);
            let (tb, eb) = drain(b);
            b_events.extend(eb);
            deliver(now, b, &tb, a);
            if ta.is_empty() && tb.is_empty() {
                let next = earliest(a.poll_timeout(), b.poll_timeout());
                match next {
                    Some(n) if n <= t(2000) => {
                        now = n.max(now);
                        a.handle_timeout(now);
                        b.handle_timeout(now);
                    }
                    _ => break,
                }
            }
        }
        b_events
    }

    #[test]
    fn demultiplexes_two_groups_by_envelope() {
        let mut a = endpoint(A, 1, Transport::Multicast);
        let mut b = endpoint(B, 2, Transport::Multicast);
        for e in [&mut a, &mut b] {
            e.add_group(t(0), G1, "one").unwrap();
            e.add_group(t(0), G2, "two").unwrap();
        }
        for g in [G1, G2] {
            a.set_receivers(t(0), g, [A, B].into()).unwrap();
            b.set_receivers(t(0), g, [A, B].into()).unwrap();
        }
        a.send(t(0), G1, b"to one".to_vec(), Delivery::Reliable)
            .unwrap();
        a.send(t(0), G2, b"to two".to_vec(), Delivery::Reliable)
            .unwrap();
        a.send(t(0), G1, b"one again".to_vec(), Delivery::Reliable)
            .unwrap();
        let events = exchange(&mut a, &mut b);
        // Per group, in order; each exactly once.
        let d = delivered(&events);
        let g1: Vec<_> = d.iter().filter(|(g, _)| *g == G1).cloned().collect();
        let g2: Vec<_> = d.iter().filter(|(g, _)| *g == G2).cloned().collect();
        assert_eq!(
            g1,
            vec![(G1, b"to one".to_vec()), (G1, b"one again".to_vec())]
        );
        assert_eq!(g2, vec![(G2, b"to two".to_vec())]);
        // Both groups' cores saw their own traffic only.
        assert_eq!(b.group(G1).unwrap().stats().parcels_delivered, 2);
        assert_eq!(b.group(G2).unwrap().stats().parcels_delivered, 1);
        assert_eq!(b.stats().drops.total(), 0);
        assert!(b.stats().demuxed > 0);
    }

    #[test]
    fn unknown_group_and_garbage_are_counted() {
        let mut a = endpoint(A, 1, Transport::Multicast);
        let mut b = endpoint(B, 2, Transport::Multicast);
        a.add_group(t(0), G1, "one").unwrap();
        b.add_group(t(0), G2, "two").unwrap();
        a.set_receivers(t(0), G1, [B].into()).unwrap();
        a.send(t(0), G1, vec![1; 10], Delivery::Reliable).unwrap();
        // B was never heard: the window waits, and a Sync goes out at once.
        a.handle_timeout(t(0));
        let (ts, _) = drain(&mut a);
        assert!(!ts.is_empty());
        deliver(t(1), &a, &ts, &mut b);
        let unknown = b.stats().drops.get("unknown_group");
        assert_eq!(unknown, ts.len() as u64);
        for body in [&[][..], &[0xff, 0xff, 0xff][..]] {
            b.handle_packet(
                t(2),
                Incoming::direct(A, inc(1), G2, ProtocolId::Rmcast, body),
            );
        }
        assert_eq!(b.stats().drops.get("bad_envelope"), 2);
        b.handle_packet(
            t(2),
            Incoming::direct(A, inc(1), B, ProtocolId::Mcaster, &[1, 2]),
        );
        assert_eq!(b.stats().drops.get("no_registration"), 1);
        b.handle_packet(t(2), Incoming::direct(A, inc(1), B, ProtocolId::Test, &[]));
        assert_eq!(b.stats().drops.get("wrong_protocol"), 1);
        let (ts, es) = drain(&mut b);
        assert!(ts.is_empty() && es.is_empty());
    }

    #[test]
    fn api_errors_are_typed() {
        let mut a = endpoint(A, 1, Transport::Multicast);
        assert_eq!(a.add_group(t(0), B, "x"), Err(EndpointError::NotAGroup(B)));
        assert_eq!(a.add_group(t(0), G1, ""), Err(EndpointError::BadName));
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(a.add_group(t(0), G1, &long), Err(EndpointError::BadName));
        a.add_group(t(0), G1, "one").unwrap();
        assert_eq!(
            a.add_group(t(0), G1, "one"),
            Err(EndpointError::AlreadyAdded(G1))
        );
        assert_eq!(
            a.send(t(0), G2, vec![], Delivery::Reliable),
            Err(EndpointError::UnknownGroup(G2))
        );
        assert_eq!(
            a.set_receivers(t(0), G2, BTreeSet::new()),
            Err(EndpointError::UnknownGroup(G2))
        );
        assert_eq!(
            a.remove_group(t(0), G2),
            Err(EndpointError::UnknownGroup(G2))
        );
        let too_big = a.config().rmcast.max_parcel + 1;
        assert!(matches!(
            a.send(t(0), G1, vec![0; too_big], Delivery::Reliable),
            Err(EndpointError::Send(SendError::TooLarge { .. }))
        ));
        a.remove_group(t(0), G1).unwrap();
        assert_eq!(a.groups().count(), 0);

        let mut config = EndpointConfig::new(Transport::Multicast);
        config.max_groups = 2;
        let mut small = GroupEndpoint::new(A, inc(1), config, 1);
        small.add_group(t(0), G1, "one").unwrap();
        small.add_group(t(0), G2, "two").unwrap();
        assert_eq!(
            small.add_group(t(0), NodeId::v4(239, 1, 1, 3, 7000), "three"),
            Err(EndpointError::TooManyGroups { limit: 2 })
        );
    }

    #[test]
    fn uc_member_registers_and_routes_group_traffic_via_the_mcaster() {
        let mut a = endpoint(A, 1, Transport::Mcaster { mcaster: MCASTER });
        a.add_group(t(0), G1, "one").unwrap();
        let (ts, _) = drain(&mut a);
        // JOIN_GROUP as uc, to the mcaster.
        assert_eq!(ts.len(), 1);
        assert_eq!(ts[0].destination, MCASTER);
        assert_eq!(ts[0].protocol, ProtocolId::Mcaster);
        assert_eq!(
            decode_body::<McasterMsg>(&ts[0].body).unwrap(),
            McasterMsg::JoinGroup {
                group: G1,
                name: "one".into(),
                kind: ReceiveMode::Uc
            }
        );
        // The mcaster's answer becomes a tagged event.
        let ack = encode_body(&McasterMsg::Reply {
            group: G1,
            answer: Answer::JoinAck,
        })
        .unwrap();
        a.handle_packet(
            t(1),
            Incoming::direct(MCASTER, inc(9), A, ProtocolId::Mcaster, &ack),
        );
        let (_, es) = drain(&mut a);
        assert_eq!(
            es,
            vec![EndpointEvent::Registration(RegistrationEvent::Registered {
                group: G1
            })]
        );
        assert!(a.registration().unwrap().is_registered(G1));

        // Group traffic: header names the group, UDP goes to the mcaster;
        // unicast (Start to a receiver) goes straight.
        a.set_receivers(t(2), G1, [B].into()).unwrap();
        a.send(t(2), G1, vec![7; 100], Delivery::Reliable).unwrap();
        a.handle_timeout(t(2));
        let (ts, _) = drain(&mut a);
        assert!(ts.iter().any(|t| t.destination == G1));
        for t in &ts {
            if t.destination == G1 {
                assert_eq!(t.via, Some(MCASTER), "{t:?}");
                assert_eq!(t.next_hop(), MCASTER);
            } else {
                assert_eq!(t.via, None);
            }
        }
        // Refreshes every interval; a JOIN_ACK to a refresh is a relearn.
        a.handle_timeout(t(1000));
        let (ts, _) = drain(&mut a);
        assert!(ts
            .iter()
            .any(|t| t.destination == MCASTER && t.protocol == ProtocolId::Mcaster));
        a.handle_packet(
            t(1001),
            Incoming::direct(MCASTER, inc(10), A, ProtocolId::Mcaster, &ack),
        );
        let (_, es) = drain(&mut a);
        assert_eq!(
            es,
            vec![EndpointEvent::Registration(RegistrationEvent::Relearned {
                group: G1
            })]
        );
        // Removing the group leaves it at the mcaster.
        a.remove_group(t(1002), G1).unwrap();
        let (ts, _) = drain(&mut a);
        assert_eq!(
            decode_body::<McasterMsg>(&ts[0].body).unwrap(),
            McasterMsg::LeaveGroup { group: G1 }
        );
    }

    #[test]
    fn mc_member_sends_to_class_d_and_registers_as_mc() {
        let mut a = endpoint(A, 1, Transport::MulticastWithMcaster { mcaster: MCASTER });
        a.add_group(t(0), G1, "one").unwrap();
        let (ts, _) = drain(&mut a);
        assert_eq!(
            decode_body::<McasterMsg>(&ts[0].body).unwrap(),
            McasterMsg::JoinGroup {
                group: G1,
                name: "one".into(),
                kind: ReceiveMode::Mc
            }
        );
        a.set_receivers(t(1), G1, [B].into()).unwrap();
        a.send(t(1), G1, vec![7; 100], Delivery::Reliable).unwrap();
        a.handle_timeout(t(1));
        let (ts, _) = drain(&mut a);
        assert!(ts.iter().any(|t| t.destination == G1));
        assert!(ts.iter().all(|t| t.via.is_none()));

        // Pure multicast: no registration traffic at all.
        let mut m = endpoint(A, 1, Transport::Multicast);
        m.add_group(t(0), G1, "one").unwrap();
        assert!(m.registration().is_none());
        let (ts, _) = drain(&mut m);
        assert!(ts.is_empty());
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn events_carry_their_group_and_timeouts_reach_every_group() {
        let mut a = endpoint(A, 1, Transport::Multicast);
        a.add_group(t(0), G1, "one").unwrap();
        a.add_group(t(0), G2, "two").unwrap();
        // With no receivers a sequenced parcel is acknowledged at once.
        a.send(t(0), G2, vec![1], Delivery::Reliable).unwrap();
        let (_, es) = drain(&mut a);
        assert!(es.iter().any(|e| matches!(
            e,
            EndpointEvent::Rmcast {
                group: G2,
                event: RmcastEvent::Acknowledged { .. }
            }
        )));
        // B never answers: each group's sender syncs on its own timer and
        // reports B as a suspect, tagged with the group.
        for g in [G1, G2] {
            a.set_receivers(t(0), g, [B].into()).unwrap();
            a.send(t(0), g, vec![2; 10], Delivery::Reliable).unwrap();
        }
        let mut suspects = BTreeSet::new();
        let mut now = t(0);
        for _ in 0..1000 {
            let Some(next) = a.poll_timeout() else { break };
            if next > t(5000) {
                break;
            }
            now = next.max(now);
            a.handle_timeout(now);
            for e in drain(&mut a).1 {
                if let EndpointEvent::Rmcast {
                    group,
                    event: RmcastEvent::Suspect { node },
                } = e
                {
                    suspects.insert((group, node));
                }
            }
        }
        assert_eq!(suspects, [(G1, B), (G2, B)].into());
    }
}
