//! Unit tests of the core-set core driven by hand (bad input, single
//! messages); the protocol under faults is tested in `tests/sim_coreset.rs`.
