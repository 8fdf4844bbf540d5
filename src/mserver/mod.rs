//! The mserver's composite sans-IO core and its admin protocol (DESIGN.md
//! sections 2, 3 and 7; seed 003, chapters II to IV): what runs on an
//! mserver's one UDP socket, kept in the library so the simulator and the
//! benchmarks run the very core the `mserver` daemon runs.
//!
//! - [`node`]: [`node::MserverNode`], the core-set, the mcaster
//!   registration, the application-group service and the admin procedures
//!   side by side on one socket;
//! - [`admin`]: the requests and replies `msctl` exchanges with an mserver;
//! - [`access`]: who may use the admin procedures that change something;
//! - [`keys`]: key rotation committed through the core-set (`msctl keys`).
//! - [`rollout`]: when a committed ring reaches this mserver's sockets,
//!   its member interfaces and its mcaster (a new signing key waits for
//!   them).
//! - [`events`]: the bounded log of view changes and failure detections
//!   that `msctl events` streams and the status page shows.

pub mod access;
pub mod admin;
pub mod events;
pub mod keys;
pub mod node;
pub mod rollout;
