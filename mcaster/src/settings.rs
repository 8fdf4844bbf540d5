//! The mcaster's settings (DESIGN.md section 7): built-in defaults < TOML
//! file (`--config`) < environment (`MS_*`) < command-line flags.

use anyhow::bail;
use clap::{Parser, ValueEnum};
use daemon_shell::settings::{Overrides, Sources};
use membership::wire::KeyRing;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

pub use daemon_shell::keys::KeySpec;

/// Whether the mcaster uses IP multicast itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MulticastMode {
    /// Probe at startup: use multicast if a probe datagram comes back.
    Auto,
    /// Use multicast without probing (a group that cannot be joined is logged).
    On,
    /// Unicast only: multicast members are refused with `NEG_JOIN`.
    Off,
}

pub use membership::runtime::logging::LogFormat;

/// `mcaster`: the Membership Service's multicast emulator.
///
/// Members on hosts or LANs without IP multicast register their groups
/// with JOIN_GROUP (refreshed every second) and send group traffic to the
/// mcaster, which relays every datagram unchanged to the other members
/// (Kostrivas 1995, section IV.A). With a cluster key ring (--cluster-key,
/// cluster_keys, MS_CLUSTER_KEYS) it verifies every datagram it receives
/// and signs its own answers; without one it drops signed datagrams.
/// Settings: built-in defaults < TOML file (--config) < environment
/// (MS_LISTEN, MS_MEMBER_TTL_MS, MS_CLUSTER_KEYS, ...) < flags. SIGHUP
/// reloads the cluster key ring (key rotation without a restart).
#[derive(Debug, Parser)]
#[command(name = "mcaster", version)]
pub struct Cli {
    /// UDP address to listen on, where members send [default: 127.0.0.1:7100].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// A TOML file with any of the settings below (keys as the long flags,
    /// with `_` for `-`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The address in our headers when --listen is 0.0.0.0.
    #[arg(long, value_name = "ADDR")]
    pub advertise: Option<SocketAddr>,
    /// Use IP multicast: probe at startup (auto), always (on), never (off)
    /// [default: auto].
    #[arg(long, value_enum)]
    pub multicast: Option<MulticastMode>,
    /// Interface address for multicast: class D joins, and the class D
    /// copies sent (IP_MULTICAST_IF; 0.0.0.0: the kernel's choice by
    /// routing table) [default: 0.0.0.0].
    #[arg(long, value_name = "IP")]
    pub multicast_interface: Option<Ipv4Addr>,
    /// TTL of the class D copies sent (1: never beyond the local network)
    /// [default: 1].
    #[arg(long, value_name = "N")]
    pub multicast_ttl: Option<u32>,
    /// Loop the class D copies back to sockets on this host that joined the
    /// group (needed for mc members on the mcaster's own host; the
    /// mcaster drops its own copies) [default: true].
    #[arg(long, value_name = "BOOL")]
    pub multicast_loop: Option<bool>,
    /// The cluster key ring: --cluster-key ID:HEX (repeatable) and
    /// --key-file PATH.
    #[command(flatten)]
    pub keys: daemon_shell::keys::KeyFlags,
    /// Keep the cluster key ring in this file (mode 0600): the ring the
    /// registered mservers hand over after `msctl keys` (and a ring SIGHUP
    /// reloads) is written there; when the file exists at startup its ring
    /// wins over the configured keys.
    #[arg(long, value_name = "PATH")]
    pub keyring_file: Option<PathBuf>,
    /// A member not refreshed for this long is removed [default: 3000].
    #[arg(long, value_name = "MS")]
    pub member_ttl_ms: Option<u64>,
    /// Most groups served [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_groups: Option<usize>,
    /// Most members of one group [default: 256].
    #[arg(long, value_name = "N")]
    pub max_members: Option<usize>,
    /// Seconds between two counter summaries in the log (0: none)
    /// [default: 10].
    #[arg(long, value_name = "SECS")]
    pub summary_interval_secs: Option<u64>,
    /// Log format [default: human].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter (tracing's EnvFilter syntax; RUST_LOG wins if set)
    /// [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Serve /metrics, /healthz, /readyz and /v1/status on this address
    /// [default: off].
    #[arg(long, value_name = "ADDR|off")]
    pub http: Option<String>,
}

