//! The runtime's clock: the one place (with the daemons) that reads the
//! system clocks (DESIGN.md section 3).
//!
//! Cores see time as [`crate::time::Instant`], microseconds since an epoch
//! chosen by their driver. Under the runtime that epoch is a process-wide
//! `std::time::Instant` taken the first time anything asks for the time
//! ([`Clock::epoch`]), so every driver, socket and timer in one process agrees
//! on what `Instant::from_micros(n)` means. [`Clock::to_std`] maps a core's
//! deadline back to a `std::time::Instant` (e.g. for
//! `tokio::time::sleep_until`).
//!
//! Incarnations (a UUID v7 per node life) are also minted here, from the
//! system clock: see [`new_incarnation`].

use crate::id::Incarnation;
use crate::time::Instant;
use std::sync::OnceLock;
use std::time::Duration;

static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();

/// Maps between `std::time::Instant` and the cores' [`Instant`].
///
/// A zero-sized handle: all instances share the process-wide epoch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock;

impl Clock {
    /// The process-wide epoch (time zero of [`Instant`]), fixed the first
    /// time it is asked for.
    #[allow(clippy::disallowed_methods)]
    pub fn epoch() -> std::time::Instant {
        *EPOCH.get_or_init(std::time::Instant::now)
    }

    /// The current time as the cores see it.
    #[allow(clippy::disallowed_methods)]
    pub fn now() -> Instant {
        let epoch = Self::epoch();
        Self::from_std(std::time::Instant::now().max(epoch))
    }

    /// The current time as a `std::time::Instant`.
    #[allow(clippy::disallowed_methods)]
    pub fn now_std() -> std::time::Instant {
        // Fix the epoch first, so that `from_std(now_std())` is never before it.
        let _ = Self::epoch();
        std::time::Instant::now()
    }

    /// Converts a `std::time::Instant` (instants before the epoch map to
    /// [`Instant::ZERO`]).
    pub fn from_std(t: std::time::Instant) -> Instant {
        let since = t.saturating_duration_since(Self::epoch());
        Instant::from_micros(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
    }

    /// Converts a core's [`Instant`] back to a `std::time::Instant`. An
    /// instant too far in the future to represent (e.g. [`Instant::MAX`])
    /// maps to roughly a century from the epoch.
    pub fn to_std(t: Instant) -> std::time::Instant {
        let epoch = Self::epoch();
        epoch
            .checked_add(Duration::from_micros(t.as_micros()))
            .or_else(|| epoch.checked_add(FAR_FUTURE))
            .unwrap_or(epoch)
    }

    /// How long from now until `deadline` (zero if it has passed).
    pub fn until(deadline: Instant) -> Duration {
        deadline.saturating_duration_since(Self::now())
    }
}

/// What [`Clock::to_std`] substitutes for an unrepresentable instant.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A fresh incarnation for this node's new life: a UUID v7 from the system
/// clock and the OS random source, so later lives compare greater.
pub fn new_incarnation() -> Incarnation {
    Incarnation::from_uuid(uuid::Uuid::now_v7())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_monotonic_and_roundtrips() {
        let a = Clock::now();
        let b = Clock::now();
        assert!(b >= a);
        let std_b = Clock::to_std(b);
        assert_eq!(Clock::from_std(std_b), b);
        assert!(Clock::from_std(Clock::epoch()) == Instant::ZERO);
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        let far = Clock::to_std(Instant::MAX);
        assert!(far > Clock::epoch());
        assert_eq!(Clock::until(Instant::ZERO), Duration::ZERO);
    }

    #[test]
    fn incarnations_increase() {
        let a = new_incarnation();
        let b = new_incarnation();
        assert_ne!(a, b);
        assert_eq!(a.as_uuid().get_version_num(), 7);
    }
}
