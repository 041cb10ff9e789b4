//! Warnings through the running agent (SPEC §2): `run` logs them, `apply` prints them with the
//! file and JSON path and `apply --json` returns them, and none changes an exit code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use support::*;

/// web with `groups` groups (AWS's default quota is 5 per interface).
fn policy(groups: usize) -> String {
    let ids: Vec<String> = (0..groups).map(|i| format!("\"sg-{i}\"")).collect();
    let defs: Vec<String> = (0..groups).map(|i| format!("{{ \"id\": \"sg-{i}\" }}")).collect();
    format!(
        r#"{{ "security_groups": [{}],
             "instances": [ {{ "id": "web", "interface": "veth-web", "addresses": ["10.0.1.10", "fd00:1::10"],
                              "security_groups": [{}] }} ] }}"#,
        defs.join(","),
        ids.join(",")
    )
}

#[test]
fn warnings_are_logged_printed_and_returned_without_changing_exit_codes() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-web", 1, 10);
    let agent = start_agent(&topo.node, &policy(6), &[]);
    assert!(
        agent.log_text().contains("instances[0].security_groups: 6 groups, more than AWS's default quota of 5"),
        "{}",
        agent.log_text()
    );
    let path = agent.dir.join("seven.json");
    std::fs::write(&path, policy(7)).unwrap();
    let out = agent.cli(&["apply", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("warning: {}: instances[0].security_groups: 7 groups", path.display())), "{err}");
    let out = agent.cli(&["apply", path.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["warnings"][0]["path"], "instances[0].security_groups", "{summary}");
    assert_eq!(summary["warnings"][0]["source"], "document", "{summary}");
    // A document without anything to warn about returns none.
    let clean = agent.dir.join("clean.json");
    std::fs::write(&clean, policy(2)).unwrap();
    let out = agent.cli(&["apply", clean.to_str().unwrap(), "--json"]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["warnings"], serde_json::json!([]), "{summary}");
}
