//! The member side of the mcaster (seed 003, section IV.A, restriction 3:
//! "each member of the group must register itself into mcaster's internal
//! list of groups"), with GMP's soft state (seed 000, section 4): joins are
//! refreshed every interval, so an mcaster that restarted relearns every
//! group within one interval, and a member that died stops refreshing and
//! expires at the mcaster. A first join that is not answered (the mcaster
//! is still starting) is repeated every tenth of the interval until it is,
//! so a member started together with its mcaster is relayed within about
//! 100 ms rather than a whole interval later.
//!
//! [`Registration`] is a small sans-IO component that a daemon core embeds
//! (it also implements [`Core`] on its own): call [`Registration::join`] /
//! [`Registration::leave`], feed it the packets of
//! [`ProtocolId::Mcaster`] with [`Registration::handle`], call
//! [`Registration::handle_timeout`] at [`Registration::poll_timeout`], and
//! drain its transmits and events with the embedding core's. For group
//! traffic of a unicast-only member, [`Registration::route`] sends a
//! transmit addressed to a group by unicast to the mcaster.
//!
//! An mserver also hands the mcaster its core-set's cluster key ring after
//! every committed change ([`Registration::push_key_ring`]): a
//! [`McasterMsg::KeyRing`] repeated every [`RING_RESEND`] until the mcaster
//! acknowledges it, at most [`RING_ATTEMPTS`] times, and sent again with a
//! fresh budget when the mcaster relearns us (it restarted).

use super::msg::{Answer, McasterMsg, ReceiveMode};
use crate::id::{NodeId, ProtocolId};
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::{earliest, Instant};
use crate::wire::{decode_body, encode_body, KeyRing, SharedRing};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Default interval between two `JOIN_GROUP` refreshes (GMP: one second).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// `LEAVE_GROUP` is sent at most this many times (one per interval) before
/// the member gives up waiting for an answer; the mcaster then expires it.
pub const LEAVE_ATTEMPTS: u8 = 3;
/// After this long without any answer from the mcaster while a join waits,
/// the registration reports [`RegistrationEvent::Unanswered`] (a missing
/// mcaster splits a unicast-only group silently otherwise).
pub const DEFAULT_SILENCE_WARNING: Duration = Duration::from_secs(2);
/// [`RegistrationEvent::Unanswered`] is repeated at most this often while
/// the silence lasts.
pub const DEFAULT_SILENCE_REPEAT: Duration = Duration::from_secs(30);
/// Joins in a row that must go unanswered (with the silence lasting
/// [`RegistrationConfig::silence_warning`]) before the silence is reported.
const SILENT_JOINS: u32 = 3;
/// Most groups one member registers at once (further joins are refused
/// locally with [`RegistrationEvent::Refused`] and `NEG_JOIN`).
pub const MAX_REGISTERED_GROUPS: usize = 256;

/// How often an unacknowledged key ring is sent again to the mcaster.
pub const RING_RESEND: Duration = Duration::from_millis(100);
/// Most times one key ring is sent before the registration gives up on
/// it (the mcaster then needs its key file and SIGHUP).
pub const RING_ATTEMPTS: u32 = 30;

/// Settings of a [`Registration`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationConfig {
    /// The mcaster's address.
    pub mcaster: NodeId,
    /// How this member receives group traffic.
    pub kind: ReceiveMode,
    /// Interval between refreshes (default one second).
    pub refresh_interval: Duration,
    /// Silence after which [`RegistrationEvent::Unanswered`] is reported
    /// ([`DEFAULT_SILENCE_WARNING`]).
    pub silence_warning: Duration,
    /// How often that report is repeated while the silence lasts
    /// ([`DEFAULT_SILENCE_REPEAT`]).
    pub silence_repeat: Duration,
}

