//! Reading the native policy document (SPEC §2), collecting every problem with its JSON path.
//!
//! Two phases: [`read_groups`]/[`read_prefix_lists`]/[`read_instances`] check each object on
//! its own; [`assemble`] checks what spans objects (duplicate ids, references, interfaces) and
//! applies the defaults. The AWS reader produces groups and reuses `assemble`.

use std::{collections::HashMap, fmt, net::IpAddr, str::FromStr};

use ipnet::IpNet;

use super::{
    DEFAULT_GROUP, Document, Instance, Invalid, Peer, Ports, PrefixList, Protocol, Role, Rule, SecurityGroup,
    json::{At, Json, Key, Problems, field, index, join},
    limits,
};

/// A group as read, with the paths needed to report cross-object problems.
#[derive(Debug, Clone)]
pub struct ReadGroup {
    pub group: SecurityGroup,
    pub path: String,
    /// The path of its id (`id` in a native document, `GroupId` in an AWS one).
    pub id_path: String,
    /// Every group / prefix-list reference in its rules, with the reference's path.
    pub references: Vec<(Peer, String)>,
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
    let Some(top) = p.object("", json, &["security_groups", "prefix_lists", "instances"]) else {
        return Err(Invalid { problems: p.list });
    };
    let groups = field(top, "security_groups").map(|v| read_groups(&mut p, "security_groups", v)).unwrap_or_default();
    let lists = field(top, "prefix_lists").map(|v| read_prefix_lists(&mut p, "prefix_lists", v)).unwrap_or_default();
    let instances = field(top, "instances").map(|v| read_instances(&mut p, "instances", v)).unwrap_or_default();
    assemble(p, groups, lists, instances)
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
            });
        }
    }
    out
}

fn read_rules(p: &mut Problems, path: &str, value: &Json, references: &mut Vec<(Peer, String)>) -> Vec<Rule> {
    let Some(items) = p.array(path, value, limits::RULES_PER_GROUP) else {
        return Vec::new();
    };
    items.iter().enumerate().filter_map(|(i, item)| read_rule(p, &At(path, i), item, references)).collect()
}

const RULE_KEYS: &[&str] = &["protocol", "from_port", "to_port", "cidrs", "groups", "prefix_lists", "description"];

fn read_rule(
    p: &mut Problems,
    path: &(impl fmt::Display + ?Sized),
    value: &Json,
    references: &mut Vec<(Peer, String)>,
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
                references.push((peer.clone(), ipath.to_string()));
                peers.push(peer);
            }
        }
    }
    let description = optional_text(p, path, fields, "description");
    if peers.is_empty() && p.list.len() == before {
        p.add(path, "no peer: give at least one of cidrs, groups, prefix_lists");
    }
    if peers.len() > limits::PEERS_PER_RULE {
        p.add(path, format!("{} peers, more than the limit of {}", peers.len(), limits::PEERS_PER_RULE));
    }
    if p.list.len() != before {
        return None;
    }
    Some(Rule { protocol: protocol?, ports: ports?, peers, description })
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
    let net =
        if text.contains('/') { IpNet::from_str(text).ok() } else { IpAddr::from_str(text).ok().map(IpNet::from) };
    let Some(net) = net else {
        p.add(path, format!("{text:?} is not a CIDR (like 10.0.0.0/16, 2001:db8::/32) or an IP address"));
        return None;
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
        let Some(fields) = p.object(&path, item, &["id", "name", "description", "cidrs"]) else {
            continue;
        };
        let id = required_id(p, &path, fields, "id");
        let name = optional_text(p, &path, fields, "name");
        optional_text(p, &path, fields, "description");
        let mut cidrs = Vec::new();
        match field(fields, "cidrs") {
            None => p.add(&join(&path, "cidrs"), "missing (a list of CIDRs)"),
            Some(v) => {
                let cpath = Key(&path, "cidrs");
                if let Some(items) = p.array(&cpath, v, limits::CIDRS_PER_PREFIX_LIST) {
                    for (j, c) in items.iter().enumerate() {
                        let ipath = At(&cpath, j);
                        if let Some(net) = p.string(&ipath, c).and_then(|s| read_cidr(p, &ipath, s)) {
                            cidrs.push(net);
                        }
                    }
                }
            }
        }
        if let Some(id) = id {
            out.push(ReadPrefixList { list: PrefixList { id, name, cidrs }, path });
        }
    }
    out
}

