//! The policy document (SPEC §2): the validated model, its limits, and its readers (native JSON
//! in [`native`], `aws ec2 describe-security-groups` JSON in [`aws`]).
//!
//! Everything downstream (compiler, explain, status) works on [`Document`], which only exists
//! once a document has passed validation with defaults applied: the `default` group is present,
//! absent `egress` is AWS's allow-all, instances without groups are in `default`.

pub mod address;
pub mod aws;
pub mod aws_instances;
pub mod export;
pub mod json;
pub mod native;
pub mod rule_id;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, fmt, net::IpAddr};

use ipnet::IpNet;
pub use json::{Problem, Source};
pub use sg_common::orientation::{Direction, Role};

/// AWS's default quotas: exceeding them is allowed here, with a warning (the same document
/// would not load into EC2).
pub mod aws_quotas {
    /// Inbound or outbound rules per security group (each peer of a rule counts).
    pub const RULES_PER_DIRECTION: usize = 60;
    /// Security groups per network interface.
    pub const GROUPS_PER_INTERFACE: usize = 5;
}

/// Limits, far above EC2's (60 rules per group and direction, 16 groups per interface), that
/// keep a hostile or mistaken document from exhausting the agent or the kernel maps.
pub mod limits {
    /// Bytes of JSON read from a file or the control socket.
    pub const DOCUMENT_BYTES: usize = 64 << 20;
    pub const SECURITY_GROUPS: usize = 10_000;
    /// Rules per group and direction (each rule may have several peers).
    pub const RULES_PER_GROUP: usize = 20_000;
    /// Peers (CIDRs + groups + prefix lists) in one rule.
    pub const PEERS_PER_RULE: usize = 1_000;
    pub const GROUPS_PER_INSTANCE: usize = 64;
    pub const INSTANCES: usize = 100_000;
    pub const ADDRESSES_PER_INSTANCE: usize = 64;
    pub const PREFIX_LISTS: usize = 1_000;
    /// Entries of `node_services`.
    pub const NODE_SERVICES: usize = 64;
    /// Entries of a `describe-security-group-rules` listing (one per group, direction and peer).
    pub const AWS_RULE_ENTRIES: usize = 1_000_000;
    pub const CIDRS_PER_PREFIX_LIST: usize = 10_000;
    /// Id, name and description length.
    pub const TEXT_LEN: usize = 1024;
}

/// The id of the group that always exists.
pub const DEFAULT_GROUP: &str = "default";

/// A validated policy document with defaults applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    /// Contains [`DEFAULT_GROUP`], unless an AWS document brought its own `default`-named group
    /// (which then is the default of its VPC).
    pub security_groups: Vec<SecurityGroup>,
    pub prefix_lists: Vec<PrefixList>,
    pub instances: Vec<Instance>,
    /// The node's service addresses (SPEC §3): traffic to and from them, and DHCP, is never
    /// judged. EC2's link-local services unless the document says otherwise.
    pub node_services: Vec<NodeService>,
    /// What is valid but probably not meant (SPEC §2): printed by `check`, `apply` and `run`.
    pub warnings: Vec<Problem>,
}

/// One of the node's service addresses: `169.254.169.254` (any protocol and port), or
/// `169.254.169.253:udp/53` (one protocol and port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeService {
    pub addr: IpAddr,
    /// Protocol number and port; `None`: any.
    pub port: Option<(u8, u16)>,
}

impl NodeService {
    /// EC2's link-local services: metadata, DNS, time, task metadata, licensing (IPv4); metadata,
    /// DNS, time (IPv6).
    pub fn ec2_defaults() -> Vec<NodeService> {
        [
            "169.254.169.254",
            "169.254.169.253",
            "169.254.169.123",
            "169.254.170.2",
            "169.254.169.250",
            "fd00:ec2::254",
            "fd00:ec2::253",
            "fd00:ec2::123",
        ]
        .iter()
        .filter_map(|a| address::parse_ip(a).ok())
        .map(|addr| NodeService { addr, port: None })
        .collect()
    }

