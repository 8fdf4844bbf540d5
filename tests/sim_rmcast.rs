//! rmcast in the deterministic simulator under random faults, over many
//! seeds (DESIGN.md sections 4 and 9).
//!
//! One or two senders and three to eight receivers form a group (the
//! simulator's multicast). Links lose up to 30% of datagrams, duplicate,
//! reorder, corrupt and truncate. During the chaos phase the view changes
//! as the layer above would change it: receivers join (they listen to the
//! group before the view includes them), leave gracefully, or crash and
//! are removed a little later; a removed receiver may restart and rejoin;
//! a receiver may be paused (SIGSTOP) for up to 1.5 s. Senders send
//! reliable, timed and best-effort parcels of 0 B to 200 KB (one seed in
//! fifty also 1 MiB). Checked after every step:
//!
//! - every delivered parcel was sent, in the mode it was sent, intact;
//! - no parcel is delivered twice to one receiver life;
//! - FIFO per sender: sequenced parcels in send order, best-effort parcels
//!   in send order among themselves;
//! - a sequenced parcel is delivered only to a receiver that was in the
//!   view when it was sent and has not been told it left since (nothing
//!   "earlier" than a join);
//! - a timed parcel is never delivered after its deadline (plus one link
//!   latency; time spent stopped in a socket buffer aside);
//! - `Expired` only for timed parcels at their deadline, never after
//!   `Acknowledged`;
//! - a sender never transmits a sequence at or above the smallest MAB of
//!   its current receivers, and every MAB it uses was advertised by that
//!   receiver (core introspection on both sides).
//!
//! Then a healed phase: every reliable parcel owed to a receiver that
//! stayed in the view (sent while it was in the view, by a sender that
//! stayed too) is delivered exactly once, the senders hold nothing, and
//! the group falls silent (no datagram for 5 s, no timer armed).
//!
//! `SIM_RUNS=10000 cargo test --test sim_rmcast` runs more seeds;
//! `SIM_SEED=N cargo test --test sim_rmcast -- rmcast_many_seeds` replays
//! one.

use membership::id::{Incarnation, NodeId};
use membership::rmcast::{Delivery, Rmcast, RmcastConfig, RmcastEvent, RmcastStats, SendError};
use membership::sansio::Core;
use membership::sim::{self, LinkConfig, SimConfig, Simulator};
use membership::sim_replay;
use membership::time::Instant;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

const CHAOS: Duration = Duration::from_millis(2500);
const REORDER_DELAY: Duration = Duration::from_millis(3);

fn group() -> NodeId {
    NodeId::v4(239, 7, 7, 7, 7000)
}

fn node(i: u8) -> NodeId {
    NodeId::v4(10, 0, 0, i, 7000)
}

fn pattern(tag: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (tag.wrapping_mul(0x9E37_79B9).wrapping_add(i as u64 * 7) >> 3) as u8)
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Reliable,
    Timed,
    BestEffort,
}

struct Parcel {
    /// The bytes sent.
    bytes: Rc<[u8]>,
    mode: Mode,
    sent_at: Instant,
    ttl: Duration,
    /// The view (without the sender) when it was sent.
    receivers: BTreeSet<NodeId>,
}

/// (sender, sender incarnation, parcel id).
type PKey = (NodeId, Incarnation, u64);

#[derive(Default)]
struct Book {
    /// The view as the layer above decided it.
    view: BTreeSet<NodeId>,
    /// Every time a node left the view.
    left_view: BTreeMap<NodeId, Vec<Instant>>,
    /// Every time a node's own core was told it left.
    told_left: BTreeMap<NodeId, Vec<Instant>>,
    /// Pauses: (node, from, to).
    pauses: Vec<(NodeId, Instant, Instant)>,
    parcels: BTreeMap<PKey, Parcel>,
    next_tag: u64,
    /// Deliveries: (parcel, receiver, receiver incarnation).
    delivered: BTreeSet<(PKey, NodeId, Incarnation)>,
    /// FIFO: the last parcel id per (sender, inc, receiver, inc, best effort).
    last: BTreeMap<(NodeId, Incarnation, NodeId, Incarnation, bool), u64>,
    expired: BTreeSet<PKey>,
    acknowledged: BTreeSet<PKey>,
    /// Reliable parcels still owed in the healed phase.
    owed: BTreeSet<(PKey, NodeId)>,
    max_latency: Duration,
    tally: Tally,
}

