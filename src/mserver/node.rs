//! The mserver's composite core: what runs on the mserver's one UDP socket.
//!
//! It is a sans-IO [`Core`] that puts three cores side by side and only
//! dispatches between them (DESIGN.md section 3: no protocol decision is
//! taken here):
//!
//! - [`CoreSet`]: the core-set protocol ([`ProtocolId::CoreSet`]);
//! - [`Registration`]: the soft-state registration with the LAN's mcaster
//!   ([`ProtocolId::Mcaster`]), when there is one to register with;
//! - [`Rpc`]: the admin procedures of [`crate::mserver::admin`] for `msctl`
//!   ([`ProtocolId::Rpc`]). `view` is answered from
//!   [`CoreSet::snapshot`]; `leave` starts [`CoreSet::leave`] and is
//!   answered when the leave is over; `fault` is handed to the daemon
//!   ([`NodeEvent::FaultRequested`]), which owns the socket's interceptor
//!   and answers with [`MserverNode::answer_fault`];
//! - [`AppService`]: the application groups (seed 003, chapter II): the
//!   procedures of [`crate::appgroup::link`] on the same RPC
//!   endpoint, fed with the core-set's `ViewInstalled` and `AppCommitted`
//!   events in the order they happen.

use crate::appgroup::service::{AppService, AppServiceConfig, ServiceCtx};
use crate::coreset::{ChangeState, CoreSet, CoreSetEvent, Member, ViewSnapshot};
use crate::id::{CommitPosition, NodeId, ProtocolId};
use crate::mcaster_reg::{Registration, RegistrationEvent};
use crate::mserver::admin::{
    FaultReply, FaultRequest, HeldDownInfo, LeaveReply, MemberInfo, StatsReply, ViewReply,
    PROC_FAULT, PROC_LEAVE, PROC_STATS, PROC_VIEW,
};
use crate::mserver::events::{EventLog, EventsRequest, PROC_EVENTS};
use crate::rpc::{CallError, CallId, HandlerResult, RequestToken, Rpc, RpcEvent};
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::{earliest, Instant};
use crate::wire::{decode_body, encode_body};
use std::collections::VecDeque;

/// Most admin requests waiting for an answer at once (further ones are
/// answered with an error at once).
pub const MAX_PENDING_ADMIN: usize = 64;

/// What the node reports to the daemon.
#[derive(Debug)]
pub enum NodeEvent {
    /// From the core-set protocol.
    CoreSet(CoreSetEvent),
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
    coreset: CoreSet,
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
    pending_admin: Vec<(RequestToken, u16, Vec<u8>)>,
    pending_replies: Vec<(RequestToken, Vec<u8>)>,
    admin_dropped: u64,
    /// View changes and failure detections (`msctl events`, the status
    /// page).
    log: EventLog,
}

impl MserverNode {
    /// Puts the three cores together. `registration` is `None` when the
    /// mserver neither needs nor serves an mcaster. The group name given to
    /// the mcaster is the core-set's.
    pub fn new(
        now: Instant,
        group_addr: NodeId,
        coreset: CoreSet,
        registration: Option<Registration>,
        mut rpc: Rpc,
    ) -> Self {
        for procedure in [PROC_VIEW, PROC_LEAVE, PROC_FAULT, PROC_STATS, PROC_EVENTS]
            .into_iter()
            .chain(AppService::PROCEDURES)
        {
            rpc.register(procedure, |_, _| HandlerResult::Deferred);
        }
        let (query_interval, reply_timeout, retries) = coreset.monitor_timings();
        let apps = AppService::new(AppServiceConfig::new(
            coreset.me(),
            query_interval,
            reply_timeout,
            retries,
        ));
        // A change that lasts longer than this is stuck (`/readyz`): four
        // times the longest a change's phase may wait, at least 5 s.
        let stuck_after = (reply_timeout * (retries + 1) * 4 + query_interval)
            .max(std::time::Duration::from_secs(5));
        let mut node = MserverNode {
            coreset,
            apps,
            app_inputs: VecDeque::new(),
            registration,
            rpc,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            group_addr,
            leave_waiters: Vec::new(),
            deregister: false,
            pending_admin: Vec::new(),
            pending_replies: Vec::new(),
            admin_dropped: 0,
            log: EventLog::new(1, stuck_after),
        };
        let group = node.coreset.snapshot(now).group;
        if let Some(reg) = node.registration.as_mut() {
            reg.join(now, group_addr, &group);
        }
        node.pump(now);
        node
    }

    /// The core-set core.
    pub fn coreset(&self) -> &CoreSet {
        &self.coreset
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
        self.log.ready(now, &self.coreset)
    }

    /// Admin requests refused because too many were pending.
    pub fn admin_dropped(&self) -> u64 {
        self.admin_dropped
    }

