//! Who may call us: carriers (`[[trunks]]`) known by their source addresses or digest
//! credentials, the sources `sip.allow_unknown` takes without a trunk, and the per-trunk
//! limits (calls at once, calls per second). Sans-IO: the dialog core asks [`Gate::admit`]
//! about each new out-of-dialog request with `now` and the peer's address.
//!
//! Everyone else gets one answer: a digest challenge when some trunk authenticates from any
//! address, else 403. Unknown user and wrong password look the same on the wire and take
//! the same time ([`crate::sip::auth`]).
//!
//! Must not: read a clock, do I/O, log a full number (security events carry the source
//! address, the trunk and the reason only).

use crate::config::trunk::{Cidr, DigestAlgorithm, SrtpPolicy, TrunkConfig, TrunkTransport};
use crate::config::{CodecName, Config};
use crate::sip::auth::{Algorithm, Authenticator, Verdict, parse_authorization};
use crate::sip::flood::{Bucket, Drop, FloodLimits, Strangers};
use crate::sip::msg::{HeaderLookup, Name, Request};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// A carrier, as the call path needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Trunk {
    pub name: Arc<str>,
    sources: Vec<Cidr>,
    credentials: Option<(String, String)>,
    /// What its challenges offer and its answers may use, in order of preference.
    algorithms: Vec<Algorithm>,
    transport: TrunkTransport,
    pub max_calls: usize,
    pub max_cps: u32,
    /// Codecs offered to its calls; empty: the gateway's.
    pub codecs: Vec<CodecName>,
    /// Region of national numbers (`None`: the dialplan's).
    pub country: Option<String>,
    pub strip_prefix: Option<String>,
    pub trust_pai: bool,
    /// None: `sip.srtp` decides.
    pub srtp: Option<SrtpPolicy>,
}

impl std::fmt::Debug for Trunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trunk({})", self.name)
    }
}

impl Trunk {
    fn from_config(t: &TrunkConfig) -> Trunk {
        Trunk {
            name: Arc::from(t.name.as_str()),
            sources: t.sources.clone(),
            credentials: t.username.clone().zip(t.password.clone()),
            algorithms: t
                .digest_algorithms
                .iter()
                .map(|a| match a {
                    DigestAlgorithm::Sha256 => Algorithm::Sha256,
                    DigestAlgorithm::Md5 => Algorithm::Md5,
                })
                .collect(),
            transport: t.transport,
            max_calls: t.max_calls,
            max_cps: t.max_cps,
            codecs: t.codecs.clone(),
            country: t.country.clone(),
            strip_prefix: t.strip_prefix.clone(),
            trust_pai: t.trust_pai,
            srtp: t.srtp,
        }
    }

    /// The most specific of its prefixes that holds `ip`.
    fn source_match(&self, ip: IpAddr) -> Option<u8> {
        self.sources.iter().filter(|c| c.contains(ip)).map(|c| c.prefix).max()
    }

    /// The dialled user part as routing should read it: the carrier's technical prefix off.
    pub fn dialled<'a>(&self, user: &'a str) -> &'a str {
        match &self.strip_prefix {
            Some(p) => user.strip_prefix(p.as_str()).unwrap_or(user),
            None => user,
        }
    }
}

/// The trunks and the sources taken without one.
#[derive(Debug, Clone, Default)]
pub struct TrunkTable {
    trunks: Vec<Arc<Trunk>>,
    allow_unknown: Vec<Cidr>,
    flood: FloodLimits,
}

impl TrunkTable {
    pub fn from_config(cfg: &Config) -> TrunkTable {
        TrunkTable {
            trunks: cfg.trunks.iter().map(|t| Arc::new(Trunk::from_config(t))).collect(),
            allow_unknown: cfg.sip.allow_unknown.clone(),
            flood: FloodLimits {
                rate: cfg.sip.stranger_rate,
                ban_after: cfg.sip.ban_after,
                ban: std::time::Duration::from_secs(cfg.sip.ban_secs),
                scanners: cfg
                    .sip
                    .scanner_user_agents
                    .iter()
                    .map(|s| s.to_ascii_lowercase())
                    .collect(),
            },
        }
    }

    /// Takes every source without a trunk (unit tests of the dialog core).
    pub fn open() -> TrunkTable {
        TrunkTable {
            trunks: Vec::new(),
            allow_unknown: vec![
                Cidr::parse("0.0.0.0/0").expect("prefix"),
                Cidr::parse("::/0").expect("prefix"),
            ],
            flood: FloodLimits::default(),
        }
    }

