//! The MI daemon's local side: the Unix-socket server application processes
//! connect to (seed 003, section II.B.4 "Member Interfaces": a process
//! hands its requests to the MI of its host and receives every view of its
//! groups from it; DESIGN.md section 6; `docs/appgroups-design.md`, "Views
//! to processes").
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
//! [`proto::answer_hello`]. At most [`ServerConfig::max_clients`]
//! connections are served (those still in their handshake count); one more
//! is refused with [`AppError::TooManyClients`] by a small task (at most
//! [`MAX_REFUSERS`] at once, each bounded in time; beyond that the
//! connection is simply closed).
//!
//! **Requests.** Each request becomes an [`UpCall`] to the uplink, answered
//! within [`ServerConfig::request_timeout`] ([`AppError::Timeout`]; a
//! dropped call is [`AppError::Disconnected`]); at most
//! [`ServerConfig::max_inflight_per_client`] per connection are in flight
//! ([`AppError::Busy`] beyond). Memberships belong to the connection that
//! joined: a [`MembershipId`] per join (a counter per connection) names the
//! group, the member's id (drawn here, a UUID v7) and the last view number
//! delivered. Joining a group twice on one connection is
//! [`AppError::AlreadyMember`] and leaving an unknown membership
//! [`AppError::NotMember`], both without asking the uplink.
//!
//! **Views.** Each [`Downcall::View`] goes to every local membership of its
//! group whose last delivered number is lower, in order, and never before
//! the `Joined` answer of that membership: views that arrive while a join
//! is in flight wait for its answer. [`Downcall::Lost`] ends a membership
//! with `Event::Ended`.
//!
//! **Failures.** Every client has a bounded outgoing queue
//! ([`ServerConfig::queue_per_client`] frames and
//! [`ServerConfig::max_queued_bytes`] bytes). A client that does not read
//! and fills it is excluded: nothing more is sent, its connection is
//! closed, and it is treated like a dead process. A connection that closes
//! (the process died or dropped its client) leaves every group it joined
//! at once: one `Leave` per membership, sent without waiting. Bad input (an
//! oversized frame, a malformed body, a second `Hello`, a request before
//! `Hello`) closes that connection only.

use super::uplink_api::{Downcall, UpCall, UpReply, UpRequest};
use crate::proto::{
    answer_hello, decode_body, encode_frame, ClientMsg, Event, FrameError, HelloOutcome,
    MembershipId, Op, Reply, ServerMsg, LEN_PREFIX,
};
use membership::appgroup::{AppError, AppMember, AppView, GroupName, MemberInfo};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinSet;
use uuid::Uuid;

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
/// How many request timeouts a join that timed out is still watched for a
/// late success (which is then left at once, so no member lingers).
const LATE_JOIN_TIMEOUTS: u32 = 6;

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
    /// How long a request waits for the uplink's answer.
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
    /// The uplink closed its downcall channel: no view can be delivered
    /// any more, so the server stopped.
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
    /// Memberships ended by those closes (one `Leave` each).
    pub memberships_ended: u64,
    /// Requests received.
    pub requests: u64,
    /// `Event::View`s queued for clients.
    pub views_delivered: u64,
}

type ConnId = u64;

/// Where a membership stands.
#[derive(Debug)]
enum State {
    /// The join is in flight: views of the group wait here for its answer.
    Joining {
        buffered: Vec<AppView>,
        /// The uplink removed the member before the answer came.
        lost: Option<AppError>,
        /// Too many views waited: the membership ends once joined.
        overflow: bool,
    },
    /// Joined; the number of the last view delivered.
    Member { last: u64 },
    /// A leave was asked (views are no longer delivered); kept until the
    /// uplink confirms, so a close resends it if it failed.
    Leaving,
}

#[derive(Debug)]
struct Mship {
    group: GroupName,
    member: Uuid,
    state: State,
}

/// One served connection as the hub sees it.
struct Conn {
    client: String,
    out: mpsc::Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    kill: Arc<Notify>,
    next_mid: u64,
    inflight: usize,
    memberships: BTreeMap<MembershipId, Mship>,
}

