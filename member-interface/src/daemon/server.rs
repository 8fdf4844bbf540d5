//! The MI daemon's local side: the Unix-socket server application processes
//! connect to (seed 003, section II.B.4 "Member Interfaces"; DESIGN.md
//! section 6). A frame pump: it accepts connections, does the version
//! handshake, reads request frames and hands them to the MI's core
//! ([`membership::mi::MiNode`], which holds every session rule:
//! memberships, views held back until a join is answered, `AlreadyMember`,
//! `NotMember`, member ids, the request timeout), and writes what the core
//! answers. `docs/appgroups-design.md`, "Views to processes".
//!
//! [`Server::bind`] takes the socket path ([`ServerError`] says why it
//! cannot: a live MI answers there, the path is not a socket, the directory
//! is missing or not writable; a stale socket left by a crash is replaced)
//! and sets its mode; [`Server::run`] serves until its `shutdown` future
//! resolves, then removes the socket file. [`serve`] does both.
//!
//! **Connections.** One tokio task per connection; the accept loop never
//! waits for a client. The first frame must be a `Hello` within
//! [`ServerConfig::handshake_timeout`], answered with
//! [`crate::proto::answer_hello`]. At most [`ServerConfig::max_clients`]
//! connections are served (those still in their handshake count); one more
//! is refused with [`AppError::TooManyClients`] by a small task (at most
//! [`MAX_REFUSERS`] at once, each bounded in time; beyond that the
//! connection is simply closed).
//!
//! **The core.** The server talks to the core through a [`CorePort`]: it
//! sends [`ToCore`] (a connection opened, a request, a connection closed, a
//! view too large for a frame) and receives [`FromCore`] (a message for a
//! connection, the memberships a close ended). The daemon connects the port
//! to the `MiNode` it runs on the runtime's core driver
//! ([`super::uplink`]).
//!
//! **Failures.** Every client has a bounded outgoing queue
//! ([`ServerConfig::queue_per_client`] frames and
//! [`ServerConfig::max_queued_bytes`] bytes). A client that does not read
//! and fills it is excluded: nothing more is sent, its connection is
//! closed, and the core treats it like a dead process (its memberships
//! leave at once). Bad input (an oversized frame, a malformed body, a
//! second `Hello`, a request before `Hello`) closes that connection only.

use crate::proto::{
    answer_hello, decode_body, encode_frame, ClientMsg, Event, FrameError, HelloOutcome, ServerMsg,
    LEN_PREFIX,
};
use membership::appgroup::AppError;
use membership::mi::{ConnId, MembershipId, Op, SessionConfig, ToClient};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

/// Default socket mode: owner and group may connect.
pub const DEFAULT_MODE: u32 = 0o660;
/// Default [`ServerConfig::max_clients`].
pub const DEFAULT_MAX_CLIENTS: usize = 1024;
/// Default [`ServerConfig::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ServerConfig::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`ServerConfig::max_inflight_per_client`].
pub const DEFAULT_MAX_INFLIGHT: usize = 64;
/// Default [`ServerConfig::queue_per_client`] (frames).
pub const DEFAULT_QUEUE_PER_CLIENT: usize = 1024;
/// Default [`ServerConfig::max_queued_bytes`] (64 MiB).
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 64 << 20;
/// Most tasks refusing connections over [`ServerConfig::max_clients`] at
/// once; further connections are closed without an answer.
pub const MAX_REFUSERS: usize = 64;
/// How long a refusal task waits for its client to read the refusal.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes a refusal task reads (and discards) from its client at most.
const REFUSE_DRAIN: usize = 64 << 10;
/// Bytes gathered into one write to a client, at most (one frame may be
/// longer).
const WRITE_BATCH: usize = 256 << 10;
/// Longest host name accepted in [`ServerConfig::host`].
pub const MAX_HOST: usize = 255;

/// How the server behaves. [`ServerConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The socket path.
    pub socket: PathBuf,
    /// The socket's mode, set after bind (at most `0o777`).
    pub mode: u32,
    /// Connections served at once (at least 1), handshakes included.
    pub max_clients: usize,
    /// The MI's host name: the `host` of every member joined here.
    pub host: String,
    /// How long a request waits for the mservers' answer (the MI core's
    /// one request timeout, `MiAgentConfig::op_timeout`).
    pub request_timeout: Duration,
    /// How long a new connection has to send its `Hello`.
    pub handshake_timeout: Duration,
    /// Requests in flight per connection (at least 1).
    pub max_inflight_per_client: usize,
    /// Frames queued for a client before it is excluded (at least 1).
    /// It must hold the largest burst of views the uplink hands over at
    /// once (a client that reads is still excluded if a burst outruns its
    /// writer by more than this); the default, 1024, is well above what
    /// one mserver push carries.
    pub queue_per_client: usize,
    /// Bytes queued for a client before it is excluded (at least
    /// [`crate::proto::MAX_FRAME`] plus the prefix, so any one frame fits).
    pub max_queued_bytes: usize,
}