/// The merged settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// The address in our headers when `listen` is unspecified.
    pub advertise: Option<SocketAddr>,
    /// Multicast use.
    pub multicast: MulticastMode,
    /// Interface for multicast (joins and class D copies).
    pub multicast_interface: Ipv4Addr,
    /// TTL of the class D copies.
    pub multicast_ttl: u32,
    /// Loopback of the class D copies.
    pub multicast_loop: bool,
    /// The cluster key ring, first key signing (empty: no authentication).
    #[serde(default)]
    pub cluster_keys: Vec<KeySpec>,
    /// A file of cluster keys (owner-only), after `cluster_keys`.
    pub key_file: Option<PathBuf>,
    /// Where the ring is kept across restarts (the mservers' rotations).
    pub keyring_file: Option<PathBuf>,
    /// Member expiry, in milliseconds.
    pub member_ttl_ms: u64,
    /// Bound on groups.
    pub max_groups: usize,
    /// Bound on members per group.
    pub max_members: usize,
    /// Seconds between summaries (0: none).
    pub summary_interval_secs: u64,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// The HTTP endpoint (`/metrics`, `/healthz`, `/readyz`,
    /// `/v1/status`), or `off`/`None`.
    pub http: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 7100)),
            advertise: None,
            multicast: MulticastMode::Auto,
            multicast_interface: Ipv4Addr::UNSPECIFIED,
            multicast_ttl: 1,
            multicast_loop: true,
            cluster_keys: Vec::new(),
            key_file: None,
            keyring_file: None,
            member_ttl_ms: 3000,
            max_groups: membership::mcaster::DEFAULT_MAX_GROUPS,
            max_members: membership::mcaster::DEFAULT_MAX_MEMBERS,
            summary_interval_secs: 10,
            log_format: LogFormat::Human,
            log_level: "info".into(),
            http: None,
        }
    }
}

impl Settings {
    /// Merges defaults, the file, the environment `env` (the `MS_*`
    /// variables; pass `None` for the process environment) and the flags
    /// (`daemon_shell::settings`: unknown keys in the file and misspelt
    /// variables are refused).
    pub fn load(cli: &Cli, env: Option<BTreeMap<String, String>>) -> anyhow::Result<Settings> {
        let mut flags = Overrides::new();
        flags.set("listen", cli.listen);
        flags.set("advertise", cli.advertise);
        flags.set("multicast", cli.multicast.map(|m| enum_name(&m)));
        flags.set("multicast_interface", cli.multicast_interface);
        flags.set("multicast_ttl", cli.multicast_ttl);
        flags.set("multicast_loop", cli.multicast_loop);
        flags.set("member_ttl_ms", cli.member_ttl_ms);
        flags.set("max_groups", cli.max_groups);
        flags.set("max_members", cli.max_members);
        flags.set("summary_interval_secs", cli.summary_interval_secs);
        flags.set("log_format", cli.log_format.map(|m| enum_name(&m)));
        flags.set("log_level", cli.log_level.as_ref());
        flags.set("http", cli.http.as_ref());
        flags.set_list("cluster_keys", &cli.keys.cluster_key);
        flags.set("key_file", cli.keys.key_file.as_ref().map(|p| p.display()));
        flags.set(
            "keyring_file",
            cli.keyring_file.as_ref().map(|p| p.display()),
        );
        let s: Settings = daemon_shell::settings::load(
            Sources {
                daemon: "mcaster",
                file: cli.config.as_deref(),
                env,
                env_list_keys: &["cluster_keys"],
            },
            flags,
        )?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(http) = &self.http {
            daemon_shell::http::parse_http(http)?;
        }
        if self.member_ttl_ms == 0 {
            bail!("member_ttl_ms must be at least 1");
        }
        if self.max_groups == 0 || self.max_members == 0 {
            bail!("max_groups and max_members must be at least 1");
        }
        if self.multicast_ttl == 0 || self.multicast_ttl > 255 {
            bail!("multicast_ttl must be 1-255");
        }
        self.key_ring()?;
        if self.listen.ip().is_unspecified() && self.advertise.is_none() {
            bail!(
                "listen address {} is unspecified: give --advertise with the address members use",
                self.listen
            );
        }
        Ok(())
    }
}

impl Settings {
    /// The cluster key ring (`None`: no keys configured, no
    /// authentication). Errors name the key by position and id, never its
    /// secret.
    pub fn key_ring(&self) -> anyhow::Result<Option<KeyRing>> {
        daemon_shell::keys::key_ring(&self.cluster_keys, self.key_file.as_deref())
    }