const INSTANCE_KEYS: &[&str] =
    &["id", "interface", "role", "addresses", "security_groups", "source_dest_check", "audit", "node"];

pub fn read_instances(p: &mut Problems, path: &str, value: &Json) -> Vec<ReadInstance> {
    let Some(items) = p.array(path, value, limits::INSTANCES) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index(path, i);
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
                    match IpAddr::from_str(text) {
                        Ok(addr) if addresses.contains(&addr) => p.add(&ipath, format!("{addr} is listed twice")),
                        Ok(addr) => addresses.push(addr),
                        Err(_) => p.add(&ipath, format!("{text:?} is not an IP address")),
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
        if let (Some(id), Some(role), Some(source_dest_check), Some(audit)) = (id, role, source_dest_check, audit) {
            out.push(ReadInstance {
                instance: Instance {
                    id,
                    interface,
                    role,
                    addresses,
                    security_groups: groups,
                    source_dest_check,
                    audit,
                    node,
                },
                path,
                groups_listed,
            });
        }
    }
    out
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

/// Checks everything that spans objects, then applies the defaults.
pub fn assemble(
    mut p: Problems,
    groups: Vec<ReadGroup>,
    lists: Vec<ReadPrefixList>,
    instances: Vec<ReadInstance>,
) -> Result<Document, Invalid> {
    let mut group_ids: HashMap<&str, &str> = HashMap::new();
    for g in &groups {
        if let Some(first) = group_ids.insert(&g.group.id, &g.path) {
            p.add(&g.id_path, format!("duplicate security group id {:?} (also {first})", g.group.id));
        }
    }
    let mut list_ids: HashMap<&str, &str> = HashMap::new();
    for l in &lists {
        if let Some(first) = list_ids.insert(&l.list.id, &l.path) {
            p.add(&join(&l.path, "id"), format!("duplicate prefix list id {:?} (also {first})", l.list.id));
        }
    }
    let group_exists = |id: &str| group_ids.contains_key(id) || id == DEFAULT_GROUP;
    for g in &groups {
        for (peer, path) in &g.references {
            match peer {
                Peer::Group(id) if !group_exists(id) => p.add(path, format!("unknown security group {id:?}")),
                Peer::PrefixList(id) if !list_ids.contains_key(id.as_str()) => {
                    p.add(path, format!("unknown prefix list {id:?}"))
                }
                _ => {}
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
    }
    if !p.is_empty() {
        return Err(Invalid { problems: p.list });
    }

    let mut security_groups: Vec<SecurityGroup> = groups.into_iter().map(|g| g.group).collect();
    if !security_groups.iter().any(|g| g.id == DEFAULT_GROUP) {
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
    Ok(Document { security_groups, prefix_lists: lists.into_iter().map(|l| l.list).collect(), instances })
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

/// The native JSON text of groups, prefix lists and instances (as `import-aws` prints them).
pub fn write_document(groups: &[SecurityGroup], lists: &[PrefixList], instances: &[Instance]) -> String {
    let document = out::Document {
        security_groups: groups.iter().map(out::Group::of).collect(),
        prefix_lists: lists.iter().map(out::PrefixList::of).collect(),
        instances: instances.iter().map(out::Instance::of).collect(),
    };
    // Plain structs of strings, numbers and lists: serialising them cannot fail.
    serde_json::to_string_pretty(&document).unwrap_or_default()
}

/// The native document's shape for writing (reading goes through [`read_document`], which
/// collects every problem with its path, so it does not use these).
mod out {
    use std::net::IpAddr;

    use serde::Serialize;

    use super::super::{Peer, Ports, Role};

    #[derive(Serialize)]
    pub struct Document<'a> {
        pub security_groups: Vec<Group<'a>>,
        pub prefix_lists: Vec<PrefixList<'a>>,
        pub instances: Vec<Instance<'a>>,
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
        cidrs: Vec<String>,
    }

    impl<'a> PrefixList<'a> {
        pub fn of(l: &'a super::PrefixList) -> Self {
            PrefixList { id: &l.id, name: l.name.as_deref(), cidrs: l.cidrs.iter().map(ToString::to_string).collect() }
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
                node: i.node.as_deref(),
            }
        }
    }
}
