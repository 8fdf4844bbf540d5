//! Bodies: serde + bincode 2 under explicit limits.
//!
//! Bincode's `with_limit` bounds how many bytes a decode may claim for
//! collections and strings, so a forged length prefix cannot make us allocate
//! more than the limit; fixed-int encoding is not used (varints keep packets
//! small). A body must be consumed exactly: trailing bytes are an error, so
//! that one valid value has one valid encoding.

use super::error::{BodyError, EncodeError};
use super::limits::{MAX_BODY, MAX_MESSAGE};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn config<const LIMIT: usize>() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

/// Encodes `value` as a body or message of at most [`MAX_MESSAGE`] bytes.
///
/// A first pass only counts the bytes, so the output is allocated once at
/// its exact size (bincode's serde path would otherwise grow an empty vector
/// byte by byte: a third of the RPC core's instructions went to `realloc`).
pub fn encode_body<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let encode_err = |e: bincode::error::EncodeError| EncodeError::Encode(e.to_string());
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config::<MAX_MESSAGE>())
        .map_err(encode_err)?;
    if size.bytes_written > MAX_MESSAGE {
        return Err(EncodeError::TooLarge {
            len: size.bytes_written,
            limit: MAX_MESSAGE,
        });
    }
    let mut bytes = vec![0u8; size.bytes_written];
    let written = bincode::serde::encode_into_slice(value, &mut bytes, config::<MAX_MESSAGE>())
        .map_err(encode_err)?;
    bytes.truncate(written);
    Ok(bytes)
}

fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(bytes: &[u8]) -> Result<T, BodyError> {
    if bytes.len() > LIMIT {
        return Err(BodyError::TooLarge {
            len: bytes.len(),
            limit: LIMIT,
        });
    }
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, config::<LIMIT>())
        .map_err(|e| BodyError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(BodyError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}

/// Decodes a body that arrived in one datagram (at most [`MAX_BODY`] bytes).
pub fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    decode_limited::<T, MAX_BODY>(bytes)
}

/// Decodes a reassembled message (at most [`MAX_MESSAGE`] bytes).
pub fn decode_message<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    decode_limited::<T, MAX_MESSAGE>(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Sample {
        a: u32,
        names: Vec<String>,
        blob: Vec<u8>,
    }

    #[test]
    fn roundtrip() {
        let s = Sample {
            a: 7,
            names: vec!["x".into(), "yz".into()],
            blob: vec![1, 2, 3],
        };
        let b = encode_body(&s).unwrap();
        assert_eq!(decode_body::<Sample>(&b).unwrap(), s);
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut b = encode_body(&5u32).unwrap();
        b.push(0);
        assert_eq!(decode_body::<u32>(&b), Err(BodyError::TrailingBytes(1)));
    }

    #[test]
    fn forged_length_prefix_does_not_allocate() {
        // A Vec<u8> claiming u64::MAX elements: varint 0xFF then 8 bytes.
        let mut b = vec![0xFFu8];
        b.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_body::<Vec<u8>>(&b).is_err());
        assert!(decode_message::<Vec<String>>(&b).is_err());
    }

    #[test]
    fn oversized_body_rejected_before_decode() {
        let big = vec![0u8; MAX_BODY + 1];
        assert!(matches!(
            decode_body::<Vec<u8>>(&big),
            Err(BodyError::TooLarge { .. })
        ));
    }
}
