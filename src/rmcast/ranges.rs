//! A set of disjoint half-open `u64` intervals (obsolete sequence ranges on
//! both sides). Adjacent and overlapping intervals are merged, so the number
//! of entries is at most the number of gaps between them.

use std::collections::BTreeMap;

/// Disjoint, merged `[start, end)` intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ranges {
    /// start -> end, `start < end`, no two touching.
    map: BTreeMap<u64, u64>,
}

impl Ranges {
    /// Adds `[start, end)` (ignored if empty).
    pub(crate) fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut s = start;
        let mut e = end;
        // A range starting at or before `s` that reaches `s` absorbs it.
        if let Some((&ps, &pe)) = self.map.range(..=s).next_back() {
            if pe >= s {
                s = ps;
                e = e.max(pe);
                self.map.remove(&ps);
            }
        }
        // Ranges starting inside `[s, e]` are absorbed.
        while let Some((&ns, &ne)) = self.map.range(s..=e).next() {
            e = e.max(ne);
            self.map.remove(&ns);
        }
        self.map.insert(s, e);
    }

    /// The end of the interval containing `x`, if any.
    pub(crate) fn end_of(&self, x: u64) -> Option<u64> {
        self.map
            .range(..=x)
            .next_back()
            .filter(|(_, &e)| x < e)
            .map(|(_, &e)| e)
    }

    /// Forgets everything below `x` (an interval straddling `x` is cut).
    pub(crate) fn remove_below(&mut self, x: u64) {
        let keep = self.map.split_off(&x);
        let straddling = self
            .map
            .last_key_value()
            .map(|(_, &e)| e)
            .filter(|&e| e > x);
        self.map = keep;
        if let Some(e) = straddling {
            self.insert(x, e);
        }
    }

    /// Number of intervals.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// No intervals.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The intervals in order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(r: &Ranges) -> Vec<(u64, u64)> {
        r.iter().collect()
    }

    #[test]
    fn insert_merges() {
        let mut r = Ranges::default();
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(20, 25);
        assert_eq!(v(&r), vec![(10, 25), (30, 40)]);
        r.insert(24, 31);
        assert_eq!(v(&r), vec![(10, 40)]);
        r.insert(5, 5);
        r.insert(0, 3);
        assert_eq!(v(&r), vec![(0, 3), (10, 40)]);
        r.insert(1, 50);
        assert_eq!(v(&r), vec![(0, 50)]);
    }

    #[test]
    fn lookup_and_trim() {
        let mut r = Ranges::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(r.end_of(9), None);
        assert_eq!(r.end_of(10), Some(20));
        assert_eq!(r.end_of(19), Some(20));
        assert_eq!(r.end_of(20), None);
        r.remove_below(15);
        assert_eq!(v(&r), vec![(15, 20), (30, 40)]);
        r.remove_below(100);
        assert!(r.is_empty());
        assert_eq!(r.len(), 0);
    }
}
