//! Logging setup shared by the daemons (`mcaster`, `mserver`, and the
//! member-interface): the `--log-format` choice and the `tracing`
//! subscriber on stderr, filtered by `RUST_LOG` or the configured level
//! (DESIGN.md section 7).

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// Log format on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber: `RUST_LOG` if set, otherwise `level`
/// (an `EnvFilter` directive such as `info` or `mserver=debug`), in
/// `format`, with colours only on a terminal. The error is one line for
/// the operator (an invalid filter).
pub fn init_logging(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .map_err(|e| format!("invalid log filter {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let installed = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| format!("cannot install the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_filter_is_one_line() {
        // RUST_LOG would take precedence; the test only runs the parse.
        if std::env::var_os("RUST_LOG").is_some() {
            return;
        }
        let e = init_logging("=[bad", LogFormat::Human).unwrap_err();
        assert!(e.starts_with("invalid log filter"), "{e}");
        assert!(!e.contains('\n'));
    }
}
