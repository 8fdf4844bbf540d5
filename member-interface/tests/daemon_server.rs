//! The MI daemon's Unix-socket server (`member_interface::daemon::server`),
//! run in-process on a temporary socket. Behind its core port runs the MI's
//! real session rules (`membership::mi::Sessions`) with a test-double
//! uplink in place of the MI's agent: it keeps application groups in a
//! `membership::appgroup::Registry` (the replicated registry the mservers
//! hold) and hands the sessions every view it makes *before* answering the
//! request, the least convenient order. The real `member_interface::Client`
//! talks to it, plus raw sockets for the misbehaving clients.

use member_interface::daemon::{
    CorePort, FromCore, Server, ServerConfig, ServerError, ServerStats, ToCore,
};
use member_interface::proto::{
    encode_frame, read_msg, ClientMsg, MembershipId, Op, Reply, ServerMsg, VERSION,
};
use member_interface::{
    AppError, AppView, Client, ClientConfig, GroupName, GroupOptions, MemberInfo, MemberName,
    Membership,
};
use membership::appgroup::agent::{MiAnswer as UpReply, MiRequest as UpRequest};
use membership::appgroup::{AppOp, AppReply, Registry, RequestId};
use membership::mi::{SessionOutput, Sessions};
use membership::runtime::clock::Clock;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Failure guard for anything awaited in these tests (never reached when
/// they pass).
const GUARD: Duration = Duration::from_secs(10);

/// How the test-double uplink answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// From its registry.
    Registry,
    /// Never reaches an mserver: every request is answered `Timeout` after
    /// the request timeout, as the MI's agent (the owner of that one
    /// timeout) does.
    Silent,
    /// Drops every call: answered `Disconnected`.
    Drop,
}

/// What the test makes the uplink report unasked.
#[derive(Clone, Debug)]
enum Downcall {
    /// A new view of a group.
    View(AppView),
    /// A local member was removed.
    Lost {
        group: GroupName,
        member: Uuid,
        reason: AppError,
    },
}

fn name(s: &str) -> MemberName {
    MemberName::parse(s).expect("member name")
}

fn group(s: &str) -> GroupName {
    GroupName::parse(s).expect("group name")
}

