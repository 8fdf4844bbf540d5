//! The size limits every part of the wire format shares: the largest
//! datagram, the authentication trailer, the largest body and the largest
//! reassembled message the codec decodes.

use super::header::HEADER_LEN;

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
