//! Seeds and replay (DESIGN.md section 3: "every failure prints one line
//! that replays it").
//!
//! A simulation test runs [`seeds`]: by default a fixed range of
//! `default_count` seeds starting at [`DEFAULT_SEED_BASE`]; CI can widen it
//! with `SIM_RUNS=1000` (and shift it with `SIM_SEED_BASE`); a developer
//! replays one failing seed with `SIM_SEED=1234`. Every failure message
//! carries the line that does that ([`Replay::line`]).

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// The first seed of the default range.
pub const DEFAULT_SEED_BASE: u64 = 0x5EED_0000;

/// The cargo crate name of this library, to tell unit tests (`--lib`) from
/// integration tests (`--test NAME`).
const LIB_CRATE: &str = env!("CARGO_CRATE_NAME");

/// How to re-run one test: the cargo test target and the test's name.
///
/// Build it with [`crate::sim_replay!`] from inside the test, which fills in
/// the target from `CARGO_CRATE_NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Replay {
    /// The cargo crate name of the test target: this library's name for unit
    /// tests, the file stem for `tests/*.rs`. Empty: unknown.
    pub target: String,
    /// The test function's name (a cargo test filter).
    pub test: String,
}

impl Replay {
    /// A replay for test `test` in the target whose crate name is `target`.
    pub fn new(target: impl Into<String>, test: impl Into<String>) -> Self {
        Replay {
            target: target.into(),
            test: test.into(),
        }
    }

    /// The one-line command that replays `seed`, e.g.
    /// `replay: SIM_SEED=1234 cargo test --test sim_toy -- chaos`.
    pub fn line(&self, seed: u64) -> String {
        let target = if self.target.is_empty() {
            String::new()
        } else if self.target == LIB_CRATE {
            " --lib".to_string()
        } else {
            format!(" --test {}", self.target)
        };
        let filter = if self.test.is_empty() {
            String::new()
        } else {
            format!(" -- {}", self.test)
        };
        format!("replay: SIM_SEED={seed} cargo test{target}{filter}")
    }
}

/// A [`Replay`] for the named test in the current cargo target.
///
/// ```
/// let r = membership::sim_replay!("my_test");
/// assert!(r.line(7).starts_with("replay: SIM_SEED=7 cargo test"));
/// ```
#[macro_export]
macro_rules! sim_replay {
    ($test:expr) => {
        $crate::sim::Replay::new(env!("CARGO_CRATE_NAME"), $test)
    };
}

/// The seeds to run: `SIM_SEED` (exactly that one), else `SIM_RUNS` seeds
/// (default `default_count`) from `SIM_SEED_BASE` (default
/// [`DEFAULT_SEED_BASE`]).
///
/// # Panics
///
/// If one of those variables is set but is not a number: a typo must not
/// silently run the wrong seeds.
pub fn seeds(default_count: u64) -> std::ops::Range<u64> {
    let var = |name: &str| std::env::var(name).ok();
    match seeds_from(
        var("SIM_SEED").as_deref(),
        var("SIM_RUNS").as_deref(),
        var("SIM_SEED_BASE").as_deref(),
        default_count,
    ) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

/// [`seeds`] with the environment passed in.
pub fn seeds_from(
    sim_seed: Option<&str>,
    sim_runs: Option<&str>,
    sim_seed_base: Option<&str>,
    default_count: u64,
) -> Result<std::ops::Range<u64>, String> {
    let parse = |name: &str, v: &str| -> Result<u64, String> {
        let v = v.trim();
        let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => v.parse::<u64>(),
        };
        parsed.map_err(|e| format!("{name}={v:?} is not a u64: {e}"))
    };
    if let Some(s) = sim_seed {
        let seed = parse("SIM_SEED", s)?;
        return Ok(seed..seed.saturating_add(1));
    }
    let count = match sim_runs {
        Some(r) => parse("SIM_RUNS", r)?,
        None => default_count,
    };
    let base = match sim_seed_base {
        Some(b) => parse("SIM_SEED_BASE", b)?,
        None => DEFAULT_SEED_BASE,
    };
    Ok(base..base.saturating_add(count))
}

/// Runs `f` once per seed of [`seeds`]`(default_count)`; if it panics, prints
/// which seed failed and the replay line to stderr, then lets the panic go
/// on (so the test fails with the original message).
pub fn run_seeds(replay: &Replay, default_count: u64, mut f: impl FnMut(u64)) {
    for seed in seeds(default_count) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(seed))) {
            eprintln!("simulation failed with seed {seed}\n{}", replay.line(seed));
            resume_unwind(panic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_selection() {
        assert_eq!(
            seeds_from(None, None, None, 3).unwrap(),
            DEFAULT_SEED_BASE..DEFAULT_SEED_BASE + 3
        );
        assert_eq!(seeds_from(Some("42"), Some("9"), None, 3).unwrap(), 42..43);
        assert_eq!(seeds_from(Some("0x10"), None, None, 3).unwrap(), 16..17);
        assert_eq!(
            seeds_from(None, Some("5"), Some("100"), 3).unwrap(),
            100..105
        );
        assert!(seeds_from(Some("x"), None, None, 3).is_err());
        assert!(seeds_from(None, Some("-1"), None, 3).is_err());
    }

    #[test]
    fn replay_lines() {
        assert_eq!(
            Replay::new("sim_rpc", "lossy").line(1234),
            "replay: SIM_SEED=1234 cargo test --test sim_rpc -- lossy"
        );
        assert_eq!(
            crate::sim_replay!("sim::tests::x").line(1),
            "replay: SIM_SEED=1 cargo test --lib -- sim::tests::x"
        );
        assert_eq!(Replay::default().line(5), "replay: SIM_SEED=5 cargo test");
    }
}
