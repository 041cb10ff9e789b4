//! Builds the kernel programs (`sg-ebpf`) with aya-build, for the build scripts of the crates
//! that embed an object (sg-agent: the agent's; sg-lab: the benchmark's, with the `bench`
//! feature). The object is left in the caller's `OUT_DIR` as `sg-ebpf`, for
//! `include_bytes_aligned!`.
//!
//! Where the eBPF toolchain is absent (no `bpf-linker`, or the pinned nightly named in
//! `sg-ebpf/toolchain` is not installed) or `AYA_BUILD_SKIP=1` (fuzz builds), an empty object is
//! written instead, with a warning: the crate builds, and loading reports that there are no
//! kernel programs. `scripts/setup-toolchain.sh` installs the toolchain.

use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Builds sg-ebpf with `features` into `OUT_DIR/sg-ebpf`; `what` names the object in the
/// warning printed when it cannot be built ("sg-agent WITHOUT its kernel programs").
pub fn build_ebpf_object(what: &str, features: &[&str]) -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let object = out_dir.join("sg-ebpf");
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| anyhow!("no manifest dir"))?);
    let toolchain_file = manifest_dir.join("../sg-ebpf/toolchain");
    println!("cargo:rerun-if-changed={}", toolchain_file.display());
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let toolchain = fs::read_to_string(&toolchain_file).context("reading sg-ebpf/toolchain")?;
    let toolchain = toolchain.trim();

    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let linker = which::which("bpf-linker");
    let toolchain_ok = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if skip || linker.is_err() || !toolchain_ok {
        let why = if skip {
            "AYA_BUILD_SKIP is set".to_owned()
        } else if linker.is_err() {
            "bpf-linker not found".to_owned()
        } else {
            format!("Rust {toolchain} not installed")
        };
        println!("cargo:warning=building {what} ({why}); run scripts/setup-toolchain.sh");
        fs::write(&object, b"")?;
        // Cargo reruns a build script whose rerun-if-changed path does not exist: so once
        // setup installs bpf-linker, the next build builds the real object.
        let cargo_home =
            env::var("CARGO_HOME").unwrap_or_else(|_| format!("{}/.cargo", env::var("HOME").unwrap_or_default()));
        println!("cargo:rerun-if-changed={cargo_home}/bin/bpf-linker");
        return Ok(());
    }
    if let Ok(path) = linker {
        println!("cargo:rerun-if-changed={}", path.display());
    }

    let cargo_metadata::Metadata { packages, .. } =
        cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "sg-ebpf")
        .ok_or_else(|| anyhow!("sg-ebpf package not found"))?;
    let root_dir = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let package =
        aya_build::Package { name: ebpf.name.as_str(), root_dir: root_dir.as_str(), features, ..Default::default() };
    aya_build::build_ebpf([package], Toolchain::Custom(toolchain))
}
