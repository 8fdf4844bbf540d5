//! The member interface's link to its mserver: a sans-IO [`Core`] that
//! attaches the MI to an mserver of its core-set, submits the local
//! processes' requests, answers the mserver's `QUERY` polls and hands the
//! views they carry to the MI daemon, in order (seed 003, section II.B.4
//! "Member Interfaces"; DESIGN.md section 6; `docs/appgroups-design.md`).
//!
//! - **Attachment.** The agent attaches to the first mserver of its list
//!   that accepts ([`PROC_MI_ATTACH`]); the list is the configured one plus
//!   the members of the core-set's latest view, learnt from every reply and
//!   query. When its mserver has not polled it for the silence timeout
//!   derived from the poll timing its attach answer gave
//!   ([`PollTiming::silence_timeout`](super::link::PollTiming::silence_timeout)),
//!   it attaches to another one, giving the last view number it delivered
//!   for each group, and gets the views it missed (or learns which members
//!   could not be caught up: they are reported lost, and left). A join
//!   answered through a later attachment than the one it was sent on
//!   attaches again to the same mserver, to catch up the views after it.
//! - **Requests.** Every request gets a caller-chosen handle and exactly
//!   one [`MiEvent::Answered`]: the committed outcome, or
//!   [`AppError::Timeout`] after `op_timeout` (the MI's one request
//!   timeout: the local sessions above have none of their own). Ops carry
//!   the MI's request id, so sending one again after a failover applies it
//!   once. A join answered `Timeout` after it was sent is still watched
//!   for [`LATE_JOIN_TIMEOUTS`] more timeouts: if it commits after all, the
//!   member is left at once, so no member lingers that nobody knows of.
//! - **Views.** A query's views are numbered per attachment; each is
//!   delivered once ([`MiEvent::View`], view numbers increasing per group).
//!   A local member missing from a view of its group, without having asked
//!   to leave, is reported [`MiEvent::Lost`].
//! - **Key ring.** The mserver the MI is attached to hands it the cluster
//!   key ring after every committed key change ([`PROC_MI_KEYRING`]); the
//!   agent takes it only from that mserver and attachment, and only if it
//!   is newer than the last one taken there, reports it
//!   ([`MiEvent::KeyRing`]: the daemon applies it to its socket and
//!   persists it) and acknowledges it in its reply.

use super::link::{
    AttachReply, AttachRequest, KeyRingPush, KeyRingTaken, QueryReply, QueryRequest, ReadReply,
    ReadRequest, SubmitReply, SubmitRequest, PROC_MI_ATTACH, PROC_MI_KEYRING, PROC_MI_QUERY,
    PROC_MI_READ, PROC_MI_SUBMIT,
};
use super::{
    AppError, AppMember, AppOp, AppReply, AppView, GroupName, GroupOptions, MemberName, RequestId,
};
use crate::id::{Incarnation, NodeId};
use crate::rpc::{CallError, CallId, CallOptions, HandlerResult, Rpc, RpcConfig, RpcEvent};
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::{earliest, Instant};
use crate::wire::{decode_message, encode_body, KeyRing};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;
use uuid::Uuid;

/// Most requests in progress at once (more are answered
/// [`AppError::Busy`] at once).
pub const MAX_REQUESTS: usize = 8192;
/// Most mservers remembered as places to attach.
pub const MAX_CANDIDATES: usize = 64;
/// How many request timeouts a join that timed out is still watched for a
/// late commit (which is then left at once).
pub const LATE_JOIN_TIMEOUTS: u32 = 6;

/// The agent's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MiAgentConfig {
    /// The MI's own UDP address (where mservers query it).
    pub addr: NodeId,
    /// The MI's incarnation (RPC at-most-once across restarts).
    pub incarnation: Incarnation,
    /// The MI's id.
    pub mi: Uuid,
    /// Its host name (its members' `host`).
    pub host: String,
    /// The mservers to attach to, in order of preference.
    pub mservers: Vec<NodeId>,
    /// Time limit of one call to an mserver.
    pub call_timeout: Duration,
    /// A request unanswered this long is answered [`AppError::Timeout`].
    pub op_timeout: Duration,
    /// Pause before trying the next mserver after a refusal.
    pub retry_interval: Duration,
}

