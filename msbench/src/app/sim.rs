//! `msbench app`'s simulated half: 3 [`MserverNode`]s and the MIs'
//! agents on the simulator's LAN link model, one group bootstrapped by
//! thousands of joins at one virtual instant (see the parent module's
//! docs).

use super::{progress, round3, AppArgs, SIM_BOOTSTRAP_S};
use membership::appgroup::agent::{MiAgent, MiAgentConfig, MiAnswer, MiEvent, MiRequest};
use membership::appgroup::{AppMember, GroupName, GroupOptions, MemberKind, MemberName};
use membership::coreset::CoreSetConfig;
use membership::id::NodeId;
use membership::mserver::node::{MserverNode, NodeEvent};
use membership::rpc::{Rpc, RpcConfig};
use membership::sim::{Either, EitherEvent, SimConfig, Simulator};
use membership::tree::{Chain, ChainConfig};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The size and MI count the simulated target is stated for.
const SIM_TARGET_MEMBERS: usize = 2000;
const SIM_TARGET_MIS: usize = 100;
/// The simulated mservers.
const SIM_SERVERS: u8 = 3;
/// Longest virtual wait, from the first join request, for the bootstrap.
const SIM_LIMIT: Duration = Duration::from_secs(60);
/// Virtual step between two looks at the simulator's events.
const SIM_STEP: Duration = Duration::from_millis(1);

fn sim_group_addr() -> NodeId {
    NodeId::v4(239, 9, 9, 9, 7000)
}

fn sim_server(i: u8) -> NodeId {
    NodeId::v4(10, 0, 0, i, 7200)
}

/// MI `i` (0-based) of the simulation.
fn sim_mi(i: usize) -> NodeId {
    NodeId::v4(10, 0, 1, (i % 250 + 1) as u8, 7400)
}

/// One simulated host: an mserver or an MI (as `mserver/tests/sim_apps.rs`).
type Host = Either<Box<MserverNode>, Box<MiAgent>>;
/// What a simulated host reports.
type HostEvent = EitherEvent<NodeEvent, MiEvent>;

/// A simulator with the 3 mservers' factory and the MIs' (MI i prefers
/// mserver i % 3, then the others).
fn simulator(seed: u64) -> Simulator<Host> {
    let config = SimConfig::new(seed, membership::sim_replay!("msbench_app"));
    let mut sim = Simulator::new(config, move |spawn| {
        if spawn.id.addr().port() == 7200 {
            let c = CoreSetConfig::new(spawn.id, spawn.incarnation, "lan", sim_group_addr());
            let chain = match Chain::new(ChainConfig::one_level(c), spawn.now, spawn.seed) {
                Ok(chain) => chain,
                // The configuration is fixed and valid; a failure here is a
                // bug in this program.
                Err(e) => panic!("core-set config: {e}"),
            };
            let rpc = Rpc::new(
                spawn.id,
                spawn.incarnation,
                RpcConfig::default(),
                spawn.seed ^ 0x5eed,
            );
            Host::Left(Box::new(MserverNode::new(spawn.now, chain, None, rpc)))
        } else {
            let ip = spawn.id.addr().ip().to_string();
            let k: usize = ip
                .rsplit('.')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1);
            let mut c = MiAgentConfig::new(
                spawn.id,
                spawn.incarnation,
                Uuid::from_bytes(spawn.incarnation.to_bytes()),
                format!("host{k}"),
            );
            c.mservers = (0..SIM_SERVERS)
                .map(|j| {
                    sim_server(
                        1 + ((k.saturating_sub(1) % usize::from(SIM_SERVERS)) as u8 + j)
                            % SIM_SERVERS,
                    )
                })
                .collect();
            Host::Right(Box::new(MiAgent::new(
                spawn.now,
                c,
                RpcConfig::default(),
                spawn.seed,
            )))
        }
    });
    for i in 1..=SIM_SERVERS {
        sim.join_group(sim_server(i), sim_group_addr());
    }
    sim
}

