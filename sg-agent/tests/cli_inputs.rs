//! The offline commands on real files (no privileges): every invalid input exits 2 with one
//! line per problem naming its file, byte-order marks are skipped and UTF-16 is named on every
//! command that reads a document, warnings are printed without changing the exit code, and
//! `explain` refuses options that do not fit the protocol.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("sg-cli-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sg-agent")).args(args).env("RUST_LOG", "off").output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn utf16(s: &str) -> Vec<u8> {
    let mut out = vec![0xff, 0xfe];
    out.extend(s.encode_utf16().flat_map(u16::to_le_bytes));
    out
}

fn with_bom(s: &str) -> Vec<u8> {
    let mut out = b"\xef\xbb\xbf".to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

const DOC: &str = r#"{ "security_groups": [ { "id": "sg-a", "ingress": [
    { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.0.0/8"] } ] } ],
  "instances": [ { "id": "a", "interface": "veth-a", "addresses": ["10.0.0.1"], "security_groups": ["sg-a"] } ] }"#;

#[test]
fn a_byte_order_mark_is_skipped_and_utf16_is_named_by_every_command() {
    let dir = Dir::new("encodings");
    let bom = dir.file("bom.json", &with_bom(DOC));
    let wide = dir.file("wide.json", &utf16(DOC));
    let out = sg(&["check", &bom]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let explain = ["explain", "--instance", "a", "--direction", "ingress", "--protocol", "tcp", "--port", "22"];
    let out = sg(&[&explain[..], &["--peer", "10.1.1.1", "--policy", &bom]].concat());
    assert!(out.status.success() && text(&out.stdout).starts_with("ALLOWED"), "{}", text(&out.stderr));
    let aws = examples().join("aws/describe-security-groups.json");
    let aws = aws.to_str().unwrap();
    let instances = std::fs::read_to_string(examples().join("aws/describe-instances.json")).unwrap();
    let wide_instances = dir.file("instances16.json", &utf16(&instances));
    for args in [
        vec!["check", &wide],
        vec!["apply", &wide, "--socket", "/nonexistent/socket"],
        vec!["run", "--policy", &wide, "--socket", "/nonexistent/socket", "--pin-path", "/nonexistent"],
        [&explain[..], &["--peer", "10.1.1.1", "--policy", &wide]].concat(),
        vec!["import-aws", aws, "--instances", &wide_instances],
        vec!["check", aws, "--instances", &wide_instances],
    ] {
        let out = sg(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("UTF-16") && err.lines().count() == 1, "{args:?}: {err}");
        assert!(err.contains("wide.json") || err.contains("instances16.json"), "{args:?}: {err}");
    }
}

#[test]
fn problems_in_an_instances_file_are_reported_in_that_file() {
    let dir = Dir::new("attribution");
    let aws = examples().join("aws/describe-security-groups.json");
    let instances = dir.file(
        "instances.json",
        br#"{ "prefix_lists": [ { "id": "pl-0abc1234def567890", "cidrs": ["198.51.100.0/24"] } ],
               "instances": [ { "id": "a", "interface": "veth-a", "addresses": ["010.0.0.1", "224.0.0.1"] } ] }"#,
    );
    let out = sg(&["check", aws.to_str().unwrap(), "--instances", &instances]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "one line per problem: {err}");
    for line in &lines {
        assert!(line.starts_with(&format!("{instances}: instances[0].addresses[")), "{line}");
    }
    assert!(lines[0].contains("leading zero") && lines[1].contains("multicast"), "{err}");
}

#[test]
fn warnings_are_printed_with_file_and_path_and_change_no_exit_code() {
    let groups = examples().join("aws/describe-security-groups.json");
    let groups = groups.to_str().unwrap();
    let instances = examples().join("aws/describe-instances.json");
    let local = examples().join("aws/local-interfaces.json");
    let out =
        sg(&["check", groups, "--instances", instances.to_str().unwrap(), "--instances", local.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "warning: {groups}: SecurityGroups[1].IpPermissions[3].Ipv6Ranges[0].CidrIpv6: 2001:db8:1234::/56 is of \
             the other IP family than protocol icmp"
        )),
        "{err}"
    );
    // import-aws: the same warning, and a native document that checks clean.
    let out =
        sg(&["import-aws", groups, "--instances", instances.to_str().unwrap(), "--instances", local.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("warning:"));
    let dir = Dir::new("import");
    let native = dir.file("native.json", &out.stdout);
    let out = sg(&["check", &native]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn explain_refuses_options_that_do_not_fit_the_protocol() {
    let dir = Dir::new("explain");
    let doc = dir.file("doc.json", DOC.as_bytes());
    let base = ["explain", "--policy", &doc, "--instance", "a", "--direction", "ingress"];
    for (extra, fragment) in [
        (&["--protocol", "icmp", "--icmp-type", "8", "--port", "22", "--peer", "10.1.1.1"][..], "--port does not fit"),
        (
            &["--protocol", "tcp", "--port", "80", "--icmp-type", "3", "--peer", "10.1.1.1"][..],
            "--icmp-type does not fit",
        ),
        (&["--protocol", "-1", "--peer", "10.1.1.1"][..], "one concrete packet"),
        (&["--protocol", "all", "--peer", "10.1.1.1"][..], "one concrete packet"),
        (&["--protocol", "tcp", "--port", "22", "--peer", "010.1.1.1"][..], "leading zero"),
    ] {
        let out = sg(&[&base[..], extra].concat());
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(fragment), "{extra:?}: {}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "no answer is printed: {}", text(&out.stdout));
    }
}

#[test]
fn export_aws_writes_what_import_aws_and_check_read_back() {
    let dir = Dir::new("export");
    let native = examples().join("three-tier.json");
    let instances = dir.0.join("instances.json");
    let out = sg(&["export-aws", native.to_str().unwrap(), "--instances-out", instances.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let groups = dir.file("groups.json", &out.stdout);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["SecurityGroups"].as_array().is_some_and(|g| !g.is_empty()), "{json}");
    let out = sg(&["check", &groups, "--instances", instances.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = sg(&["import-aws", &groups, "--instances", instances.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Without somewhere to put the instances, it refuses (exit 2) rather than lose them.
    let out = sg(&["export-aws", native.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--instances-out"), "{}", text(&out.stderr));
}
