//! The EC2 API (SPEC §9) driven by the real AWS CLI and boto3: a session whose every change
//! shows in real packets the moment the call returns and survives a restart; every error path
//! with EC2's code as the CLI prints it; signatures; malformed and oversized requests; start-up
//! refusals.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use std::{fs, path::PathBuf, process::Command};

use serde_json::Value;
use support::*;

/// The API's address inside the node namespace.
const API: &str = "127.0.0.1:8787";
const KEY_ID: &str = "AKIDSGAGENTTEST0001";
const SECRET: &str = "sg-agent/test+secret/0123456789abcdefABCDEF";

/// The AWS CLI and boto3, or `None` (skipped) where privileged tests do not run either.
fn tools() -> Option<AwsTools> {
    if !privileged() {
        return None;
    }
    match AwsTools::find() {
        Some(t) => Some(t),
        None if std::env::var("SG_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") => {
            panic!("the AWS CLI and boto3 are missing: run scripts/setup-toolchain.sh")
        }
        None => {
            eprintln!("SKIPPED: the AWS CLI and boto3 are missing (scripts/setup-toolchain.sh installs them)");
            None
        }
    }
}

/// A file or directory of a test, removed on drop (a failing test cleans up too).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0).or_else(|_| fs::remove_file(&self.0));
    }
}

/// A credentials file for the agent (outside its directory, which the agent makes).
fn agent_credentials() -> Scratch {
    let path = PathBuf::from(format!("/run/{}", unique("api-credentials")));
    write_credentials(&path, &[("sg-admin", KEY_ID, SECRET), ("ops", "AKIDSGAGENTOPS00002", "another/secret")]);
    Scratch(path)
}

fn start_with_api(node: &Netns, policy: &str, credentials: &std::path::Path) -> Agent {
    start_agent(node, policy, &["--api", API, "--api-credentials", credentials.to_str().unwrap()])
}

