//! AWS input.

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;

/// `aws ec2 describe-security-groups` output with one group `sg-1` and `permissions` as its
/// `IpPermissions` (and no egress).
fn aws_with_ingress(permissions: Value) -> String {
    json!({ "SecurityGroups": [ { "GroupId": "sg-1", "GroupName": "one", "IpPermissions": permissions, "IpPermissionsEgress": [] } ] })
        .to_string()
}

fn convert(text: &str) -> Result<Vec<SecurityGroup>, Invalid> {
    aws::convert_groups(&native::parse_json(text).unwrap())
}

#[track_caller]
fn assert_aws_rejected(text: &str, path: &str, fragment: &str) {
    assert_problems(&problems(text), &[(path, fragment)]);
    match convert(text) {
        Ok(groups) => panic!("convert_groups should reject the document, got {groups:#?}"),
        Err(e) => assert_problems(&e.problems, &[(path, fragment)]),
    }
}

/// The prefix lists of the example `--instances` file.
fn example_prefix_lists() -> Vec<PrefixList> {
    let mut p = Problems::default();
    let (lists, _) = aws::read_instances_document(&mut p, &native::parse_json(&example("aws-instances.json")).unwrap());
    assert!(p.is_empty(), "{:?}", p.list);
    lists.into_iter().map(|l| l.list).collect()
}

#[test]
fn aws_example_loads_with_its_instances() {
    let doc = load(&example("aws-describe-security-groups.json"), Some(&example("aws-instances.json")))
        .unwrap_or_else(|e| panic!("{e}"));
    let sg = "sg-0123456789abcdef0";
    let group = doc.group(sg).expect("the AWS group");
    assert_eq!(group.name.as_deref(), Some("web"));
    assert_eq!(group.description.as_deref(), Some("web tier"));
    assert_eq!(
        group.ingress,
        vec![
            Rule {
                id: None,
                protocol: Protocol::Tcp,
                ports: Ports::Range(443, 443),
                peers: vec![cidr("0.0.0.0/0")],
                description: Some("https".to_owned())
            },
            Rule {
                id: None,
                protocol: Protocol::Tcp,
                ports: Ports::Range(443, 443),
                peers: vec![cidr("::/0")],
                description: None
            },
            Rule {
                id: None,
                protocol: Protocol::Tcp,
                ports: Ports::Range(22, 22),
                peers: vec![Peer::PrefixList("pl-1234abc1234abc123".to_owned())],
                description: Some("admin".to_owned())
            },
            Rule {
                id: None,
                protocol: Protocol::Icmp,
                ports: Ports::Icmp { ty: Some(3), code: Some(4) },
                peers: vec![cidr("10.0.0.0/16")],
                description: None
            },
            Rule {
                id: None,
                protocol: Protocol::All,
                ports: Ports::All,
                peers: vec![Peer::Group(sg.to_owned())],
                description: None
            },
        ]
    );
    assert_eq!(
        group.egress,
        vec![Rule {
            id: None,
            protocol: Protocol::All,
            ports: Ports::All,
            peers: vec![cidr("0.0.0.0/0"), cidr("::/0")],
            description: None
        }]
    );
    assert_eq!(doc.group(DEFAULT_GROUP), Some(&SecurityGroup::aws_default()));
    assert_eq!(doc.prefix_lists, example_prefix_lists());
    let instances: Vec<(&str, Option<&str>, &[String])> =
        doc.instances.iter().map(|i| (i.id.as_str(), i.interface.as_deref(), i.security_groups.as_slice())).collect();
    assert_eq!(instances, [("web-1", Some("veth-web1"), &[sg.to_owned()][..]), ("web-2", None, &[sg.to_owned()][..])]);
}

