//! Ports.

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;

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
