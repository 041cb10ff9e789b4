//! The actions on documents, without a server: what each changes, what it answers, and every
//! EC2 error it gives. (The protocol and the real AWS CLI are tested end to end in
//! `tests/ec2_api.rs`.)

use serde_json::json;

use super::{Ctx, Outcome, find};
use crate::{
    api::{ec2, error::ApiError, local::document_text, query::Params},
    policy::{Direction, Document, native},
};

fn doc(value: serde_json::Value) -> Document {
    native::parse_document(&value.to_string()).expect("valid document")
}

fn base() -> Document {
    doc(json!({
        "security_groups": [
            { "id": "sg-web", "name": "web", "description": "web tier",
              "ingress": [ { "protocol": "tcp", "from_port": 443, "to_port": 443,
                             "cidrs": ["0.0.0.0/0", "::/0"], "description": "https" },
                           { "protocol": "tcp", "from_port": 22, "to_port": 22, "groups": ["sg-admin"] } ] },
            { "id": "sg-admin", "name": "admin", "ingress": [ { "protocol": "all", "groups": ["sg-admin"] } ] }
        ],
        "prefix_lists": [ { "id": "pl-office", "name": "office", "cidrs": ["198.51.100.0/24"] } ],
        "instances": [ { "id": "eni-web1", "interface": "veth-web1", "addresses": ["10.0.1.10", "fd00:1::10"],
                         "security_groups": ["sg-web"] } ]
    }))
}

