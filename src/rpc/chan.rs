//! CHAN: request/reply with at-most-once execution (seed 004, section
//! 5.3.2), over [`Blast`], with the adaptive retransmission timeout of
//! section 5.2.6 (Jacobson/Karels), its samples made unambiguous by echoed
//! attempt numbers (the idea of TCP's timestamps, RFC 7323) instead of
//! Karn/Partridge's rule.
//!
//! Every CHAN message ([`ChanMessage`]) travels as one BLAST message; small
//! ones are a single fragment. The book's fields map as follows:
//!
//! - **MID**: a per-endpoint 64-bit call id (`mid`), starting at a value
//!   drawn from the injected RNG; the reply carries the request's `mid`.
//! - **BID** (boot id): the [`Incarnation`] of each side. The request names
//!   the client's incarnation *and the server incarnation the client
//!   expects*; the server executes only requests addressed to its current
//!   incarnation. On first contact the client does not know it, so it sends
//!   a small [`ChanMessage::Hello`] and the server answers
//!   [`ChanMessage::Iam`] without executing anything (one extra round trip
//!   per peer, skipped by [`Chan::learn_incarnation`]). A call keeps the
//!   incarnation it was first sent to for its whole life; a request that
//!   reaches a different (restarted) server is answered
//!   [`ChanMessage::Restarted`] and the call fails with
//!   [`CallError::PeerRestarted`]. So a handler runs at most once per call,
//!   even across server restarts.
//! - **CID** (channel): not needed. Concurrent calls to one server are
//!   distinguished by `mid`; the book's "one transaction per channel" is
//!   replaced by a per-client duplicate table on the server.
//! - **ACK**: implicit (the reply acknowledges the request, and the next
//!   request, through `acks` and `done_below`, acknowledges earlier
//!   replies); explicit [`ChanMessage::Ack`] from the server when a request
//!   is deferred, repeated, or probed while running; explicit
//!   [`ChanMessage::ReplyAck`] from the client after [`ChanConfig::ack_delay`]
//!   when no request is going that way to carry it.
//! - **PROBE**: once the request is acknowledged, the client sends
//!   [`ChanMessage::Probe`] every [`ChanConfig::probe_interval`]; the server
//!   answers `Ack` while the handler runs, the saved reply when it has one,
//!   [`ChanMessage::Unknown`] if it never got the request (the client then
//!   resends it) and [`ChanMessage::Forgotten`] if it executed the call but
//!   no longer holds the reply.
//!
//! At-most-once on the server: per client node (and only its newest
//! incarnation: requests from an older one are dropped), a watermark `low`
//! below which every call is finished, and a table of the calls at or above
//! it: running (deferred), replied (saved reply), or done (reply freed, id
//! kept). A request is executed only if its id is in neither. The watermark
//! rises with the client's `done_below` (the smallest id it still waits
//! for) and when the table exceeds its bound. Saved replies are freed when
//! acknowledged, when they expire, or when over the per-client or total
//! bounds (soonest to expire first); the id stays as "done". A saved reply
//! expires [`ChanConfig::reply_retention`] after it was sent or last asked
//! for, or later if the client's *patience* (carried by every request and
//! probe: how much longer the call may go on, at most
//! [`ChanConfig::max_reply_retention`]) says it may still ask: so a live
//! client never finds its reply gone unless memory bounds forced it. A
//! client's whole table is dropped only after [`ChanConfig::client_retention`]
//! of silence, which assumes no datagram survives in the network that long
//! (the book assumes 60 s; the default is 120 s).
//!
//! Timers (every one with a count and a give-up): the client's RETRANSMIT
//! timer (for `Hello` and single-fragment requests) starts at the peer's RTO
//! and doubles per retransmission (exponential back-off) up to
//! [`ChanConfig::max_rto`]; after `max_retries` unanswered retransmissions
//! the call fails with [`CallError::Timeout`]. Multi-fragment requests are
//! not retransmitted while BLAST still moves them: BLAST's acknowledgement
//! counts as CHAN's ACK; its DONE give-up sends a probe. The PROBE timer has
//! the same retry count and back-off. Every call also has an overall
//! deadline.
//!
//! RTT samples: every transmission of a `Hello`, a single-fragment request
//! or a probe carries a fresh per-call `attempt` number, and every answer
//! echoes the attempt it answers (see [`ChanMessage`]); the client keeps the
//! send times of its last [`SENT_HISTORY`] attempts per call and takes the
//! sample `now − sent_at[echo]` from the first answer to each, whether it
//! was a first transmission or a retransmission. So Karn's ambiguity is
//! gone and samples keep coming through loss streaks, as a Reply answered
//! from the server's duplicate cache echoes the retransmission that asked
//! for it. An answer echoing an attempt never sent, one too old to be kept,
//! or one already answered is no sample. Answers that do not answer a
//! transmission at once echo 0 and are no samples: a deferred handler's
//! reply (the handler's time is no part of the round trip) and a
//! multi-fragment reply or request (the transfer time is not either; the
//! server sends an `Ack` carrying the echo ahead of a multi-fragment reply).
//!
//! Back-off memory: retransmissions raise the peer's back-off (the RTO's
//! doublings), and any valid sample clears it. A new call, and a new phase
//! of a call (the request after `Iam`, probing after `Ack`), inherits at most
//! [`ChanConfig::max_inherited_backoff`] doublings of it (default 2, so at
//! most 4 × the base RTO) and doubles from there on each retransmission.
//! With the default `max_rto` of 2 s this bounds what one loss streak costs
//! the calls after it: on a LAN a lost first transmission costs a few base
//! RTOs, not the seconds that an unbounded remembered back-off would, while
//! a dead or congested peer still sees exponentially fewer retransmissions.

use super::blast::{Blast, BlastConfig, BlastEvent};
use super::bytes::Bytes;
use super::timers::Timers;
use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::Instant;
use crate::wire::{self, DropCounters};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Bytes a request or reply adds to its body (enum tags, ids, incarnations,
/// piggybacked acknowledgements). Bodies above `max_message` minus this are
/// refused with [`CallError::TooLarge`] before anything is sent.
pub const MESSAGE_OVERHEAD: usize = 1024;

/// Most reply ids one request or [`ChanMessage::ReplyAck`] acknowledges.
pub const MAX_ACKS: usize = 64;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallError {
    /// No answer within the deadline or the retry count.
    #[error("timed out")]
    Timeout,
    /// The server restarted (a different incarnation answered); the call
    /// may or may not have run in the previous life.
    #[error("peer restarted")]
    PeerRestarted,
    /// The server has no handler for the procedure.
    #[error("no such procedure")]
    NoSuchProcedure,
    /// The request or the reply exceeds the message size limit.
    #[error("message too large")]
    TooLarge,
    /// Cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
    /// The host reported the server unreachable twice in a row.
    #[error("peer unreachable")]
    Unreachable,
    /// The server executed (or may have executed) the call but no longer
    /// holds its reply (freed by a bound or the retention time).
    #[error("reply lost")]
    ReplyLost,
}

/// A call, as returned by [`Chan::call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// A request handed up for execution; answer it with [`Chan::respond`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestToken(pub u64);

/// Per-call options. `None` fields take the [`ChanConfig`] defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallOptions {
    /// Overall time limit counted from the call (default
    /// [`ChanConfig::call_timeout`]); `Some(Duration::MAX)` for none: then
    /// the retry counts bound an unanswered call, but a call whose server
    /// keeps answering probes (a deferred handler that has not responded
    /// yet) lasts as long as that.
    pub timeout: Option<Duration>,
    /// An absolute deadline; the earlier of this and `timeout` applies.
    pub deadline: Option<Instant>,
    /// Unanswered retransmissions (or probes) before
    /// [`CallError::Timeout`] (default [`ChanConfig::max_retries`]).
    pub max_retries: Option<u32>,
}

impl CallOptions {
    /// This with an overall timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// This with an absolute deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// This with a retry count.
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }
}

/// CHAN settings; defaults in [`ChanConfig::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChanConfig {
    /// RTO before any RTT sample of a peer. Default 100 ms.
    pub initial_rto: Duration,
    /// Lower clamp of the RTO. Default 5 ms.
    pub min_rto: Duration,
    /// Upper clamp of the RTO, also after back-off. Default 2 s: CHAN serves
    /// a membership service on a LAN, where round trips are milliseconds;
    /// as answers to retransmissions are RTT samples too (see
    /// [`ChanMessage`]), a long back-off is only ever needed against a dead
    /// or badly congested peer, and there a 2 s retransmission period is
    /// gentle enough, while a longer one (the 10 s of WAN-minded stacks)
    /// makes a single lost datagram cost that long. Raise it for long or
    /// slow paths.
    pub max_rto: Duration,
    /// Most doublings of the RTO that a *new* call (and each new phase of a
    /// call: request after `Hello`, probing after `Ack`) inherits from the
    /// peer's remembered back-off. Default 2: after a loss streak or a
    /// timeout the next call starts at most at 4 × the base RTO instead of
    /// at `max_rto`, so one bad streak does not make every following call
    /// wait seconds for its first retransmission; the call itself still
    /// backs off exponentially from there up to `max_rto`. Any valid RTT
    /// sample clears the peer's back-off.
    pub max_inherited_backoff: u32,
    /// Default retry count of a call. Default 5 (the book gives up after 4).
    pub max_retries: u32,
    /// Default overall call timeout. Default 30 s.
    pub call_timeout: Duration,
    /// PROBE period once a request is acknowledged. Default 1 s.
    pub probe_interval: Duration,
    /// How long a reply's acknowledgement waits for a request to ride on
    /// before it is sent alone. Default 20 ms.
    pub ack_delay: Duration,
    /// A saved reply is kept at least this long after it was sent (and
    /// after each duplicate request or probe asking for it). Default 30 s.
    pub reply_retention: Duration,
    /// Requests and probes carry the client's *patience* (how much longer
    /// it may ask for the reply); a saved reply is kept that long, up to
    /// this cap. Default 10 min.
    pub max_reply_retention: Duration,
    /// A client's duplicate table is dropped after this much silence.
    /// Default 120 s.
    pub client_retention: Duration,
    /// Most clients with a duplicate table. Default 4096; when full, a
    /// client silent for `client_retention` is dropped or the request is.
    pub max_clients: usize,
    /// Most saved replies per client. Default 256.
    pub max_saved_replies_per_client: usize,
    /// Most bytes of saved replies in total. Default 64 MiB.
    pub max_saved_reply_bytes: usize,
    /// Most finished call ids remembered per client above its watermark.
    /// Default 1024.
    pub max_done_per_client: usize,
    /// Most requests executing (deferred) at once. Default 4096; further
    /// requests are dropped (the client retries).
    pub max_executing: usize,
    /// Most peers in the client-side table (RTT, incarnation); idle ones are
    /// forgotten first. Default 4096.
    pub max_peers: usize,
}