/// The state every connection task, request task and the downcall loop
/// share (under one mutex, never held across an await).
struct Hub {
    up: mpsc::Sender<UpCall>,
    host: String,
    request_timeout: Duration,
    max_inflight: usize,
    queue_per_client: usize,
    max_queued_bytes: usize,
    conns: BTreeMap<ConnId, Conn>,
    by_group: BTreeMap<GroupName, BTreeSet<(ConnId, MembershipId)>>,
    by_member: BTreeMap<Uuid, (ConnId, MembershipId)>,
    stats: ServerStats,
}

type Shared = Arc<Mutex<Hub>>;

fn lock(hub: &Mutex<Hub>) -> MutexGuard<'_, Hub> {
    hub.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Hands `request` to the uplink and waits for the answer until
/// `timeout`. On a timeout after the call was handed over, the receiver is
/// returned too, so a late answer can still be looked at.
async fn ask(
    up: &mpsc::Sender<UpCall>,
    request: UpRequest,
    timeout: Duration,
) -> (
    Result<UpReply, AppError>,
    Option<oneshot::Receiver<Result<UpReply, AppError>>>,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let (tx, mut rx) = oneshot::channel();
    let call = UpCall { request, reply: tx };
    match tokio::time::timeout_at(deadline, up.send(call)).await {
        Err(_) => return (Err(AppError::Timeout), None),
        Ok(Err(_)) => return (Err(AppError::Disconnected), None),
        Ok(Ok(())) => {}
    }
    match tokio::time::timeout_at(deadline, &mut rx).await {
        Ok(Ok(result)) => (result, None),
        Ok(Err(_)) => (Err(AppError::Disconnected), None),
        Err(_) => (Err(AppError::Timeout), Some(rx)),
    }
}

fn unexpected(reply: &UpReply) -> AppError {
    AppError::Internal(format!("the uplink gave an unexpected answer: {reply:?}"))
}

impl Hub {
    fn new(config: &ServerConfig, up: mpsc::Sender<UpCall>) -> Hub {
        Hub {
            up,
            host: config.host.clone(),
            request_timeout: config.request_timeout,
            max_inflight: config.max_inflight_per_client,
            queue_per_client: config.queue_per_client,
            max_queued_bytes: config.max_queued_bytes,
            conns: BTreeMap::new(),
            by_group: BTreeMap::new(),
            by_member: BTreeMap::new(),
            stats: ServerStats::default(),
        }
    }

