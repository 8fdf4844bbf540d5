//! The mserver's composite core: what runs on the mserver's one UDP socket.
//!
//! It is a sans-IO [`Core`] that puts four cores side by side and only
//! dispatches between them (DESIGN.md section 3: no protocol decision is
//! taken here):
//!
//! - [`Chain`]: the mserver groups this mserver belongs to, one
//!   [`CoreSet`] per level of the hierarchy (`docs/hierarchy.md`;
//!   [`ProtocolId::CoreSet`]);
//! - [`Registration`]: the soft-state registration with the LAN's mcaster
//!   ([`ProtocolId::Mcaster`]), when there is one to register with: one
//!   registration for every group of the chain;
//! - [`Rpc`]: the admin procedures of [`crate::mserver::admin`] for `msctl`
//!   ([`ProtocolId::Rpc`]). `view` is answered from
//!   [`CoreSet::snapshot`] of the level asked, `tree` from every level;
//!   `leave` starts [`Chain::leave`] and is answered when the leave is
//!   over; `fault` is handed to the daemon ([`NodeEvent::FaultRequested`]),
//!   which owns the socket's interceptor and answers with
//!   [`MserverNode::answer_fault`];
//! - [`AppService`]: the application groups (seed 003, chapter II): the
//!   procedures of [`crate::appgroup::link`] on the same RPC
//!   endpoint, fed with level 1's `ViewInstalled` and `AppCommitted`
//!   events in the order they happen.

use crate::appgroup::service::{AppService, AppServiceConfig, InstalledView, ServiceCtx};
use crate::coreset::{ChangeState, CoreSet, CoreSetEvent, Member, ViewSnapshot};
use crate::id::{CommitPosition, NodeId, ProtocolId};
use crate::mcaster_reg::{Registration, RegistrationEvent};
use crate::mserver::access::AdminPolicy;
use crate::mserver::admin::{
    self, AddParentRequest, DelParentRequest, FaultReply, FaultRequest, GroupInfo, HeldDownInfo,
    LeaveReply, StatsReply, TreeReply, ViewReply, ViewRequest, PROC_ADD_PARENT, PROC_DEL_PARENT,
    PROC_FAULT, PROC_LEAVE, PROC_STATS, PROC_TREE, PROC_VIEW,
};
use crate::mserver::events::{EventLog, EventsRequest, PROC_EVENTS};
use crate::mserver::keys::{key_infos, KeyOp, KeysReply, KeysRequest, PROC_KEYS};
use crate::mserver::rollout::{KeyRollout, Receivers};
use crate::rpc::{CallError, CallId, HandlerResult, RequestToken, Rpc, RpcEvent};
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::{earliest, Instant};
use crate::tree::{Chain, ChainEvent, TreeError, TreeRequest};
use crate::wire::{decode_body, encode_body, KeyRing};
use std::collections::VecDeque;

/// Most admin requests waiting for an answer at once (further ones are
/// answered with an error at once).
pub const MAX_PENDING_ADMIN: usize = 64;

/// What the node reports to the daemon.
#[derive(Debug)]
pub enum NodeEvent {
    /// From the chain of core-sets (one per level).
    Chain(ChainEvent),
    /// Every level of the chain has left ([`MserverNode::leave`] or
    /// `msctl leave` is over) and the mcaster registrations are being
    /// withdrawn: the daemon exits once they are (or after a grace).
    Left,
    /// From the mcaster registration.
    Registration(RegistrationEvent),
    /// `msctl fault`: apply `request` to the socket's fault interceptor and
    /// answer with [`MserverNode::answer_fault`].
    FaultRequested {
        /// Pass back to [`MserverNode::answer_fault`].
        token: RequestToken,
        /// What to apply.
        request: FaultRequest,
    },
    /// `msctl leave` was asked (the leave is under way).
    LeaveRequested,
    /// A key change committed (`msctl keys install|use|remove`): every
    /// member's ring is now `ring`. The daemon hands it to its sockets (and
    /// persists it); the datagrams sealed after this use its signing key.
    KeyRingChanged {
        /// The ring in force from this commit on.
        ring: KeyRing,
        /// Where in the core-set's history it committed.
        at: CommitPosition,
    },
    /// `msctl stats`: add the socket's counters to `reply` and answer with
    /// [`MserverNode::answer_stats`].
    StatsRequested {
        /// Pass back to [`MserverNode::answer_stats`].
        token: RequestToken,
        /// The node's part of the answer (the core-set counters).
        reply: StatsReply,
    },
}

/// What the application-group service is to be given, in the order it
/// happened.
enum AppInput {
    View {
        number: u64,
        members: Vec<Member>,
        joined: Vec<Member>,
        merged: bool,
    },
    Committed {
        view: CommitPosition,
        payloads: Vec<Vec<u8>>,
    },
    Excluded,
    Request {
        token: RequestToken,
        from: NodeId,
        procedure: u16,
        body: Vec<u8>,
    },
    CallDone {
        id: CallId,
        result: Result<Vec<u8>, CallError>,
    },
}