impl MiAgentConfig {
    /// The defaults: calls of 1 s, requests of 10 s, retries every
    /// 100 ms. (How long the MI waits for a poll is not a setting: each
    /// mserver says how it polls when the MI attaches.)
    pub fn new(addr: NodeId, incarnation: Incarnation, mi: Uuid, host: String) -> Self {
        MiAgentConfig {
            addr,
            incarnation,
            mi,
            host,
            mservers: Vec::new(),
            call_timeout: Duration::from_secs(1),
            op_timeout: Duration::from_secs(10),
            retry_interval: Duration::from_millis(100),
        }
    }
}

/// What a local process asks of its MI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MiRequest {
    /// Create a group.
    Create {
        /// Its name.
        group: GroupName,
        /// Its options.
        options: GroupOptions,
    },
    /// A local process joins a group (the daemon drew the member's id).
    Join {
        /// The group.
        group: GroupName,
        /// The new member.
        member: AppMember,
    },
    /// A local member leaves (or its process died).
    Leave {
        /// The group.
        group: GroupName,
        /// The member.
        member: Uuid,
    },
    /// A group's current view.
    View {
        /// The group.
        group: GroupName,
    },
    /// A member of a group, by name.
    Lookup {
        /// The group.
        group: GroupName,
        /// Its name.
        name: MemberName,
    },
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MiAnswer {
    /// The group was created.
    Created,
    /// The member joined: its first view.
    Joined(AppView),
    /// The member left.
    Left,
    /// A group's current view.
    View(AppView),
    /// A member.
    Member(AppMember),
}

/// What the agent reports to the MI daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MiEvent {
    /// The answer to the request with this handle.
    Answered {
        /// The handle given to [`MiAgent::request`].
        handle: u64,
        /// The outcome.
        result: Result<MiAnswer, AppError>,
    },
    /// A new view of a group (each once, in order per group).
    View(AppView),
    /// A local member was removed without asking, or its views could not
    /// be caught up after a failover (it is left): end its membership.
    Lost {
        /// The group.
        group: GroupName,
        /// The member.
        member: Uuid,
    },
    /// The MI is attached to `mserver`.
    Attached {
        /// The mserver.
        mserver: NodeId,
    },
    /// The MI lost its mserver and looks for another.
    Detached {
        /// The mserver it had.
        mserver: NodeId,
    },
    /// Its mserver handed over the cluster key ring its core-set
    /// committed: apply it to the socket (and persist it). Already
    /// acknowledged.
    KeyRing {
        /// The mserver it came from.
        mserver: NodeId,
        /// The ring.
        ring: KeyRing,
    },
}

struct Op {
    /// `None` for requests of the agent itself (leaving lost members).
    handle: Option<u64>,
    request: MiRequest,
    /// The op as submitted (with its request id), for Create/Join/Leave.
    op: Option<AppOp>,
    deadline: Instant,
    call: Option<CallId>,
    /// Do not send before this (after a refusal).
    not_before: Instant,
    /// It was sent at least once (it may commit).
    sent: bool,
    /// The attachment (its seq) it was first sent on.
    sent_on: Option<u64>,
    /// A join whose caller was answered `Timeout`: if it commits, leave.
    late: bool,
}

enum Link {
    /// Not attached; the next attempt at `retry_at`.
    Idle { retry_at: Instant },
    /// An attach call is in flight.
    Attaching { to: NodeId, seq: u64 },
    /// Attached.
    Attached {
        to: NodeId,
        seq: u64,
        last_query: Instant,
        acked_seq: u64,
        /// No poll this long: the mserver is silent (from its poll
        /// timing, [`PollTiming::silence_timeout`](super::link::PollTiming::silence_timeout)).
        silence: Duration,
    },
}

