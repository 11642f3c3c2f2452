//! Which addresses a fetch aimed by a policy may connect to. Pure.
//!
//! A policy author chooses `issuer.jwksUri`, `issuer.url` and `identity.url`; in cluster mode
//! that author is a tenant, and accessgate's network position (inside the cluster, next to the
//! cloud metadata service) is not theirs to use. So [`is_allowed`] refuses the IPv4
//! special-purpose ranges (`0/8` too: 0.0.0.0 reaches the local host on Linux), all of IPv6
//! outside global unicast `2000::/3` and the special blocks inside it, and judges IPv6 forms
//! that carry an IPv4 address (mapped, compatible, NAT64, 6to4) by that address, unless an
//! [`AllowList`] CIDR holds it. Only the address a connection goes to matters: the guard runs on
//! every DNS answer at connect time ([`super`]). See docs/security.md, "Security notes".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// CIDRs the operator allows in spite of the rules above (e.g. an in-cluster issuer).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList(Vec<IpNet>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a CIDR (e.g. 10.0.0.0/8, fd00::/8) or an IP address")]
pub struct BadCidr(pub String);

/// One CIDR, or a bare address for just that address.
pub fn parse_net(s: &str) -> Result<IpNet, BadCidr> {
    let s = s.trim();
    IpNet::from_str(s)
        .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| BadCidr(s.to_owned()))
}

impl AllowList {
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self(nets.into_iter().map(|n| n.trunc()).collect())
    }

    /// Parses CIDRs; a bare address means just that address (/32 or /128).
    pub fn parse<S: AsRef<str>>(cidrs: &[S]) -> Result<Self, BadCidr> {
        cidrs
            .iter()
            .map(|c| parse_net(c.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }
}

/// Whether fetches are guarded: off for file mode (the operator writes the policies), on in
/// cluster mode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AddressPolicy {
    /// Any address (file mode's default).
    #[default]
    AllowAll,
    /// Public addresses, plus the allowed CIDRs.
    Guarded(AllowList),
}

impl AddressPolicy {
    pub fn permits(&self, ip: IpAddr) -> bool {
        match self {
            AddressPolicy::AllowAll => true,
            AddressPolicy::Guarded(allow) => is_allowed(ip, allow),
        }
    }

    pub fn is_guarded(&self) -> bool {
        matches!(self, AddressPolicy::Guarded(_))
    }
}

/// Whether a guarded fetch may connect to `ip`.
pub fn is_allowed(ip: IpAddr, allow: &AllowList) -> bool {
    if allow.contains(ip) {
        return true;
    }
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_allowed(IpAddr::V4(v4), allow),
            None => is_public_v6(v6),
        },
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(first: u16, second: u16, len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(first, second, 0, 0, 0, 0, 0, 0), len)
}

/// IPv4 ranges a guarded fetch never reaches unless allowed.
const REFUSED_V4: &[Ipv4Net] = &[
    v4(0, 0, 0, 0, 8),       // "this network"; 0.0.0.0 is the local host
    v4(10, 0, 0, 0, 8),      // private
    v4(100, 64, 0, 0, 10),   // carrier-grade NAT
    v4(127, 0, 0, 0, 8),     // loopback
    v4(169, 254, 0, 0, 16),  // link-local, cloud metadata
    v4(172, 16, 0, 0, 12),   // private
    v4(192, 0, 0, 0, 24),    // IETF protocol assignments
    v4(192, 0, 2, 0, 24),    // documentation
    v4(192, 88, 99, 0, 24),  // 6to4 relay anycast
    v4(192, 168, 0, 0, 16),  // private
    v4(198, 18, 0, 0, 15),   // benchmarking
    v4(198, 51, 100, 0, 24), // documentation
    v4(203, 0, 113, 0, 24),  // documentation
    v4(224, 0, 0, 0, 4),     // multicast
    v4(240, 0, 0, 0, 4),     // reserved, broadcast
];

fn is_public_v4(ip: Ipv4Addr) -> bool {
    !REFUSED_V4.iter().any(|n| n.contains(&ip))
}

/// The only IPv6 block a guarded fetch may reach...
const GLOBAL_UNICAST: Ipv6Net = v6(0x2000, 0, 3);

