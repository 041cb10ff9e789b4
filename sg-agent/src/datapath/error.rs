//! What can go wrong on the kernel side, one variant per cause, each saying what to do about it.

use std::{io, path::PathBuf};

use aya::{EbpfError, maps::MapError, programs::ProgramError};

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The binary was built without the eBPF toolchain, so it carries no kernel object.
    #[error(
        "this sg-agent was built without its kernel programs (bpf-linker missing at build time); run scripts/setup-toolchain.sh and rebuild"
    )]
    NoObject,
    /// The pin path is not on a BPF filesystem.
    #[error(
        "{0} is not on a BPF filesystem; mount one with: mount -t bpf bpf /sys/fs/bpf (or pass --pin-path DIR on bpffs)"
    )]
    NotBpffs(PathBuf),
    /// Another agent holds the pin path (one agent per pin path).
    #[error(
        "another sg-agent{} is running on pin path {}; stop it first (or give this one another --pin-path)",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        .path.display()
    )]
    Locked { path: PathBuf, pid: Option<u32> },
    /// The kernel refused for lack of privilege (EPERM/EACCES without a verifier log).
    #[error(
        "{what}: permission denied; run as root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_PERFMON are needed)"
    )]
    Permission { what: String },
    /// The kernel object could not be opened or its maps created (ELF, BTF, a map the kernel
    /// refused, a pinned map of another shape).
    #[error("loading the kernel object: {}", chain(.0))]
    Object(#[source] EbpfError),
    /// The kernel object lacks a program the agent needs: the object and the agent were not
    /// built together.
    #[error("the kernel object has no {0} program of the expected type (sg-ebpf and sg-agent were built apart)")]
    MissingProgram(&'static str),
    /// The verifier rejected a program; `log` is the end of the verifier's log.
    #[error("the kernel's verifier rejected {program}:\n{log}")]
    Verifier { program: &'static str, log: String },
    /// Loading a program failed for another reason.
    #[error("loading {program}: {}", chain(.source))]
    ProgramLoad {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    /// The kernel object has no map of this name.
    #[error("the kernel object has no map {0} (sg-ebpf and sg-agent were built apart)")]
    MissingMap(String),
    /// A map operation failed.
    #[error("map {name}: {}", chain(.error))]
    Map {
        name: String,
        #[source]
        error: MapError,
    },
    /// A document names an interface this node does not have.
    #[error("interface {0:?} does not exist on this node")]
    NoInterface(String),
    /// Attaching a program to an interface failed; `hint` says what to try.
    #[error("{interface}: {step}: {}{hint}", chain(.source.as_ref()))]
    Attach {
        interface: String,
        /// `attaching XDP`, `attaching tcx`, `pinning the XDP link`, ...
        step: &'static str,
        /// Empty, or what to try, in parentheses.
        hint: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Waiting for in-flight packets before reusing a policy slot failed.
    #[error("waiting for in-flight packets (RCU barrier): {0}")]
    RcuBarrier(#[source] io::Error),
    /// A file-system operation on the pin path failed.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl DatapathError {
    /// Classifies a failed program load: a permission problem, the verifier, or something else.
    pub(super) fn program_load(program: &'static str, error: ProgramError) -> DatapathError {
        if let ProgramError::LoadError { io_error, verifier_log } = &error {
            let denied = matches!(io_error.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES));
            let log = verifier_log.to_string();
            if !log.trim().is_empty() {
                // The log is long; its last lines say what went wrong.
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines.get(lines.len().saturating_sub(20)..).unwrap_or_default().join("\n");
                return DatapathError::Verifier { program, log: tail };
            }
            if denied {
                return DatapathError::Permission { what: format!("loading {program}") };
            }
        }
        DatapathError::ProgramLoad { program, source: error }
    }

    /// Classifies a failed object load: a permission problem (map creation) or something else.
    pub(super) fn object(error: EbpfError) -> DatapathError {
        if let EbpfError::MapError(MapError::CreateError { name, io_error }) = &error
            && matches!(io_error.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
        {
            return DatapathError::Permission { what: format!("creating map {name}") };
        }
        DatapathError::Object(error)
    }
}

/// An error and its sources, `: `-separated (aya's errors keep the interesting part in a
/// source, e.g. the errno of a failed syscall).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}
