//! The tree's part of one mserver group (seed 003, sections II.A.3-5 and
//! III.A.1; `docs/hierarchy.md`, "State and wire changes"): the name and
//! address that identify a group ([`GroupRef`]), what a table records
//! about the tree ([`TreeRecord`]: the group's level, its parent group,
//! which members are parents and of which child set), and the tree changes
//! a core-set commits ([`TreeOp`]) with their deterministic validation, so
//! that every member accepts or refuses a tree change alike.
//!
//! The per-member bits live in the record, keyed by rank, rather than in
//! [`Row`](super::Row): a row stays a small `Copy` value that the ring and
//! change handlers pass around, and a level-1 group whose members are all
//! plain carries an empty list.

use crate::id::NodeId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Longest group name, in characters.
pub const MAX_GROUP_NAME: usize = 64;

/// Whether `name` is a valid group name.
pub fn valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_GROUP_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The highest level a group may have (level 1 is the lowest mserver
/// group; level 0 is the MIs).
pub const MAX_LEVEL: u8 = 16;

/// Most parents a child set may be configured to keep.
pub const MAX_PARENTS: u8 = 8;

/// Most members of a group above level 1: its rows carry a child-set
/// reference each (up to about 125 bytes), so a COMMIT of this many rows is
/// about the size of a full level-1 COMMIT.
pub const MAX_UPPER_MEMBERS: usize = 256;

/// A group: its name and its group (multicast) address. Names are unique
/// only along one mserver's chain, so the address goes with the name
/// wherever a group is referred to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupRef {
    /// The group name (1 to [`MAX_GROUP_NAME`] characters of `[A-Za-z0-9._-]`).
    pub name: String,
    /// Its group address (multicast).
    pub addr: NodeId,
}

/// Why a group reference is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupRefError {
    /// Not of the form `NAME@IP:PORT`.
    #[error("{0:?} is not NAME@IP:PORT")]
    Syntax(String),
    /// The name is empty, too long or has a character outside `[A-Za-z0-9._-]`.
    #[error("invalid group name {0:?}: 1 to {MAX_GROUP_NAME} characters of [A-Za-z0-9._-]")]
    BadName(String),
    /// The address is not a multicast address.
    #[error("group address {0} is not a multicast address")]
    NotMulticast(NodeId),
}

impl GroupRef {
    /// A checked reference.
    pub fn new(name: impl Into<String>, addr: NodeId) -> Result<Self, GroupRefError> {
        let g = GroupRef {
            name: name.into(),
            addr,
        };
        g.check()?;
        Ok(g)
    }

    /// Checks a reference (from the wire or from configuration).
    pub fn check(&self) -> Result<(), GroupRefError> {
        if !valid_group_name(&self.name) {
            return Err(GroupRefError::BadName(self.name.clone()));
        }
        if !self.addr.addr().ip().is_multicast() {
            return Err(GroupRefError::NotMulticast(self.addr));
        }
        Ok(())
    }

    /// Whether it is well formed.
    pub fn is_valid(&self) -> bool {
        self.check().is_ok()
    }
}

impl fmt::Display for GroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

impl FromStr for GroupRef {
    type Err = GroupRefError;

    /// Parses `NAME@IP:PORT` (an IPv6 address in brackets).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, addr) = s
            .split_once('@')
            .ok_or_else(|| GroupRefError::Syntax(s.to_string()))?;
        let addr: NodeId = addr
            .parse()
            .map_err(|_| GroupRefError::Syntax(s.to_string()))?;
        GroupRef::new(name, addr)
    }
}

/// What a joiner of an upper group claims: it comes as a parent of
/// `group`, a group of level `level` (its parent group is one level up).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChildClaim {
    /// The child set it is a parent of.
    pub group: GroupRef,
    /// That child set's level.
    pub level: u8,
}

impl ChildClaim {
    /// Whether it is well formed (a valid group of a level that has a
    /// level above it).
    pub fn is_valid(&self) -> bool {
        self.group.is_valid() && (1..MAX_LEVEL).contains(&self.level)
    }
}

/// The tree bits of one member.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberBits {
    /// It is a parent of this group: also a member of the parent group.
    pub parent: bool,
    /// It is not a candidate for automatic re-parenting.
    pub declined: bool,
    /// Above level 1: the child set this member is a parent of.
    pub child_group: Option<GroupRef>,
}

