//! The transaction side of [`UasCore`]: server and client transaction timeouts, call
//! timers (2xx and reliable-provisional retransmission, session refresh), responses to our
//! own requests, and starting a non-INVITE client transaction (RFC 3261 §17).

use super::*;

impl UasCore {
    pub(super) fn server_timeout(&mut self, now: Instant, key: ServerKey) {
        let Some(entry) = self.server.get_mut(&key) else { return };
        if entry.txn.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        let out = entry.txn.as_txn().handle_timeout(now);
        let peer = entry.peer;
        let next = entry.txn.poll_timeout();
        self.apply_server_output(&key, peer, out);
        if self.server.contains_key(&key) {
            self.schedule(TimerTarget::Server(key), next);
        }
    }

    pub(super) fn apply_server_output(&mut self, key: &ServerKey, peer: Peer, out: TxnOutput) {
        if let Some(bytes) = out.transmit {
            if out.retransmission {
                metrics::counter!("sip_retransmissions_total", "kind" => "response").increment(1);
            }
            self.send(peer, bytes);
        }
        match out.event {
            Some(TxnEvent::Terminated) | Some(TxnEvent::Timeout) => {
                self.timers.cancel(&TimerTarget::Server(key.clone()));
                if let Some(entry) = self.server.remove(key)
                    && let Some(mk) = entry.merge
                {
                    self.merge.remove(&mk);
                }
            }
            None => {}
        }
    }

    pub(super) fn client_timeout(&mut self, now: Instant, key: ClientKey) {
        let Some(entry) = self.client.get_mut(&key) else { return };
        let out = match &mut entry.txn {
            ClientTxn::Invite(t) if t.poll_timeout().is_some_and(|x| x <= now) => t.handle_timeout(now),
            ClientTxn::NonInvite(t) if t.poll_timeout().is_some_and(|x| x <= now) => t.handle_timeout(now),
            _ => return,
        };
        let (peer, call, purpose) = (entry.peer, entry.call, entry.purpose);
        let next = match &entry.txn {
            ClientTxn::Invite(t) => t.poll_timeout(),
            ClientTxn::NonInvite(t) => t.poll_timeout(),
        };
        if let Some(bytes) = out.transmit {
            metrics::counter!("sip_retransmissions_total", "kind" => "request").increment(1);
            self.send(peer, bytes);
        }
        match out.event {
            Some(TxnEvent::Timeout) => {
                self.client.remove(&key);
                if purpose == Purpose::Refresh {
                    // RFC 3261 §12.2.1.2: a timeout on an in-dialog request ends the dialog.
                    self.send_bye_and_end(now, call, EndReason::DialogLost);
                }
                if purpose == Purpose::Refer {
                    self.transfer_result(call, 408);
                }
            }
            Some(TxnEvent::Terminated) => {
                self.client.remove(&key);
            }
            None => self.schedule(TimerTarget::Client(key), next),
        }
    }

    pub(super) fn call_next_timeout(call: &Call) -> Option<Instant> {
        let mut times = Vec::with_capacity(4);
        if let Some(p) = &call.pending_2xx {
            times.push(p.resend.next_wake());
        }
        if let Some(p) = &call.pending_reliable {
            times.push(p.resend.next_wake());
        }
        if let Some(at) = call.hang_up_at {
            times.push(at);
        }
        if let Some(st) = &call.session_timer
            && call.state == CallState::Confirmed
        {
            match st.refresh_at() {
                Some(r) if call.client_txn.is_none() => times.push(r.min(st.bye_at())),
                _ => times.push(st.bye_at()),
            }
        }
        times.into_iter().min()
    }

    pub(super) fn reschedule_call(&mut self, call: CallRef) {
        let next = self.calls.get(&call).and_then(Self::call_next_timeout);
        self.schedule(TimerTarget::Call(call), next);
    }

    /// Acts on a [`Resend`] step: sends and counts a retransmission; true when it gave up.
    pub(super) fn resend(&mut self, peer: Peer, step: Option<ResendStep>, kind: &'static str) -> bool {
        match step {
            Some(ResendStep::GiveUp) => true,
            Some(ResendStep::Send(bytes)) => {
                metrics::counter!("sip_retransmissions_total", "kind" => kind).increment(1);
                self.send(peer, bytes);
                false
            }
            Some(ResendStep::Wait) | None => false,
        }
    }

