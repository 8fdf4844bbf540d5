//! Unit tests of the rmcast core: a zero-latency harness in which a test
//! decides, packet by packet, what is lost, plus direct injection of
//! forged packets.

use super::*;
use crate::rpc::Bytes;
use crate::sansio::{Core, Incoming};

fn n(i: u8) -> NodeId {
    NodeId::v4(10, 0, 0, i, 7000)
}

fn group() -> NodeId {
    NodeId::v4(239, 1, 1, 1, 7000)
}

fn inc(node: NodeId, life: u8) -> Incarnation {
    let b = match node.addr().ip() {
        std::net::IpAddr::V4(v4) => v4.octets()[3],
        std::net::IpAddr::V6(_) => 0,
    };
    Incarnation::from_parts(1000 + u64::from(life), [b; 10])
}

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

/// Parcel bytes: a recognizable pattern per tag.
fn payload(tag: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (tag.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

type Filter = Box<dyn FnMut(NodeId, NodeId, &RmcastPacket) -> bool>;

/// Nodes on a zero-latency network: a group packet goes to every node in
/// `in_group` except its source, each copy through `filter` (false: lost).
struct Net {
    now: Instant,
    config: RmcastConfig,
    nodes: BTreeMap<NodeId, Rmcast>,
    lives: BTreeMap<NodeId, u8>,
    in_group: BTreeSet<NodeId>,
    events: Vec<(Instant, NodeId, RmcastEvent)>,
    /// Every packet sent: (time, source, destination as addressed, packet).
    wire: Vec<(Instant, NodeId, NodeId, RmcastPacket)>,
    filter: Filter,
}

impl Net {
    /// Nodes `1..=count`, all members of one view.
    fn new(count: u8, config: RmcastConfig) -> Net {
        let mut net = Net {
            now: Instant::ZERO,
            config,
            nodes: BTreeMap::new(),
            lives: BTreeMap::new(),
            in_group: BTreeSet::new(),
            events: Vec::new(),
            wire: Vec::new(),
            filter: Box::new(|_, _, _| true),
        };
        for i in 1..=count {
            net.start(n(i));
        }
        let all: BTreeSet<NodeId> = (1..=count).map(n).collect();
        net.view(&all);
        net
    }

    fn start(&mut self, id: NodeId) {
        let life = self.lives.entry(id).and_modify(|l| *l += 1).or_insert(0);
        let core = Rmcast::new(
            id,
            inc(id, *life),
            group(),
            self.config.clone(),
            u64::from(*life) * 1000 + u64::from(inc(id, 0).as_uuid().as_bytes()[15]),
        );
        self.nodes.insert(id, core);
        self.in_group.insert(id);
    }

    fn inc_of(&self, id: NodeId) -> Incarnation {
        self.nodes[&id].incarnation()
    }

    /// Installs `view` on every node in it (and in the group).
    fn view(&mut self, view: &BTreeSet<NodeId>) {
        let now = self.now;
        for id in view {
            if let Some(c) = self.nodes.get_mut(id) {
                c.set_receivers(now, view.clone());
            }
        }
        self.pump();
    }

    fn send(&mut self, from: NodeId, p: Vec<u8>, mode: Delivery) -> Result<ParcelId, SendError> {
        let now = self.now;
        let r = self.nodes.get_mut(&from).expect("node").send(now, p, mode);
        self.pump();
        r
    }

    fn check_invariants(&self) {
        for (id, c) in &self.nodes {
            let i = c.sender_info();
            if let Some(m) = i.max_sent {
                assert!(
                    m < i.limit,
                    "{id}: sent {m} beyond the MAB limit {}",
                    i.limit
                );
            }
            assert!(
                i.next_tx <= i.next_seq && i.base <= i.next_tx,
                "{id}: {i:?}"
            );
            for r in c.receivers() {
                let Some(ri) = c.receiver_info(*r) else {
                    continue;
                };
                assert!(ri.mab <= ri.acked.max(ri.start) + u64::from(c.config().window));
                // What the sender believes was advertised, the receiver did.
                if let (Some(rc), Some(epoch)) = (self.nodes.get(r), ri.epoch) {
                    if let Some(s) = rc.stream_info(*id) {
                        if s.epoch == epoch && Some(rc.incarnation()) == ri.incarnation {
                            if let Some((_, _, adv)) = s.synced {
                                assert!(ri.mab <= adv, "{id} thinks {r} advertised {}", ri.mab);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Delivers every transmit (and what it causes) at the current time.
    fn pump(&mut self) {
        loop {
            let mut batch = Vec::new();
            for (id, c) in self.nodes.iter_mut() {
                while let Some(t) = c.poll_transmit() {
                    batch.push((*id, c.incarnation(), t));
                }
                while let Some(e) = c.poll_event() {
                    self.events.push((self.now, *id, e));
                }
            }
            self.check_invariants();
            if batch.is_empty() {
                break;
            }
            for (from, from_inc, t) in batch {
                let env = Envelope::decode(&t.body).expect("own packets decode");
                self.wire
                    .push((self.now, from, t.destination, env.packet.clone()));
                let dests: Vec<NodeId> = if t.destination == group() {
                    self.in_group
                        .iter()
                        .filter(|d| **d != from)
                        .copied()
                        .collect()
                } else {
                    vec![t.destination]
                };
                for to in dests {
                    if !(self.filter)(from, to, &env.packet) {
                        continue;
                    }
                    if let Some(c) = self.nodes.get_mut(&to) {
                        c.handle_packet(
                            self.now,
                            Incoming::direct(
                                from,
                                from_inc,
                                t.destination,
                                ProtocolId::Rmcast,
                                &t.body,
                            ),
                        );
                    }
                }
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.pump();
            let next = self.nodes.values().filter_map(|c| c.poll_timeout()).min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for c in self.nodes.values_mut() {
                        if c.poll_timeout().is_some_and(|t| t <= now) {
                            c.handle_timeout(now);
                        }
                    }
                }
                _ => {
                    self.now = end;
                    self.pump();
                    return;
                }
            }
        }
    }

    /// Parcels delivered at `at` from `from`: (parcel, mode, payload).
    fn delivered(&self, at: NodeId, from: NodeId) -> Vec<(u64, Delivery, Vec<u8>)> {
        self.events
            .iter()
            .filter_map(|(_, node, e)| match e {
                RmcastEvent::Delivered {
                    from: f,
                    parcel,
                    mode,
                    payload,
                    ..
                } if *node == at && *f == from => Some((parcel.0, *mode, payload.clone())),
                _ => None,
            })
            .collect()
    }

    fn ids(&self, at: NodeId, from: NodeId) -> Vec<u64> {
        self.delivered(at, from).into_iter().map(|d| d.0).collect()
    }

    fn count_events(&self, at: NodeId, f: impl Fn(&RmcastEvent) -> bool) -> usize {
        self.events
            .iter()
            .filter(|(_, node, e)| *node == at && f(e))
            .count()
    }

    fn stats(&self, id: NodeId) -> &RmcastStats {
        self.nodes[&id].stats()
    }

    fn sent_since(&self, t: Instant) -> usize {
        self.wire.iter().filter(|(at, ..)| *at >= t).count()
    }

    /// Injects a forged packet at `to` as if from `from`.
    fn inject(
        &mut self,
        from: NodeId,
        from_inc: Incarnation,
        to: NodeId,
        dest: NodeId,
        p: RmcastPacket,
    ) {
        let body = Envelope {
            group: group(),
            packet: p,
        }
        .encode()
        .expect("encodes");
        self.inject_raw(from, from_inc, to, dest, &body);
    }

    fn inject_raw(
        &mut self,
        from: NodeId,
        from_inc: Incarnation,
        to: NodeId,
        dest: NodeId,
        body: &[u8],
    ) {
        let now = self.now;
        if let Some(c) = self.nodes.get_mut(&to) {
            c.handle_packet(
                now,
                Incoming::direct(from, from_inc, dest, ProtocolId::Rmcast, body),
            );
        }
        self.pump();
    }
}

fn small_window() -> RmcastConfig {
    RmcastConfig {
        window: 8,
        ..RmcastConfig::default()
    }
}

fn is_data(p: &RmcastPacket) -> Option<&Data> {
    match p {
        RmcastPacket::Data(d) => Some(d),
        _ => None,
    }
}

#[test]
fn lossless_delivery_in_order_intact_and_idle_is_silent() {
    let mut net = Net::new(4, RmcastConfig::default());
    let sizes = [0usize, 1, 1280, 1281, 5000, 40_000];
    let mut ids = Vec::new();
    for (i, len) in sizes.iter().enumerate() {
        ids.push(
            net.send(n(1), payload(i as u64, *len), Delivery::Reliable)
                .unwrap()
                .0,
        );
        net.run_for(ms(1));
    }
    net.run_for(ms(200));
    for r in 2..=4 {
        let got = net.delivered(n(r), n(1));
        assert_eq!(got.len(), sizes.len());
        for (i, (id, mode, p)) in got.iter().enumerate() {
            assert_eq!(*id, ids[i]);
            assert_eq!(*mode, Delivery::Reliable);
            assert_eq!(*p, payload(i as u64, sizes[i]));
        }
    }
    assert_eq!(
        net.count_events(n(1), |e| matches!(e, RmcastEvent::Acknowledged { .. })),
        sizes.len()
    );
    assert_eq!(net.nodes[&n(1)].sender_info().held_parcels, 0);
    // An idle group costs nothing.
    let t = net.now;
    net.run_for(Duration::from_secs(10));
    assert_eq!(net.sent_since(t), 0, "idle traffic");
    assert_eq!(net.nodes[&n(1)].poll_timeout(), None);
}

#[test]
fn gap_is_nacked_and_repaired_from_the_window() {
    let mut net = Net::new(3, RmcastConfig::default());
    net.send(n(1), payload(0, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(50));
    // The first transmission of sequence 1 is lost on the way to node 2.
    let mut lost = false;
    net.filter = Box::new(move |_, to, p| {
        if let Some(d) = is_data(p) {
            if to == n(2) && d.seq == 1 && !d.retransmission && !lost {
                lost = true;
                return false;
            }
        }
        true
    });
    for i in 1..4 {
        net.send(n(1), payload(i, 10), Delivery::Reliable).unwrap();
    }
    net.run_for(ms(200));
    assert_eq!(net.ids(n(2), n(1)), vec![0, 1, 2, 3]);
    assert_eq!(net.ids(n(3), n(1)), vec![0, 1, 2, 3]);
    assert_eq!(net.stats(n(2)).nacks_sent, 1);
    assert_eq!(net.stats(n(3)).nacks_sent, 0);
    assert_eq!(net.stats(n(1)).retransmitted, 1);
    assert!(
        net.stats(n(3)).duplicates >= 1,
        "node 3 sees the resend too"
    );
}

#[test]
fn nacks_are_suppressed_by_other_receivers() {
    let mut net = Net::new(5, RmcastConfig::default());
    net.send(n(1), payload(0, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(50));
    net.filter = Box::new(|_, _, p| !is_data(p).is_some_and(|d| d.seq == 1 && !d.retransmission));
    for i in 1..3 {
        net.send(n(1), payload(i, 10), Delivery::Reliable).unwrap();
    }
    net.run_for(ms(200));
    let nacks: u64 = (2..=5).map(|r| net.stats(n(r)).nacks_sent).sum();
    let suppressed: u64 = (2..=5).map(|r| net.stats(n(r)).nacks_suppressed).sum();
    assert_eq!(nacks, 1, "one NACK for a loss every receiver shares");
    assert_eq!(suppressed, 3);
    assert_eq!(net.stats(n(1)).retransmitted, 1);
    for r in 2..=5 {
        assert_eq!(net.ids(n(r), n(1)), vec![0, 1, 2]);
    }
}

#[test]
fn retransmission_holdoff_answers_crossing_nacks_once() {
    let mut net = Net::new(3, RmcastConfig::default());
    // Node 3 never acknowledges, so the sender keeps everything.
    net.filter = Box::new(|from, _, p| !(from == n(3) && matches!(p, RmcastPacket::Status(_))));
    for i in 0..3 {
        net.send(n(1), payload(i, 10), Delivery::Reliable).unwrap();
    }
    net.run_for(ms(50));
    let s = net.inc_of(n(1));
    let nack_from = |net: &Net, r: NodeId| Nack {
        sender: n(1),
        sender_incarnation: s,
        epoch: net.nodes[&r].stream_info(n(1)).unwrap().epoch,
        ranges: vec![(1, 2)],
    };
    let before = net.stats(n(1)).retransmitted;
    // Two NACKs for one loss cross: one retransmission.
    let (a, b) = (nack_from(&net, n(2)), nack_from(&net, n(3)));
    let (ia, ib) = (net.inc_of(n(2)), net.inc_of(n(3)));
    net.inject(n(2), ia, n(1), group(), RmcastPacket::Nack(a.clone()));
    net.inject(n(3), ib, n(1), group(), RmcastPacket::Nack(b));
    assert_eq!(net.stats(n(1)).retransmitted, before + 1);
    // After the hold-off, a repeated NACK is answered again.
    net.run_for(ms(6));
    net.inject(n(2), ia, n(1), group(), RmcastPacket::Nack(a));
    assert_eq!(net.stats(n(1)).retransmitted, before + 2);
    assert_eq!(net.stats(n(1)).nacks_received, 3);
}

#[test]
fn tail_loss_is_found_by_sync() {
    let mut net = Net::new(3, RmcastConfig::default());
    net.send(n(1), payload(0, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(50));
    net.filter = Box::new(|_, to, p| {
        !(to == n(2) && is_data(p).is_some_and(|d| d.seq == 3 && !d.retransmission))
    });
    net.send(n(1), payload(1, 3000), Delivery::Reliable)
        .unwrap();
    net.run_for(ms(300));
    assert_eq!(net.ids(n(2), n(1)), vec![0, 1]);
    assert!(net.stats(n(1)).syncs_sent >= 1);
    assert_eq!(net.stats(n(1)).retransmitted, 1);
    let t = net.now;
    net.run_for(Duration::from_secs(5));
    assert_eq!(net.sent_since(t), 0);
}

#[test]
fn mab_is_never_exceeded_and_the_window_advances() {
    let mut net = Net::new(3, small_window());
    net.send(n(1), payload(0, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(50));
    // Node 3's advertisements are lost: the sender stays within its MAB.
    let blocked = std::rc::Rc::new(std::cell::Cell::new(true));
    let b = blocked.clone();
    net.filter = Box::new(move |from, _, p| {
        !(b.get() && from == n(3) && matches!(p, RmcastPacket::Status(_)))
    });
    for i in 1..=20 {
        net.send(n(1), payload(i, 100), Delivery::Reliable).unwrap();
    }
    net.run_for(ms(500));
    let info = net.nodes[&n(1)].sender_info();
    assert_eq!(info.next_seq, 21);
    assert!(info.max_sent.is_some_and(|m| m < 9), "{info:?}");
    assert_eq!(net.ids(n(2), n(1)).len(), 9);
    assert_eq!(net.ids(n(3), n(1)).len(), 9);
    // No advertisement for a second while data is outstanding: suspect,
    // once, and still waited for.
    net.run_for(Duration::from_secs(2));
    let suspects = |net: &Net| {
        net.count_events(
            n(1),
            |e| matches!(e, RmcastEvent::Suspect { node } if *node == n(3)),
        )
    };
    assert_eq!(suspects(&net), 1);
    assert!(net.nodes[&n(1)].receiver_info(n(3)).unwrap().suspected);
    assert_eq!(net.nodes[&n(1)].sender_info().next_tx, 9);
    blocked.set(false);
    net.run_for(ms(500));
    assert_eq!(net.ids(n(3), n(1)), (0..=20).collect::<Vec<_>>());
    assert_eq!(net.ids(n(2), n(1)), (0..=20).collect::<Vec<_>>());
    assert!(!net.nodes[&n(1)].receiver_info(n(3)).unwrap().suspected);
    assert_eq!(suspects(&net), 1);
}

#[test]
fn removed_receiver_no_longer_holds_the_window() {
    let mut net = Net::new(3, small_window());
    // Node 3 is mute: it never says hello, so the sender may send nothing
    // beyond its start.
    net.filter = Box::new(|from, _, _| from != n(3));
    for i in 0..5 {
        net.send(n(1), payload(i, 10), Delivery::Reliable).unwrap();
    }
    net.run_for(Duration::from_millis(1500));
    assert_eq!(net.nodes[&n(1)].sender_info().max_sent, None);
    assert_eq!(
        net.count_events(
            n(1),
            |e| matches!(e, RmcastEvent::Suspect { node } if *node == n(3))
        ),
        1
    );
    assert!(net.ids(n(2), n(1)).is_empty());
    let view: BTreeSet<NodeId> = [n(1), n(2)].into();
    net.view(&view);
    net.run_for(ms(100));
    assert_eq!(net.ids(n(2), n(1)), vec![0, 1, 2, 3, 4]);
}

#[test]
fn timed_parcels_are_purged_on_both_sides_and_never_delivered_late() {
    let mut net = Net::new(3, RmcastConfig::default());
    // Fragment 1 of parcel 0 never reaches node 2.
    net.filter = Box::new(|_, to, p| {
        !(to == n(2) && is_data(p).is_some_and(|d| d.parcel == 0 && d.index == 1))
    });
    let t0 = net.now;
    net.send(n(1), payload(0, 3000), Delivery::Timed(ms(50)))
        .unwrap();
    net.run_for(ms(200));
    assert_eq!(net.ids(n(3), n(1)), vec![0]);
    assert!(net.ids(n(2), n(1)).is_empty());
    // The sender purged it at its deadline.
    let expired: Vec<Instant> = net
        .events
        .iter()
        .filter(|(_, node, e)| *node == n(1) && matches!(e, RmcastEvent::Expired { .. }))
        .map(|(t, ..)| *t)
        .collect();
    assert_eq!(expired, vec![t0 + ms(50)]);
    assert_eq!(
        net.nodes[&n(2)]
            .stream_info(n(1))
            .unwrap()
            .buffered_fragments,
        0
    );
    assert_eq!(net.nodes[&n(1)].sender_info().held_parcels, 0);
    // Later parcels are not blocked.
    net.send(n(1), payload(1, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(100));
    assert_eq!(net.ids(n(2), n(1)), vec![1]);
    assert_eq!(net.ids(n(3), n(1)), vec![0, 1]);
    // Delivered timed parcels report the time left.
    match net.delivered(n(3), n(1))[0].1 {
        Delivery::Timed(left) => assert!(left <= ms(50)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn whole_timed_parcel_behind_a_gap_is_not_delivered_after_its_deadline() {
    let mut net = Net::new(2, RmcastConfig::default());
    net.send(n(1), payload(9, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(10));
    // Reliable parcel 1 (seq 1) is lost to node 2 for 100 ms; timed parcel
    // 2 (TTL 30 ms) arrives whole behind it.
    let until = net.now + ms(100);
    let clock = std::rc::Rc::new(std::cell::Cell::new(net.now));
    let c = clock.clone();
    net.filter =
        Box::new(move |_, _, p| !(is_data(p).is_some_and(|d| d.seq == 1) && c.get() < until));
    net.send(n(1), payload(1, 10), Delivery::Reliable).unwrap();
    net.send(n(1), payload(2, 10), Delivery::Timed(ms(30)))
        .unwrap();
    net.send(n(1), payload(3, 10), Delivery::Reliable).unwrap();
    for _ in 0..60 {
        net.run_for(ms(5));
        clock.set(net.now);
    }
    assert_eq!(net.ids(n(2), n(1)), vec![0, 1, 3]);
    assert_eq!(net.stats(n(2)).timed_purged, 1);
    assert_eq!(
        net.count_events(
            n(1),
            |e| matches!(e, RmcastEvent::Expired { parcel } if parcel.0 == 2)
        ),
        1
    );
}

#[test]
fn expired_parcel_in_the_queue_is_skipped_with_an_obsolete_notice() {
    let mut net = Net::new(3, small_window());
    net.send(n(1), payload(0, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(50));
    let blocked = std::rc::Rc::new(std::cell::Cell::new(true));
    let b = blocked.clone();
    net.filter = Box::new(move |from, _, p| {
        !(b.get() && from == n(3) && matches!(p, RmcastPacket::Status(_)))
    });
    // 8 fill the window; the timed one waits in the queue and expires.
    for i in 1..=8 {
        net.send(n(1), payload(i, 10), Delivery::Reliable).unwrap();
    }
    net.send(n(1), payload(9, 3000), Delivery::Timed(ms(20)))
        .unwrap();
    net.send(n(1), payload(10, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(100));
    assert_eq!(net.stats(n(1)).parcels_expired, 1);
    blocked.set(false);
    net.run_for(ms(300));
    let want: Vec<u64> = (0..=8).chain([10]).collect();
    assert_eq!(net.ids(n(2), n(1)), want);
    assert_eq!(net.ids(n(3), n(1)), want);
    // The timed parcel's sequences were never transmitted.
    assert!(!net
        .wire
        .iter()
        .any(|(_, _, _, p)| is_data(p).is_some_and(|d| d.parcel == 9)));
    assert!(net
        .wire
        .iter()
        .any(|(_, _, _, p)| matches!(p, RmcastPacket::Obsolete(o) if o.from == 9 && o.to == 12)));
}

#[test]
fn nack_for_an_expired_parcel_gets_an_obsolete_answer() {
    let mut net = Net::new(3, RmcastConfig::default());
    // Node 2 hears nothing of parcel 0 (and no obsolete notice) until late.
    let open = std::rc::Rc::new(std::cell::Cell::new(false));
    let o = open.clone();
    net.filter = Box::new(move |_, to, p| {
        o.get()
            || to != n(2)
            || !matches!(
                p,
                RmcastPacket::Data(_) | RmcastPacket::Obsolete(_) | RmcastPacket::Sync(_)
            )
    });
    net.send(n(1), payload(0, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(5));
    open.set(true);
    net.run_for(ms(100));
    assert_eq!(net.ids(n(2), n(1)), vec![0]);
    open.set(false);
    net.send(n(1), payload(1, 2000), Delivery::Timed(ms(20)))
        .unwrap();
    net.run_for(ms(50));
    assert_eq!(net.stats(n(1)).parcels_expired, 1);
    open.set(true);
    net.send(n(1), payload(2, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(200));
    assert_eq!(net.ids(n(2), n(1)), vec![0, 2]);
    assert_eq!(net.ids(n(3), n(1)), vec![0, 1, 2]);
    assert!(net.stats(n(1)).obsolete_sent >= 2);
}

#[test]
fn best_effort_is_never_retransmitted_duplicated_or_reordered() {
    let mut net = Net::new(3, RmcastConfig::default());
    net.filter = Box::new(|_, to, p| {
        !(to == n(2) && matches!(p, RmcastPacket::BestEffort(f) if f.parcel == 0 && f.index == 1))
    });
    net.send(n(1), payload(0, 3000), Delivery::BestEffort)
        .unwrap();
    net.send(n(1), payload(1, 10), Delivery::BestEffort)
        .unwrap();
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.ids(n(2), n(1)), vec![1]);
    assert_eq!(net.ids(n(3), n(1)), vec![0, 1]);
    assert_eq!(net.stats(n(1)).retransmitted, 0);
    assert_eq!(net.stats(n(2)).nacks_sent, 0);
    assert_eq!(net.stats(n(2)).best_effort_abandoned, 1);
    assert_eq!(net.delivered(n(3), n(1))[0].2, payload(0, 3000));
    // Duplicates and late fragments are never delivered.
    let s = net.inc_of(n(1));
    for (parcel, index) in [(1, 0), (0, 1), (0, 0)] {
        let f = BestEffortFragment {
            parcel,
            index,
            count: if parcel == 1 { 1 } else { 3 },
            len: if parcel == 1 { 10 } else { 3000 },
            data: Bytes(if parcel == 1 {
                payload(1, 10)
            } else {
                vec![0; 1280]
            }),
        };
        net.inject(n(1), s, n(2), group(), RmcastPacket::BestEffort(f));
    }
    assert_eq!(net.ids(n(2), n(1)), vec![1]);
    // Nothing in best effort holds state for long.
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.nodes[&n(2)]
            .stream_info(n(1))
            .unwrap()
            .best_effort_partials,
        0
    );
}

#[test]
fn best_effort_reassembly_is_bounded() {
    let mut net = Net::new(2, RmcastConfig::default());
    let s = net.inc_of(n(1));
    for parcel in 10..40 {
        let f = BestEffortFragment {
            parcel,
            index: 0,
            count: 800,
            len: 1_000_000,
            data: Bytes(vec![1; 1250]),
        };
        net.inject(n(1), s, n(2), group(), RmcastPacket::BestEffort(f));
        let info = net.nodes[&n(2)].stream_info(n(1)).unwrap();
        assert!(info.best_effort_partials <= 4);
        assert!(info.best_effort_bytes <= 2 << 20);
    }
    assert_eq!(net.stats(n(2)).best_effort_abandoned, 26);
}

#[test]
fn absurd_fragments_and_garbage_are_dropped_and_counted() {
    let mut net = Net::new(2, RmcastConfig::default());
    let s = net.inc_of(n(1));
    let good = Data {
        seq: 5,
        parcel: 1,
        index: 1,
        count: 2,
        len: 2000,
        ttl_ms: None,
        retransmission: false,
        data: Bytes(vec![0; 1000]),
    };
    let cases: Vec<(Data, &str)> = vec![
        (
            Data {
                count: 0,
                ..good.clone()
            },
            "absurd_fragment_index",
        ),
        (
            Data {
                index: 2,
                ..good.clone()
            },
            "absurd_fragment_index",
        ),
        (
            Data {
                seq: 0,
                ..good.clone()
            },
            "absurd_fragment_index",
        ),
        (
            Data {
                len: 2 << 20,
                ..good.clone()
            },
            "parcel_too_large",
        ),
        (
            Data {
                len: u32::MAX,
                count: 8192,
                ..good.clone()
            },
            "parcel_too_large",
        ),
        (
            Data {
                count: 4,
                len: 1200,
                ..good.clone()
            },
            "absurd_fragment_count",
        ),
        (
            Data {
                data: Bytes(vec![0; 2001]),
                ..good.clone()
            },
            "absurd_fragment_size",
        ),
        (
            Data {
                index: 0,
                count: 1,
                len: 10,
                data: Bytes(vec![0; 9]),
                ..good.clone()
            },
            "absurd_fragment_size",
        ),
    ];
    for (d, kind) in cases {
        let before = net.stats(n(2)).drops.get(kind);
        net.inject(n(1), s, n(2), group(), RmcastPacket::Data(d));
        assert_eq!(net.stats(n(2)).drops.get(kind), before + 1, "{kind}");
    }
    let bad_be = BestEffortFragment {
        parcel: 1,
        index: 0,
        count: 5000,
        len: 3000,
        data: Bytes(vec![0; 600]),
    };
    net.inject(n(1), s, n(2), group(), RmcastPacket::BestEffort(bad_be));
    assert_eq!(net.stats(n(2)).drops.get("absurd_fragment_count"), 2);
    // No stream state was created by any of it.
    assert!(net.nodes[&n(2)].stream_info(n(1)).is_none());
    // Garbage, other groups, other protocols, oversized bodies.
    net.inject_raw(n(1), s, n(2), group(), &[0xff; 40]);
    assert_eq!(net.stats(n(2)).drops.get("bad_body"), 1);
    let other = Envelope {
        group: NodeId::v4(239, 9, 9, 9, 1),
        packet: RmcastPacket::Sync(Sync { next: 1 }),
    }
    .encode()
    .unwrap();
    net.inject_raw(n(1), s, n(2), group(), &other);
    assert_eq!(net.stats(n(2)).drops.get("wrong_group"), 1);
    let big = vec![0u8; crate::wire::MAX_BODY + 1];
    net.inject_raw(n(1), s, n(2), group(), &big);
    assert_eq!(net.stats(n(2)).drops.get("oversized_body"), 1);
    let now = net.now;
    net.nodes.get_mut(&n(2)).unwrap().handle_packet(
        now,
        Incoming::direct(n(1), s, group(), ProtocolId::Rpc, &other),
    );
    assert_eq!(net.stats(n(2)).drops.get("wrong_protocol"), 1);
    // Malformed control packets.
    net.inject(
        n(1),
        s,
        n(2),
        group(),
        RmcastPacket::Obsolete(Obsolete { from: 5, to: 5 }),
    );
    assert_eq!(net.stats(n(2)).drops.get("malformed_obsolete"), 1);
    let nack = Nack {
        sender: n(2),
        sender_incarnation: net.inc_of(n(2)),
        epoch: 1,
        ranges: vec![(5, 3)],
    };
    net.inject(n(1), s, n(2), group(), RmcastPacket::Nack(nack));
    assert_eq!(net.stats(n(2)).drops.get("malformed_nack"), 1);
    let nack = Nack {
        sender: n(2),
        sender_incarnation: net.inc_of(n(2)),
        epoch: 1,
        ranges: (0..65).map(|i| (i * 2, i * 2 + 1)).collect(),
    };
    net.inject(n(1), s, n(2), group(), RmcastPacket::Nack(nack));
    assert_eq!(net.stats(n(2)).drops.get("malformed_nack"), 2);
    // Still works afterwards.
    net.send(n(1), payload(1, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(50));
    assert_eq!(net.ids(n(2), n(1)), vec![0]);
}

#[test]
fn receiver_buffers_are_bounded_by_the_window() {
    let mut net = Net::new(2, small_window());
    let s = net.inc_of(n(1));
    let frag = |seq: u64| Data {
        seq,
        parcel: seq,
        index: 0,
        count: 1,
        len: 3,
        ttl_ms: None,
        retransmission: false,
        data: Bytes(vec![1, 2, 3]),
    };
    // Before the handshake: at most a window of pending fragments.
    for seq in 1000..1100 {
        net.inject(n(3), s, n(2), group(), RmcastPacket::Data(frag(seq)));
    }
    // (node 3 is not a member: all dropped)
    assert_eq!(net.stats(n(2)).drops.get("data_from_non_member"), 100);
    net.filter = Box::new(|_, _, p| !matches!(p, RmcastPacket::Start(_)));
    for seq in 1000..1100 {
        net.inject(n(1), s, n(2), group(), RmcastPacket::Data(frag(seq)));
    }
    assert_eq!(
        net.nodes[&n(2)]
            .stream_info(n(1))
            .unwrap()
            .buffered_fragments,
        8
    );
    assert_eq!(net.stats(n(2)).drops.get("pending_full"), 92);
    // After it: nothing beyond next + window.
    net.filter = Box::new(|_, _, _| true);
    net.send(n(1), payload(0, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(50));
    assert_eq!(net.ids(n(2), n(1)), vec![0]);
    for seq in 1..200 {
        net.inject(n(1), s, n(2), group(), RmcastPacket::Data(frag(seq + 5)));
    }
    let info = net.nodes[&n(2)].stream_info(n(1)).unwrap();
    assert!(info.buffered_fragments <= 8, "{info:?}");
    assert!(info.missing <= 8, "{info:?}");
    assert!(net.stats(n(2)).drops.get("beyond_window") > 0);
}

#[test]
fn nacks_for_never_sent_or_purged_sequences_are_dropped_and_counted() {
    let mut net = Net::new(2, RmcastConfig::default());
    for i in 0..3 {
        net.send(n(1), payload(i, 10), Delivery::Reliable).unwrap();
    }
    net.run_for(ms(100));
    let info = net.nodes[&n(1)].sender_info();
    assert_eq!((info.base, info.next_tx), (3, 3));
    let epoch = net.nodes[&n(2)].stream_info(n(1)).unwrap().epoch;
    let r = net.inc_of(n(2));
    let s = net.inc_of(n(1));
    let nack = |ranges| Nack {
        sender: n(1),
        sender_incarnation: s,
        epoch,
        ranges,
    };
    let before = net.stats(n(1)).retransmitted;
    net.inject(
        n(2),
        r,
        n(1),
        group(),
        RmcastPacket::Nack(nack(vec![(1000, 1001)])),
    );
    net.inject(
        n(2),
        r,
        n(1),
        group(),
        RmcastPacket::Nack(nack(vec![(0, 2)])),
    );
    net.inject(
        n(2),
        r,
        n(1),
        group(),
        RmcastPacket::Nack(nack(vec![(u64::MAX - 1, u64::MAX)])),
    );
    assert_eq!(net.stats(n(1)).drops.get("nack_never_sent"), 2);
    assert_eq!(net.stats(n(1)).drops.get("nack_purged"), 1);
    assert_eq!(net.stats(n(1)).retransmitted, before);
    // A NACK naming another incarnation of the sender, and a stale epoch.
    let mut other = nack(vec![(0, 1)]);
    other.sender_incarnation = inc(n(1), 9);
    net.inject(n(2), r, n(1), group(), RmcastPacket::Nack(other));
    assert_eq!(net.stats(n(1)).drops.get("wrong_incarnation"), 1);
    let mut stale = nack(vec![(0, 1)]);
    stale.epoch = 0;
    net.inject(n(2), r, n(1), group(), RmcastPacket::Nack(stale));
    assert_eq!(net.stats(n(1)).drops.get("stale_epoch"), 1);
}

#[test]
fn advertisements_and_nacks_from_non_members_are_dropped() {
    let mut net = Net::new(2, RmcastConfig::default());
    net.start(n(9));
    let s = net.inc_of(n(1));
    let x = net.inc_of(n(9));
    net.inject(
        n(9),
        x,
        n(1),
        n(1),
        RmcastPacket::Status(Status {
            sender_incarnation: s,
            epoch: 1,
            next: 0,
            mab: u64::MAX,
        }),
    );
    net.inject(
        n(9),
        x,
        n(1),
        n(1),
        RmcastPacket::Hello(Hello {
            sender_incarnation: s,
            epoch: 1,
            window: 1 << 20,
        }),
    );
    net.inject(
        n(9),
        x,
        n(1),
        group(),
        RmcastPacket::Nack(Nack {
            sender: n(1),
            sender_incarnation: s,
            epoch: 1,
            ranges: vec![(0, 1)],
        }),
    );
    assert_eq!(net.stats(n(1)).drops.get("from_non_member"), 3);
    assert_eq!(net.stats(n(1)).not_receiver_sent, 3);
    assert!(net.nodes[&n(1)].receiver_info(n(9)).is_none());
    assert_eq!(
        net.nodes[&n(1)].sender_info().limit,
        net.nodes[&n(1)].receiver_info(n(2)).unwrap().mab
    );
    // A Status for another sender incarnation.
    net.inject(
        n(2),
        net.inc_of(n(2)),
        n(1),
        n(1),
        RmcastPacket::Status(Status {
            sender_incarnation: inc(n(1), 7),
            epoch: 1,
            next: 0,
            mab: 10,
        }),
    );
    assert_eq!(net.stats(n(1)).drops.get("wrong_incarnation"), 1);
}

#[test]
fn receiver_added_mid_stream_gets_exactly_what_was_sent_after() {
    let mut net = Net::new(3, small_window());
    // Node 3 listens to the group but is not in the view yet.
    let view12: BTreeSet<NodeId> = [n(1), n(2)].into();
    net.view(&view12);
    net.nodes
        .get_mut(&n(3))
        .unwrap()
        .set_receivers(Instant::ZERO, BTreeSet::new());
    // Node 2's advertisements are held back so parcel 1 waits in the queue.
    let blocked = std::rc::Rc::new(std::cell::Cell::new(true));
    let b = blocked.clone();
    net.filter = Box::new(move |from, _, p| {
        !(b.get() && from == n(2) && matches!(p, RmcastPacket::Status(_)))
    });
    net.send(n(1), payload(0, 8 * 1280), Delivery::Reliable)
        .unwrap();
    net.send(n(1), payload(1, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(50));
    assert_eq!(net.nodes[&n(1)].sender_info().next_tx, 8);
    let all: BTreeSet<NodeId> = [n(1), n(2), n(3)].into();
    net.view(&all);
    assert_eq!(net.nodes[&n(1)].receiver_info(n(3)).unwrap().start, 9);
    net.send(n(1), payload(2, 10), Delivery::Reliable).unwrap();
    net.send(n(1), payload(3, 3000), Delivery::Reliable)
        .unwrap();
    blocked.set(false);
    net.run_for(ms(300));
    assert_eq!(net.ids(n(2), n(1)), vec![0, 1, 2, 3]);
    assert_eq!(net.ids(n(3), n(1)), vec![2, 3]);
    // Node 3 heard parcel 1's fragment but never delivered it.
    assert!(net.stats(n(3)).duplicates + net.stats(n(3)).drops.get("data_from_non_member") > 0);
    assert_eq!(net.delivered(n(3), n(1))[1].2, payload(3, 3000));
}

#[test]
fn readded_receiver_starts_over_and_never_duplicates() {
    let mut net = Net::new(3, RmcastConfig::default());
    net.send(n(1), payload(0, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(50));
    // Node 3 leaves the view everywhere, misses parcel 1, comes back.
    let view12: BTreeSet<NodeId> = [n(1), n(2)].into();
    net.view(&view12);
    net.nodes
        .get_mut(&n(3))
        .unwrap()
        .set_receivers(net.now, BTreeSet::new());
    net.send(n(1), payload(1, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(50));
    let all: BTreeSet<NodeId> = [n(1), n(2), n(3)].into();
    net.view(&all);
    net.send(n(1), payload(2, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(100));
    assert_eq!(net.ids(n(3), n(1)), vec![0, 2]);
    assert_eq!(net.ids(n(2), n(1)), vec![0, 1, 2]);
    // Asymmetric: the sender drops node 3 and takes it back while node 3
    // keeps the sender; node 3 jumps to its new start, nothing twice.
    net.nodes
        .get_mut(&n(1))
        .unwrap()
        .set_receivers(net.now, view12.clone());
    net.send(n(1), payload(3, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(50));
    net.nodes
        .get_mut(&n(1))
        .unwrap()
        .set_receivers(net.now, all.clone());
    net.send(n(1), payload(4, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(200));
    let got = net.ids(n(3), n(1));
    assert!(got == vec![0, 2, 3, 4] || got == vec![0, 2, 4], "{got:?}");
    assert_eq!(net.ids(n(2), n(1)), vec![0, 1, 2, 3, 4]);
    // And it is back in the flow: nothing outstanding.
    let t = net.now;
    net.run_for(Duration::from_secs(3));
    assert_eq!(net.sent_since(t), 0);
}

#[test]
fn receiver_the_sender_dropped_is_told_and_stops_nacking() {
    let mut net = Net::new(3, RmcastConfig::default());
    net.send(n(1), payload(0, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(50));
    // The sender alone removes node 3; node 3 misses a packet and NACKs.
    let view12: BTreeSet<NodeId> = [n(1), n(2)].into();
    net.nodes
        .get_mut(&n(1))
        .unwrap()
        .set_receivers(net.now, view12);
    net.filter = Box::new(|_, to, p| !(to == n(3) && is_data(p).is_some_and(|d| d.seq == 1)));
    for i in 1..3 {
        net.send(n(1), payload(i, 10), Delivery::Reliable).unwrap();
    }
    net.run_for(Duration::from_secs(2));
    assert!(net.stats(n(1)).not_receiver_sent >= 1);
    assert!(net.stats(n(3)).nacks_sent <= 2, "{:?}", net.stats(n(3)));
    assert_eq!(net.ids(n(3), n(1)), vec![0]);
    let t = net.now;
    net.run_for(Duration::from_secs(3));
    assert_eq!(net.sent_since(t), 0);
}

#[test]
fn new_sender_incarnation_is_a_new_stream() {
    let mut net = Net::new(3, RmcastConfig::default());
    let old = net.inc_of(n(1));
    for i in 0..3 {
        net.send(n(1), payload(i, 10), Delivery::Reliable).unwrap();
    }
    net.run_for(ms(50));
    net.start(n(1));
    let all: BTreeSet<NodeId> = [n(1), n(2), n(3)].into();
    let now = net.now;
    net.nodes.get_mut(&n(1)).unwrap().set_receivers(now, all);
    net.send(n(1), payload(100, 10), Delivery::Reliable)
        .unwrap();
    net.run_for(ms(50));
    net.send(n(1), payload(101, 10), Delivery::BestEffort)
        .unwrap();
    net.run_for(ms(50));
    let new = net.inc_of(n(1));
    assert!(new > old);
    for r in [n(2), n(3)] {
        let got: Vec<(u64, Incarnation)> = net
            .events
            .iter()
            .filter_map(|(_, node, e)| match e {
                RmcastEvent::Delivered {
                    from_incarnation,
                    parcel,
                    ..
                } if *node == r => Some((parcel.0, *from_incarnation)),
                _ => None,
            })
            .collect();
        assert_eq!(got, vec![(0, old), (1, old), (2, old), (0, new), (1, new)]);
        assert_eq!(net.stats(r).stream_resets, 1);
    }
    // A late packet of the old life is dropped.
    let d = Data {
        seq: 5,
        parcel: 5,
        index: 0,
        count: 1,
        len: 1,
        ttl_ms: None,
        retransmission: false,
        data: Bytes(vec![1]),
    };
    net.inject(n(1), old, n(2), group(), RmcastPacket::Data(d));
    assert_eq!(net.stats(n(2)).drops.get("stale_incarnation"), 1);
}

#[test]
fn restarted_receiver_is_owed_only_what_follows() {
    let mut net = Net::new(2, RmcastConfig::default());
    for i in 0..2 {
        net.send(n(1), payload(i, 10), Delivery::Reliable).unwrap();
    }
    net.run_for(ms(50));
    net.start(n(2));
    let all: BTreeSet<NodeId> = [n(1), n(2)].into();
    let now = net.now;
    net.nodes.get_mut(&n(2)).unwrap().set_receivers(now, all);
    net.send(n(1), payload(2, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(100));
    // The new life heard parcel 2 before its handshake; the sender, hearing
    // a new incarnation, starts it at its next sequence: parcel 2 is
    // before that, so nothing is delivered, and nothing is outstanding.
    let new_life: Vec<u64> = net
        .events
        .iter()
        .filter_map(|(_, node, e)| match e {
            RmcastEvent::Delivered { parcel, .. } if *node == n(2) => Some(parcel.0),
            _ => None,
        })
        .collect();
    assert_eq!(new_life, vec![0, 1]);
    net.send(n(1), payload(3, 10), Delivery::Reliable).unwrap();
    net.run_for(ms(100));
    assert_eq!(net.ids(n(2), n(1)), vec![0, 1, 3]);
    assert_eq!(net.nodes[&n(1)].sender_info().held_parcels, 0);
}

#[test]
fn send_buffer_backpressure_and_limits() {
    let config = RmcastConfig {
        window: 8,
        send_buffer_parcels: 4,
        max_parcel: 10_000,
        ..RmcastConfig::default()
    };
    let mut net = Net::new(2, config);
    assert_eq!(
        net.send(n(1), vec![0; 10_001], Delivery::Reliable),
        Err(SendError::TooLarge {
            len: 10_001,
            limit: 10_000
        })
    );
    let blocked = std::rc::Rc::new(std::cell::Cell::new(true));
    let b = blocked.clone();
    net.filter = Box::new(move |from, _, _| !(b.get() && from == n(2)));
    for i in 0..4 {
        net.send(n(1), payload(i, 10), Delivery::Reliable).unwrap();
    }
    assert_eq!(
        net.send(n(1), payload(4, 10), Delivery::Reliable),
        Err(SendError::QueueFull)
    );
    // Best effort bypasses the buffer.
    assert!(net.send(n(1), payload(5, 10), Delivery::BestEffort).is_ok());
    blocked.set(false);
    net.run_for(ms(100));
    assert_eq!(
        net.count_events(n(1), |e| matches!(e, RmcastEvent::SendWindowOpen)),
        1
    );
    // The best-effort parcel (id 4) arrived first.
    assert_eq!(net.ids(n(2), n(1)), vec![4, 0, 1, 2, 3]);
    assert_eq!(net.stats(n(1)).queue_full, 1);
}

#[test]
fn empty_receiver_set_acknowledges_at_once() {
    let mut net = Net::new(1, RmcastConfig::default());
    let id = net
        .send(n(1), payload(0, 5000), Delivery::Reliable)
        .unwrap();
    assert_eq!(
        net.count_events(
            n(1),
            |e| matches!(e, RmcastEvent::Acknowledged { parcel } if *parcel == id)
        ),
        1
    );
    assert_eq!(net.nodes[&n(1)].sender_info().held_parcels, 0);
}

#[test]
fn config_is_sanitized() {
    let c = RmcastConfig {
        fragment_payload: 1,
        window: 0,
        max_parcel: usize::MAX,
        send_buffer_bytes: 0,
        sync_max: Duration::ZERO,
        ..RmcastConfig::default()
    }
    .sanitized();
    assert_eq!(c.fragment_payload, MIN_FRAGMENT_PAYLOAD);
    assert_eq!(c.window, 4);
    assert_eq!(c.max_parcel, MAX_MESSAGE);
    assert_eq!(c.send_buffer_bytes, MAX_MESSAGE);
    assert_eq!(c.sync_max, c.sync_interval);
    assert_eq!(RmcastConfig::default().sanitized(), RmcastConfig::default());
}

#[test]
fn state_stays_bounded_over_many_expired_parcels() {
    let mut net = Net::new(3, small_window());
    // Node 3 never gets fragment 1 of any multi-fragment parcel, so every
    // timed one expires at the sender and is skipped there.
    net.filter = Box::new(|_, to, p| !(to == n(3) && is_data(p).is_some_and(|d| d.index == 1)));
    for i in 0..200 {
        let mode = if i % 2 == 0 {
            Delivery::Timed(ms(15))
        } else {
            Delivery::Reliable
        };
        let len = if i % 2 == 0 { 2000 } else { 10 };
        net.send(n(1), payload(i, len), mode).unwrap();
        net.run_for(ms(7));
        let s = net.nodes[&n(1)].sender_info();
        assert!(s.held_parcels <= 8 && s.obsolete_ranges <= 8, "{s:?}");
        for r in [n(2), n(3)] {
            let info = net.nodes[&r].stream_info(n(1)).unwrap();
            assert!(info.skipped_ranges <= 8 && info.missing <= 8, "{info:?}");
            assert!(info.buffered_fragments <= 8, "{info:?}");
        }
    }
    net.run_for(ms(500));
    let odd: Vec<u64> = (0..200).filter(|i| i % 2 == 1).collect();
    assert_eq!(
        net.ids(n(3), n(1)),
        odd,
        "every reliable parcel, no timed one"
    );
    assert_eq!(net.ids(n(2), n(1)), (0..200).collect::<Vec<_>>());
    assert_eq!(net.stats(n(1)).parcels_expired, 100);
    let s = net.nodes[&n(1)].sender_info();
    assert_eq!((s.held_parcels, s.obsolete_ranges), (0, 0), "{s:?}");
}

#[test]
fn random_hostile_packets_never_panic_and_stay_bounded() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut net = Net::new(3, small_window());
    net.start(n(9));
    let w = 8u64;
    let pick_seq = |rng: &mut rand_chacha::ChaCha8Rng| -> u64 {
        match rng.random_range(0..4) {
            0 => rng.random_range(0..32),
            1 => u64::MAX - rng.random_range(0..4),
            2 => rng.random_range(0..1 << 20),
            _ => rng.random(),
        }
    };
    for step in 0..20_000u32 {
        // Real traffic now and then, so that state exists to be attacked.
        if step % 50 == 0 {
            let mode = [
                Delivery::Reliable,
                Delivery::Timed(ms(30)),
                Delivery::BestEffort,
            ][rng.random_range(0..3)];
            let _ = net.send(
                n(1),
                payload(u64::from(step), rng.random_range(0..5000)),
                mode,
            );
        }
        let from = n([1, 2, 3, 9][rng.random_range(0..4)]);
        let to = n([1, 2, 3][rng.random_range(0..3)]);
        if from == to {
            continue;
        }
        let from_inc = if rng.random_bool(0.9) {
            net.inc_of(from)
        } else {
            inc(from, rng.random_range(0..3))
        };
        let any_inc = |rng: &mut rand_chacha::ChaCha8Rng, node: NodeId, net: &Net| {
            if rng.random_bool(0.8) {
                net.inc_of(node)
            } else {
                inc(node, rng.random_range(0..3))
            }
        };
        let count = rng
            .random_range(0..6u32)
            .max(if rng.random_bool(0.1) { 9000 } else { 0 });
        let len = rng.random_range(0..6000u32);
        let data = Bytes(vec![7; rng.random_range(0..1400)]);
        let packet = match rng.random_range(0..10) {
            0 | 1 => RmcastPacket::Data(Data {
                seq: pick_seq(&mut rng),
                parcel: rng.random_range(0..100),
                index: rng.random_range(0..count.max(1) + 1),
                count,
                len,
                ttl_ms: rng.random_bool(0.3).then(|| rng.random_range(0..100)),
                retransmission: rng.random(),
                data,
            }),
            2 => RmcastPacket::BestEffort(BestEffortFragment {
                parcel: rng.random_range(0..100),
                index: rng.random_range(0..count.max(1)),
                count,
                len,
                data,
            }),
            3 => RmcastPacket::Sync(Sync {
                next: pick_seq(&mut rng),
            }),
            4 => {
                let a = pick_seq(&mut rng);
                RmcastPacket::Obsolete(Obsolete {
                    from: a,
                    to: a.saturating_add(rng.random_range(0..20)),
                })
            }
            5 => {
                let a = pick_seq(&mut rng);
                RmcastPacket::Nack(Nack {
                    sender: to,
                    sender_incarnation: any_inc(&mut rng, to, &net),
                    epoch: rng.random_range(0..4),
                    ranges: vec![(a, a.saturating_add(rng.random_range(0..3000)))],
                })
            }
            6 => RmcastPacket::Hello(Hello {
                sender_incarnation: any_inc(&mut rng, to, &net),
                epoch: rng.random_range(0..4),
                window: rng.random(),
            }),
            7 => {
                let next = pick_seq(&mut rng);
                RmcastPacket::Status(Status {
                    sender_incarnation: any_inc(&mut rng, to, &net),
                    epoch: rng.random_range(0..4),
                    next,
                    mab: next.saturating_add(rng.random_range(0..1 << 20)),
                })
            }
            8 => RmcastPacket::Start(Start {
                receiver_incarnation: any_inc(&mut rng, to, &net),
                epoch: rng.random_range(0..4),
                start: pick_seq(&mut rng),
                next: pick_seq(&mut rng),
            }),
            _ => RmcastPacket::NotReceiver(NotReceiver {
                receiver_incarnation: any_inc(&mut rng, to, &net),
                epoch: rng.random_range(0..4),
            }),
        };
        let dest = if rng.random_bool(0.5) { group() } else { to };
        if rng.random_bool(0.05) {
            let garbage: Vec<u8> = (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect();
            net.inject_raw(from, from_inc, to, dest, &garbage);
        } else {
            net.inject(from, from_inc, to, dest, packet);
        }
        if step % 10 == 0 {
            net.run_for(Duration::from_micros(rng.random_range(0..20_000)));
        }
        for id in [n(1), n(2), n(3)] {
            let c = &net.nodes[&id];
            let s = c.sender_info();
            assert!(s.held_parcels <= c.config().send_buffer_parcels, "{s:?}");
            assert!(s.held_bytes <= c.config().send_buffer_bytes, "{s:?}");
            for src in [n(1), n(2), n(3)] {
                if let Some(i) = c.stream_info(src) {
                    // Head parcel (a forged one may claim 2048 fragments)
                    // plus a window.
                    assert!(i.buffered_fragments as u64 <= 2048 + w, "{id} {i:?}");
                    assert!(
                        i.missing as u64 <= w && i.skipped_ranges as u64 <= w + 1,
                        "{i:?}"
                    );
                    assert!(i.best_effort_partials <= 4, "{i:?}");
                    assert!(i.best_effort_bytes <= 2 << 20, "{i:?}");
                }
            }
        }
    }
    assert!(net.stats(n(2)).drops.total() > 1000);
}