#[test]
fn aws_example_without_instances_lacks_its_prefix_list() {
    assert_problems(
        &problems(&example("aws-describe-security-groups.json")),
        &[(
            "SecurityGroups[0].IpPermissions[1].PrefixListIds[0].PrefixListId",
            r#"unknown prefix list "pl-1234abc1234abc123""#,
        )],
    );
}

#[test]
fn aws_keys_without_bearing_on_enforcement_are_accepted() {
    let text = r#"{
      "SecurityGroups": [ {
        "GroupId": "sg-1", "GroupName": "one", "Description": "d", "OwnerId": "123456789012", "VpcId": "vpc-1",
        "SecurityGroupArn": "arn:aws:ec2:eu-west-1:123456789012:security-group/sg-1",
        "Tags": [ { "Key": "Name", "Value": "one" } ],
        "IpPermissions": [ {
          "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
          "IpRanges": [ { "CidrIp": "10.0.0.0/8", "Description": "office" } ],
          "Ipv6Ranges": [ { "CidrIpv6": "fd00::/8", "Description": "office v6" } ],
          "PrefixListIds": [],
          "UserIdGroupPairs": [ { "GroupId": "sg-1", "UserId": "123456789012", "GroupName": "one", "VpcId": "vpc-1",
                                  "VpcPeeringConnectionId": "pcx-1", "PeeringStatus": "active", "Description": "self" } ]
        } ],
        "IpPermissionsEgress": []
      } ],
      "NextToken": "abc"
    }"#;
    let doc = load_ok(text);
    let group = doc.group("sg-1").unwrap();
    let peers: Vec<(&[Peer], Option<&str>)> =
        group.ingress.iter().map(|r| (r.peers.as_slice(), r.description.as_deref())).collect();
    assert_eq!(
        peers,
        [
            (&[cidr("10.0.0.0/8")][..], Some("office")),
            (&[cidr("fd00::/8")][..], Some("office v6")),
            (&[Peer::Group("sg-1".to_owned())][..], Some("self")),
        ]
    );
}

#[test]
fn aws_unknown_top_level_key() {
    assert_aws_rejected(
        r#"{ "SecurityGroups": [], "Foo": 1 }"#,
        "Foo",
        "unknown key (expected one of: SecurityGroups, NextToken, ResponseMetadata)",
    );
}

#[test]
fn aws_unknown_group_key() {
    assert_aws_rejected(
        r#"{ "SecurityGroups": [ { "GroupId": "sg-1", "IpPermissions": [], "Rules": [] } ] }"#,
        "SecurityGroups[0].Rules",
        "unknown key (expected one of: GroupId, GroupName, Description, IpPermissions, IpPermissionsEgress",
    );
}

#[test]
fn aws_unknown_permission_key() {
    assert_aws_rejected(
        &aws_with_ingress(json!([
            { "IpProtocol": "-1", "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] },
            { "IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ], "Foo": true }
        ])),
        "SecurityGroups[0].IpPermissions[1].Foo",
        "unknown key (expected one of: IpProtocol, FromPort, ToPort, IpRanges, Ipv6Ranges, PrefixListIds, UserIdGroupPairs)",
    );
}

#[test]
fn aws_unknown_peer_keys() {
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "-1", "IpRanges": [ { "CidrIp": "0.0.0.0/0", "CidrIpv6": "::/0" } ] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0].IpRanges[0].CidrIpv6",
        "unknown key (expected one of: CidrIp, Description)",
    );
    assert_aws_rejected(
        &aws_with_ingress(json!([ { "IpProtocol": "-1", "Ipv6Ranges": [ { "CidrIpv6": "::/0", "Cidr": "::/0" } ] } ])),
        "SecurityGroups[0].IpPermissions[0].Ipv6Ranges[0].Cidr",
        "unknown key (expected one of: CidrIpv6, Description)",
    );
    // (`load` also finds that pl-1 is not in the --instances document, which is not given.)
    let text = aws_with_ingress(
        json!([ { "IpProtocol": "-1", "PrefixListIds": [ { "PrefixListId": "pl-1", "Name": "x" } ] } ]),
    );
    let unknown_key = (
        "SecurityGroups[0].IpPermissions[0].PrefixListIds[0].Name",
        "unknown key (expected one of: PrefixListId, Description)",
    );
    assert_problems(&convert(&text).expect_err("unknown key").problems, &[unknown_key]);
    assert_problems(
        &problems(&text),
        &[
            unknown_key,
            ("SecurityGroups[0].IpPermissions[0].PrefixListIds[0].PrefixListId", r#"unknown prefix list "pl-1""#),
        ],
    );
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "-1", "UserIdGroupPairs": [ { "GroupId": "sg-1", "Owner": "me" } ] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0].UserIdGroupPairs[0].Owner",
        "unknown key (expected one of: GroupId, UserId, GroupName, VpcId, VpcPeeringConnectionId, PeeringStatus, Description)",
    );
}

