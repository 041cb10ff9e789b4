//! The one address parser: every address and CIDR the agent reads (native and AWS documents,
//! instances files, `node_services`, and command-line options) goes through here.
//!
//! Strict on purpose (SPEC §2). `inet_aton` reads `010.0.0.1` as octal (8.0.0.1) while most
//! parsers read it as decimal: a firewall and the tool that wrote its rules must never disagree
//! about which address a rule names (the class of CVE-2021-29923), so a leading zero in an IPv4
//! octet or a prefix length is an error, not a guess. IPv4-mapped IPv6 addresses
//! (`::ffff:10.0.0.1`) never appear on the wire as IPv6 sources or destinations the datapath
//! matches, so a rule naming one would silently match nothing.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why a text is not an acceptable address or CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressError {
    /// Not an IP address (or CIDR) at all.
    Syntax,
    /// An IPv4 octet written with a leading zero (`010`), octal to some readers.
    LeadingZero(String),
    /// A prefix length written with a leading zero (`/08`).
    PrefixLeadingZero(String),
    /// A prefix length beyond the family's bits.
    PrefixTooLong(u32, u8),
    /// An IPv4-mapped IPv6 address or CIDR (`::ffff:0:0/96`).
    Ipv4Mapped,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::Syntax => f.write_str("not an IP address"),
            AddressError::LeadingZero(octet) => write!(
                f,
                "the IPv4 octet {octet:?} has a leading zero (octal to some tools, decimal to others); write it \
                 without"
            ),
            AddressError::PrefixLeadingZero(len) => {
                write!(f, "the prefix length {len:?} has a leading zero; write it without")
            }
            AddressError::PrefixTooLong(len, max) => write!(f, "the prefix length {len} is longer than {max}"),
            AddressError::Ipv4Mapped => f.write_str(
                "an IPv4-mapped IPv6 address (::ffff:0:0/96) never matches a packet; write the IPv4 address instead",
            ),
        }
    }
}

/// Checks the dotted-quad IPv4 parts of `text` (a bare IPv4 address, or the IPv4 tail of an
/// IPv6 address) for leading zeros.
fn check_octets(text: &str) -> Result<(), AddressError> {
    let tail = text.rsplit(':').next().unwrap_or(text);
    if !tail.contains('.') {
        return Ok(());
    }
    for octet in tail.split('.') {
        if octet.len() > 1 && octet.starts_with('0') {
            return Err(AddressError::LeadingZero(octet.to_owned()));
        }
    }
    Ok(())
}

/// An IP address, strictly.
pub fn parse_ip(text: &str) -> Result<IpAddr, AddressError> {
    check_octets(text)?;
    let ip: IpAddr = text.parse().map_err(|_| AddressError::Syntax)?;
    if let IpAddr::V6(v6) = ip
        && is_ipv4_mapped(&v6)
    {
        return Err(AddressError::Ipv4Mapped);
    }
    Ok(ip)
}

/// A CIDR (`addr/len`), or a bare address as a /32 or /128, strictly. Host bits are not checked
/// here (callers say what the network is).
pub fn parse_net(text: &str) -> Result<IpNet, AddressError> {
    let Some((addr, len)) = text.split_once('/') else {
        return parse_ip(text).map(IpNet::from);
    };
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || len.len() > 3 {
        return Err(AddressError::Syntax);
    }
    if len.len() > 1 && len.starts_with('0') {
        return Err(AddressError::PrefixLeadingZero(len.to_owned()));
    }
    let len: u32 = len.parse().map_err(|_| AddressError::Syntax)?;
    check_octets(addr)?;
    let ip: IpAddr = addr.parse().map_err(|_| AddressError::Syntax)?;
    let net = match ip {
        IpAddr::V4(a) => {
            let l = u8::try_from(len).ok().filter(|l| *l <= 32).ok_or(AddressError::PrefixTooLong(len, 32))?;
            IpNet::V4(Ipv4Net::new(a, l).map_err(|_| AddressError::PrefixTooLong(len, 32))?)
        }
        IpAddr::V6(a) => {
            let l = u8::try_from(len).ok().filter(|l| *l <= 128).ok_or(AddressError::PrefixTooLong(len, 128))?;
            let net = Ipv6Net::new(a, l).map_err(|_| AddressError::PrefixTooLong(len, 128))?;
            // Inside ::ffff:0:0/96: every address it names is IPv4-mapped.
            if l >= 96 && is_ipv4_mapped(&net.trunc().network()) {
                return Err(AddressError::Ipv4Mapped);
            }
            IpNet::V6(net)
        }
    };
    Ok(net)
}

