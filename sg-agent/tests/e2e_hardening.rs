//! Hardening with real packets and real users: hostile frames sent raw over veth, and the
//! control socket refusing anyone but root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use sg_common::packet::{IPPROTO_TCP, TCP_FIN, TCP_SYN};
use sg_lab::frames::{self, Ext, Ipv4, Ipv6, tcp, v4, v6};
use support::*;

const POLICY: &str = r#"{ "instances": [
    { "id": "web", "interface": "veth-web", "addresses": ["10.0.1.10", "fd00:1::10"] } ] }"#;

#[test]
fn hostile_frames_sent_over_veth_are_dropped_for_the_right_reason() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-web", 1, 10);
    let agent = start_agent(&topo.node, POLICY, &[]);
    let web = topo.host("veth-web");
    let (own4, own6, gw4, gw6) = (v4(10, 0, 1, 10), v6(1, 0x10), v4(10, 0, 1, 1), v6(1, 1));
    let truncated = frames::tcp4(own4, gw4, 1, 80, TCP_SYN)[..14 + 20 + 6].to_vec();
    let mut bad_ihl = frames::tcp4(own4, gw4, 1, 80, TCP_SYN);
    bad_ihl[14] = 0x43;
    let mut lying_length = frames::tcp4(own4, gw4, 1, 80, TCP_SYN);
    lying_length[16..18].copy_from_slice(&1400u16.to_be_bytes());
    let mut chain = Ipv6::new(own6, gw6, IPPROTO_TCP, tcp(1, 80, TCP_SYN));
    chain.ext = vec![Ext::DestOpts; 12];
    let mut overlap = Ipv4::new(own4, gw4, IPPROTO_TCP, vec![0; 16]);
    overlap.frag_offset = 1;
    let malformed = vec![
        truncated,
        bad_ihl,
        lying_length,
        chain.frame(),
        overlap.frame(),
        frames::tcp4(own4, gw4, 1, 80, TCP_SYN | TCP_FIN),
        frames::tcp4(own4, gw4, 1, 80, 0),
        frames::tcp6(own6, gw6, 1, 80, 0x29),
    ];
    let non_ip = vec![
        frames::eth(
            0x8100,
            &[&[0u8, 5, 0x08, 0][..], &Ipv4::new(own4, gw4, IPPROTO_TCP, tcp(1, 80, TCP_SYN)).packet()].concat(),
        ),
        frames::eth(0x88cc, &[0; 46]),
    ];
    let before = agent.status();
    assert_eq!(send_frames(&web.ns, malformed.clone()), malformed.len());
    assert_eq!(send_frames(&web.ns, non_ip.clone()), non_ip.len());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let after = agent.status();
    let delta = |r: &str| {
        after["counters"][r]["packets"].as_u64().unwrap() - before["counters"][r]["packets"].as_u64().unwrap()
    };
    assert_eq!(delta("dropped_malformed"), malformed.len() as u64, "{after}");
    assert_eq!(delta("dropped_non_ip"), non_ip.len() as u64);
    assert_eq!(delta("allowed_by_rule") + delta("allowed_tracked") + delta("allowed_untracked"), 0, "none passed");
}

#[test]
fn only_root_can_use_the_control_socket() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-web", 1, 10);
    let agent = start_agent(&topo.node, POLICY, &[]);
    let meta = std::fs::metadata(&agent.socket).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket is root-only");
    let dir = std::fs::metadata(agent.socket.parent().unwrap()).unwrap();
    assert_eq!(dir.permissions().mode() & 0o077, 0, "socket directory is closed to others");
    // An unprivileged user cannot apply a policy (or even connect).
    let doc = agent.dir.join("other.json");
    std::fs::write(&doc, r#"{ "instances": [] }"#).unwrap();
    // The user must be able to reach the file to get as far as the socket.
    let public = std::env::temp_dir().join(format!("sg-public-{}.json", std::process::id()));
    std::fs::copy(&doc, &public).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = sh(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        agent_binary_path(),
        "apply",
        public.to_str().unwrap(),
        "--socket",
        agent.socket.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&public);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ermission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(agent.status()["generation"], 1, "nothing was applied");
    // Malformed and oversized requests get an error answer, and the agent keeps serving.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let raw = |bytes: Vec<u8>| -> String {
        runtime.block_on(async {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut s = tokio::net::UnixStream::connect(&agent.socket).await.unwrap();
            let _ = s.write_all(&bytes).await;
            let _ = s.shutdown().await;
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer).await;
            answer
        })
    };
    assert!(raw(b"this is not json\n".to_vec()).contains("malformed request"));
    assert!(raw(b"{\"request\":\"launch_missiles\"}\n".to_vec()).contains("malformed request"));
    let huge = vec![b'x'; sg_agent::control::MAX_HEADER_BYTES + 10];
    assert!(raw(huge).contains("larger than"));
    assert_eq!(agent.status()["generation"], 1);
}

#[test]
fn status_reports_the_verifiers_instruction_count_per_program() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-web", 1, 10);
    let agent = start_agent(&topo.node, POLICY, &[]);
    let status = agent.status();
    let programs = status["programs"].as_array().unwrap();
    let names: Vec<&str> = programs.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["sg_xdp", "sg_tc"]);
    for p in programs {
        let insns = p["verified_instructions"].as_u64().expect("the kernel reports it");
        eprintln!("{}: {insns} instructions verified", p["name"]);
        assert!(insns > 100 && insns < 1_000_000, "{p}");
    }
}
