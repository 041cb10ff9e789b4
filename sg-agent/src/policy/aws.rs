//! Input in the shapes the AWS CLI prints (SPEC §2): `aws ec2 describe-security-groups`
//! (`SecurityGroups`) and `aws ec2 describe-security-group-rules` (`SecurityGroupRules`),
//! converted into the native model without losing anything that affects enforcement (and
//! keeping descriptions), and read the way EC2 reads it: the group named `default` is its VPC's
//! default group; what EC2 accepts but never matches is accepted with a warning.
//!
//! AWS's group listings hold no instances: they come from instances documents, each a native
//! document of `instances` and `prefix_lists`, or `aws ec2 describe-instances` output (see
//! [`super::aws_instances`]).

use std::collections::BTreeMap;

use super::{
    Document, Invalid, Peer, Ports, Protocol, Rule, SecurityGroup, Source, aws_instances,
    json::{Json, Problems, field, index, join},
    limits,
    native::{self, Parts, ReadGroup, ReadInstance, ReadPrefixList, Reference},
};

/// Whether a parsed document is one of AWS's security-group listings.
pub fn is_aws(json: &Json) -> bool {
    matches!(json, Json::Object(fields)
        if fields.iter().any(|(k, _)| k == "SecurityGroups" || k == "SecurityGroupRules"))
}

/// Reads an AWS document plus its instances documents into a [`Document`].
pub fn read_document(aws: &Json, instances: &[Json]) -> Result<Document, Invalid> {
    let mut p = Problems::default();
    let (mut groups, from_rules) = read_listing(&mut p, aws);
    let (lists, mut instances) = read_instances_documents(&mut p, instances);
    if from_rules {
        // A group without rules appears nowhere in a rule listing; an instance may be in one.
        for i in &instances {
            for (j, id) in i.instance.security_groups.iter().enumerate() {
                if !groups.iter().any(|g| g.group.id == *id) {
                    groups.push(empty_group(id.clone(), &index(&join(&i.path, "security_groups"), j)));
                }
            }
        }
    }
    let builtin_default = resolve_default_groups(&mut p, &groups, &mut instances, from_rules);
    native::assemble(p, Parts { groups, lists, instances, node_services: None, builtin_default })
}

/// The groups of an AWS listing in native form, exactly as written (no defaults added).
pub fn convert_groups(aws: &Json) -> Result<Vec<SecurityGroup>, Invalid> {
    let mut p = Problems::default();
    let (groups, _) = read_listing(&mut p, aws);
    if p.is_empty() { Ok(groups.into_iter().map(|g| g.group).collect()) } else { Err(Invalid { problems: p.list }) }
}

/// The groups of either listing; the flag says it was `describe-security-group-rules`.
fn read_listing(p: &mut Problems, aws: &Json) -> (Vec<ReadGroup>, bool) {
    let rules = matches!(aws, Json::Object(fields) if fields.iter().any(|(k, _)| k == "SecurityGroupRules"));
    if rules { (read_rule_listing(p, aws), true) } else { (read_groups(p, aws), false) }
}

/// Reads every instances document (native, or `describe-instances`), then binds the AWS
/// network interfaces to local interfaces as native entries of the same id say.
pub fn read_instances_documents(p: &mut Problems, docs: &[Json]) -> (Vec<ReadPrefixList>, Vec<ReadInstance>) {
    let mut lists = Vec::new();
    let mut natives = Vec::new();
    let mut aws = Vec::new();
    let mut aws_given = false;
    for (i, doc) in docs.iter().enumerate() {
        p.source = Source::Instances(i);
        if aws_instances::is_describe_instances(doc) {
            aws_given = true;
            aws.extend(aws_instances::read(p, doc));
        } else {
            let (l, n) = read_instances_document(p, doc);
            lists.extend(l);
            natives.extend(n);
        }
    }
    let mut out = Vec::new();
    for native in natives {
        let target = aws.iter_mut().find(|a: &&mut ReadInstance| a.instance.id == native.instance.id);
        match target {
            Some(a) if native.is_binding() => {
                a.instance.interface = native.instance.interface;
                a.instance.role = native.instance.role;
                a.instance.audit = native.instance.audit;
                a.instance.node = native.instance.node;
                a.path = format!("{} (bound to a local interface by {})", a.path, native.path);
            }
            None if aws_given && native.is_binding() => {
                p.source = native.source;
                p.add(
                    &join(&native.path, "id"),
                    format!(
                        "no network interface {:?} in the describe-instances output (an entry of only id, \
                         interface, role, audit and node says where an AWS network interface is on this node)",
                        native.instance.id
                    ),
                );
            }
            _ => out.push(native),
        }
    }
    p.source = Source::Document;
    out.extend(aws);
    (lists, out)
}

