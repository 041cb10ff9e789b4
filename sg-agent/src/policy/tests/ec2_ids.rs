//! What the EC2 API keeps in a native document: rule ids (one peer each, unique) and managed
//! prefix lists' attributes, read and written back unchanged.

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;
use crate::policy::AddressFamily;

#[test]
fn a_rule_id_is_read_and_written_back() {
    let rule = read_rule(json!({ "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.0.0/8"],
                                 "id": "sgr-0123456789abcdef0" }));
    assert_eq!(rule.id.as_deref(), Some("sgr-0123456789abcdef0"));
    let doc = load_ok(&with_rule(json!({ "protocol": "tcp", "from_port": 22, "to_port": 22,
                                         "cidrs": ["10.0.0.0/8"], "id": "sgr-0123456789abcdef0" })));
    let text = native::write_document(&doc);
    assert_eq!(load_ok(&text), doc, "written back:\n{text}");
}

#[test]
fn a_rule_id_names_exactly_one_peer() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "cidrs": ["10.0.0.0/8", "10.1.0.0/16"], "id": "sgr-0123456789abcdef0" }),
        "id",
        "a rule with an id has exactly one peer (EC2 has one rule per peer); this one has 2",
    );
}

#[test]
fn a_rule_id_has_ec2s_form() {
    assert_rule_rejected(
        json!({ "protocol": "tcp", "cidrs": ["10.0.0.0/8"], "id": "rule-1" }),
        "id",
        "\"rule-1\" is not a security group rule id (sgr- and 17 hex digits",
    );
}

#[test]
fn rule_ids_are_unique_in_the_document() {
    let text = json!({ "security_groups": [
        { "id": "sg-a", "ingress": [ { "protocol": "tcp", "cidrs": ["10.0.0.0/8"], "id": "sgr-0123456789abcdef0" } ] },
        { "id": "sg-b", "egress": [ { "protocol": "udp", "cidrs": ["10.0.0.0/8"], "id": "sgr-0123456789abcdef0" } ] } ] })
    .to_string();
    assert_rejected(
        &text,
        "security_groups[1].egress[0].id",
        "duplicate rule id \"sgr-0123456789abcdef0\" (also security_groups[0].ingress[0].id)",
    );
}

#[test]
fn managed_prefix_list_attributes_are_read_and_written_back() {
    let text = json!({ "prefix_lists": [ { "id": "pl-a", "name": "office", "description": "the office",
        "address_family": "IPv4", "max_entries": 5, "version": 3,
        "cidrs": [ "198.51.100.0/24", { "cidr": "203.0.113.0/24", "description": "branch" } ] } ] })
    .to_string();
    let doc = load_ok(&text);
    let list = &doc.prefix_lists[0];
    assert_eq!(list.cidrs, vec![net("198.51.100.0/24"), net("203.0.113.0/24")]);
    assert_eq!(list.meta.address_family, Some(AddressFamily::Ipv4));
    assert_eq!((list.meta.max_entries, list.meta.version), (Some(5), Some(3)));
    assert_eq!(list.meta.description.as_deref(), Some("the office"));
    assert_eq!(list.meta.entry_descriptions.get(&net("203.0.113.0/24")).map(String::as_str), Some("branch"));
    let written = native::write_document(&doc);
    assert_eq!(load_ok(&written), doc, "written back:\n{written}");
}

#[test]
fn a_prefix_list_holds_its_family_only_and_at_most_max_entries() {
    let text = json!({ "prefix_lists": [ { "id": "pl-a", "address_family": "IPv4", "max_entries": 1,
        "cidrs": [ "198.51.100.0/24", "2001:db8::/32", "203.0.113.0/24" ] } ] })
    .to_string();
    assert_problems(
        &problems(&text),
        &[
            ("prefix_lists[0].cidrs[1]", "2001:db8::/32 is not IPv4, the list's address_family"),
            ("prefix_lists[0].cidrs", "2 entries, more than max_entries 1"),
        ],
    );
    assert_rejected(
        r#"{ "prefix_lists": [ { "id": "pl-a", "address_family": "ipv4", "cidrs": [] } ] }"#,
        "prefix_lists[0].address_family",
        "\"ipv4\" is not an address family (IPv4 or IPv6)",
    );
    assert_rejected(
        r#"{ "prefix_lists": [ { "id": "pl-a", "cidrs": [ { "description": "x" } ] } ] }"#,
        "prefix_lists[0].cidrs[0].cidr",
        "missing (a CIDR)",
    );
}
