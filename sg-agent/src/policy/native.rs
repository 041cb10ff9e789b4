//! Reading the native policy document (SPEC §2), collecting every problem with its JSON path.
//!
//! Two phases: [`read_groups`]/[`read_prefix_lists`]/[`read_instances`] check each object on
//! its own; [`assemble`] checks what spans objects (duplicate ids, references, interfaces) and
//! applies the defaults. The AWS reader produces groups and reuses `assemble`.

use std::{collections::HashMap, fmt, net::IpAddr};

use ipnet::IpNet;

use super::{
    AddressFamily, ConntrackTimeouts, DEFAULT_GROUP, Document, Instance, Invalid, NodeService, Peer, Ports, PrefixList,
    PrefixListMeta, Protocol, Role, Rule, SecurityGroup, address,
    json::{At, Json, Key, Problems, field, index, join},
    limits, rule_id,
};

/// A group or prefix-list reference in a rule, with what is needed to check it.
#[derive(Debug, Clone)]
pub struct Reference {
    pub peer: Peer,
    /// The reference's JSON path.
    pub path: String,
    /// The rule's protocol (a prefix list or group with no address of its family matches
    /// nothing: a warning).
    pub protocol: Protocol,
}

/// A group as read, with the paths needed to report cross-object problems.
#[derive(Debug, Clone)]
pub struct ReadGroup {
    pub group: SecurityGroup,
    pub path: String,
    /// The path of its id (`id` in a native document, `GroupId` in an AWS one).
    pub id_path: String,
    /// Every group / prefix-list reference in its rules.
    pub references: Vec<Reference>,
    /// The keys of its rule lists (`ingress`/`egress`, or AWS's `IpPermissions`/
    /// `IpPermissionsEgress`), for warnings about them.
    pub rule_keys: [&'static str; 2],
    /// Its VPC (AWS input), for finding each VPC's default group.
    pub vpc_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ReadPrefixList {
    pub list: PrefixList,
    pub path: String,
}

#[derive(Debug, Clone)]
pub struct ReadInstance {
    pub instance: Instance,
    pub path: String,
    /// Whether the document listed groups (else it joins `default`).
    pub groups_listed: bool,
    /// The VPC it is in (AWS input with several VPCs: which `default` group it joins).
    pub vpc_id: Option<String>,
    /// The file it is in.
    pub source: super::Source,
    /// Whether reading it found no problem (checks of the whole instance are only made then).
    pub clean: bool,
    /// The keys the entry gave (an entry of only `id`, `interface`, `role`, `audit` binds an
    /// AWS network interface to a local interface).
    pub keys: Vec<String>,
}

impl ReadInstance {
    /// Whether this native entry only says where an instance described elsewhere (AWS
    /// `describe-instances`) is on this node.
    pub fn is_binding(&self) -> bool {
        self.keys.iter().all(|k| matches!(k.as_str(), "id" | "interface" | "role" | "audit" | "node"))
    }
}

/// Parses and validates a native document.
pub fn parse_document(text: &str) -> Result<Document, Invalid> {
    let json = parse_json(text)?;
    read_document(&json)
}

/// Parses JSON text, with the size limit and a positioned syntax error.
pub fn parse_json(text: &str) -> Result<Json, Invalid> {
    if text.len() > limits::DOCUMENT_BYTES {
        return Err(Invalid::one(
            "",
            format!("document is {} bytes, more than the limit of {}", text.len(), limits::DOCUMENT_BYTES),
        ));
    }
    Json::parse(text).map_err(|e| Invalid::one("", format!("not valid JSON: {e}")))
}

/// Validates a parsed native document.
pub fn read_document(json: &Json) -> Result<Document, Invalid> {
    let mut p = Problems::default();
    let Some(top) = p.object("", json, &["security_groups", "prefix_lists", "instances", "node_services"]) else {
        return Err(Invalid { problems: p.list });
    };
    let groups = field(top, "security_groups").map(|v| read_groups(&mut p, "security_groups", v)).unwrap_or_default();
    let lists = field(top, "prefix_lists").map(|v| read_prefix_lists(&mut p, "prefix_lists", v)).unwrap_or_default();
    let instances = field(top, "instances").map(|v| read_instances(&mut p, "instances", v)).unwrap_or_default();
    let services = field(top, "node_services").map(|v| read_node_services(&mut p, "node_services", v));
    assemble(p, Parts { groups, lists, instances, node_services: services, builtin_default: true })
}

/// `node_services`: service addresses, each `addr`, `addr:proto/port` or `[v6]:proto/port`.
pub fn read_node_services(p: &mut Problems, path: &str, value: &Json) -> Vec<NodeService> {
    let Some(items) = p.array(path, value, limits::NODE_SERVICES) else { return Vec::new() };
    let mut out: Vec<NodeService> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ipath = At(path, i);
        let Some(text) = p.string(&ipath, item) else { continue };
        match NodeService::parse(text) {
            Ok(s) if out.contains(&s) => p.add(&ipath, format!("{s} is listed twice")),
            Ok(s) => out.push(s),
            Err(e) => p.add(&ipath, e),
        }
    }
    out
}

pub fn read_groups(p: &mut Problems, path: &str, value: &Json) -> Vec<ReadGroup> {
    let Some(items) = p.array(path, value, limits::SECURITY_GROUPS) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index(path, i);
        let Some(fields) = p.object(&path, item, &["id", "name", "description", "ingress", "egress"]) else {
            continue;
        };
        let id = required_id(p, &path, fields, "id");
        let name = optional_text(p, &path, fields, "name");
        let description = optional_text(p, &path, fields, "description");
        let mut references = Vec::new();
        let ingress = match field(fields, "ingress") {
            // Absent or []: no inbound (the custom-group default).
            None => Vec::new(),
            Some(v) => read_rules(p, &join(&path, "ingress"), v, &mut references),
        };
        let egress = match field(fields, "egress") {
            // Absent: AWS's creation default, allow all outbound. `[]`: nothing.
            None => Rule::allow_all_outbound(),
            Some(v) => read_rules(p, &join(&path, "egress"), v, &mut references),
        };
        if let Some(id) = id {
            let id_path = join(&path, "id");
            out.push(ReadGroup {
                group: SecurityGroup { id, name, description, ingress, egress },
                path,
                id_path,
                references,
                rule_keys: ["ingress", "egress"],
                vpc_id: None,
            });
        }
    }
    out
}

