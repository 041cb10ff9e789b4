//! The policy document (SPEC §2): the validated model, its limits, and its readers (native JSON
//! in [`native`], `aws ec2 describe-security-groups` JSON in [`aws`]).
//!
//! Everything downstream (compiler, explain, status) works on [`Document`], which only exists
//! once a document has passed validation with defaults applied: the `default` group is present,
//! absent `egress` is AWS's allow-all, instances without groups are in `default`.

pub mod aws;
pub mod json;
pub mod native;
#[cfg(test)]
mod tests;

use std::{fmt, net::IpAddr};

use ipnet::IpNet;
pub use json::Problem;
pub use sg_common::orientation::{Direction, Role};

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
    pub const CIDRS_PER_PREFIX_LIST: usize = 10_000;
    /// Id, name and description length.
    pub const TEXT_LEN: usize = 1024;
}

/// The id of the group that always exists.
pub const DEFAULT_GROUP: &str = "default";

/// A validated policy document with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Always contains [`DEFAULT_GROUP`].
    pub security_groups: Vec<SecurityGroup>,
    pub prefix_lists: Vec<PrefixList>,
    pub instances: Vec<Instance>,
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
}

impl Rule {
    /// The egress of a new security group: all protocols to `0.0.0.0/0` and `::/0`.
    pub fn allow_all_outbound() -> Vec<Rule> {
        vec![Rule {
            protocol: Protocol::All,
            ports: Ports::All,
            peers: vec![Peer::Cidr(IpNet::V4(Default::default())), Peer::Cidr(IpNet::V6(Default::default()))],
            description: None,
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
        Invalid { problems: vec![Problem { path: path.to_owned(), message: message.into() }] }
    }

    /// As `check` prints it: one line per problem, each prefixed with the file.
    pub fn in_file(&self, file: &std::path::Path) -> String {
        self.to_string().lines().map(|l| format!("{}: {l}", file.display())).collect::<Vec<_>>().join("\n")
    }
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

/// Reads a policy: a native document, or an AWS `describe-security-groups` document with an
/// optional native document of `instances` (and `prefix_lists`).
pub fn load(document: &str, instances: Option<&str>) -> Result<Document, Invalid> {
    let json = native::parse_json(document)?;
    if aws::is_aws(&json) {
        let instances = instances.map(native::parse_json).transpose().map_err(|mut e| {
            for p in &mut e.problems {
                p.path = format!("--instances {}", p.path).trim_end().to_owned();
            }
            e
        })?;
        aws::read_document(&json, instances.as_ref())
    } else if instances.is_some() {
        Err(Invalid::one("", "--instances is for AWS input (describe-security-groups JSON); this is a native document"))
    } else {
        native::read_document(&json)
    }
}
