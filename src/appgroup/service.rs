//! The mserver's application-group service: a sans-IO state machine that
//! holds this mserver's copy of the [`Registry`], serves the member
//! interfaces (MIs) attached to it and keeps the copy in step with the
//! core-set (seed 003, section II.B.4 "Member Interfaces" and chapter III
//! for the commit; DESIGN.md section 6; `docs/appgroups-design.md`).
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

/// The service's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Ops applied (from committed changes).
    pub applied: u64,
    /// Views queued for MIs.
    pub views_pushed: u64,
    /// MIs failed by this mserver (poll unanswered, or orphaned).
    pub mis_failed: u64,
    /// Requests refused before submission (busy, malformed).
    pub refused: u64,
    /// Registry copies installed (state transfers).
    pub transfers: u64,
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
}

enum CallTag {
    Query { mi: Uuid, lost: usize },
    Fetch,
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

    fn ready(&self) -> bool {
        self.member && self.synced() && self.merge_ops.is_empty()
    }

    /// A request for one of [`AppService::PROCEDURES`].
    pub fn on_request(
        &mut self,
        now: Instant,
        ctx: ServiceCtx<'_>,
        token: RequestToken,
        from: NodeId,
        procedure: u16,
        body: &[u8],
    ) {
        match procedure {
            PROC_MI_ATTACH => {
                let request = match decode_message::<AttachRequest>(body) {
                    Ok(r) => r,
                    Err(e) => {
                        self.stats.refused += 1;
                        let err = AppError::Internal(format!("unreadable attach request: {e}"));
                        respond(now, ctx.rpc, token, &AttachReply { result: Err(err) });
                        return;
                    }
                };
                if !self.ready() {
                    self.stats.refused += 1;
                    respond(
                        now,
                        ctx.rpc,
                        token,
                        &AttachReply {
                            result: Err(AppError::Busy),
                        },
                    );
                    return;
                }
                let op = AppOp::Attach {
                    req: RequestId {
                        mi: request.mi,
                        seq: request.seq,
                    },
                    host: request.host,
                    mserver: self.config.me,
                };
                let kind = PendingKind::Attach {
                    from,
                    have: request.have,
                };
                if let Err(e) = self.submit_op(now, ctx.coreset, token, op, kind) {
                    respond(now, ctx.rpc, token, &AttachReply { result: Err(e) });
                }
            }
            PROC_MI_SUBMIT => {
                let request = match decode_message::<SubmitRequest>(body) {
                    Ok(r) => r,
                    Err(e) => {
                        self.stats.refused += 1;
                        let err = AppError::Internal(format!("unreadable submit request: {e}"));
                        respond(now, ctx.rpc, token, &SubmitReply { result: Err(err) });
                        return;
                    }
                };
                let refusal = if !self.ready() {
                    Some(AppError::Busy)
                } else if matches!(request.op, AppOp::Attach { .. } | AppOp::MiFailed { .. }) {
                    Some(AppError::InvalidOptions(
                        "attachments and MI failures are not submitted by MIs".into(),
                    ))
                } else {
                    None
                };
                if let Some(err) = refusal {
                    self.stats.refused += 1;
                    respond(now, ctx.rpc, token, &SubmitReply { result: Err(err) });
                    return;
                }
                if let Err(e) =
                    self.submit_op(now, ctx.coreset, token, request.op, PendingKind::Submit)
                {
                    respond(now, ctx.rpc, token, &SubmitReply { result: Err(e) });
                }
            }
            PROC_MI_READ => {
                let reply = match decode_message::<ReadRequest>(body) {
                    Err(e) => ReadReply::Groups(Err(AppError::Internal(format!(
                        "unreadable read request: {e}"
                    )))),
                    Ok(_) if !self.synced() => ReadReply::Groups(Err(AppError::Busy)),
                    Ok(ReadRequest::View { group }) => {
                        ReadReply::View(self.registry.view(&group).ok_or(AppError::NoSuchGroup))
                    }
                    Ok(ReadRequest::Lookup { group, name }) => {
                        ReadReply::Member(match self.registry.view(&group) {
                            None => Err(AppError::NoSuchGroup),
                            Some(v) => v.member(&name).cloned().ok_or(AppError::NotMember),
                        })
                    }
                    Ok(ReadRequest::Groups) => ReadReply::Groups(Ok(self.groups())),
                };
                respond(now, ctx.rpc, token, &reply);
            }
            PROC_REGISTRY_FETCH => {
                let result = match decode_message::<FetchRequest>(body) {
                    Err(e) => Err(AppError::Internal(format!("unreadable fetch request: {e}"))),
                    Ok(r) if !self.synced() || !self.member || self.view < r.since_view => {
                        Err(AppError::Busy)
                    }
                    Ok(_) => self.registry.encode().map(|bytes| (self.view, bytes)),
                };
                respond(now, ctx.rpc, token, &FetchReply { result });
            }
            _ => self.stats.refused += 1,
        }
    }

