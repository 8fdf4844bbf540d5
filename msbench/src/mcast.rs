//! `msbench mcast`: reliable multicast throughput (DESIGN.md section 10:
//! ">= 70% of raw UDP fan-out over IP multicast, >= 35% through the
//! mcaster, zero loss with 5% injected loss").
//!
//! Every member is a process: one sender and `--receivers` receivers, each
//! `msbench mcast-peer` (a `GroupEndpoint` on its own socket, under the
//! runtime), the sender sending reliable parcels as fast as the window
//! allows. The figure is the sender's: parcels (and payload bytes) from the
//! first `send` until every receiver acknowledged the last one, so every
//! receiver holds everything; the receivers confirm the count, the order
//! and the contents. Two transports:
//!
//! - **through the mcaster on loopback** (127.0.0.x, a unicast-only LAN):
//!   every member is `uc`; the mcaster is the `mcaster::Mcaster` core run in
//!   this process on its own thread and socket, as the `mcaster` daemon
//!   runs it;
//! - **over real IP multicast** in network namespaces joined by a bridge
//!   (needs root and `ip`; otherwise reported as skipped with the reason):
//!   every member is `mc`, no mcaster.
//!
//! The baseline, measured in the same run on the same hosts: **raw UDP
//! fan-out**, one process sending the same payload in datagrams of the
//! same fragment size by unicast to each receiver socket in turn, as fast
//! as it can, and `mcast-raw` sink processes counting what arrives (its
//! throughput is the slowest sink's bytes over its first-to-last-datagram
//! time; losses are not repaired and reported as the delivered fraction).
//!
//! Each transport is measured again with `--loss-pct` (5) injected loss on
//! every receiver's socket (the runtime's fault injector, both directions),
//! reporting parcels delivered against parcels owed (must be equal).

use super::stats::{ratio, round2};
use anyhow::{anyhow, bail, Context as _};
use membership::id::ProtocolId;
use membership::mcaster::{Mcaster, McasterConfig, McasterCounters};
use membership::runtime::{spawn_core, SocketOptions};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use testkit::netns;
use testkit::{Lines, Proc};

const GROUP: &str = "239.77.9.1:7000";
const NETNS_TAG: &str = "bn";
const NETNS_SUBNET: [u8; 3] = [10, 231, 9];
const PEER_PORT: u16 = 7000;
const SINK_PORT: u16 = 7001;
/// Bound on one measured case.
const CASE_LIMIT: Duration = Duration::from_secs(120);
/// Bound on a process getting ready.
const START_LIMIT: Duration = Duration::from_secs(20);

/// Options of `msbench mcast`.
#[derive(clap::Args, Debug, Clone)]
pub struct McastArgs {
    /// Print one JSON object instead of a readable summary.
    #[arg(long)]
    json: bool,
    /// Receivers (processes).
    #[arg(long, default_value_t = 4)]
    receivers: usize,
    /// Parcels of 1 KiB per run.
    #[arg(long, default_value_t = 20_000)]
    small_parcels: u64,
    /// Parcels of 64 KiB per run.
    #[arg(long, default_value_t = 400)]
    big_parcels: u64,
    /// Injected loss for the loss runs, percent.
    #[arg(long, default_value_t = 5.0)]
    loss_pct: f64,
    /// rmcast window, in packets.
    #[arg(long, default_value_t = membership::rmcast::DEFAULT_WINDOW)]
    window: u32,
    /// rmcast fragment payload, bytes (also the raw baseline's datagrams).
    #[arg(long, default_value_t = membership::rmcast::DEFAULT_FRAGMENT_PAYLOAD)]
    fragment_payload: usize,
    /// Only the loopback (mcaster) transport.
    #[arg(long)]
    no_netns: bool,
    /// Extra flags for every `mcast-peer` (whitespace-separated), e.g.
    /// "--nack-delay-us 2000" to study the rmcast timers.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    peer_args: String,
}

/// Options of `msbench mcast-raw` (the baseline's processes).
#[derive(clap::Args, Debug, Clone)]
pub struct McastRawArgs {
    /// sink: count datagrams; source: send them.
    #[arg(long, value_parser = ["sink", "source"])]
    role: String,
    /// sink: the address to bind; source: the address to send from.
    #[arg(long)]
    listen: SocketAddr,
    /// sink: datagrams expected.
    #[arg(long, default_value_t = 0)]
    expect: u64,
    /// sink: give up this long after the last datagram.
    #[arg(long, default_value_t = 1000)]
    idle_ms: u64,
    /// source: the sinks, comma-separated.
    #[arg(long, value_delimiter = ',')]
    to: Vec<SocketAddr>,
    /// source: parcels to send.
    #[arg(long, default_value_t = 0)]
    parcels: u64,
    /// source: parcel size.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// source: datagram payload (parcels are cut into these).
    #[arg(long, default_value_t = 1280)]
    fragment: usize,
}

