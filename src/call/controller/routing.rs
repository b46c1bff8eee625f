//! A new call: routed by the dialplan (refused calls answered at once), given an RTP port and
//! the facts its flow may read, and handed to a flow thread.

use super::Controller;
use crate::call::flow_call::{GatewayPort, MediaSlot, PinIdentity};
use crate::config::trunk::SrtpPolicy;
use crate::dialplan::Target;
use crate::flow::port::CallInfo;
use crate::privacy::mask_opt;
use crate::sip::dialog::IncomingCall;
use crate::sip::sdes::{KeyMaterial, LocalSrtp};
use crate::sip::sdp::LocalMedia;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

impl Controller {
    /// `UasEvent::Incoming`: route the call and start its flow, or refuse it.
    pub(super) fn incoming(&mut self, inc: IncomingCall, now: Instant) {
        let call = inc.call;
        let source = inc.peer.remote.ip();
        let dialplan = self.dialplan.borrow().clone();
        let Some((flow, slot, info)) = self.route(inc, &dialplan, now) else {
            return;
        };
        let hung_up = Arc::new(AtomicBool::new(false));
        self.flows.add(call, slot, hung_up.clone(), pin_identity(&info, source));
        let port = GatewayPort {
            call,
            tx: self.flow_tx.clone(),
        };
        let finished = self.flow_tx.clone();
        let started = self.runner.start(
            dialplan.flows.clone(),
            flow,
            Box::new(port),
            info,
            hung_up,
            move |end| {
                let _ = finished.blocking_send(crate::call::flow_call::FlowMsg::Finished { call, end });
            },
        );
        if let Err(busy) = started {
            tracing::warn!(call = call.0, "{busy}: refusing the call");
            metrics::counter!("calls_total", "outcome" => "flows_busy").increment(1);
            let _ = self.core.reject(call, 503, now);
        }
    }

