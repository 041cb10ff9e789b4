//! Fleet mode (SPEC §8): the policy lives in an etcd v3 cluster that every node's agent follows.
//!
//! - [`layout`]: where things are under the prefix — one key per object (`groups/<id>`,
//!   `prefix_lists/<id>`, `instances/<id>`, each holding that object's native JSON), the
//!   agents' records (`nodes/<name>/`) and the writers' guard (`writer`).
//! - [`content`]: the objects read from the store, and the one native document they make
//!   (validated like a file, every problem named by its key).
//! - [`follow`]: the agent's side — one consistent snapshot, then the watch from the next
//!   revision; bursts coalesce into one document; compaction, outages and invalid content are
//!   survived with the last good generation in force.
//! - [`nodes`]: agents publish what they enforce (on a lease); `fleet status` reads it back.
//! - [`write`]: `fleet apply` — the whole resulting document validated, then written in
//!   guarded transactions within etcd's limits, each leaving a valid document.
//!
//! This module talks to etcd and knows the policy model; it knows nothing of the daemon or the
//! agent: the daemon hands it a channel on which it proposes documents and hears the outcome.

pub mod content;
pub mod follow;
pub mod layout;
pub mod nodes;
pub mod write;

use std::{path::PathBuf, time::Duration};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

pub use self::layout::Layout;

/// The default `--store-prefix`.
pub const DEFAULT_PREFIX: &str = "/sg/v1";

/// How to reach the store: `--store` and the `--store-*` options.
#[derive(Clone)]
pub struct StoreOptions {
    /// `host:port` of every member.
    pub members: Vec<String>,
    pub layout: Layout,
    pub tls: Option<TlsFiles>,
    /// An etcd user and its password. Without one (and with a client certificate), etcd takes
    /// the certificate's common name as the user.
    pub user: Option<(String, String)>,
}

/// Without the password: options end up in debug output.
impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("members", &self.members)
            .field("layout", &self.layout)
            .field("tls", &self.tls)
            .field("user", &self.user.as_ref().map(|(user, _)| user))
            .finish()
    }
}

/// `--store-ca`, `--store-cert`, `--store-key`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    /// A client certificate and its key (both or neither).
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `--store` is not `etcd://HOST:PORT[,HOST:PORT...]`, or the options do not fit together.
    #[error("{0}")]
    Usage(String),
    /// A certificate, key or password file could not be read.
    #[error("reading {}: {source}", .path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A call to etcd failed; the text says what was being done and what to check.
    #[error("{what}: {detail}")]
    Call { what: String, detail: String, class: ErrorClass },
    /// A document (the store's content, or what a write would make it) is invalid: every
    /// problem, named by its key.
    #[error("{context}:\n{invalid}")]
    Invalid { context: String, invalid: crate::policy::Invalid },
    /// Another writer changed the store while `fleet apply` wrote (see the message for what
    /// was written).
    #[error("{0}")]
    Conflict(String),
    /// A document cannot be written within etcd's request limits.
    #[error("{0}")]
    TooLarge(String),
}

impl StoreError {
    /// SPEC §5: 2 for invalid input, 1 for a runtime failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            StoreError::Usage(_) | StoreError::Invalid { .. } | StoreError::TooLarge(_) => 2,
            StoreError::File { .. } | StoreError::Call { .. } | StoreError::Conflict(_) => 1,
        }
    }

    /// A failed call to etcd, described for an operator (see [`describe`]).
    pub fn call(what: impl Into<String>, e: &etcd_client::Error, tls: bool) -> StoreError {
        StoreError::Call { what: what.into(), detail: describe(e, tls), class: classify(e) }
    }

    /// What kind of failure this is, if a call failed.
    pub fn class(&self) -> Option<ErrorClass> {
        match self {
            StoreError::Call { class, .. } => Some(*class),
            _ => None,
        }
    }
}

/// What a failed call means for the caller (from running against etcd 3.4: see the fleet
/// notes in docs/fleet.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request never reached a server (refused, reset, no route): retry.
    Unreachable,
    /// The connection broke mid-call (timeout, stream cut): a write may or may not have
    /// happened; read before repeating it.
    Ambiguous,
    /// The history at the requested revision was compacted: take a fresh snapshot.
    Compacted,
    /// Authentication or permission: retrying does not help.
    Denied,
    /// A request over etcd's limits, or otherwise refused as it is.
    Refused,
}

/// Sorts an etcd error into what the caller should do.
pub fn classify(e: &etcd_client::Error) -> ErrorClass {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(s) => match s.code() {
            Code::Unavailable => ErrorClass::Unreachable,
            // The client also reports "decoded message length too large" as OutOfRange.
            Code::OutOfRange if s.message().contains("compacted") => ErrorClass::Compacted,
            Code::Cancelled | Code::Unknown | Code::DeadlineExceeded | Code::Aborted => ErrorClass::Ambiguous,
            Code::PermissionDenied | Code::Unauthenticated => ErrorClass::Denied,
            Code::InvalidArgument
                if s.message().contains("authentication failed") || s.message().contains("user name is empty") =>
            {
                ErrorClass::Denied
            }
            _ => ErrorClass::Refused,
        },
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => ErrorClass::Unreachable,
        etcd_client::Error::LeaseKeepAliveError(_) | etcd_client::Error::WatchError(_) => ErrorClass::Ambiguous,
        _ => ErrorClass::Refused,
    }
}

