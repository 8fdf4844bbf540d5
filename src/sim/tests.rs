//! Tests of the simulator itself, with the toy core.

use super::toy::{Toy, ToyConfig, ToyEvent, ToyMsg};
use super::*;
use crate::sansio::Transmit;
use crate::wire::{encode_body, ClusterKey, HEADER_LEN};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

fn n(i: u8) -> NodeId {
    NodeId::v4(10, 0, 0, i, 7000)
}

const GROUP: NodeId = NodeId::v4(239, 1, 1, 1, 7000);

fn config(seed: u64, test: &str) -> SimConfig {
    SimConfig::new(seed, crate::sim_replay!(test))
}

/// A simulator of passive toys (no timers; they answer pings and obey
/// commands).
fn passive(cfg: SimConfig) -> Simulator<Toy> {
    Simulator::new(cfg, |s| Toy::new(&s, ToyConfig::passive()))
}

/// Toys that ping each other every `interval`, without jitter.
fn pinging(cfg: SimConfig, peers: Vec<NodeId>, interval: Duration) -> Simulator<Toy> {
    Simulator::new(cfg, move |s| {
        let mut c = ToyConfig::pinging(peers.clone(), interval);
        c.jitter = Duration::ZERO;
        Toy::new(&s, c)
    })
}

fn ping(sim: &mut Simulator<Toy>, from: NodeId, to: NodeId) {
    sim.with_core(from, |c, _| c.ping(to))
        .expect("sender is running");
}

/// The events of `node`, in order.
fn events_of(events: &[(Instant, NodeId, ToyEvent)], node: NodeId) -> Vec<(Instant, ToyEvent)> {
    events
        .iter()
        .filter(|(_, id, _)| *id == node)
        .map(|(t, _, e)| (*t, e.clone()))
        .collect()
}

fn pings_received(sim: &Simulator<Toy>, id: NodeId) -> u64 {
    sim.core(id).map_or(0, |c| c.counters().pings_received)
}

/// A chaotic run: lossy, duplicating, reordering, corrupting links,
/// crashes, restarts, pauses and a partition.
fn chaos_run(seed: u64) -> ([u8; 32], Stats, usize) {
    let ids: Vec<NodeId> = (1..=4).map(n).collect();
    let cfg = config(seed, "sim::tests::determinism").with_link(
        LinkConfig::lan()
            .with_loss(0.1)
            .with_duplicate(0.1)
            .with_reorder(0.2, Duration::from_millis(3))
            .with_corrupt(0.05)
            .with_truncate(0.05),
    );
    let mut sim = Simulator::new(cfg, {
        let ids = ids.clone();
        move |s| {
            Toy::new(
                &s,
                ToyConfig::pinging(ids.clone(), Duration::from_millis(50)),
            )
        }
    });
    for id in &ids {
        sim.add_node(*id);
    }
    sim.schedule_fault(Instant::from_millis(200), Fault::Pause(n(3)));
    sim.schedule_fault(Instant::from_millis(300), Fault::Crash(n(2)));
    sim.schedule_fault(
        Instant::from_millis(400),
        Fault::Partition(vec![vec![n(1), n(2)], vec![n(3), n(4)]]),
    );
    sim.schedule_fault(Instant::from_millis(600), Fault::Restart(n(2)));
    sim.schedule_fault(Instant::from_millis(700), Fault::Resume(n(3)));
    sim.schedule_fault(Instant::from_millis(800), Fault::Heal);
    sim.run_for(Duration::from_millis(1500));
    let events = sim.take_events().len();
    (sim.trace_hash(), sim.stats(), events)
}

#[test]
fn same_seed_same_trace_different_seed_different_trace() {
    let a = chaos_run(1);
    let b = chaos_run(1);
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2);
    assert!(a.1.totals.delivered > 100, "{:?}", a.1);
    let c = chaos_run(2);
    assert_ne!(a.0, c.0);
}

#[test]
fn heap_jumps_to_events_and_time_is_virtual() {
    let mut sim = passive(config(
        1,
        "sim::tests::heap_jumps_to_events_and_time_is_virtual",
    ));
    sim.add_node(n(1));
    sim.add_node(n(2));
    assert_eq!(sim.now(), Instant::ZERO);
    assert!(sim.is_quiet());
    assert_eq!(sim.run_until(Instant::from_millis(10_000)), 0);
    assert_eq!(sim.now(), Instant::from_millis(10_000));
    ping(&mut sim, n(1), n(2));
    assert!(!sim.is_quiet());
    assert!(sim.run_until_quiet(Duration::from_secs(1)));
    // Ping and pong: two deliveries, at most 2 x 500 us.
    assert_eq!(sim.steps(), 2);
    assert!(sim.now() <= Instant::from_millis(10_001));
    assert_eq!(sim.core(n(1)).unwrap().counters().pongs, 1);
    assert!(!sim.step());
}