impl ServerConfig {
    /// The defaults for a socket at `socket` on host `host`.
    pub fn new(socket: impl Into<PathBuf>, host: impl Into<String>) -> Self {
        ServerConfig {
            socket: socket.into(),
            mode: DEFAULT_MODE,
            max_clients: DEFAULT_MAX_CLIENTS,
            host: host.into(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_inflight_per_client: DEFAULT_MAX_INFLIGHT,
            queue_per_client: DEFAULT_QUEUE_PER_CLIENT,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
        }
    }

    /// Checks every field; the error is one line.
    pub fn validate(&self) -> Result<(), String> {
        if self.mode > 0o777 {
            return Err(format!("socket mode {:o} is above 777", self.mode));
        }
        if self.max_clients == 0 {
            return Err("max clients must be at least 1".into());
        }
        if self.max_inflight_per_client == 0 {
            return Err("max requests in flight per client must be at least 1".into());
        }
        if self.queue_per_client == 0 {
            return Err("the per-client queue must hold at least 1 frame".into());
        }
        if self.max_queued_bytes < crate::proto::MAX_FRAME + LEN_PREFIX {
            return Err(format!(
                "the per-client queue must hold at least {} bytes (one frame)",
                crate::proto::MAX_FRAME + LEN_PREFIX
            ));
        }
        if self.request_timeout.is_zero() || self.handshake_timeout.is_zero() {
            return Err("timeouts must be above zero".into());
        }
        check_host(&self.host)
    }

    /// The core's session settings from these: member ids stamped from
    /// `unix_ms_at_zero` (the Unix time at the core's `Instant::ZERO`) and
    /// drawn from `seed`.
    pub fn session_config(&self, unix_ms_at_zero: u64, seed: u64) -> SessionConfig {
        SessionConfig {
            host: self.host.clone(),
            max_inflight: self.max_inflight_per_client,
            max_buffered: self.queue_per_client,
            unix_ms_at_zero,
            seed,
        }
    }
}

/// Checks a host name for [`ServerConfig::host`]: 1 to [`MAX_HOST`]
/// printable characters without spaces.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host name is empty".into());
    }
    if host.chars().count() > MAX_HOST {
        return Err(format!(
            "the host name is longer than {MAX_HOST} characters"
        ));
    }
    if let Some(c) = host.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("the host name holds {c:?}"));
    }
    Ok(())
}

/// Why the server cannot start, or stopped. Every message is one line and
/// names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error("invalid member-interface configuration: {0}")]
    Config(String),
    /// Another MI answers on the socket path.
    #[error("another member-interface is listening on {}", path.display())]
    Live {
        /// The socket path.
        path: PathBuf,
    },
    /// The path exists and is not a socket.
    #[error("{} exists and is not a socket (refusing to replace it)", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The socket's directory is missing or not writable.
    #[error("cannot create the socket in {}: {source}", dir.display())]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The path could not be examined, or a stale socket removed.
    #[error("cannot use {}: {source}", path.display())]
    Path {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Binding failed for another reason.
    #[error("cannot listen on {}: {source}", path.display())]
    Bind {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The socket's mode could not be set.
    #[error("cannot set mode {mode:o} on {}: {source}", path.display())]
    Mode {
        /// The path.
        path: PathBuf,
        /// The mode.
        mode: u32,
        /// The OS error.
        source: io::Error,
    },
    /// The core stopped (its port closed): no view can be delivered any
    /// more, so the server stopped.
    #[error("the uplink to the mservers stopped: no more views can be delivered")]
    UplinkClosed,
}

/// What the server did until it was asked to stop (the connections it
/// closes then are not counted), returned when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections that completed the handshake.
    pub accepted: u64,
    /// Connections refused with [`AppError::TooManyClients`] (or closed
    /// unanswered when [`MAX_REFUSERS`] were busy).
    pub refused_too_many: u64,
    /// Connections closed at the handshake: another version, garbage, no
    /// `Hello` in time.
    pub refused_handshake: u64,
    /// Served connections closed after bad input (oversized or malformed
    /// frame, second `Hello`).
    pub bad_input: u64,
    /// Clients excluded because their outgoing queue was full.
    pub excluded: u64,
    /// Served connections that closed while holding memberships (dead
    /// processes, dropped clients, exclusions).
    pub deaths: u64,
    /// Memberships ended by those closes (one `Leave` each, sent by the
    /// core).
    pub memberships_ended: u64,
    /// Requests received.
    pub requests: u64,
    /// `Event::View`s queued for clients.
    pub views_delivered: u64,
}