/// Runs `msbench mcast-raw`.
#[allow(clippy::disallowed_methods)] // the benchmark owns the clock
pub fn run_raw(args: &McastRawArgs) -> anyhow::Result<()> {
    let socket =
        super::socket_with_buffers(args.listen).with_context(|| format!("bind {}", args.listen))?;
    if args.role == "sink" {
        println!(
            "{}",
            json!({"event": "ready", "node": socket.local_addr()?.to_string()})
        );
        // Before the first datagram, wait up to a minute.
        socket.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut buf = vec![0u8; 65_536];
        let (mut datagrams, mut bytes) = (0u64, 0u64);
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        while datagrams < args.expect {
            match socket.recv_from(&mut buf) {
                Ok((n, _)) => {
                    last = Instant::now();
                    if first.is_none() {
                        first = Some(last);
                        socket
                            .set_read_timeout(Some(Duration::from_millis(args.idle_ms.max(1))))?;
                    }
                    datagrams += 1;
                    bytes += n as u64;
                }
                Err(_) => break,
            }
        }
        let seconds = first.map(|f| (last - f).as_secs_f64()).unwrap_or(0.0);
        println!(
            "{}",
            json!({"event": "sink_done", "datagrams": datagrams, "bytes": bytes, "seconds": seconds})
        );
        return Ok(());
    }
    if args.fragment == 0 || args.to.is_empty() {
        bail!("a source needs --to and a --fragment above 0");
    }
    let payload = vec![0x5au8; args.size];
    let t0 = Instant::now();
    let mut datagrams = 0u64;
    for _ in 0..args.parcels {
        for chunk in payload.chunks(args.fragment) {
            for to in &args.to {
                // A full buffer is a loss like any other here.
                if socket.send_to(chunk, to).is_ok() {
                    datagrams += 1;
                }
            }
        }
    }
    println!(
        "{}",
        json!({"event": "source_done", "datagrams": datagrams, "seconds": t0.elapsed().as_secs_f64()})
    );
    Ok(())
}

/// Child processes printing JSON lines (`testkit::Lines`, each child
/// named by its index); all killed when dropped.
struct Procs {
    lines: Lines,
    children: Vec<Proc>,
}

impl Procs {
    fn new() -> Self {
        Procs {
            lines: Lines::new(),
            children: Vec::new(),
        }
    }

    /// Starts `cmd`; its index.
    fn spawn(&mut self, mut cmd: Command) -> anyhow::Result<usize> {
        let i = self.children.len();
        cmd.env("RUST_LOG", "error");
        let child = self
            .lines
            .try_spawn(&i.to_string(), cmd)
            .context("start a benchmark process")?;
        self.children.push(child);
        Ok(i)
    }

    /// Reads lines until `done` holds; an error after `limit`.
    fn wait(
        &mut self,
        limit: Duration,
        what: &str,
        done: impl Fn(&Lines) -> bool,
    ) -> anyhow::Result<()> {
        if !self.lines.wait(limit, done) {
            bail!("timed out waiting for {what}");
        }
        Ok(())
    }

    /// The first line of child `i` with `"event": event`.
    fn event(&self, i: usize, event: &str) -> Option<&Value> {
        first_event(&self.lines, i, event)
    }

    fn term(&self, i: usize) {
        self.children[i].term();
    }
}

/// The first line of child `i` of `lines` with `"event": event`.
fn first_event<'a>(lines: &'a Lines, i: usize, event: &str) -> Option<&'a Value> {
    lines.events(&i.to_string(), event).next()
}

/// Where the members run.
enum Hosts {
    /// 127.0.0.x, through an in-process relay at `mcaster`.
    Loopback {
        mcaster: SocketAddr,
        /// Host i's address (0: the sender).
        ips: Vec<String>,
    },
    /// Namespaces: host 0 the sender, then the receivers.
    Netns(netns::Lan),
}

