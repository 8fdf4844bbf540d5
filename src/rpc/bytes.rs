//! [`Bytes`]: an opaque byte string that serde encodes as one length-prefixed
//! block (`serialize_bytes`) instead of a sequence of `u8` values, so that
//! BLAST fragments and CHAN bodies are copied, not walked byte by byte.
//!
//! Decoding accepts borrowed bytes, owned bytes and (for other serde formats)
//! a sequence of `u8`; the wire codec's size limit bounds every allocation.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// An opaque byte string carried in RPC packets.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The owned bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No bytes at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Self {
        Bytes(v.to_vec())
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a megabyte into a log line: the length and a prefix.
        const SHOWN: usize = 8;
        write!(f, "Bytes({}", self.0.len())?;
        if !self.0.is_empty() {
            write!(f, ": ")?;
            for b in self.0.iter().take(SHOWN) {
                write!(f, "{b:02x}")?;
            }
            if self.0.len() > SHOWN {
                write!(f, "..")?;
            }
        }
        write!(f, ")")
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes(v.to_vec()))
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
        Ok(Bytes(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        // The size hint comes from the input: never trust it for more than a
        // small initial capacity.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(Bytes(out))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode_body, encode_body};

    #[test]
    fn roundtrip_and_compact() {
        for len in [0usize, 1, 250, 251, 70_000] {
            let b = Bytes((0..len).map(|i| i as u8).collect());
            let enc = encode_body(&b).unwrap();
            // A varint length prefix (at most 5 bytes here) and the raw bytes.
            assert!(enc.len() <= len + 5, "{len}: {}", enc.len());
            let dec: Bytes = crate::wire::decode_message(&enc).unwrap();
            assert_eq!(dec, b);
        }
        let small = Bytes(vec![1, 2, 3]);
        assert_eq!(
            decode_body::<Bytes>(&encode_body(&small).unwrap()).unwrap(),
            small
        );
    }

    #[test]
    fn same_encoding_as_vec_u8() {
        let v: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(
            encode_body(&Bytes(v.clone())).unwrap(),
            encode_body(&v).unwrap()
        );
    }

    #[test]
    fn debug_is_short() {
        let s = format!("{:?}", Bytes(vec![0xab; 1000]));
        assert_eq!(s, "Bytes(1000: abababababababab..)");
    }
}