/// What the server hands the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToCore {
    /// A connection passed its handshake.
    Open {
        /// The connection.
        conn: ConnId,
        /// How the client describes itself (for logs).
        client: String,
    },
    /// A request of a connection.
    Request {
        /// The connection.
        conn: ConnId,
        /// The client's request id.
        id: u64,
        /// What it asks.
        op: Op,
    },
    /// A connection closed, or was excluded: its memberships leave.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// A view for a membership does not fit in a frame: it is excluded.
    Undeliverable {
        /// The connection.
        conn: ConnId,
        /// The membership.
        membership: MembershipId,
    },
}

/// What the core hands the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromCore {
    /// A message for a connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: ToClient,
    },
    /// A [`ToCore::Close`] ended this many memberships.
    Closed {
        /// The connection.
        conn: ConnId,
        /// Memberships ended (each left).
        memberships: usize,
    },
}

/// The server's two channels to the core. Whoever drives the core takes
/// every [`ToCore`] in order and sends back every [`FromCore`]; when it
/// stops (closes `from_core`), the server stops with
/// [`ServerError::UplinkClosed`].
#[derive(Debug)]
pub struct CorePort {
    /// Inputs for the core.
    pub to_core: mpsc::UnboundedSender<ToCore>,
    /// What the core sends connections.
    pub from_core: mpsc::UnboundedReceiver<FromCore>,
}

/// One served connection as the pump sees it: where its frames go.
struct Conn {
    client: String,
    out: mpsc::Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    kill: Arc<Notify>,
}

/// The state the accept loop, the connection tasks and the core's output
/// share (under one mutex, never held across an await): where each
/// connection's frames go, and the counters. No session state: that is
/// the core's.
struct Pump {
    to_core: mpsc::UnboundedSender<ToCore>,
    queue_per_client: usize,
    max_queued_bytes: usize,
    conns: BTreeMap<ConnId, Conn>,
    stats: ServerStats,
}

type Shared = Arc<Mutex<Pump>>;

