//! The application-group service's MI polling: `QUERY` polls that carry
//! views to the MIs and check that they live, catch-up after a re-attach,
//! orphans and MI failures.
//!
//! **One lost datagram does not fail an MI.** A poll fails the MI only
//! when it stays unanswered for the whole poll timeout, and within that
//! time it is asked up to [`QUERY_ATTEMPTS`] times, each a fresh RPC call
//! with a share of the timeout. One call alone was not enough: once the
//! RPC layer has acknowledged a request (a multi-fragment poll's transfer
//! was acknowledged by BLAST, or the MI answered a duplicate with `Ack`),
//! CHAN asks for a lost reply again only at its next probe, a whole probe
//! interval (1 s) later, long after the 300 ms poll timeout; so one lost
//! answer failed the MI and removed its members (2% loss in the
//! simulator, `mserver/tests/sim_poll_loss.rs`). A poll is idempotent at
//! the MI (it takes only views after the last one it acknowledged), so
//! asking again is safe. The timeout, and so the detection time of a dead
//! MI, is unchanged.

use super::*;

/// How many calls one poll may take within the poll timeout before the MI
/// is failed: each gets an equal share of the timeout (the last one what
/// is left), so a lost answer costs a third of the timeout, not the MI.
pub const QUERY_ATTEMPTS: u32 = 3;

impl AppService {
    /// MIs attached to mservers that are not in the view, or to us but not
    /// known here (we restarted): they have `orphan_grace` to re-attach.
    pub(super) fn note_orphans(&mut self, now: Instant) {
        if !self.synced() {
            return;
        }
        let me = self.config.me;
        let deadline = now + self.config.orphan_grace;
        let orphans: Vec<Uuid> = self
            .registry
            .mis()
            .filter(|(mi, r)| {
                !self.mservers.contains(&r.mserver)
                    || (r.mserver == me && !self.local.contains_key(mi))
            })
            .map(|(mi, _)| *mi)
            .collect();
        self.orphans.retain(|mi, _| orphans.contains(mi));
        for mi in orphans {
            self.orphans.entry(mi).or_insert(deadline);
        }
    }

    /// What an MI that just attached missed.
    pub(super) fn catch_up(&self, mi: Uuid, have: &[(GroupName, u64)]) -> Attached {
        let mut views = Vec::new();
        let mut lost = Vec::new();
        for (group, number) in have.iter().take(crate::appgroup::MAX_GROUPS) {
            match self.registry.views_since(group, *number) {
                Some(v) => views.extend(v),
                None => {
                    // Too far behind: its members there cannot be given
                    // every view.
                    if let Some(view) = self.registry.view(group) {
                        for m in &view.members {
                            if self.registry.host_of(group, m.id) == Some(mi) {
                                lost.push((group.clone(), m.id));
                            }
                        }
                    }
                }
            }
        }
        Attached {
            poll: self.config.poll_timing(),
            mservers: self.mservers.clone(),
            views,
            lost,
        }
    }

    /// Sends a query to every attached MI with views waiting and no query
    /// in flight.
    pub(super) fn push_all(&mut self, now: Instant, rpc: &mut Rpc) {
        let due: Vec<Uuid> = self
            .local
            .iter()
            .filter(|(_, l)| l.in_flight.is_none() && (!l.queue.is_empty() || !l.lost.is_empty()))
            .map(|(mi, _)| *mi)
            .collect();
        for mi in due {
            self.send_query(now, rpc, mi);
        }
        // MIs that attached since the last key ring get it now.
        self.sync_rings(now, rpc);
    }

    /// Starts a poll of `mi`: its first attempt, with the whole poll
    /// timeout ahead.
    pub(super) fn send_query(&mut self, now: Instant, rpc: &mut Rpc, mi: Uuid) {
        let timeout = self.config.query_timeout;
        let Some(local) = self.local.get_mut(&mi) else {
            return;
        };
        local.poll_deadline = now + timeout;
        local.poll_attempts = 0;
        self.send_query_attempt(now, rpc, mi);
    }

