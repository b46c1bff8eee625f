//! Digest authentication of requests, the server side (RFC 3261 §22.4 with RFC 7616's
//! algorithms as RFC 8760 brings them to SIP), sans-IO.
//!
//! We challenge with one `WWW-Authenticate` per algorithm, SHA-256 first, MD5 second
//! (RFC 8760 §2.4: in order of preference), always with `qop="auth"`. Nonces are stateless:
//! the time they were made and random bytes, sealed with an HMAC of a per-process key, so a
//! flood of INVITEs costs no memory. A nonce is good for [`NONCE_LIFETIME`]; an answer to an
//! older one is `stale` (RFC 7616 §3.3) and is challenged afresh. Replays are refused: per
//! nonce, the nonce count must grow (RFC 7616 §3.4), which costs one small entry per nonce
//! actually used, bounded and pruned by age.
//!
//! Every check costs the same whether the user is unknown or the password wrong: an unknown
//! user is hashed against a dummy password, and responses are compared in constant time.
//!
//! Must not: read a clock (time comes in as `now`), draw unseeded randomness, decide who a
//! trunk is (that is [`crate::sip::trunk`]).

use ctutils::CtEq;
use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// How long a nonce is good for.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(300);
/// Most nonces whose counts are remembered at once (each a few dozen bytes).
pub const MAX_TRACKED_NONCES: usize = 65_536;
/// The longest Authorization value we read; a longer one is refused unread.
pub const MAX_AUTHORIZATION_BYTES: usize = 4096;

/// A digest algorithm we offer (RFC 7616 §3.2, RFC 8760 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Md5,
}

impl Algorithm {
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Md5 => "MD5",
        }
    }

    /// RFC 7616 §3.4: an absent algorithm means MD5.
    fn from_token(token: Option<&str>) -> Option<Algorithm> {
        match token {
            None => Some(Algorithm::Md5),
            Some(t) if t.eq_ignore_ascii_case("MD5") => Some(Algorithm::Md5),
            Some(t) if t.eq_ignore_ascii_case("SHA-256") => Some(Algorithm::Sha256),
            Some(_) => None,
        }
    }

    /// The lower-case hex of the hash of `parts` joined by `:`.
    fn hex(self, parts: &[&[u8]]) -> String {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p);
            }
            d.finalize().to_vec()
        }
        let bytes = match self {
            Algorithm::Sha256 => run::<Sha256>(parts),
            Algorithm::Md5 => run::<Md5>(parts),
        };
        to_hex(&bytes)
    }
}

fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The parameters of a `Digest` Authorization header (RFC 7616 §3.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestAnswer {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub nc: Option<String>,
    pub qop: Option<String>,
}

/// Why an Authorization header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthParseError {
    #[error("not a Digest answer")]
    NotDigest,
    #[error("longer than {MAX_AUTHORIZATION_BYTES} bytes")]
    TooLong,
    #[error("malformed parameter list")]
    Malformed,
    #[error("missing parameter `{0}`")]
    Missing(&'static str),
}

/// Reads `Digest k=v, k="v", ...` (RFC 3261 §25.1 `credentials`; quoted strings with
/// backslash escapes, RFC 3261 §25.1 `quoted-pair`). Unknown parameters are skipped.
pub fn parse_authorization(value: &str) -> Result<DigestAnswer, AuthParseError> {
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return Err(AuthParseError::TooLong);
    }
    let value = value.trim_start();
    let rest = match value.get(..6) {
        Some(s) if s.eq_ignore_ascii_case("digest") => &value[6..],
        _ => return Err(AuthParseError::NotDigest),
    };
    if !rest.starts_with([' ', '\t']) {
        return Err(AuthParseError::NotDigest);
    }
    let mut out = DigestAnswer::default();
    let mut seen_username = false;
    let mut seen_response = false;
    let mut seen_nonce = false;
    for (name, val) in params(rest)? {
        let slot = match name.to_ascii_lowercase().as_str() {
            "username" => {
                seen_username = true;
                &mut out.username
            }
            "realm" => &mut out.realm,
            "nonce" => {
                seen_nonce = true;
                &mut out.nonce
            }
            "uri" => &mut out.uri,
            "response" => {
                seen_response = true;
                &mut out.response
            }
            "algorithm" => {
                out.algorithm = Some(val);
                continue;
            }
            "cnonce" => {
                out.cnonce = Some(val);
                continue;
            }
            "nc" => {
                out.nc = Some(val);
                continue;
            }
            "qop" => {
                out.qop = Some(val);
                continue;
            }
            _ => continue,
        };
        *slot = val;
    }
    if !seen_username {
        return Err(AuthParseError::Missing("username"));
    }
    if !seen_nonce {
        return Err(AuthParseError::Missing("nonce"));
    }
    if !seen_response {
        return Err(AuthParseError::Missing("response"));
    }
    Ok(out)
}