    /// `addr`, `addr:proto/port` or `[v6]:proto/port` (proto `tcp` or `udp`).
    pub fn parse(text: &str) -> Result<NodeService, String> {
        let bad = || {
            format!(
                "{text:?} is not a service address (like 169.254.169.254, 169.254.169.253:udp/53, [fd00:ec2::253]:udp/53)"
            )
        };
        let (addr, rest) = if let Some(inner) = text.strip_prefix('[') {
            let (addr, rest) = inner.split_once(']').ok_or_else(bad)?;
            (addr, Some(rest.strip_prefix(':').ok_or_else(bad)?))
        } else if text.matches(':').count() == 1 {
            let (addr, rest) = text.split_once(':').ok_or_else(bad)?;
            (addr, Some(rest))
        } else {
            (text, None)
        };
        let addr = address::parse_ip(addr).map_err(|e| format!("{text:?}: {e}"))?;
        if let Some(why) = address::not_unicast(&addr) {
            return Err(format!("{text:?}: {addr} is {why}, not a service address"));
        }
        let port = match rest {
            None => None,
            Some(rest) => {
                let (proto, port) = rest.split_once('/').ok_or_else(bad)?;
                let proto = match proto {
                    "tcp" => sg_common::packet::IPPROTO_TCP,
                    "udp" => sg_common::packet::IPPROTO_UDP,
                    _ => return Err(format!("{text:?}: the protocol of a service is tcp or udp")),
                };
                let digits = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
                let port = port.parse::<u16>().ok().filter(|_| digits).ok_or_else(bad)?;
                Some((proto, port))
            }
        };
        Ok(NodeService { addr, port })
    }
}

impl fmt::Display for NodeService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.addr, self.port) {
            (addr, None) => write!(f, "{addr}"),
            (addr, Some((proto, port))) => {
                let proto = Protocol::from_number(proto);
                if addr.is_ipv6() { write!(f, "[{addr}]:{proto}/{port}") } else { write!(f, "{addr}:{proto}/{port}") }
            }
        }
    }
}

/// An instance's own conntrack timeouts, in seconds (EC2's `ConnectionTrackingSpecification`);
/// `None` keeps the agent's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ConntrackTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_established: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_stream: Option<u32>,
}

