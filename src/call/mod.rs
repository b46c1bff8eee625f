//! The call path: each answered call gets a media leg ([`leg`]) on an RTP port from the pool.
//! Until the flow engine lands, the leg's consumer is the echo: the demo echo number decodes
//! what it receives and sends it back encoded again, for every codec.
//!
//! Owns: the RTP port pool and the leg tasks. Must not: signal (the SIP core does).

pub mod accounting;
pub mod leg;
mod ports;

pub use accounting::Accounting;
pub use leg::{DigitSource, LegHandle, LegReport, LegSummary, spawn_leg};
pub use ports::{PortPool, RtpPort};

/// The demo echo number (DESIGN.md, "Shipped demo dialplan").
pub const ECHO_NUMBER: &str = "+15550100300";