impl RegistrationConfig {
    /// A member of `kind` registering with the mcaster at `mcaster`,
    /// refreshing every second.
    pub fn new(mcaster: NodeId, kind: ReceiveMode) -> Self {
        RegistrationConfig {
            mcaster,
            kind,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            silence_warning: DEFAULT_SILENCE_WARNING,
            silence_repeat: DEFAULT_SILENCE_REPEAT,
        }
    }
}

/// What the registration reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationEvent {
    /// The mcaster listed us in `group` (`JOIN_ACK` or `DUP_MEMBER` to our
    /// first join, or after a refusal).
    Registered {
        /// The group.
        group: NodeId,
    },
    /// We were listed, and a refresh was answered `JOIN_ACK`: the mcaster
    /// had forgotten us (it restarted, or expired us) and relearned us.
    Relearned {
        /// The group.
        group: NodeId,
    },
    /// The mcaster refused the join (`NEG_JOIN`, `GROUP_EXISTS`); the
    /// registration keeps retrying at every refresh.
    Refused {
        /// The group.
        group: NodeId,
        /// The answer.
        answer: Answer,
    },
    /// The leave is over (answered, or given up after
    /// [`LEAVE_ATTEMPTS`]); the group is forgotten here.
    Left {
        /// The group.
        group: NodeId,
        /// The mcaster's answer, if one came.
        answer: Option<Answer>,
    },
    /// A group the mcaster never confirmed was left: there is nothing to
    /// deregister, and no `LEAVE_GROUP` was sent (an mcaster that listed us
    /// anyway expires us on its own).
    Withdrawn {
        /// The group.
        group: NodeId,
    },
    /// A join has waited this long and the mcaster has not answered
    /// anything at all (is it running? is the address right?). Reported
    /// after [`RegistrationConfig::silence_warning`], then every
    /// [`RegistrationConfig::silence_repeat`] while it lasts.
    Unanswered {
        /// The mcaster's address.
        mcaster: NodeId,
        /// Since the first unanswered join.
        silent_for: Duration,
    },
    /// The mcaster answered after an [`RegistrationEvent::Unanswered`].
    Answering {
        /// The mcaster's address.
        mcaster: NodeId,
        /// How long it had been silent.
        silent_for: Duration,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Join sent, no positive answer yet.
    Joining,
    /// Listed at the mcaster.
    Joined,
    /// Refused; retried at every refresh.
    Refused(Answer),
    /// Leave sent this many times.
    Leaving(u8),
}

#[derive(Clone, Debug)]
struct Reg {
    name: String,
    state: State,
}

/// Counters of a [`Registration`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistrationCounters {
    /// `JOIN_GROUP`s sent (first joins and refreshes).
    pub joins_sent: u64,
    /// `LEAVE_GROUP`s sent.
    pub leaves_sent: u64,
    /// Answers received from the mcaster.
    pub answers: u64,
    /// Times the mcaster relearned us ([`RegistrationEvent::Relearned`]).
    pub relearned: u64,
    /// Mcaster packets ignored: not from our mcaster, malformed, or about a
    /// group we do not know.
    pub ignored: u64,
    /// Key rings sent to the mcaster (every repeat counts).
    pub rings_sent: u64,
    /// Key rings the mcaster acknowledged.
    pub rings_acked: u64,
    /// Key rings given up after [`RING_ATTEMPTS`] unacknowledged sends.
    pub rings_abandoned: u64,
}

/// Where the hand-over of a key ring to the mcaster stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RingState {
    /// Sent (or to send) until acknowledged.
    Pending,
    /// The mcaster acknowledged it.
    Acked,
    /// Not acknowledged after [`RING_ATTEMPTS`] sends.
    Abandoned,
}

/// The key ring being handed to the mcaster.
#[derive(Clone, Debug)]
struct RingPush {
    epoch: u64,
    ring: SharedRing,
    sent: u32,
    next_at: Instant,
    state: RingState,
}

