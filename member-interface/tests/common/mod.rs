//! **Test double**: a fake member interface for the client library's tests.
//!
//! It speaks the client <-> MI protocol ([`member_interface::proto`]) on a
//! Unix socket in a fresh temporary directory and keeps application groups
//! in memory, on one host, with no mserver behind it. It is not the
//! member-interface daemon and says nothing about it: it exists so that the
//! library can be tested against a peer that behaves well, badly (refuses,
//! answers with another version, sends garbage, never answers, answers out
//! of order or late), and that the test can steer (push views, end
//! memberships, close every connection).
//!
//! It runs on its own thread with its own current-thread runtime, so both
//! async tests and blocking-client tests can use it.

#![allow(dead_code)] // Each test binary uses a different part of it.

use member_interface::proto::{
    answer_hello, decode_body, encode_frame, read_frame, ClientMsg, Event, HelloOutcome,
    MembershipId, Op, Reply, ServerMsg,
};
use member_interface::{AppError, AppMember, AppView, GroupName};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Most connections one fake accepts (the tests need a handful).
const MAX_CONNS: usize = 32;
/// Bound of every queue in the fake.
const QUEUE: usize = 4096;

/// How the fake behaves.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Welcomes every client and answers every request at once.
    Normal,
    /// Answers the client's `Hello` with these raw bytes, then closes.
    HandshakeReply(Vec<u8>),
    /// Reads the `Hello` and never answers.
    SilentHandshake,
    /// Welcomes, then never answers a request (still reports them).
    SilentRequests,
    /// Welcomes, then holds requests until it has this many and answers
    /// them in the reverse order.
    Reverse(usize),
    /// Welcomes, then answers each request after this delay.
    Delay(Duration),
}

enum Ctl {
    Push(MembershipId, AppView),
    End(MembershipId, AppError),
    Raw(Vec<u8>),
    CloseAll,
    Stop,
}

enum Out {
    Frame(Vec<u8>),
    Close,
}

struct Group {
    number: u64,
    members: Vec<(MembershipId, AppMember)>,
}

#[derive(Default)]
struct World {
    conns: BTreeMap<u64, mpsc::Sender<Out>>,
    groups: BTreeMap<GroupName, Group>,
    owners: BTreeMap<MembershipId, (u64, GroupName)>,
    next_mid: u64,
    next_member: u128,
}

impl World {
    fn send(&self, conn: u64, msg: &ServerMsg) {
        if let (Some(tx), Ok(frame)) = (self.conns.get(&conn), encode_frame(msg)) {
            let _ = tx.try_send(Out::Frame(frame));
        }
    }

    fn view(&self, name: &GroupName) -> Option<AppView> {
        self.groups.get(name).map(|g| AppView {
            group: name.clone(),
            number: g.number,
            members: g.members.iter().map(|(_, m)| m.clone()).collect(),
        })
    }

    /// Sends the group's current view to every member but `except`.
    fn broadcast(&self, name: &GroupName, except: Option<MembershipId>) {
        let (Some(view), Some(group)) = (self.view(name), self.groups.get(name)) else {
            return;
        };
        for (mid, _) in &group.members {
            if Some(*mid) == except {
                continue;
            }
            if let Some((conn, _)) = self.owners.get(mid) {
                self.send(
                    *conn,
                    &ServerMsg::Event(Event::View {
                        membership_id: *mid,
                        view: view.clone(),
                    }),
                );
            }
        }
    }

    fn remove_member(&mut self, mid: MembershipId) -> Option<GroupName> {
        let (_, name) = self.owners.remove(&mid)?;
        let group = self.groups.get_mut(&name)?;
        group.members.retain(|(m, _)| *m != mid);
        group.number += 1;
        Some(name)
    }

