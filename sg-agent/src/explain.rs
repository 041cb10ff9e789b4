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
    compile::{self, Compiled, RuleRef},
    emulator::Emulator,
    policy::{Direction, Document, Invalid, Peer, Protocol},
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
    /// For an untracked flow: every rule that makes it untracked (the rule for everyone that
    /// admits it, and the other direction's rule that allows all responses).
    #[serde(default)]
    pub untracked_by: Vec<String>,
    /// One line for humans.
    pub summary: String,
}

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid::one("", message)
}

impl Query {
    /// The protocol, once the options are checked against it: explain judges one concrete
    /// packet, so every option must fit its protocol and family (SPEC §5).
    pub fn check(&self) -> Result<Protocol, String> {
        let protocol = Protocol::from_name(&self.protocol).ok_or_else(|| {
            format!("--protocol {:?} is not a protocol (tcp, udp, icmp, icmpv6 or a number 0-255)", self.protocol)
        })?;
        let v4 = self.peer.is_ipv4();
        let icmp_option = match (self.icmp_type.is_some(), self.icmp_code.is_some()) {
            (true, _) => Some("--icmp-type"),
            (false, true) => Some("--icmp-code"),
            (false, false) => None,
        };
        match protocol {
            Protocol::All => Err(format!(
                "--protocol {}: explain judges one concrete packet, and \"all protocols\" is not one; ask about \
                 tcp, udp, icmp, icmpv6 or a protocol number (a rule for all protocols is named when it allows it)",
                self.protocol
            )),
            Protocol::Tcp | Protocol::Udp => match (self.port, icmp_option) {
                (_, Some(option)) => {
                    Err(format!("{option} does not fit --protocol {protocol} (it is for icmp and icmpv6)"))
                }
                (None, None) => Err(format!("--port is needed for --protocol {protocol}")),
                (Some(_), None) => Ok(protocol),
            },
            Protocol::Icmp | Protocol::Icmpv6 => {
                if self.port.is_some() {
                    return Err(format!(
                        "--port does not fit --protocol {protocol} (give its type and code: --icmp-type, --icmp-code)"
                    ));
                }
                if self.icmp_type.is_none() {
                    return Err(format!("--icmp-type is needed for --protocol {protocol}"));
                }
                match (protocol, v4) {
                    (Protocol::Icmp, false) => {
                        Err(format!("--protocol icmp is IPv4 only, but --peer {} is IPv6 (use icmpv6)", self.peer))
                    }
                    (Protocol::Icmpv6, true) => {
                        Err(format!("--protocol icmpv6 is IPv6 only, but --peer {} is IPv4 (use icmp)", self.peer))
                    }
                    _ => Ok(protocol),
                }
            }
            Protocol::Number(n) => match (self.port, icmp_option) {
                (Some(_), _) => Err(format!("--port does not fit --protocol {n} (only tcp and udp have ports)")),
                (None, Some(option)) => {
                    Err(format!("{option} does not fit --protocol {n} (it is for icmp and icmpv6)"))
                }
                (None, None) => Ok(protocol),
            },
        }
    }
}

