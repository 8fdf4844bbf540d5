//! Joining (seed 003, section IV.C.1.a and figures 18 and 23): the newcomer
//! multicasts `M_JOIN_REQ` and waits for a `COMMIT` that lists it.
//!
//! Requests go out every `wait` (plus up to a quarter of random jitter).
//! Before each request the newcomer looks at the interval since the last
//! one:
//!
//! - if anything from a group was heard (an AGREE, a COMMIT for others, an
//!   ANNOUNCE, a JOIN_WAIT ...), the group exists but is busy: the wait
//!   doubles (up to `join_timeout_max`; the thesis multiplies by 6);
//! - else the interval was silent: the wait drops back to `join_timeout`,
//!   and after `1 + retries` silent intervals in a row nobody is there: the
//!   newcomer founds the group alone (rank 0, view 1), unless another
//!   newcomer with a lower address was heard asking recently: that one will
//!   found it, so this one keeps asking and joins it.
//!
//! An interval that ends late (the process was starved) counts as neither:
//! silence we did not listen for is no evidence.
//!
//! A member that rejoins after the group excluded it while it was running
//! says so (`rejoin`); if it keeps being failed after rejoining (a one-way
//! or flapping link) the coordinator answers `JOIN_WAIT` with a hold-down
//! (`flap.rs`), which the newcomer reports once per hold-down
//! ([`CoreSetEvent::HeldDown`]) while it keeps asking.

use super::context::HandlerCtx;
use super::event::CoreSetEvent;
use super::member::Joined;
use super::msg::{Envelope, Msg, NO_VIEW};
use crate::id::NodeId;
use crate::time::Instant;
use std::collections::BTreeMap;
use std::time::Duration;

/// Most lower-addressed newcomers remembered.
const MAX_LOWER_JOINERS: usize = 64;

/// Longest hold-down a JOIN_WAIT is believed to announce (one hour).
const MAX_HOLD_DOWN_MS: u64 = 3_600_000;

/// A newcomer's state.
pub(crate) struct Joining {
    /// When this join started (the newcomer's `change_started`).
    pub(crate) since: Instant,
    /// Requests sent so far.
    pub(crate) attempts: u32,
    /// Silent intervals in a row.
    pub(crate) silent: u32,
    /// The current wait between requests.
    pub(crate) wait: Duration,
    /// When the next request goes.
    pub(crate) next_send: Instant,
    /// When the last request went.
    pub(crate) last_send: Instant,
    /// When a group message was last heard.
    pub(crate) heard_group: Option<Instant>,
    /// Newcomers with lower addresses, and when they were last heard.
    pub(crate) lower: BTreeMap<NodeId, Instant>,
    /// We rejoin after the group excluded us while we were running.
    pub(crate) rejoin: bool,
    /// The end of the hold-down the group last told us about.
    pub(crate) held_until: Option<Instant>,
}

impl Joining {
    /// A join starting at `since` whose first request goes at `first`.
    pub(crate) fn new(since: Instant, first: Instant) -> Self {
        Joining {
            since,
            attempts: 0,
            silent: 0,
            wait: Duration::ZERO,
            next_send: first,
            last_send: first,
            heard_group: None,
            lower: BTreeMap::new(),
            rejoin: false,
            held_until: None,
        }
    }

    /// The request timer: judge the last interval, then found the group
    /// or send the next request. Returns the founded group's state when it
    /// founds one.
    pub(crate) fn on_timeout(
        &mut self,
        h: &mut HandlerCtx<'_>,
        late: bool,
        jitter: Duration,
    ) -> Option<Box<Joined>> {
        if h.now < self.next_send {
            return None;
        }
        if self.wait.is_zero() {
            self.wait = h.cx.t.join_timeout;
        }
        if self.attempts > 0 && !late {
            if self.heard_group.is_some_and(|t| t >= self.last_send) {
                self.silent = 0;
                self.wait = self
                    .wait
                    .saturating_mul(2)
                    .min(h.cx.t.join_timeout_max)
                    .max(h.cx.t.join_timeout);
            } else {
                self.silent = self.silent.saturating_add(1);
                self.wait = h.cx.t.join_timeout;
            }
        }
        let window = h.cx.t.join_timeout_max.saturating_mul(2);
        self.lower
            .retain(|_, t| h.now.saturating_duration_since(*t) <= window);
        if self.silent > h.cx.t.retries && self.lower.is_empty() {
            return Some(Joined::found(h, self.since));
        }
        h.io.multicast(
            NO_VIEW,
            Msg::MJoinReq {
                attempt: self.attempts,
                rejoin: self.rejoin,
                child: h.cx.tree.child.clone(),
                declined: h.cx.tree.declined,
            },
        );
        self.attempts = self.attempts.saturating_add(1);
        self.last_send = h.now;
        self.next_send = h.now + self.wait + jitter;
        None
    }

    /// A datagram while joining. Returns the new member state when a
    /// COMMIT admits us.
    pub(crate) fn on_packet(
        &mut self,
        h: &mut HandlerCtx<'_>,
        source: NodeId,
        env: Envelope,
    ) -> Option<Box<Joined>> {
        match env.msg {
            Msg::Commit(c) => {
                if c.table.contains(h.cx.me, h.cx.incarnation) {
                    if c.table.validate().is_err() || c.proposal.view.number == 0 {
                        h.io.stats.drops.malformed += 1;
                        return None;
                    }
                    return Some(Joined::admitted(h, env.view, c, self.since));
                }
                self.heard_group = Some(h.now);
                h.io.stats.drops.unexpected += 1;
            }
            Msg::JoinWait { held_down_ms } if held_down_ms > 0 => {
                self.heard_group = Some(h.now);
                let left = Duration::from_millis(held_down_ms.min(MAX_HOLD_DOWN_MS));
                let until = h.now + left;
                // Report a new hold-down, not every reminder of the same.
                let known = self.held_until.is_some_and(|t| {
                    t.saturating_duration_since(until) + until.saturating_duration_since(t)
                        < h.cx.t.join_timeout_max
                });
                if !known {
                    h.io.event(CoreSetEvent::HeldDown { remaining: left });
                }
                self.held_until = Some(until);
                // Ask again as soon as it ends (not a whole wait later).
                if until < self.next_send {
                    self.next_send = until;
                }
            }
            Msg::JoinRefused { reason } => {
                // The group is there, and will not take us as we are: the
                // layer above decides (keep asking, or give up).
                self.heard_group = Some(h.now);
                if reason.is_valid() {
                    h.io.event(CoreSetEvent::JoinRefused { reason });
                } else {
                    h.io.stats.drops.malformed += 1;
                }
            }
            Msg::MJoinReq { .. } => {
                if source < h.cx.me {
                    if self.lower.len() >= MAX_LOWER_JOINERS && !self.lower.contains_key(&source) {
                        let highest = self.lower.keys().next_back().copied();
                        match highest {
                            Some(top) if source < top => {
                                self.lower.remove(&top);
                            }
                            _ => return None,
                        }
                    }
                    self.lower.insert(source, h.now);
                }
            }
            _ => {
                // Some group is there (maybe our old one, still asking
                // after our previous life): it is not empty.
                self.heard_group = Some(h.now);
            }
        }
        None
    }
}
