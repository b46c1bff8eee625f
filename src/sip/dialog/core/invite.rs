//! The INVITE server side of [`UasCore`]: request dispatch, new calls (admission, offer
//! checks, session timers), ACK and CANCEL, the TU's ring/answer/reject/hangup, and a
//! call's end (RFC 3261 §13.3, §9.2, §15).

use super::*;

impl UasCore {
    /// A request arrived from `peer`.
    pub fn handle_request(&mut self, now: Instant, req: Request, peer: Peer) {
        metrics::counter!("sip_requests_received_total", "method" => req.method.metric_label()).increment(1);
        let key = ServerKey::of_request(&req);
        if req.method == Method::Ack {
            self.on_ack(now, req, key);
            return;
        }
        if let Some(entry) = self.server.get_mut(&key) {
            // A retransmission (RFC 3261 §17.2.1, §17.2.2).
            let out = match &mut entry.txn {
                ServerTxn::Invite(t) => t.on_retransmitted_request(),
                ServerTxn::NonInvite(t) => t.on_retransmitted_request(),
            };
            let p = entry.peer;
            self.apply_server_output(&key, p, out);
            return;
        }
        if req.method == Method::Cancel {
            self.on_cancel(now, req, key, peer);
            return;
        }
        // RFC 3261 §8.2.2.2: merged requests.
        if let Some(mk) = MergeKey::of_request(&req)
            && self.merge.get(&mk).is_some_and(|k| *k != key)
        {
            self.respond(now, &req, key, peer, 482, Vec::new(), None);
            return;
        }
        // RFC 3261 §8.2.2.1: Request-URI scheme.
        if let RequestUri::Other { .. } = req.uri {
            self.respond(now, &req, key, peer, 416, Vec::new(), None);
            return;
        }
        // RFC 3261 §8.2.1: methods.
        match &req.method {
            // NOTIFY is taken inside a dialog only (the progress of a transfer, RFC 3515).
            Method::Notify if req.to_tag().is_some() => {}
            Method::Register
            | Method::Subscribe
            | Method::Notify
            | Method::Message
            | Method::Publish
            | Method::Refer => {
                self.respond(now, &req, key, peer, 405, vec![(Name::ALLOW, ALLOW.into())], None);
                return;
            }
            Method::Other(_) => {
                self.respond(now, &req, key, peer, 501, vec![(Name::ALLOW, ALLOW.into())], None);
                return;
            }
            _ => {}
        }
        // RFC 3261 §8.2.2.3: Require.
        let unsupported: Vec<String> = req
            .headers
            .tokens_as_sent(&Name::REQUIRE)
            .into_iter()
            .filter(|t| !t.eq_ignore_ascii_case("100rel") && !t.eq_ignore_ascii_case("timer"))
            .collect();
        if !unsupported.is_empty() {
            let list = unsupported.join(", ");
            self.respond(now, &req, key, peer, 420, vec![(Name::UNSUPPORTED, list)], None);
            return;
        }
        // RFC 3261 §8.2.3: content processing.
        if let Err(status) = check_content(&req) {
            let hdr = if status == 415 {
                vec![
                    (Name::ACCEPT, ACCEPT.into()),
                    (Name::ACCEPT_ENCODING, "identity".into()),
                ]
            } else {
                Vec::new()
            };
            self.respond(now, &req, key, peer, status, hdr, None);
            return;
        }
        if req.to_tag().is_some() {
            self.in_dialog(now, req, key, peer);
            return;
        }
        match req.method {
            Method::Invite => self.new_call(now, req, key, peer),
            Method::Options if !self.admitted(now, &req, peer) => {}
            Method::Options => {
                let hdrs = vec![
                    (Name::ALLOW, ALLOW.into()),
                    (Name::ACCEPT, ACCEPT.into()),
                    (Name::SUPPORTED, SUPPORTED.into()),
                ];
                let code = if self.cfg.refuse_new_calls { 503 } else { 200 };
                self.respond(now, &req, key, peer, code, hdrs, None);
            }
            _ => self.respond(now, &req, key, peer, 481, Vec::new(), None),
        }
    }

