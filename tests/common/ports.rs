//! Loopback ports for the tests, handed out so that two tests never race for one.
//!
//! Ports picked by binding port 0 come from the kernel's ephemeral range, which every other
//! socket on the machine (SIPp's, PostgreSQL clients', the gateway's own) also draws from: a
//! port seen free can be taken before the process it was meant for binds it. Here every port
//! comes from below the ephemeral range (5000-31999, see `ip_local_port_range`), out of one
//! counter per test process, and is checked free before it is handed out. Test binaries run
//! one at a time, so within that region only this counter hands ports out.

use std::net::{TcpListener, UdpSocket};
use std::sync::Mutex;

const FIRST: u32 = 5_000;
const END: u32 = 32_000;

static NEXT: Mutex<Option<u32>> = Mutex::new(None);

/// Reserves `len` consecutive ports starting on an even port (RTP wants even), each free for
/// UDP and, when `tcp`, for TCP too. Only the first `check` ports of a long block are probed.
fn reserve(len: u32, tcp: bool) -> u16 {
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    let mut cursor = next.unwrap_or_else(|| FIRST + 2 * fastrand::u32(0..(END - FIRST) / 2));
    for _ in 0..2_000 {
        cursor += cursor & 1;
        if cursor + len > END {
            cursor = FIRST;
        }
        let base = cursor;
        cursor += len;
        let probe = len.min(8);
        let free = (base..base + probe).all(|p| {
            let p = p as u16;
            UdpSocket::bind(("127.0.0.1", p)).is_ok() && (!tcp || TcpListener::bind(("127.0.0.1", p)).is_ok())
        });
        if free {
            *next = Some(cursor);
            return base as u16;
        }
    }
    panic!("no free block of {len} loopback ports below the ephemeral range");
}

/// One port free for both UDP and TCP (a SIP listener, an admin API, a console).
pub fn free_port() -> u16 {
    reserve(1, true)
}

/// Two ports, `p` and `p + 1`, free for UDP and TCP (baresip listens for TLS one port up).
pub fn free_port_pair() -> u16 {
    reserve(2, true)
}

/// `len` consecutive UDP ports starting on an even one (an RTP range).
pub fn rtp_block(len: u32) -> u16 {
    reserve(len, false)
}
