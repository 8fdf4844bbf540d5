//! Invariant (a) of DESIGN.md section 5: any two members that installed the
//! same view id (number and coordinator incarnation) hold identical core
//! tables for it.
//!
//! The first `ViewInstalled` of a view id records its members and rank
//! high-water mark; every later one must match. When the installing core
//! still shows that view after the step, its whole table (cw, ccw, flags)
//! is recorded and compared too.

use super::life::CoreSets;
use crate::coreset::{CoreSetEvent, Member, Table};
use crate::id::{NodeId, ViewId};
use crate::sim::{CheckView, Invariant};
use std::collections::BTreeMap;

/// Checker (a). See the [module docs](self).
#[derive(Default)]
pub struct SameViewSameTable {
    /// By group (`None` for nodes of one group) and view id.
    views: BTreeMap<(Option<String>, ViewId), Recorded>,
}

struct Recorded {
    members: Vec<Member>,
    next_rank: u64,
    first: NodeId,
    table: Option<Table>,
}

impl SameViewSameTable {
    /// A checker with nothing recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// View ids seen so far.
    pub fn views_seen(&self) -> usize {
        self.views.len()
    }
}

impl<C: CoreSets> Invariant<C> for SameViewSameTable {
    fn name(&self) -> &str {
        "(a) same view id, same table"
    }

    fn check(&mut self, view: &CheckView<'_, C>) -> Result<(), String> {
        for (_, node, ev) in view.new_events() {
            let Some((group, ev)) = C::coreset_event(ev) else {
                continue;
            };
            let CoreSetEvent::ViewInstalled {
                view: id,
                members,
                next_rank,
                ..
            } = ev
            else {
                continue;
            };
            let key = (group.map(str::to_string), *id);
            match self.views.get(&key) {
                None => {
                    self.views.insert(
                        key.clone(),
                        Recorded {
                            members: members.clone(),
                            next_rank: *next_rank,
                            first: *node,
                            table: None,
                        },
                    );
                }
                Some(r) => {
                    if r.members != *members || r.next_rank != *next_rank {
                        return Err(format!(
                            "view {id:?}: {node} installed members {members:?} (next rank \
                             {next_rank}), {} installed {:?} (next rank {})",
                            r.first, r.members, r.next_rank
                        ));
                    }
                }
            }
            // The whole table, when the core still shows this view.
            let Some(node_core) = view.core(*node) else {
                continue;
            };
            let cores = node_core.coresets(group);
            let Some(core) = cores.iter().find(|c| c.view() == Some(*id)) else {
                continue;
            };
            let Some(table) = core.table() else {
                continue;
            };
            if let Some(r) = self.views.get_mut(&key) {
                match &r.table {
                    None => r.table = Some(table.clone()),
                    Some(t) if t != table => {
                        return Err(format!(
                            "view {id:?}: {node} holds table {table:?}, another member {t:?}"
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}