/// The member side of the mcaster; see the module docs.
#[derive(Debug)]
pub struct Registration {
    config: RegistrationConfig,
    groups: BTreeMap<NodeId, Reg>,
    next_refresh: Option<Instant>,
    /// When every group is refreshed next (first joins are repeated
    /// sooner, see [`Registration::handle_timeout`]).
    full_refresh_at: Option<Instant>,
    out: VecDeque<Transmit>,
    events: VecDeque<RegistrationEvent>,
    counters: RegistrationCounters,
    /// A join has been waiting since then with no answer from the mcaster
    /// (cleared by any answer).
    unanswered_since: Option<Instant>,
    /// When [`RegistrationEvent::Unanswered`] is reported next.
    next_warning: Option<Instant>,
    /// It was reported (so an answer is reported too).
    warned: bool,
    /// Joins sent since the silence started.
    unanswered_joins: u32,
    /// The last key ring handed (or being handed) to the mcaster.
    ring_push: Option<RingPush>,
    /// Key rings handed over so far (the epoch of the next is one more).
    ring_epoch: u64,
}

impl Registration {
    /// A registration with no group yet.
    pub fn new(config: RegistrationConfig) -> Self {
        Registration {
            config,
            groups: BTreeMap::new(),
            next_refresh: None,
            full_refresh_at: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
            counters: RegistrationCounters::default(),
            unanswered_since: None,
            next_warning: None,
            warned: false,
            unanswered_joins: 0,
            ring_push: None,
            ring_epoch: 0,
        }
    }

    /// Hands `ring` (the cluster key ring as just committed) to the
    /// mcaster: sent at once if the mcaster lists us in some group (else
    /// as soon as it does), then every [`RING_RESEND`] until acknowledged,
    /// at most [`RING_ATTEMPTS`] times. A newer ring replaces one not yet
    /// acknowledged.
    pub fn push_key_ring(&mut self, now: Instant, ring: &KeyRing) {
        self.ring_epoch += 1;
        self.ring_push = Some(RingPush {
            epoch: self.ring_epoch,
            ring: SharedRing::of(ring),
            sent: 0,
            next_at: now,
            state: RingState::Pending,
        });
        self.send_ring(now);
    }

    /// Whether the last key ring handed over is settled: acknowledged,
    /// given up, or there is no mcaster to give it to (it lists us in no
    /// group, e.g. an mserver with IP multicast and no mcaster running).
    pub fn key_ring_settled(&self) -> bool {
        match &self.ring_push {
            None => true,
            Some(p) => p.state != RingState::Pending || !self.registered_anywhere(),
        }
    }

    fn registered_anywhere(&self) -> bool {
        self.groups.values().any(|r| r.state == State::Joined)
    }

    /// Sends the pending key ring if it is due and the mcaster lists us.
    fn send_ring(&mut self, now: Instant) {
        if !self.registered_anywhere() {
            return;
        }
        let Some(p) = self.ring_push.as_mut() else {
            return;
        };
        if p.state != RingState::Pending || p.next_at > now {
            return;
        }
        if p.sent >= RING_ATTEMPTS {
            p.state = RingState::Abandoned;
            self.counters.rings_abandoned += 1;
            tracing::warn!(mcaster = %self.config.mcaster, epoch = p.epoch,
                "the mcaster did not acknowledge the new cluster key ring; give it the ring in its key file and SIGHUP it");
            return;
        }
        p.sent += 1;
        p.next_at = now.saturating_add(RING_RESEND);
        let msg = McasterMsg::KeyRing {
            epoch: p.epoch,
            ring: p.ring.clone(),
        };
        if let Ok(body) = encode_body(&msg) {
            self.counters.rings_sent += 1;
            self.out.push_back(Transmit::new(
                self.config.mcaster,
                ProtocolId::Mcaster,
                body,
            ));
        }
    }

    /// The mcaster (re)listed us: it may not hold the ring (it restarted
    /// from an older key file), so the last ring goes again, with a fresh
    /// budget.
    fn resend_ring(&mut self, now: Instant) {
        if let Some(p) = self.ring_push.as_mut() {
            p.state = RingState::Pending;
            p.sent = 0;
            p.next_at = now;
        }
        self.send_ring(now);
    }