/// Where the MI's link to its mserver stands (for status pages and
/// readiness; [`MiAgent::link_status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkStatus {
    /// Not attached and no attach call in flight: the next attempt is
    /// due at `retry_at`.
    Idle {
        /// When the next attach attempt goes out.
        retry_at: Instant,
    },
    /// An attach call to `to` is in flight.
    Attaching {
        /// The mserver asked.
        to: NodeId,
    },
    /// Attached to `to`.
    Attached {
        /// The mserver.
        to: NodeId,
    },
}

enum CallKind {
    Op(u64),
    Attach,
}

/// The MI's link to its mserver. See the [module docs](self).
pub struct MiAgent {
    config: MiAgentConfig,
    rpc: Rpc,
    link: Link,
    next_seq: u64,
    next_internal: u64,
    candidates: Vec<NodeId>,
    next_candidate: usize,
    ops: BTreeMap<u64, Op>,
    calls: BTreeMap<CallId, CallKind>,
    /// Local members: their groups and the views that added them.
    members: BTreeMap<Uuid, (GroupName, u64)>,
    /// The same, as the daemon sees it.
    member_groups: BTreeMap<Uuid, GroupName>,
    leaving: BTreeSet<Uuid>,
    /// A join answer asks for a catch-up (attach again).
    resync: bool,
    /// The last view number delivered, per group.
    delivered: BTreeMap<GroupName, u64>,
    /// The attachment (its seq) and epoch of the last key ring taken.
    ring_taken: Option<(u64, u64)>,
    events: VecDeque<MiEvent>,
    transmits: VecDeque<Transmit>,
}

/// Handles of the agent's own requests start here (callers use smaller
/// ones).
const INTERNAL_HANDLES: u64 = 1 << 63;

impl MiAgent {
    /// An agent that starts attaching at once.
    pub fn new(now: Instant, config: MiAgentConfig, rpc_config: RpcConfig, seed: u64) -> Self {
        let mut rpc = Rpc::new(config.addr, config.incarnation, rpc_config, seed);
        rpc.register(PROC_MI_QUERY, |_, _| HandlerResult::Deferred);
        rpc.register(PROC_MI_KEYRING, |_, _| HandlerResult::Deferred);
        let mut candidates = config.mservers.clone();
        candidates.truncate(MAX_CANDIDATES);
        let mut agent = MiAgent {
            config,
            rpc,
            link: Link::Idle { retry_at: now },
            next_seq: 1,
            next_internal: INTERNAL_HANDLES,
            candidates,
            next_candidate: 0,
            ops: BTreeMap::new(),
            calls: BTreeMap::new(),
            members: BTreeMap::new(),
            member_groups: BTreeMap::new(),
            leaving: BTreeSet::new(),
            resync: false,
            delivered: BTreeMap::new(),
            ring_taken: None,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
        };
        agent.tick(now);
        agent
    }

    /// The MI's id.
    pub fn mi(&self) -> Uuid {
        self.config.mi
    }

    /// The mserver the MI is attached to.
    pub fn attached_to(&self) -> Option<NodeId> {
        match self.link {
            Link::Attached { to, .. } => Some(to),
            _ => None,
        }
    }

    /// Where the link to the mserver stands.
    pub fn link_status(&self) -> LinkStatus {
        match self.link {
            Link::Idle { retry_at } => LinkStatus::Idle { retry_at },
            Link::Attaching { to, .. } => LinkStatus::Attaching { to },
            Link::Attached { to, .. } => LinkStatus::Attached { to },
        }
    }

    /// The mservers it attaches to, in the order it tries them: the
    /// configured ones, then the members of its core-set's views.
    pub fn candidates(&self) -> &[NodeId] {
        &self.candidates
    }

    /// The local members and their groups.
    pub fn members(&self) -> &BTreeMap<Uuid, GroupName> {
        &self.member_groups
    }

    /// The last view number delivered, per group with local members.
    pub fn delivered(&self) -> &BTreeMap<GroupName, u64> {
        &self.delivered
    }

