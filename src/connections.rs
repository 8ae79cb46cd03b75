//! Accepting and serving HTTP/1.1 and HTTP/2 connections: a cap on how many are open, a
//! back-off when descriptors run out, header-read and idle timeouts, and a graceful drain.
//!
//! poem's own server holds a slow or idle socket forever and retries a failed `accept`
//! at once (a busy loop when descriptors run out), so the service runs its poem endpoint
//! on hyper through this loop instead.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use poem::{
    Endpoint, Response,
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};

mod shortcut;

pub use self::shortcut::{Arrived, Shortcut};
use self::shortcut::{Next, PassOn};

/// A client gets this long to send a request's headers, and a kept-alive HTTP/1.1
/// connection may wait this long for its next request.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection with no request in flight and no bytes moving either way for this long is
/// closed: an idle HTTP/2 connection, or a client that stopped reading its response.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Descriptors kept free for everything that is not a client connection: the database
/// and its journal, the listener, the runtime, log files.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Open connections at the most, however many descriptors the process may have: each
/// costs memory, and past a few thousand a load balancer in front is the better answer.
const MAX_CONNECTIONS: u64 = 10_000;

/// How long to wait before accepting again when the process or the system is out of
/// descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// HTTP/2 requests one connection may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 100;

/// Raises the soft limit on open descriptors to the hard limit, and returns how many
/// connections may be open at once within it.
pub fn connection_limit() -> usize {
    let descriptors = raise_descriptor_limit();
    let limit = descriptors
        .saturating_sub(RESERVED_DESCRIPTORS)
        .clamp(1, MAX_CONNECTIONS);
    usize::try_from(limit).unwrap_or(1)
}

#[cfg(unix)]
fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(not(unix))]
fn raise_descriptor_limit() -> u64 {
    1024
}

/// Serves `endpoint` on `listener` until `shutdown` completes; then stops accepting,
/// asks every connection to finish its requests, and waits up to `grace` for them.
pub async fn serve<E>(
    listener: TcpListener,
    endpoint: E,
    shortcut: Option<Arc<dyn Shortcut>>,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) -> io::Result<()>
where
    E: Endpoint<Output = Response> + 'static,
{
    let local_addr = listener.local_addr()?;
    let endpoint = Arc::new(endpoint);
    let slots = Arc::new(Semaphore::new(max_connections));
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // Waiting for a slot before accepting leaves further clients in the kernel's
        // backlog, where they cost this process no descriptor.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, remote_addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    back_off(&err).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            endpoint: endpoint.clone(),
            shortcut: shortcut.clone(),
            local_addr,
            remote_addr,
            stopping: stopping.clone(),
        };
        tokio::spawn(async move {
            connection.serve(stream).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every slot back means every connection has ended.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
    Ok(())
}

/// A failed `accept`: out of descriptors or memory, wait before trying again instead of
/// spinning; anything else (a client that hung up before it was accepted) is no reason to.
async fn back_off(err: &io::Error) {
    let exhausted = matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    );
    if exhausted {
        tracing::warn!(error = %err, "cannot accept connections; retrying shortly");
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    } else {
        tracing::debug!(error = %err, "accept failed");
    }
}

struct Connection<E> {
    endpoint: Arc<E>,
    shortcut: Option<Arc<dyn Shortcut>>,
    local_addr: SocketAddr,
    remote_addr: SocketAddr,
    stopping: watch::Receiver<bool>,
}

impl<E: Endpoint<Output = Response> + 'static> Connection<E> {
    async fn serve(mut self, stream: TcpStream) {
        let activity = Arc::new(Activity::new());
        let service = {
            let activity = activity.clone();
            let endpoint = self.endpoint.clone();
            let shortcut = self.shortcut.clone();
            let local = LocalAddr(self.local_addr.into());
            let remote = RemoteAddr(self.remote_addr.into());
            let remote_addr = self.remote_addr;
            hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let in_flight = activity.request_started();
                let arrived = Instant::now();
                let next = Next::of(shortcut.as_ref(), request, remote_addr, arrived, || {
                    PassOn {
                        endpoint: endpoint.clone(),
                        local: local.clone(),
                        remote: remote.clone(),
                        arrived,
                    }
                });
                async move {
                    let response = next.respond().await;
                    drop(in_flight);
                    Ok::<_, Infallible>(hyper::Response::from(response))
                }
            })
        };
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let connection = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        let mut draining = *self.stopping.borrow();
        if draining {
            connection.as_mut().graceful_shutdown();
        }
        loop {
            let idle_left = activity.idle_limit().saturating_sub(activity.idle_for());
            tokio::select! {
                _ = connection.as_mut() => return,
                changed = self.stopping.changed(), if !draining => {
                    draining = true;
                    if changed.is_ok() {
                        connection.as_mut().graceful_shutdown();
                    }
                }
                () = tokio::time::sleep(idle_left) => {
                    if activity.idle_for() >= activity.idle_limit() {
                        tracing::debug!(remote = %self.remote_addr, "closing an idle connection");
                        return;
                    }
                }
            }
        }
    }
}

/// When a connection last moved bytes, and how many of its requests are being handled.
struct Activity {
    started: Instant,
    last_millis: AtomicU64,
    in_flight: AtomicUsize,
    has_read: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_millis: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            has_read: AtomicBool::new(false),
        }
    }

    /// A client that has not sent a byte yet gets no longer than one that is sending
    /// its headers (hyper's own header timer starts only once it has seen which HTTP
    /// version the client speaks).
    fn idle_limit(&self) -> Duration {
        if self.has_read.load(Ordering::Relaxed) {
            IDLE_TIMEOUT
        } else {
            HEADER_READ_TIMEOUT
        }
    }

    fn touch(&self) {
        let millis = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(millis, Ordering::Relaxed);
    }

    /// How long the connection has been idle: zero while a request is being handled.
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request being handled; the connection is not idle while one exists.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that records when bytes last moved through it.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    fn record<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if matches!(poll, Poll::Ready(Ok(_))) {
            self.activity.touch();
        }
        poll
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let filled = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > filled {
            self.activity.has_read.store(true, Ordering::Relaxed);
        }
        self.record(poll)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.record(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.record(poll)
    }

    /// No: hyper then copies a small body into the buffer that holds the headers and
    /// sends one buffer per response, as under poem's own server. Measured on
    /// `/users/me`, that is about a tenth less CPU per request than `writev` of the two.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
