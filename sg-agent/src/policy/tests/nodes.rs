//! An instance's `node` (fleet mode, SPEC §8): read and checked like its other fields, one
//! interface name per node, and what an agent that knows its node name enforces.

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;

#[test]
fn node_is_read() {
    assert_eq!(
        read_instance(json!({ "id": "i-1", "node": "node-a.example_1" })).node.as_deref(),
        Some("node-a.example_1")
    );
    assert_eq!(read_instance(json!({ "id": "i-1" })).node, None);
}

#[test]
fn node_names_are_key_safe() {
    for (name, why) in [
        ("", "must be 1 to 253 characters"),
        ("a/b", "only letters, digits"),
        ("node a", "only letters, digits"),
        ("nöde", "only letters, digits"),
    ] {
        assert_rejected(&with_instance(json!({ "id": "i-1", "node": name })), "instances[0].node", why);
    }
    assert_rejected(&with_instance(json!({ "id": "i-1", "node": 7 })), "instances[0].node", "expected a string");
}

#[test]
fn one_interface_name_serves_one_instance_per_node() {
    let doc = load_ok(
        r#"{ "instances": [
            { "id": "a", "node": "n1", "interface": "eth0", "role": "host", "addresses": ["10.0.0.1"] },
            { "id": "b", "node": "n2", "interface": "eth0", "role": "host", "addresses": ["10.0.0.2"] } ] }"#,
    );
    assert_eq!(doc.instances.len(), 2);
    assert_rejected(
        r#"{ "instances": [
            { "id": "a", "node": "n1", "interface": "eth0", "addresses": ["10.0.0.1"] },
            { "id": "b", "node": "n1", "interface": "eth0", "addresses": ["10.0.0.2"] } ] }"#,
        "instances[1].interface",
        r#"interface "eth0" already belongs to instances[0]"#,
    );
    // Without a node it could be local on n1 as well.
    assert_rejected(
        r#"{ "instances": [
            { "id": "a", "node": "n1", "interface": "eth0", "addresses": ["10.0.0.1"] },
            { "id": "b", "interface": "eth0", "addresses": ["10.0.0.2"] } ] }"#,
        "instances[1].interface",
        r#"interface "eth0" already belongs to instances[0]"#,
    );
}

const FLEET: &str = r#"{
  "security_groups": [ { "id": "sg-db", "ingress": [ { "protocol": "tcp", "from_port": 5432, "to_port": 5432, "groups": ["sg-app"] } ] },
                       { "id": "sg-app" } ],
  "instances": [
    { "id": "db", "node": "n1", "interface": "veth-db", "addresses": ["10.0.1.10"], "security_groups": ["sg-db"] },
    { "id": "app", "node": "n2", "interface": "veth-app", "addresses": ["10.0.2.10"], "security_groups": ["sg-app"] },
    { "id": "legacy", "interface": "veth-old", "addresses": ["10.0.3.10"] },
    { "id": "ext", "addresses": ["10.0.4.10"], "security_groups": ["sg-app"] } ] }"#;

fn local_ids(doc: &Document) -> Vec<&str> {
    doc.local_instances().map(|i| i.id.as_str()).collect()
}

#[test]
fn a_node_enforces_its_own_instances_and_those_that_name_no_node() {
    let doc = load_ok(FLEET);
    assert_eq!(local_ids(&doc), ["db", "app", "legacy"], "without a node name, `node` is not consulted");
    let n1 = doc.clone().for_node("n1");
    assert_eq!(local_ids(&n1), ["db", "legacy"]);
    let n2 = doc.clone().for_node("n2");
    assert_eq!(local_ids(&n2), ["app", "legacy"]);
    // Remote instances keep everything but their interface: they are members wherever they run.
    let app = n1.instance("app").expect("app");
    assert_eq!((app.interface.as_deref(), app.node.as_deref()), (None, Some("n2")));
    assert_eq!(app.addresses, [addr("10.0.2.10")]);
}

#[test]
fn node_survives_import_and_export() {
    let doc = load_ok(FLEET);
    let text = native::write_document(&doc);
    assert_eq!(load_ok(&text), doc);
}