#[test]
fn aws_native_keys_are_unknown() {
    assert_aws_rejected(
        r#"{ "SecurityGroups": [], "security_groups": [] }"#,
        "security_groups",
        "unknown key (expected one of: SecurityGroups, NextToken, ResponseMetadata)",
    );
}

#[test]
fn aws_unknown_key_in_egress_permission() {
    let text = r#"{ "SecurityGroups": [ { "GroupId": "sg-1", "IpPermissionsEgress": [ { "IpProtocol": "-1", "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ], "Egress": true } ] } ] }"#;
    assert_aws_rejected(text, "SecurityGroups[0].IpPermissionsEgress[0].Egress", "unknown key");
}

#[test]
fn aws_duplicate_key() {
    assert_aws_rejected(
        r#"{ "SecurityGroups": [ { "GroupId": "sg-1", "GroupId": "sg-2" } ] }"#,
        "SecurityGroups[0].GroupId",
        "key appears more than once",
    );
}

#[test]
fn aws_group_id_is_required() {
    assert_aws_rejected(r#"{ "SecurityGroups": [ { "GroupName": "one" } ] }"#, "SecurityGroups[0].GroupId", "missing");
}

#[test]
fn aws_group_id_is_checked_like_a_native_id() {
    let message = format!("must be 1 to {} printable characters", limits::TEXT_LEN);
    assert_aws_rejected(r#"{ "SecurityGroups": [ { "GroupId": "" } ] }"#, "SecurityGroups[0].GroupId", &message);
    let long = "x".repeat(limits::TEXT_LEN + 1);
    assert_aws_rejected(
        &json!({ "SecurityGroups": [ { "GroupId": long } ] }).to_string(),
        "SecurityGroups[0].GroupId",
        &message,
    );
    assert_aws_rejected(
        r#"{ "SecurityGroups": [ { "GroupId": 12 } ] }"#,
        "SecurityGroups[0].GroupId",
        "expected a string, found a number",
    );
}

#[test]
fn aws_descriptions_longer_than_the_limit() {
    let long = "d".repeat(limits::TEXT_LEN + 1);
    let message = format!("longer than {} bytes", limits::TEXT_LEN);
    assert_aws_rejected(
        &json!({ "SecurityGroups": [ { "GroupId": "sg-1", "Description": long } ] }).to_string(),
        "SecurityGroups[0].Description",
        &message,
    );
    assert_aws_rejected(
        &json!({ "SecurityGroups": [ { "GroupId": "sg-1", "GroupName": long } ] }).to_string(),
        "SecurityGroups[0].GroupName",
        &message,
    );
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "-1", "IpRanges": [ { "CidrIp": "0.0.0.0/0", "Description": long } ] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0].IpRanges[0].Description",
        &message,
    );
}

#[test]
fn aws_security_groups_must_be_an_array() {
    assert_aws_rejected(
        r#"{ "SecurityGroups": { "GroupId": "sg-1" } }"#,
        "SecurityGroups",
        "expected an array, found an object",
    );
}

