//! Any bytes as a frame through the parser and the verdict the kernel runs (over a compiled
//! policy on the host): never a panic, and a verdict consistent with its reason.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sg_agent::{compile::Compiled, emulator::Emulator};
use sg_common::{
    packet::{Frame, Packet, parse_frame},
    orientation::Hook,
    verdict::judge,
};

const POLICY: &str = r#"{
  "security_groups": [
    { "id": "sg-a", "ingress": [
        { "protocol": "tcp", "from_port": 80, "to_port": 443, "cidrs": ["0.0.0.0/0", "::/0"] },
        { "protocol": "udp", "from_port": 53, "to_port": 53, "cidrs": ["10.0.0.0/8", "fd00::/8"] },
        { "protocol": "icmp", "from_port": 8, "to_port": -1, "cidrs": ["10.0.0.0/8"] },
        { "protocol": "icmpv6", "from_port": -1, "to_port": -1, "cidrs": ["fd00::/8"] },
        { "protocol": 132, "groups": ["sg-a"] } ] }
  ],
  "instances": [
    { "id": "w", "interface": "if1", "addresses": ["10.0.0.1", "fd00::1"], "security_groups": ["sg-a"] },
    { "id": "h", "interface": "if2", "role": "host", "addresses": ["10.0.0.2", "fd00::2"], "security_groups": ["sg-a"] }
  ]
}"#;

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        let doc = sg_agent::policy::load(POLICY, None).expect("fuzz policy");
        sg_agent::compile::compile(&doc).expect("fuzz policy compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut pkt = Packet::default();
    let frame = parse_frame(&data, &mut pkt);
    if frame != Frame::Ip {
        return;
    }
    let emulator = Emulator::new(compiled(), |i, _| i as u32 + 1);
    for ifindex in [1, 2] {
        for hook in [Hook::Receive, Hook::Transmit] {
            let v = judge(&emulator, ifindex, hook, &pkt, 1_000_000_000);
            assert_eq!(v.pass, v.reason.passes(), "no audit instance here: pass follows the reason");
            // Twice: the second packet of the same flow takes the conntrack path.
            let _ = judge(&emulator, ifindex, hook, &pkt, 2_000_000_000);
        }
    }
});