    /// One attempt of the poll in progress: a call with an equal share of
    /// the poll timeout, the last attempt with what is left of it.
    fn send_query_attempt(&mut self, now: Instant, rpc: &mut Rpc, mi: Uuid) {
        let mservers = self.mservers.clone();
        let share = (self.config.query_timeout / QUERY_ATTEMPTS).max(Duration::from_millis(1));
        let Some(local) = self.local.get_mut(&mi) else {
            return;
        };
        local.poll_attempts = local.poll_attempts.saturating_add(1);
        let left = local
            .poll_deadline
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        let timeout = if local.poll_attempts >= QUERY_ATTEMPTS {
            left
        } else {
            share.min(left)
        };
        // Bounded in views and in member entries, so the MI's decoder
        // (4 MiB) always takes it; at least one view.
        let mut views: Vec<AppView> = Vec::new();
        let mut entries = 0usize;
        for (_, v) in local.queue.iter().take(MAX_VIEWS_PER_QUERY) {
            entries += v.members.len().max(1);
            if !views.is_empty() && entries > MAX_QUERY_ENTRIES {
                break;
            }
            views.push(v.clone());
        }
        let first_seq = local.queue.front().map_or(local.next_seq, |(s, _)| *s);
        let request = QueryRequest {
            mi,
            attach_seq: local.attach_seq,
            first_seq,
            views,
            lost: local.lost.clone(),
            mservers,
        };
        let Ok(body) = encode_body(&request) else {
            return;
        };
        let id = rpc.call(
            now,
            local.addr,
            PROC_MI_QUERY,
            body,
            CallOptions::default().with_timeout(timeout),
        );
        local.in_flight = Some(id);
        self.calls.insert(
            id,
            CallTag::Query {
                mi,
                lost: request.lost.len(),
            },
        );
    }

    pub(super) fn on_query_done(
        &mut self,
        now: Instant,
        ctx: ServiceCtx<'_>,
        mi: Uuid,
        id: CallId,
        lost: usize,
        result: Result<Vec<u8>, CallError>,
    ) {
        let interval = self.config.query_interval;
        let Some(local) = self.local.get_mut(&mi) else {
            return;
        };
        if local.in_flight != Some(id) {
            return;
        }
        local.in_flight = None;
        if matches!(result, Err(CallError::PeerRestarted)) {
            // The RPC layer still knew an earlier life of the MI's address:
            // the call failed unexecuted. Ask again (a new life answers
            // "not attached", which makes the old one an orphan).
            self.send_query(now, ctx.rpc, mi);
            return;
        }
        if let Err(e) = &result {
            // Unanswered (lost on the way, or its answer was): ask again
            // while the poll has attempts and time left.
            if local.poll_attempts < QUERY_ATTEMPTS && now < local.poll_deadline {
                tracing::debug!(%mi, addr = %local.addr, error = %e, attempt = local.poll_attempts, "MI poll unanswered: asking again");
                self.stats.query_retries += 1;
                self.send_query_attempt(now, ctx.rpc, mi);
                return;
            }
        }
        let reply = result
            .map_err(|e| e.to_string())
            .and_then(|b| decode_message::<QueryReply>(&b).map_err(|e| e.to_string()));
        match reply {
            Ok(r) if r.attached => {
                while local.queue.front().is_some_and(|(s, _)| *s <= r.acked_seq) {
                    local.queue.pop_front();
                }
                let acked_all = local.queue.is_empty() || r.acked_seq + 1 >= local.next_seq;
                if acked_all || local.queue.front().is_none() {
                    let n = lost.min(local.lost.len());
                    local.lost.drain(..n);
                }
                local.next_query = now + interval;
                if !local.queue.is_empty() || !local.lost.is_empty() {
                    self.send_query(now, ctx.rpc, mi);
                }
            }
            Ok(_) => {
                // It attached elsewhere, or it is another life of the MI
                // at that address: stop polling it here. If no attachment
                // elsewhere commits within the orphan grace, it is failed.
                tracing::debug!(%mi, "MI no longer attached here");
                self.local.remove(&mi);
                self.note_orphans(now);
            }
            Err(e) => {
                tracing::info!(%mi, addr = %local.addr, error = %e, "MI did not answer its query: failing it");
                self.local.remove(&mi);
                self.fail_mis(now, ctx.coreset, vec![mi]);
            }
        }
    }

    /// Submits `MiFailed` for `mis` (those not failing already), in ops of
    /// at most [`MAX_FAILED_PER_OP`] MIs.
    pub(super) fn fail_mis(&mut self, now: Instant, coreset: &mut CoreSet, mis: Vec<Uuid>) {
        let batch: Vec<(Uuid, u64)> = mis
            .into_iter()
            .filter(|mi| !self.failing.contains_key(mi))
            .filter_map(|mi| self.registry.mi(&mi).map(|r| (mi, r.attach_seq)))
            .collect();
        for chunk in batch.chunks(MAX_FAILED_PER_OP) {
            let Ok(payload) = (AppOp::MiFailed {
                mis: chunk.to_vec(),
            })
            .encode() else {
                continue;
            };
            if submit_payload(now, coreset, payload).is_ok() {
                for (mi, _) in chunk {
                    self.stats.mis_failed += 1;
                    self.failing.insert(*mi, now);
                }
            }
        }
    }
}
