//! Sources that are neither a trunk nor in `sip.allow_unknown` ("strangers"), counted so a
//! flood or a scan costs us little: a request rate per source, temporary bans for sources
//! that keep being refused or that run known scanners, bounded memory. Sans-IO (time comes
//! in as `now`); the gate ([`crate::sip::trunk::Gate`]) asks before it looks at a request.
//!
//! What a banned source sends is dropped without an answer, like Kamailio's pike module:
//! an answer would cost us a packet per packet and tell the scanner that it found a SIP
//! server.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most sources tracked at once; past it, untracked strangers share one rate.
pub const MAX_SOURCES: usize = 65_536;
/// The window in which refusals count toward a ban.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// `[sip]` flood settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FloodLimits {
    /// Out-of-dialog requests per second a stranger may send (one second of burst).
    pub rate: u32,
    /// Refusals within [`REFUSAL_WINDOW`] that ban a source; 0: never.
    pub ban_after: u32,
    pub ban: Duration,
    /// User-Agent substrings (lower case) of scanners: such a stranger is banned at once.
    pub scanners: Vec<String>,
}

impl Default for FloodLimits {
    fn default() -> Self {
        FloodLimits {
            rate: 10,
            ban_after: 10,
            ban: Duration::from_secs(600),
            scanners: crate::config::trunk::default_scanners(),
        }
    }
}

/// A token bucket: `rate` per second, one second's worth of burst; starts full.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    pub fn take(&mut self, now: Instant, rate: u32) -> bool {
        let rate = f64::from(rate);
        let elapsed = self
            .at
            .map(|a| now.saturating_duration_since(a).as_secs_f64())
            .unwrap_or(rate);
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Default)]
struct Source {
    bucket: Bucket,
    refusals: u32,
    window_start: Option<Instant>,
    banned_until: Option<Instant>,
    last: Option<Instant>,
}

/// Why a stranger's request is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Banned for a while (refused too often, or a scanner).
    Banned,
    /// Over its request rate.
    Rate,
    /// A scanner's User-Agent: banned from now on.
    Scanner,
}

impl Drop {
    pub fn as_str(self) -> &'static str {
        match self {
            Drop::Banned => "banned",
            Drop::Rate => "rate",
            Drop::Scanner => "scanner",
        }
    }
}

/// The strangers seen lately.
#[derive(Debug, Default)]
pub struct Strangers {
    limits: FloodLimits,
    sources: HashMap<IpAddr, Source>,
    /// The rate of strangers not tracked (the table was full).
    overflow: Bucket,
}

impl Strangers {
    pub fn new(limits: FloodLimits) -> Strangers {
        Strangers {
            limits,
            ..Strangers::default()
        }
    }

    /// May a request from `ip` (with this User-Agent) be looked at? `Err` when it must be
    /// dropped unanswered; `Err(Drop::Scanner)` starts a ban.
    pub fn check(&mut self, now: Instant, ip: IpAddr, user_agent: Option<&str>) -> Result<(), Drop> {
        let scanner = user_agent.is_some_and(|ua| {
            let ua = ua.to_ascii_lowercase();
            self.limits.scanners.iter().any(|s| ua.contains(s.as_str()))
        });
        let limits_rate = self.limits.rate;
        let ban = self.limits.ban;
        let Some(source) = self.entry(now, ip) else {
            // Not tracked: one shared rate for all of them.
            if scanner {
                return Err(Drop::Scanner);
            }
            return if self.overflow.take(now, limits_rate.max(1)) {
                Ok(())
            } else {
                Err(Drop::Rate)
            };
        };
        source.last = Some(now);
        if source.banned_until.is_some_and(|t| now < t) {
            return Err(Drop::Banned);
        }
        if scanner {
            source.banned_until = Some(now + ban);
            return Err(Drop::Scanner);
        }
        if limits_rate > 0 && !source.bucket.take(now, limits_rate) {
            return Err(Drop::Rate);
        }
        Ok(())
    }

