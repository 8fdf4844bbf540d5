//! The runtime over real UDP sockets on 127.0.0.1 (ephemeral ports only):
//! a toy echo core driven by `CoreDriver` on `SocketActor`s, the fault
//! injector switched at run time, garbage datagrams, drop-oldest queues,
//! timers (and a deadline that moves), commands, relays, authentication, the
//! multicast probe, and the two paths to a core (direct for the primary
//! driver, queued for cores added later) with what happens when either the
//! driver or the socket stops.
//!
//! Every wait is bounded in count and time; nothing asserts on wall-clock
//! durations. Waits for "nothing arrived" are sequenced on counters (e.g.
//! the receiver's datagram count), never on sleeping long enough.

use actix::prelude::*;
use membership::id::{Incarnation, NodeId, ProtocolId};
use membership::runtime::*;
use membership::sansio::{Core, Incoming, Transmit};
use membership::time::Instant;
use membership::wire::{AuthConfig, ClusterKey, Header, KeyRing, WireCodec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------
// A toy core: replies to every ping with a pong, counts what it gets, and
// optionally ticks periodically.

const PING: u8 = 0;
const PONG: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
enum EchoEvent {
    Ping { from: NodeId, seq: u32 },
    Pong { from: NodeId, seq: u32 },
    Tick(u32),
}

struct Echo {
    local: NodeId,
    protocol: ProtocolId,
    pings: u32,
    pongs: u32,
    bad: u32,
    ticks: u32,
    period: Option<Duration>,
    max_ticks: u32,
    next_tick: Option<Instant>,
    last: Option<(NodeId, Incarnation, bool)>,
    unreachable: Vec<NodeId>,
    out: VecDeque<Transmit>,
    events: VecDeque<EchoEvent>,
}

impl Echo {
    fn new(local: NodeId, protocol: ProtocolId) -> Self {
        Echo {
            local,
            protocol,
            pings: 0,
            pongs: 0,
            bad: 0,
            ticks: 0,
            period: None,
            max_ticks: 0,
            next_tick: None,
            last: None,
            unreachable: Vec::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn ticking(mut self, now: Instant, period: Duration, max_ticks: u32) -> Self {
        self.period = Some(period);
        self.max_ticks = max_ticks;
        self.next_tick = Some(now + period);
        self
    }

    fn send(&mut self, to: NodeId, kind: u8, seq: u32) {
        let mut body = vec![kind];
        body.extend_from_slice(&seq.to_be_bytes());
        self.out.push_back(Transmit::new(to, self.protocol, body));
    }

    fn ping(&mut self, to: NodeId, seqs: std::ops::Range<u32>) {
        for seq in seqs {
            self.send(to, PING, seq);
        }
    }
}

fn body(kind: u8, seq: u32) -> Vec<u8> {
    let mut b = vec![kind];
    b.extend_from_slice(&seq.to_be_bytes());
    b
}

impl Core for Echo {
    type Event = EchoEvent;

    fn handle_packet(&mut self, _now: Instant, p: Incoming<'_>) {
        self.last = Some((p.source, p.source_incarnation, p.relayed));
        let (kind, seq) = match p.body {
            [k, a, b, c, d] => (*k, u32::from_be_bytes([*a, *b, *c, *d])),
            _ => {
                self.bad += 1;
                return;
            }
        };
        match kind {
            PING => {
                self.pings += 1;
                self.events.push_back(EchoEvent::Ping {
                    from: p.source,
                    seq,
                });
                self.send(p.source, PONG, seq);
            }
            PONG => {
                self.pongs += 1;
                self.events.push_back(EchoEvent::Pong {
                    from: p.source,
                    seq,
                });
            }
            _ => self.bad += 1,
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let (Some(at), Some(period)) = (self.next_tick, self.period) else {
            return;
        };
        if now < at {
            return; // early or spurious: harmless
        }
        self.ticks += 1;
        self.events.push_back(EchoEvent::Tick(self.ticks));
        self.next_tick = (self.ticks < self.max_ticks).then(|| now + period);
    }

    fn handle_unreachable(&mut self, _now: Instant, node: NodeId) {
        self.unreachable.push(node);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_event(&mut self) -> Option<EchoEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn options() -> SocketOptions {
    let mut o = SocketOptions::localhost();
    o.fault_seed = Some(0x5eed);
    o
}

fn echo_with(o: SocketOptions) -> SpawnedCore<Echo> {
    spawn_core(o, &[ProtocolId::Test], |ctx| {
        Echo::new(ctx.local, ProtocolId::Test)
    })
    .expect("spawn echo core")
}

fn echo() -> SpawnedCore<Echo> {
    echo_with(options())
}

/// Polls `check` until it is true: at most 2000 tries and 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        for _ in 0..2000 {
            if check().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    })
    .await;
    assert!(matches!(r, Ok(true)), "gave up waiting for {what}");
}

async fn counts(h: &CoreHandle<Echo>) -> (u32, u32) {
    h.with_core(|c, _| (c.pings, c.pongs)).await.unwrap()
}

async fn stats(h: &CoreHandle<Echo>) -> SocketStats {
    h.socket_stats().await.unwrap()
}

async fn ping(from: &CoreHandle<Echo>, to: NodeId, seqs: std::ops::Range<u32>) {
    from.with_core(move |c, _| c.ping(to, seqs)).await.unwrap();
}

/// Waits until `h`'s socket has read at least `n` datagrams.
async fn received_at_least(h: &CoreHandle<Echo>, n: u64) {
    eventually(&format!("{} to read {n} datagrams", h.local), || async {
        stats(h).await.datagrams_received >= n
    })
    .await;
}

/// A full round trip a -> b -> a with faults cleared on both: afterwards,
/// everything sent before it has been processed (loopback UDP keeps order).
async fn round_trip(a: &CoreHandle<Echo>, b: &CoreHandle<Echo>) {
    let (_, before) = counts(a).await;
    ping(a, b.local, 1_000_000..1_000_001).await;
    eventually("a marker round trip", || async {
        counts(a).await.1 > before
    })
    .await;
}

// ---------------------------------------------------------------------------
// Tests

#[actix_rt::test]
async fn two_endpoints_exchange_through_the_full_stack() {
    let a = echo();
    let SpawnedCore {
        handle: b,
        events: mut b_events,
    } = echo();
    let SpawnedCore {
        handle: a,
        events: mut a_events,
    } = a;
    assert_ne!(a.local, b.local);
    assert!(a.local.addr().ip().is_loopback());
    ping(&a, b.local, 0..20).await;

    // Events reach the owners, in order.
    let mut pongs = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while pongs.len() < 20 {
            match a_events.recv().await {
                Some(EchoEvent::Pong { from, seq }) => {
                    assert_eq!(from, b.local);
                    pongs.push(seq);
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => panic!("event channel closed"),
            }
        }
    })
    .await
    .expect("20 pongs");
    assert_eq!(pongs, (0..20).collect::<Vec<_>>());
    for seq in 0..20 {
        let e = b_events.recv().await.unwrap();
        assert_eq!(e, EchoEvent::Ping { from: a.local, seq });
    }

    assert_eq!(counts(&b).await, (20, 0));
    let (last_source, last_inc, relayed) = b.with_core(|c, _| c.last.unwrap()).await.unwrap();
    assert_eq!(
        (last_source, last_inc, relayed),
        (a.local, a.incarnation, false)
    );

    let sa = stats(&a).await;
    let sb = stats(&b).await;
    assert_eq!(sa.protocol(ProtocolId::Test).sent, 20);
    assert_eq!(sa.protocol(ProtocolId::Test).received, 20);
    assert_eq!(sb.protocol(ProtocolId::Test).received, 20);
    assert_eq!(sb.traffic.per_peer[&a.local].packets_in, 20);
    assert_eq!(sb.traffic.per_protocol[&ProtocolId::Test].packets_out, 20);
    assert_eq!(sb.drops_total, 0, "{:?}", sb.drops);
    assert_eq!(sb.local.node, b.local);
    assert!(sb.recv_buffer > 0 && sb.send_buffer > 0);

    let d = b.driver_stats().await.unwrap();
    assert_eq!(d.packets, 20);
    assert_eq!(d.transmits, 20);
    assert_eq!(d.events, 20);
    a.stop();
    b.stop();
}

#[actix_rt::test]
async fn dropping_everything_blocks_everything_and_clear_restores() {
    let SpawnedCore { handle: a, .. } = echo();
    let SpawnedCore { handle: b, .. } = echo();
    b.set_faults(FaultConfig::clear().with_drop_pct(100.0))
        .await
        .unwrap();
    ping(&a, b.local, 0..10).await;
    received_at_least(&b, 10).await;
    assert_eq!(counts(&b).await, (0, 0));
    assert_eq!(stats(&b).await.drops("fault_drop_in"), 10);
    assert_eq!(counts(&a).await, (0, 0));

    let previous = b.set_faults(FaultConfig::clear()).await.unwrap();
    assert_eq!(previous.drop_pct, 100.0);
    assert!(b.socket.send(GetFaults).await.unwrap().is_clear());
    round_trip(&a, &b).await;
    assert_eq!(counts(&b).await, (1, 0));
}

#[actix_rt::test]
async fn block_blocks_both_directions() {
    let SpawnedCore { handle: a, .. } = echo();
    let SpawnedCore { handle: b, .. } = echo();
    a.set_faults(FaultConfig::clear().with_block(b.local))
        .await
        .unwrap();

    // a -> b: dropped on the way out of a.
    ping(&a, b.local, 0..5).await;
    eventually("a to drop 5 outbound", || async {
        stats(&a).await.drops("fault_block_out") >= 5
    })
    .await;
    // b -> a: dropped on the way into a.
    ping(&b, a.local, 0..5).await;
    received_at_least(&a, 5).await;
    let sa = stats(&a).await;
    assert_eq!(sa.drops("fault_block_out"), 5);
    assert_eq!(sa.drops("fault_block_in"), 5);
    assert_eq!(counts(&a).await, (0, 0));
    assert_eq!(counts(&b).await, (0, 0));
    assert_eq!(stats(&b).await.datagrams_received, 0);

    a.set_faults(FaultConfig::clear()).await.unwrap();
    round_trip(&a, &b).await;
    round_trip(&b, &a).await;
    assert_eq!(counts(&a).await, (1, 1));
    assert_eq!(counts(&b).await, (1, 1));
}

#[actix_rt::test]
async fn block_in_is_one_way() {
    let SpawnedCore { handle: a, .. } = echo();
    let SpawnedCore { handle: b, .. } = echo();
    a.socket
        .send(SetFaults(FaultConfig::clear().with_block_in(b.local)))
        .await
        .unwrap()
        .unwrap();

    // a -> b gets through; b's pongs do not come back.
    ping(&a, b.local, 0..5).await;
    received_at_least(&a, 5).await; // the 5 pongs reached a's socket
    assert_eq!(counts(&b).await, (5, 0));
    assert_eq!(counts(&a).await, (0, 0));
    // b -> a: dropped too.
    ping(&b, a.local, 0..5).await;
    received_at_least(&a, 10).await;
    assert_eq!(counts(&a).await, (0, 0));
    assert_eq!(stats(&a).await.drops("fault_block_in"), 10);
    assert_eq!(stats(&a).await.drops("fault_block_out"), 0);

    a.set_faults(FaultConfig::clear()).await.unwrap();
    round_trip(&a, &b).await;
    assert_eq!(counts(&a).await.1, 1);
}

#[actix_rt::test]
async fn twenty_percent_loss_drops_roughly_that_share() {
    let SpawnedCore { handle: a, .. } = echo();
    let SpawnedCore { handle: b, .. } = echo();
    b.set_faults(FaultConfig::clear().with_drop_pct(20.0).with_seed(42))
        .await
        .unwrap();
    // In batches, so that the kernel's receive buffer never overflows.
    for batch in 0..10u32 {
        ping(&a, b.local, batch * 50..(batch + 1) * 50).await;
        received_at_least(&b, u64::from(batch + 1) * 50).await;
    }
    let (pings, _) = counts(&b).await;
    let dropped = stats(&b).await.drops("fault_drop_in");
    assert_eq!(u64::from(pings) + dropped, 500);
    assert!(
        (25..=200).contains(&dropped),
        "dropped {dropped} of 500 at 20%"
    );
}

#[actix_rt::test]
async fn duplicates_and_delays() {
    let SpawnedCore { handle: a, .. } = echo();
    let SpawnedCore { handle: b, .. } = echo();
    b.set_faults(FaultConfig::clear().with_duplicate_pct(100.0))
        .await
        .unwrap();
    ping(&a, b.local, 0..10).await;
    // Each ping is delivered twice to b, which answers each copy, and each
    // pong is sent twice: 20 pings at b, 40 pongs at a.
    eventually("40 pongs", || async { counts(&a).await.1 >= 40 }).await;
    assert_eq!(counts(&b).await.0, 20);
    let sb = stats(&b).await;
    assert_eq!(sb.protocol(ProtocolId::Test).received, 20);
    assert_eq!(sb.protocol(ProtocolId::Test).sent, 40);
    assert_eq!(counts(&a).await.1, 40);

    // Delays: everything still arrives (no assertion on how late).
    b.set_faults(FaultConfig::clear().with_delay_ms(5, 10))
        .await
        .unwrap();
    ping(&a, b.local, 100..110).await;
    eventually("10 more pongs", || async { counts(&a).await.1 >= 50 }).await;
    assert_eq!(counts(&b).await.0, 30);
    let sb = stats(&b).await;
    assert_eq!(sb.delayed, 0);
    assert_eq!(sb.drops_total, 0, "{:?}", sb.drops);
    // Undelayed packets went straight to b's core; the delayed ones came
    // back through its queue.
    let d = b.driver_stats().await.unwrap();
    assert!(d.queue_wakeups >= 1, "{d:?}");
    assert_eq!(d.packets, 30);
}

#[actix_rt::test]
async fn garbage_is_dropped_and_counted_and_never_reaches_the_core() {
    let SpawnedCore { handle: b, .. } = echo();
    let raw = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let raw_id = NodeId::new(raw.local_addr().unwrap());
    let to = b.local.addr();

    // A valid datagram, to derive broken ones from.
    let mut codec = WireCodec::new();
    let header = Header {
        protocol: ProtocolId::Test,
        relayed: false,
        source: raw_id,
        source_incarnation: Incarnation::NIL,
        destination: b.local,
    };
    let mut valid = Vec::new();
    codec.seal(&header, &body(PING, 7), &mut valid).unwrap();

    let mut rng = StdRng::seed_from_u64(99);
    let mut sent = 0u64;
    for _ in 0..100 {
        let len = rng.random_range(0..300);
        let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        raw.send_to(&junk, to).unwrap();
        sent += 1;
    }
    for n in [0, 1, 10, valid.len() - 1] {
        raw.send_to(&valid[..n], to).unwrap();
        sent += 1;
    }
    let mut wrong_version = valid.clone();
    wrong_version[2] = 99;
    raw.send_to(&wrong_version, to).unwrap();
    let mut bad_crc = valid.clone();
    *bad_crc.last_mut().unwrap() ^= 0xff;
    raw.send_to(&bad_crc, to).unwrap();
    let mut unknown_protocol = valid.clone();
    unknown_protocol[3] = 200;
    raw.send_to(&unknown_protocol, to).unwrap();
    sent += 3;

    // Then the valid one: its pong proves everything before was processed.
    raw.send_to(&valid, to).unwrap();
    let raw_for_recv = raw.try_clone().unwrap();
    let reply = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 2048];
        raw_for_recv
            .recv_from(&mut buf)
            .map(|(n, _)| buf[..n].to_vec())
    })
    .await
    .unwrap()
    .expect("a pong to the valid ping");
    let pong = codec.open(&reply).expect("a valid pong");
    assert_eq!(pong.header.source, b.local);
    assert_eq!(&*pong.body, &body(PONG, 7)[..]);

    assert_eq!(counts(&b).await, (1, 0));
    assert_eq!(b.with_core(|c, _| c.bad).await.unwrap(), 0);
    let s = stats(&b).await;
    assert_eq!(s.datagrams_received, sent + 1);
    assert_eq!(s.drops_total, sent, "{:?}", s.drops);
    assert_eq!(s.drops("bad_version"), 1);
    assert_eq!(s.drops("unknown_protocol"), 1);
    assert!(s.drops("too_short") >= 3, "{:?}", s.drops);
    assert!(s.drops("bad_checksum") >= 1, "{:?}", s.drops);
    assert_eq!(s.protocol(ProtocolId::Test).received, 1);
}