/// What one simulated bootstrap measured.
#[derive(Default)]
struct Bootstrap {
    members: usize,
    mis: usize,
    /// Virtual seconds from the join requests to the last answer.
    answered_s: Option<f64>,
    /// Virtual seconds to the last MI's first view with every member.
    all_views_s: Option<f64>,
    answered_ok: usize,
    errors: BTreeMap<String, usize>,
    mis_with_full_view: usize,
    view_events: u64,
    member_entries: u64,
    views_pushed: u64,
    ops_applied: u64,
    datagrams: u64,
    bytes: u64,
    wall_s: f64,
    setup_wall_s: f64,
    virtual_reached_s: f64,
    stopped: Option<String>,
}

impl Bootstrap {
    fn to_json(&self) -> Value {
        let done = match (self.answered_s, self.all_views_s) {
            (Some(a), Some(v)) => Some(round3(a.max(v))),
            _ => None,
        };
        json!({
            "members": self.members,
            "mis": self.mis,
            "bootstrap_s": done,
            "all_answered_s": self.answered_s.map(round3),
            "all_mis_full_view_s": self.all_views_s.map(round3),
            "joins_ok": self.answered_ok,
            "join_errors": self.errors,
            "mis_with_full_view": self.mis_with_full_view,
            "views_pushed": self.views_pushed,
            "ops_applied_per_mserver": self.ops_applied / u64::from(SIM_SERVERS),
            "view_events_at_mis": self.view_events,
            "member_entries_delivered": self.member_entries,
            "datagrams": self.datagrams,
            "bytes": self.bytes,
            "bytes_at_1gbps_s": round3(self.bytes as f64 * 8.0 / 1e9),
            "wall_s": round3(self.wall_s),
            "setup_wall_s": round3(self.setup_wall_s),
            "virtual_reached_s": round3(self.virtual_reached_s),
            "stopped": self.stopped,
        })
    }
}

/// The simulated half: the `"sim"` object of the output. With
/// `MSBENCH_SIM_LOG=LEVEL` (e.g. `info`) the cores' log lines go to stderr,
/// stamped with wall time (not virtual time), for finding out why a run
/// stalls.
pub(super) fn sim_half(args: &AppArgs) -> Value {
    if let Ok(level) = std::env::var("MSBENCH_SIM_LOG") {
        if let Err(e) = membership::runtime::logging::init_logging(
            &level,
            membership::runtime::logging::LogFormat::Human,
        ) {
            eprintln!("msbench app: MSBENCH_SIM_LOG: {e}");
        }
    }
    let mut runs = Vec::new();
    let mut met = Value::Null;
    for &n in &args.sim_members {
        progress(
            args,
            &format!("simulator: {n} members across {} MIs", args.sim_mis),
        );
        let b = bootstrap(n, args.sim_mis, args.seed, args);
        if n >= SIM_TARGET_MEMBERS && args.sim_mis >= SIM_TARGET_MIS {
            let ok = b.stopped.is_none()
                && b.answered_ok == n
                && b.answered_s.is_some_and(|a| a < SIM_BOOTSTRAP_S)
                && b.all_views_s.is_some_and(|v| v < SIM_BOOTSTRAP_S);
            met = json!(ok && met != json!(false));
        }
        progress(args, &format!("simulator: {}", b.to_json()));
        runs.push(b.to_json());
    }
    json!({
        "mservers": SIM_SERVERS,
        "link": "LinkConfig::lan: 100-500 us one way, no loss, no bandwidth limit",
        "runs": runs,
        "target_s": SIM_BOOTSTRAP_S,
        "met": met,
    })
}

