//! `msctl`: inspect and steer a running mserver, and use application
//! groups through the host's member interface (DESIGN.md section 7).
//!
//! With `--server ADDR` it talks to an mserver over the project's RPC (the
//! admin procedures of [`mserver::admin`], and the registry read of
//! [`membership::appgroup::link`] for `groups`) from an ephemeral UDP port.
//! With `--mi PATH` it talks to the member interface (MI) listening on the
//! Unix socket PATH, through the client library ([`member_interface`]),
//! for the application-group commands (`msctl/mi.rs`). Exit codes: 0
//! success, 1 the mserver or MI did not answer or refused, 2 bad usage, 3
//! and 4 a `join` whose membership ended (excluded; connection lost).
#![forbid(unsafe_code)]

#[path = "msctl/events.rs"]
mod events;
#[path = "msctl/mi.rs"]
mod mi;
#[path = "msctl/presets.rs"]
mod presets;

use clap::{Parser, Subcommand};
use membership::appgroup::link::{GroupInfo, ReadReply, ReadRequest, PROC_MI_READ};
use membership::appgroup::{GroupName, GroupOptions, MemberInfo, MemberKind, MemberName};
use membership::id::{NodeId, ProtocolId};
use membership::mserver::keys::{KeyOp, KeysReply, KeysRequest, PROC_KEYS};
use membership::rpc::{CallError, CallOptions, Rpc, RpcConfig, RpcEvent};
use membership::runtime::{spawn_core, SocketOptions, SpawnedCore};
use membership::tree::TreeError;
use membership::wire::{decode_message, encode_body};
use mserver::admin::{
    AddParentRequest, DelParentRequest, FaultReply, FaultRequest, LeaveReply, LeaveRequest,
    StatsReply, StatsRequest, TreeReply, ViewReply, ViewRequest, PROC_ADD_PARENT, PROC_DEL_PARENT,
    PROC_FAULT, PROC_LEAVE, PROC_STATS, PROC_TREE, PROC_VIEW,
};
use serde::de::DeserializeOwned;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `msctl`: the Membership Service's inspection and control tool.
///
/// Every command talks to one of --server ADDR (an mserver: view, stats,
/// leave, fault, groups, events; default 127.0.0.1:7200) or --mi PATH (the host's
/// member interface: join, create, view GROUP, lookup; default
/// $XDG_RUNTIME_DIR/member-interface.sock, else /tmp/member-interface.sock),
/// not both.
///
/// Examples:
///   msctl --server 127.0.0.1:7200 view --json
///   msctl --server 127.0.0.1:7200 fault --drop 10 --block 127.0.0.3:7200
///   msctl --server 127.0.0.1:7200 fault --clear
///   msctl --server 127.0.0.1:7200 leave
///   msctl --server 127.0.0.1:7200 groups --json
///   msctl --server 127.0.0.1:7200 events --json
///   msctl --mi /tmp/member-interface.sock create chat --survive keep-majority
///   msctl --mi /tmp/member-interface.sock join chat --name alice --json
///   msctl --mi /tmp/member-interface.sock view chat
///
/// Exit codes:
///   0  success (join: left the group on SIGINT or SIGTERM)
///   1  the mserver or member interface did not answer, refused, or failed
///   2  bad usage: flags, names, presets
///   3  join: the group ended the membership (excluded, views not read)
///   4  join: the connection to the member interface was lost
#[derive(Debug, Parser)]
#[command(name = "msctl", version, verbatim_doc_comment)]
struct Cli {
    /// The mserver to talk to (for view, stats, leave, fault, groups, events).
    #[arg(long, value_name = "ADDR", global = true)]
    server: Option<SocketAddr>,
    /// The member interface's Unix socket (for join, create, view GROUP,
    /// lookup).
    #[arg(long, value_name = "PATH", global = true)]
    mi: Option<PathBuf>,
    /// How long to wait for an answer, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 3000, global = true)]
    timeout_ms: u64,
    /// The cluster key ring (--cluster-key ID:HEX, --key-file PATH;
    /// MS_CLUSTER_KEYS): needed to talk to an mserver that has one.
    #[command(flatten)]
    keys: daemon_shell::keys::KeyFlags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the mserver's core-set view (--server), or an application
    /// group's current view (--mi, with GROUP).
    View {
        /// The application group (only with --mi).
        #[arg(value_name = "GROUP")]
        group: Option<String>,
        /// One JSON object: {"group", "level", "view", "state",
        /// "parent_group", "me", "members", ...} (--server), {"group",
        /// "view", "members"} (--mi).
        #[arg(long)]
        json: bool,
        /// The level of the hierarchy whose group to show (--server; 1,
        /// the mserver's own group, by default).
        #[arg(long, value_name = "N")]
        level: Option<u8>,
    },
    /// Print every group the mserver belongs to, one per level of the
    /// hierarchy, lowest first, as an indented tree (--server).
    Tree {
        /// One JSON object: {"levels": [<view object>, ...], "task",
        /// "standby", "configured_levels", "parentless"}.
        #[arg(long)]
        json: bool,
    },
    /// Make the mserver leave its group gracefully; it exits afterwards.
    /// With --level N above 1: leave only the groups of levels N and up
    /// (stepping down as a parent of level N-1) and keep running.
    Leave {
        /// The lowest level to leave (1, the default: every level, then
        /// exit).
        #[arg(long, value_name = "N")]
        level: Option<u8>,
        /// With --level above 1: one JSON object, the view of level N-1.
        #[arg(long)]
        json: bool,
    },
    /// Make the mserver a parent of its top group: it joins NAME@IP:PORT,
    /// one level up (docs/hierarchy.md). Prints the parent group's view.
    AddParent {
        /// The parent group.
        #[arg(value_name = "NAME@IP:PORT")]
        group: String,
        /// One JSON object: the parent group's view.
        #[arg(long)]
        json: bool,
    },
    /// Make the mserver stop being a parent: it leaves its top group (above
    /// level 1) and declines automatic re-parenting. Prints the view of the
    /// level below.
    DelParent {
        /// One JSON object: the view of the level below.
        #[arg(long)]
        json: bool,
    },
    /// Print the mserver's counters (traffic per protocol, drops, the
    /// core-set protocol's counters).
    Stats {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Set the mserver's fault-injection interceptor (for tests).
    Fault {
        /// Drop this percentage (0-100) of datagrams, both directions.
        #[arg(long, value_name = "PCT")]
        drop: Option<f64>,
        /// Drop all traffic to and from ADDR (repeatable).
        #[arg(long, value_name = "ADDR")]
        block: Vec<SocketAddr>,
        /// Drop only what arrives from ADDR (one-way; repeatable).
        #[arg(long, value_name = "ADDR")]
        block_in: Vec<SocketAddr>,
        /// Clear every fault first (alone: clear all).
        #[arg(long)]
        clear: bool,
    },
    /// The cluster key ring: list which members hold which keys, install a
    /// key, make one primary, remove one (docs/operations.md, "Rotating the
    /// cluster key"). Changes need the current key.
    Keys {
        #[command(subcommand)]
        op: KeysCommand,
    },
    /// Stream the mserver's view changes and failure detections as they
    /// happen, one line each, until interrupted (--server).
    Events {
        /// One JSON object per line: {"kind": "view" | "failure_detected" |
        /// "excluded" | "left" | "missed", "seq", "time", ...}.
        #[arg(long)]
        json: bool,
    },
    /// Print the application groups the mserver knows and their current
    /// views (--server).
    Groups {
        /// One JSON object: {"groups": [{"group", "view", "suspended",
        /// "survive", "merge", "members": [...]}, ...]}.
        #[arg(long)]
        json: bool,
    },
    /// Join an application group and print its views, one line each, until
    /// SIGINT or SIGTERM, then leave (--mi).
    Join {
        /// The group.
        #[arg(value_name = "GROUP")]
        group: String,
        /// This member's name in the group [default: HOSTNAME-PID].
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// This member's kind (a tag the partition rules can test).
        #[arg(long, value_name = "KIND", default_value = "")]
        kind: String,
        /// One JSON object per view: {"group", "view", "me", "members":
        /// [{"name", "kind", "id", "host"}, ...]}.
        #[arg(long)]
        json: bool,
        /// For benchmarks (msbench app): add "at_ns" (CLOCK_REALTIME
        /// nanoseconds when the view arrived) to every JSON line, and
        /// "join_called_ns" (just before the join call) to the first.
        #[arg(long, hide = true, requires = "json")]
        timestamps: bool,
    },
    /// Create an application group (--mi).
    Create {
        /// The group.
        #[arg(value_name = "GROUP")]
        group: String,
        /// Which parts keep running at a partition: keep-all (default),
        /// keep-majority, static-quorum=N, keep-oldest, contains-kind=KIND.
        #[arg(long, value_name = "PRESET")]
        survive: Option<String>,
        /// Which parts merge when a partition heals (same presets).
        #[arg(long, value_name = "PRESET")]
        merge: Option<String>,
        /// Where the name is unique: lan (default), level=N,
        /// core-set=NAME.
        #[arg(long, value_name = "SCOPE")]
        name_scope: Option<String>,
        /// How far the group may spread (same scopes).
        #[arg(long, value_name = "SCOPE")]
        membership_scope: Option<String>,
        /// One JSON object: {"created", "survive", "merge", ...}.
        #[arg(long)]
        json: bool,
    },
    /// Print a member of an application group: its kind, id and host
    /// (--mi).
    Lookup {
        /// The group.
        #[arg(value_name = "GROUP")]
        group: String,
        /// The member's name.
        #[arg(value_name = "MEMBER")]
        member: String,
        /// One JSON object: {"group", "name", "kind", "id", "host"}.
        #[arg(long)]
        json: bool,
    },
}

/// `msctl keys ...`.
#[derive(Debug, Clone, Subcommand)]
enum KeysCommand {
    /// Every member's key ids (the primary marked).
    List {
        /// One JSON object: {"members": [{"member", "view", "commit",
        /// "keys": [{"id", "primary"}]}, ...]}.
        #[arg(long)]
        json: bool,
    },
    /// Add a key (ID:HEX) to every member's ring, as a verifying key.
    Install {
        /// The key, ID:HEX (id 1-255, at least 16 bytes of secret in hex).
        #[arg(value_name = "ID:HEX")]
        key: String,
    },
    /// Make key ID the primary (signing) key on every member.
    Use {
        /// The key id.
        #[arg(value_name = "ID")]
        id: u8,
    },
    /// Remove key ID from every member's ring (not the primary).
    Remove {
        /// The key id.
        #[arg(value_name = "ID")]
        id: u8,
    },
}

/// What a server command does (the commands that talk to an mserver).
#[derive(Debug)]
enum ServerCommand {
    Keys(KeysCommand),
    View { json: bool, level: u8 },
    Tree { json: bool },
    Leave,
    AddParent { group: String, json: bool },
    DelParent { level: Option<u8>, json: bool },
    Stats { json: bool },
    Fault(FaultArgs),
    Groups { json: bool },
    Events { json: bool },
}

#[derive(Debug)]
struct FaultArgs {
    drop: Option<f64>,
    block: Vec<SocketAddr>,
    block_in: Vec<SocketAddr>,
    clear: bool,
}

/// The mserver's built-in `--listen` address, for commands without a
/// target.
const DEFAULT_SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 7200);

