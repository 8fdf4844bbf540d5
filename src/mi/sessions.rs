//! The member interface's local sessions: the rules between the application
//! processes of one host and the MI's link to its mserver (seed 003, section
//! II.B.4 "Member Interfaces": a process hands its requests to the MI of its
//! host and receives every view of its groups from it; section II.D for the
//! members a partition excludes; `docs/appgroups-design.md`, "Views to
//! processes"). Sans-IO: the daemon (or the simulator) hands it the
//! requests and closes of numbered connections, and the agent's answers,
//! views and losses; it answers with messages for connections and requests
//! for the agent ([`SessionOutput`]). It never reads a clock: member ids are
//! minted from the `now` it is given, a seed and a counter ([`MemberIds`]).
//!
//! - **Memberships** belong to the connection that joined: a
//!   [`MembershipId`] per join (a counter per connection) names the group,
//!   the member's id and the last view number delivered. Joining a group
//!   twice on one connection is [`AppError::AlreadyMember`], leaving an
//!   unknown membership (or one whose join is in flight)
//!   [`AppError::NotMember`], both without asking the agent. At most
//!   [`SessionConfig::max_inflight`] requests per connection are in flight
//!   ([`AppError::Busy`] beyond).
//! - **Views** go to every local membership of their group whose last
//!   delivered number is lower, in order, and never before the `Joined`
//!   answer of that membership: views that arrive while a join is in flight
//!   wait for its answer (at most [`SessionConfig::max_buffered`]; beyond
//!   that the membership ends [`AppError::Excluded`] once joined). A member
//!   the agent reports lost ends with `Event::Ended`.
//! - **Closes.** A connection that closes (the process died, or the daemon
//!   excluded it for not reading) leaves every group it joined at once: one
//!   `Leave` per membership, whose answer nobody waits for. A join answered
//!   after its connection closed is left too.
//! - **Time.** There is no timer here: every request is answered by the
//!   agent, which owns the one request timeout
//!   ([`MiAgentConfig::op_timeout`](crate::appgroup::agent::MiAgentConfig::op_timeout)).

use crate::appgroup::agent::{MiAnswer, MiRequest};
use crate::appgroup::{
    AppError, AppMember, AppView, GroupName, GroupOptions, MemberInfo, MemberName,
};
use crate::time::Instant;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use uuid::Uuid;

/// A local connection, numbered by the daemon (or the simulation).
pub type ConnId = u64;

/// Identifies one membership (one process's presence in one group) on one
/// connection; the MI chooses it when the join succeeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MembershipId(pub u64);

/// What a client asks of its MI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Create an application group -> [`Reply::Created`]; errors
    /// [`AppError::NameTaken`], [`AppError::InvalidOptions`].
    CreateGroup {
        /// Its name, unique under `options.name_scope`.
        name: GroupName,
        /// Scopes and partition rules.
        options: GroupOptions,
    },
    /// Join a group -> [`Reply::Joined`]; errors [`AppError::NoSuchGroup`],
    /// [`AppError::NameTaken`] (a member of that name is in the group),
    /// [`AppError::AlreadyMember`].
    Join {
        /// The group.
        group: GroupName,
        /// The new member's name and kind.
        member: MemberInfo,
    },
    /// Leave a group -> [`Reply::Left`]; error [`AppError::NotMember`].
    Leave {
        /// The membership to end.
        membership_id: MembershipId,
    },
    /// The group's current view -> [`Reply::View`]; error
    /// [`AppError::NoSuchGroup`].
    View {
        /// The group.
        group: GroupName,
    },
    /// A member's address information -> [`Reply::Member`]; errors
    /// [`AppError::NoSuchGroup`], [`AppError::NotMember`] (no member of
    /// that name).
    Lookup {
        /// The group.
        group: GroupName,
        /// The member's name.
        member_name: MemberName,
    },
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The group was created.
    Created,
    /// The join was committed.
    Joined {
        /// The new membership; later views come as [`Event::View`]s with it.
        membership_id: MembershipId,
        /// The joiner as the group sees it (its id and host).
        me: AppMember,
        /// The view that added it.
        view: AppView,
    },
    /// The leave was committed.
    Left,
    /// A group's current view.
    View(AppView),
    /// A member.
    Member(AppMember),
}

