//! The wire format: where untrusted bytes stop (seed 000, DNP; DESIGN.md section 4).
//!
//! A datagram is a fixed, versioned [`header`] (68 bytes: magic, version,
//! protocol, flags, key id, source node and incarnation, destination, body
//! length, CRC-32), then a body encoded with serde + bincode 2 under an
//! explicit size limit ([`codec`]), then, when a cluster key is configured, an
//! authentication trailer (a per-sender counter and the XChaCha20-Poly1305
//! tag of the encrypted body, [`auth`]).
//!
//! [`WireCodec`] puts the pieces together: `seal` builds a datagram,
//! `open` checks one and either hands back a [`Packet`] or a typed
//! [`DecodeError`], which the caller drops and counts in [`DropCounters`].
//! Nothing in here panics on any input; the byte-by-byte layout is in
//! `docs/wire.md`.

pub mod auth;
pub mod codec;
pub mod error;
pub mod header;
mod limits;
mod packet;

pub use auth::{AuthConfig, ClusterKey, KeyError, KeyRing, ReplayWindow, SharedRing};
pub use codec::{decode_body, decode_message, encode_body};
pub use error::{BodyError, DecodeError, DropCounters, EncodeError};
pub use header::{Flags, Header, HEADER_LEN};
pub use limits::{AUTH_TRAILER_LEN, MAX_BODY, MAX_DATAGRAM, MAX_MESSAGE};
pub use packet::{Packet, WireCodec};