/// A checked command line: which daemon, and what to ask it.
#[derive(Debug)]
enum Target {
    Server(SocketAddr, ServerCommand),
    Mi(PathBuf, mi::MiCommand),
}

/// Checks the command line beyond what clap does: exactly one of
/// `--server`/`--mi`, the one the command needs, valid names and presets.
/// The error is one line, for exit code 2.
fn check(
    server: Option<SocketAddr>,
    mi_path: Option<PathBuf>,
    command: Command,
) -> Result<Target, String> {
    let name = command_name(&command);
    let defaulted = server.is_none() && mi_path.is_none();
    let (server, mi_path) = match (server, mi_path) {
        (Some(_), Some(_)) => return Err(
            "give either --server ADDR (an mserver) or --mi PATH (a member interface), not both"
                .into(),
        ),
        // Neither: the built-in defaults, the mserver's and the member
        // interface's own (the command picks the one it needs).
        (None, None) => (
            Some(DEFAULT_SERVER),
            Some(member_interface::daemon::settings::default_socket(
                std::env::var_os("XDG_RUNTIME_DIR"),
            )),
        ),
        other => other,
    };
    let need_server = || -> Result<SocketAddr, String> {
        let s = server
            .ok_or_else(|| format!("{name} talks to an mserver: give --server ADDR, not --mi"))?;
        if s.port() == 0 || s.ip().is_unspecified() {
            return Err(format!("--server {s}: give the mserver's address and port"));
        }
        Ok(s)
    };
    let need_mi = || {
        mi_path.clone().ok_or_else(|| {
            format!("{name} talks to a member interface: give --mi PATH, not --server")
        })
    };
    let group = |g: &str| GroupName::parse(g).map_err(|e| format!("{name}: {g:?}: {e}"));
    Ok(match command {
        Command::View {
            group: None,
            json,
            level,
        } => {
            if mi_path.is_some() && !defaulted {
                return Err("view with --mi needs a GROUP: msctl --mi PATH view GROUP".into());
            }
            let level = level.unwrap_or(1);
            if !(1..=membership::coreset::MAX_LEVEL).contains(&level) {
                return Err(format!(
                    "view --level {level}: levels go from 1 (the mserver's own group) to {}",
                    membership::coreset::MAX_LEVEL
                ));
            }
            Target::Server(need_server()?, ServerCommand::View { json, level })
        }
        Command::Tree { json } => Target::Server(need_server()?, ServerCommand::Tree { json }),
        Command::View {
            group: Some(g),
            json,
            level,
        } => {
            if level.is_some() {
                return Err(format!(
                    "view {g} --level: levels are the mserver groups' (--server), not an application group's"
                ));
            }
            if server.is_some() && !defaulted {
                return Err(format!(
                    "view {g}: an application group's view comes from a member interface: give --mi PATH (with --server, view takes no GROUP)"
                ));
            }
            let path = need_mi()?;
            Target::Mi(
                path,
                mi::MiCommand::View {
                    group: group(&g)?,
                    json,
                },
            )
        }
        Command::Leave { level, json } => match level {
            None | Some(1) => Target::Server(need_server()?, ServerCommand::Leave),
            Some(0) => return Err("leave --level 0: levels start at 1".into()),
            Some(n) => Target::Server(
                need_server()?,
                ServerCommand::DelParent {
                    level: Some(n),
                    json,
                },
            ),
        },
        Command::AddParent { group, json } => {
            let g: membership::coreset::GroupRef = group.parse().map_err(|e| {
                format!("add-parent {group:?}: {e} (expected NAME@IP:PORT, e.g. building-1@239.255.1.1:7301)")
            })?;
            Target::Server(
                need_server()?,
                ServerCommand::AddParent {
                    group: g.to_string(),
                    json,
                },
            )
        }
        Command::DelParent { json } => Target::Server(
            need_server()?,
            ServerCommand::DelParent { level: None, json },
        ),
        Command::Keys { op } => {
            if let KeysCommand::Install { key } = &op {
                membership::wire::ClusterKey::parse(key)
                    .map_err(|e| format!("keys install: {e}"))?;
            }
            Target::Server(need_server()?, ServerCommand::Keys(op))
        }
        Command::Stats { json } => Target::Server(need_server()?, ServerCommand::Stats { json }),
        Command::Groups { json } => Target::Server(need_server()?, ServerCommand::Groups { json }),
        Command::Events { json } => Target::Server(need_server()?, ServerCommand::Events { json }),
        Command::Fault {
            drop,
            block,
            block_in,
            clear,
        } => {
            let server = need_server()?;
            if let Some(p) = drop {
                if !(0.0..=100.0).contains(&p) {
                    return Err(format!("--drop {p}: a percentage must be within 0..=100"));
                }
            }
            Target::Server(
                server,
                ServerCommand::Fault(FaultArgs {
                    drop,
                    block,
                    block_in,
                    clear,
                }),
            )
        }
        Command::Join {
            group: g,
            name: member,
            kind,
            json,
            timestamps,
        } => {
            let path = need_mi()?;
            let group = group(&g)?;
            let member = match member {
                Some(m) => MemberName::parse(&m).map_err(|e| format!("{name} {g}: --name {m:?}: {e}"))?,
                None => mi::default_member_name()
                    .map_err(|e| format!("{name} {g}: the default name <hostname>-<pid> is not valid ({e}): give --name"))?,
            };
            let kind = MemberKind::parse(&kind)
                .map_err(|e| format!("{name} {g}: --kind {kind:?}: {e}"))?;
            Target::Mi(
                path,
                mi::MiCommand::Join {
                    group,
                    member: MemberInfo::new(member).with_kind(kind),
                    json,
                    timestamps,
                },
            )
        }
        Command::Create {
            group: g,
            survive,
            merge,
            name_scope,
            membership_scope,
            json,
        } => {
            let path = need_mi()?;
            let group = group(&g)?;
            let mut options = GroupOptions::default();
            let bad = |flag: &str, e: String| format!("{name} {g}: --{flag} {e}");
            if let Some(s) = survive {
                options.survive = presets::parse_survive(&s).map_err(|e| bad("survive", e))?;
            }
            if let Some(s) = merge {
                options.merge = presets::parse_merge(&s).map_err(|e| bad("merge", e))?;
            }
            if let Some(s) = name_scope {
                options.name_scope = presets::parse_scope(&s).map_err(|e| bad("name-scope", e))?;
            }
            if let Some(s) = membership_scope {
                options.membership_scope =
                    presets::parse_scope(&s).map_err(|e| bad("membership-scope", e))?;
            }
            options.validate().map_err(|e| format!("{name} {g}: {e}"))?;
            Target::Mi(
                path,
                mi::MiCommand::Create {
                    group,
                    options,
                    json,
                },
            )
        }
        Command::Lookup {
            group: g,
            member,
            json,
        } => {
            let path = need_mi()?;
            let group = group(&g)?;
            let member = MemberName::parse(&member)
                .map_err(|e| format!("{name} {g}: member {member:?}: {e}"))?;
            Target::Mi(
                path,
                mi::MiCommand::Lookup {
                    group,
                    member,
                    json,
                },
            )
        }
    })
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::View { .. } => "view",
        Command::Tree { .. } => "tree",
        Command::Leave { .. } => "leave",
        Command::AddParent { .. } => "add-parent",
        Command::DelParent { .. } => "del-parent",
        Command::Keys { .. } => "keys",
        Command::Stats { .. } => "stats",
        Command::Fault { .. } => "fault",
        Command::Groups { .. } => "groups",
        Command::Events { .. } => "events",
        Command::Join { .. } => "join",
        Command::Create { .. } => "create",
        Command::Lookup { .. } => "lookup",
    }
}

