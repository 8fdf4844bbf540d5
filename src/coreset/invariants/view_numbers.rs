//! Invariant (b) of DESIGN.md section 5: while a member stays a member, its
//! view numbers go up by exactly one per installed view.
//!
//! Tracked per life (address and incarnation, from the event's `me`): the
//! first view of a life may have any number (a founder starts at 1, a
//! newcomer at the group's number, a member that rejoined after exclusion
//! starts a fresh sequence with its new incarnation); every later view must
//! be the previous number + 1, except at a merge of subgroups (the event's
//! `merged`), whose number is above every side's and may jump (DESIGN.md
//! section 5); it must still increase. [`ViewNumbers::allow_jumps_when`]
//! replaces that rule.

use super::life::CoreSets;
use crate::coreset::CoreSetEvent;
use crate::id::{Incarnation, NodeId};
use crate::sim::{CheckView, Invariant};
use std::collections::BTreeMap;

/// Checker (b). See the [module docs](self).
pub struct ViewNumbers {
    /// By node, group (`None` for a node of one group) and life.
    last: BTreeMap<(NodeId, Option<String>, Incarnation), u64>,
    allow_jump: Box<dyn Fn(&CoreSetEvent) -> bool>,
}

impl Default for ViewNumbers {
    fn default() -> Self {
        ViewNumbers {
            last: BTreeMap::new(),
            allow_jump: Box::new(|e| matches!(e, CoreSetEvent::ViewInstalled { merged: true, .. })),
        }
    }
}

impl ViewNumbers {
    /// A checker that allows jumps only at merges.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows a view number to jump (increase by more than one) on events
    /// for which `f` holds: the hook for merges.
    pub fn allow_jumps_when(mut self, f: impl Fn(&CoreSetEvent) -> bool + 'static) -> Self {
        self.allow_jump = Box::new(f);
        self
    }
}

impl<C: CoreSets> Invariant<C> for ViewNumbers {
    fn name(&self) -> &str {
        "(b) view numbers go up by one"
    }

    fn check(&mut self, view: &CheckView<'_, C>) -> Result<(), String> {
        for (_, node, ev) in view.new_events() {
            let Some((group, ev)) = C::coreset_event(ev) else {
                continue;
            };
            let CoreSetEvent::ViewInstalled { view: id, me, .. } = ev else {
                continue;
            };
            if id.number == 0 {
                return Err(format!("{node} installed view number 0: {id:?}"));
            }
            let life = (*node, group.map(str::to_string), me.incarnation);
            if let Some(prev) = self.last.get(&life) {
                let ok = id.number == prev + 1 || (id.number > *prev && (self.allow_jump)(ev));
                if !ok {
                    return Err(format!(
                        "{node} ({:?}) went from view number {prev} to {id:?}",
                        me.incarnation
                    ));
                }
            }
            self.last.insert(life, id.number);
        }
        Ok(())
    }
}
