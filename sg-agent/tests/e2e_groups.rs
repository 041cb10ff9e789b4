//! End to end with real packets, IPv4 and IPv6: the security-group semantics of SPEC §2 —
//! the default group, unions, group references that follow membership, prefix lists, ICMP
//! type/code, protocol numbers, and the source/destination check.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use support::*;

fn both(host: &Host) -> [std::net::IpAddr; 2] {
    [v4(host), v6(host)]
}

#[test]
fn default_group_members_talk_to_each_other_and_not_to_outsiders() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-a", 1, 10);
    topo.add("veth-b", 2, 10);
    topo.add("veth-c", 3, 10);
    // No groups anywhere: a and b are members of `default`; c is not an instance.
    let policy = r#"{ "instances": [
        { "id": "a", "interface": "veth-a", "addresses": ["10.0.1.10", "fd00:1::10"] },
        { "id": "b", "interface": "veth-b", "addresses": ["10.0.2.10", "fd00:2::10"] } ] }"#;
    let _agent = start_agent(&topo.node, policy, &[]);
    let (a, b, c) = (topo.host("veth-a"), topo.host("veth-b"), topo.host("veth-c"));
    for addr in both(b) {
        let _s = TcpServer::start(&b.ns, addr, 5000);
        assert!(tcp_ok(&a.ns, addr, 5000), "member a reaches member b at {addr} on any port");
        assert!(ping_ok(&a.ns, addr), "all protocols between members ({addr})");
        assert!(!tcp_ok(&c.ns, addr, 5000), "outsider c must not reach {addr}");
        assert!(!ping_ok(&c.ns, addr), "outsider c must not ping {addr}");
    }
    for addr in both(c) {
        let _s = TcpServer::start(&c.ns, addr, 6000);
        assert!(tcp_ok(&a.ns, addr, 6000), "default egress allows all out, replies tracked ({addr})");
    }
}

