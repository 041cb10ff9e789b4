//! Native → AWS (`sg-agent export-aws`): the document's groups as `aws ec2
//! describe-security-groups` prints them, plus the instances document they need (native
//! `instances` and `prefix_lists`, which AWS's listing does not hold), so that a document can be
//! taken back to EC2 — and `import-aws` of the result enforces exactly what the document did.
//!
//! What AWS's shape cannot say is written so that the meaning is kept: a rule for all ports of
//! TCP/UDP becomes 0-65535; a group without a name is named by its id; a group other than
//! `default` that is *named* `default` is named by its id (EC2 reads the `default`-named group
//! as the VPC's default); every instance lists its groups. `node_services` has no AWS form (EC2's
//! are fixed): callers warn when a document changes them.

use serde_json::{Value, json};

use super::{DEFAULT_GROUP, Document, NodeService, Peer, Ports, Protocol, Rule, SecurityGroup, native};

/// The `describe-security-groups` JSON of the document's groups, and its instances document.
pub fn to_aws(doc: &Document) -> (String, String) {
    let groups: Vec<Value> = doc.security_groups.iter().map(group).collect();
    let aws = serde_json::to_string_pretty(&json!({ "SecurityGroups": groups })).unwrap_or_default();
    let instances = Document {
        security_groups: Vec::new(),
        prefix_lists: doc.prefix_lists.clone(),
        instances: doc.instances.clone(),
        node_services: NodeService::ec2_defaults(),
        warnings: Vec::new(),
    };
    // An instances document holds only `instances` and `prefix_lists`.
    let mut text: Value = serde_json::from_str(&native::write_document(&instances)).unwrap_or_default();
    if let Value::Object(fields) = &mut text {
        fields.retain(|k, _| k == "instances" || k == "prefix_lists");
    }
    (aws, serde_json::to_string_pretty(&text).unwrap_or_default())
}

/// Whether the document's node services differ from EC2's (which export cannot carry).
pub fn loses_node_services(doc: &Document) -> bool {
    doc.node_services != NodeService::ec2_defaults()
}

fn group(g: &SecurityGroup) -> Value {
    let name = match g.name.as_deref() {
        Some(DEFAULT_GROUP) if g.id != DEFAULT_GROUP => g.id.as_str(),
        Some(name) => name,
        None if g.id == DEFAULT_GROUP => DEFAULT_GROUP,
        None => g.id.as_str(),
    };
    json!({
        "GroupId": g.id,
        "GroupName": name,
        "Description": g.description.clone().unwrap_or_default(),
        "IpPermissions": g.ingress.iter().map(permission).collect::<Vec<_>>(),
        "IpPermissionsEgress": g.egress.iter().map(permission).collect::<Vec<_>>(),
    })
}

fn permission(r: &Rule) -> Value {
    let protocol = match r.protocol {
        Protocol::All => "-1".to_owned(),
        p @ (Protocol::Tcp | Protocol::Udp | Protocol::Icmp | Protocol::Icmpv6) => p.to_string(),
        Protocol::Number(n) => n.to_string(),
    };
    let mut p = serde_json::Map::new();
    p.insert("IpProtocol".into(), json!(protocol));
    let ports = match (r.protocol, r.ports) {
        (Protocol::Tcp | Protocol::Udp, Ports::All) => Some((0, 65535)),
        (Protocol::Tcp | Protocol::Udp, Ports::Range(lo, hi)) => Some((i32::from(lo), i32::from(hi))),
        (Protocol::Icmp | Protocol::Icmpv6, Ports::Icmp { ty, code }) => {
            Some((ty.map_or(-1, i32::from), code.map_or(-1, i32::from)))
        }
        (Protocol::Icmp | Protocol::Icmpv6, _) => Some((-1, -1)),
        _ => None,
    };
    if let Some((from, to)) = ports {
        p.insert("FromPort".into(), json!(from));
        p.insert("ToPort".into(), json!(to));
    }
    let described = |mut entry: serde_json::Map<String, Value>| {
        if let Some(d) = &r.description {
            entry.insert("Description".into(), json!(d));
        }
        Value::Object(entry)
    };
    let (mut v4, mut v6, mut lists, mut groups) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for peer in &r.peers {
        let mut entry = serde_json::Map::new();
        match peer {
            Peer::Cidr(net) if net.addr().is_ipv4() => {
                entry.insert("CidrIp".into(), json!(net.to_string()));
                v4.push(described(entry));
            }
            Peer::Cidr(net) => {
                entry.insert("CidrIpv6".into(), json!(net.to_string()));
                v6.push(described(entry));
            }
            Peer::PrefixList(id) => {
                entry.insert("PrefixListId".into(), json!(id));
                lists.push(described(entry));
            }
            Peer::Group(id) => {
                entry.insert("GroupId".into(), json!(id));
                groups.push(described(entry));
            }
        }
    }
    p.insert("IpRanges".into(), Value::Array(v4));
    p.insert("Ipv6Ranges".into(), Value::Array(v6));
    p.insert("PrefixListIds".into(), Value::Array(lists));
    p.insert("UserIdGroupPairs".into(), Value::Array(groups));
    Value::Object(p)
}