impl ConntrackTimeouts {
    /// EC2's ranges (SPEC §3), by field name.
    pub const RANGES: [(&'static str, u32, u32); 3] =
        [("tcp_established", 60, 432_000), ("udp", 30, 60), ("udp_stream", 60, 180)];

    pub fn is_empty(&self) -> bool {
        *self == ConntrackTimeouts::default()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SecurityGroup {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

impl SecurityGroup {
    pub fn rules(&self, direction: Direction) -> &[Rule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// AWS's `default` group: all inbound from its own members, all outbound.
    pub fn aws_default() -> SecurityGroup {
        SecurityGroup {
            id: DEFAULT_GROUP.to_owned(),
            name: Some(DEFAULT_GROUP.to_owned()),
            description: Some("default VPC security group".to_owned()),
            ingress: vec![Rule {
                protocol: Protocol::All,
                ports: Ports::All,
                peers: vec![Peer::Group(DEFAULT_GROUP.to_owned())],
                description: None,
                id: None,
            }],
            egress: Rule::allow_all_outbound(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub protocol: Protocol,
    pub ports: Ports,
    /// At least one. A rule with several peers is several rules (SPEC §2).
    pub peers: Vec<Peer>,
    pub description: Option<String>,
    /// EC2's security group rule id (`sgr-` and 17 hex digits), kept so that an id the EC2 API
    /// handed out survives restarts; only on a rule with exactly one peer, as EC2 has one rule
    /// per peer. A rule without one is known by [`rule_id::derived`].
    pub id: Option<String>,
}

impl Rule {
    /// The egress of a new security group: all protocols to `0.0.0.0/0` and `::/0`.
    pub fn allow_all_outbound() -> Vec<Rule> {
        vec![Rule {
            protocol: Protocol::All,
            ports: Ports::All,
            peers: vec![Peer::Cidr(IpNet::V4(Default::default())), Peer::Cidr(IpNet::V6(Default::default()))],
            description: None,
            id: None,
        }]
    }
}

/// A rule's protocol. Numbers 6, 17, 1 and 58 are read as their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    /// `all` / `-1`.
    All,
    Number(u8),
}

impl Protocol {
    pub fn from_number(n: u8) -> Protocol {
        match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            1 => Protocol::Icmp,
            58 => Protocol::Icmpv6,
            n => Protocol::Number(n),
        }
    }

    /// `tcp`, `udp`, `icmp`, `icmpv6`, `all` or `-1`, or a number 0-255 in decimal digits.
    pub fn from_name(text: &str) -> Option<Protocol> {
        match text {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "icmp" => Some(Protocol::Icmp),
            "icmpv6" => Some(Protocol::Icmpv6),
            "all" | "-1" => Some(Protocol::All),
            digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                digits.parse::<u8>().ok().map(Protocol::from_number)
            }
            _ => None,
        }
    }

    /// The IP protocol number; `None` for `all`.
    pub fn number(self) -> Option<u8> {
        match self {
            Protocol::Tcp => Some(6),
            Protocol::Udp => Some(17),
            Protocol::Icmp => Some(1),
            Protocol::Icmpv6 => Some(58),
            Protocol::All => None,
            Protocol::Number(n) => Some(n),
        }
    }

    /// Whether a packet of IP protocol `proto` and `family` (4 or 6) is this protocol.
    pub fn matches(self, proto: u8, family: u8) -> bool {
        match self {
            Protocol::All => true,
            Protocol::Icmp => proto == 1 && family == 4,
            Protocol::Icmpv6 => proto == 58 && family == 6,
            p => p.number() == Some(proto),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("tcp"),
            Protocol::Udp => f.write_str("udp"),
            Protocol::Icmp => f.write_str("icmp"),
            Protocol::Icmpv6 => f.write_str("icmpv6"),
            Protocol::All => f.write_str("all"),
            Protocol::Number(n) => write!(f, "{n}"),
        }
    }
}

/// What a rule matches beyond the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ports {
    /// Every port / type (also: protocols without ports).
    All,
    /// TCP/UDP destination ports, inclusive.
    Range(u16, u16),
    /// ICMP type (None = any) and code (None = any; only with a type).
    Icmp { ty: Option<u8>, code: Option<u8> },
}

impl Ports {
    /// The rule's match on the 16-bit "port" the datapath keys on (TCP/UDP destination port,
    /// ICMP `type << 8 | code`), as an inclusive range.
    pub fn key_range(self) -> (u16, u16) {
        match self {
            Ports::All | Ports::Icmp { ty: None, .. } => (0, u16::MAX),
            Ports::Range(lo, hi) => (lo, hi),
            Ports::Icmp { ty: Some(t), code: None } => (u16::from(t) << 8, u16::from(t) << 8 | 0xff),
            Ports::Icmp { ty: Some(t), code: Some(c) } => {
                let v = u16::from(t) << 8 | u16::from(c);
                (v, v)
            }
        }
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ports::All => f.write_str("all"),
            Ports::Range(lo, hi) if lo == hi => write!(f, "{lo}"),
            Ports::Range(lo, hi) => write!(f, "{lo}-{hi}"),
            Ports::Icmp { ty: None, .. } => f.write_str("type any"),
            Ports::Icmp { ty: Some(t), code: None } => write!(f, "type {t} code any"),
            Ports::Icmp { ty: Some(t), code: Some(c) } => write!(f, "type {t} code {c}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    Cidr(IpNet),
    /// The addresses of every instance that is a member of the group.
    Group(String),
    PrefixList(String),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Cidr(net) => write!(f, "{net}"),
            Peer::Group(id) => write!(f, "group {id}"),
            Peer::PrefixList(id) => write!(f, "prefix list {id}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PrefixList {
    pub id: String,
    pub name: Option<String>,
    pub cidrs: Vec<IpNet>,
    /// What EC2 keeps about a managed prefix list beyond its entries.
    pub meta: PrefixListMeta,
}

/// A prefix list's description and EC2's managed-prefix-list attributes: kept and written back,
/// never needed for enforcement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrefixListMeta {
    pub description: Option<String>,
    /// The most entries the list may hold (`max_entries`).
    pub max_entries: Option<u32>,
    /// All entries of one family, as in EC2 (`address_family`); `None`: either.
    pub address_family: Option<AddressFamily>,
    /// EC2's version number, raised by every change of entries (`version`; 1 when absent).
    pub version: Option<u64>,
    /// Descriptions of entries, by CIDR.
    pub entry_descriptions: BTreeMap<IpNet, String>,
}

/// EC2's `AddressFamily` of a managed prefix list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFamily {
    Ipv4,
    Ipv6,
}

impl AddressFamily {
    /// As EC2 spells it: `IPv4`, `IPv6`.
    pub fn name(self) -> &'static str {
        match self {
            AddressFamily::Ipv4 => "IPv4",
            AddressFamily::Ipv6 => "IPv6",
        }
    }

    pub fn from_name(text: &str) -> Option<AddressFamily> {
        match text {
            "IPv4" => Some(AddressFamily::Ipv4),
            "IPv6" => Some(AddressFamily::Ipv6),
            _ => None,
        }
    }

    pub fn of(net: &IpNet) -> AddressFamily {
        match net {
            IpNet::V4(_) => AddressFamily::Ipv4,
            IpNet::V6(_) => AddressFamily::Ipv6,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    /// `None`: the instance lives on another node; only its addresses matter here.
    pub interface: Option<String>,
    pub role: Role,
    pub addresses: Vec<IpAddr>,
    /// At least one; `[default]` when the document lists none.
    pub security_groups: Vec<String>,
    pub source_dest_check: bool,
    /// Audit (dry-run) mode: count what would be dropped, pass it.
    pub audit: bool,
    /// Its own conntrack timeouts (SPEC §3), if any.
    pub conntrack_timeouts: ConntrackTimeouts,
    /// The node it runs on (fleet mode, SPEC §8). An agent given a node name (`run --node`,
    /// always in store mode) enforces only instances of its own node: an instance of another
    /// node is a remote member there even if it names an interface. Without a node name the
    /// field is not consulted.
    pub node: Option<String>,
}

impl Document {
    pub fn group(&self, id: &str) -> Option<&SecurityGroup> {
        self.security_groups.iter().find(|g| g.id == id)
    }

    pub fn prefix_list(&self, id: &str) -> Option<&PrefixList> {
        self.prefix_lists.iter().find(|p| p.id == id)
    }

    pub fn instance(&self, id: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.id == id)
    }

    /// Instances enforced on this node (those with an interface).
    pub fn local_instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances.iter().filter(|i| i.interface.is_some())
    }

    /// The document as the agent of node `node` enforces it: instances that name another node
    /// lose their interface (they are remote members here); instances that name this node, or
    /// none, keep theirs. Validation made sure no two instances that can both be local here
    /// share an interface.
    pub fn for_node(mut self, node: &str) -> Document {
        for instance in &mut self.instances {
            if instance.node.as_deref().is_some_and(|n| n != node) {
                instance.interface = None;
            }
        }
        self
    }
}

/// A document that failed validation: every problem. Problems within each object come in
/// document order; problems that span objects (unknown references, duplicate ids, shared
/// interfaces or addresses) follow them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub problems: Vec<Problem>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.problems.len().min(json::MAX_REPORTED_PROBLEMS);
        for (i, p) in self.problems.iter().take(shown).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        if self.problems.len() > shown {
            write!(f, "\n... and {} more problems", self.problems.len() - shown)?;
        }
        Ok(())
    }
}

impl std::error::Error for Invalid {}

impl Invalid {
    pub fn one(path: &str, message: impl Into<String>) -> Invalid {
        Invalid { problems: vec![Problem::new(path, message)] }
    }

    /// As `check` prints it: one line per problem, each prefixed with the file.
    pub fn in_file(&self, file: &std::path::Path) -> String {
        self.in_files(file, &[])
    }

    /// One line per problem, each prefixed with the file it is in (the document, or one of the
    /// instances files).
    pub fn in_files(&self, document: &std::path::Path, instances: &[std::path::PathBuf]) -> String {
        let shown = self.problems.len().min(json::MAX_REPORTED_PROBLEMS);
        let mut lines: Vec<String> =
            self.problems.iter().take(shown).map(|p| p.in_files(document, instances)).collect();
        if self.problems.len() > shown {
            lines.push(format!("... and {} more problems", self.problems.len() - shown));
        }
        lines.join("\n")
    }
}

/// Warnings as the CLI prints them: `warning: file: path: message`, one per line.
pub fn warning_lines(
    warnings: &[Problem],
    document: &std::path::Path,
    instances: &[std::path::PathBuf],
) -> Vec<String> {
    warnings.iter().map(|w| format!("warning: {}", w.in_files(document, instances))).collect()
}

/// Why a policy file could not be read as text.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// UTF-16 text (what some shells write for `aws ... > file.json`).
    #[error("the file is UTF-16 text; JSON input must be UTF-8 (convert it: iconv -f UTF-16 -t UTF-8 FILE)")]
    Utf16,
    #[error("the file is not UTF-8 text (invalid byte at offset {0})")]
    NotUtf8(usize),
    #[error("the file is more than the limit of {} bytes", limits::DOCUMENT_BYTES)]
    TooLarge,
}

impl ReadError {
    /// SPEC §5: a file that is there but is not acceptable text is invalid input (2); a file that
    /// cannot be read is a runtime failure (1).
    pub fn exit_code(&self) -> u8 {
        match self {
            ReadError::Io(_) => 1,
            ReadError::Utf16 | ReadError::NotUtf8(_) | ReadError::TooLarge => 2,
        }
    }
}

/// Reads a policy (or instances) file as text: a UTF-8 byte-order mark is skipped, UTF-16 is
/// named as such.
pub fn read_file(path: &std::path::Path) -> Result<String, ReadError> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limits::DOCUMENT_BYTES as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > limits::DOCUMENT_BYTES {
        return Err(ReadError::TooLarge);
    }
    text(bytes)
}

/// Bytes of a policy document as text (see [`read_file`]).
pub fn text(mut bytes: Vec<u8>) -> Result<String, ReadError> {
    const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";
    if bytes.starts_with(UTF8_BOM) {
        bytes.drain(..UTF8_BOM.len());
    } else if bytes.starts_with(b"\xff\xfe") || bytes.starts_with(b"\xfe\xff") {
        return Err(ReadError::Utf16);
    } else if matches!(bytes.as_slice(), [a, b, c, d, ..] if (*a == 0) != (*b == 0) && (*c == 0) != (*d == 0)) {
        // UTF-16 without a byte-order mark: every other byte of ASCII JSON is zero.
        return Err(ReadError::Utf16);
    }
    String::from_utf8(bytes).map_err(|e| ReadError::NotUtf8(e.utf8_error().valid_up_to()))
}

/// Reads a policy: a native document, or an AWS document (`describe-security-groups` or
/// `describe-security-group-rules`) with an optional instances document.
pub fn load(document: &str, instances: Option<&str>) -> Result<Document, Invalid> {
    load_all(document, instances.as_slice())
}

/// Reads a policy with any number of instances documents (each native `instances` and
/// `prefix_lists`, or `aws ec2 describe-instances` output). Problems in an instances document
/// are marked with its position ([`Source::Instances`]).
pub fn load_all<S: AsRef<str>>(document: &str, instances: &[S]) -> Result<Document, Invalid> {
    let json = native::parse_json(document)?;
    if aws::is_aws(&json) {
        let mut parsed = Vec::new();
        let mut problems = Vec::new();
        for (i, text) in instances.iter().enumerate() {
            match native::parse_json(text.as_ref()) {
                Ok(j) => parsed.push(j),
                Err(e) => {
                    problems.extend(e.problems.into_iter().map(|p| Problem { source: Source::Instances(i), ..p }))
                }
            }
        }
        if !problems.is_empty() {
            return Err(Invalid { problems });
        }
        aws::read_document(&json, &parsed)
    } else if !instances.is_empty() {
        Err(Invalid::one(
            "",
            "--instances is for AWS input (describe-security-groups or describe-security-group-rules JSON); this is a \
             native document",
        ))
    } else {
        native::read_document(&json)
    }
}
