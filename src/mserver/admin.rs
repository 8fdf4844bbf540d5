//! The admin protocol between `msctl` and an mserver (DESIGN.md section 7),
//! carried by the project's RPC ([`crate::rpc`]: CHAN request/reply,
//! at-most-once) on the mserver's own UDP port.
//!
//! Each procedure has a number, a request type and a reply type, encoded
//! with the project codec ([`crate::wire::encode_body`], bounded on
//! decode). `msctl` renders the replies as JSON; the JSON field names of
//! [`ViewReply`] are the public contract of `msctl view --json` and are
//! never renamed (fields may be added).

use crate::coreset::{Member, TreeRecord};
use crate::fault::FaultConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// `view`: the mserver's current core-set view. Request: [`ViewRequest`];
/// reply: [`ViewReply`].
pub const PROC_VIEW: u16 = 1;
/// `leave`: leave the group gracefully, then exit. Request:
/// [`LeaveRequest`]; reply: [`LeaveReply`] (sent once the leave is
/// committed, or when it gave up).
pub const PROC_LEAVE: u16 = 2;
/// `fault`: set the fault interceptor. Request: [`FaultRequest`]; reply:
/// [`FaultReply`].
pub const PROC_FAULT: u16 = 3;

/// `stats`: the mserver's counters. Request: [`StatsRequest`]; reply:
/// [`StatsReply`].
pub const PROC_STATS: u16 = 4;

/// Arguments of `stats` (none yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRequest {}

/// Traffic of one protocol on the mserver's socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolTraffic {
    /// Datagrams sent.
    pub sent: u64,
    /// Bytes sent (UDP payload: our header and body).
    pub bytes_sent: u64,
    /// Datagrams received.
    pub received: u64,
    /// Body bytes received.
    pub bytes_received: u64,
}

/// The reply to `stats` (`msctl stats --json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// Datagrams sent on the main socket.
    pub datagrams_sent: u64,
    /// Bytes sent on the main socket.
    pub bytes_sent: u64,
    /// Datagrams received on the main socket.
    pub datagrams_received: u64,
    /// Bytes received on the main socket.
    pub bytes_received: u64,
    /// Per protocol (`coreset`, `mcaster`, `rpc`, ...).
    pub protocols: std::collections::BTreeMap<String, ProtocolTraffic>,
    /// Datagrams dropped by the socket, by kind.
    pub drops: std::collections::BTreeMap<String, u64>,
    /// The core-set protocol's counters, by name.
    pub coreset: std::collections::BTreeMap<String, u64>,
}

/// The core-set counters as a flat map (`sent.agree_j`, `drops.stale_view`,
/// `views_installed`, ...), for [`StatsReply::coreset`].
pub fn counters_of(
    stats: &crate::coreset::CoreSetStats,
) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    if let Ok(value) = serde_json::to_value(stats) {
        flatten("", &value, &mut out);
    }
    out
}

fn flatten(
    prefix: &str,
    value: &serde_json::Value,
    out: &mut std::collections::BTreeMap<String, u64>,
) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::Number(n) => {
            if let Some(n) = n.as_u64() {
                out.insert(prefix.to_string(), n);
            }
        }
        _ => {}
    }
}

/// `add-parent`: become a parent of our top group in another group (one
/// level up). Request: [`AddParentRequest`]; reply: `Result<ViewReply,
/// TreeError>` (the parent group's view), sent when the change is over.
pub const PROC_ADD_PARENT: u16 = 8;
/// `del-parent` and `leave --level N` (N > 1): leave the levels from N
/// (default: our top) up, stepping down as a parent of level N-1.
/// Request: [`DelParentRequest`]; reply: `Result<ViewReply, TreeError>`
/// (level N-1's view), sent when the change is over.
pub const PROC_DEL_PARENT: u16 = 9;

/// Arguments of `add-parent`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddParentRequest {
    /// The parent group, `NAME@IP:PORT`.
    pub group: String,
}

/// Arguments of `del-parent` / `leave --level N`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelParentRequest {
    /// The lowest level to leave (`None`: our top).
    pub level: Option<u8>,
}

/// `tree`: every level this mserver belongs to. Request: empty; reply:
/// [`TreeReply`]. (5 and 6 are `keys` and `events`.)
pub const PROC_TREE: u16 = 7;

/// Arguments of `view`. An empty request body asks for level 1 (the
/// `msctl` of one level sends one); the reply is `Result<ViewReply,
/// String>`, the error naming the levels this mserver has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewRequest {
    /// The level whose view is asked (1: the mserver's own group).
    pub level: u8,
}

/// The reply to `tree`: the JSON object of `msctl tree --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeReply {
    /// Every level's view, level 1 first.
    pub levels: Vec<ViewReply>,
    /// The tree task in progress (`add-parent`, `step-down`), if any.
    pub task: Option<String>,
    /// Why this mserver stays below the top of its configured chain, if
    /// it does (`level 1: the child set did not take us as a parent`).
    pub standby: Option<String>,
    /// How many levels the configuration names (`--parent` entries + 1).
    pub configured_levels: u8,
    /// Our top group records a parent group but has no parent (it is
    /// re-parenting).
    pub parentless: bool,
}

