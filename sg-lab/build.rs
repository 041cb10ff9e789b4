//! Builds the benchmark object: the kernel programs (`sg-ebpf`) with its `bench` feature, which
//! adds the parse-only baseline `sg_bench_parse` (see sg-build). The agent's own object
//! (sg-agent/build.rs) is built without it.

fn main() -> anyhow::Result<()> {
    sg_build::build_ebpf_object("sg-lab WITHOUT its benchmark object", &["bench"])
}
