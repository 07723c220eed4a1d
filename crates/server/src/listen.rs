//! The one accept loop, shared by the registry listener and the admin listener, and every limit
//! a connection lives under:
//!
//! - open connections at most ([`Limits::max_connections`]), and per client address
//!   ([`Limits::max_per_address`]), so one host cannot take every slot; the listen backlog is
//!   deep ([`BACKLOG`]) so a burst waits in the kernel instead of being refused;
//! - the TLS handshake inside the per-connection task, with a deadline;
//! - a deadline on the first bytes of every connection ([`Limits::first_bytes`]): they say which
//!   protocol it speaks (HTTP/2's preface, or an HTTP/1 request), read here rather than by
//!   hyper's version sniffing, which waits forever;
//! - HTTP/1: hyper's header-read timer, a bounded write queue; HTTP/2: at most
//!   [`Limits::h2_streams`] streams per connection, a bounded send buffer per stream, keep-alive
//!   pings;
//! - requests in flight at most over all connections ([`Limits::max_requests`]) and per client
//!   address ([`Limits::max_requests_per_address`]), each holding its slots until its response
//!   body has been sent (or abandoned), not just its headers: one host's flood queues behind its
//!   own slots, not in front of everyone else's requests;
//! - an idle deadline: a connection with no request in flight is closed after
//!   [`Limits::first_request`] when it has not sent one yet, after [`Limits::idle`] otherwise;
//!   a client that does not finish a graceful close (HTTP/2: acknowledge the GOAWAY's ping)
//!   within [`CLOSE_GRACE`] is cut off;
//! - one shutdown signal: stop accepting, let connections finish within a grace period.
//!
//! Every request carries the client's address ([`Peer`]) in its extensions.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::body::{Body, BoxError};

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections the kernel queues before they are accepted.
pub const BACKLOG: u32 = 4096;
/// How long an idle connection may take to finish closing once asked to.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// HTTP/2's connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What one listener allows.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    /// Open connections at most; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Open connections from one client address at most; further ones are closed at once.
    pub max_per_address: usize,
    /// Requests in flight at most over all connections, each until its body has been sent.
    pub max_requests: usize,
    /// Requests in flight from one client address at most; further ones wait for its slots.
    pub max_requests_per_address: usize,
    /// How long a new connection may take to send its first bytes (which name its protocol).
    pub first_bytes: Duration,
    /// How long a client may take to send a request head (HTTP/1).
    pub header_read_timeout: Duration,
    /// How long a connection may stay open without having sent a request.
    pub first_request: Duration,
    /// How long a connection may stay open with no request in flight, after its first one.
    pub idle: Duration,
    /// How many bytes of a response hyper queues for an HTTP/1 connection before it stops
    /// pulling the body; also the largest request head accepted. `None`: hyper's default.
    pub write_queue: Option<usize>,
    /// HTTP/2 streams per connection at most.
    pub h2_streams: u32,
    /// HTTP/2 bytes buffered per stream for sending at most.
    pub h2_send_buffer: usize,
    /// How long open connections may run on after the shutdown signal.
    pub shutdown_grace: Duration,
}

/// The client's address: in the extensions of every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// Binds `addr` with a deep accept backlog ([`BACKLOG`]).
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// What each client address with open connections holds.
struct Address {
    connections: usize,
    /// Its request slots ([`Limits::max_requests_per_address`]).
    requests: Arc<Semaphore>,
}

/// The client addresses with open connections.
struct Addresses {
    open: Mutex<HashMap<IpAddr, Address>>,
    max_connections: usize,
    max_requests: usize,
}

/// One open connection of an address; counted down when dropped.
struct Slot {
    addresses: Arc<Addresses>,
    ip: IpAddr,
    /// The address's request slots, shared by all its connections.
    requests: Arc<Semaphore>,
}

impl Addresses {
    fn new(max_connections: usize, max_requests: usize) -> Addresses {
        Addresses {
            open: Mutex::default(),
            max_connections,
            max_requests,
        }
    }

    /// A connection slot of `ip`, or `None` when it has its most connections open.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let address = open.entry(ip).or_insert_with(|| Address {
            connections: 0,
            requests: Arc::new(Semaphore::new(self.max_requests)),
        });
        if address.connections >= self.max_connections {
            return None;
        }
        address.connections += 1;
        Some(Slot {
            addresses: self.clone(),
            ip,
            requests: address.requests.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .addresses
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(address) = open.get_mut(&self.ip) {
            address.connections -= 1;
            if address.connections == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves `listener` until `signal` changes, each connection with a clone of `service`.
pub(crate) async fn serve<S, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    service: S,
    mut signal: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future = F>
        + Clone
        + Send
        + Sync
        + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let requests = Arc::new(Semaphore::new(limits.max_requests));
    let addresses = Arc::new(Addresses::new(
        limits.max_per_address,
        limits.max_requests_per_address,
    ));
    let limits = Arc::new(limits);
    // Every connection task holds a clone; when all are gone, the drain is complete.
    let (open, mut drained) = mpsc::channel::<()>(1);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the semaphore is never closed
            },
            _ = signal.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = signal.changed() => break,
        };
        let Some(slot) = addresses.take(peer.ip()) else {
            tracing::debug!(%peer, "too many connections from this address; closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            peer: Peer(peer),
            limits: limits.clone(),
            requests: requests.clone(),
            signal: signal.clone(),
            _open: open.clone(),
            _slot: slot,
            _permit: permit,
        };
        let service = service.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection.run(stream, service).await,
                Some(acceptor) => {
                    if let Some(stream) = handshake(acceptor, stream, peer).await {
                        connection.run(stream, service).await;
                    }
                }
            }
        });
    }
    drop(listener);
    drop(open);
    if tokio::time::timeout(limits.shutdown_grace, drained.recv())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the remaining connections");
    }
}

