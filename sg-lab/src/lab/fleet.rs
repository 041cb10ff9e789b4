//! Several nodes for fleet mode: each node a namespace with its own instances around it (a
//! [`Topology`]), all joined by a fabric namespace — a bridge — where the store (etcd) runs.
//!
//! ```text
//!   instances ── node n1 ──┐
//!   instances ── node n2 ──┼── fabric (bridge; etcd on 192.168.254.254)
//!   instances ── node n3 ──┘
//! ```
//!
//! Node `i` (from 0) is 192.168.254.`i+1` and fd00:ff::`i+1` on its uplink; every node routes
//! every other node's instance subnets through that node's uplink address, so instances on
//! different nodes reach each other through both nodes (and both agents).

use super::{Netns, Topology};

/// The store's address on the fabric.
pub const STORE_IP: &str = "192.168.254.254";

/// The nodes and the fabric.
pub struct Fleet {
    /// Node names (as the agents know them) and their namespaces with instances.
    pub nodes: Vec<(String, Topology)>,
    // Dropped last: the nodes' uplinks end in it.
    pub fabric: Netns,
}

impl Fleet {
    /// One node per name, joined to a fresh fabric.
    pub fn new(names: &[&str]) -> Fleet {
        let fabric = Netns::new("fabric");
        fabric.ip(&["link", "add", "br0", "type", "bridge"]);
        fabric.ip(&["addr", "add", &format!("{STORE_IP}/24"), "dev", "br0"]);
        fabric.ip(&["addr", "add", "fd00:ff::fe/64", "dev", "br0", "nodad"]);
        fabric.ip(&["link", "set", "br0", "up"]);
        let mut nodes = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let topo = Topology::new();
            let port = format!("n{i}");
            topo.node.ip(&["link", "add", "uplink", "type", "veth", "peer", "name", &port, "netns", &fabric.name]);
            topo.node.ip(&["addr", "add", &format!("192.168.254.{}/24", i + 1), "dev", "uplink"]);
            topo.node.ip(&["addr", "add", &format!("fd00:ff::{}/64", i + 1), "dev", "uplink", "nodad"]);
            topo.node.ip(&["link", "set", "uplink", "up"]);
            fabric.ip(&["link", "set", &port, "master", "br0"]);
            fabric.ip(&["link", "set", &port, "up"]);
            nodes.push(((*name).to_owned(), topo));
        }
        Fleet { nodes, fabric }
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> &Topology {
        &self.nodes.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no node {name}")).1
    }

    fn index(&self, name: &str) -> usize {
        self.nodes.iter().position(|(n, _)| n == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Adds an instance on node `name`, interface `iface`, in `10.0.<n>.0/24` and `fd00:<n>::/64`
    /// (the instance is `.<host>`), reachable from every node.
    pub fn add(&mut self, name: &str, iface: &str, n: u8, host: u8) {
        let i = self.index(name);
        let (v4, v6) = (format!("10.0.{n}.0/24"), format!("fd00:{n}::/64"));
        for (j, (_, topo)) in self.nodes.iter().enumerate() {
            if j != i {
                topo.node.ip(&["route", "add", &v4, "via", &format!("192.168.254.{}", i + 1)]);
                topo.node.ip(&["-6", "route", "add", &v6, "via", &format!("fd00:ff::{}", i + 1)]);
            }
        }
        self.nodes[i].1.add(iface, n, host);
    }

    /// The instance on `iface` of node `name`.
    pub fn host(&self, name: &str, iface: &str) -> &super::Host {
        self.node(name).host(iface)
    }
}
