//! The MI daemon's command line (DESIGN.md section 6; seed 003, section
//! II.B.4): which mservers to attach to, where the Unix socket goes and
//! with what mode, the MI's UDP address for the mserver link, its host
//! name, and the server's bounds. Every invalid value is refused by clap
//! with one line naming the option.

use super::server::{check_host, ServerConfig, DEFAULT_MAX_CLIENTS, DEFAULT_REQUEST_TIMEOUT};
use clap::{Args as ClapArgs, ValueEnum};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Most a request timeout may be, in milliseconds (one hour).
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 3_600_000;
/// Largest `--max-clients` accepted.
pub const MAX_MAX_CLIENTS: usize = 1 << 20;
/// The socket's file name in its default directory.
pub const SOCKET_NAME: &str = "member-interface.sock";

/// How the daemon writes its logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The daemon's options (flatten into the binary's parser, or parse with
/// `parse_from`-style helpers of a `clap::Parser` wrapper).
#[derive(Clone, Debug, ClapArgs)]
pub struct Args {
    /// An mserver to attach to (IP:PORT); repeat it for more, tried in
    /// order (default: the mserver's own default address).
    #[arg(
        long = "mserver",
        value_name = "ADDR",
        default_value = "127.0.0.1:7200"
    )]
    pub mservers: Vec<SocketAddr>,
    /// The Unix socket applications connect to [default:
    /// $XDG_RUNTIME_DIR/member-interface.sock, else
    /// /tmp/member-interface.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The MI's UDP address for the mserver link.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The host name members joined here carry [default: the machine's
    /// host name, else "localhost"].
    #[arg(long, value_name = "NAME", value_parser = parse_host)]
    pub host: Option<String>,
    /// The socket's mode, in octal (at most 777).
    #[arg(long, value_name = "OCTAL", default_value = "660", value_parser = parse_mode)]
    pub socket_mode: u32,
    /// Local connections served at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CLIENTS, value_parser = parse_max_clients)]
    pub max_clients: usize,
    /// How long a request waits for the mservers, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_REQUEST_TIMEOUT.as_millis() as u64, value_parser = parse_timeout_ms)]
    pub request_timeout_ms: u64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

/// Parses an octal socket mode such as `660` or `0o660`, at most `0o777`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("{s:?} is not an octal mode (like 660)"))?;
    if mode > 0o777 {
        return Err(format!("mode {s} is above 777"));
    }
    Ok(mode)
}

fn parse_max_clients(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of clients"))?;
    if n == 0 || n > MAX_MAX_CLIENTS {
        return Err(format!("must be from 1 to {MAX_MAX_CLIENTS}"));
    }
    Ok(n)
}

fn parse_timeout_ms(s: &str) -> Result<u64, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of milliseconds"))?;
    if n == 0 || n > MAX_REQUEST_TIMEOUT_MS {
        return Err(format!("must be from 1 to {MAX_REQUEST_TIMEOUT_MS}"));
    }
    Ok(n)
}

fn parse_host(s: &str) -> Result<String, String> {
    check_host(s)?;
    Ok(s.to_owned())
}

/// The default socket path given the value of `XDG_RUNTIME_DIR`.
pub fn default_socket(xdg_runtime_dir: Option<OsString>) -> PathBuf {
    match xdg_runtime_dir {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join(SOCKET_NAME),
        _ => PathBuf::from("/tmp").join(SOCKET_NAME),
    }
}

/// The host name in `contents` (of `/proc/sys/kernel/hostname`), or
/// `"localhost"` if there is no valid one.
pub fn host_from(contents: Option<&str>) -> String {
    match contents.map(str::trim) {
        Some(h) if check_host(h).is_ok() => h.to_owned(),
        _ => "localhost".to_owned(),
    }
}

/// The machine's host name, or `"localhost"`.
pub fn machine_host() -> String {
    let contents = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    host_from(contents.as_deref())
}

