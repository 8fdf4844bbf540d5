//! `member-interface`: the per-host MI daemon (seed 003, section II.B.4;
//! DESIGN.md sections 6 and 7). Application processes on this host connect
//! to its Unix socket with the client library (or `msctl --mi`); it
//! attaches to an mserver of the LAN's core-set, relays their requests and
//! hands them every view of their groups. See `member-interface --help`
//! and `docs/api.md`.
#![forbid(unsafe_code)]

use clap::Parser;
use member_interface::daemon::{uplink, Args, LogFormat, Server};
use std::process::ExitCode;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// The member-interface daemon: one per host.
///
/// Local processes create, join and leave application groups through its
/// Unix socket; it attaches to an mserver of the core-set (the first of
/// `--mserver` that accepts, then any member of the core-set's view), answers
/// its polls, and fails over to another mserver when its own goes silent. A
/// process whose connection closes (it exited or crashed) leaves its groups
/// at once. SIGTERM or SIGINT: every local member leaves, then the daemon
/// exits.
///
/// Example: member-interface --mserver 127.0.0.1:7200 --socket /tmp/mi.sock
#[derive(Parser, Debug)]
#[command(name = "member-interface", version)]
struct Cli {
    #[command(flatten)]
    args: Args,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(
        long,
        value_name = "LEVEL",
        default_value = "info",
        env = "MS_LOG_LEVEL"
    )]
    log_level: String,
}

fn main() -> ExitCode {
    // clap prints usage errors and exits with code 2 itself.
    let cli = Cli::parse();
    let format = match cli.args.log_format {
        LogFormat::Human => membership::runtime::logging::LogFormat::Human,
        LogFormat::Json => membership::runtime::logging::LogFormat::Json,
    };
    if let Err(e) = membership::runtime::logging::init_logging(&cli.log_level, format) {
        eprintln!("member-interface: {e}");
        return ExitCode::from(2);
    }
    let config = cli.args.server_config();
    if let Err(e) = config.validate() {
        eprintln!("member-interface: {e}");
        return ExitCode::from(2);
    }
    let core_config = config.clone();
    let system = actix::System::new();
    system.block_on(async move {
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("member-interface: {e}");
                return ExitCode::from(2);
            }
        };
        let link = match uplink::start(cli.args.listen, &cli.args.mservers, &core_config) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("member-interface: cannot listen on {}: {e}", cli.args.listen);
                return ExitCode::from(2);
            }
        };
        tracing::info!(socket = %server.path().display(), mi = %link.mi, udp = %link.local, "member-interface ready");
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            eprintln!("member-interface: cannot install signal handlers");
            return ExitCode::from(2);
        };
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: leaving"),
                _ = int.recv() => tracing::info!("SIGINT: leaving"),
            }
        };
        let result = server.run(link.port, shutdown).await;
        // Every connection's close reached the core (the bridge ends after
        // the server's last input), so the members' Leaves were handed to
        // the agent: give them a moment (bounded) to commit before the
        // process ends.
        let _ = link.bridge.await;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let busy = link
                .handle
                .with_core(|node, _| node.in_progress())
                .await
                .unwrap_or(0);
            if busy == 0 {
                break;
            }
        }
        link.handle.stop();
        match result {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("member-interface: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