fn lock(pump: &Mutex<Pump>) -> MutexGuard<'_, Pump> {
    pump.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pump {
    fn new(config: &ServerConfig, to_core: mpsc::UnboundedSender<ToCore>) -> Pump {
        Pump {
            to_core,
            queue_per_client: config.queue_per_client,
            max_queued_bytes: config.max_queued_bytes,
            conns: BTreeMap::new(),
            stats: ServerStats::default(),
        }
    }

    fn core(&self, input: ToCore) {
        // A stopped core is noticed by the run loop (its output closes).
        let _ = self.to_core.send(input);
    }

    /// Registers a connection that passed the handshake.
    fn add_conn(&mut self, id: ConnId, client: String) -> (mpsc::Receiver<Vec<u8>>, Handle) {
        let (out, rx) = mpsc::channel(self.queue_per_client.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        let kill = Arc::new(Notify::new());
        self.conns.insert(
            id,
            Conn {
                client: client.clone(),
                out,
                queued: Arc::clone(&queued),
                kill: Arc::clone(&kill),
            },
        );
        self.stats.accepted += 1;
        self.core(ToCore::Open { conn: id, client });
        (rx, Handle { queued, kill })
    }

    /// Queues one frame for `conn`; a full queue excludes the client.
    /// Whether the frame was queued.
    fn push(&mut self, conn: ConnId, frame: Vec<u8>) -> bool {
        let Some(c) = self.conns.get(&conn) else {
            return false;
        };
        let len = frame.len();
        if c.queued.load(Ordering::Relaxed) + len <= self.max_queued_bytes {
            match c.out.try_send(frame) {
                Ok(()) => {
                    c.queued.fetch_add(len, Ordering::Relaxed);
                    return true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(_)) => {}
            }
        }
        tracing::info!(conn, client = %c.client, "client excluded: it does not read its events");
        c.kill.notify_one();
        self.stats.excluded += 1;
        self.drop_conn(conn);
        false
    }

    /// Writes what the core sends a connection.
    fn deliver(&mut self, conn: ConnId, msg: ToClient) {
        let membership = match &msg {
            ToClient::Event(Event::View { membership_id, .. }) => Some(*membership_id),
            _ => None,
        };
        let frame = match msg {
            ToClient::Response { id, result } => {
                match encode_frame(&ServerMsg::Response { id, result }) {
                    Ok(f) => f,
                    Err(e) => {
                        let result =
                            Err(AppError::Internal(format!("cannot send the answer: {e}")));
                        match encode_frame(&ServerMsg::Response { id, result }) {
                            Ok(f) => f,
                            Err(_) => return,
                        }
                    }
                }
            }
            ToClient::Event(event) => match encode_frame(&ServerMsg::Event(event)) {
                Ok(f) => f,
                Err(e) => {
                    // A view beyond the frame limit cannot reach this
                    // member: the core excludes it rather than miss a view.
                    tracing::warn!(conn, ?membership, "event not deliverable: {e}");
                    if let Some(membership) = membership {
                        self.core(ToCore::Undeliverable { conn, membership });
                    }
                    return;
                }
            },
        };
        if self.push(conn, frame) && membership.is_some() {
            self.stats.views_delivered += 1;
        }
    }

    /// One output of the core.
    fn on_core(&mut self, out: FromCore) {
        match out {
            FromCore::Send { conn, msg } => self.deliver(conn, msg),
            FromCore::Closed { memberships, .. } => {
                if memberships > 0 {
                    self.stats.deaths += 1;
                    self.stats.memberships_ended += memberships as u64;
                }
            }
        }
    }

    /// A connection is gone (closed, excluded, or the server stops): the
    /// core ends its memberships.
    fn drop_conn(&mut self, conn: ConnId) {
        if self.conns.remove(&conn).is_some() {
            self.core(ToCore::Close { conn });
        }
    }
}

/// What a connection task keeps of its pump entry.
struct Handle {
    queued: Arc<AtomicUsize>,
    kill: Arc<Notify>,
}

/// A bound socket, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    listener: UnixListener,
    socket: SocketFile,
}

/// Removes the socket file when dropped, if it is still the one bound.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), "cannot remove the socket: {e}");
                }
            }
        }
    }
}

/// How long the check for a live MI on an existing socket may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Takes `path` for a new socket: refuses a live MI's socket and anything
/// that is not a socket, removes a stale socket.
async fn claim(path: &Path) -> Result<(), ServerError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ServerError::Path {
                path: path.to_owned(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket {
            path: path.to_owned(),
        });
    }
    match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
        // Connected, or so busy it did not accept in time: someone listens.
        Ok(Ok(_)) | Err(_) => Err(ServerError::Live {
            path: path.to_owned(),
        }),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale socket (nobody listens on it)");
            std::fs::remove_file(path).map_err(|source| ServerError::Path {
                path: path.to_owned(),
                source,
            })
        }
        Ok(Err(source)) => Err(ServerError::Path {
            path: path.to_owned(),
            source,
        }),
    }
}

