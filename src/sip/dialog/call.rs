//! One incoming call: its INVITE, its dialog state (RFC 3261 §12.1.1) and the requests it
//! sends inside the dialog (§12.2.1.1).

use super::session_timer::SessionTimer;
use super::{Peer, UasConfig};
use crate::sip::msg::{
    CSeq, CoreHeaders, HeaderLookup, Headers, Method, Name, Request, RequestUri, Via, addr_spec_user, new_branch,
    uri_of_name_addr,
};
use crate::sip::sdp::{LocalMedia, NegotiatedMedia, SessionDescription};
use crate::sip::txn::{ClientKey, ServerKey, TimerConfig};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// A handle on a call inside a [`super::UasCore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallRef(pub u64);

/// Where the INVITE session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// INVITE received; provisional responses only.
    Early,
    /// 2xx sent, waiting for the ACK (RFC 3261 §13.3.1.4).
    Accepted,
    /// ACK received: the call is up.
    Confirmed,
    /// We sent BYE and wait for its response.
    Terminating,
    /// Over; the core forgets the call.
    Ended,
}

/// A response the core itself resends on a doubling interval from T1 until it is answered or
/// 64*T1 has passed: a 2xx until its ACK (RFC 3261 §13.3.1.4, interval capped at T2) or a
/// reliable provisional until its PRACK (RFC 3262 §3, uncapped).
#[derive(Debug, Clone)]
pub(crate) struct Resend {
    pub bytes: Bytes,
    next_at: Instant,
    interval: Duration,
    cap: Option<Duration>,
    give_up_at: Instant,
}

/// What a [`Resend`] wants at a given instant.
pub(crate) enum ResendStep {
    Wait,
    Send(Bytes),
    GiveUp,
}

impl Resend {
    pub fn new(bytes: Bytes, now: Instant, timers: &TimerConfig, cap_at_t2: bool) -> Self {
        Resend {
            bytes,
            next_at: now + timers.t1,
            interval: timers.t1,
            cap: cap_at_t2.then_some(timers.t2),
            give_up_at: now + timers.t1x64(),
        }
    }

    pub fn step(&mut self, now: Instant) -> ResendStep {
        if now >= self.give_up_at {
            return ResendStep::GiveUp;
        }
        if now < self.next_at {
            return ResendStep::Wait;
        }
        self.interval *= 2;
        if let Some(cap) = self.cap {
            self.interval = self.interval.min(cap);
        }
        self.next_at = now + self.interval;
        ResendStep::Send(self.bytes.clone())
    }

    pub fn next_wake(&self) -> Instant {
        self.next_at.min(self.give_up_at)
    }
}

/// A 2xx to an INVITE that the core retransmits until the ACK arrives (§13.3.1.4).
#[derive(Debug, Clone)]
pub(crate) struct Pending2xx {
    pub cseq: u32,
    /// We sent an offer in this 2xx and expect the answer in the ACK.
    pub offer_in_2xx: bool,
    pub resend: Resend,
}

/// A reliable provisional response awaiting PRACK (RFC 3262 §3).
#[derive(Debug, Clone)]
pub(crate) struct PendingReliable {
    pub rseq: u32,
    pub resend: Resend,
}

