//! The connection loop of both listeners, in place of `axum::serve` (which has no limits), so
//! that a neighbour opening connections cannot exhaust a replica: a connection cap (one over it
//! is accepted and reset at once: the proxy fails over now, not after the accept queue), head
//! and idle timeouts, bounded heads ([`MAX_HEADERS`]; HTTP/2: [`H2_MAX_STREAMS`], small windows,
//! Rapid Reset limits, keep-alive pings), and a shutdown that closes at once every connection
//! with no request in flight.
//!
//! A request is in flight from its complete head until its body is handed to the connection (a
//! health `Watch`: until the stream ends); no timeout applies meanwhile (handlers bound their own
//! fetches, a `Watch` lasts until shutdown), so the cap bounds such a client. Limits and
//! defaults: docs/operating.md, "Connection limits".

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::Version;
use axum::response::Response;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::metrics::{DroppedConnectionLabels, ListenerLabels, Metrics};

/// `--request-head-timeout`: generous for a proxy on the cluster network, short enough that a
/// slot held by a slow-header client comes back quickly.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// `--idle-timeout`: longer than the upstream keep-alive timeouts of the proxies that call us
/// (nginx `keepalive_timeout` 60 s, Traefik and Go's `IdleConnTimeout` 90 s), so the proxy,
/// not accessgate, closes an idle connection: a server-side close can cross a request the
/// proxy is just sending on it, and that request fails.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// `--max-connections` (auth listener). Memory: see [`DEFAULT_MAX_HEAD_BYTES`].
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
/// `--admin-max-connections`: kubelet probes and a scraper or two.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: u32 = 64;
/// `--max-request-head-kib` (auth listener): what ingress-nginx can send on an auth subrequest
/// with its default `large-client-header-buffers 4 16k` — up to 64 KiB of the client's own
/// headers (a 16 KiB token, large cookies), plus the URL twice (`X-Original-URL`,
/// `X-Auth-Request-Redirect`, up to 16 KiB each) — with room to spare. It is also the most a
/// connection buffers while reading a head: a full cap of slow-header connections holds about
/// `max connections × (this + 16 KiB)`, 144 MiB at the defaults.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 128 * 1024;
/// The admin listener's requests are probes and scrapes: a few hundred bytes of head.
pub const ADMIN_MAX_HEAD_BYTES: usize = 16 * 1024;

/// Headers per HTTP/1.1 request (hyper's default, parsed on the stack): a browser's request
/// plus what the proxy adds is a few dozen.
pub const MAX_HEADERS: usize = 100;
/// HTTP/2 streams per connection: a check is answered in microseconds, and a client that
/// wants more in parallel (Envoy) opens another connection when it reaches the limit.
pub const H2_MAX_STREAMS: u32 = 32;
/// HTTP/2 keep-alive: a ping after this long without a frame from the peer ...
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// ... and the connection is closed if the ack takes longer than this.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Flow-control windows bound the request data buffered before it is read: a check request
/// is a few KiB (the protocol's default stream window, and 8 of them per connection).
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONNECTION_WINDOW: u32 = 512 * 1024;
/// Response data queued per stream; answers are small.
const H2_MAX_SEND_BUFFER: usize = 64 * 1024;
/// Rapid Reset (CVE-2023-44487): streams the client opened and reset before they were
/// accepted, and streams we reset for protocol errors, before the connection is closed.
const H2_MAX_PENDING_RESETS: usize = 20;
const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;

/// How long accepting pauses after an error such as running out of file descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// Refusals over the cap are logged at most this often (each one is counted in metrics).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub head_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: u32,
    /// The largest request head, and a connection's largest read buffer.
    pub max_head_bytes: usize,
}

/// The limits of the auth and admin listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    pub auth: ConnectionLimits,
    pub admin: ConnectionLimits,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        let auth = ConnectionLimits {
            head_timeout: DEFAULT_HEAD_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
        };
        ListenerLimits {
            auth,
            admin: ConnectionLimits {
                max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
                max_head_bytes: ADMIN_MAX_HEAD_BYTES,
                ..auth
            },
        }
    }
}

/// Why accessgate closed a connection that had no request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    OverLimit,
    HeadTimeout,
    IdleTimeout,
    Shutdown,
}

impl Dropped {
    fn label(self) -> &'static str {
        match self {
            Dropped::OverLimit => "over_limit",
            Dropped::HeadTimeout => "head_timeout",
            Dropped::IdleTimeout => "idle_timeout",
            Dropped::Shutdown => "shutdown",
        }
    }
}

