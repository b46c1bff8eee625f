//! The UAS core: transactions, dialogs and INVITE sessions of incoming calls (RFC 3261 §8.2,
//! §12, §13.3, §14, §15; RFC 3262 reliable provisionals; RFC 3311 UPDATE; RFC 4028 session
//! timers; RFC 3581 rport), sans-IO.
//!
//! Driven like quinn-proto's `Endpoint`: feed [`UasCore::handle_request`],
//! [`UasCore::handle_response`] and [`UasCore::handle_timeout`] with `now`, give commands
//! ([`UasCore::ring`], [`UasCore::answer`], [`UasCore::reject`], [`UasCore::hangup`]), then drain
//! [`UasCore::poll_transmit`] and [`UasCore::poll_event`] and sleep until
//! [`UasCore::poll_timeout`].
//!
//! Must not: read a clock, open sockets, or decide what a call is for (that is the caller's
//! routing); it only keeps SIP correct.

mod call;
mod core;
mod session_timer;

pub use self::core::UasCore;
pub use call::{CallRef, CallState};
pub use session_timer::{Refresher, SessionTimer};

use crate::sip::sdp::{NegotiatedMedia, SessionDescription};
use crate::sip::txn::TimerConfig;
use bytes::Bytes;
use std::net::SocketAddr;

/// The transport a message used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Udp,
    Tcp,
    /// TLS over TCP (RFC 3261 §26.2.1).
    Tls,
}

impl TransportKind {
    /// Reliable transports have no retransmissions (RFC 3261 §17.1.1.2).
    pub fn is_reliable(self) -> bool {
        matches!(self, TransportKind::Tcp | TransportKind::Tls)
    }

    pub fn via_token(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
            TransportKind::Tls => "TLS",
        }
    }
}

/// The other end of a message: transport, remote address, our local address as the peer
/// sees it, and the connection for stream transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: TransportKind,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub connection: Option<u64>,
}

/// Bytes to send to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub peer: Peer,
    pub bytes: Bytes,
}

/// Settings of the UAS core.
#[derive(Debug, Clone)]
pub struct UasConfig {
    pub timers: TimerConfig,
    /// Value of the Server and User-Agent headers.
    pub server_name: String,
    /// Session interval we ask for when the caller supports timers but sent none (RFC 4028).
    pub session_expires_secs: u32,
    /// The smallest session interval we accept (RFC 4028 §5; at least 90).
    pub min_se_secs: u32,
    /// Refuse new INVITEs with 503 (graceful shutdown).
    pub refuse_new_calls: bool,
    /// Most calls at once; further INVITEs get 503 with Retry-After (admission control).
    pub max_calls: usize,
    /// The longest a call may last from its INVITE; then we hang up (a call left up by a
    /// fraud or a broken far end costs per minute). `None`: no limit.
    pub max_call_duration: Option<std::time::Duration>,
    /// Seed for tags, branches and first CSeqs. The shell passes a random one; tests a fixed
    /// one, so a run can be replayed.
    pub seed: u64,
}

impl Default for UasConfig {
    fn default() -> Self {
        UasConfig {
            timers: TimerConfig::default(),
            server_name: concat!("tolk/", env!("CARGO_PKG_VERSION")).to_string(),
            session_expires_secs: 1800,
            min_se_secs: 90,
            refuse_new_calls: false,
            max_calls: 10_000,
            max_call_duration: Some(std::time::Duration::from_secs(4 * 3600)),
            seed: 0x746f_6c6b,
        }
    }
}

/// Methods we implement, for Allow (RFC 3261 §20.5).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE, INFO";
/// Option tags we support (RFC 3261 §20.37).
pub const SUPPORTED: &str = "100rel, timer";
/// Body types we accept in INVITE, UPDATE, PRACK, ACK and INFO.
pub const ACCEPT: &str = "application/sdp, application/dtmf-relay, application/dtmf";

/// A new call offered to the transaction user.
#[derive(Debug, Clone)]
pub struct IncomingCall {
    pub call: CallRef,
    /// The dialled number or user (Request-URI user part, percent-decoded).
    pub dialled: Option<String>,
    /// The caller's number or user (From URI, or P-Asserted-Identity from a trunk trusted
    /// with it), subject to `Privacy` (RFC 3323) upstream.
    pub caller: Option<String>,
    /// The carrier it came from; `None` for a source `sip.allow_unknown` takes.
    pub trunk: Option<std::sync::Arc<crate::sip::trunk::Trunk>>,
    /// The SIP Call-ID (for CDRs and logs).
    pub sip_call_id: String,
    pub offer: Option<SessionDescription>,
    pub peer: Peer,
    /// The Privacy header asks to withhold identity (RFC 3323 §4.2: `id` or `header`).
    pub privacy_requested: bool,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller sent BYE.
    RemoteBye,
    /// We sent BYE (hangup, shutdown).
    LocalBye,
    /// The caller cancelled before answer.
    Cancelled,
    /// We rejected the call with this status.
    Rejected(u16),
    /// No ACK for our 2xx within 64*T1 (RFC 3261 §13.3.1.4).
    NoAck,
    /// No session refresh before the session interval ran out (RFC 4028 §10).
    SessionExpired,
    /// An in-dialog request we sent got no answer or a 408/481 (RFC 3261 §12.2.1.2).
    DialogLost,
    /// The call reached `sip.max_call_secs`; we hung up.
    TooLong,
}

impl EndReason {
    /// Which side ended the call, for CDRs.
    pub fn hung_up_by_caller(self) -> bool {
        matches!(self, EndReason::RemoteBye | EndReason::Cancelled)
    }
}

/// What the UAS core tells its user.
#[derive(Debug, Clone)]
pub enum UasEvent {
    /// A new INVITE: answer, ring or reject it.
    Incoming(Box<IncomingCall>),
    /// A re-INVITE or UPDATE changed the media (hold, resume, new address or codec).
    MediaChanged { call: CallRef, media: NegotiatedMedia },
    /// A keypad digit signalled by SIP INFO (`application/dtmf-relay` or `application/dtmf`).
    InfoDtmf {
        call: CallRef,
        digit: char,
        duration_ms: u32,
    },
    /// How a transfer asked with `refer` ended: the REFER's refusal (or 408 on timeout), or
    /// the final status the transferee reported by NOTIFY (2xx: transferred).
    TransferResult { call: CallRef, status: u16 },
    /// The call is over; no further events for it.
    Ended { call: CallRef, reason: EndReason },
}

/// Errors from commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no such call")]
    NoSuchCall,
    #[error("the call is not in a state that allows this")]
    WrongState,
    #[error("SDP negotiation failed: {0}")]
    Sdp(#[from] crate::sip::sdp::SdpError),
}

#[cfg(test)]
mod tests;