#[derive(Debug)]
pub(crate) struct Call {
    pub state: CallState,
    pub peer: Peer,
    /// The initial INVITE, for building its responses.
    pub invite: Request,
    pub invite_key: ServerKey,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    pub sip_call_id: String,
    /// Our URI with our tag (the To of the INVITE plus tag).
    pub local_uri: String,
    /// The peer's URI with its tag (the From of the INVITE).
    pub remote_uri: String,
    /// Where in-dialog requests are addressed (the peer's Contact).
    pub remote_target: String,
    /// Record-Route of the INVITE, in order (RFC 3261 §12.1.1).
    pub record_route: Vec<String>,
    pub remote_cseq: u32,
    pub local_cseq: u32,
    pub offer: Option<SessionDescription>,
    pub local_media: Option<LocalMedia>,
    pub negotiated: Option<NegotiatedMedia>,
    pub last_local_sdp: Option<String>,
    pub session_timer: Option<SessionTimer>,
    pub require_100rel: bool,
    pub next_rseq: u32,
    pub pending_reliable: Option<PendingReliable>,
    pub pending_2xx: Option<Pending2xx>,
    /// A re-INVITE of the peer's that we have not finished (RFC 3261 §14.2: 491 to another).
    pub reinvite_in_progress: Option<ServerKey>,
    /// Our own refresh or BYE in flight.
    pub client_txn: Option<ClientKey>,
    pub peer_allows_update: bool,
    /// When the call must end at the latest (`UasConfig::max_call_duration`).
    pub hang_up_at: Option<Instant>,
    /// The carrier the call came from ([`crate::sip::trunk`]); its limits count the call.
    pub trunk: Option<std::sync::Arc<crate::sip::trunk::Trunk>>,
    /// Branches and the first CSeq of our in-dialog requests, from a seed the core gave.
    ids: fastrand::Rng,
}

impl Call {
    pub fn new(id: CallRef, req: &Request, peer: Peer, local_tag: String, seed: u64) -> Call {
        let remote_target = req
            .headers
            .first(&Name::CONTACT)
            .map(|c| uri_of_name_addr(c).to_string())
            .filter(|c| !c.is_empty() && c != "*")
            .unwrap_or_else(|| uri_of_name_addr(&req.core.from).to_string());
        let record_route = req
            .headers
            .get_raw(&Name::RECORD_ROUTE)
            .flat_map(crate::sip::msg::split_list)
            .collect();
        let peer_allows_update = req.headers.tokens(&Name::ALLOW).iter().any(|m| m == "update");
        let _ = id;
        Call {
            state: CallState::Early,
            peer,
            invite_key: ServerKey::of_request(req),
            local_uri: format!("{};tag={}", req.core.to, local_tag),
            local_tag,
            remote_tag: req.core.from_tag.clone(),
            sip_call_id: req.core.call_id.clone(),
            remote_uri: req.core.from.clone(),
            remote_target,
            record_route,
            remote_cseq: req.core.cseq.seq,
            local_cseq: 0,
            offer: None,
            local_media: None,
            negotiated: None,
            last_local_sdp: None,
            session_timer: None,
            require_100rel: false,
            next_rseq: 1,
            pending_reliable: None,
            pending_2xx: None,
            reinvite_in_progress: None,
            client_txn: None,
            peer_allows_update,
            trunk: None,
            hang_up_at: None,
            invite: req.clone(),
            ids: fastrand::Rng::with_seed(seed),
        }
    }

    /// The user of the Request-URI: the dialled number.
    pub fn dialled(&self) -> Option<String> {
        self.invite.uri.user().map(str::to_string)
    }

    /// The user of the From URI: the caller.
    pub fn caller(&self) -> Option<String> {
        addr_spec_user(uri_of_name_addr(&self.invite.core.from))
    }

