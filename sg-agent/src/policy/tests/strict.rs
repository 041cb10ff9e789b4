//! Strict addresses everywhere (one parser), instances that could never pass a packet,
//! warnings, `node_services` and per-instance conntrack timeouts.

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;
use crate::policy::{ConntrackTimeouts, NodeService};

#[test]
fn leading_zeros_are_errors_in_every_input() {
    for (cidr, fragment) in [
        ("010.0.0.0/8", r#""010.0.0.0/8": the IPv4 octet "010" has a leading zero"#),
        ("10.0.0.0/08", r#""10.0.0.0/08": the prefix length "08" has a leading zero"#),
        ("010.0.0.1", r#""010.0.0.1": the IPv4 octet "010" has a leading zero"#),
    ] {
        assert_rule_rejected(json!({ "protocol": "tcp", "cidrs": [cidr] }), "cidrs[0]", fragment);
    }
    assert_rejected(
        &json!({ "prefix_lists": [ { "id": "pl-1", "cidrs": ["192.168.01.0/24"] } ] }).to_string(),
        "prefix_lists[0].cidrs[0]",
        "leading zero",
    );
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "addresses": ["10.0.0.07"] })),
        "instances[0].addresses[0]",
        r#""10.0.0.07": the IPv4 octet "07" has a leading zero"#,
    );
    assert_problems(
        &problems(&aws_example_with(r#"{ "CidrIp": "10.0.0.0/08" }"#)),
        &[("SecurityGroups[0].IpPermissions[0].IpRanges[0].CidrIp", "leading zero")],
    );
}

/// A one-permission AWS document whose `IpRanges` holds `range`.
fn aws_example_with(range: &str) -> String {
    format!(
        r#"{{ "SecurityGroups": [ {{ "GroupId": "sg-1", "IpPermissionsEgress": [],
             "IpPermissions": [ {{ "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [ {range} ] }} ] }} ] }}"#
    )
}

#[test]
fn ipv4_mapped_addresses_are_errors() {
    assert_rule_rejected(json!({ "protocol": "tcp", "cidrs": ["::ffff:10.0.0.0/104"] }), "cidrs[0]", "IPv4-mapped");
    assert_rule_rejected(json!({ "protocol": "tcp", "cidrs": ["::ffff:10.0.0.1"] }), "cidrs[0]", "IPv4-mapped");
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "addresses": ["::ffff:10.0.0.1"] })),
        "instances[0].addresses[0]",
        "IPv4-mapped",
    );
}

#[test]
fn instance_addresses_must_be_unicast() {
    for (address, why) in [
        ("0.0.0.0", "the unspecified address"),
        ("255.255.255.255", "the broadcast address"),
        ("239.1.2.3", "a multicast address"),
        ("::", "the unspecified address"),
        ("ff02::1", "a multicast address"),
    ] {
        assert_rejected(
            &with_instance(json!({ "id": "i-1", "addresses": [address] })),
            "instances[0].addresses[0]",
            &format!("{address} is {why}, not an instance's own (unicast) address"),
        );
    }
}

#[test]
fn a_local_instance_that_would_drop_everything_is_an_error() {
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "interface": "veth1" })),
        "instances[0]",
        "a local instance with no addresses and the source/destination check on would drop every packet",
    );
    // Without the check, or on another node, or as the host, it is fine.
    read_instance(json!({ "id": "i-1", "interface": "veth1", "source_dest_check": false }));
    read_instance(json!({ "id": "i-1" }));
    read_instance(json!({ "id": "i-1", "interface": "eth0", "role": "host" }));
}

