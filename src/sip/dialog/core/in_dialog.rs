//! Requests inside a dialog (RFC 3261 §12.2.2): re-INVITE and UPDATE (RFC 3311), INFO
//! (DTMF relay), PRACK (RFC 3262), and our session refreshes (RFC 4028).

use super::*;

impl UasCore {
    pub(super) fn in_dialog(&mut self, now: Instant, req: Request, key: ServerKey, peer: Peer) {
        let dialog = (req.core.call_id.clone(), req.core.to_tag.clone().unwrap_or_default());
        let Some(&cref) = self.dialogs.get(&dialog) else {
            self.respond(now, &req, key, peer, 481, Vec::new(), None);
            return;
        };
        let Some(call) = self.calls.get_mut(&cref) else {
            self.respond(now, &req, key, peer, 481, Vec::new(), None);
            return;
        };
        if call.remote_tag.is_some() && call.remote_tag != req.core.from_tag {
            self.respond(now, &req, key, peer, 481, Vec::new(), None);
            return;
        }
        // RFC 3261 §12.2.2: CSeq must grow.
        if req.core.cseq.seq <= call.remote_cseq && req.method != Method::Prack {
            self.respond(now, &req, key, peer, 500, vec![(Name::RETRY_AFTER, "1".into())], None);
            return;
        }
        call.remote_cseq = call.remote_cseq.max(req.core.cseq.seq);
        match req.method {
            Method::Bye => {
                let early = call.state == CallState::Early;
                self.respond(now, &req, key, peer, 200, Vec::new(), None);
                if early {
                    self.final_to_invite(now, cref, 487);
                }
                self.end_call(cref, EndReason::RemoteBye);
            }
            Method::Invite => self.on_reinvite(now, req, key, peer, cref),
            Method::Update => self.on_update(now, req, key, peer, cref),
            Method::Info => self.on_info(now, req, key, peer, cref),
            Method::Notify => self.on_notify(now, req, key, peer, cref),
            Method::Prack => self.on_prack(now, req, key, peer, cref),
            Method::Options => {
                let hdrs = vec![(Name::ALLOW, ALLOW.into()), (Name::ACCEPT, ACCEPT.into())];
                self.respond(now, &req, key, peer, 200, hdrs, None);
            }
            _ => self.respond(now, &req, key, peer, 405, vec![(Name::ALLOW, ALLOW.into())], None),
        }
    }

    /// Answers a session modification's SDP against the call's local media, bumping the
    /// session version only when our description changes (RFC 3264 §8).
    pub(super) fn answer_modification(
        call: &mut Call,
        offer: &SessionDescription,
    ) -> Result<(String, NegotiatedMedia), sdp::SdpError> {
        let Some(local) = call.local_media.as_mut() else {
            return Err(sdp::SdpError::NoCommonCodec);
        };
        let (text, neg) = sdp::answer(offer, local)?;
        if call.last_local_sdp.as_deref() == Some(text.as_str()) {
            return Ok((text, neg));
        }
        local.session_version += 1;
        let (text, neg) = sdp::answer(offer, local)?;
        call.last_local_sdp = Some(text.clone());
        Ok((text, neg))
    }