    pub fn trunks(&self) -> &[Arc<Trunk>] {
        &self.trunks
    }

    /// The trunk whose sources hold `ip` most specifically.
    fn by_source(&self, ip: IpAddr) -> Option<usize> {
        self.trunks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.source_match(ip).map(|p| (p, i)))
            .max_by_key(|(p, i)| (*p, std::cmp::Reverse(*i)))
            .map(|(_, i)| i)
    }

    fn by_username(&self, user: &str) -> Option<usize> {
        self.trunks
            .iter()
            .position(|t| t.credentials.as_ref().is_some_and(|(u, _)| u == user))
    }

    fn allowed_unknown(&self, ip: IpAddr) -> bool {
        self.allow_unknown.iter().any(|c| c.contains(ip))
    }

    /// Some trunk authenticates from any address: strangers are challenged, not refused.
    fn challenges_strangers(&self) -> bool {
        self.trunks
            .iter()
            .any(|t| t.sources.is_empty() && t.credentials.is_some())
    }

    /// What a challenge to a stranger offers: every algorithm some such trunk takes, SHA-256
    /// first.
    fn stranger_algorithms(&self) -> Vec<Algorithm> {
        let wanted = |a: Algorithm| {
            self.trunks
                .iter()
                .any(|t| t.sources.is_empty() && t.credentials.is_some() && t.algorithms.contains(&a))
        };
        [Algorithm::Sha256, Algorithm::Md5]
            .into_iter()
            .filter(|a| wanted(*a))
            .collect()
    }
}

/// Why a request was not let in: the `reason` of security events and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a trunk's source nor in `sip.allow_unknown`, and no trunk authenticates strangers.
    UnknownSource,
    /// A digest answer with an unknown user or a wrong password (one reason: the log may
    /// say no more than the wire).
    BadCredentials,
    /// A digest answer we cannot read, or to a nonce we did not make, or a replay.
    BadAuthorization,
    /// The trunk's source, on a transport the trunk does not use.
    WrongTransport,
    /// The trunk's `max_calls`.
    TrunkCalls,
    /// The trunk's `max_cps`.
    TrunkRate,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownSource => "unknown_source",
            Refusal::BadCredentials => "bad_credentials",
            Refusal::BadAuthorization => "bad_authorization",
            Refusal::WrongTransport => "wrong_transport",
            Refusal::TrunkCalls => "trunk_max_calls",
            Refusal::TrunkRate => "trunk_max_cps",
        }
    }

    /// The status we answer with.
    pub fn status(self) -> u16 {
        match self {
            Refusal::TrunkCalls | Refusal::TrunkRate => 503,
            _ => 403,
        }
    }
}

/// What to do with a new request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// From this trunk.
    Trunk(Arc<Trunk>),
    /// From a source `sip.allow_unknown` takes, without a trunk.
    NoTrunk,
    /// Answer 401 with these `WWW-Authenticate` values.
    Challenge(Vec<String>),
    Refused(Refusal),
    /// No answer at all: a banned source, one over its rate, or a scanner.
    Dropped(Drop),
}

/// The admission of new requests: identification, digest checks and per-trunk limits.
pub struct Gate {
    table: TrunkTable,
    auth: Authenticator,
    /// Calls in progress per trunk (index into the table).
    active: Vec<usize>,
    buckets: Vec<Bucket>,
    nonces: fastrand::Rng,
    /// Sources that are neither trunks nor allowed: rates and bans.
    strangers: Strangers,
}

impl Gate {
    /// `seed` draws nonces and their sealing key: the shell passes a random one.
    pub fn new(table: TrunkTable, realm: &str, seed: u64) -> Gate {
        let mut nonces = fastrand::Rng::with_seed(seed ^ 0x6e6f_6e63_6573);
        let mut key = [0u8; 32];
        nonces.fill(&mut key);
        let n = table.trunks.len();
        let table_flood = table.flood.clone();
        Gate {
            table,
            auth: Authenticator::new(realm, key),
            active: vec![0; n],
            buckets: vec![Bucket::default(); n],
            strangers: Strangers::new(table_flood),
            nonces,
        }
    }

    pub fn table(&self) -> &TrunkTable {
        &self.table
    }