#[test]
fn aws_protocol_is_required() {
    assert_aws_rejected(
        &aws_with_ingress(json!([ { "FromPort": 1, "ToPort": 2, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] } ])),
        "SecurityGroups[0].IpPermissions[0].IpProtocol",
        "missing",
    );
}

#[test]
fn aws_bad_protocol() {
    assert_aws_rejected(
        &aws_with_ingress(json!([ { "IpProtocol": "tcpp", "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] } ])),
        "SecurityGroups[0].IpPermissions[0].IpProtocol",
        r#""tcpp" is not a protocol"#,
    );
}

#[test]
fn aws_peer_id_is_required() {
    assert_aws_rejected(
        &aws_with_ingress(json!([ { "IpProtocol": "-1", "IpRanges": [ { "Description": "no cidr" } ] } ])),
        "SecurityGroups[0].IpPermissions[0].IpRanges[0].CidrIp",
        "missing",
    );
    assert_aws_rejected(
        &aws_with_ingress(json!([ { "IpProtocol": "-1", "UserIdGroupPairs": [ { "UserId": "123456789012" } ] } ])),
        "SecurityGroups[0].IpPermissions[0].UserIdGroupPairs[0].GroupId",
        "missing",
    );
}

#[test]
fn aws_port_errors_use_aws_names() {
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "tcp", "FromPort": 443, "ToPort": 80, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0].ToPort",
        "80 is below FromPort 443",
    );
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "udp", "FromPort": 53, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0].ToPort",
        "missing: FromPort is given, so ToPort must be too",
    );
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "icmp", "FromPort": -1, "ToPort": 3, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0].ToPort",
        "code 3 needs a type, but FromPort is -1",
    );
}

#[test]
fn aws_ip_ranges_with_an_ipv6_cidr() {
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [ { "CidrIp": "::/0" } ] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0].IpRanges[0].CidrIp",
        "::/0: IpRanges holds IPv4 CIDRs",
    );
}

#[test]
fn aws_ipv6_ranges_with_an_ipv4_cidr() {
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "Ipv6Ranges": [ { "CidrIpv6": "10.0.0.0/8" } ] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0].Ipv6Ranges[0].CidrIpv6",
        "10.0.0.0/8: Ipv6Ranges holds IPv6 CIDRs",
    );
}

#[test]
fn aws_bad_cidr() {
    assert_aws_rejected(
        &aws_with_ingress(json!([ { "IpProtocol": "-1", "IpRanges": [ { "CidrIp": "10.0.0.1/8" } ] } ])),
        "SecurityGroups[0].IpPermissions[0].IpRanges[0].CidrIp",
        "(the network is 10.0.0.0/8)",
    );
}

