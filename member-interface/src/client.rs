//! The async client library: one connection to the host's member interface,
//! shared by every call and membership made through it (seed 003, section
//! II.B.4; the protocol is [`crate::proto`]).
//!
//! A [`Client`] owns two background tasks on the caller's tokio runtime:
//! a writer that sends the frames the calls queue (a bounded queue of
//! [`OUT_QUEUE`] frames), and a reader that routes every answer to the call
//! waiting for its id and every view to its [`Membership`]'s queue.
//!
//! Bounds and failures:
//!
//! - every call waits at most [`ClientConfig::call_timeout`] (5 s by
//!   default) and then returns [`AppError::Timeout`]; at most
//!   [`ClientConfig::max_pending`] calls may be in flight
//!   ([`AppError::Busy`] beyond);
//! - when the connection closes, or the MI sends something that is not the
//!   protocol, every pending call and every membership of the connection
//!   ends with [`AppError::Disconnected`], and so does every later call;
//! - each membership queues at most [`ClientConfig::view_queue`] views
//!   (1024 by default) that the application has not read yet. A view that
//!   finds the queue full closes the membership instead of growing the
//!   queue: the application still reads the queued views, in order, then
//!   gets [`AppError::Overflow`], and the library leaves the group for it
//!   (so the group's other members see it go: every member receives every
//!   view, in order, or is excluded);
//! - a [`Membership`] dropped without [`Membership::leave`] leaves the group
//!   (best effort: the leave is queued without waiting for the answer), and
//!   so does a join whose answer came after its call gave up.

use crate::proto::{
    decode_body, encode_frame, read_frame, write_frame, ClientMsg, Event, MembershipId, Op, Reply,
    ServerMsg,
};
use futures_core::Stream;
use membership::appgroup::{
    AppError, AppMember, AppView, GroupName, GroupOptions, MemberInfo, MemberName,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

/// Frames a connection queues for its writer before calls wait.
pub const OUT_QUEUE: usize = 64;

/// Largest [`ClientConfig::view_queue`] honoured (larger values are
/// lowered to it).
pub const MAX_VIEW_QUEUE: usize = 1 << 20;

/// How a [`Client`] behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long a call (and the handshake) waits for its answer.
    pub call_timeout: Duration,
    /// How the client describes itself to the MI (for its logs).
    pub name: String,
    /// Views a membership queues before it is closed with
    /// [`AppError::Overflow`] (1 to [`MAX_VIEW_QUEUE`]).
    pub view_queue: usize,
    /// Calls that may be in flight at once on the connection (at least 1).
    pub max_pending: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        let program = std::env::args()
            .next()
            .and_then(|p| {
                Path::new(&p)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "client".into());
        ClientConfig {
            call_timeout: Duration::from_secs(5),
            name: format!("{program} (pid {})", std::process::id()),
            view_queue: 1024,
            max_pending: 1024,
        }
    }
}

/// One entry of a membership's queue.
enum Item {
    View(AppView),
    End(AppError),
}

/// What the reader hands a waiting call.
enum Routed {
    Reply(Reply),
    Joined(JoinTicket),
}

type Waiter = oneshot::Sender<Result<Routed, AppError>>;

/// The connection state the calls and the reader share.
struct State {
    closed: bool,
    next_id: u64,
    pending: BTreeMap<u64, Waiter>,
    memberships: BTreeMap<MembershipId, mpsc::Sender<Item>>,
}

struct Shared {
    state: Mutex<State>,
    out: mpsc::Sender<Vec<u8>>,
    view_queue: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a `Leave` whose answer nobody waits for.
    fn send_leave(&self, id: u64, membership_id: MembershipId) {
        let msg = ClientMsg::Request {
            id,
            op: Op::Leave { membership_id },
        };
        match encode_frame(&msg) {
            Ok(frame) => {
                if self.out.try_send(frame).is_err() {
                    tracing::debug!(?membership_id, "leave not sent: connection busy or closed");
                }
            }
            Err(e) => tracing::warn!(?membership_id, "cannot encode a leave: {e}"),
        }
    }

