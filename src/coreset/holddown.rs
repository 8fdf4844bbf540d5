//! The flap history every member keeps per address, and the hold-down it
//! gives (the rules are in `flap.rs`): [`FlapRecords`], updated from every
//! installed view, and the [`HeldDown`] entries `msctl view --json`
//! lists. Plain data below the member state, which holds one.

use super::context::Ctx;
use super::event::HeldDown;
use super::msg::{Proposal, RemovalReason};
use super::table::Table;
use crate::id::NodeId;
use crate::time::Instant;
use std::collections::BTreeMap;
use std::time::Duration;

/// Most addresses with a flap record (the oldest failures are forgotten
/// first).
pub(crate) const MAX_RECORDS: usize = 256;

/// The flap history of one address.
#[derive(Clone, Copy, Debug)]
struct Flap {
    strikes: u32,
    failed_at: Instant,
    /// When its current life was admitted after an exclusion (a rejoin).
    readmitted_at: Option<Instant>,
}

/// Per-address flap history, kept by every member from the views it
/// installs.
#[derive(Clone, Debug, Default)]
pub(crate) struct FlapRecords {
    by_addr: BTreeMap<NodeId, Flap>,
}

impl FlapRecords {
    /// A view was installed: `p` admitted and removed these members
    /// (`old` is the table before it).
    pub(crate) fn on_view(&mut self, now: Instant, cx: &Ctx, p: &Proposal, old: &Table) {
        for x in &p.removals {
            let Some(r) = old.by_rank(x.rank) else {
                continue;
            };
            match x.reason {
                RemovalReason::Failed => {}
                RemovalReason::Left => continue,
                RemovalReason::Elsewhere => {
                    // Alive in another view (a merge race): this life
                    // ends without a strike; its earlier strikes stay.
                    if let Some(f) = self.by_addr.get_mut(&r.addr) {
                        f.readmitted_at = None;
                    }
                    continue;
                }
            }
            let f = self.by_addr.entry(r.addr).or_insert(Flap {
                strikes: 0,
                failed_at: now,
                readmitted_at: None,
            });
            let flapping = f
                .readmitted_at
                .is_some_and(|t| now.saturating_duration_since(t) <= cx.t.flap_window);
            f.strikes = if flapping {
                f.strikes.saturating_add(1)
            } else {
                1
            };
            f.failed_at = now;
            f.readmitted_at = None;
        }
        for j in &p.joins {
            match self.by_addr.get_mut(&j.addr) {
                Some(f) if j.rejoin => f.readmitted_at = Some(now),
                // A fresh process (or a resumed one): its history ends.
                Some(_) => {
                    self.by_addr.remove(&j.addr);
                }
                None => {}
            }
        }
        self.prune(now, cx);
    }

    fn prune(&mut self, now: Instant, cx: &Ctx) {
        let keep = cx.t.flap_window.saturating_add(cx.t.hold_down_max);
        self.by_addr.retain(|_, f| {
            f.readmitted_at.is_some() || now.saturating_duration_since(f.failed_at) <= keep
        });
        while self.by_addr.len() > MAX_RECORDS {
            let oldest = self
                .by_addr
                .iter()
                .min_by_key(|(_, f)| f.failed_at)
                .map(|(a, _)| *a);
            match oldest {
                Some(a) => {
                    self.by_addr.remove(&a);
                }
                None => break,
            }
        }
    }

    /// How long `addr`'s hold-down lasts after its last failure, if any.
    fn hold(f: &Flap, cx: &Ctx) -> Option<Duration> {
        if f.strikes < 2 || f.readmitted_at.is_some() {
            return None;
        }
        let doublings = (f.strikes - 2).min(20);
        Some(
            cx.t.hold_down
                .saturating_mul(1u32 << doublings)
                .min(cx.t.hold_down_max),
        )
    }

    /// How much longer `addr` is held down, if it is.
    pub(crate) fn remaining(&self, now: Instant, cx: &Ctx, addr: NodeId) -> Option<Duration> {
        let f = self.by_addr.get(&addr)?;
        let until = f.failed_at + Self::hold(f, cx)?;
        let left = until.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }

    /// Every address held down now.
    pub(crate) fn held_down(&self, now: Instant, cx: &Ctx) -> Vec<HeldDown> {
        self.by_addr
            .iter()
            .filter_map(|(addr, f)| {
                let remaining = self.remaining(now, cx, *addr)?;
                Some(HeldDown {
                    addr: *addr,
                    strikes: f.strikes,
                    remaining_ms: u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::context::Timings;
    use super::super::msg::{Joiner, Layer, Removal};
    use super::super::CoreSetConfig;
    use super::*;
    use crate::id::{Incarnation, ViewId};

    fn n(i: u8) -> NodeId {
        NodeId::v4(10, 0, 0, i, 7000)
    }
    fn inc(i: u8, life: u8) -> Incarnation {
        Incarnation::from_parts(1000 + u64::from(i) + u64::from(life), [i; 10])
    }
    fn cx() -> Ctx {
        let config = CoreSetConfig::new(n(1), inc(1, 0), "unit", NodeId::v4(239, 1, 1, 1, 7000));
        Ctx {
            me: n(1),
            incarnation: inc(1, 0),
            group_addr: config.group_addr,
            t: Timings::from_config(&config),
            tree: config.tree.clone(),
        }
    }
    fn remove(rank: u64, reason: RemovalReason) -> Proposal {
        change(vec![Removal { rank, reason }], vec![])
    }
    fn rejoin(i: u8, life: u8) -> Proposal {
        change(
            vec![],
            vec![Joiner {
                addr: n(i),
                incarnation: inc(i, life),
                rejoin: true,
                declined: false,
                child_group: None,
            }],
        )
    }
    fn change(removals: Vec<Removal>, joins: Vec<Joiner>) -> Proposal {
        Proposal {
            view: ViewId {
                number: 2,
                seq: 0,
                coordinator: inc(1, 0),
            },
            originator: 0,
            layer: Layer::Physical,
            coordinator_failure: false,
            removals,
            joins,
            merges: Vec::new(),
            app: Vec::new(),
            tree: Vec::new(),
        }
    }

    /// Member 2's history through `steps` (at 100 ms each); whether it is
    /// held down at the end.
    fn held_after(steps: &[RemovalReason]) -> Option<Duration> {
        let cx = cx();
        let mut table = Table::founding(n(1), inc(1, 0)).apply(&change(
            vec![],
            vec![Joiner {
                addr: n(2),
                incarnation: inc(2, 0),
                rejoin: false,
                declined: false,
                child_group: None,
            }],
        ));
        let mut records = FlapRecords::default();
        let mut now = Instant::from_millis(1000);
        for (life, reason) in steps.iter().enumerate() {
            let rank = table.by_addr(n(2)).map(|r| r.rank).expect("a member");
            let p = remove(rank, *reason);
            let next = table.apply(&p);
            records.on_view(now, &cx, &p, &table);
            table = next;
            now += Duration::from_millis(100);
            let life = u8::try_from(life + 1).expect("few steps");
            if records.remaining(now, &cx, n(2)).is_some() {
                return records.remaining(now, &cx, n(2));
            }
            let p = rejoin(2, life);
            let next = table.apply(&p);
            records.on_view(now, &cx, &p, &table);
            table = next;
            now += Duration::from_millis(100);
        }
        records.remaining(now, &cx, n(2))
    }

    #[test]
    fn silence_twice_after_a_rejoin_holds_down() {
        let held = held_after(&[RemovalReason::Failed, RemovalReason::Failed]);
        assert_eq!(held, Some(Duration::from_millis(4900)));
    }

    #[test]
    fn a_member_alive_in_another_view_is_no_flap() {
        use RemovalReason::{Elsewhere, Failed};
        // The split fails it, and after the heal a second subgroup that
        // admitted it as well removes it again: no hold-down.
        assert_eq!(held_after(&[Failed, Elsewhere]), None);
        assert_eq!(held_after(&[Failed, Elsewhere, Elsewhere]), None);
        // Its strike from the split stays: silence after the next rejoin
        // is its second.
        assert!(held_after(&[Failed, Elsewhere, Failed]).is_some());
        // A leave ends nothing and counts nothing.
        assert_eq!(held_after(&[Failed, RemovalReason::Left]), None);
    }
}
