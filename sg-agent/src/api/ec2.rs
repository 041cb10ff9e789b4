//! The document as EC2 shows it, and EC2's request shapes read into the document's terms.
//!
//! - A native rule with several peers is several EC2 rules, one per peer, each with an id
//!   ([`Ec2Rule`]): its explicit `id`, or the id derived from what it says.
//! - An `IpPermission` of a request (protocol, ports, and any number of `IpRanges`,
//!   `Ipv6Ranges`, `UserIdGroupPairs`, `PrefixListIds`) is one wanted rule per peer ([`Wanted`]).
//! - Responses group rules back into `IpPermission`s by protocol and ports, as EC2 does.
//!
//! There is one account and one VPC: the document is one VPC's worth of groups (it has one
//! `default` group), owned by [`OWNER_ID`].

use std::collections::HashSet;

use ipnet::IpNet;

use super::{error::ApiError, query::Params, xml::Xml};
use crate::policy::{
    DEFAULT_GROUP, Direction, Document, Peer, Ports, Protocol, Rule, SecurityGroup,
    json::Problems,
    limits, native,
    rule_id::{self, ec2_ports},
};

/// The account that owns every group here (EC2's 12-digit `OwnerId`).
pub const OWNER_ID: &str = "000000000000";
/// The one VPC the document describes.
pub const VPC_ID: &str = "vpc-00000000000000000";
/// Longest name or description EC2 accepts.
pub const TEXT_MAX: usize = 255;

/// One EC2 security group rule: one peer of one native rule.
#[derive(Debug, Clone)]
pub struct Ec2Rule<'a> {
    pub id: String,
    pub group: &'a SecurityGroup,
    pub direction: Direction,
    /// Where it is: `group.<direction>[rule_index].<peers>[peer_index]`.
    pub rule_index: usize,
    pub peer_index: usize,
    pub rule: &'a Rule,
    pub peer: &'a Peer,
}

impl Ec2Rule<'_> {
    /// Protocol, ports in EC2's form, and peer: what makes two rules the same rule.
    pub fn key(&self) -> RuleKey {
        RuleKey::new(self.rule.protocol, self.rule.ports, self.peer.clone())
    }
}

/// What a rule matches, in EC2's form: equal keys are the same EC2 rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleKey {
    pub protocol: Protocol,
    pub ports: Ports,
    pub peer: Peer,
}

impl RuleKey {
    pub fn new(protocol: Protocol, ports: Ports, peer: Peer) -> RuleKey {
        RuleKey { protocol, ports: ec2_ports(protocol, ports), peer }
    }
}

/// The EC2 rules of a group in one direction. A (protocol, ports, peer) written twice in a
/// document is one EC2 rule (EC2 cannot hold it twice): the first stands for both.
pub fn rules_of(group: &SecurityGroup, direction: Direction) -> Vec<Ec2Rule<'_>> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for (rule_index, rule) in group.rules(direction).iter().enumerate() {
        for (peer_index, peer) in rule.peers.iter().enumerate() {
            let id = match &rule.id {
                Some(id) => id.clone(),
                None => rule_id::derived(&group.id, direction, rule.protocol, rule.ports, peer),
            };
            if seen.insert(id.clone()) {
                out.push(Ec2Rule { id, group, direction, rule_index, peer_index, rule, peer });
            }
        }
    }
    out
}

/// Every EC2 rule of the document, group by group, ingress first.
pub fn all_rules(doc: &Document) -> Vec<Ec2Rule<'_>> {
    doc.security_groups
        .iter()
        .flat_map(|g| [Direction::Ingress, Direction::Egress].into_iter().flat_map(move |d| rules_of(g, d)))
        .collect()
}

/// The rule with this id, in any group and direction.
pub fn rule_by_id<'a>(doc: &'a Document, id: &str) -> Option<Ec2Rule<'a>> {
    all_rules(doc).into_iter().find(|r| r.id == id)
}

/// A group's name as EC2 shows it (a document's group may have none: then its id).
pub fn group_name(group: &SecurityGroup) -> &str {
    group.name.as_deref().unwrap_or(&group.id)
}

pub fn group_by_id<'a>(doc: &'a Document, id: &str) -> Result<&'a SecurityGroup, ApiError> {
    doc.group(id).ok_or_else(|| ApiError::group_not_found(id))
}