/// The mserver's composite core (see the module docs).
pub struct MserverNode {
    chain: Chain,
    apps: AppService,
    app_inputs: VecDeque<AppInput>,
    registration: Option<Registration>,
    rpc: Rpc,
    transmits: VecDeque<Transmit>,
    events: VecDeque<NodeEvent>,
    group_addr: NodeId,
    leave_waiters: Vec<RequestToken>,
    /// Our leave committed: withdraw the mcaster registration.
    deregister: bool,
    /// [`NodeEvent::Left`] was reported.
    left: bool,
    pending_admin: Vec<(RequestToken, u16, Vec<u8>, Option<NodeId>)>,
    pending_replies: Vec<(RequestToken, Vec<u8>)>,
    admin_dropped: u64,
    /// Who may change things (`leave`, `fault`, `keys`).
    policy: AdminPolicy,
    /// The cluster key ring as committed (`None`: no authentication).
    ring: Option<KeyRing>,
    /// The UDP peer of the RPC datagram being handled (admin access).
    rpc_peer: Option<NodeId>,
    /// `keys` changes waiting for their commit.
    key_waiters: Vec<(RequestToken, KeyOp)>,
    /// `keys` changes committed, to be answered.
    key_replies: Vec<(RequestToken, Option<String>)>,
    /// Where the last commit stands (for `keys` replies).
    last_commit: CommitPosition,
    /// View changes and failure detections (`msctl events`, the status
    /// page).
    log: EventLog,
    /// Operator tree requests waiting for their answer, by request id.
    tree_waiters: std::collections::BTreeMap<u64, RequestToken>,
    /// The next tree request id.
    next_tree_request: u64,
    /// Committed rings on their way to the sockets, MIs and mcaster.
    rollout: KeyRollout,
}

impl MserverNode {
    /// Puts the cores together. `registration` is `None` when the
    /// mserver neither needs nor serves an mcaster; it registers every
    /// group of the chain under that group's name.
    pub fn new(
        now: Instant,
        chain: Chain,
        registration: Option<Registration>,
        mut rpc: Rpc,
    ) -> Self {
        for procedure in [
            PROC_VIEW,
            PROC_LEAVE,
            PROC_FAULT,
            PROC_STATS,
            PROC_KEYS,
            PROC_EVENTS,
            PROC_TREE,
            PROC_ADD_PARENT,
            PROC_DEL_PARENT,
        ]
        .into_iter()
        .chain(AppService::PROCEDURES)
        {
            rpc.register(procedure, |_, _| HandlerResult::Deferred);
        }
        let (query_interval, reply_timeout, retries) = chain.base().monitor_timings();
        let group_addr = chain.config().level1.group_addr;
        let apps = AppService::new(AppServiceConfig::new(
            chain.base().me(),
            query_interval,
            reply_timeout,
            retries,
        ));
        // A change that lasts longer than this is stuck (`/readyz`): four
        // times the longest a change's phase may wait, at least 5 s.
        let stuck_after = (reply_timeout * (retries + 1) * 4 + query_interval)
            .max(std::time::Duration::from_secs(5));
        let mut node = MserverNode {
            chain,
            apps,
            app_inputs: VecDeque::new(),
            registration,
            rpc,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            group_addr,
            leave_waiters: Vec::new(),
            deregister: false,
            left: false,
            pending_admin: Vec::new(),
            pending_replies: Vec::new(),
            admin_dropped: 0,
            policy: AdminPolicy::open(),
            ring: None,
            rpc_peer: None,
            key_waiters: Vec::new(),
            key_replies: Vec::new(),
            last_commit: CommitPosition::default(),
            log: EventLog::new(1, stuck_after),
            tree_waiters: std::collections::BTreeMap::new(),
            next_tree_request: 1,
            rollout: KeyRollout::default(),
        };
        let group = node.chain.base().group_name().to_string();
        if let Some(reg) = node.registration.as_mut() {
            reg.join(now, group_addr, &group);
        }
        node.pump(now);
        node
    }

    /// Sets the admin access policy (the daemon's `--allow-faults`,
    /// `--admin-from` and whether it has a ring) and the key ring it
    /// started with. Without this call everything is allowed (the
    /// simulator, the benchmarks) and there is no ring.
    pub fn with_security(mut self, policy: AdminPolicy, ring: Option<KeyRing>) -> Self {
        self.policy = policy;
        self.rollout = KeyRollout::new(ring.clone());
        self.ring = ring;
        self
    }

    /// The cluster key ring as committed.
    pub fn key_ring(&self) -> Option<&KeyRing> {
        self.ring.as_ref()
    }

