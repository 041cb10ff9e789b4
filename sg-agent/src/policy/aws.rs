//! Input in the shape `aws ec2 describe-security-groups` prints (SPEC §2), converted into the
//! native model without losing anything that affects enforcement (and keeping descriptions).
//!
//! AWS output holds no instances: they come from a second, native document holding `instances`
//! and, if rules name prefix lists, `prefix_lists`.

use super::{
    Document, Invalid, Peer, Ports, Protocol, Rule, SecurityGroup,
    json::{Json, Problems, field, index, join},
    limits,
    native::{self, ReadGroup},
};

/// Whether a parsed document is in AWS's shape.
pub fn is_aws(json: &Json) -> bool {
    matches!(json, Json::Object(fields) if fields.iter().any(|(k, _)| k == "SecurityGroups"))
}

/// Reads an AWS document plus an optional native instances document into a [`Document`].
pub fn read_document(aws: &Json, instances: Option<&Json>) -> Result<Document, Invalid> {
    let mut p = Problems::default();
    let groups = read_groups(&mut p, aws);
    let (lists, instances) = match instances {
        None => (Vec::new(), Vec::new()),
        Some(doc) => read_instances_document(&mut p, doc),
    };
    native::assemble(p, groups, lists, instances)
}

/// The groups of an AWS document in native form, exactly as written (no defaults added), for
/// `import-aws`.
pub fn convert_groups(aws: &Json) -> Result<Vec<SecurityGroup>, Invalid> {
    let mut p = Problems::default();
    let groups = read_groups(&mut p, aws);
    if p.is_empty() { Ok(groups.into_iter().map(|g| g.group).collect()) } else { Err(Invalid { problems: p.list }) }
}

/// The `--instances` document: native `instances` and `prefix_lists`, nothing else.
pub fn read_instances_document(
    p: &mut Problems,
    doc: &Json,
) -> (Vec<native::ReadPrefixList>, Vec<native::ReadInstance>) {
    let Some(fields) = p.object("", doc, &["instances", "prefix_lists"]) else {
        return (Vec::new(), Vec::new());
    };
    let lists =
        field(fields, "prefix_lists").map(|v| native::read_prefix_lists(p, "prefix_lists", v)).unwrap_or_default();
    let instances = field(fields, "instances").map(|v| native::read_instances(p, "instances", v)).unwrap_or_default();
    (lists, instances)
}

const GROUP_KEYS: &[&str] = &[
    "GroupId",
    "GroupName",
    "Description",
    "IpPermissions",
    "IpPermissionsEgress",
    // Printed by AWS, no bearing on enforcement.
    "OwnerId",
    "VpcId",
    "Tags",
    "SecurityGroupArn",
];

const PERMISSION_KEYS: &[&str] =
    &["IpProtocol", "FromPort", "ToPort", "IpRanges", "Ipv6Ranges", "PrefixListIds", "UserIdGroupPairs"];

fn read_groups(p: &mut Problems, aws: &Json) -> Vec<ReadGroup> {
    let Some(top) = p.object("", aws, &["SecurityGroups", "NextToken"]) else {
        return Vec::new();
    };
    let Some(items) = field(top, "SecurityGroups").and_then(|v| p.array("SecurityGroups", v, limits::SECURITY_GROUPS))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index("SecurityGroups", i);
        let Some(fields) = p.object(&path, item, GROUP_KEYS) else { continue };
        // The same checks as the native reader's, so that what is accepted here converts.
        let id = native::required_id(p, &path, fields, "GroupId");
        let name = native::optional_text(p, &path, fields, "GroupName");
        let description = native::optional_text(p, &path, fields, "Description");
        let mut references = Vec::new();
        let ingress = field(fields, "IpPermissions")
            .map(|v| read_permissions(p, &join(&path, "IpPermissions"), v, &mut references))
            .unwrap_or_default();
        // AWS always prints IpPermissionsEgress; missing means no outbound rules.
        let egress = field(fields, "IpPermissionsEgress")
            .map(|v| read_permissions(p, &join(&path, "IpPermissionsEgress"), v, &mut references))
            .unwrap_or_default();
        if let Some(id) = id {
            let id_path = join(&path, "GroupId");
            out.push(ReadGroup {
                group: SecurityGroup { id, name, description, ingress, egress },
                path,
                id_path,
                references,
            });
        }
    }
    out
}

