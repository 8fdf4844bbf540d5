//! Counters of one mserver's core-set protocol: messages by kind in and
//! out, drops by reason, and what the protocol did (DESIGN.md section 8:
//! everything dropped is counted).

use super::msg::MsgKind;

/// One counter per message kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MsgCounts {
    /// M_JOIN_REQ.
    pub m_join_req: u64,
    /// JOIN_WAIT.
    pub join_wait: u64,
    /// JOIN_REFUSED.
    pub join_refused: u64,
    /// AGREE_J.
    pub agree_j: u64,
    /// AGREE_L.
    pub agree_l: u64,
    /// AGREE_M.
    pub agree_m: u64,
    /// MERGE_OFFER.
    pub merge_offer: u64,
    /// AGREE_ACK.
    pub agree_ack: u64,
    /// BUSY.
    pub busy: u64,
    /// ABORT.
    pub abort: u64,
    /// COMMIT.
    pub commit: u64,
    /// CO_FAIL.
    pub co_fail: u64,
    /// QUERY.
    pub query: u64,
    /// REPLY (heartbeats included).
    pub reply: u64,
    /// NOT_MEMBER.
    pub not_member: u64,
    /// ANNOUNCE.
    pub announce: u64,
}

impl MsgCounts {
    /// Adds one to the counter of `kind`.
    pub fn count(&mut self, kind: MsgKind) {
        let c = match kind {
            MsgKind::MJoinReq => &mut self.m_join_req,
            MsgKind::JoinWait => &mut self.join_wait,
            MsgKind::JoinRefused => &mut self.join_refused,
            MsgKind::AgreeJ => &mut self.agree_j,
            MsgKind::AgreeL => &mut self.agree_l,
            MsgKind::AgreeM => &mut self.agree_m,
            MsgKind::MergeOffer => &mut self.merge_offer,
            MsgKind::AgreeAck => &mut self.agree_ack,
            MsgKind::Busy => &mut self.busy,
            MsgKind::Abort => &mut self.abort,
            MsgKind::Commit => &mut self.commit,
            MsgKind::CoFail => &mut self.co_fail,
            MsgKind::Query => &mut self.query,
            MsgKind::Reply => &mut self.reply,
            MsgKind::NotMember => &mut self.not_member,
            MsgKind::Announce => &mut self.announce,
        };
        *c += 1;
    }

    /// The sum of all counters.
    pub fn total(&self) -> u64 {
        self.m_join_req
            + self.join_wait
            + self.agree_j
            + self.agree_l
            + self.agree_m
            + self.merge_offer
            + self.agree_ack
            + self.busy
            + self.abort
            + self.commit
            + self.co_fail
            + self.query
            + self.reply
            + self.not_member
            + self.announce
    }
}

/// Messages dropped, by reason. None of them changed any state.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DropCounts {
    /// The body did not decode, or a table or proposal in it is malformed.
    pub malformed: u64,
    /// For another group (name or group address).
    pub wrong_group: u64,
    /// From a sender that is not a member of this view.
    pub non_member: u64,
    /// From an older life (incarnation) of a member.
    pub stale_incarnation: u64,
    /// About an older view, or a view that forked from ours.
    pub stale_view: u64,
    /// About a view newer than ours that we cannot use.
    pub future_view: u64,
    /// A duplicate (an ACK, COMMIT or ABORT already handled).
    pub duplicate: u64,
    /// A COMMIT for a change this member never ACKed.
    pub unacked_commit: u64,
    /// A COMMIT whose table is not what its change gives.
    pub commit_mismatch: u64,
    /// An AGREE that does not fit our table.
    pub invalid_proposal: u64,
    /// An AGREE that removes this member (it does not ACK its own removal).
    pub agree_removes_me: u64,
    /// A message this member's state has no use for (e.g. an ACK for a
    /// change it does not coordinate, a join request to a non-coordinator).
    pub unexpected: u64,
    /// Anything received after the member left.
    pub after_leave: u64,
    /// Unreachable reports about nodes that are not members.
    pub unreachable_non_member: u64,
    /// Merge offers from a subgroup that shares a member with ours (the
    /// overlap is settled by monitoring first).
    pub merge_overlap: u64,
}

impl DropCounts {
    /// The sum of all counters.
    pub fn total(&self) -> u64 {
        self.malformed
            + self.wrong_group
            + self.non_member
            + self.stale_incarnation
            + self.stale_view
            + self.future_view
            + self.duplicate
            + self.unacked_commit
            + self.commit_mismatch
            + self.invalid_proposal
            + self.agree_removes_me
            + self.unexpected
            + self.after_leave
            + self.unreachable_non_member
            + self.merge_overlap
    }
}

/// Everything one [`CoreSet`](super::CoreSet) counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CoreSetStats {
    /// Messages sent, by kind (a multicast counts once).
    pub sent: MsgCounts,
    /// Messages received and decoded, by kind.
    pub received: MsgCounts,
    /// Messages dropped, by reason.
    pub drops: DropCounts,
    /// Views installed (founding and joining included): changes of the
    /// membership.
    pub views_installed: u64,
    /// Application changes committed within a view (they install no new
    /// view).
    pub app_commits: u64,
    /// Changes this member committed as coordinator.
    pub changes_coordinated: u64,
    /// Groups founded alone.
    pub founded: u64,
    /// Changes this member took over from a failed coordinator.
    pub takeovers: u64,
    /// Takeovers that went straight to the COMMIT (someone had committed).
    pub compressed_takeovers: u64,
    /// Elections this member took part in.
    pub elections: u64,
    /// Own changes withdrawn for a higher-priority one (requeued).
    pub aborts: u64,
    /// Changes installed because a later message proved they committed
    /// (the COMMIT itself was lost).
    pub inferred_commits: u64,
    /// Times this member learned it had been excluded (and rejoined).
    pub excluded: u64,
    /// Merge offers this member sent for its subgroup (as its lowest rank).
    pub merge_offers: u64,
    /// Merges this member coordinated (committed).
    pub merges_coordinated: u64,
    /// Merges that absorbed this member's subgroup (installed).
    pub merges_absorbed: u64,
    /// Members put on the fail list by ring monitoring.
    pub monitor_failures: u64,
    /// Members put on the fail list by unreachable hints (confirmed).
    pub hint_failures: u64,
    /// Members put on the fail list for not answering in phase I or in an
    /// election.
    pub silent_failures: u64,
    /// Members found restarted (a newer incarnation at their address).
    pub restarts_detected: u64,
    /// Unreachable reports received about members.
    pub unreachable_hints: u64,
    /// Timer rounds that fired late (starved or paused) and were restarted
    /// instead of accusing anyone.
    pub late_timers: u64,
    /// Overdue heartbeats that led to a QUERY.
    pub overdue: u64,
    /// Probes of readmitted members this one had failed for silence
    /// (the flap watch).
    pub suspect_probes: u64,
    /// Join requests answered with a hold-down (a flapping member).
    pub held_down_refusals: u64,
    /// Join requests refused for good (a claim of the wrong level).
    pub join_refusals: u64,
    /// Tree changes committed (views that changed the tree).
    pub tree_commits: u64,
}