/// What the runs exercised, summed over seeds to show the test is not
/// vacuous.
#[derive(Default, Debug, Clone)]
struct Tally {
    seeds: u64,
    sent: BTreeMap<Mode, u64>,
    delivered: BTreeMap<Mode, u64>,
    owed_checked: u64,
    queue_full: u64,
    window_open: u64,
    expired: u64,
    suspects: u64,
    joins: u64,
    leaves: u64,
    crashes: u64,
    rejoins: u64,
    pauses: u64,
    large: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    retransmitted: u64,
    nacks: u64,
    nacks_suppressed: u64,
    syncs: u64,
    timed_purged: u64,
    best_effort_abandoned: u64,
    starts: u64,
    not_owed_heard: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.seeds += o.seeds;
        for (k, v) in &o.sent {
            *self.sent.entry(*k).or_insert(0) += v;
        }
        for (k, v) in &o.delivered {
            *self.delivered.entry(*k).or_insert(0) += v;
        }
        self.owed_checked += o.owed_checked;
        self.queue_full += o.queue_full;
        self.window_open += o.window_open;
        self.expired += o.expired;
        self.suspects += o.suspects;
        self.joins += o.joins;
        self.leaves += o.leaves;
        self.crashes += o.crashes;
        self.rejoins += o.rejoins;
        self.pauses += o.pauses;
        self.large += o.large;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.retransmitted += o.retransmitted;
        self.nacks += o.nacks;
        self.nacks_suppressed += o.nacks_suppressed;
        self.syncs += o.syncs;
        self.timed_purged += o.timed_purged;
        self.best_effort_abandoned += o.best_effort_abandoned;
        self.starts += o.starts;
        self.not_owed_heard += o.not_owed_heard;
    }

    fn add_stats(&mut self, s: &RmcastStats) {
        self.retransmitted += s.retransmitted;
        self.nacks += s.nacks_sent;
        self.nacks_suppressed += s.nacks_suppressed;
        self.syncs += s.syncs_sent;
        self.timed_purged += s.timed_purged;
        self.best_effort_abandoned += s.best_effort_abandoned;
        self.starts += s.starts_sent;
    }
}

fn mode_of(d: &Delivery) -> Mode {
    match d {
        Delivery::Reliable => Mode::Reliable,
        Delivery::Timed(_) => Mode::Timed,
        Delivery::BestEffort => Mode::BestEffort,
    }
}

/// Gives every running node the current view: members get it, the others
/// an empty set. Records when a node's core learns it left.
fn apply_view(sim: &mut Simulator<Rmcast>, book: &Rc<RefCell<Book>>, only: Option<NodeId>) {
    let view = book.borrow().view.clone();
    let nodes: Vec<NodeId> = sim.nodes().collect();
    for n in nodes {
        if only.is_some_and(|o| o != n) {
            continue;
        }
        let set = if view.contains(&n) {
            view.clone()
        } else {
            BTreeSet::new()
        };
        let was_member = sim.core(n).is_some_and(|c| !c.receivers().is_empty());
        let applied = sim.with_core(n, |c: &mut Rmcast, now| {
            c.set_receivers(now, set.clone());
            now
        });
        if let Some(now) = applied {
            if was_member && !view.contains(&n) {
                book.borrow_mut().told_left.entry(n).or_default().push(now);
            }
        }
    }
}

