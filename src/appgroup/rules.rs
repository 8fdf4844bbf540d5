//! Group options: the name-scope and membership-scope (seed 003, sections
//! II.B.2 and II.B.3) and the partition rules (seed 003, section II.D;
//! DESIGN.md section 6, "Partition rules for application groups").
//!
//! When the core-set of an application group partitions, the group splits
//! into parts (virtual partition). Two rules, both chosen by the
//! application when it creates the group, say what happens next:
//!
//! - the **survive rule** ([`SurviveRule`]) says which parts keep running;
//!   the members of a part that does not survive are excluded
//!   ([`AppError::Excluded`]);
//! - the **merge rule** ([`MergeRule`]) says which surviving parts merge
//!   again when the partition heals and they hear each other; parts that do
//!   not merge go on as they are.
//!
//! Both rules come in the same presets, tested against the group's last
//! view before the partition (`last_view`, members in join order) and a
//! part (`part`, the members of the last view still on one side):
//!
//! | preset | survives (a part keeps running when it ...) | merges (two parts merge when one of them ...) |
//! |---|---|---|
//! | `KeepAll` (default) | always: every part goes on | always: the union is the merged view |
//! | `KeepMajority` | holds more than half of `last_view`, or exactly half including its oldest member | holds such a majority |
//! | `StaticQuorum(n)` | has at least `n` members | has at least `n` members |
//! | `KeepOldest` | holds the oldest member of `last_view` | holds that oldest member |
//! | `ContainsKind(k)` | holds a member of kind `k` | holds a member of kind `k` |
//!
//! Members are counted once each, by identity; for `KeepMajority` only the
//! members that were in `last_view` count. `KeepMajority` and `KeepOldest`
//! let at most one part survive a partition; `KeepOldest` lets none survive
//! if the oldest member itself failed at the moment of the partition.
//! The merge rule reads as the thesis puts it ("partitioned subgroups
//! attempt to find and merge with other partitioned subgroups that have a
//! certain property"): a part seeks out the parts that have the property,
//! so two parts merge when either has it.

use super::error::AppError;
use super::view::AppMember;
use crate::coreset::valid_group_name;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use uuid::Uuid;

use super::names::MemberKind;

/// Where in the mserver hierarchy a scope ends (seed 003, section II.B.2:
/// "either the actual name of the core-set or a level number above the MI
/// level").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// The LAN's mserver group (level 1); the default, and the only level
    /// there is until the hierarchy exists.
    #[default]
    Lan,
    /// A level number above the MI level: 1 is the LAN's mserver group
    /// (the same as [`Scope::Lan`]), 2 the group of its parents, and so
    /// on. 0 (the MI level itself) is invalid.
    Level(u8),
    /// A core-set named by its mserver group name.
    CoreSet(String),
}

impl Scope {
    /// The level the scope names, when it names one by number
    /// ([`Scope::Lan`] is level 1); `None` for a core-set name.
    pub fn level(&self) -> Option<u8> {
        match self {
            Scope::Lan => Some(1),
            Scope::Level(n) => Some(*n),
            Scope::CoreSet(_) => None,
        }
    }

    /// Checks the scope: a level is at least 1, a core-set name is a valid
    /// mserver group name.
    pub fn validate(&self) -> Result<(), AppError> {
        match self {
            Scope::Lan => Ok(()),
            Scope::Level(0) => Err(AppError::InvalidOptions(
                "scope level 0 is the MI level; levels start at 1 (the LAN)".into(),
            )),
            Scope::Level(_) => Ok(()),
            Scope::CoreSet(name) if valid_group_name(name) => Ok(()),
            Scope::CoreSet(name) => Err(AppError::InvalidOptions(format!(
                "scope core-set name {name:?} is not a valid mserver group name"
            ))),
        }
    }
}

/// The test both rules share.
enum Test<'a> {
    All,
    Majority,
    Quorum(u32),
    Oldest,
    Kind(&'a MemberKind),
}

