//! What offer/answer settled for one audio stream: the codec, the direction, where to send.
//! SDP ([`crate::sip::sdp`]) negotiates these; media streams, legs and rooms work with them
//! without knowing SIP.

pub use crate::rtp::srtp::{KeyMaterial, MasterKey, SrtpKeys, Suite};
use std::net::SocketAddr;

/// The audio codecs tolk can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0 (RFC 3551 §6).
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// G.722, static payload type 9, 8000 on the wire for 16 kHz audio (RFC 3551 §4.5.2).
    G722,
    /// Opus, dynamic, `opus/48000/2` (RFC 7587 §7).
    Opus,
}

impl Codec {
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
        }
    }
}

/// Media direction (RFC 3264 §5.1, §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction an answer takes for an offered direction (RFC 3264 §6.1).
    pub fn answer_to(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// True when the peer puts us on hold (it will not send, or asks us not to).
    pub fn is_hold(self) -> bool {
        matches!(self, Direction::SendOnly | Direction::Inactive)
    }
}

/// The outcome of a negotiation: what to send where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedMedia {
    /// Where the peer receives RTP; `None` when the peer holds with `c=0.0.0.0`.
    pub remote_rtp: Option<SocketAddr>,
    pub codec: Codec,
    pub payload_type: u8,
    /// RFC 4733 telephone-event payload type, when both sides have it.
    pub telephone_event: Option<u8>,
    pub ptime_ms: u32,
    /// Our direction, as answered.
    pub direction: Direction,
    /// The offered fmtp of the chosen codec (Opus parameters).
    pub fmtp: Option<String>,
    /// SRTP keys when the stream is protected (RFC 4568 SDES); None for plain RTP. Boxed:
    /// two keys would triple the size of every message that carries a session.
    pub srtp: Option<Box<SrtpKeys>>,
}

impl NegotiatedMedia {
    /// True when the peer has put the call on hold.
    pub fn on_hold(&self) -> bool {
        self.remote_rtp.is_none() || matches!(self.direction, Direction::RecvOnly | Direction::Inactive)
    }
}
