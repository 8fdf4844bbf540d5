//! The registry's unit tests.

use super::*;
use crate::appgroup::{MemberKind, MemberName};
use crate::id::NodeId;

fn gname(s: &str) -> GroupName {
    GroupName::parse(s).expect("group name")
}

fn req(mi: u128, seq: u64) -> RequestId {
    RequestId {
        mi: Uuid::from_u128(mi),
        seq,
    }
}

fn member(name: &str, id: u128) -> AppMember {
    AppMember {
        name: MemberName::parse(name).expect("name"),
        kind: MemberKind::default(),
        id: Uuid::from_u128(id),
        host: "h".into(),
    }
}

fn attach(r: &mut Registry, mi: u128) {
    let out = r.apply(&AppOp::Attach {
        req: req(mi, 0),
        host: "h".into(),
        mserver: NodeId::v4(127, 0, 0, 1, 7200),
    });
    assert_eq!(out.result, Ok(AppReply::Attached));
}

fn create(r: &mut Registry, g: &str, seq: u64) -> Applied {
    for mi in [1, 2, 7, 8] {
        if r.mi(&Uuid::from_u128(mi)).is_none() {
            attach(r, mi);
        }
    }
    r.apply(&AppOp::Create {
        req: req(1, seq),
        group: gname(g),
        options: GroupOptions::default(),
    })
}

#[test]
fn create_join_leave_number_the_views() {
    let mut r = Registry::new();
    assert_eq!(create(&mut r, "g", 1).result, Ok(AppReply::Created));
    assert_eq!(create(&mut r, "g", 2).result, Err(AppError::NameTaken));
    let a = r.apply(&AppOp::Join {
        req: req(1, 3),
        group: gname("g"),
        member: member("a", 10),
    });
    assert_eq!(a.views.len(), 1);
    assert_eq!(a.views[0].number, 1);
    let b = r.apply(&AppOp::Join {
        req: req(2, 1),
        group: gname("g"),
        member: member("b", 11),
    });
    assert_eq!(b.views[0].number, 2);
    assert_eq!(b.views[0].members.len(), 2);
    let clash = r.apply(&AppOp::Join {
        req: req(2, 2),
        group: gname("g"),
        member: member("a", 12),
    });
    assert_eq!(clash.result, Err(AppError::NameTaken));
    assert!(clash.views.is_empty());
    let nogroup = r.apply(&AppOp::Join {
        req: req(2, 3),
        group: gname("nope"),
        member: member("c", 13),
    });
    assert_eq!(nogroup.result, Err(AppError::NoSuchGroup));
    let left = r.apply(&AppOp::Leave {
        req: req(1, 4),
        group: gname("g"),
        member: Uuid::from_u128(10),
    });
    assert_eq!(left.result, Ok(AppReply::Left));
    assert_eq!(left.views[0].number, 3);
    let again = r.apply(&AppOp::Leave {
        req: req(1, 5),
        group: gname("g"),
        member: Uuid::from_u128(10),
    });
    assert_eq!(again.result, Err(AppError::NotMember));
}

#[test]
fn duplicates_change_nothing_and_get_the_same_answer() {
    let mut r = Registry::new();
    create(&mut r, "g", 1);
    let op = AppOp::Join {
        req: req(1, 2),
        group: gname("g"),
        member: member("a", 10),
    };
    let first = r.apply(&op);
    let second = r.apply(&op);
    assert!(second.duplicate);
    assert_eq!(second.result, first.result);
    assert!(second.views.is_empty());
    assert_eq!(r.view(&gname("g")).map(|v| v.number), Some(1));
}