    /// The number of the last view sequence acknowledged to the mserver
    /// (per attachment).
    pub fn acked_seq(&self) -> Option<u64> {
        match self.link {
            Link::Attached { acked_seq, .. } => Some(acked_seq),
            _ => None,
        }
    }

    /// Requests in progress.
    pub fn in_progress(&self) -> usize {
        self.ops.len()
    }

    /// The RPC endpoint.
    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// Starts a request; exactly one [`MiEvent::Answered`] with `handle`
    /// follows. Handles from `1 << 63` up are the agent's own.
    pub fn request(&mut self, now: Instant, handle: u64, request: MiRequest) {
        if handle >= INTERNAL_HANDLES || self.ops.contains_key(&handle) {
            self.events.push_back(MiEvent::Answered {
                handle,
                result: Err(AppError::Internal("request handle in use".into())),
            });
            return;
        }
        if self.ops.len() >= MAX_REQUESTS {
            self.events.push_back(MiEvent::Answered {
                handle,
                result: Err(AppError::Busy),
            });
            return;
        }
        self.start(now, Some(handle), request);
        self.tick(now);
    }

    fn start(&mut self, now: Instant, handle: Option<u64>, request: MiRequest) {
        let req = RequestId {
            mi: self.config.mi,
            seq: self.next_seq,
        };
        let op = match &request {
            MiRequest::Create { group, options } => Some(AppOp::Create {
                req,
                group: group.clone(),
                options: options.clone(),
            }),
            MiRequest::Join { group, member } => Some(AppOp::Join {
                req,
                group: group.clone(),
                member: member.clone(),
            }),
            MiRequest::Leave { group, member } => {
                self.leaving.insert(*member);
                Some(AppOp::Leave {
                    req,
                    group: group.clone(),
                    member: *member,
                })
            }
            MiRequest::View { .. } | MiRequest::Lookup { .. } => None,
        };
        if op.is_some() {
            self.next_seq += 1;
        }
        let key = match handle {
            Some(h) => h,
            None => {
                self.next_internal += 1;
                self.next_internal
            }
        };
        self.ops.insert(
            key,
            Op {
                handle,
                request,
                op,
                deadline: now + self.config.op_timeout,
                call: None,
                not_before: now,
                sent: false,
                sent_on: None,
                late: false,
            },
        );
    }

    fn answer(&mut self, now: Instant, key: u64, result: Result<MiAnswer, AppError>) {
        let Some(op) = self.ops.remove(&key) else {
            return;
        };
        if let Some(c) = op.call {
            self.calls.remove(&c);
        }
        match (&op.request, &result) {
            (MiRequest::Join { group, member }, Ok(MiAnswer::Joined(_))) if op.late => {
                tracing::debug!(member = %member.id, "a timed-out join committed late: leaving");
                self.start(
                    now,
                    None,
                    MiRequest::Leave {
                        group: group.clone(),
                        member: member.id,
                    },
                );
            }
            (MiRequest::Join { group, member }, Ok(MiAnswer::Joined(view))) => {
                // Committed through an earlier attachment: the views after
                // the join's that were pushed there may never have come, and
                // the attachment since did not ask for them (the group had
                // no member here then). Attach again to catch up.
                let now_on = match self.link {
                    Link::Attached { seq, .. } => Some(seq),
                    _ => None,
                };
                if op.sent_on.is_some_and(|s| Some(s) != now_on)
                    && self.delivered.get(group).map_or(true, |d| *d < view.number)
                {
                    self.resync = true;
                }
                self.members.insert(member.id, (group.clone(), view.number));
                self.member_groups.insert(member.id, group.clone());
                // The join view itself is still to come in a query (for the
                // other local members of the group); the joiner got it in
                // the answer.
                self.delivered
                    .entry(group.clone())
                    .or_insert(view.number.saturating_sub(1));
            }
            (MiRequest::Leave { member, .. }, _) => {
                self.leaving.remove(member);
                if matches!(result, Ok(_) | Err(AppError::NotMember)) {
                    self.forget_member(*member);
                }
            }
            _ => {}
        }
        if let Some(handle) = op.handle {
            self.events.push_back(MiEvent::Answered { handle, result });
        }
    }