/// Explains `q` against a validated document.
pub fn explain(doc: &Document, q: &Query) -> Result<Explanation, Invalid> {
    q.check().map_err(invalid)?;
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
    let protocol = q.check().map_err(invalid)?;
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
    let proto = protocol.number().unwrap_or_default();
    let mut pkt = Packet { family, proto, icmp: ICMP_NONE, ..Packet::default() };
    match protocol {
        Protocol::Tcp | Protocol::Udp => {
            pkt.dport = q.port.unwrap_or_default();
            pkt.sport = 40000;
        }
        Protocol::Icmp | Protocol::Icmpv6 => {
            let ty = q.icmp_type.unwrap_or_default();
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
    let untracked_by = if verdict.reason == Reason::AllowedUntracked {
        untracked_rules(doc, compiled, instance, q.direction, &pkt, q.peer)
    } else {
        Vec::new()
    };
    let summary = match (verdict.reason, rule) {
        (Reason::AllowedByRule, Some(r)) => format!("ALLOWED: {what} for {} by {r}", q.instance),
        (Reason::AllowedUntracked, Some(r)) => format!(
            "ALLOWED: {what} for {} by {r} (untracked flow, no conntrack entry, because of: {})",
            q.instance,
            untracked_by.join("; and ")
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
        untracked_by,
        summary,
    })
}

/// The rules that make a flow untracked (SPEC §3): a rule for everyone (`0.0.0.0/0`, `::/0`)
/// of the packet's direction that admits it, and a rule of the other direction that allows all
/// responses; or, for the reply of an untracked flow of the other direction, those two rules
/// with the directions swapped. Each as its group, place and text.
fn untracked_rules(
    doc: &Document,
    compiled: &Compiled,
    instance: &crate::policy::Instance,
    direction: Direction,
    pkt: &Packet,
    peer: IpAddr,
) -> Vec<String> {
    let family = pkt.family;
    let everyone = |r: &RuleRef| match &r.peer {
        Peer::Cidr(net) => net.prefix_len() == 0 && net.addr().is_ipv4() == peer.is_ipv4(),
        Peer::PrefixList(id) => doc
            .prefix_list(id)
            .is_some_and(|l| l.cidrs.iter().any(|n| n.prefix_len() == 0 && n.addr().is_ipv4() == peer.is_ipv4())),
        Peer::Group(_) => false,
    };
    let of_instance = |r: &&RuleRef| instance.security_groups.contains(&r.group);
    let admits = |r: &RuleRef, d: Direction, port: u16| {
        let (lo, hi) = r.ports.key_range();
        r.direction == d && r.protocol.matches(pkt.proto, family) && (lo..=hi).contains(&port) && everyone(r)
    };
    let all_responses = |r: &RuleRef, d: Direction| {
        r.direction == d
            && (r.protocol == Protocol::All
                || (r.protocol.number() == Some(pkt.proto) && r.ports.key_range() == (0, u16::MAX)))
            && everyone(r)
    };
    let find = |f: &dyn Fn(&RuleRef) -> bool| {
        compiled.rules.iter().filter(of_instance).find(|r| f(r)).map(ToString::to_string)
    };
    // This packet starts an untracked flow...
    if let (Some(a), Some(b)) =
        (find(&|r| admits(r, direction, pkt.dport)), find(&|r| all_responses(r, direction.opposite())))
    {
        return vec![format!("{a} (for everyone)"), format!("{b} (all responses)")];
    }
    // ...or it is a reply of one started the other way (its source port is that flow's port).
    match (find(&|r| admits(r, direction.opposite(), pkt.sport)), find(&|r| all_responses(r, direction))) {
        (Some(a), Some(b)) => vec![
            format!("{a} (for everyone, the other way: this is a reply from port {})", pkt.sport),
            format!("{b} (all responses)"),
        ],
        _ => Vec::new(),
    }
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

    #[test]
    fn options_that_do_not_fit_the_protocol_are_errors() {
        let doc = crate::policy::load(DOC, None).unwrap();
        let cases: [(Query, &str); 8] = [
            (
                Query { port: Some(22), ..q(Direction::Ingress, "icmp", "10.0.0.1", None, Some(8)) },
                "--port does not fit --protocol icmp",
            ),
            (q(Direction::Ingress, "tcp", "10.0.0.1", Some(80), Some(3)), "--icmp-type does not fit --protocol tcp"),
            (
                Query { icmp_code: Some(1), ..q(Direction::Ingress, "udp", "10.0.0.1", Some(53), None) },
                "--icmp-code does not fit --protocol udp",
            ),
            (q(Direction::Ingress, "-1", "10.0.0.1", None, None), "explain judges one concrete packet"),
            (q(Direction::Ingress, "all", "10.0.0.1", None, None), "explain judges one concrete packet"),
            (q(Direction::Ingress, "icmp", "fd00::1", None, Some(128)), "--protocol icmp is IPv4 only"),
            (q(Direction::Ingress, "47", "10.0.0.1", Some(1), None), "--port does not fit --protocol 47"),
            (q(Direction::Ingress, "icmpv6", "fd00::1", None, None), "--icmp-type is needed for --protocol icmpv6"),
        ];
        for (query, fragment) in cases {
            let err = query.check().unwrap_err();
            assert!(err.contains(fragment), "{query:?}: {err}");
            // The same answer from a document (and from the agent, which calls explain_compiled).
            assert!(explain(&doc, &query).unwrap_err().to_string().contains(fragment));
        }
        assert!(q(Direction::Ingress, "icmp", "10.0.0.1", None, Some(8)).check().is_ok());
        assert!(q(Direction::Ingress, "6", "10.0.0.1", Some(80), None).check().is_ok());
    }

    #[test]
    fn an_untracked_flow_names_every_rule_that_makes_it_untracked() {
        // The first rule admits it; the second (for everyone) and the default egress (all
        // responses) make it untracked.
        let doc = r#"{ "security_groups": [ { "id": "sg-web", "ingress": [
            { "protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["10.0.0.0/8"] },
            { "protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["0.0.0.0/0"] } ] } ],
          "instances": [ { "id": "web-1", "interface": "veth-web", "addresses": ["10.0.1.10"], "security_groups": ["sg-web"] } ] }"#;
        let doc = crate::policy::load(doc, None).unwrap();
        let e = explain(&doc, &q(Direction::Ingress, "tcp", "10.1.2.3", Some(80), None)).unwrap();
        assert_eq!((e.allowed, e.tracked, e.rule_index), (true, Some(false), Some(0)));
        assert_eq!(
            e.untracked_by,
            [
                "sg-web ingress[1]: tcp 80 from 0.0.0.0/0 (for everyone)",
                "sg-web egress[0]: all all to 0.0.0.0/0 (all responses)"
            ]
        );
        assert!(
            e.summary.contains("ingress[0]") && e.summary.contains("ingress[1]") && e.summary.contains("egress[0]"),
            "{}",
            e.summary
        );
        // A tracked flow names none.
        let mut tracked = doc.clone();
        tracked.security_groups[0].egress.clear();
        let e = explain(&tracked, &q(Direction::Ingress, "tcp", "10.1.2.3", Some(80), None)).unwrap();
        assert_eq!((e.tracked, e.untracked_by.len()), (Some(true), 0));
    }

    fn ingress(instance: &str, protocol: &str, peer: &str, port: Option<u16>) -> Query {
        Query { instance: instance.into(), ..q(Direction::Ingress, protocol, peer, port, None) }
    }

    #[test]
    fn the_dumps_hardened_default_group_denies_what_the_built_in_one_would_allow() {
        // Issue: the built-in permissive default used to apply ("all all from group default").
        let groups = r#"{ "SecurityGroups": [
            { "GroupId": "sg-0def", "GroupName": "default", "VpcId": "vpc-1", "IpPermissions": [],
              "IpPermissionsEgress": [ { "IpProtocol": "-1", "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] } ] } ] }"#;
        let instances = r#"{ "instances": [ { "id": "a", "interface": "veth-a", "addresses": ["10.0.0.1"] },
                                            { "id": "b", "addresses": ["10.0.0.2"] } ] }"#;
        let doc = crate::policy::load(groups, Some(instances)).unwrap();
        let e = explain(&doc, &ingress("a", "tcp", "10.0.0.2", Some(22))).unwrap();
        assert!(!e.allowed, "{}", e.summary);
        assert!(e.summary.contains("(sg-0def)"), "{}", e.summary);
    }

    #[test]
    fn the_aws_examples_as_ec2_would_judge_them() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/aws");
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        let instances = [read("describe-instances.json"), read("local-interfaces.json")];
        for listing in ["describe-security-groups.json", "describe-security-group-rules.json"] {
            let doc = crate::policy::load_all(&read(listing), &instances).unwrap();
            let run = |query: &Query| explain(&doc, query).unwrap();
            // The hardened default group: nothing in.
            let e = run(&ingress("eni-0dd4ee5ff6007a184", "tcp", "10.0.2.20", Some(22)));
            assert!(!e.allowed, "{listing}: {}", e.summary);
            // The web tier from anywhere; the app from the web tier only.
            assert!(run(&ingress("eni-0aa1bb2cc3dd4ee51", "tcp", "192.0.2.1", Some(443))).allowed, "{listing}");
            let app_from_web = run(&ingress("eni-0bb2cc3dd4ee5ff62", "tcp", "10.0.1.10", Some(8080)));
            assert_eq!(app_from_web.reason, "allowed_by_rule", "{listing}: {}", app_from_web.summary);
            // The app interface is in audit mode (local-interfaces.json): denied, but passed.
            let app_from_db = run(&ingress("eni-0bb2cc3dd4ee5ff62", "tcp", "10.0.3.30", Some(8080)));
            assert_eq!(app_from_db.reason, "audit_would_drop", "{listing}: {}", app_from_db.summary);
            // The icmp permission's IPv6 range matches nothing; its IPv4 range does.
            let mut ping = q(Direction::Ingress, "icmpv6", "2001:db8:1234::5", None, Some(128));
            ping.instance = "eni-0aa1bb2cc3dd4ee51".into();
            assert!(run(&ping).allowed, "{listing}: the icmpv6 permission");
            let mut ping4 = q(Direction::Ingress, "icmp", "10.0.9.9", None, Some(8));
            ping4.instance = "eni-0aa1bb2cc3dd4ee51".into();
            assert!(run(&ping4).allowed, "{listing}");
        }
    }
}