/// An actor that subscribes to a queue and never drains it.
struct Sleepy;
impl Actor for Sleepy {
    type Context = Context<Self>;
}
impl Handler<PacketsReady> for Sleepy {
    type Result = ();
    fn handle(&mut self, _: PacketsReady, _: &mut Context<Self>) {}
}

#[actix_rt::test]
async fn a_full_queue_drops_its_oldest_packets() {
    let socket = SocketActor::bind(options()).unwrap();
    let local = socket.local().node;
    let socket = socket.start();
    let sleepy = Sleepy.start();
    let queue: Arc<PacketQueue> = socket
        .send(Subscribe {
            protocol: ProtocolId::Test,
            capacity: Some(4),
            waker: sleepy.recipient(),
        })
        .await
        .unwrap();

    let raw = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    let mut codec = WireCodec::new();
    let header = Header {
        protocol: ProtocolId::Test,
        relayed: false,
        source: NodeId::new(raw.local_addr().unwrap()),
        source_incarnation: Incarnation::NIL,
        destination: local,
    };
    let mut d = Vec::new();
    for seq in 0..10 {
        codec.seal(&header, &body(PING, seq), &mut d).unwrap();
        raw.send_to(&d, local.addr()).unwrap();
    }
    // A packet for a protocol nobody subscribed to.
    let other = Header {
        protocol: ProtocolId::Route,
        ..header
    };
    codec.seal(&other, &body(PING, 99), &mut d).unwrap();
    raw.send_to(&d, local.addr()).unwrap();

    eventually("11 datagrams read", || async {
        socket.send(GetStats).await.unwrap().datagrams_received >= 11
    })
    .await;
    let s = socket.send(GetStats).await.unwrap();
    assert_eq!(s.drops("queue_full"), 6);
    assert_eq!(s.drops("no_subscriber"), 1);
    assert_eq!(s.protocol(ProtocolId::Test).queue_full, 6);
    assert_eq!(s.protocol(ProtocolId::Test).queue_len, 4);
    let kept: Vec<u8> = queue.take_all().iter().map(|p| p.body()[4]).collect();
    assert_eq!(kept, vec![6, 7, 8, 9], "the newest four are kept");
    assert_eq!(queue.dropped(), 6);
    assert!(socket.send(Unsubscribe(ProtocolId::Test)).await.unwrap());
}

