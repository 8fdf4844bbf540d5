//! How a committed key ring reaches this mserver's sockets, its member
//! interfaces and its mcaster (issue 16, item 3; `docs/security.md`, "Key
//! rotation").
//!
//! When a key change commits ([`crate::mserver::keys`]), every member
//! applies it to its ring at the same commit position. Then each mserver:
//!
//! 1. hands the new ring to its **receivers**, which take no part in the
//!    core-set's commit: the MIs attached to it (an RPC call each,
//!    [`AppService::push_key_ring`]) and its mcaster
//!    ([`Registration::push_key_ring`]). Both go out sealed with the key
//!    this mserver's sockets sign with *now*, which the receivers hold;
//!    both are repeated until acknowledged, within bounds;
//! 2. hands the ring to its own sockets ([`RolloutStep::released`]: the
//!    daemon applies and persists it), at once, **unless** the change gives
//!    the ring a new signing key (`keys use`) that the sockets still hold
//!    the old one of: then it waits until every receiver acknowledged the
//!    ring (so holds the new key), at most [`HOLD_MAX`]. A receiver that
//!    does not hold the new signing key could open nothing this mserver
//!    sends once it signs with it (the push repeats included, and an MI's
//!    polls, which would fail the MI), so the new key must not seal
//!    anything to it first. Meanwhile every member still opens the old
//!    key. A later change that removes the key the sockets sign with
//!    (`keys remove`) cannot wait: its ring goes to the sockets at once.
//!
//! [`KeyRollout`] is the pure decision; the mserver's core feeds it the
//! committed rings and the receivers' state ([`Receivers`]).

use crate::appgroup::service::AppService;
use crate::id::CommitPosition;
use crate::mcaster_reg::Registration;
use crate::rpc::Rpc;
use crate::time::Instant;
use crate::wire::KeyRing;
use std::collections::VecDeque;
use std::time::Duration;

/// Longest a ring with a new signing key waits for the receivers'
/// acknowledgements before the sockets take it anyway.
pub const HOLD_MAX: Duration = Duration::from_secs(2);

/// The receivers of a ring: the MIs attached here and the mcaster.
pub trait RingReceivers {
    /// Hands `ring` to every receiver (repeated until acknowledged).
    fn push(&mut self, now: Instant, ring: &KeyRing);
    /// Every receiver acknowledged the last ring pushed (or was given up
    /// on, or there is none).
    fn settled(&self) -> bool;
}

/// The mserver's receivers, as its core holds them.
pub struct Receivers<'a> {
    /// The application-group service (the MIs attached here).
    pub apps: &'a mut AppService,
    /// The RPC endpoint its calls go out on.
    pub rpc: &'a mut Rpc,
    /// The mcaster registration, if any.
    pub registration: Option<&'a mut Registration>,
}

impl RingReceivers for Receivers<'_> {
    fn push(&mut self, now: Instant, ring: &KeyRing) {
        self.apps.push_key_ring(now, self.rpc, ring);
        if let Some(r) = self.registration.as_deref_mut() {
            r.push_key_ring(now, ring);
        }
    }

    fn settled(&self) -> bool {
        self.apps.key_ring_settled()
            && self
                .registration
                .as_deref()
                .map_or(true, Registration::key_ring_settled)
    }
}

/// What one [`KeyRollout::run`] did.
#[derive(Debug, Default)]
#[must_use]
pub struct RolloutStep {
    /// Rings to hand to the sockets now, in order, with the commit they
    /// came from.
    pub released: Vec<(KeyRing, CommitPosition)>,
    /// Rings were pushed to the receivers (their transmits are to be
    /// drained).
    pub pushed: bool,
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct KeyRollout {
    /// The ring the sockets have (they sign with its first key).
    applied: Option<KeyRing>,
    /// Committed rings not yet pushed.
    committed: VecDeque<(CommitPosition, KeyRing)>,
    /// A committed ring waiting for the receivers, and until when at most.
    held: Option<(CommitPosition, KeyRing, Instant)>,
}

impl KeyRollout {
    /// A rollout whose sockets start with `ring`.
    pub fn new(ring: Option<KeyRing>) -> Self {
        KeyRollout {
            applied: ring,
            ..KeyRollout::default()
        }
    }

    /// The sockets were given `ring` outside a commit (SIGHUP).
    pub fn set_applied(&mut self, ring: Option<KeyRing>) {
        self.applied = ring;
    }

    /// A key change committed: `ring` is in force from `at` on.
    pub fn committed(&mut self, at: CommitPosition, ring: KeyRing) {
        self.committed.push_back((at, ring));
    }

    /// A ring is waiting for the receivers' acknowledgements.
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// After every input: pushes the rings committed since to the
    /// receivers, and answers the rings the sockets take now.
    pub fn run(&mut self, now: Instant, rx: &mut dyn RingReceivers) -> RolloutStep {
        let mut step = RolloutStep::default();
        while let Some((at, ring)) = self.committed.pop_front() {
            rx.push(now, &ring);
            step.pushed = true;
            let signing = self.applied.as_ref().map(|r| r.signing_key().id());
            let wait = match signing {
                // A new signing key, while the sockets' one is still in
                // the ring: wait for the receivers.
                Some(s) => ring.signing_key().id() != s && ring.key(s).is_some(),
                None => false,
            };
            if wait {
                let until = self
                    .held
                    .as_ref()
                    .map_or(now.saturating_add(HOLD_MAX), |(_, _, t)| *t);
                self.held = Some((at, ring, until));
            } else {
                self.held = None;
                self.release(&mut step, at, ring);
            }
        }
        let due = self
            .held
            .as_ref()
            .is_some_and(|(_, _, until)| *until <= now || rx.settled());
        if due {
            if let Some((at, ring, until)) = self.held.take() {
                if until <= now && !rx.settled() {
                    tracing::warn!(
                        keys = ?ring.ids(),
                        "not every member interface or mcaster acknowledged the new cluster key ring in time; signing with the new key anyway"
                    );
                }
                self.release(&mut step, at, ring);
            }
        }
        step
    }

