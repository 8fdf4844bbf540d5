//! Tests of the composed endpoint: CHAN and SELECT behaviour through
//! [`Rpc`], a small deterministic network of endpoints (seeded loss,
//! duplication, reordering, crashes and restarts on virtual time), and
//! property tests of the codecs and of bad input.

use super::*;
use crate::rpc::blast::BlastPacket;
use crate::sansio::{Core, Incoming};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

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

// ------------------------------------------------------------------- CHAN

#[test]
fn first_contact_costs_one_round_trip_then_is_cached() {
    let (mut w, log) = world(2, RpcConfig::default());
    let now = w.now;
    let c1 = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(1, 100), CallOptions::default());
    let (r, _) = w.await_call(1, c1);
    assert_eq!(r, Ok(expected_reply(&tagged(1, 100))));
    let kinds: Vec<_> = w.net.trace.iter().map(|t| t.3).collect();
    assert_eq!(kinds, vec!["Hello", "Iam", "Request", "Reply"]);
    assert_eq!(w.rpc(1).known_incarnation(node(2)), Some(inc(0, 2)));
    let now = w.now;
    let c2 = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(2, 100), CallOptions::default());
    assert!(w.await_call(1, c2).0.is_ok());
    let kinds: Vec<_> = w.net.trace.iter().map(|t| t.3).collect();
    assert_eq!(kinds[4..], ["Request", "Reply"], "no Hello the second time");
    assert_eq!(w.rpc(1).stats().chan.hellos_sent, 1);
    assert_eq!(executions(&log, 1), 1);
    assert_eq!(executions(&log, 2), 1);
    // The second request carried the first reply's acknowledgement, and the
    // second reply is acknowledged alone after ack_delay: nothing stays saved.
    w.run_for(ms(100));
    assert_eq!(w.net.sent("ReplyAck").len(), 1);
    assert_eq!(w.hosts[&node(2)].rpc.chan.saved_reply_bytes(), 0);
}

#[test]
fn learn_incarnation_skips_the_hello() {
    let (mut w, _) = world(2, RpcConfig::default());
    let now = w.now;
    w.rpc(1).learn_incarnation(now, node(2), inc(0, 2));
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(1, 10), CallOptions::default());
    assert!(w.await_call(1, c).0.is_ok());
    assert!(w.net.sent("Hello").is_empty());
}

#[test]
fn lost_reply_is_answered_from_the_cache_and_the_handler_runs_once() {
    let (mut w, log) = world(2, RpcConfig::default());
    let mut dropped = false;
    w.net.filter = Some(Box::new(move |_, _, m| {
        if matches!(m, Some(ChanMessage::Reply { .. })) && !dropped {
            dropped = true;
            return false;
        }
        true
    }));
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(7, 50), CallOptions::default());
    let (r, _) = w.await_call(1, c);
    assert_eq!(r, Ok(expected_reply(&tagged(7, 50))));
    assert_eq!(executions(&log, 7), 1);
    assert_eq!(w.net.sent("Request").len(), 2, "one retransmission");
    let s = w.rpc(2).stats();
    assert_eq!(s.chan.duplicates_answered_from_cache, 1);
    assert_eq!(s.chan.executions, 1);
    assert_eq!(s.select.dispatched, 1);
    assert_eq!(w.rpc(1).stats().chan.retransmissions, 1);
    // The cached reply echoed the retransmission: a 2 ms sample (after the
    // Iam's), and the back-off the retransmission left is cleared.
    assert_eq!(w.rpc(1).stats().chan.rtt_samples, 2);
    assert_eq!(w.rpc(1).chan.backoff(node(2)), Some(0));
    assert_eq!(
        w.rpc(1).chan.rtt(node(2)).unwrap().estimated(),
        Some(ms(2)),
        "both samples 2 ms"
    );
}

#[test]
fn duplicated_and_reordered_datagrams_execute_each_call_once() {
    let (mut w, log) = world(2, RpcConfig::default());
    w.net.dup = 1.0;
    w.net.max_delay = ms(30);
    let now = w.now;
    let ids: Vec<_> = (0..30u64)
        .map(|t| {
            let len = if t % 7 == 0 { 40_000 } else { 30 };
            w.rpc(1)
                .call(now, node(2), ECHO, tagged(t, len), CallOptions::default())
        })
        .collect();
    for (t, id) in ids.into_iter().enumerate() {
        let len = if t % 7 == 0 { 40_000 } else { 30 };
        let (r, _) = w.await_call(1, id);
        assert_eq!(r, Ok(expected_reply(&tagged(t as u64, len))));
    }
    w.run_for(Duration::from_secs(5));
    for t in 0..30 {
        assert_eq!(executions(&log, t), 1, "tag {t}");
    }
    let s = w.rpc(2).stats();
    assert!(s.chan.requests_received > 30);
    assert!(s.blast.duplicate_fragments > 0);
    assert_eq!(s.chan.executions, 30);
}

#[test]
fn a_probe_keeps_a_long_deferred_call_alive() {
    let (mut w, log) = world(2, RpcConfig::default());
    let now = w.now;
    let opts = CallOptions::default()
        .with_timeout(Duration::from_secs(60))
        .with_max_retries(2);
    let c = w.rpc(1).call(now, node(2), SLOW, tagged(3, 10), opts);
    w.run_for(Duration::from_secs(10));
    assert!(w.completion(1, c).is_none(), "still running after 10 s");
    let reqs = w.take_requests(2);
    assert_eq!(reqs.len(), 1);
    let now = w.now;
    assert!(w.rpc(2).respond(now, reqs[0].0, b"done".to_vec()));
    assert!(
        !w.rpc(2).respond(now, reqs[0].0, b"again".to_vec()),
        "a token answers once"
    );
    let (r, _) = w.await_call(1, c);
    assert_eq!(r, Ok(b"done".to_vec()));
    assert_eq!(executions(&log, 3), 1);
    let probes = w.net.sent("Probe");
    assert!((9..=11).contains(&probes.len()), "{} probes", probes.len());
    assert_eq!(
        w.net.sent("Request").len(),
        1,
        "acked at once, never retransmitted"
    );
    assert!(w.net.sent("Ack").len() >= 10);
    // Samples came from Iam and the Acks to the request and the probes;
    // the reply, sent 10 s after its request, echoed nothing.
    let est = w.rpc(1).chan.rtt(node(2)).unwrap().estimated().unwrap();
    assert_eq!(est, ms(2));
}

