//! The core table (seed 003, section IV.C.2.a, figure 20): one row per
//! member with its address, incarnation, rank, clockwise and
//! counter-clockwise neighbour and status flag, plus the group's rank
//! high-water mark so that ranks are never reused.
//!
//! The ring is the members sorted by rank: a member's clockwise neighbour
//! (`cw`, the one it monitors) is the next higher rank, wrapping from the
//! highest to the lowest; `ccw` is the next lower rank, wrapping the other
//! way. A table is only ever built by [`Table::founding`] and
//! [`Table::apply`] (beside the proposal it applies, in `msg.rs`), which
//! recompute the ring, and a table that arrives in a
//! COMMIT is accepted only if [`Table::validate`] finds it well formed.

use super::tree::{RecordError, TreeRecord};
use crate::id::{Incarnation, NodeId};
use serde::{Deserialize, Serialize};

/// The flag of a member row: set in every row of a committed table (the
/// thesis's `flag`, "status flag for each member"; more bits may come with
/// the hierarchy).
pub const FLAG_ACTIVE: u8 = 1;

/// Most members a table may hold (a COMMIT with 1024 rows is about 32 KB,
/// well inside one datagram).
pub const MAX_MEMBERS: usize = 1024;

/// One row of the core table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Row {
    /// The member's address.
    pub addr: NodeId,
    /// Its incarnation (one life of the process).
    pub incarnation: Incarnation,
    /// Its rank: 0 for the founder, then one more for every admitted
    /// member; never reused, so a lower rank is an older member.
    pub rank: u64,
    /// The rank of its clockwise neighbour (the member it monitors).
    pub cw: u64,
    /// The rank of its counter-clockwise neighbour (the member that
    /// monitors it).
    pub ccw: u64,
    /// Status flag ([`FLAG_ACTIVE`]).
    pub flag: u8,
}

/// The core table: rows sorted by rank, the next rank to hand out, and
/// what the group records about the tree (`tree.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Table {
    /// The members, sorted by rank.
    pub rows: Vec<Row>,
    /// The rank the next newcomer gets (one above every rank ever given).
    pub next_rank: u64,
    /// The group's level, parent group, and which members are parents
    /// and of which child set.
    pub tree: TreeRecord,
}

/// Why a table from the wire was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// No rows, or more than [`MAX_MEMBERS`].
    Size,
    /// Ranks not strictly increasing, or not below `next_rank`.
    Ranks,
    /// Two rows with one address, or a multicast address.
    Addresses,
    /// `cw`, `ccw` or `flag` not what the ranks imply.
    Ring,
    /// The tree record does not fit (`tree.rs`).
    Tree(RecordError),
}

impl Table {
    /// The table of a level-1 group founded by `addr` alone (rank 0).
    pub fn founding(addr: NodeId, incarnation: Incarnation) -> Self {
        Self::founding_with(addr, incarnation, TreeRecord::default())
    }

    /// The table of a group founded by `addr` alone (rank 0) with the
    /// tree record `tree` (its own bits at rank 0).
    pub fn founding_with(addr: NodeId, incarnation: Incarnation, tree: TreeRecord) -> Self {
        let mut t = Table {
            rows: vec![Row {
                addr,
                incarnation,
                rank: 0,
                cw: 0,
                ccw: 0,
                flag: FLAG_ACTIVE,
            }],
            next_rank: 1,
            tree,
        };
        t.relink();
        t
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no rows (never true for a valid table).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row of `rank`.
    pub fn by_rank(&self, rank: u64) -> Option<&Row> {
        self.rows
            .binary_search_by_key(&rank, |r| r.rank)
            .ok()
            .and_then(|i| self.rows.get(i))
    }

    /// The row at address `addr` (any incarnation).
    pub fn by_addr(&self, addr: NodeId) -> Option<&Row> {
        self.rows.iter().find(|r| r.addr == addr)
    }

    /// Whether `(addr, incarnation)` is a member.
    pub fn contains(&self, addr: NodeId, incarnation: Incarnation) -> bool {
        self.by_addr(addr)
            .is_some_and(|r| r.incarnation == incarnation)
    }

    /// The lowest rank (the coordinator of joins), if any.
    pub fn lowest(&self) -> Option<&Row> {
        self.rows.first()
    }

    /// Recomputes `cw`, `ccw` and `flag` from the rank order.
    pub(super) fn relink(&mut self) {
        let n = self.rows.len();
        if n == 0 {
            return;
        }
        let ranks: Vec<u64> = self.rows.iter().map(|r| r.rank).collect();
        for (i, row) in self.rows.iter_mut().enumerate() {
            row.cw = ranks[(i + 1) % n];
            row.ccw = ranks[(i + n - 1) % n];
            row.flag = FLAG_ACTIVE;
        }
    }

    /// Checks a table that came from the wire.
    pub fn validate(&self) -> Result<(), TableError> {
        if self.rows.is_empty() || self.rows.len() > MAX_MEMBERS {
            return Err(TableError::Size);
        }
        let mut last: Option<u64> = None;
        for r in &self.rows {
            if last.is_some_and(|l| r.rank <= l) || r.rank >= self.next_rank {
                return Err(TableError::Ranks);
            }
            last = Some(r.rank);
            if r.addr.addr().ip().is_multicast() {
                return Err(TableError::Addresses);
            }
        }
        let mut addrs: Vec<NodeId> = self.rows.iter().map(|r| r.addr).collect();
        addrs.sort();
        if addrs.windows(2).any(|w| w[0] == w[1]) {
            return Err(TableError::Addresses);
        }
        let mut linked = self.clone();
        linked.relink();
        if linked.rows != self.rows {
            return Err(TableError::Ring);
        }
        let ranks: Vec<u64> = self.rows.iter().map(|r| r.rank).collect();
        self.tree.validate(&ranks).map_err(TableError::Tree)
    }
}

#[cfg(test)]
mod tests {
    use super::super::msg::{Joiner, Layer, Proposal, Removal, RemovalReason};
    use super::*;
    use crate::id::ViewId;

