//! Missing and malformed required fields.

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;

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