    /// Request `key` is out of time: its caller is answered `Timeout`. A
    /// join that was sent is watched a while longer under an internal
    /// handle (it may still commit, and is then left).
    fn time_out(&mut self, now: Instant, key: u64) {
        let watch = self
            .ops
            .get(&key)
            .is_some_and(|o| o.sent && !o.late && matches!(o.request, MiRequest::Join { .. }));
        if !watch {
            self.answer(now, key, Err(AppError::Timeout));
            return;
        }
        let Some(mut op) = self.ops.remove(&key) else {
            return;
        };
        if let Some(handle) = op.handle.take() {
            self.events.push_back(MiEvent::Answered {
                handle,
                result: Err(AppError::Timeout),
            });
        }
        op.late = true;
        op.deadline = now + self.config.op_timeout.saturating_mul(LATE_JOIN_TIMEOUTS);
        self.next_internal += 1;
        let internal = self.next_internal;
        if let Some(c) = op.call {
            self.calls.insert(c, CallKind::Op(internal));
        }
        self.ops.insert(internal, op);
    }

    /// Attaches again to the mserver it is attached to, to get the views
    /// it may have missed (a join committed through an earlier attachment).
    fn reattach(&mut self, now: Instant) {
        let Link::Attached { to, .. } = self.link else {
            return;
        };
        tracing::debug!(mserver = %to, "a join committed through an earlier attachment: attaching again to catch up");
        if let Some(i) = self.candidates.iter().position(|c| *c == to) {
            self.next_candidate = i;
        }
        self.attach(now);
    }

    fn forget_member(&mut self, member: Uuid) {
        self.member_groups.remove(&member);
        if let Some((group, _)) = self.members.remove(&member) {
            if !self.members.values().any(|(g, _)| *g == group) {
                self.delivered.remove(&group);
            }
        }
    }

    fn learn(&mut self, mservers: &[NodeId]) {
        for m in mservers {
            if self.candidates.len() >= MAX_CANDIDATES {
                break;
            }
            if !self.candidates.contains(m) {
                self.candidates.push(*m);
            }
        }
    }

    /// Hands views over, in order, skipping those delivered already, and
    /// reports local members missing from a view of their group.
    fn deliver(&mut self, view: AppView) {
        let last = self.delivered.get(&view.group).copied();
        if last.is_some_and(|n| view.number <= n) {
            return;
        }
        let gone: Vec<Uuid> = self
            .members
            .iter()
            .filter(|(id, (g, since))| {
                *g == view.group
                    && view.number > *since
                    && !view.contains(**id)
                    && !self.leaving.contains(id)
            })
            .map(|(id, _)| *id)
            .collect();
        self.delivered.insert(view.group.clone(), view.number);
        let group = view.group.clone();
        self.events.push_back(MiEvent::View(view));
        for member in gone {
            self.forget_member(member);
            self.events.push_back(MiEvent::Lost {
                group: group.clone(),
                member,
            });
        }
    }

    fn lose(&mut self, now: Instant, group: GroupName, member: Uuid) {
        if self.members.get(&member).map(|(g, _)| g) != Some(&group) {
            return;
        }
        self.forget_member(member);
        self.events.push_back(MiEvent::Lost {
            group: group.clone(),
            member,
        });
        // Still in the group: take it out.
        self.start(now, None, MiRequest::Leave { group, member });
    }

