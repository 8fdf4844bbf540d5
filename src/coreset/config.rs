//! Settings of one mserver's core-set protocol and their defaults (DESIGN.md
//! section 7: query interval 200 ms, reply timeout 100 ms, 2 retries; the
//! derived timers are explained in `docs/protocol.md`, "Timers").

use super::tree::{valid_group_name, TreeSettings, MAX_PARENTS};
use crate::id::{Incarnation, NodeId};
use std::time::Duration;
use thiserror::Error;

fn is_group(id: NodeId) -> bool {
    id.addr().ip().is_multicast()
}

/// Longest duration any timer may be configured to (one hour): keeps every
/// deadline far from overflow and catches unit mistakes.
pub const MAX_TIMER: Duration = Duration::from_secs(3600);

/// Most retries any retry count may be configured to.
pub const MAX_RETRIES: u32 = 100;

/// The settings of one [`CoreSet`](super::CoreSet).
///
/// Only `me`, `incarnation`, `group` and `group_addr` have no default
/// ([`CoreSetConfig::new`]). Every `Option` timer is derived from the three
/// base timings when `None`; the accessors (`commit_timeout()`, ...) give
/// the effective value. All members of a group should use the same timings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreSetConfig {
    /// This mserver's address (its identity, seed 003 section III).
    pub me: NodeId,
    /// This life's incarnation (it changes on a rejoin after exclusion; see
    /// [`CoreSetEvent::NewIncarnation`](super::CoreSetEvent::NewIncarnation)).
    pub incarnation: Incarnation,
    /// The group name: 1 to [`MAX_GROUP_NAME`](super::tree::MAX_GROUP_NAME) characters of `[A-Za-z0-9._-]`.
    pub group: String,
    /// Where group messages go: a multicast address and port (in the
    /// simulator, a group joined with `Simulator::join_group`).
    pub group_addr: NodeId,
    /// Ring monitoring period: every member sends its monitor a heartbeat
    /// this often, and a heartbeat later than this plus half a reply timeout
    /// is overdue. Default 200 ms.
    pub query_interval: Duration,
    /// How long a QUERY, an AGREE or a status exchange waits for its answer
    /// before it is sent again. Default 100 ms. A timer that fires later
    /// than its deadline by more than this means the process was starved:
    /// the round is restarted instead of accusing anyone (local health).
    pub reply_timeout: Duration,
    /// Monitoring retries: an overdue neighbour is queried `1 + retries`
    /// times before it goes on the fail list. Default 2.
    pub retries: u32,
    /// Testing fault (the thesis's fmserver, Appendix C test 6): as
    /// coordinator, wait this long between the last ACK and the COMMIT.
    pub commit_delay: Option<Duration>,
    /// Phase I retries: an AGREE is sent `1 + change_retries` times to a
    /// member that neither ACKs nor refuses before it is taken as failed.
    /// Default `retries + 2` (4): change messages are rarer than queries,
    /// and a false failure costs two views.
    pub change_retries: Option<u32>,
    /// How long a member that ACKed waits for the COMMIT before it suspects
    /// the coordinator (CO_FAIL). Default `(2 + change_retries) *
    /// reply_timeout` (600 ms): longer than a whole phase I with every
    /// retry.
    pub commit_timeout: Option<Duration>,
    /// The join request's first wait for an answer. Default `reply_timeout`.
    pub join_timeout: Option<Duration>,
    /// The longest wait between join requests while the group is heard but
    /// busy (the wait doubles each round up to this). Default `8 *
    /// join_timeout`.
    pub join_timeout_max: Option<Duration>,
    /// How often the lowest-rank member multicasts an ANNOUNCE of the view
    /// (joiners hear the group; a subgroup of the same name learns about
    /// it, and the two merge). Default `2 * query_interval` (400 ms).
    pub announce_interval: Option<Duration>,
    /// A voluntary leave that has not committed after this long completes
    /// anyway (the group then detects the silence). Default `3 *
    /// commit_timeout`.
    pub leave_timeout: Option<Duration>,
    /// A member excluded while running (not paused) that rejoins and is
    /// failed again within this long is flapping (a one-way or flapping
    /// link): its failures count towards a hold-down, and the member that
    /// failed it watches it after its re-admission for this long. Default
    /// 60 s.
    pub flap_window: Duration,
    /// The hold-down after the second failure in a row of a flapping
    /// member: its rejoin requests are answered `JOIN_WAIT` this long; it
    /// doubles with every further failure. Default 5 s.
    pub hold_down: Duration,
    /// The longest hold-down. Default 5 minutes.
    pub hold_down_max: Duration,
    /// The group's place in the tree: level 1 by default, or a parent
    /// group's level with the child set this member is a parent of.
    pub tree: TreeSettings,
}