/// `::ffff:a.b.c.d`.
fn is_ipv4_mapped(a: &Ipv6Addr) -> bool {
    matches!(a.segments(), [0, 0, 0, 0, 0, 0xffff, _, _])
}

/// Why an address cannot be an instance's own: packets are never *from* such an address, and
/// a group reference to it would be meaningless.
pub fn not_unicast(ip: &IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) if a.is_unspecified() => Some("the unspecified address"),
        IpAddr::V4(a) if *a == Ipv4Addr::BROADCAST => Some("the broadcast address"),
        IpAddr::V4(a) if a.is_multicast() => Some("a multicast address"),
        IpAddr::V6(a) if a.is_unspecified() => Some("the unspecified address"),
        IpAddr::V6(a) if a.is_multicast() => Some("a multicast address"),
        _ => None,
    }
}

/// For clap: `--peer`, `--address` and the like read with the same parser as documents.
pub fn parse_ip_arg(text: &str) -> Result<IpAddr, String> {
    parse_ip(text).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_zeros_are_errors_in_addresses_cidrs_and_prefix_lengths() {
        for text in ["010.0.0.1", "10.0.0.01", "010.0.0.0/8", "00.0.0.0/0", "::ffff:010.0.0.1"] {
            assert!(matches!(parse_net(text), Err(AddressError::LeadingZero(_))), "{text}: {:?}", parse_net(text));
        }
        assert!(matches!(parse_ip("010.0.0.1"), Err(AddressError::LeadingZero(_))));
        assert_eq!(parse_net("10.0.0.0/08"), Err(AddressError::PrefixLeadingZero("08".into())));
        assert_eq!(parse_net("fd00::/064"), Err(AddressError::PrefixLeadingZero("064".into())));
        // Zero itself is fine.
        assert_eq!(parse_net("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(parse_net("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_ip("10.0.100.0").unwrap().to_string(), "10.0.100.0");
    }

    #[test]
    fn ipv4_mapped_addresses_and_cidrs_are_errors() {
        assert_eq!(parse_ip("::ffff:10.0.0.1"), Err(AddressError::Ipv4Mapped));
        assert_eq!(parse_net("::ffff:10.0.0.0/104"), Err(AddressError::Ipv4Mapped));
        assert_eq!(parse_net("::ffff:0:0/96"), Err(AddressError::Ipv4Mapped));
        // Wider prefixes merely contain the mapped range (::/0 is "every IPv6 address").
        assert!(parse_net("::/0").is_ok());
        assert!(parse_net("::/64").is_ok());
        // IPv4-compatible and NAT64 addresses are not mapped.
        assert!(parse_ip("64:ff9b::10.0.0.1").is_ok());
    }

    #[test]
    fn bad_syntax_and_lengths() {
        for text in ["10.0.0", "10.0.0.0/", "10.0.0.0/x", "10.0.0.0/+8", "fd00::/1290", "10.0.0.256", "fe80::1%eth0"] {
            assert!(parse_net(text).is_err(), "{text}");
        }
        assert_eq!(parse_net("10.0.0.0/33"), Err(AddressError::PrefixTooLong(33, 32)));
        assert_eq!(parse_net("fd00::/129"), Err(AddressError::PrefixTooLong(129, 128)));
    }

    #[test]
    fn instance_addresses_must_be_unicast() {
        for (text, why) in [
            ("0.0.0.0", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("::", "unspecified"),
            ("ff02::1", "multicast"),
        ] {
            assert!(not_unicast(&parse_ip(text).unwrap()).is_some_and(|w| w.contains(why)), "{text}");
        }
        for text in ["10.0.0.1", "10.0.0.255", "fd00::1", "fe80::1"] {
            assert_eq!(not_unicast(&parse_ip(text).unwrap()), None, "{text}");
        }
    }
}
