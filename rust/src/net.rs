//! Listening sockets.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 4096;

/// Bind and listen on `addr` with `SO_REUSEPORT`, so that every worker
/// process can own a listener on the same port and the kernel spreads new
/// connections between them.
pub fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_listeners_share_a_port() {
        let a = listen("127.0.0.1:0".parse().expect("addr")).expect("first");
        let port = a.local_addr().expect("addr");
        let b = listen(port).expect("second listener on the same port");
        assert_eq!(b.local_addr().expect("addr"), port);
    }
}