/// Serves `service` on `listener` until `stopped` turns true, then closes idle connections,
/// lets requests in flight finish, and returns once every connection has ended.
pub(super) async fn serve<S>(
    listener: TcpListener,
    name: &'static str,
    service: S,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    mut stopped: watch::Receiver<bool>,
) where
    S: tower::Service<Request, Response = Response, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let builder = Arc::new(connection_builder(&limits));
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let mut refusals = Refusals::default();
    loop {
        let tcp = tokio::select! {
            biased;
            _ = stop_requested(&mut stopped) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    pause_after_accept_error(name, e).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(tcp);
            count_dropped(&metrics, name, Dropped::OverLimit);
            refusals.note(name, limits.max_connections);
            continue;
        };
        // HTTP/2 (gRPC) writes an answer as several frames; with Nagle's algorithm the last
        // one waits for the peer's delayed ACK, about 40 ms per call.
        let _ = tcp.set_nodelay(true);
        let connection = Connection {
            name,
            limits,
            metrics: metrics.clone(),
            activity: Arc::new(Activity::default()),
            _slot: slot,
        };
        tokio::spawn(connection.serve(tcp, builder.clone(), service.clone(), stopped.clone()));
    }
    // Stop accepting; every open connection holds a slot until it ends.
    drop(listener);
    let _ = slots.acquire_many(limits.max_connections).await;
}

/// hyper's connection settings for one listener (HTTP/1.1 and HTTP/2 on the same port).
fn connection_builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's one timer would cover both the head and the idle time between requests;
        // they need different lengths, so both are ours.
        .header_read_timeout(None)
        .max_buf_size(limits.max_head_bytes)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX))
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_send_buf_size(H2_MAX_SEND_BUFFER)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
    builder
}

/// Over the cap: reset (zero linger) rather than a FIN, so the client fails at once and no
/// TIME_WAIT socket is left behind for each refusal during a flood.
fn refuse(tcp: TcpStream) {
    let _ = tcp.set_zero_linger();
    drop(tcp);
}

/// A connection that went away before it was accepted is nothing to pause for; anything else
/// (out of file descriptors, above all) would only fail again at once.
async fn pause_after_accept_error(name: &'static str, e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(listener = name, error = %e, "accept failed; pausing");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

fn count_dropped(metrics: &Metrics, listener: &'static str, why: Dropped) {
    metrics
        .connections_dropped
        .get_or_create(&DroppedConnectionLabels {
            listener,
            reason: why.label(),
        })
        .inc();
}

/// Logs refusals over the cap at most every [`REFUSAL_LOG_INTERVAL`], with how many.
#[derive(Default)]
struct Refusals {
    last_log: Option<Instant>,
    unlogged: u64,
}

impl Refusals {
    fn note(&mut self, listener: &'static str, cap: u32) {
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            listener,
            max_connections = cap,
            refused = self.unlogged,
            "connections refused: the listener is at its connection cap"
        );
        self.last_log = Some(now);
        self.unlogged = 0;
    }
}

/// One accepted connection: its listener, limits, and what is happening on it.
struct Connection {
    name: &'static str,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    activity: Arc<Activity>,
    /// Held until the connection ends: the listener's cap.
    _slot: OwnedSemaphorePermit,
}

type HyperConnection<'a, S> = auto::Connection<'a, TokioIo<Watched>, Tracked<S>, TokioExecutor>;

