//! Settings layering for the daemons: built-in defaults < TOML file
//! (`--config`) < environment (`MS_*`) < command-line flags, with the
//! `config` crate.
//!
//! Mistakes do not pass silently. Every key of the file must be a setting
//! of the daemon reading it (`lisen = ...` is refused, with the nearest
//! known key as a hint). The `MS_*` namespace is shared by the mserver and
//! the mcaster, so a variable that is not a setting of this daemon is
//! refused only when it looks like a misspelling of one (`MS_LISEN`); others
//! belong to the other daemon and are ignored. Errors name the file as the
//! user gave it. Every error is one line; the daemons exit with
//! [`crate::exit::USAGE`] on it.

use anyhow::{bail, Context as _};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The environment variables' prefix (`MS_GROUP`, `MS_LISTEN`, ...).
pub const ENV_PREFIX: &str = "MS";

/// Where a daemon's settings come from, below the flags.
#[derive(Debug)]
pub struct Sources<'a> {
    /// The daemon's name, for messages (`mserver`).
    pub daemon: &'a str,
    /// The TOML file (`--config`), as the user gave it.
    pub file: Option<&'a Path>,
    /// The environment; `None` reads the process's. Only `MS_*` variables
    /// are looked at.
    pub env: Option<BTreeMap<String, String>>,
    /// Keys whose environment value is a comma-separated list
    /// (`MS_CLUSTER_KEYS=1:ab..,2:cd..`).
    pub env_list_keys: &'a [&'a str],
}

/// The command-line flags that were given, as overrides of the layers
/// below (a flag not given is not set, so the file or environment keep
/// their say).
#[derive(Debug, Default)]
pub struct Overrides(Vec<(String, config::Value)>);

impl Overrides {
    /// No overrides yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` when `value` is given.
    pub fn set(&mut self, key: &str, value: Option<impl ToString>) {
        if let Some(v) = value {
            self.0
                .push((key.to_string(), config::Value::from(v.to_string())));
        }
    }

    /// Sets the list `key` when `values` is not empty.
    pub fn set_list(&mut self, key: &str, values: &[String]) {
        if !values.is_empty() {
            self.0
                .push((key.to_string(), config::Value::from(values.to_vec())));
        }
    }
}

/// Loads the settings `T` from its [`Default`], the file, the environment
/// and `flags`, in that order of precedence (the flags win). `T`'s fields
/// (as serialized) are the known keys. `T` should carry
/// `#[serde(default)]`: the `config` crate drops empty lists of the
/// defaults.
pub fn load<T>(sources: Sources<'_>, flags: Overrides) -> anyhow::Result<T>
where
    T: Serialize + DeserializeOwned + Default,
{
    let known = known_keys(&T::default())?;
    let defaults = config::Config::try_from(&T::default()).context("built-in defaults")?;
    let mut builder = config::Config::builder().add_source(defaults.clone());
    if let Some(path) = sources.file {
        let file = read_file(path, &known)?;
        // The file alone over the defaults first, so that a bad value in
        // it is reported as the file's.
        config::Config::builder()
            .add_source(defaults)
            .add_source(file.clone())
            .build()
            .and_then(|c| c.try_deserialize::<T>())
            .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
        builder = builder.add_source(file);
    }
    let env = match sources.env {
        Some(env) => env,
        None => std::env::vars().collect(),
    };
    let env: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| {
            k.len() > ENV_PREFIX.len() + 1
                && k.starts_with(ENV_PREFIX)
                && k.as_bytes().get(ENV_PREFIX.len()) == Some(&b'_')
        })
        .collect();
    for name in env.keys() {
        let key = name[ENV_PREFIX.len() + 1..].to_lowercase();
        if known.contains(&key) {
            continue;
        }
        if let Some(near) = nearest(&key, &known) {
            bail!(
                "environment variable {name} is not a setting of the {} (did you mean {ENV_PREFIX}_{}?)",
                sources.daemon,
                near.to_uppercase()
            );
        }
    }
    let mut environment = config::Environment::with_prefix(ENV_PREFIX)
        .try_parsing(true)
        .ignore_empty(true)
        .source(Some(env.into_iter().collect()));
    if !sources.env_list_keys.is_empty() {
        environment = environment.list_separator(",");
        for k in sources.env_list_keys {
            environment = environment.with_list_parse_key(k);
        }
    }
    builder = builder.add_source(environment);
    for (key, value) in flags.0 {
        builder = builder.set_override(key, value)?;
    }
    let merged = builder.build().context("reading the settings")?;
    merged
        .try_deserialize::<T>()
        .map_err(|e| anyhow::anyhow!("invalid settings: {e}"))
}

/// The top-level keys of `T` (its fields, as serialized).
fn known_keys<T: Serialize>(defaults: &T) -> anyhow::Result<Vec<String>> {
    match serde_json::to_value(defaults).context("built-in defaults")? {
        serde_json::Value::Object(m) => Ok(m.keys().cloned().collect()),
        _ => bail!("built-in defaults are not a table"),
    }
}

/// Reads and checks the TOML file: it must exist, parse, and hold only
/// known keys.
fn read_file(
    path: &Path,
    known: &[String],
) -> anyhow::Result<config::File<config::FileSourceString, config::FileFormat>> {
    let shown = path.display();
    if !path.is_file() {
        bail!("config file {shown}: not found, or not a file");
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("config file {shown}: {e}"))?;
    check_text(&shown.to_string(), &text, known)
}