#[test]
fn an_mi_failure_removes_all_its_members_in_one_view_per_group() {
    let mut r = Registry::new();
    create(&mut r, "g", 1);
    create(&mut r, "h", 2);
    for (i, (g, mi)) in [("g", 7), ("g", 7), ("g", 8), ("h", 7), ("h", 8)]
        .into_iter()
        .enumerate()
    {
        let n = u128::try_from(i).expect("small") + 100;
        r.apply(&AppOp::Join {
            req: req(mi, n as u64),
            group: gname(g),
            member: member(&format!("m{i}"), n),
        });
    }
    let out = r.apply(&AppOp::MiFailed {
        mis: vec![(Uuid::from_u128(7), 0)],
    });
    assert_eq!(out.result, Ok(AppReply::MiRemoved(2)));
    assert_eq!(out.views.len(), 2);
    assert_eq!(out.views[0].members.len(), 1);
    assert_eq!(out.views[0].number, 4);
    assert_eq!(out.views[1].members.len(), 1);
}

#[test]
fn joins_through_an_mi_that_is_not_attached_are_refused() {
    let mut r = Registry::new();
    create(&mut r, "g", 1);
    let out = r.apply(&AppOp::Join {
        req: req(99, 1),
        group: gname("g"),
        member: member("a", 10),
    });
    assert_eq!(out.result, Err(AppError::Disconnected));
    r.apply(&AppOp::MiFailed {
        mis: vec![(Uuid::from_u128(7), 0)],
    });
    assert!(r.mi(&Uuid::from_u128(7)).is_none());
    let out = r.apply(&AppOp::Join {
        req: req(7, 50),
        group: gname("g"),
        member: member("a", 10),
    });
    assert_eq!(out.result, Err(AppError::Disconnected));
}

#[test]
fn a_later_attachment_moves_the_mi_and_an_older_one_does_not() {
    let mut r = Registry::new();
    let a = NodeId::v4(127, 0, 0, 1, 7200);
    let b = NodeId::v4(127, 0, 0, 2, 7200);
    for (seq, at) in [(1, a), (3, b), (2, a)] {
        r.apply(&AppOp::Attach {
            req: req(5, seq),
            host: "h5".into(),
            mserver: at,
        });
    }
    let rec = r.mi(&Uuid::from_u128(5)).expect("attached");
    assert_eq!((rec.mserver, rec.attach_seq), (b, 3));
    let bad = r.apply(&AppOp::Attach {
        req: req(6, 1),
        host: String::new(),
        mserver: a,
    });
    assert!(matches!(bad.result, Err(AppError::InvalidName(_))));
}

#[test]
fn missed_views_come_from_the_history_until_it_runs_out() {
    let mut r = Registry::new();
    create(&mut r, "g", 1);
    for i in 0..(VIEW_HISTORY as u64 + 5) {
        r.apply(&AppOp::Join {
            req: req(1, 100 + i),
            group: gname("g"),
            member: member(&format!("m{i}"), 1000 + u128::from(i)),
        });
    }
    let now = r.view(&gname("g")).expect("group").number;
    let recent = r.views_since(&gname("g"), now - 3).expect("recent");
    assert_eq!(
        recent.iter().map(|v| v.number).collect::<Vec<_>>(),
        vec![now - 2, now - 1, now]
    );
    assert_eq!(r.views_since(&gname("g"), now), Some(Vec::new()));
    assert_eq!(r.views_since(&gname("g"), 0), None);
    assert_eq!(r.views_since(&gname("nope"), 0), None);
}

#[test]
fn a_registry_copy_is_the_same_registry() {
    let mut r = Registry::new();
    create(&mut r, "g", 1);
    r.apply(&AppOp::Join {
        req: req(1, 2),
        group: gname("g"),
        member: member("a", 10),
    });
    let copy = Registry::decode(&r.encode().expect("encodes")).expect("decodes");
    assert_eq!(copy.views(), r.views());
    assert_eq!(copy.mi(&Uuid::from_u128(1)), r.mi(&Uuid::from_u128(1)));
    // The copy remembers the requests too.
    let mut copy = copy;
    let dup = copy.apply(&AppOp::Join {
        req: req(1, 2),
        group: gname("g"),
        member: member("a", 10),
    });
    assert!(dup.duplicate);
    assert!(Registry::decode(&[0xff, 0x00, 0x13]).is_err());
}

