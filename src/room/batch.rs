//! Every datagram waiting on a socket in one system call (`recvmmsg(2)`), and a plain
//! `sendto(2)`, for the mixer threads. A member's RTP socket is read once per 20 ms tick;
//! a loop of `recvfrom` calls costs a second call per member per tick only to learn that
//! the queue is empty, which at a thousand members is a thousand system calls a tick
//! (docs/PERFORMANCE.md).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams taken per call.
pub const BATCH: usize = 16;
/// Bytes kept of each datagram (RTP over UDP on an Ethernet path fits with room to spare;
/// longer ones are dropped as truncated).
const DATAGRAM: usize = 2048;

/// Buffers for one `recvmmsg` call, reused tick after tick.
pub struct RecvBatch {
    bufs: Box<[[u8; DATAGRAM]; BATCH]>,
    addrs: [libc::sockaddr_storage; BATCH],
    iovs: [libc::iovec; BATCH],
    hdrs: [libc::mmsghdr; BATCH],
    /// (length, source) of the datagrams of the last call; None for one to skip.
    got: [Option<(usize, SocketAddr)>; BATCH],
    count: usize,
    /// Where this value was when the headers' pointers were set (they point into it): set
    /// again only if it has moved since, not at every call (writing sixteen headers per
    /// member per tick was 5% of a mixer thread).
    pinned_at: usize,
    /// Headers the kernel may have written in the last call, to reset before the next.
    dirty: usize,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` only ever point into this value's own
// buffers (`bufs` is boxed; `addrs` and `iovs` are inline), and are rewritten before a call
// whenever the value has moved; nothing is shared between threads.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        // SAFETY: arrays of sockaddr_storage, iovec and mmsghdr are plain C data for which
        // all-zero bytes are a valid value (null pointers, zero lengths).
        RecvBatch {
            bufs: Box::new([[0; DATAGRAM]; BATCH]),
            addrs: unsafe { std::mem::zeroed() },
            iovs: unsafe { std::mem::zeroed() },
            hdrs: unsafe { std::mem::zeroed() },
            got: [None; BATCH],
            count: 0,
            pinned_at: 0,
            dirty: 0,
        }
    }
}

impl RecvBatch {
    /// Takes up to [`BATCH`] waiting datagrams from a non-blocking socket; returns how many
    /// (0 when none is waiting or on any error).
    pub fn recv(&mut self, sock: &UdpSocket) -> usize {
        let here = self as *const RecvBatch as usize;
        let reset = if self.pinned_at != here {
            for i in 0..BATCH {
                self.iovs[i] = libc::iovec {
                    iov_base: self.bufs[i].as_mut_ptr().cast(),
                    iov_len: DATAGRAM,
                };
                let h = &mut self.hdrs[i].msg_hdr;
                h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_iov = &mut self.iovs[i];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
            }
            self.pinned_at = here;
            BATCH
        } else {
            self.dirty
        };
        // The kernel writes the address length, flags and length of the datagrams it
        // received (and may touch the header after the last).
        for h in &mut self.hdrs[..reset] {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points at a buffer and an address slot of `self` that live
        // for the call, with their true sizes; the kernel writes no further than that.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        self.count = if n > 0 { n as usize } else { 0 };
        self.dirty = (self.count + 1).min(BATCH);
        for i in 0..self.count {
            let h = &self.hdrs[i];
            self.got[i] = if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                None
            } else {
                socket_addr(&self.addrs[i]).map(|a| (h.msg_len as usize, a))
            };
        }
        self.count
    }

    /// Datagram `i` of the last call (None: truncated or from an unknown address family).
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.count {
            return None;
        }
        self.got[i].map(|(len, from)| (&self.bufs[i][..len.min(DATAGRAM)], from))
    }
}

/// The mixer threads' sockets send through [`send_to`] (no libc cancellation bookkeeping
/// around each of the thousands of sends a tick).
impl crate::media::stream::Datagram for UdpSocket {
    fn send_now(&self, buf: &[u8], dest: SocketAddr) -> bool {
        send_to(self, buf, dest)
    }
}

/// Sends one datagram without waiting (`MSG_DONTWAIT`); false if it could not be sent now.
/// The `sendto(2)` system call made directly: glibc's wrapper marks each call as a thread
/// cancellation point (two calls around every send into libc's cancellation state, 1.6% of
/// a mixer thread sending a thousand packets a tick), which nothing in tolk uses.
pub fn send_to(sock: &UdpSocket, buf: &[u8], dest: SocketAddr) -> bool {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match dest {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and aligned for a sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: the buffer and the address are valid for the lengths given, for the call.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            // Every argument as a full register (the call is variadic).
            sock.as_raw_fd() as libc::c_long,
            buf.as_ptr() as libc::c_long,
            buf.len() as libc::c_long,
            libc::MSG_DONTWAIT as libc::c_long,
            (&storage as *const libc::sockaddr_storage) as libc::c_long,
            len as libc::c_long,
        )
    };
    n >= 0
}

/// The source address the kernel wrote (IPv4 or IPv6).
fn socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large
            // enough and aligned for.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_every_waiting_datagram_with_its_source_in_one_call() {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(rx) = UdpSocket::bind(host) else {
                // No IPv6 loopback on this machine: the IPv4 case still ran.
                continue;
            };
            rx.set_nonblocking(true).unwrap();
            let a = UdpSocket::bind(host).unwrap();
            let b = UdpSocket::bind(host).unwrap();
            let mut batch = RecvBatch::default();
            assert_eq!(batch.recv(&rx), 0, "nothing waiting");
            assert!(batch.get(0).is_none());
            let to = rx.local_addr().unwrap();
            a.send_to(b"one", to).unwrap();
            b.send_to(b"two!", to).unwrap();
            a.send_to(&[7u8; 1500], to).unwrap();
            // Loopback delivery is synchronous, but give it a moment on a loaded machine.
            let mut n = 0;
            for _ in 0..100 {
                n += batch.recv(&rx);
                if n == 3 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert_eq!(n, 3, "{host}");
            assert_eq!(batch.get(0), Some((&b"one"[..], a.local_addr().unwrap())));
            assert_eq!(batch.get(1), Some((&b"two!"[..], b.local_addr().unwrap())));
            assert_eq!(batch.get(2).map(|(d, _)| d.len()), Some(1500));
            assert_eq!(batch.recv(&rx), 0, "drained");
        }
    }

    /// A non-blocking receiver on IPv4 loopback, a sender, and the receiver's address.
    fn loopback_pair() -> (UdpSocket, UdpSocket, SocketAddr) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        (rx, tx, to)
    }

    #[test]
    fn more_than_a_batch_waits_for_the_next_call_and_oversized_ones_are_dropped() {
        let (rx, tx, to) = loopback_pair();
        tx.send_to(&[1u8; DATAGRAM + 100], to).unwrap();
        for i in 0..BATCH as u8 + 3 {
            tx.send_to(&[i], to).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut batch = RecvBatch::default();
        assert_eq!(batch.recv(&rx), BATCH);
        assert_eq!(batch.get(0), None, "truncated");
        assert_eq!(batch.get(1).map(|(d, _)| d.to_vec()), Some(vec![0]));
        assert_eq!(batch.recv(&rx), 4);
        assert_eq!(batch.get(3).map(|(d, _)| d.to_vec()), Some(vec![BATCH as u8 + 2]));
    }

    #[test]
    fn a_batch_that_moved_reads_into_its_new_place_and_lengths_do_not_linger() {
        let (rx, tx, to) = loopback_pair();
        let wait_for = |batch: &mut RecvBatch| {
            for _ in 0..100 {
                let n = batch.recv(&rx);
                if n > 0 {
                    return n;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            0
        };
        let mut batch = RecvBatch::default();
        tx.send_to(&[9u8; 300], to).unwrap();
        assert_eq!(wait_for(&mut batch), 1);
        assert_eq!(batch.get(0).map(|(d, _)| d.len()), Some(300));
        // Moved (into a Vec, then out of it): its headers must follow it.
        let mut moved = vec![batch];
        tx.send_to(b"ab", to).unwrap();
        assert_eq!(wait_for(&mut moved[0]), 1);
        assert_eq!(moved[0].get(0), Some((&b"ab"[..], tx.local_addr().unwrap())));
        let mut batch = moved.pop().unwrap();
        tx.send_to(b"c", to).unwrap();
        tx.send_to(b"de", to).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        assert_eq!(wait_for(&mut batch), 2);
        assert_eq!(batch.get(0).map(|(d, _)| d.to_vec()), Some(b"c".to_vec()));
        assert_eq!(batch.get(1).map(|(d, _)| d.to_vec()), Some(b"de".to_vec()));
    }

    #[test]
    fn send_to_reaches_ipv4_and_ipv6_peers_and_says_when_it_cannot() {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(rx) = UdpSocket::bind(host) else {
                continue;
            };
            rx.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
            let tx = UdpSocket::bind(host).unwrap();
            assert!(send_to(&tx, b"hello", rx.local_addr().unwrap()));
            let mut buf = [0u8; 16];
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&b"hello"[..], tx.local_addr().unwrap()), "{host}");
        }
        // An IPv6 destination from an IPv4 socket: refused, reported, no panic.
        let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(!send_to(&v4, b"x", "[::1]:9".parse().unwrap()));
    }
}
