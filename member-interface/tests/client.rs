//! The client library against a fake member interface (a test double,
//! `common/mod.rs`): the handshake and its failures, timeouts, routing of
//! answers and views, the end of a connection, bounded view queues, and the
//! blocking wrapper.

mod common;

use common::{FakeMi, Mode};
use futures_core::Stream;
use member_interface::proto::{encode_frame, MembershipId, Op, ServerMsg, VERSION};
use member_interface::{
    blocking, AppError, AppMember, AppView, Client, ClientConfig, GroupName, GroupOptions,
    MemberInfo, MemberKind, MemberName, Membership, SurviveRule,
};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use uuid::Uuid;

/// Every wait in these tests is bounded by this (a hang guard, not a
/// performance assertion).
const GUARD: Duration = Duration::from_secs(10);

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(GUARD, f)
        .await
        .expect("the test hung: no result within the guard")
}

fn member(name: &str) -> MemberInfo {
    MemberInfo::new(MemberName::parse(name).expect("name"))
}

fn quick(timeout_ms: u64) -> ClientConfig {
    ClientConfig {
        call_timeout: Duration::from_millis(timeout_ms),
        ..ClientConfig::default()
    }
}

fn frame(msg: &ServerMsg) -> Vec<u8> {
    encode_frame(msg).expect("encode")
}

async fn next_from_stream(m: &mut Membership) -> Option<AppView> {
    std::future::poll_fn(|cx| Pin::new(&mut *m).poll_next(cx)).await
}

fn view(group: &str, number: u64) -> AppView {
    AppView {
        group: GroupName::parse(group).expect("group"),
        number,
        members: vec![AppMember {
            name: MemberName::parse("x").expect("name"),
            kind: MemberKind::default(),
            id: Uuid::from_u128(number as u128),
            host: "h".into(),
        }],
    }
}

#[tokio::test]
async fn handshake_welcomes() {
    let mi = FakeMi::start(Mode::Normal);
    let client = within(Client::connect(&mi.path)).await.expect("connect");
    assert!(client.mi().contains("fake-mi"), "{}", client.mi());
    assert!(!client.is_closed());
}

#[tokio::test]
async fn version_mismatch_is_typed() {
    // The MI refuses our version.
    let refusal = frame(&ServerMsg::Refused {
        reason: AppError::VersionMismatch {
            ours: VERSION + 1,
            theirs: VERSION,
        },
    });
    let mi = FakeMi::start(Mode::HandshakeReply(refusal));
    let r = within(Client::connect(&mi.path)).await;
    assert_eq!(
        r.err(),
        Some(AppError::VersionMismatch {
            ours: VERSION,
            theirs: VERSION + 1
        })
    );
    // The MI welcomes with another version.
    let welcome = frame(&ServerMsg::Welcome {
        version: VERSION + 7,
        mi: "future".into(),
    });
    let mi = FakeMi::start(Mode::HandshakeReply(welcome));
    let r = within(Client::connect(&mi.path)).await;
    assert_eq!(
        r.err(),
        Some(AppError::VersionMismatch {
            ours: VERSION,
            theirs: VERSION + 7
        })
    );
}

#[tokio::test]
async fn refusal_reason_is_returned() {
    let refusal = frame(&ServerMsg::Refused {
        reason: AppError::TooManyClients,
    });
    let mi = FakeMi::start(Mode::HandshakeReply(refusal));
    let r = within(Client::connect(&mi.path)).await;
    assert_eq!(r.err(), Some(AppError::TooManyClients));
}

#[tokio::test]
async fn garbage_handshake_is_disconnected() {
    let cases: [&[u8]; 4] = [
        b"\x00\x00\x00\x03abc",              // a frame that is not a message
        b"\xff\xff\xff\xff",                 // an oversized length
        b"\x00\x00\x00\x10short",            // a truncated frame
        b"HTTP/1.1 400 Bad Request\r\n\r\n", // not the protocol at all
    ];
    for bytes in cases {
        let mi = FakeMi::start(Mode::HandshakeReply(bytes.to_vec()));
        let r = within(Client::connect(&mi.path)).await;
        assert_eq!(r.err(), Some(AppError::Disconnected), "{bytes:?}");
    }
}

