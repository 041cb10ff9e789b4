//! Defaults (SPEC §2).

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;

#[test]
fn absent_egress_allows_all_outbound() {
    let doc = load_ok(r#"{ "security_groups": [ { "id": "sg-a" } ] }"#);
    let group = doc.group("sg-a").unwrap();
    assert_eq!(
        group.egress,
        vec![Rule {
            id: None,
            protocol: Protocol::All,
            ports: Ports::All,
            peers: vec![cidr("0.0.0.0/0"), cidr("::/0")],
            description: None
        }]
    );
    assert_eq!(group.egress, Rule::allow_all_outbound());
}

#[test]
fn empty_egress_allows_nothing() {
    let doc = load_ok(r#"{ "security_groups": [ { "id": "sg-a", "egress": [] } ] }"#);
    assert_eq!(doc.group("sg-a").unwrap().egress, vec![]);
}

#[test]
fn absent_or_empty_ingress_allows_nothing() {
    let doc = load_ok(r#"{ "security_groups": [ { "id": "sg-a" }, { "id": "sg-b", "ingress": [] } ] }"#);
    assert_eq!(doc.group("sg-a").unwrap().ingress, vec![]);
    assert_eq!(doc.group("sg-b").unwrap().ingress, vec![]);
}

#[test]
fn explicit_egress_replaces_the_default() {
    let doc = load_ok(
        r#"{ "security_groups": [ { "id": "sg-a", "egress": [ { "protocol": "tcp", "from_port": 443, "to_port": 443, "cidrs": ["0.0.0.0/0"] } ] } ] }"#,
    );
    assert_eq!(
        doc.group("sg-a").unwrap().egress,
        vec![Rule {
            id: None,
            protocol: Protocol::Tcp,
            ports: Ports::Range(443, 443),
            peers: vec![cidr("0.0.0.0/0")],
            description: None
        }]
    );
}

#[test]
fn default_group_exists_when_not_defined() {
    let doc = load_ok(r#"{ "security_groups": [ { "id": "sg-a" } ] }"#);
    assert_eq!(doc.security_groups.len(), 2);
    let default = doc.group(DEFAULT_GROUP).expect("default group added");
    assert_eq!(
        default.ingress,
        vec![Rule {
            id: None,
            protocol: Protocol::All,
            ports: Ports::All,
            peers: vec![Peer::Group(DEFAULT_GROUP.to_owned())],
            description: None
        }]
    );
    assert_eq!(default.egress, Rule::allow_all_outbound());
    assert_eq!(default, &SecurityGroup::aws_default());
}

#[test]
fn empty_document_has_only_the_default_group() {
    let doc = load_ok("{}");
    assert_eq!(
        doc,
        Document {
            security_groups: vec![SecurityGroup::aws_default()],
            node_services: super::super::NodeService::ec2_defaults(),
            ..Document::default()
        }
    );
}

#[test]
fn default_group_defined_in_the_document_is_used() {
    let doc = load_ok(
        r#"{ "security_groups": [ { "id": "default", "description": "locked down",
              "ingress": [ { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["198.51.100.0/24"] } ],
              "egress": [] } ] }"#,
    );
    assert_eq!(
        doc.security_groups,
        vec![SecurityGroup {
            id: DEFAULT_GROUP.to_owned(),
            name: None,
            description: Some("locked down".to_owned()),
            ingress: vec![Rule {
                id: None,
                protocol: Protocol::Tcp,
                ports: Ports::Range(22, 22),
                peers: vec![cidr("198.51.100.0/24")],
                description: None
            }],
            egress: vec![],
        }]
    );
}

#[test]
fn redefined_default_group_without_egress_gets_the_creation_default() {
    let doc = load_ok(r#"{ "security_groups": [ { "id": "default" } ] }"#);
    let default = doc.group(DEFAULT_GROUP).unwrap();
    assert_eq!(default.ingress, vec![]);
    assert_eq!(default.egress, Rule::allow_all_outbound());
}

#[test]
fn default_group_can_be_referenced_without_being_defined() {
    let doc = load_ok(&with_rule(json!({ "protocol": "all", "groups": ["default"] })));
    assert_eq!(doc.group("sg-a").unwrap().ingress[0].peers, vec![Peer::Group(DEFAULT_GROUP.to_owned())]);
}

#[test]
fn group_references_may_point_forward() {
    let doc = load_ok(
        r#"{ "security_groups": [ { "id": "sg-a", "ingress": [ { "protocol": "tcp", "groups": ["sg-b"] } ] }, { "id": "sg-b" } ] }"#,
    );
    assert_eq!(doc.group("sg-a").unwrap().ingress[0].peers, vec![Peer::Group("sg-b".to_owned())]);
}

#[test]
fn instance_without_groups_is_in_default() {
    assert_eq!(read_instance(json!({ "id": "i-1" })).security_groups, vec![DEFAULT_GROUP.to_owned()]);
    assert_eq!(
        read_instance(json!({ "id": "i-1", "security_groups": [] })).security_groups,
        vec![DEFAULT_GROUP.to_owned()]
    );
}

#[test]
fn instance_with_groups_is_not_in_default() {
    assert_eq!(
        read_instance(json!({ "id": "i-1", "security_groups": ["sg-a"] })).security_groups,
        vec!["sg-a".to_owned()]
    );
}

#[test]
fn instance_defaults() {
    assert_eq!(
        read_instance(json!({ "id": "i-1" })),
        Instance {
            id: "i-1".to_owned(),
            interface: None,
            role: Role::Workload,
            addresses: vec![],
            security_groups: vec![DEFAULT_GROUP.to_owned()],
            source_dest_check: true,
            audit: false,
            conntrack_timeouts: Default::default(),
            node: None,
        }
    );
}

#[test]
fn instance_fields_as_given() {
    assert_eq!(
        read_instance(json!({ "id": "node", "interface": "eth0", "role": "host", "addresses": ["10.0.0.1", "fd00::1"],
            "security_groups": ["sg-a", "default"], "source_dest_check": false, "audit": true })),
        Instance {
            id: "node".to_owned(),
            interface: Some("eth0".to_owned()),
            role: Role::Host,
            addresses: vec![addr("10.0.0.1"), addr("fd00::1")],
            security_groups: vec!["sg-a".to_owned(), DEFAULT_GROUP.to_owned()],
            source_dest_check: false,
            audit: true,
            conntrack_timeouts: Default::default(),
            node: None,
        }
    );
    assert_eq!(read_instance(json!({ "id": "i-1", "role": "workload" })).role, Role::Workload);
}

#[test]
fn protocol_numbers_and_names_normalise() {
    let cases = [
        (json!("tcp"), Protocol::Tcp),
        (json!(6), Protocol::Tcp),
        (json!("6"), Protocol::Tcp),
        (json!("udp"), Protocol::Udp),
        (json!(17), Protocol::Udp),
        (json!("17"), Protocol::Udp),
        (json!("icmp"), Protocol::Icmp),
        (json!(1), Protocol::Icmp),
        (json!("1"), Protocol::Icmp),
        (json!("icmpv6"), Protocol::Icmpv6),
        (json!(58), Protocol::Icmpv6),
        (json!("58"), Protocol::Icmpv6),
        (json!(0), Protocol::Number(0)),
        (json!(47), Protocol::Number(47)),
        (json!("132"), Protocol::Number(132)),
        (json!(255), Protocol::Number(255)),
    ];
    for (protocol, expected) in cases {
        // A group peer fits every protocol, whatever its family.
        let rule = read_rule(json!({ "protocol": protocol, "groups": ["sg-a"] }));
        assert_eq!(rule.protocol, expected, "protocol {protocol}");
    }
}

#[test]
fn all_protocols_spellings() {
    for protocol in [json!("all"), json!("-1"), json!(-1)] {
        let rule = read_rule(json!({ "protocol": protocol, "cidrs": ["0.0.0.0/0"] }));
        assert_eq!((rule.protocol, rule.ports), (Protocol::All, Ports::All), "protocol {protocol}");
    }
}

#[test]
fn bare_addresses_are_host_routes() {
    let rule = read_rule(json!({ "protocol": "tcp", "cidrs": ["192.0.2.7", "2001:db8::7", "10.0.0.0/8"] }));
    assert_eq!(rule.peers, vec![cidr("192.0.2.7/32"), cidr("2001:db8::7/128"), cidr("10.0.0.0/8")]);
}

#[test]
fn bare_addresses_in_prefix_lists_are_host_routes() {
    let doc = load_ok(
        r#"{ "prefix_lists": [ { "id": "pl-a", "name": "office", "cidrs": ["198.51.100.1", "2001:db8::/48"] } ] }"#,
    );
    assert_eq!(
        doc.prefix_lists,
        vec![PrefixList {
            meta: Default::default(),
            id: "pl-a".to_owned(),
            name: Some("office".to_owned()),
            cidrs: vec![net("198.51.100.1/32"), net("2001:db8::/48")]
        }]
    );
}

#[test]
fn tcp_and_udp_without_ports_mean_all_ports() {
    assert_eq!(read_rule(json!({ "protocol": "tcp", "cidrs": ["0.0.0.0/0"] })).ports, Ports::All);
    assert_eq!(read_rule(json!({ "protocol": "udp", "cidrs": ["0.0.0.0/0"] })).ports, Ports::All);
}

#[test]
fn tcp_and_udp_port_ranges() {
    let ports = |from: u32, to: u32| {
        read_rule(json!({ "protocol": "udp", "from_port": from, "to_port": to, "cidrs": ["::/0"] })).ports
    };
    assert_eq!(ports(53, 53), Ports::Range(53, 53));
    assert_eq!(ports(1024, 65535), Ports::Range(1024, 65535));
    assert_eq!(ports(0, 0), Ports::Range(0, 0));
}

#[test]
fn ports_are_ignored_for_all_and_other_protocol_numbers() {
    for protocol in [json!("all"), json!(-1), json!(47), json!("50")] {
        let rule = read_rule(json!({ "protocol": protocol, "from_port": 80, "to_port": 90, "cidrs": ["0.0.0.0/0"] }));
        assert_eq!(rule.ports, Ports::All, "protocol {protocol}");
        let rule = read_rule(json!({ "protocol": protocol, "from_port": -1, "to_port": -1, "cidrs": ["0.0.0.0/0"] }));
        assert_eq!(rule.ports, Ports::All, "protocol {protocol}");
    }
    // Even an inverted range: there is nothing to invert.
    let rule = read_rule(json!({ "protocol": 47, "from_port": 90, "to_port": 80, "cidrs": ["0.0.0.0/0"] }));
    assert_eq!(rule.ports, Ports::All);
}

#[test]
fn icmp_type_and_code() {
    let ports = |protocol: &str, from: Option<i32>, to: Option<i32>| {
        let mut rule = json!({ "protocol": protocol, "groups": ["sg-a"] });
        if let Some(from) = from {
            rule["from_port"] = json!(from);
        }
        if let Some(to) = to {
            rule["to_port"] = json!(to);
        }
        read_rule(rule).ports
    };
    assert_eq!(ports("icmp", None, None), Ports::Icmp { ty: None, code: None });
    assert_eq!(ports("icmp", Some(-1), Some(-1)), Ports::Icmp { ty: None, code: None });
    assert_eq!(ports("icmp", Some(8), Some(-1)), Ports::Icmp { ty: Some(8), code: None });
    assert_eq!(ports("icmp", Some(3), Some(4)), Ports::Icmp { ty: Some(3), code: Some(4) });
    assert_eq!(ports("icmp", Some(0), Some(0)), Ports::Icmp { ty: Some(0), code: Some(0) });
    assert_eq!(ports("icmpv6", Some(128), Some(-1)), Ports::Icmp { ty: Some(128), code: None });
    assert_eq!(ports("icmpv6", Some(255), Some(255)), Ports::Icmp { ty: Some(255), code: Some(255) });
}

#[test]
fn icmp_rules_of_the_right_family() {
    let rule =
        read_rule(json!({ "protocol": "icmp", "from_port": 8, "to_port": 0, "cidrs": ["10.0.0.0/8", "192.0.2.1"] }));
    assert_eq!(rule.peers, vec![cidr("10.0.0.0/8"), cidr("192.0.2.1/32")]);
    let rule = read_rule(json!({ "protocol": "icmpv6", "cidrs": ["::/0"] }));
    assert_eq!((rule.protocol, rule.peers), (Protocol::Icmpv6, vec![cidr("::/0")]));
}

#[test]
fn rule_peers_and_description_are_kept_in_order() {
    let doc = load_ok(
        r#"{ "security_groups": [ { "id": "sg-a", "ingress": [ { "protocol": "tcp", "from_port": 22, "to_port": 22,
              "prefix_lists": ["pl-a"], "groups": ["sg-a", "default"], "cidrs": ["10.0.0.0/8", "::/0"], "description": "ssh" } ] } ],
             "prefix_lists": [ { "id": "pl-a", "cidrs": [] } ] }"#,
    );
    assert_eq!(
        doc.group("sg-a").unwrap().ingress,
        vec![Rule {
            id: None,
            protocol: Protocol::Tcp,
            ports: Ports::Range(22, 22),
            peers: vec![
                cidr("10.0.0.0/8"),
                cidr("::/0"),
                Peer::Group("sg-a".to_owned()),
                Peer::Group(DEFAULT_GROUP.to_owned()),
                Peer::PrefixList("pl-a".to_owned()),
            ],
            description: Some("ssh".to_owned()),
        }]
    );
}

