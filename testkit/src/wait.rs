//! Waiting with bounds: poll a condition until it gives a value or a
//! deadline passes. Nothing here waits forever.

use std::time::{Duration, Instant};

/// Calls `cond` every `every` until it gives a value or `limit` has passed
/// (it is tried once more at the deadline); `None` then.
pub fn until<T>(
    limit: Duration,
    every: Duration,
    mut cond: impl FnMut() -> Option<T>,
) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= end {
            return None;
        }
        std::thread::sleep(every.min(end - now));
    }
}

/// [`until`] for a yes/no condition: whether it held within `limit`.
pub fn until_true(limit: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    until(limit, every, || cond().then_some(())).is_some()
}

/// For a harness that takes events as they come (log lines, reports):
/// looks at `state` with `cond` until it gives a value or `limit` passes,
/// letting `take` wait for new events in between, at most `slice` at a time
/// and never past the deadline. `None` at the deadline.
pub fn pumping<S, T>(
    state: &mut S,
    limit: Duration,
    slice: Duration,
    mut cond: impl FnMut(&S) -> Option<T>,
    mut take: impl FnMut(&mut S, Duration),
) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = cond(state) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= end {
            return None;
        }
        take(state, (end - now).min(slice));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_the_value_or_none_at_the_deadline() {
        let mut n = 0;
        let got = until(Duration::from_secs(10), Duration::from_millis(1), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(got, Some(3));
        let t0 = Instant::now();
        assert!(!until_true(
            Duration::from_millis(30),
            Duration::from_millis(5),
            || false
        ));
        assert!(t0.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn pumping_takes_events_until_the_condition_holds() {
        let mut events: Vec<u32> = Vec::new();
        let got = pumping(
            &mut events,
            Duration::from_secs(10),
            Duration::from_millis(1),
            |e| (e.len() == 3).then(|| e.iter().sum::<u32>()),
            |e, _| e.push(e.len() as u32),
        );
        assert_eq!(got, Some(3));
        let none = pumping(
            &mut events,
            Duration::from_millis(20),
            Duration::from_millis(5),
            |_| None::<()>,
            |_, d| std::thread::sleep(d),
        );
        assert_eq!(none, None);
    }
}
