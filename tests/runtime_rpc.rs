//! RPC over real UDP sockets on 127.0.0.1 through the full actix stack
//! (socket actor, interceptor pipeline, wire codec, core driver, `Rpc`):
//! plain calls, `call_all` with a dead node, an unknown procedure, 20% loss
//! injected by the fault interceptor on both ends, and a server restart.
//! Every wait is bounded; nothing asserts on wall-clock durations.

use membership::id::{NodeId, ProtocolId};
use membership::rpc::{CallError, CallOptions, HandlerResult, Rpc, RpcConfig, RpcEvent};
use membership::runtime::{spawn_core, FaultConfig, SocketOptions, SpawnedCore};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

const ECHO: u16 = 1;
const COUNT: u16 = 2;

/// A server answering ECHO (the body back) and COUNT (increments a counter,
/// replies with the request's length).
fn server(bind: SocketOptions, executions: Arc<AtomicU64>) -> SpawnedCore<Rpc> {
    spawn_core(bind, &[ProtocolId::Rpc], move |ctx| {
        let mut rpc = Rpc::new(ctx.local, ctx.incarnation, RpcConfig::default(), 11);
        rpc.register(ECHO, |_, b: &[u8]| HandlerResult::Reply(b.to_vec()));
        rpc.register(COUNT, move |_, b: &[u8]| {
            executions.fetch_add(1, Ordering::SeqCst);
            HandlerResult::Reply((b.len() as u64).to_le_bytes().to_vec())
        });
        rpc
    })
    .expect("server binds")
}

fn client() -> SpawnedCore<Rpc> {
    spawn_core(SocketOptions::localhost(), &[ProtocolId::Rpc], |ctx| {
        Rpc::new(ctx.local, ctx.incarnation, RpcConfig::default(), 22)
    })
    .expect("client binds")
}

async fn call(
    c: &mut SpawnedCore<Rpc>,
    to: NodeId,
    procedure: u16,
    body: Vec<u8>,
    options: CallOptions,
) -> Result<Vec<u8>, CallError> {
    c.handle
        .with_core(move |rpc: &mut Rpc, now| rpc.call(now, to, procedure, body, options))
        .await
        .expect("client driver alive");
    next_completion(&mut c.events).await
}

async fn next_completion(events: &mut UnboundedReceiver<RpcEvent>) -> Result<Vec<u8>, CallError> {
    for _ in 0..1000 {
        let ev = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("a completion within 60 s")
            .expect("events channel open");
        if let RpcEvent::CallCompleted { result, .. } = ev {
            return result;
        }
    }
    panic!("no completion among 1000 events");
}

#[actix_rt::test]
async fn echo_call_all_and_unknown_procedure() {
    let execs = Arc::new(AtomicU64::new(0));
    let s1 = server(SocketOptions::localhost(), execs.clone());
    let s2 = server(SocketOptions::localhost(), execs.clone());
    let mut c = client();

    let reply = call(
        &mut c,
        s1.handle.local,
        ECHO,
        b"hello".to_vec(),
        CallOptions::default(),
    )
    .await;
    assert_eq!(reply.as_deref(), Ok(&b"hello"[..]));

    // A large message goes through BLAST.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let reply = call(
        &mut c,
        s2.handle.local,
        ECHO,
        big.clone(),
        CallOptions::default(),
    )
    .await;
    assert_eq!(reply.as_deref(), Ok(&big[..]));

    let e = call(
        &mut c,
        s1.handle.local,
        999,
        vec![1],
        CallOptions::default(),
    )
    .await;
    assert_eq!(e, Err(CallError::NoSuchProcedure));

    // call_all with one address where nothing listens.
    let dead = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        NodeId::from(s.local_addr().expect("addr"))
    };
    let targets = vec![s1.handle.local, s2.handle.local, dead];
    c.handle
        .with_core(move |rpc: &mut Rpc, now| {
            rpc.call_all(
                now,
                targets,
                COUNT,
                vec![0; 10],
                CallOptions::default().with_timeout(Duration::from_millis(1500)),
            )
        })
        .await
        .expect("driver alive");
    let (replies, unanswered) = loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), c.events.recv())
            .await
            .expect("call_all completes")
            .expect("channel open");
        if let RpcEvent::CallAllCompleted {
            replies,
            unanswered,
            ..
        } = ev
        {
            break (replies, unanswered);
        }
    };
    let mut repliers: Vec<NodeId> = replies.iter().map(|(n, _)| *n).collect();
    repliers.sort();
    let mut want = vec![s1.handle.local, s2.handle.local];
    want.sort();
    assert_eq!(repliers, want);
    assert_eq!(unanswered, vec![dead]);
    assert_eq!(execs.load(Ordering::SeqCst), 2);
    for (_, r) in replies {
        assert_eq!(r, 10u64.to_le_bytes());
    }
}