#[tokio::test]
async fn unreachable_socket_is_a_connect_error() {
    let mi = FakeMi::start(Mode::Normal);
    let missing = mi.path.with_file_name("nobody.sock");
    let r = within(Client::connect(&missing)).await;
    assert!(
        matches!(r, Err(AppError::Connect(ref s)) if s.contains("nobody.sock")),
        "{r:?}"
    );
}

#[tokio::test]
async fn silent_handshake_times_out() {
    let mi = FakeMi::start(Mode::SilentHandshake);
    let r = within(Client::connect_with(&mi.path, quick(200))).await;
    assert_eq!(r.err(), Some(AppError::Timeout));
}

#[tokio::test]
async fn silent_server_times_out() {
    let mi = FakeMi::start(Mode::SilentRequests);
    let client = within(Client::connect_with(&mi.path, quick(200)))
        .await
        .expect("connect");
    let r = within(client.create_group("g", GroupOptions::default())).await;
    assert_eq!(r, Err(AppError::Timeout));
    let r = within(client.join("g", member("a"))).await;
    assert_eq!(r.err(), Some(AppError::Timeout));
    // The requests did reach the MI; the client is still usable.
    assert!(mi
        .wait_request(GUARD, |op| matches!(op, Op::Join { .. }))
        .await
        .is_some());
    assert!(!client.is_closed());
}

#[tokio::test]
async fn calls_in_flight_are_bounded() {
    let mi = FakeMi::start(Mode::SilentRequests);
    let config = ClientConfig {
        max_pending: 2,
        ..quick(300)
    };
    let client = within(Client::connect_with(&mi.path, config))
        .await
        .expect("connect");
    let (a, b, c) =
        within(async { tokio::join!(client.view("g"), client.view("g"), client.view("g")) }).await;
    let results = [a, b, c];
    let busy = results
        .iter()
        .filter(|r| **r == Err(AppError::Busy))
        .count();
    let timeouts = results
        .iter()
        .filter(|r| **r == Err(AppError::Timeout))
        .count();
    assert_eq!((busy, timeouts), (1, 2), "{results:?}");
}

#[tokio::test]
async fn invalid_input_fails_before_the_mi() {
    let mi = FakeMi::start(Mode::SilentRequests);
    let client = within(Client::connect_with(&mi.path, quick(5000)))
        .await
        .expect("connect");
    // These would time out if they reached the silent MI.
    let r = within(client.create_group("no spaces", GroupOptions::default())).await;
    assert!(matches!(r, Err(AppError::InvalidName(_))), "{r:?}");
    let long = "g".repeat(65);
    let r = within(client.join(&long, member("a"))).await;
    assert!(matches!(r, Err(AppError::InvalidName(_))), "{r:?}");
    let options = GroupOptions {
        survive: SurviveRule::StaticQuorum(0),
        ..GroupOptions::default()
    };
    let r = within(client.create_group("g", options)).await;
    assert!(matches!(r, Err(AppError::InvalidOptions(_))), "{r:?}");
    let r = within(client.lookup("g", "bad\nname")).await;
    assert!(matches!(r, Err(AppError::InvalidName(_))), "{r:?}");
}

#[tokio::test]
async fn answers_reach_their_own_calls() {
    // The fake answers each batch of three requests in reverse order.
    let mi = FakeMi::start(Mode::Reverse(3));
    let client = within(Client::connect(&mi.path)).await.expect("connect");
    let (a, b, c) = within(async {
        tokio::join!(
            client.create_group("g1", GroupOptions::default()),
            client.create_group("g2", GroupOptions::default()),
            client.create_group("g3", GroupOptions::default()),
        )
    })
    .await;
    assert_eq!((a, b, c), (Ok(()), Ok(()), Ok(())));
    let (a, b, c) = within(async {
        tokio::join!(
            client.join("g1", member("a")),
            client.join("g2", member("b")),
            client.view("g3"),
        )
    })
    .await;
    let a = a.expect("join g1");
    let b = b.expect("join g2");
    assert_eq!((a.group().as_str(), a.me().name.as_str()), ("g1", "a"));
    assert_eq!((b.group().as_str(), b.me().name.as_str()), ("g2", "b"));
    let c = c.expect("view g3");
    assert_eq!((c.group.as_str(), c.number, c.len()), ("g3", 0, 0));
    let (x, y, z) = within(async {
        tokio::join!(
            client.lookup("g1", "a"),
            client.lookup("g2", "nobody"),
            client.view("missing"),
        )
    })
    .await;
    assert_eq!(x.map(|m| m.id), Ok(a.me().id));
    assert_eq!(y, Err(AppError::NotMember));
    assert_eq!(z, Err(AppError::NoSuchGroup));
}

