//! `msbench crypto`: the cost of the cluster key ring (XChaCha20-Poly1305
//! on every datagram, docs/security.md) in one run, each figure measured
//! without and with a ring, alternately:
//!
//! - the RPC round trip (64-byte echo over loopback through the full actix
//!   stack, as `msbench rpc`);
//! - view change latency with real mservers through an mcaster (SIGKILL of
//!   a member -> the view without it at every survivor; a restart -> the
//!   view with it at every member), as `msbench membership`;
//! - rmcast throughput through the mcaster relay on loopback (1 KiB
//!   parcels to 3 receiver processes), as `msbench mcast`.
//!
//! Target: at most 10% slower with the ring (the JSON's `slowdown_pct`).
#![allow(clippy::disallowed_methods)] // the benchmark owns the clock

use super::membership::procs::{Binaries, Cluster};
use super::membership::real::{contains, converge, settle};
use super::stats::{round2, Latencies};
use anyhow::{anyhow, bail};
use membership::id::{NodeId, ProtocolId};
use membership::rpc::{CallOptions, HandlerResult, Rpc, RpcConfig, RpcEvent};
use membership::runtime::{spawn_core, SocketOptions};
use membership::wire::{AuthConfig, ClusterKey, KeyRing};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

const KEY: &str = "1:5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
const PROC_ECHO: u16 = 77;

/// Options of `msbench crypto`.
#[derive(clap::Args, Debug, Clone)]
pub struct CryptoArgs {
    /// Print one JSON object instead of a readable summary.
    #[arg(long)]
    json: bool,
    /// RPC round trips per mode (after 200 of warm-up), in two halves.
    #[arg(long, default_value_t = 4000)]
    rounds: usize,
    /// View-change trials per mode (each: one SIGKILL, one restart).
    #[arg(long, default_value_t = 10)]
    trials: usize,
    /// mservers in the view-change runs.
    #[arg(long, default_value_t = 4)]
    members: usize,
    /// 1 KiB parcels per rmcast run.
    #[arg(long, default_value_t = 20_000)]
    parcels: u64,
    /// Receivers in the rmcast runs.
    #[arg(long, default_value_t = 3)]
    receivers: usize,
    /// Seed of the random choices (victims, settle times).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn ring() -> anyhow::Result<KeyRing> {
    let key = ClusterKey::parse(KEY).map_err(|e| anyhow!("{e}"))?;
    KeyRing::new(vec![key]).map_err(|e| anyhow!("{e}"))
}

fn options(keyed: bool) -> anyhow::Result<SocketOptions> {
    let mut o = SocketOptions::localhost();
    if keyed {
        o.auth = Some(AuthConfig::new(ring()?));
    }
    Ok(o)
}

/// RPC round trips of a 64-byte echo, `rounds` of them after a warm-up.
fn rpc_round_trips(keyed: bool, rounds: usize) -> anyhow::Result<Latencies> {
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let (stop_tx, stop_rx) = std_mpsc::channel::<()>();
    let server_options = options(keyed)?;
    let server = std::thread::spawn(move || {
        actix::System::new().block_on(async move {
            let spawned = spawn_core(server_options, &[ProtocolId::Rpc], |ctx| {
                let mut rpc = Rpc::new(ctx.local, ctx.incarnation, RpcConfig::default(), 1);
                rpc.register(PROC_ECHO, |_, body: &[u8]| {
                    HandlerResult::Reply(body.to_vec())
                });
                rpc
            });
            let Ok(mut spawned) = spawned else {
                return;
            };
            let _ = ready_tx.send(spawned.handle.local);
            while stop_rx.try_recv().is_err() {
                let _ =
                    tokio::time::timeout(Duration::from_millis(50), spawned.events.recv()).await;
            }
            spawned.handle.stop();
        });
    });
    let server_node: NodeId = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| anyhow!("the RPC server did not start"))?;
    let client_options = options(keyed)?;
    let result = actix::System::new().block_on(async move {
        let mut client = spawn_core(client_options, &[ProtocolId::Rpc], |ctx| {
            Rpc::new(ctx.local, ctx.incarnation, RpcConfig::default(), 2)
        })?;
        let mut rtt = Latencies::with_capacity(rounds);
        let body = vec![0x42u8; 64];
        for i in 0..200 + rounds {
            let t0 = Instant::now();
            let b = body.clone();
            client
                .handle
                .with_core(move |rpc: &mut Rpc, now| {
                    rpc.call(now, server_node, PROC_ECHO, b, CallOptions::default())
                })
                .await?;
            loop {
                let ev = tokio::time::timeout(Duration::from_secs(10), client.events.recv())
                    .await
                    .map_err(|_| anyhow!("no RPC completion within 10 s"))?
                    .ok_or_else(|| anyhow!("the client stopped"))?;
                if let RpcEvent::CallCompleted { result, .. } = ev {
                    result.map_err(|e| anyhow!("call failed: {e}"))?;
                    break;
                }
            }
            if i >= 200 {
                rtt.push(t0.elapsed());
            }
        }
        client.handle.stop();
        Ok::<_, anyhow::Error>(rtt)
    });
    let _ = stop_tx.send(());
    let _ = server.join();
    result
}