#[test]
fn periodic_timers_fire_on_schedule() {
    let mut sim = pinging(
        config(3, "sim::tests::periodic_timers_fire_on_schedule"),
        vec![n(1), n(2)],
        Duration::from_millis(100),
    );
    sim.add_node(n(1));
    sim.add_node(n(2));
    sim.run_for(Duration::from_millis(1000));
    let ticks: Vec<Instant> = events_of(sim.events(), n(1))
        .into_iter()
        .filter(|(_, e)| *e == ToyEvent::Tick)
        .map(|(t, _)| t)
        .collect();
    assert!(ticks.len() >= 9 && ticks.len() <= 11, "{ticks:?}");
    for w in ticks.windows(2) {
        assert_eq!(w[1] - w[0], Duration::from_millis(100));
    }
    assert_eq!(sim.node_stats(n(1)).unwrap().timeouts, ticks.len() as u64);
}

#[test]
fn total_loss_delivers_nothing() {
    let mut sim = pinging(
        config(5, "sim::tests::total_loss_delivers_nothing")
            .with_link(LinkConfig::lan().with_loss(1.0)),
        vec![n(1), n(2), n(3)],
        Duration::from_millis(50),
    );
    for i in 1..=3 {
        sim.add_node(n(i));
    }
    sim.run_for(Duration::from_secs(1));
    let s = sim.stats();
    assert_eq!(s.totals.delivered, 0);
    assert!(s.totals.sent > 50);
    assert_eq!(s.totals.lost, s.totals.sent);
    assert!(sim.events().iter().all(|(_, _, e)| *e == ToyEvent::Tick));
}

#[test]
fn partition_blocks_both_ways_and_heal_restores() {
    let mut sim = passive(config(
        7,
        "sim::tests::partition_blocks_both_ways_and_heal_restores",
    ));
    for i in 1..=4 {
        sim.add_node(n(i));
    }
    // 3 and 4 are unlisted: together they are "the rest".
    sim.partition(&[vec![n(1)], vec![n(2)]]);
    assert!(!sim.can_reach(n(1), n(2)) && !sim.can_reach(n(2), n(1)));
    assert!(!sim.can_reach(n(1), n(3)));
    assert!(sim.can_reach(n(3), n(4)));
    ping(&mut sim, n(1), n(2));
    ping(&mut sim, n(2), n(1));
    ping(&mut sim, n(3), n(1));
    ping(&mut sim, n(3), n(4));
    sim.run_for(Duration::from_millis(10));
    assert_eq!(pings_received(&sim, n(1)), 0);
    assert_eq!(pings_received(&sim, n(2)), 0);
    assert_eq!(pings_received(&sim, n(4)), 1);
    assert_eq!(sim.core(n(3)).unwrap().counters().pongs, 1);
    assert_eq!(sim.node_stats(n(1)).unwrap().partitioned, 2);
    assert_eq!(sim.node_stats(n(2)).unwrap().partitioned, 1);
    // No unreachable reports across a partition.
    assert_eq!(sim.stats().totals.unreachable_received, 0);

    sim.heal();
    ping(&mut sim, n(1), n(2));
    ping(&mut sim, n(2), n(1));
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.core(n(1)).unwrap().counters().pongs, 1);
    assert_eq!(sim.core(n(2)).unwrap().counters().pongs, 1);

    // A cut also loses datagrams already in flight.
    sim.set_default_link(LinkConfig::fixed(Duration::from_millis(5)));
    ping(&mut sim, n(1), n(2));
    sim.run_for(Duration::from_millis(1));
    sim.partition(&[vec![n(1)], vec![n(2)]]);
    sim.run_for(Duration::from_millis(10));
    assert_eq!(pings_received(&sim, n(2)), 1);
    assert_eq!(sim.node_stats(n(2)).unwrap().partitioned, 2);
}