    fn attach(&mut self, now: Instant) {
        if self.candidates.is_empty() {
            self.link = Link::Idle {
                retry_at: now + self.config.retry_interval,
            };
            return;
        }
        let to = self.candidates[self.next_candidate % self.candidates.len()];
        self.next_candidate = (self.next_candidate + 1) % self.candidates.len();
        let seq = self.next_seq;
        self.next_seq += 1;
        // This attach asks for every group with local members as of now.
        self.resync = false;
        let request = AttachRequest {
            mi: self.config.mi,
            host: self.config.host.clone(),
            seq,
            have: self
                .delivered
                .iter()
                .map(|(g, n)| (g.clone(), *n))
                .collect(),
        };
        let Ok(body) = encode_body(&request) else {
            return;
        };
        let call = self.rpc.call(
            now,
            to,
            PROC_MI_ATTACH,
            body,
            CallOptions::default().with_timeout(self.config.call_timeout),
        );
        self.calls.insert(call, CallKind::Attach);
        self.link = Link::Attaching { to, seq };
    }

    fn on_attach_done(&mut self, now: Instant, result: Result<Vec<u8>, CallError>) {
        let Link::Attaching { to, seq, .. } = self.link else {
            return;
        };
        let reply = result
            .map_err(|e| AppError::Internal(e.to_string()))
            .and_then(|b| {
                decode_message::<AttachReply>(&b).map_err(|e| AppError::Internal(e.to_string()))
            })
            .and_then(|r| r.result);
        match reply {
            Ok(attached) => {
                tracing::info!(mserver = %to, "attached");
                self.link = Link::Attached {
                    to,
                    seq,
                    last_query: now,
                    acked_seq: 0,
                    silence: attached.poll.silence_timeout(),
                };
                // Prefer the current view's members from now on.
                self.learn(&attached.mservers);
                self.events.push_back(MiEvent::Attached { mserver: to });
                for view in attached.views {
                    self.deliver(view);
                }
                for (group, member) in attached.lost {
                    self.lose(now, group, member);
                }
                // Send again what was in flight elsewhere.
                for op in self.ops.values_mut() {
                    if let Some(c) = op.call.take() {
                        self.calls.remove(&c);
                    }
                }
                // A join answered while this attach was in flight (through
                // the earlier attachment) is in no group of its `have`:
                // the views committed between the join and this attach
                // would never come. Attach again to catch up.
                if std::mem::take(&mut self.resync) {
                    self.reattach(now);
                }
            }
            Err(e) => {
                tracing::debug!(mserver = %to, error = %e, "attach refused or failed");
                self.link = Link::Idle {
                    retry_at: now + self.config.retry_interval,
                };
            }
        }
    }

    fn on_query(&mut self, now: Instant, from: NodeId, body: &[u8]) -> QueryReply {
        let Ok(query) = decode_message::<QueryRequest>(body) else {
            return QueryReply {
                attached: false,
                acked_seq: 0,
            };
        };
        match &mut self.link {
            Link::Attached {
                to,
                seq,
                last_query,
                acked_seq,
                ..
            } if *to == from && *seq == query.attach_seq && query.mi == self.config.mi => {
                *last_query = now;
                let mut acked = *acked_seq;
                let mut fresh = Vec::new();
                for (i, view) in query.views.into_iter().enumerate() {
                    let s = query.first_seq + i as u64;
                    if s == acked + 1 {
                        fresh.push(view);
                        acked = s;
                    }
                }
                *acked_seq = acked;
                self.learn(&query.mservers);
                for view in fresh {
                    self.deliver(view);
                }
                for (group, member) in query.lost {
                    self.lose(now, group, member);
                }
                QueryReply {
                    attached: true,
                    acked_seq: acked,
                }
            }
            // The attach reply is still on its way: nothing delivered yet.
            Link::Attaching { to, seq, .. }
                if *to == from && *seq == query.attach_seq && query.mi == self.config.mi =>
            {
                QueryReply {
                    attached: true,
                    acked_seq: 0,
                }
            }
            _ => QueryReply {
                attached: false,
                acked_seq: 0,
            },
        }
    }