/// A configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The group name is empty, too long or has a character outside
    /// `[A-Za-z0-9._-]`.
    #[error("invalid group name {0:?}: 1 to 64 characters of [A-Za-z0-9._-]")]
    BadGroupName(String),
    /// The group address is not a multicast address.
    #[error("group address {0} is not a multicast address")]
    GroupAddrNotMulticast(NodeId),
    /// This node's own address is a multicast address.
    #[error("own address {0} is a multicast address")]
    MeIsMulticast(NodeId),
    /// A timer is zero or longer than [`MAX_TIMER`].
    #[error("{name} must be between 1 microsecond and 1 hour, not {value:?}")]
    BadTimer {
        /// Which setting.
        name: &'static str,
        /// Its value.
        value: Duration,
    },
    /// `max_parents` is 0 or above [`MAX_PARENTS`].
    #[error("max parents must be between 1 and {MAX_PARENTS}, not {0}")]
    BadMaxParents(u8),
    /// A claimed child set or a parent group that is malformed, a claim
    /// of the top level, or a child set that is this very group.
    #[error("invalid place in the tree: {0}")]
    BadTree(String),
    /// A retry count above [`MAX_RETRIES`].
    #[error("{name} must be at most {MAX_RETRIES}, not {value}")]
    BadRetries {
        /// Which setting.
        name: &'static str,
        /// Its value.
        value: u32,
    },
}

impl CoreSetConfig {
    /// The default timings (DESIGN.md section 7) for `me` in `group` at
    /// `group_addr`.
    pub fn new(
        me: NodeId,
        incarnation: Incarnation,
        group: impl Into<String>,
        group_addr: NodeId,
    ) -> Self {
        CoreSetConfig {
            me,
            incarnation,
            group: group.into(),
            group_addr,
            query_interval: Duration::from_millis(200),
            reply_timeout: Duration::from_millis(100),
            retries: 2,
            commit_delay: None,
            change_retries: None,
            commit_timeout: None,
            join_timeout: None,
            join_timeout_max: None,
            announce_interval: None,
            leave_timeout: None,
            flap_window: Duration::from_secs(60),
            hold_down: Duration::from_secs(5),
            hold_down_max: Duration::from_secs(300),
            tree: TreeSettings::default(),
        }
    }

    /// Effective phase I retries.
    pub fn change_retries(&self) -> u32 {
        self.change_retries
            .unwrap_or(self.retries.saturating_add(2))
    }

    /// Effective COMMIT wait.
    pub fn commit_timeout(&self) -> Duration {
        self.commit_timeout.unwrap_or_else(|| {
            self.reply_timeout
                .saturating_mul(self.change_retries().saturating_add(2))
        })
    }

    /// Effective first join wait.
    pub fn join_timeout(&self) -> Duration {
        self.join_timeout.unwrap_or(self.reply_timeout)
    }

    /// Effective longest join wait.
    pub fn join_timeout_max(&self) -> Duration {
        self.join_timeout_max
            .unwrap_or_else(|| self.join_timeout().saturating_mul(8))
            .max(self.join_timeout())
    }

    /// Effective ANNOUNCE period.
    pub fn announce_interval(&self) -> Duration {
        self.announce_interval
            .unwrap_or_else(|| self.query_interval.saturating_mul(2))
    }

