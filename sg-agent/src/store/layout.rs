//! The keys under the prefix (`--store-prefix`, default `/sg/v1`):
//!
//! ```text
//! <prefix>/groups/<id>         a security group's native JSON
//! <prefix>/prefix_lists/<id>   a prefix list's native JSON
//! <prefix>/instances/<id>      an instance's native JSON (with its `node`)
//! <prefix>/nodes/<name>/state  what the agent of node <name> enforces (kept when it goes away)
//! <prefix>/nodes/<name>/alive  the same agent's liveness, on a lease
//! <prefix>/writer              the writers' guard: every `fleet apply` transaction compares
//!                              and updates it
//! ```
//!
//! One key per object, so that a change touches only what changed, and etcd's per-key history
//! says when each object last changed. Subnets and network ACLs will be kinds of their own.

use std::fmt;

/// A kind of object, and the document section it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    PrefixList,
    Group,
    Instance,
}

impl Kind {
    /// In the order a writer adds them (what is referenced before what references it).
    pub const ALL: [Kind; 3] = [Kind::PrefixList, Kind::Group, Kind::Instance];
    /// In the order of the native document's sections.
    pub const DOCUMENT: [Kind; 3] = [Kind::Group, Kind::PrefixList, Kind::Instance];

    /// The key directory under the prefix.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Group => "groups",
            Kind::PrefixList => "prefix_lists",
            Kind::Instance => "instances",
        }
    }

    /// The section of the native document.
    pub fn section(self) -> &'static str {
        match self {
            Kind::Group => "security_groups",
            Kind::PrefixList => "prefix_lists",
            Kind::Instance => "instances",
        }
    }

    pub fn of_section(section: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.section() == section)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Group => "security group",
            Kind::PrefixList => "prefix list",
            Kind::Instance => "instance",
        })
    }
}

/// What a key under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRole<'a> {
    Object(Kind, &'a str),
    /// `nodes/<name>/...`: an agent's record, not part of the document.
    Node(&'a str),
    /// The writers' guard.
    Writer,
    /// Anything else (a kind this version does not know, a typo): content a writer must not
    /// leave, so agents report it rather than ignore it.
    Unknown,
}

/// The key layout under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Without a trailing '/': `/sg/v1`.
    prefix: String,
}

impl Layout {
    /// `prefix` as given (`/sg/v1` or `/sg/v1/`).
    pub fn new(prefix: &str) -> Layout {
        Layout { prefix: prefix.trim_end_matches('/').to_owned() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>/`: every key of this layout starts with it.
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub fn object_key(&self, kind: Kind, id: &str) -> String {
        format!("{}/{}/{id}", self.prefix, kind.dir())
    }

    /// `<prefix>/<dir>/`: the range of one kind.
    pub fn kind_root(&self, kind: Kind) -> String {
        format!("{}/{}/", self.prefix, kind.dir())
    }

    pub fn nodes_root(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    pub fn node_root(&self, node: &str) -> String {
        format!("{}/nodes/{node}/", self.prefix)
    }

    pub fn node_state_key(&self, node: &str) -> String {
        format!("{}/nodes/{node}/state", self.prefix)
    }

    pub fn node_alive_key(&self, node: &str) -> String {
        format!("{}/nodes/{node}/alive", self.prefix)
    }

    pub fn writer_key(&self) -> String {
        format!("{}/writer", self.prefix)
    }

    /// What `key` is (keys outside the prefix are [`KeyRole::Unknown`]).
    pub fn role<'k>(&self, key: &'k str) -> KeyRole<'k> {
        let Some(rest) = key.strip_prefix(self.prefix.as_str()).and_then(|r| r.strip_prefix('/')) else {
            return KeyRole::Unknown;
        };
        if rest == "writer" {
            return KeyRole::Writer;
        }
        let Some((dir, name)) = rest.split_once('/') else { return KeyRole::Unknown };
        if dir == "nodes" {
            return match name.split_once('/') {
                Some((node, _)) if !node.is_empty() => KeyRole::Node(node),
                _ => KeyRole::Unknown,
            };
        }
        match Kind::ALL.into_iter().find(|k| k.dir() == dir) {
            Some(kind) if !name.is_empty() => KeyRole::Object(kind, name),
            _ => KeyRole::Unknown,
        }
    }
}

/// The smallest key after every key that starts with `prefix` (etcd's range end for a prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: the range runs to the end of the key space.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_roles() {
        let l = Layout::new("/sg/v1/");
        assert_eq!(l.object_key(Kind::Group, "sg-web"), "/sg/v1/groups/sg-web");
        assert_eq!(l.role("/sg/v1/groups/sg-web"), KeyRole::Object(Kind::Group, "sg-web"));
        assert_eq!(l.role("/sg/v1/instances/a/b"), KeyRole::Object(Kind::Instance, "a/b"));
        assert_eq!(l.role("/sg/v1/prefix_lists/pl-1"), KeyRole::Object(Kind::PrefixList, "pl-1"));
        assert_eq!(l.role("/sg/v1/nodes/n1/state"), KeyRole::Node("n1"));
        assert_eq!(l.role("/sg/v1/writer"), KeyRole::Writer);
        for unknown in ["/sg/v1/groups/", "/sg/v1/subnets/s-1", "/sg/v1/nodes/n1", "/sg/v1x/groups/a", "/other"] {
            assert_eq!(l.role(unknown), KeyRole::Unknown, "{unknown}");
        }
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/sg/v1/"), b"/sg/v10".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
