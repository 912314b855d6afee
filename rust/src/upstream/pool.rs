//! Idle keep-alive connections to one upstream server.
//!
//! Connections are reused last-in first-out so that the fewest stay warm, and
//! checked without a system call before reuse: the reactor already knows
//! whether the server closed a connection while it sat idle.

use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::timer::Deadline;

/// A connection waiting for its next request.
pub(crate) struct IdleConn {
    pub(crate) io: TcpStream,
    pub(crate) requests: u32,
    deadline: Deadline,
    since: Instant,
}

/// The idle connections of one server.
pub(crate) struct Pool {
    idle: Mutex<Vec<IdleConn>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// The most recently used live connection, if any.
    pub(crate) fn checkout(&self) -> Option<(TcpStream, u32, Deadline)> {
        let mut idle = self.idle.lock().ok()?;
        let now = Instant::now();
        while let Some(conn) = idle.pop() {
            if now.duration_since(conn.since) >= self.idle_timeout {
                // Everything below is older still.
                idle.clear();
                return None;
            }
            if is_alive(&conn.io) {
                return Some((conn.io, conn.requests, conn.deadline));
            }
        }
        None
    }

    /// Keep `io` for reuse, unless the pool is full.
    pub(crate) fn checkin(&self, io: TcpStream, requests: u32, deadline: Deadline) {
        if self.max_idle == 0 || self.idle_timeout.is_zero() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(IdleConn {
                    io,
                    requests,
                    deadline,
                    since: Instant::now(),
                });
            }
        }
    }

    /// Close connections idle for longer than the timeout.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|c| now.duration_since(c.since) < self.idle_timeout);
        }
    }

    /// Idle connections held now.
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}

/// Whether an idle connection is still open and has nothing unexpected to read.
fn is_alive(io: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match io.poll_read_ready(&mut cx) {
        // No event since the last read: the server has neither sent nor closed.
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut byte = [0u8; 1];
            matches!(io.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn closed_and_expired_connections_are_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let pool = Pool::new(4, Duration::from_secs(60));

        let client = TcpStream::connect(addr).await.expect("connect");
        let (server_side, _) = listener.accept().await.expect("accept");
        pool.checkin(client, 1, Deadline::default());
        assert_eq!(pool.idle_count(), 1);
        let (io, requests, _) = pool.checkout().expect("live connection");
        assert_eq!(requests, 1);

        // The server closes while the connection is idle.
        pool.checkin(io, 1, Deadline::default());
        drop(server_side);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            pool.checkout().is_none(),
            "closed connection must be discarded"
        );

        // Unexpected bytes from the server also disqualify a connection.
        let client = TcpStream::connect(addr).await.expect("connect");
        let (mut server_side, _) = listener.accept().await.expect("accept");
        pool.checkin(client, 1, Deadline::default());
        server_side
            .write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.checkout().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_and_capacity() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let pool = Pool::new(1, Duration::from_secs(5));
        let a = TcpStream::connect(addr).await.expect("connect");
        let b = TcpStream::connect(addr).await.expect("connect");
        pool.checkin(a, 1, Deadline::default());
        pool.checkin(b, 1, Deadline::default());
        assert_eq!(pool.idle_count(), 1, "capacity bounds the pool");
        tokio::time::advance(Duration::from_secs(6)).await;
        pool.sweep();
        assert_eq!(pool.idle_count(), 0);
    }
}
