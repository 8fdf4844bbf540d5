//! The mserver's application-group service: a sans-IO state machine that
//! holds this mserver's copy of the [`Registry`], serves the member
//! interfaces (MIs) attached to it and keeps the copy in step with the
//! core-set (Kostrivas 1995, section II.B.4 "Member Interfaces" and
//! chapter III for the commit; `docs/appgroups-design.md`).
//!
//! This file holds the service's state, its inputs from the core-set and
//! its timers; `requests.rs` the MI requests, `polling.rs` the MI polls
//! (views out, liveness, orphans, MI failures), `transfer.rs` the
//! registry state transfer and the merge ops, and `keyring.rs` the
//! hand-over of a committed cluster key ring to the MIs attached here.
//!
//! It drives no socket and reads no clock: the mserver's composite core
//! hands it the RPC requests of [`super::link`]'s procedures, the
//! completions of the calls it made, and the core-set's `ViewInstalled` and
//! `AppCommitted` events; it acts through a [`ServiceCtx`] (the core-set,
//! to submit application changes, and the RPC endpoint, to answer and to
//! call).
//!
//! - **Requests.** An MI's op ([`PROC_MI_SUBMIT`]) or attachment
//!   ([`PROC_MI_ATTACH`]) is submitted to the core-set as an application
//!   change and answered once it is committed and applied, with the outcome
//!   every mserver agrees on. An op not seen committed within
//!   `resubmit_after` is submitted again (the registry applies a request
//!   once). Reads ([`PROC_MI_READ`]) are answered at once from the copy.
//! - **Views to MIs.** After applying an op, every new view of a group is
//!   queued for each MI attached here that hosts members of the group, and
//!   pushed at once in a [`PROC_MI_QUERY`] call, numbered per MI. The same
//!   call, every query interval, is the liveness poll: an MI that does not
//!   answer within the query timeout is failed (`AppOp::MiFailed`, which
//!   removes all its members in one view per group).
//! - **Failover.** When an mserver leaves the view, the MIs attached to it
//!   get `orphan_grace` to attach elsewhere; then the lowest-ranked
//!   mserver submits `MiFailed` for those that did not.
//! - **State transfer.** An mserver that joins the core-set (or whose side
//!   was absorbed in a merge) fetches a copy of the registry from the
//!   lowest-ranked member that was already in the view
//!   ([`PROC_REGISTRY_FETCH`]), buffering the changes committed meanwhile
//!   and applying those the copy does not include. Until then it refuses
//!   MI requests with [`AppError::Busy`].
//!
//! - **Merges.** When core-set subgroups merge, the side of the merged
//!   view's lowest rank keeps its registry; every other side fetches it,
//!   then submits its own attachments and group parts (`AppOp::Readmit`,
//!   `AppOp::Reform`), which the registry merges by each group's merge
//!   rule. Until those commit it answers MI requests `Busy`.
//! - **Exclusion.** An mserver excluded from the core-set stops polling
//!   its MIs, answers `Busy`, and fetches a copy again when readmitted.

use super::link::{
    AttachReply, AttachRequest, Attached, FetchReply, FetchRequest, GroupInfo, PollTiming,
    QueryReply, QueryRequest, ReadReply, ReadRequest, SubmitReply, SubmitRequest, PROC_MI_ATTACH,
    PROC_MI_QUERY, PROC_MI_READ, PROC_MI_SUBMIT, PROC_REGISTRY_FETCH,
};
use super::{AppError, AppOp, AppView, GroupName, Registry, RequestId};
use crate::coreset::{AppSubmitError, CoreSet, Member};
use crate::id::{CommitPosition, NodeId};
use crate::rpc::{CallError, CallId, CallOptions, RequestToken, Rpc};
use crate::time::{earliest, Instant};
use crate::wire::{decode_message, encode_body};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;
use uuid::Uuid;

mod keyring;
mod polling;
mod requests;
mod transfer;

pub use keyring::RING_CALLS;
pub use polling::QUERY_ATTEMPTS;

