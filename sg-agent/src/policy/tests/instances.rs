//! Instance fields.

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;

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
        read_instance(json!({ "id": "i-1", "interface": "veth-0123456789", "addresses": ["10.0.0.1"] }))
            .interface
            .as_deref(),
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