    /// The ring to start with: the key-ring file's if it exists, else
    /// [`Settings::key_ring`].
    pub fn start_ring(&self) -> anyhow::Result<Option<KeyRing>> {
        if let Some(path) = self.keyring_file.as_deref() {
            if let Some(ring) = daemon_shell::keys::load_keyring_file(path)? {
                return Ok(Some(ring));
            }
        }
        self.key_ring()
    }
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
        let mut all = vec!["mcaster"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap()
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
        let s = Settings::load(&cli(&[]), env(&[])).unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn layers_file_env_flags() {
        let dir = std::env::temp_dir().join(format!("mcaster-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.toml");
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(
            f,
            "listen = \"127.0.0.9:7200\"\nmember_ttl_ms = 5000\nmax_groups = 7\nmulticast = \"off\""
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let s = Settings::load(&cli(&["--config", p]), env(&[])).unwrap();
        assert_eq!(s.listen, "127.0.0.9:7200".parse().unwrap());
        assert_eq!(s.member_ttl_ms, 5000);
        assert_eq!(s.multicast, MulticastMode::Off);
        // Environment over file.
        let e = env(&[("MS_MEMBER_TTL_MS", "4000"), ("MS_MAX_GROUPS", "9")]);
        let s = Settings::load(&cli(&["--config", p]), e.clone()).unwrap();
        assert_eq!((s.member_ttl_ms, s.max_groups), (4000, 9));
        // Flags over environment.
        let s = Settings::load(&cli(&["--config", p, "--member-ttl-ms", "2000"]), e).unwrap();
        assert_eq!((s.member_ttl_ms, s.max_groups), (2000, 9));
        let _ = std::fs::remove_dir_all(&dir);
    }

    const K1: &str = "1:5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
    const K2: &str = "2:7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c";

    #[test]
    fn cluster_keys_from_file_env_and_flags() {
        let ids = |s: &Settings| -> Vec<u8> {
            let ring = s.key_ring().unwrap();
            match ring {
                None => vec![],
                Some(r) => [1u8, 2, 3]
                    .into_iter()
                    .filter(|i| r.key(*i).is_some())
                    .collect(),
            }
        };
        let signing = |s: &Settings| s.key_ring().unwrap().map(|r| r.signing_key().id());
        let s = Settings::load(&cli(&[]), env(&[])).unwrap();
        assert_eq!(s.key_ring().unwrap(), None);
        // The environment: comma-separated, first signs.
        let e = env(&[("MS_CLUSTER_KEYS", &format!("{K2},{K1}"))]);
        let s = Settings::load(&cli(&[]), e.clone()).unwrap();
        assert_eq!((ids(&s), signing(&s)), (vec![1, 2], Some(2)));
        // An empty variable is no variable.
        let s = Settings::load(&cli(&[]), env(&[("MS_CLUSTER_KEYS", "")])).unwrap();
        assert_eq!(s.key_ring().unwrap(), None);
        // A single key in the environment is a list of one.
        let s = Settings::load(&cli(&[]), env(&[("MS_CLUSTER_KEYS", K1)])).unwrap();
        assert_eq!((ids(&s), signing(&s)), (vec![1], Some(1)));
        // Flags replace the environment's list.
        let s = Settings::load(&cli(&["--cluster-key", K1]), e).unwrap();
        assert_eq!((ids(&s), signing(&s)), (vec![1], Some(1)));
        let s =
            Settings::load(&cli(&["--cluster-key", K1, "--cluster-key", K2]), env(&[])).unwrap();
        assert_eq!((ids(&s), signing(&s)), (vec![1, 2], Some(1)));
        // The file: a TOML array.
        let dir = std::env::temp_dir().join(format!("mcaster-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.toml");
        std::fs::write(&path, format!("cluster_keys = [\"{K2}\"]\n")).unwrap();
        let p = path.to_str().unwrap();
        let s = Settings::load(&cli(&["--config", p]), env(&[])).unwrap();
        assert_eq!((ids(&s), signing(&s)), (vec![2], Some(2)));
        let _ = std::fs::remove_dir_all(&dir);
        // Secrets never show in Debug output.
        assert!(!format!("{s:?}").contains("7c7c"), "{s:?}");
    }

    #[test]
    fn bad_cluster_keys_are_errors_without_secrets() {
        for bad in [
            "1:5e5e",                             // too short
            "0:5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e", // id 0
            "x:5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e", // not an id
            "1:zz5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e", // not hex
        ] {
            let e = Settings::load(&cli(&["--cluster-key", bad]), env(&[])).unwrap_err();
            let msg = format!("{e:#}");
            assert!(msg.contains("cluster key 1"), "{msg}");
            assert!(!msg.contains("5e5e"), "secret in {msg}");
        }
        let e = Settings::load(&cli(&["--cluster-key", K1, "--cluster-key", K1]), env(&[]))
            .unwrap_err();
        assert!(format!("{e:#}").contains("twice"), "{e:#}");
        assert!(Settings::load(&cli(&["--multicast-ttl", "0"]), env(&[])).is_err());
        let s = Settings::load(
            &cli(&["--multicast-ttl", "4", "--multicast-loop", "false"]),
            env(&[]),
        )
        .unwrap();
        assert_eq!((s.multicast_ttl, s.multicast_loop), (4, false));
    }

    #[test]
    fn bad_settings_are_errors() {
        assert!(Settings::load(&cli(&["--config", "/nonexistent/x.toml"]), env(&[])).is_err());
        assert!(Settings::load(&cli(&[]), env(&[("MS_MAX_GROUPS", "many")])).is_err());
        assert!(Settings::load(&cli(&["--member-ttl-ms", "0"]), env(&[])).is_err());
        assert!(Settings::load(&cli(&["--listen", "0.0.0.0:7100"]), env(&[])).is_err());
        assert!(Cli::try_parse_from(["mcaster", "--listen", "nope"]).is_err());
    }
}
