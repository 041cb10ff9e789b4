//! All errors at once.

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;

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
      "instances": [ { "id": "i-1", "interface": "veth1", "addresses": ["10.0.0.1"] },
                     { "id": "i-2", "interface": "veth1", "addresses": ["ten"], "source_dest_check": false }  ]
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