#[test]
fn a_dead_server_times_out_with_exponential_backoff() {
    let (mut w, _) = world(2, RpcConfig::default());
    w.crash(2);
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(1, 10), CallOptions::default());
    let (r, at) = w.await_call(1, c);
    assert_eq!(r, Err(CallError::Timeout));
    let sent: Vec<u64> = w
        .net
        .sent("Hello")
        .iter()
        .map(|t| t.as_micros() / 1000)
        .collect();
    // Initial RTO 100 ms, doubling: 0, 100, 300, 700, 1500, 3100; the
    // fifth retransmission's timer (3.2 s, clamped to max_rto 2 s) expires
    // at 5.1 s.
    assert_eq!(sent, vec![0, 100, 300, 700, 1500, 3100]);
    assert_eq!(at, Instant::from_millis(5100));
    let s = w.rpc(1).stats().chan;
    assert_eq!((s.retransmissions, s.timeouts, s.rtt_samples), (5, 1, 0));
    // The back-off is remembered for the peer until a valid sample, but a
    // new call inherits at most two doublings of it: 4 × the base RTO.
    assert_eq!(w.rpc(1).rto(node(2)), ms(100));
    assert_eq!(w.rpc(1).chan.backoff(node(2)), Some(5));
    assert_eq!(w.rpc(1).chan.initial_call_rto(node(2)), ms(400));
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(2, 10), CallOptions::default());
    let (r, at) = w.await_call(1, c);
    assert_eq!(r, Err(CallError::Timeout));
    let later: Vec<u64> = w.net.sent("Hello")[6..]
        .iter()
        .map(|t| t.as_micros() / 1000 - 5100)
        .collect();
    // 400, 800, 1600 ms, then clamped at 2 s: still exponential per call.
    assert_eq!(later, [0, 400, 1200, 2800, 4800, 6800]);
    assert_eq!(at, Instant::from_millis(5100 + 8800));
}

#[test]
fn after_a_loss_streak_the_next_call_starts_at_most_four_times_the_base_rto() {
    let (mut w, log) = world(2, RpcConfig::default());
    let now = w.now;
    w.rpc(1).learn_incarnation(now, node(2), inc(0, 2));
    // Every request is lost for 10 s: the first call times out.
    w.net.filter = Some(Box::new(|at, _, m| {
        !(matches!(m, Some(ChanMessage::Request(_))) && at < Instant::from_millis(10_000))
    }));
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(1, 10), CallOptions::default());
    assert_eq!(w.await_call(1, c).0, Err(CallError::Timeout));
    assert_eq!(w.rpc(1).chan.backoff(node(2)), Some(5));
    // The next call's first request is lost too; its retransmission goes
    // after 4 × the base RTO (100 ms, no sample yet), not after 2^5 × it.
    w.run_until(Instant::from_millis(9_900));
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(2, 10), CallOptions::default());
    let (r, _) = w.await_call(1, c);
    assert_eq!(r, Ok(expected_reply(&tagged(2, 10))));
    let reqs = w.net.sent("Request");
    let n = reqs.len();
    assert_eq!(reqs[n - 2], Instant::from_millis(9_900));
    assert_eq!(reqs[n - 1], Instant::from_millis(10_300));
    // Its reply answered the retransmission: a sample, and the back-off
    // is gone for the call after.
    assert_eq!(w.rpc(1).stats().chan.rtt_samples, 1);
    assert_eq!(w.rpc(1).chan.backoff(node(2)), Some(0));
    assert_eq!(
        w.rpc(1).chan.initial_call_rto(node(2)),
        w.rpc(1).rto(node(2))
    );
    assert_eq!(executions(&log, 2), 1);
}

#[test]
fn the_overall_deadline_fires() {
    let (mut w, log) = world(2, RpcConfig::default());
    let now = w.now;
    let c = w.rpc(1).call(
        now,
        node(2),
        SLOW,
        tagged(5, 10),
        CallOptions::default().with_timeout(ms(500)),
    );
    let (r, at) = w.await_call(1, c);
    assert_eq!(r, Err(CallError::Timeout));
    assert_eq!(at, Instant::from_millis(500));
    assert_eq!(executions(&log, 5), 1);
    // An absolute deadline earlier than the timeout wins.
    let now = w.now;
    let c = w.rpc(1).call(
        now,
        node(2),
        SLOW,
        tagged(6, 10),
        CallOptions::default().with_deadline(now + ms(200)),
    );
    let (r, at) = w.await_call(1, c);
    assert_eq!(r, Err(CallError::Timeout));
    assert_eq!(at, now + ms(200));
}

#[test]
fn rtt_estimator_follows_jacobson_karels() {
    let mut e = RttEstimator::new();
    assert_eq!(e.timeout(), None);
    e.sample(ms(100));
    assert_eq!(e.estimated(), Some(ms(100)));
    assert_eq!(e.deviation(), Some(ms(50)));
    assert_eq!(e.timeout(), Some(ms(300)));
    e.sample(ms(200));
    // Difference 100: Est += 100/8 -> 112.5; Dev += (100 - 50)/8 -> 56.25;
    // TimeOut = 112.5 + 4 * 56.25 = 337.5 ms.
    assert_eq!(e.estimated(), Some(Duration::from_micros(112_500)));
    assert_eq!(e.deviation(), Some(Duration::from_micros(56_250)));
    assert_eq!(e.timeout(), Some(Duration::from_micros(337_500)));
    e.sample(ms(50));
    // Difference -62.5: Est 104.6875; Dev += (62.5 - 56.25)/8 -> 57.03125.
    assert_eq!(e.estimated(), Some(Duration::from_micros(104_687)));
    assert_eq!(e.deviation(), Some(Duration::from_micros(57_031)));
    for _ in 0..200 {
        e.sample(ms(40));
    }
    let t = e.timeout().unwrap();
    assert!(t >= ms(40) && t < ms(41), "{t:?}");
    assert_eq!(e.samples(), 203);
}

