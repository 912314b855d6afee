//! The phase machine without Python: a Rust `Hooks` implementation drives
//! every phase of requests through a real engine and a real upstream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Response, StatusCode};
use rproxy_engine::body::ProxyBody;
use rproxy_engine::hooks::{
    ErrorSummary, Exchange, HookFuture, Hooks, LogRecord, Outbound, Phase, RouteDecision,
};
use rproxy_engine::upstream::Candidate;
use rproxy_engine::{Engine, EngineConfig, Error, ErrorKind, RunningEngine};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Answers every request with its target and the `x-hooked` header it got.
async fn upstream(tag: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let target = head.split(' ').nth(1).unwrap_or("?").to_owned();
                        let hooked = head
                            .lines()
                            .find_map(|l| l.strip_prefix("x-hooked: "))
                            .unwrap_or("-")
                            .to_owned();
                        let body = format!("{tag} {target} {hooked}");
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nserver: origin\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// Policy in Rust, exercising each phase.
struct TestHooks {
    log: mpsc::Sender<(String, u16, u64, bool)>,
}

fn path(ex: &Exchange) -> String {
    ex.parts.uri.path().to_owned()
}

impl Hooks for TestHooks {
    fn has(&self, _: Phase) -> bool {
        true
    }

    fn request_filter<'a>(
        &'a self,
        ex: &'a mut Exchange,
    ) -> HookFuture<'a, Result<Option<Response<ProxyBody>>, Error>> {
        Box::pin(async move {
            match path(ex).as_str() {
                "/blocked" => {
                    let mut resp = Response::new(ProxyBody::full("blocked"));
                    *resp.status_mut() = StatusCode::FORBIDDEN;
                    Ok(Some(resp))
                }
                "/fail" => Err(Error::new(ErrorKind::Plugin, "filter failed")),
                _ => Ok(None),
            }
        })
    }

    fn cache_key<'a>(&'a self, _: &'a mut Exchange) -> HookFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn route<'a>(
        &'a self,
        ex: &'a mut Exchange,
    ) -> HookFuture<'a, Result<Option<RouteDecision>, Error>> {
        Box::pin(async move {
            Ok(path(ex)
                .strip_prefix("/b/")
                .map(|rest| RouteDecision::Forward {
                    name: Some("b-route".to_owned()),
                    pool: "b".to_owned(),
                    path: Some(format!("/from-b/{rest}")),
                    host: None,
                }))
        })
    }

    fn access<'a>(
        &'a self,
        ex: &'a mut Exchange,
        _: usize,
    ) -> HookFuture<'a, Result<Option<Response<ProxyBody>>, Error>> {
        Box::pin(async move {
            // Routing ran first: the route is known here.
            let route = ex.route.as_ref().map(|r| r.name.to_string());
            if path(ex).ends_with("/private") && route.as_deref() == Some("b-route") {
                let mut resp = Response::new(ProxyBody::full("no"));
                *resp.status_mut() = StatusCode::UNAUTHORIZED;
                return Ok(Some(resp));
            }
            Ok(None)
        })
    }

    fn select_upstream<'a>(
        &'a self,
        _: &'a mut Exchange,
        candidates: &'a [Candidate],
    ) -> HookFuture<'a, Result<Option<usize>, Error>> {
        Box::pin(async move { Ok(candidates.len().checked_sub(1)) })
    }

    fn upstream_request<'a>(
        &'a self,
        ex: &'a mut Exchange,
        out: &'a mut Outbound,
        _: usize,
    ) -> HookFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let chosen = ex.upstream.map(|a| a.to_string()).unwrap_or_default();
            out.headers.insert(
                "x-hooked",
                HeaderValue::from_str(&chosen).expect("an address is a valid value"),
            );
            Ok(())
        })
    }

    fn upstream_response<'a>(
        &'a self,
        _: &'a mut Exchange,
        _: &'a mut StatusCode,
        headers: &'a mut HeaderMap,
    ) -> HookFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            headers.remove("server");
            Ok(())
        })
    }

    fn response<'a>(
        &'a self,
        _: &'a mut Exchange,
        status: &'a mut StatusCode,
        headers: &'a mut HeaderMap,
        _: usize,
    ) -> HookFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            headers.insert("x-status-seen", HeaderValue::from(status.as_u16()));
            Ok(())
        })
    }

    fn error<'a>(
        &'a self,
        _: &'a mut Exchange,
        err: &'a ErrorSummary,
    ) -> HookFuture<'a, Option<Response<ProxyBody>>> {
        Box::pin(async move {
            let mut resp = Response::new(ProxyBody::full(format!("custom {}", err.kind)));
            *resp.status_mut() = StatusCode::from_u16(err.status).expect("a valid status");
            Some(resp)
        })
    }

    fn log(&self, ex: Exchange, record: LogRecord) {
        let _ = self.log.send((
            path(&ex),
            record.status.as_u16(),
            record.body_bytes,
            record.complete,
        ));
    }
}

