//! Shared between sg-agent's kernel programs (`sg-ebpf`) and the agent (`sg-agent`): every map
//! key and value, the packet parser, the conntrack state machine and the verdict. Logic lives
//! here once so that the kernel and the host tests run the same code.
#![no_std]

#[cfg(any(test, feature = "user"))]
extern crate std;

pub mod conntrack;
pub mod flow_log;
pub mod maps;
pub mod orientation;
pub mod packet;
pub mod ports;
pub mod verdict;

/// Version of the pinned-state layout (map set, key and value layouts). The agent pins under
/// `<pin-path>/v<LAYOUT_VERSION>`, so an agent never adopts maps it would misread.
///
/// 2: per-instance conntrack timeouts in `IfaceConfig`, the node service table (`SG_SERVICES`),
/// per-interface verdict counters (`SG_IFACE_COUNTERS`), the `passed_node_service` reason.
pub const LAYOUT_VERSION: u32 = 3;