impl Default for ChanConfig {
    fn default() -> Self {
        ChanConfig {
            initial_rto: Duration::from_millis(100),
            min_rto: Duration::from_millis(5),
            max_rto: Duration::from_secs(2),
            max_inherited_backoff: 2,
            max_retries: 5,
            call_timeout: Duration::from_secs(30),
            probe_interval: Duration::from_secs(1),
            ack_delay: Duration::from_millis(20),
            reply_retention: Duration::from_secs(30),
            max_reply_retention: Duration::from_secs(600),
            client_retention: Duration::from_secs(120),
            max_clients: 4096,
            max_saved_replies_per_client: 256,
            max_saved_reply_bytes: 64 * 1024 * 1024,
            max_done_per_client: 1024,
            max_executing: 4096,
            max_peers: 4096,
        }
    }
}

/// What a server answers a request with (SELECT's outcome folded in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The handler's reply.
    Ok(Bytes),
    /// No handler for the procedure.
    NoSuchProcedure,
    /// The reply would exceed the message size limit.
    TooLarge,
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The call id.
    pub mid: u64,
    /// The client's incarnation.
    pub client: Incarnation,
    /// The server incarnation this request is for.
    pub server: Incarnation,
    /// SELECT's header: the procedure number.
    pub procedure: u16,
    /// Every call of this client to this server below this id is finished.
    pub done_below: u64,
    /// Replies received (at most [`MAX_ACKS`]).
    pub acks: Vec<u64>,
    /// How much longer (ms) the client may ask for the reply.
    pub patience_ms: u32,
    /// Which transmission of this call this is (see [`ChanMessage`]); 0 for
    /// a multi-fragment request, which asks for no echo.
    pub attempt: u32,
    /// The client's round-trip estimate to the server in ms (0: none), for
    /// the BLAST transfer of a large reply.
    pub rtt_hint_ms: u32,
    /// The argument.
    pub body: Bytes,
}

/// A CHAN message: the payload of one BLAST message.
///
/// RTT measurement (the idea of TCP's timestamps, RFC 7323 RTTM): every
/// transmission of a call's `Hello`, `Request` or `Probe` carries a fresh
/// `attempt` number (1, 2, ... per call; 0 asks for no echo), and every
/// answer (`Iam`, `Reply`, `Ack`, `Unknown`, `Forgotten`, `Restarted`)
/// carries in `echo` the attempt of the transmission it answers, or 0 when it
/// answers none at once (a deferred handler's reply, a multi-fragment
/// reply). The client thus knows which transmission an answer belongs to,
/// retransmission or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChanMessage {
    /// Client: "which incarnation are you?" (first contact).
    Hello {
        /// Echoed in the answer (the call id).
        nonce: u64,
        /// Which transmission of the call this is.
        attempt: u32,
    },
    /// Server: the answer to `Hello`.
    Iam {
        /// The `Hello`'s nonce.
        nonce: u64,
        /// The server's incarnation.
        incarnation: Incarnation,
        /// The `Hello`'s attempt.
        echo: u32,
    },
    /// Client: a call.
    Request(Request),
    /// Server: the outcome of call `mid`.
    Reply {
        /// The call id.
        mid: u64,
        /// The server's incarnation.
        server: Incarnation,
        /// The attempt answered at once (0: none).
        echo: u32,
        /// The outcome.
        outcome: Outcome,
    },
    /// Server: request `mid` arrived and runs (or its reply is on its way).
    Ack {
        /// The call id.
        mid: u64,
        /// The server's incarnation.
        server: Incarnation,
        /// The attempt answered (0: none).
        echo: u32,
    },
    /// Client: "are you alive, and still working on `mid`?"
    Probe {
        /// The call id.
        mid: u64,
        /// The client's incarnation.
        client: Incarnation,
        /// The server incarnation the call is for.
        server: Incarnation,
        /// As in [`Request::patience_ms`].
        patience_ms: u32,
        /// Which transmission of the call this is.
        attempt: u32,
    },
    /// Server: never received request `mid` (the client resends it).
    Unknown {
        /// The call id.
        mid: u64,
        /// The server's incarnation.
        server: Incarnation,
        /// The attempt answered.
        echo: u32,
    },
    /// Server: call `mid` is finished here but its reply is gone.
    Forgotten {
        /// The call id.
        mid: u64,
        /// The server's incarnation.
        server: Incarnation,
        /// The attempt answered.
        echo: u32,
    },
    /// Server: the request was addressed to another incarnation of mine.
    Restarted {
        /// The call id.
        mid: u64,
        /// The server's (current) incarnation.
        server: Incarnation,
        /// The attempt answered.
        echo: u32,
    },
    /// Client: these replies arrived.
    ReplyAck {
        /// The client's incarnation.
        client: Incarnation,
        /// The server incarnation the replies came from.
        server: Incarnation,
        /// Call ids (at most [`MAX_ACKS`]).
        mids: Vec<u64>,
        /// As in [`Request::done_below`].
        done_below: u64,
    },
}

/// What CHAN reports to the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChanEvent {
    /// A new request to execute; answer with [`Chan::respond`] (and call
    /// [`Chan::acknowledge`] first if the answer will take a while).
    Execute {
        /// Identifies the request in `respond`.
        token: RequestToken,
        /// The client.
        from: NodeId,
        /// The client's incarnation.
        from_incarnation: Incarnation,
        /// The procedure number.
        procedure: u16,
        /// The argument.
        body: Vec<u8>,
    },
    /// A call ended (exactly once per [`CallId`]).
    Completed {
        /// The call.
        id: CallId,
        /// The server.
        node: NodeId,
        /// The reply, or why there is none.
        result: Result<Vec<u8>, CallError>,
    },
}

/// CHAN counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChanStats {
    /// Calls started.
    pub calls: u64,
    /// Calls that got a reply.
    pub calls_succeeded: u64,
    /// Calls that failed (any [`CallError`]).
    pub calls_failed: u64,
    /// Of which [`CallError::Timeout`].
    pub timeouts: u64,
    /// Of which [`CallError::PeerRestarted`].
    pub peer_restarted: u64,
    /// Of which [`CallError::Unreachable`].
    pub unreachable: u64,
    /// Of which [`CallError::Cancelled`].
    pub cancelled: u64,
    /// `Hello`s sent (first contact), including retransmissions.
    pub hellos_sent: u64,
    /// Requests sent, including retransmissions.
    pub requests_sent: u64,
    /// Retransmissions of `Hello`s and requests (timer or unreachable hint).
    pub retransmissions: u64,
    /// Probes sent.
    pub probes_sent: u64,
    /// Valid RTT samples taken.
    pub rtt_samples: u64,
    /// Explicit `ReplyAck`s sent.
    pub reply_acks_sent: u64,
    /// Requests received (all, including duplicates).
    pub requests_received: u64,
    /// Requests handed up for execution (each call at most once).
    pub executions: u64,
    /// Duplicate requests or probes answered with the saved reply.
    pub duplicates_answered_from_cache: u64,
    /// Duplicate requests answered with `Ack` (still running).
    pub duplicates_while_executing: u64,
    /// Answers `Forgotten`.
    pub forgotten_answers: u64,
    /// Answers `Unknown`.
    pub unknown_answers: u64,
    /// Answers `Restarted` (request for another incarnation).
    pub restarted_answers: u64,
    /// Replies sent (first sends and resends).
    pub replies_sent: u64,
    /// Replies whose client was gone or had moved on.
    pub replies_discarded: u64,
    /// Saved replies freed by a bound before being acknowledged.
    pub saved_replies_evicted: u64,
    /// Saved replies freed by the retention time.
    pub saved_replies_expired: u64,
    /// Client tables dropped after `client_retention`.
    pub clients_expired: u64,
    /// Dropped messages, by kind.
    pub drops: DropCounters,
}

/// Jacobson/Karels RTT estimator with the book's integer arithmetic
/// (seed 004, 5.2.6, n = 3: gains of 1/8, `TimeOut = EstimatedRTT +
/// 4 × Deviation`). The first sample sets `EstimatedRTT = sample` and
/// `Deviation = sample / 2` (as RFC 6298 does; the book leaves it open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RttEstimator {
    /// EstimatedRTT × 8, in microseconds.
    est8: i64,
    /// Deviation × 8, in microseconds.
    dev8: i64,
    samples: u64,
}