#[test]
fn rto_adapts_to_the_measured_rtt_and_a_retransmission_is_sampled_by_its_echo() {
    let (mut w, _) = world(2, RpcConfig::default());
    w.net.min_delay = ms(20);
    w.net.max_delay = ms(20);
    assert_eq!(w.rpc(1).rto(node(2)), ms(100), "initial RTO");
    for t in 0..20 {
        let now = w.now;
        let c = w
            .rpc(1)
            .call(now, node(2), ECHO, tagged(t, 10), CallOptions::default());
        assert!(w.await_call(1, c).0.is_ok());
    }
    let rto = w.rpc(1).rto(node(2));
    assert!(rto >= ms(40) && rto < ms(60), "{rto:?}");
    let samples = w.rpc(1).stats().chan.rtt_samples;
    assert_eq!(samples, 21, "Iam + 20 replies");
    let est = w.rpc(1).chan.rtt(node(2)).unwrap().estimated().unwrap();
    assert!(est >= ms(40) && est < ms(41), "{est:?}");
    // Lose the next request once: the reply echoes the retransmission, so
    // it is a sample of 40 ms (not of the RTO plus 40 ms, as it would be if
    // matched to the first transmission), and it clears the back-off.
    let mut dropped = false;
    w.net.filter = Some(Box::new(move |_, _, m| {
        if matches!(m, Some(ChanMessage::Request(_))) && !dropped {
            dropped = true;
            return false;
        }
        true
    }));
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(99, 10), CallOptions::default());
    assert!(w.await_call(1, c).0.is_ok());
    assert_eq!(w.rpc(1).stats().chan.rtt_samples, samples + 1);
    assert_eq!(w.rpc(1).stats().chan.retransmissions, 1);
    let est = w.rpc(1).chan.rtt(node(2)).unwrap().estimated().unwrap();
    assert!(est >= ms(40) && est < ms(41), "{est:?}");
    assert_eq!(w.rpc(1).chan.backoff(node(2)), Some(0));
}

/// Drives `rpc` (client node 1, calling node 2 whose incarnation it knows)
/// through `retransmissions` timer expiries; returns the call's mid.
fn client_with_retransmissions(rpc: &mut Rpc, retransmissions: u32) -> (u64, Instant) {
    let mut now = Instant::ZERO;
    rpc.learn_incarnation(now, node(2), inc(0, 2));
    rpc.call(now, node(2), ECHO, tagged(1, 10), CallOptions::default());
    let mut attempts = Vec::new();
    loop {
        while let Some(t) = rpc.poll_transmit() {
            if let Some(ChanMessage::Request(r)) = chan_of(&t.body) {
                attempts.push((r.mid, r.attempt));
            }
        }
        if attempts.len() as u32 > retransmissions {
            break;
        }
        now = rpc.poll_timeout().unwrap();
        rpc.handle_timeout(now);
    }
    let want: Vec<u32> = (1..=retransmissions + 1).collect();
    assert_eq!(attempts.iter().map(|a| a.1).collect::<Vec<_>>(), want);
    (attempts[0].0, now)
}

#[test]
fn an_answer_to_any_recent_attempt_is_a_sample_and_clears_the_backoff() {
    let mut rpc = Rpc::new(node(1), inc(0, 1), RpcConfig::default(), 3);
    let (mid, sent) = client_with_retransmissions(&mut rpc, 3);
    assert_eq!(rpc.chan.backoff(node(2)), Some(3));
    // The Ack answers attempt 3 (sent 300 ms ago), not the last one.
    let now = sent + ms(300);
    let ack = |echo| ChanMessage::Ack {
        mid,
        server: inc(0, 2),
        echo,
    };
    feed_mid(&mut rpc, now, 2, &ack(3), 10);
    assert_eq!(rpc.stats().chan.rtt_samples, 1);
    assert_eq!(rpc.chan.backoff(node(2)), Some(0));
    // Attempt 3 was sent at 300 ms, the Ack came at 700 + 300 ms.
    assert_eq!(rpc.chan.rtt(node(2)).unwrap().estimated(), Some(ms(700)));
    // A duplicate of the same answer is no second sample.
    feed_mid(&mut rpc, now + ms(5), 2, &ack(3), 11);
    assert_eq!(rpc.stats().chan.rtt_samples, 1);
}

#[test]
fn a_stale_or_unknown_echo_is_no_sample() {
    let mut rpc = Rpc::new(node(1), inc(0, 1), RpcConfig::default(), 3);
    // Attempts 1..=6: only the last SENT_HISTORY (3..=6) are kept.
    let (mid, sent) = client_with_retransmissions(&mut rpc, 5);
    assert_eq!(chan::SENT_HISTORY, 4);
    let now = sent + ms(1);
    let reply = |echo| ChanMessage::Reply {
        mid,
        server: inc(0, 2),
        echo,
        outcome: Outcome::Ok(Bytes(b"x".to_vec())),
    };
    let ack = |echo| ChanMessage::Ack {
        mid,
        server: inc(0, 2),
        echo,
    };
    let mut blast_mid = 100;
    for (from, m) in [
        (2, ack(0)),        // echoes nothing
        (2, ack(1)),        // too old: evicted
        (2, ack(2)),        // too old: evicted
        (2, ack(7)),        // never sent
        (2, ack(u32::MAX)), // never sent
        (3, ack(6)),        // from another node
        (3, reply(6)),      // from another node
    ] {
        blast_mid += 1;
        feed_mid(&mut rpc, now, from, &m, blast_mid);
        assert_eq!(rpc.stats().chan.rtt_samples, 0, "{m:?} from {from}");
        assert_eq!(rpc.chan.backoff(node(2)), Some(5));
    }
    // The newest attempt still counts (sent at `sent`, answered 1 ms later).
    feed_mid(&mut rpc, now, 2, &reply(6), 200);
    assert_eq!(rpc.stats().chan.rtt_samples, 1);
    assert_eq!(rpc.chan.rtt(node(2)).unwrap().estimated(), Some(ms(1)));
    assert_eq!(rpc.chan.backoff(node(2)), Some(0));
    assert_eq!(rpc.pending_calls(), 0);
}

#[test]
fn a_restarted_server_fails_pending_calls_with_peer_restarted() {
    let (mut w, log) = world(2, RpcConfig::default());
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), SLOW, tagged(4, 10), CallOptions::default());
    w.run_for(Duration::from_millis(500));
    assert_eq!(executions(&log, 4), 1);
    w.crash(2);
    w.restart(2, 77);
    let (r, at) = w.await_call(1, c);
    assert_eq!(r, Err(CallError::PeerRestarted));
    assert!(
        at < Instant::from_millis(1600),
        "the first probe found out: {at:?}"
    );
    assert_eq!(executions(&log, 4), 1, "never executed again");
    assert_eq!(w.rpc(1).known_incarnation(node(2)), Some(inc(1, 2)));
    // The next call goes to the new life without another Hello.
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(8, 10), CallOptions::default());
    assert!(w.await_call(1, c).0.is_ok());
    assert_eq!(w.net.sent("Hello").len(), 1);
}

