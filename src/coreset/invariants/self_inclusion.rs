//! Invariant (c) of DESIGN.md section 5: no member installs a view that
//! leaves itself out.
//!
//! Every `ViewInstalled` must list, among its members, the installing node
//! itself, with the rank the event names as `me` and with the incarnation
//! of the life that installed it (the core's current incarnation, unless
//! the same step also took a new one or ended that life with a leave; a
//! node of several groups may then hold a new core-set for that group).

use super::life::CoreSets;
use crate::coreset::CoreSetEvent;
use crate::sim::{CheckView, Invariant};

/// Checker (c). See the [module docs](self).
#[derive(Default)]
pub struct SelfInclusion {
    checked: u64,
}

impl SelfInclusion {
    /// A checker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Views checked so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }
}

impl<C: CoreSets> Invariant<C> for SelfInclusion {
    fn name(&self) -> &str {
        "(c) no view without oneself"
    }

    fn check(&mut self, view: &CheckView<'_, C>) -> Result<(), String> {
        let events = view.new_events();
        for (i, (_, node, ev)) in events.iter().enumerate() {
            let Some((group, ev)) = C::coreset_event(ev) else {
                continue;
            };
            let CoreSetEvent::ViewInstalled {
                view: id,
                members,
                me,
                ..
            } = ev
            else {
                continue;
            };
            self.checked += 1;
            if me.addr != *node || !members.contains(me) {
                return Err(format!(
                    "{node} installed {id:?} with me = {me:?}, members {members:?}"
                ));
            }
            let renewed_later = events[i + 1..].iter().any(|(_, n, e)| {
                n == node
                    && C::coreset_event(e).is_some_and(|(g, e)| {
                        g == group
                            && matches!(e, CoreSetEvent::NewIncarnation(_) | CoreSetEvent::Left)
                    })
            });
            if let Some(node_core) = view.core(*node) {
                let lives: Vec<_> = node_core
                    .coresets(group)
                    .iter()
                    .map(|c| c.incarnation())
                    .collect();
                if !renewed_later && !lives.is_empty() && !lives.contains(&me.incarnation) {
                    return Err(format!(
                        "{node} installed {id:?} as {:?} but its lives there are {lives:?}",
                        me.incarnation
                    ));
                }
            }
        }
        Ok(())
    }
}
