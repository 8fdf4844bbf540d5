//! The Membership Service's shared core: identifiers and time, the wire
//! format, the RPC layer, the deterministic simulator and the runtime that
//! runs the protocol cores under actix.
//!
//! Layers, bottom-up (DESIGN.md section 2):
//!
//! - [`time`], [`id`]: our own `Instant` and the identifiers every layer uses;
//! - [`wire`]: the packet header, bounded bodies, authentication (seed 000 DNP);
//! - [`sansio`]: the contract every protocol core follows;
//! - [`fault`]: the faults a driver injects (loss, delay, duplication,
//!   blocks), applied by the runtime's interceptor and set by `msctl`;
//! - [`rpc`]: BLAST, CHAN and SELECT (seed 004, section 5.3);
//! - [`mcaster_reg`]: registering at an mcaster: its control messages and
//!   the member side's `Registration` (seed 003, section IV.A), below
//!   `rmcast`, which embeds it;
//! - [`rmcast`]: reliable multicast, its NACK cache for the mcaster, and a
//!   node's groups over IP multicast or an mcaster (`GroupEndpoint`);
//! - [`mcaster`]: the multicast emulator's core (group lists, answers,
//!   forwarding, soft state), above `rmcast`, whose NACK cache it feeds;
//! - [`appgroup`]: application groups (seed 003, chapter II): the
//!   vocabulary shared by applications, member interfaces and mservers, the
//!   replicated registry, the mserver's service and the MI's agent;
//! - [`coreset`]: the mserver group protocol: core table, ring monitoring,
//!   views and the change protocols (seed 003, chapters III and IV.C);
//! - [`mserver`]: the mserver's composite core (core-set, registration,
//!   application groups, admin procedures on one socket);
//! - [`mi`]: the member interface's composite core (its agent and the
//!   local processes' sessions), run by the member-interface daemon;
//! - [`sim`]: the deterministic simulator that runs the cores on virtual time;
//! - [`runtime`]: the only I/O in this crate, the actix socket actor, the
//!   interceptor pipeline and the generic core driver.
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
pub mod wire;
