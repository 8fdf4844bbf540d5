//! Tests of the RPC layer (seed 004, section 5.3), by topic:
//!
//! - [`blast`]: BLAST alone, two endpoints passing datagrams by hand
//!   (fragmentation edge cases, SRR retransmission, the window, the RETRY,
//!   POLL and DONE timers, reassembly bounds, bad fragments);
//! - [`chan`]: CHAN and SELECT behaviour through the composed [`Rpc`]
//!   endpoint (first contact, duplicates, lost replies, probes, restarts,
//!   RTO arithmetic, bounds);
//! - [`random`]: seeded lossy runs with crashes and restarts, checking
//!   at-most-once and that every call completes;
//! - [`proptests`]: property tests of the codecs and of bad input.
//!
//! This file holds what they share: a small deterministic network of
//! endpoints on virtual time (seeded loss, duplication, reordering, crashes
//! and restarts) and helpers to build and inspect messages.

use super::*;
use crate::rpc::blast::{BlastPacket, Fragment, Srr};
use crate::sansio::{Core, Incoming};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

mod blast;
mod chan;
mod proptests;
mod random;

fn node(i: u8) -> NodeId {
    NodeId::v4(10, 0, 0, i, 7000)
}

fn inc(life: u64, i: u8) -> Incarnation {
    Incarnation::from_parts(1_000_000 + life * 1000 + u64::from(i), [i; 10])
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A datagram in flight.
#[derive(Clone, Debug)]
struct Dgram {
    from: NodeId,
    from_inc: Incarnation,
    to: NodeId,
    body: Vec<u8>,
}

/// The CHAN message a datagram carries, if it is a one-fragment message.
fn chan_of(body: &[u8]) -> Option<ChanMessage> {
    match wire::decode_body::<BlastPacket>(body).ok()? {
        BlastPacket::Fragment(f) if f.count == 1 => wire::decode_message(f.data.as_slice()).ok(),
        _ => None,
    }
}

fn kind(m: &ChanMessage) -> &'static str {
    match m {
        ChanMessage::Hello { .. } => "Hello",
        ChanMessage::Iam { .. } => "Iam",
        ChanMessage::Request(_) => "Request",
        ChanMessage::Reply { .. } => "Reply",
        ChanMessage::Ack { .. } => "Ack",
        ChanMessage::Probe { .. } => "Probe",
        ChanMessage::Unknown { .. } => "Unknown",
        ChanMessage::Forgotten { .. } => "Forgotten",
        ChanMessage::Restarted { .. } => "Restarted",
        ChanMessage::ReplyAck { .. } => "ReplyAck",
    }
}

/// Decides the fate of a datagram: `true` delivers it.
type Filter = Box<dyn FnMut(Instant, &Dgram, Option<&ChanMessage>) -> bool>;

/// Registers a host's handlers at every (re)start: `(node, life, rpc)`.
type Setup = Rc<dyn Fn(NodeId, u64, &mut Rpc)>;

struct Net {
    rng: ChaCha8Rng,
    loss: f64,
    dup: f64,
    min_delay: Duration,
    max_delay: Duration,
    queue: BTreeMap<(Instant, u64), Dgram>,
    seq: u64,
    filter: Option<Filter>,
    /// `(time, from, to, kind)` of every one-fragment CHAN message sent.
    trace: Vec<(Instant, NodeId, NodeId, &'static str)>,
    /// With `RPC_DEBUG` set: every CHAN message sent, in full.
    debug: Vec<String>,
}

impl Net {
    fn send(&mut self, now: Instant, d: Dgram) {
        let msg = chan_of(&d.body);
        if let Some(m) = &msg {
            self.trace.push((now, d.from, d.to, kind(m)));
            if std::env::var("RPC_DEBUG").is_ok() {
                self.debug
                    .push(format!("{now:?} {:?}->{:?} {m:?}", d.from, d.to));
            }
        }
        if let Some(f) = &mut self.filter {
            if !f(now, &d, msg.as_ref()) {
                return;
            }
        }
        let copies = if self.rng.random_bool(self.dup) { 2 } else { 1 };
        for _ in 0..copies {
            if self.rng.random_bool(self.loss) {
                continue;
            }
            let span = self.max_delay.saturating_sub(self.min_delay).as_micros() as u64;
            let jitter = if span == 0 {
                0
            } else {
                self.rng.random_range(0..=span)
            };
            let at = now + self.min_delay + Duration::from_micros(jitter);
            self.seq += 1;
            self.queue.insert((at, self.seq), d.clone());
        }
    }

