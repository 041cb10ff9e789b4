//! Limits.

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;

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
    assert_problems(&found, &[("", "more than the limit of")]);
    assert_eq!(found[0].source, super::super::Source::Instances(0));
}