/// The core behind the server's port: the real sessions, and the
/// test-double uplink that answers their requests from a registry and
/// reports every request it gets on `seen`.
async fn core(
    mut sessions: Sessions,
    mut inputs: mpsc::UnboundedReceiver<ToCore>,
    out: mpsc::UnboundedSender<FromCore>,
    mut down: mpsc::Receiver<Downcall>,
    seen: mpsc::UnboundedSender<UpRequest>,
    mode: Mode,
    request_timeout: Duration,
) {
    let mut registry = Registry::new();
    let mi = Uuid::from_u128(0xfeed);
    let mut seq = 1u64;
    // The MI attaches before anything else (joins through an MI that is
    // not attached are refused).
    registry.apply(&AppOp::Attach {
        req: RequestId { mi, seq: 1 },
        host: "test-host".into(),
        mserver: membership::id::NodeId::v4(127, 0, 0, 1, 7200),
    });
    let (late_tx, mut late) = mpsc::unbounded_channel::<u64>();
    loop {
        tokio::select! {
            input = inputs.recv() => match input {
                None => return,
                Some(ToCore::Open { conn, client }) => sessions.open(conn, client),
                Some(ToCore::Request { conn, id, op }) => {
                    sessions.request(Clock::now(), conn, id, op)
                }
                Some(ToCore::Close { conn }) => {
                    let memberships = sessions.close(conn);
                    let _ = out.send(FromCore::Closed { conn, memberships });
                }
                Some(ToCore::Undeliverable { conn, membership }) => {
                    sessions.undeliverable(conn, membership)
                }
            },
            Some(d) = down.recv() => match d {
                Downcall::View(v) => sessions.view(v),
                Downcall::Lost { group, member, reason } => sessions.lost(&group, member, reason),
            },
            Some(handle) = late.recv() => sessions.answered(handle, Err(AppError::Timeout)),
        }
        while let Some(o) = sessions.poll_output() {
            let (handle, request) = match o {
                SessionOutput::Send { conn, msg } => {
                    let _ = out.send(FromCore::Send { conn, msg });
                    continue;
                }
                SessionOutput::Up { handle, request } => (handle, request),
            };
            let _ = seen.send(request.clone());
            match mode {
                Mode::Silent => {
                    let late_tx = late_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(request_timeout).await;
                        let _ = late_tx.send(handle);
                    });
                    continue;
                }
                Mode::Drop => {
                    sessions.answered(handle, Err(AppError::Disconnected));
                    continue;
                }
                Mode::Registry => {}
            }
            seq += 1;
            let req = RequestId { mi, seq };
            let op = match request {
                UpRequest::Create { group, options } => AppOp::Create {
                    req,
                    group,
                    options,
                },
                UpRequest::Join { group, member } => AppOp::Join { req, group, member },
                UpRequest::Leave { group, member } => AppOp::Leave { req, group, member },
                UpRequest::View { group } => {
                    sessions.answered(
                        handle,
                        registry
                            .view(&group)
                            .map(UpReply::View)
                            .ok_or(AppError::NoSuchGroup),
                    );
                    continue;
                }
                UpRequest::Lookup { group, name } => {
                    let answer = match registry.view(&group) {
                        None => Err(AppError::NoSuchGroup),
                        Some(v) => v
                            .member(&name)
                            .cloned()
                            .map(UpReply::Member)
                            .ok_or(AppError::NotMember),
                    };
                    sessions.answered(handle, answer);
                    continue;
                }
            };
            let applied = registry.apply(&op);
            for v in applied.views {
                sessions.view(v);
            }
            let answer = match applied.result {
                Ok(AppReply::Created) => Ok(UpReply::Created),
                Ok(AppReply::Joined(v)) => Ok(UpReply::Joined(v)),
                Ok(AppReply::Left) => Ok(UpReply::Left),
                Ok(AppReply::MiRemoved(_) | AppReply::Attached | AppReply::Reformed) => {
                    Err(AppError::Internal("unexpected".into()))
                }
                Err(e) => Err(e),
            };
            sessions.answered(handle, answer);
        }
    }
}

static DIRS: AtomicU64 = AtomicU64::new(0);

