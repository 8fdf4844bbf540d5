//! `msctl`: inspect and steer a running mserver (DESIGN.md section 7).
//!
//! It talks to the mserver over the project's RPC (the admin procedures of
//! [`mserver::admin`]) from an ephemeral UDP port. Exit codes: 0 success,
//! 1 the mserver did not answer or refused, 2 bad usage.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use membership::id::{NodeId, ProtocolId};
use membership::rpc::{CallOptions, Rpc, RpcConfig, RpcEvent};
use membership::runtime::{spawn_core, SocketOptions, SpawnedCore};
use membership::wire::{decode_message, encode_body};
use mserver::admin::{
    FaultReply, FaultRequest, LeaveReply, LeaveRequest, StatsReply, StatsRequest, ViewReply,
    ViewRequest, PROC_FAULT, PROC_LEAVE, PROC_STATS, PROC_VIEW,
};
use serde::de::DeserializeOwned;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

/// `msctl`: the Membership Service's inspection and control tool.
///
/// Examples:
///   msctl --server 127.0.0.1:7200 view --json
///   msctl --server 127.0.0.1:7200 fault --drop 10 --block 127.0.0.3:7200
///   msctl --server 127.0.0.1:7200 fault --clear
///   msctl --server 127.0.0.1:7200 leave
#[derive(Debug, Parser)]
#[command(name = "msctl", version, verbatim_doc_comment)]
struct Cli {
    /// The mserver to talk to [default: 127.0.0.1:7200].
    #[arg(long, value_name = "ADDR", global = true)]
    server: Option<SocketAddr>,
    /// How long to wait for an answer, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 3000, global = true)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the mserver's core-set view.
    View {
        /// One JSON object: {"group", "view", "state", "me", "members", ...}.
        #[arg(long)]
        json: bool,
    },
    /// Make the mserver leave its group gracefully; it exits afterwards.
    Leave,
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
}

/// Why a command failed (exit code 1).
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Call(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let server = cli
        .server
        .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7200));
    if server.port() == 0 || server.ip().is_unspecified() {
        eprintln!("msctl: --server {server}: give the mserver's address and port");
        return ExitCode::from(2);
    }
    if let Command::Fault { drop: Some(p), .. } = &cli.command {
        if !(0.0..=100.0).contains(p) {
            eprintln!("msctl: --drop {p}: a percentage must be within 0..=100");
            return ExitCode::from(2);
        }
    }
    let timeout = Duration::from_millis(cli.timeout_ms.clamp(1, 600_000));
    let system = actix::System::new();
    match system.block_on(run(server, timeout, cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("msctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(server: SocketAddr, timeout: Duration, command: Command) -> anyhow::Result<()> {
    match command {
        Command::View { json } => {
            let view: ViewReply = call(server, timeout, PROC_VIEW, &ViewRequest {}).await?;
            if json {
                println!("{}", serde_json::to_string(&view)?);
            } else {
                print_view(&view);
            }
        }
        Command::Stats { json } => {
            let stats: StatsReply = call(server, timeout, PROC_STATS, &StatsRequest {}).await?;
            if json {
                println!("{}", serde_json::to_string(&stats)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            }
        }
        Command::Leave => {
            let reply: LeaveReply = call(server, timeout, PROC_LEAVE, &LeaveRequest {}).await?;
            if reply.committed {
                println!("left: the group committed the leave; the mserver exits");
            } else {
                println!("left without the group's commit (it did not answer); the mserver exits");
            }
        }
        Command::Fault {
            drop,
            block,
            block_in,
            clear,
        } => {
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
    }
    Ok(())
}

fn print_view(v: &ViewReply) {
    println!(
        "group {}  view {} (coordinator {})  {}",
        v.group, v.view, v.coordinator, v.state
    );
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

/// One admin call: request `procedure` with `request`, decode the reply.
async fn call<Q: serde::Serialize, R: DeserializeOwned>(
    server: SocketAddr,
    timeout: Duration,
    procedure: u16,
    request: &Q,
) -> anyhow::Result<R> {
    let body = encode_body(request)?;
    let options = SocketOptions::new(SocketAddr::new(local_ip_for(server), 0));
    let SpawnedCore { handle, mut events } = spawn_core(options, &[ProtocolId::Rpc], |ctx| {
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
    .map_err(|e| Failure::Call(format!("cannot open a local socket: {e}")))?;
    let target = NodeId::new(server);
    let id = handle
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
    // The call itself times out; this bound is a second line of defence.
    let outcome = tokio::time::timeout(timeout + Duration::from_secs(1), wait).await;
    handle.stop();
    let result = match outcome {
        Ok(Some(r)) => r,
        Ok(None) | Err(_) => {
            return Err(Failure::Call(format!("no answer from {server} within {timeout:?}")).into())
        }
    };
    let reply = result.map_err(|e| Failure::Call(format!("{server}: {e}")))?;
    decode_message::<R>(&reply)
        .map_err(|e| Failure::Call(format!("{server} answered something unreadable: {e}")).into())
}