#[test]
fn a_request_for_an_old_incarnation_is_never_executed() {
    let (mut w, log) = world(2, RpcConfig::default());
    let now = w.now;
    // The client believes life 0; the server already runs life 1.
    w.rpc(1).learn_incarnation(now, node(2), inc(0, 2));
    w.crash(2);
    w.restart(2, 5);
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(9, 10), CallOptions::default());
    let (r, _) = w.await_call(1, c);
    assert_eq!(r, Err(CallError::PeerRestarted));
    assert_eq!(executions(&log, 9), 0);
    assert_eq!(w.rpc(2).stats().chan.restarted_answers, 1);
    // Learning an older incarnation afterwards changes nothing.
    let now = w.now;
    w.rpc(1).learn_incarnation(now, node(2), inc(0, 2));
    assert_eq!(w.rpc(1).known_incarnation(node(2)), Some(inc(1, 2)));
}

#[test]
fn learning_a_newer_incarnation_fails_calls_pinned_to_the_old_one() {
    let (mut w, _) = world(2, RpcConfig::default());
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), SLOW, tagged(1, 10), CallOptions::default());
    w.run_for(ms(50));
    let now = w.now;
    w.rpc(1).learn_incarnation(now, node(2), inc(9, 2));
    assert_eq!(
        w.completion(1, c),
        None,
        "events are drained on the next step"
    );
    w.flush();
    assert_eq!(w.completion(1, c), Some((Err(CallError::PeerRestarted), 1)));
}

#[test]
fn a_restarted_client_gets_a_fresh_table_and_its_old_life_is_ignored() {
    let (mut w, log) = world(2, RpcConfig::default());
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(1, 10), CallOptions::default());
    assert!(w.await_call(1, c).0.is_ok());
    // Capture a request of the old life, restart the client, replay it.
    let old_request = {
        let now = w.now;
        w.rpc(1)
            .call(now, node(2), ECHO, tagged(2, 10), CallOptions::default());
        let mut t = None;
        while let Some(x) = w.rpc(1).poll_transmit() {
            t = Some(x);
        }
        t.unwrap()
    };
    w.crash(1);
    w.restart(1, 3);
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(3, 10), CallOptions::default());
    assert!(w.await_call(1, c).0.is_ok());
    let now = w.now;
    w.rpc(2).handle_packet(
        now,
        Incoming {
            source: node(1),
            source_incarnation: inc(0, 1),
            destination: node(2),
            protocol: ProtocolId::Rpc,
            relayed: false,
            body: &old_request.body,
            peer: node(1),
            datagram: &[],
        },
    );
    assert_eq!(executions(&log, 2), 0, "the old life's request is dropped");
    assert_eq!(w.rpc(2).stats().chan.drops.get("stale_client"), 1);
}

#[test]
fn an_unknown_procedure_fails_fast_with_no_such_procedure() {
    let (mut w, _) = world(2, RpcConfig::default());
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), 999u16, vec![1, 2, 3], CallOptions::default());
    let (r, at) = w.await_call(1, c);
    assert_eq!(r, Err(CallError::NoSuchProcedure));
    assert!(at <= Instant::from_millis(10));
    assert_eq!(w.rpc(2).stats().select.no_such_procedure, 1);
}

#[test]
fn too_large_requests_and_replies_fail_with_too_large() {
    let config = RpcConfig {
        blast: BlastConfig {
            max_message: 100_000,
            ..BlastConfig::default()
        },
        ..RpcConfig::default()
    };
    let (mut w, _) = world(2, config);
    w.rpc(2)
        .register(10u16, |_, _| HandlerResult::Reply(vec![0; 200_000]));
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, vec![0; 100_000], CallOptions::default());
    assert_eq!(
        w.rpc(1).poll_event(),
        Some(RpcEvent::CallCompleted {
            id: c,
            node: node(2),
            result: Err(CallError::TooLarge)
        }),
        "at once"
    );
    let c = w
        .rpc(1)
        .call(now, node(2), 10u16, vec![], CallOptions::default());
    assert_eq!(w.await_call(1, c).0, Err(CallError::TooLarge));
}

#[test]
fn cancel_completes_once() {
    let (mut w, _) = world(2, RpcConfig::default());
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), SLOW, tagged(1, 10), CallOptions::default());
    w.run_for(ms(10));
    assert!(w.rpc(1).cancel(c));
    assert!(!w.rpc(1).cancel(c));
    w.flush();
    let reqs = w.take_requests(2);
    let now = w.now;
    w.rpc(2).respond(now, reqs[0].0, b"late".to_vec());
    w.run_for(Duration::from_secs(2));
    assert_eq!(w.completion(1, c), Some((Err(CallError::Cancelled), 1)));
    assert_eq!(w.rpc(1).pending_calls(), 0);
}

#[test]
fn call_all_reports_replies_and_non_responders() {
    let (mut w, _) = world(4, RpcConfig::default());
    w.crash(4);
    let now = w.now;
    let body = tagged(1, 20);
    let g = w.rpc(1).call_all(
        now,
        [node(2), node(3), node(4), node(2)],
        ECHO,
        body.clone(),
        CallOptions::default().with_max_retries(2),
    );
    let limit = Instant::from_millis(60_000);
    assert!(w.run_until_event(1, limit, |e| e
        .iter()
        .any(|e| matches!(e, RpcEvent::CallAllCompleted { .. }))));
    let ev = w.hosts[&node(1)]
        .events
        .iter()
        .find(|e| matches!(e, RpcEvent::CallAllCompleted { .. }))
        .cloned()
        .unwrap();
    assert_eq!(
        ev,
        RpcEvent::CallAllCompleted {
            id: g,
            replies: vec![
                (node(2), expected_reply(&body)),
                (node(3), expected_reply(&body))
            ],
            unanswered: vec![node(4)],
            errors: vec![(node(4), CallError::Timeout)],
        }
    );
    assert!(
        !w.hosts[&node(1)]
            .events
            .iter()
            .any(|e| matches!(e, RpcEvent::CallCompleted { .. })),
        "members of a call_all complete only as a set"
    );
    // An empty set completes at once; cancel_all cancels the rest.
    let now = w.now;
    let g2 = w
        .rpc(1)
        .call_all(now, [], ECHO, vec![], CallOptions::default());
    assert!(matches!(
        w.rpc(1).poll_event(),
        Some(RpcEvent::CallAllCompleted { id, ref replies, ref unanswered, .. })
            if id == g2 && replies.is_empty() && unanswered.is_empty()
    ));
    let g3 = w
        .rpc(1)
        .call_all(now, [node(4)], ECHO, vec![], CallOptions::default());
    assert!(w.rpc(1).cancel_all(g3));
    assert!(matches!(
        w.rpc(1).poll_event(),
        Some(RpcEvent::CallAllCompleted { id, ref errors, .. })
            if id == g3 && errors == &vec![(node(4), CallError::Cancelled)]
    ));
    assert!(!w.rpc(1).cancel_all(g3));
}

