//! SIP transactions (RFC 3261 §17, with RFC 6026), sans-IO.
//!
//! Owns: the four transaction state machines, their timers A-M, and the keys that match
//! requests and responses to them (RFC 3261 §17.1.3, §17.2.3, with the RFC 2543 fallback).
//! Each machine is driven by three kinds of input: a message from the transport, a message
//! from the transaction user, and `handle_timeout(now)`. It answers with bytes to send and
//! with events for the transaction user, and tells when it next needs to wake up.
//!
//! Must not: read a clock, touch a socket, or interpret a message beyond what §17 needs.

mod client_invite;
mod client_non_invite;
mod key;
mod server_invite;
mod server_non_invite;

pub use client_invite::{ClientInviteState, InviteClientTxn};
pub use client_non_invite::{ClientNonInviteState, NonInviteClientTxn};
pub use key::{ClientKey, MergeKey, ServerKey};
pub use server_invite::{InviteServerTxn, ServerInviteState};
pub use server_non_invite::{NonInviteServerTxn, ServerNonInviteState};

use bytes::Bytes;
use std::time::Duration;

/// The timer base values of RFC 3261 §17.1.1.1 and Table 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, 500 ms by default.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Maximum duration a message remains in the network, 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64*T1: timers B, F, H, J, L, M (RFC 3261 Table 4, RFC 6026 §8.11).
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
}

/// What a transaction asks of its surroundings after an input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnOutput {
    /// Bytes to send to the peer (a response, a request or an ACK, possibly a retransmission).
    pub transmit: Option<Bytes>,
    /// Something the transaction user must know.
    pub event: Option<TxnEvent>,
    /// True when this output was a retransmission (for metrics).
    pub retransmission: bool,
}

impl TxnOutput {
    pub fn none() -> Self {
        TxnOutput::default()
    }

    fn send(bytes: Bytes) -> Self {
        TxnOutput {
            transmit: Some(bytes),
            ..Default::default()
        }
    }

    fn resend(bytes: Bytes) -> Self {
        TxnOutput {
            transmit: Some(bytes),
            retransmission: true,
            ..Default::default()
        }
    }

    fn event(event: TxnEvent) -> Self {
        TxnOutput {
            event: Some(event),
            ..Default::default()
        }
    }
}

/// Events a transaction reports to its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnEvent {
    /// The transaction timed out (Timer B, F or H): no response or no ACK arrived in time.
    Timeout,
    /// The transaction is over and can be forgotten.
    Terminated,
}

/// A transaction is over when it says so; its owner removes it then.
pub trait Transaction {
    /// The next instant `handle_timeout` must be called, if any.
    fn poll_timeout(&self) -> Option<std::time::Instant>;
    /// Processes expired timers.
    fn handle_timeout(&mut self, now: std::time::Instant) -> TxnOutput;
    /// True once in the Terminated state.
    fn is_terminated(&self) -> bool;
}

/// A running timer: when it fires and the interval used to schedule it (for doubling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retransmit {
    pub at: std::time::Instant,
    pub interval: Duration,
}

pub(crate) fn earliest(times: &[Option<std::time::Instant>]) -> Option<std::time::Instant> {
    times.iter().flatten().min().copied()
}

#[cfg(test)]
mod tests;