    /// The settings.
    pub fn config(&self) -> &RegistrationConfig {
        &self.config
    }

    /// The counters.
    pub fn counters(&self) -> &RegistrationCounters {
        &self.counters
    }

    /// Whether the mcaster has listed us in `group` (as far as we know).
    pub fn is_registered(&self, group: NodeId) -> bool {
        self.groups
            .get(&group)
            .is_some_and(|r| r.state == State::Joined)
    }

    /// The groups we are (or are becoming) a member of.
    pub fn groups(&self) -> Vec<NodeId> {
        self.groups
            .iter()
            .filter(|(_, r)| !matches!(r.state, State::Leaving(_)))
            .map(|(g, _)| *g)
            .collect()
    }

    /// Registers in `group` (named `name`) now and at every refresh until
    /// [`Registration::leave`]. Joining a group already joined changes
    /// nothing.
    pub fn join(&mut self, now: Instant, group: NodeId, name: &str) {
        if let Some(r) = self.groups.get_mut(&group) {
            if matches!(r.state, State::Leaving(_)) {
                r.state = State::Joining;
                r.name = name.to_string();
                self.send_join(group);
                self.await_answer(now);
            }
            return;
        }
        if self.groups.len() >= MAX_REGISTERED_GROUPS {
            self.events.push_back(RegistrationEvent::Refused {
                group,
                answer: Answer::NegJoin,
            });
            return;
        }
        self.groups.insert(
            group,
            Reg {
                name: name.to_string(),
                state: State::Joining,
            },
        );
        self.send_join(group);
        self.await_answer(now);
        // A first join that is not answered is repeated soon (the mcaster
        // may be starting at the same moment), not a whole refresh later.
        let soon = now.saturating_add(self.first_join_retry());
        self.next_refresh = Some(self.next_refresh.map_or(soon, |t| t.min(soon)));
        if self.full_refresh_at.is_none() {
            self.full_refresh_at = Some(now.saturating_add(self.config.refresh_interval));
        }
    }

    /// Leaves `group`: sends `LEAVE_GROUP` until it is answered, at most
    /// [`LEAVE_ATTEMPTS`] times.
    pub fn leave(&mut self, now: Instant, group: NodeId) {
        let Some(r) = self.groups.get_mut(&group) else {
            return;
        };
        if matches!(r.state, State::Leaving(_)) {
            return;
        }
        if r.state == State::Joining {
            // The mcaster never listed us: nothing to withdraw.
            self.groups.remove(&group);
            self.events
                .push_back(RegistrationEvent::Withdrawn { group });
            if !self.wants_answers() {
                self.unanswered_since = None;
                self.unanswered_joins = 0;
                self.next_warning = None;
            }
            if self.groups.is_empty() {
                self.next_refresh = None;
                self.full_refresh_at = None;
            }
            return;
        }
        r.state = State::Leaving(1);
        self.send_leave(group);
        if !self.wants_answers() {
            self.unanswered_since = None;
            self.unanswered_joins = 0;
            self.next_warning = None;
        }
        if self.next_refresh.is_none() {
            self.next_refresh = Some(now.saturating_add(self.config.refresh_interval));
        }
    }

    /// For a unicast-only member: a transmit addressed to a multicast group
    /// goes by unicast to the mcaster (its header still names the group).
    /// Other transmits, and every transmit of a multicast member, are
    /// returned unchanged.
    pub fn route(&self, t: Transmit) -> Transmit {
        let group = t.destination.addr().ip().is_multicast();
        if self.config.kind == ReceiveMode::Uc && group && !t.sealed && t.via.is_none() {
            t.with_via(self.config.mcaster)
        } else {
            t
        }
    }

