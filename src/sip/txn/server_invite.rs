//! The INVITE server transaction: RFC 3261 §17.2.1 as amended by RFC 6026 §7.1 and §8.
//!
//! ```text
//!              INVITE from transport (create)
//!                       |
//!                       v            1xx from TU: send
//!                  Proceeding <----- INVITE retransmission: resend last 1xx
//!              2xx |        | 300-699 from TU: send, start G (unreliable) and H
//!   start L        v        v
//!              Accepted   Completed <- INVITE retransmission: resend final; G: resend
//!   L fires        |        | ACK: start I             \ H fires: Timeout to TU
//!                  |        v
//!                  |     Confirmed  (I fires)
//!                  v        v
//!                   Terminated
//! ```
//! In Accepted, retransmitted INVITEs are absorbed and the TU retransmits the 2xx itself
//! (RFC 3261 §13.3.1.4); further 2xx from the TU are sent (RFC 6026 §8.5).

use super::{Retransmit, TimerConfig, Transaction, TxnEvent, TxnOutput, earliest};
use bytes::Bytes;
use std::time::Instant;

/// States of [`InviteServerTxn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerInviteState {
    Proceeding,
    Accepted,
    Completed,
    Confirmed,
    Terminated,
}

/// An INVITE server transaction.
#[derive(Debug)]
pub struct InviteServerTxn {
    state: ServerInviteState,
    reliable: bool,
    timers: TimerConfig,
    last_response: Option<Bytes>,
    last_code: u16,
    timer_g: Option<Retransmit>,
    timer_h: Option<Instant>,
    timer_i: Option<Instant>,
    timer_l: Option<Instant>,
}

impl InviteServerTxn {
    /// A new transaction for a received INVITE; `reliable` is true over TCP/TLS.
    pub fn new(reliable: bool, timers: TimerConfig) -> Self {
        InviteServerTxn {
            state: ServerInviteState::Proceeding,
            reliable,
            timers,
            last_response: None,
            last_code: 0,
            timer_g: None,
            timer_h: None,
            timer_i: None,
            timer_l: None,
        }
    }

    pub fn state(&self) -> ServerInviteState {
        self.state
    }

    /// The status of the last response sent (0 before any).
    pub fn last_code(&self) -> u16 {
        self.last_code
    }

    /// A retransmission of the INVITE arrived (RFC 3261 §17.2.1): resend the last response in
    /// Proceeding and Completed; absorb it otherwise.
    pub fn on_retransmitted_request(&mut self) -> TxnOutput {
        match self.state {
            ServerInviteState::Proceeding | ServerInviteState::Completed => match &self.last_response {
                Some(r) => TxnOutput::resend(r.clone()),
                None => TxnOutput::none(),
            },
            _ => TxnOutput::none(),
        }
    }

    /// The TU sends a response with status `code`. Returns what to transmit; responses the
    /// state does not allow are not sent.
    pub fn send_response(&mut self, code: u16, bytes: Bytes, now: Instant) -> TxnOutput {
        match (self.state, code) {
            (ServerInviteState::Proceeding, 100..=199) => {
                self.last_response = Some(bytes.clone());
                self.last_code = code;
                TxnOutput::send(bytes)
            }
            (ServerInviteState::Proceeding, 200..=299) => {
                self.state = ServerInviteState::Accepted;
                self.last_code = code;
                self.last_response = None;
                self.timer_l = Some(now + self.timers.t1x64());
                TxnOutput::send(bytes)
            }
            (ServerInviteState::Accepted, 200..=299) => TxnOutput::send(bytes),
            (ServerInviteState::Proceeding, 300..=699) => {
                self.state = ServerInviteState::Completed;
                self.last_code = code;
                self.last_response = Some(bytes.clone());
                if !self.reliable {
                    self.timer_g = Some(Retransmit {
                        at: now + self.timers.t1,
                        interval: self.timers.t1,
                    });
                }
                self.timer_h = Some(now + self.timers.t1x64());
                TxnOutput::send(bytes)
            }
            _ => TxnOutput::none(),
        }
    }

    /// An ACK matching this transaction arrived (a non-2xx final was sent).
    pub fn on_ack(&mut self, now: Instant) -> TxnOutput {
        if self.state == ServerInviteState::Completed {
            self.timer_g = None;
            self.timer_h = None;
            if self.reliable {
                self.state = ServerInviteState::Terminated;
                return TxnOutput::event(TxnEvent::Terminated);
            }
            self.state = ServerInviteState::Confirmed;
            self.timer_i = Some(now + self.timers.t4);
        }
        TxnOutput::none()
    }

    /// The transport failed to deliver a response (RFC 3261 §17.2.4): the transaction ends.
    pub fn on_transport_error(&mut self) -> TxnOutput {
        self.terminate()
    }

    fn terminate(&mut self) -> TxnOutput {
        self.state = ServerInviteState::Terminated;
        self.timer_g = None;
        self.timer_h = None;
        self.timer_i = None;
        self.timer_l = None;
        TxnOutput::event(TxnEvent::Terminated)
    }
}

impl Transaction for InviteServerTxn {
    fn poll_timeout(&self) -> Option<Instant> {
        earliest(&[self.timer_g.map(|g| g.at), self.timer_h, self.timer_i, self.timer_l])
    }

    fn handle_timeout(&mut self, now: Instant) -> TxnOutput {
        if self.timer_h.is_some_and(|h| now >= h) {
            // Timer H: no ACK. The TU learns of it (RFC 3261 §17.2.1).
            let mut out = self.terminate();
            out.event = Some(TxnEvent::Timeout);
            return out;
        }
        if self.timer_i.is_some_and(|t| now >= t) || self.timer_l.is_some_and(|t| now >= t) {
            return self.terminate();
        }
        if let Some(g) = self.timer_g
            && now >= g.at
        {
            // Timer G doubles up to T2 (RFC 3261 §17.2.1).
            let interval = (g.interval * 2).min(self.timers.t2);
            self.timer_g = Some(Retransmit {
                at: now + interval,
                interval,
            });
            if let Some(r) = &self.last_response {
                return TxnOutput::resend(r.clone());
            }
        }
        TxnOutput::none()
    }

    fn is_terminated(&self) -> bool {
        self.state == ServerInviteState::Terminated
    }
}
