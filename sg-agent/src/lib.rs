//! sg-agent: enforces AWS-style security groups in the kernel with eBPF.
//!
//! The path of a policy: [`policy`] (read and validate the document) → [`compile`] (turn it
//! into map entries) → [`datapath`] (load, attach, swap generations atomically) → the kernel
//! programs in `sg-ebpf`, which judge every packet with `sg_common::verdict::judge`.
//! [`agent`] is the daemon, [`control`] its socket, [`cli`] the command line, [`emulator`] the
//! same verdict run on the host (for `explain` and tests). The test lab, frame builders and
//! benchmarks live outside the agent, in the `sg-lab` crate.

pub mod agent;
pub mod changes;
pub mod cli;
pub mod compile;
pub mod conntrack;
pub mod control;
pub mod datapath;
pub mod emulator;
pub mod explain;
pub mod flows;
pub mod metrics;
pub mod policy;
pub mod status;
