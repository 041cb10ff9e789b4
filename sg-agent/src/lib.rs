//! sg-agent: enforces AWS-style security groups in the kernel with eBPF.
//!
//! The path of a policy: [`policy`] (read and validate the document) → [`compile`] (turn it
//! into map entries) → [`datapath`] (load, attach, swap generations atomically) → the kernel
//! programs in `sg-ebpf`, which judge every packet with `sg_common::verdict::judge`.
//!
//! The running agent: [`daemon`] (its loop: control socket, signals) drives [`agent`] (the live
//! generation and applying documents); [`control`] is the socket protocol, [`cli`] the command
//! line. Reports: [`status`], [`flows`] (flow logs), [`metrics`], [`explain`] (the verdict run on
//! the host by [`emulator`]), [`changes`] (what an apply changed), [`conntrack`] (tracked flows
//! and their garbage collection). [`interfaces`] follows interfaces as they come and go.
//! [`clock`] holds the clocks they share; [`notify`] tells systemd when the agent is ready; [`api`]
//! serves EC2's security-group API. The test lab, frame builders and benchmarks live
//! outside the agent, in the `sg-lab` crate.

pub mod agent;
pub mod api;
pub mod changes;
pub mod cli;
pub mod clock;
pub mod compile;
pub mod conntrack;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod emulator;
pub mod explain;
pub mod flows;
pub mod interfaces;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod status;
pub mod store;
