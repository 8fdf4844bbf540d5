//! The client <-> member interface protocol, spoken over a Unix stream
//! socket (seed 003, section II.B.4: application processes hand their
//! requests to the MI of their host and get answers and views back; seed
//! 001 section 5.7 and seed 002 for the daemon + library split).
//!
//! **Frames.** Each frame is a 4-byte big-endian length, then that many
//! bytes of body: one message encoded with serde + bincode 2 (standard
//! configuration, the project codec). A frame longer than [`MAX_FRAME`] is
//! refused from its length alone, before anything is allocated; bodies are
//! decoded under the same limit, so no length inside a body can make the
//! decoder allocate more than that either.
//!
//! **Handshake.** The client's first frame is [`ClientMsg::Hello`] with its
//! [`VERSION`]; the MI answers [`ServerMsg::Welcome`] or
//! [`ServerMsg::Refused`] (a different version gets
//! [`AppError::VersionMismatch`], a full MI [`AppError::TooManyClients`])
//! and, after a refusal, closes the connection. So that any two versions can
//! tell each other apart, variant 0 of both [`ClientMsg`] and [`ServerMsg`]
//! starts with the version as a `u16` forever ([`peek_version`] reads just
//! that), and [`AppError`]'s variants are only ever appended.
//!
//! **Requests.** Then the client sends [`ClientMsg::Request`]s, each with an
//! id of its choice and an [`Op`]; the MI answers each with one
//! [`ServerMsg::Response`] carrying the same id (in any order), and pushes
//! [`ServerMsg::Event`]s for the memberships opened on this connection:
//! every later view of the group ([`Event::View`]), and the end of a
//! membership the client did not ask for ([`Event::Ended`]). The view a
//! join installs comes in the [`Reply::Joined`] answer; events for that
//! membership follow it on the stream, never precede it.
//!
//! [`answer_hello`] (for the MI) and [`check_welcome`] (for the client)
//! implement the handshake decisions; [`read_frame`] and [`write_frame`]
//! move frames over any tokio stream.

use membership::appgroup::AppError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;

/// Longest frame body, in bytes (1 MiB: a view of about 4,000 members with
/// the longest names fits).
pub const MAX_FRAME: usize = 1 << 20;

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// The session vocabulary (requests, answers, events, membership ids) is
/// the MI core's ([`membership::mi`]): the frames below carry it as is.
pub use membership::mi::{Event, MembershipId, Op, Reply};

/// A frame from the client to the MI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// The first frame: the client's protocol version and a free-form
    /// description of the client (for logs). Variant 0, version first,
    /// forever.
    Hello {
        /// The client's protocol version.
        version: u16,
        /// Who the client is (program name, pid), for the MI's logs.
        client: String,
    },
    /// A request, answered by one [`ServerMsg::Response`] with the same id.
    Request {
        /// Chosen by the client; unique among its requests in flight.
        id: u64,
        /// What to do.
        op: Op,
    },
}

/// A frame from the MI to the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// The handshake succeeded. Variant 0, version first, forever.
    Welcome {
        /// The MI's protocol version (equal to the client's).
        version: u16,
        /// A free-form description of the MI (host, pid), for logs.
        mi: String,
    },
    /// The handshake failed; the MI closes the connection after this.
    Refused {
        /// Why ([`AppError::VersionMismatch`] with the MI's version as
        /// `ours`, [`AppError::TooManyClients`], ...).
        reason: AppError,
    },
    /// The answer to the request with the same id.
    Response {
        /// The request's id.
        id: u64,
        /// The answer.
        result: Result<Reply, AppError>,
    },
    /// An unsolicited event.
    Event(Event),
}

/// Why a frame could not be read, written, encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than [`MAX_FRAME`] bytes.
    #[error("frame of {len} bytes is longer than the limit of {MAX_FRAME}")]
    TooLarge {
        /// The announced or encoded length.
        len: usize,
    },
    /// The body is not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The body has bytes after the message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// The stream ended inside a frame.
    #[error("the stream ended inside a frame")]
    Truncated,
    /// The message could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