/// Something the MI tells the client unasked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A new view of a membership's group (numbers increase by one per
    /// change; each view once, in order).
    View {
        /// The membership.
        membership_id: MembershipId,
        /// The view.
        view: AppView,
    },
    /// A membership ended without the client asking (for example
    /// [`AppError::Excluded`]); no more events for it follow.
    Ended {
        /// The membership.
        membership_id: MembershipId,
        /// Why.
        reason: AppError,
    },
}

/// A message for one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToClient {
    /// The answer to the request with this id.
    Response {
        /// The request's id.
        id: u64,
        /// The answer.
        result: Result<Reply, AppError>,
    },
    /// An unsolicited event.
    Event(Event),
}

/// What the sessions ask their driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionOutput {
    /// Send `msg` to connection `conn`, in this order.
    Send {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: ToClient,
    },
    /// Hand `request` to the agent; its answer comes back through
    /// [`Sessions::answered`] with the same handle.
    Up {
        /// The handle (from 1 up, below `1 << 63`).
        handle: u64,
        /// The request.
        request: MiRequest,
    },
}

/// The sessions' settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// The MI's host name: the `host` of every member joined here.
    pub host: String,
    /// Requests in flight per connection (at least 1).
    pub max_inflight: usize,
    /// Views kept for a membership whose join is in flight (at least 1).
    pub max_buffered: usize,
    /// Unix time, in milliseconds, at the driver's `Instant::ZERO` (the
    /// member ids' timestamps; the daemon reads it once, the simulator
    /// gives 0).
    pub unix_ms_at_zero: u64,
    /// Seed of the member ids' random bits.
    pub seed: u64,
}

/// Mints member ids: UUID v7s whose timestamp is `unix_ms_at_zero + now`,
/// with random bits from a seeded generator; never reads a clock.
#[derive(Debug)]
pub struct MemberIds {
    unix_ms_at_zero: u64,
    rng: ChaCha8Rng,
    minted: u64,
}

impl MemberIds {
    /// A source seeded with `seed`, with `Instant::ZERO` at Unix time
    /// `unix_ms_at_zero` (milliseconds).
    pub fn new(unix_ms_at_zero: u64, seed: u64) -> Self {
        MemberIds {
            unix_ms_at_zero,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x0001_d50f_3e3b),
            minted: 0,
        }
    }

    /// A new id at time `now`.
    pub fn mint(&mut self, now: Instant) -> Uuid {
        let ms = self.unix_ms_at_zero.saturating_add(now.as_micros() / 1_000);
        let mut bits = [0u8; 10];
        self.rng.fill(&mut bits);
        // The counter in the last bytes: two ids of one source never
        // collide, whatever the generator draws.
        self.minted += 1;
        let c = (self.minted as u32).to_be_bytes();
        bits[6..].copy_from_slice(&c);
        uuid::Builder::from_unix_timestamp_millis(ms, &bits).into_uuid()
    }
}

/// Where a membership stands.
#[derive(Debug)]
enum State {
    /// The join is in flight: views of the group wait here for its answer.
    Joining {
        buffered: Vec<AppView>,
        /// The agent removed the member before the answer came.
        lost: Option<AppError>,
        /// Too many views waited: the membership ends once joined.
        overflow: bool,
    },
    /// Joined; the number of the last view delivered.
    Member { last: u64 },
    /// A leave was asked (views are no longer delivered); kept until the
    /// agent confirms, so a close resends it if it failed.
    Leaving,
}

#[derive(Debug)]
struct Mship {
    group: GroupName,
    member: Uuid,
    state: State,
}

/// One connection as the sessions see it.
#[derive(Debug)]
struct Conn {
    client: String,
    next_mid: u64,
    inflight: usize,
    memberships: BTreeMap<MembershipId, Mship>,
}

/// What an agent request was for.
#[derive(Debug)]
enum Pending {
    /// A client's join.
    Join {
        conn: ConnId,
        id: u64,
        mid: MembershipId,
        me: AppMember,
    },
    /// A client's leave.
    Leave {
        conn: ConnId,
        id: u64,
        mid: MembershipId,
    },
    /// A create, view or lookup, answered as is.
    Plain { conn: ConnId, id: u64 },
    /// The leave of a gone member: nobody waits for it.
    Fire { member: Uuid },
}

