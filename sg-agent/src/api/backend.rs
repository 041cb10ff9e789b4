//! Where the document lives: the server reads it, runs an action on it, and commits the
//! result through a [`Backend`]. One node: the running agent ([`super::local`]), where a commit
//! is live and written back to the policy file when it returns. A fleet store can be another
//! backend with the same contract (commit only if the document is still the one read).

use std::future::Future;

use crate::policy::{Document, Invalid};

/// The document as read, and what identifies that reading for [`Backend::commit`].
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The backend's revision of it (the agent's generation; a store's revision).
    pub revision: u64,
    pub document: Document,
}

/// Why a read or commit failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The document changed since it was read (another writer): read it again and retry.
    #[error("the document changed since it was read")]
    Conflict,
    /// The backend refused the new document beyond what the API checks (it does not fit the
    /// kernel's maps, say); nothing changed.
    #[error("{0}")]
    Refused(Invalid),
    /// The backend cannot serve now (the agent is stopping); nothing changed.
    #[error("{0}")]
    Unavailable(String),
    /// The backend failed; the message says what is in force.
    #[error("{0}")]
    Failed(String),
}

/// The document's home.
pub trait Backend: Send + Sync + 'static {
    /// The current document.
    fn read(&self) -> impl Future<Output = Result<Snapshot, BackendError>> + Send;

    /// Makes `document` (validated native JSON, written by the server) the current document if
    /// the document is still `base`; returns once it is durable, with the new revision.
    fn commit(&self, base: Snapshot, document: String) -> impl Future<Output = Result<u64, BackendError>> + Send;
}