/// Why a command failed (exit code 1).
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Call(String),
}

/// The cluster key ring `msctl` seals its requests with (set once in
/// `main`).
static RING: std::sync::OnceLock<Option<membership::wire::KeyRing>> = std::sync::OnceLock::new();

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.keys.ring() {
        Ok(r) => {
            let _ = RING.set(r);
        }
        Err(e) => {
            eprintln!("msctl: {e:#}");
            return ExitCode::from(2);
        }
    }
    let timeout = Duration::from_millis(cli.timeout_ms.clamp(1, 600_000));
    let target = match check(cli.server, cli.mi, cli.command) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("msctl: {e}");
            return ExitCode::from(2);
        }
    };
    let (server, command) = match target {
        Target::Mi(path, command) => return mi::run(path, timeout, command),
        Target::Server(server, command) => (server, command),
    };
    let system = actix::System::new();
    match system.block_on(run(server, timeout, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("msctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(server: SocketAddr, timeout: Duration, command: ServerCommand) -> anyhow::Result<()> {
    match command {
        ServerCommand::View { json, level } => {
            let view = view_at(server, timeout, level).await?;
            if json {
                println!("{}", serde_json::to_string(&view)?);
            } else {
                print_view(&view);
            }
        }
        ServerCommand::Tree { json } => {
            let tree: TreeReply = call(server, timeout, PROC_TREE, &()).await?;
            if json {
                println!("{}", serde_json::to_string(&tree)?);
            } else {
                print!("{}", tree_text(&tree));
            }
        }
        ServerCommand::Stats { json } => {
            let stats: StatsReply = call(server, timeout, PROC_STATS, &StatsRequest {}).await?;
            if json {
                println!("{}", serde_json::to_string(&stats)?);
            } else {
                print!("{}", stats_text(&stats));
            }
        }
        ServerCommand::Keys(op) => keys(server, timeout, op).await?,
        ServerCommand::AddParent { group, json } => {
            let reply: Result<ViewReply, TreeError> = call(
                server,
                tree_timeout(timeout),
                PROC_ADD_PARENT,
                &AddParentRequest { group },
            )
            .await?;
            print_tree_result(reply, json)?;
        }
        ServerCommand::DelParent { level, json } => {
            let reply: Result<ViewReply, TreeError> = call(
                server,
                tree_timeout(timeout),
                PROC_DEL_PARENT,
                &DelParentRequest { level },
            )
            .await?;
            print_tree_result(reply, json)?;
        }
        ServerCommand::Leave => {
            let reply: LeaveReply = call(server, timeout, PROC_LEAVE, &LeaveRequest {}).await?;
            if let Some(why) = reply.refused {
                return Err(Failure::Call(format!("the mserver refused to leave: {why}")).into());
            }
            if reply.committed {
                println!("left: the group committed the leave; the mserver exits");
            } else {
                println!("left without the group's commit (it did not answer); the mserver exits");
            }
        }
        ServerCommand::Fault(FaultArgs {
            drop,
            block,
            block_in,
            clear,
        }) => {
            let request = FaultRequest {
                clear,
                drop_pct: drop,
                block,
                block_in,
            };
            let reply: FaultReply = call(server, timeout, PROC_FAULT, &request).await?;
            if let Some(e) = reply.error {
                return Err(Failure::Call(format!("the mserver refused the faults: {e}")).into());
            }
            println!("faults now: {}", reply.now);
        }
        ServerCommand::Events { json } => {
            events::run(server, timeout, json, |e| call_failure(server, timeout, e)).await?;
        }
        ServerCommand::Groups { json } => {
            let reply: ReadReply =
                call(server, timeout, PROC_MI_READ, &ReadRequest::Groups).await?;
            let groups = groups_of(reply)?;
            if json {
                println!("{}", groups_json(&groups));
            } else {
                print_groups(&groups);
            }
        }
    }
    Ok(())
}

/// `msctl keys ...`.
async fn keys(server: SocketAddr, timeout: Duration, op: KeysCommand) -> anyhow::Result<()> {
    let change = match op {
        KeysCommand::List { json } => {
            let here: KeysReply = call(server, timeout, PROC_KEYS, &KeysRequest::List).await?;
            let view = view_at(server, timeout, 1).await?;
            let mut members = Vec::new();
            for m in &view.members {
                let addr: Option<SocketAddr> = m.addr.parse().ok();
                let reply = match addr {
                    Some(_) if m.addr == here.member => Ok(here.clone()),
                    Some(a) => call::<_, KeysReply>(a, timeout, PROC_KEYS, &KeysRequest::List)
                        .await
                        .map_err(|e| format!("{e:#}")),
                    None => Err("unreadable address".into()),
                };
                members.push((m.addr.clone(), reply));
            }
            if members.is_empty() {
                members.push((here.member.clone(), Ok(here.clone())));
            }
            if json {
                let list: Vec<serde_json::Value> = members
                    .iter()
                    .map(|(addr, r)| match r {
                        Ok(k) => serde_json::json!({"member": addr, "view": k.view, "commit": k.commit, "keys": k.keys}),
                        Err(e) => serde_json::json!({"member": addr, "error": e}),
                    })
                    .collect();
                println!("{}", serde_json::json!({ "members": list }));
            } else {
                for (addr, r) in &members {
                    match r {
                        Ok(k) => {
                            let ids: Vec<String> = k
                                .keys
                                .iter()
                                .map(|k| {
                                    if k.primary {
                                        format!("{}*", k.id)
                                    } else {
                                        k.id.to_string()
                                    }
                                })
                                .collect();
                            println!(
                                "{addr:<22} view {:<4} keys {}",
                                k.view,
                                if ids.is_empty() {
                                    "none".into()
                                } else {
                                    ids.join(" ")
                                }
                            );
                        }
                        Err(e) => println!("{addr:<22} no answer: {e}"),
                    }
                }
            }
            return Ok(());
        }
        KeysCommand::Install { key } => KeyOp::Install(key),
        KeysCommand::Use { id } => KeyOp::Use(id),
        KeysCommand::Remove { id } => KeyOp::Remove(id),
    };
    let what = format!("{change:?}");
    let reply: KeysReply = call(server, timeout, PROC_KEYS, &KeysRequest::Change(change)).await?;
    if let Some(e) = reply.error {
        return Err(Failure::Call(format!("the mserver refused {what}: {e}")).into());
    }
    let ids: Vec<String> = reply.keys.iter().map(|k| k.id.to_string()).collect();
    println!(
        "committed at view {} (commit {}): keys {} (primary first)",
        reply.view,
        reply.commit,
        ids.join(" ")
    );
    Ok(())
}

/// The groups of a `PROC_MI_READ` reply to [`ReadRequest::Groups`].
fn groups_of(reply: ReadReply) -> Result<Vec<GroupInfo>, Failure> {
    match reply {
        ReadReply::Groups(Ok(groups)) => Ok(groups),
        ReadReply::Groups(Err(e)) => {
            Err(Failure::Call(format!("groups: the mserver refused: {e}")))
        }
        ReadReply::View(_) | ReadReply::Member(_) => Err(Failure::Call(
            "groups: the mserver answered with another kind of reply".into(),
        )),
    }
}

/// `msctl groups --json`: `{"groups": [{"group", "view", "suspended",
/// "survive", "merge", "name_scope", "membership_scope", "members":
/// [{"name", "kind", "id", "host"}, ...]}, ...]}`.
fn groups_json(groups: &[GroupInfo]) -> serde_json::Value {
    let groups: Vec<serde_json::Value> = groups
        .iter()
        .map(|g| {
            serde_json::json!({
                "group": g.view.group,
                "view": g.view.number,
                "suspended": g.suspended,
                "survive": presets::format_survive(&g.options.survive),
                "merge": presets::format_merge(&g.options.merge),
                "name_scope": presets::format_scope(&g.options.name_scope),
                "membership_scope": presets::format_scope(&g.options.membership_scope),
                "members": g.view.members,
            })
        })
        .collect();
    serde_json::json!({ "groups": groups })
}

fn print_groups(groups: &[GroupInfo]) {
    if groups.is_empty() {
        println!("no application groups");
    }
    for g in groups {
        println!(
            "group {}  view {}  survive {}  merge {}{}",
            g.view.group,
            g.view.number,
            presets::format_survive(&g.options.survive),
            presets::format_merge(&g.options.merge),
            if g.suspended { "  SUSPENDED" } else { "" }
        );
        for m in &g.view.members {
            let kind = if m.kind.as_str().is_empty() {
                "-"
            } else {
                m.kind.as_str()
            };
            println!(
                "  {:<24} {:<12} {:<24} {}",
                m.name.as_str(),
                kind,
                m.host,
                m.id
            );
        }
    }
}

/// What a failed call means for the user, and what to check.
fn call_failure(server: SocketAddr, timeout: Duration, e: &CallError) -> String {
    match e {
        CallError::Unreachable => format!(
            "nothing listens at {server} (the host refused the port): is an mserver running there? \
             Start one (`mserver --listen {server}`) or point --server at one (default {DEFAULT_SERVER})"
        ),
        CallError::Timeout => format!(
            "no answer from {server} within {}: is an mserver running there, and not suspended? \
             If that is another daemon's port (an mcaster's, a member-interface's), point --server at \
             an mserver (default {DEFAULT_SERVER}); an mserver with a cluster key ring answers only a \
             msctl that holds one of its keys (--cluster-key, --key-file, MS_CLUSTER_KEYS); a busy \
             network may need a longer --timeout-ms",
            fmt_duration(timeout)
        ),
        CallError::NoSuchProcedure => format!(
            "{server} does not serve msctl's requests: is it an mserver (not an mcaster or a member-interface)?"
        ),
        CallError::PeerRestarted => {
            format!("the mserver at {server} restarted while answering; run the command again")
        }
        other => format!("{server}: {other}"),
    }
}

/// `3s`, `250ms`.
fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// `msctl stats` without `--json`: the counters a person reads, zeros
/// left out.
fn stats_text(s: &StatsReply) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let up = Duration::from_millis(s.uptime_ms);
    let _ = writeln!(out, "uptime {}", fmt_uptime(up));
    let _ = writeln!(
        out,
        "socket   sent {} datagrams ({} bytes), received {} ({} bytes)",
        s.datagrams_sent, s.bytes_sent, s.datagrams_received, s.bytes_received
    );
    if !s.protocols.is_empty() {
        let _ = writeln!(
            out,
            "{:<10} {:>10} {:>12} {:>10} {:>12}",
            "protocol", "sent", "bytes", "received", "bytes"
        );
        for (name, t) in &s.protocols {
            let _ = writeln!(
                out,
                "{:<10} {:>10} {:>12} {:>10} {:>12}",
                name, t.sent, t.bytes_sent, t.received, t.bytes_received
            );
        }
    }
    let drops: Vec<String> = s
        .drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "dropped  {}",
        if drops.is_empty() {
            "none".to_string()
        } else {
            drops.join(", ")
        }
    );
    let counters: Vec<(&String, &u64)> = s.coreset.iter().filter(|(_, n)| **n > 0).collect();
    if !counters.is_empty() {
        let _ = writeln!(out, "core-set counters (non-zero):");
        for (k, n) in counters {
            let _ = writeln!(out, "  {k:<32} {n}");
        }
    }
    out
}

