//! The cluster key ring settings every daemon and `msctl` share
//! (`docs/security.md`): `--cluster-key ID:HEX` (repeatable),
//! `cluster_keys` in the TOML file, `MS_CLUSTER_KEYS` (comma-separated),
//! and `--key-file PATH`, a file readable only by its owner with one
//! `ID:HEX` per line (`#` comments). The keys given inline come first (the
//! first of them signs), then the file's; without inline keys the file's
//! first key signs.
//!
//! The mserver, the member interface and the mcaster also persist their
//! ring (`--keyring-file`, the same format), so that a ring rotated with
//! `msctl keys` (and handed by the mserver to its member interfaces and
//! its mcaster) survives a restart; the ring in that file, when it exists,
//! wins over the configured keys.
//!
//! SIGHUP reloads the key file on every daemon: each daemon's handler of
//! [`crate::signals::Signal::Hangup`] re-reads it with [`key_ring`] (or
//! [`KeyFlags::ring`]) and hands the ring to its sockets.

use anyhow::{bail, Context as _};
use membership::wire::{ClusterKey, KeyRing};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One cluster key as configured, `ID:HEX` (id 1-255, a secret of at least
/// 16 bytes in hex), the form of [`ClusterKey::parse`]. Its `Debug` output
/// never shows the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeySpec(pub String);

impl std::fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.split_once(':') {
            Some((id, _)) => write!(f, "{}:<redacted>", id.trim()),
            None => f.write_str("<redacted>"),
        }
    }
}

/// The key flags of every daemon and of `msctl` (flatten into a clap
/// `Parser`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KeyFlags {
    /// A cluster key, ID:HEX (id 1-255, secret of at least 16 bytes in
    /// hex); repeat for a key ring: the first signs, every one verifies.
    /// Replaces cluster_keys / MS_CLUSTER_KEYS (comma-separated). Command
    /// lines are visible to other local users: prefer --key-file.
    #[arg(long = "cluster-key", value_name = "ID:HEX", global = true)]
    pub cluster_key: Vec<String>,
    /// A file of cluster keys, one ID:HEX per line (# comments), readable
    /// by its owner only (a file group or others can read is refused).
    /// SIGHUP reloads it.
    #[arg(long = "key-file", value_name = "PATH", global = true)]
    pub key_file: Option<PathBuf>,
}

impl KeyFlags {
    /// The ring of these flags; without `--cluster-key`, the keys of
    /// `MS_CLUSTER_KEYS` (comma-separated) come first. For `msctl` and the
    /// member interface, which have no settings file.
    pub fn ring(&self) -> anyhow::Result<Option<KeyRing>> {
        let mut specs: Vec<KeySpec> = self
            .cluster_key
            .iter()
            .map(|k| KeySpec(k.clone()))
            .collect();
        if specs.is_empty() {
            if let Ok(v) = std::env::var("MS_CLUSTER_KEYS") {
                specs = v
                    .split(',')
                    .filter(|k| !k.trim().is_empty())
                    .map(|k| KeySpec(k.trim().to_string()))
                    .collect();
            }
        }
        key_ring(&specs, self.key_file.as_deref())
    }
}

/// Refuses a key file that group or others may read or write (one line).
#[cfg(unix)]
fn check_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| anyhow::anyhow!("key file {}: {e}", path.display()))?;
    if !meta.is_file() {
        bail!("key file {}: not a file", path.display());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "key file {}: readable by group or others (mode {mode:03o}); chmod 600 it",
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// Parses the text of a key file: one `ID:HEX` per line, blank lines and
/// `#` comments ignored. Errors name the line, never the secret.
pub fn parse_key_lines(text: &str, what: &str) -> anyhow::Result<Vec<ClusterKey>> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let k =
            ClusterKey::parse(line).map_err(|e| anyhow::anyhow!("{what}, line {}: {e}", n + 1))?;
        keys.push(k);
    }
    Ok(keys)
}

/// Reads a key file, refusing one that group or others may read.
pub fn read_key_file(path: &Path) -> anyhow::Result<Vec<ClusterKey>> {
    check_private(path)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("key file {}: {e}", path.display()))?;
    let keys = parse_key_lines(&text, &format!("key file {}", path.display()))?;
    if keys.is_empty() {
        bail!("key file {}: no key in it", path.display());
    }
    Ok(keys)
}

