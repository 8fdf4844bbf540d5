//! The trace of a run: a running SHA-256 over every scheduled and processed
//! event, and optionally the last lines of a human-readable log for failure
//! messages (DESIGN.md section 3: same seed, same trace).

use crate::id::NodeId;
use crate::time::Instant;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;

/// The running hash and the optional tail of the readable log.
pub(crate) struct Trace {
    hasher: Sha256,
    /// A record is assembled here and hashed with one update.
    scratch: Vec<u8>,
    tail: VecDeque<String>,
    tail_capacity: usize,
}

impl Trace {
    pub(crate) fn new(tail_capacity: usize) -> Self {
        Trace {
            hasher: Sha256::new(),
            scratch: Vec::with_capacity(256),
            tail: VecDeque::with_capacity(tail_capacity.min(1024)),
            tail_capacity,
        }
    }

    /// Mixes a record of several fields into the hash; every field is
    /// length-prefixed so that records cannot be confused.
    pub(crate) fn mix(&mut self, fields: &[&[u8]]) {
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&(fields.len() as u32).to_be_bytes());
        for f in fields {
            self.scratch
                .extend_from_slice(&(f.len() as u32).to_be_bytes());
            self.scratch.extend_from_slice(f);
        }
        self.hasher.update(&self.scratch);
    }

    /// Appends a readable line to the tail, if the tail is enabled; the line
    /// is only formatted when it is.
    pub(crate) fn line(&mut self, now: Instant, f: impl FnOnce() -> String) {
        if self.tail_capacity == 0 {
            return;
        }
        if self.tail.len() == self.tail_capacity {
            self.tail.pop_front();
        }
        self.tail.push_back(format!("{now} {}", f()));
    }

    /// The hash of everything so far.
    pub(crate) fn hash(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }

    /// The retained readable lines, oldest first.
    pub(crate) fn tail(&self) -> impl Iterator<Item = &str> {
        self.tail.iter().map(String::as_str)
    }
}

/// The wire form of a node id, for the hash.
pub(crate) fn node_bytes(id: NodeId) -> [u8; NodeId::WIRE_LEN] {
    let mut b = [0u8; NodeId::WIRE_LEN];
    id.write_wire(&mut b);
    b
}
