//! Invariant (d) of DESIGN.md section 5: members that stay connected install
//! the same sequence of views.
//!
//! For every view id the checker remembers which view each life installed
//! right after it. When a life installs `W` after `V` and another life
//! installed `W' != W` after `V`, their sequences *fork*. A fork is allowed
//! only between members that do not stay together: within `bound` of
//! virtual time one of the two lives must end (its node crashed or
//! restarted, it rejoined with a new incarnation after learning it was
//! excluded, or it left), or both must install one same view again (their
//! subgroups merged, DESIGN.md section 5). A fork still open after the
//! bound fails the run;
//! [`SequenceReport::open_forks`] lists the open ones for a final check.
//!
//! On nodes that hold several core-sets (an mserver's chain of levels,
//! [`CoreSets`]) sequences are per group: a life is then one incarnation
//! of one node in one group (an upper level's life is its own), and only
//! lives of the same group can fork.

use super::life::{CoreSets, Life};
use crate::coreset::CoreSetEvent;
use crate::id::ViewId;
use crate::sim::{CheckView, Invariant};
use crate::time::Instant;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

/// Forks kept for [`SequenceReport::first_forks`].
const MAX_KEPT: usize = 16;

/// A fork between two lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fork {
    /// The group (`None`: the node's only one).
    pub group: Option<String>,
    /// The view both installed.
    pub from: ViewId,
    /// One life and its next view.
    pub a: (Life, ViewId),
    /// The other life and its next view.
    pub b: (Life, ViewId),
    /// When the fork was seen.
    pub at: Instant,
}

/// A fork not yet resolved, with the views each side installed since.
struct OpenFork {
    fork: Fork,
    a_since: BTreeSet<ViewId>,
    b_since: BTreeSet<ViewId>,
}

/// A life in a group.
type GroupLife = (Option<String>, Life);

#[derive(Default)]
struct State {
    /// The last view each life installed.
    last: BTreeMap<GroupLife, ViewId>,
    /// For each view of a group, the next view each life installed after
    /// it.
    next: BTreeMap<(Option<String>, ViewId), BTreeMap<Life, ViewId>>,
    open: Vec<OpenFork>,
    /// The first forks seen (at most [`MAX_KEPT`]), for reports.
    kept: Vec<Fork>,
    forks_seen: u64,
    resolved: u64,
}

/// A handle on checker (d)'s findings, kept by the test after the checker
/// is boxed into the simulator.
#[derive(Clone, Default)]
pub struct SequenceReport(Rc<RefCell<State>>);

impl SequenceReport {
    /// Forks not yet resolved.
    pub fn open_forks(&self) -> Vec<Fork> {
        self.0
            .borrow()
            .open
            .iter()
            .map(|o| o.fork.clone())
            .collect()
    }

    /// The first forks seen (resolved or not; at most 16).
    pub fn first_forks(&self) -> Vec<Fork> {
        self.0.borrow().kept.clone()
    }

    /// Forks seen so far (resolved or not).
    pub fn forks_seen(&self) -> u64 {
        self.0.borrow().forks_seen
    }

    /// Forks resolved by one side's life ending.
    pub fn resolved(&self) -> u64 {
        self.0.borrow().resolved
    }
}

/// Checker (d). See the [module docs](self).
pub struct SameSequence {
    bound: Duration,
    state: SequenceReport,
}

impl SameSequence {
    /// A checker that allows a fork to stay open for `bound`.
    pub fn new(bound: Duration) -> Self {
        SameSequence {
            bound,
            state: SequenceReport::default(),
        }
    }

    /// A handle on its findings.
    pub fn report(&self) -> SequenceReport {
        self.state.clone()
    }
}

/// Whether `life` still runs as a member of `group`: its node is up with
/// a core-set of that group and incarnation, a member, and has not left.
fn alive<C: CoreSets>(view: &CheckView<'_, C>, group: Option<&str>, life: Life) -> bool {
    view.core(life.0).is_some_and(|c| {
        c.coresets(group)
            .iter()
            .any(|c| c.incarnation() == life.1 && c.is_member() && !c.has_left())
    })
}

impl<C: CoreSets> Invariant<C> for SameSequence {
    fn name(&self) -> &str {
        "(d) connected members install the same sequence"
    }

    fn check(&mut self, view: &CheckView<'_, C>) -> Result<(), String> {
        let mut st = self.state.0.borrow_mut();
        for (now, node, ev) in view.new_events() {
            let Some((group, ev)) = C::coreset_event(ev) else {
                continue;
            };
            let CoreSetEvent::ViewInstalled { view: w, me, .. } = ev else {
                continue;
            };
            let group = group.map(str::to_string);
            let life = (*node, me.incarnation);
            for o in st.open.iter_mut().filter(|o| o.fork.group == group) {
                if o.fork.a.0 == life {
                    o.a_since.insert(*w);
                }
                if o.fork.b.0 == life {
                    o.b_since.insert(*w);
                }
            }
            if let Some(v) = st.last.insert((group.clone(), life), *w) {
                let others: Vec<(Life, ViewId)> = st
                    .next
                    .get(&(group.clone(), v))
                    .map(|m| {
                        m.iter()
                            .filter(|(l, w2)| **l != life && *w2 != w)
                            .map(|(l, w2)| (*l, *w2))
                            .collect()
                    })
                    .unwrap_or_default();
                for (other, w2) in others {
                    st.forks_seen += 1;
                    let fork = Fork {
                        group: group.clone(),
                        from: v,
                        a: (life, *w),
                        b: (other, w2),
                        at: *now,
                    };
                    if st.kept.len() < MAX_KEPT {
                        st.kept.push(fork.clone());
                    }
                    let mut b_since = BTreeSet::new();
                    if let Some(last) = st.last.get(&(group.clone(), other)) {
                        b_since.insert(*last);
                    }
                    st.open.push(OpenFork {
                        a_since: BTreeSet::from([*w]),
                        b_since,
                        fork,
                    });
                }
                st.next
                    .entry((group.clone(), v))
                    .or_default()
                    .insert(life, *w);
            }
        }
        if st.open.is_empty() {
            return Ok(());
        }
        let before = st.open.len();
        st.open.retain(|o| {
            let g = o.fork.group.as_deref();
            alive(view, g, o.fork.a.0)
                && alive(view, g, o.fork.b.0)
                && o.a_since.is_disjoint(&o.b_since)
        });
        st.resolved += (before - st.open.len()) as u64;
        let now = view.now();
        if let Some(f) = st
            .open
            .iter()
            .map(|o| &o.fork)
            .find(|f| now.saturating_duration_since(f.at) > self.bound)
        {
            return Err(format!(
                "sequences forked at {:?} (group {:?}) and both lives still run after {:?}: \
                 {:?} -> {:?}, {:?} -> {:?}",
                f.from, f.group, self.bound, f.a.0, f.a.1, f.b.0, f.b.1
            ));
        }
        Ok(())
    }
}