/// The local sessions of one MI. See the [module docs](self).
#[derive(Debug)]
pub struct Sessions {
    config: SessionConfig,
    ids: MemberIds,
    conns: BTreeMap<ConnId, Conn>,
    by_group: BTreeMap<GroupName, BTreeSet<(ConnId, MembershipId)>>,
    by_member: BTreeMap<Uuid, (ConnId, MembershipId)>,
    pending: BTreeMap<u64, Pending>,
    next_handle: u64,
    out: VecDeque<SessionOutput>,
}

impl Sessions {
    /// No connections yet.
    pub fn new(config: SessionConfig) -> Self {
        let ids = MemberIds::new(config.unix_ms_at_zero, config.seed);
        Sessions {
            config,
            ids,
            conns: BTreeMap::new(),
            by_group: BTreeMap::new(),
            by_member: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_handle: 1,
            out: VecDeque::new(),
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<SessionOutput> {
        self.out.pop_front()
    }

    /// Connections open.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The memberships of `conn` that are joined (not joining or leaving):
    /// `(membership, group, member id)`.
    pub fn memberships(&self, conn: ConnId) -> Vec<(MembershipId, GroupName, Uuid)> {
        self.conns
            .get(&conn)
            .map(|c| {
                c.memberships
                    .iter()
                    .filter(|(_, m)| matches!(m.state, State::Member { .. }))
                    .map(|(mid, m)| (*mid, m.group.clone(), m.member))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Agent requests not answered yet.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    /// A connection passed its handshake: `client` describes it (for logs).
    pub fn open(&mut self, conn: ConnId, client: String) {
        self.conns.insert(
            conn,
            Conn {
                client,
                next_mid: 1,
                inflight: 0,
                memberships: BTreeMap::new(),
            },
        );
    }

    /// Request `id` of connection `conn`.
    pub fn request(&mut self, now: Instant, conn: ConnId, id: u64, op: Op) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.inflight >= self.config.max_inflight.max(1) {
            self.respond(conn, id, Err(AppError::Busy));
            return;
        }
        let (request, pending) = match op {
            Op::Join { group, member } => match self.start_join(now, conn, &group, member) {
                Err(e) => {
                    self.respond(conn, id, Err(e));
                    return;
                }
                Ok((mid, me)) => (
                    MiRequest::Join {
                        group,
                        member: me.clone(),
                    },
                    Pending::Join { conn, id, mid, me },
                ),
            },
            Op::Leave { membership_id } => match self.start_leave(conn, membership_id) {
                Err(e) => {
                    self.respond(conn, id, Err(e));
                    return;
                }
                Ok((group, member)) => (
                    MiRequest::Leave { group, member },
                    Pending::Leave {
                        conn,
                        id,
                        mid: membership_id,
                    },
                ),
            },
            Op::CreateGroup { name, options } => (
                MiRequest::Create {
                    group: name,
                    options,
                },
                Pending::Plain { conn, id },
            ),
            Op::View { group } => (MiRequest::View { group }, Pending::Plain { conn, id }),
            Op::Lookup { group, member_name } => (
                MiRequest::Lookup {
                    group,
                    name: member_name,
                },
                Pending::Plain { conn, id },
            ),
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.inflight += 1;
        }
        self.up(request, pending);
    }

    /// Connection `conn` closed (the process died or dropped its client, or
    /// the driver excluded it): every membership it holds leaves its group.
    /// A join still in flight is left when its answer comes. The number of
    /// memberships ended.
    pub fn close(&mut self, conn: ConnId) -> usize {
        let Some(c) = self.conns.remove(&conn) else {
            return 0;
        };
        let n = c.memberships.len();
        for (mid, m) in c.memberships {
            self.unindex(conn, mid, &m);
            if !matches!(m.state, State::Joining { .. }) {
                self.fire_leave(m.group, m.member);
            }
        }
        if n > 0 {
            tracing::info!(conn, client = %c.client, memberships = n, "process gone: its memberships ended");
        }
        n
    }

    /// A view of membership `mid` of `conn` cannot be sent (it does not fit
    /// in a frame): the membership is excluded rather than miss a view.
    pub fn undeliverable(&mut self, conn: ConnId, mid: MembershipId) {
        let Some(m) = self.conns.get(&conn).and_then(|c| c.memberships.get(&mid)) else {
            return;
        };
        let (group, member) = (m.group.clone(), m.member);
        if self.end(conn, mid, AppError::Excluded) {
            self.fire_leave(group, member);
        }
    }

    /// The agent answered the request with `handle`.
    pub fn answered(&mut self, handle: u64, result: Result<MiAnswer, AppError>) {
        let Some(pending) = self.pending.remove(&handle) else {
            return;
        };
        match pending {
            Pending::Join { conn, id, mid, me } => self.finish_join(conn, id, mid, me, result),
            Pending::Leave { conn, id, mid } => self.finish_leave(conn, id, mid, result),
            Pending::Plain { conn, id } => {
                let result = match result {
                    Ok(MiAnswer::Created) => Ok(Reply::Created),
                    Ok(MiAnswer::View(v)) => Ok(Reply::View(v)),
                    Ok(MiAnswer::Member(m)) => Ok(Reply::Member(m)),
                    Ok(other) => Err(unexpected(&other)),
                    Err(e) => Err(e),
                };
                self.finish(conn, id, result);
            }
            Pending::Fire { member } => {
                tracing::debug!(%member, ?result, "leave of a gone member");
            }
        }
    }

    /// A new view of a group with local members (each once, in order).
    pub fn view(&mut self, view: AppView) {
        let keys: Vec<(ConnId, MembershipId)> = match self.by_group.get(&view.group) {
            Some(set) => set.iter().copied().collect(),
            None => return,
        };
        let cap = self.config.max_buffered.max(1);
        for (conn, mid) in keys {
            let Some(m) = self
                .conns
                .get_mut(&conn)
                .and_then(|c| c.memberships.get_mut(&mid))
            else {
                continue;
            };
            match &mut m.state {
                State::Member { .. } => self.deliver(conn, mid, &view),
                State::Joining {
                    buffered, overflow, ..
                } => {
                    if *overflow {
                        // Ends once joined; nothing more to keep.
                    } else if buffered.len() >= cap {
                        *overflow = true;
                        buffered.clear();
                    } else {
                        buffered.push(view.clone());
                    }
                }
                State::Leaving => {}
            }
        }
    }

    /// A local member was removed without asking (its group did not survive
    /// a partition, or its views could not be caught up): its membership
    /// ends with `reason`.
    pub fn lost(&mut self, group: &GroupName, member: Uuid, reason: AppError) {
        let Some(&(conn, mid)) = self.by_member.get(&member) else {
            return;
        };
        let Some(m) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.memberships.get_mut(&mid))
        else {
            return;
        };
        if m.group != *group {
            return;
        }
        tracing::debug!(conn, ?mid, %reason, "membership lost");
        match &mut m.state {
            State::Joining { lost, .. } => *lost = Some(reason),
            State::Member { .. } => {
                self.end(conn, mid, reason);
            }
            State::Leaving => {
                self.forget(conn, mid);
            }
        }
    }

    fn up(&mut self, request: MiRequest, pending: Pending) {
        let handle = self.next_handle;
        self.next_handle += 1;
        self.pending.insert(handle, pending);
        self.out.push_back(SessionOutput::Up { handle, request });
    }

    fn respond(&mut self, conn: ConnId, id: u64, result: Result<Reply, AppError>) {
        if self.conns.contains_key(&conn) {
            self.out.push_back(SessionOutput::Send {
                conn,
                msg: ToClient::Response { id, result },
            });
        }
    }

    /// Answers a request that was counted in flight.
    fn finish(&mut self, conn: ConnId, id: u64, result: Result<Reply, AppError>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.inflight = c.inflight.saturating_sub(1);
            self.respond(conn, id, result);
        }
    }

    /// Forgets one membership, if it is there.
    fn forget(&mut self, conn: ConnId, mid: MembershipId) -> Option<Mship> {
        let m = self.conns.get_mut(&conn)?.memberships.remove(&mid)?;
        self.unindex(conn, mid, &m);
        Some(m)
    }

    fn unindex(&mut self, conn: ConnId, mid: MembershipId, m: &Mship) {
        if let Some(set) = self.by_group.get_mut(&m.group) {
            set.remove(&(conn, mid));
            if set.is_empty() {
                self.by_group.remove(&m.group);
            }
        }
        if self.by_member.get(&m.member) == Some(&(conn, mid)) {
            self.by_member.remove(&m.member);
        }
    }

    /// Leaves for a member nobody waits for.
    fn fire_leave(&mut self, group: GroupName, member: Uuid) {
        self.up(MiRequest::Leave { group, member }, Pending::Fire { member });
    }

    /// `AlreadyMember` if this connection is in (or joining) the group;
    /// otherwise the new membership and the member to submit.
    fn start_join(
        &mut self,
        now: Instant,
        conn: ConnId,
        group: &GroupName,
        info: MemberInfo,
    ) -> Result<(MembershipId, AppMember), AppError> {
        let c = self.conns.get_mut(&conn).ok_or(AppError::Disconnected)?;
        if c.memberships
            .values()
            .any(|m| &m.group == group && !matches!(m.state, State::Leaving))
        {
            return Err(AppError::AlreadyMember);
        }
        let mid = MembershipId(c.next_mid);
        c.next_mid += 1;
        let member = AppMember {
            name: info.name,
            kind: info.kind,
            id: self.ids.mint(now),
            host: self.config.host.clone(),
        };
        c.memberships.insert(
            mid,
            Mship {
                group: group.clone(),
                member: member.id,
                state: State::Joining {
                    buffered: Vec::new(),
                    lost: None,
                    overflow: false,
                },
            },
        );
        self.by_group
            .entry(group.clone())
            .or_default()
            .insert((conn, mid));
        self.by_member.insert(member.id, (conn, mid));
        Ok((mid, member))
    }

    /// The agent answered a join: answer the client, then the views that
    /// came meanwhile (newer than the join's view only).
    fn finish_join(
        &mut self,
        conn: ConnId,
        id: u64,
        mid: MembershipId,
        me: AppMember,
        result: Result<MiAnswer, AppError>,
    ) {
        let joining = self
            .conns
            .get(&conn)
            .and_then(|c| c.memberships.get(&mid))
            .is_some_and(|m| matches!(m.state, State::Joining { .. }));
        if !joining {
            // The connection went away meanwhile: a committed join leaves.
            if let Ok(MiAnswer::Joined(view)) = result {
                self.fire_leave(view.group, me.id);
            }
            return;
        }
        let view = match result {
            Ok(MiAnswer::Joined(view)) => view,
            Ok(other) => {
                self.forget(conn, mid);
                self.finish(conn, id, Err(unexpected(&other)));
                return;
            }
            Err(e) => {
                self.forget(conn, mid);
                self.finish(conn, id, Err(e));
                return;
            }
        };
        let me = view
            .members
            .iter()
            .find(|m| m.id == me.id)
            .cloned()
            .unwrap_or(me);
        let last = view.number;
        let group = view.group.clone();
        let Some(m) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.memberships.get_mut(&mid))
        else {
            return;
        };
        let State::Joining {
            buffered,
            lost,
            overflow,
        } = std::mem::replace(&mut m.state, State::Member { last })
        else {
            return;
        };
        self.finish(
            conn,
            id,
            Ok(Reply::Joined {
                membership_id: mid,
                me: me.clone(),
                view,
            }),
        );
        for v in buffered {
            self.deliver(conn, mid, &v);
        }
        if overflow {
            if self.end(conn, mid, AppError::Excluded) {
                self.fire_leave(group, me.id);
            }
        } else if let Some(reason) = lost {
            self.end(conn, mid, reason);
        }
    }

    /// Ends a membership with `Event::Ended` and forgets it; whether it
    /// was there.
    fn end(&mut self, conn: ConnId, mid: MembershipId, reason: AppError) -> bool {
        if self.forget(conn, mid).is_none() {
            return false;
        }
        self.out.push_back(SessionOutput::Send {
            conn,
            msg: ToClient::Event(Event::Ended {
                membership_id: mid,
                reason,
            }),
        });
        true
    }

    /// Delivers `view` to one joined membership if it is newer than the
    /// last one it got.
    fn deliver(&mut self, conn: ConnId, mid: MembershipId, view: &AppView) {
        let Some(m) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.memberships.get_mut(&mid))
        else {
            return;
        };
        let State::Member { last } = &mut m.state else {
            return;
        };
        if *last >= view.number {
            return;
        }
        *last = view.number;
        self.out.push_back(SessionOutput::Send {
            conn,
            msg: ToClient::Event(Event::View {
                membership_id: mid,
                view: view.clone(),
            }),
        });
    }

