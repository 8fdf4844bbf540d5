//! Registering at an mcaster (seed 003, section IV.A; seed 000, section 4,
//! GMP): the mcaster's control protocol and its member side, as sans-IO
//! parts a node's core embeds.
//!
//! - The messages (`msg.rs`): ([`McasterMsg`]: `JOIN_GROUP`, `LEAVE_GROUP`
//!   and the mcaster's [`Answer`]s, figure 12) and how a member receives a
//!   group's traffic ([`ReceiveMode`]: by IP multicast, or only by unicast
//!   from the mcaster).
//! - [`registration`]: [`Registration`], the member side: joins refreshed
//!   every interval (soft state), leaves, answers, and group transmits of
//!   a unicast-only member routed to the mcaster.
//!
//! Layering: this module is below both of its users. `rmcast`'s
//! `GroupEndpoint` and the mserver's core embed a [`Registration`]; the
//! mcaster's core (module `mcaster`, above `rmcast` because it holds
//! rmcast's NACK cache) answers the messages. It imports only `id`,
//! `time`, `wire` and `sansio`.

mod msg;
pub mod registration;

pub use msg::{Answer, McasterMsg, ReceiveMode, MAX_NAME_LEN};
pub use registration::{
    Registration, RegistrationConfig, RegistrationCounters, RegistrationEvent,
    DEFAULT_REFRESH_INTERVAL, RING_ATTEMPTS, RING_RESEND,
};
