//! A LAN of network namespaces for real IP multicast (DESIGN.md section
//! 9): a "switch" namespace with one bridge (multicast snooping off, so
//! every multicast datagram floods) and one namespace per host, joined to
//! it by a veth pair, with an address from a private /24 that exists only
//! inside these namespaces, multicast on and a route for 224.0.0.0/4.
//!
//! Used by `msbench mcast` and, through `#[path]`, by the netns tests.
//! Needs root and `ip` (iproute2). Namespaces are named
//! `ms-<tag>-<pid>-<host>`; [`Lan`] deletes its own when dropped (also on a
//! panic), and [`delete_stale`] those of processes that are gone.

// The tests include this file and use a subset.
#![allow(dead_code)]

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
}

impl Lan {
    /// Builds the switch and one host per name (at most 200), addressed
    /// `subnet.1`, `subnet.2`, ... in order. On error, what was built is
    /// deleted.
    pub fn build(tag: &str, subnet: [u8; 3], names: &[&str]) -> Result<Lan, String> {
        let pid = std::process::id();
        let mut lan = Lan {
            namespaces: Vec::new(),
            hosts: Vec::new(),
        };
        let sw = format!("ms-{tag}-{pid}-sw");
        ip(&["netns", "add", &sw])?;
        lan.namespaces.push(sw.clone());
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &sw,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for (i, name) in names.iter().enumerate().take(200) {
            let ns = format!("ms-{tag}-{pid}-{name}");
            ip(&["netns", "add", &ns])?;
            lan.namespaces.push(ns.clone());
            let port = format!("p{i}");
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &sw, "link", "set", &port, "up"])?;
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
            lan.hosts.push(Host {
                name: name.to_string(),
                ns,
                ip: addr,
            });
        }
        Ok(lan)
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