fn rule_ids(client: &AwsClient, group: &str) -> Vec<String> {
    let out = client.ec2_ok(&["describe-security-group-rules", "--filters", &format!("Name=group-id,Values={group}")]);
    let mut ids: Vec<String> = out["SecurityGroupRules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["SecurityGroupRuleId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

const SESSION_POLICY: &str = r#"{
  "security_groups": [
    { "id": "sg-web", "name": "web", "description": "web tier" },
    { "id": "sg-client", "name": "client", "description": "clients" } ],
  "instances": [
    { "id": "eni-web", "interface": "veth-web", "addresses": ["10.0.1.10", "fd00:1::10"], "security_groups": ["sg-web"] },
    { "id": "eni-client", "interface": "veth-c", "addresses": ["10.0.2.10", "fd00:2::10"], "security_groups": ["sg-client"] } ] }"#;

#[test]
fn an_aws_cli_session_changes_traffic_when_each_call_returns_and_survives_a_restart() {
    let Some(tools) = tools() else { return };
    let mut topo = Topology::new();
    topo.add("veth-web", 1, 10);
    topo.add("veth-c", 2, 10);
    let credentials = agent_credentials();
    let agent = start_with_api(&topo.node, SESSION_POLICY, &credentials);
    let cli = AwsClient::new(&tools, &topo.node.name, API, KEY_ID, SECRET);
    let (web, client) = (topo.host("veth-web"), topo.host("veth-c"));
    let (web4, web6) = (v4(web), v6(web));
    let _servers = [
        TcpServer::start(&web.ns, web4, 8080),
        TcpServer::start(&web.ns, web6, 9090),
        TcpServer::start(&web.ns, web6, 7000),
    ];
    let _udp = UdpServer::start(&web.ns, web4, 5353);
    assert!(!tcp_ok(&client.ns, web4, 8080), "nothing allows 8080 yet");

    // A CIDR rule, in the CLI's shorthand: open the moment the call returns.
    let out = cli.ec2_ok(&[
        "authorize-security-group-ingress",
        "--group-id",
        "sg-web",
        "--protocol",
        "tcp",
        "--port",
        "8080",
        "--cidr",
        "10.0.2.0/24",
    ]);
    let rule = out["SecurityGroupRules"][0].clone();
    assert_eq!(
        (rule["IpProtocol"].as_str(), rule["FromPort"].as_i64(), rule["CidrIpv4"].as_str()),
        (Some("tcp"), Some(8080), Some("10.0.2.0/24"))
    );
    let rule_id = rule["SecurityGroupRuleId"].as_str().unwrap().to_owned();
    assert!(tcp_ok(&client.ns, web4, 8080), "open as soon as authorize returned");

    // Revoked by rule id: new connections are refused, a tracked one carries on (SPEC §3).
    let mut tracked = LongConnection::open(&client.ns, web4, 8080);
    assert!(tracked.roundtrip("before"));
    let out =
        cli.ec2_ok(&["revoke-security-group-ingress", "--group-id", "sg-web", "--security-group-rule-ids", &rule_id]);
    assert_eq!(out["Return"], Value::Bool(true));
    assert!(!tcp_ok(&client.ns, web4, 8080), "closed as soon as revoke returned");
    assert!(tracked.roundtrip("after"), "a tracked connection survives the revoke");

    // A group reference: the client's group may send DNS-like UDP.
    cli.ec2_ok(&[
        "authorize-security-group-ingress",
        "--group-id",
        "sg-web",
        "--ip-permissions",
        "IpProtocol=udp,FromPort=5353,ToPort=5353,UserIdGroupPairs=[{GroupId=sg-client,Description=clients}]",
    ]);
    assert!(udp_ok(&client.ns, web4, 5353));

    // A managed prefix list of IPv6 networks.
    let out = cli.ec2_ok(&[
        "create-managed-prefix-list",
        "--prefix-list-name",
        "client-nets",
        "--max-entries",
        "4",
        "--address-family",
        "IPv6",
        "--entries",
        "Cidr=fd00:2::/64,Description=clients",
    ]);
    let list = out["PrefixList"]["PrefixListId"].as_str().unwrap().to_owned();
    assert!(!tcp_ok(&client.ns, web6, 9090));
    cli.ec2_ok(&[
        "authorize-security-group-ingress",
        "--group-id",
        "sg-web",
        "--ip-permissions",
        &format!("IpProtocol=tcp,FromPort=9090,ToPort=9090,PrefixListIds=[{{PrefixListId={list}}}]"),
    ]);
    assert!(tcp_ok(&client.ns, web6, 9090), "open through the prefix list");

    // ICMP echo, IPv4 and IPv6.
    assert!(!ping_ok(&client.ns, web4));
    cli.ec2_ok(&[
        "authorize-security-group-ingress",
        "--group-id",
        "sg-web",
        "--ip-permissions",
        "IpProtocol=icmp,FromPort=8,ToPort=-1,IpRanges=[{CidrIp=10.0.2.0/24}]",
        "IpProtocol=icmpv6,FromPort=128,ToPort=-1,Ipv6Ranges=[{CidrIpv6=fd00:2::/64}]",
    ]);
    assert!(ping_ok(&client.ns, web4) && ping_ok(&client.ns, web6));

    // All protocols from an IPv6 network.
    assert!(!tcp_ok(&client.ns, web6, 7000));
    cli.ec2_ok(&[
        "authorize-security-group-ingress",
        "--group-id",
        "sg-web",
        "--ip-permissions",
        "IpProtocol=-1,Ipv6Ranges=[{CidrIpv6=fd00:2::/64,Description=all from clients}]",
    ]);
    assert!(tcp_ok(&client.ns, web6, 7000));

    // Moving the instance between groups.
    let open = cli.ec2_ok(&[
        "create-security-group",
        "--group-name",
        "open-8080",
        "--description",
        "8080 from clients",
    ])["GroupId"]
        .as_str()
        .unwrap()
        .to_owned();
    cli.ec2_ok(&[
        "authorize-security-group-ingress",
        "--group-id",
        &open,
        "--protocol",
        "tcp",
        "--port",
        "8080",
        "--cidr",
        "10.0.2.0/24",
    ]);
    assert!(!tcp_ok(&client.ns, web4, 8080));
    cli.ec2_ok(&[
        "modify-network-interface-attribute",
        "--network-interface-id",
        "eni-web",
        "--groups",
        "sg-web",
        &open,
    ]);
    assert!(tcp_ok(&client.ns, web4, 8080), "in the open group");
    let eni = cli.ec2_ok(&["describe-network-interfaces", "--network-interface-ids", "eni-web"]);
    let groups: Vec<&str> = eni["NetworkInterfaces"][0]["Groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["GroupId"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["sg-web", open.as_str()]);
    assert_eq!(eni["NetworkInterfaces"][0]["PrivateIpAddress"], "10.0.1.10");
    cli.ec2_ok(&["modify-network-interface-attribute", "--network-interface-id", "eni-web", "--groups", "sg-web"]);
    assert!(!tcp_ok(&client.ns, web4, 8080), "out of the open group");
    cli.ec2_ok(&["delete-security-group", "--group-id", &open]);
    cli.ec2_error(&["describe-security-groups", "--group-ids", &open], "InvalidGroup.NotFound");

    // Everything is in the policy file: a restart (SIGTERM, then a new agent on the same file)
    // enforces it, with the same rule ids.
    let ids = rule_ids(&cli, "sg-web");
    // Six inbound (udp, tcp 9090, icmp, icmpv6, all from IPv6) made through the API, each
    // written with its id; two outbound from the document, known by derived ids.
    assert_eq!(ids.len(), 7, "{ids:?}");
    let inbound = cli.ec2_ok(&["describe-security-group-rules", "--filters", "Name=group-id,Values=sg-web"]);
    let written = fs::read_to_string(agent.dir.join("policy.json")).unwrap();
    for r in inbound["SecurityGroupRules"].as_array().unwrap().iter().filter(|r| r["IsEgress"] == false) {
        let id = r["SecurityGroupRuleId"].as_str().unwrap();
        assert!(written.contains(&format!("\"id\": \"{id}\"")), "{id} is not in the policy file:\n{written}");
    }
    let node = &topo.node;
    let remains = agent.stop_and_hand_over();
    let agent = restart_agent(node, remains, &["--api", API, "--api-credentials", credentials.to_str().unwrap()]);
    assert_eq!(rule_ids(&cli, "sg-web"), ids, "rule ids survive the restart");
    assert!(tcp_ok(&client.ns, web6, 9090) && udp_ok(&client.ns, web4, 5353) && !tcp_ok(&client.ns, web4, 8080));

    // What the CLI prints is AWS input sg-agent reads back as the same policy.
    let dump = cli.ec2_ok(&["describe-security-groups"]);
    let dump_path = agent.dir.join("describe-security-groups.json");
    fs::write(&dump_path, serde_json::to_string_pretty(&dump).unwrap()).unwrap();
    let lists = format!(r#"{{ "prefix_lists": [ {{ "id": "{list}", "cidrs": ["fd00:2::/64"] }} ] }}"#);
    let lists_path = agent.dir.join("lists.json");
    fs::write(&lists_path, &lists).unwrap();
    let check = Command::new(agent_binary_path())
        .arg("check")
        .arg(&dump_path)
        .arg("--instances")
        .arg(&lists_path)
        .output()
        .unwrap();
    assert!(check.status.success(), "check of the CLI's dump: {}", String::from_utf8_lossy(&check.stderr));
    let from_dump = sg_agent::policy::load(&fs::read_to_string(&dump_path).unwrap(), Some(&lists)).unwrap();
    let live =
        sg_agent::policy::native::parse_document(&fs::read_to_string(agent.dir.join("policy.json")).unwrap()).unwrap();
    let rules = |d: &sg_agent::policy::Document| {
        let mut keys: Vec<String> = sg_agent::api::ec2::all_rules(d)
            .iter()
            .map(|r| format!("{} {:?} {:?} {:?}", r.group.id, r.direction, r.key(), r.rule.description))
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(rules(&from_dump), rules(&live), "the dump means the same rules");
    drop(agent);
}

const ERRORS_POLICY: &str = r#"{
  "security_groups": [
    { "id": "sg-web", "name": "web", "description": "web tier",
      "ingress": [ { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.0.0/8"] } ] },
    { "id": "sg-app", "name": "app", "description": "app tier",
      "ingress": [ { "protocol": "tcp", "from_port": 8080, "to_port": 8080, "groups": ["sg-web"] } ] },
    { "id": "sg-unused", "name": "unused", "description": "nobody's" } ],
  "prefix_lists": [ { "id": "pl-office", "name": "office", "address_family": "IPv4", "max_entries": 2, "cidrs": ["198.51.100.0/24"] } ],
  "instances": [ { "id": "eni-remote", "addresses": ["10.9.0.5"], "security_groups": ["sg-app"] } ] }"#;

#[test]
fn errors_carry_ec2s_codes_through_the_cli_and_change_nothing() {
    let Some(tools) = tools() else { return };
    let topo = Topology::new();
    let credentials = agent_credentials();
    // A group at the document's limit of rules per direction.
    let mut policy: Value = serde_json::from_str(ERRORS_POLICY).unwrap();
    let full: Vec<Value> = (0..sg_agent::policy::limits::RULES_PER_GROUP)
        .map(|i| serde_json::json!({ "protocol": "udp", "from_port": i % 65536, "to_port": i % 65536, "cidrs": [format!("10.{}.0.0/16", i / 65536)] }))
        .collect();
    policy["security_groups"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({ "id": "sg-full", "name": "full", "description": "at the limit", "ingress": full }));
    let agent = start_with_api(&topo.node, &policy.to_string(), &credentials);
    let cli = AwsClient::new(&tools, &topo.node.name, API, KEY_ID, SECRET);
    // A prefix list in use (authorized, then revoked: the document means what it did).
    cli.ec2_ok(&[
        "authorize-security-group-ingress",
        "--group-id",
        "sg-unused",
        "--ip-permissions",
        "IpProtocol=tcp,FromPort=1,ToPort=1,PrefixListIds=[{PrefixListId=pl-office}]",
    ]);
    cli.ec2_error(&["delete-managed-prefix-list", "--prefix-list-id", "pl-office"], "DependencyViolation");
    cli.ec2_ok(&[
        "revoke-security-group-ingress",
        "--group-id",
        "sg-unused",
        "--ip-permissions",
        "IpProtocol=tcp,FromPort=1,ToPort=1,PrefixListIds=[{PrefixListId=pl-office}]",
    ]);

    // From here on, nothing may change.
    let file = agent.dir.join("policy.json");
    let before = fs::read(&file).unwrap();
    let generation = agent.status()["generation"].clone();

    let cases: &[(&[&str], &str)] = &[
        (&["create-security-group", "--group-name", "web", "--description", "again"], "InvalidGroup.Duplicate"),
        (&["create-security-group", "--group-name", "default", "--description", "x"], "InvalidParameterValue"),
        (
            &["create-security-group", "--group-name", "x", "--description", "x", "--vpc-id", "vpc-123"],
            "InvalidVpcID.NotFound",
        ),
        (&["delete-security-group", "--group-name", "default"], "CannotDelete"),
        (&["delete-security-group", "--group-id", "sg-web"], "DependencyViolation"),
        (&["delete-security-group", "--group-id", "sg-app"], "DependencyViolation"),
        (&["delete-security-group", "--group-id", "sg-nope"], "InvalidGroup.NotFound"),
        (&["describe-security-groups", "--group-ids", "sg-nope"], "InvalidGroup.NotFound"),
        (&["describe-security-groups", "--filters", "Name=tag:env,Values=prod"], "InvalidParameterValue"),
        (
            &[
                "authorize-security-group-ingress",
                "--group-id",
                "sg-web",
                "--protocol",
                "tcp",
                "--port",
                "22",
                "--cidr",
                "10.0.0.0/8",
            ],
            "InvalidPermission.Duplicate",
        ),
        (
            &[
                "authorize-security-group-ingress",
                "--group-id",
                "sg-web",
                "--protocol",
                "tcp",
                "--port",
                "22",
                "--cidr",
                "10.0.0.1/8",
            ],
            "InvalidParameterValue",
        ),
        (
            &[
                "authorize-security-group-ingress",
                "--group-id",
                "sg-web",
                "--protocol",
                "tcp",
                "--port",
                "22",
                "--source-group",
                "sg-nope",
            ],
            "InvalidGroup.NotFound",
        ),
        (
            &[
                "authorize-security-group-ingress",
                "--group-id",
                "sg-web",
                "--ip-permissions",
                "IpProtocol=tcp,FromPort=1,ToPort=1,PrefixListIds=[{PrefixListId=pl-nope}]",
            ],
            "InvalidPrefixListID.NotFound",
        ),
        (
            &[
                "authorize-security-group-ingress",
                "--group-id",
                "sg-full",
                "--protocol",
                "tcp",
                "--port",
                "1",
                "--cidr",
                "10.0.0.0/8",
            ],
            "RulesPerSecurityGroupLimitExceeded",
        ),
        (
            &[
                "revoke-security-group-ingress",
                "--group-id",
                "sg-web",
                "--protocol",
                "tcp",
                "--port",
                "23",
                "--cidr",
                "10.0.0.0/8",
            ],
            "InvalidPermission.NotFound",
        ),
        (
            &[
                "revoke-security-group-egress",
                "--group-id",
                "sg-web",
                "--security-group-rule-ids",
                "sgr-00000000000000000",
            ],
            "InvalidSecurityGroupRuleId.NotFound",
        ),
        (
            &["describe-security-group-rules", "--security-group-rule-ids", "sgr-00000000000000000"],
            "InvalidSecurityGroupRuleId.NotFound",
        ),
        (
            &[
                "modify-security-group-rules",
                "--group-id",
                "sg-web",
                "--security-group-rules",
                "SecurityGroupRuleId=sgr-00000000000000000,SecurityGroupRule={IpProtocol=tcp,FromPort=1,ToPort=1,CidrIpv4=10.0.0.0/8}",
            ],
            "InvalidSecurityGroupRuleId.NotFound",
        ),
        (
            &[
                "modify-managed-prefix-list",
                "--prefix-list-id",
                "pl-office",
                "--current-version",
                "7",
                "--add-entries",
                "Cidr=203.0.113.0/24",
            ],
            "PrefixListVersionMismatch",
        ),
        (
            &[
                "modify-managed-prefix-list",
                "--prefix-list-id",
                "pl-office",
                "--current-version",
                "1",
                "--add-entries",
                "Cidr=203.0.113.0/24",
                "Cidr=192.0.2.0/24",
            ],
            "PrefixListMaxEntriesExceeded",
        ),
        (
            &[
                "modify-managed-prefix-list",
                "--prefix-list-id",
                "pl-office",
                "--current-version",
                "1",
                "--remove-entries",
                "Cidr=203.0.113.0/24",
            ],
            "InvalidPrefixListModification",
        ),
        (&["get-managed-prefix-list-entries", "--prefix-list-id", "pl-nope"], "InvalidPrefixListID.NotFound"),
        (
            &["modify-network-interface-attribute", "--network-interface-id", "eni-nope", "--groups", "sg-web"],
            "InvalidNetworkInterfaceID.NotFound",
        ),
        (
            &["modify-network-interface-attribute", "--network-interface-id", "eni-remote", "--groups", "sg-nope"],
            "InvalidGroup.NotFound",
        ),
        (&["create-security-group", "--group-name", "x", "--description", "x", "--dry-run"], "DryRunOperation"),
    ];
    for (args, code) in cases {
        cli.ec2_error(args, code);
    }

    // Signatures: a wrong secret, an unknown key, none at all, a clock 20 minutes off.
    let stderr = cli.with_keys(KEY_ID, "not-the-secret").ec2_error(&["describe-security-groups"], "AuthFailure");
    assert!(stderr.contains("signature"), "{stderr}");
    cli.with_keys("AKIDUNKNOWN000000000", SECRET).ec2_error(&["describe-security-groups"], "AuthFailure");
    cli.ec2_error(&["describe-security-groups", "--no-sign-request"], "AuthFailure");
    for minutes in [-20, 20] {
        let out = cli.ec2_with_clock(minutes, &["describe-security-groups"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && stderr.contains("An error occurred (AuthFailure)")
                && stderr.contains("15 minutes"),
            "{stderr}"
        );
    }
    // Another key pair of the file is as good.
    cli.with_keys("AKIDSGAGENTOPS00002", "another/secret").ec2_ok(&[
        "describe-security-groups",
        "--group-names",
        "web",
    ]);

    // After all that, the document is as it was: same file, same generation.
    assert!(fs::read(&file).unwrap() == before, "the policy file changed");
    assert_eq!(agent.status()["generation"], generation);
}

#[test]
fn boto3_session_answers_in_ec2s_shapes_and_survives_malformed_requests() {
    let Some(tools) = tools() else { return };
    let topo = Topology::new();
    let credentials = agent_credentials();
    let agent = start_with_api(&topo.node, ERRORS_POLICY, &credentials);
    let cli = AwsClient::new(&tools, &topo.node.name, API, KEY_ID, SECRET);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ec2_api/boto3_session.py");
    let out = cli.boto3(&script, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "boto3 session failed:\n{stdout}\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log_text()
    );
    assert!(stdout.contains("boto3 session: ok"), "{stdout}");
}

#[test]
fn run_refuses_to_serve_the_api_with_unsafe_credentials_or_an_aws_document() {
    if !privileged() {
        return;
    }
    let node = Netns::new("api-refuse");
    let bpffs = Bpffs::new();
    let dir = Scratch(PathBuf::from(format!("/run/{}", unique("api-refuse"))));
    fs::create_dir_all(&*dir).unwrap();
    let native = dir.join("policy.json");
    fs::write(&native, r#"{ "security_groups": [] }"#).unwrap();
    let aws = dir.join("aws.json");
    fs::write(&aws, r#"{ "SecurityGroups": [] }"#).unwrap();
    let good = dir.join("credentials");
    write_credentials(&good, &[("a", "AKID1", "s")]);
    let open = dir.join("open-credentials");
    write_credentials(&open, &[("a", "AKID1", "s")]);
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
    let malformed = dir.join("malformed-credentials");
    fs::write(&malformed, "[a]\naws_access_key_id = AKID1\n").unwrap();
    fs::set_permissions(&malformed, fs::Permissions::from_mode(0o600)).unwrap();
    let pins = bpffs.pin_path();
    let run = |policy: &std::path::Path, creds: &std::path::Path| {
        let out = node.exec(&[
            agent_binary_path(),
            "run",
            "--policy",
            policy.to_str().unwrap(),
            "--pin-path",
            pins.to_str().unwrap(),
            "--socket",
            dir.join("control.sock").to_str().unwrap(),
            "--api",
            "--api-credentials",
            creds.to_str().unwrap(),
        ]);
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stderr) = run(&native, &open);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("mode 0644") && stderr.contains("chmod 600"), "{stderr}");
    let (code, stderr) = run(&native, &malformed);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("line 1: [a] has no aws_secret_access_key"), "{stderr}");
    let (code, stderr) = run(&aws, &good);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("must be one") && stderr.contains("import-aws"), "{stderr}");
    // Nothing was touched: no pinned state.
    assert!(!pins.exists(), "pinned state was created");
}

#[test]
fn an_api_change_after_an_apply_builds_on_the_live_document() {
    let Some(tools) = tools() else { return };
    let topo = Topology::new();
    let credentials = agent_credentials();
    let agent = start_with_api(&topo.node, ERRORS_POLICY, &credentials);
    let cli = AwsClient::new(&tools, &topo.node.name, API, KEY_ID, SECRET);
    // `apply` replaces the live document (not the file); the API then changes what is live and
    // writes that, with its change, to the file.
    agent.apply_ok(
        r#"{ "security_groups": [ { "id": "sg-applied", "name": "applied", "description": "from apply" } ] }"#,
    );
    cli.ec2_error(&["describe-security-groups", "--group-ids", "sg-web"], "InvalidGroup.NotFound");
    cli.ec2_ok(&[
        "authorize-security-group-ingress",
        "--group-id",
        "sg-applied",
        "--protocol",
        "tcp",
        "--port",
        "80",
        "--cidr",
        "10.0.0.0/8",
    ]);
    let written =
        sg_agent::policy::native::parse_document(&fs::read_to_string(agent.dir.join("policy.json")).unwrap()).unwrap();
    let applied = written.group("sg-applied").expect("the applied group is in the file");
    assert_eq!(applied.ingress.len(), 1);
    assert!(written.group("sg-web").is_none(), "the file holds the live document, not the one apply replaced");
}
