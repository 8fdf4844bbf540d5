//! `msbench rpc-core`: the `Rpc` core alone, two endpoints driven in one
//! thread on virtual time, no sockets, no actors: what the protocol logic
//! itself costs per round trip. Wall time is reported, but on a shared
//! machine the repeatable figure is the instruction count under callgrind:
//!
//! ```text
//! cargo build --release -p msbench &&
//! valgrind --tool=callgrind ./target/release/msbench rpc-core --calls 20000
//! ```
//!
//! (total instructions / calls = instructions per round trip, both sides).

use super::stats::round2;
use anyhow::bail;
use membership::id::{Incarnation, NodeId, ProtocolId};
use membership::rpc::{CallOptions, HandlerResult, Rpc, RpcConfig, RpcEvent};
use membership::sansio::{Core, Incoming, Transmit};
use membership::time::Instant;
use serde_json::json;
use std::time::Duration;

/// Options of `msbench rpc-core`.
#[derive(clap::Args, Debug)]
pub struct RpcCoreArgs {
    /// Print one JSON object instead of a readable summary.
    #[arg(long)]
    json: bool,
    /// Echo calls to make.
    #[arg(long, default_value_t = 20_000)]
    calls: u64,
    /// Request and reply size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
}

fn deliver(to: &mut Rpc, from: NodeId, from_inc: Incarnation, t: &Transmit, now: Instant) {
    to.handle_packet(
        now,
        Incoming::direct(from, from_inc, t.destination, ProtocolId::Rpc, &t.body),
    );
}

/// Runs `msbench rpc-core`.
#[allow(clippy::disallowed_methods)] // the benchmark owns the clock
pub fn run(args: &RpcCoreArgs) -> anyhow::Result<()> {
    let a = NodeId::v4(127, 0, 0, 1, 1);
    let b = NodeId::v4(127, 0, 0, 1, 2);
    let ia = Incarnation::from_parts(1, [1; 10]);
    let ib = Incarnation::from_parts(2, [2; 10]);
    let mut client = Rpc::new(a, ia, RpcConfig::default(), 1);
    let mut server = Rpc::new(b, ib, RpcConfig::default(), 2);
    server.register(1u16, |_, body: &[u8]| HandlerResult::Reply(body.to_vec()));
    let mut now = Instant::ZERO;
    let mut ok = 0u64;
    let started = std::time::Instant::now();
    for _ in 0..args.calls {
        now += Duration::from_micros(30);
        client.call(now, b, 1u16, vec![0x42; args.size], CallOptions::default());
        // Ping-pong the datagrams until both sides are quiet (bounded).
        for _ in 0..16 {
            let mut moved = false;
            while let Some(t) = client.poll_transmit() {
                moved = true;
                deliver(&mut server, a, ia, &t, now);
            }
            while let Some(t) = server.poll_transmit() {
                moved = true;
                deliver(&mut client, b, ib, &t, now);
            }
            if !moved {
                break;
            }
        }
        while let Some(e) = client.poll_event() {
            if let RpcEvent::CallCompleted { result: Ok(r), .. } = e {
                if r.len() == args.size {
                    ok += 1;
                }
            }
        }
        while server.poll_event().is_some() {}
        let _ = (client.poll_timeout(), server.poll_timeout());
    }
    let secs = started.elapsed().as_secs_f64();
    if ok != args.calls {
        bail!("only {ok} of {} calls succeeded", args.calls);
    }
    let per_call_us = secs * 1e6 / args.calls as f64;
    let out = json!({
        "scenario": "rpc-core",
        "machine": super::machine(),
        "calls": args.calls,
        "request_bytes": args.size,
        "wall_us_per_round_trip": round2(per_call_us),
    });
    if args.json {
        println!("{out}");
    } else {
        println!(
            "Rpc core, both sides, {} calls of {} B: {:.2} us per round trip (run under callgrind for instruction counts)",
            args.calls, args.size, per_call_us
        );
    }
    Ok(())
}
