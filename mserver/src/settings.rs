//! The mserver's settings (DESIGN.md section 7): built-in defaults < TOML
//! file (`--config`) < environment (`MS_*`) < command-line flags.
//!
//! Every value is checked before the daemon starts: a bad flag, file or
//! variable gives one clear line and exit code 2 (DESIGN.md section 8).

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use daemon_shell::settings::{Overrides, Sources};
use membership::coreset::{GroupRef, MAX_LEVEL, MAX_PARENTS};
use membership::mserver::access::Cidr;
use membership::wire::KeyRing;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Default UDP (and crash-watch TCP) listen address.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 7200);
/// Default group address: an administratively scoped class D address.
pub const DEFAULT_GROUP_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 255, 70, 1)), 7300);
/// Default mcaster address (the mcaster's own default).
pub const DEFAULT_MCASTER: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 7100);
/// Default group name.
pub const DEFAULT_GROUP: &str = "lan";
/// Default HTTP endpoint (metrics, health, the status page).
pub const DEFAULT_HTTP: &str = "127.0.0.1:9200";

/// How group messages travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MulticastMode {
    /// Probe at startup: IP multicast if a probe datagram comes back,
    /// otherwise through the mcaster.
    Auto,
    /// IP multicast to the group address (registered with the mcaster as a
    /// multicast member, so that unicast-only members hear us).
    On,
    /// Unicast only: every group message goes through the mcaster.
    Off,
}

pub use membership::runtime::logging::LogFormat;

/// One level above the mserver's own group: a `--parent NAME@IP:PORT`
/// (level 1's timings), or a `[[parent]]` table of the TOML file with its
/// own timings (upper levels often cross slower links).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParentSpec {
    /// `NAME@IP:PORT`.
    Short(String),
    /// `[[parent]]`: `name`, `addr` and optionally `query_interval_ms`,
    /// `reply_timeout_ms`, `retries`.
    Table(ParentTable),
}

/// A `[[parent]]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentTable {
    /// The group's name.
    pub name: String,
    /// The group's address (IPv4 multicast).
    pub addr: SocketAddr,
    /// This level's monitoring interval (default: level 1's).
    #[serde(default)]
    pub query_interval_ms: Option<u64>,
    /// This level's reply timeout (default: level 1's).
    #[serde(default)]
    pub reply_timeout_ms: Option<u64>,
    /// This level's retries (default: level 1's).
    #[serde(default)]
    pub retries: Option<u32>,
}

/// A level above level 1, checked: its group and timings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentLevel {
    /// The group.
    pub group: GroupRef,
    /// Monitoring interval, ms.
    pub query_interval_ms: u64,
    /// Reply timeout, ms.
    pub reply_timeout_ms: u64,
    /// Retries.
    pub retries: u32,
}