impl Test<'_> {
    /// Whether `part` has the property, against `last_view`.
    fn holds(&self, last_view: &[AppMember], part: &[AppMember]) -> bool {
        let ids: BTreeSet<Uuid> = part.iter().map(|m| m.id).collect();
        let oldest = last_view.first().map(|m| m.id);
        match self {
            Test::All => true,
            Test::Majority => {
                let last: BTreeSet<Uuid> = last_view.iter().map(|m| m.id).collect();
                if last.is_empty() {
                    return true;
                }
                let kept = last.intersection(&ids).count();
                2 * kept > last.len()
                    || (2 * kept == last.len() && oldest.is_some_and(|o| ids.contains(&o)))
            }
            Test::Quorum(n) => ids.len() >= *n as usize,
            Test::Oldest => match oldest {
                None => true,
                Some(o) => ids.contains(&o),
            },
            Test::Kind(kind) => part.iter().any(|m| &m.kind == *kind),
        }
    }
}

/// Which parts of a partitioned application group keep running (seed 003,
/// section II.D, first rule). The module documentation has the table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SurviveRule {
    /// Every part keeps running (the default: "all partitions of the group
    /// necessarily survive network partitions").
    #[default]
    KeepAll,
    /// Only a part holding a majority of the last view keeps running; at
    /// an even split, the half holding the last view's oldest member.
    KeepMajority,
    /// A part keeps running if it has at least this many members.
    StaticQuorum(u32),
    /// Only the part holding the last view's oldest member keeps running.
    KeepOldest,
    /// A part keeps running if it holds a member of this kind.
    ContainsKind(MemberKind),
}

impl SurviveRule {
    fn test(&self) -> Test<'_> {
        match self {
            SurviveRule::KeepAll => Test::All,
            SurviveRule::KeepMajority => Test::Majority,
            SurviveRule::StaticQuorum(n) => Test::Quorum(*n),
            SurviveRule::KeepOldest => Test::Oldest,
            SurviveRule::ContainsKind(k) => Test::Kind(k),
        }
    }

    /// Whether `part` (the members of `last_view` still together on one side
    /// of a partition) keeps running; `last_view` is the group's last view
    /// before the partition, members in join order.
    pub fn survives(&self, last_view: &[AppMember], part: &[AppMember]) -> bool {
        self.test().holds(last_view, part)
    }
}

/// Which parts of a partitioned application group merge again when they
/// hear each other (seed 003, section II.D, second rule). The module
/// documentation has the table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MergeRule {
    /// All parts merge (the default: the merged view is the union).
    #[default]
    KeepAll,
    /// Parts merge with the part holding a majority of the last view (or
    /// exactly half including its oldest member).
    KeepMajority,
    /// Parts merge with a part of at least this many members.
    StaticQuorum(u32),
    /// Parts merge with the part holding the last view's oldest member.
    KeepOldest,
    /// Parts merge with a part holding a member of this kind.
    ContainsKind(MemberKind),
}

impl MergeRule {
    fn test(&self) -> Test<'_> {
        match self {
            MergeRule::KeepAll => Test::All,
            MergeRule::KeepMajority => Test::Majority,
            MergeRule::StaticQuorum(n) => Test::Quorum(*n),
            MergeRule::KeepOldest => Test::Oldest,
            MergeRule::ContainsKind(k) => Test::Kind(k),
        }
    }

    /// Whether parts `a` and `b` merge: a part seeks out the parts that
    /// have the rule's property, so they merge when either has it.
    /// `last_view` is the last view the two parts had in common (the view
    /// before the partition). Symmetric in `a` and `b`.
    pub fn merges(&self, last_view: &[AppMember], a: &[AppMember], b: &[AppMember]) -> bool {
        let test = self.test();
        test.holds(last_view, a) || test.holds(last_view, b)
    }
}

/// What an application chooses when it creates a group (seed 003, sections
/// II.B.2, II.B.3 and II.D).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOptions {
    /// Under which scope the group's name is unique; the name is checked at
    /// every level up to it. The group's core-set stays at or below it.
    pub name_scope: Scope,
    /// How far the group may spread; a join's name search stops there. The
    /// group's core-set stays at or below it.
    pub membership_scope: Scope,
    /// Which parts keep running at a partition.
    pub survive: SurviveRule,
    /// Which parts merge when a partition heals.
    pub merge: MergeRule,
}

