//! The control socket: how `apply`, `status`, `explain`, `flows` and `teardown` reach a running
//! agent. A Unix stream socket that only root can open (directory 0700, socket 0600).
//!
//! Wire format, one exchange per connection: a request line of JSON ([`Header`], at most
//! [`MAX_HEADER_BYTES`]); for `apply`, the document (and instances file) follow as raw bytes of
//! the lengths the header gave; then one JSON [`Response`] line comes back (for `flows`, a
//! stream of lines). Everything but an apply's documents is small, so a client that sends a
//! huge or never-ending line is cut off early, and every read has a deadline (see the daemon).

use std::{
    io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use crate::policy::limits;

/// Default `--socket`.
pub const DEFAULT_SOCKET: &str = "/run/sg-agent/control.sock";

/// The request line: every request but an apply's documents.
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// Instances documents in one apply (each up to the document limit).
pub const MAX_INSTANCES_DOCUMENTS: usize = 8;

/// What a client asks, as the daemon handles it.
#[derive(Debug, Clone)]
pub enum Request {
    Status,
    /// Every rule of the live policy with its hits.
    Rules,
    /// Stream flow-log records (JSON lines) until the client disconnects.
    Flows,
    /// A new document: native JSON, or AWS JSON with its instances documents.
    Apply {
        document: String,
        instances: Vec<String>,
    },
    /// Which rule of the live policy allows a packet.
    Explain {
        query: crate::explain::Query,
    },
    /// Where one interface stands (`wait-protected`).
    Interface {
        name: String,
    },
    /// Remove all enforcement and stop the agent.
    Teardown,
}

/// The request line as sent: an apply announces the lengths of the documents that follow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
enum Header {
    Status,
    Rules,
    Flows,
    Apply {
        document_bytes: usize,
        #[serde(default)]
        instances_bytes: Vec<usize>,
    },
    Explain {
        query: crate::explain::Query,
    },
    Interface {
        name: String,
    },
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
    /// For an invalid document: every problem with its JSON path (the client names the file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<crate::policy::Problem>,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Response {
        Response { exit_code: 0, error: None, data, problems: Vec::new() }
    }

    pub fn error(exit_code: u8, error: impl Into<String>) -> Response {
        Response { exit_code, error: Some(error.into()), data: serde_json::Value::Null, problems: Vec::new() }
    }

    /// An invalid document: exit code 2, its problems (as many as are ever shown, and a line
    /// counting the rest).
    pub fn invalid(invalid: &crate::policy::Invalid) -> Response {
        let shown = crate::policy::json::MAX_REPORTED_PROBLEMS;
        let mut problems: Vec<_> = invalid.problems.iter().take(shown).cloned().collect();
        if invalid.problems.len() > shown {
            let message = format!("... and {} more problems", invalid.problems.len() - shown);
            problems.push(crate::policy::Problem { path: String::new(), message, source: Default::default() });
        }
        Response { problems, ..Response::error(2, invalid.to_string()) }
    }

    /// A response carrying `value` as its data.
    pub fn of<T: Serialize>(value: &T) -> Response {
        match serde_json::to_value(value) {
            Ok(data) => Response::ok(data),
            Err(e) => Response::error(1, format!("encoding the answer: {e}")),
        }
    }
}

/// Creates the socket with root-only permissions. A socket file that nobody answers on (left by
/// an agent that crashed) is replaced; one that answers belongs to a running agent and is not.
pub async fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    if UnixStream::connect(path).await.is_ok() {
        return Err(io::Error::new(io::ErrorKind::AddrInUse, "another agent answers on this socket"));
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

/// How long a client may take to send its request.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// The request line.
    pub request_line: Duration,
    /// An apply's documents, after the request line: this much plus one second per
    /// [`BYTES_PER_SECOND`] announced.
    pub documents: Duration,
}

/// The slowest rate an apply's documents may arrive at (a local socket carries gigabytes per
/// second): bounds how long a stalled upload holds its place.
pub const BYTES_PER_SECOND: usize = 8 << 20;

