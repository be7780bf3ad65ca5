//! HTTP connections: the accept loop, the connection cap, header, body and
//! idle timeouts, and closing connections gracefully at shutdown.
//!
//! The timeouts only watch the client's side: once a request's head and body
//! are in, the response (an SSE stream, a long turn) takes as long as it takes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::ApiSettings;
use crate::error::ErrorBody;

/// Open files kept for everything but client connections: the store's pool,
/// tools' pipes and processes, MCP servers, logs.
const FD_RESERVE: u64 = 128;
/// The cap when the open-file limit allows more: beyond it a single instance
/// is better scaled out than stretched.
const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Connections over the cap being answered 503 at once; beyond that they are
/// closed without an answer, which costs nothing.
const REFUSALS_AT_ONCE: usize = 32;
/// How long a refused client has to send its request and read the 503.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Accept errors other than a client hanging up (EMFILE, ENOBUFS) would
/// repeat at once; waiting lets connections close and free descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one warning per this interval about refused connections.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// What a connection may cost, from `api.*` settings.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl ConnectionLimits {
    pub fn from_settings(api: &ApiSettings) -> Self {
        Self {
            header_timeout: Duration::from_secs(api.header_timeout_secs),
            body_timeout: Duration::from_secs(api.body_timeout_secs),
            idle_timeout: Duration::from_secs(api.idle_timeout_secs),
            max_connections: match api.max_connections {
                0 => connection_cap(open_file_limit()),
                n => n,
            },
        }
    }
}

/// The soft open-file limit; `None` when unlimited.
fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Connections that fit in the open-file limit beside the reserve, at most
/// 1024; at least 16 so a tiny limit still serves.
pub fn connection_cap(open_files: Option<u64>) -> usize {
    let Some(open_files) = open_files else {
        return DEFAULT_MAX_CONNECTIONS;
    };
    let fit = usize::try_from(open_files.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    fit.clamp(16, DEFAULT_MAX_CONNECTIONS)
}

/// The accept loop and the connections it started.
pub struct Server {
    connections: TaskTracker,
    /// Asks connections to finish their request and close.
    closing: CancellationToken,
    /// Drops whatever connections are left.
    abandon: CancellationToken,
    accepting: tokio::task::JoinHandle<()>,
}

impl Server {
    pub fn start(listener: TcpListener, router: Router, limits: ConnectionLimits) -> Self {
        let connections = TaskTracker::new();
        let closing = CancellationToken::new();
        let abandon = CancellationToken::new();
        let accepting = tokio::spawn(accept(
            listener,
            router,
            limits,
            connections.clone(),
            closing.clone(),
            abandon.clone(),
        ));
        Self {
            connections,
            closing,
            abandon,
            accepting,
        }
    }

    /// Stops accepting; open connections close once their request is answered.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Resolves when the listener is closed and every connection has ended.
    pub async fn closed(&self) {
        self.connections.wait().await;
    }

    /// Drops the connections still open.
    pub async fn abandon(self) {
        self.close();
        self.abandon.cancel();
        let _ = self.accepting.await;
        self.connections.wait().await;
    }
}

async fn accept(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    connections: TaskTracker,
    closing: CancellationToken,
    abandon: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let mut refused = RefusalLog::default();
    loop {
        let accepted = tokio::select! {
            () = closing.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(err) if is_connection_error(&err) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        // Without TCP_NODELAY a small SSE frame written after the response
        // head waits for the client's delayed ACK (~40 ms on Linux).
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                connections.spawn(serve_connection(
                    stream,
                    remote,
                    router.clone(),
                    limits,
                    permit,
                    closing.clone(),
                    abandon.clone(),
                ));
            }
            Err(_) => {
                refused.count(limits.max_connections);
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    connections.spawn(refuse(stream, permit));
                }
            }
        }
    }
    // The listener is dropped here: new connections are refused by the kernel.
    connections.close();
}

/// Errors that concern one client only (it hung up before we accepted).
fn is_connection_error(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[derive(Default)]
struct RefusalLog {
    since_last: u64,
    last: Option<Instant>,
}

impl RefusalLog {
    fn count(&mut self, cap: usize) {
        self.since_last += 1;
        if self.last.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_EVERY) {
            tracing::warn!(
                refused = self.since_last,
                max_connections = cap,
                "refusing connections: api.max_connections reached"
            );
            self.since_last = 0;
            self.last = Some(Instant::now());
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    _permit: OwnedSemaphorePermit,
    closing: CancellationToken,
    abandon: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            handle(
                request,
                router.clone(),
                remote,
                limits.body_timeout,
                activity.clone(),
            )
        })
    };
    // HTTP/1.1 only, as axum::serve was built here. hyper's header timer
    // restarts when a connection goes idle, so it would also be the idle
    // timeout; `Activity` keeps the two apart.
    let connection = http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let expired = activity.expired(limits.header_timeout, limits.idle_timeout);
    tokio::pin!(expired);
    let mut closing_asked = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            why = &mut expired => {
                tracing::debug!(%remote, why, "closing connection");
                return;
            }
            () = closing.cancelled(), if !closing_asked => {
                closing_asked = true;
                connection.as_mut().graceful_shutdown();
            }
            () = abandon.cancelled() => return,
        }
    }
}