impl RttEstimator {
    /// No samples yet.
    pub fn new() -> Self {
        RttEstimator::default()
    }

    /// Folds in one sample.
    pub fn sample(&mut self, rtt: Duration) {
        let s = i64::try_from(rtt.as_micros()).unwrap_or(i64::MAX / 16);
        let s = s.min(i64::MAX / 16);
        if self.samples == 0 {
            self.est8 = s * 8;
            self.dev8 = s * 4;
        } else {
            // The book's code, verbatim in spirit.
            let mut sample = s - (self.est8 >> 3);
            self.est8 += sample;
            if sample < 0 {
                sample = -sample;
            }
            sample -= self.dev8 >> 3;
            self.dev8 += sample;
        }
        self.samples += 1;
    }

    /// Samples taken.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// EstimatedRTT, once sampled.
    pub fn estimated(&self) -> Option<Duration> {
        (self.samples > 0).then(|| Duration::from_micros((self.est8 >> 3).max(0) as u64))
    }

    /// Deviation, once sampled.
    pub fn deviation(&self) -> Option<Duration> {
        (self.samples > 0).then(|| Duration::from_micros((self.dev8 >> 3).max(0) as u64))
    }

    /// `EstimatedRTT + 4 × Deviation` (unclamped), once sampled.
    pub fn timeout(&self) -> Option<Duration> {
        (self.samples > 0)
            .then(|| Duration::from_micros(((self.est8 >> 3) + (self.dev8 >> 1)).max(0) as u64))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for `Iam`.
    Resolving,
    /// Request sent; `transfer`: the BLAST message while it is multi-fragment
    /// and still moving.
    Sending { transfer: Option<u64> },
    /// Acknowledged; probing.
    Waiting {
        probe_outstanding: bool,
        probe_retries: u32,
    },
}

/// Send times kept per call for RTT samples: the last this many attempts.
/// An answer echoing an older attempt (or one never sent) is no sample.
pub const SENT_HISTORY: usize = 4;

/// A request as the call keeps it for (re)transmission.
#[derive(Debug)]
enum Encoded {
    /// One fragment: re-encoded per transmission with its attempt number.
    Small(Request),
    /// Several fragments (BLAST), encoded once with attempt 0: the transfer
    /// gives no RTT sample, so it asks for no echo.
    Large(Arc<[u8]>),
}

#[derive(Debug)]
struct Call {
    id: CallId,
    node: NodeId,
    procedure: u16,
    body: Option<Vec<u8>>,
    request: Option<Encoded>,
    pinned: Option<Incarnation>,
    phase: Phase,
    retries: u32,
    max_retries: u32,
    deadline: Instant,
    next_action: Instant,
    /// The last attempt number used (0: none yet).
    attempt: u32,
    /// `(attempt, sent at)` of recent sampleable transmissions, in slot
    /// `attempt % SENT_HISTORY`; an entry is taken by its first answer.
    sent: [Option<(u32, Instant)>; SENT_HISTORY],
    /// Doublings inherited from the peer at the start of the current phase
    /// (at most [`ChanConfig::max_inherited_backoff`]); the phase's
    /// retransmissions add theirs on top.
    inherited: u32,
}

impl Call {
    /// A fresh attempt number; recorded for sampling (sent at `now`) if
    /// `sampleable`.
    fn next_attempt(&mut self, now: Instant, sampleable: bool) -> u32 {
        self.attempt = self.attempt.checked_add(1).unwrap_or(1);
        let slot = self.attempt as usize % SENT_HISTORY;
        self.sent[slot] = sampleable.then_some((self.attempt, now));
        self.attempt
    }