/// Reads one request. `Err` carries the response for a bad (or late) one.
///
/// An apply's documents are read a megabyte at a time, each reserved first from `budget` (one
/// permit per byte); the reservation is returned with the request and the caller keeps it until
/// the apply is done. However many clients connect, documents never hold more memory than the
/// budget, and a client that stalls mid-upload holds only the megabyte it is stuck in.
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut BufReader<S>,
    deadlines: Deadlines,
    budget: &Arc<Semaphore>,
) -> Result<(Request, Option<OwnedSemaphorePermit>), Response> {
    let late = |what: &str| Response::error(2, format!("{what} not received in time"));
    let header =
        tokio::time::timeout(deadlines.request_line, read_header(stream)).await.map_err(|_| late("request"))??;
    let request = match header {
        Header::Status => Request::Status,
        Header::Rules => Request::Rules,
        Header::Flows => Request::Flows,
        Header::Explain { query } => Request::Explain { query },
        Header::Teardown => Request::Teardown,
        Header::Interface { name } => Request::Interface { name },
        Header::Apply { document_bytes, instances_bytes } => {
            let total = document_bytes.saturating_add(instances_bytes.iter().sum());
            let bodies = async {
                let mut held: Option<OwnedSemaphorePermit> = None;
                let document = read_body(stream, document_bytes, "document", budget, &mut held).await?;
                if instances_bytes.len() > MAX_INSTANCES_DOCUMENTS {
                    return Err(Response::error(2, format!("more than {MAX_INSTANCES_DOCUMENTS} instances documents")));
                }
                let mut instances = Vec::with_capacity(instances_bytes.len());
                for n in instances_bytes {
                    instances.push(read_body(stream, n, "instances document", budget, &mut held).await?);
                }
                Ok::<_, Response>((Request::Apply { document, instances }, held))
            };
            let deadline = deadlines.documents + Duration::from_secs((total / BYTES_PER_SECOND) as u64);
            return tokio::time::timeout(deadline, bodies).await.map_err(|_| late("documents"))?;
        }
    };
    Ok((request, None))
}

async fn read_header<S: AsyncRead + Unpin>(stream: &mut BufReader<S>) -> Result<Header, Response> {
    let mut line = Vec::new();
    let mut limited = (&mut *stream).take(MAX_HEADER_BYTES as u64 + 1);
    match limited.read_until(b'\n', &mut line).await {
        Ok(_) if line.len() > MAX_HEADER_BYTES => {
            return Err(Response::error(2, format!("request line larger than {MAX_HEADER_BYTES} bytes")));
        }
        Ok(0) => return Err(Response::error(2, "empty request")),
        Ok(_) => {}
        Err(e) => return Err(Response::error(1, format!("reading request: {e}"))),
    }
    serde_json::from_slice(&line).map_err(|e| Response::error(2, format!("malformed request: {e}")))
}

/// How much of a document is read (and reserved from the budget) at a time.
const CHUNK: usize = 1 << 20;

/// Reads a document of `len` bytes, reserving budget a chunk at a time before reading it, into
/// `held` (kept by the caller until the document is applied).
async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut BufReader<S>,
    len: usize,
    what: &str,
    budget: &Arc<Semaphore>,
    held: &mut Option<OwnedSemaphorePermit>,
) -> Result<String, Response> {
    if len > limits::DOCUMENT_BYTES {
        return Err(Response::error(
            2,
            format!("{what} is {len} bytes, more than the limit of {}", limits::DOCUMENT_BYTES),
        ));
    }
    let mut bytes = Vec::new();
    while bytes.len() < len {
        let chunk = CHUNK.min(len - bytes.len());
        let permit = budget
            .clone()
            .acquire_many_owned(chunk as u32)
            .await
            .map_err(|_| Response::error(1, "the agent is stopping"))?;
        match held {
            Some(h) => h.merge(permit),
            None => *held = Some(permit),
        }
        let before = bytes.len();
        (&mut *stream)
            .take(chunk as u64)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| Response::error(2, format!("reading the {what}: {e}")))?;
        if bytes.len() - before < chunk {
            return Err(Response::error(2, format!("the {what} ended after {} of {len} bytes", bytes.len())));
        }
    }
    String::from_utf8(bytes).map_err(|_| Response::error(2, format!("the {what} is not UTF-8")))
}

/// Writes one response line.
pub async fn write_response(stream: &mut BufReader<UnixStream>, response: &Response) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(response).map_err(io::Error::other)?;
    bytes.push(b'\n');
    stream.get_mut().write_all(&bytes).await?;
    stream.get_mut().shutdown().await
}

