//! The Membership Service's shared core: identifiers and time, the wire
//! format, the RPC layer, the deterministic simulator and the runtime that
//! runs the protocol cores under actix.
//!
//! Layers, bottom-up (each module imports only modules listed before it;
//! `docs/architecture.md` has the picture):
//!
//! - [`time`], [`id`]: our own `Instant` and the identifiers every layer uses;
//! - [`wire`]: the packet header, bounded bodies, authentication (the
//!   Burghers design document's DNP);
//! - [`sansio`]: the contract every protocol core follows;
//! - [`fault`]: the faults a driver injects (loss, delay, duplication,
//!   blocks), applied by the runtime's interceptor and set by `msctl`;
//! - the two drivers, generic over any core: [`sim`], the deterministic
//!   simulator on virtual time (and the checker traits the cores'
//!   invariant checkers implement), and [`runtime`], the only I/O in this
//!   crate (the actix socket actor, the interceptor pipeline, the generic
//!   core driver);
//! - [`rpc`]: BLAST, CHAN and SELECT (Peterson & Davie, section 5.3);
//! - [`mcaster_reg`]: registering at an mcaster: its control messages and
//!   the member side's `Registration` (Kostrivas 1995, section IV.A);
//! - [`rmcast`]: reliable multicast, its NACK cache for the mcaster, and a
//!   node's groups over IP multicast or an mcaster (`GroupEndpoint`);
//! - [`mcaster`]: the multicast emulator's core (group lists, answers,
//!   forwarding, soft state), above `rmcast`, whose NACK cache it feeds;
//! - [`coreset`]: the mserver group protocol: core table, ring monitoring,
//!   views and the change protocols (Kostrivas 1995, chapters III and IV.C);
//! - [`tree`]: the hierarchy of mserver groups: the chain of core-sets one
//!   mserver belongs to, one per level, and the tasks that couple two
//!   levels (Kostrivas 1995, sections II.A.3-5 and III.A.1);
//! - [`appgroup`]: application groups (Kostrivas 1995, chapter II): the
//!   vocabulary shared by applications, member interfaces and mservers, the
//!   replicated registry, the mserver's service and the MI's agent;
//! - the node compositions the daemons run: [`mserver`] (core-set,
//!   registration, application groups, admin procedures on one socket),
//!   [`mi`] (the member interface's agent and local sessions), and
//!   [`mcaster`] above.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod appgroup;
pub mod coreset;
pub mod fault;
pub mod id;
pub mod mcaster;
pub mod mcaster_reg;
pub mod mi;
pub mod mserver;
pub mod rmcast;
pub mod rpc;
pub mod runtime;
pub mod sansio;
pub mod sim;
pub mod time;
pub mod tree;
pub mod wire;