/// Encodes `msg` as one frame: the length prefix and the body.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let encode_err = |e: bincode::error::EncodeError| FrameError::Encode(e.to_string());
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(msg, &mut size, config()).map_err(encode_err)?;
    let len = size.bytes_written;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge { len })?;
    let mut frame = vec![0u8; LEN_PREFIX + len];
    frame[..LEN_PREFIX].copy_from_slice(&prefix.to_be_bytes());
    let written = bincode::serde::encode_into_slice(msg, &mut frame[LEN_PREFIX..], config())
        .map_err(encode_err)?;
    frame.truncate(LEN_PREFIX + written);
    Ok(frame)
}

/// Decodes one frame body (without its length prefix) as a `T`; the whole
/// body must be the message.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge { len: body.len() });
    }
    let (msg, used) = bincode::serde::decode_from_slice::<T, _>(body, config())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(FrameError::TrailingBytes(body.len() - used));
    }
    Ok(msg)
}

/// The body length a prefix announces, refused above [`MAX_FRAME`].
pub fn frame_len(prefix: [u8; LEN_PREFIX]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    Ok(len)
}

/// Reads one frame body from `r`: `Ok(None)` when the stream ends cleanly
/// between frames, [`FrameError::Truncated`] when it ends inside one. The
/// length is checked by [`frame_len`] first, and the body buffer grows only
/// as its bytes arrive.
///
/// Not cancel-safe: a frame interrupted half-way is lost, so use it from
/// one task that reads until the stream ends.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; LEN_PREFIX];
    let mut got = 0;
    while got < LEN_PREFIX {
        let n = r.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = frame_len(prefix)?;
    // Grown as bytes arrive: a peer announcing a large frame and sending
    // little holds little memory.
    let mut body = Vec::with_capacity(len.min(4096));
    (&mut *r).take(len as u64).read_to_end(&mut body).await?;
    if body.len() < len {
        return Err(FrameError::Truncated);
    }
    Ok(Some(body))
}

/// Reads and decodes one message; `Ok(None)` at a clean end of stream.
pub async fn read_msg<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> Result<Option<T>, FrameError> {
    match read_frame(r).await? {
        Some(body) => decode_body(&body).map(Some),
        None => Ok(None),
    }
}

/// Writes one already encoded frame (from [`encode_frame`]) and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> Result<(), FrameError> {
    w.write_all(frame).await?;
    w.flush().await?;
    Ok(())
}

/// Encodes and writes one message.
pub async fn write_msg<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let frame = encode_frame(msg)?;
    write_frame(w, &frame).await
}

/// The version at the start of a body whose message is variant 0 of
/// [`ClientMsg`] or [`ServerMsg`] (`Hello` or `Welcome`), whatever follows
/// it: how two different versions recognise each other. `None` for any
/// other body.
pub fn peek_version(body: &[u8]) -> Option<u16> {
    let cfg = bincode::config::standard().with_limit::<16>();
    match bincode::decode_from_slice::<(u32, u16), _>(body, cfg) {
        Ok(((0, version), _)) => Some(version),
        _ => None,
    }
}

/// What the MI does with a client's first frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloOutcome {
    /// Send `reply` (a [`ServerMsg::Welcome`]) and serve the client.
    Accept {
        /// The client's description from its `Hello`.
        client: String,
        /// The answer to send.
        reply: ServerMsg,
    },
    /// Send `reply` (a [`ServerMsg::Refused`]), then close.
    Refuse {
        /// The answer to send.
        reply: ServerMsg,
    },
    /// Not the protocol at all: close without answering.
    Garbage,
}

/// The MI's handshake decision for the body of a client's first frame; `mi`
/// describes the MI in the `Welcome`. A client of another version is
/// refused with [`AppError::VersionMismatch`] (the MI's version as `ours`)
/// even if the rest of its `Hello` does not decode.
pub fn answer_hello(body: &[u8], mi: &str) -> HelloOutcome {
    let refuse = |theirs| HelloOutcome::Refuse {
        reply: ServerMsg::Refused {
            reason: AppError::VersionMismatch {
                ours: VERSION,
                theirs,
            },
        },
    };
    match decode_body::<ClientMsg>(body) {
        Ok(ClientMsg::Hello { version, client }) if version == VERSION => HelloOutcome::Accept {
            client,
            reply: ServerMsg::Welcome {
                version: VERSION,
                mi: mi.to_owned(),
            },
        },
        Ok(ClientMsg::Hello { version, .. }) => refuse(version),
        Ok(ClientMsg::Request { .. }) => HelloOutcome::Garbage,
        Err(_) => match peek_version(body) {
            Some(v) if v != VERSION => refuse(v),
            _ => HelloOutcome::Garbage,
        },
    }
}

