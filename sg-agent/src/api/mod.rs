//! The EC2-compatible security-group API (SPEC §9): the security-group part of EC2's Query API
//! (version 2016-11-15), so that the unmodified AWS CLI and SDKs manage groups here with
//! `--endpoint-url`.
//!
//! A request's way: [`server`] (HTTP, bounded) → [`sigv4`] (verified against [`credentials`])
//! → [`query`] (parameters) → [`actions`] (the document as EC2 sees it, [`ec2`]: read it, change
//! it) → the document validated as any document → [`backend`] (one node: [`local`], the running
//! agent, live and written back when the call returns) → EC2's XML ([`xml`]) or error
//! ([`error`]).

pub mod actions;
pub mod backend;
pub mod credentials;
pub mod ec2;
pub mod error;
pub mod filter;
pub mod ids;
pub mod local;
pub mod query;
pub mod server;
pub mod sigv4;
pub mod xml;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

pub use backend::{Backend, BackendError, Snapshot};
pub use credentials::{Credentials, CredentialsError};
pub use local::{LocalBackend, LocalCall};
pub use server::serve;
use tokio::net::TcpListener;

/// Where the API listens unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// Whether `addr` is reachable from other machines (the API speaks plain HTTP: requests are
/// signed, not encrypted).
pub fn exposed(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// `run --api`: where to listen and whose keys to accept.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub listen: SocketAddr,
    pub credentials: PathBuf,
}

/// Why `run --api` cannot start; checked before the kernel is touched.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The policy file is AWS input: the API writes changes back as a native document.
    #[error(
        "--api writes its changes back to the --policy file as a native document, so that file must be one; \
         {} is AWS describe-security-groups JSON (convert it once: sg-agent import-aws FILE --instances \
         INSTANCES > policy.json)", .0.display()
    )]
    NotNative(PathBuf),
    /// `--instances` goes with AWS input, which the API cannot write back.
    #[error("--api needs the whole policy in one native --policy document; --instances is for AWS input")]
    WithInstances,
    /// The credentials file cannot be used.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The listen address cannot be used.
    #[error("EC2 API address {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl SetupError {
    /// SPEC §5: 2 for invalid input, 1 for a runtime failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            SetupError::NotNative(_) | SetupError::WithInstances => 2,
            SetupError::Credentials(CredentialsError::Read { .. }) | SetupError::Listen { .. } => 1,
            SetupError::Credentials(_) => 2,
        }
    }
}

/// Everything `run --api` needs checked and held before the agent starts.
#[derive(Debug)]
pub struct Prepared {
    pub listener: TcpListener,
    pub credentials: Credentials,
    pub addr: SocketAddr,
}

/// Checks the policy document and reads the credentials (nothing is touched yet).
pub fn check(
    options: &ApiOptions,
    policy: &Path,
    document: &str,
    with_instances: bool,
) -> Result<Credentials, SetupError> {
    if with_instances {
        return Err(SetupError::WithInstances);
    }
    if crate::policy::native::parse_json(document).is_ok_and(|json| crate::policy::aws::is_aws(&json)) {
        return Err(SetupError::NotNative(policy.to_path_buf()));
    }
    Ok(Credentials::load(&options.credentials)?)
}

/// Binds the address (once this agent holds its pin path, so that a second agent is refused
/// for that, not for the port).
pub async fn bind(options: &ApiOptions, credentials: Credentials) -> Result<Prepared, SetupError> {
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|source| SetupError::Listen { addr: options.listen, source })?;
    let addr = listener.local_addr().unwrap_or(options.listen);
    Ok(Prepared { listener, credentials, addr })
}

/// Serves the API on the one-node backend; `calls` go to the agent thread.
pub fn start(prepared: Prepared, backend: LocalBackend) {
    if exposed(&prepared.addr) {
        log::warn!(
            "the EC2 API listens on {}, beyond loopback, over plain HTTP: requests are signed, not encrypted",
            prepared.addr
        );
    }
    log::info!("EC2 API on http://{} ({} key pairs)", prepared.addr, prepared.credentials.len());
    tokio::spawn(serve(prepared.listener, backend, prepared.credentials));
}