fn run(action: &str, doc: &Document, pairs: &[(&str, &str)]) -> Result<Outcome, ApiError> {
    let mut all = vec![("Action".to_owned(), action.to_owned()), ("Version".to_owned(), "2016-11-15".to_owned())];
    all.extend(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let params = Params::from_pairs(all).expect("params");
    find(action).expect("action")(&Ctx { region: "us-east-1".to_owned() }, doc, &params)
}

/// Runs a change; the new document, after the write-back round trip a commit makes.
#[track_caller]
fn change(action: &str, doc: &Document, pairs: &[(&str, &str)]) -> (Document, String) {
    let outcome = run(action, doc, pairs).unwrap_or_else(|e| panic!("{action}: {e}"));
    let new = outcome.document.expect("a change");
    let text = document_text(&new);
    let back = native::parse_document(&text).unwrap_or_else(|e| panic!("written back invalid: {e}\n{text}"));
    (back, outcome.body.as_str().to_owned())
}

#[track_caller]
fn error(action: &str, doc: &Document, pairs: &[(&str, &str)]) -> ApiError {
    match run(action, doc, pairs) {
        Ok(o) => panic!("{action} should fail, answered {}", o.body.as_str()),
        Err(e) => e,
    }
}

/// (id, direction, peer) of every EC2 rule of a group.
fn rules(doc: &Document, group: &str) -> Vec<(String, Direction, String, Option<String>)> {
    [Direction::Ingress, Direction::Egress]
        .into_iter()
        .flat_map(|d| ec2::rules_of(doc.group(group).unwrap(), d))
        .map(|r| (r.id.clone(), r.direction, r.peer.to_string(), r.rule.description.clone()))
        .collect()
}

#[test]
fn a_new_group_has_ec2s_defaults_and_a_unique_name() {
    let (new, body) = change("CreateSecurityGroup", &base(), &[("GroupName", "db"), ("GroupDescription", "database")]);
    let group = new.security_groups.iter().find(|g| g.name.as_deref() == Some("db")).unwrap();
    assert!(group.id.starts_with("sg-") && group.id.len() == 20, "{}", group.id);
    assert!(body.contains(&format!("<groupId>{}</groupId>", group.id)));
    assert!(group.ingress.is_empty());
    let egress: Vec<String> = rules(&new, &group.id).into_iter().map(|r| r.2).collect();
    assert_eq!(egress, ["0.0.0.0/0", "::/0"]);
    let dup = error("CreateSecurityGroup", &new, &[("GroupName", "db"), ("GroupDescription", "again")]);
    assert_eq!((dup.code, dup.status), ("InvalidGroup.Duplicate", 400));
    assert_eq!(
        error("CreateSecurityGroup", &new, &[("GroupName", "default"), ("GroupDescription", "x")]).code,
        "InvalidParameterValue"
    );
    assert_eq!(error("CreateSecurityGroup", &new, &[("GroupName", "x")]).code, "MissingParameter");
    assert_eq!(
        error("CreateSecurityGroup", &new, &[("GroupName", "x"), ("GroupDescription", "x"), ("VpcId", "vpc-1")]).code,
        "InvalidVpcID.NotFound"
    );
    assert_eq!(
        error(
            "CreateSecurityGroup",
            &new,
            &[("GroupName", "x"), ("GroupDescription", "x"), ("TagSpecification.1.ResourceType", "security-group")]
        )
        .code,
        "InvalidParameterValue"
    );
    assert_eq!(
        error("CreateSecurityGroup", &new, &[("GroupName", "x"), ("GroupDescription", "x"), ("Bogus", "1")]).code,
        "UnknownParameter"
    );
}

#[test]
fn authorize_adds_one_rule_per_peer_with_ids_that_survive_the_write_back() {
    let pairs = [
        ("GroupId", "sg-web"),
        ("IpPermissions.1.IpProtocol", "tcp"),
        ("IpPermissions.1.FromPort", "80"),
        ("IpPermissions.1.ToPort", "80"),
        ("IpPermissions.1.IpRanges.1.CidrIp", "10.0.0.0/8"),
        ("IpPermissions.1.IpRanges.1.Description", "internal"),
        ("IpPermissions.1.Ipv6Ranges.1.CidrIpv6", "fd00::/8"),
        ("IpPermissions.1.PrefixListIds.1.PrefixListId", "pl-office"),
        ("IpPermissions.2.IpProtocol", "icmp"),
        ("IpPermissions.2.FromPort", "8"),
        ("IpPermissions.2.ToPort", "-1"),
        ("IpPermissions.2.Groups.1.GroupId", "sg-admin"),
    ];
    let (new, body) = change("AuthorizeSecurityGroupIngress", &base(), &pairs);
    let ingress =
        |d: &Document| rules(d, "sg-web").into_iter().filter(|r| r.1 == Direction::Ingress).collect::<Vec<_>>();
    let after = ingress(&new);
    let before = ingress(&base());
    assert_eq!(after.len(), before.len() + 4);
    assert_eq!(after[..before.len()], before[..], "existing rules keep their ids");
    for (id, _, peer, _) in &after[before.len()..] {
        assert!(body.contains(&format!("<securityGroupRuleId>{id}</securityGroupRuleId>")), "{peer} not in {body}");
    }
    assert!(body.contains("<cidrIpv4>10.0.0.0/8</cidrIpv4>") && body.contains("<description>internal</description>"));
    assert!(body.contains("<referencedGroupInfo><groupId>sg-admin</groupId>"));
    // The ids are in the document: the same after another round trip.
    let (again, _) = change(
        "AuthorizeSecurityGroupEgress",
        &new,
        &[
            ("GroupId", "sg-web"),
            ("IpPermissions.1.IpProtocol", "-1"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "10.9.0.0/16"),
        ],
    );
    assert_eq!(ingress(&again), after);
}

#[test]
fn authorize_refuses_duplicates_however_spelled_and_changes_nothing() {
    // The document says tcp 443 from 0.0.0.0/0; the request says it again.
    let e = error(
        "AuthorizeSecurityGroupIngress",
        &base(),
        &[
            ("GroupName", "web"),
            ("IpPermissions.1.IpProtocol", "6"),
            ("IpPermissions.1.FromPort", "443"),
            ("IpPermissions.1.ToPort", "443"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "10.1.0.0/16"),
            ("IpPermissions.1.IpRanges.2.CidrIp", "0.0.0.0/0"),
        ],
    );
    assert_eq!(e.code, "InvalidPermission.Duplicate");
    assert!(e.message.contains("peer: 0.0.0.0/0, TCP, from port: 443, to port: 443, ALLOW"), "{}", e.message);
    let all_ports = doc(
        json!({ "security_groups": [ { "id": "sg-a", "ingress": [ { "protocol": "udp", "cidrs": ["10.0.0.0/8"] } ] } ] }),
    );
    let e = error(
        "AuthorizeSecurityGroupIngress",
        &all_ports,
        &[
            ("GroupId", "sg-a"),
            ("IpPermissions.1.IpProtocol", "udp"),
            ("IpPermissions.1.FromPort", "0"),
            ("IpPermissions.1.ToPort", "65535"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "10.0.0.0/8"),
        ],
    );
    assert_eq!(e.code, "InvalidPermission.Duplicate");
}

#[test]
fn authorize_checks_what_ec2_checks() {
    let d = base();
    let perm = |extra: &[(&'static str, &'static str)]| {
        let mut p = vec![("GroupId", "sg-web")];
        p.extend_from_slice(extra);
        p
    };
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("IpPermissions.1.IpProtocol", "tcp"),
                ("IpPermissions.1.FromPort", "22"),
                ("IpPermissions.1.IpRanges.1.CidrIp", "10.0.0.0/8"),
            ],
            "InvalidParameterValue",
        ),
        (
            &[
                ("IpPermissions.1.IpProtocol", "tcp"),
                ("IpPermissions.1.FromPort", "30"),
                ("IpPermissions.1.ToPort", "20"),
                ("IpPermissions.1.IpRanges.1.CidrIp", "10.0.0.0/8"),
            ],
            "InvalidParameterValue",
        ),
        (
            &[("IpPermissions.1.IpProtocol", "bogus"), ("IpPermissions.1.IpRanges.1.CidrIp", "10.0.0.0/8")],
            "InvalidParameterValue",
        ),
        (
            &[
                ("IpPermissions.1.IpProtocol", "tcp"),
                ("IpPermissions.1.FromPort", "1"),
                ("IpPermissions.1.ToPort", "1"),
                ("IpPermissions.1.IpRanges.1.CidrIp", "10.0.0.1/8"),
            ],
            "InvalidParameterValue",
        ),
        (
            &[
                ("IpPermissions.1.IpProtocol", "tcp"),
                ("IpPermissions.1.FromPort", "1"),
                ("IpPermissions.1.ToPort", "1"),
                ("IpPermissions.1.IpRanges.1.CidrIp", "::/0"),
            ],
            "InvalidParameterValue",
        ),
        (
            &[("IpPermissions.1.IpProtocol", "icmp"), ("IpPermissions.1.Ipv6Ranges.1.CidrIpv6", "::/0")],
            "InvalidParameterValue",
        ),
        (
            &[
                ("IpPermissions.1.IpProtocol", "tcp"),
                ("IpPermissions.1.FromPort", "1"),
                ("IpPermissions.1.ToPort", "1"),
            ],
            "InvalidParameterValue",
        ),
        (
            &[("IpPermissions.1.IpProtocol", "-1"), ("IpPermissions.1.Groups.1.GroupId", "sg-nope")],
            "InvalidGroup.NotFound",
        ),
        (
            &[("IpPermissions.1.IpProtocol", "-1"), ("IpPermissions.1.PrefixListIds.1.PrefixListId", "pl-nope")],
            "InvalidPrefixListID.NotFound",
        ),
        (
            &[
                ("IpPermissions.1.IpProtocol", "-1"),
                ("IpPermissions.1.Groups.1.GroupId", "sg-admin"),
                ("IpPermissions.1.Groups.1.VpcPeeringConnectionId", "pcx-1"),
            ],
            "UnknownParameter",
        ),
        (&[], "MissingParameter"),
    ];
    for (extra, code) in cases {
        assert_eq!(error("AuthorizeSecurityGroupIngress", &d, &perm(extra)).code, *code, "{extra:?}");
    }
    assert_eq!(
        error(
            "AuthorizeSecurityGroupIngress",
            &d,
            &[("GroupId", "sg-nope"), ("IpProtocol", "-1"), ("CidrIp", "10.0.0.0/8")]
        )
        .code,
        "InvalidGroup.NotFound"
    );
    // The old top-level form is still a permission.
    let (new, _) = change(
        "AuthorizeSecurityGroupIngress",
        &d,
        &[("GroupId", "sg-web"), ("IpProtocol", "udp"), ("FromPort", "53"), ("ToPort", "53"), ("CidrIp", "10.0.0.0/8")],
    );
    assert_eq!(rules(&new, "sg-web").len(), rules(&d, "sg-web").len() + 1);
}