    /// May `req` from `ip` over `transport` (its Via token) go on? `is_call`: an INVITE,
    /// which the trunk's limits count (then [`Gate::released`] must follow its end).
    pub fn admit(&mut self, now: Instant, req: &Request, ip: IpAddr, transport: &str, is_call: bool) -> Admission {
        let stranger = self.table.by_source(ip).is_none() && !self.table.allowed_unknown(ip);
        if stranger {
            let user_agent = req.headers.first(&Name::USER_AGENT);
            if let Err(drop) = self.strangers.check(now, ip, user_agent) {
                if drop == Drop::Scanner {
                    self.banned(ip, "scanner");
                }
                return Admission::Dropped(drop);
            }
        }
        let admission = self.identify(now, req, ip, transport, is_call);
        if stranger && matches!(admission, Admission::Refused(_)) && self.strangers.refused(now, ip) {
            self.banned(ip, "refused");
        }
        admission
    }

    /// A ban starts: one security event (what the source sends meanwhile is only counted).
    fn banned(&self, ip: IpAddr, why: &'static str) {
        metrics::counter!("sip_bans_total", "why" => why).increment(1);
        tracing::warn!(
            target: "tolk::security",
            source = %ip,
            reason = "banned",
            why,
            ban_secs = self.table.flood.ban.as_secs(),
            "source banned: its requests are dropped unanswered"
        );
    }

    /// Sources banned at `now` (a gauge).
    pub fn banned_sources(&self, now: Instant) -> usize {
        self.strangers.banned(now)
    }

    fn identify(&mut self, now: Instant, req: &Request, ip: IpAddr, transport: &str, is_call: bool) -> Admission {
        let authorization = req.headers.first(&Name::AUTHORIZATION);
        let identified = match self.table.by_source(ip) {
            Some(i) => {
                let trunk = self.table.trunks[i].clone();
                if !trunk.transport.allows(transport) {
                    return Admission::Refused(Refusal::WrongTransport);
                }
                if let Some((user, _)) = &trunk.credentials
                    && let Some(a) = self.verify(now, req, authorization, Some(user), &trunk.algorithms)
                {
                    return a;
                }
                i
            }
            None => {
                let strangers = self.table.challenges_strangers();
                let allowed = self.table.allowed_unknown(ip);
                match authorization {
                    // A UA on an allowed source may still say which trunk it is.
                    Some(_) if allowed || strangers => match self.verify(now, req, authorization, None, &[]) {
                        Some(a) => return a,
                        None => match authorization.and_then(|v| parse_authorization(v).ok()) {
                            Some(ans) => match self.table.by_username(&ans.username) {
                                Some(i) => i,
                                None => return Admission::Refused(Refusal::BadCredentials),
                            },
                            None => return Admission::Refused(Refusal::BadAuthorization),
                        },
                    },
                    _ if allowed => return Admission::NoTrunk,
                    None if strangers => {
                        let random = self.nonces.u64(..);
                        let algorithms = self.table.stranger_algorithms();
                        return Admission::Challenge(self.auth.challenges(now, random, false, &algorithms));
                    }
                    _ => return Admission::Refused(Refusal::UnknownSource),
                }
            }
        };
        // The trunk's own sources only, when it lists any.
        let trunk = self.table.trunks[identified].clone();
        if !trunk.sources.is_empty() && trunk.source_match(ip).is_none() {
            return Admission::Refused(Refusal::BadCredentials);
        }
        if !trunk.transport.allows(transport) {
            return Admission::Refused(Refusal::WrongTransport);
        }
        if is_call {
            if trunk.max_calls > 0 && self.active[identified] >= trunk.max_calls {
                return Admission::Refused(Refusal::TrunkCalls);
            }
            if trunk.max_cps > 0 && !self.buckets[identified].take(now, trunk.max_cps) {
                return Admission::Refused(Refusal::TrunkRate);
            }
            self.active[identified] += 1;
        }
        Admission::Trunk(trunk)
    }