/// `2h 03m 04s`, `5m 00s`, `12s`.
fn fmt_uptime(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m {sec:02}s"),
        (h, m, sec) => format!("{h}h {m:02}m {sec:02}s"),
    }
}

/// How long to wait for the answer to a tree change: the change itself
/// may take a few seconds (the mserver answers a timeout error at the
/// latest after its own request timeout), so at least 30 s.
fn tree_timeout(timeout: Duration) -> Duration {
    timeout.max(Duration::from_secs(30))
}

/// Prints the view a tree change resulted in, or fails with its error
/// (`error: <kind>: <detail>`, exit code 1).
fn print_tree_result(reply: Result<ViewReply, TreeError>, json: bool) -> anyhow::Result<()> {
    match reply {
        Ok(view) if json => println!("{}", serde_json::to_string(&view)?),
        Ok(view) => print_view(&view),
        Err(e) => return Err(Failure::Call(format!("error: {}: {e}", e.kind())).into()),
    }
    Ok(())
}

/// The view of the mserver's group at `level`.
async fn view_at(server: SocketAddr, timeout: Duration, level: u8) -> anyhow::Result<ViewReply> {
    let reply: Result<ViewReply, String> =
        call(server, timeout, PROC_VIEW, &ViewRequest { level }).await?;
    reply.map_err(|e| Failure::Call(format!("view --level {level}: {e}")).into())
}