/// ...except these parts of it.
const REFUSED_V6: &[Ipv6Net] = &[
    v6(0x2001, 0, 23),      // IETF protocol assignments, Teredo
    v6(0x2001, 0x0db8, 32), // documentation
    v6(0x3fff, 0, 20),      // documentation
    v6(0x5f00, 0, 16),      // SRv6 SIDs
];

fn is_public_v6(ip: Ipv6Addr) -> bool {
    GLOBAL_UNICAST.contains(&ip) && !REFUSED_V6.iter().any(|n| n.contains(&ip))
}

/// The IPv4 address an IPv6 address stands for, when it is one of the forms that carry one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        // ::ffff:a.b.c.d (mapped)
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // ::a.b.c.d (compatible, deprecated); :: and ::1 are IPv6's own unspecified and
        // loopback, refused below as not global unicast.
        [0, 0, 0, 0, 0, 0, _, _] if !matches!(s[6..], [0, 0] | [0, 1]) => Some(low),
        // 64:ff9b::a.b.c.d (NAT64 well-known prefix)
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        // 64:ff9b:1::/48 (local-use NAT64): any embedding; refused as not global unicast.
        // 2002:aabb:ccdd:: (6to4)
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refused_and_permitted_addresses() {
        let none = AllowList::default();
        let refused = [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "169.254.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "2001::1",      // Teredo
            "2001:db8::1",  // documentation
            "3fff::1",      // documentation
            "5f00::1",      // SRv6
            "64:ff9b:1::1", // local-use NAT64
            // IPv4 in IPv6 clothing
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::ffff:0.0.0.0",
            "::127.0.0.1",
            "::10.0.0.1",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe", // NAT64 of 169.254.169.254
            "64:ff9b::10.1.2.3",
            "2002:a9fe:a9fe::1", // 6to4 of 169.254.169.254
            "2002:7f00:1::",     // 6to4 of 127.0.0.1
        ];
        for a in refused {
            assert!(!is_allowed(ip(a), &none), "{a} should be refused");
        }
        let permitted = [
            "1.1.1.1",
            "8.8.8.8",
            "104.16.0.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.255.255",
            "192.167.255.255",
            "223.255.255.255",
            "2606:4700::6810:84e5",
            "2a00:1450:4001::200e",
            "::ffff:1.1.1.1",
            "64:ff9b::1.1.1.1",
            "2002:0808:0808::1",
        ];
        for a in permitted {
            assert!(is_allowed(ip(a), &none), "{a} should be permitted");
        }
    }

    #[test]
    fn allowed_cidrs_open_exactly_their_range() {
        let allow = AllowList::parse(&["127.0.0.0/8", "fd00:1::/32", "10.1.2.3"]).unwrap();
        for a in [
            "127.0.0.1",
            "127.9.9.9",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "fd00:1::5",
            "10.1.2.3",
        ] {
            assert!(is_allowed(ip(a), &allow), "{a} should be allowed");
        }
        for a in [
            "10.0.0.1",
            "10.1.2.4",
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "192.168.0.1",
            "::1",
            "fd00:2::1",
        ] {
            assert!(!is_allowed(ip(a), &allow), "{a} should still be refused");
        }
    }

    #[test]
    fn parses_cidrs_and_addresses_and_refuses_nonsense() {
        let l = AllowList::parse(&["10.0.0.0/8", " 192.168.1.1 ", "::1", "10.1.2.3/8"]).unwrap();
        let nets: Vec<String> = l.nets().iter().map(ToString::to_string).collect();
        assert_eq!(
            nets,
            ["10.0.0.0/8", "192.168.1.1/32", "::1/128", "10.0.0.0/8"]
        );
        for bad in ["", "10.0.0.0/33", "localhost", "10.0.0/8", "*"] {
            assert!(AllowList::parse(&[bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_policy_switch() {
        assert!(AddressPolicy::AllowAll.permits(ip("127.0.0.1")));
        let guarded = AddressPolicy::Guarded(AllowList::default());
        assert!(!guarded.permits(ip("127.0.0.1")));
        assert!(guarded.permits(ip("1.1.1.1")));
    }
}
