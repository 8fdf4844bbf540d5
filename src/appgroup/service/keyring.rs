//! Handing the cluster key ring to the MIs attached here (issue 16, item
//! 3: "the mserver passes it on to its MIs"). After a key change commits,
//! the mserver's core gives the service the new ring
//! ([`AppService::push_key_ring`]); every MI attached here gets it in a
//! [`PROC_MI_KEYRING`] call (sealed, like every datagram, under the key
//! the mserver signs with), one call in flight per MI, always the latest
//! ring. A call that fails is made again, at most [`RING_CALLS`] times per
//! ring; an MI that attaches later gets the ring then. The MI answers
//! [`KeyRingTaken`], which is the acknowledgement.

use super::*;
use crate::appgroup::link::{KeyRingPush, KeyRingTaken, PROC_MI_KEYRING};
use crate::wire::{KeyRing, SharedRing};

/// Most calls made to one MI for one ring before it is given up (each
/// call is retransmitted by the RPC layer within the query timeout).
pub const RING_CALLS: u32 = 5;

/// Where one MI stands with the key ring.
#[derive(Clone, Debug, Default)]
pub(super) struct MiRing {
    /// The last epoch it took (0: none).
    acked: u64,
    /// The call in flight and the epoch it carries.
    call: Option<(CallId, u64)>,
    /// Calls made for the current epoch.
    calls: u32,
    /// The epoch given up on (0: none).
    abandoned: u64,
}

impl AppService {
    /// A key change committed: hands `ring` to every MI attached here.
    pub fn push_key_ring(&mut self, now: Instant, rpc: &mut Rpc, ring: &KeyRing) {
        let epoch = self.ring.as_ref().map_or(0, |(e, _)| *e) + 1;
        self.ring = Some((epoch, SharedRing::of(ring)));
        for r in self.ring_mis.values_mut() {
            r.calls = 0;
        }
        self.sync_rings(now, rpc);
    }

    /// Whether every MI attached here took the last ring (or was given up
    /// on); `true` when no ring was handed over.
    pub fn key_ring_settled(&self) -> bool {
        let Some((epoch, _)) = &self.ring else {
            return true;
        };
        self.local.keys().all(|mi| {
            self.ring_mis
                .get(mi)
                .is_some_and(|r| r.acked >= *epoch || r.abandoned >= *epoch)
        })
    }

    /// Makes a ring call to every attached MI that does not have the
    /// latest ring and has none in flight; forgets MIs no longer attached.
    pub(super) fn sync_rings(&mut self, now: Instant, rpc: &mut Rpc) {
        let Some((epoch, ring)) = self.ring.clone() else {
            return;
        };
        self.ring_mis.retain(|mi, _| self.local.contains_key(mi));
        let due: Vec<(Uuid, NodeId, u64)> = self
            .local
            .iter()
            .filter(|(mi, _)| {
                let r = self.ring_mis.get(mi);
                r.map_or(true, |r| {
                    r.call.is_none() && r.acked < epoch && r.abandoned < epoch
                })
            })
            .map(|(mi, l)| (*mi, l.addr, l.attach_seq))
            .collect();
        for (mi, addr, attach_seq) in due {
            let push = KeyRingPush {
                mi,
                attach_seq,
                epoch,
                ring: ring.clone(),
            };
            let Ok(body) = encode_body(&push) else {
                continue;
            };
            let id = rpc.call(
                now,
                addr,
                PROC_MI_KEYRING,
                body,
                CallOptions::default().with_timeout(self.config.query_timeout),
            );
            let r = self.ring_mis.entry(mi).or_default();
            r.call = Some((id, epoch));
            r.calls += 1;
            self.calls.insert(id, CallTag::Ring { mi });
        }
    }

    /// A ring call ended.
    pub(super) fn on_ring_done(
        &mut self,
        now: Instant,
        rpc: &mut Rpc,
        mi: Uuid,
        id: CallId,
        result: Result<Vec<u8>, CallError>,
    ) {
        let Some(r) = self.ring_mis.get_mut(&mi) else {
            return;
        };
        let Some((call, epoch)) = r.call else {
            return;
        };
        if call != id {
            return;
        }
        r.call = None;
        match result.map(|b| decode_message::<KeyRingTaken>(&b)) {
            Ok(Ok(KeyRingTaken { taken: true })) => {
                r.acked = r.acked.max(epoch);
                self.stats.rings_pushed += 1;
            }
            Ok(_) => {
                // Not attached to us any more (it is being dropped from
                // `local`), or it could not read the ring: no use asking
                // again.
                tracing::debug!(%mi, "an MI did not take the key ring");
                r.abandoned = r.abandoned.max(epoch);
            }
            Err(CallError::PeerRestarted) => r.calls = r.calls.saturating_sub(1),
            Err(e) if r.calls >= RING_CALLS => {
                tracing::warn!(%mi, error = %e, "an MI did not acknowledge the new cluster key ring; giving up on it");
                r.abandoned = r.abandoned.max(epoch);
                self.stats.rings_abandoned += 1;
            }
            Err(_) => {}
        }
        self.sync_rings(now, rpc);
    }
}
