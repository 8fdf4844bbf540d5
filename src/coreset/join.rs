//! Joining (seed 003, section IV.C.1.a and figures 18 and 23): the newcomer
//! multicasts `M_JOIN_REQ` and waits for a `COMMIT` that lists it.
//!
//! Requests go out in rounds of `1 + retries`, `wait` apart (plus up to a
//! quarter of random jitter). At the end of a round:
//!
//! - if anything from a group was heard during the round (an AGREE, a
//!   COMMIT for others, an ANNOUNCE, a JOIN_WAIT ...), the group exists but
//!   is busy: the wait doubles (up to `join_timeout_max`; the thesis
//!   multiplies by 6) and another round starts;
//! - else, if another newcomer with a lower address was heard asking
//!   recently, it will found the group: keep asking, and join it;
//! - else nobody is there: found the group alone (rank 0, view 1).
//!
//! A round that ends late (the process was starved) starts over instead of
//! founding: silence we did not listen for is no evidence.

use super::member::Joined;
use super::msg::{Envelope, Msg, NO_VIEW};
use super::{Ctx, Io};
use crate::id::{Incarnation, NodeId};
use crate::time::Instant;
use std::collections::BTreeMap;
use std::time::Duration;

/// Most lower-addressed newcomers remembered.
const MAX_LOWER_JOINERS: usize = 64;

/// A newcomer's state.
pub(crate) struct Joining {
    /// When this join started (the newcomer's `change_started`).
    pub(crate) since: Instant,
    /// Requests sent so far.
    pub(crate) attempts: u32,
    /// Requests sent in the current round.
    pub(crate) round_sends: u32,
    /// The wait between requests in this round.
    pub(crate) wait: Duration,
    /// When the next request goes (or the round ends).
    pub(crate) next_send: Instant,
    /// When the current round started.
    pub(crate) round_started: Instant,
    /// When a group message was last heard.
    pub(crate) heard_group: Option<Instant>,
    /// Newcomers with lower addresses, and when they were last heard.
    pub(crate) lower: BTreeMap<NodeId, Instant>,
}

impl Joining {
    /// A join starting at `since` whose first request goes at `first`.
    pub(crate) fn new(since: Instant, first: Instant) -> Self {
        Joining {
            since,
            attempts: 0,
            round_sends: 0,
            wait: Duration::ZERO,
            next_send: first,
            round_started: first,
            heard_group: None,
            lower: BTreeMap::new(),
        }
    }

    /// The request timer: send the next request, or end the round.
    /// Returns the founded group's state when it founds one.
    pub(crate) fn on_timeout(
        &mut self,
        now: Instant,
        late: bool,
        jitter: Duration,
        cx: &Ctx,
        io: &mut Io,
    ) -> Option<Box<Joined>> {
        if now < self.next_send {
            return None;
        }
        if self.wait.is_zero() {
            self.wait = cx.t.join_timeout;
        }
        if late {
            // Starved: this round's silence proves nothing.
            self.round_sends = 0;
        }
        // At most two passes: end a round, then start the next one.
        for _ in 0..2 {
            if self.round_sends < cx.t.retries.saturating_add(1) {
                if self.round_sends == 0 {
                    self.round_started = now;
                }
                io.multicast(
                    NO_VIEW,
                    Msg::MJoinReq {
                        attempt: self.attempts,
                    },
                );
                self.attempts = self.attempts.saturating_add(1);
                self.round_sends += 1;
                self.next_send = now + self.wait + jitter;
                return None;
            }
            let round = self.wait.saturating_mul(cx.t.retries.saturating_add(1));
            let heard = self.heard_group.is_some_and(|t| t >= self.round_started);
            self.lower
                .retain(|_, t| now.saturating_duration_since(*t) <= round.saturating_mul(2));
            if heard {
                self.wait = self
                    .wait
                    .saturating_mul(2)
                    .min(cx.t.join_timeout_max)
                    .max(cx.t.join_timeout);
                self.round_sends = 0;
            } else if !self.lower.is_empty() {
                self.round_sends = 0;
            } else {
                return Some(Joined::found(now, cx, io, self.since));
            }
        }
        None
    }

    /// A datagram while joining. Returns the new member state when a
    /// COMMIT admits us.
    pub(crate) fn on_packet(
        &mut self,
        now: Instant,
        cx: &Ctx,
        io: &mut Io,
        source: NodeId,
        _incarnation: Incarnation,
        env: Envelope,
    ) -> Option<Box<Joined>> {
        match env.msg {
            Msg::Commit(c) => {
                if c.table.contains(cx.me, cx.incarnation) {
                    if c.table.validate().is_err() || c.proposal.view.number == 0 {
                        io.stats.drops.malformed += 1;
                        return None;
                    }
                    return Some(Joined::admitted(now, cx, io, env.view, c, self.since));
                }
                self.heard_group = Some(now);
                io.stats.drops.unexpected += 1;
            }
            Msg::MJoinReq { .. } => {
                if source < cx.me {
                    if self.lower.len() >= MAX_LOWER_JOINERS && !self.lower.contains_key(&source) {
                        let highest = self.lower.keys().next_back().copied();
                        match highest {
                            Some(h) if source < h => {
                                self.lower.remove(&h);
                            }
                            _ => return None,
                        }
                    }
                    self.lower.insert(source, now);
                }
            }
            _ => {
                // Some group is there (maybe our old one, still asking
                // after our previous life): it is not empty.
                self.heard_group = Some(now);
            }
        }
        None
    }
}
