//! The application-group service's MI requests: attach, submit and read
//! procedures, answered once their op is committed (`AppService::on_request`).

use super::*;

impl AppService {
    /// A request for one of [`AppService::PROCEDURES`].
    pub fn on_request(
        &mut self,
        now: Instant,
        ctx: ServiceCtx<'_>,
        token: RequestToken,
        from: NodeId,
        procedure: u16,
        body: &[u8],
    ) {
        match procedure {
            PROC_MI_ATTACH => {
                let request = match decode_message::<AttachRequest>(body) {
                    Ok(r) => r,
                    Err(e) => {
                        self.stats.refused += 1;
                        let err = AppError::Internal(format!("unreadable attach request: {e}"));
                        respond(now, ctx.rpc, token, &AttachReply { result: Err(err) });
                        return;
                    }
                };
                if !self.ready() {
                    self.stats.refused += 1;
                    respond(
                        now,
                        ctx.rpc,
                        token,
                        &AttachReply {
                            result: Err(AppError::Busy),
                        },
                    );
                    return;
                }
                let op = AppOp::Attach {
                    req: RequestId {
                        mi: request.mi,
                        seq: request.seq,
                    },
                    host: request.host,
                    mserver: self.config.me,
                };
                let kind = PendingKind::Attach {
                    from,
                    have: request.have,
                };
                if let Err(e) = self.submit_op(now, ctx.coreset, token, op, kind) {
                    respond(now, ctx.rpc, token, &AttachReply { result: Err(e) });
                }
            }
            PROC_MI_SUBMIT => {
                let request = match decode_message::<SubmitRequest>(body) {
                    Ok(r) => r,
                    Err(e) => {
                        self.stats.refused += 1;
                        let err = AppError::Internal(format!("unreadable submit request: {e}"));
                        respond(now, ctx.rpc, token, &SubmitReply { result: Err(err) });
                        return;
                    }
                };
                let refusal = if !self.ready() {
                    Some(AppError::Busy)
                } else if matches!(request.op, AppOp::Attach { .. } | AppOp::MiFailed { .. }) {
                    Some(AppError::InvalidOptions(
                        "attachments and MI failures are not submitted by MIs".into(),
                    ))
                } else {
                    None
                };
                if let Some(err) = refusal {
                    self.stats.refused += 1;
                    respond(now, ctx.rpc, token, &SubmitReply { result: Err(err) });
                    return;
                }
                if let Err(e) =
                    self.submit_op(now, ctx.coreset, token, request.op, PendingKind::Submit)
                {
                    respond(now, ctx.rpc, token, &SubmitReply { result: Err(e) });
                }
            }
            PROC_MI_READ => {
                let reply = match decode_message::<ReadRequest>(body) {
                    Err(e) => ReadReply::Groups(Err(AppError::Internal(format!(
                        "unreadable read request: {e}"
                    )))),
                    Ok(_) if !self.synced() => ReadReply::Groups(Err(AppError::Busy)),
                    Ok(ReadRequest::View { group }) => {
                        ReadReply::View(self.registry.view(&group).ok_or(AppError::NoSuchGroup))
                    }
                    Ok(ReadRequest::Lookup { group, name }) => {
                        ReadReply::Member(match self.registry.view(&group) {
                            None => Err(AppError::NoSuchGroup),
                            Some(v) => v.member(&name).cloned().ok_or(AppError::NotMember),
                        })
                    }
                    Ok(ReadRequest::Groups) => ReadReply::Groups(Ok(self.groups())),
                };
                respond(now, ctx.rpc, token, &reply);
            }
            PROC_REGISTRY_FETCH => {
                let result = match decode_message::<FetchRequest>(body) {
                    Err(e) => Err(AppError::Internal(format!("unreadable fetch request: {e}"))),
                    Ok(r) if !self.synced() || !self.member || self.view < r.since_view => {
                        Err(AppError::Busy)
                    }
                    Ok(_) => self.registry.encode().map(|bytes| (self.view, bytes)),
                };
                respond(now, ctx.rpc, token, &FetchReply { result });
            }
            _ => self.stats.refused += 1,
        }
    }

    pub(super) fn submit_op(
        &mut self,
        now: Instant,
        coreset: &mut CoreSet,
        token: RequestToken,
        op: AppOp,
        kind: PendingKind,
    ) -> Result<(), AppError> {
        let Some(req) = op.request_id() else {
            return Err(AppError::Internal("an op without a request id".into()));
        };
        if let Some(p) = self.pending.get_mut(&req) {
            // The MI asked again (its call was retried, or it re-attached
            // here): answer every asker when the op commits.
            if p.tokens.len() < 16 {
                p.tokens.push(token);
            }
            return Ok(());
        }
        if self.pending.len() >= MAX_PENDING {
            self.stats.refused += 1;
            return Err(AppError::Busy);
        }
        let payload = op.encode()?;
        submit_payload(now, coreset, payload.clone())?;
        self.pending.insert(
            req,
            Pending {
                tokens: vec![token],
                payload,
                submitted_at: now,
                kind,
            },
        );
        Ok(())
    }
}