fn check_events(b: &mut Book, view: &sim::CheckView<'_, Rmcast>) -> Result<(), String> {
    for (t, at, ev) in view.new_events() {
        let (t, at) = (*t, *at);
        match ev {
            RmcastEvent::Delivered {
                from,
                from_incarnation,
                parcel,
                mode,
                payload,
            } => {
                let key = (*from, *from_incarnation, parcel.0);
                let Some(p) = b.parcels.get(&key) else {
                    return Err(format!("{at}: delivered unknown parcel {key:?}"));
                };
                if mode_of(mode) != p.mode {
                    return Err(format!(
                        "{at}: {key:?} sent {:?}, delivered {mode:?}",
                        p.mode
                    ));
                }
                if payload[..] != p.bytes[..] {
                    return Err(format!(
                        "{at}: {key:?} delivered damaged ({} of {} bytes)",
                        payload.len(),
                        p.bytes.len()
                    ));
                }
                let Some(rinc) = view.incarnation(at) else {
                    return Err(format!("{at}: delivery at a node that is down"));
                };
                if !b.delivered.insert((key, at, rinc)) {
                    return Err(format!("{at}: {key:?} delivered twice"));
                }
                let be = p.mode == Mode::BestEffort;
                let last = b
                    .last
                    .entry((*from, *from_incarnation, at, rinc, be))
                    .or_insert(0);
                if parcel.0 < *last {
                    return Err(format!(
                        "{at}: {key:?} delivered after parcel {} (FIFO)",
                        *last
                    ));
                }
                *last = parcel.0 + 1;
                if !be {
                    if !p.receivers.contains(&at) {
                        return Err(format!(
                            "{at}: sequenced {key:?} delivered, but it was sent before {at} joined"
                        ));
                    }
                    if b.told_left
                        .get(&at)
                        .is_some_and(|v| v.iter().any(|&l| l > p.sent_at && l <= t))
                    {
                        return Err(format!("{at}: {key:?} delivered after {at} left the view"));
                    }
                }
                if p.mode == Mode::Timed {
                    let bound = p.sent_at + p.ttl + b.max_latency;
                    let paused = b
                        .pauses
                        .iter()
                        .any(|&(n, f, u)| n == at && f <= t && u >= p.sent_at);
                    if t > bound && !paused {
                        return Err(format!(
                            "{at}: timed {key:?} delivered at {t}, deadline {} + latency",
                            p.sent_at + p.ttl
                        ));
                    }
                }
                b.owed.remove(&(key, at));
                *b.tally.delivered.entry(p.mode).or_insert(0) += 1;
            }
            RmcastEvent::Expired { parcel } => {
                let Some(inc) = view.incarnation(at) else {
                    return Err(format!("{at}: event while down"));
                };
                let key = (at, inc, parcel.0);
                let Some(p) = b.parcels.get(&key) else {
                    return Err(format!("{at}: unknown parcel {key:?} expired"));
                };
                if p.mode != Mode::Timed || t < p.sent_at + p.ttl {
                    return Err(format!("{at}: {key:?} ({:?}) expired early at {t}", p.mode));
                }
                if b.acknowledged.contains(&key) || !b.expired.insert(key) {
                    return Err(format!("{at}: {key:?} expired after its end"));
                }
                b.tally.expired += 1;
            }
            RmcastEvent::Acknowledged { parcel } => {
                let Some(inc) = view.incarnation(at) else {
                    return Err(format!("{at}: event while down"));
                };
                let key = (at, inc, parcel.0);
                match b.parcels.get(&key) {
                    Some(p) if p.mode != Mode::BestEffort => {}
                    _ => return Err(format!("{at}: acknowledged {key:?}")),
                }
                if b.expired.contains(&key) || !b.acknowledged.insert(key) {
                    return Err(format!("{at}: {key:?} acknowledged after its end"));
                }
            }
            RmcastEvent::Suspect { node } => {
                if *node == at {
                    return Err(format!("{at} suspects itself"));
                }
                b.tally.suspects += 1;
            }
            RmcastEvent::SendWindowOpen => b.tally.window_open += 1,
        }
    }
    Ok(())
}