pub fn group_by_name<'a>(doc: &'a Document, name: &str) -> Result<&'a SecurityGroup, ApiError> {
    let mut found = doc.security_groups.iter().filter(|g| group_name(g) == name);
    match (found.next(), found.next()) {
        (Some(g), None) => Ok(g),
        (None, _) => Err(ApiError::group_not_found(name)),
        (Some(a), Some(b)) => Err(ApiError::invalid(format!(
            "More than one security group is named '{name}' ({} and {}): name it by GroupId",
            a.id, b.id
        ))),
    }
}

/// The group an action is about: `GroupId`, or (where EC2 allows it) `GroupName`.
pub fn target_group<'a>(doc: &'a Document, p: &Params, by_name: bool) -> Result<&'a SecurityGroup, ApiError> {
    match (p.get("GroupId"), p.get("GroupName").filter(|_| by_name)) {
        (Some(id), None) => group_by_id(doc, id),
        (None, Some(name)) => group_by_name(doc, name),
        (Some(_), Some(_)) => {
            Err(ApiError::client("InvalidParameterCombination", "Give either GroupId or GroupName, not both"))
        }
        (None, None) => Err(ApiError::missing(if by_name { "GroupId (or GroupName)" } else { "GroupId" })),
    }
}

/// A rule a request asks for (or names): one peer, with its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub key: RuleKey,
    pub description: Option<String>,
}

impl Wanted {
    /// The native rule for it, with an id.
    pub fn rule(&self, id: String) -> Rule {
        Rule {
            protocol: self.key.protocol,
            ports: self.key.ports,
            peers: vec![self.key.peer.clone()],
            description: self.description.clone(),
            id: Some(id),
        }
    }
}

/// The `IpPermissions` of a request, one [`Wanted`] per peer, in request order.
pub fn permissions(doc: &Document, p: &Params, member: &str) -> Result<Vec<Wanted>, ApiError> {
    let mut out = Vec::new();
    for perm in p.structs(member)? {
        perm.only(&["IpProtocol", "FromPort", "ToPort", "Groups", "IpRanges", "Ipv6Ranges", "PrefixListIds"])?;
        let protocol = protocol(&perm, "IpProtocol")?;
        let ports = ports(&perm, protocol)?;
        let before = out.len();
        for range in perm.structs("IpRanges")? {
            range.only(&["CidrIp", "Description"])?;
            let net = cidr(&range, "CidrIp", Some(false))?;
            out.push(wanted(protocol, ports, Peer::Cidr(net), &range)?);
        }
        for range in perm.structs("Ipv6Ranges")? {
            range.only(&["CidrIpv6", "Description"])?;
            let net = cidr(&range, "CidrIpv6", Some(true))?;
            out.push(wanted(protocol, ports, Peer::Cidr(net), &range)?);
        }
        for pair in perm.structs("Groups")? {
            pair.only(&["GroupId", "GroupName", "UserId", "Description"])?;
            if let Some(user) = pair.get("UserId").filter(|u| *u != OWNER_ID) {
                return Err(ApiError::invalid(format!(
                    "{}: {user} is another account; groups here belong to {OWNER_ID}",
                    pair.name("UserId")
                )));
            }
            let group = match (pair.get("GroupId"), pair.get("GroupName")) {
                (Some(id), _) => group_by_id(doc, id)?,
                (None, Some(name)) => group_by_name(doc, name)?,
                (None, None) => return Err(ApiError::missing(&pair.name("GroupId"))),
            };
            out.push(wanted(protocol, ports, Peer::Group(group.id.clone()), &pair)?);
        }
        for list in perm.structs("PrefixListIds")? {
            list.only(&["PrefixListId", "Description"])?;
            let id = list.required("PrefixListId")?;
            if doc.prefix_list(id).is_none() {
                return Err(prefix_list_not_found(id));
            }
            out.push(wanted(protocol, ports, Peer::PrefixList(id.to_owned()), &list)?);
        }
        if out.len() == before {
            return Err(ApiError::invalid(format!(
                "{}: no source or destination; give IpRanges, Ipv6Ranges, UserIdGroupPairs or PrefixListIds",
                perm.name("").trim_end_matches('.')
            )));
        }
    }
    Ok(out)
}