#[test]
fn one_way_block_blocks_exactly_one_direction() {
    let mut sim = passive(config(
        9,
        "sim::tests::one_way_block_blocks_exactly_one_direction",
    ));
    sim.add_node(n(1));
    sim.add_node(n(2));
    sim.block_one_way(n(1), n(2));
    assert!(!sim.can_reach(n(1), n(2)));
    assert!(sim.can_reach(n(2), n(1)));
    ping(&mut sim, n(1), n(2));
    ping(&mut sim, n(2), n(1));
    sim.run_for(Duration::from_millis(10));
    // 1's ping is dropped; 2's ping arrives, but 1's pong is dropped.
    assert_eq!(pings_received(&sim, n(2)), 0);
    assert_eq!(pings_received(&sim, n(1)), 1);
    assert_eq!(sim.core(n(2)).unwrap().counters().pongs, 0);
    assert_eq!(sim.node_stats(n(2)).unwrap().partitioned, 2);
    assert_eq!(sim.node_stats(n(1)).unwrap().delivered, 1);
    sim.unblock_one_way(n(1), n(2));
    ping(&mut sim, n(1), n(2));
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.core(n(1)).unwrap().counters().pongs, 1);
}

#[test]
fn crash_stops_node_and_sender_gets_unreachable() {
    let mut sim = pinging(
        config(
            11,
            "sim::tests::crash_stops_node_and_sender_gets_unreachable",
        ),
        vec![n(1), n(2)],
        Duration::from_millis(100),
    );
    sim.add_node(n(1));
    sim.add_node(n(2));
    sim.run_for(Duration::from_millis(500));
    let inc = sim.incarnation(n(2)).unwrap();
    assert!(sim.crash(n(2)));
    assert!(!sim.crash(n(2)));
    assert!(!sim.is_up(n(2)));
    assert!(sim.core(n(2)).is_none());
    assert_eq!(sim.incarnation(n(2)), None);
    let crashed_at = sim.now();
    sim.take_events();
    sim.run_for(Duration::from_millis(500));
    let events = sim.take_events();
    // The crashed node does nothing: no ticks, no events.
    assert!(events_of(&events, n(2)).is_empty());
    let unreachable: Vec<(Instant, ToyEvent)> = events_of(&events, n(1))
        .into_iter()
        .filter(|(_, e)| matches!(e, ToyEvent::Unreachable { .. }))
        .collect();
    assert!(unreachable.len() >= 4, "{unreachable:?}");
    assert!(unreachable
        .iter()
        .all(|(t, e)| *e == ToyEvent::Unreachable { node: n(2) } && *t > crashed_at));
    let s2 = sim.node_stats(n(2)).unwrap();
    assert!(s2.vanished >= 4);
    assert_eq!(s2.unreachable_generated, unreachable.len() as u64);
    assert_eq!(
        sim.node_stats(n(1)).unwrap().unreachable_received,
        unreachable.len() as u64
    );
    let _ = inc;

    // An address where no node was ever added behaves the same.
    ping(&mut sim, n(1), n(9));
    sim.run_for(Duration::from_millis(5));
    assert_eq!(sim.stats().unknown_destinations.unreachable_generated, 1);
}

#[test]
fn no_unreachable_when_disabled_paused_or_partitioned() {
    let mk = |on: bool| {
        let mut sim = passive(
            config(
                13,
                "sim::tests::no_unreachable_when_disabled_paused_or_partitioned",
            )
            .with_unreachable(on),
        );
        for i in 1..=4 {
            sim.add_node(n(i));
        }
        sim
    };
    let mut sim = mk(false);
    sim.crash(n(2));
    ping(&mut sim, n(1), n(2));
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.stats().totals.unreachable_received, 0);
    assert_eq!(sim.node_stats(n(2)).unwrap().vanished, 1);

    let mut sim = mk(true);
    sim.pause(n(2));
    ping(&mut sim, n(1), n(2));
    sim.crash(n(3));
    sim.partition(&[vec![n(1), n(4)], vec![n(3)]]);
    ping(&mut sim, n(1), n(3));
    // Multicast never produces unreachable reports.
    sim.join_group(n(3), GROUP);
    ping(&mut sim, n(4), GROUP);
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.stats().totals.unreachable_received, 0);
    assert_eq!(sim.stats().totals.unreachable_generated, 0);
    sim.heal();
    ping(&mut sim, n(4), GROUP);
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.stats().totals.unreachable_generated, 0);
    assert_eq!(sim.node_stats(n(3)).unwrap().vanished, 1);
}