/// Splits an auth-param list into (name, unquoted value) pairs.
fn params(text: &str) -> Result<Vec<(String, String)>, AuthParseError> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    loop {
        while chars
            .next_if(|(_, c)| matches!(c, ' ' | '\t' | ',' | '\r' | '\n'))
            .is_some()
        {}
        let Some(&(start, _)) = chars.peek() else { break };
        let mut end = start;
        while let Some((i, c)) = chars.next_if(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            end = i + c.len_utf8();
        }
        if end == start {
            return Err(AuthParseError::Malformed);
        }
        let name = text[start..end].to_string();
        while chars.next_if(|(_, c)| matches!(c, ' ' | '\t')).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(AuthParseError::Malformed);
        }
        while chars.next_if(|(_, c)| matches!(c, ' ' | '\t')).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '"').is_some() {
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, e)) => value.push(e),
                        None => return Err(AuthParseError::Malformed),
                    },
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(AuthParseError::Malformed);
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !matches!(c, ',' | ' ' | '\t' | '"')) {
                value.push(c);
            }
        }
        out.push((name, value));
        if out.len() > 32 {
            return Err(AuthParseError::Malformed);
        }
    }
    Ok(out)
}

/// The outcome of checking an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Right credentials for a fresh nonce.
    Accepted,
    /// Right credentials, but for a nonce too old (or not tracked): challenge again with
    /// `stale=true` (RFC 7616 §3.3), the UA answers without asking its user.
    Stale,
    /// Wrong password, unknown user, a replay, a nonce we did not make, the wrong realm.
    Refused,
}

/// The server side of digest authentication for one realm.
pub struct Authenticator {
    realm: String,
    key: [u8; 32],
    /// Nonce times are seconds since the first `now` seen.
    epoch: Option<Instant>,
    /// The highest nonce count used per nonce, and nonces in the order first used.
    counts: HashMap<String, u32>,
    order: VecDeque<(Instant, String)>,
}

impl Authenticator {
    /// `key` seals the nonces: unguessable per process (the shell draws it).
    pub fn new(realm: impl Into<String>, key: [u8; 32]) -> Self {
        Authenticator {
            realm: realm.into(),
            key,
            epoch: None,
            counts: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn secs(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        u32::try_from(now.saturating_duration_since(epoch).as_secs()).unwrap_or(u32::MAX)
    }

    fn seal(&self, body: &[u8]) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(body);
        mac.update(self.realm.as_bytes());
        mac.finalize().into_bytes()[..12].to_vec()
    }

    /// A new nonce: its time (4 bytes), `random` (8 bytes) and their seal (12 bytes), in hex.
    pub fn nonce(&mut self, now: Instant, random: u64) -> String {
        let mut body = self.secs(now).to_be_bytes().to_vec();
        body.extend_from_slice(&random.to_be_bytes());
        let seal = self.seal(&body);
        body.extend_from_slice(&seal);
        to_hex(&body)
    }

    /// The `WWW-Authenticate` values of a challenge, one per algorithm in `algorithms` (in
    /// order of preference, RFC 8760 §2.4: SHA-256 first).
    pub fn challenges(&mut self, now: Instant, random: u64, stale: bool, algorithms: &[Algorithm]) -> Vec<String> {
        let nonce = self.nonce(now, random);
        algorithms
            .iter()
            .map(|a| {
                let mut v = format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
                    self.realm,
                    a.token()
                );
                if stale {
                    v.push_str(", stale=TRUE");
                }
                v
            })
            .collect()
    }

