//! The non-INVITE server transaction: RFC 3261 §17.2.2.
//!
//! ```text
//!   request (create) -> Trying --1xx--> Proceeding --final--> Completed --J--> Terminated
//!                         \-------------final--------------/
//! ```
//! Trying absorbs retransmissions; Proceeding and Completed resend the last response.
//! Timer J is 64*T1 over unreliable transports and zero over reliable ones.

use super::{TimerConfig, Transaction, TxnEvent, TxnOutput};
use bytes::Bytes;
use std::time::Instant;

/// States of [`NonInviteServerTxn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerNonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// A non-INVITE server transaction.
#[derive(Debug)]
pub struct NonInviteServerTxn {
    state: ServerNonInviteState,
    reliable: bool,
    timers: TimerConfig,
    last_response: Option<Bytes>,
    timer_j: Option<Instant>,
}

impl NonInviteServerTxn {
    pub fn new(reliable: bool, timers: TimerConfig) -> Self {
        NonInviteServerTxn {
            state: ServerNonInviteState::Trying,
            reliable,
            timers,
            last_response: None,
            timer_j: None,
        }
    }

    pub fn state(&self) -> ServerNonInviteState {
        self.state
    }

    /// A retransmission of the request arrived.
    pub fn on_retransmitted_request(&mut self) -> TxnOutput {
        match (self.state, &self.last_response) {
            (ServerNonInviteState::Proceeding | ServerNonInviteState::Completed, Some(r)) => {
                TxnOutput::resend(r.clone())
            }
            _ => TxnOutput::none(),
        }
    }

    /// The TU sends a response.
    pub fn send_response(&mut self, code: u16, bytes: Bytes, now: Instant) -> TxnOutput {
        match self.state {
            ServerNonInviteState::Trying | ServerNonInviteState::Proceeding => {
                self.last_response = Some(bytes.clone());
                if code < 200 {
                    self.state = ServerNonInviteState::Proceeding;
                    return TxnOutput::send(bytes);
                }
                if self.reliable {
                    self.state = ServerNonInviteState::Terminated;
                    return TxnOutput {
                        transmit: Some(bytes),
                        event: Some(TxnEvent::Terminated),
                        retransmission: false,
                    };
                }
                self.state = ServerNonInviteState::Completed;
                self.timer_j = Some(now + self.timers.t1x64());
                TxnOutput::send(bytes)
            }
            _ => TxnOutput::none(),
        }
    }

    pub fn on_transport_error(&mut self) -> TxnOutput {
        self.state = ServerNonInviteState::Terminated;
        self.timer_j = None;
        TxnOutput::event(TxnEvent::Terminated)
    }
}

impl Transaction for NonInviteServerTxn {
    fn poll_timeout(&self) -> Option<Instant> {
        self.timer_j
    }

    fn handle_timeout(&mut self, now: Instant) -> TxnOutput {
        if self.timer_j.is_some_and(|j| now >= j) {
            self.timer_j = None;
            self.state = ServerNonInviteState::Terminated;
            return TxnOutput::event(TxnEvent::Terminated);
        }
        TxnOutput::none()
    }

    fn is_terminated(&self) -> bool {
        self.state == ServerNonInviteState::Terminated
    }
}