impl Server {
    /// Binds the socket of `config` (see the [module docs](self) for the
    /// path rules) and sets its mode. Must be called inside a tokio
    /// runtime.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate().map_err(ServerError::Config)?;
        let path = config.socket.clone();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ServerError::Directory {
                    dir,
                    source: io::Error::other("not a directory"),
                })
            }
            Err(source) => return Err(ServerError::Directory { dir, source }),
        }
        claim(&path).await?;
        let listener = UnixListener::bind(&path).map_err(|source| match source.kind() {
            io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound => {
                ServerError::Directory { dir, source }
            }
            io::ErrorKind::AddrInUse => ServerError::Live { path: path.clone() },
            _ => ServerError::Bind {
                path: path.clone(),
                source,
            },
        })?;
        let meta = std::fs::symlink_metadata(&path).map_err(|source| ServerError::Path {
            path: path.clone(),
            source,
        })?;
        let socket = SocketFile {
            path: path.clone(),
            dev: meta.dev(),
            ino: meta.ino(),
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(config.mode)).map_err(
            |source| ServerError::Mode {
                path: path.clone(),
                mode: config.mode,
                source,
            },
        )?;
        tracing::info!(path = %path.display(), mode = format!("{:o}", config.mode), "member-interface socket listening");
        Ok(Server {
            config,
            listener,
            socket,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.socket.path
    }

    /// Serves clients until `shutdown` resolves (then `Ok` with the
    /// statistics) or the core stops ([`ServerError::UplinkClosed`]).
    /// Either way every connection is closed, each of its memberships is
    /// left (best effort: the `Leave`s are spawned, not awaited), and the
    /// socket file is removed.
    pub async fn run(
        self,
        port: CorePort,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ServerStats, ServerError> {
        let CorePort {
            to_core,
            mut from_core,
        } = port;
        let Server {
            config,
            listener,
            socket,
        } = self;
        let hub: Shared = Arc::new(Mutex::new(Pump::new(&config, to_core)));
        let config = Arc::new(config);
        let live = Arc::new(AtomicUsize::new(0));
        let refusers = Arc::new(AtomicUsize::new(0));
        let mi = format!(
            "member-interface on {} (pid {})",
            config.host,
            std::process::id()
        );
        let mi: Arc<str> = Arc::from(mi);
        let mut tasks = JoinSet::new();
        let mut next_conn: ConnId = 0;
        tokio::pin!(shutdown);
        let outcome = loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                d = from_core.recv() => match d {
                    Some(d) => lock(&hub).on_core(d),
                    None => {
                        tracing::error!("the uplink closed its channel: stopping the member-interface server");
                        break Err(ServerError::UplinkClosed);
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        next_conn += 1;
                        if live.load(Ordering::Relaxed) >= config.max_clients {
                            lock(&hub).stats.refused_too_many += 1;
                            tracing::debug!(conn = next_conn, "connection refused: too many clients");
                            refuse_busy(stream, &refusers);
                        } else {
                            live.fetch_add(1, Ordering::Relaxed);
                            let slot = Slot(Arc::clone(&live));
                            tracing::debug!(conn = next_conn, "connection accepted");
                            tasks.spawn(connection(stream, next_conn, Arc::clone(&hub), Arc::clone(&config), Arc::clone(&mi), slot));
                        }
                    }
                    Err(e) => {
                        // Out of file descriptors, typically: wait a little
                        // rather than spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
            }
        };
        drop(listener);
        drop(socket);
        let stats = {
            let mut h = lock(&hub);
            // What the core said until now still counts.
            while let Ok(d) = from_core.try_recv() {
                h.on_core(d);
            }
            // The statistics stop here: the closes below are the server's.
            let stats = h.stats.clone();
            let conns: Vec<ConnId> = h.conns.keys().copied().collect();
            tracing::info!(connections = conns.len(), "closing every connection");
            for conn in conns {
                if let Some(c) = h.conns.get(&conn) {
                    c.kill.notify_one();
                }
                h.drop_conn(conn);
            }
            stats
        };
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        tracing::info!(?stats, "member-interface server stopped");
        outcome.map(|()| stats)
    }
}

/// Binds per `config` and serves until `shutdown` resolves: [`Server::bind`]
/// then [`Server::run`], talking to the core through `port`.
pub async fn serve(
    config: ServerConfig,
    port: CorePort,
    shutdown: impl Future<Output = ()>,
) -> Result<ServerStats, ServerError> {
    Server::bind(config).await?.run(port, shutdown).await
}

/// A counted connection; uncounted when its task ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Refuses a connection over the limit with `TooManyClients`, in a task of
/// its own, if fewer than [`MAX_REFUSERS`] are busy; otherwise closes it.
fn refuse_busy(stream: UnixStream, refusers: &Arc<AtomicUsize>) {
    if refusers.fetch_add(1, Ordering::Relaxed) >= MAX_REFUSERS {
        refusers.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let slot = Slot(Arc::clone(refusers));
    tokio::spawn(async move {
        let _slot = slot;
        let mut stream = stream;
        let refusal = ServerMsg::Refused {
            reason: AppError::TooManyClients,
        };
        let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
            if let Ok(frame) = encode_frame(&refusal) {
                if stream.write_all(&frame).await.is_err() {
                    return;
                }
            }
            // Read what the client sends until it closes, so it is not
            // reset with unread bytes before it read the refusal.
            drain(&mut stream).await;
        })
        .await;
    });
}