    /// Answers `op` from connection `conn`, sending the answer and then the
    /// views the change installs.
    fn answer(&mut self, conn: u64, id: u64, op: Op) {
        let mut changed: Option<(GroupName, Option<MembershipId>)> = None;
        let result = match op {
            Op::CreateGroup { name, options } => {
                if let Err(e) = options.validate() {
                    Err(e)
                } else {
                    match self.groups.entry(name) {
                        std::collections::btree_map::Entry::Occupied(_) => Err(AppError::NameTaken),
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            slot.insert(Group {
                                number: 0,
                                members: Vec::new(),
                            });
                            Ok(Reply::Created)
                        }
                    }
                }
            }
            Op::Join { group, member } => {
                let taken_here = self
                    .owners
                    .iter()
                    .any(|(_, (c, g))| *c == conn && *g == group);
                match self.groups.get_mut(&group) {
                    None => Err(AppError::NoSuchGroup),
                    Some(g) if g.members.iter().any(|(_, m)| m.name == member.name) => {
                        Err(AppError::NameTaken)
                    }
                    Some(_) if taken_here => Err(AppError::AlreadyMember),
                    Some(g) => {
                        self.next_mid += 1;
                        self.next_member += 1;
                        let mid = MembershipId(self.next_mid);
                        let me = AppMember {
                            name: member.name,
                            kind: member.kind,
                            id: Uuid::from_u128(self.next_member),
                            host: "fake-host".into(),
                        };
                        g.number += 1;
                        g.members.push((mid, me.clone()));
                        let view = AppView {
                            group: group.clone(),
                            number: g.number,
                            members: g.members.iter().map(|(_, m)| m.clone()).collect(),
                        };
                        self.owners.insert(mid, (conn, group.clone()));
                        changed = Some((group, Some(mid)));
                        Ok(Reply::Joined {
                            membership_id: mid,
                            me,
                            view,
                        })
                    }
                }
            }
            Op::Leave { membership_id } => match self.owners.get(&membership_id) {
                Some((owner, _)) if *owner == conn => {
                    changed = self.remove_member(membership_id).map(|g| (g, None));
                    Ok(Reply::Left)
                }
                _ => Err(AppError::NotMember),
            },
            Op::View { group } => self
                .view(&group)
                .map(Reply::View)
                .ok_or(AppError::NoSuchGroup),
            Op::Lookup { group, member_name } => match self.view(&group) {
                None => Err(AppError::NoSuchGroup),
                Some(v) => v
                    .member(&member_name)
                    .cloned()
                    .map(Reply::Member)
                    .ok_or(AppError::NotMember),
            },
        };
        self.send(conn, &ServerMsg::Response { id, result });
        if let Some((group, except)) = changed {
            self.broadcast(&group, except);
        }
    }

    /// A connection closed: its members leave (the MI notices a process's
    /// death at once).
    fn disconnect(&mut self, conn: u64) {
        self.conns.remove(&conn);
        let mine: Vec<MembershipId> = self
            .owners
            .iter()
            .filter(|(_, (c, _))| *c == conn)
            .map(|(m, _)| *m)
            .collect();
        for mid in mine {
            if let Some(group) = self.remove_member(mid) {
                self.broadcast(&group, None);
            }
        }
    }
}

fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running fake MI; stopped (and its directory removed) on drop.
pub struct FakeMi {
    /// The socket path to connect to.
    pub path: PathBuf,
    dir: PathBuf,
    ctl: mpsc::Sender<Ctl>,
    seen: tokio::sync::Mutex<mpsc::Receiver<ClientMsg>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

static DIRS: AtomicU64 = AtomicU64::new(0);

impl FakeMi {
    /// Starts a fake in `mode`, listening once this returns.
    pub fn start(mode: Mode) -> FakeMi {
        let n = DIRS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mi-client-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("mi.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let (ctl, ctl_rx) = mpsc::channel(QUEUE);
        let (seen_tx, seen) = mpsc::channel(QUEUE);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(serve(listener, mode, ctl_rx, seen_tx));
        });
        FakeMi {
            path,
            dir,
            ctl,
            seen: tokio::sync::Mutex::new(seen),
            thread: Some(thread),
        }
    }

    fn ctl(&self, c: Ctl) {
        self.ctl.try_send(c).expect("fake MI control queue");
    }

    /// Pushes `view` to membership `mid` as an `Event::View`.
    pub fn push_view(&self, mid: MembershipId, view: AppView) {
        self.ctl(Ctl::Push(mid, view));
    }

    /// Ends membership `mid` with `reason` (`Event::Ended`).
    pub fn end(&self, mid: MembershipId, reason: AppError) {
        self.ctl(Ctl::End(mid, reason));
    }

    /// Sends raw bytes on every connection.
    pub fn raw(&self, bytes: Vec<u8>) {
        self.ctl(Ctl::Raw(bytes));
    }

    /// Closes every connection.
    pub fn close_all(&self) {
        self.ctl(Ctl::CloseAll);
    }

