//! The view invariants of DESIGN.md section 5 as simulator checkers, one
//! per file, run after every step (`Simulator::add_invariant`):
//!
//! - (a) [`SameViewSameTable`]: two members that installed the same view id
//!   hold identical tables for it;
//! - (b) [`ViewNumbers`]: a member life's view numbers go up by exactly one
//!   per installed view (a rejoin with a new incarnation starts a fresh
//!   sequence; a merge hook allows the jumps of a later issue);
//! - (c) [`SelfInclusion`]: no member installs a view without itself;
//! - (d) [`SameSequence`]: members that stay connected install the same
//!   sequence of views; two member lives whose sequences fork (both
//!   installed a view, then different next views) may not both stay
//!   members: within a bound of virtual time one of them must end
//!   (excluded, left or crashed).
//!
//! A *life* is one incarnation of one node: `(address, incarnation)`,
//! taken from the `me` of each `ViewInstalled`. [`add_all`] registers the
//! four on a simulator of [`CoreSet`]s.
//!
//! All four also run on nodes that hold several core-sets (an mserver's
//! chain of levels, `tree::Chain`): they are generic over [`CoreSets`],
//! and key what they record by group as well.

mod life;
pub mod same_sequence;
pub mod same_view_same_table;
pub mod self_inclusion;
pub mod view_numbers;

pub use life::{CoreSets, Life};
pub use same_sequence::{Fork, SameSequence, SequenceReport};
pub use same_view_same_table::SameViewSameTable;
pub use self_inclusion::SelfInclusion;
pub use view_numbers::ViewNumbers;

use super::CoreSet;
use crate::sim::Simulator;
use std::time::Duration;

/// Registers (a), (b), (c) and (d) on `sim`, with `fork_bound` for (d);
/// returns the handle of (d) for a final check.
pub fn add_all(sim: &mut Simulator<CoreSet>, fork_bound: Duration) -> SequenceReport {
    sim.add_invariant(Box::new(SameViewSameTable::new()));
    sim.add_invariant(Box::new(ViewNumbers::new()));
    sim.add_invariant(Box::new(SelfInclusion::new()));
    let d = SameSequence::new(fork_bound);
    let report = d.report();
    sim.add_invariant(Box::new(d));
    report
}