/// One member, as `msctl view --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Rank in the group (0 = the founder; lower = older).
    pub rank: u64,
    /// The mserver's address.
    pub addr: String,
    /// Its incarnation (UUID v7).
    pub incarnation: String,
    /// It is a parent of this group (also a member of the parent group).
    #[serde(default)]
    pub parent: bool,
    /// It is not a candidate for automatic re-parenting.
    #[serde(default)]
    pub declined: bool,
    /// Above level 1: the name of the child set it is a parent of
    /// (`null` at level 1).
    #[serde(default)]
    pub child_group: Option<String>,
    /// Above level 1: that child set's group address.
    #[serde(default)]
    pub child_group_addr: Option<String>,
}

/// A group as `msctl view --json` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// Its name.
    pub name: String,
    /// Its group address.
    pub addr: String,
}

/// The reply to `view`: the JSON object of `msctl view --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewReply {
    /// The group's name.
    pub group: String,
    /// The view number (it changes only when the membership or the tree
    /// does).
    pub view: u64,
    /// The group's level in the hierarchy (1: the lowest mserver groups).
    #[serde(default)]
    pub level: u8,
    /// Where the tree continues: the group this group's parents belong to
    /// (`null` at the top or when not known).
    #[serde(default)]
    pub parent_group: Option<GroupInfo>,
    /// Most parents the group keeps.
    #[serde(default)]
    pub max_parents: u8,
    /// Application changes committed since this view was installed (the
    /// commit sequence within the view).
    #[serde(default)]
    pub commit: u64,
    /// The incarnation of the member that coordinated this view (with
    /// `view`, the view id: `[coordinator|view]`).
    pub coordinator: String,
    /// `"idle"`, `"changing"`, or `"joining"` before the first view.
    pub state: String,
    /// This mserver.
    pub me: MemberInfo,
    /// The members, sorted by rank.
    pub members: Vec<MemberInfo>,
    /// Addresses the group holds down (failed again and again after
    /// rejoining: a one-way or flapping link), as this mserver knows them.
    pub held_down: Vec<HeldDownInfo>,
}

/// One held-down address, as `msctl view --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldDownInfo {
    /// The mserver's address.
    pub addr: String,
    /// Failures in a row after rejoining.
    pub strikes: u32,
    /// Milliseconds until its rejoin requests are accepted again.
    pub remaining_ms: u64,
}

/// Arguments of `leave` (none yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveRequest {}

/// The reply to `leave`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveReply {
    /// Whether the leave was committed by the group (false: it gave up,
    /// e.g. the group did not answer; the mserver exits anyway).
    pub committed: bool,
    /// Set when the request was refused (admin access): the mserver stays.
    #[serde(default)]
    pub refused: Option<String>,
}

/// Arguments of `fault`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultRequest {
    /// Clear every fault first.
    pub clear: bool,
    /// Drop this percentage of datagrams in both directions.
    pub drop_pct: Option<f64>,
    /// Drop all traffic to and from these nodes.
    pub block: Vec<SocketAddr>,
    /// Drop only what arrives from these nodes (one-way).
    pub block_in: Vec<SocketAddr>,
}

impl FaultRequest {
    /// The fault configuration this request sets, given the current one.
    pub fn apply_to(&self, current: &FaultConfig) -> FaultConfig {
        let mut next = if self.clear {
            FaultConfig::clear()
        } else {
            current.clone()
        };
        if let Some(pct) = self.drop_pct {
            next = next.with_drop_pct(pct);
        }
        for addr in &self.block {
            next = next.with_block(crate::id::NodeId::new(*addr));
        }
        for addr in &self.block_in {
            next = next.with_block_in(crate::id::NodeId::new(*addr));
        }
        next
    }
}

/// The reply to `fault`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultReply {
    /// `None`: applied; otherwise why it was refused.
    pub error: Option<String>,
    /// The configuration in force afterwards, in words.
    pub now: String,
}

/// A member as the admin JSON shows it, with its tree bits from `tree`
/// (the group's record; a default record shows a plain member).
pub fn member_info(m: &Member, tree: &TreeRecord) -> MemberInfo {
    let bits = tree.bits(m.rank);
    MemberInfo {
        rank: m.rank,
        addr: m.addr.to_string(),
        incarnation: m.incarnation.to_string(),
        parent: bits.parent,
        declined: bits.declined,
        child_group: bits.child_group.as_ref().map(|g| g.name.clone()),
        child_group_addr: bits.child_group.as_ref().map(|g| g.addr.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode_body, encode_body};

    #[test]
    fn requests_round_trip() {
        let f = FaultRequest {
            clear: true,
            drop_pct: Some(12.5),
            block: vec!["127.0.0.2:7200".parse().expect("addr")],
            block_in: vec![],
        };
        let bytes = encode_body(&f).expect("encode");
        let back: FaultRequest = decode_body(&bytes).expect("decode");
        assert_eq!(back, f);
        let applied = f.apply_to(&FaultConfig::clear().with_drop_pct(50.0));
        assert!(applied.validate().is_ok());
        assert!(!applied.is_clear());
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(decode_body::<ViewReply>(&[0xff; 7]).is_err());
        assert!(decode_body::<FaultRequest>(&[]).is_err());
    }
}