    /// Sets the ring without a commit (SIGHUP reloaded the key file on
    /// this member only).
    pub fn set_key_ring(&mut self, ring: Option<KeyRing>) {
        self.rollout.set_applied(ring.clone());
        self.ring = ring;
    }

    /// Level 1's core-set (the mserver's own LAN group).
    pub fn coreset(&self) -> &CoreSet {
        self.chain.base()
    }

    /// The chain of core-sets, one per level.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// The registration, if any.
    pub fn registration(&self) -> Option<&Registration> {
        self.registration.as_ref()
    }

    /// The RPC endpoint.
    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// The application-group service.
    pub fn apps(&self) -> &AppService {
        &self.apps
    }

    /// The event log (view changes, failure detections).
    pub fn events(&self) -> &EventLog {
        &self.log
    }

    /// Whether this mserver is in a view and not stuck in a change
    /// (`/readyz`); `Err` says why not.
    pub fn ready(&self, now: Instant) -> Result<(), String> {
        self.log.ready(now, self.chain.base())
    }

    /// Admin requests refused because too many were pending.
    pub fn admin_dropped(&self) -> u64 {
        self.admin_dropped
    }

    /// Starts a graceful leave of every level (SIGTERM). A
    /// [`NodeEvent::Left`] follows once all of them are over.
    ///
    /// The mcaster registrations are withdrawn only once each leave change
    /// committed: the change's own multicasts travel through the mcaster,
    /// which drops group traffic from members it no longer knows.
    pub fn leave(&mut self, now: Instant) {
        self.chain.leave(now);
        self.pump(now);
    }

    /// How long a graceful leave of every level may take (the daemon's
    /// backstop; see [`Chain::leave_budget`]).
    pub fn leave_budget(&self) -> std::time::Duration {
        self.chain.leave_budget()
    }