/// View changes of real mservers: SIGKILL -> view at every survivor, and
/// restart -> view with it at every member.
fn view_changes(
    bins: &Binaries,
    keyed: bool,
    args: &CryptoArgs,
    tag: u16,
) -> anyhow::Result<(Latencies, Latencies)> {
    let dir = std::env::temp_dir().join(format!("msbench-crypto-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut key_args = Vec::new();
    if keyed {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("keys");
        std::fs::write(&path, format!("{KEY}\n"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        key_args = vec!["--key-file".to_string(), path.display().to_string()];
    }
    let mut c = Cluster::with_key_args(bins, tag, key_args)?;
    let n = args.members.clamp(3, 16);
    converge(&mut c, n)?;
    c.verify_with_msctl(Duration::from_secs(10))?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let (mut crash, mut join) = (Latencies::default(), Latencies::default());
    let everyone: Vec<usize> = (0..n).collect();
    for _ in 0..args.trials {
        settle(&mut c, &mut rng);
        let victim = rng.random_range(1..n);
        let va = c.addr(victim);
        let survivors: Vec<usize> = everyone.iter().copied().filter(|i| *i != victim).collect();
        c.mark();
        let t0 = c
            .kill(victim)
            .ok_or_else(|| anyhow!("mserver {victim} was not running"))?;
        match c.wait_for(Duration::from_secs(10), |c| {
            c.all_installed(&survivors, |m| !contains(m, va))
        }) {
            Some(t) => crash.push(t.saturating_duration_since(t0)),
            None => bail!("no view without {va} at every survivor"),
        }
        settle(&mut c, &mut rng);
        c.mark();
        let spawn = c.start(victim)?;
        match c.wait_for(Duration::from_secs(10), |c| {
            c.all_installed(&everyone, |m| contains(m, va))
        }) {
            Some(t) => join.push(t.saturating_duration_since(spawn)),
            None => bail!("no view with the restarted {va} at every member"),
        }
        converge(&mut c, n)?;
    }
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((crash, join))
}

fn slowdown(plain: f64, keyed: f64, lower_is_better: bool) -> f64 {
    if plain <= 0.0 {
        return 0.0;
    }
    let pct = if lower_is_better {
        (keyed / plain - 1.0) * 100.0
    } else {
        (plain / keyed.max(f64::MIN_POSITIVE) - 1.0) * 100.0
    };
    round2(pct)
}

fn merge(a: Latencies, b: Latencies) -> Latencies {
    let mut all = a;
    all.extend(&b);
    all
}

/// Runs `msbench crypto`.
pub fn run(args: &CryptoArgs) -> anyhow::Result<()> {
    let bins = Binaries::locate()?;
    // RPC: alternate halves so that drift hits both modes alike.
    let half = (args.rounds / 2).max(100);
    let p1 = rpc_round_trips(false, half)?;
    let k1 = rpc_round_trips(true, half)?;
    let p2 = rpc_round_trips(false, half)?;
    let k2 = rpc_round_trips(true, half)?;
    let (rpc_plain, rpc_keyed) = (merge(p1, p2), merge(k1, k2));

    let (crash_plain, join_plain) = view_changes(&bins, false, args, 1)?;
    let (crash_keyed, join_keyed) = view_changes(&bins, true, args, 2)?;

    let mcast_plain = super::mcast::loopback_throughput(None, args.receivers, 1024, args.parcels)?;
    let mcast_keyed =
        super::mcast::loopback_throughput(Some(KEY), args.receivers, 1024, args.parcels)?;
    let mb = |v: &Value| v["mb_per_s"].as_f64().unwrap_or(0.0);

    let out = json!({
        "scenario": "crypto",
        "machine": super::machine(),
        "cipher": "XChaCha20-Poly1305 (RustCrypto chacha20poly1305), header as associated data",
        "target_slowdown_pct": 10.0,
        "rpc_round_trip_us": {
            "plain": rpc_plain.summary(),
            "keyed": rpc_keyed.summary(),
            "slowdown_pct_p50": slowdown(rpc_plain.quantile_us(0.5), rpc_keyed.quantile_us(0.5), true),
            "slowdown_pct_p99": slowdown(rpc_plain.quantile_us(0.99), rpc_keyed.quantile_us(0.99), true),
        },
        "view_change_crash_us": {
            "members": args.members,
            "plain": crash_plain.summary(),
            "keyed": crash_keyed.summary(),
            "slowdown_pct_p50": slowdown(crash_plain.quantile_us(0.5), crash_keyed.quantile_us(0.5), true),
        },
        "view_change_join_us": {
            "members": args.members,
            "plain": join_plain.summary(),
            "keyed": join_keyed.summary(),
            "slowdown_pct_p50": slowdown(join_plain.quantile_us(0.5), join_keyed.quantile_us(0.5), true),
        },
        "rmcast_throughput": {
            "parcel_bytes": 1024,
            "receivers": args.receivers,
            "plain": mcast_plain,
            "keyed": mcast_keyed,
            "slowdown_pct": slowdown(mb(&mcast_plain), mb(&mcast_keyed), false),
        },
    });
    if args.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
