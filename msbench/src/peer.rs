//! `msbench mcast-peer`: one rmcast member as a process, for the
//! real-process tests and the `mcast` benchmark.
//!
//! It runs a [`GroupEndpoint`] in one group on one socket
//! (`runtime::spawn_core`), over IP multicast (`--kind mc`: it joins the
//! class D address on its socket), through an mcaster (`--kind uc
//! --mcaster ADDR`), or both (`--kind mc --mcaster ADDR`: an `mc` member of
//! a mixed LAN, thesis figure 6). It plays the layer above: the view is
//! `--receivers`, the parcels to send are a plan given by flags, and with
//! `--remove-suspects` a receiver reported as suspect is removed from the
//! view (as the mserver will fail it).
//!
//! Every event is one JSON object per line on stdout (`"event"` says which):
//! `ready`, `registered` / `relearned` / `refused` / `left`, `delivered`
//! (sender, index, size, whether intact and in order), `acknowledged`,
//! `expired`, `suspect`, `removed`, `send_window_open`, `complete` (all
//! `--expect` parcels from one sender), `plan_sent`, `plan_done` (every
//! parcel acknowledged or expired, with the throughput seen by the
//! sender), and `exit` with the counters, after SIGTERM or SIGINT (exit
//! code 0; the member then leaves the group at the mcaster, and prints
//! `left` once the mcaster answered) or `--max-runtime-secs`. `--quiet` leaves out the per-parcel
//! lines (`delivered`, `acknowledged`, `send_window_open`); problems
//! (damaged, duplicate or out-of-order parcels) are counted and reported in
//! `complete` and `exit` either way.
//!
//! A parcel is its index (8 bytes, big-endian) then a pattern of the index,
//! so receivers check each one.

