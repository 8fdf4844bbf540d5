//! Invariant (c) of DESIGN.md section 5: no member installs a view that
//! leaves itself out.
//!
//! Every `ViewInstalled` must list, among its members, the installing node
//! itself, with the rank the event names as `me` and with the incarnation
//! of the life that installed it (the core's current incarnation, unless
//! the same step also took a new one).

use crate::coreset::{CoreSet, CoreSetEvent};
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

impl Invariant<CoreSet> for SelfInclusion {
    fn name(&self) -> &str {
        "(c) no view without oneself"
    }

    fn check(&mut self, view: &CheckView<'_, CoreSet>) -> Result<(), String> {
        let events = view.new_events();
        for (i, (_, node, ev)) in events.iter().enumerate() {
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
            let renewed_later = events[i + 1..]
                .iter()
                .any(|(_, n, e)| n == node && matches!(e, CoreSetEvent::NewIncarnation(_)));
            if let Some(core) = view.core(*node) {
                if !renewed_later && core.incarnation() != me.incarnation {
                    return Err(format!(
                        "{node} installed {id:?} as {:?} but its life is {:?}",
                        me.incarnation,
                        core.incarnation()
                    ));
                }
            }
        }
        Ok(())
    }
}