    /// Effective leave bound.
    pub fn leave_timeout(&self) -> Duration {
        self.leave_timeout
            .unwrap_or_else(|| self.commit_timeout().saturating_mul(3))
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !valid_group_name(&self.group) {
            return Err(ConfigError::BadGroupName(self.group.clone()));
        }
        if !is_group(self.group_addr) {
            return Err(ConfigError::GroupAddrNotMulticast(self.group_addr));
        }
        if is_group(self.me) {
            return Err(ConfigError::MeIsMulticast(self.me));
        }
        let timers = [
            ("query_interval", Some(self.query_interval)),
            ("reply_timeout", Some(self.reply_timeout)),
            ("commit_timeout", self.commit_timeout),
            ("join_timeout", self.join_timeout),
            ("join_timeout_max", self.join_timeout_max),
            ("announce_interval", self.announce_interval),
            ("leave_timeout", self.leave_timeout),
            ("flap_window", Some(self.flap_window)),
            ("hold_down", Some(self.hold_down)),
            ("hold_down_max", Some(self.hold_down_max)),
        ];
        for (name, value) in timers {
            if let Some(value) = value {
                if value.is_zero() || value > MAX_TIMER {
                    return Err(ConfigError::BadTimer { name, value });
                }
            }
        }
        if let Some(d) = self.commit_delay {
            if d > MAX_TIMER {
                return Err(ConfigError::BadTimer {
                    name: "commit_delay",
                    value: d,
                });
            }
        }
        for (name, value) in [
            ("retries", Some(self.retries)),
            ("change_retries", self.change_retries),
        ] {
            if let Some(value) = value {
                if value > MAX_RETRIES {
                    return Err(ConfigError::BadRetries { name, value });
                }
            }
        }
        let tree = &self.tree;
        if !(1..=MAX_PARENTS).contains(&tree.max_parents) {
            return Err(ConfigError::BadMaxParents(tree.max_parents));
        }
        if let Some(c) = &tree.child {
            if !c.is_valid() {
                return Err(ConfigError::BadTree(format!(
                    "child set {} at level {} (levels 1 to 15 have a level above)",
                    c.group, c.level
                )));
            }
            if c.group.name == self.group {
                return Err(ConfigError::BadTree(format!(
                    "group {} cannot be its own child set",
                    self.group
                )));
            }
        }
        if let Some(p) = &tree.parent_group {
            if let Err(e) = p.check() {
                return Err(ConfigError::BadTree(format!("parent group: {e}")));
            }
            if p.name == self.group {
                return Err(ConfigError::BadTree(format!(
                    "group {} cannot be its own parent group",
                    self.group
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CoreSetConfig {
        CoreSetConfig::new(
            NodeId::v4(10, 0, 0, 1, 7000),
            Incarnation::NIL,
            "lan-1",
            NodeId::v4(239, 1, 1, 1, 7000),
        )
    }

    #[test]
    fn defaults_are_derived_from_the_base_timings() {
        let c = cfg();
        assert_eq!(c.change_retries(), 4);
        assert_eq!(c.commit_timeout(), Duration::from_millis(600));
        assert_eq!(c.join_timeout(), Duration::from_millis(100));
        assert_eq!(c.join_timeout_max(), Duration::from_millis(800));
        assert_eq!(c.announce_interval(), Duration::from_millis(400));
        assert_eq!(c.leave_timeout(), Duration::from_millis(1800));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn bad_settings_are_refused() {
        for name in ["", "a b", "ü", &"x".repeat(65), "a/b"] {
            let mut c = cfg();
            c.group = name.to_string();
            assert!(matches!(c.validate(), Err(ConfigError::BadGroupName(_))));
        }
        assert!(valid_group_name(&"x".repeat(64)));
        let mut c = cfg();
        c.group_addr = NodeId::v4(10, 0, 0, 9, 7000);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::GroupAddrNotMulticast(_))
        ));
        let mut c = cfg();
        c.reply_timeout = Duration::ZERO;
        assert!(matches!(c.validate(), Err(ConfigError::BadTimer { .. })));
        let mut c = cfg();
        c.retries = 1000;
        assert!(matches!(c.validate(), Err(ConfigError::BadRetries { .. })));
        let mut c = cfg();
        c.me = NodeId::v4(239, 0, 0, 1, 1);
        assert!(matches!(c.validate(), Err(ConfigError::MeIsMulticast(_))));
    }
}