    /// Sends a response to `req`, creating its server transaction when needed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn respond(
        &mut self,
        now: Instant,
        req: &Request,
        key: ServerKey,
        peer: Peer,
        code: u16,
        headers: Vec<(Name, String)>,
        body: Option<(&str, String)>,
    ) {
        if !self.server.contains_key(&key) {
            let reliable = peer.transport.is_reliable();
            let txn = if req.method == Method::Invite {
                ServerTxn::Invite(InviteServerTxn::new(reliable, self.cfg.timers))
            } else {
                ServerTxn::NonInvite(NonInviteServerTxn::new(reliable, self.cfg.timers))
            };
            let merge = MergeKey::of_request(req);
            if let Some(mk) = &merge {
                self.merge.insert(mk.clone(), key.clone());
            }
            self.server.insert(
                key.clone(),
                ServerEntry {
                    txn,
                    peer,
                    call: None,
                    merge,
                    to_tag: new_tag(&mut self.ids),
                },
            );
        }
        let Some(tag) = self.server.get(&key).map(|e| e.to_tag.clone()) else {
            return;
        };
        let mut resp = response_to(req, code, "", Some(&tag));
        self.decorate(&mut resp, headers, body);
        metrics::counter!("sip_responses_sent_total", "code" => code_label(code)).increment(1);
        let Some(entry) = self.server.get_mut(&key) else { return };
        let out = entry.txn.send_response(code, resp.to_bytes(), now);
        let p = entry.peer;
        let next = entry.txn.poll_timeout();
        self.apply_server_output(&key, p, out);
        if self.server.contains_key(&key) {
            self.schedule(TimerTarget::Server(key), next);
        }
    }

    pub(super) fn decorate(&self, resp: &mut Response, headers: Vec<(Name, String)>, body: Option<(&str, String)>) {
        for (name, value) in headers {
            resp.headers.insert(name, value);
        }
        if resp.code > 100 {
            resp.headers.insert(Name::SERVER, self.cfg.server_name.clone());
        }
        if let Some((ctype, text)) = body {
            resp.headers.insert(Name::CONTENT_TYPE, ctype.to_string());
            resp.body = Bytes::from(text);
        }
    }

    /// RFC 4028 §8.2: the session timer a request asks for; `None` when the interval was too
    /// small and the request has been answered 422 with our Min-SE.
    pub(super) fn session_timer_for(
        &mut self,
        now: Instant,
        req: &Request,
        key: &ServerKey,
        peer: Peer,
    ) -> Option<Option<SessionTimer>> {
        match SessionTimer::negotiate(req, self.cfg.session_expires_secs, self.cfg.min_se_secs, now) {
            Negotiation::TooSmall { min_se } => {
                let hdr = vec![(Name::MIN_SE, min_se.to_string())];
                self.respond(now, req, key.clone(), peer, 422, hdr, None);
                None
            }
            Negotiation::Use(t) => Some(Some(t)),
            Negotiation::None => Some(None),
        }
    }

    pub(super) fn on_ack(&mut self, now: Instant, req: Request, key: ServerKey) {
        // ACK for a non-2xx final: part of the INVITE transaction (RFC 3261 §17.2.1).
        if let Some(entry) = self.server.get_mut(&key)
            && let ServerTxn::Invite(t) = &mut entry.txn
        {
            let tag_ok = match &key {
                ServerKey::Rfc2543 { .. } => req.core.to_tag.as_deref() == Some(entry.to_tag.as_str()),
                ServerKey::Rfc3261 { .. } => true,
            };
            if t.state() == ServerInviteState::Completed && tag_ok {
                let out = t.on_ack(now);
                let peer = entry.peer;
                let next = t.poll_timeout();
                self.apply_server_output(&key, peer, out);
                if self.server.contains_key(&key) {
                    self.schedule(TimerTarget::Server(key), next);
                }
                return;
            }
        }
        // ACK for a 2xx: belongs to the dialog (RFC 3261 §13.3.1.4).
        let Some(tag) = req.core.to_tag.clone() else { return };
        let Some(&cref) = self.dialogs.get(&(req.core.call_id.clone(), tag)) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&cref) else { return };
        let Some(p) = &call.pending_2xx else { return };
        if p.cseq != req.core.cseq.seq {
            return;
        }
        let offer_in_2xx = p.offer_in_2xx;
        call.pending_2xx = None;
        call.reinvite_in_progress = None;
        if call.state == CallState::Accepted {
            call.state = CallState::Confirmed;
            if let Some(st) = &mut call.session_timer {
                st.refreshed(now);
            }
        }
        let mut changed = None;
        if offer_in_2xx && !req.body.is_empty() {
            // The answer to our offer (RFC 3261 §13.2.1).
            if let (Ok(answer), Some(local)) = (SessionDescription::parse(&req.body), &call.local_media)
                && let Ok(neg) = sdp::accept_answer(&answer, local)
            {
                call.negotiated = Some(neg.clone());
                changed = Some(neg);
            }
        }
        if let Some(media) = changed {
            self.events.push_back(UasEvent::MediaChanged { call: cref, media });
        }
        if self.hangup_after_ack.remove(&cref).is_some() {
            self.send_bye_and_end(now, cref, EndReason::LocalBye);
            return;
        }
        self.reschedule_call(cref);
    }

    pub(super) fn on_cancel(&mut self, now: Instant, req: Request, key: ServerKey, peer: Peer) {
        // RFC 3261 §9.2
        let invite_key = ServerKey::cancelled_invite(&req);
        let Some(entry) = self.server.get(&invite_key) else {
            self.respond(now, &req, key, peer, 481, Vec::new(), None);
            return;
        };
        let proceeding = matches!(&entry.txn, ServerTxn::Invite(t) if t.state() == ServerInviteState::Proceeding);
        let call = entry.call;
        let tag = entry.to_tag.clone();
        self.respond_with_tag(now, &req, key, peer, 200, &tag);
        if proceeding && let Some(cref) = call {
            self.final_to_invite(now, cref, 487);
            self.end_call(cref, EndReason::Cancelled);
        }
    }

    /// Like [`Self::respond`] with a given To tag (CANCEL responses carry the INVITE's tag).
    pub(super) fn respond_with_tag(
        &mut self,
        now: Instant,
        req: &Request,
        key: ServerKey,
        peer: Peer,
        code: u16,
        tag: &str,
    ) {
        let reliable = peer.transport.is_reliable();
        self.server.insert(
            key.clone(),
            ServerEntry {
                txn: ServerTxn::NonInvite(NonInviteServerTxn::new(reliable, self.cfg.timers)),
                peer,
                call: None,
                merge: None,
                to_tag: tag.to_string(),
            },
        );
        self.respond(now, req, key, peer, code, Vec::new(), None);
    }

    pub(super) fn new_call(&mut self, now: Instant, req: Request, key: ServerKey, peer: Peer) {
        if self.cfg.refuse_new_calls || self.overloaded || self.calls.len() >= self.cfg.max_calls {
            let reason = if self.cfg.refuse_new_calls {
                "draining"
            } else {
                "overload"
            };
            metrics::counter!("sip_calls_refused_total", "reason" => reason).increment(1);
            self.respond(now, &req, key, peer, 503, vec![(Name::RETRY_AFTER, "5".into())], None);
            return;
        }
        let Some(trunk) = self.admit_call(now, &req, peer) else {
            return;
        };
        let release = |core: &mut Self| {
            if let Some(t) = &trunk {
                core.gate.released(t);
            }
        };
        // RFC 3261 §8.2.3 / RFC 4475 §3.3.15: the answer must be SDP.
        if !accepts_sdp(&req) {
            release(self);
            let warn = vec![(
                Name::WARNING,
                "399 tolk \"the answer can only be application/sdp\"".to_string(),
            )];
            self.respond(now, &req, key, peer, 406, warn, None);
            return;
        }
        let Some(session_timer) = self.session_timer_for(now, &req, &key, peer) else {
            release(self);
            return;
        };
        let offer = match sdp_body(&req) {
            None => None,
            Some(body) => match SessionDescription::parse(&body) {
                Ok(sd) => Some(sd),
                Err(e) => {
                    release(self);
                    let warn = vec![(Name::WARNING, format!("399 tolk \"{e}\""))];
                    self.respond(now, &req, key, peer, e.status().max(488), warn, None);
                    return;
                }
            },
        };
        let cref = CallRef(self.next_call);
        self.next_call += 1;
        let local_tag = new_tag(&mut self.ids);
        let mut call = Call::new(cref, &req, peer, local_tag.clone(), self.ids.u64(..));
        call.require_100rel = req.required().iter().any(|t| t == "100rel");
        call.session_timer = session_timer;
        call.offer = offer.clone();
        // RFC 3325 §9.1: the asserted identity, from a carrier we trust to assert it.
        let caller = match &trunk {
            Some(t) if t.trust_pai => crate::sip::trunk::asserted_caller(&req).or_else(|| call.caller()),
            _ => call.caller(),
        };
        call.trunk = trunk.clone();
        call.hang_up_at = self.cfg.max_call_duration.map(|d| now + d);
        let merge = MergeKey::of_request(&req);
        if let Some(mk) = &merge {
            self.merge.insert(mk.clone(), key.clone());
        }
        self.insert_invite_txn(&key, peer, cref, merge, local_tag.clone());
        let incoming = IncomingCall {
            call: cref,
            dialled: call.dialled(),
            caller,
            trunk,
            sip_call_id: req.core.call_id.clone(),
            offer,
            peer,
            privacy_requested: req
                .headers
                .tokens(&Name::PRIVACY)
                .iter()
                .any(|t| t == "id" || t == "header" || t == "user"),
        };
        self.dialogs.insert((req.core.call_id.clone(), local_tag), cref);
        self.calls.insert(cref, call);
        // RFC 3261 §17.2.1: 100 Trying at once, so the carrier stops retransmitting.
        self.respond(now, &req, key, peer, 100, Vec::new(), None);
        // Its longest life (sip.max_call_secs) runs from now.
        self.reschedule_call(cref);
        self.events.push_back(UasEvent::Incoming(Box::new(incoming)));
    }

    /// Sends 180 Ringing (reliably, RFC 3262, when the caller requires 100rel).
    pub fn ring(&mut self, call: CallRef, now: Instant) -> Result<(), CommandError> {
        let c = self.calls.get_mut(&call).ok_or(CommandError::NoSuchCall)?;
        if c.state != CallState::Early {
            return Err(CommandError::WrongState);
        }
        if c.pending_reliable.is_some() {
            // RFC 3262 §3: no new reliable provisional until the last one is acknowledged.
            return Ok(());
        }
        let mut resp = response_to(&c.invite, 180, "", Some(&c.local_tag));
        resp.headers.insert(Name::CONTACT, c.contact());
        for rr in &c.record_route {
            resp.headers.insert(Name::RECORD_ROUTE, rr.clone());
        }
        let reliable = c.require_100rel;
        let rseq = c.next_rseq;
        if reliable {
            resp.headers.insert(Name::REQUIRE, "100rel");
            resp.headers.insert(Name::RSEQ, rseq.to_string());
            c.next_rseq += 1;
        }
        resp.headers.insert(Name::SERVER, self.cfg.server_name.clone());
        let bytes = resp.to_bytes();
        if reliable {
            c.pending_reliable = Some(PendingReliable {
                rseq,
                resend: Resend::new(bytes.clone(), now, &self.cfg.timers, false),
            });
        }
        let key = c.invite_key.clone();
        metrics::counter!("sip_responses_sent_total", "code" => code_label(180)).increment(1);
        if let Some(entry) = self.server.get_mut(&key) {
            let out = entry.txn.send_response(180, bytes, now);
            let peer = entry.peer;
            self.apply_server_output(&key, peer, out);
        }
        self.reschedule_call(call);
        Ok(())
    }

    /// Answers the call with 200 OK: negotiates the caller's offer against `local`, or puts
    /// our offer in the 200 when the INVITE had none (RFC 3261 §13.3.1, RFC 3264 §6).
    /// Returns the negotiated media, or `None` until the ACK brings the answer.
    pub fn answer(
        &mut self,
        call: CallRef,
        local: LocalMedia,
        now: Instant,
    ) -> Result<Option<NegotiatedMedia>, CommandError> {
        let c = self.calls.get_mut(&call).ok_or(CommandError::NoSuchCall)?;
        if c.state != CallState::Early {
            return Err(CommandError::WrongState);
        }
        let (body, negotiated, offer_in_2xx) = match &c.offer {
            Some(offer) => match sdp::answer(offer, &local) {
                Ok((text, neg)) => (text, Some(neg), false),
                Err(e) => {
                    let status = e.status().max(488);
                    self.reject(call, status, now)?;
                    return Err(CommandError::Sdp(e));
                }
            },
            None => (sdp::offer(&local, Direction::SendRecv), None, true),
        };
        c.last_local_sdp = Some(body.clone());
        c.local_media = Some(local);
        c.negotiated = negotiated.clone();
        let mut resp = response_to(&c.invite, 200, "", Some(&c.local_tag));
        let mut headers = vec![(Name::CONTACT, c.contact())];
        for rr in &c.record_route {
            headers.push((Name::RECORD_ROUTE, rr.clone()));
        }
        headers.push((Name::ALLOW, ALLOW.into()));
        headers.push((Name::SUPPORTED, SUPPORTED.into()));
        if let Some(st) = &mut c.session_timer {
            st.refreshed(now);
        }
        session_timer_headers(c.session_timer.as_ref(), &mut headers);
        let cseq = c.invite.core.cseq.seq;
        let key = c.invite_key.clone();
        c.state = CallState::Accepted;
        c.pending_reliable = None;
        self.decorate(&mut resp, headers, Some(("application/sdp", body)));
        let bytes = resp.to_bytes();
        if let Some(c) = self.calls.get_mut(&call) {
            c.pending_2xx = Some(Pending2xx {
                cseq,
                offer_in_2xx,
                resend: Resend::new(bytes.clone(), now, &self.cfg.timers, true),
            });
        }
        metrics::counter!("sip_responses_sent_total", "code" => code_label(200)).increment(1);
        if let Some(entry) = self.server.get_mut(&key) {
            let out = entry.txn.send_response(200, bytes, now);
            let peer = entry.peer;
            let next = entry.txn.poll_timeout();
            self.apply_server_output(&key, peer, out);
            self.schedule(TimerTarget::Server(key), next);
        }
        self.reschedule_call(call);
        Ok(negotiated)
    }

    /// Rejects a call that is not answered yet with a final status (3xx-6xx).
    pub fn reject(&mut self, call: CallRef, status: u16, now: Instant) -> Result<(), CommandError> {
        let c = self.calls.get(&call).ok_or(CommandError::NoSuchCall)?;
        if c.state != CallState::Early || !(300..=699).contains(&status) {
            return Err(CommandError::WrongState);
        }
        self.final_to_invite(now, call, status);
        self.end_call(call, EndReason::Rejected(status));
        Ok(())
    }

    /// Ends the call from our side: BYE once the dialog is confirmed (RFC 3261 §15), 480
    /// before answer.
    pub fn hangup(&mut self, call: CallRef, now: Instant) -> Result<(), CommandError> {
        let c = self.calls.get(&call).ok_or(CommandError::NoSuchCall)?;
        match c.state {
            CallState::Early => self.reject(call, 480, now),
            CallState::Accepted => {
                // RFC 3261 §15: no BYE before the ACK (or its timeout).
                self.hangup_after_ack.insert(call, ());
                self.events.push_back(UasEvent::Ended {
                    call,
                    reason: EndReason::LocalBye,
                });
                Ok(())
            }
            CallState::Confirmed => {
                self.send_bye_and_end(now, call, EndReason::LocalBye);
                Ok(())
            }
            CallState::Terminating | CallState::Ended => Err(CommandError::WrongState),
        }
    }

    pub(super) fn final_to_invite(&mut self, now: Instant, cref: CallRef, status: u16) {
        let Some(c) = self.calls.get(&cref) else { return };
        let mut resp = response_to(&c.invite, status, "", Some(&c.local_tag));
        if status == 503 {
            resp.headers.insert(Name::RETRY_AFTER, "5");
        }
        resp.headers.insert(Name::SERVER, self.cfg.server_name.clone());
        let key = c.invite_key.clone();
        metrics::counter!("sip_responses_sent_total", "code" => code_label(status)).increment(1);
        if let Some(entry) = self.server.get_mut(&key) {
            let out = entry.txn.send_response(status, resp.to_bytes(), now);
            let peer = entry.peer;
            let next = entry.txn.poll_timeout();
            self.apply_server_output(&key, peer, out);
            if self.server.contains_key(&key) {
                self.schedule(TimerTarget::Server(key), next);
            }
        }
    }

    pub(super) fn send_bye_and_end(&mut self, now: Instant, cref: CallRef, reason: EndReason) {
        let cfg = self.cfg.clone();
        if let Some(call) = self.calls.get_mut(&cref) {
            let bye = call.new_request(Method::Bye, &cfg);
            let peer = call.peer;
            self.start_non_invite(bye, peer, cref, Purpose::Bye, now);
        }
        let already_told = self.hangup_after_ack.remove(&cref).is_some()
            || reason == EndReason::LocalBye && !self.calls.contains_key(&cref);
        if already_told {
            self.forget_call(cref);
        } else {
            self.end_call(cref, reason);
        }
    }

    pub(super) fn end_call(&mut self, cref: CallRef, reason: EndReason) {
        self.referring.remove(&cref);
        if self.forget_call(cref) {
            self.events.push_back(UasEvent::Ended { call: cref, reason });
        }
    }

    /// Drops everything the core keeps for the call (its timer, a pending hang-up, a
    /// transfer in flight, the dialog); true when the call was there.
    pub(super) fn forget_call(&mut self, cref: CallRef) -> bool {
        self.timers.cancel(&TimerTarget::Call(cref));
        self.hangup_after_ack.remove(&cref);
        self.referring.remove(&cref);
        match self.calls.remove(&cref) {
            Some(call) => {
                if let Some(t) = &call.trunk {
                    self.gate.released(t);
                }
                self.dialogs.remove(&(call.sip_call_id.clone(), call.local_tag.clone()));
                true
            }
            None => false,
        }
    }
}