/// The client's handshake decision for the body of the MI's first frame:
/// the MI's description, or the error to report. Versions are reported from
/// the client's side (`ours` is [`VERSION`]); anything that is not the
/// protocol is [`AppError::Disconnected`].
pub fn check_welcome(body: &[u8]) -> Result<String, AppError> {
    let mismatch = |theirs| AppError::VersionMismatch {
        ours: VERSION,
        theirs,
    };
    match decode_body::<ServerMsg>(body) {
        Ok(ServerMsg::Welcome { version, mi }) if version == VERSION => Ok(mi),
        Ok(ServerMsg::Welcome { version, .. }) => Err(mismatch(version)),
        // The MI's message names its own version `ours`: turn it round.
        Ok(ServerMsg::Refused {
            reason: AppError::VersionMismatch { ours, .. },
        }) => Err(mismatch(ours)),
        Ok(ServerMsg::Refused { reason }) => Err(reason),
        Ok(ServerMsg::Response { .. } | ServerMsg::Event(_)) => Err(AppError::Disconnected),
        Err(_) => match peek_version(body) {
            Some(v) if v != VERSION => Err(mismatch(v)),
            _ => Err(AppError::Disconnected),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use membership::appgroup::{
        AppMember, AppView, GroupName, GroupOptions, MemberInfo, MemberName,
    };
    use membership::appgroup::{MemberKind, MergeRule, Scope, SurviveRule};
    use proptest::prelude::*;
    use uuid::Uuid;

    fn view() -> AppView {
        AppView {
            group: GroupName::parse("g").expect("group"),
            number: 3,
            members: vec![AppMember {
                name: MemberName::parse("a").expect("name"),
                kind: MemberKind::parse("db").expect("kind"),
                id: Uuid::from_u128(7),
                host: "h1".into(),
            }],
        }
    }

    fn samples() -> (Vec<ClientMsg>, Vec<ServerMsg>) {
        let g = GroupName::parse("g").expect("group");
        let client = vec![
            ClientMsg::Hello {
                version: VERSION,
                client: "test".into(),
            },
            ClientMsg::Request {
                id: 1,
                op: Op::CreateGroup {
                    name: g.clone(),
                    options: GroupOptions {
                        name_scope: Scope::CoreSet("backbone".into()),
                        membership_scope: Scope::Level(2),
                        survive: SurviveRule::ContainsKind(MemberKind::parse("db").expect("k")),
                        merge: MergeRule::StaticQuorum(3),
                    },
                },
            },
            ClientMsg::Request {
                id: u64::MAX,
                op: Op::Join {
                    group: g.clone(),
                    member: MemberInfo::new(MemberName::parse("a").expect("name")),
                },
            },
            ClientMsg::Request {
                id: 2,
                op: Op::Leave {
                    membership_id: MembershipId(9),
                },
            },
            ClientMsg::Request {
                id: 3,
                op: Op::View { group: g.clone() },
            },
            ClientMsg::Request {
                id: 4,
                op: Op::Lookup {
                    group: g,
                    member_name: MemberName::parse("a").expect("name"),
                },
            },
        ];
        let v = view();
        let server = vec![
            ServerMsg::Welcome {
                version: VERSION,
                mi: "mi".into(),
            },
            ServerMsg::Refused {
                reason: AppError::TooManyClients,
            },
            ServerMsg::Response {
                id: 1,
                result: Ok(Reply::Joined {
                    membership_id: MembershipId(1),
                    me: v.members[0].clone(),
                    view: v.clone(),
                }),
            },
            ServerMsg::Response {
                id: 2,
                result: Err(AppError::InvalidName("x".into())),
            },
            ServerMsg::Response {
                id: 3,
                result: Ok(Reply::View(v.clone())),
            },
            ServerMsg::Event(Event::View {
                membership_id: MembershipId(1),
                view: v,
            }),
            ServerMsg::Event(Event::Ended {
                membership_id: MembershipId(1),
                reason: AppError::Excluded,
            }),
        ];
        (client, server)
    }

    #[test]
    fn round_trips() {
        let (client, server) = samples();
        for m in client {
            let f = encode_frame(&m).expect("encode");
            let len = frame_len([f[0], f[1], f[2], f[3]]).expect("len");
            assert_eq!(len, f.len() - LEN_PREFIX);
            assert_eq!(
                decode_body::<ClientMsg>(&f[LEN_PREFIX..]).expect("decode"),
                m
            );
        }
        for m in server {
            let f = encode_frame(&m).expect("encode");
            assert_eq!(
                decode_body::<ServerMsg>(&f[LEN_PREFIX..]).expect("decode"),
                m
            );
        }
    }

    #[test]
    fn oversized_frames_are_refused() {
        assert!(matches!(
            frame_len((MAX_FRAME as u32 + 1).to_be_bytes()),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            frame_len([0xff; 4]),
            Err(FrameError::TooLarge { .. })
        ));
        let huge = ServerMsg::Refused {
            reason: AppError::Internal("x".repeat(MAX_FRAME)),
        };
        assert!(matches!(
            encode_frame(&huge),
            Err(FrameError::TooLarge { .. }) | Err(FrameError::Encode(_))
        ));
        // A body claiming a string of 2^40 bytes fails without allocating.
        let mut body = vec![0u8, 1, 253];
        body.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode_body::<ClientMsg>(&body).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let (client, _) = samples();
        let mut f = encode_frame(&client[1]).expect("encode");
        f.push(0);
        assert!(matches!(
            decode_body::<ClientMsg>(&f[LEN_PREFIX..]),
            Err(FrameError::TrailingBytes(1))
        ));
    }

    #[test]
    fn hello_decisions() {
        let hello = |version| {
            encode_frame(&ClientMsg::Hello {
                version,
                client: "c".into(),
            })
            .expect("encode")
        };
        match answer_hello(&hello(VERSION)[LEN_PREFIX..], "mi-1") {
            HelloOutcome::Accept { client, reply } => {
                assert_eq!(client, "c");
                assert_eq!(
                    reply,
                    ServerMsg::Welcome {
                        version: VERSION,
                        mi: "mi-1".into()
                    }
                );
            }
            other => panic!("expected Accept, got {other:?}"),
        }
        for old in [0, VERSION + 1, 300, u16::MAX] {
            assert_eq!(
                answer_hello(&hello(old)[LEN_PREFIX..], "mi"),
                HelloOutcome::Refuse {
                    reply: ServerMsg::Refused {
                        reason: AppError::VersionMismatch {
                            ours: VERSION,
                            theirs: old
                        }
                    }
                }
            );
        }
        // A future Hello with more fields after the version is still
        // recognised as another version.
        let mut future = hello(VERSION + 1)[LEN_PREFIX..].to_vec();
        future.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(
            answer_hello(&future, "mi"),
            HelloOutcome::Refuse { .. }
        ));
        // A request first, or garbage: no answer.
        let req = encode_frame(&samples().0[3]).expect("encode");
        assert_eq!(
            answer_hello(&req[LEN_PREFIX..], "mi"),
            HelloOutcome::Garbage
        );
        assert_eq!(answer_hello(b"GET / HTTP/1.1", "mi"), HelloOutcome::Garbage);
        assert_eq!(answer_hello(&[], "mi"), HelloOutcome::Garbage);
    }

    #[test]
    fn welcome_decisions() {
        let body = |m: &ServerMsg| encode_frame(m).expect("encode")[LEN_PREFIX..].to_vec();
        assert_eq!(
            check_welcome(&body(&ServerMsg::Welcome {
                version: VERSION,
                mi: "m".into()
            })),
            Ok("m".into())
        );
        assert_eq!(
            check_welcome(&body(&ServerMsg::Welcome {
                version: 9,
                mi: "m".into()
            })),
            Err(AppError::VersionMismatch {
                ours: VERSION,
                theirs: 9
            })
        );
        assert_eq!(
            check_welcome(&body(&ServerMsg::Refused {
                reason: AppError::VersionMismatch {
                    ours: 5,
                    theirs: VERSION
                }
            })),
            Err(AppError::VersionMismatch {
                ours: VERSION,
                theirs: 5
            })
        );
        assert_eq!(
            check_welcome(&body(&ServerMsg::Refused {
                reason: AppError::TooManyClients
            })),
            Err(AppError::TooManyClients)
        );
        assert_eq!(check_welcome(b"\xff\xff"), Err(AppError::Disconnected));
        assert_eq!(
            check_welcome(&body(&ServerMsg::Event(Event::Ended {
                membership_id: MembershipId(1),
                reason: AppError::Excluded
            }))),
            Err(AppError::Disconnected)
        );
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn read_frame_stream() {
        let (client, _) = samples();
        let mut bytes = Vec::new();
        for m in &client {
            bytes.extend(encode_frame(m).expect("encode"));
        }
        let msgs = block_on(async {
            let mut r = &bytes[..];
            let mut out = Vec::new();
            while let Some(m) = read_msg::<_, ClientMsg>(&mut r).await.expect("read") {
                out.push(m);
            }
            out
        });
        assert_eq!(msgs, client);
        // Cut inside the prefix, and inside the body.
        for cut in [2, LEN_PREFIX + 1] {
            let r = block_on(async { read_frame(&mut &bytes[..cut]).await });
            assert!(matches!(r, Err(FrameError::Truncated)), "cut {cut}: {r:?}");
        }
        let big = (MAX_FRAME as u32 + 1).to_be_bytes();
        let r = block_on(async { read_frame(&mut &big[..]).await });
        assert!(matches!(r, Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn write_frame_round_trip() {
        let (_, server) = samples();
        let mut buf = Vec::new();
        block_on(async {
            for m in &server {
                write_msg(&mut buf, m).await.expect("write");
            }
        });
        let back = block_on(async {
            let mut r = &buf[..];
            let mut out = Vec::new();
            while let Some(m) = read_msg::<_, ServerMsg>(&mut r).await.expect("read") {
                out.push(m);
            }
            out
        });
        assert_eq!(back, server);
    }

    proptest! {
        /// Random bytes never panic the decoders or the handshake.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_body::<ClientMsg>(&bytes);
            let _ = decode_body::<ServerMsg>(&bytes);
            let _ = answer_hello(&bytes, "mi");
            let _ = check_welcome(&bytes);
            let _ = peek_version(&bytes);
            let r = block_on(async { read_frame(&mut &bytes[..]).await });
            if let Ok(Some(body)) = r {
                prop_assert!(body.len() <= MAX_FRAME);
            }
        }

        /// Every strict truncation of a valid body fails to decode as its
        /// own type, and
        /// flipping a byte never panics.
        #[test]
        fn truncations_fail(which in 0usize..13, cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
            let (client, server) = samples();
            let is_client = which < client.len();
            let frame = if is_client {
                encode_frame(&client[which])
            } else {
                encode_frame(&server[(which - client.len()) % server.len()])
            }.expect("encode");
            let body = &frame[LEN_PREFIX..];
            let cut = cut.index(body.len());
            if is_client {
                prop_assert!(decode_body::<ClientMsg>(&body[..cut]).is_err());
            } else {
                prop_assert!(decode_body::<ServerMsg>(&body[..cut]).is_err());
            }
            let mut bent = body.to_vec();
            let i = flip.0.index(bent.len());
            bent[i] ^= flip.1;
            let _ = decode_body::<ClientMsg>(&bent);
            let _ = decode_body::<ServerMsg>(&bent);
            let r = block_on(async { read_frame(&mut &frame[..LEN_PREFIX + cut]).await });
            prop_assert!(matches!(r, Err(FrameError::Truncated)), "{:?}", r);
        }
    }
}