/// `msctl tree` for people: every level, lowest first, indented, the
/// parents marked.
fn tree_text(t: &TreeReply) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (i, v) in t.levels.iter().enumerate() {
        let pad = "  ".repeat(i);
        let above = v.parent_group.as_ref().map_or_else(
            || "top".to_string(),
            |g| format!("parent group {}@{}", g.name, g.addr),
        );
        let _ = writeln!(
            out,
            "{pad}level {} {}  view {}  {}  ({above}, max {} parents)",
            v.level, v.group, v.view, v.state, v.max_parents
        );
        for m in &v.members {
            let mut tags = Vec::new();
            if m.parent {
                tags.push("parent".to_string());
            }
            if let Some(c) = &m.child_group {
                tags.push(format!("of {c}"));
            }
            if m.declined {
                tags.push("declined".into());
            }
            if m.addr == v.me.addr {
                tags.push("<- this mserver".into());
            }
            let _ = writeln!(
                out,
                "{pad}  {:>4}  {:<22} {}",
                m.rank,
                m.addr,
                tags.join(" ")
            );
        }
    }
    if let Some(task) = &t.task {
        let _ = writeln!(out, "in progress: {task}");
    }
    if let Some(why) = &t.standby {
        let _ = writeln!(out, "not a parent (a standby) at {why}");
    }
    if t.parentless {
        let _ = writeln!(out, "our top group has no parent yet (re-parenting)");
    }
    out
}

