//! `msbench rpc`: RPC round-trip latency and BLAST throughput over loopback
//! UDP through the full actix stack (socket actor, interceptor pipeline, wire
//! codec, core driver, `Rpc` core), against raw UDP in the same run.
//!
//! The server runs in its own thread with its own actix system, as a separate
//! process would; the client measures from issuing the call (a command to its
//! driver) to receiving the `CallCompleted` event.

use super::raw;
use super::stats::{ratio, round2, Latencies};
use anyhow::{anyhow, bail, Context as _};
use membership::id::{NodeId, ProtocolId};
use membership::rpc::{CallOptions, HandlerResult, Rpc, RpcConfig, RpcEvent};
use membership::runtime::{spawn_core, SocketOptions};
use serde_json::json;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

/// Echo: replies with the request body.
const PROC_ECHO: u16 = 1;
/// Sink: replies with the request's length only (for bulk transfers).
const PROC_SINK: u16 = 2;

/// Options of `msbench rpc`.
#[derive(clap::Args, Debug)]
pub struct RpcArgs {
    /// Print one JSON object instead of a readable summary.
    #[arg(long)]
    json: bool,
    /// Measured round trips (after the warm-up).
    #[arg(long, default_value_t = 5000)]
    rounds: usize,
    /// Unmeasured round trips first.
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Request and reply size in bytes for the round-trip measurement.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages sent per BLAST size (64 KiB gets this many; 1 MiB a tenth,
    /// at least 5).
    #[arg(long, default_value_t = 200)]
    bulk_messages: usize,
}

fn server_thread(ready: std_mpsc::Sender<NodeId>, stop: std_mpsc::Receiver<()>) {
    let system = actix::System::new();
    system.block_on(async move {
        let spawned = spawn_core(SocketOptions::localhost(), &[ProtocolId::Rpc], |ctx| {
            let mut rpc = Rpc::new(ctx.local, ctx.incarnation, RpcConfig::default(), 1);
            rpc.register(PROC_ECHO, |_, body: &[u8]| {
                HandlerResult::Reply(body.to_vec())
            });
            rpc.register(PROC_SINK, |_, body: &[u8]| {
                HandlerResult::Reply((body.len() as u64).to_le_bytes().to_vec())
            });
            rpc
        });
        let Ok(mut spawned) = spawned else {
            return;
        };
        let _ = ready.send(spawned.handle.local);
        // Serve until told to stop; drain (and ignore) events meanwhile.
        loop {
            if stop.try_recv().is_ok() {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), spawned.events.recv()).await;
        }
    });
}

