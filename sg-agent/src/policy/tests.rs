//! Unprivileged tests of the policy reader (SPEC §2): every validation error with its JSON path,
//! every default, the AWS input and its lossless conversion, and the shipped examples.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Value, json};

use super::{
    DEFAULT_GROUP, Document, Instance, Invalid, Peer, Ports, PrefixList, Problem, Protocol, Role, Rule, SecurityGroup,
    aws,
    json::{MAX_REPORTED_PROBLEMS, Problems},
    limits, load, native,
};

// ---------------------------------------------------------------------------------------------
// Helpers

fn load_ok(text: &str) -> Document {
    load(text, None).unwrap_or_else(|e| panic!("document should load, got:\n{e}\ndocument: {text}"))
}

fn problems_of(result: Result<Document, Invalid>) -> Vec<Problem> {
    match result {
        Ok(doc) => panic!("document should be rejected, but loaded as {doc:#?}"),
        Err(e) => e.problems,
    }
}

fn problems(text: &str) -> Vec<Problem> {
    problems_of(load(text, None))
}

/// Asserts exactly `expected` problems, in this order: each with this exact path and a message
/// containing the fragment.
#[track_caller]
fn assert_problems(problems: &[Problem], expected: &[(&str, &str)]) {
    let matches = problems.len() == expected.len()
        && problems.iter().zip(expected).all(|(p, (path, fragment))| p.path == *path && p.message.contains(fragment));
    assert!(matches, "expected problems (path, message fragment):\n{expected:#?}\ngot:\n{problems:#?}");
}

/// Asserts that `text` is rejected with exactly one problem.
#[track_caller]
fn assert_rejected(text: &str, path: &str, fragment: &str) {
    assert_problems(&problems(text), &[(path, fragment)]);
}

/// A document whose only group `sg-a` has `rule` as its only ingress rule.
fn with_rule(rule: Value) -> String {
    json!({ "security_groups": [ { "id": "sg-a", "ingress": [rule] } ] }).to_string()
}

/// The path of that rule, or of one of its keys.
fn rule_path(suffix: &str) -> String {
    let base = "security_groups[0].ingress[0]";
    if suffix.is_empty() { base.to_owned() } else { format!("{base}.{suffix}") }
}

#[track_caller]
fn assert_rule_rejected(rule: Value, suffix: &str, fragment: &str) {
    assert_rejected(&with_rule(rule), &rule_path(suffix), fragment);
}

/// The rule as read from `with_rule(rule)`.
#[track_caller]
fn read_rule(rule: Value) -> Rule {
    let doc = load_ok(&with_rule(rule));
    let ingress = &doc.group("sg-a").expect("sg-a").ingress;
    assert_eq!(ingress.len(), 1, "{ingress:?}");
    ingress[0].clone()
}

/// A document with group `sg-a` and `instance` as its only instance.
fn with_instance(instance: Value) -> String {
    json!({ "security_groups": [ { "id": "sg-a" } ], "instances": [instance] }).to_string()
}

#[track_caller]
fn read_instance(instance: Value) -> Instance {
    let doc = load_ok(&with_instance(instance));
    assert_eq!(doc.instances.len(), 1);
    doc.instances[0].clone()
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn cidr(text: &str) -> Peer {
    Peer::Cidr(net(text))
}

fn addr(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn examples_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn example(name: &str) -> String {
    let path = examples_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `n` copies of `item`, as the items of a JSON array.
fn repeated(item: &str, n: usize) -> String {
    vec![item; n].join(",")
}

// ---------------------------------------------------------------------------------------------
// Unknown and duplicate keys

#[test]
fn unknown_key_at_top_level() {
    assert_rejected(
        r#"{ "security_group": [] }"#,
        "security_group",
        "unknown key (expected one of: security_groups, prefix_lists, instances)",
    );
}

#[test]
fn unknown_key_in_group() {
    assert_rejected(
        r#"{ "security_groups": [ { "id": "sg-a", "ingres": [] } ] }"#,
        "security_groups[0].ingres",
        "unknown key (expected one of: id, name, description, ingress, egress)",
    );
}

#[test]
fn unknown_key_in_rule() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "port": 22, "cidrs": ["0.0.0.0/0"] }),
        "port",
        "unknown key (expected one of: protocol, from_port, to_port, cidrs, groups, prefix_lists, description)",
    );
}

#[test]
fn unknown_key_in_egress_rule() {
    assert_rejected(
        r#"{ "security_groups": [ { "id": "sg-a", "egress": [ { "protocol": "all", "cidrs": ["0.0.0.0/0"], "action": "deny" } ] } ] }"#,
        "security_groups[0].egress[0].action",
        "unknown key",
    );
}

#[test]
fn unknown_key_in_prefix_list() {
    assert_rejected(
        r#"{ "prefix_lists": [ { "id": "pl-a", "cidrs": [], "entries": [] } ] }"#,
        "prefix_lists[0].entries",
        "unknown key (expected one of: id, name, description, cidrs)",
    );
}

#[test]
fn unknown_key_in_instance() {
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "ip": "10.0.0.1" })),
        "instances[0].ip",
        "unknown key (expected one of: id, interface, role, addresses, security_groups, source_dest_check, audit)",
    );
}

#[test]
fn keys_are_case_sensitive() {
    assert_rejected(r#"{ "Security_Groups": [] }"#, "Security_Groups", "unknown key");
}

#[test]
fn duplicate_key_at_top_level() {
    assert_rejected(r#"{ "instances": [], "instances": [] }"#, "instances", "key appears more than once");
}

#[test]
fn duplicate_key_in_group() {
    assert_rejected(
        r#"{ "security_groups": [ { "id": "sg-a", "id": "sg-b" } ] }"#,
        "security_groups[0].id",
        "key appears more than once",
    );
}

#[test]
fn duplicate_key_in_rule_is_not_last_one_wins() {
    assert_rejected(
        r#"{ "security_groups": [ { "id": "sg-a", "ingress": [
            { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["0.0.0.0/0"], "cidrs": ["10.0.0.0/8"] } ] } ] }"#,
        "security_groups[0].ingress[0].cidrs",
        "key appears more than once",
    );
}

#[test]
fn duplicate_key_in_instance() {
    assert_rejected(
        r#"{ "instances": [ { "id": "i-1", "role": "host", "role": "workload" } ] }"#,
        "instances[0].role",
        "key appears more than once",
    );
}

// ---------------------------------------------------------------------------------------------
// Wrong types

#[test]
fn document_must_be_an_object() {
    assert_rejected("[]", "", "expected an object, found an array");
    assert_rejected("null", "", "expected an object, found null");
}

#[test]
fn security_groups_must_be_an_array() {
    assert_rejected(
        r#"{ "security_groups": { "id": "sg-a" } }"#,
        "security_groups",
        "expected an array, found an object",
    );
}

#[test]
fn group_must_be_an_object() {
    assert_rejected(r#"{ "security_groups": [ "sg-a" ] }"#, "security_groups[0]", "expected an object, found a string");
}

#[test]
fn group_id_must_be_a_string() {
    assert_rejected(
        r#"{ "security_groups": [ { "id": 7 } ] }"#,
        "security_groups[0].id",
        "expected a string, found a number",
    );
}

#[test]
fn group_name_and_description_must_be_strings() {
    assert_problems(
        &problems(r#"{ "security_groups": [ { "id": "sg-a", "name": ["web"], "description": false } ] }"#),
        &[
            ("security_groups[0].name", "expected a string, found an array"),
            ("security_groups[0].description", "expected a string, found a boolean"),
        ],
    );
}

#[test]
fn ingress_must_be_an_array() {
    assert_rejected(
        r#"{ "security_groups": [ { "id": "sg-a", "ingress": null } ] }"#,
        "security_groups[0].ingress",
        "expected an array, found null",
    );
}

#[test]
fn egress_must_be_an_array() {
    assert_rejected(
        r#"{ "security_groups": [ { "id": "sg-a", "egress": { "protocol": "all" } } ] }"#,
        "security_groups[0].egress",
        "expected an array, found an object",
    );
}

#[test]
fn rule_must_be_an_object() {
    assert_rejected(
        r#"{ "security_groups": [ { "id": "sg-a", "ingress": [ "tcp/22" ] } ] }"#,
        &rule_path(""),
        "expected an object, found a string",
    );
}

#[test]
fn port_must_be_a_number_not_a_string() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "from_port": "80", "to_port": 80, "cidrs": ["0.0.0.0/0"] }),
        "from_port",
        "expected a port (0-65535), found a string",
    );
}

