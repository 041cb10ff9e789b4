//! The control socket: how `apply`, `status`, `explain`, `conntrack` and `teardown` reach a
//! running agent. A Unix stream socket that only root can open (directory 0700, socket 0600);
//! one JSON request line in, one JSON response line out. Requests are bounded in size.

use std::{
    io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
};

use crate::policy::limits;

/// Default `--socket`.
pub const DEFAULT_SOCKET: &str = "/run/sg-agent/control.sock";

/// A request's JSON may be a whole policy document plus framing.
pub const MAX_REQUEST_BYTES: usize = limits::DOCUMENT_BYTES * 2 + 4096;

/// What a client asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Every rule of the live policy with its hits.
    Rules,
    /// Stream flow-log records (JSON lines) until the client disconnects.
    Flows,
    /// A new document: native JSON, or AWS JSON with a native `instances` document.
    Apply {
        document: String,
        instances: Option<String>,
    },
    /// Which rule of the live policy allows a packet.
    Explain {
        query: crate::explain::Query,
    },
    /// Remove all enforcement and stop the agent.
    Teardown,
}

/// The answer. `exit_code` follows SPEC §5 (0 ok, 1 runtime failure, 2 invalid input).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub exit_code: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Response {
        Response { exit_code: 0, error: None, data }
    }
    pub fn error(exit_code: u8, error: impl Into<String>) -> Response {
        Response { exit_code, error: Some(error.into()), data: serde_json::Value::Null }
    }
}

/// Creates the socket with root-only permissions, replacing a stale one.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Created under a umask that leaves nobody else any access, then pinned to 0600.
    // SAFETY: umask has no preconditions; restored right after.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = listener?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Reads one request line (bounded); `Err` carries the response to send for a bad request.
pub async fn read_request(stream: &mut BufReader<UnixStream>) -> Result<Request, Response> {
    let mut line = Vec::new();
    let mut limited = stream.take(MAX_REQUEST_BYTES as u64 + 1);
    match limited.read_until(b'\n', &mut line).await {
        Ok(_) if line.len() > MAX_REQUEST_BYTES => {
            return Err(Response::error(2, format!("request larger than {MAX_REQUEST_BYTES} bytes")));
        }
        Ok(0) => return Err(Response::error(2, "empty request")),
        Ok(_) => {}
        Err(e) => return Err(Response::error(1, format!("reading request: {e}"))),
    }
    serde_json::from_slice(&line).map_err(|e| Response::error(2, format!("malformed request: {e}")))
}

pub async fn write_response(stream: &mut BufReader<UnixStream>, response: &Response) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(response).map_err(io::Error::other)?;
    bytes.push(b'\n');
    stream.get_mut().write_all(&bytes).await?;
    stream.get_mut().shutdown().await
}

/// Client side: sends `request`, waits for the answer.
pub async fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let work = async {
        let stream = UnixStream::connect(socket).await.map_err(|e| ClientError::Connect(socket.to_path_buf(), e))?;
        let mut stream = BufReader::new(stream);
        let mut bytes = serde_json::to_vec(request).map_err(|e| ClientError::Io(io::Error::other(e)))?;
        bytes.push(b'\n');
        stream.get_mut().write_all(&bytes).await.map_err(ClientError::Io)?;
        let mut line = String::new();
        stream.read_line(&mut line).await.map_err(ClientError::Io)?;
        serde_json::from_str(&line).map_err(|e| ClientError::Io(io::Error::other(e)))
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| ClientError::Timeout)?
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens (no agent), or no permission (not root).
    #[error("cannot reach the agent at {0}: {1}")]
    Connect(PathBuf, io::Error),
    #[error("talking to the agent: {0}")]
    Io(io::Error),
    #[error("the agent did not answer in time")]
    Timeout,
}
