//! Duplicates across objects.

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;

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
        r#"{ "instances": [ { "id": "i-1", "interface": "veth1", "addresses": ["10.0.0.1"] },
                           { "id": "i-1", "interface": "veth2", "addresses": ["10.0.0.2"] } ] }"#,
        "instances[1].id",
        r#"duplicate instance id "i-1" (also instances[0])"#,
    );
}

#[test]
fn two_instances_on_one_interface() {
    assert_rejected(
        r#"{ "instances": [ { "id": "i-1", "interface": "veth1", "addresses": ["10.0.0.1"] }, { "id": "i-2" },
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