    /// The next request a client sent that `pred` accepts, waiting at most
    /// `within`.
    pub async fn wait_request(&self, within: Duration, pred: impl Fn(&Op) -> bool) -> Option<Op> {
        let mut seen = self.seen.lock().await;
        tokio::time::timeout(within, async {
            while let Some(msg) = seen.recv().await {
                if let ClientMsg::Request { op, .. } = msg {
                    if pred(&op) {
                        return Some(op);
                    }
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }
}

impl Drop for FakeMi {
    fn drop(&mut self) {
        let _ = self.ctl.try_send(Ctl::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn serve(
    listener: std::os::unix::net::UnixListener,
    mode: Mode,
    mut ctl: mpsc::Receiver<Ctl>,
    seen: mpsc::Sender<ClientMsg>,
) {
    let listener = tokio::net::UnixListener::from_std(listener).expect("listener");
    let world = Arc::new(Mutex::new(World::default()));
    let mut tasks = tokio::task::JoinSet::new();
    let mut next_conn = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                if tasks.len() >= MAX_CONNS {
                    continue;
                }
                next_conn += 1;
                tasks.spawn(connection(stream, next_conn, Arc::clone(&world), mode.clone(), seen.clone()));
            }
            cmd = ctl.recv() => {
                let w = lock(&world);
                match cmd {
                    Some(Ctl::Push(mid, view)) => {
                        if let Some((conn, _)) = w.owners.get(&mid) {
                            w.send(*conn, &ServerMsg::Event(Event::View { membership_id: mid, view }));
                        }
                    }
                    Some(Ctl::End(mid, reason)) => {
                        if let Some((conn, _)) = w.owners.get(&mid) {
                            w.send(*conn, &ServerMsg::Event(Event::Ended { membership_id: mid, reason }));
                        }
                    }
                    Some(Ctl::Raw(bytes)) => {
                        for tx in w.conns.values() {
                            let _ = tx.try_send(Out::Frame(bytes.clone()));
                        }
                    }
                    Some(Ctl::CloseAll) => {
                        for tx in w.conns.values() {
                            let _ = tx.try_send(Out::Close);
                        }
                    }
                    Some(Ctl::Stop) | None => break,
                }
            }
        }
    }
    tasks.abort_all();
}

async fn connection(
    stream: UnixStream,
    conn: u64,
    world: Arc<Mutex<World>>,
    mode: Mode,
    seen: mpsc::Sender<ClientMsg>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let Ok(Some(hello)) = read_frame(&mut rd).await else {
        return;
    };
    let _ = seen.try_send(decode_body(&hello).unwrap_or(ClientMsg::Hello {
        version: 0,
        client: "garbage".into(),
    }));
    match &mode {
        Mode::SilentHandshake => {
            while let Ok(Some(_)) = read_frame(&mut rd).await {}
            return;
        }
        Mode::HandshakeReply(bytes) => {
            let _ = wr.write_all(bytes).await;
            return;
        }
        _ => {}
    }
    let welcome = match answer_hello(&hello, "fake-mi (test double)") {
        HelloOutcome::Accept { reply, .. } => reply,
        HelloOutcome::Refuse { reply } => {
            if let Ok(frame) = encode_frame(&reply) {
                let _ = wr.write_all(&frame).await;
            }
            return;
        }
        HelloOutcome::Garbage => return,
    };
    let (out_tx, mut out_rx) = mpsc::channel(QUEUE);
    if let Ok(frame) = encode_frame(&welcome) {
        let _ = out_tx.try_send(Out::Frame(frame));
    }
    lock(&world).conns.insert(conn, out_tx);
    let writer = tokio::spawn(async move {
        while let Some(out) = out_rx.recv().await {
            match out {
                Out::Frame(bytes) => {
                    if wr.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Out::Close => break,
            }
        }
        // Dropping `wr` shuts the socket down for writing: the client
        // reads the end of the stream.
    });
    let reader = async {
        let mut held: Vec<(u64, Op)> = Vec::new();
        while let Ok(Some(body)) = read_frame(&mut rd).await {
            let Ok(msg) = decode_body::<ClientMsg>(&body) else {
                break;
            };
            let _ = seen.try_send(msg.clone());
            let ClientMsg::Request { id, op } = msg else {
                break;
            };
            match &mode {
                Mode::SilentRequests => {}
                Mode::Delay(d) => {
                    tokio::time::sleep(*d).await;
                    lock(&world).answer(conn, id, op);
                }
                Mode::Reverse(n) => {
                    held.push((id, op));
                    if held.len() >= *n {
                        let mut w = lock(&world);
                        for (id, op) in held.drain(..).rev() {
                            w.answer(conn, id, op);
                        }
                    }
                }
                _ => lock(&world).answer(conn, id, op),
            }
        }
    };
    tokio::select! {
        () = reader => {}
        _ = writer => {}
    }
    lock(&world).disconnect(conn);
}
