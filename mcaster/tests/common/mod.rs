//! What the mcaster process tests share besides `testkit`: the `mcaster`
//! binary, and the test member core: the member-side registration
//! (`mcaster_reg::Registration`) plus numbered group messages on
//! `ProtocolId::Test`, each reported as [`Ev::Got`] with its original sender
//! and the UDP peer it came from.

// Every test binary compiles this module on its own and uses a subset.
#![allow(dead_code)]

use membership::id::{NodeId, ProtocolId};
use membership::mcaster_reg::{ReceiveMode, Registration, RegistrationConfig, RegistrationEvent};
use membership::sansio::{Core, Incoming, Transmit};
use membership::time::Instant;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The `mcaster` binary (found by `testkit`, as every test finds it).
pub fn mcaster_bin() -> PathBuf {
    testkit::bin("mcaster", "mcaster")
}

/// What a test member reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    /// A registration event (registered, refused, relearned, left).
    Reg(RegistrationEvent),
    /// A group message: its original sender, the UDP peer it came from, its
    /// sequence number.
    Got {
        from: NodeId,
        peer: NodeId,
        seq: u64,
    },
}

/// A member of one group, registered with an mcaster.
pub struct TestMember {
    local: NodeId,
    reg: Registration,
    out: VecDeque<Transmit>,
    events: VecDeque<Ev>,
    next_seq: u64,
}

impl TestMember {
    /// A member at `local` of `group`, joining through `mcaster` as `kind`.
    pub fn new(
        now: Instant,
        local: NodeId,
        mcaster: SocketAddr,
        kind: ReceiveMode,
        group: NodeId,
        name: &str,
    ) -> Self {
        let mut reg = Registration::new(RegistrationConfig::new(NodeId::new(mcaster), kind));
        reg.join(now, group, name);
        let mut m = TestMember {
            local,
            reg,
            out: VecDeque::new(),
            events: VecDeque::new(),
            next_seq: 0,
        };
        m.drain_reg();
        m
    }

    /// Sends group message `seq` (the runtime routes it to the class D
    /// address or to the mcaster).
    pub fn send(&mut self, group: NodeId, seq: u64) {
        self.out.push_back(Transmit::new(
            group,
            ProtocolId::Test,
            seq.to_be_bytes().to_vec(),
        ));
    }

    /// Sends the next message of this member's own sequence 1, 2, 3 ...
    pub fn send_next(&mut self, group: NodeId) -> u64 {
        self.next_seq += 1;
        self.send(group, self.next_seq);
        self.next_seq
    }

    fn drain_reg(&mut self) {
        while let Some(t) = self.reg.poll_transmit() {
            self.out.push_back(t);
        }
        while let Some(e) = self.reg.poll_event() {
            self.events.push_back(Ev::Reg(e));
        }
    }
}

impl Core for TestMember {
    type Event = Ev;

    fn handle_packet(&mut self, now: Instant, p: Incoming<'_>) {
        if !self.reg.handle(now, &p) && p.protocol == ProtocolId::Test {
            // Our own class D datagrams loop back: not a reception.
            if p.source == self.local {
                return;
            }
            if let Ok(b) = <[u8; 8]>::try_from(p.body) {
                self.events.push_back(Ev::Got {
                    from: p.source,
                    peer: p.peer,
                    seq: u64::from_be_bytes(b),
                });
            }
        }
        self.drain_reg();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.reg.handle_timeout(now);
        self.drain_reg();
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_event(&mut self) -> Option<Ev> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.reg.poll_timeout()
    }
}