    /// A key ring from an mserver: taken only from the mserver (and
    /// attachment) the MI is attached or attaching to, and only if newer
    /// than the last one taken there.
    fn on_key_ring(&mut self, from: NodeId, body: &[u8]) -> KeyRingTaken {
        let Ok(push) = decode_message::<KeyRingPush>(body) else {
            return KeyRingTaken { taken: false };
        };
        let ours = match self.link {
            Link::Attached { to, seq, .. } | Link::Attaching { to, seq } => {
                to == from && seq == push.attach_seq && push.mi == self.config.mi
            }
            Link::Idle { .. } => false,
        };
        if !ours {
            return KeyRingTaken { taken: false };
        }
        if self
            .ring_taken
            .is_some_and(|(seq, epoch)| seq == push.attach_seq && push.epoch <= epoch)
        {
            // A repeat, or older than the one taken.
            return KeyRingTaken { taken: true };
        }
        match push.ring.ring() {
            Ok(ring) => {
                self.ring_taken = Some((push.attach_seq, push.epoch));
                tracing::info!(mserver = %from, keys = ?ring.ids(), "cluster key ring handed over by the mserver");
                self.events.push_back(MiEvent::KeyRing {
                    mserver: from,
                    ring,
                });
                KeyRingTaken { taken: true }
            }
            Err(e) => {
                tracing::warn!(mserver = %from, error = %e, "the mserver handed over a key ring that is not valid; ignored");
                KeyRingTaken { taken: false }
            }
        }
    }

