//! The call path: each routed call runs a flow ([`flow_call`] carries out its requests);
//! an answered call gets a media leg ([`leg`]) on an RTP port from the pool, which plays
//! prompts and tones, collects digits, records, and echoes for the echo flow.
//!
//! [`controller`] owns each call's life: SIP core events, routing, flow requests, leg and
//! mixer reports, room events for the CDRs, accounting, draining.
//!
//! Owns: the call controller, the RTP port pool and the leg tasks. Must not: parse or print
//! SIP, or block.

pub mod accounting;
pub mod controller;
pub mod flow_call;
pub mod leg;
mod ports;

pub use accounting::Accounting;
pub use leg::{DigitSource, LegHandle, LegReport, spawn_leg};
pub use ports::{PortPool, RtpPort};