    /// Builds a request inside the dialog (RFC 3261 §12.2.1.1): Request-URI is the remote
    /// target, Route is the route set (the Record-Route as received, for a UAS), CSeq grows.
    pub fn new_request(&mut self, method: Method, cfg: &UasConfig) -> Request {
        if self.local_cseq == 0 {
            self.local_cseq = self.ids.u32(1..1 << 16);
        } else {
            self.local_cseq += 1;
        }
        let via_value = format!(
            "SIP/2.0/{} {};branch={};rport",
            self.peer.transport.via_token(),
            self.peer.local,
            new_branch(&mut self.ids)
        );
        let top_via = Via::parse(&via_value).unwrap_or(Via {
            transport: self.peer.transport.via_token().to_string(),
            host: self.peer.local.ip().to_string(),
            host_ip: Some(self.peer.local.ip()),
            port: Some(self.peer.local.port()),
            branch: Some(new_branch(&mut self.ids)),
            received: None,
            rport: Some(None),
            maddr: None,
        });
        let mut headers = Headers::new();
        let (target, routes) = route_request(&self.remote_target, &self.record_route);
        for route in routes {
            headers.insert(Name::ROUTE, route);
        }
        if matches!(method, Method::Invite | Method::Update) {
            headers.insert(Name::CONTACT, self.contact());
            headers.insert(Name::SUPPORTED, super::SUPPORTED);
        }
        headers.insert(Name::USER_AGENT, cfg.server_name.clone());
        let uri = RequestUri::Sip {
            raw: target,
            user: None,
            host: String::new(),
        };
        Request {
            method: method.clone(),
            uri,
            core: CoreHeaders {
                vias: vec![via_value],
                top_via,
                from: self.local_uri.clone(),
                from_tag: Some(self.local_tag.clone()),
                to: self.remote_uri.clone(),
                to_tag: self.remote_tag.clone(),
                call_id: self.sip_call_id.clone(),
                cseq: CSeq {
                    seq: self.local_cseq,
                    method,
                },
            },
            max_forwards: Some(70),
            headers,
            body: Bytes::new(),
        }
    }

    /// Our Contact: the local address the peer reaches us on (RFC 3261 §12.1.1).
    pub fn contact(&self) -> String {
        let transport = match self.peer.transport {
            super::TransportKind::Udp => "",
            super::TransportKind::Tcp => ";transport=tcp",
            super::TransportKind::Tls => ";transport=tls",
        };
        format!("<sip:tolk@{}{}>", self.peer.local, transport)
    }
}

/// RFC 3261 §12.2.1.1: with a loose-routing first hop (`;lr`), the Request-URI is the remote
/// target and Route is the route set; with a strict router first, the Request-URI is that
/// router's URI and the remote target goes last in Route.
pub(crate) fn route_request(remote_target: &str, route_set: &[String]) -> (String, Vec<String>) {
    let Some(first) = route_set.first() else {
        return (remote_target.to_string(), Vec::new());
    };
    let first_uri = uri_of_name_addr(first);
    let loose = first_uri
        .split(';')
        .skip(1)
        .any(|p| p.trim().eq_ignore_ascii_case("lr") || p.trim().to_ascii_lowercase().starts_with("lr="));
    if loose {
        return (remote_target.to_string(), route_set.to_vec());
    }
    let mut routes: Vec<String> = route_set[1..].to_vec();
    routes.push(format!("<{remote_target}>"));
    (first_uri.to_string(), routes)
}

#[cfg(test)]
mod tests {
    use super::route_request;

    #[test]
    fn loose_route_set_keeps_the_remote_target_as_request_uri() {
        let (uri, routes) = route_request(
            "sip:uac@192.0.2.1",
            &["<sip:p1.example;lr>".into(), "<sip:p2.example;lr>".into()],
        );
        assert_eq!(uri, "sip:uac@192.0.2.1");
        assert_eq!(routes, vec!["<sip:p1.example;lr>", "<sip:p2.example;lr>"]);
    }

    #[test]
    fn strict_router_first_becomes_the_request_uri() {
        // RFC 3261 §12.2.1.1, second case.
        let (uri, routes) = route_request(
            "sip:uac@192.0.2.1",
            &["<sip:strict.example>".into(), "<sip:p2.example;lr>".into()],
        );
        assert_eq!(uri, "sip:strict.example");
        assert_eq!(routes, vec!["<sip:p2.example;lr>", "<sip:uac@192.0.2.1>"]);
    }

    #[test]
    fn no_route_set_means_no_route_headers() {
        let (uri, routes) = route_request("sip:uac@192.0.2.1", &[]);
        assert_eq!(uri, "sip:uac@192.0.2.1");
        assert!(routes.is_empty());
    }
}
