//! The mserver's security settings put to use (docs/security.md): the
//! cluster key ring it starts with (the key-ring file, when it exists,
//! wins over `--cluster-key` / `--key-file`), its admin policy, SIGHUP's
//! key reload, and what it does when a key change commits (hand the ring
//! to its sockets and persist it).

use crate::settings::Settings;
use membership::mserver::access::{AdminPolicy, Cidr};
use membership::wire::KeyRing;

/// Checks the security settings (one line on error).
pub fn check(s: &Settings) -> anyhow::Result<()> {
    policy(s, false)?;
    start_ring(s)?;
    Ok(())
}

/// The ring from the configured keys (inline, then the key file).
pub fn configured_ring(s: &Settings) -> anyhow::Result<Option<KeyRing>> {
    daemon_shell::keys::key_ring(&s.cluster_keys, s.key_file.as_deref())
}

/// The ring to start with: the key-ring file's if it exists, else the
/// configured one.
pub fn start_ring(s: &Settings) -> anyhow::Result<Option<KeyRing>> {
    if let Some(path) = s.keyring_file.as_deref() {
        if let Some(ring) = daemon_shell::keys::load_keyring_file(path)? {
            return Ok(Some(ring));
        }
    }
    configured_ring(s)
}

/// The admin policy of these settings.
pub fn policy(s: &Settings, keyed: bool) -> anyhow::Result<AdminPolicy> {
    let admin_from = s
        .admin_from
        .iter()
        .map(|c| Cidr::parse(c).map_err(|e| anyhow::anyhow!("--admin-from {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(AdminPolicy {
        keyed,
        allow_faults: s.allow_faults,
        admin_from,
    })
}

/// Persists a committed ring when `--keyring-file` is set (a failure is
/// logged: the ring is in force anyway).
pub fn persist(s: &Settings, ring: &KeyRing) {
    if let Some(path) = s.keyring_file.as_deref() {
        if let Err(e) = daemon_shell::keys::save_keyring_file(path, ring) {
            tracing::warn!(error = %format!("{e:#}"), "cannot persist the key ring");
        }
    }
}

/// SIGHUP: the ring reloaded from the configured keys and the key file
/// (`None` with a warning when it cannot be read, or when it would turn
/// authentication on or off, which needs a restart).
pub fn reload(s: &Settings, current: Option<&KeyRing>) -> Option<KeyRing> {
    match configured_ring(s) {
        Ok(Some(ring)) if current.is_some() => Some(ring),
        Ok(ring) => {
            tracing::warn!(
                now = %daemon_shell::keys::describe(current),
                configured = %daemon_shell::keys::describe(ring.as_ref()),
                "SIGHUP: turning authentication on or off needs a restart; the key ring is unchanged"
            );
            None
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "SIGHUP: key file not reloaded; the key ring is unchanged");
            None
        }
    }
}