use anyhow::{bail, Context as _};
use membership::id::{NodeId, ProtocolId};
use membership::mcaster_reg::RegistrationEvent;
use membership::rmcast::{
    Delivery, EndpointConfig, EndpointError, EndpointEvent, GroupEndpoint, ParcelId, RmcastConfig,
    RmcastEvent, SendError, Transport,
};
use membership::runtime::{
    spawn_core, CoreHandle, FaultConfig, MulticastOptions, SocketOptions, SpawnedCore,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Options of `msbench mcast-peer`.
#[derive(clap::Args, Debug, Clone)]
pub struct PeerArgs {
    /// A cluster key, ID:HEX: seal and open every datagram with it (the
    /// encryption-cost benchmark, `msbench crypto`).
    #[arg(long = "cluster-key", value_name = "ID:HEX")]
    pub cluster_key: Option<String>,
    /// The address to bind (e.g. 127.0.0.2:0, or 0.0.0.0:PORT for an mc
    /// member, with --advertise).
    #[arg(long)]
    pub listen: SocketAddr,
    /// This node's address in its headers (needed when --listen is 0.0.0.0).
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// The group: class D address and port.
    #[arg(long)]
    pub group: SocketAddr,
    /// The group's name (the mcaster lists groups by name too).
    #[arg(long, default_value = "rmcast-peer")]
    pub group_name: String,
    /// uc: group traffic by unicast through --mcaster; mc: IP multicast
    /// (the socket joins the group), registered with --mcaster if given.
    #[arg(long, value_parser = ["uc", "mc"], default_value = "uc")]
    pub kind: String,
    /// The mcaster to register with.
    #[arg(long)]
    pub mcaster: Option<SocketAddr>,
    /// The interface address to join the group on (mc).
    #[arg(long, default_value = "0.0.0.0")]
    pub multicast_interface: Ipv4Addr,
    /// Loop our own multicast datagrams back to local sockets (mc; needed
    /// when several members share a host).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub multicast_loopback: bool,
    /// The view: the other members' addresses, comma-separated (this
    /// node's own address is ignored).
    #[arg(long, value_delimiter = ',')]
    pub receivers: Vec<SocketAddr>,
    /// Parcels to send (0: only receive).
    #[arg(long, default_value_t = 0)]
    pub send: u64,
    /// Parcel size in bytes (at least 8).
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Every Nth parcel is --big-size bytes instead (0: never).
    #[arg(long, default_value_t = 0)]
    pub big_every: u64,
    /// Size of the big parcels.
    #[arg(long, default_value_t = 65_536)]
    pub big_size: usize,
    /// reliable, best-effort, or timed:MS.
    #[arg(long, default_value = "reliable")]
    pub mode: String,
    /// Pause between two parcels (0: as fast as the window and the send
    /// buffer allow).
    #[arg(long, default_value_t = 0)]
    pub interval_ms: u64,
    /// Wait this long before the first parcel (with an mcaster: after its
    /// answer to our registration).
    #[arg(long, default_value_t = 0)]
    pub start_delay_ms: u64,
    /// Receiver: report `complete` once this many parcels came from a sender.
    #[arg(long, default_value_t = 0)]
    pub expect: u64,
    /// No line per parcel (summaries only).
    #[arg(long)]
    pub quiet: bool,
    /// Act as the layer above on `suspect`: remove the node from the view.
    #[arg(long)]
    pub remove_suspects: bool,
    /// rmcast: report a silent receiver with data outstanding after this long.
    #[arg(long, default_value_t = 1000)]
    pub suspect_after_ms: u64,
    /// rmcast: window in packets.
    #[arg(long, default_value_t = membership::rmcast::DEFAULT_WINDOW)]
    pub window: u32,
    /// rmcast: payload bytes per fragment.
    #[arg(long, default_value_t = membership::rmcast::DEFAULT_FRAGMENT_PAYLOAD)]
    pub fragment_payload: usize,
    /// rmcast: send buffer in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub send_buffer_bytes: usize,
    /// rmcast: a new gap is NACKed after a random delay up to this (us).
    #[arg(long, default_value_t = 10_000)]
    pub nack_delay_us: u64,
    /// rmcast: wait before NACKing a sequence again (us; doubles).
    #[arg(long, default_value_t = 20_000)]
    pub nack_retry_us: u64,
    /// rmcast: small progress is acknowledged after this delay (us).
    #[arg(long, default_value_t = 5_000)]
    pub ack_delay_us: u64,
    /// Interval of the JOIN_GROUP refreshes at the mcaster.
    #[arg(long, default_value_t = 1000)]
    pub refresh_ms: u64,
    /// Inject this much loss (percent, both directions) on our socket.
    #[arg(long, default_value_t = 0.0)]
    pub drop_pct: f64,
    /// Seed of the fault injector.
    #[arg(long)]
    pub fault_seed: Option<u64>,
    /// Exit on our own after this long (a bound for forgotten processes).
    #[arg(long, default_value_t = 600)]
    pub max_runtime_secs: u64,
}

/// The bytes of parcel `index`, `len` long (at least 8).
pub fn parcel_bytes(index: u64, len: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(len.max(8));
    b.extend_from_slice(&index.to_be_bytes());
    let salt = (index as u8).wrapping_mul(31);
    b.extend((8..len).map(|i| salt.wrapping_add(i as u8)));
    b
}

/// The index of an intact parcel.
pub fn parcel_index(bytes: &[u8]) -> Option<u64> {
    let index = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let salt = (index as u8).wrapping_mul(31);
    bytes[8..]
        .iter()
        .enumerate()
        .all(|(i, b)| *b == salt.wrapping_add((i + 8) as u8))
        .then_some(index)
}

fn parse_mode(s: &str) -> anyhow::Result<Delivery> {
    Ok(match s {
        "reliable" => Delivery::Reliable,
        "best-effort" => Delivery::BestEffort,
        _ => match s.strip_prefix("timed:").map(str::parse::<u64>) {
            Some(Ok(ms)) => Delivery::Timed(Duration::from_millis(ms)),
            _ => bail!("--mode must be reliable, best-effort or timed:MS, not {s:?}"),
        },
    })
}

fn mode_name(d: &Delivery) -> &'static str {
    match d {
        Delivery::Reliable => "reliable",
        Delivery::Timed(_) => "timed",
        Delivery::BestEffort => "best_effort",
    }
}