fn print_view(v: &ViewReply) {
    let level = if v.level > 1 {
        format!("level {}  ", v.level)
    } else {
        String::new()
    };
    println!(
        "group {}  {level}view {} (coordinator {})  {}",
        v.group, v.view, v.coordinator, v.state
    );
    if v.commit > 0 {
        println!(
            "        {} application changes committed in this view",
            v.commit
        );
    }
    println!("{:>6}  {:<22}  incarnation", "rank", "address");
    for m in &v.members {
        let me = if m.addr == v.me.addr {
            "  <- this mserver"
        } else {
            ""
        };
        println!("{:>6}  {:<22}  {}{}", m.rank, m.addr, m.incarnation, me);
    }
}

/// The local address to bind so that `server` can answer us: the one the
/// kernel would use to reach it.
fn local_ip_for(server: SocketAddr) -> IpAddr {
    let probe = UdpSocket::bind(SocketAddr::new(
        if server.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        },
        0,
    ));
    probe
        .and_then(|s| {
            s.connect(server)?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A local RPC endpoint for talking to `server`: a socket on the address
/// that reaches it, sealed with the cluster key ring when one was given.
fn rpc_endpoint(server: SocketAddr) -> anyhow::Result<SpawnedCore<Rpc>> {
    let mut options = SocketOptions::new(SocketAddr::new(local_ip_for(server), 0));
    options.auth = RING
        .get()
        .cloned()
        .flatten()
        .map(membership::wire::AuthConfig::new);
    spawn_core(options, &[ProtocolId::Rpc], |ctx| {
        Rpc::new(
            ctx.local,
            ctx.incarnation,
            RpcConfig::default(),
            u64::from_le_bytes(
                ctx.incarnation.to_bytes()[8..16]
                    .try_into()
                    .unwrap_or([7; 8]),
            ),
        )
    })
    .map_err(|e| Failure::Call(format!("cannot open a local socket: {e}")).into())
}

/// Calls `procedure` on `target` through `endpoint` and waits for its
/// completion: the reply's bytes, or why there is none. The call times out
/// after `timeout`; the wait is bounded a second later as a second line of
/// defence.
async fn call_once(
    endpoint: &mut SpawnedCore<Rpc>,
    target: NodeId,
    procedure: u16,
    body: Vec<u8>,
    timeout: Duration,
) -> anyhow::Result<Result<Vec<u8>, CallError>> {
    let id = endpoint
        .handle
        .with_core(move |rpc, now| {
            rpc.call(
                now,
                target,
                procedure,
                body,
                CallOptions::default().with_timeout(timeout),
            )
        })
        .await?;
    let events = &mut endpoint.events;
    let wait = async {
        while let Some(event) = events.recv().await {
            if let RpcEvent::CallCompleted {
                id: done, result, ..
            } = event
            {
                if done == id {
                    return Some(result);
                }
            }
        }
        None
    };
    Ok(
        match tokio::time::timeout(timeout + Duration::from_secs(1), wait).await {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => Err(CallError::Timeout),
        },
    )
}

/// One admin call: request `procedure` with `request`, decode the reply.
async fn call<Q: serde::Serialize, R: DeserializeOwned>(
    server: SocketAddr,
    timeout: Duration,
    procedure: u16,
    request: &Q,
) -> anyhow::Result<R> {
    let body = encode_body(request)?;
    let mut endpoint = rpc_endpoint(server)?;
    let result = call_once(&mut endpoint, NodeId::new(server), procedure, body, timeout).await;
    endpoint.handle.stop();
    let reply = result?.map_err(|e| Failure::Call(call_failure(server, timeout, &e)))?;
    decode_message::<R>(&reply)
        .map_err(|e| Failure::Call(format!("{server} answered something unreadable: {e}")).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use membership::appgroup::{AppError, AppMember, AppView, MergeRule, Scope, SurviveRule};
    use membership::wire::{decode_message, encode_body};
    use uuid::Uuid;

    fn info(name: &str, number: u64, suspended: bool) -> GroupInfo {
        GroupInfo {
            options: GroupOptions {
                name_scope: Scope::Lan,
                membership_scope: Scope::Level(2),
                survive: SurviveRule::StaticQuorum(2),
                merge: MergeRule::KeepOldest,
            },
            view: AppView {
                group: GroupName::parse(name).expect("group"),
                number,
                members: vec![AppMember {
                    name: MemberName::parse("alice").expect("name"),
                    kind: MemberKind::parse("db").expect("kind"),
                    id: Uuid::from_u128(9),
                    host: "h1".into(),
                }],
            },
            suspended,
        }
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The reply the mserver sends for `groups`, through the project codec
    /// as `call` decodes it, and rendered as `msctl groups --json`.
    #[test]
    fn groups_reply_decodes_and_renders() {
        let sent = ReadReply::Groups(Ok(vec![info("chat", 4, false), info("db", 1, true)]));
        let bytes = encode_body(&sent).expect("encode");
        let got: ReadReply = decode_message(&bytes).expect("decode");
        assert_eq!(got, sent);
        let groups = groups_of(got).expect("groups");
        let v = groups_json(&groups);
        let line = v.to_string();
        assert!(!line.contains('\n'));
        let g = &v["groups"][0];
        assert_eq!(g["group"], "chat");
        assert_eq!(g["view"], 4);
        assert_eq!(g["suspended"], false);
        assert_eq!(g["survive"], "static-quorum=2");
        assert_eq!(g["merge"], "keep-oldest");
        assert_eq!(g["members"][0]["name"], "alice");
        assert_eq!(g["members"][0]["kind"], "db");
        assert_eq!(g["members"][0]["id"], Uuid::from_u128(9).to_string());
        assert_eq!(g["members"][0]["host"], "h1");
        assert_eq!(v["groups"][1]["suspended"], true);
        assert_eq!(groups_json(&[])["groups"].as_array().map(Vec::len), Some(0));
    }

    #[test]
    fn groups_refusals_and_wrong_replies_fail() {
        let refused = ReadReply::Groups(Err(AppError::Busy));
        let e = groups_of(refused).expect_err("refused");
        assert!(e.to_string().contains("refused"), "{e}");
        assert!(groups_of(ReadReply::View(Err(AppError::NoSuchGroup))).is_err());
        assert!(decode_message::<ReadReply>(&[0xff; 9]).is_err());
    }

    fn parse(args: &[&str]) -> Result<Target, String> {
        let cli = Cli::try_parse_from(std::iter::once("msctl").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        check(cli.server, cli.mi, cli.command)
    }

    #[test]
    fn without_a_target_the_defaults_are_used() {
        assert!(matches!(
            parse(&["view"]),
            Ok(Target::Server(a, ServerCommand::View { .. })) if a == DEFAULT_SERVER
        ));
        assert!(matches!(parse(&["groups"]), Ok(Target::Server(..))));
        assert!(matches!(
            parse(&["join", "chat"]),
            Ok(Target::Mi(p, _)) if p.ends_with("member-interface.sock")
        ));
        assert!(matches!(parse(&["view", "chat"]), Ok(Target::Mi(..))));
    }

    #[test]
    fn targets() {
        assert!(matches!(
            parse(&["--server", "127.0.0.1:7200", "view"]),
            Ok(Target::Server(
                _,
                ServerCommand::View {
                    json: false,
                    level: 1
                }
            ))
        ));
        assert!(matches!(
            parse(&["--mi", "/x", "view", "chat", "--json"]),
            Ok(Target::Mi(_, mi::MiCommand::View { json: true, .. }))
        ));
        assert!(matches!(
            parse(&["groups", "--server", "127.0.0.1:7200"]),
            Ok(Target::Server(_, ServerCommand::Groups { .. }))
        ));
        match parse(&["--mi", "/x", "join", "chat", "--kind", "db"]) {
            Ok(Target::Mi(_, mi::MiCommand::Join { member, .. })) => {
                assert_eq!(member.kind.as_str(), "db");
                assert!(member
                    .name
                    .as_str()
                    .ends_with(&std::process::id().to_string()));
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "--mi",
            "/x",
            "create",
            "g",
            "--survive",
            "keep-majority",
            "--merge",
            "contains-kind=db",
            "--name-scope",
            "level=2",
            "--membership-scope",
            "core-set=backbone",
        ]) {
            Ok(Target::Mi(_, mi::MiCommand::Create { options, .. })) => {
                assert_eq!(options.survive, SurviveRule::KeepMajority);
                assert_eq!(
                    options.merge,
                    MergeRule::ContainsKind(MemberKind::parse("db").expect("k"))
                );
                assert_eq!(options.name_scope, Scope::Level(2));
                assert_eq!(options.membership_scope, Scope::CoreSet("backbone".into()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_errors_are_one_line() {
        for args in [
            &["--server", "127.0.0.1:7200", "--mi", "/x", "view"][..],
            &["--mi", "/x", "view"],
            &["--server", "127.0.0.1:7200", "view", "chat"],
            &["--mi", "/x", "leave"],
            &["--mi", "/x", "groups"],
            &["--server", "127.0.0.1:7200", "join", "chat"],
            &["--server", "127.0.0.1:0", "stats"],
            &["--mi", "/x", "join", "no spaces"],
            &["--mi", "/x", "join", "chat", "--name", "a\u{1}b"],
            &["--mi", "/x", "join", "chat", "--kind", &"k".repeat(40)],
            &["--mi", "/x", "create", "chat", "--survive", "most"],
            &["--mi", "/x", "create", "chat", "--merge", "static-quorum=0"],
            &["--mi", "/x", "create", "chat", "--name-scope", "level=0"],
            &["--mi", "/x", "lookup", "chat", ""],
            &["--server", "127.0.0.1:7200", "fault", "--drop", "101"],
        ] {
            let e = match parse(args) {
                Err(e) => e,
                Ok(t) => panic!("{args:?} accepted: {t:?}"),
            };
            assert!(!e.trim().is_empty() && !e.contains('\n'), "{args:?}: {e}");
        }
    }
}