#[test]
fn unreachable_retransmits_once_then_fails_fast() {
    let (mut w, _) = world(2, RpcConfig::default());
    w.crash(2);
    let now = w.now;
    let c1 = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(1, 10), CallOptions::default());
    let c2 = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(2, 10), CallOptions::default());
    w.flush();
    assert_eq!(w.net.sent("Hello").len(), 2);
    w.rpc(1).handle_unreachable(now, node(2));
    w.flush();
    assert_eq!(w.net.sent("Hello").len(), 4, "retransmitted at once");
    assert_eq!(w.completion(1, c1), None);
    w.rpc(1).handle_unreachable(now, node(2));
    w.flush();
    assert_eq!(w.completion(1, c1), Some((Err(CallError::Unreachable), 1)));
    assert_eq!(w.completion(1, c2), Some((Err(CallError::Unreachable), 1)));
    // An answer in between resets the count.
    let (mut w, _) = world(2, RpcConfig::default());
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), SLOW, tagged(3, 10), CallOptions::default());
    w.run_for(ms(10));
    let now = w.now;
    w.rpc(1).handle_unreachable(now, node(2));
    w.run_for(ms(10));
    let now = w.now;
    w.rpc(1).handle_unreachable(now, node(2));
    w.flush();
    assert_eq!(
        w.completion(1, c),
        None,
        "the probe's answer came in between"
    );
    // Unreachable for an unrelated node is ignored.
    w.rpc(1).handle_unreachable(now, node(9));
}

#[test]
fn saved_replies_stay_within_their_bounds() {
    let config = RpcConfig {
        chan: ChanConfig {
            max_saved_reply_bytes: 20_000,
            max_saved_replies_per_client: 8,
            ..ChanConfig::default()
        },
        ..RpcConfig::default()
    };
    let (mut w, log) = world(2, config);
    // No acknowledgement ever reaches the server.
    w.net.filter = Some(Box::new(|_, _, m| {
        !matches!(m, Some(ChanMessage::ReplyAck { .. }))
    }));
    let mut max_saved = 0;
    let now = w.now;
    let ids: Vec<_> = (0..40u64)
        .map(|t| {
            w.rpc(1).call(
                now,
                node(2),
                ECHO,
                tagged(t * 10 + 1, 30),
                CallOptions::default(),
            )
        })
        .collect();
    while w.step(now + Duration::from_secs(5)) {
        max_saved = max_saved.max(w.hosts[&node(2)].rpc.chan.saved_reply_bytes());
        assert!(w.hosts[&node(2)].rpc.chan.saved_reply_bytes() <= 20_000);
    }
    for id in ids {
        let c = w.completion(1, id);
        assert!(
            c.as_ref().is_some_and(|(r, n)| r.is_ok() && *n == 1),
            "{c:?} {:?}",
            w.net
                .trace
                .iter()
                .map(|t| (t.0, t.3))
                .filter(|t| t.1 != "Hello" && t.1 != "Iam")
                .collect::<Vec<_>>()
        );
    }
    assert!(max_saved > 0);
    assert!(w.rpc(2).stats().chan.saved_replies_evicted > 0);
    assert!(log.borrow().values().all(|&n| n == 1));
    // The retention time frees the rest.
    w.run_for(Duration::from_secs(60));
    assert_eq!(w.hosts[&node(2)].rpc.chan.saved_reply_bytes(), 0);
}

#[test]
fn one_mebibyte_each_way_over_a_lossy_link() {
    let (mut w, log) = world(2, RpcConfig::default());
    w.net.loss = 0.3;
    w.net.dup = 0.1;
    w.net.max_delay = ms(10);
    let body = tagged(1, 1 << 20);
    w.rpc(2).register(20u16, |_, b| {
        HandlerResult::Reply(b.iter().rev().copied().collect())
    });
    let now = w.now;
    let opts = CallOptions::default().with_max_retries(10);
    let c = w.rpc(1).call(now, node(2), 20u16, body.clone(), opts);
    let (r, _) = w.await_call(1, c);
    let mut rev = body.clone();
    rev.reverse();
    assert_eq!(r, Ok(rev));
    assert!(log.borrow().is_empty());
    let s = w.rpc(1).stats();
    assert!(s.blast.fragments_retransmitted > 0);
}

#[test]
fn a_full_client_table_drops_new_clients_until_one_expires() {
    let config = RpcConfig {
        chan: ChanConfig {
            max_clients: 2,
            client_retention: Duration::from_secs(20),
            ..ChanConfig::default()
        },
        ..RpcConfig::default()
    };
    let (mut w, log) = world(4, config);
    let opts = CallOptions::default().with_max_retries(2);
    for (client, tag) in [(2u8, 2u64), (3, 3)] {
        let now = w.now;
        let c = w
            .rpc(client)
            .call(now, node(1), ECHO, tagged(tag, 10), opts);
        assert!(w.await_call(client, c).0.is_ok());
    }
    let now = w.now;
    let c = w.rpc(4).call(now, node(1), ECHO, tagged(4, 10), opts);
    assert_eq!(w.await_call(4, c).0, Err(CallError::Timeout));
    assert_eq!(executions(&log, 4), 0);
    assert!(w.rpc(1).stats().chan.drops.get("client_table_full") >= 1);
    // After client_retention of silence the old tables go.
    w.run_for(Duration::from_secs(30));
    let now = w.now;
    let c = w.rpc(4).call(now, node(1), ECHO, tagged(5, 10), opts);
    assert!(w.await_call(4, c).0.is_ok());
    assert!(w.rpc(1).stats().chan.clients_expired >= 1);
}

