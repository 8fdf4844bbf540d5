//! Who may use the admin procedures that change something (`leave`,
//! `fault`, the key commands): with a cluster key ring only authenticated
//! callers reach the node at all (the wire layer drops everything else
//! before any core sees it), so every caller holds the key; without a ring
//! only callers whose UDP address is loopback or inside one of the
//! `--admin-from` networks. Fault injection is refused unless the daemon
//! was started with `--allow-faults`. Pure data and a pure check: the node
//! applies it to each request.

use std::net::IpAddr;

/// A network in CIDR notation (`10.1.0.0/16`, `::1/128`; a bare address
/// is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX` or `ADDR`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not a network (ADDR/PREFIX, e.g. 10.0.0.0/8)"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={max}"))?,
        };
        Ok(Cidr { net, prefix })
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses are
    /// compared as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (canonical(self.net), ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The admin access policy of one mserver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminPolicy {
    /// A cluster key ring is configured: every request that reaches the
    /// node was authenticated with it.
    pub keyed: bool,
    /// `--allow-faults`: `msctl fault` may change the fault interceptor.
    pub allow_faults: bool,
    /// `--admin-from`: networks besides loopback allowed to change things
    /// when there is no key ring.
    pub admin_from: Vec<Cidr>,
}

/// The refusal `msctl fault` prints when faults are off.
pub const FAULTS_OFF: &str =
    "fault injection is off on this mserver: start it with --allow-faults (for tests only)";

impl AdminPolicy {
    /// A policy that allows everything (tests and the simulator).
    pub fn open() -> Self {
        AdminPolicy {
            keyed: false,
            allow_faults: true,
            admin_from: vec![
                Cidr {
                    net: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                    prefix: 0,
                },
                Cidr {
                    net: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    prefix: 0,
                },
            ],
        }
    }

    /// Whether a caller at UDP address `peer` may change something; the
    /// refusal otherwise.
    pub fn may_change(&self, peer: IpAddr) -> Result<(), String> {
        if self.keyed
            || canonical(peer).is_loopback()
            || self.admin_from.iter().any(|c| c.contains(peer))
        {
            return Ok(());
        }
        let nets: Vec<String> = self.admin_from.iter().map(|c| c.to_string()).collect();
        Err(format!(
            "refused: {peer} may not change this mserver (no cluster key ring; admin only from loopback{}{})",
            if nets.is_empty() { "" } else { " and " },
            nets.join(", ")
        ))
    }

    /// Whether a caller at `peer` may set faults.
    pub fn may_fault(&self, peer: IpAddr) -> Result<(), String> {
        if !self.allow_faults {
            return Err(FAULTS_OFF.to_string());
        }
        self.may_change(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.1.0.0/16").expect("cidr");
        assert!(c.contains("10.1.200.3".parse().expect("ip")));
        assert!(!c.contains("10.2.0.1".parse().expect("ip")));
        assert!(c.contains("::ffff:10.1.0.9".parse().expect("ip")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("all")
            .contains("8.8.8.8".parse().expect("ip")));
        assert!(Cidr::parse("10.0.0.1")
            .expect("host")
            .contains("10.0.0.1".parse().expect("ip")));
        assert!(Cidr::parse("::1/128")
            .expect("v6")
            .contains("::1".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x", "::/129", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policy() {
        let lo: IpAddr = "127.0.0.3".parse().expect("ip");
        let far: IpAddr = "192.0.2.7".parse().expect("ip");
        let p = AdminPolicy::default();
        assert!(p.may_change(lo).is_ok());
        assert!(p.may_change(far).unwrap_err().contains("refused"));
        assert_eq!(p.may_fault(lo).unwrap_err(), FAULTS_OFF);
        let p = AdminPolicy {
            allow_faults: true,
            admin_from: vec![Cidr::parse("192.0.2.0/24").expect("cidr")],
            ..AdminPolicy::default()
        };
        assert!(p.may_fault(far).is_ok());
        let keyed = AdminPolicy {
            keyed: true,
            ..AdminPolicy::default()
        };
        assert!(keyed.may_change(far).is_ok());
        assert!(AdminPolicy::open().may_fault(far).is_ok());
    }
}