    fn sent(&self, kind: &str) -> Vec<Instant> {
        self.trace
            .iter()
            .filter(|t| t.3 == kind)
            .map(|t| t.0)
            .collect()
    }
}

struct Host {
    rpc: Rpc,
    life: u64,
    up: bool,
    events: Vec<RpcEvent>,
}

struct World {
    now: Instant,
    net: Net,
    hosts: BTreeMap<NodeId, Host>,
    config: RpcConfig,
    setup: Setup,
    lives: u64,
}

impl World {
    fn new(n: u8, config: RpcConfig, seed: u64, setup: Setup) -> World {
        let mut hosts = BTreeMap::new();
        for i in 1..=n {
            let mut rpc = Rpc::new(
                node(i),
                inc(0, i),
                config.clone(),
                seed * 100 + u64::from(i),
            );
            setup(node(i), 0, &mut rpc);
            hosts.insert(
                node(i),
                Host {
                    rpc,
                    life: 0,
                    up: true,
                    events: Vec::new(),
                },
            );
        }
        World {
            now: Instant::ZERO,
            net: Net {
                rng: ChaCha8Rng::seed_from_u64(seed),
                loss: 0.0,
                dup: 0.0,
                min_delay: ms(1),
                max_delay: ms(1),
                queue: BTreeMap::new(),
                seq: 0,
                filter: None,
                trace: Vec::new(),
                debug: Vec::new(),
            },
            hosts,
            config,
            setup,
            lives: 0,
        }
    }

    fn rpc(&mut self, n: u8) -> &mut Rpc {
        &mut self.hosts.get_mut(&node(n)).unwrap().rpc
    }

    fn flush(&mut self) {
        let now = self.now;
        for (id, h) in self.hosts.iter_mut() {
            if !h.up {
                continue;
            }
            while let Some(t) = h.rpc.poll_transmit() {
                assert_eq!(t.protocol, ProtocolId::Rpc);
                assert!(t.body.len() <= wire::MAX_BODY);
                let d = Dgram {
                    from: *id,
                    from_inc: h.rpc.incarnation(),
                    to: t.destination,
                    body: t.body,
                };
                self.net.send(now, d);
            }
            while let Some(e) = h.rpc.poll_event() {
                h.events.push(e);
            }
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let mut next = self.net.queue.keys().next().map(|k| k.0);
        for h in self.hosts.values().filter(|h| h.up) {
            next = crate::time::earliest(next, h.rpc.poll_timeout());
        }
        next
    }

    /// One step: the earliest datagram or timer. False when idle or past
    /// `limit`.
    fn step(&mut self, limit: Instant) -> bool {
        self.flush();
        let Some(next) = self.next_time() else {
            return false;
        };
        if next > limit {
            self.now = self.now.max(limit);
            return false;
        }
        self.now = self.now.max(next);
        let now = self.now;
        if self.net.queue.keys().next().map(|k| k.0) == Some(next) {
            let (_, d) = self.net.queue.pop_first().unwrap();
            if let Some(h) = self.hosts.get_mut(&d.to) {
                if h.up {
                    h.rpc.handle_packet(
                        now,
                        Incoming {
                            source: d.from,
                            source_incarnation: d.from_inc,
                            destination: d.to,
                            protocol: ProtocolId::Rpc,
                            relayed: false,
                            body: &d.body,
                            peer: d.from,
                            datagram: &[],
                        },
                    );
                }
            }
        } else {
            for h in self.hosts.values_mut().filter(|h| h.up) {
                if h.rpc.poll_timeout().is_some_and(|t| t <= now) {
                    h.rpc.handle_timeout(now);
                }
            }
        }
        self.flush();
        true
    }

    fn run_until(&mut self, limit: Instant) {
        while self.step(limit) {}
        self.now = self.now.max(limit);
    }

    fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        self.run_until(limit);
    }