    /// Checks the digest answer in `authorization` for `expected_user` (`None`: whoever it
    /// names). `None` when it is right: the caller goes on with the trunk; else the answer.
    /// With no answer, the challenge offers `offer`.
    fn verify(
        &mut self,
        now: Instant,
        req: &Request,
        authorization: Option<&str>,
        expected_user: Option<&str>,
        offer: &[Algorithm],
    ) -> Option<Admission> {
        let Some(value) = authorization else {
            let random = self.nonces.u64(..);
            return Some(Admission::Challenge(self.auth.challenges(now, random, false, offer)));
        };
        let Ok(answer) = parse_authorization(value) else {
            return Some(Admission::Refused(Refusal::BadAuthorization));
        };
        let user_ok = expected_user.is_none_or(|u| u == answer.username);
        let trunk = self
            .table
            .by_username(&answer.username)
            .map(|i| self.table.trunks[i].clone())
            .filter(|_| user_ok);
        let password = trunk
            .as_ref()
            .and_then(|t| t.credentials.as_ref())
            .map(|(_, p)| p.as_str());
        // An unknown user is checked against both algorithms' rules, the same work.
        let allowed: &[Algorithm] = match &trunk {
            Some(t) => &t.algorithms,
            None => &[Algorithm::Sha256, Algorithm::Md5],
        };
        match self.auth.check(now, req.method.as_str(), &answer, password, allowed) {
            Verdict::Accepted => None,
            Verdict::Stale => {
                let random = self.nonces.u64(..);
                let allowed = allowed.to_vec();
                Some(Admission::Challenge(self.auth.challenges(now, random, true, &allowed)))
            }
            Verdict::Refused => Some(Admission::Refused(Refusal::BadCredentials)),
        }
    }

    /// A call admitted as from `trunk` has ended.
    pub fn released(&mut self, trunk: &Trunk) {
        if let Some(i) = self.table.trunks.iter().position(|t| t.name == trunk.name) {
            self.active[i] = self.active[i].saturating_sub(1);
        }
    }

    /// Calls in progress from the trunk named `name`.
    pub fn active_calls(&self, name: &str) -> usize {
        self.table
            .trunks
            .iter()
            .position(|t| &*t.name == name)
            .map(|i| self.active[i])
            .unwrap_or(0)
    }
}