#[test]
fn restart_gives_new_incarnation_and_fresh_core() {
    let mut sim = pinging(
        config(
            15,
            "sim::tests::restart_gives_new_incarnation_and_fresh_core",
        ),
        vec![n(1), n(2)],
        Duration::from_millis(100),
    );
    let first = sim.add_node(n(1));
    sim.add_node(n(2));
    sim.run_for(Duration::from_secs(1));
    assert!(sim.core(n(1)).unwrap().counters().ticks >= 9);
    let second = sim.restart(n(1));
    assert_ne!(first, second);
    assert!(second > first);
    assert_eq!(sim.incarnation(n(1)), Some(second));
    assert_eq!(sim.core(n(1)).unwrap().incarnation(), second);
    assert_eq!(sim.core(n(1)).unwrap().counters().ticks, 0);
    assert_eq!(sim.core(n(1)).unwrap().next_seq(), 0);
    // Restarting twice in the same millisecond still orders lives.
    let third = sim.restart(n(1));
    assert!(third > second);
    let st = sim.node_stats(n(1)).unwrap();
    assert_eq!((st.starts, st.crashes), (3, 2));
    // A crashed node restarts too.
    sim.crash(n(2));
    let back = sim.restart(n(2));
    assert!(sim.is_up(n(2)));
    assert_eq!(sim.incarnation(n(2)), Some(back));
    sim.run_for(Duration::from_secs(1));
    assert!(sim.core(n(2)).unwrap().counters().pongs > 5);
}

#[test]
fn pongs_for_a_previous_life_are_not_accepted() {
    let mut sim = passive(
        config(17, "sim::tests::pongs_for_a_previous_life_are_not_accepted")
            .with_link(LinkConfig::fixed(Duration::from_millis(10))),
    );
    sim.add_node(n(1));
    sim.add_node(n(2));
    ping(&mut sim, n(1), n(2));
    sim.run_for(Duration::from_millis(15)); // the pong is in flight
    sim.restart(n(1));
    ping(&mut sim, n(1), n(2)); // the same seq 0, a new life
    sim.run_for(Duration::from_millis(30));
    let c = sim.core(n(1)).unwrap().counters().clone();
    assert_eq!(c.stale_pongs, 1);
    assert_eq!(c.pongs, 1);
}

#[test]
fn pause_queues_packets_and_fires_overdue_timer_at_resume() {
    for (order, timer_first) in [
        (ResumeOrder::PacketsFirst, false),
        (ResumeOrder::TimerFirst, true),
    ] {
        let mut sim = Simulator::new(
            config(
                19,
                "sim::tests::pause_queues_packets_and_fires_overdue_timer_at_resume",
            )
            .with_resume_order(order),
            |s| {
                if s.id == n(1) {
                    let mut c = ToyConfig::pinging(vec![], Duration::from_millis(100));
                    c.jitter = Duration::ZERO;
                    Toy::new(&s, c)
                } else {
                    Toy::new(&s, ToyConfig::passive())
                }
            },
        );
        sim.add_node(n(1));
        sim.add_node(n(2));
        let first_tick = sim.core(n(1)).unwrap().poll_timeout().unwrap();
        assert!(sim.pause(n(1)));
        assert!(!sim.pause(n(1)));
        assert!(sim.is_paused(n(1)) && sim.is_up(n(1)) && !sim.is_running(n(1)));
        assert!(sim.with_core(n(1), |_, _| ()).is_none());
        for _ in 0..3 {
            ping(&mut sim, n(2), n(1));
        }
        let resume_at = first_tick + Duration::from_millis(500);
        sim.run_until(resume_at);
        assert_eq!(sim.core(n(1)).unwrap().counters().ticks, 0);
        assert_eq!(sim.node_stats(n(1)).unwrap().delivered, 0);
        assert!(events_of(sim.events(), n(1)).is_empty());
        assert!(sim.resume(n(1)));
        assert!(!sim.resume(n(1)));
        let evs = events_of(sim.events(), n(1));
        assert_eq!(evs.len(), 4, "{evs:?}");
        assert!(evs.iter().all(|(t, _)| *t == resume_at));
        let tick_pos = evs.iter().position(|(_, e)| *e == ToyEvent::Tick).unwrap();
        assert_eq!(tick_pos, if timer_first { 0 } else { 3 });
        // The late round re-armed from the resume time.
        assert_eq!(
            sim.core(n(1)).unwrap().poll_timeout(),
            Some(resume_at + Duration::from_millis(100))
        );
        sim.run_for(Duration::from_millis(10));
        assert_eq!(sim.core(n(2)).unwrap().counters().pongs, 3);
        // No unreachable for a paused node.
        assert_eq!(sim.stats().totals.unreachable_received, 0);
    }
}