    /// Answers a [`NodeEvent::FaultRequested`].
    pub fn answer_fault(&mut self, now: Instant, token: RequestToken, reply: FaultReply) {
        match encode_body(&reply) {
            Ok(body) => {
                self.rpc.respond(now, token, body);
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode a fault reply"),
        }
        self.pump(now);
    }

    /// Answers a [`NodeEvent::StatsRequested`].
    pub fn answer_stats(&mut self, now: Instant, token: RequestToken, reply: StatsReply) {
        match encode_body(&reply) {
            Ok(body) => {
                self.rpc.respond(now, token, body);
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode a stats reply"),
        }
        self.pump(now);
    }

    /// The `msctl view` answer for level 1.
    pub fn view_reply(&self, now: Instant) -> ViewReply {
        view_reply(&self.chain.base().snapshot(now))
    }

    /// The `msctl view --level N` answer (`None`: this mserver is not in a
    /// group of that level).
    pub fn view_reply_at(&self, now: Instant, level: u8) -> Option<ViewReply> {
        self.chain
            .level(level)
            .map(|c| view_reply(&c.snapshot(now)))
    }

    /// The `msctl tree` answer: every level's view, lowest first, and what
    /// the chain is doing.
    pub fn tree_reply(&self, now: Instant) -> TreeReply {
        let levels = (1..=self.chain.top())
            .filter_map(|l| self.view_reply_at(now, l))
            .collect();
        let top = self.chain.top();
        let parentless = self
            .chain
            .level(top)
            .and_then(CoreSet::table)
            .is_some_and(|t| t.tree.parent_group.is_some() && t.tree.parents().is_empty());
        TreeReply {
            levels,
            task: self.chain.task_kind().map(str::to_string),
            standby: self
                .chain
                .standby()
                .map(|(level, reason)| format!("level {level}: {reason}")),
            configured_levels: self.chain.config().top(),
            parentless,
        }
    }

    fn keys_reply(&self, now: Instant, error: Option<String>) -> KeysReply {
        let v = self.chain.base().snapshot(now);
        KeysReply {
            error,
            member: v.me.addr.to_string(),
            view: v.view.number,
            commit: v.view.seq,
            keys: key_infos(self.ring.as_ref()),
        }
    }

    fn respond_keys(&mut self, now: Instant, token: RequestToken, error: Option<String>) {
        if let Ok(body) = encode_body(&self.keys_reply(now, error)) {
            self.rpc.respond(now, token, body);
        }
    }

    fn on_keys(&mut self, now: Instant, token: RequestToken, body: &[u8], peer: Option<NodeId>) {
        let op = match decode_body::<KeysRequest>(body) {
            Ok(KeysRequest::List) => return self.respond_keys(now, token, None),
            Ok(KeysRequest::Change(op)) => op,
            Err(e) => {
                return self.respond_keys(now, token, Some(format!("unreadable request: {e}")))
            }
        };
        if let Err(e) = self.may_change(peer) {
            return self.respond_keys(now, token, Some(e));
        }
        if self.key_waiters.len() >= MAX_PENDING_ADMIN {
            self.admin_dropped += 1;
            return self.respond_keys(now, token, Some("too many key changes pending".into()));
        }
        match self.submit_key_op_inner(now, op.clone()) {
            Ok(()) => self.key_waiters.push((token, op)),
            Err(e) => self.respond_keys(now, token, Some(e)),
        }
    }

    /// Submits a key change for the core-set to commit (checked against
    /// the current ring first); every member then reports
    /// [`NodeEvent::KeyRingChanged`] at the same commit position.
    pub fn submit_key_op(&mut self, now: Instant, op: KeyOp) -> Result<(), String> {
        let r = self.submit_key_op_inner(now, op);
        self.pump(now);
        r
    }

    fn submit_key_op_inner(&mut self, now: Instant, op: KeyOp) -> Result<(), String> {
        let Some(ring) = self.ring.as_ref() else {
            return Err(
                "this mserver has no cluster key ring (start it with --cluster-key or --key-file)"
                    .into(),
            );
        };
        op.apply(ring).map_err(|e| e.to_string())?;
        let r = self
            .chain
            .base_mut()
            .submit_app(now, op.to_payload())
            .map_err(|e| format!("the group cannot take the change now: {e}"));
        self.chain.flush(now);
        r
    }

    fn may_change(&self, peer: Option<NodeId>) -> Result<(), String> {
        match peer {
            Some(p) => self.policy.may_change(p.addr().ip()),
            None if self.policy.keyed => Ok(()),
            None => Err("refused: the caller's address is unknown".into()),
        }
    }

    /// Applies the key ops of one commit (every member, same order), and
    /// answers the `keys` requests they complete.
    fn apply_key_ops(&mut self, at: CommitPosition, ops: Vec<KeyOp>) {
        for op in ops {
            let result = match self.ring.as_ref() {
                Some(r) => op.apply(r).map_err(|e| e.to_string()),
                None => Err("no key ring".to_string()),
            };
            let error = match result {
                Ok(ring) => {
                    tracing::info!(?op, ids = ?ring.ids(), "key ring change committed");
                    self.ring = Some(ring.clone());
                    self.rollout.committed(at, ring);
                    None
                }
                Err(e) => {
                    tracing::warn!(?op, error = %e, "a committed key change does not apply here");
                    Some(e)
                }
            };
            let (done, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.key_waiters)
                .into_iter()
                .partition(|(_, w)| *w == op);
            self.key_waiters = rest;
            for (token, _) in done {
                self.key_replies.push((token, error.clone()));
            }
        }
    }

    fn on_admin(
        &mut self,
        now: Instant,
        token: RequestToken,
        procedure: u16,
        body: &[u8],
        peer: Option<NodeId>,
    ) {
        match procedure {
            PROC_KEYS => self.on_keys(now, token, body, peer),
            PROC_LEAVE if self.may_change(peer).is_err() => {
                let refused = self.may_change(peer).err();
                if let Ok(body) = encode_body(&LeaveReply {
                    committed: false,
                    refused,
                }) {
                    self.rpc.respond(now, token, body);
                }
            }
            PROC_FAULT if self.fault_refusal(peer).is_some() => {
                let reply = FaultReply {
                    error: self.fault_refusal(peer),
                    now: String::new(),
                };
                if let Ok(body) = encode_body(&reply) {
                    self.rpc.respond(now, token, body);
                }
            }
            PROC_VIEW => {
                // An empty request is level 1 (the msctl of one level).
                let level = if body.is_empty() {
                    Ok(1)
                } else {
                    decode_body::<ViewRequest>(body).map(|r| r.level.max(1))
                };
                let reply = match level {
                    Ok(level) => self.view_reply_at(now, level).ok_or_else(|| {
                        format!(
                            "no level {level}: this mserver belongs to levels 1 to {}",
                            self.chain.top()
                        )
                    }),
                    Err(e) => Err(format!("unreadable request: {e}")),
                };
                let reply: Result<ViewReply, String> = reply;
                if let Ok(body) = encode_body(&reply) {
                    self.rpc.respond(now, token, body);
                }
            }
            PROC_TREE => {
                if let Ok(body) = encode_body(&self.tree_reply(now)) {
                    self.rpc.respond(now, token, body);
                }
            }
            PROC_ADD_PARENT | PROC_DEL_PARENT => {
                self.on_tree_request(now, token, procedure, body, peer)
            }
            PROC_LEAVE => {
                if self.leave_waiters.len() >= MAX_PENDING_ADMIN {
                    self.admin_dropped += 1;
                    return;
                }
                self.leave_waiters.push(token);
                if self.leave_waiters.len() == 1 {
                    self.events.push_back(NodeEvent::LeaveRequested);
                    self.chain.leave(now);
                }
            }
            PROC_FAULT => match decode_body::<FaultRequest>(body) {
                Ok(request) => self
                    .events
                    .push_back(NodeEvent::FaultRequested { token, request }),
                Err(e) => {
                    let reply = FaultReply {
                        error: Some(format!("unreadable request: {e}")),
                        now: String::new(),
                    };
                    if let Ok(body) = encode_body(&reply) {
                        self.rpc.respond(now, token, body);
                    }
                }
            },
            PROC_EVENTS => match decode_body::<EventsRequest>(body) {
                Ok(req) => {
                    if let Some(reply) = self.log.request(now, token, &req) {
                        if let Ok(body) = encode_body(&reply) {
                            self.rpc.respond(now, token, body);
                        }
                    }
                }
                Err(_) => self.admin_dropped += 1,
            },
            PROC_STATS => {
                let mut coreset = crate::mserver::admin::counters_of(self.chain.base().stats());
                let chain = self.chain.stats();
                for (name, value) in [
                    ("chain.wrong_group", chain.wrong_group),
                    ("chain.parent_tasks_done", chain.parent_tasks_done),
                    ("chain.parent_tasks_failed", chain.parent_tasks_failed),
                    ("chain.step_downs", chain.step_downs),
                ] {
                    coreset.insert(name.to_string(), value);
                }
                let reply = StatsReply {
                    coreset,
                    ..StatsReply::default()
                };
                self.events
                    .push_back(NodeEvent::StatsRequested { token, reply });
            }
            _ => self.admin_dropped += 1,
        }
    }

    /// `add-parent`, `del-parent`, `leave --level N`: checked for access
    /// and shape here, handed to the chain, answered on its
    /// [`ChainEvent::RequestDone`].
    fn on_tree_request(
        &mut self,
        now: Instant,
        token: RequestToken,
        procedure: u16,
        body: &[u8],
        peer: Option<NodeId>,
    ) {
        let request = match procedure {
            PROC_ADD_PARENT => decode_body::<AddParentRequest>(body)
                .map_err(|e| format!("unreadable request: {e}"))
                .and_then(|r| r.group.parse().map_err(|e| format!("{:?}: {e}", r.group)))
                .map(TreeRequest::AddParent),
            _ => decode_body::<DelParentRequest>(body)
                .map_err(|e| format!("unreadable request: {e}"))
                .map(|r| TreeRequest::LeaveFrom(r.level)),
        };
        if let Err(e) = self.may_change(peer) {
            return self.respond_tree(now, token, Err(TreeError::Denied(e)));
        }
        match request {
            Err(e) => self.respond_tree(now, token, Err(TreeError::BadRequest(e))),
            Ok(_) if self.tree_waiters.len() >= MAX_PENDING_ADMIN => {
                self.admin_dropped += 1;
                self.respond_tree(now, token, Err(TreeError::Busy(self.tree_waiters.len())));
            }
            Ok(request) => {
                let id = self.next_tree_request;
                self.next_tree_request += 1;
                self.tree_waiters.insert(id, token);
                self.chain.request(now, id, request);
            }
        }
    }

    fn respond_tree(
        &mut self,
        now: Instant,
        token: RequestToken,
        result: Result<ViewReply, TreeError>,
    ) {
        if let Ok(body) = encode_body(&result) {
            self.rpc.respond(now, token, body);
        }
    }

    fn fault_refusal(&self, peer: Option<NodeId>) -> Option<String> {
        if !self.policy.allow_faults {
            return Some(crate::mserver::access::FAULTS_OFF.to_string());
        }
        self.may_change(peer).err()
    }

    /// Moves everything the inner cores produced to our queues, handling
    /// admin requests and answering `leave` once it is over.
    fn drain(&mut self, now: Instant) {
        let mut admin = Vec::new();
        loop {
            let mut progressed = false;
            // The registration's datagrams go first: an mcaster must know us
            // before our first group message reaches it (it drops group
            // traffic from non-members), or the first join request is lost.
            if let Some(reg) = self.registration.as_mut() {
                while let Some(t) = reg.poll_transmit() {
                    self.transmits.push_back(t);
                    progressed = true;
                }
            }
            self.chain.flush(now);
            // The chain's events first: a level it adds must be registered
            // with the mcaster (`JoinGroup`) before the level's first join
            // request leaves, or the mcaster drops it and the join waits a
            // reply timeout (as at level 1, above).
            while let Some(e) = self.chain.poll_event() {
                progressed = true;
                self.on_chain_event(now, &e);
                self.events.push_back(NodeEvent::Chain(e));
            }
            if let Some(reg) = self.registration.as_mut() {
                while let Some(t) = reg.poll_transmit() {
                    self.transmits.push_back(t);
                    progressed = true;
                }
            }
            while let Some(t) = self.chain.poll_transmit() {
                self.transmits.push_back(t);
                progressed = true;
            }
            if self.chain.has_left() && !self.left {
                self.left = true;
                self.finish_leave(true);
                self.deregister = true;
                self.events.push_back(NodeEvent::Left);
                progressed = true;
            }
            if let Some(reg) = self.registration.as_mut() {
                while let Some(e) = reg.poll_event() {
                    self.events.push_back(NodeEvent::Registration(e));
                    progressed = true;
                }
            }
            while let Some(t) = self.rpc.poll_transmit() {
                self.transmits.push_back(t);
                progressed = true;
            }
            while let Some(e) = self.rpc.poll_event() {
                progressed = true;
                match e {
                    RpcEvent::Request {
                        token,
                        from,
                        procedure,
                        body,
                        ..
                    } => {
                        if AppService::PROCEDURES.contains(&procedure.0) {
                            self.app_inputs.push_back(AppInput::Request {
                                token,
                                from,
                                procedure: procedure.0,
                                body,
                            });
                        } else {
                            admin.push((token, procedure.0, body, self.rpc_peer));
                        }
                    }
                    RpcEvent::CallCompleted { id, result, .. } if self.apps.owns_call(id) => {
                        self.app_inputs.push_back(AppInput::CallDone { id, result });
                    }
                    _ => {}
                }
            }
            if !progressed {
                break;
            }
        }
        self.pending_admin.extend(admin);
    }

    /// What the node itself does with a chain event: logs it; feeds level
    /// 1's views and commits to the application groups and the key ring;
    /// keeps one mcaster registration per group of the chain.
    fn on_chain_event(&mut self, now: Instant, event: &ChainEvent) {
        match event {
            ChainEvent::Level {
                level,
                group,
                event,
            } => {
                self.log.on_coreset_event(now, &group.name, *level, event);
                if *level == 1 {
                    self.on_base_event(event);
                }
            }
            ChainEvent::RequestDone { id, result } => {
                if let Some(token) = self.tree_waiters.remove(id) {
                    let reply = result.clone().and_then(|level| {
                        self.view_reply_at(now, level)
                            .ok_or(TreeError::NoSuchLevel {
                                level,
                                top: self.chain.top(),
                            })
                    });
                    if let Ok(body) = encode_body(&reply) {
                        self.pending_replies.push((token, body));
                    }
                }
            }
            ChainEvent::JoinGroup(group) => {
                if let Some(reg) = self.registration.as_mut() {
                    reg.join(now, group.addr, &group.name);
                }
            }
            ChainEvent::LeaveGroup(group) => {
                if let Some(reg) = self.registration.as_mut() {
                    reg.leave(now, group.addr);
                }
            }
            _ => {}
        }
    }

    /// Level 1's events for the application groups and the key ring.
    fn on_base_event(&mut self, event: &CoreSetEvent) {
        match event {
            CoreSetEvent::Left => self.app_inputs.push_back(AppInput::Excluded),
            CoreSetEvent::Excluded { .. } => self.app_inputs.push_back(AppInput::Excluded),
            CoreSetEvent::ViewInstalled {
                view,
                members,
                joined,
                merged,
                ..
            } => self.app_inputs.push_back(AppInput::View {
                number: view.number,
                members: members.clone(),
                joined: joined.clone(),
                merged: *merged,
            }),
            CoreSetEvent::AppCommitted { view, payloads, .. } => {
                // Key changes are the node's; the rest is the
                // application groups'.
                let (keys, apps): (Vec<_>, Vec<_>) = payloads
                    .iter()
                    .cloned()
                    .partition(|p| KeyOp::is_key_payload(p));
                self.last_commit = view.position();
                if !keys.is_empty() {
                    let ops = keys.iter().filter_map(|p| KeyOp::from_payload(p)).collect();
                    self.apply_key_ops(view.position(), ops);
                }
                self.app_inputs.push_back(AppInput::Committed {
                    view: view.position(),
                    payloads: apps,
                })
            }
            _ => {}
        }
    }

    fn finish_leave(&mut self, committed: bool) {
        let waiters = std::mem::take(&mut self.leave_waiters);
        if waiters.is_empty() {
            return;
        }
        if let Ok(body) = encode_body(&LeaveReply {
            committed,
            refused: None,
        }) {
            for token in waiters {
                self.pending_replies.push((token, body.clone()));
            }
        }
    }

    /// Drains the inner cores, then runs the admin requests and replies
    /// collected, until nothing is left.
    fn pump(&mut self, now: Instant) {
        self.drain(now);
        if std::mem::take(&mut self.deregister) {
            if let Some(reg) = self.registration.as_mut() {
                reg.leave(now, self.group_addr);
            }
            self.drain(now);
        }
        // Bounded: a round only has work if the previous one produced new
        // requests, which are finite per input.
        for _ in 0..8 {
            if self.pending_admin.is_empty()
                && self.pending_replies.is_empty()
                && self.key_replies.is_empty()
                && self.app_inputs.is_empty()
            {
                break;
            }
            while let Some(input) = self.app_inputs.pop_front() {
                let ctx = ServiceCtx {
                    coreset: self.chain.base_mut(),
                    rpc: &mut self.rpc,
                };
                match input {
                    AppInput::View {
                        number,
                        members,
                        joined,
                        merged,
                    } => {
                        let view = InstalledView {
                            number,
                            members: &members,
                            joined: &joined,
                            merged,
                        };
                        self.apps.on_view_installed(now, ctx, view)
                    }
                    AppInput::Committed { view, payloads } => {
                        self.apps.on_app_committed(now, ctx, view, payloads)
                    }
                    AppInput::Request {
                        token,
                        from,
                        procedure,
                        body,
                    } => self
                        .apps
                        .on_request(now, ctx, token, from, procedure, &body),
                    AppInput::CallDone { id, result } => {
                        self.apps.on_call_completed(now, ctx, id, result)
                    }
                    AppInput::Excluded => self.apps.on_excluded(now, ctx),
                }
            }
            for (token, body) in std::mem::take(&mut self.pending_replies) {
                self.rpc.respond(now, token, body);
            }
            for (token, error) in std::mem::take(&mut self.key_replies) {
                self.respond_keys(now, token, error);
            }
            for (token, procedure, body, peer) in std::mem::take(&mut self.pending_admin) {
                self.on_admin(now, token, procedure, &body, peer);
            }
            self.drain(now);
        }
        // Committed rings go to the MIs and the mcaster, then (a new
        // signing key once they hold it) to the sockets.
        let step = self.rollout.run(
            now,
            &mut Receivers {
                apps: &mut self.apps,
                rpc: &mut self.rpc,
                registration: self.registration.as_mut(),
            },
        );
        for (ring, at) in step.released {
            self.events
                .push_back(NodeEvent::KeyRingChanged { ring, at });
        }
        if step.pushed {
            self.drain(now);
        }
        // The event log looks at the core-set after every input, and
        // answers the subscribers waiting for an entry.
        self.log.observe(now, self.chain.base());
        self.log.observe_upper(
            now,
            (2..=self.chain.top()).filter_map(|l| self.chain.level(l).map(|c| (l, c))),
        );
        let answers = self.log.poll_answers(now);
        if !answers.is_empty() {
            for (token, reply) in answers {
                if let Ok(body) = encode_body(&reply) {
                    self.rpc.respond(now, token, body);
                }
            }
            self.drain(now);
        }
    }
}

/// Renders a snapshot as the `msctl view --json` object.
pub fn view_reply(s: &ViewSnapshot) -> ViewReply {
    let state = if !s.joined {
        "joining"
    } else {
        match s.state {
            ChangeState::Idle => "idle",
            ChangeState::Changing => "changing",
        }
    };
    ViewReply {
        group: s.group.clone(),
        view: s.view.number,
        commit: s.view.seq,
        coordinator: s.installed.coordinator.to_string(),
        state: state.into(),
        level: s.tree.level,
        parent_group: s.tree.parent_group.as_ref().map(|g| GroupInfo {
            name: g.name.clone(),
            addr: g.addr.to_string(),
        }),
        max_parents: s.tree.max_parents,
        me: admin::member_info(&s.me, &s.tree),
        members: s
            .members
            .iter()
            .map(|m| admin::member_info(m, &s.tree))
            .collect(),
        held_down: s
            .held_down
            .iter()
            .map(|h| HeldDownInfo {
                addr: h.addr.to_string(),
                strikes: h.strikes,
                remaining_ms: h.remaining_ms,
            })
            .collect(),
    }
}

impl Core for MserverNode {
    type Event = NodeEvent;

    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        match packet.protocol {
            ProtocolId::CoreSet => self.chain.handle_packet(now, packet),
            ProtocolId::Rpc => {
                self.rpc_peer = Some(packet.peer);
                self.rpc.handle_packet(now, packet);
                // The requests this datagram completed are collected now,
                // with its peer.
                self.drain(now);
                self.rpc_peer = None;
            }
            ProtocolId::Mcaster => {
                if let Some(reg) = self.registration.as_mut() {
                    reg.handle(now, &packet);
                }
            }
            _ => {}
        }
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.chain.handle_timeout(now);
        self.apps.on_timeout(
            now,
            ServiceCtx {
                coreset: self.chain.base_mut(),
                rpc: &mut self.rpc,
            },
        );
        if let Some(reg) = self.registration.as_mut() {
            reg.handle_timeout(now);
        }
        self.rpc.handle_timeout(now);
        self.pump(now);
    }

    fn handle_unreachable(&mut self, now: Instant, node: NodeId) {
        self.chain.handle_unreachable(now, node);
        self.rpc.handle_unreachable(now, node);
        self.pump(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let reg = self.registration.as_ref().and_then(|r| r.poll_timeout());
        earliest(
            earliest(
                earliest(self.chain.poll_timeout(), reg),
                self.rpc.poll_timeout(),
            ),
            earliest(
                earliest(self.apps.poll_timeout(), self.log.poll_timeout()),
                self.rollout.poll_timeout(),
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coreset::CoreSetConfig;
    use crate::id::Incarnation;
    use crate::mcaster_reg::{ReceiveMode, RegistrationConfig};
    use crate::rpc::RpcConfig;
    use crate::tree::ChainConfig;

    fn node() -> MserverNode {
        let me = NodeId::v4(127, 0, 0, 10, 7200);
        let group = NodeId::v4(239, 255, 70, 1, 7300);
        let inc = Incarnation::from_parts(1_000, [1; 10]);
        let now = Instant::ZERO;
        let chain = Chain::new(
            ChainConfig::one_level(CoreSetConfig::new(me, inc, "lan", group)),
            now,
            1,
        )
        .expect("valid config");
        let reg = Registration::new(RegistrationConfig::new(
            NodeId::v4(127, 0, 0, 1, 7100),
            ReceiveMode::Uc,
        ));
        let rpc = Rpc::new(me, inc, RpcConfig::default(), 2);
        MserverNode::new(now, chain, Some(reg), rpc)
    }

    #[test]
    fn registration_goes_before_the_first_join_request() {
        let mut n = node();
        let protocols: Vec<ProtocolId> =
            std::iter::from_fn(|| n.poll_transmit().map(|t| t.protocol)).collect();
        let first_mcaster = protocols.iter().position(|p| *p == ProtocolId::Mcaster);
        let first_coreset = protocols.iter().position(|p| *p == ProtocolId::CoreSet);
        assert!(
            first_mcaster.is_some() && first_coreset.is_some(),
            "{protocols:?}"
        );
        assert!(first_mcaster < first_coreset, "{protocols:?}");
    }

    #[test]
    fn an_upper_level_is_registered_before_its_first_join_request() {
        use crate::coreset::GroupRef;
        use crate::mcaster_reg::McasterMsg;
        use crate::tree::LevelSettings;
        let me = NodeId::v4(127, 0, 0, 10, 7200);
        let group = NodeId::v4(239, 255, 70, 1, 7300);
        let top = GroupRef::new("top", NodeId::v4(239, 255, 70, 9, 7301)).expect("group");
        let inc = Incarnation::from_parts(1_000, [1; 10]);
        let level1 = CoreSetConfig::new(me, inc, "lan", group);
        let parents = vec![LevelSettings {
            group: top.clone(),
            query_interval: level1.query_interval,
            reply_timeout: level1.reply_timeout,
            retries: level1.retries,
        }];
        let mut now = Instant::ZERO;
        let chain = Chain::new(ChainConfig { level1, parents }, now, 1).expect("valid config");
        let reg = Registration::new(RegistrationConfig::new(
            NodeId::v4(127, 0, 0, 1, 7100),
            ReceiveMode::Uc,
        ));
        let rpc = Rpc::new(me, inc, RpcConfig::default(), 2);
        let mut n = MserverNode::new(now, chain, Some(reg), rpc);
        // Alone, it founds level 1, flags itself and joins `top`: the
        // mcaster must hear of `top` before `top` hears of us.
        let mut registered = false;
        for _ in 0..500 {
            while let Some(t) = n.poll_transmit() {
                match t.protocol {
                    ProtocolId::Mcaster => {
                        if let Ok(McasterMsg::JoinGroup { group, .. }) =
                            decode_body::<McasterMsg>(&t.body)
                        {
                            registered |= group == top.addr;
                        }
                    }
                    ProtocolId::CoreSet if t.destination == top.addr => {
                        assert!(registered, "a datagram to {top} before its registration");
                        return;
                    }
                    _ => {}
                }
            }
            let Some(next) = n.poll_timeout() else { break };
            now = next.max(now);
            n.handle_timeout(now);
        }
        panic!("no datagram to {top} (registered: {registered})");
    }

    #[test]
    fn view_reply_while_joining() {
        let n = node();
        let v = n.view_reply(Instant::ZERO);
        assert_eq!(v.group, "lan");
        assert_eq!(v.state, "joining");
        assert!(v.members.is_empty());
    }

    #[test]
    fn garbage_admin_requests_are_answered_or_dropped() {
        let mut n = node();
        let now = Instant::ZERO;
        // An unknown procedure number is counted, never a panic.
        n.on_admin(now, RequestToken(1), 999, &[1, 2, 3], None);
        assert_eq!(n.admin_dropped(), 1);
        // An unreadable fault request is answered with an error.
        n.on_admin(now, RequestToken(2), PROC_FAULT, &[0xff; 3], None);
        assert!(!n
            .events
            .iter()
            .any(|e| matches!(e, NodeEvent::FaultRequested { .. })));
    }
}