/// Most requests waiting for their op to commit (more are refused with
/// [`AppError::Busy`]).
pub const MAX_PENDING: usize = 4096;
/// Most views queued for one MI (an MI further behind is failed: it
/// cannot be answering its queries).
pub const MAX_MI_QUEUE: usize = 4096;
/// Most views sent in one query.
pub const MAX_VIEWS_PER_QUERY: usize = 64;
/// Most member entries, over all its views, in one query (about 1.5 MB;
/// one bigger view still goes alone: a view of the largest group,
/// `MAX_GROUP_MEMBERS`, encodes well under the 4 MiB decode bound).
pub const MAX_QUERY_ENTRIES: usize = 16_384;
/// Most committed changes buffered while a registry copy is fetched.
pub const MAX_BUFFERED: usize = 65_536;
/// Most MIs failed by one op (keeps it under the core-set's payload
/// limit).
pub const MAX_FAILED_PER_OP: usize = 128;
/// Payload size the merge ops are cut to (under the core-set's limit).
const MERGE_OP_BYTES: usize = 3_000;

/// The service's timings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppServiceConfig {
    /// This mserver's address (the `mserver` of the attachments it makes).
    pub me: NodeId,
    /// How often an attached MI is polled.
    pub query_interval: Duration,
    /// A poll unanswered this long fails the MI.
    pub query_timeout: Duration,
    /// How long the MIs of an mserver that left the view have to attach
    /// elsewhere before they are failed.
    pub orphan_grace: Duration,
    /// An op submitted but not seen committed this long is submitted again.
    pub resubmit_after: Duration,
    /// How long a registry fetch may take before another member is asked.
    pub fetch_timeout: Duration,
}

impl AppServiceConfig {
    /// Timings derived from the core-set's: queries every query interval,
    /// failed after `reply_timeout * (1 + retries)`, the same bound as the
    /// ring's monitoring; the orphan grace of [`PollTiming::orphan_grace`]
    /// (an MI notices its mserver's silence after
    /// [`PollTiming::silence_timeout`], told in its attach answer, then
    /// re-attaches).
    pub fn new(
        me: NodeId,
        query_interval: Duration,
        reply_timeout: Duration,
        retries: u32,
    ) -> Self {
        let query_timeout = reply_timeout * (1 + retries.min(16));
        let poll = PollTiming {
            interval: query_interval,
            timeout: query_timeout,
        };
        AppServiceConfig {
            me,
            query_interval,
            query_timeout,
            orphan_grace: poll.orphan_grace(),
            resubmit_after: Duration::from_secs(2),
            fetch_timeout: Duration::from_secs(2),
        }
    }
}

impl AppServiceConfig {
    /// How this mserver polls its MIs, as told to each in its attach
    /// answer.
    pub fn poll_timing(&self) -> PollTiming {
        PollTiming {
            interval: self.query_interval,
            timeout: self.query_timeout,
        }
    }
}

/// What the service acts on: the core-set (to submit changes) and the RPC
/// endpoint (to answer requests and make calls).
pub struct ServiceCtx<'a> {
    /// The core-set.
    pub coreset: &'a mut CoreSet,
    /// The RPC endpoint the service's procedures arrive on.
    pub rpc: &'a mut Rpc,
}

/// A view the core-set installed, as [`AppService::on_view_installed`]
/// takes it (the fields of `CoreSetEvent::ViewInstalled` it needs).
#[derive(Clone, Copy, Debug)]
pub struct InstalledView<'a> {
    /// The view's number.
    pub number: u64,
    /// Its members, sorted by rank.
    pub members: &'a [Member],
    /// The members it admitted (after a merge: the other sides).
    pub joined: &'a [Member],
    /// It came from a merge of subgroups.
    pub merged: bool,
}

/// The service's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Ops applied (from committed changes).
    pub applied: u64,
    /// Views queued for MIs.
    pub views_pushed: u64,
    /// MIs failed by this mserver (poll unanswered, or orphaned).
    pub mis_failed: u64,
    /// Polls asked again within their poll timeout after an attempt went
    /// unanswered ([`QUERY_ATTEMPTS`]).
    pub query_retries: u64,
    /// Requests refused before submission (busy, malformed).
    pub refused: u64,
    /// Registry copies installed (state transfers).
    pub transfers: u64,
    /// Key rings MIs acknowledged.
    pub rings_pushed: u64,
    /// Key rings given up on after [`RING_CALLS`] failed calls to an MI.
    pub rings_abandoned: u64,
}

enum PendingKind {
    Submit,
    Attach {
        from: NodeId,
        have: Vec<(GroupName, u64)>,
    },
}

struct Pending {
    tokens: Vec<RequestToken>,
    payload: Vec<u8>,
    submitted_at: Instant,
    kind: PendingKind,
}