impl Hosts {
    fn ip(&self, i: usize) -> String {
        match self {
            Hosts::Loopback { ips, .. } => ips[i].clone(),
            Hosts::Netns(lan) => lan.hosts[i].ip.to_string(),
        }
    }

    fn command(&self, i: usize, exe: &PathBuf) -> Command {
        match self {
            Hosts::Loopback { .. } => Command::new(exe),
            Hosts::Netns(lan) => lan.command(&lan.hosts[i], exe),
        }
    }

    /// The address of host `i`'s member and of its raw sink.
    fn addrs(&self, i: usize) -> (String, String) {
        match self {
            Hosts::Loopback { .. } => {
                let ip = self.ip(i);
                let peer = free_port(&ip);
                let sink = free_port(&ip);
                (format!("{ip}:{peer}"), format!("{ip}:{sink}"))
            }
            Hosts::Netns(_) => {
                let ip = self.ip(i);
                (format!("{ip}:{PEER_PORT}"), format!("{ip}:{SINK_PORT}"))
            }
        }
    }

    /// Flags of host `i`'s peer for this transport.
    fn peer_flags(&self, i: usize, addr: &str) -> Vec<String> {
        match self {
            Hosts::Loopback { mcaster, .. } => vec![
                "--kind".into(),
                "uc".into(),
                "--mcaster".into(),
                mcaster.to_string(),
                "--listen".into(),
                addr.into(),
            ],
            Hosts::Netns(_) => vec![
                "--kind".into(),
                "mc".into(),
                "--listen".into(),
                format!("0.0.0.0:{PEER_PORT}"),
                "--advertise".into(),
                addr.into(),
                "--multicast-interface".into(),
                self.ip(i),
                "--multicast-loopback".into(),
                "false".into(),
            ],
        }
    }

    fn registers(&self) -> bool {
        matches!(self, Hosts::Loopback { .. })
    }
}

/// A UDP port on `ip` the kernel says is free (0, any port, if none).
fn free_port(ip: &str) -> u16 {
    testkit::ports::try_free_udp_port(ip).unwrap_or(0)
}

/// The raw fan-out baseline: one source, `n` sinks.
fn raw_case(hosts: &Hosts, args: &McastArgs, size: usize, parcels: u64) -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?;
    let mut procs = Procs::new();
    let per_parcel = size.div_ceil(args.fragment_payload).max(1) as u64;
    let mut sinks = Vec::new();
    for i in 1..=args.receivers {
        let (_, sink) = hosts.addrs(i);
        let mut cmd = hosts.command(i, &exe);
        cmd.args(["mcast-raw", "--role", "sink", "--listen", &sink]);
        cmd.args(["--expect", &(per_parcel * parcels).to_string()]);
        sinks.push((procs.spawn(cmd)?, sink));
    }
    procs.wait(START_LIMIT, "raw sinks", |p| {
        sinks
            .iter()
            .all(|(i, _)| first_event(p, *i, "ready").is_some())
    })?;
    let mut cmd = hosts.command(0, &exe);
    let source_addr = format!("{}:0", hosts.ip(0));
    let to: Vec<String> = sinks.iter().map(|(_, a)| a.clone()).collect();
    cmd.args(["mcast-raw", "--role", "source", "--listen", &source_addr]);
    cmd.args(["--to", &to.join(",")]);
    cmd.args([
        "--parcels",
        &parcels.to_string(),
        "--size",
        &size.to_string(),
    ]);
    cmd.args(["--fragment", &args.fragment_payload.to_string()]);
    let source = procs.spawn(cmd)?;
    procs.wait(CASE_LIMIT, "the raw fan-out", |p| {
        first_event(p, source, "source_done").is_some()
            && sinks
                .iter()
                .all(|(i, _)| first_event(p, *i, "sink_done").is_some())
    })?;
    let owed = (size as u64 * parcels) as f64;
    let mut slowest = f64::INFINITY;
    let mut delivered = f64::INFINITY;
    for (i, _) in &sinks {
        let d = procs.event(*i, "sink_done").cloned().unwrap_or_default();
        let bytes = d["bytes"].as_f64().unwrap_or(0.0);
        let secs = d["seconds"].as_f64().unwrap_or(0.0);
        let mb_s = if secs > 0.0 { bytes / secs / 1e6 } else { 0.0 };
        slowest = slowest.min(mb_s);
        delivered = delivered.min(if owed > 0.0 { bytes / owed } else { 0.0 });
    }
    let parcels_per_s = slowest * 1e6 / size as f64;
    Ok(json!({
        "mb_per_s": round2(slowest),
        "parcels_per_s": round2(parcels_per_s),
        "delivered_fraction_worst": round2(delivered),
        "source_seconds": procs.event(source, "source_done").map(|v| v["seconds"].clone()),
    }))
}