#[test]
fn revoke_by_permission_takes_out_one_peer_and_keeps_the_others_ids() {
    let d = base();
    let before = rules(&d, "sg-web");
    let (new, body) = change(
        "RevokeSecurityGroupIngress",
        &d,
        &[
            ("GroupId", "sg-web"),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "443"),
            ("IpPermissions.1.ToPort", "443"),
            ("IpPermissions.1.Ipv6Ranges.1.CidrIpv6", "::/0"),
        ],
    );
    let after = rules(&new, "sg-web");
    let expected: Vec<_> = before.iter().filter(|r| !(r.1 == Direction::Ingress && r.2 == "::/0")).cloned().collect();
    assert_eq!(after, expected);
    assert!(body.contains("<revokedSecurityGroupRuleSet><item><securityGroupRuleId>"), "{body}");
    let e = error(
        "RevokeSecurityGroupIngress",
        &new,
        &[
            ("GroupId", "sg-web"),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "443"),
            ("IpPermissions.1.ToPort", "443"),
            ("IpPermissions.1.Ipv6Ranges.1.CidrIpv6", "::/0"),
        ],
    );
    assert_eq!(e.code, "InvalidPermission.NotFound");
    // Part there, part not: the part there goes, the rest is listed as unknown.
    let (_, body) = change(
        "RevokeSecurityGroupIngress",
        &new,
        &[
            ("GroupId", "sg-web"),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "443"),
            ("IpPermissions.1.ToPort", "443"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
            ("IpPermissions.1.IpRanges.2.CidrIp", "10.0.0.0/8"),
        ],
    );
    assert!(body.contains("<unknownIpPermissionSet><item><ipProtocol>tcp</ipProtocol><fromPort>443</fromPort><toPort>443</toPort><groups></groups><ipRanges><item><cidrIp>10.0.0.0/8</cidrIp>"), "{body}");
}