    /// Registers a connection that passed the handshake.
    fn add_conn(&mut self, id: ConnId, client: String) -> (mpsc::Receiver<Vec<u8>>, Conn2) {
        let (out, rx) = mpsc::channel(self.queue_per_client.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        let kill = Arc::new(Notify::new());
        self.conns.insert(
            id,
            Conn {
                client,
                out,
                queued: Arc::clone(&queued),
                kill: Arc::clone(&kill),
                next_mid: 1,
                inflight: 0,
                memberships: BTreeMap::new(),
            },
        );
        self.stats.accepted += 1;
        (rx, Conn2 { queued, kill })
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

    /// Answers request `id` of `conn`.
    fn respond(&mut self, conn: ConnId, id: u64, result: Result<Reply, AppError>) -> bool {
        let frame = match encode_frame(&ServerMsg::Response { id, result }) {
            Ok(f) => f,
            Err(e) => {
                let result = Err(AppError::Internal(format!("cannot send the answer: {e}")));
                match encode_frame(&ServerMsg::Response { id, result }) {
                    Ok(f) => f,
                    Err(_) => return false,
                }
            }
        };
        self.push(conn, frame)
    }

    /// Answers a request that was counted in flight.
    fn finish(&mut self, conn: ConnId, id: u64, result: Result<Reply, AppError>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.inflight = c.inflight.saturating_sub(1);
            self.respond(conn, id, result);
        }
    }

    /// Forgets one membership; whether it existed.
    fn forget(&mut self, conn: ConnId, mid: MembershipId) -> Option<Mship> {
        let m = self.conns.get_mut(&conn)?.memberships.remove(&mid)?;
        self.unindex(conn, mid, &m);
        Some(m)
    }

    fn unindex(&mut self, conn: ConnId, mid: MembershipId, m: &Mship) {
        if let Some(set) = self.by_group.get_mut(&m.group) {
            set.remove(&(conn, mid));
            if set.is_empty() {
                self.by_group.remove(&m.group);
            }
        }
        if self.by_member.get(&m.member) == Some(&(conn, mid)) {
            self.by_member.remove(&m.member);
        }
    }

    /// Sends `Leave` for a member without waiting for the answer.
    fn fire_leave(&self, group: GroupName, member: Uuid) {
        let up = self.up.clone();
        let timeout = self.request_timeout;
        tokio::spawn(async move {
            let (result, _) = ask(&up, UpRequest::Leave { group, member }, timeout).await;
            tracing::debug!(%member, ?result, "leave of a gone member");
        });
    }

    /// A connection is gone (closed, excluded, or the server stops): every
    /// membership it holds leaves its group. A join still in flight is
    /// left by its own task when the answer comes.
    fn drop_conn(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        let n = c.memberships.len();
        for (mid, m) in c.memberships {
            self.unindex(conn, mid, &m);
            if !matches!(m.state, State::Joining { .. }) {
                self.fire_leave(m.group, m.member);
            }
        }
        if n > 0 {
            self.stats.deaths += 1;
            self.stats.memberships_ended += n as u64;
            tracing::info!(conn, client = %c.client, memberships = n, "process gone: its memberships ended");
        }
    }

    /// Starts a join: `AlreadyMember` if this connection is in (or joining)
    /// the group; otherwise the new membership and the member to submit.
    fn start_join(
        &mut self,
        conn: ConnId,
        group: &GroupName,
        info: MemberInfo,
    ) -> Result<(MembershipId, AppMember), AppError> {
        let c = self.conns.get_mut(&conn).ok_or(AppError::Disconnected)?;
        if c.memberships
            .values()
            .any(|m| &m.group == group && !matches!(m.state, State::Leaving))
        {
            return Err(AppError::AlreadyMember);
        }
        let mid = MembershipId(c.next_mid);
        c.next_mid += 1;
        let member = AppMember {
            name: info.name,
            kind: info.kind,
            id: Uuid::now_v7(),
            host: self.host.clone(),
        };
        c.memberships.insert(
            mid,
            Mship {
                group: group.clone(),
                member: member.id,
                state: State::Joining {
                    buffered: Vec::new(),
                    lost: None,
                    overflow: false,
                },
            },
        );
        self.by_group
            .entry(group.clone())
            .or_default()
            .insert((conn, mid));
        self.by_member.insert(member.id, (conn, mid));
        Ok((mid, member))
    }

    /// The uplink answered a join: answer the client, then the views that
    /// came meanwhile (newer than the join's view only).
    fn finish_join(
        &mut self,
        conn: ConnId,
        id: u64,
        mid: MembershipId,
        me: AppMember,
        result: Result<UpReply, AppError>,
    ) {
        let joining = self
            .conns
            .get(&conn)
            .and_then(|c| c.memberships.get(&mid))
            .is_some_and(|m| matches!(m.state, State::Joining { .. }));
        if !joining {
            // The connection went away meanwhile: a committed join leaves.
            if let Ok(UpReply::Joined(view)) = result {
                self.fire_leave(view.group, me.id);
            }
            return;
        }
        let view = match result {
            Ok(UpReply::Joined(view)) => view,
            Ok(other) => {
                self.forget(conn, mid);
                self.finish(conn, id, Err(unexpected(&other)));
                return;
            }
            Err(e) => {
                self.forget(conn, mid);
                self.finish(conn, id, Err(e));
                return;
            }
        };
        let me = view
            .members
            .iter()
            .find(|m| m.id == me.id)
            .cloned()
            .unwrap_or(me);
        let last = view.number;
        let group = view.group.clone();
        // Joined from here on, before the answer is queued: if queueing it
        // excludes the client, the close leaves the group for it.
        let Some(m) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.memberships.get_mut(&mid))
        else {
            return;
        };
        let State::Joining {
            buffered,
            lost,
            overflow,
        } = std::mem::replace(&mut m.state, State::Member { last })
        else {
            return;
        };
        self.finish(
            conn,
            id,
            Ok(Reply::Joined {
                membership_id: mid,
                me: me.clone(),
                view,
            }),
        );
        for v in buffered {
            self.deliver(conn, mid, &v);
        }
        if overflow {
            if self.end(conn, mid, AppError::Excluded) {
                self.fire_leave(group, me.id);
            }
        } else if let Some(reason) = lost {
            self.end(conn, mid, reason);
        }
    }