/// A native instances document: `instances` and `prefix_lists`, nothing else.
pub fn read_instances_document(p: &mut Problems, doc: &Json) -> (Vec<ReadPrefixList>, Vec<ReadInstance>) {
    let Some(fields) = p.object("", doc, &["instances", "prefix_lists"]) else {
        return (Vec::new(), Vec::new());
    };
    let lists =
        field(fields, "prefix_lists").map(|v| native::read_prefix_lists(p, "prefix_lists", v)).unwrap_or_default();
    let instances = field(fields, "instances").map(|v| native::read_instances(p, "instances", v)).unwrap_or_default();
    (lists, instances)
}

/// SPEC §2: the group whose `GroupName` is `default` is its VPC's default group; instances that
/// list no group join it (the one of their `vpc_id` when the file has several). Returns whether
/// the built-in default group still applies (no such group in the listing).
fn resolve_default_groups(
    p: &mut Problems,
    groups: &[ReadGroup],
    instances: &mut [ReadInstance],
    from_rules: bool,
) -> bool {
    // VPC (None: not given) → (group id, path).
    let mut defaults: BTreeMap<Option<&str>, (&str, &str)> = BTreeMap::new();
    for g in groups.iter().filter(|g| g.group.name.as_deref() == Some(super::DEFAULT_GROUP)) {
        if let Some((first, _)) = defaults.insert(g.vpc_id.as_deref(), (&g.group.id, &g.path)) {
            p.add(
                &join(&g.path, "GroupName"),
                format!(
                    "a second default group for {} (also {first}): each VPC has one",
                    g.vpc_id.as_deref().map_or("the same VPC".to_owned(), |v| format!("VPC {v}"))
                ),
            );
        }
    }
    if defaults.is_empty() {
        if from_rules {
            for i in instances.iter().filter(|i| !i.groups_listed) {
                p.source = i.source;
                p.warn(
                    &i.path,
                    "lists no security group and joins the built-in default group: a describe-security-group-rules \
                     listing does not say which group is its VPC's default (describe-security-groups does)",
                );
            }
            p.source = Source::Document;
        }
        return true;
    }
    let vpcs: Vec<String> = defaults.keys().map(|v| v.unwrap_or("(no VpcId)").to_owned()).collect();
    for i in instances.iter_mut().filter(|i| !i.groups_listed) {
        p.source = i.source;
        let chosen = match i.vpc_id.as_deref() {
            Some(vpc) => match defaults.get(&Some(vpc)) {
                Some((id, _)) => Some(*id),
                None => {
                    p.add(
                        &join(&i.path, "vpc_id"),
                        format!(
                            "the listing has no default group of VPC {vpc:?} (it has those of: {})",
                            vpcs.join(", ")
                        ),
                    );
                    None
                }
            },
            None if defaults.len() == 1 => defaults.values().next().map(|(id, _)| *id),
            None => {
                p.add(
                    &i.path,
                    format!(
                        "lists no security group, and the listing has the default groups of {} VPCs ({}): give \
                         vpc_id or security_groups",
                        defaults.len(),
                        vpcs.join(", ")
                    ),
                );
                None
            }
        };
        if let Some(id) = chosen {
            i.instance.security_groups = vec![id.to_owned()];
            i.groups_listed = true;
        }
    }
    p.source = Source::Document;
    false
}

/// Top-level keys of AWS output besides the listing: the pagination token, and the request
/// metadata boto3 adds (ignored).
fn read_top<'a>(p: &mut Problems, aws: &'a Json, listing: &str, max: usize) -> Option<&'a [Json]> {
    let top = p.object("", aws, &[listing, "NextToken", "ResponseMetadata"])?;
    if let Some(token) = field(top, "NextToken")
        && !matches!(token, Json::Null)
        && !matches!(token, Json::String(s) if s.is_empty())
    {
        p.warn(
            "NextToken",
            "this is one page of a paginated listing: groups or rules on later pages are missing (the AWS CLI \
             fetches every page unless --max-items or --no-paginate is given)",
        );
    }
    field(top, listing).and_then(|v| p.array(listing, v, max))
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
    let Some(items) = read_top(p, aws, "SecurityGroups", limits::SECURITY_GROUPS) else { return Vec::new() };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index("SecurityGroups", i);
        let Some(fields) = p.object(&path, item, GROUP_KEYS) else { continue };
        // The same checks as the native reader's, so that what is accepted here converts.
        let id = native::required_id(p, &path, fields, "GroupId");
        let name = native::optional_text(p, &path, fields, "GroupName");
        let description = native::optional_text(p, &path, fields, "Description");
        let vpc_id = native::optional_text(p, &path, fields, "VpcId");
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
                rule_keys: ["IpPermissions", "IpPermissionsEgress"],
                vpc_id,
            });
        }
    }
    out
}

