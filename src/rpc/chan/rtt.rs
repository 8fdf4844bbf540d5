//! Adaptive retransmission (seed 004, section 5.2.6, used by CHAN in 5.3.2):
//! the Jacobson/Karels round-trip estimator and the per-peer retransmission
//! timeout derived from it, with exponential back-off.
//!
//! [`RttEstimator`] is the book's integer arithmetic. `PeerRto` is what the
//! CHAN client keeps per server: the estimator and the back-off remembered
//! since its last valid sample. The timeout of a transmission is the base
//! RTO (`base_rto`: the estimate, else [`ChanConfig::initial_rto`], clamped
//! to [`ChanConfig::min_rto`]..[`ChanConfig::max_rto`]) doubled once per
//! back-off step (`backed_off_rto`). A new call, or a new phase of a call,
//! inherits at most [`ChanConfig::max_inherited_backoff`] of the peer's
//! doublings (`inherited_shift`). Samples come from echoed attempt numbers
//! instead of Karn/Partridge's rule (see [`ChanMessage`](super::ChanMessage)),
//! and any valid sample clears the peer's back-off.

use super::config::ChanConfig;
use std::time::Duration;

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

/// The adaptive retransmission state of one peer (a server this endpoint
/// calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct PeerRto {
    /// The round-trip estimate.
    pub(super) rtt: RttEstimator,
    /// Doublings of the RTO remembered from retransmissions since the last
    /// valid RTT sample.
    pub(super) backoff: u32,
}

impl PeerRto {
    /// Folds in a valid sample, which clears the back-off.
    pub(super) fn sample(&mut self, rtt: Duration) {
        self.rtt.sample(rtt);
        self.backoff = 0;
    }

    /// Remembers that a retransmission used `shift` doublings.
    pub(super) fn note_backoff(&mut self, shift: u32) {
        self.backoff = self.backoff.max(shift);
    }
}

/// The RTO of a peer before back-off: its estimator's timeout, else
/// [`ChanConfig::initial_rto`] (also for a peer not in the table), clamped to
/// `min_rto..max_rto`.
pub(super) fn base_rto(config: &ChanConfig, peer: Option<&PeerRto>) -> Duration {
    peer.and_then(|p| p.rtt.timeout())
        .unwrap_or(config.initial_rto)
        .clamp(config.min_rto, config.max_rto)
}

/// The RTO of a peer doubled `shift` times, at most `max_rto`.
pub(super) fn backed_off_rto(config: &ChanConfig, peer: Option<&PeerRto>, shift: u32) -> Duration {
    base_rto(config, peer)
        .saturating_mul(1u32 << shift.min(20))
        .min(config.max_rto)
}

/// The doublings a new call (or phase) to a peer starts with.
pub(super) fn inherited_shift(config: &ChanConfig, peer: Option<&PeerRto>) -> u32 {
    peer.map_or(0, |p| p.backoff.min(config.max_inherited_backoff))
}
