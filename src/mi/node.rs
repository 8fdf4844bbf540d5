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
use crate::appgroup::agent::{MiAgent, MiAgentConfig, MiEvent};
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