#[test]
fn port_must_be_an_integer() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "from_port": 80, "to_port": 80.5, "cidrs": ["0.0.0.0/0"] }),
        "to_port",
        "80.5 is not a port (0-65535)",
    );
}

#[test]
fn cidrs_must_be_an_array() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "cidrs": "0.0.0.0/0" }),
        "cidrs",
        "expected an array, found a string",
    );
}

#[test]
fn cidr_must_be_a_string() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "cidrs": [167772160] }),
        "cidrs[0]",
        "expected a string, found a number",
    );
}

#[test]
fn group_reference_must_be_a_string() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "groups": [{ "id": "sg-a" }] }),
        "groups[0]",
        "expected a string, found an object",
    );
}

#[test]
fn prefix_list_reference_must_be_a_string() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "prefix_lists": [null] }),
        "prefix_lists[0]",
        "expected a string, found null",
    );
}

#[test]
fn protocol_of_the_wrong_type() {
    assert_rule_rejected(
        json!({ "protocol": ["tcp"], "cidrs": ["0.0.0.0/0"] }),
        "protocol",
        "an array is not a protocol",
    );
    assert_rule_rejected(
        json!({ "protocol": true, "cidrs": ["0.0.0.0/0"] }),
        "protocol",
        "a boolean is not a protocol",
    );
}

#[test]
fn prefix_list_cidrs_must_be_an_array_of_strings() {
    assert_rejected(
        r#"{ "prefix_lists": [ { "id": "pl-a", "cidrs": "10.0.0.0/8" } ] }"#,
        "prefix_lists[0].cidrs",
        "expected an array, found a string",
    );
    assert_rejected(
        r#"{ "prefix_lists": [ { "id": "pl-a", "cidrs": [10] } ] }"#,
        "prefix_lists[0].cidrs[0]",
        "expected a string, found a number",
    );
}

#[test]
fn instances_must_be_an_array_of_objects() {
    assert_rejected(r#"{ "instances": { "id": "i-1" } }"#, "instances", "expected an array, found an object");
    assert_rejected(r#"{ "instances": [ "i-1" ] }"#, "instances[0]", "expected an object, found a string");
}

#[test]
fn instance_fields_of_the_wrong_type() {
    assert_problems(
        &problems(
            r#"{ "instances": [ { "id": "i-1", "interface": 3, "role": 1, "addresses": "10.0.0.1",
                 "security_groups": "sg-a", "source_dest_check": "yes", "audit": 1 } ] }"#,
        ),
        &[
            ("instances[0].interface", "expected a string, found a number"),
            ("instances[0].role", "expected a string, found a number"),
            ("instances[0].addresses", "expected an array, found a string"),
            ("instances[0].security_groups", "expected an array, found a string"),
            ("instances[0].source_dest_check", "expected true or false, found a string"),
            ("instances[0].audit", "expected true or false, found a number"),
        ],
    );
}

#[test]
fn source_dest_check_must_be_a_boolean() {
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "source_dest_check": "false" })),
        "instances[0].source_dest_check",
        "expected true or false, found a string",
    );
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "source_dest_check": 0 })),
        "instances[0].source_dest_check",
        "expected true or false, found a number",
    );
}

// ---------------------------------------------------------------------------------------------
// Missing and malformed required fields

#[test]
fn group_id_is_required() {
    assert_rejected(r#"{ "security_groups": [ { "name": "web" } ] }"#, "security_groups[0].id", "missing");
}

#[test]
fn prefix_list_id_and_cidrs_are_required() {
    assert_problems(
        &problems(r#"{ "prefix_lists": [ { "name": "office" } ] }"#),
        &[("prefix_lists[0].id", "missing"), ("prefix_lists[0].cidrs", "missing (a list of CIDRs)")],
    );
}

#[test]
fn instance_id_is_required() {
    assert_rejected(&with_instance(json!({ "interface": "veth0" })), "instances[0].id", "missing");
}

#[test]
fn protocol_is_required() {
    assert_rule_rejected(
        json!({ "from_port": 22, "to_port": 22, "cidrs": ["0.0.0.0/0"] }),
        "protocol",
        "missing (tcp, udp, icmp, icmpv6, all or a protocol number)",
    );
}

#[test]
fn ids_must_not_be_empty() {
    let message = format!("must be 1 to {} printable characters", limits::TEXT_LEN);
    assert_rejected(r#"{ "security_groups": [ { "id": "" } ] }"#, "security_groups[0].id", &message);
    assert_rejected(r#"{ "prefix_lists": [ { "id": "", "cidrs": [] } ] }"#, "prefix_lists[0].id", &message);
    assert_rejected(r#"{ "instances": [ { "id": "" } ] }"#, "instances[0].id", &message);
}

#[test]
fn ids_must_not_hold_control_characters() {
    assert_rejected(
        r#"{ "security_groups": [ { "id": "sg-a\nsg-b" } ] }"#,
        "security_groups[0].id",
        "printable characters",
    );
}

#[test]
fn ids_longer_than_the_limit() {
    let long = "x".repeat(limits::TEXT_LEN + 1);
    assert_rejected(
        &json!({ "security_groups": [ { "id": long } ] }).to_string(),
        "security_groups[0].id",
        &format!("must be 1 to {} printable characters", limits::TEXT_LEN),
    );
    let at_limit = "x".repeat(limits::TEXT_LEN);
    load_ok(&json!({ "security_groups": [ { "id": at_limit } ] }).to_string());
}

#[test]
fn names_and_descriptions_longer_than_the_limit() {
    let long = "d".repeat(limits::TEXT_LEN + 1);
    let message = format!("longer than {} bytes", limits::TEXT_LEN);
    assert_rejected(
        &json!({ "security_groups": [ { "id": "sg-a", "description": long } ] }).to_string(),
        "security_groups[0].description",
        &message,
    );
    assert_rejected(
        &json!({ "security_groups": [ { "id": "sg-a", "name": long } ] }).to_string(),
        "security_groups[0].name",
        &message,
    );
    assert_rule_rejected(
        json!({ "protocol": "all", "cidrs": ["0.0.0.0/0"], "description": long }),
        "description",
        &message,
    );
    assert_rejected(
        &json!({ "prefix_lists": [ { "id": "pl-a", "cidrs": [], "description": long } ] }).to_string(),
        "prefix_lists[0].description",
        &message,
    );
}

// ---------------------------------------------------------------------------------------------
// Protocols

#[test]
fn misspelled_protocol() {
    assert_rule_rejected(
        json!({ "protocol": "tcpp", "cidrs": ["0.0.0.0/0"] }),
        "protocol",
        r#""tcpp" is not a protocol (tcp, udp, icmp, icmpv6, all, -1, or a number 0-255)"#,
    );
}

#[test]
fn protocol_names_are_lower_case() {
    assert_rule_rejected(
        json!({ "protocol": "TCP", "cidrs": ["0.0.0.0/0"] }),
        "protocol",
        r#""TCP" is not a protocol"#,
    );
}

#[test]
fn protocol_number_256() {
    assert_rule_rejected(json!({ "protocol": 256, "cidrs": ["0.0.0.0/0"] }), "protocol", "256 is not a protocol");
    assert_rule_rejected(
        json!({ "protocol": "256", "cidrs": ["0.0.0.0/0"] }),
        "protocol",
        r#""256" is not a protocol"#,
    );
}

#[test]
fn protocol_number_minus_two() {
    assert_rule_rejected(json!({ "protocol": -2, "cidrs": ["0.0.0.0/0"] }), "protocol", "-2 is not a protocol");
    assert_rule_rejected(json!({ "protocol": "-2", "cidrs": ["0.0.0.0/0"] }), "protocol", r#""-2" is not a protocol"#);
}

#[test]
fn protocol_number_with_a_fraction() {
    assert_rule_rejected(json!({ "protocol": 1.5, "cidrs": ["0.0.0.0/0"] }), "protocol", "1.5 is not a protocol");
}

// ---------------------------------------------------------------------------------------------
// Ports

#[test]
fn from_port_above_to_port() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "from_port": 443, "to_port": 80, "cidrs": ["0.0.0.0/0"] }),
        "to_port",
        "80 is below from_port 443",
    );
}

#[test]
fn port_out_of_range() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "from_port": 0, "to_port": 70000, "cidrs": ["0.0.0.0/0"] }),
        "to_port",
        "70000 is not a port (0-65535)",
    );
    assert_rule_rejected(
        json!({ "protocol": "udp", "from_port": 65536, "to_port": 80, "cidrs": ["0.0.0.0/0"] }),
        "from_port",
        "65536 is not a port",
    );
}