    /// Runs until `n`'s events satisfy `done` (or `limit`).
    fn run_until_event(
        &mut self,
        n: u8,
        limit: Instant,
        mut done: impl FnMut(&[RpcEvent]) -> bool,
    ) -> bool {
        loop {
            if done(&self.hosts[&node(n)].events) {
                return true;
            }
            if !self.step(limit) {
                return done(&self.hosts[&node(n)].events);
            }
        }
    }

    fn completion(&self, n: u8, id: CallId) -> Option<(Result<Vec<u8>, CallError>, usize)> {
        let evs: Vec<_> = self.hosts[&node(n)]
            .events
            .iter()
            .filter_map(|e| match e {
                RpcEvent::CallCompleted { id: i, result, .. } if *i == id => Some(result.clone()),
                _ => None,
            })
            .collect();
        evs.first().cloned().map(|r| (r, evs.len()))
    }

    /// Runs until call `id` of host `n` completes; returns its result and
    /// the time it completed.
    fn await_call(&mut self, n: u8, id: CallId) -> (Result<Vec<u8>, CallError>, Instant) {
        let limit = self.now + Duration::from_secs(600);
        let found = self.run_until_event(n, limit, |evs| {
            evs.iter()
                .any(|e| matches!(e, RpcEvent::CallCompleted { id: i, .. } if *i == id))
        });
        assert!(found, "call {id:?} never completed");
        let (r, count) = self.completion(n, id).unwrap();
        assert_eq!(count, 1);
        (r, self.now)
    }

    fn take_requests(&mut self, n: u8) -> Vec<(RequestToken, Vec<u8>)> {
        let h = self.hosts.get_mut(&node(n)).unwrap();
        let mut out = Vec::new();
        h.events.retain(|e| match e {
            RpcEvent::Request { token, body, .. } => {
                out.push((*token, body.clone()));
                false
            }
            _ => true,
        });
        out
    }

    fn crash(&mut self, n: u8) {
        let h = self.hosts.get_mut(&node(n)).unwrap();
        h.up = false;
        h.events.clear();
    }

