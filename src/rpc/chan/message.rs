//! CHAN's messages (seed 004, section 5.3.2): what travels inside one BLAST
//! message between a CHAN client and a CHAN server, and the limits on it.
//!
//! The book's header fields (MID, BID, ACK, PROBE) become the variants and
//! fields of [`ChanMessage`]; how each maps is in the [`chan`](super)
//! module docs. Every answer echoes the attempt number of the transmission
//! it answers, so the client's RTT samples are unambiguous (see
//! [`ChanMessage`] and the [`rtt`](super::rtt) module).

use crate::id::Incarnation;
use crate::rpc::bytes::Bytes;
use crate::wire;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Bytes a request or reply adds to its body (enum tags, ids, incarnations,
/// piggybacked acknowledgements). Bodies above `max_message` minus this are
/// refused with [`CallError::TooLarge`](super::CallError::TooLarge) before
/// anything is sent.
pub const MESSAGE_OVERHEAD: usize = 1024;

/// Most reply ids one request or [`ChanMessage::ReplyAck`] acknowledges.
pub const MAX_ACKS: usize = 64;

/// What a server answers a request with (SELECT's outcome folded in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The handler's reply.
    Ok(Bytes),
    /// No handler for the procedure.
    NoSuchProcedure,
    /// The reply would exceed the message size limit.
    TooLarge,
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The call id.
    pub mid: u64,
    /// The client's incarnation.
    pub client: Incarnation,
    /// The server incarnation this request is for.
    pub server: Incarnation,
    /// SELECT's header: the procedure number.
    pub procedure: u16,
    /// Every call of this client to this server below this id is finished.
    pub done_below: u64,
    /// Replies received (at most [`MAX_ACKS`]).
    pub acks: Vec<u64>,
    /// How much longer (ms) the client may ask for the reply.
    pub patience_ms: u32,
    /// Which transmission of this call this is (see [`ChanMessage`]); 0 for
    /// a multi-fragment request, which asks for no echo.
    pub attempt: u32,
    /// The client's round-trip estimate to the server in ms (0: none), for
    /// the BLAST transfer of a large reply.
    pub rtt_hint_ms: u32,
    /// The argument.
    pub body: Bytes,
}

/// A CHAN message: the payload of one BLAST message.
///
/// RTT measurement (the idea of TCP's timestamps, RFC 7323 RTTM): every
/// transmission of a call's `Hello`, `Request` or `Probe` carries a fresh
/// `attempt` number (1, 2, ... per call; 0 asks for no echo), and every
/// answer (`Iam`, `Reply`, `Ack`, `Unknown`, `Forgotten`, `Restarted`)
/// carries in `echo` the attempt of the transmission it answers, or 0 when it
/// answers none at once (a deferred handler's reply, a multi-fragment
/// reply). The client thus knows which transmission an answer belongs to,
/// retransmission or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChanMessage {
    /// Client: "which incarnation are you?" (first contact).
    Hello {
        /// Echoed in the answer (the call id).
        nonce: u64,
        /// Which transmission of the call this is.
        attempt: u32,
    },
    /// Server: the answer to `Hello`.
    Iam {
        /// The `Hello`'s nonce.
        nonce: u64,
        /// The server's incarnation.
        incarnation: Incarnation,
        /// The `Hello`'s attempt.
        echo: u32,
    },
    /// Client: a call.
    Request(Request),
    /// Server: the outcome of call `mid`.
    Reply {
        /// The call id.
        mid: u64,
        /// The server's incarnation.
        server: Incarnation,
        /// The attempt answered at once (0: none).
        echo: u32,
        /// The outcome.
        outcome: Outcome,
    },
    /// Server: request `mid` arrived and runs (or its reply is on its way).
    Ack {
        /// The call id.
        mid: u64,
        /// The server's incarnation.
        server: Incarnation,
        /// The attempt answered (0: none).
        echo: u32,
    },
    /// Client: "are you alive, and still working on `mid`?"
    Probe {
        /// The call id.
        mid: u64,
        /// The client's incarnation.
        client: Incarnation,
        /// The server incarnation the call is for.
        server: Incarnation,
        /// As in [`Request::patience_ms`].
        patience_ms: u32,
        /// Which transmission of the call this is.
        attempt: u32,
    },
    /// Server: never received request `mid` (the client resends it).
    Unknown {
        /// The call id.
        mid: u64,
        /// The server's incarnation.
        server: Incarnation,
        /// The attempt answered.
        echo: u32,
    },
    /// Server: call `mid` is finished here but its reply is gone.
    Forgotten {
        /// The call id.
        mid: u64,
        /// The server's incarnation.
        server: Incarnation,
        /// The attempt answered.
        echo: u32,
    },
    /// Server: the request was addressed to another incarnation of mine.
    Restarted {
        /// The call id.
        mid: u64,
        /// The server's (current) incarnation.
        server: Incarnation,
        /// The attempt answered.
        echo: u32,
    },
    /// Client: these replies arrived.
    ReplyAck {
        /// The client's incarnation.
        client: Incarnation,
        /// The server incarnation the replies came from.
        server: Incarnation,
        /// Call ids (at most [`MAX_ACKS`]).
        mids: Vec<u64>,
        /// As in [`Request::done_below`].
        done_below: u64,
    },
}

/// `message` (an encoded [`ChanMessage::Reply`]) carrying `echo` instead.
/// Only for one-fragment replies: it decodes and re-encodes.
pub(super) fn stamp_reply(message: Arc<[u8]>, echo: u32) -> Arc<[u8]> {
    if echo == 0 {
        return message;
    }
    match wire::decode_message::<ChanMessage>(&message) {
        Ok(ChanMessage::Reply {
            mid,
            server,
            outcome,
            ..
        }) => wire::encode_body(&ChanMessage::Reply {
            mid,
            server,
            echo,
            outcome,
        })
        .map_or(message, Arc::from),
        _ => message,
    }
}
