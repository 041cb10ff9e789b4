//! The one-node backend: the running agent holds the document. Calls go to the agent thread
//! (which does one job at a time, so a commit never interleaves with an apply or a reload);
//! a commit is written to a temporary file beside the policy file and synced, applied, then
//! renamed over the policy file and the directory synced: when it returns, the new generation
//! is live and a restart reads it back.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use tokio::sync::{mpsc, oneshot};

use super::backend::{Backend, BackendError, Snapshot};
use crate::{
    agent::{Agent, ApplyError},
    policy::native,
};

/// A call for the agent thread.
#[derive(Debug)]
pub enum LocalCall {
    /// The live document.
    Read { reply: oneshot::Sender<Result<Snapshot, BackendError>> },
    /// Apply and write back `document`, if the live document is still `base`.
    Commit { base: Snapshot, document: String, reply: oneshot::Sender<Result<u64, BackendError>> },
}

/// The backend the API server holds: it hands calls to the agent thread.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    calls: mpsc::Sender<LocalCall>,
}

impl LocalBackend {
    /// A backend, and the receiving end the daemon forwards to its agent thread.
    pub fn new() -> (LocalBackend, mpsc::Receiver<LocalCall>) {
        let (calls, rx) = mpsc::channel(16);
        (LocalBackend { calls }, rx)
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, BackendError>>) -> LocalCall,
    ) -> Result<T, BackendError> {
        let (reply, answer) = oneshot::channel();
        if self.calls.send(make(reply)).await.is_err() {
            return Err(BackendError::Unavailable("the agent is stopping".to_owned()));
        }
        answer.await.unwrap_or_else(|_| Err(BackendError::Unavailable("the agent stopped before answering".to_owned())))
    }
}

impl Backend for LocalBackend {
    async fn read(&self) -> Result<Snapshot, BackendError> {
        self.call(|reply| LocalCall::Read { reply }).await
    }

    async fn commit(&self, base: Snapshot, document: String) -> Result<u64, BackendError> {
        self.call(|reply| LocalCall::Commit { base, document, reply }).await
    }
}

impl LocalCall {
    /// Runs the call on the agent thread; `policy` is the agent's `--policy` file.
    pub fn run(self, agent: &mut Agent, policy: &Path) {
        match self {
            LocalCall::Read { reply } => {
                let snapshot = match &agent.live {
                    Some(live) => Ok(Snapshot { revision: agent.generation, document: live.document.clone() }),
                    None => Err(BackendError::Unavailable("no policy is applied yet".to_owned())),
                };
                let _ = reply.send(snapshot);
            }
            LocalCall::Commit { base, document, reply } => {
                let _ = reply.send(commit(agent, policy, &base, &document));
            }
        }
    }
}

fn commit(agent: &mut Agent, policy: &Path, base: &Snapshot, document: &str) -> Result<u64, BackendError> {
    let live = agent.live.as_ref().ok_or_else(|| BackendError::Unavailable("no policy is applied yet".to_owned()))?;
    // A new generation with the same document (interfaces came or went) is no conflict.
    if agent.generation != base.revision && live.document != base.document {
        return Err(BackendError::Conflict);
    }
    let staged = Staged::write(policy, document.as_bytes()).map_err(|e| {
        BackendError::Failed(format!(
            "writing beside {}: {e}; nothing changed (generation {} stays in force)",
            policy.display(),
            agent.generation
        ))
    })?;
    let summary = agent.apply(document, &[] as &[&str]).map_err(|e| match e {
        ApplyError::Invalid(invalid) => BackendError::Refused(invalid),
        ApplyError::Runtime(e) => {
            BackendError::Failed(format!("{e}; nothing changed (generation {} stays in force)", agent.generation))
        }
    })?;
    if let Err(e) = staged.install() {
        // Live but not on disk: go back to what the file holds, so that the live policy and
        // the file agree (the caller is told the change failed; a restart must not bring it
        // back, nor may the agent keep enforcing it).
        let previous = document_text(&base.document);
        let back = agent.apply(&previous, &[] as &[&str]).map(|s| s.generation);
        return Err(BackendError::Failed(match back {
            Ok(generation) => format!(
                "replacing {}: {e}; the change was undone (generation {generation} is the previous document)",
                policy.display()
            ),
            Err(undo) => format!(
                "replacing {}: {e}; generation {} is live but not written, and undoing it failed: {undo}",
                policy.display(),
                summary.generation
            ),
        }));
    }
    Ok(summary.generation)
}

/// The native JSON of a document, as the API writes it back.
pub fn document_text(doc: &crate::policy::Document) -> String {
    native::write_document(doc) + "\n"
}

/// A new file content written and synced beside its target, not yet in place; removed on
/// drop unless installed.
struct Staged {
    temp: PathBuf,
    target: PathBuf,
    installed: bool,
}

impl Staged {
    fn write(target: &Path, bytes: &[u8]) -> io::Result<Staged> {
        // A symlinked policy file: replace the file it points to, not the link.
        let target = fs::canonicalize(target)?;
        let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(io::Error::other("the policy file has no directory"));
        };
        let temp = dir.join(format!(".{}.sg-agent-{}.tmp", name.to_string_lossy(), std::process::id()));
        let mode = fs::metadata(&target)?.permissions().mode() & 0o7777;
        // Left by an agent that died mid-write: it was never the policy.
        let _ = fs::remove_file(&temp);
        let staged = Staged { temp, target: target.clone(), installed: false };
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&staged.temp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        Ok(staged)
    }

    /// Renames the new content over the target and syncs the directory, so that the rename
    /// itself survives a crash.
    fn install(mut self) -> io::Result<()> {
        fs::rename(&self.temp, &self.target)?;
        self.installed = true;
        if let Some(dir) = self.target.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.installed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_content_replaces_the_file_only_when_installed() {
        let dir = std::env::temp_dir().join(format!("sg-staged-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let target = dir.join("policy.json");
        fs::write(&target, "old").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
        let staged = Staged::write(&target, b"new").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "old");
        drop(staged);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "the temporary file is gone");
        Staged::write(&target, b"new").unwrap().install().unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o640, "mode kept");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