    /// Ends a membership with `Event::Ended` and forgets it; whether it
    /// was there.
    fn end(&mut self, conn: ConnId, mid: MembershipId, reason: AppError) -> bool {
        if self.forget(conn, mid).is_none() {
            return false;
        }
        let event = ServerMsg::Event(Event::Ended {
            membership_id: mid,
            reason,
        });
        if let Ok(frame) = encode_frame(&event) {
            self.push(conn, frame);
        }
        true
    }

    /// Delivers `view` to one joined membership if it is newer than the
    /// last one it got.
    fn deliver(&mut self, conn: ConnId, mid: MembershipId, view: &AppView) {
        let Some(m) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.memberships.get_mut(&mid))
        else {
            return;
        };
        let State::Member { last } = &mut m.state else {
            return;
        };
        if *last >= view.number {
            return;
        }
        *last = view.number;
        let member = m.member;
        let event = ServerMsg::Event(Event::View {
            membership_id: mid,
            view: view.clone(),
        });
        match encode_frame(&event) {
            Ok(frame) => {
                if self.push(conn, frame) {
                    self.stats.views_delivered += 1;
                }
            }
            Err(e) => {
                // A view beyond the frame limit cannot reach this member:
                // it is excluded rather than miss a view.
                tracing::warn!(conn, ?mid, "view not deliverable: {e}");
                self.end(conn, mid, AppError::Excluded);
                self.fire_leave(view.group.clone(), member);
            }
        }
    }

    /// One downcall from the uplink.
    fn downcall(&mut self, d: Downcall) {
        match d {
            Downcall::View(view) => {
                let keys: Vec<(ConnId, MembershipId)> = match self.by_group.get(&view.group) {
                    Some(set) => set.iter().copied().collect(),
                    None => return,
                };
                let cap = self.queue_per_client;
                for (conn, mid) in keys {
                    let Some(m) = self
                        .conns
                        .get_mut(&conn)
                        .and_then(|c| c.memberships.get_mut(&mid))
                    else {
                        continue;
                    };
                    if matches!(m.state, State::Member { .. }) {
                        self.deliver(conn, mid, &view);
                    } else if let State::Joining {
                        buffered, overflow, ..
                    } = &mut m.state
                    {
                        if *overflow {
                            // Ends once joined; nothing more to keep.
                        } else if buffered.len() >= cap {
                            *overflow = true;
                            buffered.clear();
                        } else {
                            buffered.push(view.clone());
                        }
                    }
                }
            }
            Downcall::Lost {
                group,
                member,
                reason,
            } => {
                let Some(&(conn, mid)) = self.by_member.get(&member) else {
                    return;
                };
                let Some(m) = self
                    .conns
                    .get_mut(&conn)
                    .and_then(|c| c.memberships.get_mut(&mid))
                else {
                    return;
                };
                if m.group != group {
                    return;
                }
                tracing::debug!(conn, ?mid, %reason, "membership lost");
                if let State::Joining { lost, .. } = &mut m.state {
                    *lost = Some(reason);
                } else if matches!(m.state, State::Member { .. }) {
                    self.end(conn, mid, reason);
                } else {
                    self.forget(conn, mid);
                }
            }
        }
    }

    /// Starts a leave: `NotMember` for an unknown membership (or one whose
    /// join is still in flight).
    fn start_leave(
        &mut self,
        conn: ConnId,
        mid: MembershipId,
    ) -> Result<(GroupName, Uuid), AppError> {
        let m = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.memberships.get_mut(&mid))
            .ok_or(AppError::NotMember)?;
        if matches!(m.state, State::Joining { .. }) {
            return Err(AppError::NotMember);
        }
        m.state = State::Leaving;
        Ok((m.group.clone(), m.member))
    }

    /// The uplink answered a leave: the membership is forgotten unless
    /// the leave may not have happened (then a close resends it).
    fn finish_leave(
        &mut self,
        conn: ConnId,
        id: u64,
        mid: MembershipId,
        result: Result<UpReply, AppError>,
    ) {
        let result = match result {
            Ok(UpReply::Left) => Ok(Reply::Left),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e),
        };
        if matches!(
            result,
            Ok(_) | Err(AppError::NotMember | AppError::NoSuchGroup)
        ) {
            self.forget(conn, mid);
        }
        self.finish(conn, id, result);
    }
}

