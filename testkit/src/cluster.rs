//! What the mserver tests and `msbench` both do with a loopback cluster:
//! the command lines of an mcaster and of an mserver on a unicast-only LAN
//! (`--multicast off`, every group message through the mcaster), `msctl
//! ... --json` answers, and whether a set of `msctl view --json` answers
//! agree on one view of exactly the expected members.

use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `mcaster --listen LISTEN --multicast off --summary-interval-secs 0`
/// (`RUST_LOG=warn`, stdin closed), not yet started.
pub fn mcaster_command(mcaster: &Path, listen: SocketAddr) -> Command {
    let mut cmd = Command::new(mcaster);
    cmd.args(["--listen", &listen.to_string()])
        .args(["--multicast", "off", "--summary-interval-secs", "0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

/// `mserver --group GROUP --group-addr GROUP_ADDR --listen LISTEN
/// --mcaster MCASTER --multicast off --allow-faults` with `MS_HTTP=off`
/// (stdin closed), not yet started: tests and benchmarks steer the fault
/// interceptor with `msctl fault`, which an mserver refuses without
/// `--allow-faults`. The HTTP endpoint is off so that tests never race for
/// its default port (127.0.0.1:9200); a test that wants it adds `--http
/// 127.0.0.1:PORT` (a flag wins over the environment).
pub fn mserver_command(
    mserver: &Path,
    group: &str,
    group_addr: SocketAddr,
    listen: SocketAddr,
    mcaster: SocketAddr,
) -> Command {
    let mut cmd = Command::new(mserver);
    cmd.args(["--group", group])
        .args(["--group-addr", &group_addr.to_string()])
        .args(["--listen", &listen.to_string()])
        .args(["--mcaster", &mcaster.to_string()])
        .args(["--multicast", "off", "--allow-faults"])
        .env("MS_HTTP", "off")
        .stdin(Stdio::null());
    cmd
}

/// `msctl --server SERVER --timeout-ms 1000 ARGS` (stdin closed, stdout
/// and stderr piped), not yet run, so that callers can run several at once.
pub fn msctl_command(msctl: &Path, server: SocketAddr, args: &[&str]) -> Command {
    let mut cmd = Command::new(msctl);
    cmd.args(["--server", &server.to_string(), "--timeout-ms", "1000"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `msctl --server SERVER --timeout-ms 1000 WHAT --json` (e.g. `view`,
/// `stats`): the JSON it printed, `None` if it failed or did not answer.
pub fn msctl_json(msctl: &Path, server: SocketAddr, what: &str) -> Option<Value> {
    json_output(&mut msctl_command(msctl, server, &[what, "--json"]))
}

/// Runs `cmd` to its end (stdin closed, stderr discarded): the JSON it
/// printed on stdout, `None` if it failed or printed something else.
pub fn json_output(cmd: &mut Command) -> Option<Value> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Field `field` (e.g. `"addr"`, `"name"`) of every member of a view
/// (`msctl view --json`, `msctl join --json`), sorted.
pub fn member_field(view: &Value, field: &str) -> Vec<String> {
    let mut v: Vec<String> = view["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m[field].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The addresses of a view's members, sorted.
pub fn member_addrs(view: &Value) -> Vec<String> {
    member_field(view, "addr")
}

/// Whether every view is present, idle, equal in view number, coordinator
/// and member table, with exactly the addresses `want`: that view, or what
/// differs.
pub fn agreement(views: &[Option<Value>], want: &BTreeSet<String>) -> Result<Value, String> {
    let mut first: Option<&Value> = None;
    for v in views {
        let v = v.as_ref().ok_or("an mserver did not answer msctl view")?;
        if v["state"] != "idle" {
            return Err(format!("state {} at {}", v["state"], v["me"]["addr"]));
        }
        if let Some(f) = first {
            if f["view"] != v["view"] || f["coordinator"] != v["coordinator"] {
                return Err(format!(
                    "view {} at {} vs {} at {}",
                    f["view"], f["me"]["addr"], v["view"], v["me"]["addr"]
                ));
            }
            if f["members"] != v["members"] {
                return Err("member tables differ".into());
            }
        }
        let addrs: BTreeSet<String> = member_addrs(v).into_iter().collect();
        if &addrs != want {
            return Err(format!("members {addrs:?}, expected {want:?}"));
        }
        first = Some(v);
    }
    first.cloned().ok_or_else(|| "no view".into())
}

/// Asks `views` (the `msctl view --json` answers of some mservers) every
/// `every` until they agree on one idle view of exactly the addresses
/// `want` ([`agreement`]), for at most `limit`: that view, or a message
/// with the last answers.
pub fn wait_agreement(
    limit: Duration,
    every: Duration,
    want: &[String],
    mut views: impl FnMut() -> Vec<Option<Value>>,
) -> Result<Value, String> {
    let want: BTreeSet<String> = want.iter().cloned().collect();
    let mut last = Vec::new();
    crate::wait::until(limit, every, || {
        last = views();
        agreement(&last, &want).ok()
    })
    .ok_or_else(|| format!("no agreement on {want:?} within {limit:?}; last views: {last:#?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agreement_needs_one_idle_view_of_exactly_the_members() {
        let v = |view: u64, state: &str| {
            json!({"state": state, "view": view, "coordinator": "c",
                   "me": {"addr": "a"},
                   "members": [{"addr": "127.0.0.11:1"}, {"addr": "127.0.0.10:1"}]})
        };
        let want: BTreeSet<String> = ["127.0.0.10:1", "127.0.0.11:1"].map(String::from).into();
        assert_eq!(
            member_addrs(&v(1, "idle")),
            ["127.0.0.10:1", "127.0.0.11:1"]
        );
        assert!(agreement(&[Some(v(3, "idle")), Some(v(3, "idle"))], &want).is_ok());
        assert!(agreement(&[Some(v(3, "idle")), Some(v(4, "idle"))], &want).is_err());
        assert!(agreement(&[Some(v(3, "idle")), Some(v(3, "joining"))], &want).is_err());
        assert!(agreement(&[Some(v(3, "idle")), None], &want).is_err());
        assert!(agreement(&[], &want).is_err());
        let fewer: BTreeSet<String> = ["127.0.0.10:1".to_string()].into();
        assert!(agreement(&[Some(v(3, "idle"))], &fewer).is_err());
    }
}