fn start(a: &[String], b: &str, hooks: Arc<dyn Hooks>) -> RunningEngine {
    let servers: Vec<String> = a.iter().map(|s| format!("\"{s}\"")).collect();
    let json = format!(
        r#"{{"server": {{"listen": ["127.0.0.1:0"], "shutdown_timeout": 1000}},
            "upstreams": {{"a": {{"servers": [{}]}}, "b": {{"servers": ["{b}"]}}}},
            "routes": [{{"path_prefix": "/", "upstream": "a"}}]}}"#,
        servers.join(", ")
    );
    let config = EngineConfig::from_json(&json).expect("config");
    Engine::with_hooks(config, Some(hooks))
        .expect("engine")
        .start()
        .expect("start")
}

async fn get(addr: SocketAddr, target: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("in time")
        .expect("read");
    out
}

#[tokio::test]
async fn every_phase_runs_in_order() {
    let a1 = upstream("a1").await;
    let a2 = upstream("a2").await;
    let b = upstream("b").await;
    let (tx, rx) = mpsc::channel();
    let engine = start(&[a1, a2.clone()], &b, Arc::new(TestHooks { log: tx }));
    let addr = engine.addrs()[0];

    let resp = get(addr, "/x").await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(
        resp.ends_with(&format!("a2 /x {a2}")),
        "select_upstream chose the last candidate: {resp}"
    );
    assert!(
        !resp.contains("server: origin"),
        "upstream_response removed it: {resp}"
    );
    assert!(resp.contains("x-status-seen: 200\r\n"), "{resp}");

    let resp = get(addr, "/b/item").await;
    assert!(
        resp.ends_with(&format!("b /from-b/item {b}")),
        "route rewrote: {resp}"
    );

    let resp = get(addr, "/b/private").await;
    assert!(
        resp.starts_with("HTTP/1.1 401 Unauthorized\r\n") && resp.ends_with("no"),
        "access refused the routed request: {resp}"
    );
    let resp = get(addr, "/private").await;
    assert!(
        resp.starts_with("HTTP/1.1 200 OK\r\n"),
        "another route: {resp}"
    );

    let resp = get(addr, "/blocked").await;
    assert!(resp.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{resp}");
    assert!(
        resp.contains("x-status-seen: 403\r\n") && resp.ends_with("blocked"),
        "{resp}"
    );

    let resp = get(addr, "/fail").await;
    assert!(
        resp.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
        "{resp}"
    );
    assert!(
        resp.ends_with("custom Plugin"),
        "the error hook answered: {resp}"
    );

    let logged: Vec<_> = (0..6)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("logged"))
        .collect();
    let paths: Vec<&str> = logged.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/x",
            "/b/item",
            "/b/private",
            "/private",
            "/blocked",
            "/fail"
        ]
    );
    assert!(logged.iter().all(|l| l.3), "every body was sent to its end");
    assert_eq!((logged[4].1, logged[4].2), (403, 7));
}
