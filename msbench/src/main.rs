//! `msbench`: the Membership Service's benchmark programs (DESIGN.md
//! section 10). Each scenario measures the stack and, in the same run, the
//! matching raw baseline, and prints one JSON object with the figures and
//! their ratio (`--json`), or a readable summary.
//!
//! Scenarios so far: `rpc` (RPC round trip and BLAST throughput over loopback
//! UDP through the full actix stack, against raw UDP), `rpc-core` (the RPC
//! core alone, for instruction counts under callgrind) and `mcast` (reliable
//! multicast throughput through the mcaster and over IP multicast, against
//! raw UDP fan-out; its member processes are the hidden `mcast-peer` and
//! `mcast-raw`). `membership` (core-set latencies and idle traffic, real and simulated).
//! `partition` (partition heal -> merged view, pause -> resume, with real
//! mservers; and 64 simulated ones split in 2 and in 4 parts). `app`
//! (application groups: join and process death -> view at every member,
//! with real member interfaces; and a 2,000-member bootstrap simulated).
//! `crypto` (the cost of the cluster key ring on RPC, view changes and
//! rmcast, without and with it in one run).
//! `soak` (false failures in a long run with the CPU cores busy).
//! `hierarchy` (the tree of mserver groups: parent faults, subtree cuts,
//! idle cost per role; real and simulated).

mod app;
mod crypto;
mod hierarchy;
mod mcast;
mod membership;
mod partition;
mod peer;
mod raw;
mod rpc;
mod rpc_core;
mod soak;
mod stats;

use clap::{Parser, Subcommand};
use std::net::{SocketAddr, UdpSocket};

/// Benchmarks of the Membership Service; every run measures its raw baseline too.
#[derive(Parser, Debug)]
#[command(name = "msbench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// RPC round trip (p50/p99) and BLAST throughput over loopback UDP through
    /// the full actix stack, with raw UDP ping-pong and raw UDP transfer of
    /// the same bytes measured in the same run.
    Rpc(rpc::RpcArgs),
    /// The RPC core alone (two endpoints, virtual time, no I/O): the protocol
    /// logic's own cost per round trip. Run under callgrind for repeatable
    /// instruction counts.
    RpcCore(rpc_core::RpcCoreArgs),
    /// One rmcast member as a process (for tests and `mcast`): a
    /// GroupEndpoint in one group over IP multicast and/or an mcaster,
    /// sending a planned stream of parcels and printing every event as a
    /// JSON line.
    #[command(name = "mcast-peer", hide = true)]
    McastPeer(Box<peer::PeerArgs>),
    /// Reliable multicast throughput (1 KiB and 64 KiB parcels) through the
    /// mcaster on loopback and over real IP multicast in network
    /// namespaces, with a raw UDP fan-out baseline measured in the same
    /// run, and again with injected loss.
    Mcast(mcast::McastArgs),
    /// The raw UDP fan-out baseline's processes (for `mcast`).
    #[command(name = "mcast-raw", hide = true)]
    McastRaw(mcast::McastRawArgs),
    /// Core-set membership: join, crash, pause and resume latencies and idle
    /// traffic of real mservers through an mcaster (4 and 8), and of 16 to
    /// 256 simulated ones, with the loopback round trip as raw baseline.
    Membership(membership::MembershipArgs),
    /// Partitions and pauses: a group of real mservers through an mcaster
    /// split in two halves with the fault interceptor and healed (heal ->
    /// one merged view at every member), and members paused and resumed
    /// (SIGCONT -> consistent again), `--trials` each; and in the
    /// simulator, 64 members split in 2 and in 4 random parts and healed.
    Partition(partition::PartitionArgs),
    /// Application groups: join() -> the new view at every member, and a
    /// member process killed -> the view without it at every member, for
    /// groups of 2, 8 and 32 across 3 real member interfaces and 3
    /// mservers; and in the simulator, one group of 2,000 members joining
    /// at once across 100 MIs.
    App(app::AppArgs),
    /// The cost of the cluster key ring: RPC round trip, view change
    /// latency (real mservers) and rmcast throughput through the mcaster,
    /// each without and with a ring in the same run (target: <= 10%
    /// slower).
    Crypto(crypto::CryptoArgs),
    /// False failures under load: 5 mservers and 2 member interfaces with
    /// members, both CPU cores kept busy by spinning processes, nothing
    /// killed for --minutes: every view installed is a false failure.
    Soak(soak::SoakArgs),
    /// The hierarchy of mserver groups: parent SIGKILL and SIGSTOP -> the
    /// child set's view, the top group's view without it and with the new
    /// parent; a subtree cut and healed -> every level merged; idle bytes
    /// per role; with 8 real mservers in 3 child sets and a top group,
    /// and 1,000 simulated ones in 3 levels.
    Hierarchy(hierarchy::HierarchyArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.scenario {
        Scenario::Rpc(args) => rpc::run(&args),
        Scenario::RpcCore(args) => rpc_core::run(&args),
        Scenario::McastPeer(args) => peer::run(&args),
        Scenario::Mcast(args) => mcast::run(&args),
        Scenario::McastRaw(args) => mcast::run_raw(&args),
        Scenario::Membership(args) => membership::run(&args),
        Scenario::Partition(args) => partition::run(&args),
        Scenario::App(args) => app::run(&args),
        Scenario::Crypto(args) => crypto::run(&args),
        Scenario::Soak(args) => soak::run(&args),
        Scenario::Hierarchy(args) => hierarchy::run(&args),
    };
    match result {
        Ok(()) => {}
        Err(e) => {
            eprintln!("msbench: {e:#}");
            std::process::exit(1);
        }
    }
}

/// A std UDP socket on `addr` with 4 MiB kernel buffers requested (the
/// kernel may grant less), as the runtime's sockets have.
pub fn socket_with_buffers(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Facts about the machine, recorded with every result.
pub fn machine() -> serde_json::Value {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    serde_json::json!({ "cpus": cpus, "cpu_model": model, "kernel": kernel })
}