#[test]
fn too_many_running_requests_are_dropped_until_one_ends() {
    let config = RpcConfig {
        chan: ChanConfig {
            max_executing: 1,
            ..ChanConfig::default()
        },
        ..RpcConfig::default()
    };
    let (mut w, log) = world(2, config);
    let now = w.now;
    let opts = CallOptions::default().with_max_retries(10);
    let c1 = w.rpc(1).call(now, node(2), SLOW, tagged(1, 10), opts);
    let c2 = w.rpc(1).call(now, node(2), SLOW, tagged(2, 10), opts);
    w.run_for(ms(300));
    assert_eq!(executions(&log, 1) + executions(&log, 2), 1);
    assert!(w.rpc(2).stats().chan.drops.get("server_busy") >= 1);
    let reqs = w.take_requests(2);
    let now = w.now;
    w.rpc(2).respond(now, reqs[0].0, b"one".to_vec());
    w.run_for(Duration::from_secs(3));
    let reqs = w.take_requests(2);
    assert_eq!(reqs.len(), 1, "the other one ran once the first ended");
    let now = w.now;
    w.rpc(2).respond(now, reqs[0].0, b"two".to_vec());
    assert!(w.await_call(1, c1).0.is_ok());
    assert!(w.await_call(1, c2).0.is_ok());
    assert_eq!(executions(&log, 1), 1);
    assert_eq!(executions(&log, 2), 1);
}

#[test]
fn same_seed_same_trace() {
    let trace = |seed: u64| {
        let log: ExecLog = Rc::default();
        let mut w = World::new(3, RpcConfig::default(), seed, standard_setup(log));
        w.net.loss = 0.3;
        w.net.dup = 0.1;
        w.net.max_delay = ms(20);
        let now = w.now;
        for t in 0..10u64 {
            let from = (t % 3) as u8 + 1;
            let to = from % 3 + 1;
            let len = if t == 3 { 200_000 } else { 100 + t as usize };
            w.rpc(from)
                .call(now, node(to), ECHO, tagged(t, len), CallOptions::default());
        }
        w.run_for(Duration::from_secs(60));
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for (at, from, to, kind) in &w.net.trace {
            let line = format!("{at:?}{from}{to}{kind}");
            h = fnv(line.as_bytes()) ^ h.rotate_left(7);
        }
        (h, w.net.trace.len())
    };
    assert_eq!(trace(5), trace(5));
    assert_ne!(trace(5), trace(6));
}

#[test]
fn a_long_lossless_path_causes_no_spurious_retransmissions() {
    let (mut w, _) = world(2, RpcConfig::default());
    w.net.min_delay = ms(80);
    w.net.max_delay = ms(80);
    w.rpc(2)
        .register(20u16, |_, b| HandlerResult::Reply(b.to_vec()));
    let now = w.now;
    let body = tagged(1, 1 << 20);
    let c = w
        .rpc(1)
        .call(now, node(2), 20u16, body.clone(), CallOptions::default());
    let (r, at) = w.await_call(1, c);
    assert_eq!(r, Ok(body));
    // Hello/Iam, then about 7 windows of 128 fragments each way.
    assert!(at < Instant::from_millis(2500), "{at:?}");
    let (s1, s2) = (w.rpc(1).stats(), w.rpc(2).stats());
    assert_eq!(s1.blast.fragments_retransmitted, 0);
    assert_eq!(s2.blast.fragments_retransmitted, 0);
    assert_eq!(s1.blast.polls_sent + s2.blast.polls_sent, 0);
    // Only the first Hello, whose initial RTO (100 ms) is below this
    // path's round trip (160 ms).
    assert_eq!(s1.chan.retransmissions, 1);
    assert_eq!(w.net.sent("Hello").len(), 2);
    // Both Iams are samples of 160 ms (the echo tells which Hello each
    // answers); the multi-fragment transfers are none.
    assert_eq!(s1.chan.rtt_samples, 2);
    assert_eq!(
        w.rpc(1).chan.rtt(node(2)).unwrap().estimated(),
        Some(ms(160))
    );
}

#[test]
fn a_path_longer_than_the_blast_timers_still_carries_a_mebibyte() {
    // One-way 400 ms: the receiver waits 800 ms between windows, more than
    // LAST_FRAG plus three RETRYs (350 ms) with the default timers.
    let (mut w, _) = world(2, RpcConfig::default());
    w.net.min_delay = ms(400);
    w.net.max_delay = ms(400);
    w.rpc(2)
        .register(20u16, |_, b| HandlerResult::Reply(b.to_vec()));
    let now = w.now;
    let body = tagged(1, 1 << 20);
    let c = w
        .rpc(1)
        .call(now, node(2), 20u16, body.clone(), CallOptions::default());
    let (r, _) = w.await_call(1, c);
    assert_eq!(r, Ok(body));
    let (s1, s2) = (w.rpc(1).stats(), w.rpc(2).stats());
    for s in [&s1, &s2] {
        assert_eq!(s.blast.reassemblies_given_up, 0);
        assert_eq!(s.blast.reassemblies_started, 1);
        assert_eq!(s.blast.fragments_retransmitted, 0);
    }
}

// ------------------------------------------------------------ random runs