#[tokio::test]
async fn group_lifecycle() {
    let mi = FakeMi::start(Mode::Normal);
    let c1 = within(Client::connect(&mi.path)).await.expect("connect");
    let c2 = within(Client::connect(&mi.path)).await.expect("connect");
    within(c1.create_group("chat", GroupOptions::default()))
        .await
        .expect("create");
    assert_eq!(
        within(c2.create_group("chat", GroupOptions::default())).await,
        Err(AppError::NameTaken)
    );
    assert_eq!(
        within(c1.join("nope", member("a"))).await.err(),
        Some(AppError::NoSuchGroup)
    );
    let mut a = within(c1.join(
        "chat",
        member("a").with_kind(MemberKind::parse("db").expect("kind")),
    ))
    .await
    .expect("join a");
    let first = within(a.next_view()).await.expect("first view");
    assert_eq!(first.number, 1);
    assert_eq!(first.members, vec![a.me().clone()]);
    assert_eq!(a.me().kind.as_str(), "db");
    assert_eq!(
        within(c1.join("chat", member("a2"))).await.err(),
        Some(AppError::AlreadyMember)
    );
    assert_eq!(
        within(c2.join("chat", member("a"))).await.err(),
        Some(AppError::NameTaken)
    );
    let mut b = within(c2.join("chat", member("b"))).await.expect("join b");
    let second = within(a.next_view()).await.expect("view 2");
    assert_eq!(second.number, 2);
    let names: Vec<&str> = second.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["a", "b"], "members in join order");
    assert_eq!(within(b.next_view()).await.expect("b's first"), second);
    let found = within(a.lookup("b")).await.expect("lookup");
    assert_eq!((found.id, found.host.as_str()), (b.me().id, "fake-host"));
    assert_eq!(within(a.view()).await.expect("view"), second);
    within(b.leave()).await.expect("leave");
    let third = within(a.next_view()).await.expect("view 3");
    assert_eq!((third.number, third.len()), (3, 1));
    assert_eq!(within(c2.view("chat")).await.expect("view"), third);
    let a_id = a.id();
    drop(a);
    let left = mi
        .wait_request(GUARD, |op| {
            *op == Op::Leave {
                membership_id: a_id,
            }
        })
        .await;
    assert!(left.is_some(), "dropping a membership leaves the group");
}

#[tokio::test]
async fn views_reach_their_own_membership_in_order() {
    let mi = FakeMi::start(Mode::Normal);
    let client = within(Client::connect(&mi.path)).await.expect("connect");
    for g in ["g1", "g2"] {
        within(client.create_group(g, GroupOptions::default()))
            .await
            .expect("create");
    }
    let mut a = within(client.join("g1", member("a"))).await.expect("join");
    let mut b = within(client.join("g2", member("b"))).await.expect("join");
    const N: u64 = 200;
    for n in 2..=N {
        mi.push_view(a.id(), view("g1", n));
        mi.push_view(b.id(), view("g2", n));
    }
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    within(async {
        while got_a.len() < N as usize || got_b.len() < N as usize {
            tokio::select! {
                v = a.next_view(), if got_a.len() < N as usize => got_a.push(v.expect("a")),
                v = next_from_stream(&mut b), if got_b.len() < N as usize => got_b.push(v.expect("b")),
            }
        }
    })
    .await;
    let numbers = |vs: &[AppView], g: &str| {
        assert!(vs.iter().all(|v| v.group.as_str() == g));
        vs.iter().map(|v| v.number).collect::<Vec<_>>()
    };
    let expected: Vec<u64> = (1..=N).collect();
    assert_eq!(numbers(&got_a, "g1"), expected);
    assert_eq!(numbers(&got_b, "g2"), expected);
    assert_eq!(a.try_next_view(), Ok(None));
}