    /// Forgets a membership nobody reads any more and, if the connection is
    /// still open, leaves its group.
    fn abandon(&self, membership_id: MembershipId) {
        let id = {
            let mut st = self.lock();
            if st.memberships.remove(&membership_id).is_none() || st.closed {
                return;
            }
            let id = st.next_id;
            st.next_id += 1;
            id
        };
        self.send_leave(id, membership_id);
    }

    /// Ends every pending call and membership with `Disconnected`; later
    /// calls fail at once.
    fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        for (_, waiter) in std::mem::take(&mut st.pending) {
            let _ = waiter.send(Err(AppError::Disconnected));
        }
        for (_, tx) in std::mem::take(&mut st.memberships) {
            // The last slot of every queue is kept for this.
            let _ = tx.try_send(Item::End(AppError::Disconnected));
        }
    }

    fn route_response(self: &Arc<Self>, id: u64, result: Result<Reply, AppError>) {
        let mut st = self.lock();
        let waiter = st.pending.remove(&id);
        let routed = match result {
            Ok(Reply::Joined {
                membership_id,
                me,
                view,
            }) => {
                let (tx, rx) = mpsc::channel(self.view_queue + 1);
                let group = view.group.clone();
                // A new channel has room.
                let _ = tx.try_send(Item::View(view));
                if let Some(old) = st.memberships.insert(membership_id, tx) {
                    tracing::warn!(?membership_id, "member interface reused a membership id");
                    let _ = old.try_send(Item::End(AppError::Internal(
                        "the member interface reused this membership's id".into(),
                    )));
                }
                // From here the ticket leaves the group if nobody takes it.
                Ok(Routed::Joined(JoinTicket {
                    shared: Arc::clone(self),
                    membership_id,
                    me,
                    group,
                    events: Some(rx),
                }))
            }
            Ok(reply) => Ok(Routed::Reply(reply)),
            Err(e) => Err(e),
        };
        match waiter {
            // Sent under the lock, so a call that gives up (removing its
            // waiter under the lock) either finds the answer or is not
            // answered at all. A ticket that is not taken is dropped after
            // the lock is released, below.
            Some(w) => {
                let unsent = w.send(routed);
                drop(st);
                drop(unsent);
            }
            None => {
                drop(st);
                drop(routed);
            }
        }
    }

    fn route_event(&self, event: Event) {
        match event {
            Event::View {
                membership_id,
                view,
            } => {
                let mut st = self.lock();
                let Some(tx) = st.memberships.get(&membership_id) else {
                    return; // Left, abandoned, or never ours.
                };
                let outcome = if tx.capacity() > 1 {
                    match tx.try_send(Item::View(view)) {
                        Ok(()) => return,
                        Err(mpsc::error::TrySendError::Closed(_)) => "receiver gone",
                        Err(mpsc::error::TrySendError::Full(_)) => "queue full",
                    }
                } else {
                    let _ = tx.try_send(Item::End(AppError::Overflow));
                    "queue full"
                };
                tracing::debug!(?membership_id, "membership closed: {outcome}");
                st.memberships.remove(&membership_id);
                let id = st.next_id;
                st.next_id += 1;
                let closed = st.closed;
                drop(st);
                if !closed {
                    self.send_leave(id, membership_id);
                }
            }
            Event::Ended {
                membership_id,
                reason,
            } => {
                if let Some(tx) = self.lock().memberships.remove(&membership_id) {
                    let _ = tx.try_send(Item::End(reason));
                }
            }
        }
    }
}

/// A join's answer on its way to the call that asked for it; leaves the
/// group when dropped untaken (the call gave up or was cancelled).
struct JoinTicket {
    shared: Arc<Shared>,
    membership_id: MembershipId,
    me: AppMember,
    group: GroupName,
    events: Option<mpsc::Receiver<Item>>,
}

impl Drop for JoinTicket {
    fn drop(&mut self) {
        if self.events.is_some() {
            self.shared.abandon(self.membership_id);
        }
    }
}

/// Removes its waiter when the call ends, however it ends.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().pending.remove(&self.id);
    }
}

