//! The member interface's composite core, [`MiNode`]: the MI's link to its
//! mserver ([`MiAgent`]) and its local sessions ([`Sessions`]) as one
//! sans-IO [`Core`] (seed 003, section II.B.4 "Member Interfaces"; section
//! II.D for exclusions). The member-interface daemon runs it on the
//! runtime's core driver and only moves frames between its Unix socket and
//! this core; the simulator runs the very same core (`mserver/tests/sim_apps.rs`).
//!
//! The wiring is all there is here: the sessions' requests go to the agent
//! (with the sessions' handles), the agent's answers, views and losses go
//! back to the sessions, and what the sessions send to connections comes
//! out as [`MiNodeEvent::Send`]. Packets, timeouts and unreachability
//! hints go to the agent.

use super::sessions::{ConnId, MembershipId, Op, SessionConfig, SessionOutput, Sessions, ToClient};
use crate::appgroup::agent::{LinkStatus, MiAgent, MiAgentConfig, MiEvent};
use crate::appgroup::{AppError, GroupName};
use crate::id::NodeId;
use crate::rpc::RpcConfig;
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::Instant;
use std::collections::VecDeque;
use uuid::Uuid;

/// What the MI reports to its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MiNodeEvent {
    /// Send `msg` to local connection `conn` (in this order).
    Send {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: ToClient,
    },
    /// The MI is attached to `mserver`.
    Attached {
        /// The mserver.
        mserver: NodeId,
    },
    /// The MI's mserver went silent; it looks for another.
    Detached {
        /// The mserver it had.
        mserver: NodeId,
    },
    /// The mserver handed over the cluster key ring its core-set committed
    /// (`msctl keys`): apply it to the socket, and persist it.
    KeyRing {
        /// The mserver it came from.
        mserver: NodeId,
        /// The ring.
        ring: crate::wire::KeyRing,
    },
    /// A local member was removed without asking (its membership ended
    /// with [`AppError::Excluded`]).
    Lost {
        /// The group.
        group: GroupName,
        /// The member.
        member: Uuid,
    },
}

/// The MI: agent plus local sessions. See the [module docs](self).
pub struct MiNode {
    agent: MiAgent,
    sessions: Sessions,
    events: VecDeque<MiNodeEvent>,
}

impl MiNode {
    /// An MI that starts attaching at once. `agent.op_timeout` is the one
    /// timeout of the local processes' requests.
    pub fn new(
        now: Instant,
        agent: MiAgentConfig,
        sessions: SessionConfig,
        rpc: RpcConfig,
        seed: u64,
    ) -> Self {
        let mut node = MiNode {
            agent: MiAgent::new(now, agent, rpc, seed),
            sessions: Sessions::new(sessions),
            events: VecDeque::new(),
        };
        node.pump(now);
        node
    }

    /// The link to the mserver.
    pub fn agent(&self) -> &MiAgent {
        &self.agent
    }