impl Connection {
    async fn serve<S>(
        self,
        tcp: TcpStream,
        builder: Arc<auto::Builder<TokioExecutor>>,
        service: S,
        mut stopped: watch::Receiver<bool>,
    ) where
        S: tower::Service<Request, Response = Response, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let open = self
            .metrics
            .connections_open
            .get_or_create(&ListenerLabels {
                listener: self.name,
            })
            .clone();
        open.inc();
        let io = TokioIo::new(Watched {
            tcp,
            activity: self.activity.clone(),
        });
        let tracked = Tracked {
            inner: service,
            activity: self.activity.clone(),
        };
        let dropped = {
            let conn = builder.serve_connection(io, tracked);
            let conn = std::pin::pin!(conn);
            self.supervise(conn, &mut stopped).await
        };
        if let Some(why) = dropped {
            count_dropped(&self.metrics, self.name, why);
        }
        open.dec();
    }

    /// Drives the connection until it ends, or until a timeout or the shutdown closes it with
    /// no request in flight (returning why).
    async fn supervise<S>(
        &self,
        mut conn: Pin<&mut HyperConnection<'_, S>>,
        stopped: &mut watch::Receiver<bool>,
    ) -> Option<Dropped>
    where
        S: tower::Service<Request, Response = Response, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let mut stopping = false;
        // One timer for the connection's life, moved only when its deadline does: the loop
        // turns a few times per request, and arming a fresh timer each turn costs the timer
        // wheel two lock round-trips on the hot path.
        let timer = tokio::time::sleep_until(Instant::now());
        let mut timer = std::pin::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            let at = self.activity.deadline(&self.limits).map(|(at, _)| at);
            if let Some(at) = at
                && armed != Some(at)
            {
                timer.as_mut().reset(at);
            }
            armed = at;
            tokio::select! {
                biased;
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(listener = self.name, error = %e, "connection ended with an error");
                    }
                    return None;
                }
                _ = stop_requested(stopped), if !stopping => {
                    stopping = true;
                    // HTTP/1.1: no keep-alive after the current response; HTTP/2: GOAWAY.
                    conn.as_mut().graceful_shutdown();
                }
                _ = self.activity.changed.notified() => {}
                _ = timer.as_mut(), if armed.is_some() => {}
            }
            if stopping && self.activity.in_flight() == 0 {
                close_now(conn, true).await;
                return Some(Dropped::Shutdown);
            }
            if let Some((at, why)) = self.activity.deadline(&self.limits) {
                if at <= Instant::now() {
                    close_now(conn, stopping).await;
                    return Some(why);
                }
            }
        }
    }
}

/// Resolves once the listener is told to stop (or its [`super::Listening`] is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Closes a connection that has no request in flight, after one last poll: it writes an
/// HTTP/2 client's GOAWAY (so the client knows nothing it sent was lost) and whatever of a
/// last answer is still unflushed, if the socket takes it. `told`: the graceful shutdown has
/// already begun.
async fn close_now<S>(mut conn: Pin<&mut HyperConnection<'_, S>>, told: bool)
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    if !told {
        conn.as_mut().graceful_shutdown();
    }
    let _ = futures::poll!(conn.as_mut());
}

/// What a connection is doing, as far as its deadlines go.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Phase {
    /// Requests whose head has arrived and whose response body is not yet done.
    in_flight: usize,
    /// Known once the first request arrives.
    http2: bool,
    /// Waiting for a request head since (no request in flight and bytes of one have come, or
    /// the connection is new).
    head_since: Option<Instant>,
    /// No request in flight since (its last response).
    idle_since: Instant,
}

impl Phase {
    /// A new connection owes its first request head.
    fn new(now: Instant) -> Phase {
        Phase {
            in_flight: 0,
            http2: false,
            head_since: Some(now),
            idle_since: now,
        }
    }

    /// Bytes arrived. Between HTTP/1.1 requests they begin the next head, whose clock starts
    /// now; true when that moved the deadline. HTTP/2 frames between streams (pings, window
    /// updates) are not a request head: the idle clock keeps running.
    fn bytes_read(&mut self, now: Instant) -> bool {
        if self.in_flight > 0 || self.http2 || self.head_since.is_some() {
            return false;
        }
        self.head_since = Some(now);
        true
    }

    fn request_started(&mut self, http2: bool) {
        self.in_flight += 1;
        self.http2 = http2;
        self.head_since = None;
    }

    /// True when that left the connection idle (a deadline to watch again).
    fn request_done(&mut self, now: Instant) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight > 0 {
            return false;
        }
        self.idle_since = now;
        true
    }

    /// When the connection is to be closed and why; none while a request is in flight.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Dropped)> {
        if self.in_flight > 0 {
            return None;
        }
        Some(match self.head_since {
            Some(since) => (since + limits.head_timeout, Dropped::HeadTimeout),
            None => (self.idle_since + limits.idle_timeout, Dropped::IdleTimeout),
        })
    }
}

/// A connection's [`Phase`], shared by its I/O, its requests (HTTP/2 streams run on tasks of
/// their own) and its supervisor, which `changed` wakes when a deadline may have come closer.
struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            phase: Mutex::new(Phase::new(Instant::now())),
            changed: Notify::new(),
        }
    }
}

