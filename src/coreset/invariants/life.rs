//! What the checkers key their records by: a *life*, one incarnation of
//! one node.

use crate::id::{Incarnation, NodeId};

/// One life of a node.
pub type Life = (NodeId, Incarnation);