    /// Starts a graceful leave (SIGTERM). A [`CoreSetEvent::Left`] follows.
    ///
    /// The mcaster registration is withdrawn only once the leave change
    /// committed: the change's own multicasts travel through the mcaster,
    /// which drops group traffic from members it no longer knows.
    pub fn leave(&mut self, now: Instant) {
        self.coreset.leave(now);
        self.pump(now);
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

    /// The `msctl view` answer.
    pub fn view_reply(&self, now: Instant) -> ViewReply {
        view_reply(&self.coreset.snapshot(now))
    }

    fn on_admin(&mut self, now: Instant, token: RequestToken, procedure: u16, body: &[u8]) {
        match procedure {
            PROC_VIEW => {
                if let Ok(reply) = encode_body(&self.view_reply(now)) {
                    self.rpc.respond(now, token, reply);
                }
            }
            PROC_LEAVE => {
                if self.leave_waiters.len() >= MAX_PENDING_ADMIN {
                    self.admin_dropped += 1;
                    return;
                }
                self.leave_waiters.push(token);
                if self.leave_waiters.len() == 1 {
                    self.events.push_back(NodeEvent::LeaveRequested);
                    self.coreset.leave(now);
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
                let reply = StatsReply {
                    coreset: crate::mserver::admin::counters_of(self.coreset.stats()),
                    ..StatsReply::default()
                };
                self.events
                    .push_back(NodeEvent::StatsRequested { token, reply });
            }
            _ => self.admin_dropped += 1,
        }
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
            while let Some(t) = self.coreset.poll_transmit() {
                self.transmits.push_back(t);
                progressed = true;
            }
            while let Some(e) = self.coreset.poll_event() {
                progressed = true;
                self.log
                    .on_coreset_event(now, self.coreset.group_name(), &e);
                match &e {
                    CoreSetEvent::Left => {
                        self.finish_leave(true);
                        self.deregister = true;
                        self.app_inputs.push_back(AppInput::Excluded);
                    }
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
                        self.app_inputs.push_back(AppInput::Committed {
                            view: view.position(),
                            payloads: payloads.clone(),
                        })
                    }
                    _ => {}
                }
                self.events.push_back(NodeEvent::CoreSet(e));
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
                            admin.push((token, procedure.0, body));
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

    fn finish_leave(&mut self, committed: bool) {
        let waiters = std::mem::take(&mut self.leave_waiters);
        if waiters.is_empty() {
            return;
        }
        if let Ok(body) = encode_body(&LeaveReply { committed }) {
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
                && self.app_inputs.is_empty()
            {
                break;
            }
            while let Some(input) = self.app_inputs.pop_front() {
                let ctx = ServiceCtx {
                    coreset: &mut self.coreset,
                    rpc: &mut self.rpc,
                };
                match input {
                    AppInput::View {
                        number,
                        members,
                        joined,
                        merged,
                    } => self
                        .apps
                        .on_view_installed(now, ctx, number, &members, &joined, merged),
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
            for (token, procedure, body) in std::mem::take(&mut self.pending_admin) {
                self.on_admin(now, token, procedure, &body);
            }
            self.drain(now);
        }
        // The event log looks at the core-set after every input, and
        // answers the subscribers waiting for an entry.
        self.log.observe(now, &self.coreset);
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

fn member_info(m: &Member) -> MemberInfo {
    MemberInfo {
        rank: m.rank,
        addr: m.addr.to_string(),
        incarnation: m.incarnation.to_string(),
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
        me: member_info(&s.me),
        members: s.members.iter().map(member_info).collect(),
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
            ProtocolId::CoreSet => self.coreset.handle_packet(now, packet),
            ProtocolId::Rpc => self.rpc.handle_packet(now, packet),
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
        self.coreset.handle_timeout(now);
        self.apps.on_timeout(
            now,
            ServiceCtx {
                coreset: &mut self.coreset,
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
        self.coreset.handle_unreachable(now, node);
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
                earliest(self.coreset.poll_timeout(), reg),
                self.rpc.poll_timeout(),
            ),
            earliest(self.apps.poll_timeout(), self.log.poll_timeout()),
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

    fn node() -> MserverNode {
        let me = NodeId::v4(127, 0, 0, 10, 7200);
        let group = NodeId::v4(239, 255, 70, 1, 7300);
        let inc = Incarnation::from_parts(1_000, [1; 10]);
        let now = Instant::ZERO;
        let coreset =
            CoreSet::new(CoreSetConfig::new(me, inc, "lan", group), now, 1).expect("valid config");
        let reg = Registration::new(RegistrationConfig::new(
            NodeId::v4(127, 0, 0, 1, 7100),
            ReceiveMode::Uc,
        ));
        let rpc = Rpc::new(me, inc, RpcConfig::default(), 2);
        MserverNode::new(now, group, coreset, Some(reg), rpc)
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
        n.on_admin(now, RequestToken(1), 999, &[1, 2, 3]);
        assert_eq!(n.admin_dropped(), 1);
        // An unreadable fault request is answered with an error.
        n.on_admin(now, RequestToken(2), PROC_FAULT, &[0xff; 3]);
        assert!(!n
            .events
            .iter()
            .any(|e| matches!(e, NodeEvent::FaultRequested { .. })));
    }
}