/// `mserver`: a member of an mserver group (core-set) of the Membership
/// Service.
///
/// It joins the group named by --group at --group-addr (founding it if
/// nobody answers), watches its neighbour in the ring, and commits every
/// join, leave and failure with the other members so that all of them see
/// the same numbered views (Kostrivas 1995, chapters III and IV). Inspect it with
/// `msctl --server ADDR view`. SIGTERM (or `msctl leave`) leaves the group
/// gracefully; SIGKILL is a crash that the others detect.
///
/// Settings: built-in defaults < TOML file (--config) < environment
/// (MS_GROUP, MS_LISTEN, MS_QUERY_INTERVAL_MS, ...) < flags.
#[derive(Debug, Parser)]
#[command(name = "mserver", version)]
pub struct Cli {
    /// The group's name [default: lan].
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// The group's address: an IPv4 multicast address and port
    /// [default: 239.255.70.1:7300].
    #[arg(long, value_name = "IP:PORT")]
    pub group_addr: Option<SocketAddr>,
    /// UDP address to listen on; the crash watch listens on the same TCP
    /// port [default: 127.0.0.1:7200].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The address in our headers when --listen is 0.0.0.0.
    #[arg(long, value_name = "ADDR")]
    pub advertise: Option<SocketAddr>,
    /// The LAN's mcaster, used when multicast is off (or unavailable)
    /// [default: 127.0.0.1:7100].
    #[arg(long, value_name = "ADDR")]
    pub mcaster: Option<SocketAddr>,
    /// Group messages by IP multicast (on), through the mcaster (off), or
    /// whichever the startup probe finds (auto) [default: auto].
    #[arg(long, value_enum)]
    pub multicast: Option<MulticastMode>,
    /// Interface address for multicast (0.0.0.0: the kernel's choice)
    /// [default: 0.0.0.0].
    #[arg(long, value_name = "IP")]
    pub multicast_interface: Option<Ipv4Addr>,
    /// A TOML file with any of these settings (keys as the long flags, with
    /// `_` for `-`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Interval of ring monitoring: how often the neighbour must be heard
    /// from [default: 200].
    #[arg(long, value_name = "N")]
    pub query_interval_ms: Option<u64>,
    /// How long to wait for a REPLY or an ACK [default: 100].
    #[arg(long, value_name = "N")]
    pub reply_timeout_ms: Option<u64>,
    /// Retries before a silent member goes on the fail list [default: 2].
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// A member excluded while running that rejoins and is failed again
    /// within this many ms is flapping (a one-way or flapping link)
    /// [default: 60000].
    #[arg(long, value_name = "N")]
    pub flap_window_ms: Option<u64>,
    /// How long a flapping member's rejoin is held down after its second
    /// failure in a row; it doubles with each further one [default: 5000].
    #[arg(long, value_name = "N")]
    pub hold_down_ms: Option<u64>,
    /// The longest hold-down [default: 300000].
    #[arg(long, value_name = "N")]
    pub hold_down_max_ms: Option<u64>,
    /// Keep an idle TCP connection to the monitored neighbour so that its
    /// crash is seen at once [default: true].
    #[arg(long, value_name = "BOOL")]
    pub crash_watch: Option<bool>,
    /// Testing faults, KEY=VALUE (repeatable): `commit-delay-ms=N` makes
    /// this mserver wait N ms before phase II of every change it
    /// coordinates (the thesis's "fmserver").
    #[arg(long, value_name = "KEY=VALUE")]
    pub fault: Vec<String>,
    /// The cluster key ring: --cluster-key ID:HEX (repeatable) and
    /// --key-file PATH (docs/security.md).
    #[command(flatten)]
    pub keys: daemon_shell::keys::KeyFlags,
    /// Where the ring is kept across restarts (rotated with `msctl keys`);
    /// when the file exists its ring wins over the configured keys.
    #[arg(long, value_name = "PATH")]
    pub keyring_file: Option<PathBuf>,
    /// Allow `msctl fault` to change this mserver's fault interceptor
    /// (testing only).
    #[arg(long)]
    pub allow_faults: bool,
    /// Without a key ring, accept admin changes (leave, fault, keys) from
    /// this network besides loopback (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub admin_from: Vec<String>,
    /// Log format [default: human].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter (tracing's EnvFilter syntax; RUST_LOG wins if set)
    /// [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Serve /metrics, /healthz, /readyz, /v1/... and the status page on
    /// this address, or `off` [default: 127.0.0.1:9200; when that port is
    /// taken, a warning and no endpoint].
    #[arg(long, value_name = "ADDR|off")]
    pub http: Option<String>,
    /// A group above ours, lowest level first (repeatable): `--parent
    /// building-1@239.255.1.1:7301 --parent campus@239.255.1.2:7302`
    /// makes this mserver a candidate parent of our group in building-1,
    /// and of building-1 in campus (docs/hierarchy.md). The flags replace
    /// the file's `[[parent]]` list as a whole.
    #[arg(long, value_name = "NAME@IP:PORT")]
    pub parent: Vec<String>,
    /// When our group records a parent group but has no parent left, its
    /// lowest-rank member becomes one [default: true].
    #[arg(long, value_name = "BOOL")]
    pub auto_parent: Option<bool>,
    /// Most parents a group this mserver founds keeps (1 to 8); extra ones
    /// step down [default: 1].
    #[arg(long, value_name = "N")]
    pub max_parents: Option<u8>,
}