    /// The send time of `attempt` if it is recent and unanswered; takes it.
    fn take_sent(&mut self, attempt: u32) -> Option<Instant> {
        if attempt == 0 {
            return None;
        }
        let slot = &mut self.sent[attempt as usize % SENT_HISTORY];
        match *slot {
            Some((a, at)) if a == attempt => {
                *slot = None;
                Some(at)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct Peer {
    incarnation: Option<Incarnation>,
    rtt: RttEstimator,
    /// Doublings of the RTO remembered from retransmissions since the last
    /// valid RTT sample.
    backoff: u32,
    calls: BTreeSet<u64>,
    pending_acks: BTreeSet<u64>,
    unreachable_strikes: u32,
    last_used: Instant,
}

#[derive(Debug)]
enum Entry {
    Executing {
        token: RequestToken,
        /// Keep the reply at least until then (the client's patience).
        keep_until: Instant,
        /// The attempt of the latest request or probe for it, and when it
        /// arrived: an answer sent at that same instant echoes it.
        asked: (u32, Instant),
    },
    Replied {
        message: Arc<[u8]>,
        expires: Instant,
        transfer: Option<u64>,
    },
    Done,
}

#[derive(Debug)]
struct ClientState {
    incarnation: Incarnation,
    /// The client's round-trip estimate (clamped), if it sent one.
    rtt_hint: Option<Duration>,
    low: u64,
    entries: BTreeMap<u64, Entry>,
    saved: usize,
    last_activity: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transfer {
    Request(u64),
    Reply(NodeId, Incarnation, u64),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Call(u64),
    AckFlush(NodeId),
    Sweep,
}

/// The CHAN core: client and server sides of request/reply, over its own
/// [`Blast`]. It implements [`Core`] (datagrams in and out); the layer
/// above executes [`ChanEvent::Execute`] and calls [`Chan::respond`].
#[derive(Debug)]
pub struct Chan {
    incarnation: Incarnation,
    config: ChanConfig,
    blast: Blast,
    next_call: u64,
    next_mid: u64,
    next_token: u64,
    calls: BTreeMap<u64, Call>,
    call_ids: BTreeMap<CallId, u64>,
    peers: BTreeMap<NodeId, Peer>,
    clients: BTreeMap<NodeId, ClientState>,
    tokens: BTreeMap<RequestToken, (NodeId, Incarnation, u64)>,
    /// Saved replies by expiry.
    saved_index: BTreeSet<(Instant, NodeId, u64)>,
    saved_bytes: usize,
    transfers: BTreeMap<u64, Transfer>,
    timers: Timers<TimerKey>,
    events: VecDeque<ChanEvent>,
    stats: ChanStats,
}

impl Chan {
    /// A CHAN endpoint for this node's `incarnation`, over a BLAST layer
    /// configured by `blast`. `initial_mid` and `initial_blast_mid` seed the
    /// id counters (from the owner's RNG).
    pub fn new(
        incarnation: Incarnation,
        config: ChanConfig,
        blast: BlastConfig,
        initial_mid: u64,
        initial_blast_mid: u64,
    ) -> Self {
        let mut config = config;
        config.min_rto = config.min_rto.max(Duration::from_micros(100));
        config.max_rto = config.max_rto.max(config.min_rto);
        config.initial_rto = config.initial_rto.clamp(config.min_rto, config.max_rto);
        config.probe_interval = config.probe_interval.max(Duration::from_millis(1));
        config.max_clients = config.max_clients.max(1);
        config.max_saved_replies_per_client = config.max_saved_replies_per_client.max(1);
        config.max_done_per_client = config.max_done_per_client.max(1);
        config.max_executing = config.max_executing.max(1);
        config.max_peers = config.max_peers.max(1);
        let blast = Blast::new(incarnation, blast, initial_blast_mid);
        Chan {
            incarnation,
            config,
            blast,
            next_call: 1,
            next_mid: initial_mid,
            next_token: 1,
            calls: BTreeMap::new(),
            call_ids: BTreeMap::new(),
            peers: BTreeMap::new(),
            clients: BTreeMap::new(),
            tokens: BTreeMap::new(),
            saved_index: BTreeSet::new(),
            saved_bytes: 0,
            transfers: BTreeMap::new(),
            timers: Timers::default(),
            events: VecDeque::new(),
            stats: ChanStats::default(),
        }
    }

    /// This endpoint's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// The (sanitized) configuration.
    pub fn config(&self) -> &ChanConfig {
        &self.config
    }

    /// CHAN counters.
    pub fn stats(&self) -> &ChanStats {
        &self.stats
    }

    /// The BLAST layer (for its counters).
    pub fn blast(&self) -> &Blast {
        &self.blast
    }

    /// Calls still pending.
    pub fn pending_calls(&self) -> usize {
        self.calls.len()
    }

    /// Requests handed up and not yet answered.
    pub fn executing(&self) -> usize {
        self.tokens.len()
    }

    /// Bytes of saved replies.
    pub fn saved_reply_bytes(&self) -> usize {
        self.saved_bytes
    }

    /// The current retransmission timeout towards `node` (before back-off).
    pub fn rto(&self, node: NodeId) -> Duration {
        self.base_rto(self.peers.get(&node))
    }

    /// The RTT estimator of `node`, if it is in the peer table.
    pub fn rtt(&self, node: NodeId) -> Option<&RttEstimator> {
        self.peers.get(&node).map(|p| &p.rtt)
    }

    /// The back-off (doublings of the RTO) remembered for `node` since its
    /// last valid RTT sample, if it is in the peer table. A new call
    /// inherits at most [`ChanConfig::max_inherited_backoff`] of it.
    pub fn backoff(&self, node: NodeId) -> Option<u32> {
        self.peers.get(&node).map(|p| p.backoff)
    }

    /// The first retransmission timeout a new call to `node` would use: the
    /// RTO with the inherited part of the peer's back-off.
    pub fn initial_call_rto(&self, node: NodeId) -> Duration {
        self.rto_with_shift(node, self.inherited_shift(node))
    }

    /// The incarnation of `node` this side believes current.
    pub fn known_incarnation(&self, node: NodeId) -> Option<Incarnation> {
        self.peers.get(&node).and_then(|p| p.incarnation)
    }

    fn base_rto(&self, peer: Option<&Peer>) -> Duration {
        peer.and_then(|p| p.rtt.timeout())
            .unwrap_or(self.config.initial_rto)
            .clamp(self.config.min_rto, self.config.max_rto)
    }

    /// The RTO towards `node` doubled `shift` times, at most `max_rto`.
    fn rto_with_shift(&self, node: NodeId, shift: u32) -> Duration {
        self.base_rto(self.peers.get(&node))
            .saturating_mul(1u32 << shift.min(20))
            .min(self.config.max_rto)
    }

    /// The doublings a new call (or phase) to `node` starts with.
    fn inherited_shift(&self, node: NodeId) -> u32 {
        self.peers
            .get(&node)
            .map_or(0, |p| p.backoff.min(self.config.max_inherited_backoff))
    }

    /// The RTO of call `mid`'s transmission after `retries` retransmissions
    /// in its current phase.
    fn call_rto(&self, mid: u64, retries: u32) -> Duration {
        match self.calls.get(&mid) {
            Some(c) => self.rto_with_shift(c.node, c.inherited.saturating_add(retries)),
            None => self.config.max_rto,
        }
    }

    /// Remembers for the peer of call `mid` that its RTO was doubled for the
    /// `retries`-th retransmission.
    fn note_backoff(&mut self, mid: u64, retries: u32) {
        let Some(c) = self.calls.get(&mid) else {
            return;
        };
        let shift = c.inherited.saturating_add(retries);
        if let Some(p) = self.peers.get_mut(&c.node) {
            p.backoff = p.backoff.max(shift);
        }
    }

    fn max_body(&self) -> usize {
        self.blast
            .config()
            .max_message
            .saturating_sub(MESSAGE_OVERHEAD)
    }

    // ---------------------------------------------------------------- output

    fn send_message(&mut self, now: Instant, to: NodeId, msg: &ChanMessage) -> Option<u64> {
        let Ok(bytes) = wire::encode_body(msg) else {
            self.stats.drops.record_kind("encode_failed");
            return None;
        };
        self.send_bytes(now, to, Arc::from(bytes))
    }

    /// Our idea of the round trip to `node`, for BLAST (whose first window
    /// waits on it): the estimate if there is one, else the current
    /// (backed-off) RTO as a client, else what the client told us in its
    /// last request as a server.
    fn rtt_hint(&self, node: NodeId) -> Option<Duration> {
        match self.peers.get(&node) {
            Some(p) => Some(
                p.rtt
                    .estimated()
                    .unwrap_or_else(|| self.initial_call_rto(node)),
            ),
            None => self.clients.get(&node).and_then(|c| c.rtt_hint),
        }
    }

    /// Sends an encoded message; returns the BLAST id if it is multi-fragment.
    fn send_bytes(&mut self, now: Instant, to: NodeId, bytes: Arc<[u8]>) -> Option<u64> {
        let hint = self.rtt_hint(to);
        match self.blast.send_with_rtt_hint(now, to, bytes, hint) {
            Ok(info) if info.fragments > 1 => Some(info.mid),
            Ok(_) => None,
            Err(_) => {
                self.stats.drops.record_kind("message_too_large");
                None
            }
        }
    }

    // ---------------------------------------------------------------- client

    fn touch_peer(&mut self, now: Instant, node: NodeId) {
        if !self.peers.contains_key(&node) && self.peers.len() >= self.config.max_peers {
            let idle = self
                .peers
                .iter()
                .filter(|(_, p)| p.calls.is_empty())
                .min_by_key(|(n, p)| (p.last_used, **n))
                .map(|(n, _)| *n);
            if let Some(n) = idle {
                self.peers.remove(&n);
                self.timers.cancel(&TimerKey::AckFlush(n));
            }
        }
        self.peers.entry(node).or_default().last_used = now;
    }

    /// Starts a call of `procedure` on `node`. Exactly one
    /// [`ChanEvent::Completed`] follows (possibly at once, e.g. for
    /// [`CallError::TooLarge`]).
    pub fn call(
        &mut self,
        now: Instant,
        node: NodeId,
        procedure: u16,
        body: Vec<u8>,
        options: CallOptions,
    ) -> CallId {
        let id = CallId(self.next_call);
        self.next_call += 1;
        self.stats.calls += 1;
        if body.len() > self.max_body() {
            self.stats.calls_failed += 1;
            self.events.push_back(ChanEvent::Completed {
                id,
                node,
                result: Err(CallError::TooLarge),
            });
            return id;
        }
        let mid = self.next_mid;
        self.next_mid = self.next_mid.wrapping_add(1);
        let timeout = options.timeout.unwrap_or(self.config.call_timeout);
        let mut deadline = now + timeout;
        if let Some(d) = options.deadline {
            deadline = deadline.min(d);
        }
        self.touch_peer(now, node);
        let known = self.peers.get_mut(&node).and_then(|p| {
            p.calls.insert(mid);
            p.incarnation
        });
        self.call_ids.insert(id, mid);
        let inherited = self.inherited_shift(node);
        self.calls.insert(
            mid,
            Call {
                id,
                node,
                procedure,
                body: Some(body),
                request: None,
                pinned: None,
                phase: Phase::Resolving,
                retries: 0,
                max_retries: options.max_retries.unwrap_or(self.config.max_retries),
                deadline,
                next_action: now,
                attempt: 0,
                sent: [None; SENT_HISTORY],
                inherited,
            },
        );
        match known {
            Some(inc) => self.pin_and_send(now, mid, inc),
            None => self.send_hello(now, mid),
        }
        id
    }

    /// Ends call `id` with [`CallError::Cancelled`]. Returns whether it was
    /// pending.
    pub fn cancel(&mut self, id: CallId) -> bool {
        match self.call_ids.get(&id).copied() {
            Some(mid) => {
                self.finish_call(mid, Err(CallError::Cancelled));
                true
            }
            None => false,
        }
    }

    /// Records that `node` runs `incarnation` (learnt by another layer), so
    /// calls to it skip the `Hello` round trip. A newer incarnation than the
    /// one known fails the calls pinned to the old one with
    /// [`CallError::PeerRestarted`]; an older one is ignored.
    pub fn learn_incarnation(&mut self, now: Instant, node: NodeId, incarnation: Incarnation) {
        self.touch_peer(now, node);
        self.learn(now, node, incarnation);
    }

    fn learn(&mut self, now: Instant, node: NodeId, inc: Incarnation) {
        let Some(peer) = self.peers.get_mut(&node) else {
            return;
        };
        match peer.incarnation {
            Some(old) if old == inc => {}
            Some(old) if old > inc => return,
            _ => {
                peer.incarnation = Some(inc);
                peer.pending_acks.clear();
                self.timers.cancel(&TimerKey::AckFlush(node));
                let stale: Vec<u64> = peer
                    .calls
                    .iter()
                    .copied()
                    .filter(|m| {
                        self.calls
                            .get(m)
                            .and_then(|c| c.pinned)
                            .is_some_and(|p| p < inc)
                    })
                    .collect();
                for m in stale {
                    self.finish_call(m, Err(CallError::PeerRestarted));
                }
            }
        }
        let resolving: Vec<u64> = self
            .peers
            .get(&node)
            .map(|p| p.calls.iter().copied().collect())
            .unwrap_or_default();
        for m in resolving {
            if self
                .calls
                .get(&m)
                .is_some_and(|c| c.phase == Phase::Resolving)
            {
                self.pin_and_send(now, m, inc);
            }
        }
    }

    fn arm_call(&mut self, mid: u64) {
        if let Some(c) = self.calls.get(&mid) {
            let at = c.next_action.min(c.deadline);
            if at == Instant::MAX {
                self.timers.cancel(&TimerKey::Call(mid));
            } else {
                self.timers.set(TimerKey::Call(mid), at);
            }
        }
    }

    fn send_hello(&mut self, now: Instant, mid: u64) {
        let Some(c) = self.calls.get(&mid) else {
            return;
        };
        let (node, retries) = (c.node, c.retries);
        let rto = self.call_rto(mid, retries);
        let Some(c) = self.calls.get_mut(&mid) else {
            return;
        };
        c.phase = Phase::Resolving;
        c.next_action = now + rto;
        let attempt = c.next_attempt(now, true);
        self.stats.hellos_sent += 1;
        self.send_message(
            now,
            node,
            &ChanMessage::Hello {
                nonce: mid,
                attempt,
            },
        );
        self.arm_call(mid);
    }

    fn pin_and_send(&mut self, now: Instant, mid: u64, inc: Incarnation) {
        let Some(c) = self.calls.get_mut(&mid) else {
            return;
        };
        c.pinned = Some(inc);
        c.retries = 0;
        let node = c.node;
        let body = c.body.take().unwrap_or_default();
        let procedure = c.procedure;
        let (acks, done_below) = self.take_acks(node);
        let patience_ms = self.patience_ms(now, mid);
        let rtt_hint_ms = self
            .rtt_hint(node)
            .map_or(0, |r| u32::try_from(r.as_millis()).unwrap_or(u32::MAX));
        let msg = ChanMessage::Request(Request {
            mid,
            client: self.incarnation,
            server: inc,
            procedure,
            done_below,
            acks,
            patience_ms,
            attempt: 0,
            rtt_hint_ms,
            body: Bytes(body),
        });
        let encoded = match wire::encode_body(&msg) {
            Ok(b) if b.len() <= self.blast.config().max_message => b,
            _ => {
                self.finish_call(mid, Err(CallError::TooLarge));
                return;
            }
        };
        // An attempt number adds at most 4 bytes to the encoding (varints).
        let stamped_len = encoded.len() + 4;
        let request = if self.blast.fragments_for(stamped_len) > 1
            || stamped_len > self.blast.config().max_message
        {
            Encoded::Large(Arc::from(encoded))
        } else {
            match msg {
                ChanMessage::Request(r) => Encoded::Small(r),
                _ => return,
            }
        };
        let inherited = self.inherited_shift(node);
        if let Some(c) = self.calls.get_mut(&mid) {
            c.request = Some(request);
            c.inherited = inherited;
        }
        self.send_request(now, mid);
    }

    /// How much longer call `mid` may ask for its reply, in milliseconds:
    /// until its deadline, and at most what its retries can take.
    fn patience_ms(&self, now: Instant, mid: u64) -> u32 {
        let Some(c) = self.calls.get(&mid) else {
            return 0;
        };
        let retries = self
            .config
            .max_rto
            .saturating_mul(c.max_retries.saturating_add(2))
            .saturating_add(self.config.probe_interval);
        let left = (c.deadline - now).min(retries);
        u32::try_from(left.as_millis()).unwrap_or(u32::MAX)
    }

    /// Acknowledgements for `node` to piggyback, and its `done_below`.
    fn take_acks(&mut self, node: NodeId) -> (Vec<u64>, u64) {
        let next_mid = self.next_mid;
        let Some(peer) = self.peers.get_mut(&node) else {
            return (Vec::new(), next_mid);
        };
        let mut acks = Vec::new();
        while acks.len() < MAX_ACKS {
            match peer.pending_acks.pop_first() {
                Some(m) => acks.push(m),
                None => break,
            }
        }
        if peer.pending_acks.is_empty() {
            self.timers.cancel(&TimerKey::AckFlush(node));
        }
        let done_below = peer.calls.first().copied().unwrap_or(next_mid);
        (acks, done_below)
    }

    fn send_request(&mut self, now: Instant, mid: u64) {
        let Some(c) = self.calls.get(&mid) else {
            return;
        };
        let (node, retries) = (c.node, c.retries);
        let rto = self.call_rto(mid, retries);
        let Some(c) = self.calls.get_mut(&mid) else {
            return;
        };
        let (bytes, small) = match &c.request {
            Some(Encoded::Large(b)) => (b.clone(), false),
            Some(Encoded::Small(r)) => {
                // One fragment at most: copying it to stamp it is cheap.
                let mut r = r.clone();
                r.attempt = c.next_attempt(now, true);
                match wire::encode_body(&ChanMessage::Request(r)) {
                    Ok(b) => (Arc::from(b), true),
                    Err(_) => {
                        self.stats.drops.record_kind("encode_failed");
                        return;
                    }
                }
            }
            None => return,
        };
        self.stats.requests_sent += 1;
        let transfer = self.send_bytes(now, node, bytes);
        if let Some(b) = transfer {
            self.transfers.insert(b, Transfer::Request(mid));
        }
        if let Some(c) = self.calls.get_mut(&mid) {
            if small && transfer.is_some() {
                // Against expectation more than one fragment: no sample.
                c.sent[c.attempt as usize % SENT_HISTORY] = None;
            }
            c.phase = Phase::Sending { transfer };
            c.next_action = if transfer.is_some() {
                Instant::MAX
            } else {
                now + rto
            };
        }
        self.arm_call(mid);
    }

    fn send_probe(&mut self, now: Instant, mid: u64) {
        let Some(c) = self.calls.get(&mid) else {
            return;
        };
        let (node, pinned) = (c.node, c.pinned);
        let probe_retries = match c.phase {
            Phase::Waiting { probe_retries, .. } => probe_retries,
            _ => 0,
        };
        let Some(server) = pinned else {
            return;
        };
        let rto = self.call_rto(mid, probe_retries);
        let patience_ms = self.patience_ms(now, mid);
        let Some(c) = self.calls.get_mut(&mid) else {
            return;
        };
        c.phase = Phase::Waiting {
            probe_outstanding: true,
            probe_retries,
        };
        c.next_action = now + rto;
        let attempt = c.next_attempt(now, true);
        self.stats.probes_sent += 1;
        self.send_message(
            now,
            node,
            &ChanMessage::Probe {
                mid,
                client: self.incarnation,
                server,
                patience_ms,
                attempt,
            },
        );
        self.arm_call(mid);
    }

    fn enter_waiting(&mut self, now: Instant, mid: u64) {
        let probe_at = now + self.config.probe_interval;
        let inherited = self
            .calls
            .get(&mid)
            .map_or(0, |c| self.inherited_shift(c.node));
        if let Some(c) = self.calls.get_mut(&mid) {
            if let Phase::Sending {
                transfer: Some(b), ..
            } = c.phase
            {
                self.transfers.remove(&b);
                self.blast.cancel(b);
            }
            c.phase = Phase::Waiting {
                probe_outstanding: false,
                probe_retries: 0,
            };
            c.retries = 0;
            c.inherited = inherited;
            c.next_action = probe_at;
        }
        self.arm_call(mid);
    }

    fn finish_call(&mut self, mid: u64, result: Result<Vec<u8>, CallError>) {
        let Some(c) = self.calls.remove(&mid) else {
            return;
        };
        self.call_ids.remove(&c.id);
        self.timers.cancel(&TimerKey::Call(mid));
        if let Phase::Sending { transfer: Some(b) } = c.phase {
            self.transfers.remove(&b);
            self.blast.cancel(b);
        }
        if let Some(p) = self.peers.get_mut(&c.node) {
            p.calls.remove(&mid);
        }
        match &result {
            Ok(_) => self.stats.calls_succeeded += 1,
            Err(e) => {
                self.stats.calls_failed += 1;
                match e {
                    CallError::Timeout => self.stats.timeouts += 1,
                    CallError::PeerRestarted => self.stats.peer_restarted += 1,
                    CallError::Unreachable => self.stats.unreachable += 1,
                    CallError::Cancelled => self.stats.cancelled += 1,
                    _ => {}
                }
            }
        }
        self.events.push_back(ChanEvent::Completed {
            id: c.id,
            node: c.node,
            result,
        });
    }

    /// Takes an RTT sample from `from`'s answer to call `mid` echoing
    /// `echo`: if that attempt is among the call's recent sampleable
    /// transmissions and not answered before, the sample is `now` minus its
    /// send time, unambiguous even for a retransmission. A valid sample
    /// clears the peer's back-off.
    fn sample_echo(&mut self, now: Instant, from: NodeId, mid: u64, echo: u32) {
        let Some(c) = self.calls.get_mut(&mid) else {
            return;
        };
        if c.node != from {
            return;
        }
        let Some(sent_at) = c.take_sent(echo) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&from) {
            p.rtt.sample(now - sent_at);
            p.backoff = 0;
            self.stats.rtt_samples += 1;
        }
    }

    fn on_call_timer(&mut self, now: Instant, mid: u64) {
        let Some(c) = self.calls.get(&mid) else {
            return;
        };
        if now >= c.deadline {
            self.finish_call(mid, Err(CallError::Timeout));
            return;
        }
        if now < c.next_action {
            self.arm_call(mid);
            return;
        }
        let (phase, max_retries) = (c.phase, c.max_retries);
        let retries = c.retries.saturating_add(1);
        match phase {
            Phase::Resolving | Phase::Sending { transfer: None } => {
                if retries > max_retries {
                    self.finish_call(mid, Err(CallError::Timeout));
                    return;
                }
                if let Some(c) = self.calls.get_mut(&mid) {
                    c.retries = retries;
                }
                self.note_backoff(mid, retries);
                self.stats.retransmissions += 1;
                if phase == Phase::Resolving {
                    self.send_hello(now, mid);
                } else {
                    self.send_request(now, mid);
                }
            }
            Phase::Sending { transfer: Some(_) } => self.arm_call(mid),
            Phase::Waiting {
                probe_outstanding,
                probe_retries,
            } => {
                if probe_outstanding {
                    let probe_retries = probe_retries.saturating_add(1);
                    if probe_retries > max_retries {
                        self.finish_call(mid, Err(CallError::Timeout));
                        return;
                    }
                    self.note_backoff(mid, probe_retries);
                    if let Some(c) = self.calls.get_mut(&mid) {
                        c.phase = Phase::Waiting {
                            probe_outstanding: true,
                            probe_retries,
                        };
                    }
                }
                self.send_probe(now, mid);
            }
        }
    }

    /// Looks up the call `mid` answered by `from` for server incarnation
    /// `server`; `None` if it is not pending or does not match.
    fn answered_call(&self, from: NodeId, mid: u64, server: Incarnation) -> bool {
        self.calls
            .get(&mid)
            .is_some_and(|c| c.node == from && c.pinned == Some(server))
    }

    fn queue_reply_ack(&mut self, now: Instant, node: NodeId, mid: u64) {
        let Some(peer) = self.peers.get_mut(&node) else {
            return;
        };
        peer.pending_acks.insert(mid);
        if peer.pending_acks.len() >= MAX_ACKS {
            self.flush_acks(now, node);
        } else if self.timers.get(&TimerKey::AckFlush(node)).is_none() {
            self.timers
                .set(TimerKey::AckFlush(node), now + self.config.ack_delay);
        }
    }

    fn flush_acks(&mut self, now: Instant, node: NodeId) {
        let server = self.peers.get(&node).and_then(|p| p.incarnation);
        let (mids, done_below) = self.take_acks(node);
        self.timers.cancel(&TimerKey::AckFlush(node));
        if mids.is_empty() {
            return;
        }
        let Some(server) = server else {
            return;
        };
        self.stats.reply_acks_sent += 1;
        self.send_message(
            now,
            node,
            &ChanMessage::ReplyAck {
                client: self.incarnation,
                server,
                mids,
                done_below,
            },
        );
        if self
            .peers
            .get(&node)
            .is_some_and(|p| !p.pending_acks.is_empty())
        {
            self.timers
                .set(TimerKey::AckFlush(node), now + self.config.ack_delay);
        }
    }

    fn on_client_message(&mut self, now: Instant, from: NodeId, msg: ChanMessage) {
        match msg {
            ChanMessage::Iam {
                nonce,
                incarnation,
                echo,
            } => {
                self.sample_echo(now, from, nonce, echo);
                if self.peers.contains_key(&from) {
                    self.learn(now, from, incarnation);
                }
            }
            ChanMessage::Reply {
                mid,
                server,
                echo,
                outcome,
            } => {
                if self.answered_call(from, mid, server) {
                    self.sample_echo(now, from, mid, echo);
                    let result = match outcome {
                        Outcome::Ok(b) => Ok(b.0),
                        Outcome::NoSuchProcedure => Err(CallError::NoSuchProcedure),
                        Outcome::TooLarge => Err(CallError::TooLarge),
                    };
                    self.finish_call(mid, result);
                }
                if self
                    .peers
                    .get(&from)
                    .is_some_and(|p| p.incarnation == Some(server))
                {
                    self.queue_reply_ack(now, from, mid);
                }
            }
            ChanMessage::Ack { mid, server, echo } => {
                if !self.answered_call(from, mid, server) {
                    return;
                }
                self.sample_echo(now, from, mid, echo);
                self.enter_waiting(now, mid);
            }
            ChanMessage::Unknown { mid, server, echo } => {
                if !self.answered_call(from, mid, server) {
                    return;
                }
                self.sample_echo(now, from, mid, echo);
                let Some(c) = self.calls.get_mut(&mid) else {
                    return;
                };
                if !matches!(c.phase, Phase::Waiting { .. }) {
                    return;
                }
                c.retries = c.retries.saturating_add(1);
                if c.retries > c.max_retries {
                    self.finish_call(mid, Err(CallError::Timeout));
                    return;
                }
                self.stats.retransmissions += 1;
                self.send_request(now, mid);
            }
            ChanMessage::Forgotten { mid, server, echo } => {
                if self.answered_call(from, mid, server) {
                    self.sample_echo(now, from, mid, echo);
                    self.finish_call(mid, Err(CallError::ReplyLost));
                }
            }
            ChanMessage::Restarted { mid, server, echo } => {
                let newer = self
                    .calls
                    .get(&mid)
                    .is_some_and(|c| c.node == from && c.pinned.is_some_and(|p| p < server));
                if newer {
                    // The path's round trip, whichever life answered.
                    self.sample_echo(now, from, mid, echo);
                    // `learn` fails every call pinned to an older life.
                    self.learn(now, from, server);
                }
            }
            _ => self.stats.drops.record_kind("unexpected_message"),
        }
    }

    // ---------------------------------------------------------------- server

    /// Executes-or-answers request `req` from `from`.
    fn on_request(&mut self, now: Instant, from: NodeId, req: Request) {
        self.stats.requests_received += 1;
        let echo = req.attempt;
        if req.server != self.incarnation {
            self.stats.restarted_answers += 1;
            let msg = ChanMessage::Restarted {
                mid: req.mid,
                server: self.incarnation,
                echo,
            };
            self.send_message(now, from, &msg);
            return;
        }
        if req.acks.len() > MAX_ACKS {
            self.stats.drops.record_kind("too_many_acks");
            return;
        }
        if !self.client_state(now, from, req.client) {
            return;
        }
        if let Some(s) = self.clients.get_mut(&from) {
            if req.rtt_hint_ms > 0 {
                s.rtt_hint = Some(
                    Duration::from_millis(u64::from(req.rtt_hint_ms))
                        .min(super::blast::MAX_RTT_HINT),
                );
            }
        }
        for &m in &req.acks {
            self.mark_done(from, m);
        }
        self.raise_low(from, req.done_below);
        let mid = req.mid;
        let keep_until = self.keep_until(now, req.patience_ms);
        self.extend(from, mid, keep_until, (echo, now));
        let state = self.clients.get(&from);
        let entry = state.and_then(|s| s.entries.get(&mid));
        match entry {
            Some(Entry::Executing { .. }) => {
                self.stats.duplicates_while_executing += 1;
                self.send_ack(now, from, mid, echo);
            }
            Some(Entry::Replied { .. }) => self.resend_reply(now, from, mid, echo),
            Some(Entry::Done) => self.send_forgotten(now, from, mid, echo),
            None if state.is_some_and(|s| mid < s.low) => self.send_forgotten(now, from, mid, echo),
            None => {
                if self.tokens.len() >= self.config.max_executing {
                    self.stats.drops.record_kind("server_busy");
                    return;
                }
                let token = RequestToken(self.next_token);
                self.next_token += 1;
                if let Some(s) = self.clients.get_mut(&from) {
                    s.entries.insert(
                        mid,
                        Entry::Executing {
                            token,
                            keep_until,
                            asked: (echo, now),
                        },
                    );
                }
                self.tokens.insert(token, (from, req.client, mid));
                self.stats.executions += 1;
                self.events.push_back(ChanEvent::Execute {
                    token,
                    from,
                    from_incarnation: req.client,
                    procedure: req.procedure,
                    body: req.body.0,
                });
            }
        }
    }

    /// Until when a reply asked for now with `patience_ms` must be kept.
    fn keep_until(&self, now: Instant, patience_ms: u32) -> Instant {
        let patience = Duration::from_millis(u64::from(patience_ms))
            .min(self.config.max_reply_retention)
            .max(self.config.reply_retention);
        now + patience
    }

    /// The client asked for `(node, mid)` again (with attempt `asked.0`, at
    /// `asked.1`): keep it until `until`.
    fn extend(&mut self, node: NodeId, mid: u64, until: Instant, asked: (u32, Instant)) {
        let Some(e) = self
            .clients
            .get_mut(&node)
            .and_then(|s| s.entries.get_mut(&mid))
        else {
            return;
        };
        match e {
            Entry::Executing {
                keep_until,
                asked: a,
                ..
            } => {
                *keep_until = (*keep_until).max(until);
                *a = asked;
            }
            Entry::Replied { expires, .. } if *expires < until => {
                self.saved_index.remove(&(*expires, node, mid));
                *expires = until;
                self.saved_index.insert((until, node, mid));
            }
            _ => {}
        }
    }

    /// Finds or makes the duplicate table of `(from, client)`. Returns false
    /// (and counts) if the request must be dropped.
    fn client_state(&mut self, now: Instant, from: NodeId, client: Incarnation) -> bool {
        match self.clients.get(&from) {
            Some(s) if s.incarnation == client => {}
            Some(s) if s.incarnation > client => {
                self.stats.drops.record_kind("stale_client");
                return false;
            }
            Some(_) => {
                // The client restarted: its previous life's table goes.
                self.drop_client(from);
                self.new_client(now, from, client);
            }
            None => {
                if self.clients.len() >= self.config.max_clients {
                    let retention = self.config.client_retention;
                    let victim = self
                        .clients
                        .iter()
                        .filter(|(_, s)| {
                            now - s.last_activity >= retention
                                && !s
                                    .entries
                                    .values()
                                    .any(|e| matches!(e, Entry::Executing { .. }))
                        })
                        .min_by_key(|(n, s)| (s.last_activity, **n))
                        .map(|(n, _)| *n);
                    match victim {
                        Some(v) => {
                            self.drop_client(v);
                            self.stats.clients_expired += 1;
                        }
                        None => {
                            self.stats.drops.record_kind("client_table_full");
                            return false;
                        }
                    }
                }
                self.new_client(now, from, client);
            }
        }
        if let Some(s) = self.clients.get_mut(&from) {
            s.last_activity = now;
        }
        true
    }

    fn new_client(&mut self, now: Instant, from: NodeId, client: Incarnation) {
        self.clients.insert(
            from,
            ClientState {
                incarnation: client,
                rtt_hint: None,
                low: 0,
                entries: BTreeMap::new(),
                saved: 0,
                last_activity: now,
            },
        );
        if self.timers.get(&TimerKey::Sweep).is_none() {
            self.timers
                .set(TimerKey::Sweep, now + self.sweep_interval());
        }
    }

    fn sweep_interval(&self) -> Duration {
        (self
            .config
            .reply_retention
            .min(self.config.client_retention)
            / 4)
        .max(Duration::from_millis(10))
    }

    fn drop_client(&mut self, node: NodeId) {
        let Some(s) = self.clients.remove(&node) else {
            return;
        };
        for (mid, e) in s.entries {
            if let Entry::Replied {
                message,
                expires,
                transfer,
            } = e
            {
                self.saved_bytes = self.saved_bytes.saturating_sub(message.len());
                self.saved_index.remove(&(expires, node, mid));
                if let Some(b) = transfer {
                    self.transfers.remove(&b);
                    self.blast.cancel(b);
                }
            }
        }
    }

    /// Frees the saved reply of `(node, mid)`, keeping the id as done. A
    /// BLAST transfer of the reply still under way goes on (BLAST holds its
    /// own reference and its own DONE bound): evicting a saved reply must
    /// not destroy the copy that is about to arrive.
    fn mark_done(&mut self, node: NodeId, mid: u64) {
        let Some(s) = self.clients.get_mut(&node) else {
            return;
        };
        let Some(e) = s.entries.get_mut(&mid) else {
            return;
        };
        // A running call stays running; a done one stays done.
        if !matches!(e, Entry::Replied { .. }) {
            return;
        }
        if let Entry::Replied {
            message, expires, ..
        } = std::mem::replace(e, Entry::Done)
        {
            s.saved = s.saved.saturating_sub(1);
            self.saved_bytes = self.saved_bytes.saturating_sub(message.len());
            self.saved_index.remove(&(expires, node, mid));
        }
    }

    /// Raises the watermark of `node` to `low` and enforces the table bound.
    fn raise_low(&mut self, node: NodeId, low: u64) {
        let Some(s) = self.clients.get(&node) else {
            return;
        };
        let below: Vec<u64> = s
            .entries
            .range(..low)
            .filter(|(_, e)| !matches!(e, Entry::Executing { .. }))
            .map(|(m, _)| *m)
            .collect();
        for m in below {
            self.mark_done(node, m);
            if let Some(s) = self.clients.get_mut(&node) {
                s.entries.remove(&m);
            }
        }
        let max_done = self.config.max_done_per_client;
        if let Some(s) = self.clients.get_mut(&node) {
            s.low = s.low.max(low);
        }
        loop {
            let Some(s) = self.clients.get(&node) else {
                return;
            };
            let finished = s
                .entries
                .values()
                .filter(|e| !matches!(e, Entry::Executing { .. }))
                .count();
            if finished <= max_done {
                return;
            }
            let Some(m) = s
                .entries
                .iter()
                .find(|(_, e)| !matches!(e, Entry::Executing { .. }))
                .map(|(m, _)| *m)
            else {
                return;
            };
            if matches!(s.entries.get(&m), Some(Entry::Replied { .. })) {
                self.stats.saved_replies_evicted += 1;
            }
            self.mark_done(node, m);
            if let Some(s) = self.clients.get_mut(&node) {
                s.entries.remove(&m);
                s.low = s.low.max(m.saturating_add(1));
            }
        }
    }

    fn send_ack(&mut self, now: Instant, to: NodeId, mid: u64, echo: u32) {
        let msg = ChanMessage::Ack {
            mid,
            server: self.incarnation,
            echo,
        };
        self.send_message(now, to, &msg);
    }

    fn send_forgotten(&mut self, now: Instant, to: NodeId, mid: u64, echo: u32) {
        self.stats.forgotten_answers += 1;
        let msg = ChanMessage::Forgotten {
            mid,
            server: self.incarnation,
            echo,
        };
        self.send_message(now, to, &msg);
    }

    /// Answers a duplicate request or a probe (attempt `echo`) for a call
    /// with a saved reply.
    fn resend_reply(&mut self, now: Instant, to: NodeId, mid: u64, echo: u32) {
        let Some(Entry::Replied {
            message, transfer, ..
        }) = self.clients.get(&to).and_then(|s| s.entries.get(&mid))
        else {
            return;
        };
        if transfer.is_some() {
            // The reply is still on its way (multi-fragment): just ACK.
            self.stats.duplicates_while_executing += 1;
            self.send_ack(now, to, mid, echo);
            return;
        }
        let message = message.clone();
        self.stats.duplicates_answered_from_cache += 1;
        self.transmit_reply(now, to, mid, message, echo);
    }

    /// Sends the saved reply `message` (encoded with echo 0) of `(to, mid)`
    /// in answer to attempt `echo` (0: to none). A one-fragment reply is
    /// re-encoded carrying `echo`; a multi-fragment one is preceded by an
    /// `Ack` carrying it and itself echoes nothing (its transfer time is no
    /// round trip).
    fn transmit_reply(
        &mut self,
        now: Instant,
        to: NodeId,
        mid: u64,
        message: Arc<[u8]>,
        echo: u32,
    ) {
        let Some(inc) = self.clients.get(&to).map(|s| s.incarnation) else {
            return;
        };
        // An echo adds at most 4 bytes to the encoding (varints).
        let stamped_len = message.len() + 4;
        let message = if self.blast.fragments_for(stamped_len) > 1 {
            // Tell the client its request is in hand before a long transfer.
            self.send_ack(now, to, mid, echo);
            message
        } else if stamped_len <= self.blast.config().max_message {
            stamp_reply(message, echo)
        } else {
            message
        };
        self.stats.replies_sent += 1;
        let transfer = self.send_bytes(now, to, message);
        if let Some(b) = transfer {
            self.transfers.insert(b, Transfer::Reply(to, inc, mid));
            if let Some(Entry::Replied { transfer: t, .. }) = self
                .clients
                .get_mut(&to)
                .and_then(|s| s.entries.get_mut(&mid))
            {
                *t = Some(b);
            }
        }
    }

    /// Tells the client of `token` that its request runs (so it stops
    /// retransmitting and starts probing). Returns whether the token is
    /// pending.
    pub fn acknowledge(&mut self, now: Instant, token: RequestToken) -> bool {
        let Some(&(node, inc, mid)) = self.tokens.get(&token) else {
            return false;
        };
        if self
            .clients
            .get(&node)
            .is_some_and(|s| s.incarnation == inc)
        {
            let echo = self.immediate_echo(now, node, mid);
            self.send_ack(now, node, mid, echo);
        }
        true
    }

    /// The attempt an answer to running call `(node, mid)` sent at `now`
    /// echoes: that of the request or probe that arrived at this very
    /// instant, if any. An answer sent later (a deferred handler's) echoes
    /// nothing, as the wait is no part of the round trip.
    fn immediate_echo(&self, now: Instant, node: NodeId, mid: u64) -> u32 {
        match self.clients.get(&node).and_then(|s| s.entries.get(&mid)) {
            Some(Entry::Executing {
                asked: (attempt, at),
                ..
            }) if *at == now => *attempt,
            _ => 0,
        }
    }

    /// Answers request `token`. Returns whether the token was pending (a
    /// token answers once).
    pub fn respond(&mut self, now: Instant, token: RequestToken, outcome: Outcome) -> bool {
        let Some((node, inc, mid)) = self.tokens.remove(&token) else {
            return false;
        };
        let live = self.clients.get(&node).is_some_and(|s| {
            s.incarnation == inc
                && matches!(s.entries.get(&mid), Some(Entry::Executing { token: t, .. }) if *t == token)
        });
        if !live {
            self.stats.replies_discarded += 1;
            return true;
        }
        let low = self.clients.get(&node).map_or(0, |s| s.low);
        if mid < low {
            // The client has moved on (it timed out or cancelled).
            if let Some(s) = self.clients.get_mut(&node) {
                s.entries.remove(&mid);
            }
            self.stats.replies_discarded += 1;
            return true;
        }
        let echo = self.immediate_echo(now, node, mid);
        // Saved with echo 0; `transmit_reply` stamps each transmission.
        let mut encoded = wire::encode_body(&ChanMessage::Reply {
            mid,
            server: self.incarnation,
            echo: 0,
            outcome,
        })
        .ok()
        .filter(|b| b.len() <= self.blast.config().max_message);
        if encoded.is_none() {
            encoded = wire::encode_body(&ChanMessage::Reply {
                mid,
                server: self.incarnation,
                echo: 0,
                outcome: Outcome::TooLarge,
            })
            .ok();
        }
        let Some(encoded) = encoded else {
            return true;
        };
        let message: Arc<[u8]> = Arc::from(encoded);
        let mut expires = now + self.config.reply_retention;
        if let Some(s) = self.clients.get_mut(&node) {
            if let Some(Entry::Executing { keep_until, .. }) = s.entries.get(&mid) {
                expires = expires.max(*keep_until);
            }
            s.entries.insert(
                mid,
                Entry::Replied {
                    message: message.clone(),
                    expires,
                    transfer: None,
                },
            );
            s.saved += 1;
        }
        self.saved_bytes += message.len();
        self.saved_index.insert((expires, node, mid));
        self.transmit_reply(now, node, mid, message, echo);
        self.enforce_saved_bounds(node);
        true
    }

    fn enforce_saved_bounds(&mut self, node: NodeId) {
        let per_client = self.config.max_saved_replies_per_client;
        while let Some(s) = self.clients.get(&node) {
            if s.saved <= per_client {
                break;
            }
            let oldest = s
                .entries
                .iter()
                .filter_map(|(m, e)| match e {
                    Entry::Replied { expires, .. } => Some((*expires, *m)),
                    _ => None,
                })
                .min();
            let Some((_, m)) = oldest else {
                break;
            };
            self.stats.saved_replies_evicted += 1;
            self.mark_done(node, m);
        }
        while self.saved_bytes > self.config.max_saved_reply_bytes {
            let Some(&first) = self.saved_index.first() else {
                break;
            };
            self.stats.saved_replies_evicted += 1;
            self.mark_done(first.1, first.2);
            // mark_done removes it; make sure, so this loop always ends.
            self.saved_index.remove(&first);
        }
    }

    fn on_probe(&mut self, now: Instant, from: NodeId, probe: ProbeIn) {
        let ProbeIn {
            mid,
            client,
            server,
            patience_ms,
            attempt: echo,
        } = probe;
        if server != self.incarnation {
            self.stats.restarted_answers += 1;
            let msg = ChanMessage::Restarted {
                mid,
                server: self.incarnation,
                echo,
            };
            self.send_message(now, from, &msg);
            return;
        }
        let known = self
            .clients
            .get(&from)
            .is_some_and(|s| s.incarnation == client);
        if !known {
            self.stats.unknown_answers += 1;
            let msg = ChanMessage::Unknown {
                mid,
                server: self.incarnation,
                echo,
            };
            self.send_message(now, from, &msg);
            return;
        }
        if let Some(s) = self.clients.get_mut(&from) {
            s.last_activity = now;
        }
        let keep_until = self.keep_until(now, patience_ms);
        self.extend(from, mid, keep_until, (echo, now));
        let state = self.clients.get(&from);
        match state.and_then(|s| s.entries.get(&mid)) {
            Some(Entry::Executing { .. }) => self.send_ack(now, from, mid, echo),
            Some(Entry::Replied { .. }) => self.resend_reply(now, from, mid, echo),
            Some(Entry::Done) => self.send_forgotten(now, from, mid, echo),
            None if state.is_some_and(|s| mid < s.low) => self.send_forgotten(now, from, mid, echo),
            None => {
                self.stats.unknown_answers += 1;
                let msg = ChanMessage::Unknown {
                    mid,
                    server: self.incarnation,
                    echo,
                };
                self.send_message(now, from, &msg);
            }
        }
    }

    fn on_sweep(&mut self, now: Instant) {
        while let Some(&(at, n, m)) = self.saved_index.first() {
            if at > now {
                break;
            }
            self.stats.saved_replies_expired += 1;
            self.mark_done(n, m);
            self.saved_index.remove(&(at, n, m));
        }
        let client_retention = self.config.client_retention;
        let idle: Vec<NodeId> = self
            .clients
            .iter()
            .filter(|(_, s)| {
                now - s.last_activity >= client_retention
                    && !s
                        .entries
                        .values()
                        .any(|e| matches!(e, Entry::Executing { .. }))
            })
            .map(|(n, _)| *n)
            .collect();
        for n in idle {
            self.stats.clients_expired += 1;
            self.drop_client(n);
        }
        if !self.clients.is_empty() {
            self.timers
                .set(TimerKey::Sweep, now + self.sweep_interval());
        }
    }

    // ---------------------------------------------------------------- input

    fn on_message(&mut self, now: Instant, from: NodeId, bytes: &[u8]) {
        let msg = match wire::decode_message::<ChanMessage>(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.stats.drops.record_kind("malformed_message");
                return;
            }
        };
        if let Some(p) = self.peers.get_mut(&from) {
            p.unreachable_strikes = 0;
        }
        match msg {
            ChanMessage::Hello { nonce, attempt } => {
                let msg = ChanMessage::Iam {
                    nonce,
                    incarnation: self.incarnation,
                    echo: attempt,
                };
                self.send_message(now, from, &msg);
            }
            ChanMessage::Request(req) => self.on_request(now, from, req),
            ChanMessage::Probe {
                mid,
                client,
                server,
                patience_ms,
                attempt,
            } => self.on_probe(
                now,
                from,
                ProbeIn {
                    mid,
                    client,
                    server,
                    patience_ms,
                    attempt,
                },
            ),
            ChanMessage::ReplyAck {
                client,
                server,
                mids,
                done_below,
            } => {
                if server != self.incarnation
                    || mids.len() > MAX_ACKS
                    || !self
                        .clients
                        .get(&from)
                        .is_some_and(|s| s.incarnation == client)
                {
                    self.stats.drops.record_kind("stale_reply_ack");
                    return;
                }
                if let Some(s) = self.clients.get_mut(&from) {
                    s.last_activity = now;
                }
                for m in mids {
                    self.mark_done(from, m);
                }
                self.raise_low(from, done_below);
            }
            other => self.on_client_message(now, from, other),
        }
    }

    fn on_blast_event(&mut self, now: Instant, ev: BlastEvent) {
        match ev {
            BlastEvent::Delivered { from, message, .. } => self.on_message(now, from, &message),
            BlastEvent::Acked { mid, .. } => match self.transfers.remove(&mid) {
                Some(Transfer::Request(call)) => {
                    let sending = self.calls.get(&call).is_some_and(|c| {
                        c.phase
                            == Phase::Sending {
                                transfer: Some(mid),
                            }
                    });
                    if sending {
                        if let Some(c) = self.calls.get_mut(&call) {
                            // Already removed from `transfers`.
                            c.phase = Phase::Sending { transfer: None };
                        }
                        self.enter_waiting(now, call);
                    }
                }
                // The whole reply arrived: as good as the client's ack.
                Some(Transfer::Reply(node, inc, call))
                    if self
                        .clients
                        .get(&node)
                        .is_some_and(|s| s.incarnation == inc) =>
                {
                    self.clear_reply_transfer(node, call);
                    self.mark_done(node, call);
                }
                _ => {}
            },
            BlastEvent::Abandoned { mid, .. } => match self.transfers.remove(&mid) {
                Some(Transfer::Request(call)) => {
                    let sending = self.calls.get(&call).is_some_and(|c| {
                        c.phase
                            == Phase::Sending {
                                transfer: Some(mid),
                            }
                    });
                    if sending {
                        // Did the request get there? Ask (a probe is small);
                        // `Unknown` makes us resend it.
                        let max = self.calls.get(&call).map_or(0, |c| c.max_retries);
                        let retries = self
                            .calls
                            .get(&call)
                            .map_or(0, |c| c.retries)
                            .saturating_add(1);
                        if retries > max {
                            self.finish_call(call, Err(CallError::Timeout));
                            return;
                        }
                        if let Some(c) = self.calls.get_mut(&call) {
                            c.retries = retries;
                            c.phase = Phase::Waiting {
                                probe_outstanding: false,
                                probe_retries: 0,
                            };
                        }
                        self.send_probe(now, call);
                    }
                }
                Some(Transfer::Reply(node, _, call)) => self.clear_reply_transfer(node, call),
                None => {}
            },
        }
    }

    fn clear_reply_transfer(&mut self, node: NodeId, mid: u64) {
        if let Some(Entry::Replied { transfer, .. }) = self
            .clients
            .get_mut(&node)
            .and_then(|s| s.entries.get_mut(&mid))
        {
            *transfer = None;
        }
    }

    fn pump_blast(&mut self, now: Instant) {
        while let Some(ev) = self.blast.poll_event() {
            self.on_blast_event(now, ev);
        }
    }

    /// The host reported `node` unreachable: retransmit to it once at once;
    /// a second report before any answer fails its calls with
    /// [`CallError::Unreachable`].
    pub fn unreachable(&mut self, now: Instant, node: NodeId) {
        let Some(peer) = self.peers.get_mut(&node) else {
            return;
        };
        if peer.calls.is_empty() {
            return;
        }
        peer.unreachable_strikes = peer.unreachable_strikes.saturating_add(1);
        let strikes = peer.unreachable_strikes;
        let calls: Vec<u64> = peer.calls.iter().copied().collect();
        if strikes >= 2 {
            if let Some(p) = self.peers.get_mut(&node) {
                p.unreachable_strikes = 0;
            }
            for m in calls {
                self.finish_call(m, Err(CallError::Unreachable));
            }
            return;
        }
        for m in calls {
            let Some(c) = self.calls.get_mut(&m) else {
                continue;
            };
            match c.phase {
                Phase::Resolving => {
                    self.stats.retransmissions += 1;
                    self.send_hello(now, m);
                }
                Phase::Sending { transfer: None } => {
                    self.stats.retransmissions += 1;
                    self.send_request(now, m);
                }
                Phase::Sending { transfer: Some(_) } => {}
                Phase::Waiting { .. } => self.send_probe(now, m),
            }
        }
    }
}

/// The fields of a received [`ChanMessage::Probe`].
struct ProbeIn {
    mid: u64,
    client: Incarnation,
    server: Incarnation,
    patience_ms: u32,
    attempt: u32,
}

/// `message` (an encoded [`ChanMessage::Reply`]) carrying `echo` instead.
/// Only for one-fragment replies: it decodes and re-encodes.
fn stamp_reply(message: Arc<[u8]>, echo: u32) -> Arc<[u8]> {
    if echo == 0 {
        return message;
    }
    match wire::decode_message::<ChanMessage>(&message) {
        Ok(ChanMessage::Reply {
            mid,
            server,
            outcome,
            ..
        }) => wire::encode_body(&ChanMessage::Reply {
            mid,
            server,
            echo,
            outcome,
        })
        .map_or(message, Arc::from),
        _ => message,
    }
}

impl Core for Chan {
    type Event = ChanEvent;

    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        if packet.protocol != ProtocolId::Rpc {
            self.stats.drops.record_kind("wrong_protocol");
            return;
        }
        self.blast.handle_packet(now, packet);
        self.pump_blast(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.blast.handle_timeout(now);
        self.pump_blast(now);
        while let Some(key) = self.timers.pop_due(now) {
            match key {
                TimerKey::Call(mid) => self.on_call_timer(now, mid),
                TimerKey::AckFlush(node) => self.flush_acks(now, node),
                TimerKey::Sweep => self.on_sweep(now),
            }
            self.pump_blast(now);
        }
    }

    fn handle_unreachable(&mut self, now: Instant, node: NodeId) {
        self.unreachable(now, node);
        self.pump_blast(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.blast.poll_transmit()
    }

    fn poll_event(&mut self) -> Option<ChanEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        crate::time::earliest(self.timers.next(), self.blast.poll_timeout())
    }
}
