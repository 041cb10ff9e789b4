//! `sg-agent explain`: which group and rule allow a packet, or that none does.
//!
//! The answer comes from the same verdict code the kernel runs (`sg_common::verdict::judge`),
//! over the compiled maps of the document (offline) or of the running agent's live policy — so
//! it can never disagree with enforcement about what the rules say.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sg_common::{
    maps::ip_to_addr,
    packet::{ICMP_NONE, Packet, icmp_kind},
    verdict::{Reason, judge},
};

use crate::{
    compile::{self, Compiled},
    emulator::Emulator,
    policy::{Direction, Document, Invalid, Protocol},
};

/// The packet to explain, from the instance's point of view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Query {
    pub instance: String,
    pub direction: Direction,
    /// tcp, udp, icmp, icmpv6, or a protocol number.
    pub protocol: String,
    /// The other end: the source of inbound traffic, the destination of outbound.
    pub peer: IpAddr,
    /// TCP/UDP destination port.
    pub port: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Explanation {
    pub allowed: bool,
    /// The datapath's verdict reason for a new flow.
    pub reason: String,
    /// For allowed flows: whether a conntrack entry is made (false: an untracked flow).
    pub tracked: Option<bool>,
    /// The allowing rule, if any: group id, direction, index, and the rule in words.
    pub group: Option<String>,
    pub rule_index: Option<usize>,
    pub rule: Option<String>,
    /// One line for humans.
    pub summary: String,
}

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid::one("", message)
}

/// Explains `q` against a validated document.
pub fn explain(doc: &Document, q: &Query) -> Result<Explanation, Invalid> {
    let Some(instance) = doc.instance(&q.instance) else {
        return Err(invalid(format!("no instance {:?} in the policy", q.instance)));
    };
    // Explain works for instances of other nodes too: judge the instance as if it had an
    // interface here.
    let mut doc = doc.clone();
    let placeholder = "explain0".to_owned();
    for i in &mut doc.instances {
        if i.id == q.instance && i.interface.is_none() {
            i.interface = Some(placeholder.clone());
        }
    }
    let compiled = compile::compile(&doc)?;
    explain_compiled(&doc, &compiled, q).map(|mut e| {
        if instance.interface.is_none() {
            e.summary.push_str(" (the instance has no interface on this node)");
        }
        e
    })
}

/// Explains `q` against an already compiled document (the running agent's).
pub fn explain_compiled(doc: &Document, compiled: &Compiled, q: &Query) -> Result<Explanation, Invalid> {
    let instance = doc.instance(&q.instance).ok_or_else(|| invalid(format!("no instance {:?}", q.instance)))?;
    let position = compiled
        .ifaces
        .iter()
        .position(|i| i.instance == q.instance)
        .ok_or_else(|| invalid(format!("instance {:?} has no interface", q.instance)))?;
    let ifindex = position as u32 + 1;
    let emulator = Emulator::new(compiled, |i, _| i as u32 + 1);

    let family = if q.peer.is_ipv4() { 4 } else { 6 };
    let local = instance
        .addresses
        .iter()
        .find(|a| a.is_ipv4() == q.peer.is_ipv4())
        .ok_or_else(|| invalid(format!("instance {:?} has no IPv{family} address", q.instance)))?;
    let proto = protocol_number(&q.protocol)?;
    let mut pkt = Packet { family, proto, icmp: ICMP_NONE, ..Packet::default() };
    match Protocol::from_number(proto) {
        Protocol::Tcp | Protocol::Udp => {
            pkt.dport = q.port.ok_or_else(|| invalid("--port is needed for tcp and udp"))?;
            pkt.sport = 40000;
        }
        Protocol::Icmp | Protocol::Icmpv6 => {
            let ty = q.icmp_type.ok_or_else(|| invalid("--icmp-type is needed for icmp and icmpv6"))?;
            pkt.dport = u16::from(ty) << 8 | u16::from(q.icmp_code.unwrap_or(0));
            pkt.icmp = icmp_kind(family, ty);
        }
        _ => {}
    }
    let (src, dst) = match q.direction {
        Direction::Ingress => (q.peer, *local),
        Direction::Egress => (*local, q.peer),
    };
    pkt.src = ip_to_addr(src).1;
    pkt.dst = ip_to_addr(dst).1;
    let hook = q.direction.hook(instance.role);

    let verdict = judge(&emulator, ifindex, hook, &pkt, 0);
    let rule = compiled.rules.get(verdict.rule as usize).filter(|_| verdict.pass);
    let what = format!(
        "{} {} {} {}",
        q.direction.name(),
        q.protocol,
        match (q.port, q.icmp_type) {
            (Some(p), _) => format!("port {p}"),
            (None, Some(t)) => format!("type {t} code {}", q.icmp_code.map_or("0".into(), |c| c.to_string())),
            _ => String::new(),
        },
        if q.direction == Direction::Ingress { format!("from {}", q.peer) } else { format!("to {}", q.peer) }
    );
    let summary = match (verdict.reason, rule) {
        (Reason::AllowedByRule | Reason::AllowedUntracked, Some(r)) => format!(
            "ALLOWED: {what} for {} by {r}{}",
            q.instance,
            if verdict.reason == Reason::AllowedUntracked { " (untracked flow: no conntrack entry)" } else { "" }
        ),
        (Reason::DroppedNoRule, _) => format!(
            "DENIED: no rule of {}'s groups ({}) allows {what}",
            q.instance,
            instance.security_groups.join(", ")
        ),
        (reason, _) => format!(
            "{}: {what} for {} ({})",
            if verdict.pass { "ALLOWED" } else { "DENIED" },
            q.instance,
            reason.name()
        ),
    };
    Ok(Explanation {
        allowed: verdict.pass,
        reason: verdict.reason.name().to_owned(),
        tracked: verdict.pass.then_some(verdict.reason != Reason::AllowedUntracked),
        group: rule.map(|r| r.group.clone()),
        rule_index: rule.map(|r| r.rule_index),
        rule: rule.map(ToString::to_string),
        summary,
    })
}