#[test]
fn an_instance_gets_the_union_of_its_groups() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-web", 1, 10);
    topo.add("veth-c", 2, 10);
    let policy = r#"{
      "security_groups": [
        { "id": "sg-http", "ingress": [ { "protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["0.0.0.0/0", "::/0"] } ] },
        { "id": "sg-ssh", "ingress": [ { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.2.0/24", "fd00:2::/64"] } ] }
      ],
      "instances": [ { "id": "web", "interface": "veth-web", "addresses": ["10.0.1.10", "fd00:1::10"],
                       "security_groups": ["sg-http", "sg-ssh"] } ] }"#;
    let _agent = start_agent(&topo.node, policy, &[]);
    let (web, c) = (topo.host("veth-web"), topo.host("veth-c"));
    for addr in both(web) {
        let _servers = [80, 22, 23].map(|p| TcpServer::start(&web.ns, addr, p));
        assert!(tcp_ok(&c.ns, addr, 80), "sg-http allows 80 ({addr})");
        assert!(tcp_ok(&c.ns, addr, 22), "sg-ssh allows 22 ({addr})");
        assert!(!tcp_ok(&c.ns, addr, 23), "neither allows 23 ({addr})");
    }
}

const DB_POLICY: &str = r#"{
  "security_groups": [
    { "id": "sg-db", "ingress": [ { "protocol": "tcp", "from_port": 5432, "to_port": 5432, "groups": ["sg-app"] } ] },
    { "id": "sg-app" }, { "id": "sg-other" }
  ],
  "instances": [
    { "id": "db", "interface": "veth-db", "addresses": ["10.0.1.10", "fd00:1::10"], "security_groups": ["sg-db"] },
    { "id": "app", "addresses": ["10.0.2.10", "fd00:2::10"], "security_groups": ["APP_GROUP"] },
    { "id": "other", "addresses": ["10.0.3.10", "fd00:3::10"], "security_groups": ["OTHER_GROUP"] }
  ] }"#;

fn db_policy(app: &str, other: &str) -> String {
    DB_POLICY.replace("APP_GROUP", app).replace("OTHER_GROUP", other)
}

#[test]
fn group_reference_admits_members_and_follows_membership_changes() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-db", 1, 10);
    topo.add("veth-app", 2, 10);
    topo.add("veth-other", 3, 10);
    // app and other live on other nodes (no interface here); only their membership matters.
    let agent = start_agent(&topo.node, &db_policy("sg-app", "sg-other"), &[]);
    let (db, app, other) = (topo.host("veth-db"), topo.host("veth-app"), topo.host("veth-other"));
    let _servers: Vec<TcpServer> = both(db).into_iter().map(|a| TcpServer::start(&db.ns, a, 5432)).collect();
    for addr in both(db) {
        assert!(tcp_ok(&app.ns, addr, 5432), "member of sg-app reaches {addr}");
        assert!(!tcp_ok(&other.ns, addr, 5432), "non-member refused at {addr}");
    }
    // Membership changes: other joins sg-app, app leaves it.
    agent.apply_ok(&db_policy("sg-other", "sg-app"));
    for addr in both(db) {
        assert!(tcp_ok(&other.ns, addr, 5432), "new member admitted at {addr}");
        assert!(!tcp_ok(&app.ns, addr, 5432), "former member refused for new connections at {addr}");
    }
    assert_eq!(agent.status()["generation"], 2);
}

#[test]
fn prefix_list_peers() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-srv", 1, 10);
    topo.add("veth-office", 2, 10);
    topo.add("veth-b", 3, 10);
    let policy = r#"{
      "security_groups": [ { "id": "sg-admin",
        "ingress": [ { "protocol": "tcp", "from_port": 22, "to_port": 22, "prefix_lists": ["pl-office"] } ] } ],
      "prefix_lists": [ { "id": "pl-office", "cidrs": ["10.0.2.0/24", "fd00:2::/64", "192.0.2.0/24"] } ],
      "instances": [ { "id": "srv", "interface": "veth-srv", "addresses": ["10.0.1.10", "fd00:1::10"],
                       "security_groups": ["sg-admin"] } ] }"#;
    let _agent = start_agent(&topo.node, policy, &[]);
    let srv = topo.host("veth-srv");
    for addr in both(srv) {
        let _s = TcpServer::start(&srv.ns, addr, 22);
        assert!(tcp_ok(&topo.host("veth-office").ns, addr, 22), "office is in the prefix list ({addr})");
        assert!(!tcp_ok(&topo.host("veth-b").ns, addr, 22), "b is not ({addr})");
    }
}

#[test]
fn icmp_rules_match_type_and_code() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-x", 1, 10);
    topo.add("veth-c", 2, 10);
    let policy = |v6_code: i32| {
        format!(
            r#"{{ "security_groups": [ {{ "id": "sg-ping", "ingress": [
                {{ "protocol": "icmp", "from_port": 8, "to_port": 0, "cidrs": ["0.0.0.0/0"] }},
                {{ "protocol": "icmpv6", "from_port": 128, "to_port": {v6_code}, "cidrs": ["::/0"] }} ] }} ],
              "instances": [ {{ "id": "x", "interface": "veth-x", "addresses": ["10.0.1.10", "fd00:1::10"],
                               "security_groups": ["sg-ping"] }} ] }}"#
        )
    };
    // Echo request is type 8 / 128 with code 0.
    let agent = start_agent(&topo.node, &policy(1), &[]);
    let (x, c) = (topo.host("veth-x"), topo.host("veth-c"));
    assert!(ping_ok(&c.ns, v4(x)), "icmp type 8 code 0 allowed");
    assert!(!ping_ok(&c.ns, v6(x)), "icmpv6 type 128 with code 1 does not match code 0");
    agent.apply_ok(&policy(-1));
    assert!(ping_ok(&c.ns, v6(x)), "icmpv6 type 128, any code");
}