    /// Starts a leave: `NotMember` for an unknown membership (or one whose
    /// join is still in flight).
    fn start_leave(
        &mut self,
        conn: ConnId,
        mid: MembershipId,
    ) -> Result<(GroupName, Uuid), AppError> {
        let m = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.memberships.get_mut(&mid))
            .ok_or(AppError::NotMember)?;
        if matches!(m.state, State::Joining { .. }) {
            return Err(AppError::NotMember);
        }
        m.state = State::Leaving;
        Ok((m.group.clone(), m.member))
    }

    /// The agent answered a leave: the membership is forgotten unless the
    /// leave may not have happened (then a close resends it).
    fn finish_leave(
        &mut self,
        conn: ConnId,
        id: u64,
        mid: MembershipId,
        result: Result<MiAnswer, AppError>,
    ) {
        let result = match result {
            Ok(MiAnswer::Left) => Ok(Reply::Left),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e),
        };
        if matches!(
            result,
            Ok(_) | Err(AppError::NotMember | AppError::NoSuchGroup)
        ) {
            self.forget(conn, mid);
        }
        self.finish(conn, id, result);
    }
}

fn unexpected(answer: &MiAnswer) -> AppError {
    AppError::Internal(format!("the agent gave an unexpected answer: {answer:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SessionConfig {
        SessionConfig {
            host: "h".into(),
            max_inflight: 64,
            max_buffered: 1024,
            unix_ms_at_zero: 0,
            seed: 1,
        }
    }

    fn view(n: u64, members: &[&AppMember]) -> AppView {
        AppView {
            group: GroupName::parse("g").expect("group"),
            number: n,
            members: members.iter().map(|m| (*m).clone()).collect(),
        }
    }

    fn drain(s: &mut Sessions) -> (Vec<ToClient>, Vec<(u64, MiRequest)>) {
        let (mut sent, mut up) = (Vec::new(), Vec::new());
        while let Some(o) = s.poll_output() {
            match o {
                SessionOutput::Send { msg, .. } => sent.push(msg),
                SessionOutput::Up { handle, request } => up.push((handle, request)),
            }
        }
        (sent, up)
    }

    fn join(s: &mut Sessions, id: u64) -> (u64, AppMember) {
        let g = GroupName::parse("g").expect("group");
        let info = MemberInfo::new(MemberName::parse("a").expect("name"));
        s.request(
            Instant::ZERO,
            1,
            id,
            Op::Join {
                group: g,
                member: info,
            },
        );
        let (_, up) = drain(s);
        match up.as_slice() {
            [(h, MiRequest::Join { member, .. })] => (*h, member.clone()),
            other => panic!("{other:?}"),
        }
    }

    /// Views that reach the sessions while a join is in flight come after
    /// its answer, and only those newer than the join's view.
    #[test]
    fn views_before_the_join_answer_follow_it() {
        let mut s = Sessions::new(config());
        s.open(1, "c".into());
        let (h, me) = join(&mut s, 7);
        let g = GroupName::parse("g").expect("group");
        let info = MemberInfo::new(MemberName::parse("a").expect("name"));
        s.request(
            Instant::ZERO,
            1,
            8,
            Op::Join {
                group: g,
                member: info,
            },
        );
        let (sent, up) = drain(&mut s);
        assert!(up.is_empty());
        assert_eq!(
            sent,
            vec![ToClient::Response {
                id: 8,
                result: Err(AppError::AlreadyMember)
            }]
        );
        for n in [4, 5, 6] {
            s.view(view(n, &[&me]));
        }
        assert!(drain(&mut s).0.is_empty(), "nothing before the answer");
        s.answered(h, Ok(MiAnswer::Joined(view(5, &[&me]))));
        s.view(view(6, &[&me]));
        s.view(view(7, &[&me]));
        let (got, _) = drain(&mut s);
        assert!(
            matches!(&got[0], ToClient::Response { id: 7, result: Ok(Reply::Joined { view, .. }) } if view.number == 5)
        );
        let numbers: Vec<u64> = got[1..]
            .iter()
            .map(|m| match m {
                ToClient::Event(Event::View { view, .. }) => view.number,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(numbers, vec![6, 7]);
    }

    /// A member lost while its join was in flight gets the answer, then
    /// its end.
    #[test]
    fn lost_while_joining_ends_after_the_answer() {
        let mut s = Sessions::new(config());
        s.open(1, "c".into());
        let (h, me) = join(&mut s, 1);
        let g = GroupName::parse("g").expect("group");
        s.lost(&g, me.id, AppError::Excluded);
        s.answered(h, Ok(MiAnswer::Joined(view(1, &[&me]))));
        let (got, _) = drain(&mut s);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1],
            ToClient::Event(Event::Ended {
                membership_id: MembershipId(1),
                reason: AppError::Excluded
            })
        );
        assert!(s.by_group.is_empty() && s.by_member.is_empty());
        s.request(
            Instant::ZERO,
            1,
            2,
            Op::Leave {
                membership_id: MembershipId(1),
            },
        );
        assert_eq!(
            drain(&mut s).0,
            vec![ToClient::Response {
                id: 2,
                result: Err(AppError::NotMember)
            }]
        );
    }

    /// A close leaves every joined group; a join answered after the close
    /// is left too.
    #[test]
    fn a_close_leaves_and_a_late_join_is_left() {
        let mut s = Sessions::new(config());
        s.open(1, "c".into());
        let (h, me) = join(&mut s, 1);
        s.answered(h, Ok(MiAnswer::Joined(view(1, &[&me]))));
        drain(&mut s);
        let g2 = GroupName::parse("g2").expect("group");
        let info = MemberInfo::new(MemberName::parse("b").expect("name"));
        s.request(
            Instant::ZERO,
            1,
            2,
            Op::Join {
                group: g2,
                member: info,
            },
        );
        let (_, up) = drain(&mut s);
        let (h2, b) = match up.as_slice() {
            [(h, MiRequest::Join { member, .. })] => (*h, member.clone()),
            other => panic!("{other:?}"),
        };
        assert_eq!(s.close(1), 2);
        let (sent, up) = drain(&mut s);
        assert!(sent.is_empty());
        assert!(
            matches!(up.as_slice(), [(_, MiRequest::Leave { member, .. })] if *member == me.id)
        );
        let mut v = view(1, &[&b]);
        v.group = GroupName::parse("g2").expect("group");
        s.answered(h2, Ok(MiAnswer::Joined(v)));
        let (_, up) = drain(&mut s);
        assert!(matches!(up.as_slice(), [(_, MiRequest::Leave { member, .. })] if *member == b.id));
    }

    /// Member ids come from the inputs: the same seed and times give the
    /// same ids, and one source never repeats itself.
    #[test]
    fn member_ids_are_minted_from_inputs() {
        let mut a = MemberIds::new(1_700_000_000_000, 9);
        let mut b = MemberIds::new(1_700_000_000_000, 9);
        let t = Instant::ZERO + std::time::Duration::from_millis(5);
        let ids: Vec<Uuid> = (0..100).map(|_| a.mint(t)).collect();
        let again: Vec<Uuid> = (0..100).map(|_| b.mint(t)).collect();
        assert_eq!(ids, again);
        let set: BTreeSet<Uuid> = ids.iter().copied().collect();
        assert_eq!(set.len(), ids.len());
        assert_eq!(ids[0].get_version_num(), 7);
        let (secs, _) = ids[0].get_timestamp().expect("v7").to_unix();
        assert_eq!(secs, 1_700_000_000);
    }
}