#[test]
fn both_ports_out_of_range_are_both_reported() {
    assert_problems(
        &problems(&with_rule(json!({ "protocol": "tcp", "from_port": -5, "to_port": 70000, "cidrs": ["0.0.0.0/0"] }))),
        &[(&rule_path("from_port"), "-5 is not a port"), (&rule_path("to_port"), "70000 is not a port")],
    );
}

#[test]
fn tcp_port_minus_one_is_not_any() {
    assert_problems(
        &problems(&with_rule(json!({ "protocol": "tcp", "from_port": -1, "to_port": -1, "cidrs": ["0.0.0.0/0"] }))),
        &[
            (&rule_path("from_port"), "-1 is not a port (0-65535)"),
            (&rule_path("to_port"), "-1 is not a port (0-65535)"),
        ],
    );
}

#[test]
fn from_port_without_to_port() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "from_port": 22, "cidrs": ["0.0.0.0/0"] }),
        "to_port",
        "missing: from_port is given, so to_port must be too",
    );
}

#[test]
fn to_port_without_from_port() {
    assert_rule_rejected(
        json!({ "protocol": "udp", "to_port": 53, "cidrs": ["0.0.0.0/0"] }),
        "from_port",
        "missing: to_port is given, so from_port must be too",
    );
}

#[test]
fn icmp_code_with_any_type() {
    assert_rule_rejected(
        json!({ "protocol": "icmp", "from_port": -1, "to_port": 0, "cidrs": ["0.0.0.0/0"] }),
        "to_port",
        "code 0 needs a type, but from_port is -1 (any type)",
    );
}

#[test]
fn icmp_type_256() {
    assert_rule_rejected(
        json!({ "protocol": "icmp", "from_port": 256, "to_port": -1, "cidrs": ["0.0.0.0/0"] }),
        "from_port",
        "256 is not an ICMP type (0-255, or -1 for any)",
    );
}

#[test]
fn icmp_code_256() {
    assert_rule_rejected(
        json!({ "protocol": "icmpv6", "from_port": 1, "to_port": 256, "cidrs": ["::/0"] }),
        "to_port",
        "256 is not an ICMP code (0-255, or -1 for any)",
    );
}

#[test]
fn icmp_type_minus_two() {
    assert_rule_rejected(
        json!({ "protocol": "icmp", "from_port": -2, "to_port": -1, "cidrs": ["0.0.0.0/0"] }),
        "from_port",
        "-2 is not an ICMP type",
    );
}

#[test]
fn icmp_type_without_code() {
    assert_rule_rejected(
        json!({ "protocol": "icmp", "from_port": 8, "cidrs": ["0.0.0.0/0"] }),
        "to_port",
        "missing: from_port (the ICMP type) is given, so to_port (the code, -1 for any) must be too",
    );
}

#[test]
fn icmp_code_without_type() {
    assert_rule_rejected(
        json!({ "protocol": "icmp", "to_port": 0, "cidrs": ["0.0.0.0/0"] }),
        "from_port",
        "missing: to_port (the ICMP code) is given, so from_port (the type, -1 for any) must be too",
    );
}

#[test]
fn ignored_ports_must_still_be_numbers() {
    assert_rule_rejected(
        json!({ "protocol": "all", "from_port": "any", "to_port": -1, "cidrs": ["0.0.0.0/0"] }),
        "from_port",
        "expected a port (-1-65535), found a string",
    );
}

// ---------------------------------------------------------------------------------------------
// CIDRs and peers

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
        r#""10.0.0.0/33" is not a CIDR"#,
    );
    assert_rule_rejected(json!({ "protocol": "tcp", "cidrs": ["::/129"] }), "cidrs[0]", r#""::/129" is not a CIDR"#);
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

// ---------------------------------------------------------------------------------------------
// Duplicates across objects

#[test]
fn duplicate_group_id() {
    assert_rejected(
        r#"{ "security_groups": [ { "id": "sg-a" }, { "id": "sg-b" }, { "id": "sg-a" } ] }"#,
        "security_groups[2].id",
        r#"duplicate security group id "sg-a" (also security_groups[0])"#,
    );
}

#[test]
fn default_group_defined_twice() {
    assert_rejected(
        r#"{ "security_groups": [ { "id": "default" }, { "id": "default" } ] }"#,
        "security_groups[1].id",
        r#"duplicate security group id "default""#,
    );
}

#[test]
fn duplicate_prefix_list_id() {
    assert_rejected(
        r#"{ "prefix_lists": [ { "id": "pl-a", "cidrs": [] }, { "id": "pl-a", "cidrs": ["10.0.0.0/8"] } ] }"#,
        "prefix_lists[1].id",
        r#"duplicate prefix list id "pl-a" (also prefix_lists[0])"#,
    );
}

#[test]
fn duplicate_instance_id() {
    assert_rejected(
        r#"{ "instances": [ { "id": "i-1", "interface": "veth1" }, { "id": "i-1", "interface": "veth2" } ] }"#,
        "instances[1].id",
        r#"duplicate instance id "i-1" (also instances[0])"#,
    );
}

#[test]
fn two_instances_on_one_interface() {
    assert_rejected(
        r#"{ "instances": [ { "id": "i-1", "interface": "veth1" }, { "id": "i-2" },
                            { "id": "i-3", "interface": "veth1", "role": "host" } ] }"#,
        "instances[2].interface",
        r#"interface "veth1" already belongs to instances[0]"#,
    );
}

#[test]
fn instances_without_interface_do_not_clash() {
    let doc = load_ok(r#"{ "instances": [ { "id": "i-1" }, { "id": "i-2" } ] }"#);
    assert_eq!(doc.instances.len(), 2);
    assert_eq!(doc.local_instances().count(), 0);
}

#[test]
fn duplicate_address_in_an_instance() {
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "addresses": ["10.0.0.1", "fd00::1", "10.0.0.1"] })),
        "instances[0].addresses[2]",
        "10.0.0.1 is listed twice",
    );
}

#[test]
fn duplicate_ipv6_address_in_another_spelling() {
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "addresses": ["fd00::1", "fd00:0:0::0001"] })),
        "instances[0].addresses[1]",
        "fd00::1 is listed twice",
    );
}

#[test]
fn group_listed_twice_in_an_instance() {
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "security_groups": ["sg-a", "default", "sg-a"] })),
        "instances[0].security_groups[2]",
        r#"group "sg-a" is listed twice"#,
    );
}

// ---------------------------------------------------------------------------------------------
// Instance fields

#[test]
fn empty_interface_name() {
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "interface": "" })),
        "instances[0].interface",
        r#""" is not an interface name: must be 1 to 15 characters"#,
    );
}

#[test]
fn interface_name_of_16_characters() {
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "interface": "veth-0123456789a" })),
        "instances[0].interface",
        r#""veth-0123456789a" is not an interface name: must be 1 to 15 characters"#,
    );
    // 15 is the most Linux allows (IFNAMSIZ 16 with the NUL).
    assert_eq!(
        read_instance(json!({ "id": "i-1", "interface": "veth-0123456789" })).interface.as_deref(),
        Some("veth-0123456789")
    );
}

#[test]
fn interface_name_with_a_slash() {
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "interface": "../eth0" })),
        "instances[0].interface",
        r#""../eth0" is not an interface name: must not contain '/', ':' or whitespace"#,
    );
}

