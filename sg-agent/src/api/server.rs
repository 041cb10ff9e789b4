//! The HTTP side: requests read within a size and time bound, verified (SigV4), parsed
//! (Query parameters), run (an action on the backend's document), answered in EC2's XML.

use std::{convert::Infallible, sync::Arc, time::Duration};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{CONTENT_TYPE, HeaderValue},
    http::request::Parts,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{Mutex, Semaphore},
};

use super::{
    actions::{self, Ctx},
    backend::{Backend, BackendError},
    credentials::Credentials,
    error::ApiError,
    ids, local,
    query::{Params, parse_pairs},
    sigv4::{self, Received},
    xml,
};
use crate::policy::native;

/// The EC2 API version served.
pub const VERSION: &str = "2016-11-15";
/// Largest request body: far more than any call of these actions needs (an
/// `AuthorizeSecurityGroupIngress` of 1,000 CIDRs is about 80 KiB).
pub const MAX_BODY: usize = 1 << 20;
/// Connections served at once; more wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its headers, and then its body.
const HEADER_DEADLINE: Duration = Duration::from_secs(10);
const BODY_DEADLINE: Duration = Duration::from_secs(10);
/// Reads and commits of one change before giving up on a document that keeps changing.
const ATTEMPTS: usize = 5;

struct Server<B> {
    backend: B,
    credentials: Credentials,
    /// Changes made through the API one at a time, so that API calls do not race each other
    /// (a change made meanwhile by `apply` or SIGHUP is caught by the backend's check).
    changes: Mutex<()>,
}

/// Serves the API on `listener` until the task is dropped.
pub async fn serve<B: Backend>(listener: TcpListener, backend: B, credentials: Credentials) {
    let server = Arc::new(Server { backend, credentials, changes: Mutex::new(()) });
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, typically: wait rather than spin.
                log::warn!("EC2 API: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let server = server.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.handle(request).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_DEADLINE)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                log::debug!("EC2 API connection: {e}");
            }
            drop(permit);
        });
    }
}

impl<B: Backend> Server<B> {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let request_id = ids::request_id();
        let (parts, body) = request.into_parts();
        let body = match tokio::time::timeout(BODY_DEADLINE, Limited::new(body, MAX_BODY).collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError {
                status: 413,
                code: "RequestEntityTooLarge",
                message: format!("The request body is larger than {MAX_BODY} bytes"),
            }),
            Ok(Err(e)) => Err(ApiError::client("InvalidRequest", format!("Reading the request body: {e}"))),
            Err(_) => Err(ApiError::client("RequestTimeout", "The request body did not arrive in time")),
        };
        let answer = match body {
            Ok(body) => self.answer(&parts, &body).await,
            Err(e) => Err(e),
        };
        let (status, text) = match answer {
            Ok((action, body)) => (200, xml::response(action, &request_id, &body)),
            Err(e) => {
                log::info!("EC2 API: {} {}: {}", e.status, e.code, e.message);
                (e.status, xml::error(e.code, &e.message, &request_id))
            }
        };
        let mut response = Response::new(Full::new(Bytes::from(text)));
        *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/xml;charset=UTF-8"));
        if let Ok(id) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-amzn-requestid", id);
        }
        response
    }

    /// Verifies, parses and runs one request; the action's name and response body.
    async fn answer(&self, parts: &Parts, body: &Bytes) -> Result<(&'static str, xml::Xml), ApiError> {
        if parts.method != Method::POST && parts.method != Method::GET {
            return Err(ApiError {
                status: 405,
                code: "UnsupportedHttpVerb",
                message: format!("{} is not accepted: send POST (or GET)", parts.method),
            });
        }
        let query = parts.uri.query().unwrap_or_default();
        let received =
            Received { method: parts.method.as_str(), path: parts.uri.path(), query, headers: &parts.headers, body };
        let signer = sigv4::verify(&received, &self.credentials, std::time::SystemTime::now())?;
        let mut pairs = parse_pairs(query, true)?;
        if !body.is_empty() {
            let form = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
            if !form {
                return Err(ApiError::invalid("The body must be form-encoded (application/x-www-form-urlencoded)"));
            }
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::client("MalformedQueryString", "The body is not UTF-8 text"))?;
            pairs.extend(parse_pairs(text, true)?);
        }
        let params = Params::from_pairs(pairs)?;
        let name = params
            .get("Action")
            .ok_or_else(|| ApiError::client("MissingAction", "The request must contain the parameter Action"))?;
        let (name, action) = actions::ACTIONS.iter().find(|(n, _)| *n == name).copied().ok_or_else(|| {
            ApiError::client("InvalidAction", format!("The action {name} is not valid for this web service."))
        })?;
        match params.get("Version") {
            Some(VERSION) => {}
            Some(other) => {
                return Err(ApiError::client(
                    "InvalidParameterValue",
                    format!("API version {other} is not served here; this is {VERSION}"),
                ));
            }
            None => return Err(ApiError::missing("Version")),
        }
        let dry_run = params.bool("DryRun")?.unwrap_or(false);
        let ctx = Ctx { region: signer.region.clone() };
        let changes = !(name.starts_with("Describe") || name.starts_with("Get"));
        let _serial = if changes { Some(self.changes.lock().await) } else { None };
        for _ in 0..ATTEMPTS {
            let snapshot = self.backend.read().await.map_err(backend_error)?;
            let outcome = action(&ctx, &snapshot.document, &params)?;
            let Some(document) = outcome.document else {
                return if dry_run { Err(dry_run_error()) } else { Ok((name, outcome.body)) };
            };
            let text = local::document_text(&document);
            // Validated like any document: what is committed is exactly what passed.
            native::parse_document(&text).map_err(|invalid| ApiError::invalid(invalid.to_string()))?;
            if dry_run {
                return Err(dry_run_error());
            }
            match self.backend.commit(snapshot, text).await {
                Ok(revision) => {
                    log::info!(
                        "EC2 API: {name} by {} ({}): generation {revision} live",
                        signer.profile,
                        signer.access_key_id
                    );
                    return Ok((name, outcome.body));
                }
                Err(BackendError::Conflict) => continue,
                Err(e) => return Err(backend_error(e)),
            }
        }
        Err(ApiError::unavailable("The document kept changing under this request (other writers); try again"))
    }
}

fn backend_error(e: BackendError) -> ApiError {
    match e {
        BackendError::Refused(invalid) => ApiError::invalid(invalid.to_string()),
        BackendError::Unavailable(why) => ApiError::unavailable(why),
        BackendError::Conflict => ApiError::unavailable("The document changed meanwhile; try again"),
        BackendError::Failed(why) => ApiError::internal(why),
    }
}

/// EC2's answer to `DryRun`: the request would have succeeded (HTTP 412).
fn dry_run_error() -> ApiError {
    ApiError {
        status: 412,
        code: "DryRunOperation",
        message: "Request would have succeeded, but DryRun flag is set.".into(),
    }
}