/// The MAB rule, from both sides: no sender transmitted at or above its
/// limit, and the MAB it holds for a receiver is one that receiver
/// advertised.
fn check_mab(
    view: &sim::CheckView<'_, Rmcast>,
    senders: &[NodeId],
    cross: bool,
) -> Result<(), String> {
    for &s in senders {
        let Some(c) = view.core(s) else {
            continue;
        };
        let i = c.sender_info();
        if let Some(m) = i.max_sent {
            if m >= i.limit {
                return Err(format!(
                    "{s} sent sequence {m}, its MAB limit is {}",
                    i.limit
                ));
            }
        }
        if !cross {
            continue;
        }
        for r in c.receivers() {
            let Some(ri) = c.receiver_info(*r) else {
                continue;
            };
            let (Some(epoch), Some(rinc)) = (ri.epoch, ri.incarnation) else {
                continue;
            };
            let Some(rc) = view.core(*r) else {
                continue;
            };
            if rc.incarnation() != rinc {
                continue;
            }
            let Some(si) = rc.stream_info(s) else {
                continue;
            };
            if si.epoch != epoch || si.incarnation != c.incarnation() {
                continue;
            }
            if let Some((_, _, advertised)) = si.synced {
                if ri.mab > advertised {
                    return Err(format!(
                        "{s} uses MAB {} for {r}, which advertised at most {advertised}",
                        ri.mab
                    ));
                }
            }
        }
    }
    Ok(())
}

fn pick_size(plan: &mut ChaCha8Rng) -> usize {
    match plan.random_range(0..1000) {
        0..=749 => plan.random_range(0..1200),
        750..=949 => plan.random_range(1200..12_000),
        950..=989 => plan.random_range(12_000..64_000),
        _ => plan.random_range(64_000..200_000),
    }
}