/// One AWS permission may become several native rules: one per distinct peer description, so
/// that descriptions survive the conversion.
fn read_permissions(p: &mut Problems, path: &str, value: &Json, references: &mut Vec<(Peer, String)>) -> Vec<Rule> {
    let Some(items) = p.array(path, value, limits::RULES_PER_GROUP) else { return Vec::new() };
    let mut rules = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index(path, i);
        let Some(fields) = p.object(&path, item, PERMISSION_KEYS) else { continue };
        let before = p.list.len();
        let protocol = match field(fields, "IpProtocol") {
            None => {
                p.add(&join(&path, "IpProtocol"), "missing");
                None
            }
            Some(v) => native::read_protocol(p, &join(&path, "IpProtocol"), v),
        };
        let ports = protocol
            .and_then(|proto| read_aws_ports(p, &path, proto, field(fields, "FromPort"), field(fields, "ToPort")));
        let mut peers: Vec<(Peer, Option<String>)> = Vec::new();
        let kinds: [(&str, &str, &[&str]); 4] = [
            ("IpRanges", "CidrIp", &["CidrIp", "Description"]),
            ("Ipv6Ranges", "CidrIpv6", &["CidrIpv6", "Description"]),
            ("PrefixListIds", "PrefixListId", &["PrefixListId", "Description"]),
            (
                "UserIdGroupPairs",
                "GroupId",
                &["GroupId", "UserId", "GroupName", "VpcId", "VpcPeeringConnectionId", "PeeringStatus", "Description"],
            ),
        ];
        for (list_key, id_key, allowed) in kinds {
            let Some(v) = field(fields, list_key) else { continue };
            let lpath = join(&path, list_key);
            let Some(entries) = p.array(&lpath, v, limits::PEERS_PER_RULE) else { continue };
            for (j, entry) in entries.iter().enumerate() {
                let epath = index(&lpath, j);
                let Some(efields) = p.object(&epath, entry, allowed) else { continue };
                let ipath = join(&epath, id_key);
                let Some(text) = field(efields, id_key).and_then(|v| p.string(&ipath, v)) else {
                    if field(efields, id_key).is_none() {
                        p.add(&ipath, "missing");
                    }
                    continue;
                };
                let description = native::optional_text(p, &epath, efields, "Description");
                let peer = match list_key {
                    "IpRanges" | "Ipv6Ranges" => {
                        let Some(net) = native::read_cidr(p, &ipath, text) else { continue };
                        let wrong_family = match (list_key, net) {
                            ("IpRanges", ipnet::IpNet::V6(_)) => Some("IpRanges holds IPv4 CIDRs"),
                            ("Ipv6Ranges", ipnet::IpNet::V4(_)) => Some("Ipv6Ranges holds IPv6 CIDRs"),
                            _ => None,
                        };
                        if let Some(why) = wrong_family {
                            p.add(&ipath, format!("{net}: {why}"));
                            continue;
                        }
                        match (protocol, net) {
                            (Some(Protocol::Icmp), ipnet::IpNet::V6(_))
                            | (Some(Protocol::Icmpv6), ipnet::IpNet::V4(_)) => {
                                p.add(
                                    &ipath,
                                    format!(
                                        "{net} is of the other IP family than protocol {}",
                                        protocol.map_or(String::new(), |x| x.to_string())
                                    ),
                                );
                                continue;
                            }
                            _ => Peer::Cidr(net),
                        }
                    }
                    "PrefixListIds" => {
                        references.push((Peer::PrefixList(text.to_owned()), ipath.clone()));
                        Peer::PrefixList(text.to_owned())
                    }
                    _ => {
                        references.push((Peer::Group(text.to_owned()), ipath.clone()));
                        Peer::Group(text.to_owned())
                    }
                };
                peers.push((peer, description));
            }
        }
        if peers.is_empty() && p.list.len() == before {
            p.add(&path, "no peer: IpRanges, Ipv6Ranges, PrefixListIds and UserIdGroupPairs are all empty");
        }
        if p.list.len() != before {
            continue;
        }
        let (Some(protocol), Some(ports)) = (protocol, ports) else { continue };
        // Group peers by description, in first-seen order.
        let mut by_description: Vec<(Option<String>, Vec<Peer>)> = Vec::new();
        for (peer, description) in peers {
            match by_description.iter_mut().find(|(d, _)| *d == description) {
                Some((_, list)) => list.push(peer),
                None => by_description.push((description, vec![peer])),
            }
        }
        for (description, peers) in by_description {
            rules.push(Rule { protocol, ports, peers, description, id: None });
        }
    }
    rules
}

/// AWS writes `FromPort`/`ToPort` (and -1/-1 for "all ICMP"); absent for `-1` protocols.
fn read_aws_ports(
    p: &mut Problems,
    path: &str,
    protocol: Protocol,
    from: Option<&Json>,
    to: Option<&Json>,
) -> Option<Ports> {
    // The native reader has the same semantics; only the key names differ, so translate the
    // paths in its messages.
    let mut inner = Problems::default();
    let ports = native::read_ports(&mut inner, path, protocol, from, to);
    for problem in inner.list {
        let path = problem.path.replace(".from_port", ".FromPort").replace(".to_port", ".ToPort");
        let message = problem.message.replace("from_port", "FromPort").replace("to_port", "ToPort");
        p.add(&path, message);
    }
    ports
}