#[test]
fn paused_socket_buffer_is_bounded() {
    let datagram = HEADER_LEN
        + encode_body(&ToyMsg::Ping {
            seq: 0,
            reply: true,
        })
        .unwrap()
        .len();
    let mut sim = passive(
        config(21, "sim::tests::paused_socket_buffer_is_bounded")
            .with_socket_buffer(4 * datagram + datagram / 2),
    );
    sim.add_node(n(1));
    sim.add_node(n(2));
    sim.pause(n(1));
    for _ in 0..10 {
        ping(&mut sim, n(2), n(1));
    }
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.node_stats(n(1)).unwrap().buffer_dropped, 6);
    sim.resume(n(1));
    assert_eq!(sim.node_stats(n(1)).unwrap().delivered, 4);
    // The buffer is empty again after the resume.
    sim.pause(n(1));
    ping(&mut sim, n(2), n(1));
    sim.run_for(Duration::from_millis(10));
    sim.resume(n(1));
    assert_eq!(sim.node_stats(n(1)).unwrap().delivered, 5);
    // A crash loses what was queued.
    sim.pause(n(1));
    ping(&mut sim, n(2), n(1));
    sim.run_for(Duration::from_millis(10));
    sim.crash(n(1));
    assert_eq!(sim.node_stats(n(1)).unwrap().vanished, 1);
}

#[test]
fn corruption_and_truncation_are_counted_decoder_drops() {
    let mut sim = pinging(
        config(
            23,
            "sim::tests::corruption_and_truncation_are_counted_decoder_drops",
        )
        .with_link(
            LinkConfig::lan()
                .with_corrupt(0.3)
                .with_truncate(0.3)
                .with_duplicate(0.2),
        ),
        vec![n(1), n(2), n(3)],
        Duration::from_millis(20),
    );
    for i in 1..=3 {
        sim.add_node(n(i));
    }
    sim.run_for(Duration::from_secs(2));
    let s = sim.stats();
    let mangled = s.totals.corrupted + s.totals.truncated;
    assert!(mangled > 100, "{s:?}");
    assert!(s.totals.decoder.total() > 100);
    // Every mangled copy is rejected by the decoder (CRC, lengths, magic ..);
    // a copy can be both corrupted and truncated.
    assert!(s.totals.decoder.total() <= mangled);
    assert!(s.totals.decoder.get("bad_checksum") > 0);
    assert!(s.totals.decoder.get("length_mismatch") + s.totals.decoder.get("too_short") > 0);
    for i in 1..=3 {
        let c = sim.core(n(i)).unwrap().counters();
        assert_eq!(c.bad_bodies, 0);
        assert!(c.pongs > 10);
    }

    // Everything corrupted: nothing reaches a core.
    let mut sim = passive(
        config(
            23,
            "sim::tests::corruption_and_truncation_are_counted_decoder_drops",
        )
        .with_link(LinkConfig::lan().with_corrupt(1.0)),
    );
    sim.add_node(n(1));
    sim.add_node(n(2));
    for _ in 0..50 {
        ping(&mut sim, n(1), n(2));
    }
    sim.set_default_link(LinkConfig::lan().with_truncate(1.0));
    for _ in 0..50 {
        ping(&mut sim, n(1), n(2));
    }
    sim.run_for(Duration::from_millis(10));
    let st = sim.node_stats(n(2)).unwrap();
    assert_eq!(st.delivered, 0);
    assert_eq!(st.decoder.total(), 100);
}

#[test]
fn garbage_bodies_reach_the_core_which_rejects_them() {
    let mut sim = passive(config(
        24,
        "sim::tests::garbage_bodies_reach_the_core_which_rejects_them",
    ));
    sim.add_node(n(1));
    sim.add_node(n(2));
    sim.with_core(n(1), |c, _| c.send_raw(n(2), vec![0xFF; 9]));
    sim.run_for(Duration::from_millis(5));
    assert_eq!(sim.node_stats(n(2)).unwrap().delivered, 1);
    assert_eq!(sim.core(n(2)).unwrap().counters().bad_bodies, 1);
}