    /// Restarts host `n` with a new (newer) incarnation and fresh state.
    fn restart(&mut self, n: u8, seed: u64) {
        self.lives += 1;
        let life = self.lives;
        let mut rpc = Rpc::new(node(n), inc(life, n), self.config.clone(), seed);
        (self.setup)(node(n), life, &mut rpc);
        let h = self.hosts.get_mut(&node(n)).unwrap();
        h.rpc = rpc;
        h.life = life;
        h.up = true;
        h.events.clear();
    }
}

/// Counts handler executions by the 8-byte tag that opens each request.
type ExecLog = Rc<RefCell<BTreeMap<u64, u32>>>;

fn tag_of(body: &[u8]) -> u64 {
    body.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(u64::MAX)
}

fn tagged(tag: u64, len: usize) -> Vec<u8> {
    let mut b = tag.to_le_bytes().to_vec();
    b.extend((0..len.saturating_sub(8)).map(|i| (i as u64 ^ tag.wrapping_mul(31)) as u8));
    b.truncate(len.max(8));
    b
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The reply the test handlers give to `body`: its tag, its hash, and a
/// pattern whose length depends on the hash.
fn expected_reply(body: &[u8]) -> Vec<u8> {
    let h = fnv(body);
    let len = if h % 10 == 0 {
        20_000 + (h % 300_000) as usize
    } else {
        (h % 200) as usize
    };
    let mut r = tag_of(body).to_le_bytes().to_vec();
    r.extend_from_slice(&h.to_le_bytes());
    r.extend((0..len).map(|i| (i as u64 ^ h) as u8));
    r
}

const ECHO: u16 = 1;
const DEFER: u16 = 2;
const SLOW: u16 = 3;

/// Handlers: `ECHO` answers at once with [`expected_reply`]; `DEFER` and
/// `SLOW` defer. Every execution is logged.
fn standard_setup(log: ExecLog) -> Setup {
    Rc::new(move |_, _, rpc: &mut Rpc| {
        let l = log.clone();
        rpc.register(ECHO, move |_, body| {
            *l.borrow_mut().entry(tag_of(body)).or_insert(0) += 1;
            HandlerResult::Reply(expected_reply(body))
        });
        let l = log.clone();
        rpc.register(DEFER, move |_, body| {
            *l.borrow_mut().entry(tag_of(body)).or_insert(0) += 1;
            HandlerResult::Deferred
        });
        let l = log.clone();
        rpc.register(SLOW, move |_, body| {
            *l.borrow_mut().entry(tag_of(body)).or_insert(0) += 1;
            HandlerResult::Deferred
        });
    })
}

fn world(n: u8, config: RpcConfig) -> (World, ExecLog) {
    let log: ExecLog = Rc::default();
    (World::new(n, config, 1, standard_setup(log.clone())), log)
}

fn executions(log: &ExecLog, tag: u64) -> u32 {
    log.borrow().get(&tag).copied().unwrap_or(0)
}

/// A one-fragment datagram carrying `m` (whatever its size claims).
fn wrap(m: &ChanMessage) -> Vec<u8> {
    wrap_mid(m, 1)
}

/// As [`wrap`], as BLAST message `blast_mid`.
fn wrap_mid(m: &ChanMessage, blast_mid: u64) -> Vec<u8> {
    let data = wire::encode_body(m).unwrap();
    wire::encode_body(&BlastPacket::Fragment(Fragment {
        mid: blast_mid,
        index: 0,
        count: 1,
        frag_size: data.len().max(1) as u32,
        total_len: data.len() as u32,
        window: 128,
        seq: 0,
        poll: false,
        rtt_hint_ms: 0,
        data: Bytes(data),
    }))
    .unwrap()
}

fn victim() -> Rpc {
    let mut rpc = Rpc::new(node(1), inc(0, 1), RpcConfig::default(), 3);
    rpc.register(ECHO, |_, b| HandlerResult::Reply(b.to_vec()));
    rpc.register(DEFER, |_, _| HandlerResult::Deferred);
    // Some client state to poke at, too.
    rpc.call(
        Instant::ZERO,
        node(2),
        ECHO,
        vec![1],
        CallOptions::default(),
    );
    rpc.learn_incarnation(Instant::ZERO, node(3), inc(0, 3));
    rpc.call(
        Instant::ZERO,
        node(3),
        ECHO,
        vec![2],
        CallOptions::default(),
    );
    rpc
}

fn feed(rpc: &mut Rpc, now: Instant, from: u8, body: &[u8]) {
    rpc.handle_packet(
        now,
        Incoming {
            source: node(from),
            source_incarnation: inc(0, from),
            destination: node(1),
            protocol: ProtocolId::Rpc,
            relayed: false,
            body,
            peer: node(from),
            datagram: &[],
        },
    );
    while rpc.poll_transmit().is_some() {}
    while rpc.poll_event().is_some() {}
}

/// Feeds `m` from node `from` to `rpc` as BLAST message `blast_mid`.
fn feed_mid(rpc: &mut Rpc, now: Instant, from: u8, m: &ChanMessage, blast_mid: u64) {
    feed(rpc, now, from, &wrap_mid(m, blast_mid));
}
