//! Wrong types.

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;

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