#[test]
fn duplication_delivers_copies_and_auth_rejects_them() {
    let mut sim = passive(
        config(
            25,
            "sim::tests::duplication_delivers_copies_and_auth_rejects_them",
        )
        .with_link(LinkConfig::lan().with_duplicate(1.0)),
    );
    sim.add_node(n(1));
    sim.add_node(n(2));
    ping(&mut sim, n(1), n(2));
    sim.run_for(Duration::from_millis(10));
    assert_eq!(pings_received(&sim, n(2)), 2);
    let c = sim.core(n(1)).unwrap().counters().clone();
    assert_eq!((c.pongs, c.unmatched_pongs), (1, 3));

    let ring = KeyRing::new(vec![ClusterKey::new(1, [7u8; 32]).unwrap()]).unwrap();
    let mut sim = passive(
        config(
            25,
            "sim::tests::duplication_delivers_copies_and_auth_rejects_them",
        )
        .with_link(LinkConfig::lan().with_duplicate(1.0))
        .with_auth(ring),
    );
    sim.add_node(n(1));
    sim.add_node(n(2));
    ping(&mut sim, n(1), n(2));
    sim.run_for(Duration::from_millis(10));
    assert_eq!(pings_received(&sim, n(2)), 1);
    assert_eq!(sim.node_stats(n(2)).unwrap().decoder.get("replayed"), 1);
    assert_eq!(sim.core(n(1)).unwrap().counters().pongs, 1);
    assert_eq!(sim.node_stats(n(1)).unwrap().decoder.get("replayed"), 1);
}

#[test]
fn multicast_reaches_joined_nodes_only() {
    let mut sim = passive(config(
        27,
        "sim::tests::multicast_reaches_joined_nodes_only",
    ));
    for i in 1..=4 {
        sim.add_node(n(i));
    }
    for i in 1..=3 {
        sim.join_group(n(i), GROUP);
    }
    assert_eq!(sim.group_members(GROUP), vec![n(1), n(2), n(3)]);
    ping(&mut sim, n(1), GROUP);
    sim.run_for(Duration::from_millis(10));
    let events = sim.take_events();
    for i in [2, 3] {
        let evs = events_of(&events, n(i));
        assert_eq!(
            evs.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
            vec![ToyEvent::PingReceived {
                from: n(1),
                destination: GROUP,
                seq: 0
            }]
        );
    }
    assert!(events_of(&events, n(1)).is_empty());
    assert!(events_of(&events, n(4)).is_empty());
    assert_eq!(sim.node_stats(n(1)).unwrap().sent, 1);

    sim.leave_group(n(3), GROUP);
    ping(&mut sim, n(1), GROUP);
    sim.run_for(Duration::from_millis(10));
    assert_eq!(pings_received(&sim, n(2)), 2);
    assert_eq!(pings_received(&sim, n(3)), 1);
    // Each copy goes through its own link.
    sim.set_link(n(1), n(2), LinkConfig::lan().with_loss(1.0));
    ping(&mut sim, n(1), GROUP);
    sim.join_group(n(4), GROUP);
    ping(&mut sim, n(1), GROUP);
    sim.run_for(Duration::from_millis(10));
    assert_eq!(pings_received(&sim, n(2)), 2);
    assert_eq!(pings_received(&sim, n(4)), 1);
}

#[test]
fn clog_holds_traffic_until_it_ends() {
    let mut sim = passive(config(29, "sim::tests::clog_holds_traffic_until_it_ends"));
    sim.add_node(n(1));
    sim.add_node(n(2));
    sim.clog(n(2), Instant::from_millis(50));
    ping(&mut sim, n(1), n(2));
    sim.run_for(Duration::from_millis(49));
    assert_eq!(pings_received(&sim, n(2)), 0);
    sim.run_for(Duration::from_millis(10));
    assert_eq!(pings_received(&sim, n(2)), 1);
    assert_eq!(sim.core(n(1)).unwrap().counters().pongs, 1);
    // Outbound is held too.
    sim.clog(n(1), sim.now() + Duration::from_millis(50));
    ping(&mut sim, n(1), n(2));
    sim.run_for(Duration::from_millis(49));
    assert_eq!(pings_received(&sim, n(2)), 1);
    sim.run_for(Duration::from_millis(10));
    assert_eq!(pings_received(&sim, n(2)), 2);
    assert!(sim.node_stats(n(1)).unwrap().clog_held >= 1);
    assert!(sim.node_stats(n(2)).unwrap().clog_held >= 1);
    assert_eq!(sim.stats().totals.lost, 0);
}

#[test]
fn scheduled_faults_and_actions_run_at_their_time() {
    let mut sim = passive(config(
        31,
        "sim::tests::scheduled_faults_and_actions_run_at_their_time",
    ));
    sim.add_node(n(1));
    sim.add_node(n(2));
    sim.schedule_fault(Instant::from_millis(100), Fault::Crash(n(1)));
    sim.schedule(Instant::from_millis(200), |sim| {
        sim.restart(n(1));
        sim.with_core(n(1), |c, _| c.ping(n(2)));
    });
    assert!(!sim.is_quiet());
    sim.run_until(Instant::from_millis(150));
    assert!(!sim.is_up(n(1)));
    sim.run_until(Instant::from_millis(250));
    assert!(sim.is_up(n(1)));
    assert_eq!(sim.core(n(1)).unwrap().counters().pongs, 1);
    assert!(sim.run_until_quiet(Duration::from_secs(1)));
}