#[test]
fn revoke_by_rule_id() {
    let d = base();
    let egress = rules(&d, "sg-web").into_iter().find(|r| r.1 == Direction::Egress).unwrap();
    let (new, _) =
        change("RevokeSecurityGroupEgress", &d, &[("GroupId", "sg-web"), ("SecurityGroupRuleId.1", &egress.0)]);
    assert!(!rules(&new, "sg-web").iter().any(|r| r.0 == egress.0));
    // An ingress id is not an egress rule of the group.
    let ingress = rules(&d, "sg-web").into_iter().find(|r| r.1 == Direction::Ingress).unwrap();
    assert_eq!(
        error("RevokeSecurityGroupEgress", &d, &[("GroupId", "sg-web"), ("SecurityGroupRuleId.1", &ingress.0)]).code,
        "InvalidSecurityGroupRuleId.NotFound"
    );
    assert_eq!(
        error("RevokeSecurityGroupEgress", &d, &[("GroupId", "sg-web"), ("SecurityGroupRuleId.1", "rule-1")]).code,
        "InvalidSecurityGroupRuleId.Malformed"
    );
}

#[test]
fn modify_keeps_the_rule_id_and_splits_a_shared_rule() {
    let d = base();
    let v4 = rules(&d, "sg-web").into_iter().find(|r| r.2 == "0.0.0.0/0").unwrap();
    let (new, _) = change(
        "ModifySecurityGroupRules",
        &d,
        &[
            ("GroupId", "sg-web"),
            ("SecurityGroupRule.1.SecurityGroupRuleId", &v4.0),
            ("SecurityGroupRule.1.SecurityGroupRule.IpProtocol", "tcp"),
            ("SecurityGroupRule.1.SecurityGroupRule.FromPort", "8443"),
            ("SecurityGroupRule.1.SecurityGroupRule.ToPort", "8443"),
            ("SecurityGroupRule.1.SecurityGroupRule.CidrIpv4", "10.0.0.0/8"),
        ],
    );
    let modified = ec2::rule_by_id(&new, &v4.0).expect("same id");
    assert_eq!(
        modified.key(),
        ec2::RuleKey::new(
            crate::policy::Protocol::Tcp,
            crate::policy::Ports::Range(8443, 8443),
            crate::policy::Peer::Cidr("10.0.0.0/8".parse().unwrap())
        )
    );
    // Its neighbour in the document's rule is untouched, id and all.
    let v6 = rules(&d, "sg-web").into_iter().find(|r| r.2 == "::/0").unwrap();
    assert!(rules(&new, "sg-web").contains(&v6));
    let e = error(
        "ModifySecurityGroupRules",
        &new,
        &[
            ("GroupId", "sg-web"),
            ("SecurityGroupRule.1.SecurityGroupRuleId", &v4.0),
            ("SecurityGroupRule.1.SecurityGroupRule.IpProtocol", "tcp"),
            ("SecurityGroupRule.1.SecurityGroupRule.FromPort", "443"),
            ("SecurityGroupRule.1.SecurityGroupRule.ToPort", "443"),
            ("SecurityGroupRule.1.SecurityGroupRule.CidrIpv6", "::/0"),
        ],
    );
    assert_eq!(e.code, "InvalidPermission.Duplicate");
    let e = error(
        "ModifySecurityGroupRules",
        &new,
        &[
            ("GroupId", "sg-web"),
            ("SecurityGroupRule.1.SecurityGroupRuleId", &v4.0),
            ("SecurityGroupRule.1.SecurityGroupRule.IpProtocol", "tcp"),
            ("SecurityGroupRule.1.SecurityGroupRule.FromPort", "1"),
            ("SecurityGroupRule.1.SecurityGroupRule.ToPort", "1"),
            ("SecurityGroupRule.1.SecurityGroupRule.CidrIpv4", "10.0.0.0/8"),
            ("SecurityGroupRule.1.SecurityGroupRule.PrefixListId", "pl-office"),
        ],
    );
    assert_eq!(e.code, "InvalidParameterValue");
}