impl Args {
    /// The socket path, the default resolved from the environment.
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| default_socket(std::env::var_os("XDG_RUNTIME_DIR")))
    }

    /// The host name, the default read from the machine.
    pub fn host_name(&self) -> String {
        self.host.clone().unwrap_or_else(machine_host)
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The server's configuration (other fields at their defaults).
    pub fn server_config(&self) -> ServerConfig {
        let mut c = ServerConfig::new(self.socket_path(), self.host_name());
        c.mode = self.socket_mode;
        c.max_clients = self.max_clients;
        c.request_timeout = self.request_timeout();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(args: &[&str]) -> Result<Args, String> {
        Cli::try_parse_from(std::iter::once("member-interface").chain(args.iter().copied()))
            .map(|c| c.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let a = parse(&["--mserver", "127.0.0.1:7000"]).expect("parse");
        assert_eq!(a.mservers, vec!["127.0.0.1:7000".parse().expect("addr")]);
        assert_eq!(a.socket, None);
        assert_eq!(a.listen, "127.0.0.1:0".parse().expect("addr"));
        assert_eq!(a.socket_mode, 0o660);
        assert_eq!(a.max_clients, 1024);
        assert_eq!(a.request_timeout(), Duration::from_secs(10));
        assert_eq!(a.log_format, LogFormat::Human);
        let c = a.server_config();
        assert_eq!(c.mode, 0o660);
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        // Without --mserver: the mserver's own default address.
        let a = parse(&[]).expect("parse");
        assert_eq!(a.mservers, vec!["127.0.0.1:7200".parse().expect("addr")]);
    }

    #[test]
    fn every_option() {
        let a = parse(&[
            "--mserver",
            "127.0.0.1:7000",
            "--mserver",
            "127.0.0.2:7001",
            "--socket",
            "/run/x.sock",
            "--listen",
            "127.0.0.1:9000",
            "--host",
            "node-7",
            "--socket-mode",
            "0o600",
            "--max-clients",
            "3",
            "--request-timeout-ms",
            "250",
            "--log-format",
            "json",
        ])
        .expect("parse");
        assert_eq!(a.mservers.len(), 2);
        assert_eq!(a.mservers[1], "127.0.0.2:7001".parse().expect("addr"));
        assert_eq!(a.socket_path(), PathBuf::from("/run/x.sock"));
        assert_eq!(a.host_name(), "node-7");
        assert_eq!(a.socket_mode, 0o600);
        assert_eq!(a.log_format, LogFormat::Json);
        let c = a.server_config();
        assert_eq!(c.max_clients, 3);
        assert_eq!(c.request_timeout, Duration::from_millis(250));
        assert_eq!(c.host, "node-7");
        assert_eq!(c.socket, PathBuf::from("/run/x.sock"));
    }

    #[test]
    fn invalid_values_are_one_line_errors() {
        let base = ["--mserver", "127.0.0.1:7000"];
        let cases: &[(&[&str], &str)] = &[
            (&["--mserver", "nowhere"], "--mserver"),
            (&["--socket-mode", "888"], "octal"),
            (&["--socket-mode", "1777"], "above 777"),
            (&["--max-clients", "0"], "from 1"),
            (&["--max-clients", "many"], "not a number"),
            (&["--request-timeout-ms", "0"], "from 1"),
            (&["--listen", "nowhere"], "--listen"),
            (&["--host", "a b"], "host name"),
            (&["--host", ""], "empty"),
            (&["--log-format", "xml"], "--log-format"),
        ];
        for (extra, needle) in cases {
            let args: Vec<&str> = if extra.is_empty() {
                Vec::new()
            } else {
                base.iter().chain(extra.iter()).copied().collect()
            };
            let err = parse(&args).expect_err("must be refused");
            assert!(err.contains(needle), "{extra:?}: {err}");
            // The cause is on the first line (clap adds a usage hint).
            let first = err.lines().next().unwrap_or_default();
            assert!(first.starts_with("error:"), "{extra:?}: {err}");
        }
        assert!(parse(&["--mserver", "localhost"]).is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert_eq!(parse_mode("0777"), Ok(0o777));
        assert_eq!(parse_mode("0"), Ok(0));
        assert!(parse_mode("1000").is_err());
        assert!(parse_mode("-1").is_err());
        assert!(parse_mode("").is_err());
        assert!(parse_mode("99999999999999999999").is_err());
    }

    #[test]
    fn default_paths_and_hosts() {
        assert_eq!(
            default_socket(Some("/run/user/1000".into())),
            PathBuf::from("/run/user/1000/member-interface.sock")
        );
        assert_eq!(
            default_socket(None),
            PathBuf::from("/tmp/member-interface.sock")
        );
        assert_eq!(
            default_socket(Some("".into())),
            PathBuf::from("/tmp/member-interface.sock")
        );
        assert_eq!(host_from(Some("box-1\n")), "box-1");
        assert_eq!(host_from(Some("  \n")), "localhost");
        assert_eq!(host_from(None), "localhost");
        assert!(check_host(&machine_host()).is_ok());
    }
}
