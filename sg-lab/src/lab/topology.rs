//! The namespace topology: a node namespace where the agent runs and the instances around it,
//! each joined to the node by a veth pair.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use super::Netns;

/// One instance: a namespace whose `eth0` is the peer of `<iface>` in the node namespace.
pub struct Host {
    pub ns: Netns,
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
    /// Its networks (`10.0.1`, `fd00:1`) and host number, to wire it again after a re-creation.
    net: (String, String, u8),
}

/// A node namespace (where the agent runs and the host side of every veth lives) and the
/// instances around it, each on its own /24 and /64, routed through the node.
pub struct Topology {
    pub node: Netns,
    pub hosts: Vec<(String, Host)>,
}

impl Topology {
    pub fn new() -> Topology {
        let node = Netns::new("node");
        node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        node.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        Topology { node, hosts: Vec::new() }
    }

    /// Adds a host on interface `iface` of the node, subnet `10.0.<n>.0/24` and `fd00:<n>::/64`;
    /// the host is `.<host>` / `::<host>`, the node `.1` / `::1`.
    pub fn add(&mut self, iface: &str, n: u8, host: u8) -> &Host {
        self.add_net(iface, &format!("10.0.{n}"), &format!("fd00:{n}"), host)
    }

    /// Adds a host on `iface` in `<v4_net>.0/24` and `<v6_net>::/64` (e.g. "198.51.100",
    /// "2001:db8:1"), routed through the node.
    pub fn add_net(&mut self, iface: &str, v4_net: &str, v6_net: &str, host: u8) -> &Host {
        let ns = Netns::new(iface);
        self.wire(iface, &ns, v4_net, v6_net, host, true);
        let v4 = format!("{v4_net}.{host}");
        let v6 = format!("{v6_net}::{host}");
        let host = Host { ns, v4: v4.parse().ok(), v6: v6.parse().ok(), net: (v4_net.into(), v6_net.into(), host) };
        self.hosts.push((iface.to_owned(), host));
        &self.hosts.last().expect("just pushed").1
    }

    /// Deletes the node's side of `iface` (its peer goes with it), as a VM's tap goes when the
    /// VM stops.
    pub fn delete_link(&self, iface: &str) {
        self.node.ip(&["link", "del", iface]);
    }

    /// Creates `iface` again for its existing host, addresses and routes as before, but leaves
    /// the node's side down: `bring_up` after (an orchestration hook waits for the agent in
    /// between).
    pub fn recreate_link(&self, iface: &str) {
        let host = self.host(iface);
        let (v4_net, v6_net, number) = host.net.clone();
        self.wire(iface, &host.ns, &v4_net, &v6_net, number, false);
    }

    /// Brings the node's side of `iface` up (after `recreate_link`) and waits for addressing.
    pub fn bring_up(&self, iface: &str) {
        self.node.ip(&["link", "set", iface, "up"]);
        let host = self.host(iface);
        let (v4_net, v6_net, number) = host.net.clone();
        self.settle(iface, &host.ns, &v4_net, &v6_net, number);
    }

    /// The veth pair `iface` ↔ `eth0` in `ns`, addresses, routes; up (and settled) if `up`.
    fn wire(&self, iface: &str, ns: &Netns, v4_net: &str, v6_net: &str, host: u8, up: bool) {
        self.node.ip(&["link", "add", iface, "type", "veth", "peer", "name", "eth0", "netns", &ns.name]);
        let gw4 = format!("{v4_net}.1");
        let gw6 = format!("{v6_net}::1");
        self.node.ip(&["addr", "add", &format!("{gw4}/24"), "dev", iface]);
        self.node.ip(&["addr", "add", &format!("{gw6}/64"), "dev", iface, "nodad"]);
        let v4 = format!("{v4_net}.{host}");
        let v6 = format!("{v6_net}::{host}");
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
        ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        // The default routes need a link that is up; `settle` adds them when it comes up.
        if up {
            self.node.ip(&["link", "set", iface, "up"]);
            self.settle(iface, ns, v4_net, v6_net, host);
        }
    }

    /// Routes and neighbours once both sides are up.
    fn settle(&self, iface: &str, ns: &Netns, v4_net: &str, v6_net: &str, host: u8) {
        let gw4 = format!("{v4_net}.1");
        let gw6 = format!("{v6_net}::1");
        let v6 = format!("{v6_net}::{host}");
        ns.ip(&["route", "replace", "default", "via", &gw4]);
        ns.ip(&["-6", "route", "replace", "default", "via", &gw6]);
        // Resolve neighbours both ways now. Without this the first IPv6 packet forwarded to a
        // fresh host is lost about half the time (a kernel quirk seen with no filter at all),
        // which would read as a firewall drop.
        ns.exec(&["ping", "-4", "-c", "1", "-W", "1", &gw4]);
        ns.exec(&["ping", "-6", "-c", "1", "-W", "1", &gw6]);
        self.node.exec(&["ping", "-6", "-c", "1", "-W", "1", &v6]);
        self.wait_for_link_local(iface);
    }

    /// Waits until the node's side of `iface` has its link-local address. The kernel configures
    /// it once the carrier event is processed (up to a second after `link set up`) and then
    /// sends its MLD reports toward the instance, which the instance's ingress rules drop; a
    /// test that compares drop counters must start after them.
    fn wait_for_link_local(&self, iface: &str) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if !self.node.ip(&["-6", "addr", "show", "dev", iface, "scope", "link"]).trim().is_empty() {
                // The repeated reports follow within a few milliseconds
                // (`mldv2_unsolicited_report_interval=1`, see `Netns::new`).
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Adds another address to a host (for spoofing tests).
    pub fn add_address(&self, iface: &str, cidr: &str) {
        let host = self.host(iface);
        let family = if cidr.contains(':') { "-6" } else { "-4" };
        host.ns.ip(&[family, "addr", "add", cidr, "dev", "eth0", "nodad"]);
    }

    pub fn host(&self, iface: &str) -> &Host {
        &self.hosts.iter().find(|(i, _)| i == iface).unwrap_or_else(|| panic!("no host on {iface}")).1
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

/// The host's IPv4 address (every host made by [`Topology::add`] has one).
pub fn v4(host: &Host) -> IpAddr {
    host.v4.expect("host has IPv4")
}

/// The host's IPv6 address.
pub fn v6(host: &Host) -> IpAddr {
    host.v6.expect("host has IPv6")
}
