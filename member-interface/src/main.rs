//! `member-interface`: the per-host MI daemon (seed 003, section II.B.4;
//! DESIGN.md sections 6 and 7). Application processes on this host connect
//! to its Unix socket with the client library (or `msctl --mi`); it
//! attaches to an mserver of the LAN's core-set, relays their requests and
//! hands them every view of their groups. See `member-interface --help`
//! and `docs/api.md`.
#![forbid(unsafe_code)]

mod http;

use clap::Parser;
use daemon_shell::exit;
use daemon_shell::signals::{Signal, Signals};
use daemon_shell::startup::Fatal;
use member_interface::daemon::{uplink, Args, LogFormat, Server};
use std::process::ExitCode;
use std::time::Duration;

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
    /// The cluster key ring of the mserver link (--cluster-key ID:HEX,
    /// --key-file PATH, MS_CLUSTER_KEYS); SIGHUP reloads the key file.
    #[command(flatten)]
    keys: daemon_shell::keys::KeyFlags,
    /// Keep the cluster key ring in this file (mode 0600): the ring its
    /// mserver hands over after `msctl keys` (and a ring SIGHUP reloads)
    /// is written there, and when the file exists at startup its ring
    /// wins over --cluster-key / --key-file.
    #[arg(long, value_name = "PATH", env = "MS_MI_KEYRING_FILE")]
    keyring_file: Option<std::path::PathBuf>,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(
        long,
        value_name = "LEVEL",
        default_value = "info",
        env = "MS_LOG_LEVEL"
    )]
    log_level: String,
    /// Serve /metrics, /healthz, /readyz and /v1/status on this address
    /// (or `off`)
    /// [default: off].
    #[arg(long, value_name = "ADDR|off", env = "MS_MI_HTTP")]
    http: Option<String>,
}

fn main() -> ExitCode {
    // clap prints usage errors and exits with code 2 itself.
    let cli = Cli::parse();
    // SIGHUP: the log level again (flags and environment: the MI has no
    // settings file).
    daemon_shell::reload::register_log_level(|| Ok(Cli::parse().log_level));
    let format = match cli.args.log_format {
        LogFormat::Human => membership::runtime::logging::LogFormat::Human,
        LogFormat::Json => membership::runtime::logging::LogFormat::Json,
    };
    daemon_shell::startup::run(
        "member-interface",
        Ok(cli),
        |cli| (cli.log_level.clone(), format),
        run,
    )
}

/// The daemon, once logging is set up.
async fn run(cli: Cli) -> Result<u8, Fatal> {
    let config = cli.args.server_config();
    config.validate().map_err(Fatal::usage)?;
    let core_config = config.clone();
    // The HTTP port first: a port in use stops nothing half-started.
    let http_listener = match cli.http.as_deref().map(daemon_shell::http::parse_http) {
        Some(Ok(Some(addr))) => {
            daemon_shell::http::bind("member-interface", addr, false).map_err(Fatal::from)?
        }
        Some(Err(e)) => return Err(Fatal::from(e)),
        _ => None,
    };
    let server = Server::bind(config).await.map_err(Fatal::usage)?;
    let ring = start_ring(&cli).map_err(|e| Fatal::usage(format!("{e:#}")))?;
    let keyed = ring.is_some();
    let link = uplink::start_with_ring(
        cli.args.listen,
        &cli.args.mservers,
        &core_config,
        ring,
        cli.keyring_file.clone(),
    )
    .map_err(|e| Fatal::usage(format!("cannot listen on {}: {e}", cli.args.listen)))?;
    let http = match http_listener {
        Some(l) => Some(
            daemon_shell::http::serve(l, http::routes(http::HttpState::new(link.handle.clone())))
                .map_err(Fatal::from)?,
        ),
        None => None,
    };
    tracing::info!(socket = %server.path().display(), mi = %link.mi, udp = %link.local, "member-interface ready");
    let mut signals =
        Signals::stop_and_reload().map_err(|_| Fatal::usage("cannot install signal handlers"))?;
    let socket = link.handle.socket.clone();
    let keys = cli.keys.clone();
    let keyring_file = cli.keyring_file.clone();
    let shutdown = async move {
        // Bounded by the signals that come: each SIGHUP reloads (the log
        // level, then the key file), any other stops.
        loop {
            let signal = signals.recv().await;
            if signal == Signal::Hangup {
                daemon_shell::reload::on_hangup();
                reload_keys(&keys, keyed, &socket, keyring_file.as_deref()).await;
                continue;
            }
            tracing::info!("{signal}: leaving");
            break;
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
    if let Some(h) = http {
        h.stop().await;
    }
    link.handle.stop();
    result.map_err(Fatal::failure)?;
    Ok(exit::OK)
}

/// The ring to start with: the key-ring file's if it exists, else the
/// configured keys (flags, environment, key file).
fn start_ring(cli: &Cli) -> anyhow::Result<Option<membership::wire::KeyRing>> {
    if let Some(path) = cli.keyring_file.as_deref() {
        if let Some(ring) = daemon_shell::keys::load_keyring_file(path)? {
            return Ok(Some(ring));
        }
    }
    cli.keys.ring()
}

/// SIGHUP: reloads the key file into the mserver link's socket (and the
/// key-ring file, when there is one).
async fn reload_keys(
    keys: &daemon_shell::keys::KeyFlags,
    keyed: bool,
    socket: &actix::Addr<membership::runtime::SocketActor>,
    keyring_file: Option<&std::path::Path>,
) {
    match keys.ring() {
        Ok(Some(ring)) if keyed => {
            let desc = daemon_shell::keys::describe(Some(&ring));
            if let Some(path) = keyring_file {
                if let Err(e) = daemon_shell::keys::save_keyring_file(path, &ring) {
                    tracing::warn!(error = %format!("{e:#}"), "cannot persist the key ring");
                }
            }
            let applied = socket
                .send(membership::runtime::SetKeyRing(ring))
                .await
                .unwrap_or(false);
            tracing::info!(keys = %desc, applied, "SIGHUP: cluster key ring reloaded");
        }
        Ok(_) => tracing::warn!(
            "SIGHUP: turning authentication on or off needs a restart; the key ring is unchanged"
        ),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "SIGHUP: key file not reloaded; the key ring is unchanged")
        }
    }
}