/// What a connection task keeps of its hub entry.
struct Conn2 {
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
    /// statistics) or the uplink closes `down` ([`ServerError::UplinkClosed`]).
    /// Either way every connection is closed, each of its memberships is
    /// left (best effort: the `Leave`s are spawned, not awaited), and the
    /// socket file is removed.
    pub async fn run(
        self,
        up: mpsc::Sender<UpCall>,
        mut down: mpsc::Receiver<Downcall>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ServerStats, ServerError> {
        let Server {
            config,
            listener,
            socket,
        } = self;
        let hub: Shared = Arc::new(Mutex::new(Hub::new(&config, up)));
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
                d = down.recv() => match d {
                    Some(d) => lock(&hub).downcall(d),
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
/// then [`Server::run`]. `up` carries the requests to the uplink, `down`
/// its views and forced ends.
pub async fn serve(
    config: ServerConfig,
    up: mpsc::Sender<UpCall>,
    down: mpsc::Receiver<Downcall>,
    shutdown: impl Future<Output = ()>,
) -> Result<ServerStats, ServerError> {
    Server::bind(config).await?.run(up, down, shutdown).await
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
                Ok(ClientMsg::Request { id, op }) => request(&hub, &config, conn, id, op),
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

/// Handles one request of `conn`: answered at once, or by a task that asks
/// the uplink.
fn request(hub: &Shared, config: &ServerConfig, conn: ConnId, id: u64, op: Op) {
    let mut h = lock(hub);
    h.stats.requests += 1;
    let max = h.max_inflight;
    let Some(c) = h.conns.get_mut(&conn) else {
        return;
    };
    if c.inflight >= max {
        h.respond(conn, id, Err(AppError::Busy));
        return;
    }
    let timeout = config.request_timeout;
    let up = h.up.clone();
    let (request, expect) = match op {
        Op::Join { group, member } => match h.start_join(conn, &group, member) {
            Err(e) => {
                h.respond(conn, id, Err(e));
                return;
            }
            Ok((mid, me)) => {
                count(&mut h, conn);
                let hub = Arc::clone(hub);
                tokio::spawn(async move {
                    let request = UpRequest::Join {
                        group,
                        member: me.clone(),
                    };
                    let (result, late) = ask(&up, request, timeout).await;
                    let member = me.id;
                    lock(&hub).finish_join(conn, id, mid, me, result);
                    if let Some(rx) = late {
                        // The client was told Timeout: a join committed
                        // after all must not leave a member behind.
                        let window = timeout.saturating_mul(LATE_JOIN_TIMEOUTS);
                        if let Ok(Ok(Ok(UpReply::Joined(view)))) =
                            tokio::time::timeout(window, rx).await
                        {
                            tracing::debug!(%member, "a timed-out join committed late: leaving");
                            lock(&hub).fire_leave(view.group, member);
                        }
                    }
                });
                return;
            }
        },
        Op::Leave { membership_id } => match h.start_leave(conn, membership_id) {
            Err(e) => {
                h.respond(conn, id, Err(e));
                return;
            }
            Ok((group, member)) => {
                count(&mut h, conn);
                let hub = Arc::clone(hub);
                tokio::spawn(async move {
                    let (result, _) = ask(&up, UpRequest::Leave { group, member }, timeout).await;
                    lock(&hub).finish_leave(conn, id, membership_id, result);
                });
                return;
            }
        },
        Op::CreateGroup { name, options } => (
            UpRequest::Create {
                group: name,
                options,
            },
            Expect::Created,
        ),
        Op::View { group } => (UpRequest::View { group }, Expect::View),
        Op::Lookup { group, member_name } => (
            UpRequest::Lookup {
                group,
                name: member_name,
            },
            Expect::Member,
        ),
    };
    count(&mut h, conn);
    let hub = Arc::clone(hub);
    tokio::spawn(async move {
        let (result, _) = ask(&up, request, timeout).await;
        let result = match (expect, result) {
            (Expect::Created, Ok(UpReply::Created)) => Ok(Reply::Created),
            (Expect::View, Ok(UpReply::View(v))) => Ok(Reply::View(v)),
            (Expect::Member, Ok(UpReply::Member(m))) => Ok(Reply::Member(m)),
            (_, Ok(other)) => Err(unexpected(&other)),
            (_, Err(e)) => Err(e),
        };
        lock(&hub).finish(conn, id, result);
    });
}

/// The answer a pass-through request expects.
#[derive(Clone, Copy)]
enum Expect {
    Created,
    View,
    Member,
}

fn count(h: &mut Hub, conn: ConnId) {
    if let Some(c) = h.conns.get_mut(&conn) {
        c.inflight += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::decode_body;
    use membership::appgroup::MemberName;

    fn view(n: u64, members: &[&AppMember]) -> AppView {
        AppView {
            group: GroupName::parse("g").expect("group"),
            number: n,
            members: members.iter().map(|m| (*m).clone()).collect(),
        }
    }

    fn frames(rx: &mut mpsc::Receiver<Vec<u8>>) -> Vec<ServerMsg> {
        let mut out = Vec::new();
        while let Ok(f) = rx.try_recv() {
            out.push(decode_body(&f[LEN_PREFIX..]).expect("decode"));
        }
        out
    }

    fn hub() -> (Hub, mpsc::Receiver<UpCall>) {
        let (up, calls) = mpsc::channel(16);
        (Hub::new(&ServerConfig::new("/x", "h"), up), calls)
    }

    /// Views that reach the server while a join is in flight come after
    /// its answer, and only those newer than the join's view.
    #[test]
    fn views_before_the_join_answer_follow_it() {
        let (mut hub, _calls) = hub();
        let (mut rx, _h) = hub.add_conn(1, "c".into());
        let g = GroupName::parse("g").expect("group");
        let info = MemberInfo::new(MemberName::parse("a").expect("name"));
        let (mid, me) = hub.start_join(1, &g, info.clone()).expect("join");
        assert_eq!(
            hub.start_join(1, &g, info).map(|_| ()),
            Err(AppError::AlreadyMember)
        );
        for n in [4, 5, 6] {
            hub.downcall(Downcall::View(view(n, &[&me])));
        }
        assert!(frames(&mut rx).is_empty(), "nothing before the answer");
        hub.finish_join(1, 7, mid, me.clone(), Ok(UpReply::Joined(view(5, &[&me]))));
        hub.downcall(Downcall::View(view(6, &[&me])));
        hub.downcall(Downcall::View(view(7, &[&me])));
        let got = frames(&mut rx);
        assert!(
            matches!(&got[0], ServerMsg::Response { id: 7, result: Ok(Reply::Joined { view, .. }) } if view.number == 5)
        );
        let numbers: Vec<u64> = got[1..]
            .iter()
            .map(|m| match m {
                ServerMsg::Event(Event::View { view, .. }) => view.number,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(numbers, vec![6, 7]);
    }

    /// A member lost while its join was in flight gets the answer, then
    /// its end.
    #[test]
    fn lost_while_joining_ends_after_the_answer() {
        let (mut hub, _calls) = hub();
        let (mut rx, _h) = hub.add_conn(1, "c".into());
        let g = GroupName::parse("g").expect("group");
        let info = MemberInfo::new(MemberName::parse("a").expect("name"));
        let (mid, me) = hub.start_join(1, &g, info).expect("join");
        hub.downcall(Downcall::Lost {
            group: g.clone(),
            member: me.id,
            reason: AppError::Excluded,
        });
        hub.finish_join(1, 1, mid, me.clone(), Ok(UpReply::Joined(view(1, &[&me]))));
        let got = frames(&mut rx);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1],
            ServerMsg::Event(Event::Ended {
                membership_id: mid,
                reason: AppError::Excluded
            })
        );
        assert!(hub.by_group.is_empty() && hub.by_member.is_empty());
        assert_eq!(hub.start_leave(1, mid), Err(AppError::NotMember));
    }
}
