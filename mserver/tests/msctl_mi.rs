//! `msctl --mi PATH ...` (DESIGN.md section 7): the application-group
//! commands of the built `msctl` binary against a fake member interface.
//!
//! **Test double.** [`FakeMi`] is not the member-interface daemon: it
//! speaks the client <-> MI protocol ([`member_interface::proto`]) on a
//! Unix socket in a fresh temporary directory, answers the handshake with
//! [`proto::answer_hello`] and the requests from a tiny in-memory model of
//! groups (one host, no mserver), records every request, and lets the test
//! change a group (push [`Event::View`] frames), end memberships or close
//! connections. It uses blocking std sockets with read timeouts, on its own
//! threads, all stopped when it is dropped.
//!
//! Every wait is bounded (a line, an exit), and every child `msctl` is
//! killed when its guard is dropped, also when a test fails.

use member_interface::proto::{
    answer_hello, decode_body, encode_frame, frame_len, ClientMsg, Event, HelloOutcome,
    MembershipId, Op, Reply, ServerMsg, LEN_PREFIX,
};
use member_interface::{
    AppError, AppMember, AppView, GroupName, GroupOptions, MemberKind, MemberName, MergeRule,
    Scope, SurviveRule,
};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use uuid::Uuid;

/// The longest any single wait of these tests lasts.
const WAIT: Duration = Duration::from_secs(10);
/// Polling step of the bounded waits.
const STEP: Duration = Duration::from_millis(10);
/// Most connections one fake serves.
const MAX_CONNS: u64 = 64;

fn msctl_bin() -> PathBuf {
    testkit::bin("mserver", "msctl")
}

// ---------------------------------------------------------------- the fake

struct Group {
    options: GroupOptions,
    number: u64,
    /// In join order; `None`: a member the test added (no connection).
    members: Vec<(Option<MembershipId>, AppMember)>,
}

#[derive(Default)]
struct World {
    groups: BTreeMap<GroupName, Group>,
    /// Write halves of the open connections.
    conns: BTreeMap<u64, UnixStream>,
    owners: BTreeMap<MembershipId, (u64, GroupName)>,
    /// Every request received, in order, with its connection.
    ops: Vec<(u64, Op)>,
    accepted: u64,
    next_mid: u64,
    next_member: u128,
}

impl World {
    fn send(&mut self, conn: u64, msg: &ServerMsg) {
        let Ok(frame) = encode_frame(msg) else { return };
        if let Some(s) = self.conns.get_mut(&conn) {
            if s.write_all(&frame).is_err() {
                self.conns.remove(&conn);
            }
        }
    }

    fn view(&self, name: &GroupName) -> Option<AppView> {
        self.groups.get(name).map(|g| AppView {
            group: name.clone(),
            number: g.number,
            members: g.members.iter().map(|(_, m)| m.clone()).collect(),
        })
    }

    /// Pushes the group's current view to each connected member but
    /// `except`.
    fn broadcast(&mut self, name: &GroupName, except: Option<MembershipId>) {
        let (Some(view), Some(group)) = (self.view(name), self.groups.get(name)) else {
            return;
        };
        let targets: Vec<(u64, MembershipId)> = group
            .members
            .iter()
            .filter_map(|(mid, _)| *mid)
            .filter(|mid| Some(*mid) != except)
            .filter_map(|mid| self.owners.get(&mid).map(|(conn, _)| (*conn, mid)))
            .collect();
        for (conn, membership_id) in targets {
            self.send(
                conn,
                &ServerMsg::Event(Event::View {
                    membership_id,
                    view: view.clone(),
                }),
            );
        }
    }

    fn new_member(&mut self, name: MemberName, kind: MemberKind) -> AppMember {
        self.next_member += 1;
        AppMember {
            name,
            kind,
            id: Uuid::from_u128(self.next_member),
            host: "fake-host".into(),
        }
    }

    fn remove(&mut self, mid: MembershipId) -> Option<GroupName> {
        let (_, name) = self.owners.remove(&mid)?;
        let g = self.groups.get_mut(&name)?;
        g.members.retain(|(m, _)| *m != Some(mid));
        g.number += 1;
        Some(name)
    }