/// An etcd error in words, with what to check. Client-certificate refusals reach the client
/// only as a closed connection (TLS 1.3 reports them after the handshake), so with TLS such a
/// failure names the likely cause; etcd's own log says which it was.
pub fn describe(e: &etcd_client::Error, tls: bool) -> String {
    let (mut text, mut source) = match e {
        etcd_client::Error::GRpcStatus(s) => (s.message().to_owned(), std::error::Error::source(s)),
        etcd_client::Error::TransportError(t) => (t.to_string(), std::error::Error::source(t)),
        other => (other.to_string(), std::error::Error::source(other)),
    };
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    let lower = text.to_lowercase();
    let hint = if lower.contains("invalid peer certificate") || lower.contains("unknownissuer") {
        Some("the server's certificate is not signed by the CA given with --store-ca")
    } else if tls
        && (lower.contains("connection closed")
            || lower.contains("operation was canceled")
            || lower.contains("badcertificate")
            || lower.contains("certificate required")
            || lower.contains("transport error"))
    {
        Some(
            "the server closed the connection during or right after the TLS handshake: it does not accept the \
             client certificate (--store-cert/--store-key: signed by a CA the server trusts?); etcd's log names \
             the reason",
        )
    } else if !tls
        && lower.starts_with("transport error")
        && (lower.contains("connection reset") || lower.contains("connection closed") || lower.contains("broken pipe"))
    {
        // A TLS server hangs up on a plaintext client before answering anything (a server that
        // dies mid-stream shows up as an h2 protocol error instead).
        Some("the server closed the connection at once: if it uses TLS, give --store-ca (and --store-cert/--store-key)")
    } else if lower.contains("permission denied") {
        Some("the etcd user lacks a permission on this key range (see the role layout in the README)")
    } else if lower.contains("authentication failed") || lower.contains("user name is empty") {
        Some("check --store-user and its password (SG_STORE_PASSWORD or --store-password-file)")
    } else if lower.contains("tcp connect error") || lower.contains("connection refused") {
        Some("nothing answers there")
    } else {
        None
    };
    if let Some(hint) = hint {
        text.push_str(" (");
        text.push_str(hint);
        text.push(')');
    }
    text
}

impl StoreOptions {
    /// Reads `etcd://HOST:PORT[,HOST:PORT...]`.
    pub fn members_of(url: &str) -> Result<Vec<String>, StoreError> {
        let Some(rest) = url.strip_prefix("etcd://") else {
            return Err(StoreError::Usage(format!("--store {url:?}: expected etcd://HOST:PORT[,HOST:PORT...]")));
        };
        let members: Vec<String> = rest.trim_end_matches('/').split(',').map(|m| m.trim().to_owned()).collect();
        for m in &members {
            let port = m.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(p))) if !host.is_empty() && p != 0) {
                return Err(StoreError::Usage(format!("--store {url:?}: {m:?} is not HOST:PORT")));
            }
        }
        Ok(members)
    }

    /// The members as URLs for the client (`https://` with TLS).
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.members.iter().map(|m| format!("{scheme}://{m}")).collect()
    }

    /// `etcd://a:1,b:2`, for messages.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.members.join(","))
    }

    /// The client options: TLS files read now (so a missing file is an error at start), HTTP/2
    /// keepalive so that a hung or partitioned member is noticed (a watch would otherwise wait
    /// forever), and automatic token refresh for password users (tokens expire after 5 min).
    pub fn connect_options(&self) -> Result<ConnectOptions, StoreError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &self.tls {
            let read =
                |path: &PathBuf| std::fs::read(path).map_err(|source| StoreError::File { path: path.clone(), source });
            let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(config);
        }
        if let Some((user, password)) = &self.user {
            options = options.with_user(user.clone(), password.clone()).with_auto_token_refresh(true);
        }
        Ok(options)
    }

    /// A client. Without a user this does no I/O (the first call connects); with one it
    /// authenticates now, so it fails while the store is unreachable.
    pub async fn connect(&self) -> Result<Client, StoreError> {
        let options = self.connect_options()?;
        Client::connect(self.endpoints(), Some(options))
            .await
            .map_err(|e| StoreError::call(format!("connecting to {}", self.url()), &e, self.tls.is_some()))
    }
}

/// Responses larger than tonic's default 4 MiB (a snapshot page, a catch-up watch batch) are
/// normal for a large fleet; this is the most any single response may hold.
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Keys per page of a snapshot: each page is one request, all pinned to the first page's
/// revision, so that a large store is read consistently without one huge response.
const PAGE_KEYS: i64 = 2000;

