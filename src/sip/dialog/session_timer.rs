//! Session timers (RFC 4028): negotiating the interval and refresher on a request, and the
//! deadlines that follow from them.

use crate::sip::msg::{Name, Request, param_of};
use std::time::{Duration, Instant};

/// Who refreshes the session (RFC 4028 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

/// A running session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    pub interval_secs: u32,
    pub refresher: Refresher,
    /// True when the peer supports timers, so the response carries `Require: timer`.
    pub peer_supports: bool,
    /// When the session expires without a refresh.
    pub expires_at: Instant,
}

/// The result of looking at a request's Session-Expires and Min-SE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiation {
    /// No session timer for this session.
    None,
    /// Use this timer.
    Use(SessionTimer),
    /// The requested interval is below our minimum: answer 422 with `Min-SE` (RFC 4028 §8.2).
    TooSmall { min_se: u32 },
}

impl SessionTimer {
    /// Negotiates from a request that starts or refreshes the session (RFC 4028 §9).
    pub fn negotiate(req: &Request, default_secs: u32, min_se: u32, now: Instant) -> Negotiation {
        let supports = req.supported().iter().any(|t| t == "timer") || req.required().iter().any(|t| t == "timer");
        let requested = req.header(&Name::SESSION_EXPIRES).and_then(|v| {
            let secs: u32 = v.split(';').next()?.trim().parse().ok()?;
            let refresher = match param_of(&format!("x{v}"), "refresher").as_deref() {
                Some("uas") => Some(Refresher::Uas),
                Some("uac") => Some(Refresher::Uac),
                _ => None,
            };
            Some((secs, refresher))
        });
        // The peer's Min-SE raises our floor (RFC 4028 §5).
        let peer_min: u32 = req
            .header(&Name::MIN_SE)
            .and_then(|v| v.split(';').next()?.trim().parse().ok())
            .unwrap_or(0);
        let floor = min_se.max(peer_min).max(90);
        match requested {
            Some((secs, _)) if secs < min_se && supports => Negotiation::TooSmall { min_se },
            Some((secs, refresher)) => {
                // Without support at the UAC we must refresh ourselves (§9).
                let refresher = if supports {
                    refresher.unwrap_or(Refresher::Uac)
                } else {
                    Refresher::Uas
                };
                let interval = secs.max(floor);
                Negotiation::Use(SessionTimer {
                    interval_secs: interval,
                    refresher,
                    peer_supports: supports,
                    expires_at: now + Duration::from_secs(interval as u64),
                })
            }
            None if supports => {
                let interval = default_secs.max(floor);
                Negotiation::Use(SessionTimer {
                    interval_secs: interval,
                    refresher: Refresher::Uac,
                    peer_supports: true,
                    expires_at: now + Duration::from_secs(interval as u64),
                })
            }
            None => Negotiation::None,
        }
    }

    /// The `Session-Expires` value for our 2xx.
    pub fn header_value(&self) -> String {
        let r = match self.refresher {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        };
        format!("{};refresher={r}", self.interval_secs)
    }

    /// When we refresh, if we are the refresher: half the interval (RFC 4028 §7.2, §10).
    pub fn refresh_at(&self) -> Option<Instant> {
        let interval = Duration::from_secs(self.interval_secs as u64);
        (self.refresher == Refresher::Uas).then(|| self.expires_at - interval / 2)
    }

    /// When we give up on a session that was not refreshed and send BYE:
    /// `expires - min(32, interval/3)` (RFC 4028 §10).
    pub fn bye_at(&self) -> Instant {
        let interval = Duration::from_secs(self.interval_secs as u64);
        self.expires_at - Duration::from_secs(32).min(interval / 3)
    }

    /// A copy restarted at `now`.
    pub fn refreshed_at(mut self, now: Instant) -> SessionTimer {
        self.refreshed(now);
        self
    }

    /// Restarts the interval after a successful refresh.
    pub fn refreshed(&mut self, now: Instant) {
        self.expires_at = now + Duration::from_secs(self.interval_secs as u64);
    }
}
