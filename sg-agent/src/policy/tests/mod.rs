//! Unprivileged tests of the policy reader (SPEC §2), one file per concern: every validation
//! error with its JSON path, every default, the AWS input and its lossless conversion, and the
//! shipped examples. The helpers below are shared by all of them.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Value, json};

use super::{
    DEFAULT_GROUP, Document, Instance, Invalid, Peer, Ports, PrefixList, Problem, Protocol, Role, Rule, SecurityGroup,
    aws,
    json::{MAX_REPORTED_PROBLEMS, Problems},
    limits, load, native,
};

mod all_at_once;
mod aws_fidelity;
mod aws_input;
mod defaults;
mod duplicates;
mod ec2_ids;
mod examples;
mod instances;
mod keys;
mod nodes;
mod peers;
mod ports;
mod protocols;
mod required;
mod size_limits;
mod strict;
mod syntax;
mod types;

// Helpers shared by the files below.
fn load_ok(text: &str) -> Document {
    load(text, None).unwrap_or_else(|e| panic!("document should load, got:\n{e}\ndocument: {text}"))
}

fn problems_of(result: Result<Document, Invalid>) -> Vec<Problem> {
    match result {
        Ok(doc) => panic!("document should be rejected, but loaded as {doc:#?}"),
        Err(e) => e.problems,
    }
}

fn problems(text: &str) -> Vec<Problem> {
    problems_of(load(text, None))
}

/// Asserts exactly `expected` problems, in this order: each with this exact path and a message
/// containing the fragment.
#[track_caller]
fn assert_problems(problems: &[Problem], expected: &[(&str, &str)]) {
    let matches = problems.len() == expected.len()
        && problems.iter().zip(expected).all(|(p, (path, fragment))| p.path == *path && p.message.contains(fragment));
    assert!(matches, "expected problems (path, message fragment):\n{expected:#?}\ngot:\n{problems:#?}");
}

/// Asserts that `text` is rejected with exactly one problem.
#[track_caller]
fn assert_rejected(text: &str, path: &str, fragment: &str) {
    assert_problems(&problems(text), &[(path, fragment)]);
}

/// A document whose only group `sg-a` has `rule` as its only ingress rule.
fn with_rule(rule: Value) -> String {
    json!({ "security_groups": [ { "id": "sg-a", "ingress": [rule] } ] }).to_string()
}

/// The path of that rule, or of one of its keys.
fn rule_path(suffix: &str) -> String {
    let base = "security_groups[0].ingress[0]";
    if suffix.is_empty() { base.to_owned() } else { format!("{base}.{suffix}") }
}

#[track_caller]
fn assert_rule_rejected(rule: Value, suffix: &str, fragment: &str) {
    assert_rejected(&with_rule(rule), &rule_path(suffix), fragment);
}

/// The rule as read from `with_rule(rule)`.
#[track_caller]
fn read_rule(rule: Value) -> Rule {
    let doc = load_ok(&with_rule(rule));
    let ingress = &doc.group("sg-a").expect("sg-a").ingress;
    assert_eq!(ingress.len(), 1, "{ingress:?}");
    ingress[0].clone()
}

/// A document with group `sg-a` and `instance` as its only instance.
fn with_instance(instance: Value) -> String {
    json!({ "security_groups": [ { "id": "sg-a" } ], "instances": [instance] }).to_string()
}

#[track_caller]
fn read_instance(instance: Value) -> Instance {
    let doc = load_ok(&with_instance(instance));
    assert_eq!(doc.instances.len(), 1);
    doc.instances[0].clone()
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn cidr(text: &str) -> Peer {
    Peer::Cidr(net(text))
}

fn addr(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn examples_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn example(name: &str) -> String {
    let path = examples_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The native text of groups, prefix lists and instances (`import-aws`'s output).
fn write(groups: &[SecurityGroup], lists: &[PrefixList], instances: &[Instance]) -> String {
    native::write_document(&Document {
        security_groups: groups.to_vec(),
        prefix_lists: lists.to_vec(),
        instances: instances.to_vec(),
        node_services: super::NodeService::ec2_defaults(),
        warnings: Vec::new(),
    })
}

/// `n` copies of `item`, as the items of a JSON array.
fn repeated(item: &str, n: usize) -> String {
    vec![item; n].join(",")
}