/// The merged settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Group name.
    pub group: String,
    /// Group address (IPv4 multicast).
    pub group_addr: SocketAddr,
    /// UDP listen address.
    pub listen: SocketAddr,
    /// Address in our headers when `listen` is unspecified.
    pub advertise: Option<SocketAddr>,
    /// The mcaster.
    pub mcaster: SocketAddr,
    /// Multicast use.
    pub multicast: MulticastMode,
    /// Interface for multicast.
    pub multicast_interface: Ipv4Addr,
    /// Monitoring interval, ms.
    pub query_interval_ms: u64,
    /// Reply timeout, ms.
    pub reply_timeout_ms: u64,
    /// Retries.
    pub retries: u32,
    /// Flap window, ms.
    pub flap_window_ms: u64,
    /// First hold-down of a flapping member, ms.
    pub hold_down_ms: u64,
    /// Longest hold-down, ms.
    pub hold_down_max_ms: u64,
    /// Crash watch on or off.
    pub crash_watch: bool,
    /// Testing fault: delay before phase II, ms (0: none).
    pub commit_delay_ms: u64,
    /// The cluster key ring, first key signing (empty: none).
    pub cluster_keys: Vec<daemon_shell::keys::KeySpec>,
    /// A file of cluster keys (owner-only), after `cluster_keys`.
    pub key_file: Option<PathBuf>,
    /// Where the ring persists across restarts.
    pub keyring_file: Option<PathBuf>,
    /// Whether `msctl fault` may set faults.
    pub allow_faults: bool,
    /// Networks besides loopback allowed admin changes without a ring.
    pub admin_from: Vec<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// The HTTP endpoint's address, or `off`; `None`: the built-in
    /// default, [`DEFAULT_HTTP`].
    pub http: Option<String>,
    /// The groups above ours, lowest level first.
    pub parent: Vec<ParentSpec>,
    /// Automatic re-parenting.
    pub auto_parent: bool,
    /// Most parents a group we found keeps.
    pub max_parents: u8,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            group: DEFAULT_GROUP.into(),
            group_addr: DEFAULT_GROUP_ADDR,
            listen: DEFAULT_LISTEN,
            advertise: None,
            mcaster: DEFAULT_MCASTER,
            multicast: MulticastMode::Auto,
            multicast_interface: Ipv4Addr::UNSPECIFIED,
            query_interval_ms: 200,
            reply_timeout_ms: 100,
            retries: 2,
            flap_window_ms: 60_000,
            hold_down_ms: 5_000,
            hold_down_max_ms: 300_000,
            crash_watch: true,
            commit_delay_ms: 0,
            cluster_keys: Vec::new(),
            key_file: None,
            keyring_file: None,
            allow_faults: false,
            admin_from: Vec::new(),
            log_format: LogFormat::Human,
            log_level: "info".into(),
            http: None,
            parent: Vec::new(),
            auto_parent: true,
            max_parents: 1,
        }
    }
}

/// Parses one `--fault KEY=VALUE` into `(key, value)`.
fn parse_fault(spec: &str) -> anyhow::Result<(String, String)> {
    let (key, value) = spec.split_once('=').with_context(|| {
        format!("--fault {spec:?}: expected KEY=VALUE, e.g. commit-delay-ms=500")
    })?;
    match key {
        "commit-delay-ms" | "commit_delay_ms" => {
            let ms: u64 = value
                .parse()
                .with_context(|| format!("--fault {spec:?}: {value:?} is not a number of ms"))?;
            Ok(("commit_delay_ms".into(), ms.to_string()))
        }
        other => bail!("--fault {spec:?}: unknown fault {other:?} (known: commit-delay-ms)"),
    }
}