    /// Routes a new call through the dialplan: refused calls are answered here; a call for a
    /// flow gets an RTP port and the facts its flow may read.
    fn route(
        &mut self,
        inc: IncomingCall,
        dialplan: &crate::dialplan::Dialplan,
        now: Instant,
    ) -> Option<(String, MediaSlot, CallInfo)> {
        let mut inc = inc;
        let trunk = inc.trunk.clone();
        if let Some(t) = &trunk {
            // The carrier's own number forms: its technical prefix off, its national
            // numbers read as its country's.
            let region = t.country.as_deref().and_then(crate::number::region);
            inc.dialled = inc
                .dialled
                .take()
                .map(|d| t.dialled(&d).to_string())
                .map(|d| match region {
                    Some(r) => crate::number::normalise_in(&d, Some(r)).unwrap_or(d),
                    None => d,
                });
            if let Some(r) = region {
                inc.caller = inc
                    .caller
                    .take()
                    .map(|c| crate::number::normalise_in(&c, Some(r)).unwrap_or(c));
            }
        }
        let trunk_name = trunk.as_ref().map(|t| t.name.to_string());
        let route = inc.dialled.as_deref().map(|d| dialplan.route(d, trunk_name.as_deref()));
        let dialled = route.as_ref().map(|r| r.dialled.clone());
        if let Some(a) = self.accounting.as_mut() {
            a.offered(&inc, dialled.as_deref(), route.as_ref(), crate::clock::now_micros());
        }
        let caller = if inc.privacy_requested {
            None
        } else {
            inc.caller.as_deref()
        };
        // The log cannot be erased later, so it names no caller, not even masked: the CDR
        // (which erasure reaches) has the masked number, `call` links the two while it lives.
        let caller_shown = match caller {
            Some(_) => "number",
            None if inc.privacy_requested => "withheld",
            None => "none",
        };
        tracing::info!(
            call = inc.call.0,
            dialled = %mask_opt(dialled.as_deref()),
            caller = %caller_shown,
            peer = %inc.peer.remote,
            trunk = trunk_name.as_deref().unwrap_or("-"),
            route = route.as_ref().map(|r| r.source.as_str()).unwrap_or("no number"),
            "incoming call"
        );
        let flow = match route.as_ref().map(|r| &r.target) {
            Some(Target::Flow(f)) => f.clone(),
            Some(Target::Reject(status)) => {
                metrics::counter!("calls_total", "outcome" => "not_found").increment(1);
                let _ = self.core.reject(inc.call, *status, now);
                return None;
            }
            None => {
                metrics::counter!("calls_total", "outcome" => "not_found").increment(1);
                let _ = self.core.reject(inc.call, 404, now);
                return None;
            }
        };
        let Some(port) = self.ports.allocate() else {
            tracing::warn!("RTP port range exhausted");
            metrics::counter!("calls_total", "outcome" => "no_ports").increment(1);
            let _ = self.core.reject(inc.call, 503, now);
            return None;
        };
        let ip = self.rtp_advertise.unwrap_or(inc.peer.local.ip());
        let local = LocalMedia {
            rtp: SocketAddr::new(ip, port.port),
            codecs: match &trunk {
                Some(t) if !t.codecs.is_empty() => t.codecs.iter().map(|&c| crate::sip::sdp::Codec::from(c)).collect(),
                _ => self.codecs.clone(),
            },
            session_id: fastrand::u64(1..1 << 40),
            session_version: 1,
            srtp: None,
        };
        let policy = trunk.as_ref().and_then(|t| t.srtp).unwrap_or(self.srtp);
        let local = match local_srtp(policy) {
            Ok(srtp) => LocalMedia { srtp, ..local },
            Err(()) => {
                tracing::error!("no random key material for SRTP; refusing a call that requires it");
                metrics::counter!("calls_total", "outcome" => "no_srtp_keys").increment(1);
                let _ = self.core.reject(inc.call, 503, now);
                return None;
            }
        };
        let (masked, pseudonym, anonymous) = self
            .accounting
            .as_ref()
            .and_then(|a| a.caller_view(inc.call))
            .unwrap_or_else(|| match caller.and_then(crate::number::normalise) {
                Some(n) => (crate::privacy::mask_number(&n), String::new(), false),
                None => ("anonymous".into(), String::new(), true),
            });
        let route = route?;
        let info = CallInfo {
            masked,
            pseudonym,
            anonymous,
            toll_free: route.kind == crate::number::DialledKind::TollFree,
            dialled: route.dialled.clone(),
            trunk: trunk_name.unwrap_or_default(),
            tenant: route.tenant.clone().unwrap_or_default(),
        };
        Some((flow, MediaSlot { port, local }, info))
    }
}

/// Who the PIN guess counting takes a caller for: their pseudonym; without CDRs, a hash of
/// the masked number and the source (kept in memory only); an anonymous caller, their
/// source address (a carrier's callers then share one count: the room's count still
/// catches a distributed guess).
fn pin_identity(info: &CallInfo, source: std::net::IpAddr) -> PinIdentity {
    let key = if !info.pseudonym.is_empty() {
        format!("p:{}", info.pseudonym)
    } else if !info.anonymous {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (&info.masked, source).hash(&mut h);
        format!("n:{:016x}", h.finish())
    } else {
        format!("a:{source}")
    };
    PinIdentity {
        key,
        shown: info.masked.clone(),
    }
}

/// A call's SRTP side under `policy`: fresh key material per call (RFC 4568 §8.1: keys are
/// random and not reused across sessions). Err when SRTP is required and the system's
/// random source failed; "optional" then goes plain.
fn local_srtp(policy: SrtpPolicy) -> Result<Option<LocalSrtp>, ()> {
    let required = match policy {
        SrtpPolicy::Off => return Ok(None),
        SrtpPolicy::Optional => false,
        SrtpPolicy::Required => true,
    };
    match KeyMaterial::random() {
        Some(material) => Ok(Some(LocalSrtp { required, material })),
        None if required => Err(()),
        None => Ok(None),
    }
}