/// Many seeds, three endpoints, 30% loss, 10% duplication, reordering,
/// random crashes and restarts: every call completes exactly once; a
/// success carries the right reply and its handler ran exactly once; a
/// failure is a timeout or a restart; no handler runs twice for one call.
#[test]
fn random_lossy_runs_keep_at_most_once() {
    let seeds: u64 = std::env::var("RPC_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let first: u64 = std::env::var("RPC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut totals = (0u64, 0u64, 0u64);
    for seed in first..first + seeds {
        let (ok, failed, restarts) = random_run(seed);
        totals.0 += ok;
        totals.1 += failed;
        totals.2 += restarts;
    }
    let (ok, failed, restarts) = totals;
    eprintln!("random runs: {ok} ok, {failed} failed, {restarts} restarts");
    assert!(
        ok * 10 >= (ok + failed) * 8,
        "too many failures: {ok} ok, {failed} failed"
    );
}

/// A call in a random run: the calling host, its life, the call id.
type CallKey = (u8, u64, CallId);

fn random_run(seed: u64) -> (u64, u64, u64) {
    let config = RpcConfig {
        blast: BlastConfig {
            window: 64,
            ..BlastConfig::default()
        },
        chan: ChanConfig {
            initial_rto: ms(60),
            max_retries: 8,
            call_timeout: Duration::from_secs(120),
            probe_interval: ms(500),
            ..ChanConfig::default()
        },
    };
    let log: ExecLog = Rc::default();
    let mut w = World::new(3, config, seed, standard_setup(log.clone()));
    w.net.loss = 0.3;
    w.net.dup = 0.1;
    w.net.min_delay = ms(1);
    w.net.max_delay = ms(20);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xabcd);

    #[derive(Debug)]
    enum Action {
        Call {
            from: u8,
            to: u8,
            procedure: u16,
            tag: u64,
            len: usize,
        },
        Respond {
            host: u8,
            life: u64,
            token: RequestToken,
            body: Vec<u8>,
        },
        Crash(u8),
        Restart(u8),
    }
    let mut actions: BTreeMap<(Instant, u64), Action> = BTreeMap::new();
    let mut seq = 0u64;
    let mut schedule = |actions: &mut BTreeMap<(Instant, u64), Action>, at: Instant, a: Action| {
        seq += 1;
        actions.insert((at, seq), a);
    };
    for k in 0..6u64 {
        let from = rng.random_range(1..=3u8);
        let to = (from % 3) + 1 + u8::from(rng.random_bool(0.5)) % 2;
        let to = if to > 3 { to - 3 } else { to };
        let to = if to == from { (from % 3) + 1 } else { to };
        let size_class = rng.random_range(0..10);
        let len = match size_class {
            0..=5 => rng.random_range(8..2_000),
            6..=8 => rng.random_range(2_000..65_536),
            _ => rng.random_range(65_536..=(1 << 20)),
        };
        let procedure = if rng.random_bool(0.3) { DEFER } else { ECHO };
        let at = Instant::from_micros(rng.random_range(0..3_000_000));
        let tag = seed * 1000 + k;
        schedule(
            &mut actions,
            at,
            Action::Call {
                from,
                to,
                procedure,
                tag,
                len,
            },
        );
    }
    let mut restarts = 0;
    if rng.random_bool(0.5) {
        let victim = rng.random_range(1..=3u8);
        let at = Instant::from_micros(rng.random_range(200_000..4_000_000));
        let down = Duration::from_micros(rng.random_range(0..2_000_000));
        schedule(&mut actions, at, Action::Crash(victim));
        schedule(&mut actions, at + down, Action::Restart(victim));
        restarts = 1;
    }

    // Calls we expect a completion for: (host, life, id) -> (tag, body).
    let mut expected: BTreeMap<CallKey, (u64, Vec<u8>, u16)> = BTreeMap::new();
    let mut completed: BTreeSet<(u8, u64, CallId)> = BTreeSet::new();
    let (mut ok, mut failed) = (0u64, 0u64);
    let limit = Instant::from_millis(900_000);
    loop {
        // Harvest events.
        for n in 1..=3u8 {
            let h = w.hosts.get_mut(&node(n)).unwrap();
            let life = h.life;
            for e in std::mem::take(&mut h.events) {
                match e {
                    RpcEvent::CallCompleted { id, result, .. } => {
                        let key = (n, life, id);
                        assert!(
                            completed.insert(key),
                            "seed {seed}: {key:?} completed twice"
                        );
                        let (tag, body, procedure) = expected
                            .remove(&key)
                            .expect("completion of an unknown call");
                        match result {
                            Ok(reply) => {
                                let want = if procedure == ECHO {
                                    expected_reply(&body)
                                } else {
                                    expected_reply(&tagged(tag, 20))
                                };
                                assert_eq!(reply, want, "seed {seed}: wrong reply for {tag}");
                                assert_eq!(executions(&log, tag), 1, "seed {seed}: tag {tag}");
                                ok += 1;
                            }
                            Err(CallError::Timeout | CallError::PeerRestarted) => failed += 1,
                            Err(e) => {
                                for t in &w.net.debug {
                                    eprintln!("{t}");
                                }
                                panic!("seed {seed}: unexpected error {e:?} for {key:?} tag {tag}")
                            }
                        }
                    }
                    RpcEvent::Request { token, body, .. } => {
                        let delay = Duration::from_micros(rng.random_range(0..3_000_000));
                        let reply = expected_reply(&tagged(tag_of(&body), 20));
                        let at = w.now + delay;
                        schedule(
                            &mut actions,
                            at,
                            Action::Respond {
                                host: n,
                                life,
                                token,
                                body: reply,
                            },
                        );
                    }
                    RpcEvent::CallAllCompleted { .. } => panic!("no call_all here"),
                }
            }
        }
        for (_, &n) in log.borrow().iter() {
            assert!(n <= 1, "seed {seed}: a handler ran twice");
        }
        if expected.is_empty() && actions.is_empty() {
            break;
        }
        let next_action = actions.keys().next().map(|k| k.0);
        let next_net = w.next_time();
        let act_first = match (next_action, next_net) {
            (Some(a), Some(n)) => a <= n,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if act_first {
            let ((at, _), a) = actions.pop_first().unwrap();
            w.now = w.now.max(at);
            let now = w.now;
            match a {
                Action::Call {
                    from,
                    to,
                    procedure,
                    tag,
                    len,
                } => {
                    let h = w.hosts.get_mut(&node(from)).unwrap();
                    if h.up {
                        let body = tagged(tag, len);
                        let id = h.rpc.call(
                            now,
                            node(to),
                            procedure,
                            body.clone(),
                            CallOptions::default(),
                        );
                        expected.insert((from, h.life, id), (tag, body, procedure));
                    }
                }
                Action::Respond {
                    host,
                    life,
                    token,
                    body,
                } => {
                    let h = w.hosts.get_mut(&node(host)).unwrap();
                    if h.up && h.life == life {
                        h.rpc.respond(now, token, body);
                    }
                }
                Action::Crash(n) => {
                    let life = w.hosts[&node(n)].life;
                    // The crashed life's own calls will never complete.
                    expected.retain(|k, _| !(k.0 == n && k.1 == life));
                    w.crash(n);
                }
                Action::Restart(n) => w.restart(n, seed * 7 + 1000),
            }
            w.flush();
        } else if !w.step(limit) {
            break;
        }
    }
    assert!(
        expected.is_empty(),
        "seed {seed}: calls never completed: {expected:?}"
    );
    for n in 1..=3u8 {
        assert_eq!(w.hosts[&node(n)].rpc.pending_calls(), 0);
    }
    (ok, failed, restarts)
}

// --------------------------------------------------------------- proptest

fn arb_inc() -> impl Strategy<Value = Incarnation> {
    any::<[u8; 16]>().prop_map(Incarnation::from_bytes)
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes)
}

