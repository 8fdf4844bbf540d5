//! The channel types between the MI daemon's local side (the Unix-socket
//! [`server`](super::server)) and its uplink, the task that keeps the MI
//! attached to an mserver of the core-set (seed 003, section II.B.4;
//! `docs/appgroups-design.md`, "Monitoring MIs" and "Views to processes").
//!
//! The server sends the uplink one [`UpCall`] per request that needs the
//! core-set, and the uplink sends the server a [`Downcall`] for every view
//! and every forced end of a local membership. The uplink answers every
//! `UpCall` eventually; the server still bounds each call by its
//! `request_timeout`.

use membership::appgroup::agent::{MiAnswer, MiRequest};
use membership::appgroup::{AppError, AppView, GroupName};
use uuid::Uuid;

/// A request the server hands the uplink, to be committed by (or read
/// from) the core-set: the MI agent's own request type.
pub type UpRequest = MiRequest;

/// A successful answer to an [`UpRequest`]: the MI agent's own answer
/// type.
pub type UpReply = MiAnswer;

/// One request and where its answer goes.
#[derive(Debug)]
pub struct UpCall {
    /// What to do.
    pub request: UpRequest,
    /// Where the uplink sends the outcome. If it is dropped unanswered the
    /// server answers the client [`AppError::Disconnected`].
    pub reply: tokio::sync::oneshot::Sender<Result<UpReply, AppError>>,
}

/// Something the uplink tells the server unasked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Downcall {
    /// A new view of a group that has members on this MI. Every view of
    /// such a group comes once, in order (numbers may start above a
    /// member's join view: deliver to a membership only views with number
    /// > the last one it got).
    View(AppView),
    /// A local member was removed without asking (its group did not
    /// survive a partition, or the MI could not catch up its views): end
    /// its membership with `Event::Ended { reason }`.
    Lost {
        /// The group.
        group: GroupName,
        /// The member's id.
        member: Uuid,
        /// Why (given to the client as the membership's end reason).
        reason: AppError,
    },
}