/// The key ring from the inline keys and the key file (`None`: no keys at
/// all, no authentication). Errors are one line and name the key by
/// position and id, never its secret.
pub fn key_ring(specs: &[KeySpec], key_file: Option<&Path>) -> anyhow::Result<Option<KeyRing>> {
    let mut keys = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let k = ClusterKey::parse(spec.0.trim())
            .map_err(|e| anyhow::anyhow!("cluster key {} ({spec:?}): {e}", i + 1))?;
        keys.push(k);
    }
    if let Some(path) = key_file {
        keys.extend(read_key_file(path)?);
    }
    if keys.is_empty() {
        return Ok(None);
    }
    let ring = KeyRing::new(keys).map_err(|e| anyhow::anyhow!("cluster keys: {e}"))?;
    Ok(Some(ring))
}

/// The ring persisted in a key-ring file, if the file exists.
pub fn load_keyring_file(path: &Path) -> anyhow::Result<Option<KeyRing>> {
    if !path.exists() {
        return Ok(None);
    }
    let keys = read_key_file(path)?;
    KeyRing::new(keys)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("key-ring file {}: {e}", path.display()))
}

/// Writes `ring` to a key-ring file (mode 0600, written to a temporary
/// file first and renamed, so a crash never leaves half a ring).
pub fn save_keyring_file(path: &Path, ring: &KeyRing) -> anyhow::Result<()> {
    let mut text = String::from("# cluster key ring, written by the daemon; the first key signs\n");
    for k in ring.keys() {
        text.push_str(&k.to_spec());
        text.push('\n');
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o
            .open(&tmp)
            .with_context(|| format!("key-ring file {}", tmp.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("key-ring file {}", tmp.display()))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("key-ring file {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("key-ring file {}", path.display()))?;
    Ok(())
}

/// A short description of a ring for logs: `ids [2 1], signing 2`.
pub fn describe(ring: Option<&KeyRing>) -> String {
    match ring {
        None => "none".to_string(),
        Some(r) => format!("ids {:?}, signing {}", r.ids(), r.signing_key().id()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "1:5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
    const K2: &str = "2:7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c";

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ds-keys-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).expect("tmp dir");
        d
    }

    #[cfg(unix)]
    fn write_mode(path: &Path, text: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[cfg(unix)]
    #[test]
    fn key_file_must_be_private_and_errors_hide_secrets() {
        let d = dir("private");
        let p = d.join("keys");
        write_mode(&p, &format!("# ring\n{K2}\n\n{K1} # old\n"), 0o600);
        let ring = key_ring(&[], Some(&p)).expect("ok").expect("ring");
        assert_eq!(ring.ids(), vec![2, 1]);
        let ring = key_ring(&[KeySpec(K1.into())], None)
            .expect("ok")
            .expect("ring");
        assert_eq!(ring.ids(), vec![1]);
        let e = key_ring(&[KeySpec(K1.into())], Some(&p)).expect_err("dup");
        assert!(e.to_string().contains("twice"), "{e}");
        for mode in [0o644, 0o640, 0o604, 0o660] {
            write_mode(&p, &format!("{K2}\n"), mode);
            let e = key_ring(&[], Some(&p)).expect_err("readable").to_string();
            assert!(e.contains("readable by group or others"), "{e}");
            assert!(!e.contains('\n'));
        }
        write_mode(&p, "1:5e5e\n", 0o600);
        let e = key_ring(&[], Some(&p)).expect_err("short").to_string();
        assert!(e.contains("line 1") && !e.contains("5e5e"), "{e}");
        assert!(key_ring(&[], Some(&d.join("missing"))).is_err());
        assert_eq!(key_ring(&[], None).expect("none"), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[cfg(unix)]
    #[test]
    fn keyring_file_round_trips_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("ring");
        let p = d.join("ring");
        assert_eq!(load_keyring_file(&p).expect("absent"), None);
        let ring = key_ring(&[KeySpec(K2.into()), KeySpec(K1.into())], None)
            .expect("ok")
            .expect("ring");
        save_keyring_file(&p, &ring).expect("saved");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_keyring_file(&p).expect("read"), Some(ring));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn key_spec_debug_is_redacted() {
        assert_eq!(format!("{:?}", KeySpec(K1.into())), "1:<redacted>");
        assert_eq!(describe(None), "none");
    }
}
