//! The operator's tree requests (`msctl add-parent`, `msctl del-parent`,
//! `msctl leave --level N`; seed 003, section III.A.1, "physical
//! requests ... by a system configuration call"; `docs/hierarchy.md`,
//! "Physical requests racing each other or a failure").
//!
//! A request waits in a queue of [`MAX_QUEUED_REQUESTS`] while a task (the
//! chain's own, or an earlier request's) runs: the chain runs one task at
//! a time, so requests racing each other or an automatic re-parenting are
//! serialized, never interleaved. It is checked when its turn comes,
//! against the views then installed, and either refused at once (a typed
//! [`TreeError`], nothing changed) or run as the task that makes the
//! change (*Add_parent* or *Del_parent*, [`super::task`]). Its answer is
//! [`super::ChainEvent::RequestDone`]; one that takes longer than the
//! chain's request timeout is answered with [`TreeError::Timeout`] (the
//! task itself goes on and `msctl tree` shows how it ends).

use super::error::TreeError;
use super::task::{AddParent, DelParent, StandbyReason};
use crate::coreset::{GroupRef, MAX_LEVEL};
use crate::time::Instant;

/// Most requests waiting for their turn; the next is refused with
/// [`TreeError::Busy`].
pub const MAX_QUEUED_REQUESTS: usize = 8;

/// What an operator asks of the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeRequest {
    /// Become a parent of our top group, in `group` (`msctl add-parent
    /// NAME@IP:PORT`): the group joins one level above our top.
    AddParent(GroupRef),
    /// Leave the levels from `level` up, as a parent of level `level - 1`
    /// that steps down (`None`: our top; `msctl del-parent`, `msctl leave
    /// --level N`). This mserver declines automatic re-parenting there
    /// afterwards.
    LeaveFrom(Option<u8>),
}

/// A request waiting or running.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    /// The caller's id for the answer.
    pub(super) id: u64,
    /// What was asked.
    pub(super) request: TreeRequest,
    /// When it is answered with a timeout at the latest.
    pub(super) deadline: Instant,
}

/// What a request becomes when its turn comes.
pub(super) enum Start {
    /// Becoming a parent.
    Add(AddParent),
    /// Stepping down.
    Del(DelParent),
}

/// What the checks need to know of the chain.
pub(super) struct ChainView<'a> {
    /// Our top level.
    pub(super) top: u8,
    /// The names of the groups of the chain (leaving ones too).
    pub(super) names: Vec<&'a str>,
    /// Our top group: whether we are a member of a view there, its
    /// parents' count, its `max_parents`, and the parent group it records.
    pub(super) top_member: bool,
    /// Parents of our top group.
    pub(super) top_parents: usize,
    /// `max_parents` of our top group.
    pub(super) top_max_parents: u8,
    /// The parent group our top group records.
    pub(super) top_parent_group: Option<GroupRef>,
}

/// Checks `request` against the chain as it is now: the task to run, or
/// why it cannot run (nothing changed).
pub(super) fn start(request: &TreeRequest, chain: &ChainView<'_>) -> Result<Start, TreeError> {
    match request {
        TreeRequest::AddParent(group) => {
            let ip = group.addr.addr().ip();
            if !(ip.is_ipv4() && ip.is_multicast()) || group.addr.addr().port() == 0 {
                return Err(TreeError::NotMulticast(group.addr.to_string()));
            }
            if chain.names.iter().any(|n| *n == group.name) {
                return Err(TreeError::InChain(group.name.clone()));
            }
            if chain.top >= MAX_LEVEL {
                return Err(TreeError::TooDeep(MAX_LEVEL));
            }
            if !chain.top_member {
                return Err(TreeError::NotMember(chain.top));
            }
            if chain.top_parents >= usize::from(chain.top_max_parents) {
                return Err(TreeError::MaxParents(chain.top_max_parents));
            }
            if let Some(recorded) = &chain.top_parent_group {
                if recorded != group && chain.top_parents > 0 {
                    return Err(TreeError::ParentGroupMismatch {
                        recorded: recorded.to_string(),
                    });
                }
            }
            Ok(Start::Add(AddParent::new(chain.top, group.clone())))
        }
        TreeRequest::LeaveFrom(level) => {
            let level = level.unwrap_or(chain.top);
            if level > chain.top {
                return Err(TreeError::NoSuchLevel {
                    level,
                    top: chain.top,
                });
            }
            if level <= 1 {
                return Err(TreeError::DelParentAtLevel1);
            }
            Ok(Start::Del(DelParent::new(level - 1, true)))
        }
    }
}