fn read_rules(p: &mut Problems, path: &str, value: &Json, references: &mut Vec<Reference>) -> Vec<Rule> {
    let Some(items) = p.array(path, value, limits::RULES_PER_GROUP) else {
        return Vec::new();
    };
    items.iter().enumerate().filter_map(|(i, item)| read_rule(p, &At(path, i), item, references)).collect()
}

const RULE_KEYS: &[&str] =
    &["protocol", "from_port", "to_port", "cidrs", "groups", "prefix_lists", "description", "id"];

fn read_rule(
    p: &mut Problems,
    path: &(impl fmt::Display + ?Sized),
    value: &Json,
    references: &mut Vec<Reference>,
) -> Option<Rule> {
    let fields = p.object(path, value, RULE_KEYS)?;
    let before = p.list.len();
    let protocol = match field(fields, "protocol") {
        None => {
            p.add(&Key(path, "protocol"), "missing (tcp, udp, icmp, icmpv6, all or a protocol number)");
            None
        }
        Some(v) => read_protocol(p, &Key(path, "protocol"), v),
    };
    let from = field(fields, "from_port");
    let to = field(fields, "to_port");
    let ports = protocol.and_then(|proto| read_ports(p, path, proto, from, to));

    let mut peers = Vec::new();
    if let Some(v) = field(fields, "cidrs") {
        let cpath = Key(path, "cidrs");
        if let Some(items) = p.array(&cpath, v, limits::PEERS_PER_RULE) {
            for (i, item) in items.iter().enumerate() {
                let ipath = At(&cpath, i);
                let Some(net) = p.string(&ipath, item).and_then(|s| read_cidr(p, &ipath, s)) else {
                    continue;
                };
                match (protocol, net) {
                    (Some(Protocol::Icmp), IpNet::V6(_)) => {
                        p.add(&ipath, format!("{net} is IPv6, but protocol icmp matches IPv4 only (use icmpv6)"));
                    }
                    (Some(Protocol::Icmpv6), IpNet::V4(_)) => {
                        p.add(&ipath, format!("{net} is IPv4, but protocol icmpv6 matches IPv6 only (use icmp)"));
                    }
                    _ => peers.push(Peer::Cidr(net)),
                }
            }
        }
    }
    for (key, make) in [("groups", Peer::Group as fn(String) -> Peer), ("prefix_lists", Peer::PrefixList)] {
        let Some(v) = field(fields, key) else { continue };
        let lpath = Key(path, key);
        let Some(items) = p.array(&lpath, v, limits::PEERS_PER_RULE) else { continue };
        for (i, item) in items.iter().enumerate() {
            let ipath = At(&lpath, i);
            if let Some(id) = p.string(&ipath, item) {
                let peer = make(id.to_owned());
                if let Some(protocol) = protocol {
                    references.push(Reference { peer: peer.clone(), path: ipath.to_string(), protocol });
                }
                peers.push(peer);
            }
        }
    }
    let description = optional_text(p, path, fields, "description");
    if peers.is_empty() && p.list.len() == before {
        p.add(path, "no peer: give at least one of cidrs, groups, prefix_lists");
    }
    let id = field(fields, "id").and_then(|v| {
        let ipath = Key(path, "id");
        let id = p.string(&ipath, v)?;
        if !rule_id::is_valid(id) {
            p.add(&ipath, format!("{id:?} is not a security group rule id (sgr- and 17 hex digits, like EC2's)"));
            return None;
        }
        if peers.len() != 1 {
            // EC2 has one rule per peer: an id names exactly one.
            p.add(
                &ipath,
                format!(
                    "a rule with an id has exactly one peer (EC2 has one rule per peer); this one has {}",
                    peers.len()
                ),
            );
            return None;
        }
        Some(id.to_owned())
    });
    if peers.len() > limits::PEERS_PER_RULE {
        p.add(path, format!("{} peers, more than the limit of {}", peers.len(), limits::PEERS_PER_RULE));
    }
    if p.list.len() != before {
        return None;
    }
    Some(Rule { protocol: protocol?, ports: ports?, peers, description, id })
}