fn group_with(r: &mut Registry, g: &str, options: GroupOptions, hosts: &[u128]) {
    for mi in [1, 2, 7, 8] {
        if r.mi(&Uuid::from_u128(mi)).is_none() {
            attach(r, mi);
        }
    }
    r.apply(&AppOp::Create {
        req: req(1, 900),
        group: gname(g),
        options,
    });
    for (i, mi) in hosts.iter().enumerate() {
        let n = 500 + i as u128;
        let out = r.apply(&AppOp::Join {
            req: req(*mi, 1000 + i as u64),
            group: gname(g),
            member: member(&format!("m{i}"), n),
        });
        assert!(out.result.is_ok(), "{:?}", out.result);
    }
}

fn majority() -> GroupOptions {
    GroupOptions {
        survive: crate::appgroup::SurviveRule::KeepMajority,
        ..GroupOptions::default()
    }
}

#[test]
fn a_minority_part_is_terminated_by_keep_majority() {
    let mut r = Registry::new();
    group_with(&mut r, "g", majority(), &[1, 2, 7]);
    let out = r.apply(&AppOp::MiFailed {
        mis: vec![(Uuid::from_u128(2), 0), (Uuid::from_u128(7), 0)],
    });
    assert_eq!(out.views.len(), 1);
    assert!(out.views[0].is_empty(), "{:?}", out.views[0]);
    assert_eq!(
        out.lost,
        vec![(gname("g"), Uuid::from_u128(500), Uuid::from_u128(1))]
    );
    // The same loss in a keep-all group keeps the rest running.
    let mut r = Registry::new();
    group_with(&mut r, "g", GroupOptions::default(), &[1, 2, 7]);
    let out = r.apply(&AppOp::MiFailed {
        mis: vec![(Uuid::from_u128(2), 0), (Uuid::from_u128(7), 0)],
    });
    assert_eq!(out.views[0].len(), 1);
    assert!(out.lost.is_empty());
}

#[test]
fn an_mi_that_attached_again_is_spared() {
    let mut r = Registry::new();
    group_with(&mut r, "g", GroupOptions::default(), &[1, 2]);
    r.apply(&AppOp::Attach {
        req: req(2, 5),
        host: "h".into(),
        mserver: NodeId::v4(127, 0, 0, 2, 7200),
    });
    // A failure seen for its earlier attachment (seq 0).
    let out = r.apply(&AppOp::MiFailed {
        mis: vec![(Uuid::from_u128(2), 0)],
    });
    assert!(out.views.is_empty());
    assert_eq!(r.view(&gname("g")).map(|v| v.len()), Some(2));
}

#[test]
fn reform_merges_the_parts_above_both_numbers_once() {
    // Side A lost MI 2's member at the partition; side B kept it and
    // went on to view 9.
    let mut a = Registry::new();
    group_with(&mut a, "g", GroupOptions::default(), &[1, 2]);
    a.apply(&AppOp::MiFailed {
        mis: vec![(Uuid::from_u128(2), 0)],
    });
    let before = a.view(&gname("g")).expect("group");
    assert_eq!(before.len(), 1);
    a.apply(&AppOp::Readmit {
        mis: vec![(
            Uuid::from_u128(2),
            MiRecord {
                mserver: NodeId::v4(127, 0, 0, 2, 7200),
                host: "h".into(),
                attach_seq: 0,
            },
        )],
    });
    let op = AppOp::Reform {
        group: gname("g"),
        options: GroupOptions::default(),
        number: 9,
        base: None,
        members: vec![(member("m1", 501), Uuid::from_u128(2))],
    };
    let out = a.apply(&op);
    assert_eq!(out.views.len(), 1);
    assert_eq!(out.views[0].number, 10);
    assert_eq!(out.views[0].len(), 2);
    // Another absorbed mserver submits the same part: nothing changes.
    let again = a.apply(&op);
    assert!(again.views.is_empty() && again.lost.is_empty());
    // A group only the absorbed side knew is taken in as it was.
    let other = a.apply(&AppOp::Reform {
        group: gname("new"),
        options: GroupOptions::default(),
        number: 4,
        base: None,
        members: vec![(member("x", 600), Uuid::from_u128(2))],
    });
    assert_eq!(other.views[0].number, 5);
    assert_eq!(a.view(&gname("new")).map(|v| v.len()), Some(1));
}