/// Reads and discards up to [`REFUSE_DRAIN`] bytes, until the end.
async fn drain<R: AsyncRead + Unpin>(r: &mut R) {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while total < REFUSE_DRAIN {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

/// Writes one frame, bounded by `limit`; whether it was written.
async fn write_within<W: AsyncWrite + Unpin>(w: &mut W, msg: &ServerMsg, limit: Duration) -> bool {
    let Ok(frame) = encode_frame(msg) else {
        return false;
    };
    matches!(
        tokio::time::timeout(limit, w.write_all(&frame)).await,
        Ok(Ok(()))
    )
}

/// One connection: the handshake, then its reader and writer until either
/// ends or the client is excluded.
async fn connection(
    stream: UnixStream,
    conn: ConnId,
    hub: Shared,
    config: Arc<ServerConfig>,
    mi: Arc<str>,
    _slot: Slot,
) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let hello =
        match tokio::time::timeout(config.handshake_timeout, crate::proto::read_frame(&mut rd))
            .await
        {
            Ok(Ok(Some(body))) => body,
            Ok(Ok(None)) => {
                tracing::debug!(conn, "connection closed before its hello");
                lock(&hub).stats.refused_handshake += 1;
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(conn, "connection refused: bad hello frame: {e}");
                lock(&hub).stats.refused_handshake += 1;
                return;
            }
            Err(_) => {
                tracing::debug!(conn, "connection refused: no hello in time");
                lock(&hub).stats.refused_handshake += 1;
                return;
            }
        };
    let client = match answer_hello(&hello, &mi) {
        HelloOutcome::Accept { client, reply } => {
            if !write_within(&mut wr, &reply, config.handshake_timeout).await {
                tracing::debug!(conn, "connection closed during the handshake");
                return;
            }
            client
        }
        HelloOutcome::Refuse { reply } => {
            tracing::debug!(conn, ?reply, "connection refused: another protocol version");
            lock(&hub).stats.refused_handshake += 1;
            if write_within(&mut wr, &reply, config.handshake_timeout).await {
                let _ = tokio::time::timeout(REFUSE_TIMEOUT, drain(&mut rd)).await;
            }
            return;
        }
        HelloOutcome::Garbage => {
            tracing::debug!(
                conn,
                "connection refused: not the member-interface protocol"
            );
            lock(&hub).stats.refused_handshake += 1;
            return;
        }
    };
    let (mut out, handle) = lock(&hub).add_conn(conn, client.clone());
    tracing::debug!(conn, %client, "client served");
    let reader = async {
        loop {
            let body = match crate::proto::read_frame(&mut rd).await {
                Ok(Some(body)) => body,
                Ok(None) => return "closed",
                Err(FrameError::Io(_)) => return "closed",
                Err(e) => {
                    tracing::info!(conn, %client, "closing the connection: {e}");
                    lock(&hub).stats.bad_input += 1;
                    return "bad frame";
                }
            };
            match decode_body::<ClientMsg>(&body) {
                Ok(ClientMsg::Request { id, op }) => {
                    let mut h = lock(&hub);
                    h.stats.requests += 1;
                    h.core(ToCore::Request { conn, id, op });
                }
                Ok(ClientMsg::Hello { .. }) => {
                    tracing::info!(conn, %client, "closing the connection: a second hello");
                    lock(&hub).stats.bad_input += 1;
                    return "second hello";
                }
                Err(e) => {
                    tracing::info!(conn, %client, "closing the connection: {e}");
                    lock(&hub).stats.bad_input += 1;
                    return "malformed frame";
                }
            }
        }
    };
    let writer = async {
        // Every frame queued meanwhile goes in one write, so the writer
        // keeps up with bursts of views however the tasks are scheduled.
        let mut batch = Vec::new();
        while let Some(frame) = out.recv().await {
            batch.clear();
            batch.extend_from_slice(&frame);
            while batch.len() < WRITE_BATCH {
                match out.try_recv() {
                    Ok(frame) => batch.extend_from_slice(&frame),
                    Err(_) => break,
                }
            }
            if wr.write_all(&batch).await.is_err() {
                return;
            }
            handle.queued.fetch_sub(batch.len(), Ordering::Relaxed);
            if batch.capacity() > 2 * WRITE_BATCH {
                batch = Vec::new();
            }
        }
    };
    let why = tokio::select! {
        why = reader => why,
        () = writer => "write failed",
        () = handle.kill.notified() => "excluded",
    };
    lock(&hub).drop_conn(conn);
    tracing::debug!(conn, %client, why, "connection closed");
}
