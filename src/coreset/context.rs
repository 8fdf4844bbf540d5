//! What the core-set's handlers work with, below every one of them: the
//! timers resolved from the config ([`Timings`]), who this node is
//! ([`Ctx`]), the outputs and counters ([`Io`]), the transition a handler
//! may ask for, the leave in progress, and the [`HandlerCtx`] that
//! [`CoreSet`](super::CoreSet) makes for each input and hands down the
//! call chain (so that a handler's arguments are what its message or timer
//! carries).

use super::config::CoreSetConfig;
use super::event::CoreSetEvent;
use super::msg::{Envelope, Msg, MsgKind};
use super::stats::CoreSetStats;
use super::tree::TreeSettings;
use crate::id::{Incarnation, NodeId, ProtocolId, ViewId};
use crate::sansio::Transmit;
use crate::time::Instant;
use crate::wire::encode_body;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Most (destination, kind) pairs remembered for answer rate limits.
pub(crate) const MAX_RATE_LIMITS: usize = 256;

/// The timers, resolved from the config (see [`CoreSetConfig`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timings {
    pub(crate) query_interval: Duration,
    pub(crate) reply_timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) change_retries: u32,
    pub(crate) commit_timeout: Duration,
    pub(crate) commit_delay: Option<Duration>,
    pub(crate) join_timeout: Duration,
    pub(crate) join_timeout_max: Duration,
    pub(crate) announce_interval: Duration,
    pub(crate) leave_timeout: Duration,
    /// A heartbeat is overdue this long after the last one.
    pub(crate) overdue_after: Duration,
    /// A member that keeps refusing an AGREE this long is taken as failed.
    pub(crate) refuse_limit: Duration,
    /// A member waiting for its COMMIT re-sends its ACK this often.
    pub(crate) nudge_interval: Duration,
    /// A queued join request is forgotten this long after it was last heard.
    pub(crate) join_ttl: Duration,
    /// A rejoin's first request waits this long (so the daemon switches
    /// its socket to the new incarnation first).
    pub(crate) rejoin_delay: Duration,
    /// After withdrawing its change, a coordinator waits this long before
    /// proposing again.
    pub(crate) abort_backoff: Duration,
    /// See [`CoreSetConfig::flap_window`].
    pub(crate) flap_window: Duration,
    /// See [`CoreSetConfig::hold_down`].
    pub(crate) hold_down: Duration,
    /// See [`CoreSetConfig::hold_down_max`].
    pub(crate) hold_down_max: Duration,
    /// An exclusion learned this soon after a late timer was caused by a
    /// pause (SIGSTOP, a starved process): the rejoin is not a flap.
    pub(crate) pause_memory: Duration,
    /// An exclusion this soon after this member saw members of its own
    /// view fail was a cut both ways: the rejoin is not a flap.
    pub(crate) cut_memory: Duration,
}

impl Timings {
    pub(crate) fn from_config(c: &CoreSetConfig) -> Self {
        Timings {
            query_interval: c.query_interval,
            reply_timeout: c.reply_timeout,
            retries: c.retries,
            change_retries: c.change_retries(),
            commit_timeout: c.commit_timeout(),
            commit_delay: c.commit_delay.filter(|d| !d.is_zero()),
            join_timeout: c.join_timeout(),
            join_timeout_max: c.join_timeout_max(),
            announce_interval: c.announce_interval(),
            leave_timeout: c.leave_timeout(),
            overdue_after: c.query_interval + c.reply_timeout / 2,
            refuse_limit: c.commit_timeout().saturating_mul(2),
            nudge_interval: c.reply_timeout.saturating_mul(2),
            join_ttl: c.join_timeout_max().saturating_mul(3),
            rejoin_delay: (c.reply_timeout / 100).max(Duration::from_micros(1)),
            abort_backoff: c.reply_timeout.saturating_mul(2),
            flap_window: c.flap_window,
            hold_down: c.hold_down,
            hold_down_max: c.hold_down_max.max(c.hold_down),
            pause_memory: (c.query_interval + c.reply_timeout).saturating_mul(4),
            cut_memory: (c.query_interval + c.reply_timeout).saturating_mul(8),
        }
    }
}

