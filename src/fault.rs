//! The faults a driver injects into a node's traffic: loss, duplication,
//! delay with jitter, and blocking nodes in both directions or one way
//! (seed 001, section 5.6).
//!
//! [`FaultConfig`] is plain data, serializable so that `msctl fault` can
//! send it over RPC and the mserver's admin procedures can merge a change
//! into the current one. It lives here, below the cores and the drivers,
//! because both sides name it: the mserver's admin procedures, which carry
//! it from `msctl` to the node, and the runtime's fault-injection
//! interceptor (`FaultInjector`), which applies it (`runtime` re-exports
//! these types). It imports only [`crate::id`].

use crate::id::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Faults to inject, serializable so that `msctl fault` can send it over
/// RPC. The default injects nothing ("clear").
///
/// Loss, duplication and delay apply to every packet in both directions;
/// blocks match the header node or the UDP peer (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultConfig {
    /// Percentage (0-100) of packets dropped at random.
    pub drop_pct: f64,
    /// Percentage (0-100) of packets sent or delivered twice.
    pub duplicate_pct: f64,
    /// Fixed delay added to every packet, in milliseconds.
    pub delay_ms: u64,
    /// Extra random delay, uniform in `0..=jitter_ms` milliseconds.
    pub jitter_ms: u64,
    /// Drop everything sent to or received from these nodes.
    pub block: BTreeSet<NodeId>,
    /// Drop only what arrives from these nodes (a one-way partition).
    pub block_in: BTreeSet<NodeId>,
    /// Reseed the injector's RNG with this seed when the config is applied
    /// (`None`: keep the current RNG, seeded from entropy or the socket
    /// options).
    pub seed: Option<u64>,
}

/// Why a [`FaultConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultConfigError {
    /// A percentage outside 0-100 (or not a number).
    #[error("{field} must be a percentage between 0 and 100, got {value}")]
    BadPercentage {
        /// Which field.
        field: &'static str,
        /// What was given.
        value: String,
    },
    /// Delay plus jitter above [`FaultConfig::MAX_DELAY_MS`].
    #[error("delay_ms + jitter_ms must be at most {max} ms, got {got}")]
    DelayTooLong {
        /// The limit.
        max: u64,
        /// What was asked for.
        got: u64,
    },
}

impl FaultConfig {
    /// The longest delay (fixed plus jitter) accepted: one minute.
    pub const MAX_DELAY_MS: u64 = 60_000;

    /// No faults.
    pub fn clear() -> Self {
        FaultConfig::default()
    }

    /// Whether this injects nothing.
    pub fn is_clear(&self) -> bool {
        FaultConfig {
            seed: None,
            ..self.clone()
        } == FaultConfig::default()
    }

    /// With `pct` percent loss.
    pub fn with_drop_pct(mut self, pct: f64) -> Self {
        self.drop_pct = pct;
        self
    }

    /// With `pct` percent duplication.
    pub fn with_duplicate_pct(mut self, pct: f64) -> Self {
        self.duplicate_pct = pct;
        self
    }

    /// With a fixed delay and a jitter, in milliseconds.
    pub fn with_delay_ms(mut self, delay_ms: u64, jitter_ms: u64) -> Self {
        self.delay_ms = delay_ms;
        self.jitter_ms = jitter_ms;
        self
    }

    /// Also blocking `node` in both directions.
    pub fn with_block(mut self, node: NodeId) -> Self {
        self.block.insert(node);
        self
    }

    /// Also dropping what arrives from `node`.
    pub fn with_block_in(mut self, node: NodeId) -> Self {
        self.block_in.insert(node);
        self
    }

    /// With the RNG reseeded to `seed`.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), FaultConfigError> {
        for (field, value) in [
            ("drop_pct", self.drop_pct),
            ("duplicate_pct", self.duplicate_pct),
        ] {
            if !(0.0..=100.0).contains(&value) {
                return Err(FaultConfigError::BadPercentage {
                    field,
                    value: value.to_string(),
                });
            }
        }
        let got = self.delay_ms.saturating_add(self.jitter_ms);
        if got > Self::MAX_DELAY_MS {
            return Err(FaultConfigError::DelayTooLong {
                max: Self::MAX_DELAY_MS,
                got,
            });
        }
        Ok(())
    }
}
