//! CIDRs and peers.

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;

#[test]
fn garbage_cidr() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "cidrs": ["ten.0.0.0/8"] }),
        "cidrs[0]",
        r#""ten.0.0.0/8" is not a CIDR (like 10.0.0.0/16, 2001:db8::/32) or an IP address"#,
    );
}

#[test]
fn cidr_with_host_bits_names_the_network() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "cidrs": ["0.0.0.0/0", "10.0.0.1/24"] }),
        "cidrs[1]",
        "10.0.0.1/24 has host bits set (the network is 10.0.0.0/24)",
    );
    assert_rule_rejected(
        json!({ "protocol": "tcp", "cidrs": ["2001:db8::1/32"] }),
        "cidrs[0]",
        "(the network is 2001:db8::/32)",
    );
}

#[test]
fn cidr_prefix_too_long() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "cidrs": ["10.0.0.0/33"] }),
        "cidrs[0]",
        r#""10.0.0.0/33": the prefix length 33 is longer than 32"#,
    );
    assert_rule_rejected(
        json!({ "protocol": "tcp", "cidrs": ["::/129"] }),
        "cidrs[0]",
        r#""::/129": the prefix length 129 is longer than 128"#,
    );
}

#[test]
fn cidr_edge_cases_that_are_not_cidrs() {
    for text in ["", "10.0.0.0/", "/8", "10.0.0/8", "10.0.0.0/8 ", "fe80::1%eth0", "10.0.0.256"] {
        assert_rule_rejected(json!({ "protocol": "tcp", "cidrs": [text] }), "cidrs[0]", "is not a CIDR");
    }
}

#[test]
fn bad_cidr_in_prefix_list() {
    assert_problems(
        &problems(r#"{ "prefix_lists": [ { "id": "pl-a", "cidrs": ["10.0.0.0/8", "10.1.2.3/16", "bogus"] } ] }"#),
        &[
            ("prefix_lists[0].cidrs[1]", "(the network is 10.1.0.0/16)"),
            ("prefix_lists[0].cidrs[2]", r#""bogus" is not a CIDR"#),
        ],
    );
}

#[test]
fn icmp_rule_with_an_ipv6_cidr() {
    assert_rule_rejected(
        json!({ "protocol": "icmp", "from_port": 8, "to_port": -1, "cidrs": ["10.0.0.0/8", "::/0"] }),
        "cidrs[1]",
        "::/0 is IPv6, but protocol icmp matches IPv4 only (use icmpv6)",
    );
}

#[test]
fn icmp_rule_by_number_with_an_ipv6_cidr() {
    assert_rule_rejected(
        json!({ "protocol": 1, "cidrs": ["fd00::1"] }),
        "cidrs[0]",
        "fd00::1/128 is IPv6, but protocol icmp",
    );
}

#[test]
fn icmpv6_rule_with_an_ipv4_cidr() {
    assert_rule_rejected(
        json!({ "protocol": "icmpv6", "cidrs": ["::/0", "0.0.0.0/0"] }),
        "cidrs[1]",
        "0.0.0.0/0 is IPv4, but protocol icmpv6 matches IPv6 only (use icmp)",
    );
    assert_rule_rejected(json!({ "protocol": "58", "cidrs": ["192.0.2.1"] }), "cidrs[0]", "192.0.2.1/32 is IPv4");
}

#[test]
fn empty_peer_list() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": [] }),
        "",
        "no peer: give at least one of cidrs, groups, prefix_lists",
    );
}

#[test]
fn all_peer_lists_empty() {
    assert_rule_rejected(json!({ "protocol": "all", "cidrs": [], "groups": [], "prefix_lists": [] }), "", "no peer");
}

#[test]
fn rule_without_peers() {
    assert_rule_rejected(json!({ "protocol": "tcp", "from_port": 22, "to_port": 22 }), "", "no peer");
}

#[test]
fn unknown_group_reference_in_a_rule() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "groups": ["sg-a", "sg-nope"] }),
        "groups[1]",
        r#"unknown security group "sg-nope""#,
    );
}

#[test]
fn unknown_group_reference_in_egress() {
    assert_rejected(
        r#"{ "security_groups": [ { "id": "sg-a", "egress": [ { "protocol": "all", "groups": ["sg-b"] } ] } ] }"#,
        "security_groups[0].egress[0].groups[0]",
        r#"unknown security group "sg-b""#,
    );
}

#[test]
fn unknown_prefix_list_reference() {
    assert_rejected(
        r#"{ "security_groups": [ { "id": "sg-a", "ingress": [ { "protocol": "tcp", "prefix_lists": ["pl-a", "pl-b"] } ] } ],
             "prefix_lists": [ { "id": "pl-a", "cidrs": ["198.51.100.0/24"] } ] }"#,
        &rule_path("prefix_lists[1]"),
        r#"unknown prefix list "pl-b""#,
    );
}

#[test]
fn group_id_is_not_a_prefix_list_id() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "prefix_lists": ["sg-a"] }),
        "prefix_lists[0]",
        r#"unknown prefix list "sg-a""#,
    );
}

#[test]
fn unknown_group_in_an_instance() {
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "security_groups": ["sg-a", "sg-b"] })),
        "instances[0].security_groups[1]",
        r#"unknown security group "sg-b""#,
    );
}

#[test]
fn unknown_references_in_an_invalid_rule_are_still_reported() {
    let found = problems(&with_rule(json!({ "protocol": "tcp", "from_port": 1, "to_port": 0, "groups": ["sg-x"] })));
    assert_problems(
        &found,
        &[(&rule_path("to_port"), "0 is below from_port 1"), (&rule_path("groups[0]"), "unknown security group")],
    );
}
