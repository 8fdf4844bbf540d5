//! The mserver's security settings put to use (docs/security.md): the
//! cluster key ring it starts with (the key-ring file, when it exists,
//! wins over `--cluster-key` / `--key-file`), its admin policy, SIGHUP's
//! key reload, and what it does when a key change commits (hand the ring
//! to its sockets and persist it).

use crate::settings::Settings;
use membership::mserver::access::AdminPolicy;
use membership::wire::KeyRing;

/// The ring to start with (see [`Settings::start_ring`]).
pub fn start_ring(s: &Settings) -> anyhow::Result<Option<KeyRing>> {
    s.start_ring()
}

/// The admin policy of these settings.
pub fn policy(s: &Settings, keyed: bool) -> anyhow::Result<AdminPolicy> {
    Ok(AdminPolicy {
        keyed,
        allow_faults: s.allow_faults,
        admin_from: s.admin_networks()?,
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
    match s.configured_ring() {
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