/// An MI attached to this mserver.
struct LocalMi {
    addr: NodeId,
    attach_seq: u64,
    /// The sequence number the next queued view gets.
    next_seq: u64,
    /// Views not yet acknowledged: `(seq, view)`.
    queue: VecDeque<(u64, AppView)>,
    /// Members to report lost in the next query.
    lost: Vec<(GroupName, Uuid)>,
    in_flight: Option<CallId>,
    next_query: Instant,
    /// The poll in progress fails the MI if still unanswered then (its
    /// first attempt's start plus the poll timeout).
    poll_deadline: Instant,
    /// Attempts of the poll in progress so far (at most
    /// [`QUERY_ATTEMPTS`]).
    poll_attempts: u32,
}

enum CallTag {
    Query { mi: Uuid, lost: usize },
    Fetch,
    Ring { mi: Uuid },
}

enum SyncState {
    /// The copy is current: changes are applied as they commit.
    Synced,
    /// Waiting for a copy of the registry as of at least `since_view`.
    Fetching {
        since_view: CommitPosition,
        buffered: Vec<(CommitPosition, Vec<Vec<u8>>)>,
        /// Members to ask, in turn.
        sources: Vec<NodeId>,
        attempt: usize,
        call: Option<CallId>,
        retry_at: Option<Instant>,
    },
}

/// The application-group service of one mserver. See the
/// [module docs](self).
pub struct AppService {
    config: AppServiceConfig,
    registry: Registry,
    sync: SyncState,
    /// This mserver is a member of a view.
    member: bool,
    /// The core-set's latest commit seen here (view, application commit).
    view: CommitPosition,
    mservers: Vec<NodeId>,
    pending: BTreeMap<RequestId, Pending>,
    local: BTreeMap<Uuid, LocalMi>,
    calls: BTreeMap<CallId, CallTag>,
    /// MIs whose mserver left the view: failed at the deadline unless
    /// they attached elsewhere.
    orphans: BTreeMap<Uuid, Instant>,
    /// `MiFailed` submitted for these, at this time.
    failing: BTreeMap<Uuid, Instant>,
    /// Our side's registry before a merge made us adopt another side's.
    premerge: Option<Registry>,
    /// Merge ops (`Readmit`, `Reform`) submitted and not yet seen
    /// committed, with when they were last submitted.
    merge_ops: Vec<(Vec<u8>, Instant)>,
    stats: ServiceStats,
    /// The last cluster key ring handed to the MIs, with its epoch.
    ring: Option<(u64, crate::wire::SharedRing)>,
    /// Where each attached MI stands with it.
    ring_mis: BTreeMap<Uuid, keyring::MiRing>,
}

impl AppService {
    /// A service that has no registry yet: it gets one with its first view
    /// (empty when it founds the core-set, fetched otherwise).
    pub fn new(config: AppServiceConfig) -> Self {
        AppService {
            config,
            registry: Registry::new(),
            sync: SyncState::Fetching {
                since_view: CommitPosition::default(),
                buffered: Vec::new(),
                sources: Vec::new(),
                attempt: 0,
                call: None,
                retry_at: None,
            },
            member: false,
            view: CommitPosition::default(),
            mservers: Vec::new(),
            pending: BTreeMap::new(),
            local: BTreeMap::new(),
            calls: BTreeMap::new(),
            orphans: BTreeMap::new(),
            failing: BTreeMap::new(),
            premerge: None,
            merge_ops: Vec::new(),
            stats: ServiceStats::default(),
            ring: None,
            ring_mis: BTreeMap::new(),
        }
    }

    /// The procedures the service answers (register them as deferred and
    /// hand their requests to [`AppService::on_request`]).
    pub const PROCEDURES: [u16; 4] = [
        PROC_MI_ATTACH,
        PROC_MI_SUBMIT,
        PROC_MI_READ,
        PROC_REGISTRY_FETCH,
    ];

    /// This mserver's copy of the registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The copy is current (not waiting for a state transfer).
    pub fn synced(&self) -> bool {
        matches!(self.sync, SyncState::Synced)
    }

