//! The non-INVITE client transaction: RFC 3261 §17.1.2.
//!
//! ```text
//!   send request -> Trying --1xx--> Proceeding --final--> Completed --K--> Terminated
//!     E: resend, interval doubling to T2 (T2 in Proceeding)
//!     F: Timeout to the TU
//! ```

use super::{Retransmit, TimerConfig, Transaction, TxnEvent, TxnOutput, earliest};
use crate::sip::msg::{Request, Response};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// States of [`NonInviteClientTxn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientNonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// A non-INVITE client transaction (BYE, OPTIONS, UPDATE, ...).
#[derive(Debug)]
pub struct NonInviteClientTxn {
    state: ClientNonInviteState,
    reliable: bool,
    timers: TimerConfig,
    request: Request,
    request_bytes: Bytes,
    timer_e: Option<Retransmit>,
    timer_f: Option<Instant>,
    timer_k: Option<Instant>,
}

impl NonInviteClientTxn {
    /// Starts the transaction: the returned output carries the request to send.
    pub fn start(request: Request, reliable: bool, timers: TimerConfig, now: Instant) -> (Self, TxnOutput) {
        let request_bytes = request.to_bytes();
        let txn = NonInviteClientTxn {
            state: ClientNonInviteState::Trying,
            reliable,
            timers,
            request,
            request_bytes: request_bytes.clone(),
            timer_e: (!reliable).then(|| Retransmit {
                at: now + timers.t1,
                interval: timers.t1,
            }),
            timer_f: Some(now + timers.t1x64()),
            timer_k: None,
        };
        (txn, TxnOutput::send(request_bytes))
    }

    pub fn state(&self) -> ClientNonInviteState {
        self.state
    }

    pub fn request(&self) -> &Request {
        &self.request
    }

    /// A response matching this transaction arrived; returns whether the TU must see it.
    pub fn on_response(&mut self, resp: &Response, now: Instant) -> bool {
        use ClientNonInviteState::*;
        match (self.state, resp.code) {
            (Trying | Proceeding, 100..=199) => {
                self.state = Proceeding;
                true
            }
            (Trying | Proceeding, _) => {
                self.state = Completed;
                self.timer_e = None;
                self.timer_f = None;
                self.timer_k = Some(now + if self.reliable { Duration::ZERO } else { self.timers.t4 });
                true
            }
            _ => false,
        }
    }

    pub fn on_transport_error(&mut self) -> TxnOutput {
        self.stop();
        TxnOutput::event(TxnEvent::Timeout)
    }

    fn stop(&mut self) {
        self.state = ClientNonInviteState::Terminated;
        self.timer_e = None;
        self.timer_f = None;
        self.timer_k = None;
    }
}

impl Transaction for NonInviteClientTxn {
    fn poll_timeout(&self) -> Option<Instant> {
        earliest(&[self.timer_e.map(|e| e.at), self.timer_f, self.timer_k])
    }

    fn handle_timeout(&mut self, now: Instant) -> TxnOutput {
        if self.timer_f.is_some_and(|f| now >= f) {
            self.stop();
            return TxnOutput::event(TxnEvent::Timeout);
        }
        if self.timer_k.is_some_and(|k| now >= k) {
            self.stop();
            return TxnOutput::event(TxnEvent::Terminated);
        }
        if let Some(e) = self.timer_e
            && now >= e.at
        {
            let interval = match self.state {
                ClientNonInviteState::Proceeding => self.timers.t2,
                _ => (e.interval * 2).min(self.timers.t2),
            };
            self.timer_e = Some(Retransmit {
                at: now + interval,
                interval,
            });
            return TxnOutput::resend(self.request_bytes.clone());
        }
        TxnOutput::none()
    }

    fn is_terminated(&self) -> bool {
        self.state == ClientNonInviteState::Terminated
    }
}
