//! The mcaster's sans-IO core: group lists, `JOIN_GROUP` / `LEAVE_GROUP`,
//! soft-state expiry and the propagation rules of figure 8 (seed 003,
//! section IV.A). See the module docs of [`crate::mcaster`].

use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::mcaster_reg::{Answer, McasterMsg, ReceiveMode, MAX_NAME_LEN};
use crate::rmcast::nack_cache::{Forward, NackCache, NackCacheConfig};
use crate::rmcast::{Envelope, RmcastPacket};
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::Instant;
use crate::wire::{decode_body, encode_body, DropCounters, KeyRing, SharedRing};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Default time after its last `JOIN_GROUP` at which a member that stopped
/// refreshing is removed: three refresh intervals of one second.
pub const DEFAULT_MEMBER_TTL: Duration = Duration::from_secs(3);
/// Default bound on the number of groups one mcaster serves.
pub const DEFAULT_MAX_GROUPS: usize = 1024;
/// Default bound on the number of members of one group.
pub const DEFAULT_MAX_MEMBERS: usize = 256;
/// Bound on the transmits and events waiting to be drained; beyond it the
/// newest are dropped and counted (`"outbox_full"`, `"events_full"`), so a
/// driver that never drains cannot make the core grow.
pub const MAX_PENDING: usize = 65_536;
/// Most senders whose last key-ring epoch is remembered (further senders'
/// rings are still taken, without the staleness check).
pub const MAX_RING_SOURCES: usize = 1024;

/// Settings of a [`Mcaster`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McasterConfig {
    /// A member not refreshed for this long is removed.
    pub member_ttl: Duration,
    /// Most groups served at once (further new groups get `NEG_JOIN`).
    pub max_groups: usize,
    /// Most members of one group (further members get `NEG_JOIN`).
    pub max_members: usize,
    /// This mcaster can send to and receive from class D addresses (the
    /// daemon's probe said so). Without it, multicast members are refused
    /// with `NEG_JOIN` and every copy goes by unicast.
    pub multicast: bool,
    /// Bounds and timing of the rmcast NACK aggregation (seed 000, section
    /// 6.1): the retransmission cache (`cache_packets`, `cache_bytes`,
    /// which also bound the cached raw datagrams), the NACK table
    /// (`nack_entries`, `waiters_per_entry`) and its lifetime
    /// (`nack_timeout`). See `docs/mcaster.md`, "NACK aggregation".
    pub nack_cache: NackCacheConfig,
}

impl Default for McasterConfig {
    fn default() -> Self {
        McasterConfig {
            member_ttl: DEFAULT_MEMBER_TTL,
            max_groups: DEFAULT_MAX_GROUPS,
            max_members: DEFAULT_MAX_MEMBERS,
            multicast: false,
            nack_cache: NackCacheConfig::default(),
        }
    }
}

/// What the relay reports to its daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum McasterEvent {
    /// A group was created by its first `JOIN_GROUP`: a multicast-capable
    /// daemon joins its class D address.
    GroupCreated {
        /// The group's address.
        group: NodeId,
        /// Its name.
        name: String,
    },
    /// A group lost its last member and was deleted: a multicast-capable
    /// daemon leaves its class D address.
    GroupDeleted {
        /// The group's address.
        group: NodeId,
        /// Its name.
        name: String,
    },
    /// A member was added.
    MemberJoined {
        /// The group.
        group: NodeId,
        /// The member.
        member: NodeId,
        /// How it receives.
        kind: ReceiveMode,
    },
    /// A member left with `LEAVE_GROUP`.
    MemberLeft {
        /// The group.
        group: NodeId,
        /// The member.
        member: NodeId,
    },
    /// A member stopped refreshing and was removed.
    MemberExpired {
        /// The group.
        group: NodeId,
        /// The member.
        member: NodeId,
    },
    /// A registered member (an mserver) handed over the cluster key ring
    /// its core-set committed: the daemon applies it to its sockets (and
    /// persists it). Already acknowledged.
    KeyRing {
        /// The member that sent it.
        from: NodeId,
        /// The ring.
        ring: KeyRing,
    },
}