/// The connection: owns the background tasks, stopped when the last
/// [`Client`] clone and [`Membership`] are gone.
struct Conn {
    shared: Arc<Shared>,
    config: ClientConfig,
    mi: String,
    tasks: [AbortHandle; 2],
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Conn {
    async fn call(&self, op: Op) -> Result<Routed, AppError> {
        let (tx, mut rx) = oneshot::channel();
        let id = {
            let mut st = self.shared.lock();
            if st.closed {
                return Err(AppError::Disconnected);
            }
            if st.pending.len() >= self.config.max_pending.max(1) {
                return Err(AppError::Busy);
            }
            let id = st.next_id;
            st.next_id += 1;
            st.pending.insert(id, tx);
            id
        };
        let guard = PendingGuard {
            shared: &self.shared,
            id,
        };
        let frame = encode_frame(&ClientMsg::Request { id, op })
            .map_err(|e| AppError::Internal(e.to_string()))?;
        let deadline = tokio::time::sleep(self.config.call_timeout);
        tokio::pin!(deadline);
        tokio::select! {
            biased;
            sent = self.shared.out.send(frame) => {
                if sent.is_err() {
                    return Err(AppError::Disconnected);
                }
            }
            () = &mut deadline => return Err(AppError::Timeout),
        }
        tokio::select! {
            biased;
            answer = &mut rx => answer.unwrap_or(Err(AppError::Disconnected)),
            () = &mut deadline => {
                drop(guard);
                // The answer may have been routed just before the waiter
                // was removed.
                rx.try_recv().unwrap_or(Err(AppError::Timeout))
            }
        }
    }

    async fn reply(&self, op: Op) -> Result<Reply, AppError> {
        match self.call(op).await? {
            Routed::Reply(r) => Ok(r),
            Routed::Joined(_) => Err(unexpected()),
        }
    }
}

fn unexpected() -> AppError {
    AppError::Internal("the member interface answered with the wrong reply".into())
}

async fn read_loop(rd: OwnedReadHalf, shared: Arc<Shared>) {
    let mut rd = BufReader::new(rd);
    loop {
        let body = match read_frame(&mut rd).await {
            Ok(Some(body)) => body,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("member interface connection: {e}");
                break;
            }
        };
        match decode_body::<ServerMsg>(&body) {
            Ok(ServerMsg::Response { id, result }) => shared.route_response(id, result),
            Ok(ServerMsg::Event(event)) => shared.route_event(event),
            Ok(ServerMsg::Welcome { .. } | ServerMsg::Refused { .. }) => {
                tracing::warn!("member interface sent a handshake frame after the handshake");
                break;
            }
            Err(e) => {
                tracing::warn!("member interface sent a malformed frame: {e}");
                break;
            }
        }
    }
    shared.close();
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut frames: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    while let Some(frame) = frames.recv().await {
        if let Err(e) = write_frame(&mut wr, &frame).await {
            tracing::debug!("member interface connection: {e}");
            break;
        }
    }
    shared.close();
}

fn group_name(name: &str) -> Result<GroupName, AppError> {
    GroupName::parse(name).map_err(AppError::from)
}

/// A connection to the host's member interface (MI). Cheap to clone: the
/// clones share the connection, which closes when the last clone and the
/// last [`Membership`] made through it are dropped.
///
/// Needs a tokio runtime with I/O and time enabled; for programs without
/// one, [`crate::blocking::Client`].
#[derive(Clone)]
pub struct Client {
    conn: Arc<Conn>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("mi", &self.conn.mi).finish()
    }
}

impl Client {
    /// Connects to the MI listening on the Unix socket `path`, with the
    /// default [`ClientConfig`].
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, AppError> {
        Client::connect_with(path, ClientConfig::default()).await
    }