#[test]
fn descriptions_are_updated_by_permission_or_by_id() {
    let d = base();
    let v6 = rules(&d, "sg-web").into_iter().find(|r| r.2 == "::/0").unwrap();
    let (new, _) = change(
        "UpdateSecurityGroupRuleDescriptionsIngress",
        &d,
        &[
            ("GroupId", "sg-web"),
            ("SecurityGroupRuleDescription.1.SecurityGroupRuleId", &v6.0),
            ("SecurityGroupRuleDescription.1.Description", "https v6"),
        ],
    );
    let after = rules(&new, "sg-web");
    assert!(after.contains(&(v6.0.clone(), Direction::Ingress, "::/0".into(), Some("https v6".into()))));
    assert!(
        after.iter().any(|r| r.2 == "0.0.0.0/0" && r.3.as_deref() == Some("https")),
        "the neighbour keeps its description"
    );
    let (new, _) = change(
        "UpdateSecurityGroupRuleDescriptionsIngress",
        &new,
        &[
            ("GroupName", "web"),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "22"),
            ("IpPermissions.1.ToPort", "22"),
            ("IpPermissions.1.Groups.1.GroupId", "sg-admin"),
            ("IpPermissions.1.Groups.1.Description", "ssh from admins"),
        ],
    );
    assert!(rules(&new, "sg-web").iter().any(|r| r.2 == "group sg-admin" && r.3.as_deref() == Some("ssh from admins")));
    let e = error(
        "UpdateSecurityGroupRuleDescriptionsIngress",
        &new,
        &[
            ("GroupId", "sg-web"),
            ("IpPermissions.1.IpProtocol", "udp"),
            ("IpPermissions.1.FromPort", "1"),
            ("IpPermissions.1.ToPort", "1"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "10.0.0.0/8"),
        ],
    );
    assert_eq!(e.code, "InvalidPermission.NotFound");
}

