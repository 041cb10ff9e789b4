//! A lab of network namespaces for tests, the demo (`cargo xtask run`) and the benchmarks:
//! namespaces joined by veth pairs ([`topology`]), several nodes on one fabric for fleet mode
//! ([`fleet`]), a private bpffs ([`netns`]), the agent as a child process ([`agent`]), real
//! TCP/UDP/ICMP traffic between namespaces ([`traffic`]), and the real AWS CLI and boto3 as
//! clients of the agent's EC2 API ([`aws`]).
//!
//! Everything created here is removed by `Drop`, so a failing (panicking) test cleans up too.
//! All traffic stays inside the namespaces made here; nothing touches the root namespace's
//! addresses or routes. Failures panic with context: this is harness code, not the agent.
#![expect(
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "harness: failures panic with context"
)]

pub mod agent;
pub mod aws;
pub mod fleet;
pub mod netns;
pub mod topology;
pub mod traffic;

pub use self::{agent::*, aws::*, fleet::*, netns::*, topology::*, traffic::*};
