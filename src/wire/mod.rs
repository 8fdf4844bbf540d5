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
mod packet;

pub use auth::{AuthConfig, ClusterKey, KeyError, KeyRing, ReplayWindow};
pub use codec::{decode_body, decode_message, encode_body};
pub use error::{BodyError, DecodeError, DropCounters, EncodeError};
pub use header::{Flags, Header, HEADER_LEN};
pub use packet::{Packet, WireCodec};

/// Largest UDP payload we ever send or accept (the IPv4 UDP maximum).
pub const MAX_DATAGRAM: usize = 65_507;

/// Length of the authentication trailer: an 8-byte counter and a 16-byte tag.
pub const AUTH_TRAILER_LEN: usize = 24;

/// Largest body that fits in one datagram with header and auth trailer.
pub const MAX_BODY: usize = MAX_DATAGRAM - HEADER_LEN - AUTH_TRAILER_LEN;

/// Largest message (BLAST reassembly, rmcast parcel) the codec decodes: 4 MiB.
/// Messages of up to 1 MiB are the supported size; this leaves room for
/// framing and bounds every allocation the decoder can be talked into.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;