#[test]
fn interface_names_linux_refuses() {
    for name in ["eth0:1", "eth 0", "veth\t", ".", ".."] {
        assert_rejected(
            &with_instance(json!({ "id": "i-1", "interface": name })),
            "instances[0].interface",
            "is not an interface name",
        );
    }
}

#[test]
fn bad_role() {
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "role": "router" })),
        "instances[0].role",
        r#""router" is not a role (workload or host)"#,
    );
}

#[test]
fn bad_address() {
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "addresses": ["10.0.0.300"] })),
        "instances[0].addresses[0]",
        r#""10.0.0.300" is not an IP address"#,
    );
}

#[test]
fn address_with_a_prefix_length_is_not_an_address() {
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "addresses": ["fd00::1", "10.0.0.1/24"] })),
        "instances[0].addresses[1]",
        r#""10.0.0.1/24" is not an IP address"#,
    );
}

// ---------------------------------------------------------------------------------------------
// Limits

#[test]
fn more_groups_on_an_instance_than_the_limit() {
    let n = limits::GROUPS_PER_INSTANCE + 1;
    let groups: Vec<Value> = (0..n).map(|i| json!({ "id": format!("sg-{i}") })).collect();
    let ids: Vec<String> = (0..n).map(|i| format!("sg-{i}")).collect();
    assert_rejected(
        &json!({ "security_groups": groups, "instances": [ { "id": "i-1", "security_groups": ids } ] }).to_string(),
        "instances[0].security_groups",
        &format!("{n} items, more than the limit of {}", limits::GROUPS_PER_INSTANCE),
    );
}

#[test]
fn groups_on_an_instance_at_the_limit() {
    let n = limits::GROUPS_PER_INSTANCE;
    let groups: Vec<Value> = (0..n).map(|i| json!({ "id": format!("sg-{i}") })).collect();
    let ids: Vec<String> = (0..n).map(|i| format!("sg-{i}")).collect();
    let doc = load_ok(
        &json!({ "security_groups": groups, "instances": [ { "id": "i-1", "security_groups": ids } ] }).to_string(),
    );
    assert_eq!(doc.instances[0].security_groups.len(), n);
}

#[test]
fn more_addresses_than_the_limit() {
    let n = limits::ADDRESSES_PER_INSTANCE + 1;
    let addresses: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}")).collect();
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "addresses": addresses })),
        "instances[0].addresses",
        &format!("{n} items, more than the limit of {}", limits::ADDRESSES_PER_INSTANCE),
    );
}

#[test]
fn more_peers_in_one_list_than_the_limit() {
    let n = limits::PEERS_PER_RULE + 1;
    let cidrs: Vec<String> = (0..n).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)).collect();
    assert_rule_rejected(
        json!({ "protocol": "tcp", "cidrs": cidrs }),
        "cidrs",
        &format!("{n} items, more than the limit of {}", limits::PEERS_PER_RULE),
    );
}

#[test]
fn more_peers_across_lists_than_the_limit() {
    let half = limits::PEERS_PER_RULE / 2 + 1;
    let cidrs: Vec<String> = (0..half).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)).collect();
    let groups = vec![DEFAULT_GROUP; half];
    assert_rule_rejected(
        json!({ "protocol": "tcp", "cidrs": cidrs, "groups": groups }),
        "",
        &format!("{} peers, more than the limit of {}", 2 * half, limits::PEERS_PER_RULE),
    );
}

