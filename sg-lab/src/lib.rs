//! sg-agent's test lab and benchmarks, kept out of the agent so that the agent's normal
//! dependency tree and the kernel object it loads hold only what enforcement needs (as aya keeps
//! its namespace helpers behind a test-only feature and bpfman its harness outside the daemon).
//!
//! - [`lab`]: network namespaces joined by veth pairs, a private bpffs, the agent as a child
//!   process, traffic servers and clients: sg-agent's end-to-end tests, the demo
//!   (`cargo xtask run`) and the end-to-end benchmarks.
//! - [`etcd`]: a real etcd (single members and clusters, TLS material) for fleet mode.
//! - [`frames`]: crafted Ethernet frames for the parser tests, `BPF_PROG_TEST_RUN` and the
//!   benchmarks.
//! - [`test_run`]: the agent's programs loaded in this process with a policy, run on crafted
//!   frames (`BPF_PROG_TEST_RUN`).
//! - [`bench`]: the measurements behind `cargo xtask bench` (the `sg-bench` binary), on this
//!   crate's own build of the kernel programs, which adds a parse-only baseline program.

pub mod bench;
pub mod etcd;
pub mod frames;
pub mod lab;
pub mod test_run;
