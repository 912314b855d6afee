//! What the workers of one proxy say to each other, and the cache's admin
//! endpoint.
//!
//! Each worker has its own cache, so a purge received by one worker (a
//! `PURGE` request, or the admin endpoint) is applied there and sent to its
//! siblings as a datagram on their control sockets: `worker-PID.sock` next
//! to each worker's statistics file.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixDatagram};

use crate::proxy::Proxy;

/// A purge, as sent between workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// One key.
    Key(String),
    /// Every key starting with this.
    Prefix(String),
}

impl Purge {
    fn encode(&self) -> String {
        match self {
            Purge::Key(k) => format!("key\n{k}"),
            Purge::Prefix(p) => format!("prefix\n{p}"),
        }
    }

    fn decode(msg: &[u8]) -> Option<Purge> {
        let text = std::str::from_utf8(msg).ok()?;
        match text.split_once('\n')? {
            ("key", k) => Some(Purge::Key(k.to_owned())),
            ("prefix", p) => Some(Purge::Prefix(p.to_owned())),
            _ => None,
        }
    }
}

/// The control socket of the worker whose statistics go to `stats_file`.
pub(crate) fn socket_path(stats_file: &Path) -> PathBuf {
    stats_file.with_extension("sock")
}

/// Receive the siblings' purges on `path` until the task is aborted.
pub(crate) async fn listen(path: PathBuf, proxy: Arc<Proxy>) {
    let _ = std::fs::remove_file(&path);
    let socket = match UnixDatagram::bind(&path) {
        Ok(s) => s,
        Err(e) => {
            log::warn!(
                "cannot bind the control socket {}: {e}; purges will not reach this worker",
                path.display()
            );
            return;
        }
    };
    // Only this user's processes may send purges.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    let mut buf = vec![0u8; 65536];
    loop {
        match socket.recv(&mut buf).await {
            // A datagram that filled the buffer may have been cut: a cut
            // prefix would purge more than was asked.
            Ok(n) if n == buf.len() => log::warn!("control socket: a message too long"),
            Ok(n) => match Purge::decode(&buf[..n]) {
                Some(purge) => {
                    proxy.purge_local(&purge);
                }
                None => log::debug!("control socket: an unknown message"),
            },
            Err(e) => {
                log::debug!("control socket: {e}");
                return;
            }
        }
    }
}

/// Send `purge` to every sibling control socket in `own`'s directory, from
/// a task of its own (a sibling's full queue is waited for, up to a second,
/// never on the request's path); how many siblings there are.
pub(crate) fn broadcast(own: &Path, purge: &Purge) -> usize {
    let siblings = siblings(own);
    let n = siblings.len();
    if n == 0 {
        return 0;
    }
    let msg = purge.encode();
    tokio::spawn(async move {
        let Ok(socket) = UnixDatagram::unbound() else {
            return;
        };
        for path in siblings {
            let sent = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                socket.send_to(msg.as_bytes(), &path),
            )
            .await;
            if !matches!(sent, Ok(Ok(_))) {
                log::warn!("a purge did not reach {}", path.display());
            }
        }
    });
    n
}

/// The other workers' control sockets.
fn siblings(own: &Path) -> Vec<PathBuf> {
    let Some(dir) = own.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p != own
                && p.extension().is_some_and(|x| x == "sock")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("worker-"))
        })
        .collect()
}

/// Serve the cache's admin endpoint on `listener` until the task is aborted:
/// `POST /purge?key=KEY` or `POST /purge?prefix=PREFIX`, and `GET /stats`.
pub(crate) async fn admin(listener: TcpListener, proxy: Arc<Proxy>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let _ = answer_admin(&mut sock, &proxy).await;
        });
    }
}

async fn answer_admin(sock: &mut tokio::net::TcpStream, proxy: &Proxy) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
            let n = sock.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        io::Result::Ok(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let complete = head.windows(4).any(|w| w == b"\r\n\r\n");
    // A browser's cross-site request carries Origin: a page must not be
    // able to flush the cache through a local browser.
    let lower = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let from_a_page = lower.split("\r\n").any(|l| l.starts_with("origin:"));
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, body) = match (method, path) {
        _ if !complete => (
            "431 Request Header Fields Too Large",
            "{\"error\": \"request head too large\"}\n".to_owned(),
        ),
        _ if from_a_page => (
            "403 Forbidden",
            "{\"error\": \"requests from web pages (with Origin) are refused\"}\n".to_owned(),
        ),
        ("POST", "/purge") => match purge_of(query) {
            Some(purge) => {
                let (purged, workers) = proxy.purge_everywhere(&purge);
                (
                    "200 OK",
                    format!("{{\"purged\": {purged}, \"workers_told\": {workers}}}\n"),
                )
            }
            None => (
                "400 Bad Request",
                "{\"error\": \"give key= or prefix=\"}\n".to_owned(),
            ),
        },
        ("GET", "/stats") => (
            "200 OK",
            serde_json::to_string(&proxy.cache_stats()).unwrap_or_default() + "\n",
        ),
        (_, "/purge" | "/stats") => (
            "405 Method Not Allowed",
            "{\"error\": \"method\"}\n".to_owned(),
        ),
        _ => ("404 Not Found", "{\"error\": \"not found\"}\n".to_owned()),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(reply.as_bytes()).await?;
    sock.shutdown().await
}

/// `key=…` or `prefix=…` of a query, percent-decoded.
fn purge_of(query: &str) -> Option<Purge> {
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)?;
        if value.is_empty() {
            continue;
        }
        match name {
            "key" => return Some(Purge::Key(value)),
            "prefix" => return Some(Purge::Prefix(value)),
            _ => {}
        }
    }
    None
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for p in [
            Purge::Key("http://a:80/x?y".into()),
            Purge::Prefix("http://a:80/".into()),
        ] {
            assert_eq!(Purge::decode(p.encode().as_bytes()), Some(p));
        }
        assert_eq!(Purge::decode(b"nonsense"), None);
    }

    #[test]
    fn admin_queries() {
        assert_eq!(
            purge_of("key=http%3A%2F%2Fa%3A80%2Fx%3Fy%3D1"),
            Some(Purge::Key("http://a:80/x?y=1".into()))
        );
        assert_eq!(
            purge_of("x=1&prefix=http://a:80/img/"),
            Some(Purge::Prefix("http://a:80/img/".into()))
        );
        assert_eq!(purge_of("key="), None);
        assert_eq!(purge_of("key=%zz"), None);
    }
}