/// One rmcast run: a sender and the receivers; `loss` percent injected on
/// every receiver.
fn rmcast_case(
    hosts: &Hosts,
    args: &McastArgs,
    size: usize,
    parcels: u64,
    loss: f64,
) -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?;
    let mut procs = Procs::new();
    let addrs: Vec<String> = (0..=args.receivers).map(|i| hosts.addrs(i).0).collect();
    let view = addrs.join(",");
    let common = |i: usize| {
        let mut v = hosts.peer_flags(i, &addrs[i]);
        v.extend(
            [
                "--group",
                GROUP,
                "--group-name",
                "msbench-mcast",
                "--quiet",
                "--receivers",
                &view,
                "--window",
                &args.window.to_string(),
                "--fragment-payload",
                &args.fragment_payload.to_string(),
                "--max-runtime-secs",
                "300",
            ]
            .map(String::from),
        );
        v.extend(args.peer_args.split_whitespace().map(String::from));
        v
    };
    let mut receivers = Vec::new();
    for i in 1..=args.receivers {
        let mut cmd = hosts.command(i, &exe);
        cmd.arg("mcast-peer").args(common(i));
        cmd.args(["--expect", &parcels.to_string()]);
        if loss > 0.0 {
            cmd.args([
                "--drop-pct",
                &loss.to_string(),
                "--fault-seed",
                &i.to_string(),
            ]);
        }
        receivers.push(procs.spawn(cmd)?);
    }
    let ready = if hosts.registers() {
        "registered"
    } else {
        "ready"
    };
    procs.wait(START_LIMIT, "the receivers", |p| {
        receivers
            .iter()
            .all(|i| first_event(p, *i, ready).is_some())
    })?;
    let mut cmd = hosts.command(0, &exe);
    cmd.arg("mcast-peer").args(common(0));
    cmd.args(["--send", &parcels.to_string(), "--size", &size.to_string()]);
    let sender = procs.spawn(cmd)?;
    procs.wait(CASE_LIMIT, "the rmcast stream", |p| {
        first_event(p, sender, "plan_done").is_some()
            && receivers
                .iter()
                .all(|i| first_event(p, *i, "complete").is_some())
    })?;
    // The counters come with the exits.
    for i in std::iter::once(sender).chain(receivers.iter().copied()) {
        procs.term(i);
    }
    let all: Vec<usize> = std::iter::once(sender)
        .chain(receivers.iter().copied())
        .collect();
    procs.wait(START_LIMIT, "the peers' exits", |p| {
        all.iter().all(|i| first_event(p, *i, "exit").is_some())
    })?;
    let done = procs
        .event(sender, "plan_done")
        .cloned()
        .unwrap_or_default();
    let mut delivered = 0u64;
    let (mut gaps, mut duplicates, mut damaged) = (0u64, 0u64, 0u64);
    let sender_addr = addrs[0].as_str();
    for i in &receivers {
        let e = procs.event(*i, "exit").cloned().unwrap_or_default();
        let f = &e["from"][sender_addr];
        delivered += f["delivered"].as_u64().unwrap_or(0);
        gaps += f["gaps"].as_u64().unwrap_or(0);
        duplicates += f["duplicates"].as_u64().unwrap_or(0);
        damaged += f["damaged"].as_u64().unwrap_or(0);
    }
    let owed = parcels * args.receivers as u64;
    let stats = procs
        .event(sender, "exit")
        .map(|e| e["stats"]["rmcast"].clone())
        .unwrap_or_default();
    Ok(json!({
        "mb_per_s": round2(done["mb_per_s"].as_f64().unwrap_or(0.0)),
        "parcels_per_s": round2(done["parcels_per_s"].as_f64().unwrap_or(0.0)),
        "seconds": done["seconds"],
        "injected_loss_pct": loss,
        "parcels_owed": owed,
        "parcels_delivered": delivered,
        "lost": owed.saturating_sub(delivered),
        "gaps": gaps, "duplicates": duplicates, "damaged": damaged,
        "sender": {
            "data_sent": stats["data_sent"], "retransmitted": stats["retransmitted"],
            "nacks_received": stats["nacks_received"], "statuses_received": stats["statuses_received"],
            "queue_full": stats["queue_full"], "suspects": stats["suspects"],
        },
    }))
}