    /// Handles a packet; answers `true` if it was an mcaster packet (for
    /// this component, whether or not it was useful), `false` if it belongs
    /// to the embedding core.
    pub fn handle(&mut self, now: Instant, p: &Incoming<'_>) -> bool {
        if p.protocol != ProtocolId::Mcaster {
            return false;
        }
        if p.source != self.config.mcaster {
            self.counters.ignored += 1;
            return true;
        }
        let (group, answer) = match decode_body::<McasterMsg>(p.body) {
            Ok(McasterMsg::Reply { group, answer }) => (group, answer),
            Ok(McasterMsg::KeyRingAck { epoch }) => {
                self.heard_from_mcaster(now);
                match self.ring_push.as_mut() {
                    Some(r) if r.epoch == epoch && r.state == RingState::Pending => {
                        r.state = RingState::Acked;
                        self.counters.rings_acked += 1;
                    }
                    _ => self.counters.ignored += 1,
                }
                return true;
            }
            _ => {
                self.counters.ignored += 1;
                return true;
            }
        };
        self.heard_from_mcaster(now);
        let Some(r) = self.groups.get_mut(&group) else {
            self.counters.ignored += 1;
            return true;
        };
        self.counters.answers += 1;
        match (r.state, answer) {
            (State::Leaving(_), Answer::LeaveAck | Answer::NoMember | Answer::NoGroup) => {
                self.groups.remove(&group);
                self.events.push_back(RegistrationEvent::Left {
                    group,
                    answer: Some(answer),
                });
            }
            (State::Leaving(_), _) => {}
            (State::Joined, Answer::JoinAck) => {
                self.counters.relearned += 1;
                self.events
                    .push_back(RegistrationEvent::Relearned { group });
                self.resend_ring(now);
            }
            (State::Joined, Answer::DupMember) => {}
            (State::Joining | State::Refused(_), a) if a.is_registered() => {
                r.state = State::Joined;
                self.events
                    .push_back(RegistrationEvent::Registered { group });
                self.resend_ring(now);
            }
            (_, Answer::NegJoin | Answer::GroupExists) if r.state != State::Refused(answer) => {
                r.state = State::Refused(answer);
                self.events
                    .push_back(RegistrationEvent::Refused { group, answer });
            }
            // Leave answers while not leaving: stale, ignore.
            _ => {}
        }
        true
    }

    /// Joins went out (each is answered, a refresh with `DUP_MEMBER`):
    /// unless the silence already started, it starts now.
    fn await_answer(&mut self, now: Instant) {
        self.unanswered_joins = self.unanswered_joins.saturating_add(1);
        if self.unanswered_since.is_none() {
            self.unanswered_since = Some(now);
            self.next_warning = Some(now.saturating_add(self.config.silence_warning));
        }
    }

    /// The mcaster answered: the silence (if any) is over.
    fn heard_from_mcaster(&mut self, now: Instant) {
        self.unanswered_joins = 0;
        if let Some(since) = self.unanswered_since.take() {
            if std::mem::take(&mut self.warned) {
                self.events.push_back(RegistrationEvent::Answering {
                    mcaster: self.config.mcaster,
                    silent_for: now.saturating_duration_since(since),
                });
            }
        }
        self.next_warning = None;
    }

    /// Some group is joining or joined (not leaving).
    fn wants_answers(&self) -> bool {
        self.groups
            .values()
            .any(|r| !matches!(r.state, State::Leaving(_)))
    }

    /// Reports the silence if it has lasted long enough.
    fn check_silence(&mut self, now: Instant) {
        if !self.wants_answers() {
            // Only leaves are left: their answers are not awaited here.
            self.unanswered_since = None;
            self.unanswered_joins = 0;
            self.next_warning = None;
            return;
        }
        let (Some(since), Some(at)) = (self.unanswered_since, self.next_warning) else {
            return;
        };
        if now < at {
            return;
        }
        // Time alone is not enough: a pause of this process (SIGSTOP)
        // looks like a long silence when it wakes, though the refresh it
        // sends then is answered at once. Some joins in a row must have
        // gone unanswered too.
        if self.unanswered_joins < SILENT_JOINS {
            self.next_warning = Some(now.saturating_add(self.first_join_retry()));
            return;
        }
        self.warned = true;
        self.events.push_back(RegistrationEvent::Unanswered {
            mcaster: self.config.mcaster,
            silent_for: now.saturating_duration_since(since),
        });
        self.next_warning = Some(now.saturating_add(self.config.silence_repeat));
    }