/// The request line and body of `request`.
fn encode(request: &Request) -> io::Result<Vec<u8>> {
    let header = match request {
        Request::Status => Header::Status,
        Request::Rules => Header::Rules,
        Request::Flows => Header::Flows,
        Request::Teardown => Header::Teardown,
        Request::Explain { query } => Header::Explain { query: query.clone() },
        Request::Interface { name } => Header::Interface { name: name.clone() },
        Request::Apply { document, instances } => Header::Apply {
            document_bytes: document.len(),
            instances_bytes: instances.iter().map(String::len).collect(),
        },
    };
    let mut bytes = serde_json::to_vec(&header).map_err(io::Error::other)?;
    bytes.push(b'\n');
    if let Request::Apply { document, instances } = request {
        bytes.extend_from_slice(document.as_bytes());
        for i in instances {
            bytes.extend_from_slice(i.as_bytes());
        }
    }
    Ok(bytes)
}

/// Client side: connects and sends `request`; the stream then carries the answer.
pub async fn send(socket: &Path, request: &Request) -> Result<BufReader<UnixStream>, ClientError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect { socket: socket.to_path_buf(), source })?;
    let mut stream = BufReader::new(stream);
    let bytes = encode(request).map_err(ClientError::Io)?;
    stream.get_mut().write_all(&bytes).await.map_err(ClientError::Io)?;
    Ok(stream)
}

/// Client side: sends `request`, waits for the answer.
pub async fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let work = async {
        let mut stream = send(socket, request).await?;
        let mut line = String::new();
        let n = stream.read_line(&mut line).await.map_err(|e| match e.kind() {
            // The agent closed the connection with our request unread (it died): no answer.
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => ClientError::NoAnswer,
            _ => ClientError::Io(e),
        })?;
        if n == 0 {
            return Err(ClientError::NoAnswer);
        }
        serde_json::from_str(&line).map_err(|e| ClientError::Garbled(e.to_string()))
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| ClientError::Timeout(timeout))?
}

/// Why a call to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens (no agent), or no permission (not root).
    #[error("cannot reach the agent at {}: {source}", .socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The connection failed while the request was sent or the answer read.
    #[error("talking to the agent: {0}")]
    Io(#[source] io::Error),
    /// The agent closed the connection without answering: it stopped (or crashed) while
    /// handling the request.
    #[error("the agent closed the connection without answering (it stopped or crashed while handling the request)")]
    NoAnswer,
    /// The answer was not a response.
    #[error("unexpected answer from the agent: {0}")]
    Garbled(String),
    #[error("the agent did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATIENT: Deadlines = Deadlines { request_line: Duration::from_secs(5), documents: Duration::from_secs(5) };

    async fn read(bytes: &[u8]) -> Result<Request, Response> {
        let mut reader = BufReader::new(bytes);
        read_request(&mut reader, PATIENT, &Arc::new(Semaphore::new(4 << 20))).await.map(|(r, _)| r)
    }

    async fn round_trip(request: &Request) -> Result<Request, Response> {
        read(&encode(request).unwrap()).await
    }

    #[tokio::test]
    async fn an_apply_carries_its_documents_as_raw_bytes() {
        let document = "{\"security_groups\": []}\n\"quoted\" ünïcode".to_owned();
        let instances = vec!["{}".to_owned(), "{\"Reservations\": []}".to_owned()];
        let request = Request::Apply { document: document.clone(), instances: instances.clone() };
        match round_trip(&request).await.unwrap() {
            Request::Apply { document: d, instances: i } => assert_eq!((d, i), (document, instances)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_overlong_request_line_is_refused_before_it_ends() {
        let line = vec![b' '; MAX_HEADER_BYTES + 10];
        let e = read(&line).await.unwrap_err();
        assert_eq!(e.exit_code, 2);
        assert!(e.error.unwrap().contains("larger than"));
    }

    #[tokio::test]
    async fn a_client_that_stops_mid_request_is_cut_off_at_the_deadline() {
        let (client, server) = tokio::io::duplex(1024);
        let mut client = client;
        client.write_all(b"{\"request\":\"sta").await.unwrap();
        let mut reader = BufReader::new(server);
        let quick = Deadlines { request_line: Duration::from_millis(50), documents: Duration::from_millis(50) };
        let started = std::time::Instant::now();
        let e = read_request(&mut reader, quick, &Arc::new(Semaphore::new(4 << 20))).await.unwrap_err();
        assert!(e.error.unwrap().contains("not received in time"));
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(client);
    }

    #[tokio::test]
    async fn a_document_longer_than_the_limit_is_refused_unread() {
        let header = format!("{{\"request\":\"apply\",\"document_bytes\":{}}}\n", limits::DOCUMENT_BYTES + 1);
        let e = read(header.as_bytes()).await.unwrap_err();
        assert!(e.error.unwrap().contains("more than the limit"));
    }
}