/// The relay's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct McasterCounters {
    /// Group datagrams accepted for relaying.
    pub relayed: u64,
    /// Copies sent for them (unicast copies plus class D copies).
    pub copies: u64,
    /// Of which class D copies.
    pub multicast_copies: u64,
    /// Relayed datagrams that had nobody to go to (the sender was alone).
    pub no_receivers: u64,
    /// Control messages handled (`JOIN_GROUP`, `LEAVE_GROUP`).
    pub control: u64,
    /// Answers sent, by thesis name.
    pub answers: BTreeMap<&'static str, u64>,
    /// Members removed because they stopped refreshing.
    pub expired: u64,
    /// Dropped datagrams by kind: `malformed_control`, `relayed_control`,
    /// `unexpected_reply`, `ring_not_member`, `bad_ring`, `stale_ring`, `own_echo`, `not_group`, `no_datagram`,
    /// `unknown_group`, `not_member`, `relayed_data`, `outbox_full`,
    /// `events_full`.
    pub dropped: DropCounters,
    /// Key rings taken from registered members ([`McasterMsg::KeyRing`]).
    pub rings_taken: u64,
    /// Rmcast NACKs from uc members answered (wholly or partly) from the
    /// cache.
    pub nacks_answered: u64,
    /// Cached datagrams resent (unchanged) to NACKers.
    pub nack_resends: u64,
    /// Cached datagrams asked for again by a member they had already been
    /// resent to. The cached copy is resent once more, and the NACK also
    /// goes upstream, so the sender retransmits a freshly sealed copy: the
    /// cached one may have been lost, or, with a cluster key, be refused by
    /// the member's replay window (its counter is older than the window).
    pub nack_repeats: u64,
    /// Rmcast NACKs from uc members forwarded to the group (unchanged).
    pub nacks_forwarded: u64,
    /// Rmcast NACKs from uc members not forwarded: fully answered from the
    /// cache, or aggregated with an earlier NACK still in the NACK table.
    pub nacks_suppressed: u64,
    /// Rmcast datagrams whose body is not a well-formed envelope (does not
    /// decode, names another group than the header, or an ill-formed
    /// NACK): forwarded unchanged, not fed to the cache.
    pub rmcast_malformed: u64,
}

/// One member of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Member {
    kind: ReceiveMode,
    expires: Instant,
}

/// One group (figure 11's `struct group`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Group {
    name: String,
    members: BTreeMap<NodeId, Member>,
}

/// A read-only view of one group, for status output and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's address.
    pub group: NodeId,
    /// Its name.
    pub name: String,
    /// Its members, in address order, with their kind.
    pub members: Vec<(NodeId, ReceiveMode)>,
}

/// The mcaster's protocol core; see [`crate::mcaster`].
#[derive(Debug)]
pub struct Mcaster {
    local: NodeId,
    config: McasterConfig,
    groups: BTreeMap<NodeId, Group>,
    /// Name to address, so that one name names one group.
    names: BTreeMap<String, NodeId>,
    /// (expiry, group, member) of every member: the next expiry is first.
    expiry: BTreeSet<(Instant, NodeId, NodeId)>,
    out: VecDeque<Transmit>,
    events: VecDeque<McasterEvent>,
    counters: McasterCounters,
    /// NACK aggregation and the retransmission cache (decoded packets).
    nack_cache: NackCache,
    /// The original sealed datagrams of cached data packets, resent
    /// unchanged.
    raw: RawCache,
    /// Per sender: the incarnation and epoch of the last key ring taken.
    ring_epochs: BTreeMap<NodeId, (Incarnation, u64)>,
}

