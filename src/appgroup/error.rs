//! The typed errors an application sees (DESIGN.md section 8: an
//! application asking for something invalid gets a typed error, never a
//! hang).

use super::names::NameError;
use serde::{Deserialize, Serialize};

/// What went wrong with a request about an application group, or with the
/// connection to the member interface. Every message is one line.
///
/// The member interface sends these back in its answers, so they are
/// serde-encodable; the client library adds the ones only it can see
/// ([`Disconnected`](AppError::Disconnected), [`Timeout`](AppError::Timeout),
/// [`Connect`](AppError::Connect), [`Busy`](AppError::Busy),
/// [`Overflow`](AppError::Overflow)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AppError {
    /// The group does not exist (its name was not found up to the
    /// membership-scope).
    #[error("no such application group")]
    NoSuchGroup,
    /// The name is taken: a group of that name exists under the name-scope,
    /// or a member of that name is in the group.
    #[error("the name is already taken in its scope")]
    NameTaken,
    /// The caller is not a member of that group (leaving a group one is
    /// not in, or a membership that already ended).
    #[error("not a member of this group")]
    NotMember,
    /// The caller is already a member of that group (one process joins a
    /// group once on one connection).
    #[error("already a member of this group")]
    AlreadyMember,
    /// The connection to the member interface is closed (it exited, or sent
    /// something that is not the protocol); every pending call and every
    /// membership of that connection ends with this.
    #[error("the connection to the member interface is closed")]
    Disconnected,
    /// No answer within the call's timeout.
    #[error("the member interface did not answer in time")]
    Timeout,
    /// A group or member name is invalid; the text says why.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// The group options are invalid; the text says why.
    #[error("invalid group options: {0}")]
    InvalidOptions(String),
    /// The two sides speak different protocol versions. `ours` is the
    /// version of the side that reports the error (for an application,
    /// its client library), `theirs` the peer's.
    #[error("protocol version mismatch: this side speaks version {ours}, the peer {theirs}")]
    VersionMismatch {
        /// The version this side speaks.
        ours: u16,
        /// The version the peer speaks.
        theirs: u16,
    },
    /// The member interface serves as many clients as it may and refused
    /// this one.
    #[error("the member interface serves too many clients")]
    TooManyClients,
    /// Too many calls are in flight on this connection.
    #[error("too many calls in flight on this connection")]
    Busy,
    /// The application did not read its views fast enough: the membership
    /// was closed (and left) rather than queue views without bound.
    #[error("too many views not yet read: the membership was closed and left")]
    Overflow,
    /// The group excluded this member (a partition rule stopped its part
    /// of the group, or a view could not be delivered to it).
    #[error("the group excluded this member")]
    Excluded,
    /// The member interface's socket could not be reached; the text says
    /// why.
    #[error("cannot connect to the member interface: {0}")]
    Connect(String),
    /// Anything else; the text says what.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<NameError> for AppError {
    fn from(e: NameError) -> Self {
        AppError::InvalidName(e.to_string())
    }
}