/// A CIDR of an `IpRanges`/`Ipv6Ranges` entry, or `None` if it is invalid or (with a warning)
/// of the other family than an `icmp`/`icmpv6` permission: EC2 accepts those and never matches
/// them.
fn read_range_cidr(
    p: &mut Problems,
    path: &str,
    list_key: &str,
    text: &str,
    protocol: Option<Protocol>,
) -> Option<ipnet::IpNet> {
    let net = native::read_cidr(p, &path, text)?;
    let v4 = net.addr().is_ipv4();
    match (list_key, v4) {
        ("IpRanges" | "CidrIpv4", false) => {
            p.add(&path, format!("{net}: {list_key} holds IPv4 CIDRs"));
            return None;
        }
        ("Ipv6Ranges" | "CidrIpv6", true) => {
            p.add(&path, format!("{net}: {list_key} holds IPv6 CIDRs"));
            return None;
        }
        _ => {}
    }
    match (protocol, v4) {
        (Some(Protocol::Icmp), false) | (Some(Protocol::Icmpv6), true) => {
            let proto = protocol.map_or(String::new(), |x| x.to_string());
            p.warn(
                &path,
                format!(
                    "{net} is of the other IP family than protocol {proto}: EC2 accepts this and it never matches, \
                     so it is left out"
                ),
            );
            None
        }
        _ => Some(net),
    }
}

