//! The gate in front of new calls and OPTIONS: the trunk a request is from, its digest
//! challenge (RFC 3261 §22.2, 401 with one `WWW-Authenticate` per algorithm, RFC 8760
//! §2.4), or its refusal, each refusal a security event (`tolk::security` log target and
//! `sip_security_events_total{reason}`): source address, trunk and reason, never a number.

use super::*;
use crate::sip::msg::stateless_tag;
use crate::sip::trunk::{Refusal, Trunk};
use std::sync::Arc;

impl UasCore {
    /// Admission of a new INVITE: `Some(trunk)` (or `Some(None)`: a source taken without a
    /// trunk) to go on, `None` when it has been answered.
    pub(super) fn admit_call(&mut self, now: Instant, req: &Request, peer: Peer) -> Option<Option<Arc<Trunk>>> {
        match self
            .gate
            .admit(now, req, peer.remote.ip(), peer.transport.via_token(), true)
        {
            Admission::Trunk(t) => Some(Some(t)),
            Admission::NoTrunk => Some(None),
            other => {
                self.answer_refusal(req, peer, other);
                None
            }
        }
    }

    /// Admission of an out-of-dialog request that is not a call (OPTIONS): true to answer it.
    pub(super) fn admitted(&mut self, now: Instant, req: &Request, peer: Peer) -> bool {
        match self
            .gate
            .admit(now, req, peer.remote.ip(), peer.transport.via_token(), false)
        {
            Admission::Trunk(_) | Admission::NoTrunk => true,
            other => {
                self.answer_refusal(req, peer, other);
                false
            }
        }
    }

    /// Challenges and refusals are sent statelessly (RFC 3261 §8.2.7, as a stateless proxy
    /// does): no transaction is kept for a request nobody has vouched for, so a flood costs
    /// no memory and a peer that never ACKs gets no retransmissions. A retransmitted request
    /// gets the same answer again (same To tag; a challenge a fresh nonce).
    fn answer_refusal(&mut self, req: &Request, peer: Peer, admission: Admission) {
        match admission {
            Admission::Challenge(values) => {
                let stale = values.first().is_some_and(|v| v.ends_with("stale=TRUE"));
                let reason = if stale { "stale_nonce" } else { "challenged" };
                // A challenge is routine for a digest trunk: counted, logged at debug.
                metrics::counter!("sip_auth_challenges_total", "reason" => reason).increment(1);
                tracing::debug!(target: "tolk::security", source = %peer.remote.ip(), reason, "digest challenge");
                let headers = values.into_iter().map(|v| (Name::WWW_AUTHENTICATE, v)).collect();
                self.respond_stateless(req, peer, 401, headers);
            }
            Admission::Refused(refusal) => {
                security_event(peer, refusal, req);
                let headers = if refusal.status() == 503 {
                    vec![(Name::RETRY_AFTER, "5".to_string())]
                } else {
                    Vec::new()
                };
                self.respond_stateless(req, peer, refusal.status(), headers);
            }
            Admission::Dropped(drop) => {
                metrics::counter!("sip_dropped_total", "reason" => drop.as_str()).increment(1);
            }
            Admission::Trunk(_) | Admission::NoTrunk => {}
        }
    }
}

impl UasCore {
    fn respond_stateless(&mut self, req: &Request, peer: Peer, code: u16, headers: Vec<(Name, String)>) {
        let core = &req.core;
        let tag = stateless_tag((&core.call_id, &core.from_tag, core.cseq.seq, core.vias.first()));
        let mut resp = response_to(req, code, "", Some(&tag));
        self.decorate(&mut resp, headers, None);
        metrics::counter!("sip_responses_sent_total", "code" => code_label(code)).increment(1);
        self.send(peer, resp.to_bytes());
    }
}

/// One refusal, for operators and fail2ban (`contrib/fail2ban/`): the source address, the
/// method and the reason, on one line of the `tolk::security` target.
fn security_event(peer: Peer, refusal: Refusal, req: &Request) {
    metrics::counter!("sip_security_events_total", "reason" => refusal.as_str()).increment(1);
    tracing::warn!(
        target: "tolk::security",
        source = %peer.remote.ip(),
        transport = peer.transport.via_token(),
        method = req.method.as_str(),
        reason = refusal.as_str(),
        "refused"
    );
}