    /// The age of a nonce we made, or `None` if we did not make it.
    fn nonce_age(&mut self, now: Instant, nonce: &str) -> Option<Duration> {
        let bytes = from_hex(nonce).filter(|b| b.len() == 24)?;
        let (body, seal) = bytes.split_at(12);
        if !bool::from(self.seal(body).as_slice().ct_eq(seal)) {
            return None;
        }
        let made = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        Some(Duration::from_secs(u64::from(self.secs(now).saturating_sub(made))))
    }

    /// Checks `answer` to a request with `method`, `password` being the user's (`None` for a
    /// user we do not know: the same work is done against a dummy).
    pub fn check(
        &mut self,
        now: Instant,
        method: &str,
        answer: &DigestAnswer,
        password: Option<&str>,
        allowed: &[Algorithm],
    ) -> Verdict {
        let algorithm = Algorithm::from_token(answer.algorithm.as_deref()).filter(|a| allowed.contains(a));
        // The same hashing whatever went wrong, so the time taken says nothing.
        let alg = algorithm.unwrap_or(Algorithm::Sha256);
        let known = password.is_some();
        let password = password.unwrap_or("tolk:no-such-user:0123456789abcdef");
        let ha1 = alg.hex(&[answer.username.as_bytes(), self.realm.as_bytes(), password.as_bytes()]);
        let ha2 = alg.hex(&[method.as_bytes(), answer.uri.as_bytes()]);
        let qop_auth = answer.qop.as_deref().is_some_and(|q| q.eq_ignore_ascii_case("auth"));
        let expected = alg.hex(&[
            ha1.as_bytes(),
            answer.nonce.as_bytes(),
            answer.nc.as_deref().unwrap_or("").as_bytes(),
            answer.cnonce.as_deref().unwrap_or("").as_bytes(),
            b"auth",
            ha2.as_bytes(),
        ]);
        let given = answer.response.to_ascii_lowercase();
        let matches = bool::from(expected.as_bytes().ct_eq(given.as_bytes()));
        let count = answer.nc.as_deref().and_then(|nc| u32::from_str_radix(nc, 16).ok());
        let realm_ok = answer.realm == self.realm;
        if !(matches && known && realm_ok && qop_auth && algorithm.is_some() && answer.cnonce.is_some()) {
            return Verdict::Refused;
        }
        let Some(count) = count.filter(|c| *c > 0) else {
            return Verdict::Refused;
        };
        match self.nonce_age(now, &answer.nonce) {
            None => Verdict::Refused,
            Some(age) if age > NONCE_LIFETIME => Verdict::Stale,
            Some(_) => self.count_use(now, &answer.nonce, count),
        }
    }

    /// RFC 7616 §3.4: a nonce count must grow, or the answer is a replay.
    fn count_use(&mut self, now: Instant, nonce: &str, count: u32) -> Verdict {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) <= NONCE_LIFETIME && self.order.len() < MAX_TRACKED_NONCES {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.counts.remove(&old);
            }
        }
        match self.counts.get_mut(nonce) {
            Some(last) if count <= *last => Verdict::Refused,
            Some(last) => {
                *last = count;
                Verdict::Accepted
            }
            None => {
                self.counts.insert(nonce.to_string(), count);
                self.order.push_back((now, nonce.to_string()));
                Verdict::Accepted
            }
        }
    }

    /// Nonces whose counts are remembered (for tests and a gauge).
    pub fn tracked_nonces(&self) -> usize {
        self.counts.len()
    }
}