/// One AWS permission may become several native rules: one per distinct peer description, so
/// that descriptions survive the conversion.
fn read_permissions(p: &mut Problems, path: &str, value: &Json, references: &mut Vec<Reference>) -> Vec<Rule> {
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
        let mut left_out = false;
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
                    "IpRanges" | "Ipv6Ranges" => match read_range_cidr(p, &ipath, list_key, text, protocol) {
                        Some(net) => Peer::Cidr(net),
                        None => {
                            left_out = true;
                            continue;
                        }
                    },
                    "PrefixListIds" => Peer::PrefixList(text.to_owned()),
                    _ => Peer::Group(text.to_owned()),
                };
                if let (Peer::PrefixList(_) | Peer::Group(_), Some(protocol)) = (&peer, protocol) {
                    references.push(Reference { peer: peer.clone(), path: ipath.clone(), protocol });
                }
                peers.push((peer, description));
            }
        }
        if peers.is_empty() && p.list.len() == before && !left_out {
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

const RULE_KEYS: &[&str] = &[
    "SecurityGroupRuleId",
    "GroupId",
    "GroupOwnerId",
    "IsEgress",
    "IpProtocol",
    "FromPort",
    "ToPort",
    "CidrIpv4",
    "CidrIpv6",
    "PrefixListId",
    "ReferencedGroupInfo",
    "Description",
    "Tags",
    "SecurityGroupRuleArn",
];

const REFERENCED_GROUP_KEYS: &[&str] = &["GroupId", "PeeringStatus", "UserId", "VpcId", "VpcPeeringConnectionId"];

/// `describe-security-group-rules`: one entry per (group, direction, peer). Groups are made in
/// first-seen order, each rule in listing order; a group referenced (by a rule or an instance)
/// that has no rule in the listing is a group without rules.
fn read_rule_listing(p: &mut Problems, aws: &Json) -> Vec<ReadGroup> {
    let Some(items) = read_top(p, aws, "SecurityGroupRules", limits::AWS_RULE_ENTRIES) else { return Vec::new() };
    let mut out: Vec<ReadGroup> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index("SecurityGroupRules", i);
        let Some(fields) = p.object(&path, item, RULE_KEYS) else { continue };
        let before = p.list.len();
        let group = native::required_id(p, &path, fields, "GroupId");
        // EC2's own rule id is kept when it is one (`sgr-` and 17 hex digits): the API and
        // `describe-security-group-rules` then name the rule as EC2 did.
        let rule_id =
            native::optional_text(p, &path, fields, "SecurityGroupRuleId").filter(|id| super::rule_id::is_valid(id));
        let description = native::optional_text(p, &path, fields, "Description");
        let egress = match field(fields, "IsEgress") {
            None => {
                p.add(&join(&path, "IsEgress"), "missing");
                None
            }
            Some(v) => p.boolean(&join(&path, "IsEgress"), v),
        };
        let protocol = match field(fields, "IpProtocol") {
            None => {
                p.add(&join(&path, "IpProtocol"), "missing");
                None
            }
            Some(v) => native::read_protocol(p, &join(&path, "IpProtocol"), v),
        };
        let ports = protocol
            .and_then(|proto| read_aws_ports(p, &path, proto, field(fields, "FromPort"), field(fields, "ToPort")));
        let mut peers = Vec::new();
        let mut left_out = false;
        for key in ["CidrIpv4", "CidrIpv6"] {
            let kpath = join(&path, key);
            if let Some(text) = field(fields, key).and_then(|v| p.string(&kpath, v)) {
                match read_range_cidr(p, &kpath, key, text, protocol) {
                    Some(net) => peers.push((Peer::Cidr(net), kpath)),
                    None => left_out = true,
                }
            }
        }
        let kpath = join(&path, "PrefixListId");
        if let Some(text) = field(fields, "PrefixListId").and_then(|v| p.string(&kpath, v)) {
            peers.push((Peer::PrefixList(text.to_owned()), kpath));
        }
        if let Some(v) = field(fields, "ReferencedGroupInfo") {
            let rpath = join(&path, "ReferencedGroupInfo");
            if let Some(rfields) = p.object(&rpath, v, REFERENCED_GROUP_KEYS)
                && let Some(id) = native::required_id(p, &rpath, rfields, "GroupId")
            {
                peers.push((Peer::Group(id), join(&rpath, "GroupId")));
            }
        }
        if peers.len() > 1 {
            p.add(&path, "more than one peer (CidrIpv4, CidrIpv6, PrefixListId, ReferencedGroupInfo): AWS gives one");
        }
        if peers.is_empty() && p.list.len() == before && !left_out {
            p.add(&path, "no peer: give one of CidrIpv4, CidrIpv6, PrefixListId, ReferencedGroupInfo");
        }
        if p.list.len() != before {
            continue;
        }
        let (Some(group), Some(egress), Some(protocol), Some(ports)) = (group, egress, protocol, ports) else {
            continue;
        };
        let position = match out.iter().position(|g| g.group.id == group) {
            Some(n) => n,
            None => {
                out.push(empty_group(group, &path));
                out.len() - 1
            }
        };
        let Some(g) = out.get_mut(position) else { continue };
        for (peer, ppath) in peers {
            if !matches!(peer, Peer::Cidr(_)) {
                g.references.push(Reference { peer: peer.clone(), path: ppath, protocol });
            }
            let rule =
                Rule { protocol, ports, peers: vec![peer], description: description.clone(), id: rule_id.clone() };
            if egress { g.group.egress.push(rule) } else { g.group.ingress.push(rule) }
        }
    }
    // Groups that rules reference but that have no rule of their own exist all the same.
    let referenced: Vec<(String, String)> = out
        .iter()
        .flat_map(|g| &g.references)
        .filter_map(|r| match &r.peer {
            Peer::Group(id) => Some((id.clone(), r.path.clone())),
            _ => None,
        })
        .collect();
    for (id, path) in referenced {
        if !out.iter().any(|g| g.group.id == id) {
            out.push(empty_group(id, &path));
        }
    }
    out
}

fn empty_group(id: String, path: &str) -> ReadGroup {
    ReadGroup {
        group: SecurityGroup { id, name: None, description: None, ingress: Vec::new(), egress: Vec::new() },
        path: path.to_owned(),
        id_path: join(path, "GroupId"),
        references: Vec::new(),
        rule_keys: ["(inbound rules)", "(outbound rules)"],
        vpc_id: None,
    }
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
    let mut inner = Problems { source: p.source, ..Problems::default() };
    let ports = native::read_ports(&mut inner, path, protocol, from, to);
    for problem in inner.list {
        let path = problem.path.replace(".from_port", ".FromPort").replace(".to_port", ".ToPort");
        let message = problem.message.replace("from_port", "FromPort").replace("to_port", "ToPort");
        p.add(&path, message);
    }
    ports
}