    fn submit_op(
        &mut self,
        now: Instant,
        coreset: &mut CoreSet,
        token: RequestToken,
        op: AppOp,
        kind: PendingKind,
    ) -> Result<(), AppError> {
        let Some(req) = op.request_id() else {
            return Err(AppError::Internal("an op without a request id".into()));
        };
        if let Some(p) = self.pending.get_mut(&req) {
            // The MI asked again (its call was retried, or it re-attached
            // here): answer every asker when the op commits.
            if p.tokens.len() < 16 {
                p.tokens.push(token);
            }
            return Ok(());
        }
        if self.pending.len() >= MAX_PENDING {
            self.stats.refused += 1;
            return Err(AppError::Busy);
        }
        let payload = op.encode()?;
        submit_payload(now, coreset, payload.clone())?;
        self.pending.insert(
            req,
            Pending {
                tokens: vec![token],
                payload,
                submitted_at: now,
                kind,
            },
        );
        Ok(())
    }

    /// The core-set installed a view (`CoreSetEvent::ViewInstalled`;
    /// `joined` as it reports it: after a merge, the members of the other
    /// sides).
    #[allow(clippy::too_many_arguments)]
    pub fn on_view_installed(
        &mut self,
        now: Instant,
        ctx: ServiceCtx<'_>,
        number: u64,
        members: &[Member],
        joined: &[Member],
        merged: bool,
    ) {
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

    /// After a merge, once this (absorbed) side adopted the other side's
    /// registry: the ops that bring its own attachments and group parts in.
    fn submit_premerge(&mut self, now: Instant, coreset: &mut CoreSet, before: Registry) {
        let mut ops = Vec::new();
        let records: Vec<(Uuid, super::MiRecord)> =
            before.mis().map(|(mi, r)| (*mi, r.clone())).collect();
        for chunk in records.chunks(16) {
            ops.push(AppOp::Readmit {
                mis: chunk.to_vec(),
            });
        }
        for (options, view) in before.groups() {
            let base = before.base_of(&view.group);
            let hosted: Vec<(super::AppMember, Uuid)> = view
                .members
                .iter()
                .filter_map(|m| before.host_of(&view.group, m.id).map(|mi| (m.clone(), mi)))
                .collect();
            let mut parts: Vec<Vec<(super::AppMember, Uuid)>> = vec![Vec::new()];
            let mut size = 0usize;
            for (m, mi) in hosted {
                let cost = m.name.as_str().len() + m.kind.as_str().len() + m.host.len() + 48;
                if size + cost > MERGE_OP_BYTES && parts.last().is_some_and(|p| !p.is_empty()) {
                    parts.push(Vec::new());
                    size = 0;
                }
                size += cost;
                if let Some(p) = parts.last_mut() {
                    p.push((m, mi));
                }
            }
            for members in parts {
                ops.push(AppOp::Reform {
                    group: view.group.clone(),
                    options: options.clone(),
                    number: view.number,
                    base: base.clone(),
                    members,
                });
            }
        }
        for op in ops {
            let Ok(payload) = op.encode() else { continue };
            // Submitted again on the timer if this fails.
            let at = match submit_payload(now, coreset, payload.clone()) {
                Ok(()) => now,
                Err(_) => Instant::ZERO,
            };
            self.merge_ops.push((payload, at));
        }
        tracing::info!(
            ops = self.merge_ops.len(),
            "submitted this side's application groups for the merge"
        );
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

    /// MIs attached to mservers that are not in the view, or to us but not
    /// known here (we restarted): they have `orphan_grace` to re-attach.
    fn note_orphans(&mut self, now: Instant) {
        if !self.synced() {
            return;
        }
        let me = self.config.me;
        let deadline = now + self.config.orphan_grace;
        let orphans: Vec<Uuid> = self
            .registry
            .mis()
            .filter(|(mi, r)| {
                !self.mservers.contains(&r.mserver)
                    || (r.mserver == me && !self.local.contains_key(mi))
            })
            .map(|(mi, _)| *mi)
            .collect();
        self.orphans.retain(|mi, _| orphans.contains(mi));
        for mi in orphans {
            self.orphans.entry(mi).or_insert(deadline);
        }
    }

    fn start_fetch(
        &mut self,
        now: Instant,
        rpc: &mut Rpc,
        since_view: CommitPosition,
        sources: Vec<NodeId>,
    ) {
        self.sync = SyncState::Fetching {
            since_view,
            buffered: Vec::new(),
            sources,
            attempt: 0,
            call: None,
            retry_at: None,
        };
        self.send_fetch(now, rpc);
    }

    fn send_fetch(&mut self, now: Instant, rpc: &mut Rpc) {
        let timeout = self.config.fetch_timeout;
        let SyncState::Fetching {
            since_view,
            sources,
            attempt,
            call,
            retry_at,
            ..
        } = &mut self.sync
        else {
            return;
        };
        if sources.is_empty() {
            return;
        }
        let source = sources[*attempt % sources.len()];
        *attempt += 1;
        *retry_at = None;
        let Ok(body) = encode_body(&FetchRequest {
            since_view: *since_view,
        }) else {
            return;
        };
        let id = rpc.call(
            now,
            source,
            PROC_REGISTRY_FETCH,
            body,
            CallOptions::default().with_timeout(timeout),
        );
        *call = Some(id);
        self.calls.insert(id, CallTag::Fetch);
        tracing::debug!(%source, since_view = %since_view, "fetching the application-group registry");
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
    fn apply_commit(&mut self, now: Instant, rpc: &mut Rpc, payloads: &[Vec<u8>]) {
        let results = self.registry.apply_payloads(payloads);
        let mut pushed: BTreeSet<(GroupName, u64)> = BTreeSet::new();
        for (payload, applied) in payloads.iter().zip(results) {
            self.after_apply(now, rpc, payload, applied, &mut pushed);
        }
    }

    fn after_apply(
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

    /// What an MI that just attached missed.
    fn catch_up(&self, mi: Uuid, have: &[(GroupName, u64)]) -> Attached {
        let mut views = Vec::new();
        let mut lost = Vec::new();
        for (group, number) in have.iter().take(super::MAX_GROUPS) {
            match self.registry.views_since(group, *number) {
                Some(v) => views.extend(v),
                None => {
                    // Too far behind: its members there cannot be given
                    // every view.
                    if let Some(view) = self.registry.view(group) {
                        for m in &view.members {
                            if self.registry.host_of(group, m.id) == Some(mi) {
                                lost.push((group.clone(), m.id));
                            }
                        }
                    }
                }
            }
        }
        Attached {
            poll: self.config.poll_timing(),
            mservers: self.mservers.clone(),
            views,
            lost,
        }
    }

    /// Sends a query to every attached MI with views waiting and no query
    /// in flight.
    fn push_all(&mut self, now: Instant, rpc: &mut Rpc) {
        let due: Vec<Uuid> = self
            .local
            .iter()
            .filter(|(_, l)| l.in_flight.is_none() && (!l.queue.is_empty() || !l.lost.is_empty()))
            .map(|(mi, _)| *mi)
            .collect();
        for mi in due {
            self.send_query(now, rpc, mi);
        }
    }

    fn send_query(&mut self, now: Instant, rpc: &mut Rpc, mi: Uuid) {
        let mservers = self.mservers.clone();
        let timeout = self.config.query_timeout;
        let Some(local) = self.local.get_mut(&mi) else {
            return;
        };
        // Bounded in views and in member entries, so the MI's decoder
        // (4 MiB) always takes it; at least one view.
        let mut views: Vec<AppView> = Vec::new();
        let mut entries = 0usize;
        for (_, v) in local.queue.iter().take(MAX_VIEWS_PER_QUERY) {
            entries += v.members.len().max(1);
            if !views.is_empty() && entries > MAX_QUERY_ENTRIES {
                break;
            }
            views.push(v.clone());
        }
        let first_seq = local.queue.front().map_or(local.next_seq, |(s, _)| *s);
        let request = QueryRequest {
            mi,
            attach_seq: local.attach_seq,
            first_seq,
            views,
            lost: local.lost.clone(),
            mservers,
        };
        let Ok(body) = encode_body(&request) else {
            return;
        };
        let id = rpc.call(
            now,
            local.addr,
            PROC_MI_QUERY,
            body,
            CallOptions::default().with_timeout(timeout),
        );
        local.in_flight = Some(id);
        self.calls.insert(
            id,
            CallTag::Query {
                mi,
                lost: request.lost.len(),
            },
        );
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
            None => {}
        }
    }

    fn on_query_done(
        &mut self,
        now: Instant,
        ctx: ServiceCtx<'_>,
        mi: Uuid,
        id: CallId,
        lost: usize,
        result: Result<Vec<u8>, CallError>,
    ) {
        let interval = self.config.query_interval;
        let Some(local) = self.local.get_mut(&mi) else {
            return;
        };
        if local.in_flight != Some(id) {
            return;
        }
        local.in_flight = None;
        if matches!(result, Err(CallError::PeerRestarted)) {
            // The RPC layer still knew an earlier life of the MI's address:
            // the call failed unexecuted. Ask again (a new life answers
            // "not attached", which makes the old one an orphan).
            self.send_query(now, ctx.rpc, mi);
            return;
        }
        let reply = result
            .map_err(|e| e.to_string())
            .and_then(|b| decode_message::<QueryReply>(&b).map_err(|e| e.to_string()));
        match reply {
            Ok(r) if r.attached => {
                while local.queue.front().is_some_and(|(s, _)| *s <= r.acked_seq) {
                    local.queue.pop_front();
                }
                let acked_all = local.queue.is_empty() || r.acked_seq + 1 >= local.next_seq;
                if acked_all || local.queue.front().is_none() {
                    let n = lost.min(local.lost.len());
                    local.lost.drain(..n);
                }
                local.next_query = now + interval;
                if !local.queue.is_empty() || !local.lost.is_empty() {
                    self.send_query(now, ctx.rpc, mi);
                }
            }
            Ok(_) => {
                // It attached elsewhere, or it is another life of the MI
                // at that address: stop polling it here. If no attachment
                // elsewhere commits within the orphan grace, it is failed.
                tracing::debug!(%mi, "MI no longer attached here");
                self.local.remove(&mi);
                self.note_orphans(now);
            }
            Err(e) => {
                tracing::info!(%mi, addr = %local.addr, error = %e, "MI did not answer its query: failing it");
                self.local.remove(&mi);
                self.fail_mis(now, ctx.coreset, vec![mi]);
            }
        }
    }

    /// Submits `MiFailed` for `mis` (those not failing already), in ops of
    /// at most [`MAX_FAILED_PER_OP`] MIs.
    fn fail_mis(&mut self, now: Instant, coreset: &mut CoreSet, mis: Vec<Uuid>) {
        let batch: Vec<(Uuid, u64)> = mis
            .into_iter()
            .filter(|mi| !self.failing.contains_key(mi))
            .filter_map(|mi| self.registry.mi(&mi).map(|r| (mi, r.attach_seq)))
            .collect();
        for chunk in batch.chunks(MAX_FAILED_PER_OP) {
            let Ok(payload) = (AppOp::MiFailed {
                mis: chunk.to_vec(),
            })
            .encode() else {
                continue;
            };
            if submit_payload(now, coreset, payload).is_ok() {
                for (mi, _) in chunk {
                    self.stats.mis_failed += 1;
                    self.failing.insert(*mi, now);
                }
            }
        }
    }

    fn on_fetch_done(
        &mut self,
        now: Instant,
        ctx: ServiceCtx<'_>,
        id: CallId,
        result: Result<Vec<u8>, CallError>,
    ) {
        let retry = now + self.config.query_interval;
        let SyncState::Fetching {
            call,
            buffered,
            retry_at,
            ..
        } = &mut self.sync
        else {
            return;
        };
        if *call != Some(id) {
            return;
        }
        *call = None;
        let copy = result
            .map_err(|e| AppError::Internal(e.to_string()))
            .and_then(|b| {
                decode_message::<FetchReply>(&b).map_err(|e| AppError::Internal(e.to_string()))
            })
            .and_then(|r| r.result)
            .and_then(|(view, bytes)| Registry::decode(&bytes).map(|r| (view, r)));
        match copy {
            Ok((as_of, registry)) => {
                let buffered = std::mem::take(buffered);
                self.registry = registry;
                self.sync = SyncState::Synced;
                self.stats.transfers += 1;
                let me = self.config.me;
                let before = self.premerge.take();
                // Our own MIs that neither the copy nor our side's registry
                // (brought in by the merge ops) has attached here must
                // attach again.
                let registry = &self.registry;
                self.local.retain(|mi, l| {
                    let here =
                        |r: &super::MiRecord| r.mserver == me && r.attach_seq == l.attach_seq;
                    registry.mi(mi).is_some_and(here)
                        || (registry.mi(mi).is_none()
                            && before.as_ref().and_then(|b| b.mi(mi)).is_some_and(here))
                });
                tracing::info!(
                    %as_of,
                    groups = self.registry.views().len(),
                    "application-group registry copied"
                );
                for (view, payloads) in buffered {
                    if view > as_of {
                        self.apply_commit(now, ctx.rpc, &payloads);
                    }
                }
                if let Some(before) = before {
                    self.submit_premerge(now, ctx.coreset, before);
                }
                self.note_orphans(now);
                self.push_all(now, ctx.rpc);
            }
            Err(e) => {
                tracing::debug!(error = %e, "registry fetch failed; asking again");
                *retry_at = Some(retry);
            }
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

fn submit_payload(now: Instant, coreset: &mut CoreSet, payload: Vec<u8>) -> Result<(), AppError> {
    coreset.submit_app(now, payload).map_err(|e| match e {
        AppSubmitError::NotMember | AppSubmitError::QueueFull => AppError::Busy,
        AppSubmitError::Empty | AppSubmitError::TooLarge(_) => {
            AppError::InvalidOptions(e.to_string())
        }
    })
}

fn respond<T: serde::Serialize>(now: Instant, rpc: &mut Rpc, token: RequestToken, reply: &T) {
    match encode_body(reply) {
        Ok(body) => {
            rpc.respond(now, token, body);
        }
        Err(e) => tracing::warn!(error = %e, "cannot encode an application-group reply"),
    }
}