    pub(super) fn on_reinvite(&mut self, now: Instant, req: Request, key: ServerKey, peer: Peer, cref: CallRef) {
        let Some(call) = self.calls.get(&cref) else { return };
        // RFC 3261 §14.2: one INVITE at a time in each direction.
        if call.state != CallState::Confirmed
            || call.reinvite_in_progress.is_some()
            || call.pending_2xx.is_some()
            || call.client_txn.is_some()
        {
            self.respond(now, &req, key, peer, 491, Vec::new(), None);
            return;
        }
        let Some(timer) = self.session_timer_for(now, &req, &key, peer) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&cref) else { return };
        let (body, offer_in_2xx, media) = match sdp_body(&req).map(|b| SessionDescription::parse(&b)) {
            Some(Ok(offer)) => match Self::answer_modification(call, &offer) {
                Ok((text, neg)) => (text, false, Some(neg)),
                Err(e) => {
                    // The session stays as it was (RFC 3261 §14.2).
                    self.respond(now, &req, key, peer, e.status().max(488), Vec::new(), None);
                    return;
                }
            },
            Some(Err(e)) => {
                self.respond(now, &req, key, peer, e.status().max(488), Vec::new(), None);
                return;
            }
            None => {
                let Some(local) = call.local_media.as_mut() else {
                    self.respond(now, &req, key, peer, 488, Vec::new(), None);
                    return;
                };
                local.session_version += 1;
                (sdp::offer(local, Direction::SendRecv), true, None)
            }
        };
        call.session_timer = timer.or(call.session_timer.map(|t| t.refreshed_at(now)));
        if let Some(neg) = &media {
            call.negotiated = Some(neg.clone());
        }
        call.reinvite_in_progress = Some(key.clone());
        let mut headers = vec![
            (Name::CONTACT, call.contact()),
            (Name::ALLOW, ALLOW.into()),
            (Name::SUPPORTED, SUPPORTED.into()),
        ];
        session_timer_headers(call.session_timer.as_ref(), &mut headers);
        let tag = call.local_tag.clone();
        let cseq = req.core.cseq.seq;
        // The transaction's To tag is the dialog's.
        self.insert_invite_txn(&key, peer, cref, None, tag);
        let mut resp = response_to(&req, 200, "", None);
        self.decorate(&mut resp, headers, Some(("application/sdp", body)));
        let bytes = resp.to_bytes();
        metrics::counter!("sip_responses_sent_total", "code" => code_label(200)).increment(1);
        if let Some(entry) = self.server.get_mut(&key) {
            let out = entry.txn.send_response(200, bytes.clone(), now);
            let next = entry.txn.poll_timeout();
            self.apply_server_output(&key, peer, out);
            self.schedule(TimerTarget::Server(key), next);
        }
        if let Some(call) = self.calls.get_mut(&cref) {
            call.pending_2xx = Some(Pending2xx {
                cseq,
                offer_in_2xx,
                resend: Resend::new(bytes, now, &self.cfg.timers, true),
            });
        }
        if let Some(media) = media {
            self.events.push_back(UasEvent::MediaChanged { call: cref, media });
        }
        self.reschedule_call(cref);
    }

    pub(super) fn on_update(&mut self, now: Instant, req: Request, key: ServerKey, peer: Peer, cref: CallRef) {
        // RFC 3311 §5.2
        let Some(timer) = self.session_timer_for(now, &req, &key, peer) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&cref) else { return };
        let mut body = None;
        let mut media = None;
        if let Some(raw) = sdp_body(&req) {
            if call.pending_2xx.is_some() || call.reinvite_in_progress.is_some() || call.local_media.is_none() {
                self.respond(now, &req, key, peer, 491, Vec::new(), None);
                return;
            }
            let offer = match SessionDescription::parse(&raw) {
                Ok(o) => o,
                Err(e) => {
                    self.respond(now, &req, key, peer, e.status().max(488), Vec::new(), None);
                    return;
                }
            };
            match Self::answer_modification(call, &offer) {
                Ok((text, neg)) => {
                    call.negotiated = Some(neg.clone());
                    body = Some(("application/sdp", text));
                    media = Some(neg);
                }
                Err(e) => {
                    self.respond(now, &req, key, peer, e.status().max(488), Vec::new(), None);
                    return;
                }
            }
        }
        if call.state == CallState::Confirmed {
            call.session_timer = timer.or(call.session_timer.map(|t| t.refreshed_at(now)));
        }
        let mut headers = vec![(Name::CONTACT, call.contact())];
        session_timer_headers(call.session_timer.as_ref(), &mut headers);
        self.respond(now, &req, key, peer, 200, headers, body);
        if let Some(media) = media {
            self.events.push_back(UasEvent::MediaChanged { call: cref, media });
        }
        self.reschedule_call(cref);
    }

    pub(super) fn on_info(&mut self, now: Instant, req: Request, key: ServerKey, peer: Peer, cref: CallRef) {
        if req.body.is_empty() {
            self.respond(now, &req, key, peer, 200, Vec::new(), None);
            return;
        }
        let ctype = media_type(&req);
        let parsed = match ctype.as_str() {
            "application/dtmf-relay" => parse_dtmf_relay(&req.body),
            "application/dtmf" => std::str::from_utf8(&req.body)
                .ok()
                .and_then(|s| dtmf_digit(s.trim()))
                .map(|d| (d, 100)),
            _ => {
                let hdrs = vec![(Name::ACCEPT, "application/dtmf-relay, application/dtmf".into())];
                self.respond(now, &req, key, peer, 415, hdrs, None);
                return;
            }
        };
        match parsed {
            Some((digit, duration_ms)) => {
                self.respond(now, &req, key, peer, 200, Vec::new(), None);
                self.events.push_back(UasEvent::InfoDtmf {
                    call: cref,
                    digit,
                    duration_ms,
                });
            }
            None => self.respond(now, &req, key, peer, 400, Vec::new(), None),
        }
    }

    pub(super) fn on_prack(&mut self, now: Instant, req: Request, key: ServerKey, peer: Peer, cref: CallRef) {
        // RFC 3262 §3: RAck = response-num CSeq-num Method.
        let Some(call) = self.calls.get_mut(&cref) else { return };
        let rack = req
            .header(&Name::RACK)
            .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>());
        let matches = match (&rack, &call.pending_reliable) {
            (Some(parts), Some(p)) if parts.len() == 3 => {
                parts[0].parse::<u32>().ok() == Some(p.rseq)
                    && parts[1].parse::<u32>().ok() == Some(call.invite.core.cseq.seq)
                    && parts[2] == "INVITE"
            }
            _ => false,
        };
        if matches {
            call.pending_reliable = None;
            self.respond(now, &req, key, peer, 200, Vec::new(), None);
        } else {
            self.respond(now, &req, key, peer, 481, Vec::new(), None);
        }
        self.reschedule_call(cref);
    }

    // ---------------------------------------------------------------- responses

    pub(super) fn send_refresh(&mut self, now: Instant, cref: CallRef) {
        let cfg = self.cfg.clone();
        let Some(call) = self.calls.get_mut(&cref) else { return };
        // RFC 4028 §7.4 / §9: UPDATE when the peer allows it, else a re-INVITE with the same SDP.
        let req = if call.peer_allows_update {
            let mut r = call.new_request(Method::Update, &cfg);
            if let Some(st) = &call.session_timer {
                r.headers.insert(Name::SESSION_EXPIRES, st.header_value());
            }
            r
        } else {
            let mut r = call.new_request(Method::Invite, &cfg);
            if let Some(st) = &call.session_timer {
                r.headers.insert(Name::SESSION_EXPIRES, st.header_value());
            }
            if let Some(sdp) = &call.last_local_sdp {
                r.headers.insert(Name::CONTENT_TYPE, "application/sdp");
                r.body = Bytes::from(sdp.clone());
            }
            r
        };
        let key = ClientKey::of_request(&req);
        let peer = call.peer;
        call.client_txn = Some(key.clone());
        let reliable = peer.transport.is_reliable();
        let (txn, out) = if req.method == Method::Invite {
            let (t, o) = InviteClientTxn::start(req, reliable, cfg.timers, now);
            (ClientTxn::Invite(t), o)
        } else {
            let (t, o) = NonInviteClientTxn::start(req, reliable, cfg.timers, now);
            (ClientTxn::NonInvite(t), o)
        };
        let next = match &txn {
            ClientTxn::Invite(t) => t.poll_timeout(),
            ClientTxn::NonInvite(t) => t.poll_timeout(),
        };
        self.client.insert(
            key.clone(),
            ClientEntry {
                txn,
                peer,
                call: cref,
                purpose: Purpose::Refresh,
            },
        );
        if let Some(bytes) = out.transmit {
            self.send(peer, bytes);
        }
        self.schedule(TimerTarget::Client(key), next);
    }

    // ---------------------------------------------------------------- commands
}