    pub(super) fn call_timeout(&mut self, now: Instant, cref: CallRef) {
        let Some(call) = self.calls.get_mut(&cref) else { return };
        let peer = call.peer;
        // 2xx retransmission until ACK (RFC 3261 §13.3.1.4).
        let step = call.pending_2xx.as_mut().map(|p| p.resend.step(now));
        if self.resend(peer, step, "2xx")
            && let Some(call) = self.calls.get_mut(&cref)
        {
            call.pending_2xx = None;
            call.reinvite_in_progress = None;
            if call.state == CallState::Accepted || self.hangup_after_ack.contains_key(&cref) {
                tracing::warn!(call = cref.0, "no ACK for 2xx within 64*T1; ending the call");
                self.send_bye_and_end(now, cref, EndReason::NoAck);
                return;
            }
        }
        let Some(call) = self.calls.get_mut(&cref) else { return };
        // Reliable provisional retransmission until PRACK (RFC 3262 §3).
        let step = call.pending_reliable.as_mut().map(|p| p.resend.step(now));
        if self.resend(peer, step, "reliable_1xx")
            && let Some(call) = self.calls.get_mut(&cref)
        {
            call.pending_reliable = None;
            if call.state == CallState::Early {
                let _ = self.reject(cref, 500, now);
                return;
            }
        }
        let Some(call) = self.calls.get_mut(&cref) else { return };
        // The longest call we allow (sip.max_call_secs).
        if call.hang_up_at.is_some_and(|at| now >= at) {
            tracing::warn!(call = cref.0, "the call reached sip.max_call_secs; hanging up");
            metrics::counter!("sip_calls_too_long_total").increment(1);
            match call.state {
                CallState::Early => {
                    self.final_to_invite(now, cref, 480);
                    self.end_call(cref, EndReason::TooLong);
                }
                CallState::Accepted => {
                    call.hang_up_at = None;
                    self.hangup_after_ack.insert(cref, ());
                    self.events.push_back(UasEvent::Ended {
                        call: cref,
                        reason: EndReason::TooLong,
                    });
                }
                CallState::Confirmed => self.send_bye_and_end(now, cref, EndReason::TooLong),
                CallState::Terminating | CallState::Ended => {}
            }
            return;
        }
        let Some(call) = self.calls.get_mut(&cref) else { return };
        // Session timer (RFC 4028 §10).
        if let (Some(st), CallState::Confirmed) = (call.session_timer, call.state) {
            if now >= st.bye_at() {
                tracing::info!(call = cref.0, "session not refreshed in time; sending BYE");
                self.send_bye_and_end(now, cref, EndReason::SessionExpired);
                return;
            }
            if st.refresh_at().is_some_and(|r| now >= r) && call.client_txn.is_none() {
                self.send_refresh(now, cref);
            }
        }
        self.reschedule_call(cref);
    }

    // ---------------------------------------------------------------- requests

    /// A response arrived (to a request we sent: BYE, UPDATE, re-INVITE).
    pub fn handle_response(&mut self, now: Instant, resp: Response, _peer: Peer) {
        metrics::counter!("sip_responses_received_total", "code" => code_label(resp.code)).increment(1);
        let key = ClientKey::of_response(&resp);
        let Some(entry) = self.client.get_mut(&key) else {
            // RFC 3261 §18.1.2: a response matching no transaction is dropped.
            return;
        };
        let (pass, out) = match &mut entry.txn {
            ClientTxn::Invite(t) => t.on_response(&resp, now),
            ClientTxn::NonInvite(t) => (t.on_response(&resp, now), TxnOutput::none()),
        };
        let (peer, cref, purpose) = (entry.peer, entry.call, entry.purpose);
        let next = match &entry.txn {
            ClientTxn::Invite(t) => t.poll_timeout(),
            ClientTxn::NonInvite(t) => t.poll_timeout(),
        };
        let is_invite = matches!(entry.txn, ClientTxn::Invite(_));
        if let Some(bytes) = out.transmit {
            self.send(peer, bytes);
        }
        self.schedule(TimerTarget::Client(key.clone()), next);
        if pass && resp.code >= 300 && purpose == Purpose::Refer {
            // RFC 3515 §2.4.2: the REFER was refused; no NOTIFY will follow.
            self.transfer_result(cref, resp.code);
            return;
        }
        if !pass || resp.code < 200 || purpose != Purpose::Refresh {
            return;
        }
        let Some(call) = self.calls.get_mut(&cref) else { return };
        call.client_txn = None;
        if (200..300).contains(&resp.code) {
            if let Some(st) = &mut call.session_timer {
                st.refreshed(now);
            }
            if is_invite {
                // RFC 3261 §13.2.2.4: the ACK for a 2xx is the dialog's.
                let ack = call.new_request_with_cseq(Method::Ack, resp.core.cseq.seq, &self.cfg);
                let bytes = ack.to_bytes();
                self.send(peer, bytes);
            }
            self.reschedule_call(cref);
        } else if resp.code == 481 || resp.code == 408 {
            // RFC 3261 §12.2.1.2
            self.send_bye_and_end(now, cref, EndReason::DialogLost);
        } else {
            self.reschedule_call(cref);
        }
    }

    /// Starts a non-INVITE client transaction for an in-dialog request and sends it.
    pub(super) fn start_non_invite(&mut self, req: Request, peer: Peer, cref: CallRef, purpose: Purpose, now: Instant) {
        let key = ClientKey::of_request(&req);
        let method = req.method.as_str().to_string();
        let (txn, out) = NonInviteClientTxn::start(req, peer.transport.is_reliable(), self.cfg.timers, now);
        let next = txn.poll_timeout();
        self.client.insert(
            key.clone(),
            ClientEntry {
                txn: ClientTxn::NonInvite(txn),
                peer,
                call: cref,
                purpose,
            },
        );
        metrics::counter!("sip_requests_sent_total", "method" => method).increment(1);
        if let Some(bytes) = out.transmit {
            self.send(peer, bytes);
        }
        self.schedule(TimerTarget::Client(key), next);
    }
}