/// `"tcp"`, `"udp"`, `"icmp"`, `"icmpv6"`, `"all"`, `"-1"`, or 0-255 as a number or string.
pub fn read_protocol(p: &mut Problems, path: &(impl fmt::Display + ?Sized), value: &Json) -> Option<Protocol> {
    let parsed = match value {
        Json::String(s) => Protocol::from_name(s),
        Json::Number(n) => match n.as_i64() {
            Some(-1) => Some(Protocol::All),
            Some(v) => u8::try_from(v).ok().map(Protocol::from_number),
            None => None,
        },
        _ => None,
    };
    if parsed.is_none() {
        let shown = match value {
            Json::String(s) => format!("{s:?}"),
            Json::Number(n) => n.to_string(),
            other => other.kind().to_owned(),
        };
        p.add(path, format!("{shown} is not a protocol (tcp, udp, icmp, icmpv6, all, -1, or a number 0-255)"));
    }
    parsed
}

/// `from_port`/`to_port` for a protocol; `path` is the rule's.
pub fn read_ports(
    p: &mut Problems,
    path: &(impl fmt::Display + ?Sized),
    protocol: Protocol,
    from: Option<&Json>,
    to: Option<&Json>,
) -> Option<Ports> {
    let from_path = Key(path, "from_port");
    let to_path = Key(path, "to_port");
    match protocol {
        Protocol::Tcp | Protocol::Udp => match (from, to) {
            (None, None) => Some(Ports::All),
            (Some(_), None) => {
                p.add(&to_path, "missing: from_port is given, so to_port must be too");
                None
            }
            (None, Some(_)) => {
                p.add(&from_path, "missing: to_port is given, so from_port must be too");
                None
            }
            (Some(f), Some(t)) => {
                let lo = p.integer(&from_path, f, 0, 65535, "a port (0-65535)");
                let hi = p.integer(&to_path, t, 0, 65535, "a port (0-65535)");
                let (lo, hi) = (lo? as u16, hi? as u16);
                if lo > hi {
                    p.add(&to_path, format!("{hi} is below from_port {lo}"));
                    return None;
                }
                Some(Ports::Range(lo, hi))
            }
        },
        Protocol::Icmp | Protocol::Icmpv6 => match (from, to) {
            (None, None) => Some(Ports::Icmp { ty: None, code: None }),
            (Some(_), None) => {
                p.add(
                    &to_path,
                    "missing: from_port (the ICMP type) is given, so to_port (the code, -1 for any) must be too",
                );
                None
            }
            (None, Some(_)) => {
                p.add(
                    &from_path,
                    "missing: to_port (the ICMP code) is given, so from_port (the type, -1 for any) must be too",
                );
                None
            }
            (Some(f), Some(t)) => {
                let ty = p.integer(&from_path, f, -1, 255, "an ICMP type (0-255, or -1 for any)");
                let code = p.integer(&to_path, t, -1, 255, "an ICMP code (0-255, or -1 for any)");
                let (ty, code) = (ty?, code?);
                if ty == -1 && code != -1 {
                    p.add(&to_path, format!("code {code} needs a type, but from_port is -1 (any type)"));
                    return None;
                }
                Some(Ports::Icmp { ty: u8::try_from(ty).ok(), code: u8::try_from(code).ok() })
            }
        },
        // SPEC §2: ports are ignored for `all` and other protocols; still reject non-numbers.
        Protocol::All | Protocol::Number(_) => {
            if let Some(f) = from {
                p.integer(&from_path, f, -1, 65535, "a port (-1-65535)");
            }
            if let Some(t) = to {
                p.integer(&to_path, t, -1, 65535, "a port (-1-65535)");
            }
            Some(Ports::All)
        }
    }
}

/// A CIDR, or a bare address (a /32 or /128). Host bits must be zero: `10.0.0.1/24` is almost
/// always a typo for something else, and silently widening or narrowing it would be worse.
pub fn read_cidr(p: &mut Problems, path: &(impl fmt::Display + ?Sized), text: &str) -> Option<IpNet> {
    let net = match address::parse_net(text) {
        Ok(net) => net,
        Err(address::AddressError::Syntax) => {
            p.add(path, format!("{text:?} is not a CIDR (like 10.0.0.0/16, 2001:db8::/32) or an IP address"));
            return None;
        }
        Err(e) => {
            p.add(path, format!("{text:?}: {e}"));
            return None;
        }
    };
    if net.trunc() != net {
        p.add(path, format!("{text} has host bits set (the network is {})", net.trunc()));
        return None;
    }
    Some(net)
}