    /// The local sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Whether the MI can serve its local processes' requests: attached to
    /// an mserver. Otherwise one line saying why (attaching to which
    /// mserver, or when it tries again and whom).
    pub fn ready(&self, now: Instant) -> Result<(), String> {
        match self.agent.link_status() {
            LinkStatus::Attached { .. } => Ok(()),
            LinkStatus::Attaching { to } => {
                Err(format!("not attached to an mserver: attaching to {to}"))
            }
            LinkStatus::Idle { retry_at } => {
                let candidates = self.agent.candidates();
                let who = if candidates.is_empty() {
                    "no mserver known".to_string()
                } else {
                    let shown: Vec<String> =
                        candidates.iter().take(4).map(|c| c.to_string()).collect();
                    let more = candidates.len().saturating_sub(shown.len());
                    let more = if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    };
                    format!("mservers {}{more}", shown.join(", "))
                };
                let wait_ms = retry_at.saturating_duration_since(now).as_millis();
                Err(format!(
                    "not attached to an mserver: none answered yet ({who}); next attempt in {wait_ms} ms"
                ))
            }
        }
    }

    /// Requests in progress (the local processes' and the MI's own, such
    /// as the leaves of closed connections).
    pub fn in_progress(&self) -> usize {
        self.agent.in_progress()
    }

    /// A local connection passed its handshake.
    pub fn open(&mut self, now: Instant, conn: ConnId, client: String) {
        self.sessions.open(conn, client);
        self.pump(now);
    }

    /// Request `id` of local connection `conn`.
    pub fn request(&mut self, now: Instant, conn: ConnId, id: u64, op: Op) {
        self.sessions.request(now, conn, id, op);
        self.pump(now);
    }

    /// Local connection `conn` closed (or was excluded): its memberships
    /// leave. The number of memberships ended.
    pub fn close(&mut self, now: Instant, conn: ConnId) -> usize {
        let n = self.sessions.close(conn);
        self.pump(now);
        n
    }

    /// A view for membership `mid` of `conn` could not be sent: the
    /// membership is excluded.
    pub fn undeliverable(&mut self, now: Instant, conn: ConnId, mid: MembershipId) {
        self.sessions.undeliverable(conn, mid);
        self.pump(now);
    }

    /// Moves requests to the agent and its reports to the sessions until
    /// neither has anything more.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(o) = self.sessions.poll_output() {
                moved = true;
                match o {
                    SessionOutput::Up { handle, request } => {
                        self.agent.request(now, handle, request)
                    }
                    SessionOutput::Send { conn, msg } => {
                        self.events.push_back(MiNodeEvent::Send { conn, msg })
                    }
                }
            }
            while let Some(e) = self.agent.poll_event() {
                moved = true;
                match e {
                    MiEvent::Answered { handle, result } => self.sessions.answered(handle, result),
                    MiEvent::View(v) => self.sessions.view(v),
                    MiEvent::Lost { group, member } => {
                        tracing::warn!(%group, %member, "a local member was removed from its group");
                        self.sessions.lost(&group, member, AppError::Excluded);
                        self.events.push_back(MiNodeEvent::Lost { group, member });
                    }
                    MiEvent::Attached { mserver } => {
                        self.events.push_back(MiNodeEvent::Attached { mserver })
                    }
                    MiEvent::Detached { mserver } => {
                        self.events.push_back(MiNodeEvent::Detached { mserver })
                    }
                    MiEvent::KeyRing { mserver, ring } => self
                        .events
                        .push_back(MiNodeEvent::KeyRing { mserver, ring }),
                }
            }
            if !moved {
                break;
            }
        }
    }
}

impl Core for MiNode {
    type Event = MiNodeEvent;

    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        self.agent.handle_packet(now, packet);
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.agent.handle_timeout(now);
        self.pump(now);
    }

    fn handle_unreachable(&mut self, now: Instant, node: NodeId) {
        self.agent.handle_unreachable(now, node);
        self.pump(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.agent.poll_transmit()
    }

    fn poll_event(&mut self) -> Option<MiNodeEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.agent.poll_timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Incarnation;

    fn node(mservers: Vec<NodeId>) -> MiNode {
        let addr = NodeId::v4(127, 0, 0, 1, 7300);
        let mut config = MiAgentConfig::new(
            addr,
            Incarnation::from_parts(1, [1; 10]),
            Uuid::from_u128(1),
            "host".into(),
        );
        config.mservers = mservers;
        let sessions = SessionConfig {
            host: "host".into(),
            max_inflight: 4,
            max_buffered: 4,
            unix_ms_at_zero: 0,
            seed: 1,
        };
        MiNode::new(Instant::ZERO, config, sessions, RpcConfig::default(), 7)
    }

    #[test]
    fn not_ready_until_attached_with_the_reason_on_one_line() {
        let mserver = NodeId::v4(127, 0, 0, 1, 7200);
        let mut n = node(vec![mserver]);
        // The first attach call went out at once.
        let why = n.ready(Instant::ZERO).expect_err("not attached");
        assert!(why.contains("attaching to 127.0.0.1:7200"), "{why}");
        assert!(!why.contains('\n'), "{why}");
        // Nobody answers: after the call's timeout it waits for the next
        // attempt, and says whom it tries.
        let mut now = Instant::ZERO;
        for _ in 0..100 {
            let Some(t) = n.poll_timeout() else { break };
            now = t;
            n.handle_timeout(now);
            while n.poll_transmit().is_some() {}
            while n.poll_event().is_some() {}
            if matches!(n.agent().link_status(), LinkStatus::Idle { .. }) {
                break;
            }
        }
        let why = n.ready(now).expect_err("not attached");
        assert!(why.starts_with("not attached to an mserver"), "{why}");
        assert!(
            why.contains("127.0.0.1:7200") && !why.contains('\n'),
            "{why}"
        );
        let none = node(Vec::new());
        let why = none.ready(Instant::ZERO).expect_err("no mserver");
        assert!(why.contains("no mserver known"), "{why}");
    }
}