    /// Connects to the MI listening on `path` and does the version
    /// handshake, all within `config.call_timeout`: [`AppError::Connect`]
    /// if the socket cannot be reached, [`AppError::VersionMismatch`] or the
    /// MI's refusal, [`AppError::Timeout`], or [`AppError::Disconnected`] if
    /// the peer does not speak the protocol.
    pub async fn connect_with(
        path: impl AsRef<Path>,
        config: ClientConfig,
    ) -> Result<Client, AppError> {
        let path = path.as_ref();
        let handshake = async {
            let mut stream = UnixStream::connect(path)
                .await
                .map_err(|e| AppError::Connect(format!("{}: {e}", path.display())))?;
            let hello = encode_frame(&ClientMsg::Hello {
                version: crate::proto::VERSION,
                client: config.name.clone(),
            })
            .map_err(|e| AppError::Internal(e.to_string()))?;
            write_frame(&mut stream, &hello)
                .await
                .map_err(|_| AppError::Disconnected)?;
            let body = match read_frame(&mut stream).await {
                Ok(Some(body)) => body,
                Ok(None) | Err(_) => return Err(AppError::Disconnected),
            };
            let mi = crate::proto::check_welcome(&body)?;
            Ok((stream, mi))
        };
        let (stream, mi) = tokio::time::timeout(config.call_timeout, handshake)
            .await
            .map_err(|_| AppError::Timeout)??;
        let (rd, wr) = stream.into_split();
        let (out, frames) = mpsc::channel(OUT_QUEUE);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                closed: false,
                next_id: 1,
                pending: BTreeMap::new(),
                memberships: BTreeMap::new(),
            }),
            out,
            view_queue: config.view_queue.clamp(1, MAX_VIEW_QUEUE),
        });
        let reader = tokio::spawn(read_loop(rd, Arc::clone(&shared)));
        let writer = tokio::spawn(write_loop(wr, frames, Arc::clone(&shared)));
        Ok(Client {
            conn: Arc::new(Conn {
                shared,
                config,
                mi,
                tasks: [reader.abort_handle(), writer.abort_handle()],
            }),
        })
    }

    /// The MI's description of itself, from the handshake.
    pub fn mi(&self) -> &str {
        &self.conn.mi
    }

    /// Whether the connection has closed (every call now fails with
    /// [`AppError::Disconnected`]).
    pub fn is_closed(&self) -> bool {
        self.conn.shared.lock().closed
    }

    /// Creates the application group `name` with `options`. Errors:
    /// [`AppError::InvalidName`] and [`AppError::InvalidOptions`] (checked
    /// here first), [`AppError::NameTaken`].
    pub async fn create_group(
        &self,
        name: impl AsRef<str>,
        options: GroupOptions,
    ) -> Result<(), AppError> {
        let name = group_name(name.as_ref())?;
        options.validate()?;
        match self.conn.reply(Op::CreateGroup { name, options }).await? {
            Reply::Created => Ok(()),
            _ => Err(unexpected()),
        }
    }

    /// Joins the group `group` as `member`. The returned [`Membership`]
    /// yields the view that added this member first, then every later view
    /// of the group. Errors: [`AppError::InvalidName`],
    /// [`AppError::NoSuchGroup`], [`AppError::NameTaken`],
    /// [`AppError::AlreadyMember`].
    pub async fn join(
        &self,
        group: impl AsRef<str>,
        member: MemberInfo,
    ) -> Result<Membership, AppError> {
        let group = group_name(group.as_ref())?;
        match self.conn.call(Op::Join { group, member }).await? {
            Routed::Joined(mut ticket) => {
                let events = ticket.events.take().ok_or_else(unexpected)?;
                Ok(Membership {
                    conn: Arc::clone(&self.conn),
                    id: ticket.membership_id,
                    group: ticket.group.clone(),
                    me: ticket.me.clone(),
                    events,
                    ended: None,
                    done: false,
                })
            }
            Routed::Reply(_) => Err(unexpected()),
        }
    }

    /// The current view of the group `group`.
    pub async fn view(&self, group: impl AsRef<str>) -> Result<AppView, AppError> {
        let group = group_name(group.as_ref())?;
        match self.conn.reply(Op::View { group }).await? {
            Reply::View(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }

    /// The member named `member` of the group `group`, with its address
    /// information. [`AppError::NotMember`] if there is none.
    pub async fn lookup(
        &self,
        group: impl AsRef<str>,
        member: impl AsRef<str>,
    ) -> Result<AppMember, AppError> {
        let group = group_name(group.as_ref())?;
        let member_name = MemberName::parse(member.as_ref()).map_err(AppError::from)?;
        match self.conn.reply(Op::Lookup { group, member_name }).await? {
            Reply::Member(m) => Ok(m),
            _ => Err(unexpected()),
        }
    }
}

/// This process's presence in one application group: the views of the
/// group, in order, from the one that added it on. Also a
/// [`Stream`] of [`AppView`]s that ends when the membership ends
/// ([`Membership::end_reason`] says why).
///
/// Dropping it leaves the group (best effort); [`Membership::leave`] leaves
/// and waits for the MI's answer.
pub struct Membership {
    conn: Arc<Conn>,
    id: MembershipId,
    group: GroupName,
    me: AppMember,
    events: mpsc::Receiver<Item>,
    ended: Option<AppError>,
    /// Left, or nothing more to leave.
    done: bool,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("id", &self.id)
            .field("group", &self.group)
            .field("me", &self.me)
            .field("ended", &self.ended)
            .finish()
    }
}

