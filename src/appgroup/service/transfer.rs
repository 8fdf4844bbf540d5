//! The application-group service's registry state transfer: fetching a
//! copy from an older member (newcomers, readmitted members, the non-primary
//! sides of a merge) and submitting a merged side's attachments and group
//! parts (`Readmit`, `Reform`).

use super::*;

impl AppService {
    /// After a merge, once this (absorbed) side adopted the other side's
    /// registry: the ops that bring its own attachments and group parts in.
    pub(super) fn submit_premerge(
        &mut self,
        now: Instant,
        coreset: &mut CoreSet,
        before: Registry,
    ) {
        let mut ops = Vec::new();
        let records: Vec<(Uuid, crate::appgroup::MiRecord)> =
            before.mis().map(|(mi, r)| (*mi, r.clone())).collect();
        for chunk in records.chunks(16) {
            ops.push(AppOp::Readmit {
                mis: chunk.to_vec(),
            });
        }
        for (options, view) in before.groups() {
            let base = before.base_of(&view.group);
            let hosted: Vec<(crate::appgroup::AppMember, Uuid)> = view
                .members
                .iter()
                .filter_map(|m| before.host_of(&view.group, m.id).map(|mi| (m.clone(), mi)))
                .collect();
            let mut parts: Vec<Vec<(crate::appgroup::AppMember, Uuid)>> = vec![Vec::new()];
            let mut size = 0usize;
            for (m, mi) in hosted {
                let cost = m.name.as_str().len() + m.kind.as_str().len() + m.host.len() + 48;
                if size + cost > MERGE_OP_BYTES && parts.last().is_some_and(|p| !p.is_empty()) {
                    parts.push(Vec::new());
                    size = 0;
                }
                size += cost;
                if let Some(p) = parts.last_mut() {
                    p.push((m, mi));
                }
            }
            for members in parts {
                ops.push(AppOp::Reform {
                    group: view.group.clone(),
                    options: options.clone(),
                    number: view.number,
                    base: base.clone(),
                    members,
                });
            }
        }
        for op in ops {
            let Ok(payload) = op.encode() else { continue };
            // Submitted again on the timer if this fails.
            let at = match submit_payload(now, coreset, payload.clone()) {
                Ok(()) => now,
                Err(_) => Instant::ZERO,
            };
            self.merge_ops.push((payload, at));
        }
        tracing::info!(
            ops = self.merge_ops.len(),
            "submitted this side's application groups for the merge"
        );
    }

    pub(super) fn start_fetch(
        &mut self,
        now: Instant,
        rpc: &mut Rpc,
        since_view: CommitPosition,
        sources: Vec<NodeId>,
    ) {
        self.sync = SyncState::Fetching {
            since_view,
            buffered: Vec::new(),
            sources,
            attempt: 0,
            call: None,
            retry_at: None,
        };
        self.send_fetch(now, rpc);
    }

    pub(super) fn send_fetch(&mut self, now: Instant, rpc: &mut Rpc) {
        let timeout = self.config.fetch_timeout;
        let SyncState::Fetching {
            since_view,
            sources,
            attempt,
            call,
            retry_at,
            ..
        } = &mut self.sync
        else {
            return;
        };
        if sources.is_empty() {
            return;
        }
        let source = sources[*attempt % sources.len()];
        *attempt += 1;
        *retry_at = None;
        let Ok(body) = encode_body(&FetchRequest {
            since_view: *since_view,
        }) else {
            return;
        };
        let id = rpc.call(
            now,
            source,
            PROC_REGISTRY_FETCH,
            body,
            CallOptions::default().with_timeout(timeout),
        );
        *call = Some(id);
        self.calls.insert(id, CallTag::Fetch);
        tracing::debug!(%source, since_view = %since_view, "fetching the application-group registry");
    }

    pub(super) fn on_fetch_done(
        &mut self,
        now: Instant,
        ctx: ServiceCtx<'_>,
        id: CallId,
        result: Result<Vec<u8>, CallError>,
    ) {
        let retry = now + self.config.query_interval;
        let SyncState::Fetching {
            call,
            buffered,
            retry_at,
            ..
        } = &mut self.sync
        else {
            return;
        };
        if *call != Some(id) {
            return;
        }
        *call = None;
        let copy = result
            .map_err(|e| AppError::Internal(e.to_string()))
            .and_then(|b| {
                decode_message::<FetchReply>(&b).map_err(|e| AppError::Internal(e.to_string()))
            })
            .and_then(|r| r.result)
            .and_then(|(view, bytes)| Registry::decode(&bytes).map(|r| (view, r)));
        match copy {
            Ok((as_of, registry)) => {
                let buffered = std::mem::take(buffered);
                self.registry = registry;
                self.sync = SyncState::Synced;
                self.stats.transfers += 1;
                let me = self.config.me;
                let before = self.premerge.take();
                // Our own MIs that neither the copy nor our side's registry
                // (brought in by the merge ops) has attached here must
                // attach again.
                let registry = &self.registry;
                self.local.retain(|mi, l| {
                    let here = |r: &crate::appgroup::MiRecord| {
                        r.mserver == me && r.attach_seq == l.attach_seq
                    };
                    registry.mi(mi).is_some_and(here)
                        || (registry.mi(mi).is_none()
                            && before.as_ref().and_then(|b| b.mi(mi)).is_some_and(here))
                });
                tracing::info!(
                    %as_of,
                    groups = self.registry.views().len(),
                    "application-group registry copied"
                );
                for (view, payloads) in buffered {
                    if view > as_of {
                        self.apply_commit(now, ctx.rpc, &payloads);
                    }
                }
                if let Some(before) = before {
                    self.submit_premerge(now, ctx.coreset, before);
                }
                self.note_orphans(now);
                self.push_all(now, ctx.rpc);
            }
            Err(e) => {
                tracing::debug!(error = %e, "registry fetch failed; asking again");
                *retry_at = Some(retry);
            }
        }
    }
}
