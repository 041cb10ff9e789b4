//! Examples.

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;

#[test]
fn every_native_example_loads() {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name.starts_with("aws-") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let doc = load(&text, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!doc.security_groups.is_empty(), "{name}");
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