/// Runs `msbench rpc`.
#[allow(clippy::disallowed_methods)] // the benchmark owns the clock
pub fn run(args: &RpcArgs) -> anyhow::Result<()> {
    if args.size > 60_000 {
        bail!("--size must be at most 60000 bytes (one datagram)");
    }
    // Raw baselines first, while nothing else runs.
    let raw_rtt =
        raw::ping_pong(args.size, args.warmup, args.rounds).context("raw UDP ping-pong")?;
    let fragment = RpcConfig::default().blast.fragment_payload;
    let small_n = args.bulk_messages.max(5);
    let big_n = (args.bulk_messages / 10).max(5);
    let raw_64k = raw::transfer(64 * 1024, fragment, small_n).context("raw UDP transfer 64 KiB")?;
    let raw_1m = raw::transfer(1024 * 1024, fragment, big_n).context("raw UDP transfer 1 MiB")?;

    let (ready_tx, ready_rx) = std_mpsc::channel();
    let (stop_tx, stop_rx) = std_mpsc::channel();
    let server = std::thread::spawn(move || server_thread(ready_tx, stop_rx));
    let server_node = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| anyhow!("the RPC server did not start"))?;

    let system = actix::System::new();
    let result = system.block_on(async {
        let mut client = spawn_core(SocketOptions::localhost(), &[ProtocolId::Rpc], |ctx| {
            Rpc::new(ctx.local, ctx.incarnation, RpcConfig::default(), 2)
        })?;
        let handle = client.handle.clone();
        let call = |procedure: u16, body: Vec<u8>| {
            let handle = handle.clone();
            async move {
                handle
                    .with_core(move |rpc: &mut Rpc, now| {
                        rpc.call(now, server_node, procedure, body, CallOptions::default())
                    })
                    .await
            }
        };
        // One call and its completion; returns the reply.
        async fn wait_reply(
            events: &mut tokio::sync::mpsc::UnboundedReceiver<RpcEvent>,
        ) -> anyhow::Result<Vec<u8>> {
            loop {
                let ev = tokio::time::timeout(Duration::from_secs(30), events.recv())
                    .await
                    .map_err(|_| anyhow!("no completion within 30 s"))?
                    .ok_or_else(|| anyhow!("client driver stopped"))?;
                if let RpcEvent::CallCompleted { result, .. } = ev {
                    return result.map_err(|e| anyhow!("call failed: {e}"));
                }
            }
        }

        let body = vec![0x42u8; args.size];
        let mut rtt = Latencies::with_capacity(args.rounds);
        for i in 0..args.warmup + args.rounds {
            let t0 = Instant::now();
            call(PROC_ECHO, body.clone()).await?;
            let reply = wait_reply(&mut client.events).await?;
            let dt = t0.elapsed();
            if reply.len() != body.len() {
                bail!(
                    "echo returned {} bytes, expected {}",
                    reply.len(),
                    body.len()
                );
            }
            if i >= args.warmup {
                rtt.push(dt);
            }
        }

        let mut bulk = Vec::new();
        for (size, n) in [(64 * 1024usize, small_n), (1024 * 1024usize, big_n)] {
            let payload = vec![0x5au8; size];
            // Warm-up message (first contact, RTO settling).
            call(PROC_SINK, payload.clone()).await?;
            wait_reply(&mut client.events).await?;
            let t0 = Instant::now();
            for _ in 0..n {
                call(PROC_SINK, payload.clone()).await?;
                let reply = wait_reply(&mut client.events).await?;
                if reply != (size as u64).to_le_bytes() {
                    bail!("sink reply does not confirm {size} bytes");
                }
            }
            bulk.push((size, n, t0.elapsed().as_secs_f64()));
        }
        let stats = client
            .handle
            .with_core(|rpc: &mut Rpc, _| rpc.stats())
            .await?;
        client.handle.stop();
        Ok::<_, anyhow::Error>((rtt, bulk, stats))
    });
    let _ = stop_tx.send(());
    let _ = server.join();
    let (rtt, bulk, stats) = result?;

    let raw_p50 = raw_rtt.quantile_us(0.5);
    let raw_p99 = raw_rtt.quantile_us(0.99);
    let rpc_p50 = rtt.quantile_us(0.5);
    let rpc_p99 = rtt.quantile_us(0.99);
    let mut blast = Vec::new();
    for ((size, n, secs), raw_t) in bulk.iter().zip([&raw_64k, &raw_1m]) {
        let mb_s = (*size as f64 * *n as f64) / secs / 1e6;
        blast.push(json!({
            "message_bytes": size,
            "messages": n,
            "rpc_mb_s": round2(mb_s),
            "raw_udp_mb_s": round2(raw_t.mb_per_s()),
            "raw_udp_delivered_fraction": round2(raw_t.delivered_fraction()),
            "ratio": ratio(mb_s, raw_t.mb_per_s()),
        }));
    }
    let out = json!({
        "scenario": "rpc",
        "machine": super::machine(),
        "request_bytes": args.size,
        "fragment_bytes": fragment,
        "rpc_round_trip": rtt.summary(),
        "raw_udp_ping_pong": raw_rtt.summary(),
        "ratio_p50": ratio(rpc_p50, raw_p50),
        "ratio_p99": ratio(rpc_p99, raw_p99),
        "target_ratio_p50": 1.5,
        "blast": blast,
        "client_retransmissions": stats.chan.retransmissions,
        "client_fragments_retransmitted": stats.blast.fragments_retransmitted,
    });
    if args.json {
        println!("{out}");
    } else {
        println!(
            "RPC round trip ({} B, {} samples): p50 {:.1} us, p99 {:.1} us",
            args.size,
            rtt.len(),
            rpc_p50,
            rpc_p99
        );
        println!("raw UDP ping-pong:                 p50 {raw_p50:.1} us, p99 {raw_p99:.1} us");
        println!(
            "ratio p50 {:.2} (target <= 1.5), p99 {:.2}",
            ratio(rpc_p50, raw_p50),
            ratio(rpc_p99, raw_p99)
        );
        for b in out["blast"].as_array().into_iter().flatten() {
            println!(
                "BLAST {:>8} B x {:>4}: {:>8.1} MB/s   raw UDP {:>8.1} MB/s (delivered {:.0}%)   ratio {:.2}",
                b["message_bytes"], b["messages"],
                b["rpc_mb_s"].as_f64().unwrap_or(0.0),
                b["raw_udp_mb_s"].as_f64().unwrap_or(0.0),
                b["raw_udp_delivered_fraction"].as_f64().unwrap_or(0.0) * 100.0,
                b["ratio"].as_f64().unwrap_or(0.0),
            );
        }
    }
    Ok(())
}
