//! Unit tests of the rmcast core.
