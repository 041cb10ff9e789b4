//! AWS input read the way EC2 reads it (SPEC §2): the `default`-named group of each VPC,
//! `describe-security-group-rules`, `describe-instances` as an instances document bound to local
//! interfaces, and the keys boto3 and pagination add. The realistic files are in
//! `examples/aws/`, in exactly the shape the AWS CLI prints.

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;
use crate::policy::{ConntrackTimeouts, Direction, Source, load_all};

fn aws_example(name: &str) -> String {
    example(&format!("aws/{name}"))
}

const DEFAULT_SG: &str = "sg-0d1e2f3a4b5c6d7e8";
const WEB_SG: &str = "sg-0123456789abcdef0";
const WEB_ENI: &str = "eni-0aa1bb2cc3dd4ee51";

/// The example groups with the example instances (describe-instances + local bindings).
fn example_doc(listing: &str) -> Document {
    let instances = [aws_example("describe-instances.json"), aws_example("local-interfaces.json")];
    load_all(&aws_example(listing), &instances).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_default_named_group_of_the_dump_is_the_default_group() {
    // The dump's `default` group has had its inbound rules removed (a common hardening); two
    // instances list no group. EC2 puts them in that group and denies SSH between them; the
    // built-in permissive default must not apply.
    let groups = r#"{ "SecurityGroups": [
        { "GroupId": "sg-0def", "GroupName": "default", "VpcId": "vpc-1", "Description": "default VPC security group",
          "IpPermissions": [],
          "IpPermissionsEgress": [ { "IpProtocol": "-1", "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] } ] } ] }"#;
    let instances = r#"{ "instances": [
        { "id": "a", "interface": "veth-a", "addresses": ["10.0.0.1"] },
        { "id": "b", "addresses": ["10.0.0.2"] } ] }"#;
    let doc = load(groups, Some(instances)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(doc.instances[0].security_groups, ["sg-0def"]);
    assert_eq!(doc.instances[1].security_groups, ["sg-0def"]);
    assert!(doc.group(DEFAULT_GROUP).is_none(), "the built-in default group does not apply: {doc:#?}");
    // (`explain`'s tests show the verdict: SSH between them is denied.)
    // Referring to the built-in group by its id is then an error.
    let found =
        problems_of(load(groups, Some(r#"{ "instances": [ { "id": "a", "security_groups": ["default"] } ] }"#)));
    assert_problems(&found, &[("instances[0].security_groups[0]", r#"unknown security group "default""#)]);
    assert_eq!(found[0].source, Source::Instances(0));
}

#[test]
fn several_vpcs_each_have_their_default_group() {
    let groups = r#"{ "SecurityGroups": [
        { "GroupId": "sg-d1", "GroupName": "default", "VpcId": "vpc-1", "IpPermissions": [], "IpPermissionsEgress": [] },
        { "GroupId": "sg-d2", "GroupName": "default", "VpcId": "vpc-2", "IpPermissions": [], "IpPermissionsEgress": [] } ] }"#;
    let doc = load(
        groups,
        Some(
            r#"{ "instances": [ { "id": "a", "vpc_id": "vpc-2" }, { "id": "b", "vpc_id": "vpc-1" },
                                 { "id": "c", "security_groups": ["sg-d1"] } ] }"#,
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let groups_of: Vec<&[String]> = doc.instances.iter().map(|i| i.security_groups.as_slice()).collect();
    assert_eq!(groups_of, [&["sg-d2".to_owned()][..], &["sg-d1".to_owned()], &["sg-d1".to_owned()]]);
    let found =
        problems_of(load(groups, Some(r#"{ "instances": [ { "id": "a" }, { "id": "b", "vpc_id": "vpc-9" } ] }"#)));
    assert_problems(
        &found,
        &[
            (
                "instances[0]",
                "lists no security group, and the listing has the default groups of 2 VPCs (vpc-1, vpc-2): give vpc_id or security_groups",
            ),
            ("instances[1].vpc_id", r#"the listing has no default group of VPC "vpc-9""#),
        ],
    );
    let twice = r#"{ "SecurityGroups": [
        { "GroupId": "sg-d1", "GroupName": "default", "VpcId": "vpc-1" },
        { "GroupId": "sg-d2", "GroupName": "default", "VpcId": "vpc-1" } ] }"#;
    assert_problems(
        &problems(twice),
        &[("SecurityGroups[1].GroupName", "a second default group for VPC vpc-1 (also sg-d1)")],
    );
}

#[test]
fn a_dump_without_a_default_named_group_keeps_the_built_in_one() {
    let doc = load(r#"{ "SecurityGroups": [ { "GroupId": "sg-1" } ] }"#, Some(r#"{ "instances": [ { "id": "a" } ] }"#))
        .unwrap();
    assert_eq!(doc.instances[0].security_groups, [DEFAULT_GROUP]);
    assert_eq!(doc.group(DEFAULT_GROUP), Some(&SecurityGroup::aws_default()));
}

/// Every (group, direction, protocol, ports, peer, description) of a document, sorted.
fn flat_rules(doc: &Document) -> Vec<String> {
    let mut out: Vec<String> = doc
        .security_groups
        .iter()
        .filter(|g| g.id != DEFAULT_GROUP)
        .flat_map(|g| {
            [(Direction::Ingress, &g.ingress), (Direction::Egress, &g.egress)].into_iter().flat_map(
                move |(d, rules)| {
                    rules.iter().flat_map(move |r| {
                        r.peers.iter().map(move |p| {
                            format!("{} {} {} {} {p} {:?}", g.id, d.name(), r.protocol, r.ports, r.description)
                        })
                    })
                },
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn describe_security_group_rules_reads_as_describe_security_groups() {
    let groups = example_doc("describe-security-groups.json");
    let rules = example_doc("describe-security-group-rules.json");
    assert_eq!(flat_rules(&rules), flat_rules(&groups));
    assert!(flat_rules(&groups).len() > 10);
    // Both warn about the IPv6 range of the icmp permission, each at its own path.
    assert_eq!(groups.warnings.len(), 1, "{:#?}", groups.warnings);
    assert_eq!(groups.warnings[0].path, "SecurityGroups[1].IpPermissions[3].Ipv6Ranges[0].CidrIpv6");
    assert_eq!(rules.warnings.len(), 1, "{:#?}", rules.warnings);
    assert!(rules.warnings[0].path.starts_with("SecurityGroupRules["), "{:?}", rules.warnings);
}

#[test]
fn describe_security_group_rules_problems_have_paths() {
    let text = r#"{ "SecurityGroupRules": [
        { "GroupId": "sg-1", "IsEgress": false, "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "010.0.0.0/8" },
        { "GroupId": "sg-1", "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "10.0.0.0/8" },
        { "GroupId": "sg-1", "IsEgress": true, "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22 },
        { "GroupId": "sg-1", "IsEgress": true, "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "Cidr": "x" } ] }"#;
    assert_problems(
        &problems(text),
        &[
            ("SecurityGroupRules[0].CidrIpv4", "leading zero"),
            ("SecurityGroupRules[1].IsEgress", "missing"),
            ("SecurityGroupRules[2]", "no peer"),
            ("SecurityGroupRules[3].Cidr", "unknown key"),
            ("SecurityGroupRules[3]", "no peer"),
        ],
    );
}

#[test]
fn describe_security_group_rules_groups_without_rules_exist() {
    // sg-2 is referenced (by a rule and by an instance) but has no rule of its own.
    let text = r#"{ "SecurityGroupRules": [
        { "GroupId": "sg-1", "IsEgress": false, "IpProtocol": "-1", "FromPort": -1, "ToPort": -1,
          "ReferencedGroupInfo": { "GroupId": "sg-2", "UserId": "123456789012" } } ] }"#;
    let doc = load(
        text,
        Some(r#"{ "instances": [ { "id": "a", "addresses": ["10.0.0.9"], "security_groups": ["sg-3"] } ] }"#),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(doc.group("sg-2").map(|g| g.ingress.len() + g.egress.len()), Some(0));
    assert_eq!(doc.group("sg-3").map(|g| g.ingress.len() + g.egress.len()), Some(0));
    // Without names, the listing cannot say which group is the default: instances that list
    // none are warned about.
    let doc = load(text, Some(r#"{ "instances": [ { "id": "a" } ] }"#)).unwrap();
    assert_problems(&doc.warnings, &[("instances[0]", "joins the built-in default group")]);
}

#[test]
fn describe_instances_network_interfaces_are_instances() {
    let doc = example_doc("describe-security-groups.json");
    let web = doc.instance(WEB_ENI).expect("the web interface");
    assert_eq!(web.interface.as_deref(), Some("veth-web1"), "bound by local-interfaces.json");
    assert_eq!(web.addresses, [addr("10.0.1.10"), addr("2001:db8:1234:1::10")]);
    assert_eq!(web.security_groups, [WEB_SG]);
    assert!(web.source_dest_check && !web.audit);
    assert_eq!(
        web.conntrack_timeouts,
        ConntrackTimeouts { tcp_established: Some(3600), udp: Some(30), udp_stream: Some(120) }
    );
    let app = doc.instance("eni-0bb2cc3dd4ee5ff62").unwrap();
    assert_eq!((app.interface.as_deref(), app.audit), (Some("veth-app1"), true));
    let db = doc.instance("eni-0cc3dd4ee5ff60073").unwrap();
    assert_eq!(db.interface, None, "not on this node: its addresses count for group references");
    assert_eq!(doc.instance("eni-0dd4ee5ff6007a184").unwrap().security_groups, [DEFAULT_SG]);
    assert_eq!(doc.instances.len(), 4);
    assert_eq!(doc.prefix_lists.len(), 1);
}

#[test]
fn describe_instances_problems_are_in_the_instances_file() {
    // The database's interface (not bound to a local interface).
    let bad = aws_example("describe-instances.json").replacen("\"10.0.3.30\"", "\"010.0.3.30\"", 1);
    let found = problems_of(load_all(
        &aws_example("describe-security-groups.json"),
        &[aws_example("local-interfaces.json"), bad],
    ));
    assert!(!found.is_empty());
    for p in &found {
        assert_eq!(p.source, Source::Instances(1), "{p:?}");
        assert!(p.path.starts_with("Reservations[1].Instances[1].NetworkInterfaces[0]."), "{p:?}");
        assert!(p.message.contains("leading zero"), "{p:?}");
    }
    let line = found[0].in_files(std::path::Path::new("groups.json"), &["local.json".into(), "instances.json".into()]);
    assert!(line.starts_with("instances.json: Reservations[1]"), "{line}");
}

#[test]
fn a_binding_entry_without_its_network_interface_is_an_error() {
    let found = problems_of(load_all(
        &aws_example("describe-security-groups.json"),
        &[
            aws_example("describe-instances.json"),
            aws_example("local-interfaces.json").replace(WEB_ENI, "eni-0000000000000000"),
        ],
    ));
    assert_problems(
        &found,
        &[("instances[0].id", r#"no network interface "eni-0000000000000000" in the describe-instances output"#)],
    );
    assert_eq!(found[0].source, Source::Instances(1));
}

#[test]
fn describe_instances_unknown_keys_and_timeouts_out_of_range() {
    let text = r#"{ "Reservations": [ { "Instances": [ { "InstanceId": "i-1", "NetworkInterfaces": [
        { "NetworkInterfaceId": "eni-1", "Groups": [ { "GroupId": "sg-1", "GroupName": "one" } ],
          "PrivateIpAddresses": [ { "PrivateIpAddress": "10.0.0.1", "Primary": true } ],
          "ConnectionTrackingConfiguration": { "TcpEstablishedTimeout": 30, "UdpTimeout": 61 }, "Foo": 1 } ] } ] } ] }"#;
    let found = problems_of(load(r#"{ "SecurityGroups": [ { "GroupId": "sg-1" } ] }"#, Some(text)));
    let at = "Reservations[0].Instances[0].NetworkInterfaces[0]";
    assert_problems(
        &found,
        &[
            (&format!("{at}.Foo"), "unknown key"),
            (
                &format!("{at}.ConnectionTrackingConfiguration.TcpEstablishedTimeout"),
                "30 is not a timeout in seconds (60-432000",
            ),
            (&format!("{at}.ConnectionTrackingConfiguration.UdpTimeout"), "61 is not a timeout in seconds (30-60"),
        ],
    );
}

#[test]
fn response_metadata_is_ignored_and_next_token_is_a_warning() {
    let text = r#"{ "SecurityGroups": [ { "GroupId": "sg-1", "IpPermissions": [], "IpPermissionsEgress": [] } ],
        "NextToken": "eyJ2IjoiMiJ9",
        "ResponseMetadata": { "RequestId": "5f7e8c1a-0000-4000-8000-000000000000", "HTTPStatusCode": 200,
                              "HTTPHeaders": { "content-type": "text/xml;charset=UTF-8" }, "RetryAttempts": 0 } }"#;
    let doc = load_ok(text);
    assert_problems(&doc.warnings, &[("NextToken", "one page of a paginated listing")]);
    let instances = r#"{ "Reservations": [], "NextToken": "abc", "ResponseMetadata": {} }"#;
    let doc = load(r#"{ "SecurityGroups": [], "ResponseMetadata": {} }"#, Some(instances)).unwrap();
    assert_problems(&doc.warnings, &[("NextToken", "instances on later pages are missing")]);
    assert_eq!(doc.warnings[0].source, Source::Instances(0));
}

#[test]
fn import_of_the_example_reads_back_as_the_same_policy() {
    let doc = example_doc("describe-security-groups.json");
    let native_text = native::write_document(&doc);
    let back = load_ok(&native_text);
    for g in &doc.security_groups {
        assert_eq!(back.group(&g.id), Some(g));
    }
    assert_eq!(back.instances, doc.instances);
    assert_eq!(back.prefix_lists, doc.prefix_lists);
}