/// Every case of one transport: for 1 KiB and 64 KiB, raw, rmcast, and
/// rmcast with loss, with ratios.
fn transport_cases(hosts: &Hosts, args: &McastArgs) -> Value {
    let mut out = serde_json::Map::new();
    for (label, size, parcels) in [
        ("1KiB", 1024usize, args.small_parcels),
        ("64KiB", 65_536usize, args.big_parcels),
    ] {
        let raw = raw_case(hosts, args, size, parcels)
            .unwrap_or_else(|e| json!({"error": e.to_string()}));
        let clean = rmcast_case(hosts, args, size, parcels, 0.0)
            .unwrap_or_else(|e| json!({"error": e.to_string()}));
        let lossy = rmcast_case(hosts, args, size, parcels, args.loss_pct)
            .unwrap_or_else(|e| json!({"error": e.to_string()}));
        let raw_mb = raw["mb_per_s"].as_f64().unwrap_or(0.0);
        out.insert(
            label.into(),
            json!({
                "parcel_bytes": size, "parcels": parcels,
                "raw_udp_fanout": raw,
                "rmcast": clean.clone(),
                "ratio": ratio(clean["mb_per_s"].as_f64().unwrap_or(0.0), raw_mb),
                "rmcast_with_loss": lossy.clone(),
                "ratio_with_loss": ratio(lossy["mb_per_s"].as_f64().unwrap_or(0.0), raw_mb),
            }),
        );
    }
    Value::Object(out)
}

/// The relay core on its own thread (as the `mcaster` daemon runs it);
/// stopped by sending on the returned channel, which answers its counters.
fn start_relay() -> anyhow::Result<(SocketAddr, mpsc::Sender<mpsc::Sender<McasterCounters>>)> {
    start_relay_keyed(None)
}

/// The in-process relay, sealing and opening with `ring` when given.
fn start_relay_keyed(
    ring: Option<membership::wire::KeyRing>,
) -> anyhow::Result<(SocketAddr, mpsc::Sender<mpsc::Sender<McasterCounters>>)> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<mpsc::Sender<McasterCounters>>();
    std::thread::spawn(move || {
        actix::System::new().block_on(async move {
            let bind = SocketAddr::from(([127, 0, 0, 1], 0));
            let mut options = SocketOptions::new(bind);
            options.auth = ring.map(membership::wire::AuthConfig::new);
            let spawned = spawn_core(options, &ProtocolId::ALL, |ctx| {
                Mcaster::new(ctx.local, McasterConfig::default())
            });
            let Ok(mut spawned) = spawned else {
                return;
            };
            let _ = ready_tx.send(spawned.handle.local.addr());
            loop {
                if let Ok(answer) = stop_rx.try_recv() {
                    let c = spawned
                        .handle
                        .with_core(|r: &mut Mcaster, _| r.counters().clone())
                        .await
                        .unwrap_or_default();
                    let _ = answer.send(c);
                    break;
                }
                let _ =
                    tokio::time::timeout(Duration::from_millis(50), spawned.events.recv()).await;
            }
            spawned.handle.stop();
        });
    });
    let addr = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| anyhow!("the relay did not start"))?;
    Ok((addr, stop_tx))
}

fn relay_json(c: &McasterCounters) -> Value {
    json!({
        "relayed": c.relayed, "copies": c.copies, "nacks_answered": c.nacks_answered,
        "nack_resends": c.nack_resends, "nacks_forwarded": c.nacks_forwarded,
        "nacks_suppressed": c.nacks_suppressed, "dropped": c.dropped.total(),
    })
}