/// One bootstrap: `n` joins at once across `mis` MIs.
fn bootstrap(n: usize, mis: usize, seed: u64, args: &AppArgs) -> Bootstrap {
    let wall0 = Instant::now();
    let wall_limit = Duration::from_secs(args.sim_wall_limit_secs);
    let mut b = Bootstrap {
        members: n,
        mis,
        ..Bootstrap::default()
    };
    let mut sim = simulator(seed ^ ((n as u64) << 20));
    for i in 1..=SIM_SERVERS {
        sim.add_node(sim_server(i));
        sim.run_for(Duration::from_millis(300));
    }
    sim.run_for(Duration::from_secs(1));
    let mi_ids: Vec<NodeId> = (0..mis).map(sim_mi).collect();
    for mi in &mi_ids {
        sim.add_node(*mi);
    }
    let attached = sim.run_until_condition(Duration::from_secs(10), |s| {
        mi_ids
            .iter()
            .all(|mi| matches!(s.core(*mi), Some(Host::Right(a)) if a.attached_to().is_some()))
    });
    sim.take_events();
    if !attached {
        b.stopped = Some("not every MI attached within 10 s (virtual)".into());
        return b;
    }
    let Ok(group) = GroupName::parse("big") else {
        b.stopped = Some("invalid group name".into());
        return b;
    };
    sim.with_core(mi_ids[0], |c, now| {
        if let Host::Right(a) = c {
            a.request(
                now,
                0,
                MiRequest::Create {
                    group: group.clone(),
                    options: GroupOptions::default(),
                },
            );
        }
    });
    let mut created = None;
    let end = sim.now() + Duration::from_secs(10);
    while created.is_none() && sim.now() < end {
        sim.run_for(SIM_STEP);
        for (_, _, e) in sim.take_events() {
            if let HostEvent::Right(MiEvent::Answered { handle: 0, result }) = e {
                created = Some(result.map(|_| ()));
            }
        }
    }
    match created {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            b.stopped = Some(format!("create failed: {e}"));
            return b;
        }
        None => {
            b.stopped = Some("create not answered within 10 s (virtual)".into());
            return b;
        }
    }
    sim.run_for(Duration::from_millis(100));
    sim.take_events();
    b.setup_wall_s = wall0.elapsed().as_secs_f64();

    // Every join at the same virtual instant, member k through MI k % mis.
    let wall1 = Instant::now();
    let start = sim.now();
    for k in 0..n {
        let mi = mi_ids[k % mis];
        let Ok(name) = MemberName::parse(&format!("m{k}")) else {
            continue;
        };
        let member = AppMember {
            name,
            kind: MemberKind::default(),
            id: Uuid::from_u128(k as u128 + 1),
            host: format!("host{}", k % mis + 1),
        };
        let request = MiRequest::Join {
            group: group.clone(),
            member,
        };
        sim.with_core(mi, |c, now| {
            if let Host::Right(a) = c {
                a.request(now, k as u64 + 1, request);
            }
        });
    }
    let mut answered = 0usize;
    let mut full: BTreeSet<NodeId> = BTreeSet::new();
    let limit = start + SIM_LIMIT;
    loop {
        sim.run_for(SIM_STEP);
        for (t, node, e) in sim.take_events() {
            let HostEvent::Right(e) = e else { continue };
            let since = t.saturating_duration_since(start).as_secs_f64();
            match e {
                MiEvent::Answered { handle, result } if handle >= 1 => {
                    answered += 1;
                    match result {
                        Ok(MiAnswer::Joined(_)) => b.answered_ok += 1,
                        Ok(other) => *b.errors.entry(format!("{other:?}")).or_default() += 1,
                        Err(e) => *b.errors.entry(e.to_string()).or_default() += 1,
                    }
                    if answered == n {
                        b.answered_s = Some(since);
                    }
                }
                MiEvent::View(v) if v.group == group => {
                    b.view_events += 1;
                    b.member_entries += v.members.len() as u64;
                    if v.members.len() == n && full.insert(node) && full.len() == mis {
                        b.all_views_s = Some(since);
                    }
                }
                _ => {}
            }
        }
        if answered >= n && full.len() == mis {
            break;
        }
        if sim.now() >= limit {
            b.stopped = Some(format!(
                "not done within {SIM_LIMIT:?} (virtual): {answered} of {n} joins answered, \
                 {} of {mis} MIs with a full view",
                full.len()
            ));
            break;
        }
        if wall1.elapsed() >= wall_limit {
            b.stopped = Some(format!(
                "stopped after {wall_limit:?} of wall time: {answered} of {n} joins answered, \
                 {} of {mis} MIs with a full view",
                full.len()
            ));
            break;
        }
    }
    b.wall_s = wall1.elapsed().as_secs_f64();
    b.virtual_reached_s = sim.now().saturating_duration_since(start).as_secs_f64();
    b.mis_with_full_view = full.len();
    for i in 1..=SIM_SERVERS {
        if let Some(Host::Left(s)) = sim.core(sim_server(i)) {
            b.views_pushed += s.apps().stats().views_pushed;
            b.ops_applied += s.apps().stats().applied;
        }
    }
    let totals = sim.stats().totals;
    b.datagrams = totals.sent;
    b.bytes = totals.sent_bytes;
    b
}