/// Writes one JSON line and flushes (tests read lines as they come).
fn emit(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// What a receiver saw of one sender.
#[derive(Debug, Default, Clone)]
struct FromSender {
    /// The next index expected.
    next: u64,
    delivered: u64,
    bytes: u64,
    damaged: u64,
    /// Indices at or below one already delivered.
    duplicates: u64,
    /// Indices beyond the next expected (a gap).
    gaps: u64,
    complete: bool,
}

impl FromSender {
    fn json(&self) -> Value {
        json!({
            "delivered": self.delivered, "bytes": self.bytes, "next": self.next,
            "damaged": self.damaged, "duplicates": self.duplicates, "gaps": self.gaps,
        })
    }
}

/// The sender's plan and progress.
struct Plan {
    total: u64,
    mode: Delivery,
    next_index: u64,
    settled: u64,
    bytes: u64,
    started: Option<std::time::Instant>,
    /// Waiting for registration (and the start delay) before sending.
    armed: bool,
    sent_reported: bool,
    done: bool,
}

/// Runs `msbench mcast-peer`.
pub fn run(args: &PeerArgs) -> anyhow::Result<()> {
    if args.size < 8 || args.big_size < 8 {
        bail!("--size and --big-size must be at least 8 bytes");
    }
    if !args.group.ip().is_multicast() {
        bail!("--group must be a multicast address, not {}", args.group);
    }
    if args.kind == "uc" && args.mcaster.is_none() {
        bail!("--kind uc needs --mcaster");
    }
    if args.listen.ip().is_unspecified() && args.advertise.is_none() {
        bail!("--listen {} needs --advertise", args.listen);
    }
    let mode = parse_mode(&args.mode)?;
    let args = args.clone();
    actix::System::new().block_on(peer(args, mode))
}

fn transport(args: &PeerArgs) -> Transport {
    match (args.kind.as_str(), args.mcaster) {
        ("mc", None) => Transport::Multicast,
        ("mc", Some(m)) => Transport::MulticastWithMcaster {
            mcaster: NodeId::new(m),
        },
        (_, m) => Transport::Mcaster {
            mcaster: NodeId::new(m.unwrap_or(args.listen)),
        },
    }
}

fn socket_options(args: &PeerArgs) -> anyhow::Result<SocketOptions> {
    let mut o = SocketOptions::new(args.listen);
    o.advertise = args.advertise.map(NodeId::new);
    if let Some(spec) = &args.cluster_key {
        let key = membership::wire::ClusterKey::parse(spec)
            .map_err(|e| anyhow::anyhow!("--cluster-key: {e}"))?;
        let ring = membership::wire::KeyRing::new(vec![key])
            .map_err(|e| anyhow::anyhow!("--cluster-key: {e}"))?;
        o.auth = Some(membership::wire::AuthConfig::new(ring));
    }
    if args.kind == "mc" {
        let IpAddr::V4(group) = args.group.ip() else {
            bail!("only IPv4 groups can be joined");
        };
        let mut m = MulticastOptions::new(group, args.multicast_interface);
        m.loopback = args.multicast_loopback;
        o.multicast = Some(m);
    }
    if args.drop_pct > 0.0 {
        o.faults = FaultConfig::clear().with_drop_pct(args.drop_pct);
        o.fault_seed = args.fault_seed;
    }
    Ok(o)
}

#[allow(clippy::disallowed_methods)] // the benchmark owns the clock
async fn peer(args: PeerArgs, mode: Delivery) -> anyhow::Result<()> {
    let group = NodeId::new(args.group);
    let mut config = EndpointConfig::new(transport(&args));
    config.refresh_interval = Duration::from_millis(args.refresh_ms.max(1));
    config.rmcast = RmcastConfig {
        window: args.window,
        fragment_payload: args.fragment_payload,
        send_buffer_bytes: args.send_buffer_bytes,
        suspect_after: Duration::from_millis(args.suspect_after_ms),
        nack_delay: Duration::from_micros(args.nack_delay_us),
        nack_retry: Duration::from_micros(args.nack_retry_us),
        ack_delay: Duration::from_micros(args.ack_delay_us),
        ..RmcastConfig::default()
    };
    let name = args.group_name.clone();
    let view: BTreeSet<NodeId> = args.receivers.iter().map(|a| NodeId::new(*a)).collect();
    let view0 = view.clone();
    let options = socket_options(&args)?;
    let SpawnedCore { handle, mut events } = spawn_core(
        options,
        &[ProtocolId::Rmcast, ProtocolId::Mcaster],
        move |ctx| {
            let b = ctx.incarnation.to_bytes();
            let seed = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
            let mut ep = GroupEndpoint::new(ctx.local, ctx.incarnation, config, seed);
            // Both calls only fail on bad input checked above.
            let _ = ep.add_group(ctx.now, group, &name);
            let _ = ep.set_receivers(ctx.now, group, view0);
            ep
        },
    )
    .with_context(|| format!("cannot bind {}", args.listen))?;
    let me = handle.local;
    emit(json!({
        "event": "ready", "node": me.to_string(),
        "incarnation": handle.incarnation.to_string(),
        "group": group.to_string(), "kind": args.kind,
        "receivers": view.iter().filter(|n| **n != me).map(|n| n.to_string()).collect::<Vec<_>>(),
    }));

    let mut view = view;
    let mut plan = Plan {
        total: args.send,
        mode,
        next_index: 0,
        settled: 0,
        bytes: 0,
        started: None,
        armed: args.send > 0 && args.mcaster.is_none(),
        sent_reported: false,
        done: args.send == 0,
    };
    let mut from: BTreeMap<NodeId, FromSender> = BTreeMap::new();
    let mut suspects: u64 = 0;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let lifetime = tokio::time::sleep(Duration::from_secs(args.max_runtime_secs));
    tokio::pin!(lifetime);
    // Sending: at the start delay, then on every tick (paced) or whenever
    // the window opens (fast; the tick is only a fallback).
    let tick = Duration::from_millis(if args.interval_ms > 0 {
        args.interval_ms
    } else {
        20
    });
    let start_delay = Duration::from_millis(args.start_delay_ms);
    let mut next_pump = tokio::time::Instant::now() + start_delay;
    let reason = loop {
        let pump_at = next_pump;
        tokio::select! {
            _ = &mut lifetime => break "max_runtime",
            _ = term.recv() => break "sigterm",
            _ = int.recv() => break "sigint",
            _ = tokio::time::sleep_until(pump_at), if plan.armed && !plan.done => {
                pump(&handle, &args, group, &mut plan).await?;
                next_pump = tokio::time::Instant::now() + tick;
            }
            e = events.recv() => {
                let Some(e) = e else { break "core_stopped" };
                match e {
                    EndpointEvent::Registration(r) => {
                        // Answered either way: an mc member refused by an
                        // mcaster that cannot multicast still multicasts.
                        let answered = matches!(
                            r,
                            RegistrationEvent::Registered { .. } | RegistrationEvent::Refused { .. }
                        );
                        if answered && !plan.armed && !plan.done {
                            plan.armed = true;
                            next_pump = tokio::time::Instant::now() + start_delay;
                        }
                        emit(registration_json(&r));
                    }
                    EndpointEvent::Rmcast { event, .. } => match event {
                        RmcastEvent::Delivered { from: sender, parcel, mode, payload, .. } => {
                            let s = from.entry(sender).or_default();
                            let index = parcel_index(&payload);
                            let in_order = index == Some(s.next);
                            match index {
                                None => s.damaged += 1,
                                Some(i) if i < s.next => s.duplicates += 1,
                                Some(i) => {
                                    if i > s.next {
                                        s.gaps += 1;
                                    }
                                    s.next = i + 1;
                                    s.delivered += 1;
                                    s.bytes += payload.len() as u64;
                                }
                            }
                            if !args.quiet {
                                emit(json!({
                                    "event": "delivered", "from": sender.to_string(), "parcel": parcel.0,
                                    "index": index, "bytes": payload.len(), "mode": mode_name(&mode),
                                    "intact": index.is_some(), "in_order": in_order,
                                }));
                            }
                            if args.expect > 0 && !s.complete && s.delivered >= args.expect {
                                s.complete = true;
                                let mut v = s.json();
                                v["event"] = json!("complete");
                                v["from"] = json!(sender.to_string());
                                emit(v);
                            }
                        }
                        RmcastEvent::Acknowledged { parcel } => {
                            settle(&mut plan, &args, parcel, "acknowledged");
                        }
                        RmcastEvent::Expired { parcel } => {
                            settle(&mut plan, &args, parcel, "expired");
                        }
                        RmcastEvent::Suspect { node } => {
                            suspects += 1;
                            emit(json!({"event": "suspect", "node": node.to_string()}));
                            if args.remove_suspects && view.remove(&node) {
                                let v = view.clone();
                                handle
                                    .with_core(move |ep: &mut GroupEndpoint, now| ep.set_receivers(now, group, v))
                                    .await??;
                                emit(json!({"event": "removed", "node": node.to_string()}));
                            }
                        }
                        RmcastEvent::SendWindowOpen => {
                            if !args.quiet {
                                emit(json!({"event": "send_window_open"}));
                            }
                            if plan.armed && !plan.done && args.interval_ms == 0 {
                                next_pump = tokio::time::Instant::now();
                            }
                        }
                    },
                }
            }
        }
    };
    let stats = final_stats(&handle, group).await;
    // A graceful exit leaves the group at the mcaster (LEAVE_GROUP), so it
    // stops sending us copies at once rather than at our expiry.
    if args.mcaster.is_some() && reason != "max_runtime" {
        let _ = handle
            .with_core(move |ep: &mut GroupEndpoint, now| ep.remove_group(now, group))
            .await;
        let left = tokio::time::timeout(Duration::from_millis(300), async {
            while let Some(e) = events.recv().await {
                if let EndpointEvent::Registration(
                    r @ (RegistrationEvent::Left { .. } | RegistrationEvent::Withdrawn { .. }),
                ) = e
                {
                    return Some(r);
                }
            }
            None
        })
        .await;
        if let Ok(Some(r)) = left {
            emit(registration_json(&r));
        }
    }
    let from_json: BTreeMap<String, Value> = from
        .iter()
        .map(|(k, v)| (k.to_string(), v.json()))
        .collect();
    emit(json!({
        "event": "exit", "reason": reason, "node": me.to_string(),
        "sent": plan.next_index, "settled": plan.settled, "suspects": suspects,
        "from": from_json, "stats": stats,
    }));
    handle.stop();
    Ok(())
}

/// One parcel acknowledged or expired.
fn settle(plan: &mut Plan, args: &PeerArgs, parcel: ParcelId, what: &str) {
    plan.settled += 1;
    if !args.quiet || what == "expired" {
        emit(json!({"event": what, "parcel": parcel.0}));
    }
    if !plan.done && plan.sent_reported && plan.settled >= plan.total {
        plan.done = true;
        emit(plan_done(plan));
    }
}

#[allow(clippy::disallowed_methods)] // the benchmark owns the clock
fn plan_done(plan: &Plan) -> Value {
    let seconds = plan
        .started
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or(0.0);
    let per_s = |x: f64| if seconds > 0.0 { x / seconds } else { 0.0 };
    json!({
        "event": "plan_done", "parcels": plan.next_index, "bytes": plan.bytes,
        "seconds": seconds, "parcels_per_s": per_s(plan.next_index as f64),
        "mb_per_s": per_s(plan.bytes as f64) / 1e6,
    })
}

/// Sends what the plan and the send buffer allow now.
#[allow(clippy::disallowed_methods)] // the benchmark owns the clock
async fn pump(
    handle: &CoreHandle<GroupEndpoint>,
    args: &PeerArgs,
    group: NodeId,
    plan: &mut Plan,
) -> anyhow::Result<()> {
    if plan.next_index >= plan.total {
        return Ok(());
    }
    if plan.started.is_none() {
        plan.started = Some(std::time::Instant::now());
        emit(json!({"event": "plan_started", "parcels": plan.total}));
    }
    let (start, total, mode) = (plan.next_index, plan.total, plan.mode);
    let end = if args.interval_ms > 0 {
        start + 1
    } else {
        total
    };
    let (size, big_size, big_every) = (args.size, args.big_size, args.big_every);
    let (sent, bytes) = handle
        .with_core(
            move |ep: &mut GroupEndpoint, now| -> Result<(u64, u64), EndpointError> {
                let mut bytes = 0u64;
                for i in start..end {
                    let len = if big_every > 0 && i % big_every == big_every - 1 {
                        big_size
                    } else {
                        size
                    };
                    match ep.send(now, group, parcel_bytes(i, len), mode) {
                        Ok(_) => bytes += len as u64,
                        Err(EndpointError::Send(SendError::QueueFull)) => {
                            return Ok((i - start, bytes))
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok((end - start, bytes))
            },
        )
        .await??;
    plan.next_index += sent;
    plan.bytes += bytes;
    if plan.next_index >= plan.total && !plan.sent_reported {
        plan.sent_reported = true;
        emit(json!({"event": "plan_sent", "parcels": plan.next_index, "bytes": plan.bytes}));
        if mode == Delivery::BestEffort || plan.settled >= plan.total {
            plan.done = true;
            emit(plan_done(plan));
        }
    }
    Ok(())
}

fn registration_json(r: &RegistrationEvent) -> Value {
    match r {
        RegistrationEvent::Registered { group } => {
            json!({"event": "registered", "group": group.to_string()})
        }
        RegistrationEvent::Relearned { group } => {
            json!({"event": "relearned", "group": group.to_string()})
        }
        RegistrationEvent::Refused { group, answer } => {
            json!({"event": "refused", "group": group.to_string(), "answer": answer.name()})
        }
        RegistrationEvent::Left { group, answer } => json!({
            "event": "left", "group": group.to_string(), "answer": answer.map(|a| a.name()),
        }),
        RegistrationEvent::Withdrawn { group } => {
            json!({"event": "withdrawn", "group": group.to_string()})
        }
        RegistrationEvent::Unanswered {
            mcaster,
            silent_for,
        } => json!({
            "event": "unanswered", "mcaster": mcaster.to_string(),
            "silent_ms": silent_for.as_millis() as u64,
        }),
        RegistrationEvent::Answering {
            mcaster,
            silent_for,
        } => json!({
            "event": "answering", "mcaster": mcaster.to_string(),
            "silent_ms": silent_for.as_millis() as u64,
        }),
    }
}

/// The group's counters and the socket's, as JSON.
async fn final_stats(handle: &CoreHandle<GroupEndpoint>, group: NodeId) -> Value {
    let rmcast = handle
        .with_core(move |ep: &mut GroupEndpoint, _| {
            ep.group(group).map(|g| {
                let s = g.stats();
                json!({
                    "parcels_sent": s.parcels_sent, "data_sent": s.data_sent,
                    "retransmitted": s.retransmitted, "nacks_received": s.nacks_received,
                    "statuses_received": s.statuses_received, "syncs_sent": s.syncs_sent,
                    "parcels_acknowledged": s.parcels_acknowledged, "queue_full": s.queue_full,
                    "suspects": s.suspects, "data_received": s.data_received,
                    "duplicates": s.duplicates, "nacks_sent": s.nacks_sent,
                    "nacks_suppressed": s.nacks_suppressed, "statuses_sent": s.statuses_sent,
                    "parcels_delivered": s.parcels_delivered, "drops": s.drops.total(),
                })
            })
        })
        .await
        .ok()
        .flatten();
    let socket = handle.socket_stats().await.ok().map(|s| {
        json!({
            "datagrams_sent": s.datagrams_sent, "datagrams_received": s.datagrams_received,
            "drops": s.drops, "recv_buffer": s.recv_buffer, "send_buffer": s.send_buffer,
        })
    });
    json!({ "rmcast": rmcast, "socket": socket })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parcels_check_themselves() {
        for (i, len) in [(0u64, 8usize), (7, 1024), (300, 65_536)] {
            let p = parcel_bytes(i, len);
            assert_eq!(p.len(), len);
            assert_eq!(parcel_index(&p), Some(i));
            let mut bad = p.clone();
            bad[len - 1] ^= 0x10;
            if len > 8 {
                assert_eq!(parcel_index(&bad), None);
            }
        }
        assert_eq!(parcel_index(&[1, 2]), None);
    }

    #[test]
    fn modes_parse() {
        assert_eq!(parse_mode("reliable").unwrap(), Delivery::Reliable);
        assert_eq!(parse_mode("best-effort").unwrap(), Delivery::BestEffort);
        assert_eq!(
            parse_mode("timed:250").unwrap(),
            Delivery::Timed(Duration::from_millis(250))
        );
        assert!(parse_mode("timed:x").is_err());
        assert!(parse_mode("fast").is_err());
    }
}