#[actix_rt::test]
async fn the_timer_fires_and_rearms() {
    let SpawnedCore { handle, mut events } = spawn_core(options(), &[ProtocolId::Test], |ctx| {
        Echo::new(ctx.local, ProtocolId::Test).ticking(ctx.now, Duration::from_millis(5), 5)
    })
    .unwrap();
    let mut ticks = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while ticks.len() < 5 {
            match events.recv().await {
                Some(EchoEvent::Tick(n)) => ticks.push(n),
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("five ticks");
    assert_eq!(ticks, vec![1, 2, 3, 4, 5]);
    let d = handle.driver_stats().await.unwrap();
    assert!(d.timeouts >= 5, "{d:?}");
    assert!(d.timer_arms >= 5, "{d:?}");
    // After the last tick the core asks for no timer.
    assert_eq!(
        handle.with_core(|c, _| c.poll_timeout()).await.unwrap(),
        None
    );
}

#[actix_rt::test]
async fn commands_return_values_and_unreachable_reaches_the_core() {
    let SpawnedCore { handle, .. } = echo();
    let (local, now) = handle.with_core(|c, now| (c.local, now)).await.unwrap();
    assert_eq!(local, handle.local);
    let later = handle.with_core(|_, now| now).await.unwrap();
    assert!(later >= now);
    assert_eq!(Clock::from_std(Clock::to_std(later)), later);

    let gone = NodeId::v4(127, 0, 0, 1, 9);
    handle.driver.send(NodeUnreachable(gone)).await.unwrap();
    assert_eq!(
        handle
            .with_core(|c, _| c.unreachable.clone())
            .await
            .unwrap(),
        vec![gone]
    );
    let d = handle.driver_stats().await.unwrap();
    assert_eq!((d.commands, d.unreachable), (3, 1));

    // Stopped: commands fail instead of hanging.
    handle.stop();
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        for _ in 0..1000 {
            if handle.with_core(|_, _| ()).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    })
    .await;
    assert_eq!(r, Ok(true));
}

#[actix_rt::test]
async fn relayed_packets_keep_their_source_and_are_blocked_by_it() {
    let SpawnedCore { handle: relay, .. } = echo();
    let SpawnedCore { handle: b, .. } = echo();
    // The "original sender": a plain socket, so that pongs have somewhere
    // to go on loopback.
    let origin = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    let origin_id = NodeId::new(origin.local_addr().unwrap());
    let inc = new_incarnation();
    let header = Header {
        protocol: ProtocolId::Test,
        relayed: true,
        source: origin_id,
        source_incarnation: inc,
        destination: b.local,
    };
    relay.socket.do_send(RelaySend {
        to: b.local.addr(),
        packet: RelayPacket::Unsealed {
            header,
            body: body(PING, 1),
        },
    });
    eventually("the relayed ping", || async { counts(&b).await.0 == 1 }).await;
    let last = b.with_core(|c, _| c.last.unwrap()).await.unwrap();
    assert_eq!(last, (origin_id, inc, true));

    // Pre-sealed, as forwarded unchanged.
    let mut sealed = Vec::new();
    WireCodec::new()
        .seal(&header, &body(PING, 2), &mut sealed)
        .unwrap();
    relay.socket.do_send(RelaySend {
        to: b.local.addr(),
        packet: RelayPacket::Sealed(sealed),
    });
    relay.socket.do_send(RelaySend {
        to: b.local.addr(),
        packet: RelayPacket::Sealed(b"not a datagram".to_vec()),
    });
    eventually("the forwarded ping", || async { counts(&b).await.0 == 2 }).await;
    eventually("the bad relay to be counted", || async {
        stats(&relay).await.drops("relay_bad_header") == 1
    })
    .await;

    // b blocks the origin: relayed traffic from it is blocked too.
    b.set_faults(FaultConfig::clear().with_block(origin_id))
        .await
        .unwrap();
    relay.socket.do_send(RelaySend {
        to: b.local.addr(),
        packet: RelayPacket::Unsealed {
            header,
            body: body(PING, 3),
        },
    });
    received_at_least(&b, 3).await;
    assert_eq!(counts(&b).await.0, 2);
    assert_eq!(stats(&b).await.drops("fault_block_in"), 1);
}

#[actix_rt::test]
async fn two_cores_share_one_socket_by_protocol() {
    let SpawnedCore { handle: a, .. } = echo();
    let SpawnedCore { handle: b, .. } = echo();
    // A second core on b's socket, for another protocol.
    let (sink, mut rpc_events) = EventSink::channel();
    let b_rpc = CoreDriver::start_on(
        b.socket.clone(),
        &[ProtocolId::Rpc],
        Echo::new(b.local, ProtocolId::Rpc),
        sink,
    )
    .await
    .unwrap();
    let rpc_handle = CoreHandle::new(b_rpc, b.socket.clone(), b.local, b.incarnation);
    // a sends an Rpc ping from a core of its own, also sharing a's socket.
    let a_rpc = CoreDriver::start_on(
        a.socket.clone(),
        &[ProtocolId::Rpc],
        Echo::new(a.local, ProtocolId::Rpc),
        EventSink::Discard,
    )
    .await
    .unwrap();
    let to = b.local;
    a_rpc
        .send(WithCore::new(move |c: &mut Echo, _| c.ping(to, 0..3)))
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(20), rpc_events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        e,
        EchoEvent::Ping {
            from: a.local,
            seq: 0
        }
    );
    eventually("3 rpc pings", || async {
        rpc_handle.with_core(|c, _| c.pings).await.unwrap() == 3
    })
    .await;
    assert_eq!(counts(&b).await, (0, 0), "the Test core saw nothing");
    eventually("3 rpc pongs", || async {
        a_rpc
            .send(WithCore::new(|c: &mut Echo, _| c.pongs))
            .await
            .unwrap()
            == 3
    })
    .await;
    // The core added later gets its packets through its queue; the primary
    // driver, which read them off the socket, never needed its own.
    let rpc_stats = rpc_handle.driver_stats().await.unwrap();
    assert!(rpc_stats.queue_wakeups >= 1, "{rpc_stats:?}");
    assert_eq!(rpc_stats.batches, 0);
    let primary = b.driver_stats().await.unwrap();
    assert_eq!((primary.packets, primary.queue_wakeups), (0, 0));
    assert!(primary.batches >= 1, "{primary:?}");
    // Both cores sent through the socket: the primary directly, the other
    // with `SendPackets`.
    assert_eq!(stats(&b).await.protocol(ProtocolId::Rpc).sent, 3);
}