#[test]
fn run_until_condition_stops_when_it_holds() {
    let mut sim = pinging(
        config(33, "sim::tests::run_until_condition_stops_when_it_holds"),
        vec![n(1), n(2)],
        Duration::from_millis(100),
    );
    sim.add_node(n(1));
    sim.add_node(n(2));
    let done = sim.run_until_condition(Duration::from_secs(10), |s| {
        s.core(n(1)).unwrap().counters().pongs >= 3
    });
    assert!(done);
    assert!(sim.now() < Instant::from_millis(500));
    let never = sim.run_until_condition(Duration::from_secs(1), |_| false);
    assert!(!never);
    assert!(!sim.run_until_quiet(Duration::from_millis(10)));
}

#[test]
fn checkers_run_after_every_step_and_see_new_events() {
    let mut sim = pinging(
        config(
            35,
            "sim::tests::checkers_run_after_every_step_and_see_new_events",
        )
        .with_keep_events(false),
        vec![n(1), n(2)],
        Duration::from_millis(100),
    );
    let calls = Rc::new(Cell::new(0u64));
    let seen = Rc::new(Cell::new(0u64));
    {
        let (calls, seen) = (calls.clone(), seen.clone());
        sim.add_checker("counting", move |view| {
            calls.set(calls.get() + 1);
            seen.set(seen.get() + view.new_events().len() as u64);
            let up = view.nodes().filter(|nv| nv.is_up()).count();
            if up > 2 {
                return Err(format!("{up} nodes up"));
            }
            Ok(())
        });
    }
    sim.add_node(n(1));
    sim.add_node(n(2));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(calls.get(), sim.steps() + 2);
    let s = sim.stats();
    assert_eq!(seen.get(), s.totals.events);
    assert!(seen.get() > 20);
    // Without keep_events nothing piles up.
    assert!(sim.take_events().is_empty());
}

#[test]
fn failing_checker_panics_with_the_replay_line() {
    let mut sim = pinging(
        config(
            4242,
            "sim::tests::failing_checker_panics_with_the_replay_line",
        )
        .with_trace_tail(5),
        vec![n(1), n(2)],
        Duration::from_millis(100),
    );
    sim.add_checker("no pongs", |view| {
        match view
            .new_events()
            .iter()
            .find(|(_, _, e)| matches!(e, ToyEvent::Pong { .. }))
        {
            Some((t, node, e)) => Err(format!("{node} got {e:?} at {t}")),
            None => Ok(()),
        }
    });
    sim.add_node(n(1));
    sim.add_node(n(2));
    let err = catch_unwind(AssertUnwindSafe(|| {
        sim.run_for(Duration::from_secs(1));
    }))
    .expect_err("the checker must fail the run");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("invariant `no pongs` violated"), "{msg}");
    assert!(msg.contains("last trace lines:"), "{msg}");
    assert!(
        msg.ends_with(
            "replay: SIM_SEED=4242 cargo test --lib -- sim::tests::failing_checker_panics_with_the_replay_line"
        ),
        "{msg}"
    );
}

/// A core whose timer is always due: a zero-delay loop.
struct Spinner {
    step: Duration,
    now: Instant,
}

impl Core for Spinner {
    type Event = ();
    fn handle_packet(&mut self, _now: Instant, _packet: Incoming<'_>) {}
    fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        None
    }
    fn poll_event(&mut self) -> Option<()> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.now + self.step)
    }
}

#[test]
fn livelocks_are_reported_with_the_replay_line() {
    for (step, what) in [
        (Duration::ZERO, "zero-delay loop"),
        (Duration::from_micros(1), "livelock?"),
    ] {
        let cfg = config(
            99,
            "sim::tests::livelocks_are_reported_with_the_replay_line",
        )
        .with_max_events_per_instant(1000)
        .with_max_events_per_run(10_000);
        let mut sim = Simulator::new(cfg, move |s| Spinner { step, now: s.now });
        sim.add_node(n(1));
        let err = catch_unwind(AssertUnwindSafe(|| {
            sim.run_for(Duration::from_secs(1));
        }))
        .expect_err("must be reported");
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains(what), "{msg}");
        assert!(
            msg.contains("replay: SIM_SEED=99 cargo test --lib"),
            "{msg}"
        );
    }
}