/// One accepted connection and what it holds while it lives.
struct Connection {
    peer: Peer,
    limits: Arc<Limits>,
    requests: Arc<Semaphore>,
    signal: watch::Receiver<bool>,
    _open: mpsc::Sender<()>,
    _slot: Slot,
    _permit: OwnedSemaphorePermit,
}

/// The protocol a connection's first bytes name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

impl Connection {
    async fn run<I, S, F>(self, mut io: I, service: S)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future = F>
            + Clone
            + Send
            + Sync
            + 'static,
        F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    {
        let peer = self.peer.0;
        let (protocol, first) = match sniff(&mut io, self.limits.first_bytes).await {
            Ok(sniffed) => sniffed,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "no request; closed");
                return;
            }
        };
        let io = TokioIo::new(Rewind {
            first: Some(first),
            inner: io,
        });
        let activity = Arc::new(Activity::new());
        let service = Tracked {
            inner: service,
            peer: self.peer,
            requests: self.requests.clone(),
            address_requests: self._slot.requests.clone(),
            activity: activity.clone(),
        };
        let limits = &self.limits;
        match protocol {
            Protocol::Http1 => {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout);
                if let Some(queue) = limits.write_queue {
                    builder.max_buf_size(queue);
                }
                let conn = builder.serve_connection(io, service);
                self.drive(conn, &activity).await;
            }
            Protocol::Http2 => {
                let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                builder
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(limits.h2_streams)
                    .max_send_buf_size(limits.h2_send_buffer)
                    .keep_alive_interval(Some(limits.idle / 3))
                    .keep_alive_timeout(limits.idle / 3);
                let conn = builder.serve_connection(io, service);
                self.drive(conn, &activity).await;
            }
        }
    }

    /// Runs `conn` until it ends; shuts it down gracefully when it has been idle too long or
    /// the server stops.
    async fn drive<C: GracefulConnection>(mut self, conn: C, activity: &Activity) {
        let mut conn = pin!(conn);
        let mut shutting_down = false;
        // Armed when an idle connection is asked to close.
        let cut_off = tokio::time::sleep(Duration::ZERO);
        let mut cut_off = pin!(cut_off);
        let mut closing_idle = false;
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = activity.idle(&self.limits), if !shutting_down => {
                    tracing::debug!(peer = %self.peer.0, "idle connection closed");
                    conn.as_mut().graceful_shutdown();
                    shutting_down = true;
                    closing_idle = true;
                    cut_off.as_mut().reset(Instant::now() + CLOSE_GRACE);
                }
                _ = cut_off.as_mut(), if closing_idle => {
                    tracing::debug!(peer = %self.peer.0, "idle connection did not close; cut off");
                    return;
                }
                _ = self.signal.changed(), if !shutting_down => {
                    conn.as_mut().graceful_shutdown();
                    shutting_down = true;
                }
            }
        }
    }
}