impl Settings {
    /// Merges defaults, the file, the environment `env` (the `MS_*`
    /// variables; `None` for the process environment) and the flags
    /// (`daemon_shell::settings`: unknown keys in the file and misspelt
    /// variables are refused).
    pub fn load(cli: &Cli, env: Option<BTreeMap<String, String>>) -> anyhow::Result<Settings> {
        let mut flags = Overrides::new();
        flags.set("group", cli.group.as_ref());
        flags.set("group_addr", cli.group_addr);
        flags.set("listen", cli.listen);
        flags.set("advertise", cli.advertise);
        flags.set("mcaster", cli.mcaster);
        flags.set("multicast", cli.multicast.map(|m| enum_name(&m)));
        flags.set("multicast_interface", cli.multicast_interface);
        flags.set("query_interval_ms", cli.query_interval_ms);
        flags.set("reply_timeout_ms", cli.reply_timeout_ms);
        flags.set("retries", cli.retries);
        flags.set("flap_window_ms", cli.flap_window_ms);
        flags.set("hold_down_ms", cli.hold_down_ms);
        flags.set("hold_down_max_ms", cli.hold_down_max_ms);
        flags.set("crash_watch", cli.crash_watch);
        flags.set("log_format", cli.log_format.map(|m| enum_name(&m)));
        flags.set("log_level", cli.log_level.as_ref());
        flags.set("http", cli.http.as_ref());
        flags.set_list("cluster_keys", &cli.keys.cluster_key);
        flags.set("key_file", cli.keys.key_file.as_ref().map(|p| p.display()));
        flags.set(
            "keyring_file",
            cli.keyring_file.as_ref().map(|p| p.display()),
        );
        flags.set("allow_faults", cli.allow_faults.then_some(true));
        flags.set_list("admin_from", &cli.admin_from);
        flags.set_list("parent", &cli.parent);
        flags.set("auto_parent", cli.auto_parent);
        flags.set("max_parents", cli.max_parents);
        for spec in &cli.fault {
            let (k, v) = parse_fault(spec)?;
            flags.set(&k, Some(v));
        }
        let s: Settings = daemon_shell::settings::load(
            Sources {
                daemon: "mserver",
                file: cli.config.as_deref(),
                env,
                env_list_keys: &["cluster_keys", "admin_from", "parent"],
            },
            flags,
        )?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !membership::coreset::valid_group_name(&self.group) {
            bail!(
                "group name {:?} must be 1 to 64 characters of A-Z a-z 0-9 . _ -",
                self.group
            );
        }
        match self.group_addr.ip() {
            IpAddr::V4(ip) if ip.is_multicast() => {}
            ip => bail!(
                "group address {} is not an IPv4 multicast address (224.0.0.0/4), e.g. 239.255.70.1:7300",
                ip
            ),
        }
        if self.group_addr.port() == 0 {
            bail!("group address {} needs a port", self.group_addr);
        }
        if self.listen.ip().is_unspecified() && self.advertise.is_none() {
            bail!(
                "listen address {} is unspecified: give --advertise with the address other mservers use",
                self.listen
            );
        }
        if self.listen.port() == 0 {
            bail!(
                "listen address {} needs a fixed port (other mservers and msctl use it)",
                self.listen
            );
        }
        check_timings(
            "",
            self.query_interval_ms,
            self.reply_timeout_ms,
            self.retries,
        )?;
        for (name, value) in [
            ("flap_window_ms", self.flap_window_ms),
            ("hold_down_ms", self.hold_down_ms),
            ("hold_down_max_ms", self.hold_down_max_ms),
        ] {
            if !(1..=3_600_000).contains(&value) {
                bail!("{name} {value} is out of range 1..=3600000 (one hour)");
            }
        }
        if self.hold_down_max_ms < self.hold_down_ms {
            bail!(
                "hold_down_max_ms {} is below hold_down_ms {}",
                self.hold_down_max_ms,
                self.hold_down_ms
            );
        }
        self.admin_networks()?;
        self.start_ring()?;
        if let Some(http) = &self.http {
            daemon_shell::http::parse_http(http)?;
        }
        if !(1..=MAX_PARENTS).contains(&self.max_parents) {
            bail!(
                "max_parents {} is out of range 1..={MAX_PARENTS}",
                self.max_parents
            );
        }
        self.parents()?;
        if self.commit_delay_ms > 600_000 {
            bail!(
                "commit-delay-ms {} is more than 10 minutes",
                self.commit_delay_ms
            );
        }
        Ok(())
    }