/// A fresh empty directory under the system's temporary directory.
fn temp_dir() -> PathBuf {
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("mi-daemon-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A running server with its core (sessions and test-double uplink).
struct Mi {
    path: PathBuf,
    dir: PathBuf,
    down: mpsc::Sender<Downcall>,
    seen: mpsc::UnboundedReceiver<UpRequest>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<ServerStats, ServerError>>>,
}

impl Mi {
    async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Mi {
        Mi::start_in(temp_dir(), Mode::Registry, tweak).await
    }

    async fn start_in(dir: PathBuf, mode: Mode, tweak: impl FnOnce(&mut ServerConfig)) -> Mi {
        let path = dir.join("mi.sock");
        let mut config = ServerConfig::new(&path, "test-host");
        tweak(&mut config);
        let sessions = Sessions::new(config.session_config(0, 7));
        let request_timeout = config.request_timeout;
        let (to_core, inputs) = mpsc::unbounded_channel();
        let (out, from_core) = mpsc::unbounded_channel();
        let (down_tx, down_rx) = mpsc::channel(1024);
        let (seen_tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(core(
            sessions,
            inputs,
            out,
            down_rx,
            seen_tx,
            mode,
            request_timeout,
        ));
        let server = Server::bind(config).await.expect("bind");
        let (stop, stopped) = oneshot::channel::<()>();
        let port = CorePort { to_core, from_core };
        let task = tokio::spawn(server.run(port, async move {
            let _ = stopped.await;
        }));
        Mi {
            path,
            dir,
            down: down_tx,
            seen,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server gracefully; its statistics.
    async fn stop(mut self) -> ServerStats {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(GUARD, task)
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("server result")
    }

    /// The next request the uplink got that `pred` accepts.
    async fn seen(&mut self, pred: impl Fn(&UpRequest) -> bool) -> UpRequest {
        tokio::time::timeout(GUARD, async {
            loop {
                let r = self.seen.recv().await.expect("uplink running");
                if pred(&r) {
                    return r;
                }
            }
        })
        .await
        .expect("the uplink got the request in time")
    }

    async fn client(&self) -> Client {
        Client::connect(&self.path).await.expect("connect")
    }
}

impl Drop for Mi {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn next(m: &mut Membership) -> AppView {
    tokio::time::timeout(GUARD, m.next_view())
        .await
        .expect("a view in time")
        .expect("a view")
}

fn names(v: &AppView) -> Vec<&str> {
    v.members.iter().map(|m| m.name.as_str()).collect()
}

/// A client speaking the protocol by hand.
struct Raw {
    stream: UnixStream,
}

impl Raw {
    async fn connect(path: &Path) -> Raw {
        let stream = UnixStream::connect(path).await.expect("connect");
        Raw { stream }
    }

    async fn hello(path: &Path) -> Raw {
        let mut raw = Raw::connect(path).await;
        raw.send(&ClientMsg::Hello {
            version: VERSION,
            client: "raw".into(),
        })
        .await;
        match raw.recv().await {
            Some(ServerMsg::Welcome { .. }) => raw,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    async fn send(&mut self, msg: &ClientMsg) {
        let frame = encode_frame(msg).expect("encode");
        self.stream.write_all(&frame).await.expect("write");
    }

    /// The next message, `None` at the end of the stream or on an error.
    async fn recv(&mut self) -> Option<ServerMsg> {
        tokio::time::timeout(GUARD, read_msg::<_, ServerMsg>(&mut self.stream))
            .await
            .expect("an answer in time")
            .ok()
            .flatten()
    }

    /// Whether the server closed the connection (reads until the end,
    /// bounded in bytes and time).
    async fn closed(&mut self) -> bool {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        tokio::time::timeout(GUARD, async {
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => {
                        total += n;
                        if total > 64 << 20 {
                            return false;
                        }
                    }
                }
            }
        })
        .await
        .unwrap_or(false)
    }

    async fn join(&mut self, id: u64, g: &str, member: &str) -> (MembershipId, Uuid, u64) {
        self.send(&ClientMsg::Request {
            id,
            op: Op::Join {
                group: group(g),
                member: MemberInfo::new(name(member)),
            },
        })
        .await;
        loop {
            match self.recv().await {
                Some(ServerMsg::Response {
                    id: got,
                    result:
                        Ok(Reply::Joined {
                            membership_id,
                            me,
                            view,
                        }),
                }) if got == id => return (membership_id, me.id, view.number),
                Some(ServerMsg::Event(_)) => {}
                other => panic!("expected Joined, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn three_clients_see_every_view_in_order() {
    let mi = Mi::start(|_| {}).await;
    let (c1, c2, c3) = (mi.client().await, mi.client().await, mi.client().await);
    c1.create_group("g", GroupOptions::default())
        .await
        .expect("create");
    let mut a = c1.join("g", MemberInfo::new(name("a"))).await.expect("a");
    let mut b = c2.join("g", MemberInfo::new(name("b"))).await.expect("b");
    let mut c = c3.join("g", MemberInfo::new(name("c"))).await.expect("c");
    assert_eq!(a.me().host, "test-host");
    assert_eq!(next(&mut a).await.number, 1);
    for v in [next(&mut a).await, next(&mut b).await] {
        assert_eq!((v.number, names(&v)), (2, vec!["a", "b"]));
    }
    for v in [next(&mut a).await, next(&mut b).await, next(&mut c).await] {
        assert_eq!((v.number, names(&v)), (3, vec!["a", "b", "c"]));
        assert!(v.contains(c.me().id));
    }
    // Pass-through reads.
    assert_eq!(c3.view("g").await.expect("view").number, 3);
    assert_eq!(
        c3.lookup("g", "b").await.expect("lookup").id,
        b.me().id,
        "lookup finds b"
    );
    assert_eq!(c3.lookup("g", "zz").await, Err(AppError::NotMember));
    assert_eq!(c3.view("nope").await, Err(AppError::NoSuchGroup));
    // b leaves: a and c see view 4 without it; b gets nothing more.
    b.leave().await.expect("leave");
    for v in [next(&mut a).await, next(&mut c).await] {
        assert_eq!((v.number, names(&v)), (4, vec!["a", "c"]));
    }
    let stats = mi.stop().await;
    assert_eq!(stats.accepted, 3);
    assert_eq!(stats.views_delivered, 5, "{stats:?}");
}

#[tokio::test]
async fn name_clash_gives_name_taken() {
    let mi = Mi::start(|_| {}).await;
    let (c1, c2) = (mi.client().await, mi.client().await);
    c1.create_group("g", GroupOptions::default())
        .await
        .expect("create");
    assert_eq!(
        c2.create_group("g", GroupOptions::default()).await,
        Err(AppError::NameTaken)
    );
    let _a = c1.join("g", MemberInfo::new(name("a"))).await.expect("a");
    assert_eq!(
        c2.join("g", MemberInfo::new(name("a"))).await.map(|_| ()),
        Err(AppError::NameTaken)
    );
    assert_eq!(
        c2.join("other", MemberInfo::new(name("a")))
            .await
            .map(|_| ()),
        Err(AppError::NoSuchGroup)
    );
    // The failed join left nothing behind: c2 joins under another name.
    let b = c2.join("g", MemberInfo::new(name("b"))).await.expect("b");
    assert_eq!(names(&b.view().await.expect("view")), vec!["a", "b"]);
}

#[tokio::test]
async fn a_second_join_on_one_connection_is_already_member() {
    let mut mi = Mi::start(|_| {}).await;
    let c = mi.client().await;
    c.create_group("g", GroupOptions::default())
        .await
        .expect("create");
    let _a = c.join("g", MemberInfo::new(name("a"))).await.expect("a");
    mi.seen(|r| matches!(r, UpRequest::Join { .. })).await;
    assert_eq!(
        c.join("g", MemberInfo::new(name("b"))).await.map(|_| ()),
        Err(AppError::AlreadyMember)
    );
    // The uplink never saw the second join: the next request it sees is
    // the view asked after it.
    assert_eq!(c.view("g").await.expect("view").len(), 1);
    let r = mi.seen(|_| true).await;
    assert!(matches!(r, UpRequest::View { .. }), "{r:?}");
}

#[tokio::test]
async fn leaving_an_unknown_membership_is_not_member() {
    let mi = Mi::start(|_| {}).await;
    let c = mi.client().await;
    c.create_group("g", GroupOptions::default())
        .await
        .expect("create");
    let mut raw = Raw::hello(&mi.path).await;
    for (id, mid) in [(1, 99), (2, 0)] {
        raw.send(&ClientMsg::Request {
            id,
            op: Op::Leave {
                membership_id: MembershipId(mid),
            },
        })
        .await;
        assert_eq!(
            raw.recv().await,
            Some(ServerMsg::Response {
                id,
                result: Err(AppError::NotMember)
            })
        );
    }
    // Another connection's membership is not this one's to end.
    let a = c.join("g", MemberInfo::new(name("a"))).await.expect("a");
    raw.send(&ClientMsg::Request {
        id: 3,
        op: Op::Leave {
            membership_id: a.id(),
        },
    })
    .await;
    assert_eq!(
        raw.recv().await,
        Some(ServerMsg::Response {
            id: 3,
            result: Err(AppError::NotMember)
        })
    );
    assert_eq!(a.view().await.expect("view").len(), 1);
}

#[tokio::test]
async fn a_closed_connection_leaves_its_groups_at_once() {
    let mut mi = Mi::start(|_| {}).await;
    let (c1, c2) = (mi.client().await, mi.client().await);
    c1.create_group("g", GroupOptions::default())
        .await
        .expect("create");
    c1.create_group("h", GroupOptions::default())
        .await
        .expect("create");
    let mut a = c1.join("g", MemberInfo::new(name("a"))).await.expect("a");
    let mut b = c2.join("g", MemberInfo::new(name("b"))).await.expect("b");
    // A process with memberships in two groups dies: its socket closes.
    let mut raw = Raw::hello(&mi.path).await;
    let (_, dead, _) = raw.join(1, "g", "dead").await;
    raw.join(2, "h", "dead").await;
    drop(raw);
    let left = mi
        .seen(|r| matches!(r, UpRequest::Leave { member, .. } if *member == dead))
        .await;
    assert!(matches!(left, UpRequest::Leave { .. }));
    // a and b see it join, then go.
    let mut last = AppView {
        group: group("g"),
        number: 0,
        members: Vec::new(),
    };
    for m in [&mut a, &mut b] {
        loop {
            let v = next(m).await;
            if v.number > 2 && !v.contains(dead) {
                last = v;
                break;
            }
        }
    }
    assert_eq!(names(&last), vec!["a", "b"]);
    let stats = mi.stop().await;
    assert_eq!(stats.deaths, 1, "{stats:?}");
    assert_eq!(stats.memberships_ended, 2, "{stats:?}");
}

#[tokio::test]
async fn a_lost_member_gets_its_reason() {
    let mi = Mi::start(|_| {}).await;
    let c = mi.client().await;
    c.create_group("g", GroupOptions::default())
        .await
        .expect("create");
    let mut a = c.join("g", MemberInfo::new(name("a"))).await.expect("a");
    assert_eq!(next(&mut a).await.number, 1);
    mi.down
        .send(Downcall::Lost {
            group: group("g"),
            member: a.me().id,
            reason: AppError::Excluded,
        })
        .await
        .expect("downcall");
    let end = tokio::time::timeout(GUARD, a.next_view())
        .await
        .expect("in time");
    assert_eq!(end, Err(AppError::Excluded));
    // The connection serves on, and the group can be joined again.
    let _a2 = c.join("g", MemberInfo::new(name("a2"))).await.expect("a2");
}

#[tokio::test]
async fn unanswered_requests_time_out_and_dropped_ones_disconnect() {
    let dir = temp_dir();
    let mi = Mi::start_in(dir, Mode::Silent, |c| {
        c.request_timeout = Duration::from_millis(100)
    })
    .await;
    let c = mi.client().await;
    assert_eq!(
        c.create_group("g", GroupOptions::default()).await,
        Err(AppError::Timeout)
    );
    assert_eq!(
        c.join("g", MemberInfo::new(name("a"))).await.map(|_| ()),
        Err(AppError::Timeout)
    );
    let mi2 = Mi::start_in(temp_dir(), Mode::Drop, |_| {}).await;
    let c2 = mi2.client().await;
    assert_eq!(c2.view("g").await, Err(AppError::Disconnected));
    assert_eq!(
        c2.join("g", MemberInfo::new(name("a"))).await.map(|_| ()),
        Err(AppError::Disconnected)
    );
    // A failed join is forgotten: joining again is asked again.
    assert_eq!(
        c2.join("g", MemberInfo::new(name("a"))).await.map(|_| ()),
        Err(AppError::Disconnected)
    );
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let dir = temp_dir();
    let path = dir.join("mi.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(path.exists(), "the stale socket file stays");
    let mi = Mi::start_in(dir, Mode::Registry, |_| {}).await;
    let c = mi.client().await;
    c.create_group("g", GroupOptions::default())
        .await
        .expect("create");
}

#[tokio::test]
async fn a_live_socket_is_refused() {
    let mi = Mi::start(|_| {}).await;
    let err = Server::bind(ServerConfig::new(&mi.path, "h"))
        .await
        .expect_err("refused");
    assert!(matches!(err, ServerError::Live { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "another member-interface is listening on {}",
            mi.path.display()
        )
    );
    // The first one still serves.
    let c = mi.client().await;
    c.create_group("g", GroupOptions::default())
        .await
        .expect("create");
}

#[tokio::test]
async fn a_regular_file_is_refused_and_kept() {
    let dir = temp_dir();
    let path = dir.join("mi.sock");
    std::fs::write(&path, b"keep me").expect("write");
    let err = Server::bind(ServerConfig::new(&path, "h"))
        .await
        .expect_err("refused");
    assert!(matches!(err, ServerError::NotASocket { .. }), "{err}");
    assert!(err.to_string().contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).expect("read"), b"keep me");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_missing_directory_is_an_error() {
    let dir = temp_dir().join("missing");
    let err = Server::bind(ServerConfig::new(dir.join("mi.sock"), "h"))
        .await
        .expect_err("refused");
    match &err {
        ServerError::Directory { dir: d, source } => {
            assert_eq!(d, &dir);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Directory, got {other}"),
    }
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
    let bad = ServerConfig {
        max_clients: 0,
        ..ServerConfig::new("/tmp/x.sock", "h")
    };
    assert!(matches!(
        Server::bind(bad).await,
        Err(ServerError::Config(_))
    ));
}

#[tokio::test]
async fn the_socket_has_mode_0660_and_is_removed_on_shutdown() {
    let mi = Mi::start(|_| {}).await;
    let path = mi.path.clone();
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    let c = mi.client().await;
    let stats = mi.stop().await;
    assert_eq!(stats.accepted, 1);
    assert!(!path.exists(), "socket removed");
    assert!(
        c.view("g").await.is_err(),
        "the client sees the connection closed"
    );
    let mi2 = Mi::start(|c| c.mode = 0o600).await;
    let mode = std::fs::metadata(&mi2.path)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn garbage_and_old_versions_are_refused_and_the_daemon_keeps_serving() {
    let mi = Mi::start(|c| c.handshake_timeout = Duration::from_millis(200)).await;
    // Garbage instead of a Hello: closed without an answer.
    let mut raw = Raw::connect(&mi.path).await;
    raw.stream
        .write_all(b"\x00\x00\x00\x05hello")
        .await
        .expect("write");
    assert!(raw.closed().await);
    // An HTTP request: its "length" is far beyond the limit.
    let mut raw = Raw::connect(&mi.path).await;
    raw.stream
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    assert!(raw.closed().await);
    // An old version: refused with the versions.
    let mut raw = Raw::connect(&mi.path).await;
    raw.send(&ClientMsg::Hello {
        version: 0,
        client: "old".into(),
    })
    .await;
    assert_eq!(
        raw.recv().await,
        Some(ServerMsg::Refused {
            reason: AppError::VersionMismatch {
                ours: VERSION,
                theirs: 0
            }
        })
    );
    assert!(raw.closed().await);
    // A request before the Hello.
    let mut raw = Raw::connect(&mi.path).await;
    raw.send(&ClientMsg::Request {
        id: 1,
        op: Op::View { group: group("g") },
    })
    .await;
    assert!(raw.closed().await);
    // Silence: closed after the handshake deadline.
    let mut raw = Raw::connect(&mi.path).await;
    assert!(raw.closed().await);
    // After the handshake: a second Hello, an oversized frame, a
    // malformed body, a truncated frame.
    let mut raw = Raw::hello(&mi.path).await;
    raw.send(&ClientMsg::Hello {
        version: VERSION,
        client: "again".into(),
    })
    .await;
    assert!(raw.closed().await);
    let mut raw = Raw::hello(&mi.path).await;
    raw.stream
        .write_all(&u32::MAX.to_be_bytes())
        .await
        .expect("write");
    assert!(raw.closed().await);
    let mut raw = Raw::hello(&mi.path).await;
    raw.stream
        .write_all(b"\x00\x00\x00\x03\x01\xff\xff")
        .await
        .expect("write");
    assert!(raw.closed().await);
    let mut raw = Raw::hello(&mi.path).await;
    raw.stream
        .write_all(b"\x00\x00\x01\x00abc")
        .await
        .expect("write");
    raw.stream.shutdown().await.expect("shutdown");
    assert!(raw.closed().await);
    // The daemon serves on.
    let c = mi.client().await;
    c.create_group("g", GroupOptions::default())
        .await
        .expect("create");
    let stats = mi.stop().await;
    assert_eq!(stats.refused_handshake, 5, "{stats:?}");
    assert_eq!(stats.bad_input, 4, "{stats:?}");
}

#[tokio::test]
async fn one_client_over_the_limit_gets_too_many_clients() {
    let mi = Mi::start(|c| c.max_clients = 3).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(mi.client().await);
    }
    assert_eq!(
        Client::connect(&mi.path).await.map(|_| ()),
        Err(AppError::TooManyClients)
    );
    // Served clients are unaffected.
    clients[0]
        .create_group("g", GroupOptions::default())
        .await
        .expect("create");
    // A slot frees when a client goes.
    drop(clients.pop());
    let again = tokio::time::timeout(GUARD, async {
        loop {
            match Client::connect(&mi.path).await {
                Ok(c) => return c,
                Err(AppError::TooManyClients) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("a slot frees in time");
    assert_eq!(again.view("g").await.expect("view").number, 0);
    let stats = mi.stop().await;
    assert!(stats.refused_too_many >= 1, "{stats:?}");
}

#[tokio::test]
async fn a_client_that_never_reads_is_excluded_and_the_others_get_every_view() {
    // Room for the bursts a reading client sees between two runs of its
    // writer; the sleeper also fills its socket's buffer first.
    let mut mi = Mi::start(|c| c.queue_per_client = 256).await;
    let config = ClientConfig {
        view_queue: 100_000,
        ..ClientConfig::default()
    };
    let c = Client::connect_with(&mi.path, config)
        .await
        .expect("connect");
    c.create_group("g", GroupOptions::default())
        .await
        .expect("create");
    let mut a = c.join("g", MemberInfo::new(name("a"))).await.expect("a");
    let mut sleeper = Raw::hello(&mi.path).await;
    let (_, slow, joined_at) = sleeper.join(1, "g", "slow").await;
    assert_eq!(next(&mut a).await.number, 1);
    let base = next(&mut a).await;
    assert_eq!(base.number, joined_at);
    // The uplink pushes many views; the sleeper reads none of them.
    const VIEWS: u64 = 4000;
    let down = mi.down.clone();
    let members = base.members.clone();
    let pusher = tokio::spawn(async move {
        for n in 1..=VIEWS {
            let v = AppView {
                group: group("g"),
                number: joined_at + n,
                members: members.clone(),
            };
            if down.send(Downcall::View(v)).await.is_err() {
                return;
            }
        }
    });
    for n in 1..=VIEWS {
        assert_eq!(next(&mut a).await.number, joined_at + n);
    }
    pusher.await.expect("pusher");
    // The sleeper was excluded: its member left, its socket closed.
    let left = mi
        .seen(|r| matches!(r, UpRequest::Leave { member, .. } if *member == slow))
        .await;
    assert!(matches!(left, UpRequest::Leave { .. }));
    assert!(sleeper.closed().await);
    let stats = mi.stop().await;
    assert_eq!(stats.excluded, 1, "{stats:?}");
}

#[tokio::test]
async fn five_hundred_clients_at_once_are_all_served() {
    let mi = Mi::start(|_| {}).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..500u32 {
        let path = mi.path.clone();
        // Each its own group, so views do not grow with the clients.
        tasks.spawn(async move {
            let c = Client::connect(&path).await?;
            let g = format!("g{i}");
            c.create_group(&g, GroupOptions::default()).await?;
            let m = c.join(&g, MemberInfo::new(name("m"))).await?;
            Ok::<_, AppError>((c, m))
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(30), async {
        let mut kept = Vec::new();
        while let Some(r) = tasks.join_next().await {
            kept.push(r.expect("task").expect("served"));
        }
        kept
    })
    .await
    .expect("all served in time");
    assert_eq!(all.len(), 500);
    for (_, m) in &all {
        assert_eq!(m.view().await.expect("view").len(), 1);
    }
    let stats = mi.stop().await;
    assert_eq!(stats.accepted, 500);
    assert_eq!(stats.refused_too_many, 0);
}
