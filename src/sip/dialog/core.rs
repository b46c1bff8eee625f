//! [`UasCore`]: request dispatch, the transaction tables and the timer queue.

use super::call::{Call, CallRef, CallState, Pending2xx, PendingReliable, Resend, ResendStep};
use super::session_timer::{Negotiation, SessionTimer};
use super::{ACCEPT, ALLOW, CommandError, EndReason, IncomingCall, Peer, SUPPORTED, Transmit, UasConfig, UasEvent};
use crate::sip::msg::{HeaderLookup, Method, Name, Request, RequestUri, Response, new_tag, response_to};
use crate::sip::sdp::{self, Direction, LocalMedia, NegotiatedMedia, SessionDescription};
use crate::sip::txn::{
    ClientKey, InviteClientTxn, InviteServerTxn, MergeKey, NonInviteClientTxn, NonInviteServerTxn, ServerInviteState,
    ServerKey, Transaction, TxnEvent, TxnOutput,
};
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Instant;

enum ServerTxn {
    Invite(InviteServerTxn),
    NonInvite(NonInviteServerTxn),
}

impl ServerTxn {
    fn as_txn(&mut self) -> &mut dyn Transaction {
        match self {
            ServerTxn::Invite(t) => t,
            ServerTxn::NonInvite(t) => t,
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            ServerTxn::Invite(t) => t.poll_timeout(),
            ServerTxn::NonInvite(t) => t.poll_timeout(),
        }
    }

    fn send_response(&mut self, code: u16, bytes: Bytes, now: Instant) -> TxnOutput {
        match self {
            ServerTxn::Invite(t) => t.send_response(code, bytes, now),
            ServerTxn::NonInvite(t) => t.send_response(code, bytes, now),
        }
    }
}

struct ServerEntry {
    txn: ServerTxn,
    peer: Peer,
    call: Option<CallRef>,
    merge: Option<MergeKey>,
    /// The To tag of our responses (RFC 2543 ACK matching compares it).
    to_tag: String,
}

enum ClientTxn {
    Invite(InviteClientTxn),
    NonInvite(NonInviteClientTxn),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Bye,
    Refresh,
    /// A call transfer (RFC 3515).
    Refer,
}

struct ClientEntry {
    txn: ClientTxn,
    peer: Peer,
    call: CallRef,
    purpose: Purpose,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimerTarget {
    Server(ServerKey),
    Client(ClientKey),
    Call(CallRef),
}

/// Counts for gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoreStats {
    pub server_transactions: usize,
    pub client_transactions: usize,
    pub calls: usize,
}

/// The sans-IO UAS core. See the module docs for the driving loop.
pub struct UasCore {
    cfg: UasConfig,
    next_call: u64,
    /// Calls with a transfer (REFER) whose outcome is not known yet.
    referring: std::collections::HashSet<CallRef>,
    calls: HashMap<CallRef, Call>,
    dialogs: HashMap<(String, String), CallRef>,
    server: HashMap<ServerKey, ServerEntry>,
    merge: HashMap<MergeKey, ServerKey>,
    client: HashMap<ClientKey, ClientEntry>,
    timers: BinaryHeap<Reverse<(Instant, TimerTarget)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<UasEvent>,
    /// Calls whose TU was told they ended, kept until their BYE can go (RFC 3261 §15).
    hangup_after_ack: HashMap<CallRef, ()>,
    overloaded: bool,
    /// Tags and per-call seeds, from [`UasConfig::seed`] (sans-IO: no global generator).
    ids: fastrand::Rng,
}