/// Runs `msbench mcast`.
pub fn run(args: &McastArgs) -> anyhow::Result<()> {
    if args.receivers == 0 || args.receivers > 50 {
        bail!("--receivers must be 1 to 50");
    }
    // Loopback, through the relay.
    let (relay, stop) = start_relay()?;
    let ips = (0..=args.receivers)
        .map(|i| format!("127.0.0.{}", 20 + i))
        .collect();
    let loopback = Hosts::Loopback {
        mcaster: relay,
        ips,
    };
    let mut through_mcaster = transport_cases(&loopback, args);
    let (tx, rx) = mpsc::channel();
    let _ = stop.send(tx);
    if let Ok(c) = rx.recv_timeout(Duration::from_secs(10)) {
        through_mcaster["relay_counters"] = relay_json(&c);
    }
    through_mcaster["transport"] =
        json!("uc members on 127.0.0.x through the relay core (in-process thread, own socket)");

    // Real IP multicast in namespaces.
    let ip_multicast = if args.no_netns {
        json!({"skipped": "--no-netns"})
    } else {
        match netns::available() {
            Err(reason) => json!({ "skipped": reason }),
            Ok(()) => {
                netns::delete_stale(NETNS_TAG);
                let names: Vec<String> = std::iter::once("s".to_string())
                    .chain((1..=args.receivers).map(|i| format!("r{i}")))
                    .collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                match netns::Lan::build(NETNS_TAG, NETNS_SUBNET, &refs) {
                    Err(e) => json!({ "skipped": format!("cannot build the namespaces: {e}") }),
                    Ok(lan) => {
                        let hosts = Hosts::Netns(lan);
                        let mut v = transport_cases(&hosts, args);
                        v["transport"] = json!(
                            "mc members in network namespaces on one bridge (veth), IP multicast, no mcaster"
                        );
                        v
                    }
                }
            }
        }
    };

    let summary = |v: &Value| {
        json!({
            "1KiB": v["1KiB"]["ratio"], "64KiB": v["64KiB"]["ratio"],
        })
    };
    let out = json!({
        "scenario": "mcast",
        "machine": super::machine(),
        "receivers": args.receivers,
        "window": args.window,
        "fragment_payload": args.fragment_payload,
        "peer_args": args.peer_args,
        "members": "processes (msbench mcast-peer), one per member",
        "through_mcaster": through_mcaster,
        "ip_multicast": ip_multicast,
        "ratios": {
            "through_mcaster": summary(&through_mcaster),
            "ip_multicast": summary(&ip_multicast),
        },
        "targets": {"through_mcaster": 0.35, "ip_multicast": 0.70},
    });
    if args.json {
        println!("{out}");
    } else {
        print_readable(&out);
    }
    Ok(())
}

fn print_readable(out: &Value) {
    for (name, key) in [
        ("through the mcaster", "through_mcaster"),
        ("IP multicast", "ip_multicast"),
    ] {
        let t = &out[key];
        if let Some(reason) = t["skipped"].as_str() {
            println!("{name}: skipped ({reason})");
            continue;
        }
        for size in ["1KiB", "64KiB"] {
            let c = &t[size];
            println!(
                "{name:>20} {size:>5}: rmcast {:>8} MB/s {:>9} parcels/s | raw fan-out {:>8} MB/s | ratio {} | with loss {:>8} MB/s, lost {} of {}",
                c["rmcast"]["mb_per_s"], c["rmcast"]["parcels_per_s"],
                c["raw_udp_fanout"]["mb_per_s"], c["ratio"],
                c["rmcast_with_loss"]["mb_per_s"], c["rmcast_with_loss"]["lost"],
                c["rmcast_with_loss"]["parcels_owed"],
            );
        }
    }
}

/// rmcast throughput through the relay on loopback, every datagram sealed
/// with `key` (`ID:HEX`) when given: `parcels` parcels of `size` bytes to
/// `receivers` receivers (for `msbench crypto`).
pub fn loopback_throughput(
    key: Option<&str>,
    receivers: usize,
    size: usize,
    parcels: u64,
) -> anyhow::Result<Value> {
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: McastArgs,
    }
    use clap::Parser as _;
    let mut argv = vec![
        "mcast".to_string(),
        "--receivers".into(),
        receivers.to_string(),
    ];
    if let Some(k) = key {
        argv.push(format!("--peer-args=--cluster-key {k}"));
    }
    let args = Wrap::try_parse_from(argv)?.args;
    let ring = match key {
        Some(k) => Some(
            membership::wire::KeyRing::new(vec![
                membership::wire::ClusterKey::parse(k).map_err(|e| anyhow!("{e}"))?
            ])
            .map_err(|e| anyhow!("{e}"))?,
        ),
        None => None,
    };
    let (relay, stop) = start_relay_keyed(ring)?;
    let ips = (0..=receivers)
        .map(|i| format!("127.0.0.{}", 20 + i))
        .collect();
    let hosts = Hosts::Loopback {
        mcaster: relay,
        ips,
    };
    let out = rmcast_case(&hosts, &args, size, parcels, 0.0);
    let (tx, _rx) = mpsc::channel();
    let _ = stop.send(tx);
    out
}