#[test]
fn with_core_drains_transmits_and_events() {
    let mut sim = passive(config(
        37,
        "sim::tests::with_core_drains_transmits_and_events",
    ));
    sim.add_node(n(1));
    sim.add_node(n(2));
    let now = sim.with_core(n(1), |c, now| {
        c.ping(n(2));
        now
    });
    assert_eq!(now, Some(Instant::ZERO));
    assert_eq!(sim.node_stats(n(1)).unwrap().sent, 1);
    assert_eq!(sim.in_flight(), 1);
    sim.crash(n(1));
    assert!(sim.with_core(n(1), |_, _| ()).is_none());
    assert!(sim.with_core(n(7), |_, _| ()).is_none());
}

#[test]
fn reordering_happens_with_jitter() {
    let mut sim = passive(
        config(39, "sim::tests::reordering_happens_with_jitter")
            .with_link(LinkConfig::lan().with_reorder(0.5, Duration::from_millis(2))),
    );
    sim.add_node(n(1));
    sim.add_node(n(2));
    for _ in 0..100 {
        ping(&mut sim, n(1), n(2));
    }
    sim.run_for(Duration::from_millis(10));
    let seqs: Vec<u64> = events_of(sim.events(), n(2))
        .into_iter()
        .filter_map(|(_, e)| match e {
            ToyEvent::PingReceived { seq, .. } => Some(seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs.len(), 100);
    assert!(seqs.windows(2).any(|w| w[0] > w[1]), "never reordered");
    assert!(sim.node_stats(n(2)).unwrap().reordered > 20);
}

#[test]
fn trace_hash_covers_event_content() {
    let run = |body: u8| {
        let mut sim = passive(config(41, "sim::tests::trace_hash_covers_event_content"));
        sim.add_node(n(1));
        sim.add_node(n(2));
        sim.with_core(n(1), |c, _| c.send_raw(n(2), vec![body]));
        sim.run_for(Duration::from_millis(5));
        sim.trace_hex()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    assert_eq!(run(1).len(), 64);
}

#[test]
#[should_panic(
    expected = "replay: SIM_SEED=43 cargo test --lib -- sim::tests::bad_calls_fail_with_replay"
)]
fn bad_calls_fail_with_replay() {
    let mut sim = passive(config(43, "sim::tests::bad_calls_fail_with_replay"));
    sim.add_node(n(1));
    sim.add_node(n(1));
}

#[test]
fn codec_access_allows_key_rotation() {
    let ring = |id: u8| KeyRing::new(vec![ClusterKey::new(id, [id; 32]).unwrap()]).unwrap();
    let mut sim =
        passive(config(45, "sim::tests::codec_access_allows_key_rotation").with_auth(ring(1)));
    sim.add_node(n(1));
    sim.add_node(n(2));
    ping(&mut sim, n(1), n(2));
    sim.run_for(Duration::from_millis(5));
    assert_eq!(sim.core(n(1)).unwrap().counters().pongs, 1);
    sim.codec_mut(n(1))
        .and_then(|c| c.auth_mut())
        .unwrap()
        .set_ring(ring(2));
    ping(&mut sim, n(1), n(2));
    sim.run_for(Duration::from_millis(5));
    assert_eq!(sim.node_stats(n(2)).unwrap().decoder.get("unknown_key"), 1);
    // A restart gets the configured ring back.
    sim.restart(n(1));
    ping(&mut sim, n(1), n(2));
    sim.run_for(Duration::from_millis(5));
    assert_eq!(sim.core(n(1)).unwrap().counters().pongs, 1);
    assert!(sim.codec_mut(n(9)).is_none());
}

#[test]
fn unreachable_reports_queue_while_the_sender_is_paused() {
    let mut sim = passive(
        config(
            47,
            "sim::tests::unreachable_reports_queue_while_the_sender_is_paused",
        )
        .with_link(LinkConfig::fixed(Duration::from_millis(5))),
    );
    sim.add_node(n(1));
    sim.add_node(n(2));
    sim.crash(n(2));
    ping(&mut sim, n(1), n(2));
    sim.run_for(Duration::from_millis(7)); // arrived, report on its way back
    sim.pause(n(1));
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.node_stats(n(1)).unwrap().unreachable_received, 0);
    sim.resume(n(1));
    let evs = events_of(sim.events(), n(1));
    assert_eq!(
        evs,
        vec![(
            Instant::from_millis(17),
            ToyEvent::Unreachable { node: n(2) }
        )]
    );
}
