//! CHAN's settings: the endpoint's [`ChanConfig`] (timers, retry counts and
//! the bounds of every table, seed 004 section 5.3.2 with the adaptive
//! timeout of 5.2.6) and a call's [`CallOptions`].

use crate::time::Instant;
use std::time::Duration;

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
    /// [`CallError::Timeout`](super::CallError::Timeout) (default
    /// [`ChanConfig::max_retries`]).
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
    /// [`ChanMessage`](super::ChanMessage)), a long back-off is only ever
    /// needed against a dead or badly congested peer, and there a 2 s
    /// retransmission period is gentle enough, while a longer one (the 10 s
    /// of WAN-minded stacks) makes a single lost datagram cost that long.
    /// Raise it for long or slow paths.
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