    fn n(i: u8) -> NodeId {
        NodeId::v4(10, 0, 0, i, 7000)
    }
    fn inc(i: u8) -> Incarnation {
        Incarnation::from_parts(1000 + u64::from(i), [i; 10])
    }
    fn proposal(removals: Vec<u64>, joins: Vec<u8>) -> Proposal {
        Proposal {
            view: ViewId {
                number: 2,
                seq: 0,
                coordinator: inc(1),
            },
            originator: 0,
            layer: Layer::Physical,
            coordinator_failure: false,
            removals: removals
                .into_iter()
                .map(|rank| Removal {
                    rank,
                    reason: RemovalReason::Failed,
                })
                .collect(),
            joins: joins
                .into_iter()
                .map(|i| Joiner {
                    addr: n(i),
                    incarnation: inc(i),
                    rejoin: false,
                    declined: false,
                    child_group: None,
                })
                .collect(),
            merges: Vec::new(),
            app: Vec::new(),
            tree: Vec::new(),
        }
    }

    #[test]
    fn ranks_are_never_reused_and_the_ring_follows_ranks() {
        let t = Table::founding(n(1), inc(1));
        assert_eq!(t.validate(), Ok(()));
        let t = t.apply(&proposal(vec![], vec![2, 3]));
        assert_eq!(
            t.rows.iter().map(|r| r.rank).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(t.by_rank(0).map(|r| (r.cw, r.ccw)), Some((1, 2)));
        assert_eq!(t.by_rank(2).map(|r| (r.cw, r.ccw)), Some((0, 1)));
        // Remove the highest rank, then admit: rank 2 is not given again.
        let t = t.apply(&proposal(vec![2], vec![]));
        let t = t.apply(&proposal(vec![], vec![4]));
        assert_eq!(t.by_addr(n(4)).map(|r| r.rank), Some(3));
        assert_eq!(t.next_rank, 4);
        assert_eq!(t.validate(), Ok(()));
    }

    #[test]
    fn malformed_tables_are_refused() {
        let good = Table::founding(n(1), inc(1)).apply(&proposal(vec![], vec![2, 3]));
        let mut t = good.clone();
        t.rows.clear();
        assert_eq!(t.validate(), Err(TableError::Size));
        let mut t = good.clone();
        t.rows.swap(0, 1);
        assert_eq!(t.validate(), Err(TableError::Ranks));
        let mut t = good.clone();
        t.next_rank = 2;
        assert_eq!(t.validate(), Err(TableError::Ranks));
        let mut t = good.clone();
        t.rows[1].addr = n(1);
        assert_eq!(t.validate(), Err(TableError::Addresses));
        let mut t = good.clone();
        t.rows[1].cw = 7;
        assert_eq!(t.validate(), Err(TableError::Ring));
        let mut t = good;
        t.rows[1].flag = 0;
        assert_eq!(t.validate(), Err(TableError::Ring));
    }
}
