//! Builds the kernel programs (`sg-ebpf`) into `OUT_DIR/sg-ebpf` for `include_bytes_aligned!`
//! (see sg-build: without the eBPF toolchain, an empty object and a warning; the offline
//! commands and unit tests still build and run with a plain `cargo test`).

fn main() -> anyhow::Result<()> {
    sg_build::build_ebpf_object("sg-agent WITHOUT its kernel programs", &[])
}