impl GroupOptions {
    /// Checks the options: valid scopes, a static quorum of at least 1.
    pub fn validate(&self) -> Result<(), AppError> {
        self.name_scope.validate()?;
        self.membership_scope.validate()?;
        if self.survive == SurviveRule::StaticQuorum(0) || self.merge == MergeRule::StaticQuorum(0)
        {
            return Err(AppError::InvalidOptions(
                "a static quorum is at least 1 (use KeepAll for no condition)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appgroup::MemberName;
    use proptest::prelude::*;

    fn m(n: u128, kind: &str) -> AppMember {
        AppMember {
            name: MemberName::parse(&format!("m{n}")).expect("name"),
            kind: MemberKind::parse(kind).expect("kind"),
            id: Uuid::from_u128(n),
            host: "h".into(),
        }
    }

    /// A last view of `n` members, ids 1..=n in join order, member 3 of
    /// kind "db".
    fn last(n: u128) -> Vec<AppMember> {
        (1..=n)
            .map(|i| m(i, if i == 3 { "db" } else { "" }))
            .collect()
    }

    fn pick(view: &[AppMember], ids: &[u128]) -> Vec<AppMember> {
        view.iter()
            .filter(|x| ids.contains(&x.id.as_u128()))
            .cloned()
            .collect()
    }

    #[test]
    fn keep_all_keeps_every_part() {
        let v = last(5);
        assert!(SurviveRule::KeepAll.survives(&v, &pick(&v, &[2])));
        assert!(SurviveRule::KeepAll.survives(&v, &[]));
        assert!(MergeRule::KeepAll.merges(&v, &pick(&v, &[4]), &pick(&v, &[5])));
    }

    #[test]
    fn keep_majority() {
        let v = last(5);
        let r = SurviveRule::KeepMajority;
        assert!(r.survives(&v, &pick(&v, &[2, 4, 5])));
        assert!(!r.survives(&v, &pick(&v, &[1, 3])));
        // Even split: the half with the oldest (id 1) survives.
        let v4 = last(4);
        assert!(r.survives(&v4, &pick(&v4, &[1, 4])));
        assert!(!r.survives(&v4, &pick(&v4, &[2, 3])));
        // Members not in the last view do not count; duplicates count once.
        let mut p = pick(&v, &[1, 2]);
        p.push(m(99, ""));
        p.push(m(2, ""));
        assert!(!r.survives(&v, &p));
        // No last view: nothing to compare, the part goes on.
        assert!(r.survives(&[], &pick(&v, &[1])));
        // Merge: two minorities do not merge with each other, both merge
        // with the majority.
        let mr = MergeRule::KeepMajority;
        let (a, b, c) = (pick(&v, &[1]), pick(&v, &[2]), pick(&v, &[3, 4, 5]));
        assert!(!mr.merges(&v, &a, &b));
        assert!(mr.merges(&v, &a, &c));
        assert!(mr.merges(&v, &c, &b));
    }

    #[test]
    fn static_quorum() {
        let v = last(6);
        let r = SurviveRule::StaticQuorum(2);
        assert!(r.survives(&v, &pick(&v, &[5, 6])));
        assert!(!r.survives(&v, &pick(&v, &[5])));
        // Two parts of three both survive a quorum of 2.
        assert!(r.survives(&v, &pick(&v, &[1, 2, 3])));
        assert!(r.survives(&v, &pick(&v, &[4, 5, 6])));
        let mr = MergeRule::StaticQuorum(3);
        assert!(!mr.merges(&v, &pick(&v, &[1, 2]), &pick(&v, &[5, 6])));
        assert!(mr.merges(&v, &pick(&v, &[1, 2]), &pick(&v, &[3, 4, 5])));
    }

    #[test]
    fn keep_oldest() {
        let v = last(5);
        let r = SurviveRule::KeepOldest;
        assert!(r.survives(&v, &pick(&v, &[1])));
        assert!(!r.survives(&v, &pick(&v, &[2, 3, 4, 5])));
        assert!(r.survives(&[], &[]));
        let mr = MergeRule::KeepOldest;
        assert!(!mr.merges(&v, &pick(&v, &[2]), &pick(&v, &[3])));
        assert!(mr.merges(&v, &pick(&v, &[2]), &pick(&v, &[1])));
    }

    #[test]
    fn contains_kind() {
        let v = last(5);
        let db = MemberKind::parse("db").expect("kind");
        let r = SurviveRule::ContainsKind(db.clone());
        assert!(r.survives(&v, &pick(&v, &[3])));
        assert!(!r.survives(&v, &pick(&v, &[1, 2, 4, 5])));
        let mr = MergeRule::ContainsKind(db);
        assert!(mr.merges(&v, &pick(&v, &[1]), &pick(&v, &[3])));
        assert!(!mr.merges(&v, &pick(&v, &[1]), &pick(&v, &[2])));
    }

    #[test]
    fn options_validate() {
        assert!(GroupOptions::default().validate().is_ok());
        assert_eq!(GroupOptions::default().name_scope, Scope::Lan);
        assert_eq!(Scope::Lan.level(), Some(1));
        assert_eq!(Scope::CoreSet("backbone".into()).level(), None);
        let bad = |o: GroupOptions| matches!(o.validate(), Err(AppError::InvalidOptions(_)));
        assert!(bad(GroupOptions {
            name_scope: Scope::Level(0),
            ..Default::default()
        }));
        assert!(bad(GroupOptions {
            membership_scope: Scope::CoreSet("no spaces".into()),
            ..Default::default()
        }));
        assert!(bad(GroupOptions {
            survive: SurviveRule::StaticQuorum(0),
            ..Default::default()
        }));
        assert!(bad(GroupOptions {
            merge: MergeRule::StaticQuorum(0),
            ..Default::default()
        }));
        assert!(GroupOptions {
            name_scope: Scope::CoreSet("backbone".into()),
            membership_scope: Scope::Level(2),
            survive: SurviveRule::KeepMajority,
            merge: MergeRule::KeepOldest,
        }
        .validate()
        .is_ok());
    }

    fn split() -> impl Strategy<Value = (u128, Vec<u8>)> {
        (1u128..12).prop_flat_map(|n| (Just(n), proptest::collection::vec(0u8..3, n as usize)))
    }

    proptest! {
        /// KeepMajority and KeepOldest let at most one part of any split
        /// survive; KeepAll lets all of them.
        #[test]
        fn exclusive_rules_keep_at_most_one_part((n, side) in split()) {
            let v = last(n);
            let parts: Vec<Vec<AppMember>> = (0..3u8)
                .map(|s| v.iter().zip(&side).filter(|(_, &x)| x == s).map(|(m, _)| m.clone()).collect())
                .collect();
            for rule in [SurviveRule::KeepMajority, SurviveRule::KeepOldest] {
                let alive = parts.iter().filter(|p| rule.survives(&v, p)).count();
                prop_assert!(alive <= 1, "{rule:?}: {alive} parts survive");
            }
            let nonempty = parts.iter().filter(|p| !p.is_empty()).count();
            // With no loss, exactly one part holds the oldest member.
            let oldest = parts.iter().filter(|p| !p.is_empty() && SurviveRule::KeepOldest.survives(&v, p)).count();
            prop_assert_eq!(oldest, 1);
            prop_assert_eq!(parts.iter().filter(|p| !p.is_empty() && SurviveRule::KeepAll.survives(&v, p)).count(), nonempty);
        }

        /// The merge rule is symmetric, and the whole group satisfies every
        /// preset it could.
        #[test]
        fn merge_is_symmetric((n, side) in split(), q in 1u32..12) {
            let v = last(n);
            let a: Vec<AppMember> = v.iter().zip(&side).filter(|(_, &x)| x == 0).map(|(m, _)| m.clone()).collect();
            let b: Vec<AppMember> = v.iter().zip(&side).filter(|(_, &x)| x != 0).map(|(m, _)| m.clone()).collect();
            for rule in [MergeRule::KeepAll, MergeRule::KeepMajority, MergeRule::KeepOldest, MergeRule::StaticQuorum(q)] {
                prop_assert_eq!(rule.merges(&v, &a, &b), rule.merges(&v, &b, &a));
            }
            prop_assert!(SurviveRule::KeepMajority.survives(&v, &v));
            prop_assert!(SurviveRule::KeepOldest.survives(&v, &v));
        }
    }
}