fn protocol_number(text: &str) -> Result<u8, Invalid> {
    Protocol::from_name(text)
        .and_then(Protocol::number)
        .ok_or_else(|| invalid(format!("{text:?} is not a protocol (tcp, udp, icmp, icmpv6 or 0-255)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{
      "security_groups": [
        { "id": "sg-web", "ingress": [
            { "protocol": "tcp", "from_port": 443, "to_port": 443, "cidrs": ["0.0.0.0/0"] },
            { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["198.51.100.0/24"] },
            { "protocol": "icmp", "from_port": 8, "to_port": -1, "groups": ["sg-app"] } ],
          "egress": [ { "protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["0.0.0.0/0"] } ] },
        { "id": "sg-app" }
      ],
      "instances": [
        { "id": "web-1", "interface": "veth-web", "addresses": ["10.0.1.10"], "security_groups": ["sg-web"] },
        { "id": "app-1", "addresses": ["10.0.2.10"], "security_groups": ["sg-app"] }
      ]
    }"#;

    fn q(direction: Direction, protocol: &str, peer: &str, port: Option<u16>, icmp_type: Option<u8>) -> Query {
        Query {
            instance: "web-1".into(),
            direction,
            protocol: protocol.into(),
            peer: peer.parse().unwrap(),
            port,
            icmp_type,
            icmp_code: None,
        }
    }

    fn run(query: &Query) -> Explanation {
        let doc = crate::policy::load(DOC, None).unwrap();
        explain(&doc, query).unwrap()
    }

    #[test]
    fn names_the_allowing_group_and_rule() {
        let e = run(&q(Direction::Ingress, "tcp", "198.51.100.7", Some(22), None));
        assert!(e.allowed);
        assert_eq!((e.group.as_deref(), e.rule_index), (Some("sg-web"), Some(1)));
        assert!(e.summary.contains("198.51.100.0/24"), "{}", e.summary);
    }

    #[test]
    fn says_when_nothing_allows_it() {
        let e = run(&q(Direction::Ingress, "tcp", "203.0.113.9", Some(22), None));
        assert!(!e.allowed);
        assert_eq!(e.reason, "dropped_no_rule");
        assert!(e.summary.starts_with("DENIED: no rule of web-1's groups (sg-web)"), "{}", e.summary);
    }

    #[test]
    fn group_references_resolve_to_members() {
        let member = run(&q(Direction::Ingress, "icmp", "10.0.2.10", None, Some(8)));
        assert_eq!((member.allowed, member.group.as_deref(), member.rule_index), (true, Some("sg-web"), Some(2)));
        let stranger = run(&q(Direction::Ingress, "icmp", "10.0.2.11", None, Some(8)));
        assert!(!stranger.allowed);
    }

    #[test]
    fn egress_and_instances_of_other_nodes() {
        let e = run(&q(Direction::Egress, "tcp", "192.0.2.1", Some(80), None));
        assert!(e.allowed && e.tracked == Some(true));
        let mut remote = q(Direction::Ingress, "tcp", "10.0.1.10", Some(443), None);
        remote.instance = "app-1".into();
        let e = run(&remote);
        assert!(!e.allowed, "sg-app has no inbound rules");
        assert!(e.summary.contains("no interface on this node"));
    }

    #[test]
    fn missing_arguments_are_reported() {
        let doc = crate::policy::load(DOC, None).unwrap();
        let err = explain(&doc, &q(Direction::Ingress, "tcp", "10.0.0.1", None, None)).unwrap_err();
        assert!(err.to_string().contains("--port"));
        let err = explain(&doc, &q(Direction::Ingress, "tcp", "fd00::1", Some(1), None)).unwrap_err();
        assert!(err.to_string().contains("no IPv6 address"));
    }
}