/// The answer a UA computes (RFC 7616 §3.4.1), for tests and for our own client side.
#[allow(clippy::too_many_arguments)]
pub fn answer_for(
    algorithm: Algorithm,
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let ha1 = algorithm.hex(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()]);
    let ha2 = algorithm.hex(&[method.as_bytes(), uri.as_bytes()]);
    let nc = format!("{nc:08x}");
    let response = algorithm.hex(&[
        ha1.as_bytes(),
        nonce.as_bytes(),
        nc.as_bytes(),
        cnonce.as_bytes(),
        b"auth",
        ha2.as_bytes(),
    ]);
    format!(
        "Digest username=\"{username}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm={}, cnonce=\"{cnonce}\", nc={nc}, qop=auth",
        algorithm.token()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &[Algorithm] = &[Algorithm::Sha256, Algorithm::Md5];

    fn auth() -> Authenticator {
        Authenticator::new("tolk", [7; 32])
    }

    fn nonce_of(challenge: &str) -> String {
        let start = challenge.find("nonce=\"").unwrap() + 7;
        let end = challenge[start..].find('"').unwrap() + start;
        challenge[start..end].to_string()
    }

    #[test]
    fn rfc7616_md5_example_response() {
        // RFC 7616 §3.9.1 (MD5 of the example), recomputed with our hashing: the
        // published response for "Mufasa" / "Circle of Life".
        let a = answer_for(
            Algorithm::Md5,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            1,
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert!(a.contains("response=\"8ca523f5e9506fed4657c9700eebdbec\""), "{a}");
        let b = answer_for(
            Algorithm::Sha256,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            1,
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert!(
            b.contains("response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\""),
            "{b}"
        );
    }

    #[test]
    fn right_password_accepted_once_per_count_and_replay_refused() {
        let mut a = auth();
        let t0 = Instant::now();
        let ch = a.challenges(t0, 42, false, BOTH);
        assert_eq!(ch.len(), 2);
        assert!(ch[0].contains("algorithm=SHA-256") && ch[1].contains("algorithm=MD5"));
        let nonce = nonce_of(&ch[0]);
        for alg in [Algorithm::Sha256, Algorithm::Md5] {
            let nc = if alg == Algorithm::Sha256 { 1 } else { 2 };
            let hdr = answer_for(
                alg,
                "carrier",
                "tolk",
                "s3cret",
                "INVITE",
                "sip:+15550100@x",
                &nonce,
                nc,
                "c1",
            );
            let ans = parse_authorization(&hdr).unwrap();
            assert_eq!(
                a.check(t0, "INVITE", &ans, Some("s3cret"), BOTH),
                Verdict::Accepted,
                "{alg:?}"
            );
            // The same answer again is a replay.
            assert_eq!(a.check(t0, "INVITE", &ans, Some("s3cret"), BOTH), Verdict::Refused);
        }
    }

    #[test]
    fn wrong_password_unknown_user_and_forged_nonce_are_refused() {
        let mut a = auth();
        let t0 = Instant::now();
        let nonce = nonce_of(&a.challenges(t0, 1, false, BOTH)[0]);
        let hdr = answer_for(
            Algorithm::Sha256,
            "carrier",
            "tolk",
            "guess",
            "INVITE",
            "sip:x@y",
            &nonce,
            1,
            "c",
        );
        let ans = parse_authorization(&hdr).unwrap();
        assert_eq!(a.check(t0, "INVITE", &ans, Some("s3cret"), BOTH), Verdict::Refused);
        assert_eq!(a.check(t0, "INVITE", &ans, None, BOTH), Verdict::Refused);
        // A nonce we did not seal.
        let mut forged = nonce.clone();
        forged.replace_range(0..2, if &nonce[0..2] == "ff" { "fe" } else { "ff" });
        let hdr = answer_for(
            Algorithm::Sha256,
            "carrier",
            "tolk",
            "s3cret",
            "INVITE",
            "sip:x@y",
            &forged,
            1,
            "c",
        );
        assert_eq!(
            a.check(t0, "INVITE", &parse_authorization(&hdr).unwrap(), Some("s3cret"), BOTH),
            Verdict::Refused
        );
        // Another realm.
        let hdr = answer_for(
            Algorithm::Sha256,
            "carrier",
            "evil",
            "s3cret",
            "INVITE",
            "sip:x@y",
            &nonce,
            1,
            "c",
        );
        assert_eq!(
            a.check(t0, "INVITE", &parse_authorization(&hdr).unwrap(), Some("s3cret"), BOTH),
            Verdict::Refused
        );
    }

    #[test]
    fn an_algorithm_the_trunk_does_not_take_is_refused() {
        let mut a = auth();
        let t0 = Instant::now();
        let ch = a.challenges(t0, 5, false, &[Algorithm::Md5]);
        assert_eq!(ch.len(), 1);
        assert!(ch[0].contains("algorithm=MD5"));
        let nonce = nonce_of(&ch[0]);
        let sha = answer_for(Algorithm::Sha256, "u", "tolk", "p", "INVITE", "sip:a@b", &nonce, 1, "c");
        let ans = parse_authorization(&sha).unwrap();
        assert_eq!(
            a.check(t0, "INVITE", &ans, Some("p"), &[Algorithm::Md5]),
            Verdict::Refused
        );
        let md5 = answer_for(Algorithm::Md5, "u", "tolk", "p", "INVITE", "sip:a@b", &nonce, 1, "c");
        let ans = parse_authorization(&md5).unwrap();
        assert_eq!(
            a.check(t0, "INVITE", &ans, Some("p"), &[Algorithm::Md5]),
            Verdict::Accepted
        );
    }

    #[test]
    fn old_nonce_is_stale_and_tracking_is_bounded_by_age() {
        let mut a = auth();
        let t0 = Instant::now();
        let nonce = nonce_of(&a.challenges(t0, 9, false, BOTH)[0]);
        let later = t0 + NONCE_LIFETIME + Duration::from_secs(2);
        let hdr = answer_for(Algorithm::Md5, "u", "tolk", "p", "INVITE", "sip:a@b", &nonce, 1, "c");
        let ans = parse_authorization(&hdr).unwrap();
        assert_eq!(a.check(later, "INVITE", &ans, Some("p"), BOTH), Verdict::Stale);
        assert!(a.challenges(later, 3, true, BOTH)[0].ends_with("stale=TRUE"));
        // Used nonces are forgotten once they are too old to be accepted anyway.
        for i in 0..100u64 {
            let n = a.nonce(t0, i);
            let hdr = answer_for(Algorithm::Md5, "u", "tolk", "p", "INVITE", "sip:a@b", &n, 1, "c");
            assert_eq!(
                a.check(t0, "INVITE", &parse_authorization(&hdr).unwrap(), Some("p"), BOTH),
                Verdict::Accepted
            );
        }
        assert_eq!(a.tracked_nonces(), 100);
        let n = a.nonce(later, 1000);
        let hdr = answer_for(Algorithm::Md5, "u", "tolk", "p", "INVITE", "sip:a@b", &n, 1, "c");
        assert_eq!(
            a.check(later, "INVITE", &parse_authorization(&hdr).unwrap(), Some("p"), BOTH),
            Verdict::Accepted
        );
        assert_eq!(a.tracked_nonces(), 1);
    }

    #[test]
    fn authorization_parsing_takes_quotes_escapes_and_refuses_garbage() {
        let ans = parse_authorization(
            "Digest username=\"a\\\"b\",realm=\"tolk\", nonce=\"n\", uri=\"sip:x\", response=\"R\", qop=auth, nc=00000001, cnonce=\"c\", opaque=\"\"",
        )
        .unwrap();
        assert_eq!(ans.username, "a\"b");
        assert_eq!(ans.qop.as_deref(), Some("auth"));
        assert_eq!(ans.nc.as_deref(), Some("00000001"));
        assert_eq!(
            parse_authorization("Basic YWxhZGRpbg=="),
            Err(AuthParseError::NotDigest)
        );
        assert_eq!(
            parse_authorization("Digestusername=\"a\""),
            Err(AuthParseError::NotDigest)
        );
        assert_eq!(
            parse_authorization("Digest username=\"a"),
            Err(AuthParseError::Malformed)
        );
        assert_eq!(parse_authorization("Digest =x"), Err(AuthParseError::Malformed));
        assert_eq!(
            parse_authorization("Digest username=a, nonce=b"),
            Err(AuthParseError::Missing("response"))
        );
        assert_eq!(
            parse_authorization(&format!("Digest username=\"{}\"", "x".repeat(5000))),
            Err(AuthParseError::TooLong)
        );
        assert_eq!(parse_authorization("Digest é=1"), Err(AuthParseError::Malformed));
    }
}