#[test]
fn protocol_number_rules() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-x", 1, 10);
    topo.add("veth-a", 2, 10);
    topo.add("veth-b", 3, 10);
    let policy = r#"{
      "security_groups": [ { "id": "sg-sctp",
        "ingress": [ { "protocol": 132, "cidrs": ["10.0.2.0/24", "fd00:2::/64"] } ] } ],
      "instances": [ { "id": "x", "interface": "veth-x", "addresses": ["10.0.1.10", "fd00:1::10"],
                       "security_groups": ["sg-sctp"] } ] }"#;
    let agent = start_agent(&topo.node, policy, &[]);
    let (x, a, b) = (topo.host("veth-x"), topo.host("veth-a"), topo.host("veth-b"));
    for addr in both(x) {
        assert!(raw_ip_ok(&a.ns, &x.ns, addr, 132), "protocol 132 from the allowed CIDR reaches {addr}");
        assert!(!raw_ip_ok(&a.ns, &x.ns, addr, 47), "protocol 47 has no rule ({addr})");
        assert!(!raw_ip_ok(&b.ns, &x.ns, addr, 132), "protocol 132 from elsewhere is dropped ({addr})");
    }
    assert!(agent.counter("dropped_no_rule") >= 4);
}

#[test]
fn spoofed_sources_are_dropped_unless_the_check_is_off() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-w", 1, 10);
    topo.add("veth-c", 2, 10);
    topo.add_address("veth-w", "10.0.1.99/24");
    topo.add_address("veth-w", "fd00:1::99/64");
    let policy = |check: bool| {
        format!(
            r#"{{ "instances": [ {{ "id": "w", "interface": "veth-w", "addresses": ["10.0.1.10", "fd00:1::10"],
                 "source_dest_check": {check} }} ] }}"#
        )
    };
    let agent = start_agent(&topo.node, &policy(true), &[]);
    let (w, c) = (topo.host("veth-w"), topo.host("veth-c"));
    let _servers: Vec<TcpServer> = both(c).into_iter().map(|a| TcpServer::start(&c.ns, a, 7000)).collect();
    let spoofed: [std::net::IpAddr; 2] = ["10.0.1.99".parse().unwrap(), "fd00:1::99".parse().unwrap()];
    for (own, (fake, dst)) in both(w).into_iter().zip(spoofed.into_iter().zip(both(c))) {
        assert!(tcp_ok_from(&w.ns, own, dst, 7000), "own source {own} passes");
        let before = agent.counter("dropped_source_dest_check");
        assert!(!tcp_ok_from(&w.ns, fake, dst, 7000), "spoofed source {fake} is dropped");
        assert!(agent.counter("dropped_source_dest_check") > before);
    }
    agent.apply_ok(&policy(false));
    for (fake, dst) in spoofed.into_iter().zip(both(c)) {
        assert!(tcp_ok_from(&w.ns, fake, dst, 7000), "with source_dest_check off, {fake} may send");
    }
}

#[test]
fn explain_against_the_live_policy() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-db", 1, 10);
    let agent = start_agent(&topo.node, &db_policy("sg-app", "sg-other"), &[]);
    let ask = |peer: &str| {
        let out = agent.cli(&[
            "explain",
            "--instance",
            "db",
            "--direction",
            "ingress",
            "--protocol",
            "tcp",
            "--peer",
            peer,
            "--port",
            "5432",
            "--json",
        ]);
        assert!(out.status.success(), "explain: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let member = ask("10.0.2.10");
    assert_eq!(member["allowed"], true);
    assert_eq!(member["group"], "sg-db");
    assert_eq!(member["rule_index"], 0);
    assert_eq!(ask("10.0.3.10")["allowed"], false);
    agent.apply_ok(&db_policy("sg-other", "sg-app"));
    assert_eq!(ask("10.0.3.10")["allowed"], true, "explain follows the live generation");
}