impl Membership {
    /// The MI's id for this membership.
    pub fn id(&self) -> MembershipId {
        self.id
    }

    /// The group.
    pub fn group(&self) -> &GroupName {
        &self.group
    }

    /// This member as the group sees it (its id and host).
    pub fn me(&self) -> &AppMember {
        &self.me
    }

    /// Why the membership ended, once it has.
    pub fn end_reason(&self) -> Option<&AppError> {
        self.ended.as_ref()
    }

    /// The next view of the group: waits until one is installed (there is
    /// no timeout: a stable group installs none), or the membership ends,
    /// which gives its reason ([`AppError::Disconnected`],
    /// [`AppError::Overflow`], [`AppError::Excluded`], ...) now and on
    /// every later call.
    pub async fn next_view(&mut self) -> Result<AppView, AppError> {
        match std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await {
            Some(view) => Ok(view),
            None => Err(self.ended.clone().unwrap_or(AppError::Disconnected)),
        }
    }

    /// The next view if one is queued (`Ok(None)` if not), without waiting.
    pub fn try_next_view(&mut self) -> Result<Option<AppView>, AppError> {
        if let Some(e) = &self.ended {
            return Err(e.clone());
        }
        match self.events.try_recv() {
            Ok(Item::View(v)) => Ok(Some(v)),
            Ok(Item::End(e)) => Err(self.end(e)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(self.end(AppError::Disconnected)),
        }
    }

    fn end(&mut self, e: AppError) -> AppError {
        self.ended = Some(e.clone());
        e
    }

    /// The group's current view, asked of the MI.
    pub async fn view(&self) -> Result<AppView, AppError> {
        match self
            .conn
            .reply(Op::View {
                group: self.group.clone(),
            })
            .await?
        {
            Reply::View(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }

    /// The member named `member` of this group.
    pub async fn lookup(&self, member: impl AsRef<str>) -> Result<AppMember, AppError> {
        let member_name = MemberName::parse(member.as_ref()).map_err(AppError::from)?;
        match self
            .conn
            .reply(Op::Lookup {
                group: self.group.clone(),
                member_name,
            })
            .await?
        {
            Reply::Member(m) => Ok(m),
            _ => Err(unexpected()),
        }
    }

    /// Leaves the group and waits for the MI to confirm.
    /// [`AppError::NotMember`] if the membership had already ended.
    pub async fn leave(mut self) -> Result<(), AppError> {
        self.done = true;
        self.conn.shared.lock().memberships.remove(&self.id);
        match self
            .conn
            .reply(Op::Leave {
                membership_id: self.id,
            })
            .await?
        {
            Reply::Left => Ok(()),
            _ => Err(unexpected()),
        }
    }
}

impl Stream for Membership {
    type Item = AppView;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AppView>> {
        let this = self.get_mut();
        if this.ended.is_some() {
            return Poll::Ready(None);
        }
        match this.events.poll_recv(cx) {
            Poll::Ready(Some(Item::View(v))) => Poll::Ready(Some(v)),
            Poll::Ready(Some(Item::End(e))) => {
                this.end(e);
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                this.end(AppError::Disconnected);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if !self.done {
            self.conn.shared.abandon(self.id);
        }
    }
}