#[test]
fn more_rules_than_the_limit() {
    let n = limits::RULES_PER_GROUP + 1;
    let rule = r#"{"protocol":"all","cidrs":["0.0.0.0/0"]}"#;
    let text = format!(r#"{{ "security_groups": [ {{ "id": "sg-a", "egress": [{}] }} ] }}"#, repeated(rule, n));
    assert_rejected(
        &text,
        "security_groups[0].egress",
        &format!("{n} items, more than the limit of {}", limits::RULES_PER_GROUP),
    );
}

#[test]
fn more_groups_than_the_limit() {
    let n = limits::SECURITY_GROUPS + 1;
    let text = format!(r#"{{ "security_groups": [{}] }}"#, repeated("{}", n));
    assert_rejected(
        &text,
        "security_groups",
        &format!("{n} items, more than the limit of {}", limits::SECURITY_GROUPS),
    );
}

#[test]
fn more_instances_than_the_limit() {
    let n = limits::INSTANCES + 1;
    let text = format!(r#"{{ "instances": [{}] }}"#, repeated("{}", n));
    assert_rejected(&text, "instances", &format!("{n} items, more than the limit of {}", limits::INSTANCES));
}

#[test]
fn more_prefix_lists_than_the_limit() {
    let n = limits::PREFIX_LISTS + 1;
    let text = format!(r#"{{ "prefix_lists": [{}] }}"#, repeated("{}", n));
    assert_rejected(&text, "prefix_lists", &format!("{n} items, more than the limit of {}", limits::PREFIX_LISTS));
}

#[test]
fn more_prefix_list_cidrs_than_the_limit() {
    let n = limits::CIDRS_PER_PREFIX_LIST + 1;
    let text =
        format!(r#"{{ "prefix_lists": [ {{ "id": "pl-a", "cidrs": [{}] }} ] }}"#, repeated(r#""10.0.0.0/8""#, n));
    assert_rejected(
        &text,
        "prefix_lists[0].cidrs",
        &format!("{n} items, more than the limit of {}", limits::CIDRS_PER_PREFIX_LIST),
    );
}

#[test]
fn document_larger_than_the_limit_is_rejected_before_parsing() {
    // Not JSON at all past the first bytes: a reader that parsed first would report a syntax error.
    let start = r#"{ "security_groups": ["#;
    let text = start.to_owned() + &"x".repeat(limits::DOCUMENT_BYTES + 1 - start.len());
    assert_eq!(text.len(), limits::DOCUMENT_BYTES + 1);
    let expected =
        format!("document is {} bytes, more than the limit of {}", limits::DOCUMENT_BYTES + 1, limits::DOCUMENT_BYTES);
    assert_problems(&problems(&text), &[("", &expected)]);
    assert_problems(&problems_of(native::parse_document(&text)), &[("", &expected)]);
}

#[test]
fn oversized_instances_document_is_rejected() {
    let instances = "{".to_owned() + &" ".repeat(limits::DOCUMENT_BYTES);
    let found = problems_of(load(&example("aws-describe-security-groups.json"), Some(&instances)));
    assert_problems(&found, &[("--instances", "more than the limit of")]);
}

// ---------------------------------------------------------------------------------------------
// JSON syntax

#[test]
fn invalid_json_syntax() {
    let found = problems(r#"{ "security_groups": [ { "id": "sg-a", } ] }"#);
    assert_problems(&found, &[("", "not valid JSON")]);
    assert!(found[0].message.contains("line 1 column"), "the syntax error is positioned: {found:?}");
}

#[test]
fn empty_text_is_not_a_document() {
    assert_rejected("", "", "not valid JSON: EOF while parsing");
}

#[test]
fn trailing_text_after_the_document() {
    assert_rejected("{} {}", "", "not valid JSON: trailing characters");
}

#[test]
fn deeply_nested_json_is_an_error_not_a_crash() {
    let depth = 100_000;
    let text = format!(r#"{{ "security_groups": {}{} }}"#, "[".repeat(depth), "]".repeat(depth));
    assert_rejected(&text, "", "recursion limit exceeded");
    let text = format!(
        r#"{{ "security_groups": [ {{ "id": "sg-a", "name": {}0{} }} ] }}"#,
        r#"{"a":"#.repeat(depth),
        "}".repeat(depth)
    );
    assert_rejected(&text, "", "recursion limit exceeded");
}

#[test]
fn moderately_nested_json_is_a_type_error() {
    let depth = 100;
    let text = format!(r#"{{ "security_groups": [ {{ "id": {}1{} }} ] }}"#, "[".repeat(depth), "]".repeat(depth));
    assert_rejected(&text, "security_groups[0].id", "expected a string, found an array");
}

// ---------------------------------------------------------------------------------------------
// All errors at once

#[test]
fn every_error_is_reported_at_once_in_document_order() {
    let text = r#"{
      "security_groups": [
        { "id": "sg-a", "colour": "red",
          "ingress": [
            { "protocol": "tcpp", "cidrs": ["0.0.0.0/0"] },
            { "protocol": "tcp", "from_port": 443, "to_port": 80, "cidrs": ["0.0.0.0/0"] },
            { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["198.51.100.0/24"] }
          ],
          "egress": [ { "protocol": "udp", "cidrs": ["10.0.0.1/24"] } ]
        },
        { "ingress": [] }
      ],
      "prefix_lists": [ { "id": "pl-a", "cidrs": ["nope"] } ],
      "instances": [
        { "id": "i-1", "interface": "this-name-is-too-long", "role": "router", "source_dest_check": "yes" },
        { "id": "i-2", "addresses": ["10.0.0.1", "10.0.0.1"], "security_groups": ["sg-nope"] }
      ]
    }"#;
    assert_problems(
        &problems(text),
        &[
            ("security_groups[0].colour", "unknown key"),
            ("security_groups[0].ingress[0].protocol", r#""tcpp" is not a protocol"#),
            ("security_groups[0].ingress[1].to_port", "80 is below from_port 443"),
            ("security_groups[0].egress[0].cidrs[0]", "(the network is 10.0.0.0/24)"),
            ("security_groups[1].id", "missing"),
            ("prefix_lists[0].cidrs[0]", r#""nope" is not a CIDR"#),
            ("instances[0].interface", "is not an interface name"),
            ("instances[0].role", r#""router" is not a role"#),
            ("instances[0].source_dest_check", "expected true or false"),
            ("instances[1].addresses[1]", "10.0.0.1 is listed twice"),
            ("instances[1].security_groups[0]", r#"unknown security group "sg-nope""#),
        ],
    );
}

#[test]
fn cross_object_errors_are_reported_together_with_local_ones() {
    // References are checked once every group is known, so they are reported after the
    // problems found in each object on its own; all of them must be there.
    let text = r#"{
      "security_groups": [
        { "id": "sg-a", "ingress": [ { "protocol": "tcp", "groups": ["sg-nope"] } ] },
        { "id": "sg-a", "ingress": [ { "protocol": "tcp", "from_port": 1, "to_port": 70000, "cidrs": ["::/0"] } ] }
      ],
      "instances": [ { "id": "i-1", "interface": "veth1" }, { "id": "i-2", "interface": "veth1", "addresses": ["ten"] } ]
    }"#;
    let mut found: Vec<(String, String)> = problems(text).into_iter().map(|p| (p.path, p.message)).collect();
    found.sort();
    let mut expected = vec![
        ("security_groups[0].ingress[0].groups[0]".to_owned(), r#"unknown security group "sg-nope""#.to_owned()),
        (
            "security_groups[1].id".to_owned(),
            r#"duplicate security group id "sg-a" (also security_groups[0])"#.to_owned(),
        ),
        ("security_groups[1].ingress[0].to_port".to_owned(), "70000 is not a port (0-65535)".to_owned()),
        ("instances[1].interface".to_owned(), r#"interface "veth1" already belongs to instances[0]"#.to_owned()),
        ("instances[1].addresses[0]".to_owned(), r#""ten" is not an IP address"#.to_owned()),
    ];
    expected.sort();
    assert_eq!(found, expected);
}

#[test]
fn many_errors_are_all_kept_and_the_message_is_summarised() {
    let n = MAX_REPORTED_PROBLEMS + 5;
    let text = format!(r#"{{ "security_groups": [{}] }}"#, repeated(r#"{"id": 1}"#, n));
    let invalid = load(&text, None).expect_err("ids are numbers");
    assert_eq!(invalid.problems.len(), n);
    assert_eq!(invalid.problems[n - 1].path, format!("security_groups[{}].id", n - 1));
    let shown = invalid.to_string();
    assert_eq!(shown.lines().count(), MAX_REPORTED_PROBLEMS + 1);
    assert!(shown.ends_with("... and 5 more problems"), "{shown}");
    assert!(shown.starts_with("security_groups[0].id: expected a string, found a number\n"), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// Defaults (SPEC §2)

#[test]
fn absent_egress_allows_all_outbound() {
    let doc = load_ok(r#"{ "security_groups": [ { "id": "sg-a" } ] }"#);
    let group = doc.group("sg-a").unwrap();
    assert_eq!(
        group.egress,
        vec![Rule {
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
        Document { security_groups: vec![SecurityGroup::aws_default()], prefix_lists: vec![], instances: vec![] }
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
        r#"{ "instances": [ { "id": "b", "interface": "veth-b" }, { "id": "a" }, { "id": "c", "interface": "veth-c" } ],
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
    let written = native::write_document(&doc.security_groups, &doc.prefix_lists, &doc.instances);
    let back = native::parse_document(&written.to_string()).unwrap_or_else(|e| panic!("{e}\n{written:#}"));
    assert_eq!(back, doc);
}

// ---------------------------------------------------------------------------------------------
// AWS input

/// `aws ec2 describe-security-groups` output with one group `sg-1` and `permissions` as its
/// `IpPermissions` (and no egress).
fn aws_with_ingress(permissions: Value) -> String {
    json!({ "SecurityGroups": [ { "GroupId": "sg-1", "GroupName": "one", "IpPermissions": permissions, "IpPermissionsEgress": [] } ] })
        .to_string()
}

fn convert(text: &str) -> Result<Vec<SecurityGroup>, Invalid> {
    aws::convert_groups(&native::parse_json(text).unwrap())
}

#[track_caller]
fn assert_aws_rejected(text: &str, path: &str, fragment: &str) {
    assert_problems(&problems(text), &[(path, fragment)]);
    match convert(text) {
        Ok(groups) => panic!("convert_groups should reject the document, got {groups:#?}"),
        Err(e) => assert_problems(&e.problems, &[(path, fragment)]),
    }
}

/// The prefix lists of the example `--instances` file.
fn example_prefix_lists() -> Vec<PrefixList> {
    let mut p = Problems::default();
    let (lists, _) = aws::read_instances_document(&mut p, &native::parse_json(&example("aws-instances.json")).unwrap());
    assert!(p.is_empty(), "{:?}", p.list);
    lists.into_iter().map(|l| l.list).collect()
}

#[test]
fn aws_example_loads_with_its_instances() {
    let doc = load(&example("aws-describe-security-groups.json"), Some(&example("aws-instances.json")))
        .unwrap_or_else(|e| panic!("{e}"));
    let sg = "sg-0123456789abcdef0";
    let group = doc.group(sg).expect("the AWS group");
    assert_eq!(group.name.as_deref(), Some("web"));
    assert_eq!(group.description.as_deref(), Some("web tier"));
    assert_eq!(
        group.ingress,
        vec![
            Rule {
                protocol: Protocol::Tcp,
                ports: Ports::Range(443, 443),
                peers: vec![cidr("0.0.0.0/0")],
                description: Some("https".to_owned())
            },
            Rule {
                protocol: Protocol::Tcp,
                ports: Ports::Range(443, 443),
                peers: vec![cidr("::/0")],
                description: None
            },
            Rule {
                protocol: Protocol::Tcp,
                ports: Ports::Range(22, 22),
                peers: vec![Peer::PrefixList("pl-1234abc1234abc123".to_owned())],
                description: Some("admin".to_owned())
            },
            Rule {
                protocol: Protocol::Icmp,
                ports: Ports::Icmp { ty: Some(3), code: Some(4) },
                peers: vec![cidr("10.0.0.0/16")],
                description: None
            },
            Rule {
                protocol: Protocol::All,
                ports: Ports::All,
                peers: vec![Peer::Group(sg.to_owned())],
                description: None
            },
        ]
    );
    assert_eq!(
        group.egress,
        vec![Rule {
            protocol: Protocol::All,
            ports: Ports::All,
            peers: vec![cidr("0.0.0.0/0"), cidr("::/0")],
            description: None
        }]
    );
    assert_eq!(doc.group(DEFAULT_GROUP), Some(&SecurityGroup::aws_default()));
    assert_eq!(doc.prefix_lists, example_prefix_lists());
    let instances: Vec<(&str, Option<&str>, &[String])> =
        doc.instances.iter().map(|i| (i.id.as_str(), i.interface.as_deref(), i.security_groups.as_slice())).collect();
    assert_eq!(instances, [("web-1", Some("veth-web1"), &[sg.to_owned()][..]), ("web-2", None, &[sg.to_owned()][..])]);
    crate::compile::compile(&doc).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn aws_example_without_instances_lacks_its_prefix_list() {
    assert_problems(
        &problems(&example("aws-describe-security-groups.json")),
        &[(
            "SecurityGroups[0].IpPermissions[1].PrefixListIds[0].PrefixListId",
            r#"unknown prefix list "pl-1234abc1234abc123""#,
        )],
    );
}

#[test]
fn aws_keys_without_bearing_on_enforcement_are_accepted() {
    let text = r#"{
      "SecurityGroups": [ {
        "GroupId": "sg-1", "GroupName": "one", "Description": "d", "OwnerId": "123456789012", "VpcId": "vpc-1",
        "SecurityGroupArn": "arn:aws:ec2:eu-west-1:123456789012:security-group/sg-1",
        "Tags": [ { "Key": "Name", "Value": "one" } ],
        "IpPermissions": [ {
          "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
          "IpRanges": [ { "CidrIp": "10.0.0.0/8", "Description": "office" } ],
          "Ipv6Ranges": [ { "CidrIpv6": "fd00::/8", "Description": "office v6" } ],
          "PrefixListIds": [],
          "UserIdGroupPairs": [ { "GroupId": "sg-1", "UserId": "123456789012", "GroupName": "one", "VpcId": "vpc-1",
                                  "VpcPeeringConnectionId": "pcx-1", "PeeringStatus": "active", "Description": "self" } ]
        } ],
        "IpPermissionsEgress": []
      } ],
      "NextToken": "abc"
    }"#;
    let doc = load_ok(text);
    let group = doc.group("sg-1").unwrap();
    let peers: Vec<(&[Peer], Option<&str>)> =
        group.ingress.iter().map(|r| (r.peers.as_slice(), r.description.as_deref())).collect();
    assert_eq!(
        peers,
        [
            (&[cidr("10.0.0.0/8")][..], Some("office")),
            (&[cidr("fd00::/8")][..], Some("office v6")),
            (&[Peer::Group("sg-1".to_owned())][..], Some("self")),
        ]
    );
}

#[test]
fn aws_unknown_top_level_key() {
    assert_aws_rejected(
        r#"{ "SecurityGroups": [], "Foo": 1 }"#,
        "Foo",
        "unknown key (expected one of: SecurityGroups, NextToken)",
    );
}

#[test]
fn aws_unknown_group_key() {
    assert_aws_rejected(
        r#"{ "SecurityGroups": [ { "GroupId": "sg-1", "IpPermissions": [], "Rules": [] } ] }"#,
        "SecurityGroups[0].Rules",
        "unknown key (expected one of: GroupId, GroupName, Description, IpPermissions, IpPermissionsEgress",
    );
}

#[test]
fn aws_unknown_permission_key() {
    assert_aws_rejected(
        &aws_with_ingress(json!([
            { "IpProtocol": "-1", "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] },
            { "IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ], "Foo": true }
        ])),
        "SecurityGroups[0].IpPermissions[1].Foo",
        "unknown key (expected one of: IpProtocol, FromPort, ToPort, IpRanges, Ipv6Ranges, PrefixListIds, UserIdGroupPairs)",
    );
}

#[test]
fn aws_unknown_peer_keys() {
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "-1", "IpRanges": [ { "CidrIp": "0.0.0.0/0", "CidrIpv6": "::/0" } ] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0].IpRanges[0].CidrIpv6",
        "unknown key (expected one of: CidrIp, Description)",
    );
    assert_aws_rejected(
        &aws_with_ingress(json!([ { "IpProtocol": "-1", "Ipv6Ranges": [ { "CidrIpv6": "::/0", "Cidr": "::/0" } ] } ])),
        "SecurityGroups[0].IpPermissions[0].Ipv6Ranges[0].Cidr",
        "unknown key (expected one of: CidrIpv6, Description)",
    );
    // (`load` also finds that pl-1 is not in the --instances document, which is not given.)
    let text = aws_with_ingress(
        json!([ { "IpProtocol": "-1", "PrefixListIds": [ { "PrefixListId": "pl-1", "Name": "x" } ] } ]),
    );
    let unknown_key = (
        "SecurityGroups[0].IpPermissions[0].PrefixListIds[0].Name",
        "unknown key (expected one of: PrefixListId, Description)",
    );
    assert_problems(&convert(&text).expect_err("unknown key").problems, &[unknown_key]);
    assert_problems(
        &problems(&text),
        &[
            unknown_key,
            ("SecurityGroups[0].IpPermissions[0].PrefixListIds[0].PrefixListId", r#"unknown prefix list "pl-1""#),
        ],
    );
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "-1", "UserIdGroupPairs": [ { "GroupId": "sg-1", "Owner": "me" } ] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0].UserIdGroupPairs[0].Owner",
        "unknown key (expected one of: GroupId, UserId, GroupName, VpcId, VpcPeeringConnectionId, PeeringStatus, Description)",
    );
}

#[test]
fn aws_native_keys_are_unknown() {
    assert_aws_rejected(
        r#"{ "SecurityGroups": [], "security_groups": [] }"#,
        "security_groups",
        "unknown key (expected one of: SecurityGroups, NextToken)",
    );
}

#[test]
fn aws_unknown_key_in_egress_permission() {
    let text = r#"{ "SecurityGroups": [ { "GroupId": "sg-1", "IpPermissionsEgress": [ { "IpProtocol": "-1", "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ], "Egress": true } ] } ] }"#;
    assert_aws_rejected(text, "SecurityGroups[0].IpPermissionsEgress[0].Egress", "unknown key");
}

#[test]
fn aws_duplicate_key() {
    assert_aws_rejected(
        r#"{ "SecurityGroups": [ { "GroupId": "sg-1", "GroupId": "sg-2" } ] }"#,
        "SecurityGroups[0].GroupId",
        "key appears more than once",
    );
}

#[test]
fn aws_group_id_is_required() {
    assert_aws_rejected(r#"{ "SecurityGroups": [ { "GroupName": "one" } ] }"#, "SecurityGroups[0].GroupId", "missing");
}

#[test]
fn aws_group_id_is_checked_like_a_native_id() {
    let message = format!("must be 1 to {} printable characters", limits::TEXT_LEN);
    assert_aws_rejected(r#"{ "SecurityGroups": [ { "GroupId": "" } ] }"#, "SecurityGroups[0].GroupId", &message);
    let long = "x".repeat(limits::TEXT_LEN + 1);
    assert_aws_rejected(
        &json!({ "SecurityGroups": [ { "GroupId": long } ] }).to_string(),
        "SecurityGroups[0].GroupId",
        &message,
    );
    assert_aws_rejected(
        r#"{ "SecurityGroups": [ { "GroupId": 12 } ] }"#,
        "SecurityGroups[0].GroupId",
        "expected a string, found a number",
    );
}

#[test]
fn aws_descriptions_longer_than_the_limit() {
    let long = "d".repeat(limits::TEXT_LEN + 1);
    let message = format!("longer than {} bytes", limits::TEXT_LEN);
    assert_aws_rejected(
        &json!({ "SecurityGroups": [ { "GroupId": "sg-1", "Description": long } ] }).to_string(),
        "SecurityGroups[0].Description",
        &message,
    );
    assert_aws_rejected(
        &json!({ "SecurityGroups": [ { "GroupId": "sg-1", "GroupName": long } ] }).to_string(),
        "SecurityGroups[0].GroupName",
        &message,
    );
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "-1", "IpRanges": [ { "CidrIp": "0.0.0.0/0", "Description": long } ] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0].IpRanges[0].Description",
        &message,
    );
}

#[test]
fn aws_security_groups_must_be_an_array() {
    assert_aws_rejected(
        r#"{ "SecurityGroups": { "GroupId": "sg-1" } }"#,
        "SecurityGroups",
        "expected an array, found an object",
    );
}

#[test]
fn aws_protocol_is_required() {
    assert_aws_rejected(
        &aws_with_ingress(json!([ { "FromPort": 1, "ToPort": 2, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] } ])),
        "SecurityGroups[0].IpPermissions[0].IpProtocol",
        "missing",
    );
}

#[test]
fn aws_bad_protocol() {
    assert_aws_rejected(
        &aws_with_ingress(json!([ { "IpProtocol": "tcpp", "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] } ])),
        "SecurityGroups[0].IpPermissions[0].IpProtocol",
        r#""tcpp" is not a protocol"#,
    );
}

#[test]
fn aws_peer_id_is_required() {
    assert_aws_rejected(
        &aws_with_ingress(json!([ { "IpProtocol": "-1", "IpRanges": [ { "Description": "no cidr" } ] } ])),
        "SecurityGroups[0].IpPermissions[0].IpRanges[0].CidrIp",
        "missing",
    );
    assert_aws_rejected(
        &aws_with_ingress(json!([ { "IpProtocol": "-1", "UserIdGroupPairs": [ { "UserId": "123456789012" } ] } ])),
        "SecurityGroups[0].IpPermissions[0].UserIdGroupPairs[0].GroupId",
        "missing",
    );
}

#[test]
fn aws_port_errors_use_aws_names() {
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "tcp", "FromPort": 443, "ToPort": 80, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0].ToPort",
        "80 is below FromPort 443",
    );
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "udp", "FromPort": 53, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0].ToPort",
        "missing: FromPort is given, so ToPort must be too",
    );
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "icmp", "FromPort": -1, "ToPort": 3, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0].ToPort",
        "code 3 needs a type, but FromPort is -1",
    );
}

#[test]
fn aws_ip_ranges_with_an_ipv6_cidr() {
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [ { "CidrIp": "::/0" } ] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0].IpRanges[0].CidrIp",
        "::/0: IpRanges holds IPv4 CIDRs",
    );
}

#[test]
fn aws_ipv6_ranges_with_an_ipv4_cidr() {
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "Ipv6Ranges": [ { "CidrIpv6": "10.0.0.0/8" } ] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0].Ipv6Ranges[0].CidrIpv6",
        "10.0.0.0/8: Ipv6Ranges holds IPv6 CIDRs",
    );
}

#[test]
fn aws_bad_cidr() {
    assert_aws_rejected(
        &aws_with_ingress(json!([ { "IpProtocol": "-1", "IpRanges": [ { "CidrIp": "10.0.0.1/8" } ] } ])),
        "SecurityGroups[0].IpPermissions[0].IpRanges[0].CidrIp",
        "(the network is 10.0.0.0/8)",
    );
}

#[test]
fn aws_icmp_with_an_ipv6_range() {
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "Ipv6Ranges": [ { "CidrIpv6": "::/0" } ] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0].Ipv6Ranges[0].CidrIpv6",
        "::/0 is of the other IP family than protocol icmp",
    );
}

#[test]
fn aws_permission_without_peers() {
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "-1", "IpRanges": [], "Ipv6Ranges": [], "PrefixListIds": [], "UserIdGroupPairs": [] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0]",
        "no peer",
    );
}

#[test]
fn aws_unknown_group_reference() {
    assert_rejected(
        &aws_with_ingress(json!([ { "IpProtocol": "-1", "UserIdGroupPairs": [ { "GroupId": "sg-2" } ] } ])),
        "SecurityGroups[0].IpPermissions[0].UserIdGroupPairs[0].GroupId",
        r#"unknown security group "sg-2""#,
    );
}

#[test]
fn aws_duplicate_group_id() {
    assert_rejected(
        r#"{ "SecurityGroups": [ { "GroupId": "sg-1" }, { "GroupId": "sg-1" } ] }"#,
        "SecurityGroups[1].GroupId",
        r#"duplicate security group id "sg-1" (also SecurityGroups[0])"#,
    );
}

#[test]
fn aws_missing_egress_means_no_outbound() {
    let doc = load_ok(r#"{ "SecurityGroups": [ { "GroupId": "sg-1" } ] }"#);
    let group = doc.group("sg-1").unwrap();
    assert_eq!((group.ingress.as_slice(), group.egress.as_slice()), (&[][..], &[][..]));
    let groups = convert(r#"{ "SecurityGroups": [ { "GroupId": "sg-1", "IpPermissions": [] } ] }"#).unwrap();
    assert_eq!(groups[0].egress, vec![]);
}

#[test]
fn aws_convert_adds_no_default_group() {
    let groups = convert(&example("aws-describe-security-groups.json")).unwrap();
    let ids: Vec<&str> = groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, ["sg-0123456789abcdef0"]);
}

#[test]
fn aws_protocols_normalise() {
    let text = aws_with_ingress(json!([
        { "IpProtocol": "6", "FromPort": 0, "ToPort": 65535, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] },
        { "IpProtocol": "58", "FromPort": -1, "ToPort": -1, "Ipv6Ranges": [ { "CidrIpv6": "::/0" } ] },
        { "IpProtocol": "-1", "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] },
        { "IpProtocol": "50", "FromPort": -1, "ToPort": -1, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] }
    ]));
    let got: Vec<(Protocol, Ports)> =
        convert(&text).unwrap()[0].ingress.iter().map(|r| (r.protocol, r.ports)).collect();
    assert_eq!(
        got,
        [
            (Protocol::Tcp, Ports::Range(0, 65535)),
            (Protocol::Icmpv6, Ports::Icmp { ty: None, code: None }),
            (Protocol::All, Ports::All),
            (Protocol::Number(50), Ports::All),
        ]
    );
}

#[test]
fn aws_per_peer_descriptions_become_separate_rules() {
    let text = aws_with_ingress(json!([ {
        "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
        "IpRanges": [
            { "CidrIp": "10.0.0.0/8", "Description": "a" },
            { "CidrIp": "192.168.0.0/16", "Description": "b" },
            { "CidrIp": "172.16.0.0/12", "Description": "a" }
        ],
        "Ipv6Ranges": [ { "CidrIpv6": "fd00::/8" } ],
        "UserIdGroupPairs": [ { "GroupId": "sg-1", "Description": "b" }, { "GroupId": "sg-1" } ]
    } ]));
    let rule = |peers: Vec<Peer>, description: Option<&str>| Rule {
        protocol: Protocol::Tcp,
        ports: Ports::Range(5432, 5432),
        peers,
        description: description.map(str::to_owned),
    };
    let expected = vec![
        rule(vec![cidr("10.0.0.0/8"), cidr("172.16.0.0/12")], Some("a")),
        rule(vec![cidr("192.168.0.0/16"), Peer::Group("sg-1".to_owned())], Some("b")),
        rule(vec![cidr("fd00::/8"), Peer::Group("sg-1".to_owned())], None),
    ];
    assert_eq!(convert(&text).unwrap()[0].ingress, expected);
    assert_eq!(load_ok(&text).group("sg-1").unwrap().ingress, expected);
}

#[test]
fn aws_conversion_is_lossless_for_the_example() {
    let groups = convert(&example("aws-describe-security-groups.json")).unwrap();
    let lists = example_prefix_lists();
    let written = native::write_document(&groups, &lists, &[]);
    let back = native::parse_document(&written.to_string()).unwrap_or_else(|e| panic!("{e}\n{written:#}"));
    for group in &groups {
        assert_eq!(back.group(&group.id), Some(group), "group {} after the round trip", group.id);
    }
    assert_eq!(back.prefix_lists, lists);
}

#[test]
fn aws_conversion_is_lossless_for_every_rule_shape() {
    let text = r#"{ "SecurityGroups": [
      { "GroupId": "sg-1", "GroupName": "one", "Description": "every shape",
        "IpPermissions": [
          { "IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] },
          { "IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "UserIdGroupPairs": [ { "GroupId": "sg-2", "Description": "dns" } ] },
          { "IpProtocol": "icmp", "FromPort": 8, "ToPort": -1, "IpRanges": [ { "CidrIp": "10.0.0.0/8", "Description": "ping" } ] },
          { "IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "IpRanges": [ { "CidrIp": "192.0.2.1/32" } ] },
          { "IpProtocol": "icmpv6", "FromPort": 128, "ToPort": 0, "Ipv6Ranges": [ { "CidrIpv6": "2001:db8::/32" } ] },
          { "IpProtocol": "47", "IpRanges": [ { "CidrIp": "198.51.100.0/24" } ], "PrefixListIds": [ { "PrefixListId": "pl-1", "Description": "gre" } ] },
          { "IpProtocol": "-1", "UserIdGroupPairs": [ { "GroupId": "sg-1" } ], "Ipv6Ranges": [ { "CidrIpv6": "::/0", "Description": "" } ] }
        ],
        "IpPermissionsEgress": [
          { "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ], "Ipv6Ranges": [ { "CidrIpv6": "::/0" } ] }
        ] },
      { "GroupId": "sg-2", "GroupName": "two", "IpPermissions": [] },
      { "GroupId": "default", "GroupName": "default", "IpPermissions": [], "IpPermissionsEgress": [] }
    ] }"#;
    let groups = convert(text).unwrap();
    assert_eq!(groups.len(), 3);
    assert_eq!(groups[0].ingress.len(), 9, "{:#?}", groups[0].ingress);
    let lists = vec![PrefixList { id: "pl-1".to_owned(), name: None, cidrs: vec![net("203.0.113.0/24")] }];
    let written = native::write_document(&groups, &lists, &[]);
    let back = native::parse_document(&written.to_string()).unwrap_or_else(|e| panic!("{e}\n{written:#}"));
    assert_eq!(back.security_groups, groups, "the AWS `default` group replaces the built-in one");
    // Compared field by field too, so a failure says which part was lost.
    for (before, after) in groups.iter().zip(&back.security_groups) {
        for (a, b) in before.ingress.iter().chain(&before.egress).zip(after.ingress.iter().chain(&after.egress)) {
            assert_eq!((a.protocol, a.ports), (b.protocol, b.ports));
            assert_eq!(a.peers, b.peers);
            assert_eq!(a.description, b.description);
        }
    }
}

#[test]
fn aws_load_equals_load_of_the_imported_document() {
    let aws_text = example("aws-describe-security-groups.json");
    let instances_text = example("aws-instances.json");
    let loaded = load(&aws_text, Some(&instances_text)).unwrap();
    // What `import-aws FILE --instances FILE` prints.
    let groups = convert(&aws_text).unwrap();
    let mut p = Problems::default();
    let (lists, instances) = aws::read_instances_document(&mut p, &native::parse_json(&instances_text).unwrap());
    assert!(p.is_empty());
    let lists: Vec<PrefixList> = lists.into_iter().map(|l| l.list).collect();
    let instances: Vec<Instance> = instances.into_iter().map(|i| i.instance).collect();
    let imported = native::write_document(&groups, &lists, &instances).to_string();
    assert_eq!(load_ok(&imported), loaded);
}

#[test]
fn instances_file_with_a_native_document_is_an_error() {
    let found = problems_of(load(&example("web-server.json"), Some(r#"{ "instances": [] }"#)));
    assert_problems(
        &found,
        &[("", "--instances is for AWS input (describe-security-groups JSON); this is a native document")],
    );
}

#[test]
fn instances_file_syntax_error_names_the_instances_file() {
    let found = problems_of(load(&example("aws-describe-security-groups.json"), Some("{ \"instances\": [ }")));
    assert_problems(&found, &[("--instances", "not valid JSON")]);
}

#[test]
fn instances_file_holds_only_instances_and_prefix_lists() {
    let found = problems_of(load(
        &example("aws-describe-security-groups.json"),
        Some(r#"{ "prefix_lists": [ { "id": "pl-1234abc1234abc123", "cidrs": [] } ], "security_groups": [] }"#),
    ));
    assert_problems(&found, &[("security_groups", "unknown key (expected one of: instances, prefix_lists)")]);
}

#[test]
fn instances_file_problems_are_reported() {
    let found = problems_of(load(
        &example("aws-describe-security-groups.json"),
        Some(
            r#"{ "prefix_lists": [ { "id": "pl-1234abc1234abc123", "cidrs": [] } ],
                 "instances": [ { "id": "i-1", "interface": "veth1", "security_groups": ["sg-nope"] },
                                { "id": "i-2", "interface": "veth1", "addresses": ["ten"] } ] }"#,
        ),
    ));
    assert_problems(
        &found,
        &[
            ("instances[1].addresses[0]", r#""ten" is not an IP address"#),
            ("instances[0].security_groups[0]", r#"unknown security group "sg-nope""#),
            ("instances[1].interface", r#"interface "veth1" already belongs to instances[0]"#),
        ],
    );
}

#[test]
fn instances_in_aws_input_may_use_the_default_group() {
    let doc = load(
        r#"{ "SecurityGroups": [ { "GroupId": "sg-1" } ] }"#,
        Some(r#"{ "instances": [ { "id": "i-1" }, { "id": "i-2", "security_groups": ["default", "sg-1"] } ] }"#),
    )
    .unwrap();
    assert_eq!(doc.instances[0].security_groups, [DEFAULT_GROUP]);
    assert_eq!(doc.instances[1].security_groups, [DEFAULT_GROUP, "sg-1"]);
    assert_eq!(doc.group(DEFAULT_GROUP), Some(&SecurityGroup::aws_default()));
}

// ---------------------------------------------------------------------------------------------
// Examples

#[test]
fn every_native_example_loads_and_compiles() {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name.starts_with("aws-") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let doc = load(&text, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        crate::compile::compile(&doc).unwrap_or_else(|e| panic!("{name} does not compile: {e}"));
        seen.push(name);
    }
    seen.sort();
    for expected in ["default-group.json", "three-tier.json", "web-server.json"] {
        assert!(seen.iter().any(|n| n == expected), "{expected} not found among {seen:?}");
    }
}

#[test]
fn default_group_example_puts_instances_in_default() {
    let doc = load_ok(&example("default-group.json"));
    assert_eq!(doc.security_groups, vec![SecurityGroup::aws_default()]);
    for instance in &doc.instances {
        assert_eq!(instance.security_groups, [DEFAULT_GROUP], "{}", instance.id);
    }
    assert_eq!(doc.instance("node").unwrap().role, Role::Host);
    assert_eq!(doc.instance("a").unwrap().role, Role::Workload);
}

#[test]
fn three_tier_example_has_its_defaults() {
    let doc = load_ok(&example("three-tier.json"));
    assert_eq!(doc.group("sg-web").unwrap().egress, Rule::allow_all_outbound());
    assert_eq!(doc.group("sg-db").unwrap().egress, vec![]);
    assert_eq!(doc.group("sg-app").unwrap().ingress[0].peers, vec![Peer::Group("sg-web".to_owned())]);
    assert_eq!(doc.group(DEFAULT_GROUP), Some(&SecurityGroup::aws_default()));
    assert_eq!(doc.prefix_list("pl-office").unwrap().cidrs, vec![net("198.51.100.0/24"), net("2001:db8:1::/48")]);
}

#[test]
fn two_instances_may_not_share_an_address() {
    let doc = r#"{ "instances": [
        { "id": "a", "addresses": ["10.0.0.1"] },
        { "id": "b", "addresses": ["10.0.0.2", "10.0.0.1"] } ] }"#;
    let err = crate::policy::load(doc, None).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].path, "instances[1].addresses[1]");
    assert!(err.problems[0].message.contains("already belongs to instances[0]"), "{}", err.problems[0].message);
}

#[test]
fn protocol_strings_are_names_or_plain_numbers() {
    for bad in ["+6", " 6", "6 ", "0x6", ""] {
        let doc = format!(
            r#"{{ "security_groups": [ {{ "id": "g", "ingress": [ {{ "protocol": "{bad}", "cidrs": ["10.0.0.0/8"] }} ] }} ] }}"#
        );
        let err = crate::policy::load(&doc, None).unwrap_err();
        assert_eq!(err.problems[0].path, "security_groups[0].ingress[0].protocol", "{bad:?}");
    }
}