#[actix_rt::test]
async fn the_primary_driver_delivers_directly() {
    let SpawnedCore { handle: a, .. } = echo();
    let SpawnedCore { handle: b, .. } = echo();
    ping(&a, b.local, 0..50).await;
    eventually("50 pongs", || async { counts(&a).await.1 == 50 }).await;
    for h in [&a, &b] {
        let d = h.driver_stats().await.unwrap();
        assert_eq!(d.packets, 50, "{d:?}");
        assert_eq!(d.queue_wakeups, 0, "{d:?}");
        // Datagrams that are ready together are handled in one batch.
        assert!((1..=50).contains(&d.batches), "{d:?}");
        let s = stats(h).await;
        assert_eq!(s.protocol(ProtocolId::Test).received, 50);
        assert_eq!(s.protocol(ProtocolId::Test).queue_len, 0);
    }
}

#[actix_rt::test]
async fn when_the_primary_driver_stops_the_socket_receives_for_the_others() {
    let SpawnedCore { handle: a, .. } = echo();
    let SpawnedCore { handle: b, .. } = echo();
    let b_rpc = CoreDriver::start_on(
        b.socket.clone(),
        &[ProtocolId::Rpc],
        Echo::new(b.local, ProtocolId::Rpc),
        EventSink::Discard,
    )
    .await
    .unwrap();
    b.driver.send(StopDriver).await.unwrap();
    // The stopped driver's protocol is dropped as unsubscribed; the other
    // core still gets its packets, now read by the socket actor.
    ping(&a, b.local, 0..3).await;
    let a_rpc = CoreDriver::start_on(
        a.socket.clone(),
        &[ProtocolId::Rpc],
        Echo::new(a.local, ProtocolId::Rpc),
        EventSink::Discard,
    )
    .await
    .unwrap();
    let to = b.local;
    a_rpc
        .send(WithCore::new(move |c: &mut Echo, _| c.ping(to, 0..4)))
        .await
        .unwrap();
    eventually("4 rpc pings at b", || async {
        b_rpc
            .send(WithCore::new(|c: &mut Echo, _| c.pings))
            .await
            .unwrap()
            == 4
    })
    .await;
    received_at_least(&b, 7).await;
    assert_eq!(stats(&b).await.drops("no_subscriber"), 3);
}