pub fn read_prefix_lists(p: &mut Problems, path: &str, value: &Json) -> Vec<ReadPrefixList> {
    let Some(items) = p.array(path, value, limits::PREFIX_LISTS) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index(path, i);
        let Some(fields) =
            p.object(&path, item, &["id", "name", "description", "cidrs", "max_entries", "address_family", "version"])
        else {
            continue;
        };
        let id = required_id(p, &path, fields, "id");
        let name = optional_text(p, &path, fields, "name");
        let mut meta =
            PrefixListMeta { description: optional_text(p, &path, fields, "description"), ..Default::default() };
        meta.max_entries = field(fields, "max_entries").and_then(|v| {
            let what = format!("a number of entries (1-{})", limits::CIDRS_PER_PREFIX_LIST);
            p.integer(&Key(&path, "max_entries"), v, 1, limits::CIDRS_PER_PREFIX_LIST as i64, &what).map(|n| n as u32)
        });
        meta.address_family = field(fields, "address_family").and_then(|v| {
            let fpath = Key(&path, "address_family");
            let text = p.string(&fpath, v)?;
            let family = AddressFamily::from_name(text);
            if family.is_none() {
                p.add(&fpath, format!("{text:?} is not an address family (IPv4 or IPv6)"));
            }
            family
        });
        meta.version = field(fields, "version")
            .and_then(|v| p.integer(&Key(&path, "version"), v, 1, i64::MAX, "a version (1 or more)").map(|n| n as u64));
        let mut cidrs = Vec::new();
        match field(fields, "cidrs") {
            None => p.add(&join(&path, "cidrs"), "missing (a list of CIDRs)"),
            Some(v) => {
                let cpath = Key(&path, "cidrs");
                if let Some(items) = p.array(&cpath, v, limits::CIDRS_PER_PREFIX_LIST) {
                    for (j, c) in items.iter().enumerate() {
                        let ipath = At(&cpath, j);
                        // A CIDR, or {"cidr": ..., "description": ...} (an EC2 entry).
                        let (text, description) = match c {
                            Json::Object(_) => {
                                let Some(entry) = p.object(&ipath, c, &["cidr", "description"]) else { continue };
                                let description = optional_text(p, &ipath, entry, "description");
                                match field(entry, "cidr") {
                                    None => {
                                        p.add(&Key(&ipath, "cidr"), "missing (a CIDR)");
                                        continue;
                                    }
                                    Some(v) => (p.string(&Key(&ipath, "cidr"), v), description),
                                }
                            }
                            other => (p.string(&ipath, other), None),
                        };
                        let Some(net) = text.and_then(|s| read_cidr(p, &ipath, s)) else { continue };
                        if let Some(family) = meta.address_family
                            && AddressFamily::of(&net) != family
                        {
                            p.add(&ipath, format!("{net} is not {}, the list's address_family", family.name()));
                            continue;
                        }
                        if let Some(d) = description {
                            meta.entry_descriptions.insert(net, d);
                        }
                        cidrs.push(net);
                    }
                }
            }
        }
        if let Some(max) = meta.max_entries
            && cidrs.len() > max as usize
        {
            p.add(&join(&path, "cidrs"), format!("{} entries, more than max_entries {max}", cidrs.len()));
        }
        if let Some(id) = id {
            out.push(ReadPrefixList { list: PrefixList { id, name, cidrs, meta }, path });
        }
    }
    out
}

const INSTANCE_KEYS: &[&str] = &[
    "id",
    "interface",
    "role",
    "addresses",
    "security_groups",
    "source_dest_check",
    "audit",
    "vpc_id",
    "conntrack_timeouts",
    "node",
];