    /// A request from `ip` was refused (403, 401 answers do not count): true when this
    /// starts a ban.
    pub fn refused(&mut self, now: Instant, ip: IpAddr) -> bool {
        let (ban_after, ban) = (self.limits.ban_after, self.limits.ban);
        let Some(source) = self.entry(now, ip) else {
            return false;
        };
        if source
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) > REFUSAL_WINDOW)
        {
            source.window_start = Some(now);
            source.refusals = 0;
        }
        source.refusals += 1;
        if ban_after > 0 && source.refusals >= ban_after && source.banned_until.is_none_or(|t| now >= t) {
            source.banned_until = Some(now + ban);
            source.refusals = 0;
            return true;
        }
        false
    }

    /// The entry of `ip`, made when there is room (idle entries are pruned first).
    fn entry(&mut self, now: Instant, ip: IpAddr) -> Option<&mut Source> {
        if !self.sources.contains_key(&ip) && self.sources.len() >= MAX_SOURCES {
            self.sources.retain(|_, s| {
                s.banned_until.is_some_and(|t| now < t)
                    || s.last
                        .is_some_and(|l| now.saturating_duration_since(l) <= REFUSAL_WINDOW)
            });
            if self.sources.len() >= MAX_SOURCES {
                return None;
            }
        }
        Some(self.sources.entry(ip).or_default())
    }

    /// Sources banned now (a gauge).
    pub fn banned(&self, now: Instant) -> usize {
        self.sources
            .values()
            .filter(|s| s.banned_until.is_some_and(|t| now < t))
            .count()
    }

    pub fn tracked(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0xcb00_7100 + n))
    }

    #[test]
    fn refusals_ban_a_source_for_the_ban_time_and_others_go_on() {
        let mut s = Strangers::new(FloodLimits {
            rate: 100,
            ..FloodLimits::default()
        });
        let t0 = Instant::now();
        for i in 0..9 {
            assert_eq!(s.check(t0, ip(1), None), Ok(()));
            assert!(!s.refused(t0 + Duration::from_millis(i), ip(1)));
        }
        assert!(
            s.refused(t0 + Duration::from_millis(10), ip(1)),
            "the tenth refusal bans"
        );
        assert_eq!(s.check(t0 + Duration::from_secs(1), ip(1), None), Err(Drop::Banned));
        assert_eq!(s.check(t0 + Duration::from_secs(1), ip(2), None), Ok(()));
        assert_eq!(s.banned(t0 + Duration::from_secs(1)), 1);
        assert_eq!(s.check(t0 + Duration::from_secs(601), ip(1), None), Ok(()));
        // Refusals spread over more than the window do not add up.
        for i in 0..20u64 {
            s.refused(t0 + Duration::from_secs(700 + i * 61), ip(3));
        }
        assert_eq!(s.check(t0 + Duration::from_secs(2000), ip(3), None), Ok(()));
    }

    #[test]
    fn a_source_over_its_rate_is_dropped_and_scanners_are_banned_at_once() {
        let mut s = Strangers::new(FloodLimits::default());
        let t0 = Instant::now();
        let taken = (0..50).filter(|_| s.check(t0, ip(1), None).is_ok()).count();
        assert_eq!(taken, 10, "one second's worth");
        assert_eq!(s.check(t0 + Duration::from_millis(150), ip(1), None), Ok(()));
        assert_eq!(s.check(t0, ip(4), Some("friendly-scanner")), Err(Drop::Scanner));
        assert_eq!(s.check(t0, ip(4), Some("Linphone")), Err(Drop::Banned));
        assert_eq!(s.check(t0, ip(5), Some("SIPVicious 0.3")), Err(Drop::Scanner));
        assert_eq!(s.check(t0, ip(6), Some("baresip v3.20.0")), Ok(()));
    }

    #[test]
    fn memory_is_bounded_by_max_sources() {
        let mut s = Strangers::new(FloodLimits::default());
        let t0 = Instant::now();
        for n in 0..(MAX_SOURCES as u32 + 1000) {
            let _ = s.check(t0, ip(n), None);
        }
        assert!(s.tracked() <= MAX_SOURCES);
        // Later, the idle ones make room.
        let later = t0 + REFUSAL_WINDOW + Duration::from_secs(1);
        assert_eq!(s.check(later, ip(100_000), None), Ok(()));
        assert_eq!(s.tracked(), 1);
    }
}