#[test]
fn aws_icmp_with_an_ipv6_range_is_a_warning_and_matches_nothing() {
    // EC2 accepts an icmp permission with Ipv6Ranges (Terraform writes many) and never matches
    // the IPv6 ranges; the IPv4 ones in the same permission still apply.
    let doc = load_ok(&aws_with_ingress(json!([
        { "IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "Ipv6Ranges": [ { "CidrIpv6": "::/0" } ] },
        { "IpProtocol": "icmpv6", "FromPort": -1, "ToPort": -1, "IpRanges": [ { "CidrIp": "10.0.0.0/8" } ],
          "Ipv6Ranges": [ { "CidrIpv6": "fd00::/8" } ] }
    ])));
    assert_eq!(
        doc.group("sg-1").unwrap().ingress,
        vec![Rule {
            protocol: Protocol::Icmpv6,
            ports: Ports::Icmp { ty: None, code: None },
            peers: vec![cidr("fd00::/8")],
            description: None,
            id: None,
        }]
    );
    assert_problems(
        &doc.warnings,
        &[
            (
                "SecurityGroups[0].IpPermissions[0].Ipv6Ranges[0].CidrIpv6",
                "::/0 is of the other IP family than protocol icmp",
            ),
            (
                "SecurityGroups[0].IpPermissions[1].IpRanges[0].CidrIp",
                "10.0.0.0/8 is of the other IP family than protocol icmpv6",
            ),
        ],
    );
    // The native format keeps calling it an error.
    assert_rule_rejected(
        json!({ "protocol": "icmp", "cidrs": ["::/0"] }),
        "cidrs[0]",
        "::/0 is IPv6, but protocol icmp matches IPv4 only",
    );
}

#[test]
fn aws_permission_without_peers() {
    assert_aws_rejected(
        &aws_with_ingress(
            json!([ { "IpProtocol": "-1", "IpRanges": [], "Ipv6Ranges": [], "PrefixListIds": [], "UserIdGroupPairs": [] } ]),
        ),
        "SecurityGroups[0].IpPermissions[0]",
        "no peer",
    );
}

#[test]
fn aws_unknown_group_reference() {
    assert_rejected(
        &aws_with_ingress(json!([ { "IpProtocol": "-1", "UserIdGroupPairs": [ { "GroupId": "sg-2" } ] } ])),
        "SecurityGroups[0].IpPermissions[0].UserIdGroupPairs[0].GroupId",
        r#"unknown security group "sg-2""#,
    );
}

#[test]
fn aws_duplicate_group_id() {
    assert_rejected(
        r#"{ "SecurityGroups": [ { "GroupId": "sg-1" }, { "GroupId": "sg-1" } ] }"#,
        "SecurityGroups[1].GroupId",
        r#"duplicate security group id "sg-1" (also SecurityGroups[0])"#,
    );
}

#[test]
fn aws_missing_egress_means_no_outbound() {
    let doc = load_ok(r#"{ "SecurityGroups": [ { "GroupId": "sg-1" } ] }"#);
    let group = doc.group("sg-1").unwrap();
    assert_eq!((group.ingress.as_slice(), group.egress.as_slice()), (&[][..], &[][..]));
    let groups = convert(r#"{ "SecurityGroups": [ { "GroupId": "sg-1", "IpPermissions": [] } ] }"#).unwrap();
    assert_eq!(groups[0].egress, vec![]);
}

#[test]
fn aws_convert_adds_no_default_group() {
    let groups = convert(&example("aws-describe-security-groups.json")).unwrap();
    let ids: Vec<&str> = groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, ["sg-0123456789abcdef0"]);
}

#[test]
fn aws_protocols_normalise() {
    let text = aws_with_ingress(json!([
        { "IpProtocol": "6", "FromPort": 0, "ToPort": 65535, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] },
        { "IpProtocol": "58", "FromPort": -1, "ToPort": -1, "Ipv6Ranges": [ { "CidrIpv6": "::/0" } ] },
        { "IpProtocol": "-1", "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] },
        { "IpProtocol": "50", "FromPort": -1, "ToPort": -1, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] }
    ]));
    let got: Vec<(Protocol, Ports)> =
        convert(&text).unwrap()[0].ingress.iter().map(|r| (r.protocol, r.ports)).collect();
    assert_eq!(
        got,
        [
            (Protocol::Tcp, Ports::Range(0, 65535)),
            (Protocol::Icmpv6, Ports::Icmp { ty: None, code: None }),
            (Protocol::All, Ports::All),
            (Protocol::Number(50), Ports::All),
        ]
    );
}

#[test]
fn aws_per_peer_descriptions_become_separate_rules() {
    let text = aws_with_ingress(json!([ {
        "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
        "IpRanges": [
            { "CidrIp": "10.0.0.0/8", "Description": "a" },
            { "CidrIp": "192.168.0.0/16", "Description": "b" },
            { "CidrIp": "172.16.0.0/12", "Description": "a" }
        ],
        "Ipv6Ranges": [ { "CidrIpv6": "fd00::/8" } ],
        "UserIdGroupPairs": [ { "GroupId": "sg-1", "Description": "b" }, { "GroupId": "sg-1" } ]
    } ]));
    let rule = |peers: Vec<Peer>, description: Option<&str>| Rule {
        id: None,
        protocol: Protocol::Tcp,
        ports: Ports::Range(5432, 5432),
        peers,
        description: description.map(str::to_owned),
    };
    let expected = vec![
        rule(vec![cidr("10.0.0.0/8"), cidr("172.16.0.0/12")], Some("a")),
        rule(vec![cidr("192.168.0.0/16"), Peer::Group("sg-1".to_owned())], Some("b")),
        rule(vec![cidr("fd00::/8"), Peer::Group("sg-1".to_owned())], None),
    ];
    assert_eq!(convert(&text).unwrap()[0].ingress, expected);
    assert_eq!(load_ok(&text).group("sg-1").unwrap().ingress, expected);
}

#[test]
fn aws_conversion_is_lossless_for_the_example() {
    let groups = convert(&example("aws-describe-security-groups.json")).unwrap();
    let lists = example_prefix_lists();
    let written = write(&groups, &lists, &[]);
    let back = native::parse_document(&written.to_string()).unwrap_or_else(|e| panic!("{e}\n{written:#}"));
    for group in &groups {
        assert_eq!(back.group(&group.id), Some(group), "group {} after the round trip", group.id);
    }
    assert_eq!(back.prefix_lists, lists);
}

#[test]
fn aws_conversion_is_lossless_for_every_rule_shape() {
    let text = r#"{ "SecurityGroups": [
      { "GroupId": "sg-1", "GroupName": "one", "Description": "every shape",
        "IpPermissions": [
          { "IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ] },
          { "IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "UserIdGroupPairs": [ { "GroupId": "sg-2", "Description": "dns" } ] },
          { "IpProtocol": "icmp", "FromPort": 8, "ToPort": -1, "IpRanges": [ { "CidrIp": "10.0.0.0/8", "Description": "ping" } ] },
          { "IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "IpRanges": [ { "CidrIp": "192.0.2.1/32" } ] },
          { "IpProtocol": "icmpv6", "FromPort": 128, "ToPort": 0, "Ipv6Ranges": [ { "CidrIpv6": "2001:db8::/32" } ] },
          { "IpProtocol": "47", "IpRanges": [ { "CidrIp": "198.51.100.0/24" } ], "PrefixListIds": [ { "PrefixListId": "pl-1", "Description": "gre" } ] },
          { "IpProtocol": "-1", "UserIdGroupPairs": [ { "GroupId": "sg-1" } ], "Ipv6Ranges": [ { "CidrIpv6": "::/0", "Description": "" } ] }
        ],
        "IpPermissionsEgress": [
          { "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [ { "CidrIp": "0.0.0.0/0" } ], "Ipv6Ranges": [ { "CidrIpv6": "::/0" } ] }
        ] },
      { "GroupId": "sg-2", "GroupName": "two", "IpPermissions": [] },
      { "GroupId": "default", "GroupName": "default", "IpPermissions": [], "IpPermissionsEgress": [] }
    ] }"#;
    let groups = convert(text).unwrap();
    assert_eq!(groups.len(), 3);
    assert_eq!(groups[0].ingress.len(), 9, "{:#?}", groups[0].ingress);
    let lists = vec![PrefixList {
        meta: Default::default(),
        id: "pl-1".to_owned(),
        name: None,
        cidrs: vec![net("203.0.113.0/24")],
    }];
    let written = write(&groups, &lists, &[]);
    let back = native::parse_document(&written.to_string()).unwrap_or_else(|e| panic!("{e}\n{written:#}"));
    assert_eq!(back.security_groups, groups, "the AWS `default` group replaces the built-in one");
    // Compared field by field too, so a failure says which part was lost.
    for (before, after) in groups.iter().zip(&back.security_groups) {
        for (a, b) in before.ingress.iter().chain(&before.egress).zip(after.ingress.iter().chain(&after.egress)) {
            assert_eq!((a.protocol, a.ports), (b.protocol, b.ports));
            assert_eq!(a.peers, b.peers);
            assert_eq!(a.description, b.description);
        }
    }
}

#[test]
fn aws_load_equals_load_of_the_imported_document() {
    let aws_text = example("aws-describe-security-groups.json");
    let instances_text = example("aws-instances.json");
    let loaded = load(&aws_text, Some(&instances_text)).unwrap();
    // What `import-aws FILE --instances FILE` prints.
    let groups = convert(&aws_text).unwrap();
    let mut p = Problems::default();
    let (lists, instances) = aws::read_instances_document(&mut p, &native::parse_json(&instances_text).unwrap());
    assert!(p.is_empty());
    let lists: Vec<PrefixList> = lists.into_iter().map(|l| l.list).collect();
    let instances: Vec<Instance> = instances.into_iter().map(|i| i.instance).collect();
    let imported = write(&groups, &lists, &instances).to_string();
    assert_eq!(load_ok(&imported), loaded);
}

#[test]
fn instances_file_with_a_native_document_is_an_error() {
    let found = problems_of(load(&example("web-server.json"), Some(r#"{ "instances": [] }"#)));
    assert_problems(
        &found,
        &[("", "--instances is for AWS input (describe-security-groups or describe-security-group-rules JSON)")],
    );
}

#[test]
fn instances_file_syntax_error_names_the_instances_file() {
    let found = problems_of(load(&example("aws-describe-security-groups.json"), Some("{ \"instances\": [ }")));
    assert_problems(&found, &[("", "not valid JSON")]);
    assert_eq!(found[0].source, super::super::Source::Instances(0), "the problem is in the instances file");
}

#[test]
fn instances_file_holds_only_instances_and_prefix_lists() {
    let found = problems_of(load(
        &example("aws-describe-security-groups.json"),
        Some(r#"{ "prefix_lists": [ { "id": "pl-1234abc1234abc123", "cidrs": [] } ], "security_groups": [] }"#),
    ));
    assert_problems(&found, &[("security_groups", "unknown key (expected one of: instances, prefix_lists)")]);
}

#[test]
fn instances_file_problems_are_reported() {
    let found = problems_of(load(
        &example("aws-describe-security-groups.json"),
        Some(
            r#"{ "prefix_lists": [ { "id": "pl-1234abc1234abc123", "cidrs": [] } ],
                 "instances": [ { "id": "i-1", "interface": "veth1", "security_groups": ["sg-nope"], "addresses": ["10.0.0.1"] },
                                { "id": "i-2", "interface": "veth1", "addresses": ["ten"] } ] }"#,
        ),
    ));
    assert_problems(
        &found,
        &[
            ("instances[1].addresses[0]", r#""ten" is not an IP address"#),
            ("instances[0].security_groups[0]", r#"unknown security group "sg-nope""#),
            ("instances[1].interface", r#"interface "veth1" already belongs to instances[0]"#),
        ],
    );
}

#[test]
fn instances_in_aws_input_may_use_the_default_group() {
    let doc = load(
        r#"{ "SecurityGroups": [ { "GroupId": "sg-1" } ] }"#,
        Some(r#"{ "instances": [ { "id": "i-1" }, { "id": "i-2", "security_groups": ["default", "sg-1"] } ] }"#),
    )
    .unwrap();
    assert_eq!(doc.instances[0].security_groups, [DEFAULT_GROUP]);
    assert_eq!(doc.instances[1].security_groups, [DEFAULT_GROUP, "sg-1"]);
    assert_eq!(doc.group(DEFAULT_GROUP), Some(&SecurityGroup::aws_default()));
}