pub fn read_instances(p: &mut Problems, path: &str, value: &Json) -> Vec<ReadInstance> {
    let Some(items) = p.array(path, value, limits::INSTANCES) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index(path, i);
        let before = p.list.len();
        let Some(fields) = p.object(&path, item, INSTANCE_KEYS) else {
            continue;
        };
        let id = required_id(p, &path, fields, "id");
        let interface = field(fields, "interface").and_then(|v| {
            let ipath = Key(&path, "interface");
            let name = p.string(&ipath, v)?;
            valid_interface_name(name)
                .map_err(|why| p.add(&ipath, format!("{name:?} is not an interface name: {why}")))
                .ok()?;
            Some(name.to_owned())
        });
        let role = match field(fields, "role") {
            None => Some(Role::Workload),
            Some(v) => {
                let rpath = Key(&path, "role");
                match p.string(&rpath, v) {
                    Some("workload") => Some(Role::Workload),
                    Some("host") => Some(Role::Host),
                    Some(other) => {
                        p.add(&rpath, format!("{other:?} is not a role (workload or host)"));
                        None
                    }
                    None => None,
                }
            }
        };
        let mut addresses = Vec::new();
        if let Some(v) = field(fields, "addresses") {
            let apath = Key(&path, "addresses");
            if let Some(items) = p.array(&apath, v, limits::ADDRESSES_PER_INSTANCE) {
                for (j, a) in items.iter().enumerate() {
                    let ipath = At(&apath, j);
                    let Some(text) = p.string(&ipath, a) else { continue };
                    if let Some(addr) = read_instance_address(p, &ipath, text) {
                        if addresses.contains(&addr) {
                            p.add(&ipath, format!("{addr} is listed twice"));
                        } else {
                            addresses.push(addr);
                        }
                    }
                }
            }
        }
        let mut groups = Vec::new();
        let mut groups_listed = false;
        if let Some(v) = field(fields, "security_groups") {
            let gpath = Key(&path, "security_groups");
            if let Some(items) = p.array(&gpath, v, limits::GROUPS_PER_INSTANCE) {
                groups_listed = !items.is_empty();
                for (j, g) in items.iter().enumerate() {
                    let ipath = At(&gpath, j);
                    let Some(id) = p.string(&ipath, g) else { continue };
                    if groups.iter().any(|x: &String| x == id) {
                        p.add(&ipath, format!("group {id:?} is listed twice"));
                    } else {
                        groups.push(id.to_owned());
                    }
                }
            }
        }
        let source_dest_check = match field(fields, "source_dest_check") {
            None => Some(true),
            Some(v) => p.boolean(&Key(&path, "source_dest_check"), v),
        };
        let audit = match field(fields, "audit") {
            None => Some(false),
            Some(v) => p.boolean(&Key(&path, "audit"), v),
        };
        let node = field(fields, "node").and_then(|v| {
            let npath = Key(&path, "node");
            let name = p.string(&npath, v)?;
            valid_node_name(name).map_err(|why| p.add(&npath, format!("{name:?} is not a node name: {why}"))).ok()?;
            Some(name.to_owned())
        });
        let vpc_id = optional_text(p, &path, fields, "vpc_id");
        let conntrack_timeouts = match field(fields, "conntrack_timeouts") {
            None => Some(ConntrackTimeouts::default()),
            Some(v) => read_conntrack_timeouts(p, &Key(&path, "conntrack_timeouts"), v),
        };
        if let (Some(id), Some(role), Some(source_dest_check), Some(audit), Some(conntrack_timeouts)) =
            (id, role, source_dest_check, audit, conntrack_timeouts)
        {
            out.push(ReadInstance {
                instance: Instance {
                    id,
                    interface,
                    role,
                    addresses,
                    security_groups: groups,
                    source_dest_check,
                    audit,
                    conntrack_timeouts,
                    node,
                },
                path,
                groups_listed,
                vpc_id,
                source: p.source,
                clean: p.list.len() == before,
                keys: fields.iter().map(|(k, _)| k.clone()).collect(),
            });
        }
    }
    out
}

/// An instance's own address: strictly parsed, and unicast.
pub fn read_instance_address(p: &mut Problems, path: &(impl fmt::Display + ?Sized), text: &str) -> Option<IpAddr> {
    match address::parse_ip(text) {
        Ok(addr) => match address::not_unicast(&addr) {
            Some(why) => {
                p.add(path, format!("{addr} is {why}, not an instance's own (unicast) address"));
                None
            }
            None => Some(addr),
        },
        Err(address::AddressError::Syntax) => {
            p.add(path, format!("{text:?} is not an IP address"));
            None
        }
        Err(e) => {
            p.add(path, format!("{text:?}: {e}"));
            None
        }
    }
}

/// `conntrack_timeouts`: `tcp_established`, `udp`, `udp_stream` in EC2's ranges.
fn read_conntrack_timeouts(
    p: &mut Problems,
    path: &(impl fmt::Display + ?Sized),
    value: &Json,
) -> Option<ConntrackTimeouts> {
    let keys: Vec<&str> = ConntrackTimeouts::RANGES.iter().map(|(k, _, _)| *k).collect();
    let fields = p.object(path, value, &keys)?;
    let before = p.list.len();
    let mut out = ConntrackTimeouts::default();
    for (key, min, max) in ConntrackTimeouts::RANGES {
        let Some(v) = field(fields, key) else { continue };
        let what = format!("a timeout in seconds ({min}-{max}, EC2's range)");
        let value = p.integer(&Key(path, key), v, i64::from(min), i64::from(max), &what).map(|n| n as u32);
        match key {
            "tcp_established" => out.tcp_established = value,
            "udp" => out.udp = value,
            _ => out.udp_stream = value,
        }
    }
    (p.list.len() == before).then_some(out)
}