/// Reads a connection's first bytes within `deadline`: the HTTP/2 preface, or anything else
/// (an HTTP/1 request, which hyper's header-read timer then bounds).
async fn sniff<I: AsyncRead + Unpin>(
    io: &mut I,
    deadline: Duration,
) -> io::Result<(Protocol, Bytes)> {
    let read = async {
        let mut first = Vec::with_capacity(PREFACE.len());
        loop {
            let mut chunk = [0u8; PREFACE.len()];
            let n = io.read(&mut chunk[..PREFACE.len() - first.len()]).await?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            first.extend_from_slice(&chunk[..n]);
            if !PREFACE.starts_with(&first) {
                return Ok((Protocol::Http1, Bytes::from(first)));
            }
            if first.len() == PREFACE.len() {
                return Ok((Protocol::Http2, Bytes::from(first)));
            }
        }
    };
    tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// A connection whose first bytes were read already: they are read again first.
struct Rewind<I> {
    first: Option<Bytes>,
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut first) = self.first.take() {
            let n = first.len().min(buf.remaining());
            buf.put_slice(&first.split_to(n));
            if !first.is_empty() {
                self.first = Some(first);
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a connection is doing: requests in flight, requests seen, when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    served: AtomicUsize,
    /// Milliseconds after `started` at which the last request ended (or the connection began).
    quiet_since: AtomicU64,
    started: Instant,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            quiet_since: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.served.fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.quiet_since.store(now, Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Resolves once the connection has had no request in flight for its idle deadline.
    async fn idle(&self, limits: &Limits) {
        loop {
            let deadline = if self.served.load(Ordering::SeqCst) == 0 {
                limits.first_request
            } else {
                limits.idle
            };
            let quiet = Duration::from_millis(self.quiet_since.load(Ordering::SeqCst));
            let idle_for = self.started.elapsed().saturating_sub(quiet);
            if self.in_flight.load(Ordering::SeqCst) == 0 && idle_for >= deadline {
                return;
            }
            let wait = if self.in_flight.load(Ordering::SeqCst) == 0 {
                deadline.saturating_sub(idle_for)
            } else {
                deadline
            };
            tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
        }
    }
}

/// The service of one connection: the client's address into the request, a request slot of
/// its address and one of the listener held until the response body ends, the connection's
/// activity counted.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    peer: Peer,
    requests: Arc<Semaphore>,
    address_requests: Arc<Semaphore>,
    activity: Arc<Activity>,
}

impl<S, F> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future = F>
        + Clone
        + Send
        + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.peer);
        self.activity.begin();
        let ended = Ended(self.activity.clone());
        let requests = self.requests.clone();
        let address_requests = self.address_requests.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            // The address's slot first: a flood waits in its own queue. The semaphores are never
            // closed; `ok()` only keeps this free of a panic path.
            let address_slot = address_requests.acquire_owned().await.ok();
            let slot = requests.acquire_owned().await.ok();
            let response = inner.call(request).await?;
            let (parts, body) = response.into_parts();
            let body = Holding {
                inner: body,
                _held: (slot, address_slot, ended),
            };
            Ok(Response::from_parts(parts, body.boxed_unsync()))
        })
    }
}

/// Ends a request's activity when dropped (with its response body).
struct Ended(Arc<Activity>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A body that holds `T` until it is dropped: after its last frame, or when abandoned.
struct Holding<T> {
    inner: Body,
    _held: T,
}

impl<T: Unpin> HttpBody for Holding<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_first_bytes_name_the_protocol() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GET /v2/ HTTP/1.1\r\n").await.unwrap();
        let (protocol, first) = sniff(&mut server, Duration::from_secs(1)).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        assert_eq!(
            &first[..],
            b"GET /v2/ HTTP/1.1\r\n",
            "decided without waiting for more"
        );

        let (mut client, mut server) = tokio::io::duplex(64);
        let sniffed = tokio::spawn(async move { sniff(&mut server, Duration::from_secs(5)).await });
        for byte in PREFACE {
            client.write_all(&[*byte]).await.unwrap(); // byte by byte
        }
        let (protocol, first) = sniffed.await.unwrap().unwrap();
        assert_eq!((protocol, &first[..]), (Protocol::Http2, PREFACE));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_or_stalling_client_is_given_up_on() {
        let (_client, mut server) = tokio::io::duplex(64);
        let silent = sniff(&mut server, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(silent.kind(), io::ErrorKind::TimedOut);
        // Half of the preface, then nothing.
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&PREFACE[..10]).await.unwrap();
        let stalled = sniff(&mut server, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(stalled.kind(), io::ErrorKind::TimedOut);
        drop(client);
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        let closed = sniff(&mut server, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(closed.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn rewound_bytes_are_read_first() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"rest").await.unwrap();
        let mut io = Rewind {
            first: Some(Bytes::from_static(b"first-")),
            inner: server,
        };
        let mut got = vec![0u8; 10];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"first-rest");
    }

    #[test]
    fn one_address_cannot_take_every_slot() {
        let addresses = Arc::new(Addresses::new(3, 2));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        let held: Vec<Slot> = (0..3).map(|_| addresses.take(a).unwrap()).collect();
        assert!(addresses.take(a).is_none());
        let other = addresses.take(b).expect("another address is not affected");
        // The request slots are per address, shared by its connections.
        let busy: Vec<_> = held
            .iter()
            .take(2)
            .map(|slot| slot.requests.clone().try_acquire_owned().unwrap())
            .collect();
        assert!(held[2].requests.clone().try_acquire_owned().is_err());
        assert!(other.requests.clone().try_acquire_owned().is_ok());
        drop(busy);
        drop(held);
        assert!(addresses.take(a).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_found_out() {
        let limits = Limits {
            max_connections: 1,
            max_per_address: 1,
            max_requests: 1,
            max_requests_per_address: 1,
            first_bytes: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            first_request: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            write_queue: None,
            h2_streams: 1,
            h2_send_buffer: 1,
            shutdown_grace: Duration::from_secs(1),
        };
        let activity = Activity::new();
        let started = Instant::now();
        activity.idle(&limits).await;
        assert_eq!(
            started.elapsed().as_secs(),
            10,
            "no request at all: the first deadline"
        );
        activity.begin();
        let busy = tokio::time::timeout(Duration::from_secs(600), activity.idle(&limits)).await;
        assert!(busy.is_err(), "a request in flight is never idle");
        activity.end();
        let started = Instant::now();
        activity.idle(&limits).await;
        assert_eq!(started.elapsed().as_secs(), 60);
    }
}
