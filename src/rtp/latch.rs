//! Symmetric RTP source latching (RFC 4961 symmetric RTP, with the usual defence against RTP
//! bleed and injection): learn the peer's media address from its first packets, then accept
//! only that source until the signalling changes the address.
//!
//! A packet from the address the SDP signalled latches at once; any other source must send two
//! packets in a row first (a NATed caller whose SDP shows a private address), so a single
//! stray or injected packet cannot capture the stream.

use std::net::{IpAddr, SocketAddr};

/// What to do with a packet from `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchVerdict {
    /// From the latched source (or it just latched): process it.
    Accept,
    /// Not (yet) from the source we listen to: drop it.
    Reject,
}

/// The latch for one leg.
#[derive(Debug, Clone, Default)]
pub struct SourceLatch {
    signalled: Option<IpAddr>,
    latched: Option<SocketAddr>,
    candidate: Option<(SocketAddr, u32)>,
    rejected: u64,
}

impl SourceLatch {
    /// `signalled` is the address from the peer's SDP (`None` for `c=0.0.0.0` or unknown).
    pub fn new(signalled: Option<SocketAddr>) -> Self {
        SourceLatch {
            signalled: signalled.map(|a| a.ip()),
            ..SourceLatch::default()
        }
    }

    /// The signalling changed the peer's address (re-INVITE, UPDATE): learn again.
    pub fn resignal(&mut self, signalled: Option<SocketAddr>) {
        self.signalled = signalled.map(|a| a.ip());
        self.latched = None;
        self.candidate = None;
    }

    /// Decides on a packet from `from`.
    pub fn on_packet(&mut self, from: SocketAddr) -> LatchVerdict {
        match self.latched {
            Some(src) if src == from => return LatchVerdict::Accept,
            Some(_) => {
                self.rejected += 1;
                return LatchVerdict::Reject;
            }
            None => {}
        }
        let seen = match self.candidate {
            Some((c, k)) if c == from => k + 1,
            _ => 1,
        };
        self.candidate = Some((from, seen));
        if self.signalled == Some(from.ip()) || seen >= 2 {
            self.latched = Some(from);
            LatchVerdict::Accept
        } else {
            self.rejected += 1;
            LatchVerdict::Reject
        }
    }

    /// Where to send our media: the latched source, if any.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// Packets dropped because they came from elsewhere.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_signalled_address_latches_at_once_and_others_are_refused() {
        let mut l = SourceLatch::new(Some(a("192.0.2.1:4000")));
        assert_eq!(
            l.on_packet(a("192.0.2.1:4002")),
            LatchVerdict::Accept,
            "same host, NAT-changed port"
        );
        assert_eq!(l.peer(), Some(a("192.0.2.1:4002")));
        // RTP bleed or injection from elsewhere, however persistent, is refused.
        for _ in 0..10 {
            assert_eq!(l.on_packet(a("198.51.100.9:5000")), LatchVerdict::Reject);
        }
        assert_eq!(l.rejected(), 10);
        assert_eq!(l.on_packet(a("192.0.2.1:4002")), LatchVerdict::Accept);
    }

    #[test]
    fn an_unsignalled_source_needs_two_packets_in_a_row() {
        // A caller behind NAT: its SDP says 10.0.0.5, its packets come from a public address.
        let mut l = SourceLatch::new(Some(a("10.0.0.5:4000")));
        assert_eq!(l.on_packet(a("203.0.113.7:31000")), LatchVerdict::Reject);
        assert_eq!(
            l.on_packet(a("198.51.100.9:5000")),
            LatchVerdict::Reject,
            "an injected packet resets"
        );
        assert_eq!(l.on_packet(a("203.0.113.7:31000")), LatchVerdict::Reject);
        assert_eq!(l.on_packet(a("203.0.113.7:31000")), LatchVerdict::Accept);
        assert_eq!(l.peer(), Some(a("203.0.113.7:31000")));
    }

    #[test]
    fn new_signalling_relearns_the_source() {
        let mut l = SourceLatch::new(Some(a("192.0.2.1:4000")));
        l.on_packet(a("192.0.2.1:4000"));
        l.resignal(Some(a("192.0.2.50:6000")));
        assert_eq!(l.peer(), None);
        assert_eq!(l.on_packet(a("192.0.2.1:4000")), LatchVerdict::Reject);
        assert_eq!(l.on_packet(a("192.0.2.50:6000")), LatchVerdict::Accept);
    }

    #[test]
    fn hold_with_no_address_still_learns_from_two_packets() {
        // RFC 3264 §8.4 c=0.0.0.0: nothing signalled.
        let mut l = SourceLatch::new(None);
        assert_eq!(l.on_packet(a("192.0.2.1:4000")), LatchVerdict::Reject);
        assert_eq!(l.on_packet(a("192.0.2.1:4000")), LatchVerdict::Accept);
    }
}