/// Linux interface names: 1-15 bytes, no '/', ':' or whitespace, not "." or "..".
pub fn valid_interface_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 15 {
        return Err("must be 1 to 15 characters");
    }
    if name == "." || name == ".." {
        return Err("\".\" and \"..\" are not allowed");
    }
    if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control()) {
        return Err("must not contain '/', ':' or whitespace");
    }
    Ok(())
}

/// Node names (an instance's `node`, `run --node`): 1-253 characters of letters, digits, '.',
/// '-' and '_', as host names are. A node's name is part of its key in the store
/// (`<prefix>/nodes/<name>/`), so it must not hold a '/'.
pub fn valid_node_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be 1 to 253 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) {
        return Err("only letters, digits, '.', '-' and '_' are allowed");
    }
    Ok(())
}

/// What the readers produced, for [`assemble`].
pub struct Parts {
    pub groups: Vec<ReadGroup>,
    pub lists: Vec<ReadPrefixList>,
    pub instances: Vec<ReadInstance>,
    /// `None`: EC2's defaults.
    pub node_services: Option<Vec<NodeService>>,
    /// Whether the built-in `default` group is added when no group has that id (not when an
    /// AWS document brought the default groups of its VPCs).
    pub builtin_default: bool,
}

/// Checks everything that spans objects, then applies the defaults.
pub fn assemble(mut p: Problems, parts: Parts) -> Result<Document, Invalid> {
    let Parts { groups, lists, instances, node_services, builtin_default } = parts;
    let mut group_ids: HashMap<&str, &str> = HashMap::new();
    for g in &groups {
        if let Some(first) = group_ids.insert(&g.group.id, &g.path) {
            p.add(&g.id_path, format!("duplicate security group id {:?} (also {first})", g.group.id));
        }
    }
    let mut list_ids: HashMap<&str, &ReadPrefixList> = HashMap::new();
    for l in &lists {
        if let Some(first) = list_ids.insert(&l.list.id, l) {
            p.add(&join(&l.path, "id"), format!("duplicate prefix list id {:?} (also {})", l.list.id, first.path));
        }
    }
    let group_exists = |id: &str| group_ids.contains_key(id) || (builtin_default && id == DEFAULT_GROUP);
    // Group id → the families of its members' addresses (for warnings).
    let mut member_families: HashMap<String, (bool, bool)> = HashMap::new();
    let default = [DEFAULT_GROUP.to_owned()];
    for i in &instances {
        let groups: &[String] = if i.groups_listed { &i.instance.security_groups } else { &default };
        for g in groups {
            let f = member_families.entry(g.clone()).or_default();
            f.0 |= i.instance.addresses.iter().any(IpAddr::is_ipv4);
            f.1 |= i.instance.addresses.iter().any(IpAddr::is_ipv6);
        }
    }
    // A rule id names one rule in the whole document, as in EC2.
    let mut rule_ids: HashMap<&str, String> = HashMap::new();
    for g in &groups {
        for (key, rules) in [(g.rule_keys[0], &g.group.ingress), (g.rule_keys[1], &g.group.egress)] {
            for (i, rule) in rules.iter().enumerate() {
                let Some(id) = &rule.id else { continue };
                let path = join(&index(&join(&g.path, key), i), "id");
                match rule_ids.get(id.as_str()) {
                    Some(first) => p.add(&path, format!("duplicate rule id {id:?} (also {first})")),
                    None => {
                        rule_ids.insert(id, path);
                    }
                }
            }
        }
    }
    for g in &groups {
        for r in &g.references {
            let family = match r.protocol {
                Protocol::Icmp => Some((true, "IPv4", "icmp")),
                Protocol::Icmpv6 => Some((false, "IPv6", "icmpv6")),
                _ => None,
            };
            match &r.peer {
                Peer::Group(id) if !group_exists(id) => p.add(&r.path, format!("unknown security group {id:?}")),
                Peer::PrefixList(id) => match list_ids.get(id.as_str()) {
                    None => p.add(&r.path, format!("unknown prefix list {id:?}")),
                    Some(list) => {
                        if let Some((v4, name, proto)) = family
                            && !list.list.cidrs.iter().any(|c| c.addr().is_ipv4() == v4)
                        {
                            p.warn(
                                &r.path,
                                format!(
                                    "prefix list {id:?} holds no {name} CIDR, and protocol {proto} matches {name} \
                                     only: this peer matches nothing"
                                ),
                            );
                        }
                    }
                },
                Peer::Group(id) => {
                    if let (Some((v4, name, proto)), Some(&(has4, has6))) = (family, member_families.get(id.as_str()))
                        && (has4 || has6)
                        && !(if v4 { has4 } else { has6 })
                    {
                        p.warn(
                            &r.path,
                            format!(
                                "no member of group {id:?} has an {name} address, and protocol {proto} matches \
                                 {name} only: this peer matches nothing (for now)"
                            ),
                        );
                    }
                }
                Peer::Cidr(_) => {}
            }
        }
        for (rules, key) in [(&g.group.ingress, g.rule_keys[0]), (&g.group.egress, g.rule_keys[1])] {
            let count: usize = rules.iter().map(|r| r.peers.len()).sum();
            if count > super::aws_quotas::RULES_PER_DIRECTION {
                p.warn(
                    &join(&g.path, key),
                    format!(
                        "{count} rules (one per peer), more than AWS's default quota of {} per direction: valid \
                         here, but EC2 would refuse it",
                        super::aws_quotas::RULES_PER_DIRECTION
                    ),
                );
            }
        }
    }
    let mut instance_ids: HashMap<&str, &str> = HashMap::new();
    // By interface name: the instances on it so far, with their node. One interface name may
    // serve one instance on each node (every node has its `eth0`); an instance that names no
    // node could be local on any of them.
    let mut interfaces: HashMap<&str, Vec<(Option<&str>, &str)>> = HashMap::new();
    let mut addresses: HashMap<IpAddr, &str> = HashMap::new();
    for i in &instances {
        p.source = i.source;
        if let Some(first) = instance_ids.insert(&i.instance.id, &i.path) {
            p.add(&join(&i.path, "id"), format!("duplicate instance id {:?} (also {first})", i.instance.id));
        }
        if let Some(ifname) = &i.instance.interface {
            let node = i.instance.node.as_deref();
            let users = interfaces.entry(ifname).or_default();
            if let Some((_, first)) =
                users.iter().find(|(other, _)| other.is_none() || node.is_none() || *other == node)
            {
                p.add(&join(&i.path, "interface"), format!("interface {ifname:?} already belongs to {first}"));
            }
            users.push((node, &i.path));
        }
        // An address is one instance's: group membership and the source/destination check
        // would be ambiguous otherwise.
        for (j, addr) in i.instance.addresses.iter().enumerate() {
            if let Some(first) = addresses.insert(*addr, &i.path) {
                p.add(&index(&join(&i.path, "addresses"), j), format!("{addr} already belongs to {first}"));
            }
        }
        for (j, gid) in i.instance.security_groups.iter().enumerate() {
            if !group_exists(gid) {
                p.add(&index(&join(&i.path, "security_groups"), j), format!("unknown security group {gid:?}"));
            }
        }
        let inst = &i.instance;
        if i.clean
            && inst.interface.is_some()
            && inst.addresses.is_empty()
            && inst.source_dest_check
            && inst.role == Role::Workload
        {
            p.add(
                &i.path,
                "a local instance with no addresses and the source/destination check on would drop every packet: \
                 give its addresses (or source_dest_check: false)",
            );
        }
        if inst.security_groups.len() > super::aws_quotas::GROUPS_PER_INTERFACE {
            p.warn(
                &join(&i.path, "security_groups"),
                format!(
                    "{} groups, more than AWS's default quota of {} per network interface: valid here, but EC2 \
                     would refuse it",
                    inst.security_groups.len(),
                    super::aws_quotas::GROUPS_PER_INTERFACE
                ),
            );
        }
    }
    p.source = super::Source::Document;
    if !p.is_empty() {
        return Err(Invalid { problems: p.list });
    }

    let mut security_groups: Vec<SecurityGroup> = groups.into_iter().map(|g| g.group).collect();
    if builtin_default && !security_groups.iter().any(|g| g.id == DEFAULT_GROUP) {
        security_groups.push(SecurityGroup::aws_default());
    }
    let instances = instances
        .into_iter()
        .map(|i| {
            let mut instance = i.instance;
            if !i.groups_listed {
                instance.security_groups = vec![DEFAULT_GROUP.to_owned()];
            }
            instance
        })
        .collect();
    Ok(Document {
        security_groups,
        prefix_lists: lists.into_iter().map(|l| l.list).collect(),
        instances,
        node_services: node_services.unwrap_or_else(NodeService::ec2_defaults),
        warnings: p.warnings,
    })
}