#[test]
fn a_prefix_list_of_the_other_family_in_an_icmp_rule_is_a_warning() {
    let doc = load_ok(
        &json!({
            "security_groups": [ { "id": "sg-a", "ingress": [
                { "protocol": "icmp", "prefix_lists": ["pl-v6"] },
                { "protocol": "icmpv6", "prefix_lists": ["pl-v6"] },
                { "protocol": "icmpv6", "groups": ["sg-a"] } ] } ],
            "prefix_lists": [ { "id": "pl-v6", "cidrs": ["2001:db8::/32"] } ],
            "instances": [ { "id": "i-1", "addresses": ["10.0.0.1"], "security_groups": ["sg-a"] } ]
        })
        .to_string(),
    );
    assert_problems(
        &doc.warnings,
        &[
            ("security_groups[0].ingress[0].prefix_lists[0]", r#"prefix list "pl-v6" holds no IPv4 CIDR"#),
            ("security_groups[0].ingress[2].groups[0]", r#"no member of group "sg-a" has an IPv6 address"#),
        ],
    );
}

#[test]
fn aws_default_quotas_exceeded_are_warnings() {
    let rules: Vec<Value> =
        (0..61).map(|i| json!({ "protocol": "tcp", "from_port": i, "to_port": i, "cidrs": ["10.0.0.0/8"] })).collect();
    let groups: Vec<Value> = (0..6).map(|i| json!({ "id": format!("sg-{i}") })).collect();
    let mut all = groups.clone();
    all.push(json!({ "id": "sg-big", "ingress": rules }));
    let doc = load_ok(
        &json!({
            "security_groups": all,
            "instances": [ { "id": "i-1", "addresses": ["10.0.0.1"],
                             "security_groups": ["sg-0", "sg-1", "sg-2", "sg-3", "sg-4", "sg-5"] } ]
        })
        .to_string(),
    );
    assert_problems(
        &doc.warnings,
        &[
            ("security_groups[6].ingress", "61 rules (one per peer), more than AWS's default quota of 60"),
            ("instances[0].security_groups", "6 groups, more than AWS's default quota of 5 per network interface"),
        ],
    );
    // 60 and 5 are within the quotas.
    let doc = load_ok(&json!({ "security_groups": [ { "id": "sg-a", "ingress": &rules_of(60) } ] }).to_string());
    assert!(doc.warnings.is_empty(), "{:?}", doc.warnings);
}

fn rules_of(n: u16) -> Vec<Value> {
    (0..n).map(|i| json!({ "protocol": "tcp", "from_port": i, "to_port": i, "cidrs": ["10.0.0.0/8"] })).collect()
}

#[test]
fn node_services_default_to_ec2s_and_can_be_replaced() {
    let doc = load_ok(r#"{ "security_groups": [] }"#);
    assert_eq!(doc.node_services, NodeService::ec2_defaults());
    assert_eq!(doc.node_services.len(), 8);
    let doc = load_ok(r#"{ "node_services": ["169.254.169.254", "10.0.0.2:udp/53", "[fd00:ec2::253]:tcp/53"] }"#);
    let shown: Vec<String> = doc.node_services.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["169.254.169.254", "10.0.0.2:udp/53", "[fd00:ec2::253]:tcp/53"]);
    assert!(load_ok(r#"{ "node_services": [] }"#).node_services.is_empty());
    let found = problems(
        r#"{ "node_services": ["169.254.169.254:icmp/1", "010.0.0.1", "224.0.0.1", "10.0.0.2:udp/99999", "x", "10.0.0.2", "10.0.0.2"] }"#,
    );
    assert_problems(
        &found,
        &[
            ("node_services[0]", "the protocol of a service is tcp or udp"),
            ("node_services[1]", "leading zero"),
            ("node_services[2]", "a multicast address, not a service address"),
            ("node_services[3]", "is not a service address"),
            ("node_services[4]", r#""x": not an IP address"#),
            ("node_services[6]", "10.0.0.2 is listed twice"),
        ],
    );
}

#[test]
fn conntrack_timeouts_per_instance_in_ec2s_ranges() {
    let i = read_instance(json!({ "id": "i-1", "conntrack_timeouts": { "udp": 60, "udp_stream": 60 } }));
    assert_eq!(i.conntrack_timeouts, ConntrackTimeouts { tcp_established: None, udp: Some(60), udp_stream: Some(60) });
    assert!(read_instance(json!({ "id": "i-1" })).conntrack_timeouts.is_empty());
    let found = problems(&with_instance(json!({ "id": "i-1", "conntrack_timeouts":
        { "tcp_established": 59, "udp": 29, "udp_stream": 181, "icmp": 5 } })));
    assert_problems(
        &found,
        &[
            ("instances[0].conntrack_timeouts.icmp", "unknown key (expected one of: tcp_established, udp, udp_stream)"),
            ("instances[0].conntrack_timeouts.tcp_established", "59 is not a timeout in seconds (60-432000"),
            ("instances[0].conntrack_timeouts.udp", "29 is not a timeout in seconds (30-60"),
            ("instances[0].conntrack_timeouts.udp_stream", "181 is not a timeout in seconds (60-180"),
        ],
    );
}

#[test]
fn problems_name_their_file() {
    let invalid = Invalid {
        problems: vec![
            Problem::new("security_groups[0].id", "missing"),
            Problem { source: super::super::Source::Instances(1), ..Problem::new("instances[0].id", "missing") },
        ],
    };
    let text = invalid.in_files(std::path::Path::new("doc.json"), &["a.json".into(), "b.json".into()]);
    assert_eq!(text, "doc.json: security_groups[0].id: missing\nb.json: instances[0].id: missing");
    // Without file names (the agent's answer) it still says which input.
    assert_eq!(invalid.to_string(), "security_groups[0].id: missing\n(--instances #2) instances[0].id: missing");
}
