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

use std::net::SocketAddr;

pub use backend::{Backend, BackendError, Snapshot};
pub use credentials::{Credentials, CredentialsError};
pub use local::{LocalBackend, LocalCall};
pub use server::serve;

/// Where the API listens unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// Whether `addr` is reachable from other machines (the API speaks plain HTTP: requests are
/// signed, not encrypted).
pub fn exposed(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// Why the policy file cannot be the API's document: the API writes native documents back, so
/// the file must be one.
pub fn needs_native(document: &str) -> Option<&'static str> {
    match crate::policy::native::parse_json(document) {
        Ok(json) if crate::policy::aws::is_aws(&json) => Some(
            "--api writes its changes back to the --policy file as a native document, so that file must be a \
             native document; this one is AWS describe-security-groups JSON (convert it once: sg-agent \
             import-aws FILE --instances INSTANCES > policy.json)",
        ),
        _ => None,
    }
}