#[tokio::test]
async fn closed_connection_ends_everything() {
    // Batches of two: the third request stays pending.
    let mi = FakeMi::start(Mode::Reverse(2));
    let client = within(Client::connect_with(&mi.path, quick(30_000)))
        .await
        .expect("connect");
    let (created, _) = within(async {
        tokio::join!(
            client.create_group("g", GroupOptions::default()),
            client.view("g"),
        )
    })
    .await;
    created.expect("create");
    let (joined, _) = within(async {
        tokio::join!(client.join("g", member("a")), async {
            // Joins are answered in a batch of two: send the second one
            // after the join is on its way.
            tokio::task::yield_now().await;
            client.view("g").await
        })
    })
    .await;
    let mut a = joined.expect("join");
    assert_eq!(within(a.next_view()).await.expect("first").number, 1);
    let pending = client.view("g");
    let close = async {
        // Let the pending call (the third view request) reach the MI, then
        // close.
        for _ in 0..3 {
            let seen = mi
                .wait_request(GUARD, |op| matches!(op, Op::View { .. }))
                .await;
            assert!(seen.is_some());
        }
        mi.close_all();
    };
    let (r, ()) = within(async { tokio::join!(pending, close) }).await;
    assert_eq!(r, Err(AppError::Disconnected));
    assert_eq!(within(a.next_view()).await, Err(AppError::Disconnected));
    assert_eq!(within(a.next_view()).await, Err(AppError::Disconnected));
    assert_eq!(a.end_reason(), Some(&AppError::Disconnected));
    assert!(client.is_closed());
    assert_eq!(within(client.view("g")).await, Err(AppError::Disconnected));
    assert_eq!(within(a.leave()).await, Err(AppError::Disconnected));
}

#[tokio::test]
async fn garbage_after_the_handshake_disconnects() {
    let cases: [&[u8]; 3] = [
        b"\x00\x00\x00\x03abc",
        b"\xff\xff\xff\xff",
        // A handshake frame where an answer belongs.
        &[0, 0, 0, 3, 0, 1, 0],
    ];
    for bytes in cases {
        let mi = FakeMi::start(Mode::Normal);
        let client = within(Client::connect(&mi.path)).await.expect("connect");
        within(client.create_group("g", GroupOptions::default()))
            .await
            .expect("create");
        let mut a = within(client.join("g", member("a"))).await.expect("join");
        assert_eq!(within(a.next_view()).await.expect("first").number, 1);
        mi.raw(bytes.to_vec());
        assert_eq!(
            within(a.next_view()).await,
            Err(AppError::Disconnected),
            "{bytes:?}"
        );
        assert_eq!(within(client.view("g")).await, Err(AppError::Disconnected));
    }
}

#[tokio::test]
async fn slow_reader_overflows_and_leaves() {
    let mi = FakeMi::start(Mode::Normal);
    let config = ClientConfig {
        view_queue: 8,
        ..ClientConfig::default()
    };
    let client = within(Client::connect_with(&mi.path, config))
        .await
        .expect("connect");
    within(client.create_group("g", GroupOptions::default()))
        .await
        .expect("create");
    let mut a = within(client.join("g", member("a"))).await.expect("join");
    let id = a.id();
    for n in 2..=20 {
        mi.push_view(id, view("g", n));
    }
    // The library leaves the group for the overflowing membership.
    let leave = mi
        .wait_request(GUARD, |op| *op == Op::Leave { membership_id: id })
        .await;
    assert!(leave.is_some());
    // The queued views still come, in order, then the error.
    let mut numbers = Vec::new();
    let end = loop {
        match within(a.next_view()).await {
            Ok(v) => numbers.push(v.number),
            Err(e) => break e,
        }
    };
    assert_eq!(numbers, (1..=8).collect::<Vec<u64>>());
    assert_eq!(end, AppError::Overflow);
    assert_eq!(a.try_next_view(), Err(AppError::Overflow));
    // The connection itself goes on.
    assert!(within(client.view("g")).await.is_ok());
}