    /// The levels above ours, checked: names and addresses valid and all
    /// different along the chain (ours included), at most
    /// [`MAX_LEVEL`] levels, timings in range.
    pub fn parents(&self) -> anyhow::Result<Vec<ParentLevel>> {
        if self.parent.len() >= usize::from(MAX_LEVEL) {
            bail!(
                "{} --parent entries: a chain has at most {MAX_LEVEL} levels",
                self.parent.len()
            );
        }
        let mut names = vec![self.group.clone()];
        let mut addrs = vec![self.group_addr];
        let mut out = Vec::new();
        for (i, spec) in self.parent.iter().enumerate() {
            let level = i + 2;
            let (name, addr, q, r, n) = match spec {
                ParentSpec::Short(text) => {
                    let (name, addr) = text.split_once('@').with_context(|| {
                        format!(
                            "parent {text:?} (level {level}): expected NAME@IP:PORT, e.g. building-1@239.255.1.1:7301"
                        )
                    })?;
                    let addr: SocketAddr = addr.parse().map_err(|_| {
                        anyhow::anyhow!(
                            "parent {text:?} (level {level}): {addr:?} is not an IP:PORT address"
                        )
                    })?;
                    (name.to_string(), addr, None, None, None)
                }
                ParentSpec::Table(t) => (
                    t.name.clone(),
                    t.addr,
                    t.query_interval_ms,
                    t.reply_timeout_ms,
                    t.retries,
                ),
            };
            if !membership::coreset::valid_group_name(&name) {
                bail!(
                    "parent group name {name:?} (level {level}) must be 1 to 64 characters of A-Z a-z 0-9 . _ -"
                );
            }
            match addr.ip() {
                IpAddr::V4(ip) if ip.is_multicast() && addr.port() != 0 => {}
                _ => bail!(
                    "parent group {name} (level {level}): {addr} is not an IPv4 multicast address with a port, e.g. 239.255.1.1:7301"
                ),
            }
            if names.contains(&name) {
                bail!("group {name} appears twice in the chain (--group and --parent must all differ)");
            }
            if addrs.contains(&addr) {
                bail!(
                    "group address {addr} appears twice in the chain (every level needs its own)"
                );
            }
            names.push(name.clone());
            addrs.push(addr);
            let level = ParentLevel {
                group: GroupRef::new(&name, membership::id::NodeId::new(addr))
                    .map_err(|e| anyhow::anyhow!("parent group {name}: {e}"))?,
                query_interval_ms: q.unwrap_or(self.query_interval_ms),
                reply_timeout_ms: r.unwrap_or(self.reply_timeout_ms),
                retries: n.unwrap_or(self.retries),
            };
            check_timings(
                &format!("parent {name} (level {})", i + 2),
                level.query_interval_ms,
                level.reply_timeout_ms,
                level.retries,
            )?;
            out.push(level);
        }
        Ok(out)
    }

    /// The networks of `--admin-from`, checked.
    pub fn admin_networks(&self) -> anyhow::Result<Vec<Cidr>> {
        self.admin_from
            .iter()
            .map(|c| Cidr::parse(c).map_err(|e| anyhow::anyhow!("--admin-from {e}")))
            .collect()
    }

    /// The ring from the configured keys (inline, then the key file).
    pub fn configured_ring(&self) -> anyhow::Result<Option<KeyRing>> {
        daemon_shell::keys::key_ring(&self.cluster_keys, self.key_file.as_deref())
    }

    /// The ring to start with: the key-ring file's if it exists (the ring
    /// as last committed), else the configured one.
    pub fn start_ring(&self) -> anyhow::Result<Option<KeyRing>> {
        if let Some(path) = self.keyring_file.as_deref() {
            if let Some(ring) = daemon_shell::keys::load_keyring_file(path)? {
                return Ok(Some(ring));
            }
        }
        self.configured_ring()
    }

    /// The monitoring interval.
    pub fn query_interval(&self) -> Duration {
        Duration::from_millis(self.query_interval_ms)
    }

    /// The reply timeout.
    pub fn reply_timeout(&self) -> Duration {
        Duration::from_millis(self.reply_timeout_ms)
    }

    /// The commit delay fault, if any.
    pub fn commit_delay(&self) -> Option<Duration> {
        (self.commit_delay_ms > 0).then(|| Duration::from_millis(self.commit_delay_ms))
    }

    /// The HTTP endpoint's address (`None`: off), and whether it is the
    /// built-in default (a port in use is then a warning, not an error).
    pub fn http_addr(&self) -> (Option<std::net::SocketAddr>, bool) {
        match &self.http {
            Some(http) => (daemon_shell::http::parse_http(http).unwrap_or(None), false),
            None => (
                daemon_shell::http::parse_http(DEFAULT_HTTP).unwrap_or(None),
                true,
            ),
        }
    }

