//! Unknown and duplicate keys.

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;

#[test]
fn unknown_key_at_top_level() {
    assert_rejected(
        r#"{ "security_group": [] }"#,
        "security_group",
        "unknown key (expected one of: security_groups, prefix_lists, instances, node_services)",
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
        "unknown key (expected one of: protocol, from_port, to_port, cidrs, groups, prefix_lists, description, id)",
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
        "unknown key (expected one of: id, name, description, cidrs, max_entries, address_family, version)",
    );
}

#[test]
fn unknown_key_in_instance() {
    assert_rejected(
        &with_instance(json!({ "id": "i-1", "ip": "10.0.0.1" })),
        "instances[0].ip",
        "unknown key (expected one of: id, interface, role, addresses, security_groups, source_dest_check, audit, vpc_id, conntrack_timeouts, node)",
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