pub(super) fn required_id(
    p: &mut Problems,
    path: &(impl fmt::Display + ?Sized),
    fields: &[(String, Json)],
    key: &str,
) -> Option<String> {
    let kpath = Key(path, key);
    match field(fields, key) {
        None => {
            p.add(&kpath, "missing");
            None
        }
        Some(v) => {
            let s = p.string(&kpath, v)?;
            if s.is_empty() || s.len() > limits::TEXT_LEN || s.chars().any(char::is_control) {
                p.add(&kpath, format!("must be 1 to {} printable characters", limits::TEXT_LEN));
                return None;
            }
            Some(s.to_owned())
        }
    }
}

pub(super) fn optional_text(
    p: &mut Problems,
    path: &(impl fmt::Display + ?Sized),
    fields: &[(String, Json)],
    key: &str,
) -> Option<String> {
    let kpath = Key(path, key);
    let s = p.string(&kpath, field(fields, key)?)?;
    if s.len() > limits::TEXT_LEN {
        p.add(&kpath, format!("longer than {} bytes", limits::TEXT_LEN));
        return None;
    }
    Some(s.to_owned())
}

/// The native JSON text of a document (as `import-aws` prints it), every default written out.
pub fn write_document(doc: &Document) -> String {
    let services = (doc.node_services != NodeService::ec2_defaults())
        .then(|| doc.node_services.iter().map(ToString::to_string).collect());
    let document = out::Document {
        security_groups: doc.security_groups.iter().map(out::Group::of).collect(),
        prefix_lists: doc.prefix_lists.iter().map(out::PrefixList::of).collect(),
        instances: doc.instances.iter().map(out::Instance::of).collect(),
        node_services: services,
    };
    // Plain structs of strings, numbers and lists: serialising them cannot fail.
    serde_json::to_string_pretty(&document).unwrap_or_default()
}