#[actix_rt::test]
async fn twenty_percent_loss_each_way_still_exactly_once() {
    let execs = Arc::new(AtomicU64::new(0));
    let s = server(SocketOptions::localhost(), execs.clone());
    let mut c = client();
    // The interceptor drops in both directions, so on the server's socket
    // alone it loses 20% of requests and 20% of replies.
    let lossy = FaultConfig::clear().with_drop_pct(20.0).with_seed(5);
    s.handle.set_faults(lossy).await.expect("faults set");

    let mut ok = 0u64;
    for i in 0..150u32 {
        // Mostly small calls, every tenth a 200 KiB one.
        let len = if i % 10 == 0 { 200 * 1024 } else { 100 };
        // At 20% loss each way a round trip fails 36% of the time; give the
        // call enough retries that giving up is practically impossible.
        let patient = CallOptions::default()
            .with_max_retries(30)
            .with_timeout(Duration::from_secs(60));
        let r = call(&mut c, s.handle.local, COUNT, vec![7; len], patient).await;
        assert_eq!(r, Ok((len as u64).to_le_bytes().to_vec()), "call {i}");
        ok += 1;
    }
    assert_eq!(
        execs.load(Ordering::SeqCst),
        ok,
        "each call executed exactly once"
    );
    let stats = c
        .handle
        .with_core(|rpc: &mut Rpc, _| rpc.stats())
        .await
        .expect("alive");
    assert!(
        stats.chan.retransmissions + stats.blast.fragments_retransmitted > 0,
        "loss forced retransmissions"
    );
    let socket = s.handle.socket_stats().await.expect("alive");
    let fault_drops: u64 = socket
        .drops
        .iter()
        .filter(|(k, _)| k.starts_with("fault_"))
        .map(|(_, v)| *v)
        .sum();
    assert!(
        fault_drops > 0,
        "the interceptor dropped packets: {:?}",
        socket.drops
    );
}

#[actix_rt::test]
async fn server_restart_fails_pending_with_peer_restarted_then_recovers() {
    let execs = Arc::new(AtomicU64::new(0));
    let s = server(SocketOptions::localhost(), execs.clone());
    let addr = s.handle.local;
    let mut c = client();
    assert!(call(&mut c, addr, COUNT, vec![1], CallOptions::default())
        .await
        .is_ok());

    // Restart: a new life on the same address.
    s.handle.stop();
    let mut s2 = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let execs = execs.clone();
        let spawned = spawn_core(
            SocketOptions::new(addr.addr()),
            &[ProtocolId::Rpc],
            move |ctx| {
                let mut rpc = Rpc::new(ctx.local, ctx.incarnation, RpcConfig::default(), 12);
                rpc.register(COUNT, move |_, b: &[u8]| {
                    execs.fetch_add(1, Ordering::SeqCst);
                    HandlerResult::Reply((b.len() as u64).to_le_bytes().to_vec())
                });
                rpc
            },
        );
        if let Ok(x) = spawned {
            s2 = Some(x);
            break;
        }
    }
    let s2 = s2.expect("rebound the server's address");
    assert_ne!(s2.handle.incarnation, s.handle.incarnation);

    // The client still believes in the old life: the first call is refused
    // by the new life, unexecuted, as PeerRestarted.
    let r = call(&mut c, addr, COUNT, vec![2; 2], CallOptions::default()).await;
    assert_eq!(r, Err(CallError::PeerRestarted));
    assert_eq!(execs.load(Ordering::SeqCst), 1);
    // Then it works again, against the new life.
    let r = call(&mut c, addr, COUNT, vec![3; 3], CallOptions::default()).await;
    assert_eq!(r, Ok(3u64.to_le_bytes().to_vec()));
    assert_eq!(execs.load(Ordering::SeqCst), 2);
}
