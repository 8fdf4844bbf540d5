//! What the checkers key their records by: a *life*, one incarnation of
//! one node; and how they see a node that holds several core-sets
//! ([`CoreSets`]: an mserver's chain of levels).

use crate::coreset::{CoreSet, CoreSetEvent};
use crate::id::{Incarnation, NodeId};
use crate::sansio::Core;

/// One life of a node.
pub type Life = (NodeId, Incarnation);

/// A node that holds one or more core-sets, one per group (the checkers'
/// view of it).
pub trait CoreSets: Core {
    /// The core-set event inside `event`, with the group it is about
    /// (`None` for a node of one group).
    fn coreset_event(event: &Self::Event) -> Option<(Option<&str>, &CoreSetEvent)>;

    /// The core-sets of `group` (`None`: the node's only one): more than
    /// one while a node leaves a group it is rejoining.
    fn coresets(&self, group: Option<&str>) -> Vec<&CoreSet>;
}

impl CoreSets for CoreSet {
    fn coreset_event(event: &CoreSetEvent) -> Option<(Option<&str>, &CoreSetEvent)> {
        Some((None, event))
    }

    fn coresets(&self, group: Option<&str>) -> Vec<&CoreSet> {
        if group.is_none() {
            vec![self]
        } else {
            Vec::new()
        }
    }
}