impl Activity {
    fn with_phase<T>(&self, f: impl FnOnce(&mut Phase) -> T) -> T {
        f(&mut self.phase.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn bytes_read(&self) {
        if self.with_phase(|p| p.bytes_read(Instant::now())) {
            self.changed.notify_one();
        }
    }

    fn request_started(self: &Arc<Self>, version: Version) -> InFlightGuard {
        self.with_phase(|p| p.request_started(version == Version::HTTP_2));
        InFlightGuard(self.clone())
    }

    fn request_done(&self) {
        if self.with_phase(|p| p.request_done(Instant::now())) {
            self.changed.notify_one();
        }
    }

    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Dropped)> {
        self.with_phase(|p| p.deadline(limits))
    }

    fn in_flight(&self) -> usize {
        self.with_phase(|p| p.in_flight)
    }
}

/// One request in flight, until dropped with its response body.
struct InFlightGuard(Arc<Activity>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// The TCP stream, telling the connection's [`Activity`] when bytes arrive.
struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The listener's service as hyper calls it: each request is in flight from its call until
/// its response body is dropped.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for Tracked<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = hyper::Response<InFlightBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let guard = self.activity.request_started(req.version());
        let answer = self.inner.clone().oneshot(req.map(Body::new));
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| InFlightBody {
                body,
                _guard: guard,
            }))
        })
    }
}

/// A response body that keeps its request in flight until hyper has sent it and drops it.
struct InFlightBody {
    body: Body,
    _guard: InFlightGuard,
}

impl hyper::body::Body for InFlightBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        head_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(120),
        max_connections: 8,
        max_head_bytes: 16 * 1024,
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_new_connection_owes_its_head_within_the_head_timeout() {
        let t0 = Instant::now();
        let mut p = Phase::new(t0);
        assert_eq!(
            p.deadline(&LIMITS),
            Some((t0 + secs(10), Dropped::HeadTimeout))
        );
        // Bytes of the first head do not restart its clock.
        assert!(!p.bytes_read(t0 + secs(5)));
        assert_eq!(
            p.deadline(&LIMITS),
            Some((t0 + secs(10), Dropped::HeadTimeout))
        );
    }

    #[test]
    fn a_request_in_flight_has_no_deadline() {
        let t0 = Instant::now();
        let mut p = Phase::new(t0);
        p.request_started(false);
        assert_eq!(p.deadline(&LIMITS), None);
        assert!(
            !p.bytes_read(t0 + secs(500)),
            "a request body is not a new head"
        );
        assert_eq!(p.deadline(&LIMITS), None);
    }

    #[test]
    fn after_its_response_a_connection_is_idle_until_the_next_head_begins() {
        let t0 = Instant::now();
        let mut p = Phase::new(t0);
        p.request_started(false);
        assert!(p.request_done(t0 + secs(1)));
        assert_eq!(
            p.deadline(&LIMITS),
            Some((t0 + secs(121), Dropped::IdleTimeout))
        );
        // HTTP/1.1: the first byte of the next request starts its head clock.
        assert!(p.bytes_read(t0 + secs(50)));
        assert_eq!(
            p.deadline(&LIMITS),
            Some((t0 + secs(60), Dropped::HeadTimeout))
        );
        p.request_started(false);
        assert_eq!(p.deadline(&LIMITS), None);
    }

    #[test]
    fn http2_frames_between_streams_do_not_hold_an_idle_connection() {
        let t0 = Instant::now();
        let mut p = Phase::new(t0);
        p.request_started(true);
        p.request_started(true);
        assert!(!p.request_done(t0 + secs(1)), "one stream still open");
        assert_eq!(p.deadline(&LIMITS), None);
        assert!(p.request_done(t0 + secs(2)));
        assert!(
            !p.bytes_read(t0 + secs(30)),
            "a ping ack is not a request head"
        );
        assert_eq!(
            p.deadline(&LIMITS),
            Some((t0 + secs(122), Dropped::IdleTimeout))
        );
    }

    #[test]
    fn defaults_fit_an_ingress_nginx_subrequest_and_bound_memory() {
        let limits = ListenerLimits::default();
        // 4 × 16 KiB of client headers plus the URL twice (X-Original-URL,
        // X-Auth-Request-Redirect) at nginx's 16 KiB line limit.
        assert!(limits.auth.max_head_bytes >= 4 * 16 * 1024 + 2 * 16 * 1024);
        assert!(limits.auth.idle_timeout > Duration::from_secs(90));
        assert!(limits.auth.head_timeout < limits.auth.idle_timeout);
        assert!(limits.admin.max_connections < limits.auth.max_connections);
    }
}