/// The old top-level form (`IpProtocol`, `FromPort`, `ToPort`, `CidrIp`,
/// `SourceSecurityGroupName`) that the API still accepts beside `IpPermissions`.
pub fn legacy_permission(doc: &Document, p: &Params) -> Result<Option<Wanted>, ApiError> {
    if p.get("CidrIp").is_none() && p.get("SourceSecurityGroupName").is_none() && p.get("IpProtocol").is_none() {
        return Ok(None);
    }
    let protocol = match p.get("IpProtocol") {
        Some(_) => protocol(p, "IpProtocol")?,
        None => Protocol::All,
    };
    let ports = ports(p, protocol)?;
    let peer = match (p.get("CidrIp"), p.get("SourceSecurityGroupName")) {
        (Some(_), None) => Peer::Cidr(cidr(p, "CidrIp", None)?),
        (None, Some(name)) => Peer::Group(group_by_name(doc, name)?.id.clone()),
        (Some(_), Some(_)) => {
            return Err(ApiError::client(
                "InvalidParameterCombination",
                "Give either CidrIp or SourceSecurityGroupName, not both",
            ));
        }
        (None, None) => return Err(ApiError::missing("CidrIp (or SourceSecurityGroupName, or IpPermissions)")),
    };
    check_family(protocol, &peer, "CidrIp")?;
    Ok(Some(Wanted { key: RuleKey::new(protocol, ports, peer), description: None }))
}

fn wanted(protocol: Protocol, ports: Ports, peer: Peer, p: &Params) -> Result<Wanted, ApiError> {
    check_family(protocol, &peer, &p.name(""))?;
    Ok(Wanted { key: RuleKey::new(protocol, ports, peer), description: description(p, "Description")? })
}

/// `icmp` matches IPv4 only and `icmpv6` IPv6 only: EC2 accepts the other family and never
/// matches it, the native document calls it an error, and so does the API (SPEC §2).
fn check_family(protocol: Protocol, peer: &Peer, at: &str) -> Result<(), ApiError> {
    let wrong = match (protocol, peer) {
        (Protocol::Icmp, Peer::Cidr(IpNet::V6(_))) => Some("icmp matches IPv4 only (use icmpv6 for IPv6)"),
        (Protocol::Icmpv6, Peer::Cidr(IpNet::V4(_))) => Some("icmpv6 matches IPv6 only (use icmp for IPv4)"),
        _ => None,
    };
    match wrong {
        Some(why) => Err(ApiError::invalid(format!("{}: {peer}: protocol {why}", at.trim_end_matches('.')))),
        None => Ok(()),
    }
}

/// `IpProtocol`: `tcp`, `udp`, `icmp`, `icmpv6`, `-1`/`all`, or a number 0-255.
pub fn protocol(p: &Params, member: &str) -> Result<Protocol, ApiError> {
    let text = p.required(member)?;
    Protocol::from_name(&text.to_ascii_lowercase())
        .ok_or_else(|| ApiError::invalid(format!("Invalid value '{text}' for IP protocol. Unknown protocol.")))
}

/// `FromPort`/`ToPort` for a protocol, in EC2's form.
pub fn ports(p: &Params, protocol: Protocol) -> Result<Ports, ApiError> {
    let (from, to) = (p.int("FromPort")?, p.int("ToPort")?);
    match protocol {
        Protocol::Tcp | Protocol::Udp => {
            let (Some(from), Some(to)) = (from, to) else {
                return Err(ApiError::invalid(
                    "Invalid value for portRange. Must specify both from and to ports with TCP/UDP.",
                ));
            };
            let port = |n: i64| u16::try_from(n).ok();
            match (port(from), port(to)) {
                (Some(lo), Some(hi)) if lo <= hi => Ok(Ports::Range(lo, hi)),
                (Some(lo), Some(hi)) => {
                    Err(ApiError::invalid(format!("Invalid TCP/UDP port range: from port {lo} is above to port {hi}")))
                }
                _ => Err(ApiError::invalid(format!(
                    "Invalid value for portRange: {from}-{to}; ports are 0-65535 for TCP/UDP"
                ))),
            }
        }
        Protocol::Icmp | Protocol::Icmpv6 => {
            let (ty, code) = (from.unwrap_or(-1), to.unwrap_or(-1));
            let value = |n: i64| if n == -1 { Ok(None) } else { u8::try_from(n).map(Some) };
            match (value(ty), value(code)) {
                (Ok(None), Ok(Some(_))) => Err(ApiError::invalid(format!(
                    "Invalid ICMP code {code} with type -1 (any type): a code needs a type"
                ))),
                (Ok(ty), Ok(code)) => Ok(ec2_ports(protocol, Ports::Icmp { ty, code })),
                _ => Err(ApiError::invalid(format!(
                    "Invalid value for ICMP type {ty} / code {code}: each is -1 (any) or 0-255"
                ))),
            }
        }
        // Ports do not apply to other protocols; EC2 ignores them.
        Protocol::All | Protocol::Number(_) => Ok(Ports::All),
    }
}