impl MemberBits {
    /// Whether every bit is at its default (such members are not listed).
    pub fn is_plain(&self) -> bool {
        *self == MemberBits::default()
    }
}

/// The tree bits of the member of rank `rank`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RankBits {
    /// The member's rank.
    pub rank: u64,
    /// Its bits (never all default in a valid record).
    pub bits: MemberBits,
}

/// What a group's table records about the tree; committed with the table,
/// so every member of a view agrees on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TreeRecord {
    /// This group's level (1 ..= [`MAX_LEVEL`]).
    pub level: u8,
    /// Where the tree continues: the group its parents belong to (`None`:
    /// the top, or not known).
    pub parent_group: Option<GroupRef>,
    /// Most parents this group keeps (1 ..= [`MAX_PARENTS`]; set by the
    /// founder).
    pub max_parents: u8,
    /// The members with bits set, sorted by rank; every other member is a
    /// plain one.
    pub members: Vec<RankBits>,
}

impl Default for TreeRecord {
    fn default() -> Self {
        TreeRecord {
            level: 1,
            parent_group: None,
            max_parents: 1,
            members: Vec::new(),
        }
    }
}

/// Why a tree record from the wire is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// A level or `max_parents` out of range.
    Range,
    /// Member bits not sorted, duplicated, for a non-member, or all default.
    Members,
    /// A malformed group reference, a child set at level 1, or a child set
    /// missing above it.
    Groups,
}

impl TreeRecord {
    /// The record a founder writes: `level`, `parent_group`,
    /// `max_parents`, and its own bits at rank 0.
    pub fn founding(
        level: u8,
        parent_group: Option<GroupRef>,
        max_parents: u8,
        founder: MemberBits,
    ) -> Self {
        let mut r = TreeRecord {
            level,
            parent_group,
            max_parents,
            members: Vec::new(),
        };
        r.set(0, founder);
        r
    }

    /// The bits of `rank` (default for a plain member).
    pub fn bits(&self, rank: u64) -> MemberBits {
        self.members
            .binary_search_by_key(&rank, |m| m.rank)
            .ok()
            .and_then(|i| self.members.get(i))
            .map(|m| m.bits.clone())
            .unwrap_or_default()
    }

    /// Whether `rank` is a flagged parent.
    pub fn is_parent(&self, rank: u64) -> bool {
        self.members.iter().any(|m| m.rank == rank && m.bits.parent)
    }