#[test]
fn groups_and_instances_keep_document_order() {
    let doc = load_ok(
        r#"{ "instances": [ { "id": "b", "interface": "veth-b", "addresses": ["10.0.0.2"] }, { "id": "a" },
                            { "id": "c", "interface": "veth-c", "addresses": ["10.0.0.3"] } ],
             "security_groups": [ { "id": "sg-z", "name": "z" }, { "id": "sg-y" } ] }"#,
    );
    let groups: Vec<&str> = doc.security_groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(groups, ["sg-z", "sg-y", DEFAULT_GROUP]);
    let instances: Vec<&str> = doc.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(instances, ["b", "a", "c"]);
    let local: Vec<&str> = doc.local_instances().map(|i| i.id.as_str()).collect();
    assert_eq!(local, ["b", "c"]);
    assert_eq!(doc.group("sg-z").unwrap().name.as_deref(), Some("z"));
}

#[test]
fn native_document_survives_writing_and_reading_back() {
    let text = r#"{
      "security_groups": [
        { "id": "sg-a", "name": "a", "description": "all shapes",
          "ingress": [
            { "protocol": "tcp", "cidrs": ["0.0.0.0/0"] },
            { "protocol": "udp", "from_port": 53, "to_port": 53, "groups": ["sg-a"], "description": "dns" },
            { "protocol": "icmp", "from_port": 8, "to_port": -1, "cidrs": ["10.0.0.0/8"] },
            { "protocol": "icmpv6", "from_port": -1, "to_port": -1, "cidrs": ["::/0"] },
            { "protocol": "icmp", "from_port": 3, "to_port": 4, "prefix_lists": ["pl-a"] },
            { "protocol": 47, "cidrs": ["192.0.2.1"] },
            { "protocol": "all", "groups": ["default"] }
          ] },
        { "id": "sg-b", "egress": [] }
      ],
      "prefix_lists": [ { "id": "pl-a", "name": "office", "cidrs": ["198.51.100.0/24", "2001:db8::/48"] } ],
      "instances": [
        { "id": "i-1", "interface": "veth1", "addresses": ["10.0.0.1"], "security_groups": ["sg-a"] },
        { "id": "i-2", "role": "host", "interface": "eth0", "source_dest_check": false, "audit": true },
        { "id": "i-3", "addresses": ["fd00::3"] }
      ]
    }"#;
    let doc = load_ok(text);
    let written = native::write_document(&doc);
    let back = native::parse_document(&written.to_string()).unwrap_or_else(|e| panic!("{e}\n{written:#}"));
    assert_eq!(back, doc);
}