    fn join(
        &mut self,
        conn: u64,
        group: GroupName,
        member: member_interface::MemberInfo,
    ) -> Result<(Reply, GroupName, MembershipId), AppError> {
        let g = self.groups.get(&group).ok_or(AppError::NoSuchGroup)?;
        if g.members.iter().any(|(_, m)| m.name == member.name) {
            return Err(AppError::NameTaken);
        }
        self.next_mid += 1;
        let mid = MembershipId(self.next_mid);
        let me = self.new_member(member.name, member.kind);
        let g = self.groups.get_mut(&group).ok_or(AppError::NoSuchGroup)?;
        g.number += 1;
        g.members.push((Some(mid), me.clone()));
        self.owners.insert(mid, (conn, group.clone()));
        let view = self.view(&group).ok_or(AppError::NoSuchGroup)?;
        let reply = Reply::Joined {
            membership_id: mid,
            me,
            view,
        };
        Ok((reply, group, mid))
    }

    fn answer(&mut self, conn: u64, id: u64, op: Op) {
        self.ops.push((conn, op.clone()));
        let mut changed = None;
        let result = match op {
            Op::CreateGroup { name, options } => {
                if let Err(e) = options.validate() {
                    Err(e)
                } else if let std::collections::btree_map::Entry::Vacant(slot) =
                    self.groups.entry(name)
                {
                    slot.insert(Group {
                        options,
                        number: 0,
                        members: Vec::new(),
                    });
                    Ok(Reply::Created)
                } else {
                    Err(AppError::NameTaken)
                }
            }
            Op::Join { group, member } => self.join(conn, group, member).map(|(reply, g, mid)| {
                changed = Some((g, Some(mid)));
                reply
            }),
            Op::Leave { membership_id } => match self.owners.get(&membership_id) {
                Some((owner, _)) if *owner == conn => {
                    changed = self.remove(membership_id).map(|g| (g, None));
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
}

/// A fake member interface on a Unix socket (see the module docs).
struct FakeMi {
    dir: PathBuf,
    path: PathBuf,
    world: Arc<Mutex<World>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

fn temp_dir(what: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("msctl-mi-{}-{what}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` at a clean end of stream
/// before the first byte, or when the fake stops.
fn read_full(s: &mut UnixStream, buf: &mut [u8], stop: &AtomicBool) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match s.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn read_body(s: &mut UnixStream, stop: &AtomicBool) -> Option<Vec<u8>> {
    let mut prefix = [0u8; LEN_PREFIX];
    if !read_full(s, &mut prefix, stop).ok()? {
        return None;
    }
    let len = frame_len(prefix).ok()?;
    let mut body = vec![0u8; len];
    read_full(s, &mut body, stop).ok()?.then_some(body)
}

impl FakeMi {
    fn start() -> FakeMi {
        let dir = temp_dir("fake");
        let path = dir.join("mi.sock");
        let listener = UnixListener::bind(&path).expect("bind the fake MI");
        listener.set_nonblocking(true).expect("nonblocking");
        let world = Arc::new(Mutex::new(World::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (world, stop) = (Arc::clone(&world), Arc::clone(&stop));
            std::thread::spawn(move || accept_loop(listener, world, stop))
        };
        FakeMi {
            dir,
            path,
            world,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }

    /// Creates `group` directly in the model.
    fn create(&self, group: &str) {
        self.world().groups.insert(
            GroupName::parse(group).expect("group"),
            Group {
                options: GroupOptions::default(),
                number: 0,
                members: Vec::new(),
            },
        );
    }

    /// Adds a member with no connection to `group` (another process of the
    /// group, as far as msctl can tell) and pushes the new view.
    fn add_member(&self, group: &str, name: &str) {
        let group = GroupName::parse(group).expect("group");
        let mut w = self.world();
        let m = w.new_member(
            MemberName::parse(name).expect("name"),
            MemberKind::default(),
        );
        let g = w.groups.get_mut(&group).expect("the group exists");
        g.number += 1;
        g.members.push((None, m));
        w.broadcast(&group, None);
    }

    /// Removes the member named `name` from `group` and pushes the view.
    fn remove_member(&self, group: &str, name: &str) {
        let group = GroupName::parse(group).expect("group");
        let mut w = self.world();
        let g = w.groups.get_mut(&group).expect("the group exists");
        g.members.retain(|(_, m)| m.name.as_str() != name);
        g.number += 1;
        w.broadcast(&group, None);
    }

    /// Ends every membership with `reason` ([`Event::Ended`]).
    fn end_all(&self, reason: AppError) {
        let mut w = self.world();
        let owners: Vec<(MembershipId, u64)> =
            w.owners.iter().map(|(mid, (c, _))| (*mid, *c)).collect();
        for (membership_id, conn) in owners {
            w.remove(membership_id);
            w.send(
                conn,
                &ServerMsg::Event(Event::Ended {
                    membership_id,
                    reason: reason.clone(),
                }),
            );
        }
    }

    /// Closes every connection (the MI went away).
    fn close_all(&self) {
        let mut w = self.world();
        for (_, s) in std::mem::take(&mut w.conns) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn ops(&self) -> Vec<Op> {
        self.world().ops.iter().map(|(_, op)| op.clone()).collect()
    }

    fn accepted(&self) -> u64 {
        self.world().accepted
    }

    /// Waits (bounded) until a request matching `pred` was received.
    fn wait_op(&self, what: &str, pred: impl Fn(&Op) -> bool) -> Op {
        for _ in 0..WAIT.as_millis() / STEP.as_millis() {
            if let Some(op) = self.ops().into_iter().find(|o| pred(o)) {
                return op;
            }
            std::thread::sleep(STEP);
        }
        panic!("the fake MI never received {what}; it got {:?}", self.ops());
    }
}

impl Drop for FakeMi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.close_all();
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn accept_loop(listener: UnixListener, world: Arc<Mutex<World>>, stop: Arc<AtomicBool>) {
    let mut threads = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let conn = {
                    let mut w = world.lock().unwrap_or_else(PoisonError::into_inner);
                    w.accepted += 1;
                    w.accepted
                };
                if conn > MAX_CONNS {
                    continue; // Dropped: closed at once.
                }
                let (world, stop) = (Arc::clone(&world), Arc::clone(&stop));
                threads.push(std::thread::spawn(move || serve(conn, stream, world, stop)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(STEP),
            Err(_) => std::thread::sleep(STEP),
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

fn serve(conn: u64, mut stream: UnixStream, world: Arc<Mutex<World>>, stop: Arc<AtomicBool>) {
    let lock = || world.lock().unwrap_or_else(PoisonError::into_inner);
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .is_err()
        || stream.set_write_timeout(Some(WAIT)).is_err()
    {
        return;
    }
    let Some(hello) = read_body(&mut stream, &stop) else {
        return;
    };
    let HelloOutcome::Accept { reply, .. } = answer_hello(&hello, "fake-mi") else {
        return;
    };
    let Ok(frame) = encode_frame(&reply) else {
        return;
    };
    if stream.write_all(&frame).is_err() {
        return;
    }
    match stream.try_clone() {
        Ok(w) => lock().conns.insert(conn, w),
        Err(_) => return,
    };
    while let Some(body) = read_body(&mut stream, &stop) {
        match decode_body::<ClientMsg>(&body) {
            Ok(ClientMsg::Request { id, op }) => lock().answer(conn, id, op),
            _ => break,
        }
    }
    // The connection closed: its process is gone, as the MI would see it.
    let mut w = lock();
    w.conns.remove(&conn);
    let mine: Vec<MembershipId> = w
        .owners
        .iter()
        .filter(|(_, (c, _))| *c == conn)
        .map(|(mid, _)| *mid)
        .collect();
    for mid in mine {
        if let Some(g) = w.remove(mid) {
            w.broadcast(&g, None);
        }
    }
}

// ------------------------------------------------------------- msctl runs

/// A running `msctl`, killed on drop; its stdout lines arrive on a channel.
struct Msctl {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Msctl {
    fn spawn(args: &[&str]) -> Msctl {
        let mut child = Command::new(msctl_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn msctl");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Msctl {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("msctl printed no line within {WAIT:?}: {e}"))
    }

    fn signal(&self, sig: &str) {
        if let Err(e) = testkit::procs::signal_all(&[self.child.id()], sig) {
            panic!("{e}");
        }
    }

    /// Waits (bounded) for the exit: its code, the stdout lines not read
    /// yet, and all of stderr.
    fn wait_all(&mut self) -> (Option<i32>, String, String) {
        let mut status = None;
        for _ in 0..WAIT.as_millis() / STEP.as_millis() {
            status = self.child.try_wait().expect("try_wait");
            if status.is_some() {
                break;
            }
            std::thread::sleep(STEP);
        }
        let Some(status) = status else {
            panic!("msctl did not exit within {WAIT:?}");
        };
        // The reader threads end at the end of the pipes.
        let mut out = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            out.push(line);
        }
        let err = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        (status.code(), out.join("\n"), err)
    }

    /// Waits (bounded) for the exit: its code and stderr.
    fn wait(mut self) -> (Option<i32>, String) {
        let (code, _, err) = self.wait_all();
        (code, err)
    }
}

impl Drop for Msctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `msctl ARGS` to its end (bounded): exit code, stdout, stderr.
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    Msctl::spawn(args).wait_all()
}

fn one_line(err: &str) -> &str {
    let trimmed = err.trim_end();
    assert!(
        !trimmed.is_empty() && !trimmed.contains('\n'),
        "expected one line on stderr, got {err:?}"
    );
    trimmed
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["name"].as_str().expect("name").to_owned())
        .collect()
}

fn mi_args<'a>(fake: &'a FakeMi, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--mi", fake.path(), "--timeout-ms", "3000"];
    args.extend_from_slice(rest);
    args
}

// ------------------------------------------------------------------ tests

/// `join --json` prints one DESIGN.md section 7 line per view, in order,
/// then leaves on SIGTERM (the fake sees the Leave) and exits 0.
#[test]
fn join_json_prints_each_view_in_order_and_leaves_on_sigterm() {
    let fake = FakeMi::start();
    fake.create("chat");
    fake.add_member("chat", "zoe");
    let m = Msctl::spawn(&mi_args(
        &fake,
        &["join", "chat", "--name", "alice", "--kind", "db", "--json"],
    ));
    let first = json(&m.line());
    assert_eq!(first["group"], "chat");
    assert_eq!(first["view"], 2);
    assert_eq!(first["me"]["name"], "alice");
    assert_eq!(first["me"]["kind"], "db");
    assert_eq!(first["me"]["host"], "fake-host");
    let me_id = first["me"]["id"].as_str().expect("id").to_owned();
    assert!(Uuid::parse_str(&me_id).is_ok());
    assert_eq!(names(&first), ["zoe", "alice"]);
    for field in ["name", "kind", "id", "host"] {
        assert!(
            first["members"][1].get(field).is_some(),
            "member field {field}"
        );
    }
    fake.add_member("chat", "bob");
    fake.remove_member("chat", "zoe");
    fake.add_member("chat", "carol");
    let rest: Vec<serde_json::Value> = (0..3).map(|_| json(&m.line())).collect();
    let numbers: Vec<u64> = rest
        .iter()
        .map(|v| v["view"].as_u64().expect("n"))
        .collect();
    assert_eq!(numbers, [3, 4, 5], "every view, in order");
    assert_eq!(names(&rest[0]), ["zoe", "alice", "bob"]);
    assert_eq!(names(&rest[1]), ["alice", "bob"]);
    assert_eq!(names(&rest[2]), ["alice", "bob", "carol"]);
    for v in &rest {
        assert_eq!(v["me"]["id"], me_id.as_str());
        assert_eq!(v["group"], "chat");
    }
    m.signal("TERM");
    let (code, err) = m.wait();
    assert_eq!(code, Some(0), "stderr: {err}");
    let leave = fake.wait_op("a Leave", |op| matches!(op, Op::Leave { .. }));
    assert!(matches!(leave, Op::Leave { .. }));
    let joined = fake.ops().iter().any(|op| {
        matches!(op, Op::Join { group, member } if group.as_str() == "chat"
            && member.name.as_str() == "alice" && member.kind.as_str() == "db")
    });
    assert!(joined);
    // Left: the group no longer holds alice.
    let w = fake.world();
    let g = w.groups.values().next().expect("chat");
    assert!(g.members.iter().all(|(_, m)| m.name.as_str() != "alice"));
}

/// Without --json, one readable line per view; SIGINT leaves too. The
/// default name is `<hostname>-<pid>`.
#[test]
fn join_prints_readable_lines_and_leaves_on_sigint() {
    let fake = FakeMi::start();
    fake.create("chat");
    let m = Msctl::spawn(&mi_args(&fake, &["join", "chat"]));
    let pid = m.child.id();
    let first = m.line();
    assert!(
        first.starts_with("view 1 of chat: ") && first.ends_with(&format!("-{pid} (fake-host)")),
        "{first}"
    );
    fake.add_member("chat", "bob");
    let second = m.line();
    assert!(second.starts_with("view 2 of chat: "), "{second}");
    assert!(second.ends_with(", bob (fake-host)"), "{second}");
    m.signal("INT");
    let (code, err) = m.wait();
    assert_eq!(code, Some(0), "stderr: {err}");
    fake.wait_op("a Leave", |op| matches!(op, Op::Leave { .. }));
}

/// A membership the group ends gives one line and exit 3; a lost
/// connection to the MI one line and exit 4.
#[test]
fn join_ended_exits_3_and_lost_connection_exits_4() {
    let fake = FakeMi::start();
    fake.create("chat");
    let m = Msctl::spawn(&mi_args(&fake, &["join", "chat", "--name", "a", "--json"]));
    assert_eq!(json(&m.line())["view"], 1);
    fake.end_all(AppError::Excluded);
    let (code, err) = m.wait();
    assert_eq!(code, Some(3), "{err}");
    let line = one_line(&err);
    assert!(line.starts_with("msctl: join chat: "), "{line}");
    assert!(line.contains("excluded"), "{line}");

    let m = Msctl::spawn(&mi_args(&fake, &["join", "chat", "--name", "b"]));
    assert!(m.line().starts_with("view "));
    fake.close_all();
    let (code, err) = m.wait();
    assert_eq!(code, Some(4), "{err}");
    assert!(one_line(&err).contains("closed"), "{err}");
}

/// Library errors are one line naming the command, exit 1.
#[test]
fn join_and_create_errors_are_one_line() {
    let fake = FakeMi::start();
    fake.create("chat");
    fake.add_member("chat", "alice");
    let (code, _, err) = run(&mi_args(&fake, &["join", "chat", "--name", "alice"]));
    assert_eq!(code, Some(1));
    let line = one_line(&err);
    assert!(line.starts_with("msctl: join chat: name taken"), "{line}");
    let (code, _, err) = run(&mi_args(&fake, &["join", "nowhere", "--name", "x"]));
    assert_eq!(code, Some(1));
    assert!(
        one_line(&err).starts_with("msctl: join nowhere: no such application group"),
        "{err}"
    );
    let (code, _, err) = run(&mi_args(&fake, &["create", "chat"]));
    assert_eq!(code, Some(1));
    assert!(
        one_line(&err).starts_with("msctl: create chat: name taken"),
        "{err}"
    );
}

/// `create` with every survive and merge preset, and the scopes: each is
/// parsed into the options the MI receives.
#[test]
fn create_parses_every_preset() {
    let fake = FakeMi::start();
    let db = MemberKind::parse("db").expect("kind");
    let presets = [
        ("keep-all", SurviveRule::KeepAll, MergeRule::KeepAll),
        (
            "keep-majority",
            SurviveRule::KeepMajority,
            MergeRule::KeepMajority,
        ),
        (
            "static-quorum=3",
            SurviveRule::StaticQuorum(3),
            MergeRule::StaticQuorum(3),
        ),
        (
            "keep-oldest",
            SurviveRule::KeepOldest,
            MergeRule::KeepOldest,
        ),
        (
            "contains-kind=db",
            SurviveRule::ContainsKind(db.clone()),
            MergeRule::ContainsKind(db),
        ),
    ];
    for (i, (text, survive, merge)) in presets.iter().enumerate() {
        let group = format!("g{i}");
        let (code, out, err) = run(&mi_args(
            &fake,
            &["create", &group, "--survive", text, "--merge", text],
        ));
        assert_eq!(code, Some(0), "{text}: {err}");
        assert_eq!(out.trim(), format!("created {group}"));
        let w = fake.world();
        let g = &w.groups[&GroupName::parse(&group).expect("group")];
        assert_eq!(&g.options.survive, survive, "{text}");
        assert_eq!(&g.options.merge, merge, "{text}");
        assert_eq!(g.options.name_scope, Scope::Lan);
    }
    let (code, out, err) = run(&mi_args(
        &fake,
        &[
            "create",
            "scoped",
            "--name-scope",
            "level=2",
            "--membership-scope",
            "core-set=backbone",
            "--json",
        ],
    ));
    assert_eq!(code, Some(0), "{err}");
    let v = json(out.trim());
    assert_eq!(v["created"], "scoped");
    assert_eq!(v["survive"], "keep-all");
    assert_eq!(v["name_scope"], "level=2");
    assert_eq!(v["membership_scope"], "core-set=backbone");
    let w = fake.world();
    let g = &w.groups[&GroupName::parse("scoped").expect("group")];
    assert_eq!(g.options.name_scope, Scope::Level(2));
    assert_eq!(
        g.options.membership_scope,
        Scope::CoreSet("backbone".into())
    );
}

/// Bad presets, scopes and names: exit 2, one line, and msctl does not
/// even connect.
#[test]
fn bad_presets_and_names_exit_2_with_one_line() {
    let fake = FakeMi::start();
    fake.create("chat");
    let long = "n".repeat(200);
    let cases: &[&[&str]] = &[
        &["create", "chat", "--survive", "keep-most"],
        &["create", "chat", "--survive", "static-quorum=0"],
        &["create", "chat", "--survive", "static-quorum=many"],
        &["create", "chat", "--merge", "contains-kind="],
        &["create", "chat", "--merge", "keep_all"],
        &["create", "chat", "--name-scope", "level=0"],
        &["create", "chat", "--membership-scope", "planet"],
        &["create", "no spaces"],
        &["create", &long],
        &["join", "bad/name"],
        &["join", "chat", "--name", ""],
        &["join", "chat", "--name", &long],
        &["join", "chat", "--name", "tab\there"],
        &["join", "chat", "--kind", &long],
        &["view", "a b"],
        &["lookup", "chat", ""],
    ];
    for case in cases {
        let (code, out, err) = run(&mi_args(&fake, case));
        assert_eq!(code, Some(2), "{case:?}: {err}");
        assert!(out.is_empty(), "{case:?}: {out}");
        let line = one_line(&err);
        assert!(line.starts_with("msctl: "), "{case:?}: {line}");
    }
    assert_eq!(fake.accepted(), 0, "no bad command connected");
}

/// `view GROUP` and `lookup GROUP MEMBER`, in words and in JSON.
#[test]
fn view_and_lookup() {
    let fake = FakeMi::start();
    fake.create("chat");
    fake.add_member("chat", "alice");
    fake.add_member("chat", "bob");
    let (code, out, err) = run(&mi_args(&fake, &["view", "chat"]));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        "view 2 of chat: alice (fake-host), bob (fake-host)"
    );
    let (code, out, _) = run(&mi_args(&fake, &["view", "chat", "--json"]));
    assert_eq!(code, Some(0));
    let v = json(out.trim());
    assert_eq!(v["view"], 2);
    assert_eq!(names(&v), ["alice", "bob"]);
    let (code, out, _) = run(&mi_args(&fake, &["lookup", "chat", "bob", "--json"]));
    assert_eq!(code, Some(0));
    let v = json(out.trim());
    assert_eq!(v["name"], "bob");
    assert_eq!(v["host"], "fake-host");
    assert!(Uuid::parse_str(v["id"].as_str().expect("id")).is_ok());
    let (code, out, _) = run(&mi_args(&fake, &["lookup", "chat", "bob"]));
    assert_eq!(code, Some(0));
    assert!(out.starts_with("bob on fake-host, id "), "{out}");
    let (code, _, err) = run(&mi_args(&fake, &["lookup", "chat", "nobody"]));
    assert_eq!(code, Some(1));
    assert!(
        one_line(&err).starts_with("msctl: lookup chat nobody: "),
        "{err}"
    );
    let (code, _, err) = run(&mi_args(&fake, &["view", "nowhere"]));
    assert_eq!(code, Some(1));
    assert!(
        one_line(&err).contains("no such application group"),
        "{err}"
    );
}

/// `--mi` with no daemon behind it: a missing socket, or a stale one.
#[test]
fn missing_socket_gives_the_clear_error() {
    let dir = temp_dir("missing");
    let missing = dir.join("none.sock");
    let stale = dir.join("stale.sock");
    drop(UnixListener::bind(&stale).expect("bind"));
    for path in [&missing, &stale] {
        let p = path.to_str().expect("utf-8");
        for cmd in [
            &["join", "chat"][..],
            &["create", "chat"],
            &["view", "chat"],
        ] {
            let mut args = vec!["--mi", p];
            args.extend_from_slice(cmd);
            let (code, _, err) = run(&args);
            assert_eq!(code, Some(1), "{args:?}: {err}");
            assert_eq!(
                one_line(&err),
                format!("msctl: no member-interface listening on {p} (is the daemon running?)")
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Exactly one of `--server` and `--mi`, and the one the command needs.
#[test]
fn server_and_mi_together_or_the_wrong_one_is_a_usage_error() {
    let dir = temp_dir("usage");
    let sock = dir.join("mi.sock");
    let p = sock.to_str().expect("utf-8");
    let cases: &[&[&str]] = &[
        &["--server", "127.0.0.1:7200", "--mi", p, "view"],
        &["--server", "127.0.0.1:7200", "--mi", p, "join", "chat"],
        &["--mi", p, "--server", "127.0.0.1:7200", "groups"],
        &["--mi", p, "groups"],
        &["--mi", p, "leave"],
        &["--mi", p, "view"],
        &["--server", "127.0.0.1:7200", "join", "chat"],
        &["--server", "127.0.0.1:7200", "create", "chat"],
        &["--server", "127.0.0.1:7200", "view", "chat"],
        &["--server", "127.0.0.1:7200", "lookup", "chat", "a"],
    ];
    for case in cases {
        let (code, out, err) = run(case);
        assert_eq!(code, Some(2), "{case:?}: {err}");
        assert!(out.is_empty(), "{case:?}");
        assert!(one_line(&err).starts_with("msctl: "), "{case:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The hidden `--timestamps` (for `msbench app`) adds `at_ns` to every
/// JSON line and `join_called_ns` (not after `at_ns`) to the first only,
/// the other fields unchanged; without it neither field is there, and it
/// needs `--json`.
#[test]
fn join_timestamps_only_with_the_flag() {
    let fake = FakeMi::start();
    fake.create("chat");
    let m = Msctl::spawn(&mi_args(
        &fake,
        &["join", "chat", "--name", "alice", "--json", "--timestamps"],
    ));
    let first = json(&m.line());
    let at = first["at_ns"].as_u64().expect("at_ns on the first line");
    let called = first["join_called_ns"]
        .as_u64()
        .expect("join_called_ns on the first line");
    assert!(
        called > 0 && called <= at,
        "join_called_ns {called}, at_ns {at}"
    );
    assert_eq!(first["view"], 1);
    assert_eq!(first["me"]["name"], "alice");
    assert_eq!(names(&first), ["alice"]);
    fake.add_member("chat", "bob");
    let second = json(&m.line());
    let at2 = second["at_ns"].as_u64().expect("at_ns on every line");
    assert!(at2 >= at, "at_ns {at2} after {at}");
    assert!(second.get("join_called_ns").is_none(), "{second}");
    assert_eq!(second["view"], 2);
    assert_eq!(names(&second), ["alice", "bob"]);
    m.signal("TERM");
    let (code, err) = m.wait();
    assert_eq!(code, Some(0), "stderr: {err}");

    let plain = Msctl::spawn(&mi_args(
        &fake,
        &["join", "chat", "--name", "carol", "--json"],
    ));
    let line = json(&plain.line());
    assert_eq!(line["me"]["name"], "carol");
    assert!(line.get("at_ns").is_none(), "{line}");
    assert!(line.get("join_called_ns").is_none(), "{line}");
    fake.add_member("chat", "dave");
    let line = json(&plain.line());
    assert!(line.get("at_ns").is_none(), "{line}");
    plain.signal("TERM");
    let (code, err) = plain.wait();
    assert_eq!(code, Some(0), "stderr: {err}");

    let (code, _, err) = run(&mi_args(&fake, &["join", "chat", "--timestamps"]));
    assert_eq!(code, Some(2), "--timestamps without --json: {err}");
}