/// A CIDR member, read as the document reads CIDRs; `v6`: the family it must be.
pub fn cidr(p: &Params, member: &str, v6: Option<bool>) -> Result<IpNet, ApiError> {
    let text = p.required(member)?;
    let mut problems = Problems::default();
    let name = p.name(member);
    let net = native::read_cidr(&mut problems, &name, text)
        .ok_or_else(|| ApiError::invalid(problems.list.first().map_or_else(|| name.clone(), ToString::to_string)))?;
    match (v6, net) {
        (Some(false), IpNet::V6(_)) => Err(ApiError::invalid(format!("{name}: {net} is IPv6; give it in Ipv6Ranges"))),
        (Some(true), IpNet::V4(_)) => Err(ApiError::invalid(format!("{name}: {net} is IPv4; give it in IpRanges"))),
        _ => Ok(net),
    }
}

/// A description member: at most 255 characters, no control characters.
pub fn description(p: &Params, member: &str) -> Result<Option<String>, ApiError> {
    match p.get(member) {
        None => Ok(None),
        Some(text) => text_value(p, member, text).map(|t| Some(t.to_owned())),
    }
}

/// A name or description: at most [`TEXT_MAX`] characters, no control characters.
pub fn text_value<'a>(p: &Params, member: &str, text: &'a str) -> Result<&'a str, ApiError> {
    if text.chars().count() > TEXT_MAX || text.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{}: at most {TEXT_MAX} characters, none of them control characters",
            p.name(member)
        )));
    }
    Ok(text)
}

pub fn prefix_list_not_found(id: &str) -> ApiError {
    ApiError::client("InvalidPrefixListID.NotFound", format!("The prefix list ID '{id}' does not exist"))
}

/// `IpProtocol` as EC2 writes it.
pub fn protocol_text(protocol: Protocol) -> String {
    match protocol {
        Protocol::All => "-1".to_owned(),
        other => other.to_string(),
    }
}

/// `FromPort`/`ToPort` as EC2 writes them; `None` where EC2 leaves them out of an
/// `IpPermission` (all protocols, and protocols without ports). `rule_form`: as
/// `SecurityGroupRule`s write them, -1/-1 there.
pub fn port_numbers(protocol: Protocol, ports: Ports, rule_form: bool) -> Option<(i32, i32)> {
    match ec2_ports(protocol, ports) {
        Ports::Range(lo, hi) => Some((i32::from(lo), i32::from(hi))),
        Ports::Icmp { ty, code } => Some((ty.map_or(-1, i32::from), code.map_or(-1, i32::from))),
        Ports::All => rule_form.then_some((-1, -1)),
    }
}

/// EC2's words for a rule in error messages: `peer: 10.0.0.0/8, TCP, from port: 22, to port: 22, ALLOW`.
pub fn rule_words(key: &RuleKey) -> String {
    let peer = match &key.peer {
        Peer::Cidr(net) => net.to_string(),
        Peer::Group(id) | Peer::PrefixList(id) => id.clone(),
    };
    let protocol = protocol_text(key.protocol).to_uppercase();
    match port_numbers(key.protocol, key.ports, false) {
        Some((from, to)) => format!("peer: {peer}, {protocol}, from port: {from}, to port: {to}, ALLOW"),
        None => format!("peer: {peer}, {protocol}, ALLOW"),
    }
}

