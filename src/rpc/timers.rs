//! A small deterministic timer table shared by the RPC cores: any number of
//! keyed deadlines, the earliest found in `O(log n)`, re-arming a key
//! replaces its previous deadline. Iteration order is by `(deadline, key)`,
//! so two runs with the same inputs fire timers in the same order.

use crate::time::Instant;
use std::collections::{BTreeMap, BTreeSet};

/// Keyed deadlines.
#[derive(Debug, Clone)]
pub(crate) struct Timers<K: Ord + Clone> {
    by_time: BTreeSet<(Instant, K)>,
    by_key: BTreeMap<K, Instant>,
}

impl<K: Ord + Clone> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            by_time: BTreeSet::new(),
            by_key: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Timers<K> {
    /// Arms (or re-arms) `key` at `at`.
    pub(crate) fn set(&mut self, key: K, at: Instant) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    /// Disarms `key` (harmless if it is not armed).
    pub(crate) fn cancel(&mut self, key: &K) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_time.remove(&(old, key.clone()));
        }
    }

    /// The deadline of `key`, if armed.
    pub(crate) fn get(&self, key: &K) -> Option<Instant> {
        self.by_key.get(key).copied()
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// Removes and returns one key whose deadline is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<K> {
        let (at, key) = self.by_time.first()?.clone();
        if at > now {
            return None;
        }
        self.by_time.remove(&(at, key.clone()));
        self.by_key.remove(&key);
        Some(key)
    }

    /// Number of armed timers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rearm_replaces_and_pops_in_order() {
        let mut t = Timers::default();
        t.set(1u32, Instant::from_millis(10));
        t.set(2u32, Instant::from_millis(5));
        t.set(1u32, Instant::from_millis(3));
        assert_eq!(t.len(), 2);
        assert_eq!(t.next(), Some(Instant::from_millis(3)));
        assert_eq!(t.pop_due(Instant::from_millis(4)), Some(1));
        assert_eq!(t.pop_due(Instant::from_millis(4)), None);
        t.cancel(&2);
        assert_eq!(t.next(), None);
        assert_eq!(t.get(&2), None);
    }
}