#[actix_rt::test]
async fn stopping_the_socket_ends_the_drivers_receive_loop() {
    let SpawnedCore { handle: b, .. } = echo();
    let addr = b.local.addr();
    b.socket.do_send(StopSocket);
    // The socket is closed although the driver (which read from it) runs
    // on: its address can be bound again.
    let mut rebound = None;
    for _ in 0..1000 {
        if let Ok(s) = StdUdpSocket::bind(addr) {
            rebound = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rebound = rebound.expect("the stopped socket's address is free again");
    // The driver still runs commands; what its core sends goes nowhere.
    let raw_id = NodeId::new(rebound.local_addr().unwrap());
    ping(&b, raw_id, 0..2).await;
    assert_eq!(counts(&b).await, (0, 0));
    assert!(b.socket_stats().await.is_err(), "the socket actor is gone");
    b.stop();
}

#[actix_rt::test]
async fn authenticated_sockets_reject_unauthenticated_traffic() {
    let ring = || KeyRing::new(vec![ClusterKey::new(1, [7u8; 32]).unwrap()]).unwrap();
    let with_auth = || {
        let mut o = options();
        o.auth = Some(AuthConfig::new(ring()));
        echo_with(o)
    };
    let SpawnedCore { handle: a, .. } = with_auth();
    let SpawnedCore { handle: b, .. } = with_auth();
    let SpawnedCore { handle: plain, .. } = echo();
    round_trip(&a, &b).await;
    ping(&plain, b.local, 0..3).await;
    received_at_least(&b, 4).await;
    assert_eq!(counts(&b).await.0, 1);
    assert_eq!(stats(&b).await.drops("missing_auth"), 3);
    // Key rotation message reaches the codec.
    assert!(b.socket.send(SetKeyRing(ring())).await.unwrap());
    assert!(!plain.socket.send(SetKeyRing(ring())).await.unwrap());
}

#[actix_rt::test]
async fn filter_and_custom_interceptors_at_run_time() {
    let SpawnedCore { handle: a, .. } = echo();
    let SpawnedCore { handle: b, .. } = echo();
    let previous = b
        .socket
        .send(SetFilter(FilterConfig {
            deny_protocols: [ProtocolId::Test].into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(previous, FilterConfig::default());
    ping(&a, b.local, 0..2).await;
    received_at_least(&b, 2).await;
    assert_eq!(stats(&b).await.drops("filter_in"), 2);
    assert_eq!(counts(&b).await.0, 0);
    b.socket
        .send(SetFilter(FilterConfig::default()))
        .await
        .unwrap();

    /// Drops every second inbound packet.
    struct EveryOther(u32);
    impl Interceptor for EveryOther {
        fn name(&self) -> &'static str {
            "every-other"
        }
        fn on_inbound(&mut self, _: &PacketInfo<'_>) -> Verdict {
            self.0 += 1;
            if self.0 % 2 == 0 {
                Verdict::drop("every_other")
            } else {
                Verdict::PASS
            }
        }
    }
    b.socket
        .send(AddInterceptor(Box::new(EveryOther(0))))
        .await
        .unwrap();
    ping(&a, b.local, 0..4).await;
    received_at_least(&b, 6).await;
    assert_eq!(counts(&b).await.0, 2);
    assert_eq!(stats(&b).await.drops("every_other"), 2);
}

#[actix_rt::test]
async fn the_multicast_probe_answers_within_its_timeout() {
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 77), 0);
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        probe_multicast(group, Ipv4Addr::LOCALHOST, Duration::from_millis(300)),
    )
    .await
    .expect("the probe returns");
    // Either answer is valid on this machine; it must be coherent.
    eprintln!("multicast probe: {answer:?}");
    assert!(!answer.can_receive || answer.can_send);
    assert_eq!(answer.usable(), answer.reason == "ok");
}

#[actix_rt::test]
async fn set_incarnation_changes_the_header() {
    let SpawnedCore { handle: a, .. } = echo();
    let SpawnedCore { handle: b, .. } = echo();
    let next = new_incarnation();
    a.socket.send(SetIncarnation(next)).await.unwrap();
    let local = a.socket.send(GetLocal).await.unwrap();
    assert_eq!(local.incarnation, next);
    round_trip(&a, &b).await;
    assert_eq!(b.with_core(|c, _| c.last.unwrap().1).await.unwrap(), next);
}

// ---------------------------------------------------------------------------
// A core whose deadline is set by commands, to check how the driver follows
// a deadline that moves.

#[derive(Default)]
struct Alarm {
    deadline: Option<Instant>,
    calls: Vec<(Instant, Option<Instant>)>,
    rang: VecDeque<Instant>,
}

impl Core for Alarm {
    type Event = Instant;
    fn handle_packet(&mut self, _: Instant, _: Incoming<'_>) {}
    fn handle_timeout(&mut self, now: Instant) {
        self.calls.push((now, self.deadline));
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            self.rang.push_back(now);
        }
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        None
    }
    fn poll_event(&mut self) -> Option<Instant> {
        self.rang.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }
}

#[actix_rt::test]
async fn the_timer_follows_a_deadline_that_moves() {
    let SpawnedCore { handle, mut events } =
        spawn_core(options(), &[ProtocolId::Test], |_| Alarm::default()).unwrap();
    let set = |after: Option<Duration>| {
        handle.with_core(move |c: &mut Alarm, now| {
            c.deadline = after.map(|a| now + a);
            c.deadline
        })
    };
    // Far, then nearer: the nearer one rings.
    set(Some(Duration::from_secs(3600))).await.unwrap();
    let near = set(Some(Duration::from_millis(20))).await.unwrap().unwrap();
    let rang = tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .expect("the nearer deadline rings")
        .unwrap();
    assert!(rang >= near);

    // Near, then cancelled, then later: the core is called once, at the
    // later deadline (the sleep armed for the first one wakes early and
    // sleeps again without calling the core). 200 ms is far enough for the
    // next two commands to come first even on a busy machine.
    set(Some(Duration::from_millis(200))).await.unwrap();
    set(None).await.unwrap();
    let later = set(Some(Duration::from_millis(250)))
        .await
        .unwrap()
        .unwrap();
    let rang = tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .expect("the later deadline rings")
        .unwrap();
    assert!(rang >= later);
    let calls = handle
        .with_core(|c: &mut Alarm, _| c.calls.clone())
        .await
        .unwrap();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls.iter().all(|(now, d)| d.is_some_and(|d| *now >= d)),
        "{calls:?}"
    );
    let d = handle.driver_stats().await.unwrap();
    assert_eq!(d.timeouts, 2, "{d:?}");
    handle.stop();
}