    /// The ranks of the flagged parents, lowest first.
    pub fn parents(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|m| m.bits.parent)
            .map(|m| m.rank)
            .collect()
    }

    /// Sets the bits of `rank` (a plain value removes its entry).
    pub fn set(&mut self, rank: u64, bits: MemberBits) {
        match self.members.binary_search_by_key(&rank, |m| m.rank) {
            Ok(i) if bits.is_plain() => {
                self.members.remove(i);
            }
            Ok(i) => {
                if let Some(m) = self.members.get_mut(i) {
                    m.bits = bits;
                }
            }
            Err(_) if bits.is_plain() => {}
            Err(i) => self.members.insert(i, RankBits { rank, bits }),
        }
    }

    /// Keeps only the members `keep` says are still members.
    pub fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        self.members.retain(|m| keep(m.rank));
    }

    /// Checks a record from the wire against the ranks of its table
    /// (sorted) and the table's size.
    pub fn validate(&self, ranks: &[u64]) -> Result<(), RecordError> {
        if !(1..=MAX_LEVEL).contains(&self.level) || !(1..=MAX_PARENTS).contains(&self.max_parents)
        {
            return Err(RecordError::Range);
        }
        if self.level > 1 && ranks.len() > MAX_UPPER_MEMBERS {
            return Err(RecordError::Range);
        }
        if self.members.windows(2).any(|w| w[0].rank >= w[1].rank)
            || self
                .members
                .iter()
                .any(|m| m.bits.is_plain() || ranks.binary_search(&m.rank).is_err())
        {
            return Err(RecordError::Members);
        }
        if self.parent_group.as_ref().is_some_and(|g| !g.is_valid()) {
            return Err(RecordError::Groups);
        }
        let with_child = self
            .members
            .iter()
            .filter(|m| m.bits.child_group.is_some())
            .count();
        let bad_child = self
            .members
            .iter()
            .filter_map(|m| m.bits.child_group.as_ref())
            .any(|g| !g.is_valid());
        let expected = if self.level > 1 { ranks.len() } else { 0 };
        if bad_child || with_child != expected {
            return Err(RecordError::Groups);
        }
        Ok(())
    }

    /// Checks `op`, proposed by the member of rank `originator`, against
    /// this record (of a table whose members have `ranks`). Deterministic:
    /// every member of the base view decides alike.
    pub fn check(&self, op: &TreeOp, originator: u64, ranks: &[u64]) -> Result<(), TreeOpError> {
        match op {
            TreeOp::SetParent {
                rank,
                parent,
                group,
                ..
            } => {
                if ranks.binary_search(rank).is_err() {
                    return Err(TreeOpError::NotMember);
                }
                if group.as_ref().is_some_and(|g| !g.is_valid()) {
                    return Err(TreeOpError::BadGroup);
                }
                let parents = self.parents();
                if *parent {
                    if parents.contains(rank) {
                        return Err(TreeOpError::AlreadyParent);
                    }
                    if parents.len() >= usize::from(self.max_parents) {
                        return Err(TreeOpError::MaxParents);
                    }
                    if group.is_none() {
                        return Err(TreeOpError::BadGroup);
                    }
                    if !parents.is_empty() && *group != self.parent_group {
                        return Err(TreeOpError::ParentGroupMismatch);
                    }
                } else if !parents.contains(rank) {
                    return Err(TreeOpError::NotParent);
                }
                Ok(())
            }
            TreeOp::SetParentGroup { group } => {
                if group.as_ref().is_some_and(|g| !g.is_valid()) {
                    return Err(TreeOpError::BadGroup);
                }
                let parents = self.parents();
                if !parents.is_empty() && !parents.contains(&originator) {
                    return Err(TreeOpError::NotParent);
                }
                Ok(())
            }
        }
    }

    /// Applies `op` (checked with [`TreeRecord::check`]).
    pub fn apply(&mut self, op: &TreeOp) {
        match op {
            TreeOp::SetParent {
                rank,
                parent,
                declined,
                group,
            } => {
                let mut bits = self.bits(*rank);
                bits.parent = *parent;
                bits.declined = *declined;
                self.set(*rank, bits);
                if *parent {
                    self.parent_group.clone_from(group);
                }
            }
            TreeOp::SetParentGroup { group } => self.parent_group.clone_from(group),
        }
    }
}

/// The tree settings of one core-set: what a founder writes into the
/// table and a joiner claims (part of
/// [`CoreSetConfig`](super::CoreSetConfig)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeSettings {
    /// `None`: a level-1 group. Else this core-set joins the group one
    /// level above `child.group` as its parent.
    pub child: Option<ChildClaim>,
    /// The parent group a founder records (`None`: none known).
    pub parent_group: Option<GroupRef>,
    /// Most parents a founder lets the group keep (1 ..= [`MAX_PARENTS`]).
    pub max_parents: u8,
    /// Not a candidate for automatic re-parenting (`--auto-parent false`).
    pub declined: bool,
}

impl Default for TreeSettings {
    fn default() -> Self {
        TreeSettings {
            child: None,
            parent_group: None,
            max_parents: 1,
            declined: false,
        }
    }
}

impl TreeSettings {
    /// The level of the group this core-set joins: one above its claim's,
    /// or 1.
    pub fn level(&self) -> u8 {
        self.child.as_ref().map_or(1, |c| c.level.saturating_add(1))
    }

    /// Whether the group is above level 1 (lives travel in envelopes).
    pub fn is_upper(&self) -> bool {
        self.child.is_some()
    }

    /// The tree record of a group this core-set founds alone.
    pub fn founding_record(&self) -> TreeRecord {
        TreeRecord::founding(
            self.level(),
            self.parent_group.clone(),
            self.max_parents,
            MemberBits {
                parent: false,
                declined: self.declined,
                child_group: self.child.as_ref().map(|c| c.group.clone()),
            },
        )
    }
}

/// A tree change, committed by a group like a membership change (a new
/// view), after membership changes and before application changes
/// (priority rule 2).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TreeOp {
    /// Flags or unflags the member of rank `rank` as a parent. Flagging
    /// records `group` as the parent group (it must equal the record while
    /// the group has parents); `declined` is written either way.
    SetParent {
        /// The member's rank.
        rank: u64,
        /// Parent or not.
        parent: bool,
        /// Not a candidate for automatic re-parenting.
        declined: bool,
        /// The parent group (required when flagging).
        group: Option<GroupRef>,
    },
    /// Records another parent group (a retarget after the group above was
    /// split or merged). Only a flagged parent may propose it while the
    /// group has parents.
    SetParentGroup {
        /// The new record.
        group: Option<GroupRef>,
    },
}