/// Who this node is (changes only on a rejoin).
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub(crate) me: NodeId,
    pub(crate) incarnation: Incarnation,
    pub(crate) group_addr: NodeId,
    pub(crate) t: Timings,
    /// The group's place in the tree (what a founder records, what a
    /// joiner claims).
    pub(crate) tree: TreeSettings,
}

/// A change of the whole state that a handler asks for; applied by
/// [`CoreSet`](super::CoreSet) after the handler returns. Once one is set, nothing more is
/// sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    /// We learned we are not a member: rejoin with a new incarnation.
    Exclude,
    /// The voluntary leave is done.
    Leave,
}

/// Outputs and counters, kept apart from the protocol state so that
/// handlers can borrow both.
pub(crate) struct Io {
    pub(crate) group: String,
    /// Above level 1: our life, sent in every envelope.
    pub(crate) life: Option<Incarnation>,
    pub(crate) group_addr: NodeId,
    pub(crate) reply_timeout: Duration,
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) events: VecDeque<CoreSetEvent>,
    pub(crate) stats: CoreSetStats,
    pub(crate) limits: BTreeMap<(NodeId, MsgKind), Instant>,
    pub(crate) transition: Option<Transition>,
}

impl Io {
    /// Sends `msg` with envelope view `view` to `to` (a member, or the
    /// group address).
    pub(crate) fn send(&mut self, to: NodeId, view: ViewId, msg: Msg) {
        if self.transition.is_some() {
            return;
        }
        let kind = msg.kind();
        let env = Envelope {
            group: self.group.clone(),
            view,
            msg,
            life: self.life,
        };
        // A body over the limit would be a table above MAX_MEMBERS, which
        // validation prevents; if it ever happens, nothing is sent.
        if let Ok(body) = encode_body(&env) {
            self.stats.sent.count(kind);
            self.transmits
                .push_back(Transmit::new(to, ProtocolId::CoreSet, body));
        }
    }

    /// Sends `msg` to the group address.
    pub(crate) fn multicast(&mut self, view: ViewId, msg: Msg) {
        self.send(self.group_addr, view, msg);
    }

    /// Reports an event.
    pub(crate) fn event(&mut self, e: CoreSetEvent) {
        self.events.push_back(e);
    }

    /// Whether an answer of `kind` to `to` may go now (at most one per
    /// reply timeout per destination and kind); records it if so.
    pub(crate) fn allow(&mut self, now: Instant, to: NodeId, kind: MsgKind) -> bool {
        let key = (to, kind);
        if let Some(t) = self.limits.get(&key) {
            if now < *t + self.reply_timeout {
                return false;
            }
        }
        if self.limits.len() >= MAX_RATE_LIMITS && !self.limits.contains_key(&key) {
            let oldest = self
                .limits
                .iter()
                .min_by_key(|(k, t)| (**t, **k))
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.limits.remove(&k);
            }
        }
        self.limits.insert(key, now);
        true
    }

    /// Asks for a transition (the first one asked wins).
    pub(crate) fn transition(&mut self, t: Transition) {
        if self.transition.is_none() {
            self.transition = Some(t);
        }
    }
}

/// A voluntary leave in progress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeaveRequest {
    pub(crate) since: Instant,
    pub(crate) deadline: Instant,
}

/// What every handler of a joining or joined member works with, made by
/// [`CoreSet`](super::CoreSet) for each input and handed down the call chain: the time of
/// the input, who this node is (and its timers), the outputs, and the
/// voluntary leave in progress. A handler's own arguments are then only
/// what its message or timer carries.
pub(crate) struct HandlerCtx<'a> {
    /// The time of the input being handled.
    pub(crate) now: Instant,
    /// Who this node is, and the timers.
    pub(crate) cx: &'a Ctx,
    /// Transmits, events, counters and the transition asked for.
    pub(crate) io: &'a mut Io,
    /// The voluntary leave in progress, if any.
    pub(crate) leave: Option<LeaveRequest>,
}

impl<'a> HandlerCtx<'a> {
    /// The context of one input at `now`.
    pub(crate) fn new(
        now: Instant,
        cx: &'a Ctx,
        io: &'a mut Io,
        leave: Option<LeaveRequest>,
    ) -> Self {
        HandlerCtx { now, cx, io, leave }
    }
}