impl Mcaster {
    /// A relay at `local` (the address members send to) with `config`.
    pub fn new(local: NodeId, config: McasterConfig) -> Self {
        Mcaster {
            local,
            groups: BTreeMap::new(),
            names: BTreeMap::new(),
            expiry: BTreeSet::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            counters: McasterCounters::default(),
            nack_cache: NackCache::new(config.nack_cache.clone()),
            raw: RawCache::new(
                config.nack_cache.cache_packets,
                config.nack_cache.cache_bytes,
            ),
            ring_epochs: BTreeMap::new(),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &McasterConfig {
        &self.config
    }

    /// The counters.
    pub fn counters(&self) -> &McasterCounters {
        &self.counters
    }

    /// The rmcast NACK aggregation state (its own stats, cache and
    /// NACK-table sizes).
    pub fn nack_cache(&self) -> &NackCache {
        &self.nack_cache
    }

    /// Raw datagrams kept for resending, and their bytes.
    pub fn raw_cached(&self) -> (usize, usize) {
        (self.raw.map.len(), self.raw.bytes)
    }

    /// Number of groups served.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Number of members over all groups.
    pub fn member_count(&self) -> usize {
        self.expiry.len()
    }

    /// One group, if served.
    pub fn group(&self, group: NodeId) -> Option<GroupInfo> {
        self.groups.get(&group).map(|g| GroupInfo {
            group,
            name: g.name.clone(),
            members: g.members.iter().map(|(m, i)| (*m, i.kind)).collect(),
        })
    }

    /// Every group, in address order.
    pub fn groups(&self) -> Vec<GroupInfo> {
        self.groups.keys().filter_map(|g| self.group(*g)).collect()
    }

    fn push_out(&mut self, t: Transmit) {
        if self.out.len() >= MAX_PENDING {
            self.counters.dropped.record_kind("outbox_full");
        } else {
            self.out.push_back(t);
        }
    }

    fn push_event(&mut self, e: McasterEvent) {
        if self.events.len() >= MAX_PENDING {
            self.counters.dropped.record_kind("events_full");
        } else {
            self.events.push_back(e);
        }
    }

    fn reply(&mut self, to: NodeId, group: NodeId, answer: Answer) {
        *self.counters.answers.entry(answer.name()).or_insert(0) += 1;
        if let Ok(body) = encode_body(&McasterMsg::Reply { group, answer }) {
            self.push_out(Transmit::new(to, ProtocolId::Mcaster, body));
        }
    }

    fn handle_control(&mut self, now: Instant, p: &Incoming<'_>) {
        let msg = match decode_body::<McasterMsg>(p.body) {
            Ok(m) => m,
            Err(_) => {
                self.counters.dropped.record_kind("malformed_control");
                return;
            }
        };
        // The member's address is where its copies go: it must be the
        // address the request came from (a header naming someone else is
        // forged, or came through another relay).
        if p.peer != p.source || is_group(p.source) {
            self.counters.dropped.record_kind("relayed_control");
            return;
        }
        match msg {
            McasterMsg::JoinGroup { group, name, kind } => {
                self.counters.control += 1;
                let answer = self.join(now, p.source, group, name, kind);
                self.reply(p.source, group, answer);
            }
            McasterMsg::LeaveGroup { group } => {
                self.counters.control += 1;
                let answer = self.leave(p.source, group);
                self.reply(p.source, group, answer);
            }
            McasterMsg::KeyRing { epoch, ring } => self.key_ring(p, epoch, &ring),
            McasterMsg::Reply { .. } | McasterMsg::KeyRingAck { .. } => {
                self.counters.dropped.record_kind("unexpected_reply")
            }
        }
    }

    /// A key ring from a member: taken only from one registered in some
    /// group (the datagram opened under our ring, and came straight from
    /// its sender), acknowledged, and reported to the daemon unless it is
    /// older than the last one that sender gave.
    fn key_ring(&mut self, p: &Incoming<'_>, epoch: u64, ring: &SharedRing) {
        let from = p.source;
        if !self.groups.values().any(|g| g.members.contains_key(&from)) {
            self.counters.dropped.record_kind("ring_not_member");
            return;
        }
        let stale = self
            .ring_epochs
            .get(&from)
            .is_some_and(|(inc, last)| *inc == p.source_incarnation && epoch <= *last);
        if !stale {
            let Ok(ring) = ring.ring() else {
                self.counters.dropped.record_kind("bad_ring");
                return;
            };
            if self.ring_epochs.len() < MAX_RING_SOURCES || self.ring_epochs.contains_key(&from) {
                self.ring_epochs.insert(from, (p.source_incarnation, epoch));
            }
            self.counters.rings_taken += 1;
            self.push_event(McasterEvent::KeyRing { from, ring });
        } else {
            self.counters.dropped.record_kind("stale_ring");
        }
        if let Ok(body) = encode_body(&McasterMsg::KeyRingAck { epoch }) {
            self.push_out(Transmit::new(from, ProtocolId::Mcaster, body));
        }
    }

    /// Figure 7, lines 9-17, with soft state: a join of a listed member
    /// refreshes it.
    fn join(
        &mut self,
        now: Instant,
        member: NodeId,
        group: NodeId,
        name: String,
        kind: ReceiveMode,
    ) -> Answer {
        if !is_group(group) || name.is_empty() || name.len() > MAX_NAME_LEN {
            return Answer::NegJoin;
        }
        if kind == ReceiveMode::Mc && !self.config.multicast {
            return Answer::NegJoin;
        }
        let expires = now.saturating_add(self.config.member_ttl);
        let max_members = self.config.max_members;
        if let Some(g) = self.groups.get_mut(&group) {
            if g.name != name {
                return Answer::GroupExists;
            }
            if let Some(m) = g.members.get_mut(&member) {
                self.expiry.remove(&(m.expires, group, member));
                m.expires = expires;
                m.kind = kind;
                self.expiry.insert((expires, group, member));
                return Answer::DupMember;
            }
            if g.members.len() >= max_members {
                return Answer::NegJoin;
            }
            g.members.insert(member, Member { kind, expires });
        } else {
            if self.names.contains_key(&name) {
                return Answer::GroupExists;
            }
            if self.groups.len() >= self.config.max_groups || max_members == 0 {
                return Answer::NegJoin;
            }
            let mut members = BTreeMap::new();
            members.insert(member, Member { kind, expires });
            self.names.insert(name.clone(), group);
            self.groups.insert(
                group,
                Group {
                    name: name.clone(),
                    members,
                },
            );
            self.push_event(McasterEvent::GroupCreated { group, name });
        }
        self.expiry.insert((expires, group, member));
        self.push_event(McasterEvent::MemberJoined {
            group,
            member,
            kind,
        });
        Answer::JoinAck
    }

    /// Figure 7, lines 18-23.
    fn leave(&mut self, member: NodeId, group: NodeId) -> Answer {
        if !is_group(group) {
            return Answer::NegLeave;
        }
        let Some(g) = self.groups.get(&group) else {
            return Answer::NoGroup;
        };
        if !g.members.contains_key(&member) {
            return Answer::NoMember;
        }
        self.remove_member(group, member);
        self.push_event(McasterEvent::MemberLeft { group, member });
        self.delete_if_empty(group);
        Answer::LeaveAck
    }

    fn remove_member(&mut self, group: NodeId, member: NodeId) {
        if let Some(g) = self.groups.get_mut(&group) {
            if let Some(m) = g.members.remove(&member) {
                self.expiry.remove(&(m.expires, group, member));
            }
        }
    }

    /// A group disappears with its last member.
    fn delete_if_empty(&mut self, group: NodeId) {
        if self
            .groups
            .get(&group)
            .is_some_and(|g| g.members.is_empty())
        {
            if let Some(g) = self.groups.remove(&group) {
                self.names.remove(&g.name);
                self.push_event(McasterEvent::GroupDeleted {
                    group,
                    name: g.name,
                });
            }
        }
    }

    /// Figure 8: `mcast(msg, sender)`.
    fn relay(&mut self, now: Instant, p: &Incoming<'_>) {
        if p.peer == self.local {
            // Our own class D copy, looped back to us.
            self.counters.dropped.record_kind("own_echo");
            return;
        }
        if !is_group(p.destination) {
            self.counters.dropped.record_kind("not_group");
            return;
        }
        if p.peer != p.source {
            // Already relayed (by another mcaster): relaying it again could
            // loop; and a header naming another sender than the UDP peer
            // is not ours to believe.
            self.counters.dropped.record_kind("relayed_data");
            return;
        }
        if p.datagram.is_empty() {
            self.counters.dropped.record_kind("no_datagram");
            return;
        }
        let Some(g) = self.groups.get(&p.destination) else {
            self.counters.dropped.record_kind("unknown_group");
            return;
        };
        let Some(sender) = g.members.get(&p.source) else {
            self.counters.dropped.record_kind("not_member");
            return;
        };
        let mut targets: Vec<NodeId> = Vec::new();
        let mut class_d = false;
        for (addr, m) in &g.members {
            if *addr == p.source {
                continue;
            }
            match (sender.kind, m.kind) {
                // A multicast sender already reached the mc members.
                (ReceiveMode::Mc, ReceiveMode::Mc) => {}
                // One class D copy for all mc members (`mcflag`).
                (ReceiveMode::Uc, ReceiveMode::Mc) => class_d = true,
                (_, ReceiveMode::Uc) => targets.push(*addr),
            }
        }
        let sender_kind = sender.kind;
        let class_d = class_d && self.config.multicast;
        if p.protocol == ProtocolId::Rmcast && !self.rmcast(now, p, sender_kind) {
            return;
        }
        self.counters.relayed += 1;
        let copies = targets.len() as u64 + u64::from(class_d);
        if copies == 0 {
            self.counters.no_receivers += 1;
        }
        self.counters.copies += copies;
        if class_d {
            self.counters.multicast_copies += 1;
            self.push_out(Transmit::forward(
                p.destination,
                p.protocol,
                p.datagram.to_vec(),
            ));
        }
        for t in targets {
            self.push_out(Transmit::forward(t, p.protocol, p.datagram.to_vec()));
        }
    }
}

impl Mcaster {
    /// An rmcast datagram about to be relayed (sender checked): feeds the
    /// NACK aggregation, resends cached datagrams to a uc NACKer. Returns
    /// whether to relay the datagram as usual.
    fn rmcast(&mut self, now: Instant, p: &Incoming<'_>, sender_kind: ReceiveMode) -> bool {
        let Ok(env) = Envelope::decode(p.body) else {
            self.counters.rmcast_malformed += 1;
            return true;
        };
        if env.group != p.destination {
            self.counters.rmcast_malformed += 1;
            return true;
        }
        match &env.packet {
            RmcastPacket::Nack(n) if !n.is_well_formed() => {
                self.counters.rmcast_malformed += 1;
                return true;
            }
            // An mc member's NACK already reached the mc members and (if
            // mc) the sender by multicast: relay it to the uc members as
            // before, without answering it.
            RmcastPacket::Nack(_) if sender_kind != ReceiveMode::Uc => return true,
            // Only reliable data is kept raw: the original bytes of a timed
            // fragment carry the time-to-live it had when first sent, and
            // resending them later would stretch its life.
            RmcastPacket::Data(d) if d.ttl_ms.is_none() => {
                let key = (env.group, p.source, p.source_incarnation, d.seq);
                self.raw.insert(key, p.datagram);
            }
            _ => {}
        }
        let decision = self
            .nack_cache
            .handle(now, p.source, p.source_incarnation, &env);
        if !matches!(env.packet, RmcastPacket::Nack(_)) {
            return true;
        }
        let mut all_served = true;
        let mut resends = 0u64;
        let mut repeats = 0u64;
        for r in &decision.resend {
            let RmcastPacket::Data(d) = &r.packet.packet else {
                all_served = false;
                continue;
            };
            let key = (r.packet.group, r.from, r.from_incarnation, d.seq);
            let Some(first) = self.raw.mark_resent(&key, r.to) else {
                all_served = false;
                continue;
            };
            if !first {
                // Our copy did not do: the sender must retransmit.
                repeats += 1;
                all_served = false;
            }
            if let Some(bytes) = self.raw.get(&key) {
                let t = Transmit::forward(r.to, ProtocolId::Rmcast, bytes.to_vec());
                self.push_out(t);
                resends += 1;
            }
        }
        self.counters.nack_resends += resends;
        self.counters.nack_repeats += repeats;
        if resends > 0 {
            self.counters.nacks_answered += 1;
        }
        // `Replace` would need a re-sealed (trimmed) NACK, which only its
        // sender can make: the original goes instead. A `Drop` stands only
        // if every cached answer could be resent unchanged.
        let forward = !(decision.forward == Forward::Drop && all_served);
        if forward {
            self.counters.nacks_forwarded += 1;
        } else {
            self.counters.nacks_suppressed += 1;
        }
        forward
    }
}

/// (group, sender, sender incarnation, sequence).
type RawKey = (NodeId, NodeId, Incarnation, u64);

/// Most members one cached datagram remembers having been resent to; a
/// NACK from a further member counts as a repeat (it also goes upstream),
/// which is always safe.
pub const MAX_RESENT_TO: usize = 16;

/// One cached datagram.
#[derive(Debug)]
struct RawEntry {
    /// Insertion order (for eviction).
    order: u64,
    /// The original sealed datagram.
    datagram: Vec<u8>,
    /// The members it was resent to (at most [`MAX_RESENT_TO`]).
    resent_to: BTreeSet<NodeId>,
}

/// The original sealed datagrams of cached rmcast data packets, bounded by
/// packets and bytes (whole datagrams), oldest evicted first.
#[derive(Debug)]
struct RawCache {
    max_packets: usize,
    max_bytes: usize,
    map: BTreeMap<RawKey, RawEntry>,
    order: BTreeMap<u64, RawKey>,
    next: u64,
    bytes: usize,
}

impl RawCache {
    fn new(max_packets: usize, max_bytes: usize) -> Self {
        RawCache {
            max_packets,
            max_bytes,
            map: BTreeMap::new(),
            order: BTreeMap::new(),
            next: 0,
            bytes: 0,
        }
    }

    fn get(&self, key: &RawKey) -> Option<&[u8]> {
        self.map.get(key).map(|e| e.datagram.as_slice())
    }

    /// Records that the datagram is resent to `to`: `None` if it is not
    /// cached, else whether this is the first resend to `to` (`false` also
    /// when the record is full).
    fn mark_resent(&mut self, key: &RawKey, to: NodeId) -> Option<bool> {
        let e = self.map.get_mut(key)?;
        if e.resent_to.contains(&to) || e.resent_to.len() >= MAX_RESENT_TO {
            return Some(false);
        }
        e.resent_to.insert(to);
        Some(true)
    }

    fn remove(&mut self, key: &RawKey) {
        if let Some(e) = self.map.remove(key) {
            self.order.remove(&e.order);
            self.bytes = self.bytes.saturating_sub(e.datagram.len());
        }
    }

    fn insert(&mut self, key: RawKey, datagram: &[u8]) {
        self.remove(&key);
        let len = datagram.len();
        if len == 0 || len > self.max_bytes || self.max_packets == 0 {
            return;
        }
        while self.map.len() >= self.max_packets || self.bytes.saturating_add(len) > self.max_bytes
        {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            if let Some(e) = self.map.remove(&victim) {
                self.bytes = self.bytes.saturating_sub(e.datagram.len());
            }
        }
        let order = self.next;
        self.next += 1;
        self.order.insert(order, key);
        self.bytes += len;
        self.map.insert(
            key,
            RawEntry {
                order,
                datagram: datagram.to_vec(),
                resent_to: BTreeSet::new(),
            },
        );
    }
}

/// Whether `id` is a multicast group address.
fn is_group(id: NodeId) -> bool {
    id.addr().ip().is_multicast()
}

impl Core for Mcaster {
    type Event = McasterEvent;

    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        if packet.protocol == ProtocolId::Mcaster {
            self.handle_control(now, &packet);
        } else {
            self.relay(now, &packet);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, group, member)) = self.expiry.first() {
            if at > now {
                break;
            }
            self.expiry.pop_first();
            let live = self
                .groups
                .get(&group)
                .and_then(|g| g.members.get(&member))
                .is_some_and(|m| m.expires == at);
            if live {
                self.remove_member(group, member);
                self.counters.expired += 1;
                self.push_event(McasterEvent::MemberExpired { group, member });
                self.delete_if_empty(group);
            }
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_event(&mut self) -> Option<McasterEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.expiry.first().map(|(at, _, _)| *at)
    }
}
