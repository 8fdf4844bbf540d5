//! "Port unreachable" hints from real UDP sockets (Linux, `IP_RECVERR`): a
//! core that sends to a closed port on 127.0.0.1 gets
//! `Core::handle_unreachable` for that node; one that sends to a live
//! socket gets none. Loopback only, ephemeral ports; every wait is bounded
//! in count and time, and nothing asserts on durations.
#![cfg(target_os = "linux")]

use membership::id::{NodeId, ProtocolId};
use membership::runtime::*;
use membership::sansio::{Core, Incoming, Transmit};
use membership::time::Instant;
use std::collections::VecDeque;
use std::net::UdpSocket as StdUdpSocket;
use std::time::Duration;

/// Sends what it is told to, records the unreachable reports and counts
/// what it receives.
#[derive(Default)]
struct Prober {
    out: VecDeque<Transmit>,
    unreachable: Vec<NodeId>,
    received: u32,
}

impl Core for Prober {
    type Event = ();
    fn handle_packet(&mut self, _: Instant, _: Incoming<'_>) {
        self.received += 1;
    }
    fn handle_timeout(&mut self, _: Instant) {}
    fn handle_unreachable(&mut self, _: Instant, node: NodeId) {
        self.unreachable.push(node);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }
    fn poll_event(&mut self) -> Option<()> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

fn prober() -> SpawnedCore<Prober> {
    spawn_core(SocketOptions::localhost(), &[ProtocolId::Test], |_| {
        Prober::default()
    })
    .expect("spawn prober")
}

async fn send(h: &CoreHandle<Prober>, to: NodeId) {
    h.with_core(move |c: &mut Prober, _| {
        c.out
            .push_back(Transmit::new(to, ProtocolId::Test, b"probe".to_vec()))
    })
    .await
    .expect("driver alive");
}

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
fn closed_port() -> NodeId {
    let s = StdUdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = s.local_addr().expect("addr");
    drop(s);
    NodeId::new(addr)
}

#[actix_rt::test]
async fn closed_port_is_reported_unreachable() {
    let SpawnedCore { handle, .. } = prober();
    let dead = closed_port();
    // Loopback answers every datagram with an ICMP error at once; resend a
    // bounded number of times in case one is lost.
    let mut reported = Vec::new();
    for _ in 0..100 {
        send(&handle, dead).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        reported = handle
            .with_core(|c: &mut Prober, _| c.unreachable.clone())
            .await
            .expect("driver alive");
        if !reported.is_empty() {
            break;
        }
    }
    assert!(
        reported.iter().all(|n| *n == dead),
        "only the closed port: {reported:?}"
    );
    assert!(reported.contains(&dead), "no unreachable report");
    let stats = handle.socket_stats().await.expect("socket alive");
    assert!(stats.unreachable_hints >= 1, "{stats:?}");
    assert!(stats.icmp_errors >= stats.unreachable_hints, "{stats:?}");
    let driver = handle.driver_stats().await.expect("driver alive");
    assert_eq!(driver.unreachable, reported.len() as u64);
}

#[actix_rt::test]
async fn live_socket_is_not_reported() {
    let SpawnedCore { handle: a, .. } = prober();
    let SpawnedCore { handle: b, .. } = prober();
    let b_node = b.socket_stats().await.expect("socket alive").local.node;
    // Sequence on b's receipt count, not on time: 20 datagrams delivered.
    let mut got = 0;
    for _ in 0..200 {
        send(&a, b_node).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        got = b
            .with_core(|c: &mut Prober, _| c.received)
            .await
            .expect("driver alive");
        if got >= 20 {
            break;
        }
    }
    assert!(got >= 20, "b received only {got}");
    // A closed port after the live traffic: its report comes after any the
    // live traffic could have caused, so waiting for it bounds the check.
    let dead = closed_port();
    let mut reported = Vec::new();
    for _ in 0..100 {
        send(&a, dead).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        reported = a
            .with_core(|c: &mut Prober, _| c.unreachable.clone())
            .await
            .expect("driver alive");
        if !reported.is_empty() {
            break;
        }
    }
    assert!(reported.contains(&dead), "no report for the closed port");
    assert!(
        !reported.contains(&b_node),
        "the live socket was reported: {reported:?}"
    );
    let sb = b.socket_stats().await.expect("socket alive");
    assert_eq!(sb.icmp_errors, 0, "{sb:?}");
}

/// The kernel reports a pending ICMP error to the next `send` as well
/// (and does not send that datagram): the runtime sends it again, so a
/// datagram to a live node right after one to a closed port is not lost.
#[actix_rt::test]
async fn send_after_an_icmp_error_is_not_lost() {
    let SpawnedCore { handle: a, .. } = prober();
    let SpawnedCore { handle: b, .. } = prober();
    let b_node = b.socket_stats().await.expect("socket alive").local.node;
    let dead = closed_port();
    const ROUNDS: u32 = 20;
    for round in 1..=ROUNDS {
        // Both in one flush: the second `sendto` follows the first at once.
        a.with_core(move |c: &mut Prober, _| {
            c.out
                .push_back(Transmit::new(dead, ProtocolId::Test, b"x".to_vec()));
            c.out
                .push_back(Transmit::new(b_node, ProtocolId::Test, b"y".to_vec()));
        })
        .await
        .expect("driver alive");
        let mut got = 0;
        for _ in 0..500 {
            got = b
                .with_core(|c: &mut Prober, _| c.received)
                .await
                .expect("driver alive");
            if got >= round {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(got, round, "datagram of round {round} lost");
    }
    let sa = a.socket_stats().await.expect("socket alive");
    assert_eq!(sa.drops.get("send_error"), None, "{sa:?}");
    assert_eq!(sa.datagrams_sent, 2 * u64::from(ROUNDS), "{sa:?}");
}