    /// The address other mservers know us by.
    pub fn node_addr(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }
}

/// Checks one level's timings; `what` names the level in the message
/// (empty: level 1).
fn check_timings(
    what: &str,
    query_interval_ms: u64,
    reply_timeout_ms: u64,
    retries: u32,
) -> anyhow::Result<()> {
    let of = if what.is_empty() {
        String::new()
    } else {
        format!(" of {what}")
    };
    if !(10..=60_000).contains(&query_interval_ms) {
        bail!("query_interval_ms {query_interval_ms}{of} is out of range 10..=60000");
    }
    if !(1..=60_000).contains(&reply_timeout_ms) {
        bail!("reply_timeout_ms {reply_timeout_ms}{of} is out of range 1..=60000");
    }
    if retries > 100 {
        bail!("retries {retries}{of} is out of range 0..=100");
    }
    Ok(())
}

fn enum_name<T: ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["mserver"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("valid flags")
    }

    fn env(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_alone() {
        let s = Settings::load(&cli(&[]), env(&[])).expect("defaults load");
        assert_eq!(s, Settings::default());
        assert_eq!(s.commit_delay(), None);
        assert_eq!(s.query_interval(), Duration::from_millis(200));
    }

    #[test]
    fn layers_file_env_flags() {
        let dir = std::env::temp_dir().join(format!("mserver-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("m.toml");
        let mut f = std::fs::File::create(&path).expect("create");
        writeln!(
            f,
            "group = \"ops\"\nlisten = \"127.0.0.9:7201\"\nquery_interval_ms = 500\nmulticast = \"off\""
        )
        .expect("write");
        let p = path.to_str().expect("utf-8 path");
        let s = Settings::load(&cli(&["--config", p]), env(&[])).expect("file");
        assert_eq!(s.group, "ops");
        assert_eq!(s.listen, "127.0.0.9:7201".parse().expect("addr"));
        assert_eq!(s.query_interval_ms, 500);
        assert_eq!(s.multicast, MulticastMode::Off);
        let e = env(&[("MS_QUERY_INTERVAL_MS", "400"), ("MS_RETRIES", "5")]);
        let s = Settings::load(&cli(&["--config", p]), e.clone()).expect("env");
        assert_eq!((s.query_interval_ms, s.retries), (400, 5));
        let s = Settings::load(
            &cli(&[
                "--config",
                p,
                "--query-interval-ms",
                "300",
                "--fault",
                "commit-delay-ms=700",
            ]),
            e,
        )
        .expect("flags");
        assert_eq!((s.query_interval_ms, s.retries), (300, 5));
        assert_eq!(s.commit_delay(), Some(Duration::from_millis(700)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_settings_are_errors() {
        let bad = |args: &[&str]| Settings::load(&cli(args), env(&[])).is_err();
        assert!(bad(&["--config", "/nonexistent/x.toml"]));
        assert!(bad(&["--group-addr", "10.0.0.1:7300"]), "not multicast");
        assert!(bad(&["--group-addr", "239.1.1.1:0"]), "no port");
        assert!(bad(&["--group", ""]));
        assert!(bad(&["--group", "bad name with spaces"]));
        assert!(
            bad(&["--listen", "0.0.0.0:7200"]),
            "unspecified without advertise"
        );
        assert!(bad(&["--listen", "127.0.0.1:0"]), "ephemeral port");
        assert!(bad(&["--query-interval-ms", "0"]));
        assert!(bad(&["--fault", "commit-delay-ms"]));
        assert!(bad(&["--fault", "commit-delay-ms=soon"]));
        assert!(bad(&["--fault", "explode=1"]));
        assert!(bad(&["--hold-down-ms", "0"]));
        assert!(bad(&[
            "--hold-down-ms",
            "9000",
            "--hold-down-max-ms",
            "1000"
        ]));
        assert!(bad(&["--flap-window-ms", "99999999"]));
        let ok = Settings::load(&cli(&["--hold-down-ms", "2000"]), env(&[])).expect("valid");
        assert_eq!((ok.hold_down_ms, ok.hold_down_max_ms), (2000, 300_000));
        assert!(Settings::load(&cli(&[]), env(&[("MS_RETRIES", "many")])).is_err());
        assert!(Cli::try_parse_from(["mserver", "--listen", "nope"]).is_err());
    }

    #[test]
    fn parents_from_flags_file_and_env() {
        let s = Settings::load(
            &cli(&[
                "--group",
                "dept-a",
                "--parent",
                "building-1@239.255.1.1:7301",
                "--parent",
                "campus@239.255.1.2:7302",
                "--max-parents",
                "2",
                "--auto-parent",
                "false",
            ]),
            env(&[]),
        )
        .expect("valid chain");
        let p = s.parents().expect("parents");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].group.to_string(), "building-1@239.255.1.1:7301");
        assert_eq!(p[1].group.name, "campus");
        assert_eq!((p[1].query_interval_ms, p[1].retries), (200, 2));
        assert_eq!((s.max_parents, s.auto_parent), (2, false));

        let dir = std::env::temp_dir().join(format!("mserver-parents-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("m.toml");
        std::fs::write(
            &path,
            "group = \"dept-a\"\n\n[[parent]]\nname = \"building-1\"\naddr = \"239.255.1.1:7301\"\nquery_interval_ms = 500\nretries = 3\n\n[[parent]]\nname = \"campus\"\naddr = \"239.255.1.2:7302\"\n",
        )
        .expect("write");
        let file = path.to_str().expect("utf-8 path");
        let s = Settings::load(&cli(&["--config", file]), env(&[])).expect("file");
        let p = s.parents().expect("parents");
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].query_interval_ms, p[0].reply_timeout_ms, p[0].retries),
            (500, 100, 3)
        );
        assert_eq!(p[1].query_interval_ms, 200);
        // The flags replace the file's list as a whole.
        let s = Settings::load(
            &cli(&["--config", file, "--parent", "other@239.255.1.9:7309"]),
            env(&[]),
        )
        .expect("flags over file");
        let p = s.parents().expect("parents");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].group.name, "other");
        // The environment, comma-separated.
        let s = Settings::load(
            &cli(&[]),
            env(&[("MS_PARENT", "b@239.255.1.1:7301,c@239.255.1.2:7302")]),
        )
        .expect("env");
        assert_eq!(s.parents().expect("parents").len(), 2);
        // A table with an unknown key is refused.
        std::fs::write(
            &path,
            "[[parent]]\nname = \"b\"\naddr = \"239.255.1.1:7301\"\nqueryinterval = 5\n",
        )
        .expect("write");
        assert!(Settings::load(&cli(&["--config", file]), env(&[])).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_chains_are_errors() {
        let err = |args: &[&str]| {
            Settings::load(&cli(args), env(&[]))
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        };
        let e = err(&["--group", "a", "--parent", "a@239.255.1.1:7301"]);
        assert!(e.contains("appears twice"), "{e}");
        let e = err(&[
            "--parent",
            "b@239.255.1.1:7301",
            "--parent",
            "b@239.255.1.2:7302",
        ]);
        assert!(e.contains("appears twice"), "{e}");
        let e = err(&["--parent", "b@239.255.70.1:7300"]);
        assert!(e.contains("appears twice"), "same address as level 1: {e}");
        let e = err(&["--parent", "b@10.0.0.1:7301"]);
        assert!(e.contains("not an IPv4 multicast"), "{e}");
        let e = err(&["--parent", "b@239.255.1.1:0"]);
        assert!(e.contains("not an IPv4 multicast"), "{e}");
        let e = err(&["--parent", "no-at-sign"]);
        assert!(e.contains("NAME@IP:PORT"), "{e}");
        let e = err(&["--parent", "bad name@239.255.1.1:7301"]);
        assert!(e.contains("must be 1 to 64"), "{e}");
        let e = err(&["--max-parents", "0"]);
        assert!(e.contains("max_parents"), "{e}");
        let e = err(&["--max-parents", "9"]);
        assert!(e.contains("max_parents"), "{e}");
        let many: Vec<String> = (0..16)
            .map(|i| format!("g{i}@239.255.9.{}:7301", i + 1))
            .collect();
        let mut args = Vec::new();
        for m in &many {
            args.push("--parent");
            args.push(m.as_str());
        }
        let e = err(&args);
        assert!(e.contains("at most"), "{e}");
    }
}
