//! Listening sockets.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

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

/// An IP network, `10.0.0.0/8` or `2001:db8::/32` (a bare address is a
/// network of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Whether `ip` is in this network (IPv4-mapped IPv6 addresses count
    /// as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// Whether any of `nets` contains `ip`.
    pub fn any_contains(nets: &[Cidr], ip: IpAddr) -> bool {
        nets.iter().any(|n| n.contains(ip))
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let written =
            IpAddr::from_str(addr).map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let max = if written.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        // An IPv4-mapped network (::ffff:a.b.c.d/96 and longer) is its IPv4 network.
        let net = written.to_canonical();
        let bits = if net.is_ipv4() && written.is_ipv6() {
            bits.checked_sub(96).ok_or_else(|| {
                format!("{s:?}: an IPv4-mapped network needs a prefix of at least 96")
            })?
        } else {
            bits
        };
        Ok(Cidr { net, bits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses() {
        let net = |s: &str| s.parse::<Cidr>().expect("cidr");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(net("10.0.0.0/8").contains(ip("10.200.1.1")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("10.0.0.0/8").contains(ip("::ffff:10.0.0.1")));
        assert!(net("0.0.0.0/0").contains(ip("1.2.3.4")));
        assert!(!net("0.0.0.0/0").contains(ip("::2")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:1::5")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::5")));
        assert!(net("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!net("127.0.0.1").contains(ip("127.0.0.2")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!(net("::ffff:10.0.0.0/104").contains(ip("10.1.2.3")));
        assert!(!net("::ffff:10.0.0.0/104").contains(ip("11.1.2.3")));
        assert!(net("::ffff:10.0.0.0/104").contains(ip("::ffff:10.1.2.3")));
        assert!("nope".parse::<Cidr>().is_err());
    }

    #[test]
    fn two_listeners_share_a_port() {
        let a = listen("127.0.0.1:0".parse().expect("addr")).expect("first");
        let port = a.local_addr().expect("addr");
        let b = listen(port).expect("second listener on the same port");
        assert_eq!(b.local_addr().expect("addr"), port);
    }
}
