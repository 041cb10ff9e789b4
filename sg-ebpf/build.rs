use which::which;

/// Building this crate has an undeclared dependency on the `bpf-linker` binary (see
/// aya-template): rebuild whenever the linker on `$PATH` changes.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found; run scripts/setup-toolchain.sh"),
    }
}