#[test]
fn delete_refuses_default_referenced_and_used_groups() {
    let d = base();
    assert_eq!(error("DeleteSecurityGroup", &d, &[("GroupName", "default")]).code, "CannotDelete");
    assert_eq!(
        error("DeleteSecurityGroup", &d, &[("GroupId", "sg-admin")]).code,
        "DependencyViolation",
        "referenced by sg-web"
    );
    assert_eq!(
        error("DeleteSecurityGroup", &d, &[("GroupId", "sg-web")]).code,
        "DependencyViolation",
        "used by eni-web1"
    );
    assert_eq!(error("DeleteSecurityGroup", &d, &[("GroupId", "sg-nope")]).code, "InvalidGroup.NotFound");
    // A group that refers only to itself can go.
    let free = doc(
        json!({ "security_groups": [ { "id": "sg-self", "ingress": [ { "protocol": "all", "groups": ["sg-self"] } ] } ] }),
    );
    let (new, body) = change("DeleteSecurityGroup", &free, &[("GroupId", "sg-self")]);
    assert!(new.group("sg-self").is_none());
    assert!(body.contains("<return>true</return><groupId>sg-self</groupId>"));
}

#[test]
fn describe_selects_by_id_name_and_filters() {
    let d = base();
    let listed = |pairs: &[(&str, &str)]| -> Vec<String> {
        let body = run("DescribeSecurityGroups", &d, pairs).unwrap().body.as_str().to_owned();
        body.split("<item><ownerId>000000000000</ownerId><groupId>")
            .skip(1)
            .filter_map(|s| s.split('<').next())
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(listed(&[]), ["sg-web", "sg-admin", "default"]);
    assert_eq!(listed(&[("GroupName.1", "admin")]), ["sg-admin"]);
    assert_eq!(listed(&[("Filter.1.Name", "group-name"), ("Filter.1.Value.1", "w*")]), ["sg-web"]);
    assert_eq!(listed(&[("Filter.1.Name", "ip-permission.from-port"), ("Filter.1.Value.1", "22")]), ["sg-web"]);
    assert_eq!(
        listed(&[("Filter.1.Name", "ip-permission.group-id"), ("Filter.1.Value.1", "sg-admin")]),
        ["sg-web", "sg-admin"]
    );
    assert_eq!(
        listed(&[
            ("Filter.1.Name", "egress.ip-permission.ipv6-cidr"),
            ("Filter.1.Value.1", "::/0"),
            ("Filter.2.Name", "description"),
            ("Filter.2.Value.1", "web tier")
        ]),
        ["sg-web"]
    );
    assert_eq!(
        listed(&[("Filter.1.Name", "ip-permission.protocol"), ("Filter.1.Value.1", "-1")]),
        ["sg-admin", "default"]
    );
    assert_eq!(error("DescribeSecurityGroups", &d, &[("GroupId.1", "sg-nope")]).code, "InvalidGroup.NotFound");
    assert_eq!(
        error("DescribeSecurityGroups", &d, &[("Filter.1.Name", "tag:env"), ("Filter.1.Value.1", "x")]).code,
        "InvalidParameterValue"
    );
    assert_eq!(
        error("DescribeSecurityGroups", &d, &[("Filter.1.Name", "colour"), ("Filter.1.Value.1", "x")]).code,
        "InvalidParameterValue"
    );
    let body = run("DescribeSecurityGroups", &d, &[("GroupId.1", "sg-web")]).unwrap().body.as_str().to_owned();
    assert!(body.contains("<ipPermissions><item><ipProtocol>tcp</ipProtocol><fromPort>443</fromPort><toPort>443</toPort><groups></groups><ipRanges><item><description>https</description><cidrIp>0.0.0.0/0</cidrIp></item></ipRanges><ipv6Ranges><item><description>https</description><cidrIpv6>::/0</cidrIpv6></item></ipv6Ranges><prefixListIds></prefixListIds></item>"), "{body}");
    assert!(body.contains("<ipPermissionsEgress><item><ipProtocol>-1</ipProtocol><groups>"), "{body}");
}

#[test]
fn describe_rules_by_id_and_filter() {
    let d = base();
    let all = ec2::all_rules(&d);
    let body =
        run("DescribeSecurityGroupRules", &d, &[("Filter.1.Name", "group-id"), ("Filter.1.Value.1", "sg-admin")])
            .unwrap()
            .body
            .as_str()
            .to_owned();
    assert_eq!(body.matches("<securityGroupRuleId>").count(), 3, "one inbound, two outbound: {body}");
    let one = &all[0].id;
    let body =
        run("DescribeSecurityGroupRules", &d, &[("SecurityGroupRuleId.1", one)]).unwrap().body.as_str().to_owned();
    assert_eq!(body.matches("<securityGroupRuleId>").count(), 1);
    assert!(body.contains("<isEgress>false</isEgress><ipProtocol>tcp</ipProtocol><fromPort>443</fromPort><toPort>443</toPort><cidrIpv4>0.0.0.0/0</cidrIpv4><description>https</description>"), "{body}");
    assert_eq!(
        error("DescribeSecurityGroupRules", &d, &[("SecurityGroupRuleId.1", "sgr-00000000000000000")]).code,
        "InvalidSecurityGroupRuleId.NotFound"
    );
}

#[test]
fn managed_prefix_lists_follow_their_version_and_size() {
    let d = base();
    let (new, body) = change(
        "CreateManagedPrefixList",
        &d,
        &[
            ("PrefixListName", "partners"),
            ("AddressFamily", "IPv4"),
            ("MaxEntries", "2"),
            ("Entry.1.Cidr", "192.0.2.0/24"),
            ("Entry.1.Description", "partner a"),
        ],
    );
    let list = new.prefix_lists.iter().find(|l| l.name.as_deref() == Some("partners")).unwrap().clone();
    assert!(
        body.contains(&format!(
            "<prefixListId>{}</prefixListId><addressFamily>IPv4</addressFamily><state>create-complete</state>",
            list.id
        )),
        "{body}"
    );
    let id = list.id.as_str();
    let e = error(
        "ModifyManagedPrefixList",
        &new,
        &[("PrefixListId", id), ("CurrentVersion", "2"), ("AddEntry.1.Cidr", "198.51.100.0/24")],
    );
    assert_eq!(e.code, "PrefixListVersionMismatch");
    let (newer, body) = change(
        "ModifyManagedPrefixList",
        &new,
        &[("PrefixListId", id), ("CurrentVersion", "1"), ("AddEntry.1.Cidr", "198.51.100.0/24")],
    );
    assert!(body.contains("<version>2</version>"), "{body}");
    assert_eq!(newer.prefix_list(id).unwrap().cidrs.len(), 2);
    assert_eq!(
        error(
            "ModifyManagedPrefixList",
            &newer,
            &[("PrefixListId", id), ("CurrentVersion", "2"), ("AddEntry.1.Cidr", "203.0.113.0/24")]
        )
        .code,
        "PrefixListMaxEntriesExceeded"
    );
    assert_eq!(
        error(
            "ModifyManagedPrefixList",
            &newer,
            &[("PrefixListId", id), ("CurrentVersion", "2"), ("AddEntry.1.Cidr", "2001:db8::/32")]
        )
        .code,
        "InvalidParameterValue"
    );
    assert_eq!(
        error(
            "ModifyManagedPrefixList",
            &newer,
            &[("PrefixListId", id), ("CurrentVersion", "2"), ("RemoveEntry.1.Cidr", "203.0.113.0/24")]
        )
        .code,
        "InvalidPrefixListModification"
    );
    let body = run("GetManagedPrefixListEntries", &newer, &[("PrefixListId", id)]).unwrap().body.as_str().to_owned();
    assert_eq!(
        body,
        "<entrySet><item><cidr>192.0.2.0/24</cidr><description>partner a</description></item><item><cidr>198.51.100.0/24</cidr></item></entrySet>"
    );
    // In use by a rule: not deleted.
    let (used, _) = change(
        "AuthorizeSecurityGroupIngress",
        &newer,
        &[
            ("GroupId", "sg-web"),
            ("IpPermissions.1.IpProtocol", "-1"),
            ("IpPermissions.1.PrefixListIds.1.PrefixListId", id),
        ],
    );
    assert_eq!(error("DeleteManagedPrefixList", &used, &[("PrefixListId", id)]).code, "DependencyViolation");
    let (gone, _) = change("DeleteManagedPrefixList", &newer, &[("PrefixListId", id)]);
    assert!(gone.prefix_list(id).is_none());
    assert_eq!(
        error("GetManagedPrefixListEntries", &gone, &[("PrefixListId", id)]).code,
        "InvalidPrefixListID.NotFound"
    );
}

#[test]
fn network_interfaces_are_instances() {
    let d = base();
    let body =
        run("DescribeNetworkInterfaces", &d, &[("NetworkInterfaceId.1", "eni-web1")]).unwrap().body.as_str().to_owned();
    assert!(body.contains("<networkInterfaceId>eni-web1</networkInterfaceId>"));
    assert!(
        body.contains("<groupSet><item><groupId>sg-web</groupId><groupName>web</groupName></item></groupSet>"),
        "{body}"
    );
    assert!(
        body.contains("<privateIpAddress>10.0.1.10</privateIpAddress>")
            && body.contains("<ipv6Address>fd00:1::10</ipv6Address>")
    );
    let (new, _) = change(
        "ModifyNetworkInterfaceAttribute",
        &d,
        &[("NetworkInterfaceId", "eni-web1"), ("SecurityGroupId.1", "sg-admin"), ("SecurityGroupId.2", "sg-web")],
    );
    assert_eq!(new.instance("eni-web1").unwrap().security_groups, ["sg-admin", "sg-web"]);
    let (new, _) = change(
        "ModifyNetworkInterfaceAttribute",
        &new,
        &[("NetworkInterfaceId", "eni-web1"), ("SourceDestCheck.Value", "false")],
    );
    assert!(!new.instance("eni-web1").unwrap().source_dest_check);
    assert_eq!(
        error(
            "ModifyNetworkInterfaceAttribute",
            &d,
            &[("NetworkInterfaceId", "eni-web1"), ("SecurityGroupId.1", "sg-nope")]
        )
        .code,
        "InvalidGroup.NotFound"
    );
    assert_eq!(
        error(
            "ModifyNetworkInterfaceAttribute",
            &d,
            &[("NetworkInterfaceId", "eni-nope"), ("SecurityGroupId.1", "sg-web")]
        )
        .code,
        "InvalidNetworkInterfaceID.NotFound"
    );
    let none = run("DescribeNetworkInterfaces", &d, &[("Filter.1.Name", "group-id"), ("Filter.1.Value.1", "sg-admin")])
        .unwrap();
    assert_eq!(none.body.as_str(), "<networkInterfaceSet></networkInterfaceSet>");
}
