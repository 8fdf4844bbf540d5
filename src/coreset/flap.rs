//! One-way and flapping links (issue 5, item 4; DESIGN.md section 5,
//! "Paused and resumed members"; seed 003 section III.D leaves this open).
//!
//! When member A no longer hears member B but B still hears A, A's
//! monitoring fails B; B learns it was excluded (A's COMMIT reaches it) and
//! rejoins. Left alone this repeats for as long as the link is bad, or B
//! comes back at a rank A no longer monitors and the bad link stays hidden
//! inside the view. Three rules make the group converge instead:
//!
//! - **Who is excluded is deterministic**: the member that the monitor
//!   cannot hear (B), because the monitor is the one whose silence timer
//!   runs out. The joiner tells the group whether it rejoins after being
//!   excluded while it was running normally (`M_JOIN_REQ.rejoin`): a member
//!   that was paused (its own timers fired late, see
//!   [`super::CoreSet`]'s late-timer check) or a fresh process does not
//!   count, so a SIGSTOP/SIGCONT still rejoins at once. Nor does a member
//!   that was cut off itself ([`Joined::was_cut_off`]: members of its view
//!   fell silent or failed lately, or its lowest rank's ANNOUNCE was
//!   overdue): that is a partition both ways, healed or flapping, whose
//!   heal must not hold anyone down (issue 15).
//! - **Only silence counts**: a member removed because it answered from
//!   another view
//!   ([`RemovalReason::Elsewhere`](super::msg::RemovalReason::Elsewhere):
//!   after a heal, two subgroups admitted it at once, and it installed the
//!   other's view) is alive and its link works; its removal is no strike.
//! - **The monitor keeps watching**: a member that failed B for silence
//!   ([`Joined::silenced`]) and sees B readmitted within the flap window
//!   queries B every query interval for the rest of the window, wherever B
//!   now sits in the ring ([`Joined::suspects`]). A link that is still bad
//!   fails B again within a reply timeout.
//! - **Growing hold-down**: every member counts, per address, the failures
//!   of lives that had rejoined after an exclusion within the flap window
//!   ([`FlapRecords`](super::holddown::FlapRecords), `holddown.rs`). From
//!   the second such failure on, the coordinator of joins answers that
//!   address's rejoin requests with `JOIN_WAIT` carrying the time left, for
//!   `hold_down * 2^(strikes - 2)` (at most `hold_down_max`) after the
//!   failure. The view without B then stands;
//!   `msctl view --json` lists the held-down addresses.
//!
//! Every member updates the records from the views it installs, so a new
//! coordinator of joins (after the old one failed) holds the same members
//! down; a member that joined later starts without the history.

use super::context::{Ctx, HandlerCtx};
use super::holddown::MAX_RECORDS;
use super::member::Joined;
use super::msg::Proposal;
use super::table::Table;
use crate::id::NodeId;
use crate::time::Instant;
use std::time::Duration;

impl Joined {
    /// After installing a view (`old`: the table before; `p`: the change):
    /// flap records, and the members we failed for silence that are back
    /// go on our watch list.
    pub(crate) fn after_view_flaps(&mut self, now: Instant, cx: &Ctx, p: &Proposal, old: &Table) {
        self.flaps.on_view(now, cx, p, old);
        let window = cx.t.flap_window;
        self.silenced
            .retain(|_, t| now.saturating_duration_since(*t) <= window);
        for j in &p.joins {
            let Some(at) = self.silenced.get(&j.addr).copied() else {
                continue;
            };
            if let Some(r) = self.table.by_addr(j.addr) {
                if r.rank != self.my_rank {
                    self.suspects.insert(r.rank, at + window);
                }
            }
        }
        let table = &self.table;
        self.suspects
            .retain(|rank, until| *until > now && table.by_rank(*rank).is_some());
        if self.suspects.is_empty() {
            self.suspect_next = Instant::MAX;
        } else if self.suspect_next == Instant::MAX {
            self.suspect_next = now + cx.t.query_interval;
        }
    }

    /// We take member `addr` as failed because it stayed silent.
    pub(crate) fn note_silenced(&mut self, now: Instant, addr: NodeId) {
        if self.silenced.len() < MAX_RECORDS || self.silenced.contains_key(&addr) {
            self.silenced.insert(addr, now);
        }
    }

    /// The watch on readmitted members we had failed for silence: one
    /// (hard) probe each query interval; silence fails them again.
    pub(crate) fn suspect_timer(&mut self, h: &mut HandlerCtx<'_>) {
        if h.now < self.suspect_next || self.busy() {
            return;
        }
        self.suspects.retain(|_, until| *until > h.now);
        if self.suspects.is_empty() {
            self.suspect_next = Instant::MAX;
            return;
        }
        self.suspect_next = h.now + h.cx.t.query_interval;
        let ranks: Vec<u64> = self.suspects.keys().copied().collect();
        for rank in ranks {
            if self.monitor.target.is_some_and(|(r, _)| r == rank) {
                // Our ring neighbour: monitored anyway.
                continue;
            }
            h.io.stats.suspect_probes += 1;
            self.probe(h, rank, false);
        }
    }

    /// Whether a joiner at `addr` is held down: `JOIN_WAIT` it with the
    /// time left instead of admitting it.
    pub(crate) fn held_down_for(&self, now: Instant, cx: &Ctx, addr: NodeId) -> Option<Duration> {
        self.flaps.remaining(now, cx, addr)
    }
}
