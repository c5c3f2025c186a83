//! The accept loop: HTTP/1.1 connections with the deadlines and bounds that
//! `axum::serve` does not set.
//!
//! `axum::serve` has no header-read timeout, no idle timeout, no write
//! timeout and no cap on open connections, so half-open or idle clients
//! could hold sockets for ever and run the process out of file descriptors.
//! This module serves the same router with hyper's connection builder and:
//!
//! - a **header-read deadline** (`header_read_timeout`): a client must send a
//!   whole request head within it, from the moment the server starts waiting
//!   for one; hyper starts that clock again whenever a keep-alive connection
//!   goes idle, so it is the idle timeout too;
//! - a **write deadline** (`write_timeout`): a client that stops reading its
//!   response is dropped when a write makes no progress for that long
//!   (hyper has none; see [`WriteDeadline`]);
//! - a **connection cap** (`max_connections`): at the cap the loop stops
//!   accepting, so new clients wait in the kernel's backlog instead of
//!   taking the last file descriptors; the default is derived from the
//!   process's file-descriptor limit;
//! - a bounded **header count** (`max_headers`, hyper's own backstop behind
//!   the JSON 431 of the router);
//! - **graceful shutdown**: on the signal, stop accepting, let every
//!   connection finish its request in flight, wait at most `drain_timeout`.
//!
//! The request's own deadline (the whole handler, body reading included) is
//! the router's timeout layer.
//!
//! Invariants: no accepted socket lives without a permit of the cap; no
//! connection outlives the drain deadline after shutdown.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{watch, Semaphore},
    time::Sleep,
};

/// Deadlines and bounds of the connection layer.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Longest wait for a complete request head, and the idle timeout of a
    /// keep-alive connection.
    pub header_read_timeout: Duration,
    /// Longest a response write may make no progress.
    pub write_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most request headers (hyper answers 431 beyond).
    pub max_headers: usize,
    /// Longest graceful shutdown waits for open connections.
    pub drain_timeout: Duration,
}

/// File descriptors kept for everything but client sockets (database
/// connections, the SQLite files, logs) when the cap is derived.
const RESERVED_FDS: u64 = 512;
/// The derived cap never exceeds this: beyond it, a proxy in front should do
/// the fan-in.
const MAX_AUTO_CONNECTIONS: u64 = 10_000;

/// The connection cap for `configured` (0 = derive from the file-descriptor
/// limit). Raises the soft descriptor limit to the hard one first, as most
/// servers do, so that the cap is not set by an accidental default.
pub fn connection_cap(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024),
    };
    let usable = soft.saturating_sub(RESERVED_FDS).max(soft / 2).max(16);
    usable.min(MAX_AUTO_CONNECTIONS) as usize
}

/// Serves `app` on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let cap = Arc::new(Semaphore::new(limits.max_connections));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut warned_full = false;
    loop {
        let permit = match cap.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !warned_full {
                    tracing::warn!(
                        max = limits.max_connections,
                        "connection cap reached: new clients wait until a connection closes"
                    );
                    warned_full = true;
                }
                tokio::select! {
                    p = cap.clone().acquire_owned() => p.expect("the cap is never closed"),
                    _ = shutdown.as_mut() => break,
                }
            }
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            _ = shutdown.as_mut() => break,
        };
        if cap.available_permits() > limits.max_connections / 10 {
            warned_full = false;
        }
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let limits = limits.clone();
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let io = TokioIo::new(WriteDeadline::new(stream, limits.write_timeout));
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_headers(limits.max_headers);
            let conn = builder.serve_connection(io, TowerToHyperService::new(app));
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain_timeout, cap.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = limits.max_connections - cap.available_permits(),
            "connections still open after the drain timeout: closing them"
        );
    }
}

/// After a failed `accept`: per-connection errors (the peer gave up) are
/// ignored; resource exhaustion (EMFILE, ENFILE, ENOMEM) is waited out
/// briefly instead of spinning.
async fn accept_failed(e: &io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted | WouldBlock
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 50 ms");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// A TCP stream whose writes fail with `TimedOut` after `limit` without
/// progress. Written by hand: hyper has header-read deadlines but no write
/// deadline, and tokio-io-timeout's wrapper would add a dependency for
/// thirty lines.
pub struct WriteDeadline {
    inner: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    /// Wraps `inner`.
    pub fn new(inner: TcpStream, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Turns a pending write into `TimedOut` once it has been pending for `limit`.
    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.stalled = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client stopped reading the response",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, poll)
    }
}