/// `IpPermission`s: rules grouped by protocol and ports in order of first appearance, each
/// with its peers by kind.
pub fn write_permissions<'a>(x: &mut Xml, tag: &str, rules: impl IntoIterator<Item = (RuleKey, Option<&'a str>)>) {
    type Peers<'d> = Vec<(Peer, Option<&'d str>)>;
    let mut groups: Vec<((Protocol, Ports), Peers<'_>)> = Vec::new();
    for (key, description) in rules {
        let at = (key.protocol, key.ports);
        match groups.iter_mut().find(|(k, _)| *k == at) {
            Some((_, peers)) => peers.push((key.peer, description)),
            None => groups.push((at, vec![(key.peer, description)])),
        }
    }
    x.list(tag, groups, |x, ((protocol, ports), peers)| {
        x.leaf("ipProtocol", protocol_text(protocol));
        if let Some((from, to)) = port_numbers(protocol, ports, false) {
            x.leaf("fromPort", from).leaf("toPort", to);
        }
        let of = |pick: fn(&Peer) -> bool| peers.iter().filter(move |(p, _)| pick(p));
        x.list("groups", of(|p| matches!(p, Peer::Group(_))), |x, (peer, d)| {
            x.leaf_opt("description", *d).leaf("userId", OWNER_ID);
            if let Peer::Group(id) = peer {
                x.leaf("groupId", id);
            }
        });
        x.list("ipRanges", of(|p| matches!(p, Peer::Cidr(IpNet::V4(_)))), |x, (peer, d)| {
            x.leaf_opt("description", *d).leaf("cidrIp", peer);
        });
        x.list("ipv6Ranges", of(|p| matches!(p, Peer::Cidr(IpNet::V6(_)))), |x, (peer, d)| {
            x.leaf_opt("description", *d).leaf("cidrIpv6", peer);
        });
        x.list("prefixListIds", of(|p| matches!(p, Peer::PrefixList(_))), |x, (peer, d)| {
            x.leaf_opt("description", *d);
            if let Peer::PrefixList(id) = peer {
                x.leaf("prefixListId", id);
            }
        });
    });
}

/// A `SecurityGroupRule` (what `DescribeSecurityGroupRules` and `Authorize*` return).
pub fn write_rule(
    x: &mut Xml,
    region: &str,
    id: &str,
    group: &str,
    direction: Direction,
    key: &RuleKey,
    description: Option<&str>,
) {
    x.leaf("securityGroupRuleId", id)
        .leaf("groupId", group)
        .leaf("groupOwnerId", OWNER_ID)
        .leaf("isEgress", direction == Direction::Egress)
        .leaf("ipProtocol", protocol_text(key.protocol));
    if let Some((from, to)) = port_numbers(key.protocol, key.ports, true) {
        x.leaf("fromPort", from).leaf("toPort", to);
    }
    write_peer(x, &key.peer, true);
    x.leaf_opt("description", description);
    x.open("tagSet").close("tagSet");
    x.leaf("securityGroupRuleArn", format!("arn:aws:ec2:{region}:{OWNER_ID}:security-group-rule/{id}"));
}

/// The peer of a rule: `cidrIpv4`, `cidrIpv6`, `prefixListId`, or the referenced group
/// (`referencedGroupInfo` in a `SecurityGroupRule`, `referencedGroupId` in a revoked one).
pub fn write_peer(x: &mut Xml, peer: &Peer, rule_form: bool) {
    match peer {
        Peer::Cidr(net @ IpNet::V4(_)) => x.leaf("cidrIpv4", net),
        Peer::Cidr(net @ IpNet::V6(_)) => x.leaf("cidrIpv6", net),
        Peer::PrefixList(id) => x.leaf("prefixListId", id),
        Peer::Group(id) if rule_form => {
            x.open("referencedGroupInfo").leaf("groupId", id).leaf("userId", OWNER_ID).close("referencedGroupInfo")
        }
        Peer::Group(id) => x.leaf("referencedGroupId", id),
    };
}

/// Whether a group is the `default` group (which cannot be deleted).
pub fn is_default(group: &SecurityGroup) -> bool {
    group.id == DEFAULT_GROUP
}

/// Native rules per group and direction the document allows: past it, EC2's
/// `RulesPerSecurityGroupLimitExceeded`.
pub const RULES_PER_GROUP: usize = limits::RULES_PER_GROUP;

pub fn rules_limit_exceeded() -> ApiError {
    ApiError::client(
        "RulesPerSecurityGroupLimitExceeded",
        format!(
            "The maximum number of rules per security group ({RULES_PER_GROUP} per direction here) has been reached."
        ),
    )
}
