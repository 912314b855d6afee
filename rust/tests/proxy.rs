//! The engine end to end, without Python: a real listener in front of a
//! small tokio upstream that records what it receives.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rproxy_engine::{Engine, EngineConfig, RunningEngine};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream saw: one entry per connection, all bytes received on it.
#[derive(Default, Clone)]
struct Seen(Arc<Mutex<Vec<Vec<u8>>>>);

impl Seen {
    fn connections(&self) -> usize {
        self.0.lock().expect("lock").len()
    }
    fn all(&self) -> String {
        let conns = self.0.lock().expect("lock");
        conns
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect()
    }
}

/// An upstream that answers every request head with a fixed response and
/// keeps the connection open. Requests must not carry bodies beyond `body_len`.
async fn upstream(response: &'static [u8]) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let seen = Seen::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            tokio::spawn(async move {
                let index = {
                    let mut conns = record.0.lock().expect("lock");
                    conns.push(Vec::new());
                    conns.len() - 1
                };
                let mut pending = Vec::new();
                let mut buf = [0u8; 65536];
                loop {
                    let n = match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    record.0.lock().expect("lock")[index].extend_from_slice(&buf[..n]);
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = find(&pending, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&pending[..end]).to_lowercase();
                        let body = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if pending.len() < end + 4 + body {
                            break;
                        }
                        pending.drain(..end + 4 + body);
                        if sock.write_all(response).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn start(upstream: &str) -> RunningEngine {
    let json = format!(
        r#"{{"server": {{"listen": ["127.0.0.1:0"], "shutdown_timeout": 1000}},
            "upstreams": {{"app": {{"servers": ["{upstream}"]}}}},
            "routes": [{{"path_prefix": "/", "upstream": "app"}}]}}"#
    );
    let config = EngineConfig::from_json(&json).expect("config");
    Engine::new(config).expect("engine").start().expect("start")
}

/// Send `raw` and read until the response is complete (by Content-Length) or the connection closes.
async fn exchange(stream: &mut TcpStream, raw: &[u8]) -> String {
    stream.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf));
        let n = read.await.expect("response in time").expect("read");
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if let Some(end) = find(&out, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|len| out.len() >= end + 4 + len) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn forwards_and_reuses_upstream_connections() {
    let (addr, seen) =
        upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: origin\r\n\r\nhi").await;
    let engine = start(&addr);
    let mut client = TcpStream::connect(engine.addrs()[0])
        .await
        .expect("connect");
    for _ in 0..3 {
        let resp = exchange(
            &mut client,
            b"GET /x?y=1 HTTP/1.1\r\nHost: site.test\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.ends_with("\r\n\r\nhi"), "{resp}");
        assert!(resp.contains("via: 1.1 rproxy\r\n"), "{resp}");
    }
    assert_eq!(seen.connections(), 1, "one pooled upstream connection");
    let upstream_saw = seen.all();
    assert!(upstream_saw.starts_with("GET /x?y=1 HTTP/1.1\r\n"));
    assert!(upstream_saw.contains("host: site.test\r\n"));
    assert!(upstream_saw.contains("x-forwarded-for: 127.0.0.1\r\n"));
}

#[tokio::test]
async fn small_chunked_bodies_are_forwarded_with_a_length() {
    let (addr, seen) = upstream(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n").await;
    let engine = start(&addr);
    let mut client = TcpStream::connect(engine.addrs()[0])
        .await
        .expect("connect");
    let raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    let resp = exchange(&mut client, raw).await;
    assert!(resp.starts_with("HTTP/1.1 201 Created\r\n"), "{resp}");
    let saw = seen.all();
    assert!(saw.contains("content-length: 5\r\n\r\nabcde"), "{saw}");
    assert!(!saw.contains("transfer-encoding"), "{saw}");
}

#[tokio::test]
async fn ambiguous_requests_never_reach_the_upstream() {
    let (addr, seen) = upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
    let engine = start(&addr);
    for raw in [
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4 \r\nabcd\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        let mut client = TcpStream::connect(engine.addrs()[0]).await.expect("connect");
        let resp = exchange(&mut client, raw).await;
        assert!(resp.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{resp}");
        assert!(resp.contains("connection: close\r\n"), "{resp}");
    }
    assert_eq!(seen.connections(), 0);
}

#[tokio::test]
async fn refused_upstream_is_a_502() {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let engine = start(&addr);
    let mut client = TcpStream::connect(engine.addrs()[0])
        .await
        .expect("connect");
    let resp = exchange(&mut client, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{resp}");
    assert!(resp.ends_with("502 Bad Gateway\n"), "{resp}");
}