impl TreeOp {
    /// The rank priority rule 4 orders it by: the member a `SetParent`
    /// concerns, else the originator.
    pub fn subject(&self, originator: u64) -> u64 {
        match self {
            TreeOp::SetParent { rank, .. } => *rank,
            TreeOp::SetParentGroup { .. } => originator,
        }
    }
}

/// Why a tree change does not fit the group's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TreeOpError {
    /// The member it concerns is not in the view.
    #[error("not a member of the group")]
    NotMember,
    /// Flagging a member that is a parent already.
    #[error("already a parent")]
    AlreadyParent,
    /// Unflagging a member that is not a parent, or retargeting by a
    /// member that is not a parent of a group that has parents.
    #[error("not a parent of the group")]
    NotParent,
    /// The group has `max_parents` parents already.
    #[error("the group has as many parents as it keeps")]
    MaxParents,
    /// Flagging with another parent group than the one its parents are in.
    #[error("the group's parents are in another parent group")]
    ParentGroupMismatch,
    /// A malformed group reference, or none where one is required.
    #[error("malformed or missing group reference")]
    BadGroup,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(name: &str, port: u16) -> GroupRef {
        GroupRef::new(name, NodeId::v4(239, 255, 1, 1, port)).unwrap()
    }

    mod wire {
        //! The tree's wire additions round-trip, and garbage never panics
        //! the decoder of a core-set body.
        use super::super::super::msg::{Envelope, JoinRefusal, Msg};
        use super::*;
        use crate::id::{Incarnation, ViewId};
        use crate::wire::{decode_body, encode_body};
        use proptest::prelude::*;

        fn group_ref() -> impl Strategy<Value = GroupRef> {
            ("[a-z0-9.-]{1,64}", any::<u8>(), any::<u16>()).prop_map(|(name, b, port)| GroupRef {
                name,
                addr: NodeId::v4(239, 255, 1, b, port),
            })
        }

        fn msg() -> impl Strategy<Value = Msg> {
            prop_oneof![
                (
                    any::<u32>(),
                    any::<bool>(),
                    proptest::option::of((group_ref(), 1u8..MAX_LEVEL)),
                    any::<bool>()
                )
                    .prop_map(|(attempt, rejoin, child, declined)| Msg::MJoinReq {
                        attempt,
                        rejoin,
                        child: child.map(|(group, level)| ChildClaim { group, level }),
                        declined,
                    }),
                (any::<u8>(), any::<u8>()).prop_map(|(level, claimed)| Msg::JoinRefused {
                    reason: JoinRefusal::LevelMismatch { level, claimed },
                }),
                (
                    any::<u64>(),
                    proptest::collection::vec(
                        (
                            any::<u8>(),
                            any::<bool>(),
                            proptest::option::of(group_ref())
                        ),
                        0..8
                    ),
                    1u8..=MAX_LEVEL,
                    proptest::option::of(group_ref())
                )
                    .prop_map(|(next_rank, rows, level, parent_group)| {
                        Msg::MergeOffer {
                            next_rank,
                            members: rows
                                .iter()
                                .map(|(i, _, _)| (NodeId::v4(10, 0, 0, *i, 1), Incarnation::NIL))
                                .collect(),
                            bits: rows
                                .into_iter()
                                .map(|(i, parent, child_group)| {
                                    (
                                        NodeId::v4(10, 0, 0, i, 1),
                                        MemberBits {
                                            parent,
                                            declined: false,
                                            child_group,
                                        },
                                    )
                                })
                                .collect(),
                            level,
                            parent_group,
                        }
                    }),
            ]
        }

        proptest! {
            #[test]
            fn tree_messages_roundtrip(m in msg(), upper in any::<bool>(), n in any::<u64>()) {
                let env = Envelope {
                    group: "g".into(),
                    view: ViewId { number: n, seq: 0, coordinator: Incarnation::NIL },
                    msg: m,
                    life: upper.then_some(Incarnation::NIL),
                };
                let bytes = encode_body(&env).expect("encodes");
                prop_assert_eq!(decode_body::<Envelope>(&bytes).expect("decodes"), env);
            }

            #[test]
            fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                let _ = decode_body::<Envelope>(&bytes);
            }
        }
    }

    #[test]
    fn group_refs_parse_and_print() {
        let r: GroupRef = "bldg-A@239.255.1.1:7301".parse().unwrap();
        assert_eq!(r, g("bldg-A", 7301));
        assert_eq!(r.to_string(), "bldg-A@239.255.1.1:7301");
        assert!(matches!(
            "bldg-A@10.0.0.1:7301".parse::<GroupRef>(),
            Err(GroupRefError::NotMulticast(_))
        ));
        assert!(matches!(
            "bad name@239.255.1.1:1".parse::<GroupRef>(),
            Err(GroupRefError::BadName(_))
        ));
        for bad in ["", "x", "x@", "@239.255.1.1:1", "x@239.255.1.1"] {
            assert!(bad.parse::<GroupRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn set_parent_is_checked_against_the_record() {
        let ranks = [0, 1, 2];
        let mut r = TreeRecord::default();
        let flag = |rank, group| TreeOp::SetParent {
            rank,
            parent: true,
            declined: false,
            group,
        };
        assert_eq!(
            r.check(&flag(5, Some(g("p", 1))), 0, &ranks),
            Err(TreeOpError::NotMember)
        );
        assert_eq!(
            r.check(&flag(1, None), 0, &ranks),
            Err(TreeOpError::BadGroup)
        );
        // With no parent, any group is recorded.
        assert_eq!(r.check(&flag(1, Some(g("p", 1))), 1, &ranks), Ok(()));
        r.apply(&flag(1, Some(g("p", 1))));
        assert_eq!(r.parents(), vec![1]);
        assert_eq!(r.parent_group, Some(g("p", 1)));
        assert_eq!(
            r.check(&flag(1, Some(g("p", 1))), 1, &ranks),
            Err(TreeOpError::AlreadyParent)
        );
        assert_eq!(
            r.check(&flag(2, Some(g("p", 1))), 2, &ranks),
            Err(TreeOpError::MaxParents)
        );
        r.max_parents = 2;
        assert_eq!(
            r.check(&flag(2, Some(g("q", 1))), 2, &ranks),
            Err(TreeOpError::ParentGroupMismatch)
        );
        assert_eq!(r.check(&flag(2, Some(g("p", 1))), 2, &ranks), Ok(()));
        // Retargeting: only a parent, while there is one.
        let retarget = TreeOp::SetParentGroup {
            group: Some(g("q", 2)),
        };
        assert_eq!(r.check(&retarget, 0, &ranks), Err(TreeOpError::NotParent));
        assert_eq!(r.check(&retarget, 1, &ranks), Ok(()));
        let unflag = TreeOp::SetParent {
            rank: 1,
            parent: false,
            declined: true,
            group: None,
        };
        assert_eq!(r.check(&unflag, 1, &ranks), Ok(()));
        r.apply(&unflag);
        assert!(r.parents().is_empty());
        assert_eq!(
            r.bits(1),
            MemberBits {
                parent: false,
                declined: true,
                child_group: None
            }
        );
        assert_eq!(r.check(&unflag, 1, &ranks), Err(TreeOpError::NotParent));
        assert_eq!(r.check(&retarget, 0, &ranks), Ok(()));
        assert_eq!(r.validate(&ranks), Ok(()));
    }

    #[test]
    fn records_from_the_wire_are_checked() {
        let ranks = [0, 1];
        let good = TreeRecord::founding(
            2,
            None,
            1,
            MemberBits {
                child_group: Some(g("c", 1)),
                ..MemberBits::default()
            },
        );
        // A level-2 group needs a child set on every row.
        assert_eq!(good.validate(&ranks), Err(RecordError::Groups));
        assert_eq!(good.validate(&[0]), Ok(()));
        let mut r = good.clone();
        r.level = 0;
        assert_eq!(r.validate(&[0]), Err(RecordError::Range));
        let mut r = good.clone();
        r.max_parents = MAX_PARENTS + 1;
        assert_eq!(r.validate(&[0]), Err(RecordError::Range));
        let mut r = good.clone();
        r.members.push(RankBits {
            rank: 0,
            bits: MemberBits::default(),
        });
        assert_eq!(r.validate(&[0]), Err(RecordError::Members));
        let mut r = good;
        r.level = 1;
        assert_eq!(r.validate(&[0]), Err(RecordError::Groups));
        assert_eq!(TreeRecord::default().validate(&ranks), Ok(()));
    }
}