/// Answers every request on a connection over the cap with 503 and closes it.
async fn refuse(stream: TcpStream, _permit: OwnedSemaphorePermit) {
    let service = hyper::service::service_fn(|_request: Request<Incoming>| async {
        Ok::<_, Infallible>(error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "The service has as many connections open as it accepts (api.max_connections); retry shortly.",
        ))
    });
    let connection = http1::Builder::new()
        .keep_alive(false)
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, connection).await;
}

async fn handle(
    request: Request<Incoming>,
    router: Router,
    remote: SocketAddr,
    body_timeout: Duration,
    activity: Arc<Activity>,
) -> Result<Response<Body>, Infallible> {
    let in_flight = activity.request_started();
    let timed_out = Arc::new(AtomicBool::new(false));
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(ConnectInfo(remote));
    let body = if http_body::Body::is_end_stream(&body) {
        Body::new(body)
    } else {
        Body::new(DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(body_timeout)),
            timed_out: timed_out.clone(),
        })
    };
    let response = match router.oneshot(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    let response = if timed_out.load(Ordering::Relaxed) {
        body_timed_out(response, body_timeout)
    } else {
        response
    };
    Ok(response.map(|body| {
        Body::new(InFlightBody {
            inner: body,
            _in_flight: in_flight,
        })
    }))
}

/// Whatever the handler made of a body that stopped arriving, the client is
/// told it was too slow (keeping the router's headers: request id, CORS).
fn body_timed_out(response: Response<Body>, timeout: Duration) -> Response<Body> {
    let mut timed_out = error_response(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        &format!(
            "The request body did not arrive within {} s (api.body_timeout_secs).",
            timeout.as_secs()
        ),
    );
    let (original, _) = response.into_parts();
    let mut headers = original.headers;
    headers.remove(header::CONTENT_LENGTH);
    for (name, value) in timed_out.headers() {
        headers.insert(name.clone(), value.clone());
    }
    *timed_out.headers_mut() = headers;
    timed_out
}

/// The contract's error body, and `Connection: close`: the connection is
/// not worth keeping.
fn error_response(status: StatusCode, code: &'static str, detail: &str) -> Response<Body> {
    let body = ErrorBody {
        error: code,
        detail: detail.to_owned(),
        fields: None,
    };
    let mut response = Response::new(Body::from(serde_json::to_vec(&body).unwrap_or_default()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Where a connection is between requests, for the header and idle timeouts.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request's head: since the connection opened, or since
    /// the first byte after an idle period.
    Head { since: Instant },
    /// Between requests, nothing received.
    Idle { since: Instant },
    /// A request being answered; no timer runs.
    Busy { requests: usize },
}

struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Head {
                since: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, phase: Phase) {
        *self.phase() = phase;
        self.changed.notify_one();
    }

    fn bytes_received(&self) {
        let mut phase = self.phase();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Head {
                since: Instant::now(),
            };
            drop(phase);
            self.changed.notify_one();
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        let requests = match *self.phase() {
            Phase::Busy { requests } => requests + 1,
            Phase::Head { .. } | Phase::Idle { .. } => 1,
        };
        self.set(Phase::Busy { requests });
        InFlight(self.clone())
    }

    /// Resolves, with the reason, when the client has taken too long to send
    /// a request's head or has been idle too long.
    async fn expired(&self, header_timeout: Duration, idle_timeout: Duration) -> &'static str {
        loop {
            let deadline = match *self.phase() {
                Phase::Head { since } => Some((since + header_timeout, "header timeout")),
                Phase::Idle { since } => Some((since + idle_timeout, "idle timeout")),
                Phase::Busy { .. } => None,
            };
            match deadline {
                // A change stores a permit in `changed`, so none is missed
                // between reading the phase and waiting.
                Some((at, why)) => tokio::select! {
                    biased;
                    () = self.changed.notified() => {}
                    () = tokio::time::sleep_until(at) => return why,
                },
                None => self.changed.notified().await,
            }
        }
    }
}

/// A request being answered, until its response body is finished or dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let phase = match *self.0.phase() {
            Phase::Busy { requests } if requests > 1 => Phase::Busy {
                requests: requests - 1,
            },
            _ => Phase::Idle {
                since: Instant::now(),
            },
        };
        self.0.set(phase);
    }
}

/// The socket, telling `Activity` when bytes arrive.
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_received();
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimeout;

/// A request body that fails once its deadline passes.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    timed_out: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request counted as in flight.
struct InFlightBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for InFlightBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_rest_of_the_service() {
        assert_eq!(connection_cap(Some(256)), 128);
        assert_eq!(connection_cap(Some(1_048_576)), 1024);
        assert_eq!(connection_cap(Some(100)), 16);
        assert_eq!(connection_cap(None), 1024);
    }
}
