//! Protocols.

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;

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
