//! Kernel programs of sg-agent. The programs are the `sg-ebpf` binary (see `main.rs`); this
//! library target only exists so the agent can name the crate as a build dependency.
#![no_std]
