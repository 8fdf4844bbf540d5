//! A LAN of network namespaces for real IP multicast (DESIGN.md section
//! 9): a "switch" namespace with one bridge (multicast snooping off, so
//! every multicast datagram floods) and one namespace per host, joined to
//! it by a veth pair, with an address from a private /24 that exists only
//! inside these namespaces, multicast on and a route for 224.0.0.0/4.
//!
//! [`Lan::build_halves`] makes a LAN of two halves instead: two bridges
//! in the switch namespace, each with its hosts, joined by a veth pair
//! (the "trunk"), whose link can be taken down and up ([`Lan::set_trunk`]):
//! a real link cut between the halves, for the partition tests (issue 5).
//!
//! Used by `msbench mcast` and by the netns tests of the workspace
//! (`rmcast_netns`, `mcaster_netns`, `partition_netns`). Needs root and
//! `ip` (iproute2); a test that cannot have them calls [`skip`]. Namespaces
//! are named `ms-<tag>-<pid>-<host>`; [`Lan`] deletes its own when dropped
//! (also on a panic), and [`delete_stale`] those of processes that are
//! gone. Drop the processes running inside a [`Lan`] before it.

use std::net::Ipv4Addr;
use std::process::Command;

/// Runs `ip ARGS`; an error names the command and its stderr.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// For a test that cannot run its namespaces: prints `SKIPPED: <reason>`
/// so the test passes, except under `CI=true` as root, where the test must
/// run and this panics.
pub fn skip(reason: &str) {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    assert!(
        !(ci && is_root()),
        "CI=true and root, but the netns test could not run: {reason}"
    );
    println!("SKIPPED: {reason}");
}

/// `Ok` if namespaces can be tried here (root, `ip` present), else why not.
pub fn available() -> Result<(), String> {
    if !is_root() {
        return Err("not root (network namespaces need CAP_SYS_ADMIN)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Err("`ip` (iproute2) not found".into());
    }
    Ok(())
}

fn netns_list() -> Vec<String> {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Deletes namespaces `ms-<tag>-<pid>-*` whose process is gone.
pub fn delete_stale(tag: &str) {
    let prefix = format!("ms-{tag}-");
    for ns in netns_list() {
        let Some(rest) = ns.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

/// Namespaces of this process with `tag` that still exist.
pub fn leftovers(tag: &str) -> Vec<String> {
    let prefix = format!("ms-{tag}-{}-", std::process::id());
    netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// One host of a [`Lan`].
#[derive(Debug, Clone)]
pub struct Host {
    /// Its short name.
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its address on the LAN.
    pub ip: Ipv4Addr,
}

/// A bridge and its hosts, deleted when dropped.
#[derive(Debug)]
pub struct Lan {
    /// Every namespace created (switch first).
    namespaces: Vec<String>,
    /// The hosts, in the order given.
    pub hosts: Vec<Host>,
    /// The switch namespace, if the LAN has two halves joined by a trunk.
    trunk: Option<String>,
}

impl Lan {
    /// Builds the switch and one host per name (at most 200), addressed
    /// `subnet.1`, `subnet.2`, ... in order. On error, what was built is
    /// deleted.
    pub fn build(tag: &str, subnet: [u8; 3], names: &[&str]) -> Result<Lan, String> {
        let (mut lan, sw) = Lan::switch(tag)?;
        lan.add_bridge(&sw, "br0")?;
        for (i, name) in names.iter().enumerate().take(200) {
            lan.add_host(tag, &sw, "br0", i, name, subnet)?;
        }
        Ok(lan)
    }

    /// Builds a LAN of two halves: the `left` hosts on bridge `br0`, the
    /// `right` hosts on bridge `br1`, both bridges in the switch namespace
    /// and joined by a veth pair (`trunk0` on `br0`, `trunk1` on `br1`),
    /// so that it is still one LAN (one subnet, multicast floods across)
    /// until [`Lan::set_trunk`] takes the link down. Addresses `subnet.1`
    /// ... go to `left` then `right` in order (at most 200 hosts in all).
    /// On error, what was built is deleted.
    pub fn build_halves(
        tag: &str,
        subnet: [u8; 3],
        left: &[&str],
        right: &[&str],
    ) -> Result<Lan, String> {
        let (mut lan, sw) = Lan::switch(tag)?;
        lan.add_bridge(&sw, "br0")?;
        lan.add_bridge(&sw, "br1")?;
        ip(&[
            "-n", &sw, "link", "add", "trunk0", "type", "veth", "peer", "name", "trunk1",
        ])?;
        for (end, bridge) in [("trunk0", "br0"), ("trunk1", "br1")] {
            ip(&["-n", &sw, "link", "set", end, "master", bridge])?;
            ip(&["-n", &sw, "link", "set", end, "up"])?;
        }
        let hosts = left
            .iter()
            .map(|n| (n, "br0"))
            .chain(right.iter().map(|n| (n, "br1")));
        for (i, (name, bridge)) in hosts.enumerate().take(200) {
            lan.add_host(tag, &sw, bridge, i, name, subnet)?;
        }
        lan.trunk = Some(sw);
        Ok(lan)
    }

    /// Takes the right half's end of the trunk (`trunk1`) down (`up` false:
    /// its peer loses carrier too, nothing crosses between the halves) or
    /// up again. Only for a LAN of [`Lan::build_halves`].
    pub fn set_trunk(&self, up: bool) -> Result<(), String> {
        let sw = self
            .trunk
            .as_deref()
            .ok_or("this LAN has no trunk (not built with build_halves)")?;
        ip(&[
            "-n",
            sw,
            "link",
            "set",
            "trunk1",
            if up { "up" } else { "down" },
        ])
    }

    /// An empty LAN with its switch namespace (returned by name).
    fn switch(tag: &str) -> Result<(Lan, String), String> {
        let mut lan = Lan {
            namespaces: Vec::new(),
            hosts: Vec::new(),
            trunk: None,
        };
        let sw = format!("ms-{tag}-{}-sw", std::process::id());
        ip(&["netns", "add", &sw])?;
        lan.namespaces.push(sw.clone());
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        Ok((lan, sw))
    }

    /// A bridge with multicast snooping off in the switch namespace.
    fn add_bridge(&mut self, sw: &str, bridge: &str) -> Result<(), String> {
        ip(&[
            "-n",
            sw,
            "link",
            "add",
            bridge,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", sw, "link", "set", bridge, "up"])
    }

    /// Host number `i` (address `subnet.(i + 1)`) in its own namespace,
    /// joined to `bridge` by a veth pair (`p<i>` on the switch side).
    fn add_host(
        &mut self,
        tag: &str,
        sw: &str,
        bridge: &str,
        i: usize,
        name: &str,
        subnet: [u8; 3],
    ) -> Result<(), String> {
        let ns = format!("ms-{tag}-{}-{name}", std::process::id());
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        let port = format!("p{i}");
        ip(&[
            "-n", sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["-n", sw, "link", "set", &port, "master", bridge])?;
        ip(&["-n", sw, "link", "set", &port, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let addr = Ipv4Addr::new(subnet[0], subnet[1], subnet[2], i as u8 + 1);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "multicast", "on"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        self.hosts.push(Host {
            name: name.to_string(),
            ns,
            ip: addr,
        });
        Ok(())
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// A command running `program` inside `host`'s namespace.
    pub fn command(&self, host: &Host, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &host.ns]).arg(program);
        c
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends and the bridge.
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