fn arb_blast() -> impl Strategy<Value = BlastPacket> {
    prop_oneof![
        (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
            any::<u32>(),
            arb_bytes(3000)
        )
            .prop_map(
                |(
                    mid,
                    index,
                    count,
                    frag_size,
                    total_len,
                    window,
                    seq,
                    poll,
                    rtt_hint_ms,
                    data,
                )| {
                    BlastPacket::Fragment(blast::Fragment {
                        mid,
                        index,
                        count,
                        frag_size,
                        total_len,
                        window,
                        seq,
                        poll,
                        rtt_hint_ms,
                        data,
                    })
                }
            ),
        (
            any::<u64>(),
            arb_inc(),
            any::<u32>(),
            any::<u32>(),
            arb_bytes(1100),
            any::<u32>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(
                |(mid, sender, prefix, upto, received, seen_seq, complete, stalled)| {
                    BlastPacket::Srr(blast::Srr {
                        mid,
                        sender,
                        prefix,
                        upto,
                        received,
                        seen_seq,
                        complete,
                        stalled,
                    })
                }
            ),
    ]
}

fn arb_outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        arb_bytes(2000).prop_map(Outcome::Ok),
        Just(Outcome::NoSuchProcedure),
        Just(Outcome::TooLarge),
    ]
}

fn arb_chan() -> impl Strategy<Value = ChanMessage> {
    prop_oneof![
        (any::<u64>(), any::<u32>())
            .prop_map(|(nonce, attempt)| ChanMessage::Hello { nonce, attempt }),
        (any::<u64>(), arb_inc(), any::<u32>()).prop_map(|(nonce, incarnation, echo)| {
            ChanMessage::Iam {
                nonce,
                incarnation,
                echo,
            }
        }),
        (
            any::<u64>(),
            arb_inc(),
            arb_inc(),
            any::<u16>(),
            any::<u64>(),
            prop::collection::vec(any::<u64>(), 0..80),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            arb_bytes(2000)
        )
            .prop_map(
                |(
                    mid,
                    client,
                    server,
                    procedure,
                    done_below,
                    acks,
                    patience_ms,
                    attempt,
                    rtt_hint_ms,
                    body,
                )| {
                    ChanMessage::Request(Request {
                        mid,
                        client,
                        server,
                        procedure,
                        done_below,
                        acks,
                        patience_ms,
                        attempt,
                        rtt_hint_ms,
                        body,
                    })
                }
            ),
        (any::<u64>(), arb_inc(), any::<u32>(), arb_outcome()).prop_map(
            |(mid, server, echo, outcome)| ChanMessage::Reply {
                mid,
                server,
                echo,
                outcome,
            }
        ),
        (any::<u64>(), arb_inc(), any::<u32>()).prop_map(|(mid, server, echo)| ChanMessage::Ack {
            mid,
            server,
            echo
        }),
        (
            any::<u64>(),
            arb_inc(),
            arb_inc(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(
                |(mid, client, server, patience_ms, attempt)| ChanMessage::Probe {
                    mid,
                    client,
                    server,
                    patience_ms,
                    attempt,
                }
            ),
        (any::<u64>(), arb_inc(), any::<u32>())
            .prop_map(|(mid, server, echo)| ChanMessage::Unknown { mid, server, echo }),
        (any::<u64>(), arb_inc(), any::<u32>())
            .prop_map(|(mid, server, echo)| ChanMessage::Forgotten { mid, server, echo }),
        (any::<u64>(), arb_inc(), any::<u32>())
            .prop_map(|(mid, server, echo)| ChanMessage::Restarted { mid, server, echo }),
        (
            arb_inc(),
            arb_inc(),
            prop::collection::vec(any::<u64>(), 0..80),
            any::<u64>()
        )
            .prop_map(|(client, server, mids, done_below)| ChanMessage::ReplyAck {
                client,
                server,
                mids,
                done_below
            }),
    ]
}

/// A one-fragment datagram carrying `m` (whatever its size claims).
fn wrap(m: &ChanMessage) -> Vec<u8> {
    wrap_mid(m, 1)
}

/// As [`wrap`], as BLAST message `blast_mid`.
fn wrap_mid(m: &ChanMessage, blast_mid: u64) -> Vec<u8> {
    let data = wire::encode_body(m).unwrap();
    wire::encode_body(&BlastPacket::Fragment(blast::Fragment {
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn blast_packets_roundtrip(p in arb_blast()) {
        let bytes = wire::encode_body(&p).unwrap();
        prop_assert_eq!(wire::decode_body::<BlastPacket>(&bytes).unwrap(), p);
    }

    #[test]
    fn chan_messages_roundtrip(m in arb_chan()) {
        let bytes = wire::encode_body(&m).unwrap();
        prop_assert_eq!(wire::decode_message::<ChanMessage>(&bytes).unwrap(), m);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..20),
        from in 2u8..5,
    ) {
        let mut rpc = victim();
        let mut now = Instant::ZERO;
        for b in &bodies {
            now += ms(7);
            feed(&mut rpc, now, from, b);
            rpc.handle_timeout(now);
        }
        // And it still works afterwards.
        prop_assert!(rpc.poll_timeout().is_some());
    }

    #[test]
    fn arbitrary_well_formed_packets_never_panic(
        packets in prop::collection::vec(
            prop_oneof![arb_blast().prop_map(|p| wire::encode_body(&p).unwrap()),
                        arb_chan().prop_map(|m| wrap(&m))],
            1..30),
        from in 2u8..5,
        unreachable in any::<bool>(),
    ) {
        let mut rpc = victim();
        let mut now = Instant::ZERO;
        for p in &packets {
            now += ms(3);
            feed(&mut rpc, now, from, p);
            if unreachable {
                rpc.handle_unreachable(now, node(from));
            }
        }
        // Run the timers for an hour of virtual time: nothing panics, every
        // call ends (only the server's periodic sweep may remain, for a
        // deferred request nobody answers).
        let horizon = now + Duration::from_secs(3600);
        let mut steps = 0;
        while let Some(t) = rpc.poll_timeout().filter(|t| *t <= horizon) {
            now = now.max(t);
            rpc.handle_timeout(now);
            while rpc.poll_transmit().is_some() {}
            while rpc.poll_event().is_some() {}
            steps += 1;
            prop_assert!(steps < 100_000, "timers never end");
        }
        prop_assert_eq!(rpc.pending_calls(), 0);
    }
}