/// The settings `T` from the text of a TOML file over `T`'s defaults,
/// checked as [`load`] checks a file (the environment and flags left out):
/// what the config-file fuzz target and its corpus replay run.
pub fn from_toml_text<T>(text: &str) -> anyhow::Result<T>
where
    T: Serialize + DeserializeOwned + Default,
{
    let known = known_keys(&T::default())?;
    let file = check_text("(text)", text, &known)?;
    let defaults = config::Config::try_from(&T::default()).context("built-in defaults")?;
    config::Config::builder()
        .add_source(defaults)
        .add_source(file)
        .build()
        .and_then(|c| c.try_deserialize::<T>())
        .map_err(|e| anyhow::anyhow!("config file: {e}"))
}

/// Parses TOML text and checks that it holds only known keys.
fn check_text(
    shown: &str,
    text: &str,
    known: &[String],
) -> anyhow::Result<config::File<config::FileSourceString, config::FileFormat>> {
    let file = config::File::from_str(text, config::FileFormat::Toml);
    let table = config::Config::builder()
        .add_source(file.clone())
        .build()
        .and_then(|c| c.try_deserialize::<BTreeMap<String, config::Value>>())
        .map_err(|e| anyhow::anyhow!("config file {shown}: {}", one_line(&e.to_string())))?;
    for key in table.keys() {
        if !known.iter().any(|k| k == key) {
            let hint = match nearest(key, known) {
                Some(near) => format!(" (did you mean `{near}`?)"),
                None => format!("; known keys: {}", known.join(", ")),
            };
            bail!("config file {shown}: unknown key `{key}`{hint}");
        }
    }
    Ok(file)
}

/// The known key `key` is most likely a misspelling of, if any: within an
/// edit distance of 2, or a quarter of its length for long keys.
fn nearest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    let limit = (key.len() / 4).max(2);
    known
        .iter()
        .map(|k| (strsim::levenshtein(key, k), k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| k.as_str())
}

/// A parser's message on one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::io::Write;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Demo {
        listen: String,
        query_interval_ms: u64,
        cluster_keys: Vec<String>,
        advertise: Option<String>,
    }

    fn env(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn sources<'a>(file: Option<&'a Path>, env: Option<BTreeMap<String, String>>) -> Sources<'a> {
        Sources {
            daemon: "demo",
            file,
            env,
            env_list_keys: &["cluster_keys"],
        }
    }

    fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("daemon-shell-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(text.as_bytes()).expect("write");
        path
    }

    #[test]
    fn layers_in_order() {
        let path = temp_file("ok.toml", "listen = \"a\"\nquery_interval_ms = 5\n");
        let e = env(&[
            ("MS_QUERY_INTERVAL_MS", "7"),
            ("MS_CLUSTER_KEYS", "1:aa,2:bb"),
        ]);
        let d: Demo = load(sources(Some(&path), e.clone()), Overrides::new()).expect("load");
        assert_eq!(d.listen, "a");
        assert_eq!(d.query_interval_ms, 7);
        assert_eq!(d.cluster_keys, vec!["1:aa".to_string(), "2:bb".to_string()]);
        let mut flags = Overrides::new();
        flags.set("query_interval_ms", Some(9));
        flags.set("listen", None::<String>);
        let d: Demo = load(sources(Some(&path), e), flags).expect("load");
        assert_eq!((d.listen.as_str(), d.query_interval_ms), ("a", 9));
    }

    #[test]
    fn unknown_file_key_is_refused_with_a_hint() {
        let path = temp_file("typo.toml", "lisen = \"a\"\n");
        let err = load::<Demo>(sources(Some(&path), env(&[])), Overrides::new())
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("unknown key `lisen`"), "{err}");
        assert!(err.contains("did you mean `listen`"), "{err}");
        assert!(
            err.contains(&path.display().to_string()),
            "names the file as given: {err}"
        );
        assert!(!err.contains('\n'), "one line: {err}");
        let far = temp_file("far.toml", "colour = \"blue\"\n");
        let err = load::<Demo>(sources(Some(&far), env(&[])), Overrides::new())
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("known keys: advertise, cluster_keys"), "{err}");
    }

    #[test]
    fn file_errors_name_the_file_as_given() {
        let bad = temp_file("bad.toml", "query_interval_ms = \"soon\"\n");
        let err = load::<Demo>(sources(Some(&bad), env(&[])), Overrides::new())
            .expect_err("bad value")
            .to_string();
        assert!(
            err.starts_with(&format!("config file {}:", bad.display())),
            "{err}"
        );
        let broken = temp_file("broken.toml", "listen = \n");
        let err = load::<Demo>(sources(Some(&broken), env(&[])), Overrides::new())
            .expect_err("unparsable")
            .to_string();
        assert!(!err.contains('\n'), "one line: {err}");
        let missing = Path::new("/nonexistent/x.toml");
        let err = load::<Demo>(sources(Some(missing), env(&[])), Overrides::new())
            .expect_err("missing")
            .to_string();
        assert!(err.contains("/nonexistent/x.toml: not found"), "{err}");
    }

    #[test]
    fn misspelt_environment_is_refused_others_ignored() {
        let err = load::<Demo>(sources(None, env(&[("MS_LISEN", "x")])), Overrides::new())
            .expect_err("misspelt")
            .to_string();
        assert!(err.contains("MS_LISEN"), "{err}");
        assert!(err.contains("did you mean MS_LISTEN"), "{err}");
        let err = load::<Demo>(
            sources(None, env(&[("MS_QUERY_INTERVAL", "5")])),
            Overrides::new(),
        )
        .expect_err("missing _MS")
        .to_string();
        assert!(err.contains("MS_QUERY_INTERVAL_MS"), "{err}");
        // Another daemon's variable, and variables not of ours at all.
        let d: Demo = load(
            sources(
                None,
                env(&[("MS_MEMBER_TTL_MS", "5"), ("MSFOO", "1"), ("PATH", "/bin")]),
            ),
            Overrides::new(),
        )
        .expect("ignored");
        assert_eq!(d, Demo::default());
    }
}
