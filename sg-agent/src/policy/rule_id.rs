//! EC2's security group rule ids (`sgr-` and 17 hex digits). EC2 has one rule per (permission,
//! peer); a native rule with several peers is several EC2 rules. A rule that carries an explicit
//! `id` keeps it; every other (rule, peer) is known by an id derived from what it says, so the
//! id stays the same across restarts and documents for as long as the rule is unchanged.

use sha2::{Digest as _, Sha256};

use super::{Direction, Peer, Ports, Protocol};

/// Hex digits after `sgr-`, as in EC2's ids.
pub const HEX_DIGITS: usize = 17;

/// Whether `text` is an id of EC2's form: `sgr-` and 17 lowercase hex digits.
pub fn is_valid(text: &str) -> bool {
    text.strip_prefix("sgr-").is_some_and(|hex| {
        hex.len() == HEX_DIGITS && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The ports as EC2 states them for `protocol`: TCP/UDP always a range (all ports are
/// 0-65535), ICMP a type and code, nothing for other protocols. Two rules that match the same
/// packets the same way have the same EC2 form, whichever way the document spelled them.
pub fn ec2_ports(protocol: Protocol, ports: Ports) -> Ports {
    match (protocol, ports) {
        (Protocol::Tcp | Protocol::Udp, Ports::All) => Ports::Range(0, u16::MAX),
        (Protocol::Icmp | Protocol::Icmpv6, Ports::All) => Ports::Icmp { ty: None, code: None },
        (Protocol::Icmp | Protocol::Icmpv6, Ports::Icmp { ty: None, .. }) => Ports::Icmp { ty: None, code: None },
        (Protocol::All | Protocol::Number(_), _) => Ports::All,
        (_, ports) => ports,
    }
}

/// The id of a (rule, peer) that has no explicit id: a fixed hash (SHA-256, the same in every
/// process and version) of its group, direction, protocol, ports in EC2's form, and peer. Not
/// of its description or position, so neither moving a rule nor describing it changes its id.
pub fn derived(group: &str, direction: Direction, protocol: Protocol, ports: Ports, peer: &Peer) -> String {
    let ports = ec2_ports(protocol, ports);
    let text = format!("{group}\0{}\0{protocol}\0{ports}\0{peer}", direction.name());
    let digest = Sha256::digest(text.as_bytes());
    let mut id = String::with_capacity(4 + HEX_DIGITS);
    id.push_str("sgr-");
    for b in digest.iter().take(HEX_DIGITS.div_ceil(2)) {
        id.push_str(&format!("{b:02x}"));
    }
    id.truncate(4 + HEX_DIGITS);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_have_ec2_form_and_depend_on_what_the_rule_says() {
        let peer = Peer::Cidr("10.0.0.0/8".parse().unwrap());
        let id = derived("sg-web", Direction::Ingress, Protocol::Tcp, Ports::Range(22, 22), &peer);
        assert!(is_valid(&id), "{id}");
        assert_eq!(id, derived("sg-web", Direction::Ingress, Protocol::Tcp, Ports::Range(22, 22), &peer));
        assert_ne!(id, derived("sg-web", Direction::Egress, Protocol::Tcp, Ports::Range(22, 22), &peer));
        assert_ne!(id, derived("sg-app", Direction::Ingress, Protocol::Tcp, Ports::Range(22, 22), &peer));
        assert_ne!(id, derived("sg-web", Direction::Ingress, Protocol::Tcp, Ports::Range(22, 23), &peer));
        // All TCP ports, however spelled, is one rule.
        assert_eq!(
            derived("g", Direction::Ingress, Protocol::Tcp, Ports::All, &peer),
            derived("g", Direction::Ingress, Protocol::Tcp, Ports::Range(0, 65535), &peer)
        );
    }

    #[test]
    fn derived_ids_are_fixed_across_versions() {
        // A changed hash would renumber every rule of every document: this value must not move.
        let peer = Peer::Group("sg-app".to_owned());
        assert_eq!(derived("sg-web", Direction::Ingress, Protocol::All, Ports::All, &peer), "sgr-81d88394f4ea52db4");
    }

    #[test]
    fn only_ec2_shaped_ids_are_valid() {
        assert!(is_valid("sgr-0123456789abcdef0"));
        assert!(!is_valid("sgr-0123456789ABCDEF0"));
        assert!(!is_valid("sgr-0123456789abcdef"));
        assert!(!is_valid("sg-0123456789abcdef01"));
    }
}