/// One run; returns the trace hash and what it exercised.
fn run(seed: u64, test: &str) -> (String, Tally) {
    let mut plan = ChaCha8Rng::seed_from_u64(seed ^ 0x524d_4341_5354);
    let latency_max = Duration::from_micros(plan.random_range(100..2000));
    let link = LinkConfig::lan()
        .with_latency(Duration::from_micros(50), latency_max)
        .with_loss(plan.random_range(0.0..=0.30))
        .with_duplicate(plan.random_range(0.0..=0.10))
        .with_reorder(plan.random_range(0.0..=0.20), REORDER_DELAY)
        .with_corrupt(plan.random_range(0.0..=0.01))
        .with_truncate(plan.random_range(0.0..=0.01));
    // `SIM_TRACE_TAIL=N` keeps the last N trace lines for failure messages.
    let tail = std::env::var("SIM_TRACE_TAIL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cfg = SimConfig::new(seed, sim_replay!(test))
        .with_link(link)
        .with_keep_events(false)
        .with_trace_tail(tail)
        .with_max_events_per_run(if tail > 0 { 2_000_000 } else { 50_000_000 });
    let config = RmcastConfig {
        window: [16, 64, 256][plan.random_range(0..3)],
        send_buffer_parcels: if plan.random_bool(0.2) { 6 } else { 1024 },
        ..RmcastConfig::default()
    };
    let n_senders: u8 = plan.random_range(1..=2);
    let n_receivers: u8 = plan.random_range(3..=8);
    let senders: Vec<NodeId> = (1..=n_senders).map(node).collect();
    let receivers: Vec<NodeId> = (1..=n_receivers).map(|i| node(10 + i)).collect();
    let joiners = plan.random_range(0..=2usize);
    let (initial_r, late_r) = receivers.split_at(receivers.len() - joiners);

    let book = Rc::new(RefCell::new(Book {
        max_latency: latency_max + REORDER_DELAY + Duration::from_millis(1),
        ..Book::default()
    }));
    let factory_config = config.clone();
    let mut sim = Simulator::new(cfg, move |spawn| {
        Rmcast::new(
            spawn.id,
            spawn.incarnation,
            group(),
            factory_config.clone(),
            spawn.seed,
        )
    });
    let checker_book = book.clone();
    let checked_senders = senders.clone();
    let mut steps = 0u64;
    sim.add_checker("rmcast delivery and flow control", move |view| {
        let mut b = checker_book.borrow_mut();
        check_events(&mut b, view)?;
        // The limit after every step; the cross-check with what receivers
        // advertised every 8th (a MAB only grows, so a violation persists
        // until the next check).
        steps += 1;
        check_mab(view, &checked_senders, steps % 8 == 0)
    });

    for n in senders.iter().chain(receivers.iter()) {
        sim.add_node(*n);
    }
    {
        let mut b = book.borrow_mut();
        b.view = senders.iter().chain(initial_r.iter()).copied().collect();
    }
    let initial: Vec<NodeId> = book.borrow().view.iter().copied().collect();
    for n in &initial {
        sim.join_group(*n, group());
    }
    apply_view(&mut sim, &book, None);

    // View changes.
    let mut last_event = Instant::ZERO;
    for &j in late_r {
        let at = Instant::from_micros(plan.random_range(100_000..CHAOS.as_micros() as u64));
        let listen = at - Duration::from_millis(plan.random_range(0..300));
        sim.schedule(listen, move |sim| sim.join_group(j, group()));
        let b2 = book.clone();
        sim.schedule(at, move |sim| {
            b2.borrow_mut().view.insert(j);
            b2.borrow_mut().tally.joins += 1;
            apply_view(sim, &b2, None);
        });
    }
    let candidates: Vec<NodeId> = initial_r.to_vec();
    let n_leaves = plan
        .random_range(0..=2usize)
        .min(candidates.len().saturating_sub(2));
    let mut leavers = BTreeSet::new();
    for _ in 0..n_leaves {
        let r = candidates[plan.random_range(0..candidates.len())];
        if !leavers.insert(r) {
            continue;
        }
        let at = Instant::from_micros(plan.random_range(50_000..CHAOS.as_micros() as u64));
        let crash = plan.random_bool(0.5);
        let detect = Duration::from_millis(plan.random_range(100..1600));
        let rejoin = plan
            .random_bool(0.5)
            .then(|| Duration::from_millis(plan.random_range(50..800)));
        let b2 = book.clone();
        let leave = move |sim: &mut Simulator<Rmcast>| {
            let mut b = b2.borrow_mut();
            b.view.remove(&r);
            let now = sim.now();
            b.left_view.entry(r).or_default().push(now);
            b.tally.leaves += 1;
            drop(b);
            sim.leave_group(r, group());
            apply_view(sim, &b2, None);
        };
        last_event = last_event.max(at + detect + rejoin.unwrap_or_default());
        if crash {
            sim.schedule(at, move |sim| {
                sim.crash(r);
            });
            book.borrow_mut().tally.crashes += 1;
            sim.schedule(at + detect, leave);
        } else {
            sim.schedule(at, leave);
        }
        if let Some(after) = rejoin {
            let b2 = book.clone();
            let back = at + detect + after;
            sim.schedule(back, move |sim| {
                if !sim.is_up(r) {
                    sim.restart(r);
                }
                sim.join_group(r, group());
                b2.borrow_mut().view.insert(r);
                b2.borrow_mut().tally.rejoins += 1;
                apply_view(sim, &b2, None);
            });
        }
    }
    // A pause of a receiver that stays.
    let stayers: Vec<NodeId> = initial_r
        .iter()
        .filter(|r| !leavers.contains(*r))
        .copied()
        .collect();
    if plan.random_bool(0.4) && !stayers.is_empty() {
        let r = stayers[plan.random_range(0..stayers.len())];
        let at = Instant::from_micros(plan.random_range(0..CHAOS.as_micros() as u64));
        let len = Duration::from_millis(plan.random_range(50..1500));
        last_event = last_event.max(at + len);
        book.borrow_mut().pauses.push((r, at, at + len));
        book.borrow_mut().tally.pauses += 1;
        sim.schedule(at, move |sim| {
            sim.pause(r);
        });
        let b2 = book.clone();
        sim.schedule(at + len, move |sim| {
            sim.resume(r);
            apply_view(sim, &b2, Some(r));
        });
    }

    // Traffic.
    for &s in &senders {
        let count = plan.random_range(5..=14);
        for k in 0..count {
            let at = Instant::from_micros(plan.random_range(0..CHAOS.as_micros() as u64));
            let burst = if plan.random_bool(0.1) { 4 } else { 1 };
            for _ in 0..burst {
                let mut len = pick_size(&mut plan);
                if k == 0 && seed % 50 == 0 && s == senders[0] {
                    len = 1 << 20;
                }
                let (mode, delivery, ttl) = match plan.random_range(0..100) {
                    0..=54 => (Mode::Reliable, Delivery::Reliable, Duration::ZERO),
                    55..=79 => {
                        let ttl = Duration::from_millis(plan.random_range(5..300));
                        (Mode::Timed, Delivery::Timed(ttl), ttl)
                    }
                    _ => (Mode::BestEffort, Delivery::BestEffort, Duration::ZERO),
                };
                let b2 = book.clone();
                sim.schedule(at, move |sim| {
                    let tag = {
                        let mut b = b2.borrow_mut();
                        b.next_tag += 1;
                        b.next_tag
                    };
                    let b3 = b2.clone();
                    sim.with_core(s, move |c: &mut Rmcast, now| {
                        // Recorded inside the command, before any checker
                        // sees this parcel's events.
                        let mut b = b3.borrow_mut();
                        let receivers: BTreeSet<NodeId> =
                            b.view.iter().filter(|n| **n != s).copied().collect();
                        let bytes: Rc<[u8]> = pattern(tag, len).into();
                        match c.send(now, bytes.to_vec(), delivery) {
                            Ok(id) => {
                                *b.tally.sent.entry(mode).or_insert(0) += 1;
                                if len >= 64_000 {
                                    b.tally.large += 1;
                                }
                                b.parcels.insert(
                                    (s, c.incarnation(), id.0),
                                    Parcel {
                                        bytes,
                                        mode,
                                        sent_at: now,
                                        ttl,
                                        receivers,
                                    },
                                );
                            }
                            Err(SendError::QueueFull) => b.tally.queue_full += 1,
                            Err(e) => panic!("send refused: {e}"),
                        }
                    });
                });
            }
        }
    }
    sim.run_until(Instant::ZERO + CHAOS);

    // Healed phase: clean links; the last view changes and resumes happen,
    // then everyone is resumed.
    sim.heal();
    sim.set_default_link(LinkConfig::lan());
    sim.run_until(last_event.max(sim.now()));
    let nodes: Vec<NodeId> = sim.nodes().collect();
    for n in &nodes {
        if sim.is_paused(*n) {
            sim.resume(*n);
            apply_view(&mut sim, &book, Some(*n));
        }
    }
    {
        let mut b = book.borrow_mut();
        let view = b.view.clone();
        let mut owed = BTreeSet::new();
        for (key, p) in &b.parcels {
            if p.mode != Mode::Reliable || !view.contains(&key.0) {
                continue;
            }
            for r in &p.receivers {
                let stayed = view.contains(r)
                    && !b
                        .left_view
                        .get(r)
                        .is_some_and(|v| v.iter().any(|&l| l >= p.sent_at));
                if stayed {
                    owed.insert((*key, *r));
                }
            }
        }
        // Those already delivered.
        let delivered: BTreeSet<(PKey, NodeId)> =
            b.delivered.iter().map(|(k, r, _)| (*k, *r)).collect();
        b.tally.owed_checked += owed.len() as u64;
        b.owed = owed.difference(&delivered).copied().collect();
    }
    let done = {
        let book = book.clone();
        move |_: &Simulator<Rmcast>| book.borrow().owed.is_empty()
    };
    if !sim.run_until_condition(Duration::from_secs(30), done) {
        let b = book.borrow();
        let first = b.owed.iter().next().copied();
        let info = first.map(|((s, _, _), r)| {
            (
                sim.core(s).map(|c| (c.sender_info(), c.receiver_info(r))),
                sim.core(r).map(|c| c.stream_info(s)),
            )
        });
        sim.fail(format!(
            "healed phase: {} owed deliveries missing, first {first:?}: {info:?}",
            b.owed.len()
        ));
    }
    // Quiescence: everything acknowledged or expired, then silence.
    sim.run_for(Duration::from_secs(3));
    for s in &senders {
        if let Some(c) = sim.core(*s) {
            let i = c.sender_info();
            if i.held_parcels != 0 {
                sim.fail(format!("{s} still holds {} parcels: {i:?}", i.held_parcels));
            }
        }
    }
    let sent_before = sim.stats().totals.sent;
    sim.run_for(Duration::from_secs(5));
    let sent_after = sim.stats().totals.sent;
    if sent_after != sent_before {
        sim.fail(format!(
            "an idle group sent {} datagrams in 5 s",
            sent_after - sent_before
        ));
    }
    for n in sim.up_nodes().collect::<Vec<_>>() {
        if let Some(t) = sim.core(n).and_then(|c| c.poll_timeout()) {
            sim.fail(format!("{n}: idle but a timer is armed for {t}"));
        }
    }

    let mut tally = book.borrow().tally.clone();
    tally.seeds = 1;
    for n in sim.up_nodes().collect::<Vec<_>>() {
        if let Some(c) = sim.core(n) {
            tally.add_stats(c.stats());
            tally.not_owed_heard += c.stats().duplicates;
        }
    }
    let st = sim.stats();
    tally.lost = st.totals.lost;
    tally.duplicated = st.totals.duplicated;
    tally.reordered = st.totals.reordered;
    (sim.trace_hex(), tally)
}

#[test]
fn rmcast_many_seeds() {
    let replay = sim_replay!("rmcast_many_seeds");
    let mut total = Tally::default();
    sim::run_seeds(&replay, 1000, |seed| {
        let (_, t) = run(seed, "rmcast_many_seeds");
        total.add(&t);
    });
    eprintln!("rmcast_many_seeds: {total:#?}");
    if total.seeds >= 500 {
        let s = total.seeds;
        let get = |m: &BTreeMap<Mode, u64>, k| m.get(&k).copied().unwrap_or(0);
        for mode in [Mode::Reliable, Mode::Timed, Mode::BestEffort] {
            assert!(get(&total.sent, mode) >= s * 3, "{mode:?} sent: {total:#?}");
            assert!(
                get(&total.delivered, mode) >= s * 5,
                "{mode:?} delivered: {total:#?}"
            );
        }
        // About half of what the default 1,000 seeds exercise.
        assert!(total.owed_checked >= s * 25, "{total:#?}");
        assert!(total.large >= s / 10, "{total:#?}");
        assert!(total.lost >= s * 100, "{total:#?}");
        assert!(total.duplicated >= s * 20, "{total:#?}");
        assert!(total.reordered >= s * 50, "{total:#?}");
        assert!(total.retransmitted >= s * 20, "{total:#?}");
        assert!(total.nacks_suppressed >= s * 5, "{total:#?}");
        assert!(total.syncs >= s * 10, "{total:#?}");
        assert!(total.expired >= s, "{total:#?}");
        assert!(total.timed_purged >= s / 2, "{total:#?}");
        assert!(total.best_effort_abandoned >= s, "{total:#?}");
        assert!(total.joins >= s / 2, "{total:#?}");
        assert!(total.leaves >= s / 2, "{total:#?}");
        assert!(total.crashes >= s / 5, "{total:#?}");
        assert!(total.rejoins >= s / 5, "{total:#?}");
        assert!(total.pauses >= s / 5, "{total:#?}");
        assert!(total.suspects >= s / 10, "{total:#?}");
        assert!(total.queue_full > 0 && total.window_open > 0, "{total:#?}");
    }
}

#[test]
fn rmcast_sim_is_deterministic() {
    let replay = sim_replay!("rmcast_sim_is_deterministic");
    sim::run_seeds(&replay, 3, |seed| {
        let a = run(seed, "rmcast_sim_is_deterministic").0;
        let b = run(seed, "rmcast_sim_is_deterministic").0;
        assert_eq!(a, b, "seed {seed}: same seed, different traces");
        assert_ne!(a, run(seed + 7777, "rmcast_sim_is_deterministic").0);
    });
}
