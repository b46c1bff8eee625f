//! RTP ports from the configured range: even ports for RTP (RFC 3550 §11), handed out in
//! rotation so a port is not reused at once, returned when the leg ends.

use std::collections::VecDeque;
use std::net::UdpSocket;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// A pool of RTP ports.
pub struct PortPool {
    bind: IpAddr,
    free: Mutex<VecDeque<u16>>,
}

/// A bound RTP socket and its RTCP socket on the next port (RFC 3550 §11); the pair returns
/// to the pool on drop. Plain non-blocking std sockets: whoever drives the stream (the leg
/// task through tokio, or a mixer thread directly) works on duplicates of them, so a call in
/// a room is not registered with the gateway's reactor (each packet would wake it).
pub struct RtpPort {
    pub socket: UdpSocket,
    pub rtcp: UdpSocket,
    pub port: u16,
    pool: Arc<PortPool>,
}

impl Drop for RtpPort {
    fn drop(&mut self) {
        if let Ok(mut free) = self.pool.free.lock() {
            free.push_back(self.port);
        }
    }
}

impl PortPool {
    pub fn new(bind: IpAddr, first: u16, last: u16) -> Arc<Self> {
        let start = first + first % 2;
        let free = (start..last).step_by(2).collect();
        Arc::new(PortPool {
            bind,
            free: Mutex::new(free),
        })
    }

    /// Binds the next free port; ports in use by others are skipped. `None` when exhausted.
    pub fn allocate(self: &Arc<Self>) -> Option<RtpPort> {
        let tries = self.free.lock().ok()?.len();
        for _ in 0..tries {
            let port = self.free.lock().ok()?.pop_front()?;
            match (
                bind(SocketAddr::new(self.bind, port)),
                bind(SocketAddr::new(self.bind, port.wrapping_add(1))),
            ) {
                (Some(socket), Some(rtcp)) => {
                    return Some(RtpPort {
                        socket,
                        rtcp,
                        port,
                        pool: self.clone(),
                    });
                }
                _ => self.free.lock().ok()?.push_back(port),
            }
        }
        None
    }

    /// Ports (pairs) free now.
    pub fn available(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }
}

fn bind(addr: SocketAddr) -> Option<UdpSocket> {
    let s = UdpSocket::bind(addr).ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}