#[tokio::test]
async fn ended_membership_reports_its_reason() {
    let mi = FakeMi::start(Mode::Normal);
    let client = within(Client::connect(&mi.path)).await.expect("connect");
    within(client.create_group("g", GroupOptions::default()))
        .await
        .expect("create");
    let mut a = within(client.join("g", member("a"))).await.expect("join");
    mi.push_view(a.id(), view("g", 2));
    mi.end(a.id(), AppError::Excluded);
    assert_eq!(next_from_stream(&mut a).await.map(|v| v.number), Some(1));
    assert_eq!(next_from_stream(&mut a).await.map(|v| v.number), Some(2));
    assert_eq!(within(next_from_stream(&mut a)).await, None);
    assert_eq!(a.end_reason(), Some(&AppError::Excluded));
    assert_eq!(within(a.next_view()).await, Err(AppError::Excluded));
}

#[tokio::test]
async fn late_join_answer_is_left() {
    // Each answer comes 300 ms late; calls give up after 100 ms.
    let mi = FakeMi::start(Mode::Delay(Duration::from_millis(300)));
    let client = within(Client::connect_with(&mi.path, quick(100)))
        .await
        .expect("connect");
    assert_eq!(
        within(client.create_group("g", GroupOptions::default())).await,
        Err(AppError::Timeout)
    );
    assert_eq!(
        within(client.join("g", member("a"))).await.err(),
        Some(AppError::Timeout)
    );
    // The MI commits the join anyway; the library leaves it again. The
    // fake numbers memberships from 1.
    let leave = mi
        .wait_request(GUARD, |op| {
            *op == Op::Leave {
                membership_id: MembershipId(1),
            }
        })
        .await;
    assert!(leave.is_some(), "a join answered too late is left");
}

#[test]
fn blocking_client_works() {
    let mi = FakeMi::start(Mode::Normal);
    let c1 = blocking::Client::connect(&mi.path).expect("connect");
    let c2 = blocking::Client::connect(&mi.path).expect("connect");
    assert!(c1.mi().contains("fake-mi"));
    c1.create_group("g", GroupOptions::default())
        .expect("create");
    assert_eq!(
        c2.create_group("g", GroupOptions::default()),
        Err(AppError::NameTaken)
    );
    let mut a = c1.join("g", member("a")).expect("join a");
    assert_eq!(a.group().as_str(), "g");
    assert_eq!(a.next_view().expect("first").number, 1);
    let b = c2.join("g", member("b")).expect("join b");
    let second = a.next_view_timeout(GUARD).expect("view 2");
    assert_eq!((second.number, second.len()), (2, 2));
    assert_eq!(a.lookup("b").expect("lookup").id, b.me().id);
    assert_eq!(c1.lookup("g", "b").expect("lookup").id, b.me().id);
    assert_eq!(c2.view("g").expect("view"), second);
    assert_eq!(a.view().expect("view"), second);
    b.leave().expect("leave");
    assert_eq!(a.next().map(|v| (v.number, v.len())), Some((3, 1)));
    assert_eq!(
        a.next_view_timeout(Duration::from_millis(50)),
        Err(AppError::Timeout)
    );
    assert!(a.end_reason().is_none());
    a.leave().expect("leave");
    assert_eq!(c1.view("g").expect("view").len(), 0);
}

#[test]
fn blocking_client_errors_are_typed() {
    let mi = FakeMi::start(Mode::SilentHandshake);
    let r = blocking::Client::connect_with(&mi.path, quick(100));
    assert_eq!(r.err(), Some(AppError::Timeout));
    let missing = mi.path.with_file_name("nobody.sock");
    assert!(matches!(
        blocking::Client::connect(missing),
        Err(AppError::Connect(_))
    ));
}

#[tokio::test]
async fn blocking_client_inside_a_runtime_is_refused() {
    let mi = FakeMi::start(Mode::Normal);
    let r = blocking::Client::connect(&mi.path);
    assert!(matches!(r, Err(AppError::Internal(_))), "{r:?}");
}

#[tokio::test]
async fn extreme_config_values_are_clamped() {
    let mi = FakeMi::start(Mode::Normal);
    let config = ClientConfig {
        view_queue: usize::MAX,
        max_pending: 0,
        ..ClientConfig::default()
    };
    let client = within(Client::connect_with(&mi.path, config))
        .await
        .expect("connect");
    within(client.create_group("g", GroupOptions::default()))
        .await
        .expect("create");
    let mut a = within(client.join("g", member("a"))).await.expect("join");
    assert_eq!(within(a.next_view()).await.expect("first").number, 1);
}