/// One key as read.
#[derive(Debug, Clone)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// Every key under `root` at one revision: `revision` if given, else the current one.
/// Returns the revision read and the keys in order. `keys_only` leaves the values empty.
pub async fn read_range(
    client: &Client,
    root: &str,
    revision: Option<i64>,
    keys_only: bool,
    tls: bool,
) -> Result<(i64, Vec<Kv>), StoreError> {
    use etcd_client::GetOptions;
    let end = layout::prefix_end(root.as_bytes());
    let kv_client = client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
    let mut out = Vec::new();
    let mut at = revision.unwrap_or(0);
    let mut from = root.as_bytes().to_vec();
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE_KEYS);
        if at != 0 {
            options = options.with_revision(at);
        }
        if keys_only {
            options = options.with_keys_only();
        }
        let response = retry_unreachable(|| {
            let (mut kv, key, options) = (kv_client.clone(), from.clone(), options.clone());
            async move { kv.get(key, Some(options)).await }
        })
        .await
        .map_err(|e| StoreError::call(format!("reading {root}"), &e, tls))?;
        if at == 0 {
            // The first page's revision pins the rest (the header of a read at an older
            // revision carries the current one, so only the first page's is taken).
            at = response.header().map_or(0, |h| h.revision());
        }
        for kv in response.kvs() {
            out.push(Kv {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: kv.value().to_vec(),
                mod_revision: kv.mod_revision(),
            });
        }
        match response.kvs().last() {
            Some(last) if response.more() => {
                from = last.key().to_vec();
                // The next key after `last`.
                from.push(0);
            }
            _ => break,
        }
    }
    Ok((at, out))
}

/// Attempts at a call that fails before reaching any member.
const UNREACHABLE_ATTEMPTS: usize = 4;

/// Runs `call` again when it never reached a member (`Unreachable`: safe to repeat, writes
/// included). With several members, the client keeps sending some requests to a member that is
/// down; another attempt goes to another one.
pub async fn retry_unreachable<T, F>(mut call: impl FnMut() -> F) -> Result<T, etcd_client::Error>
where
    F: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if attempt < UNREACHABLE_ATTEMPTS && classify(&e) == ErrorClass::Unreachable => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            result => return result,
        }
    }
}

/// A store's objects at one revision, with the writers' guard.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub revision: i64,
    pub content: content::Content,
    /// The mod revision of `<prefix>/writer` (0: never written).
    pub writer_revision: i64,
}

/// Reads the objects under the layout's prefix at the current revision.
pub async fn snapshot(client: &Client, layout: &Layout, tls: bool) -> Result<Snapshot, StoreError> {
    let (revision, kvs) = read_range(client, &layout.root(), None, false, tls).await?;
    let mut content = content::Content::default();
    let mut writer_revision = 0;
    for kv in &kvs {
        if kv.key == layout.writer_key() {
            writer_revision = kv.mod_revision;
        }
        content.put_key(layout, &kv.key, &kv.value, kv.mod_revision);
    }
    Ok(Snapshot { revision, content, writer_revision })
}

/// Doubling waits between attempts, from `first` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max, next: first }
    }

    /// The wait before the next attempt (and doubles the one after).
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(StoreOptions::members_of("etcd://a:1,b:2/").ok(), Some(vec!["a:1".to_owned(), "b:2".to_owned()]));
        for bad in ["http://a:1", "etcd://a", "etcd://:1", "etcd://a:0", "etcd://a:1,b", "etcd://a:x"] {
            assert!(StoreOptions::members_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_output_has_no_password() {
        let options = StoreOptions {
            members: vec!["a:1".to_owned()],
            layout: Layout::new(DEFAULT_PREFIX),
            tls: None,
            user: Some(("ops".to_owned(), "s3cret".to_owned())),
        };
        let text = format!("{options:?}");
        assert!(text.contains("ops") && !text.contains("s3cret"), "{text}");
    }

    #[test]
    fn errors_say_what_to_check() {
        let status = |code, message: &str| etcd_client::Error::GRpcStatus(tonic::Status::new(code, message));
        let e = status(tonic::Code::Unavailable, "invalid peer certificate: UnknownIssuer");
        assert!(describe(&e, true).contains("not signed by the CA given with --store-ca"));
        assert_eq!(classify(&e), ErrorClass::Unreachable);
        let e = status(tonic::Code::Cancelled, "operation was canceled");
        assert!(describe(&e, true).contains("does not accept the client certificate"));
        assert!(!describe(&e, false).contains("certificate"));
        let e = status(tonic::Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted");
        assert_eq!(classify(&e), ErrorClass::Compacted);
        let e = status(tonic::Code::OutOfRange, "Error, decoded message length too large");
        assert_eq!(classify(&e), ErrorClass::Refused);
        let e = status(tonic::Code::PermissionDenied, "etcdserver: permission denied");
        assert_eq!(classify(&e), ErrorClass::Denied);
        assert!(describe(&e, false).contains("role layout"));
    }
}