#[test]
fn reform_refused_by_the_merge_rule_reports_the_members_lost() {
    let options = GroupOptions {
        merge: crate::appgroup::MergeRule::KeepOldest,
        ..GroupOptions::default()
    };
    let mut a = Registry::new();
    // m0 (the oldest, on MI 1), m1 and m2 on MIs 2 and 7.
    group_with(&mut a, "g", options.clone(), &[1, 2, 7]);
    // This side lost the oldest member's MI ...
    a.apply(&AppOp::MiFailed {
        mis: vec![(Uuid::from_u128(1), 0), (Uuid::from_u128(7), 0)],
    });
    // ... and the other side's part (m2) does not hold it either.
    let out = a.apply(&AppOp::Reform {
        group: gname("g"),
        options,
        number: 7,
        base: None,
        members: vec![(member("m2", 502), Uuid::from_u128(7))],
    });
    assert!(out.views.is_empty());
    assert_eq!(
        out.lost,
        vec![(gname("g"), Uuid::from_u128(502), Uuid::from_u128(7))]
    );
}

#[test]
fn one_commit_makes_one_view_per_group() {
    let mut r = Registry::new();
    create(&mut r, "g", 1);
    let join = |seq: u64, name: &str, id: u128| {
        AppOp::Join {
            req: req(1, seq),
            group: gname("g"),
            member: member(name, id),
        }
        .encode()
        .expect("encodes")
    };
    let out = r.apply_payloads(&[join(2, "a", 10), join(3, "b", 11), join(2, "a", 10)]);
    assert_eq!(out.len(), 3);
    // One view (number 1) with both; both joins answered with it.
    for a in &out[..2] {
        assert_eq!(a.views.len(), 1);
        assert_eq!(a.views[0].number, 1);
        assert_eq!(a.views[0].len(), 2);
        assert!(matches!(&a.result, Ok(AppReply::Joined(v)) if v.number == 1 && v.len() == 2));
    }
    // The duplicate in the same commit is one, with the same answer.
    assert!(out[2].duplicate);
    assert_eq!(out[2].result, out[0].result);
    // And a later duplicate gets the commit's view too.
    let later = r.apply_payload(&join(3, "b", 11));
    assert!(later.duplicate);
    assert!(matches!(&later.result, Ok(AppReply::Joined(v)) if v.number == 1));
    // A join whose MI fails later in the same commit did not happen.
    let failed = AppOp::MiFailed {
        mis: vec![(Uuid::from_u128(1), 0)],
    }
    .encode()
    .expect("encodes");
    let out = r.apply_payloads(&[join(4, "c", 12), failed]);
    assert_eq!(out[0].result, Err(AppError::Disconnected));
    assert!(r
        .view(&gname("g"))
        .is_some_and(|v| !v.contains(Uuid::from_u128(12))));
}

#[test]
fn payloads_round_trip_and_garbage_is_refused() {
    let op = AppOp::Create {
        req: req(1, 1),
        group: gname("g"),
        options: GroupOptions::default(),
    };
    let bytes = op.encode().expect("encodes");
    assert_eq!(AppOp::decode(&bytes), Ok(op));
    let mut r = Registry::new();
    for junk in [&b""[..], &b"\xff\xff\xff"[..], &bytes[..bytes.len() / 2]] {
        let out = r.apply_payload(junk);
        assert!(out.result.is_err());
        assert!(out.views.is_empty());
    }
}