    fn send_ops(&mut self, now: Instant) {
        let Link::Attached { to, .. } = self.link else {
            return;
        };
        let due: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, o)| o.call.is_none() && o.not_before <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            let Some(op) = self.ops.get(&key) else {
                continue;
            };
            let (procedure, body) = match (&op.op, &op.request) {
                (Some(o), _) => (
                    PROC_MI_SUBMIT,
                    encode_body(&SubmitRequest { op: o.clone() }),
                ),
                (None, MiRequest::View { group }) => (
                    PROC_MI_READ,
                    encode_body(&ReadRequest::View {
                        group: group.clone(),
                    }),
                ),
                (None, MiRequest::Lookup { group, name }) => (
                    PROC_MI_READ,
                    encode_body(&ReadRequest::Lookup {
                        group: group.clone(),
                        name: name.clone(),
                    }),
                ),
                (None, _) => continue,
            };
            let Ok(body) = body else {
                self.answer(
                    now,
                    key,
                    Err(AppError::Internal("cannot encode a request".into())),
                );
                continue;
            };
            let timeout = self
                .config
                .call_timeout
                .min(op.deadline.saturating_duration_since(now));
            let call = self.rpc.call(
                now,
                to,
                procedure,
                body,
                CallOptions::default().with_timeout(timeout.max(Duration::from_millis(1))),
            );
            self.calls.insert(call, CallKind::Op(key));
            let attachment = match self.link {
                Link::Attached { seq, .. } => Some(seq),
                _ => None,
            };
            if let Some(op) = self.ops.get_mut(&key) {
                op.call = Some(call);
                op.sent = true;
                op.sent_on = op.sent_on.or(attachment);
            }
        }
    }

    fn on_op_done(&mut self, now: Instant, key: u64, result: Result<Vec<u8>, CallError>) {
        let Some(op) = self.ops.get_mut(&key) else {
            return;
        };
        op.call = None;
        let is_submit = op.op.is_some();
        let request = op.request.clone();
        let outcome: Result<Result<MiAnswer, AppError>, String> =
            result.map_err(|e| e.to_string()).and_then(|body| {
                if is_submit {
                    decode_message::<SubmitReply>(&body)
                        .map(|r| {
                            r.result.and_then(|reply| match reply {
                                AppReply::Created => Ok(MiAnswer::Created),
                                AppReply::Joined(v) => Ok(MiAnswer::Joined(v)),
                                AppReply::Left => Ok(MiAnswer::Left),
                                other => {
                                    Err(AppError::Internal(format!("unexpected reply {other:?}")))
                                }
                            })
                        })
                        .map_err(|e| e.to_string())
                } else {
                    decode_message::<ReadReply>(&body)
                        .map(|r| match (r, &request) {
                            (ReadReply::View(v), MiRequest::View { .. }) => v.map(MiAnswer::View),
                            (ReadReply::Member(m), MiRequest::Lookup { .. }) => {
                                m.map(MiAnswer::Member)
                            }
                            (ReadReply::Groups(Err(e)), _) => Err(e),
                            _ => Err(AppError::Internal("mismatched read reply".into())),
                        })
                        .map_err(|e| e.to_string())
                }
            });
        match outcome {
            // Busy: the mserver is not ready (joining, fetching its copy,
            // queue full): ask again shortly.
            Ok(Err(AppError::Busy)) | Err(_) => {
                if let Some(op) = self.ops.get_mut(&key) {
                    op.not_before = now + self.config.retry_interval;
                }
            }
            Ok(result) => {
                self.answer(now, key, result);
                // Only an attachment can be caught up; while an attach is
                // in flight (its `have` was made before this answer) the
                // flag waits for it to commit, and a new attach made from
                // idle asks with the join's group anyway.
                if self.resync && matches!(self.link, Link::Attached { .. }) {
                    self.resync = false;
                    self.reattach(now);
                }
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        // Requests out of time.
        let late: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            self.time_out(now, key);
        }
        match self.link {
            Link::Idle { retry_at } if retry_at <= now => self.attach(now),
            Link::Attached {
                to,
                last_query,
                silence,
                ..
            } if last_query + silence <= now => {
                tracing::warn!(mserver = %to, "mserver silent: attaching elsewhere");
                self.events.push_back(MiEvent::Detached { mserver: to });
                // Start with the next one after it.
                if let Some(i) = self.candidates.iter().position(|c| *c == to) {
                    self.next_candidate = (i + 1) % self.candidates.len().max(1);
                }
                self.attach(now);
            }
            _ => {}
        }
        self.send_ops(now);
        self.drain(now);
    }

    fn drain(&mut self, now: Instant) {
        for _ in 0..64 {
            let mut progressed = false;
            while let Some(e) = self.rpc.poll_event() {
                progressed = true;
                match e {
                    RpcEvent::Request {
                        token,
                        from,
                        procedure,
                        body,
                        ..
                    } if procedure.0 == PROC_MI_QUERY => {
                        let reply = self.on_query(now, from, &body);
                        if let Ok(b) = encode_body(&reply) {
                            self.rpc.respond(now, token, b);
                        }
                    }
                    RpcEvent::Request {
                        token,
                        from,
                        procedure,
                        body,
                        ..
                    } if procedure.0 == PROC_MI_KEYRING => {
                        let reply = self.on_key_ring(from, &body);
                        if let Ok(b) = encode_body(&reply) {
                            self.rpc.respond(now, token, b);
                        }
                    }
                    RpcEvent::CallCompleted { id, result, .. } => match self.calls.remove(&id) {
                        Some(CallKind::Attach) => self.on_attach_done(now, result),
                        Some(CallKind::Op(key)) => self.on_op_done(now, key, result),
                        None => {}
                    },
                    _ => {}
                }
            }
            if !self.calls.is_empty() || !self.ops.is_empty() {
                // Answers may have freed requests to send.
                self.send_ops(now);
            }
            while let Some(t) = self.rpc.poll_transmit() {
                self.transmits.push_back(t);
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
    }
}

impl Core for MiAgent {
    type Event = MiEvent;

    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        self.rpc.handle_packet(now, packet);
        self.drain(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.rpc.handle_timeout(now);
        self.tick(now);
    }

    fn handle_unreachable(&mut self, now: Instant, node: NodeId) {
        self.rpc.handle_unreachable(now, node);
        self.drain(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<MiEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.rpc.poll_timeout();
        for op in self.ops.values() {
            t = earliest(t, Some(op.deadline));
            if op.call.is_none() && self.attached_to().is_some() {
                t = earliest(t, Some(op.not_before));
            }
        }
        match self.link {
            Link::Idle { retry_at } => t = earliest(t, Some(retry_at)),
            Link::Attached {
                last_query,
                silence,
                ..
            } => {
                t = earliest(t, Some(last_query + silence));
            }
            Link::Attaching { .. } => {}
        }
        t
    }
}