    /// The MIs attached to this mserver.
    pub fn attached(&self) -> impl Iterator<Item = &Uuid> + '_ {
        self.local.keys()
    }

    /// The counters.
    pub fn stats(&self) -> &ServiceStats {
        &self.stats
    }

    /// Is `id` one of this service's calls?
    pub fn owns_call(&self, id: CallId) -> bool {
        self.calls.contains_key(&id)
    }

    pub(super) fn ready(&self) -> bool {
        self.member && self.synced() && self.merge_ops.is_empty()
    }

    /// The core-set installed a view (`CoreSetEvent::ViewInstalled`;
    /// `joined` as it reports it: after a merge, the members of the other
    /// sides).
    pub fn on_view_installed(
        &mut self,
        now: Instant,
        ctx: ServiceCtx<'_>,
        view: InstalledView<'_>,
    ) {
        let InstalledView {
            number,
            members,
            joined,
            merged,
        } = view;
        let me = self.config.me;
        let first = !self.member;
        self.member = members.iter().any(|m| m.addr == me);
        self.view = CommitPosition {
            view: number,
            seq: 0,
        };
        self.mservers = members.iter().map(|m| m.addr).collect();
        if !self.member {
            return;
        }
        let is_joined = |addr: NodeId| joined.iter().any(|j| j.addr == addr);
        if merged && !first {
            // Subgroups merged. The side of the merged view's lowest rank
            // keeps its registry; every other side adopts it, then submits
            // what it had (attachments, group parts) for the merge rules.
            let primary = members.first().map(|m| m.addr);
            if let Some(p) = primary.filter(|p| is_joined(*p)) {
                if self.synced() {
                    self.premerge = Some(std::mem::take(&mut self.registry));
                }
                let mut sources = vec![p];
                sources.extend(joined.iter().map(|j| j.addr).filter(|a| *a != p));
                tracing::info!(primary = %p, "core-set merged: adopting the other side's application groups");
                self.start_fetch(now, ctx.rpc, self.view, sources);
            }
        } else if first {
            let old: Vec<NodeId> = members
                .iter()
                .map(|m| m.addr)
                .filter(|a| !is_joined(*a))
                .collect();
            if old.is_empty() {
                // We found the core-set: the registry starts empty.
                self.registry = Registry::new();
                self.sync = SyncState::Synced;
            } else {
                // A newcomer: take the copy of a member that was in the
                // view already.
                self.start_fetch(now, ctx.rpc, self.view, old);
            }
        }
        self.note_orphans(now);
    }

    /// This mserver was excluded from the core-set, or left it: its copy
    /// is no longer current. It stops polling its MIs (they attach
    /// elsewhere), answers what it was asked `Busy` (the MIs retry), and
    /// fetches a copy again when it is readmitted.
    pub fn on_excluded(&mut self, now: Instant, ctx: ServiceCtx<'_>) {
        self.member = false;
        self.local.clear();
        self.orphans.clear();
        self.failing.clear();
        self.merge_ops.clear();
        self.premerge = None;
        for (_, pending) in std::mem::take(&mut self.pending) {
            for token in pending.tokens {
                match pending.kind {
                    PendingKind::Submit => respond(
                        now,
                        ctx.rpc,
                        token,
                        &SubmitReply {
                            result: Err(AppError::Busy),
                        },
                    ),
                    PendingKind::Attach { .. } => respond(
                        now,
                        ctx.rpc,
                        token,
                        &AttachReply {
                            result: Err(AppError::Busy),
                        },
                    ),
                }
            }
        }
        self.sync = SyncState::Fetching {
            since_view: CommitPosition::default(),
            buffered: Vec::new(),
            sources: Vec::new(),
            attempt: 0,
            call: None,
            retry_at: None,
        };
    }

    /// The core-set committed application changes
    /// (`CoreSetEvent::AppCommitted`).
    pub fn on_app_committed(
        &mut self,
        now: Instant,
        ctx: ServiceCtx<'_>,
        view: CommitPosition,
        payloads: Vec<Vec<u8>>,
    ) {
        self.view = view;
        if let SyncState::Fetching { buffered, .. } = &mut self.sync {
            if buffered.len() < MAX_BUFFERED {
                buffered.push((view, payloads));
            }
            return;
        }
        self.apply_commit(now, ctx.rpc, &payloads);
        self.push_all(now, ctx.rpc);
    }

    /// Applies one commit's payloads (one view per changed group for the
    /// whole commit), then carries out what each op asks of this mserver.
    pub(super) fn apply_commit(&mut self, now: Instant, rpc: &mut Rpc, payloads: &[Vec<u8>]) {
        let results = self.registry.apply_payloads(payloads);
        let mut pushed: BTreeSet<(GroupName, u64)> = BTreeSet::new();
        for (payload, applied) in payloads.iter().zip(results) {
            self.after_apply(now, rpc, payload, applied, &mut pushed);
        }
    }

    pub(super) fn after_apply(
        &mut self,
        now: Instant,
        rpc: &mut Rpc,
        payload: &[u8],
        applied: super::Applied,
        pushed: &mut BTreeSet<(GroupName, u64)>,
    ) {
        self.stats.applied += 1;
        let op = AppOp::decode(payload).ok();
        let me = self.config.me;
        match &op {
            Some(AppOp::Attach { req, mserver, .. }) => {
                self.orphans.remove(&req.mi);
                self.failing.remove(&req.mi);
                let current = self
                    .registry
                    .mi(&req.mi)
                    .is_some_and(|r| r.attach_seq == req.seq && r.mserver == *mserver);
                if *mserver != me && current {
                    // It moved to another mserver.
                    self.local.remove(&req.mi);
                }
            }
            Some(AppOp::MiFailed { mis }) => {
                for (mi, _) in mis {
                    self.failing.remove(mi);
                    if self.registry.mi(mi).is_none() {
                        self.local.remove(mi);
                        self.orphans.remove(mi);
                    }
                }
            }
            Some(AppOp::Readmit { .. } | AppOp::Reform { .. }) => {
                self.merge_ops.retain(|(p, _)| p.as_slice() != payload);
            }
            _ => {}
        }
        // Members removed without asking, or not taken in at a merge: tell
        // their MIs (the ones attached here).
        for (group, member, mi) in &applied.lost {
            if let Some(local) = self.local.get_mut(mi) {
                if local.lost.len() < MAX_MI_QUEUE {
                    local.lost.push((group.clone(), *member));
                }
            }
        }
        // Queue the new views for the MIs attached here that host members
        // of the group (once per commit: ops of one commit share a view).
        for view in &applied.views {
            if !pushed.insert((view.group.clone(), view.number)) {
                continue;
            }
            for mi in self.registry.hosts_of(&view.group) {
                if let Some(local) = self.local.get_mut(&mi) {
                    if local.queue.len() >= MAX_MI_QUEUE {
                        continue;
                    }
                    local.queue.push_back((local.next_seq, view.clone()));
                    local.next_seq += 1;
                    self.stats.views_pushed += 1;
                }
            }
        }
        let Some(req) = applied.req else {
            return;
        };
        let Some(pending) = self.pending.remove(&req) else {
            return;
        };
        match pending.kind {
            PendingKind::Submit => {
                let reply = SubmitReply {
                    result: applied.result,
                };
                for token in pending.tokens {
                    respond(now, rpc, token, &reply);
                }
            }
            PendingKind::Attach { from, have } => {
                let result = match applied.result {
                    Err(e) => Err(e),
                    Ok(_) => {
                        let record = self.registry.mi(&req.mi);
                        if record.is_some_and(|r| r.attach_seq == req.seq && r.mserver == me) {
                            self.local.insert(
                                req.mi,
                                LocalMi {
                                    addr: from,
                                    attach_seq: req.seq,
                                    next_seq: 1,
                                    queue: VecDeque::new(),
                                    lost: Vec::new(),
                                    in_flight: None,
                                    next_query: now + self.config.query_interval,
                                    poll_deadline: now,
                                    poll_attempts: 0,
                                },
                            );
                            Ok(self.catch_up(req.mi, &have))
                        } else {
                            // A later attachment elsewhere won.
                            Err(AppError::Busy)
                        }
                    }
                };
                let reply = AttachReply { result };
                for token in pending.tokens {
                    respond(now, rpc, token, &reply);
                }
            }
        }
    }

    /// One of this service's calls ended ([`AppService::owns_call`]).
    pub fn on_call_completed(
        &mut self,
        now: Instant,
        ctx: ServiceCtx<'_>,
        id: CallId,
        result: Result<Vec<u8>, CallError>,
    ) {
        match self.calls.remove(&id) {
            Some(CallTag::Query { mi, lost }) => self.on_query_done(now, ctx, mi, id, lost, result),
            Some(CallTag::Fetch) => self.on_fetch_done(now, ctx, id, result),
            Some(CallTag::Ring { mi }) => self.on_ring_done(now, ctx.rpc, mi, id, result),
            None => {}
        }
    }

    /// Timers: polls, orphan deadlines, resubmissions, fetch retries.
    pub fn on_timeout(&mut self, now: Instant, ctx: ServiceCtx<'_>) {
        let ServiceCtx { coreset, rpc } = ctx;
        let due: Vec<Uuid> = self
            .local
            .iter()
            .filter(|(_, l)| l.in_flight.is_none() && l.next_query <= now)
            .map(|(mi, _)| *mi)
            .collect();
        for mi in due {
            self.send_query(now, rpc, mi);
        }
        if self.ready() {
            let lowest = self.mservers.first() == Some(&self.config.me);
            let stale = self.config.resubmit_after;
            let me = self.config.me;
            let expired: Vec<Uuid> = self
                .orphans
                .iter()
                .filter(|(_, d)| **d <= now)
                .map(|(mi, _)| *mi)
                .collect();
            // One op for all the MIs whose grace ended together (the far
            // side of a partition): the survive rules see the whole loss.
            let mut batch = Vec::new();
            for mi in expired {
                self.orphans.remove(&mi);
                let still = self.registry.mi(&mi).is_some_and(|r| {
                    !self.mservers.contains(&r.mserver)
                        || (r.mserver == me && !self.local.contains_key(&mi))
                });
                let mine = self.registry.mi(&mi).is_some_and(|r| r.mserver == me);
                if still && (lowest || mine) {
                    tracing::info!(%mi, "MI did not re-attach after its mserver left: failing it");
                    batch.push(mi);
                }
            }
            if !batch.is_empty() {
                self.fail_mis(now, coreset, batch);
            }
            // The absorbed side's attachments and groups, after a merge.
            for (payload, at) in self.merge_ops.iter_mut() {
                if *at + stale <= now {
                    *at = now;
                    let _ = submit_payload(now, coreset, payload.clone());
                }
            }
            let again: Vec<RequestId> = self
                .pending
                .iter()
                .filter(|(_, p)| p.submitted_at + stale <= now)
                .map(|(r, _)| *r)
                .collect();
            for r in again {
                if let Some(p) = self.pending.get_mut(&r) {
                    p.submitted_at = now;
                    let _ = submit_payload(now, coreset, p.payload.clone());
                }
            }
            self.failing.retain(|_, at| *at + stale > now);
        }
        let retry = match &self.sync {
            SyncState::Fetching {
                retry_at: Some(t), ..
            } => *t <= now,
            _ => false,
        };
        if retry {
            self.send_fetch(now, rpc);
        }
    }

    /// When [`AppService::on_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = None;
        for l in self.local.values() {
            if l.in_flight.is_none() {
                t = earliest(t, Some(l.next_query));
            }
        }
        if self.ready() {
            for d in self.orphans.values() {
                t = earliest(t, Some(*d));
            }
            for p in self.pending.values() {
                t = earliest(t, Some(p.submitted_at + self.config.resubmit_after));
            }
        }
        if self.member && self.synced() {
            for (_, at) in &self.merge_ops {
                t = earliest(t, Some(*at + self.config.resubmit_after));
            }
        }
        if let SyncState::Fetching { retry_at, .. } = &self.sync {
            t = earliest(t, *retry_at);
        }
        t
    }

    /// The groups, as `msctl groups` shows them.
    pub fn groups(&self) -> Vec<GroupInfo> {
        self.registry
            .groups()
            .map(|(options, view)| GroupInfo {
                options: options.clone(),
                suspended: self.registry.suspended(&view.group),
                view,
            })
            .collect()
    }

    /// The MIs whose failure this service submitted and that are not yet
    /// applied.
    pub fn failing(&self) -> BTreeSet<Uuid> {
        self.failing.keys().copied().collect()
    }
}

pub(super) fn submit_payload(
    now: Instant,
    coreset: &mut CoreSet,
    payload: Vec<u8>,
) -> Result<(), AppError> {
    coreset.submit_app(now, payload).map_err(|e| match e {
        AppSubmitError::NotMember | AppSubmitError::QueueFull => AppError::Busy,
        AppSubmitError::Empty | AppSubmitError::TooLarge(_) => {
            AppError::InvalidOptions(e.to_string())
        }
    })
}

pub(super) fn respond<T: serde::Serialize>(
    now: Instant,
    rpc: &mut Rpc,
    token: RequestToken,
    reply: &T,
) {
    match encode_body(reply) {
        Ok(body) => {
            rpc.respond(now, token, body);
        }
        Err(e) => tracing::warn!(error = %e, "cannot encode an application-group reply"),
    }
}
