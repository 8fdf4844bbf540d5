//! SIGHUP: reload what can change without a restart (issue 16, item 7).
//!
//! Every daemon calls [`on_hangup`] when SIGHUP arrives; it runs, in the
//! order they were registered, the reload functions of [`register`], and
//! logs what each did (one line each). Today: the log level
//! ([`register_log_level`]: the daemon's settings are loaded again, file
//! and environment, and the new filter replaces the old one through the
//! `tracing_subscriber` reload layer that [`init_logging`] installs). Key
//! files register their own reload the same way.
//!
//! The log filter follows the startup rule: `RUST_LOG`, when set, wins over
//! the configured level. Actix's own server lines are kept at `warn`
//! unless the filter names `actix_server`.

use membership::runtime::logging::LogFormat;
use std::sync::{Mutex, OnceLock};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// A reload function: `Ok(what it did)` or `Err(why not)`, one line each.
type Reloader = Box<dyn Fn() -> Result<String, String> + Send>;

static RELOADERS: Mutex<Vec<(String, Reloader)>> = Mutex::new(Vec::new());
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// The filter for `level` (`RUST_LOG` wins when set), with actix's server
/// lines at `warn` unless named.
///
/// # Errors
///
/// An invalid filter: one line for the operator.
pub fn filter(level: &str) -> Result<EnvFilter, String> {
    let base = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => v,
        _ => level.to_string(),
    };
    let full = if base.contains("actix_server") {
        base.clone()
    } else {
        format!("{base},actix_server=warn")
    };
    EnvFilter::try_new(&full).map_err(|e| format!("invalid log filter {base:?}: {e}"))
}

/// Installs the global subscriber on stderr in `format`, filtered by
/// [`filter`]`(level)` behind a reload layer ([`set_log_level`]).
///
/// # Errors
///
/// An invalid filter, or a subscriber already installed: one line.
pub fn init_logging(level: &str, format: LogFormat) -> Result<(), String> {
    let (layer, handle) = reload::Layer::new(filter(level)?);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let installed = match format {
        LogFormat::Human => Registry::default().with(layer).with(fmt).try_init(),
        LogFormat::Json => Registry::default().with(layer).with(fmt.json()).try_init(),
    };
    installed.map_err(|e| format!("cannot install the logger: {e}"))?;
    let _ = FILTER.set(handle);
    Ok(())
}

/// Replaces the log filter with [`filter`]`(level)`.
///
/// # Errors
///
/// An invalid filter (the old one stays), or no reloadable logger.
pub fn set_log_level(level: &str) -> Result<(), String> {
    let f = filter(level)?;
    let handle = FILTER
        .get()
        .ok_or("the logger was not installed with a reload layer")?;
    handle
        .reload(f)
        .map_err(|e| format!("cannot change the log filter: {e}"))
}

/// Registers a reload function for SIGHUP, named `what` in the log.
pub fn register(what: &str, f: impl Fn() -> Result<String, String> + Send + 'static) {
    let mut list = RELOADERS.lock().unwrap_or_else(|p| p.into_inner());
    list.push((what.to_string(), Box::new(f)));
}

/// Registers the log level's reload: `load` reads the daemon's settings
/// again (file and environment; flags still win) and answers the level.
pub fn register_log_level(load: impl Fn() -> anyhow::Result<String> + Send + 'static) {
    register("log level", move || {
        let level = load().map_err(|e| format!("{e:#}"))?;
        set_log_level(&level)?;
        Ok(format!("log level {level:?}"))
    });
}

/// Runs every registered reload (SIGHUP), logging one line each; answers
/// `(what, result)` in order.
pub fn on_hangup() -> Vec<(String, Result<String, String>)> {
    let list = RELOADERS.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::new();
    for (what, f) in list.iter() {
        let result = f();
        match &result {
            Ok(done) => tracing::warn!(what = %what, "SIGHUP: reloaded {done}"),
            Err(e) => {
                tracing::warn!(what = %what, error = %e, "SIGHUP: cannot reload the {what}; keeping the old one")
            }
        }
        out.push((what.clone(), result));
    }
    if list.is_empty() {
        tracing::info!("SIGHUP: nothing to reload");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_keep_actix_quiet_and_refuse_nonsense_in_one_line() {
        if std::env::var_os("RUST_LOG").is_some() {
            return;
        }
        let f = filter("info").expect("valid");
        assert!(f.to_string().contains("actix_server=warn"), "{f}");
        let f = filter("debug,actix_server=info").expect("valid");
        assert!(!f.to_string().contains("actix_server=warn"), "{f}");
        let e = filter("=[bad").expect_err("invalid");
        assert!(
            e.starts_with("invalid log filter") && !e.contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn reloads_run_in_order_and_report_each() {
        register("first", || Ok("one".into()));
        register("second", || Err("no file".into()));
        let done = on_hangup();
        let first = done
            .iter()
            .position(|(w, _)| w == "first")
            .expect("first ran");
        let second = done
            .iter()
            .position(|(w, _)| w == "second")
            .expect("second ran");
        assert!(first < second);
        assert_eq!(done[second].1, Err("no file".into()));
        // No reloadable logger in this test process.
        assert!(set_log_level("info").is_err());
    }
}
