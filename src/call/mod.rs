//! The call path. Until the media engine and flow engine land, a call to the demo echo
//! number gets an RTP echo: every packet received is sent back (own SSRC, same payload).
//!
//! Owns: the RTP port pool and the echo leg task. Must not: signal (the SIP core does).

mod echo;
mod ports;

pub use echo::{EchoLeg, spawn_echo};
pub use ports::{PortPool, RtpPort};

/// The demo echo number (DESIGN.md, "Shipped demo dialplan").
pub const ECHO_NUMBER: &str = "+15550100300";