    fn release(&mut self, step: &mut RolloutStep, at: CommitPosition, ring: KeyRing) {
        self.applied = Some(ring.clone());
        step.released.push((ring, at));
    }

    /// When a held ring is released at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.held.as_ref().map(|(_, _, until)| *until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ClusterKey;

    fn key(id: u8) -> ClusterKey {
        ClusterKey::new(id, [id; 16]).expect("key")
    }

    fn ring(ids: &[u8]) -> KeyRing {
        KeyRing::new(ids.iter().map(|i| key(*i)).collect()).expect("ring")
    }

    fn at(seq: u64) -> CommitPosition {
        CommitPosition { view: 1, seq }
    }

    /// Receivers that acknowledge when told to.
    #[derive(Default)]
    struct Fake {
        pushed: Vec<Vec<u8>>,
        settled: bool,
    }

    impl RingReceivers for Fake {
        fn push(&mut self, _now: Instant, ring: &KeyRing) {
            self.pushed.push(ring.ids());
            self.settled = false;
        }
        fn settled(&self) -> bool {
            self.settled
        }
    }

    fn ids(step: &RolloutStep) -> Vec<Vec<u8>> {
        step.released.iter().map(|(r, _)| r.ids()).collect()
    }

    #[test]
    fn install_and_remove_go_to_the_sockets_at_once_and_to_the_receivers() {
        let mut k = KeyRollout::new(Some(ring(&[1])));
        let mut rx = Fake::default();
        let now = Instant::ZERO;
        k.committed(at(1), ring(&[1, 2]));
        let step = k.run(now, &mut rx);
        assert!(step.pushed);
        assert_eq!(ids(&step), vec![vec![1, 2]]);
        assert_eq!(rx.pushed, vec![vec![1, 2]]);
        assert!(!k.holding());
        // Nothing new: nothing to do.
        let step = k.run(now, &mut rx);
        assert!(!step.pushed && step.released.is_empty());
    }

    #[test]
    fn a_new_signing_key_waits_for_every_receiver() {
        let mut k = KeyRollout::new(Some(ring(&[1, 2])));
        let mut rx = Fake::default();
        let t0 = Instant::ZERO;
        k.committed(at(2), ring(&[2, 1]));
        let step = k.run(t0, &mut rx);
        assert!(step.pushed, "the receivers get it at once");
        assert!(step.released.is_empty(), "the sockets keep signing with 1");
        assert!(k.holding());
        assert_eq!(k.poll_timeout(), Some(t0 + HOLD_MAX));
        let t1 = t0 + Duration::from_millis(5);
        assert!(k.run(t1, &mut rx).released.is_empty());
        // Every receiver acknowledged: the sockets sign with 2.
        rx.settled = true;
        let step = k.run(t1, &mut rx);
        assert_eq!(ids(&step), vec![vec![2, 1]]);
        assert_eq!(step.released[0].1, at(2));
        assert!(!k.holding());
        assert_eq!(k.poll_timeout(), None);
    }

    #[test]
    fn a_silent_receiver_holds_the_new_key_back_for_a_bounded_time() {
        let mut k = KeyRollout::new(Some(ring(&[1, 2])));
        let mut rx = Fake::default();
        let t0 = Instant::ZERO;
        k.committed(at(2), ring(&[2, 1]));
        assert!(k.run(t0, &mut rx).released.is_empty());
        let late = t0 + HOLD_MAX;
        assert_eq!(ids(&k.run(late, &mut rx)), vec![vec![2, 1]]);
    }

    #[test]
    fn removing_the_signing_key_cannot_wait() {
        let mut k = KeyRollout::new(Some(ring(&[1, 2])));
        let mut rx = Fake::default();
        let t0 = Instant::ZERO;
        k.committed(at(2), ring(&[2, 1]));
        assert!(k.run(t0, &mut rx).released.is_empty());
        // `keys remove 1` commits before the receivers answered: the
        // sockets cannot sign with 1 any more.
        k.committed(at(3), ring(&[2]));
        let step = k.run(t0, &mut rx);
        assert_eq!(ids(&step), vec![vec![2]]);
        assert!(!k.holding());
        assert_eq!(rx.pushed, vec![vec![2, 1], vec![2]]);
    }

    #[test]
    fn a_later_change_replaces_a_held_ring_and_keeps_its_deadline() {
        let mut k = KeyRollout::new(Some(ring(&[1, 2])));
        let mut rx = Fake::default();
        let t0 = Instant::ZERO;
        k.committed(at(2), ring(&[2, 1]));
        assert!(k.run(t0, &mut rx).released.is_empty());
        let t1 = t0 + Duration::from_millis(500);
        k.committed(at(3), ring(&[2, 1, 3]));
        assert!(k.run(t1, &mut rx).released.is_empty());
        assert_eq!(k.poll_timeout(), Some(t0 + HOLD_MAX));
        // Going back to key 1 needs no wait: the sockets sign with it.
        k.committed(at(4), ring(&[1, 2, 3]));
        let step = k.run(t1, &mut rx);
        assert_eq!(ids(&step), vec![vec![1, 2, 3]]);
        assert!(!k.holding());
    }

    #[test]
    fn without_a_ring_nothing_waits() {
        let mut k = KeyRollout::new(None);
        let mut rx = Fake::default();
        k.committed(at(1), ring(&[2]));
        assert_eq!(ids(&k.run(Instant::ZERO, &mut rx)), vec![vec![2]]);
    }
}