/// The caller a trusted trunk asserts (RFC 3325 §9.1 P-Asserted-Identity: the first
/// `sip:`/`tel:` value's user part), or `None`.
pub fn asserted_caller(req: &Request) -> Option<String> {
    let value = req.headers.first(&Name::P_ASSERTED_IDENTITY)?;
    for part in crate::sip::msg::split_list(value) {
        let uri = crate::sip::msg::uri_of_name_addr(&part);
        if let Some(number) = uri.strip_prefix("tel:") {
            return Some(number.split(';').next().unwrap_or(number).to_string());
        }
        if let Some(user) = crate::sip::msg::addr_spec_user(uri) {
            return Some(user);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::auth::answer_for;
    use crate::sip::msg::{Limits, SipMessage, parse_datagram};
    use std::time::Duration;

    fn table(toml: &str) -> TrunkTable {
        let cfg = Config::from_parts("tolk.toml", toml, &[]).expect("config");
        TrunkTable::from_config(&cfg)
    }

    fn invite(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:+15550100300@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\n\
             From: <sip:+15551230000@198.51.100.7>;tag=1\r\nTo: <sip:+15550100300@192.0.2.1>\r\n\
             Call-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match parse_datagram(text.as_bytes(), &Limits::default()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn name(a: &Admission) -> String {
        match a {
            Admission::Trunk(t) => t.name.to_string(),
            Admission::NoTrunk => "-".into(),
            Admission::Challenge(_) => "challenge".into(),
            Admission::Refused(r) => r.as_str().into(),
            Admission::Dropped(d) => format!("dropped {}", d.as_str()),
        }
    }

    const TWO: &str = r#"
[sip]
allow_unknown = ["10.9.0.0/16"]

[[trunks]]
name = "wide"
sources = ["198.51.100.0/24"]
transport = "udp"

[[trunks]]
name = "narrow"
sources = ["198.51.100.7"]
max_calls = 1
max_cps = 2
"#;

    #[test]
    fn the_most_specific_source_wins_and_limits_count_calls() {
        let mut gate = Gate::new(table(TWO), "tolk", 1);
        let t0 = Instant::now();
        let req = invite("");
        assert_eq!(name(&gate.admit(t0, &req, ip("198.51.100.8"), "UDP", true)), "wide");
        assert_eq!(
            name(&gate.admit(t0, &req, ip("198.51.100.8"), "TCP", true)),
            "wrong_transport"
        );
        assert_eq!(name(&gate.admit(t0, &req, ip("198.51.100.7"), "TCP", true)), "narrow");
        // max_calls = 1: the second at once is refused until the first ends.
        assert_eq!(
            name(&gate.admit(t0, &req, ip("198.51.100.7"), "UDP", true)),
            "trunk_max_calls"
        );
        let narrow = gate.table().trunks()[1].clone();
        gate.released(&narrow);
        assert_eq!(gate.active_calls("narrow"), 0);
        assert_eq!(name(&gate.admit(t0, &req, ip("198.51.100.7"), "UDP", true)), "narrow");
        gate.released(&narrow);
        // max_cps = 2: two were taken at t0 (the bucket starts full), the third waits.
        assert_eq!(
            name(&gate.admit(t0, &req, ip("198.51.100.7"), "UDP", true)),
            "trunk_max_cps"
        );
        let later = t0 + Duration::from_millis(600);
        assert_eq!(
            name(&gate.admit(later, &req, ip("198.51.100.7"), "UDP", true)),
            "narrow"
        );
        // OPTIONS (not a call) do not count.
        assert_eq!(
            name(&gate.admit(later, &req, ip("198.51.100.7"), "UDP", false)),
            "narrow"
        );
        assert_eq!(gate.active_calls("narrow"), 1);
        // Sources without a trunk, and strangers.
        assert_eq!(name(&gate.admit(t0, &req, ip("10.9.3.4"), "UDP", true)), "-");
        assert_eq!(name(&gate.admit(t0, &req, ip("::ffff:10.9.3.4"), "UDP", true)), "-");
        assert_eq!(
            name(&gate.admit(t0, &req, ip("203.0.113.1"), "UDP", true)),
            "unknown_source"
        );
    }

    #[test]
    fn a_digest_trunk_is_challenged_then_let_in_and_only_from_its_sources() {
        let toml = r#"
[sip]
allow_unknown = []

[[trunks]]
name = "pbx"
sources = ["192.0.2.0/24"]
username = "pbx"
password = "pbx-password"
"#;
        let mut gate = Gate::new(table(toml), "tolk", 2);
        let t0 = Instant::now();
        let Admission::Challenge(values) = gate.admit(t0, &invite(""), ip("192.0.2.9"), "UDP", true) else {
            panic!("a challenge")
        };
        assert_eq!(values.len(), 2);
        let nonce = values[0]
            .split("nonce=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        let hdr = |user: &str, pw: &str, nc: u32| {
            let a = answer_for(
                Algorithm::Sha256,
                user,
                "tolk",
                pw,
                "INVITE",
                "sip:+15550100300@192.0.2.1",
                &nonce,
                nc,
                "x",
            );
            invite(&format!("Authorization: {a}\r\n"))
        };
        assert_eq!(
            name(&gate.admit(t0, &hdr("pbx", "pbx-password", 1), ip("192.0.2.9"), "UDP", true)),
            "pbx"
        );
        assert_eq!(
            name(&gate.admit(t0, &hdr("pbx", "wrong", 2), ip("192.0.2.9"), "UDP", true)),
            "bad_credentials"
        );
        assert_eq!(
            name(&gate.admit(t0, &hdr("other", "pbx-password", 3), ip("192.0.2.9"), "UDP", true)),
            "bad_credentials"
        );
        // Right credentials from outside its sources: a stranger, refused.
        assert_eq!(
            name(&gate.admit(t0, &hdr("pbx", "pbx-password", 4), ip("203.0.113.1"), "UDP", true)),
            "unknown_source"
        );
        assert_eq!(
            name(&gate.admit(
                t0,
                &invite("Authorization: Digest garbage\r\n"),
                ip("192.0.2.9"),
                "UDP",
                true
            )),
            "bad_authorization"
        );
        // A nonce too old is answered with a fresh challenge marked stale.
        let old = t0 + crate::sip::auth::NONCE_LIFETIME + Duration::from_secs(1);
        let Admission::Challenge(values) =
            gate.admit(old, &hdr("pbx", "pbx-password", 5), ip("192.0.2.9"), "UDP", true)
        else {
            panic!("a stale challenge")
        };
        assert!(values[0].ends_with("stale=TRUE"));
    }

    #[test]
    fn pai_is_read_from_the_first_usable_uri() {
        let r = invite("P-Asserted-Identity: \"Carrier\" <sip:+442071234567@carrier.example>, <tel:+442071234567>\r\n");
        assert_eq!(asserted_caller(&r).as_deref(), Some("+442071234567"));
        let r = invite("P-Asserted-Identity: <tel:+15551234567;cpc=ordinary>\r\n");
        assert_eq!(asserted_caller(&r).as_deref(), Some("+15551234567"));
        assert_eq!(asserted_caller(&invite("")), None);
        let t = table("[[trunks]]\nname = \"t\"\nsources = [\"192.0.2.1\"]\nstrip_prefix = \"99\"\n");
        assert_eq!(t.trunks()[0].dialled("9918005550100"), "18005550100");
        assert_eq!(t.trunks()[0].dialled("18005550100"), "18005550100");
    }
}
