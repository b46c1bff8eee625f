//! The call path: each routed call runs a flow ([`flow_call`] carries out its requests);
//! an answered call gets a media leg ([`leg`]) on an RTP port from the pool, which plays
//! prompts and tones, collects digits, records, and echoes for the echo flow.
//!
//! Owns: the RTP port pool and the leg tasks. Must not: signal (the SIP core does).

pub mod accounting;
pub mod flow_call;
pub mod leg;
mod ports;

pub use accounting::Accounting;
pub use leg::{DigitSource, LegHandle, LegReport, spawn_leg};
pub use ports::{PortPool, RtpPort};