impl UasCore {
    pub fn new(cfg: UasConfig) -> Self {
        let cfg_seed = cfg.seed;
        UasCore {
            cfg,
            next_call: 1,
            referring: Default::default(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            server: HashMap::new(),
            merge: HashMap::new(),
            client: HashMap::new(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            hangup_after_ack: HashMap::new(),
            overloaded: false,
            ids: fastrand::Rng::with_seed(cfg_seed),
        }
    }

    pub fn config(&self) -> &UasConfig {
        &self.cfg
    }

    /// Stop (or resume) accepting new calls: new INVITEs get 503 with Retry-After.
    pub fn set_refuse_new_calls(&mut self, refuse: bool) {
        self.cfg.refuse_new_calls = refuse;
    }

    /// Overload shedding: while set, new INVITEs get a fast 503 (the I/O shell sets it when
    /// its inbound queue backs up), so the calls already accepted keep their rate.
    pub fn set_overloaded(&mut self, overloaded: bool) {
        self.overloaded = overloaded;
    }

    pub fn stats(&self) -> CoreStats {
        CoreStats {
            server_transactions: self.server.len(),
            client_transactions: self.client.len(),
            calls: self.calls.len(),
        }
    }

    /// Calls the core still tracks (for the drain on shutdown).
    pub fn call_refs(&self) -> Vec<CallRef> {
        self.calls.keys().copied().collect()
    }

    pub fn call_state(&self, call: CallRef) -> Option<CallState> {
        self.calls.get(&call).map(|c| c.state)
    }

    // ---------------------------------------------------------------- outputs

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<UasEvent> {
        self.events.pop_front()
    }

    /// The next instant [`Self::handle_timeout`] must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    fn send(&mut self, peer: Peer, bytes: Bytes) {
        self.transmits.push_back(Transmit { peer, bytes });
    }

    fn schedule(&mut self, target: TimerTarget, at: Option<Instant>) {
        if let Some(at) = at {
            self.timers.push(Reverse((at, target)));
        }
    }

    // ---------------------------------------------------------------- timers

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, target))) = self.timers.pop() else {
                break;
            };
            match target {
                TimerTarget::Server(key) => self.server_timeout(now, key),
                TimerTarget::Client(key) => self.client_timeout(now, key),
                TimerTarget::Call(call) => self.call_timeout(now, call),
            }
        }
    }

    fn server_timeout(&mut self, now: Instant, key: ServerKey) {
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

    fn apply_server_output(&mut self, key: &ServerKey, peer: Peer, out: TxnOutput) {
        if let Some(bytes) = out.transmit {
            if out.retransmission {
                metrics::counter!("sip_retransmissions_total", "kind" => "response").increment(1);
            }
            self.send(peer, bytes);
        }
        match out.event {
            Some(TxnEvent::Terminated) | Some(TxnEvent::Timeout) => {
                if let Some(entry) = self.server.remove(key)
                    && let Some(mk) = entry.merge
                {
                    self.merge.remove(&mk);
                }
            }
            None => {}
        }
    }

    fn client_timeout(&mut self, now: Instant, key: ClientKey) {
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

    fn call_next_timeout(call: &Call) -> Option<Instant> {
        let mut times = Vec::with_capacity(4);
        if let Some(p) = &call.pending_2xx {
            times.push(p.resend.next_wake());
        }
        if let Some(p) = &call.pending_reliable {
            times.push(p.resend.next_wake());
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

    fn reschedule_call(&mut self, call: CallRef) {
        let next = self.calls.get(&call).and_then(Self::call_next_timeout);
        self.schedule(TimerTarget::Call(call), next);
    }

    /// Acts on a [`Resend`] step: sends and counts a retransmission; true when it gave up.
    fn resend(&mut self, peer: Peer, step: Option<ResendStep>, kind: &'static str) -> bool {
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

    fn call_timeout(&mut self, now: Instant, cref: CallRef) {
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
    fn respond(
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

    fn decorate(&self, resp: &mut Response, headers: Vec<(Name, String)>, body: Option<(&str, String)>) {
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
    fn session_timer_for(
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

    fn on_ack(&mut self, now: Instant, req: Request, key: ServerKey) {
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
                && let Ok((_, neg)) = sdp::answer(&answer, local)
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

    fn on_cancel(&mut self, now: Instant, req: Request, key: ServerKey, peer: Peer) {
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
    fn respond_with_tag(&mut self, now: Instant, req: &Request, key: ServerKey, peer: Peer, code: u16, tag: &str) {
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

    fn new_call(&mut self, now: Instant, req: Request, key: ServerKey, peer: Peer) {
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
        // RFC 3261 §8.2.3 / RFC 4475 §3.3.15: the answer must be SDP.
        if !accepts_sdp(&req) {
            let warn = vec![(
                Name::WARNING,
                "399 tolk \"the answer can only be application/sdp\"".to_string(),
            )];
            self.respond(now, &req, key, peer, 406, warn, None);
            return;
        }
        let Some(session_timer) = self.session_timer_for(now, &req, &key, peer) else {
            return;
        };
        let offer = match sdp_body(&req) {
            None => None,
            Some(body) => match SessionDescription::parse(&body) {
                Ok(sd) => Some(sd),
                Err(e) => {
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
        let merge = MergeKey::of_request(&req);
        if let Some(mk) = &merge {
            self.merge.insert(mk.clone(), key.clone());
        }
        self.server.insert(
            key.clone(),
            ServerEntry {
                txn: ServerTxn::Invite(InviteServerTxn::new(peer.transport.is_reliable(), self.cfg.timers)),
                peer,
                call: Some(cref),
                merge,
                to_tag: local_tag.clone(),
            },
        );
        let incoming = IncomingCall {
            call: cref,
            dialled: call.dialled(),
            caller: call.caller(),
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
        self.events.push_back(UasEvent::Incoming(Box::new(incoming)));
    }

    fn in_dialog(&mut self, now: Instant, req: Request, key: ServerKey, peer: Peer) {
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
    fn answer_modification(
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

    fn on_reinvite(&mut self, now: Instant, req: Request, key: ServerKey, peer: Peer, cref: CallRef) {
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
        self.server.insert(
            key.clone(),
            ServerEntry {
                txn: ServerTxn::Invite(InviteServerTxn::new(peer.transport.is_reliable(), self.cfg.timers)),
                peer,
                call: Some(cref),
                merge: None,
                to_tag: tag,
            },
        );
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

    fn on_update(&mut self, now: Instant, req: Request, key: ServerKey, peer: Peer, cref: CallRef) {
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

    /// RFC 3515 §2.4.4-2.4.5: the transferee reports how the transfer goes in NOTIFYs whose
    /// body is a `message/sipfrag` status line (RFC 3420); a final status ends the transfer.
    fn on_notify(&mut self, now: Instant, req: Request, key: ServerKey, peer: Peer, cref: CallRef) {
        let event = req.header(&Name::EVENT).unwrap_or("").trim().to_ascii_lowercase();
        if !event.starts_with("refer") {
            // RFC 6665 §8.2.1: an event package we do not know.
            self.respond(now, &req, key, peer, 489, Vec::new(), None);
            return;
        }
        self.respond(now, &req, key, peer, 200, Vec::new(), None);
        let status = std::str::from_utf8(&req.body)
            .ok()
            .and_then(|b| b.trim_start().strip_prefix("SIP/2.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok())
            .filter(|c| (100..=699).contains(c));
        if let Some(status) = status.filter(|s| *s >= 200) {
            self.transfer_result(cref, status);
        }
    }

    /// Reports a transfer's outcome once (a late NOTIFY after a timeout is not reported).
    fn transfer_result(&mut self, call: CallRef, status: u16) {
        if self.referring.remove(&call) {
            self.events.push_back(UasEvent::TransferResult { call, status });
        }
    }

    fn on_info(&mut self, now: Instant, req: Request, key: ServerKey, peer: Peer, cref: CallRef) {
        if req.body.is_empty() {
            self.respond(now, &req, key, peer, 200, Vec::new(), None);
            return;
        }
        let ctype = req
            .content_type()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
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

    fn on_prack(&mut self, now: Instant, req: Request, key: ServerKey, peer: Peer, cref: CallRef) {
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

    fn send_refresh(&mut self, now: Instant, cref: CallRef) {
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

    /// Transfers an answered call (RFC 3515): sends REFER with `Refer-To: <target>`, where
    /// `target` is a SIP or tel URI, or a number/user sent back to the peer as
    /// `sip:user@peer`. The outcome arrives as [`UasEvent::TransferResult`]; the call stays up
    /// (the transferor hangs up after a success, RFC 5589 §6.1).
    pub fn refer(&mut self, cref: CallRef, target: &str, now: Instant) -> Result<(), CommandError> {
        let cfg = self.cfg.clone();
        let referring = self.referring.contains(&cref);
        let call = self.calls.get_mut(&cref).ok_or(CommandError::NoSuchCall)?;
        if call.state != CallState::Confirmed || referring {
            return Err(CommandError::WrongState);
        }
        if target.is_empty() || target.contains(['<', '>', '\r', '\n', ' ', '"']) {
            return Err(CommandError::WrongState);
        }
        let uri = if target.starts_with("sip:") || target.starts_with("sips:") || target.starts_with("tel:") {
            target.to_string()
        } else {
            format!("sip:{target}@{}", call.peer.remote)
        };
        let mut req = call.new_request(Method::Refer, &cfg);
        req.headers.insert(Name::REFER_TO, format!("<{uri}>"));
        req.headers.insert(Name::CONTACT, call.contact());
        let peer = call.peer;
        self.referring.insert(cref);
        self.start_non_invite(req, peer, cref, Purpose::Refer, now);
        Ok(())
    }

    /// Starts a non-INVITE client transaction for an in-dialog request and sends it.
    fn start_non_invite(&mut self, req: Request, peer: Peer, cref: CallRef, purpose: Purpose, now: Instant) {
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

    fn final_to_invite(&mut self, now: Instant, cref: CallRef, status: u16) {
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

    fn send_bye_and_end(&mut self, now: Instant, cref: CallRef, reason: EndReason) {
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

    fn end_call(&mut self, cref: CallRef, reason: EndReason) {
        self.referring.remove(&cref);
        if self.forget_call(cref) {
            self.events.push_back(UasEvent::Ended { call: cref, reason });
        }
    }

    fn forget_call(&mut self, cref: CallRef) -> bool {
        match self.calls.remove(&cref) {
            Some(call) => {
                self.dialogs.remove(&(call.sip_call_id.clone(), call.local_tag.clone()));
                true
            }
            None => false,
        }
    }
}

impl Call {
    /// An ACK (or any request) with a given CSeq number, not advancing the local sequence.
    pub(crate) fn new_request_with_cseq(&mut self, method: Method, cseq: u32, cfg: &UasConfig) -> Request {
        let saved = self.local_cseq;
        self.local_cseq = cseq.saturating_sub(1).max(1);
        let mut req = self.new_request(method, cfg);
        req.core.cseq.seq = cseq;
        self.local_cseq = saved;
        req
    }
}

/// `Session-Expires`, and `Require: timer` when the peer supports timers (RFC 4028 §9).
fn session_timer_headers(timer: Option<&SessionTimer>, headers: &mut Vec<(Name, String)>) {
    if let Some(st) = timer {
        headers.push((Name::SESSION_EXPIRES, st.header_value()));
        if st.peer_supports {
            headers.push((Name::REQUIRE, "timer".into()));
        }
    }
}

/// Bounded label for metrics.
fn code_label(code: u16) -> &'static str {
    match code {
        100 => "100",
        180 => "180",
        183 => "183",
        200 => "200",
        400 => "400",
        404 => "404",
        405 => "405",
        406 => "406",
        408 => "408",
        415 => "415",
        416 => "416",
        420 => "420",
        422 => "422",
        480 => "480",
        481 => "481",
        482 => "482",
        486 => "486",
        487 => "487",
        488 => "488",
        491 => "491",
        500 => "500",
        501 => "501",
        503 => "503",
        505 => "505",
        513 => "513",
        c if c < 200 => "1xx",
        c if c < 300 => "2xx",
        c if c < 400 => "3xx",
        c if c < 500 => "4xx",
        c if c < 600 => "5xx",
        _ => "6xx",
    }
}

/// RFC 3261 §8.2.3: bodies we can handle, by method.
fn check_content(req: &Request) -> Result<(), u16> {
    if req.body.is_empty() {
        return Ok(());
    }
    if let Some(enc) = req.header(&Name::CONTENT_ENCODING)
        && !enc.trim().eq_ignore_ascii_case("identity")
    {
        return Err(415);
    }
    let ctype = req
        .content_type()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match req.method {
        Method::Invite | Method::Update | Method::Prack | Method::Ack => {
            if ctype == "application/sdp" || (ctype == "multipart/mixed" && sdp_body(req).is_some()) {
                Ok(())
            } else {
                Err(415)
            }
        }
        // INFO bodies are checked by the INFO handler; OPTIONS/BYE bodies are ignored.
        _ => Ok(()),
    }
}

/// The SDP of a request: the body when it is `application/sdp`, or the first
/// `application/sdp` part of a `multipart/mixed` body (RFC 2046 §5.1; RFC 5621).
fn sdp_body(req: &Request) -> Option<Bytes> {
    if req.body.is_empty() {
        return None;
    }
    let ctype = req.content_type().unwrap_or("");
    let main = ctype.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if main == "application/sdp" {
        return Some(req.body.clone());
    }
    if main != "multipart/mixed" {
        return None;
    }
    let boundary = ctype
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())?;
    let delim = format!("--{boundary}");
    let body = &req.body[..];
    let mut pos = 0;
    let mut starts = Vec::new();
    while let Some(i) = find(&body[pos..], delim.as_bytes()) {
        starts.push(pos + i);
        pos += i + delim.len();
    }
    for w in starts.windows(2) {
        let part = &body[w[0] + delim.len()..w[1]];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let Some(split) = find(part, b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&part[..split]).to_ascii_lowercase();
        if head
            .lines()
            .any(|l| l.starts_with("content-type:") && l.contains("application/sdp"))
        {
            let content = &part[split + 4..];
            let content = content.strip_suffix(b"\r\n").unwrap_or(content);
            return Some(Bytes::copy_from_slice(content));
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// RFC 3261 §20.1: does the caller accept an SDP answer? No Accept means application/sdp.
fn accepts_sdp(req: &Request) -> bool {
    let accepted: Vec<String> = req.headers.tokens(&Name::ACCEPT);
    if !req.headers.contains(&Name::ACCEPT) {
        return true;
    }
    accepted.iter().any(|a| {
        let t = a.split(';').next().unwrap_or("").trim();
        t == "application/sdp" || t == "application/*" || t == "*/*"
    })
}

/// `application/dtmf-relay`: `Signal=5` and `Duration=160` lines.
fn parse_dtmf_relay(body: &[u8]) -> Option<(char, u32)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut digit = None;
    let mut duration = 100;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        match k.trim().to_ascii_lowercase().as_str() {
            "signal" => digit = dtmf_digit(v.trim()),
            "duration" => duration = v.trim().parse().unwrap_or(100).min(60_000),
            _ => {}
        }
    }
    digit.map(|d| (d, duration))
}

fn dtmf_digit(s: &str) -> Option<char> {
    match s {
        "10" => Some('*'),
        "11" => Some('#'),
        s if s.len() == 1 => {
            let c = s.chars().next()?.to_ascii_uppercase();
            matches!(c, '0'..='9' | '*' | '#' | 'A'..='D').then_some(c)
        }
        _ => None,
    }
}
