//! The INVITE client transaction: RFC 3261 §17.1.1 as amended by RFC 6026 §7.2 and §8.
//!
//! ```text
//!   send INVITE -> Calling --1xx--> Proceeding
//!     A: resend (unreliable)  \         |  \
//!     B: Timeout               \2xx     |2xx \ 300-699: send ACK
//!                               v       v     v
//!                             Accepted (M)   Completed (D) <- final again: resend ACK
//!                                   \         /
//!                                    Terminated
//! ```
//! The ACK for a non-2xx final is built here (§17.1.1.3); the ACK for a 2xx belongs to the
//! dialog (§13.2.2.4), so in Accepted every 2xx is passed up.

use super::{Retransmit, TimerConfig, Transaction, TxnEvent, TxnOutput, earliest};
use crate::sip::msg::{Headers, Name};
use crate::sip::msg::{Method, Request, Response};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// States of [`InviteClientTxn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientInviteState {
    Calling,
    Proceeding,
    Accepted,
    Completed,
    Terminated,
}

/// An INVITE client transaction.
#[derive(Debug)]
pub struct InviteClientTxn {
    state: ClientInviteState,
    reliable: bool,
    timers: TimerConfig,
    request: Request,
    request_bytes: Bytes,
    ack: Option<Bytes>,
    timer_a: Option<Retransmit>,
    timer_b: Option<Instant>,
    timer_d: Option<Instant>,
    timer_m: Option<Instant>,
}

/// Timer D: at least 32 s over unreliable transports (RFC 3261 §17.1.1.2).
const TIMER_D_UNRELIABLE: Duration = Duration::from_secs(32);

impl InviteClientTxn {
    /// Starts the transaction: the returned output carries the INVITE to send.
    pub fn start(request: Request, reliable: bool, timers: TimerConfig, now: Instant) -> (Self, TxnOutput) {
        let request_bytes = request.to_bytes();
        let txn = InviteClientTxn {
            state: ClientInviteState::Calling,
            reliable,
            timers,
            request,
            request_bytes: request_bytes.clone(),
            ack: None,
            timer_a: (!reliable).then(|| Retransmit {
                at: now + timers.t1,
                interval: timers.t1,
            }),
            timer_b: Some(now + timers.t1x64()),
            timer_d: None,
            timer_m: None,
        };
        (txn, TxnOutput::send(request_bytes))
    }

    pub fn state(&self) -> ClientInviteState {
        self.state
    }

    pub fn request(&self) -> &Request {
        &self.request
    }

    /// A response matching this transaction arrived. Returns whether the TU must see it,
    /// and what to send.
    pub fn on_response(&mut self, resp: &Response, now: Instant) -> (bool, TxnOutput) {
        use ClientInviteState::*;
        match (self.state, resp.code) {
            (Calling | Proceeding, 100..=199) => {
                self.state = Proceeding;
                self.timer_a = None;
                self.timer_b = None;
                (true, TxnOutput::none())
            }
            (Calling | Proceeding, 200..=299) => {
                self.state = Accepted;
                self.timer_a = None;
                self.timer_b = None;
                self.timer_m = Some(now + self.timers.t1x64());
                (true, TxnOutput::none())
            }
            (Accepted, 200..=299) => (true, TxnOutput::none()),
            (Calling | Proceeding, 300..=699) => {
                self.state = Completed;
                self.timer_a = None;
                self.timer_b = None;
                let ack = ack_for_non_2xx(&self.request, resp).to_bytes();
                self.ack = Some(ack.clone());
                self.timer_d = Some(
                    now + if self.reliable {
                        Duration::ZERO
                    } else {
                        TIMER_D_UNRELIABLE
                    },
                );
                (true, TxnOutput::send(ack))
            }
            (Completed, 300..=699) => match &self.ack {
                Some(ack) => (false, TxnOutput::resend(ack.clone())),
                None => (false, TxnOutput::none()),
            },
            _ => (false, TxnOutput::none()),
        }
    }

    pub fn on_transport_error(&mut self) -> TxnOutput {
        self.stop();
        TxnOutput::event(TxnEvent::Timeout)
    }

    fn stop(&mut self) {
        self.state = ClientInviteState::Terminated;
        self.timer_a = None;
        self.timer_b = None;
        self.timer_d = None;
        self.timer_m = None;
    }
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): Request-URI, Call-ID, From,
/// CSeq number and the top Via of the INVITE, the To of the response, and its Route headers.
pub fn ack_for_non_2xx(invite: &Request, resp: &Response) -> Request {
    let mut core = invite.core.clone();
    core.vias.truncate(1);
    core.to = resp.core.to.clone();
    core.to_tag = resp.core.to_tag.clone();
    core.cseq.method = Method::Ack;
    let mut headers = Headers::new();
    for route in invite.headers.get_raw(&Name::ROUTE) {
        headers.insert(Name::ROUTE, route);
    }
    Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        core,
        max_forwards: Some(70),
        headers,
        body: Bytes::new(),
    }
}

impl Transaction for InviteClientTxn {
    fn poll_timeout(&self) -> Option<Instant> {
        earliest(&[self.timer_a.map(|a| a.at), self.timer_b, self.timer_d, self.timer_m])
    }

    fn handle_timeout(&mut self, now: Instant) -> TxnOutput {
        if self.timer_b.is_some_and(|b| now >= b) {
            // Timer B: no response at all.
            self.stop();
            return TxnOutput::event(TxnEvent::Timeout);
        }
        if self.timer_d.is_some_and(|d| now >= d) || self.timer_m.is_some_and(|m| now >= m) {
            self.stop();
            return TxnOutput::event(TxnEvent::Terminated);
        }
        if let Some(a) = self.timer_a
            && now >= a.at
        {
            // Timer A doubles without a cap (RFC 3261 §17.1.1.2).
            let interval = a.interval * 2;
            self.timer_a = Some(Retransmit {
                at: now + interval,
                interval,
            });
            return TxnOutput::resend(self.request_bytes.clone());
        }
        TxnOutput::none()
    }

    fn is_terminated(&self) -> bool {
        self.state == ClientInviteState::Terminated
    }
}