/// The answer to an Add_parent request that ended as a standby.
pub(super) fn standby_error(reason: StandbyReason, child_level: u8) -> TreeError {
    match reason {
        StandbyReason::Refused(e) => TreeError::Refused(e),
        StandbyReason::LevelMismatch => TreeError::LevelMismatch {
            expected: child_level + 1,
        },
        StandbyReason::NotAdmitted => TreeError::NotAdmitted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;

    /// A group reference, unchecked (the request checks it again: a
    /// crafted RPC body skips msctl's parse).
    fn g(name: &str, a: u8, port: u16) -> GroupRef {
        GroupRef {
            name: name.into(),
            addr: NodeId::v4(a, 255, 1, 1, port),
        }
    }

    fn chain(top: u8, parents: usize) -> ChainView<'static> {
        ChainView {
            top,
            names: vec!["dept-1", "bldg"],
            top_member: true,
            top_parents: parents,
            top_max_parents: 1,
            top_parent_group: Some(g("campus", 239, 7302)),
        }
    }

    #[test]
    fn add_parent_checks() {
        let err = |r: TreeRequest, c: &ChainView<'_>| start(&r, c).err();
        let c = chain(2, 0);
        assert!(start(&TreeRequest::AddParent(g("campus", 239, 7302)), &c).is_ok());
        assert_eq!(
            err(TreeRequest::AddParent(g("campus", 10, 7302)), &c),
            Some(TreeError::NotMulticast("10.255.1.1:7302".into()))
        );
        assert_eq!(
            err(TreeRequest::AddParent(g("campus", 239, 0)), &c),
            Some(TreeError::NotMulticast("239.255.1.1:0".into()))
        );
        assert_eq!(
            err(TreeRequest::AddParent(g("bldg", 239, 7309)), &c),
            Some(TreeError::InChain("bldg".into()))
        );
        let full = chain(2, 1);
        assert_eq!(
            err(TreeRequest::AddParent(g("campus", 239, 7302)), &full),
            Some(TreeError::MaxParents(1))
        );
        let two = ChainView {
            top_max_parents: 2,
            ..chain(2, 1)
        };
        assert!(matches!(
            err(TreeRequest::AddParent(g("other", 239, 7303)), &two),
            Some(TreeError::ParentGroupMismatch { .. })
        ));
        // Without a parent, another parent group may be chosen.
        assert!(start(&TreeRequest::AddParent(g("other", 239, 7303)), &c).is_ok());
        let joining = ChainView {
            top_member: false,
            ..chain(2, 0)
        };
        assert_eq!(
            err(TreeRequest::AddParent(g("campus", 239, 7302)), &joining),
            Some(TreeError::NotMember(2))
        );
        let deep = chain(MAX_LEVEL, 0);
        assert_eq!(
            err(TreeRequest::AddParent(g("campus", 239, 7302)), &deep),
            Some(TreeError::TooDeep(MAX_LEVEL))
        );
    }

    #[test]
    fn leave_from_checks() {
        let err = |r: TreeRequest, c: &ChainView<'_>| start(&r, c).err();
        assert_eq!(
            err(TreeRequest::LeaveFrom(None), &chain(1, 0)),
            Some(TreeError::DelParentAtLevel1)
        );
        assert_eq!(
            err(TreeRequest::LeaveFrom(Some(3)), &chain(2, 0)),
            Some(TreeError::NoSuchLevel { level: 3, top: 2 })
        );
        assert!(matches!(
            start(&TreeRequest::LeaveFrom(None), &chain(2, 0)),
            Ok(Start::Del(_))
        ));
        assert!(matches!(
            start(&TreeRequest::LeaveFrom(Some(2)), &chain(3, 0)),
            Ok(Start::Del(_))
        ));
    }
}