    /// How soon an unanswered first join is repeated: a tenth of the
    /// refresh interval (at least 1 ms).
    fn first_join_retry(&self) -> Duration {
        (self.config.refresh_interval / 10).max(Duration::from_millis(1))
    }

    /// The refresh timer: every group is refreshed (or its leave repeated).
    /// While a first join is unanswered it is repeated every tenth of the
    /// interval (only the joining groups are sent again then).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.refresh(now);
        self.check_silence(now);
        self.send_ring(now);
    }

    /// Sends the refreshes (and repeated leaves) that are due.
    fn refresh(&mut self, now: Instant) {
        let Some(at) = self.next_refresh else {
            return;
        };
        if at > now {
            return;
        }
        let full = self.full_refresh_at.map_or(true, |t| t <= now);
        if full {
            self.full_refresh_at = Some(now.saturating_add(self.config.refresh_interval));
        }
        let groups: Vec<NodeId> = self.groups.keys().copied().collect();
        for g in groups {
            let Some(r) = self.groups.get_mut(&g) else {
                continue;
            };
            if !full && r.state != State::Joining {
                continue;
            }
            match r.state {
                State::Leaving(n) if n >= LEAVE_ATTEMPTS => {
                    self.groups.remove(&g);
                    self.events.push_back(RegistrationEvent::Left {
                        group: g,
                        answer: None,
                    });
                }
                State::Leaving(n) => {
                    r.state = State::Leaving(n + 1);
                    self.send_leave(g);
                }
                _ => self.send_join(g),
            }
        }
        if self.wants_answers() {
            self.await_answer(now);
        }
        let joining = self.groups.values().any(|r| r.state == State::Joining);
        self.next_refresh = if self.groups.is_empty() {
            None
        } else if joining {
            Some(now.saturating_add(self.first_join_retry()))
        } else {
            // From `now`, so a late timer does not cause a burst.
            self.full_refresh_at
                .or(Some(now.saturating_add(self.config.refresh_interval)))
        };
    }

    /// The next refresh (or silence report).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ring = self
            .ring_push
            .as_ref()
            .filter(|p| p.state == RingState::Pending && self.registered_anywhere())
            .map(|p| p.next_at);
        earliest(earliest(self.next_refresh, self.next_warning), ring)
    }

    /// The next transmit (to the mcaster).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<RegistrationEvent> {
        self.events.pop_front()
    }

    fn send_join(&mut self, group: NodeId) {
        let Some(r) = self.groups.get(&group) else {
            return;
        };
        let msg = McasterMsg::JoinGroup {
            group,
            name: r.name.clone(),
            kind: self.config.kind,
        };
        if let Ok(body) = encode_body(&msg) {
            self.counters.joins_sent += 1;
            self.out.push_back(Transmit::new(
                self.config.mcaster,
                ProtocolId::Mcaster,
                body,
            ));
        }
    }

    fn send_leave(&mut self, group: NodeId) {
        if let Ok(body) = encode_body(&McasterMsg::LeaveGroup { group }) {
            self.counters.leaves_sent += 1;
            self.out.push_back(Transmit::new(
                self.config.mcaster,
                ProtocolId::Mcaster,
                body,
            ));
        }
    }
}

impl Core for Registration {
    type Event = RegistrationEvent;

    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        self.handle(now, &packet);
    }

    fn handle_timeout(&mut self, now: Instant) {
        Registration::handle_timeout(self, now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        Registration::poll_transmit(self)
    }

    fn poll_event(&mut self) -> Option<RegistrationEvent> {
        Registration::poll_event(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        earliest(Registration::poll_timeout(self), None)
    }
}