/// The native document's shape for writing (reading goes through [`read_document`], which
/// collects every problem with its path, so it does not use these).
mod out {
    use std::net::IpAddr;

    use serde::Serialize;

    use super::super::{ConntrackTimeouts, Peer, Ports, Role};

    #[derive(Serialize)]
    pub struct Document<'a> {
        pub security_groups: Vec<Group<'a>>,
        pub prefix_lists: Vec<PrefixList<'a>>,
        pub instances: Vec<Instance<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub node_services: Option<Vec<String>>,
    }

    #[derive(Serialize)]
    pub struct Group<'a> {
        id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<&'a str>,
        ingress: Vec<Rule<'a>>,
        egress: Vec<Rule<'a>>,
    }

    impl<'a> Group<'a> {
        pub fn of(g: &'a super::SecurityGroup) -> Self {
            Group {
                id: &g.id,
                name: g.name.as_deref(),
                description: g.description.as_deref(),
                ingress: g.ingress.iter().map(Rule::of).collect(),
                egress: g.egress.iter().map(Rule::of).collect(),
            }
        }
    }

    #[derive(Serialize)]
    struct Rule<'a> {
        protocol: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        from_port: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        to_port: Option<i32>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        cidrs: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        groups: Vec<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        prefix_lists: Vec<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    }

    impl<'a> Rule<'a> {
        fn of(r: &'a super::Rule) -> Self {
            let (from_port, to_port) = match r.ports {
                Ports::All => (None, None),
                Ports::Range(lo, hi) => (Some(i32::from(lo)), Some(i32::from(hi))),
                Ports::Icmp { ty, code } => (Some(ty.map_or(-1, i32::from)), Some(code.map_or(-1, i32::from))),
            };
            let mut rule = Rule {
                protocol: r.protocol.to_string(),
                from_port,
                to_port,
                cidrs: Vec::new(),
                groups: Vec::new(),
                prefix_lists: Vec::new(),
                description: r.description.as_deref(),
                id: r.id.as_deref(),
            };
            for peer in &r.peers {
                match peer {
                    Peer::Cidr(net) => rule.cidrs.push(net.to_string()),
                    Peer::Group(id) => rule.groups.push(id),
                    Peer::PrefixList(id) => rule.prefix_lists.push(id),
                }
            }
            rule
        }
    }

    #[derive(Serialize)]
    pub struct PrefixList<'a> {
        id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        address_family: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        max_entries: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
        cidrs: Vec<Entry<'a>>,
    }

    /// A CIDR, or a CIDR with its description.
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Entry<'a> {
        Cidr(String),
        Described { cidr: String, description: &'a str },
    }

    impl<'a> PrefixList<'a> {
        pub fn of(l: &'a super::PrefixList) -> Self {
            let cidrs = l
                .cidrs
                .iter()
                .map(|c| match l.meta.entry_descriptions.get(c) {
                    Some(description) => Entry::Described { cidr: c.to_string(), description },
                    None => Entry::Cidr(c.to_string()),
                })
                .collect();
            PrefixList {
                id: &l.id,
                name: l.name.as_deref(),
                description: l.meta.description.as_deref(),
                address_family: l.meta.address_family.map(super::super::AddressFamily::name),
                max_entries: l.meta.max_entries,
                version: l.meta.version,
                cidrs,
            }
        }
    }

    #[derive(Serialize)]
    pub struct Instance<'a> {
        id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        interface: Option<&'a str>,
        role: Role,
        addresses: &'a [IpAddr],
        security_groups: &'a [String],
        source_dest_check: bool,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        audit: bool,
        #[serde(skip_serializing_if = "ConntrackTimeouts::is_empty")]
        conntrack_timeouts: ConntrackTimeouts,
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<&'a str>,
    }

    impl<'a> Instance<'a> {
        pub fn of(i: &'a super::Instance) -> Self {
            Instance {
                id: &i.id,
                interface: i.interface.as_deref(),
                role: i.role,
                addresses: &i.addresses,
                security_groups: &i.security_groups,
                source_dest_check: i.source_dest_check,
                audit: i.audit,
                conntrack_timeouts: i.conntrack_timeouts,
                node: i.node.as_deref(),
            }
        }
    }
}
