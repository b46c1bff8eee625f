//! `[[trunks]]` and the source lists of `[sip]`: the carriers that may send us calls.
//! Parsed into typed values here (addresses and prefixes, transports, SRTP policy); what a
//! trunk does with a call is `sip::trunk`'s.

use super::CodecName;
use serde::Deserialize;
use std::net::IpAddr;

/// An address or an address prefix (`192.0.2.7`, `192.0.2.0/24`, `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `addr` or `addr/prefix`; host bits past the prefix are refused (a typo more
    /// often than not).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        let cidr = Cidr { addr, prefix };
        if cidr.network() != addr {
            return Err(format!(
                "`{text}` has host bits set: did you mean {}/{prefix}?",
                cidr.network()
            ));
        }
        Ok(cidr)
    }

    fn mask(bits: u32, prefix: u8) -> u128 {
        if prefix == 0 {
            0
        } else {
            (!0u128 << (bits - u32::from(prefix))) & (if bits == 128 { !0 } else { (1u128 << bits) - 1 })
        }
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let m = Self::mask(32, self.prefix) as u32;
                IpAddr::V4((u32::from(a) & m).into())
            }
            IpAddr::V6(a) => {
                let m = Self::mask(128, self.prefix);
                IpAddr::V6((u128::from(a) & m).into())
            }
        }
    }

    /// Whether `ip` is inside the prefix. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how a
    /// dual-stack socket reports IPv4 peers) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = Self::mask(32, self.prefix) as u32;
                u32::from(a) & m == u32::from(n)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = Self::mask(128, self.prefix);
                u128::from(a) & m == u128::from(n)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Cidr::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The transports a trunk may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransport {
    #[default]
    Any,
    Udp,
    Tcp,
    Tls,
}

impl TrunkTransport {
    /// Whether a message that came over `via_token` (`UDP`, `TCP`, `TLS`) is allowed.
    pub fn allows(self, via_token: &str) -> bool {
        match self {
            TrunkTransport::Any => true,
            TrunkTransport::Udp => via_token.eq_ignore_ascii_case("udp"),
            TrunkTransport::Tcp => via_token.eq_ignore_ascii_case("tcp"),
            TrunkTransport::Tls => via_token.eq_ignore_ascii_case("tls"),
        }
    }
}

/// Whether a call's media must be encrypted (RFC 4568 SDES).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpPolicy {
    Off,
    Optional,
    Required,
}

/// A digest algorithm a trunk may answer with (RFC 8760 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum DigestAlgorithm {
    #[serde(rename = "SHA-256", alias = "sha-256")]
    Sha256,
    #[serde(rename = "MD5", alias = "md5")]
    Md5,
}

/// RFC 8760 §2.4: SHA-256 first, MD5 for the UAs that know nothing else.
fn sha256_then_md5() -> Vec<DigestAlgorithm> {
    vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5]
}

/// `[[trunks]]`: one carrier.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// The name CDRs, logs and `numbers.toml` routes use.
    pub name: String,
    /// Addresses or prefixes its calls come from. Empty: any source, if it authenticates
    /// (then `username`/`password` are required).
    #[serde(default)]
    pub sources: Vec<Cidr>,
    /// Digest credentials the carrier must answer a challenge with (RFC 8760).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The digest algorithms its challenges offer, in order of preference; an answer by
    /// any other is refused (no downgrade). Some UAs read only the first challenge (SIPp
    /// 3.6 answers MD5 only): list `["MD5"]` for them.
    #[serde(default = "sha256_then_md5")]
    pub digest_algorithms: Vec<DigestAlgorithm>,
    #[serde(default)]
    pub transport: TrunkTransport,
    /// Most calls at once from this trunk; 0: only `sip.max_calls` limits it.
    #[serde(default)]
    pub max_calls: usize,
    /// Most new calls per second (bursts of one second's worth); 0: no limit.
    #[serde(default)]
    pub max_cps: u32,
    /// The codecs offered to this trunk's calls, in order; empty: `rtp.codecs`.
    #[serde(default)]
    pub codecs: Vec<CodecName>,
    /// The country (ISO 3166 alpha-2, `GB`) national numbers from this trunk belong to;
    /// default: the dialplan's region (NANP).
    #[serde(default)]
    pub country: Option<String>,
    /// A technical prefix the carrier puts before dialled numbers, removed before routing.
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// Take the caller from P-Asserted-Identity (RFC 3325 §9.1): only for a carrier that
    /// asserts identities (a trust domain); from anyone else the header is ignored.
    #[serde(default)]
    pub trust_pai: bool,
    /// SRTP for this trunk's calls; unset: `sip.srtp`.
    #[serde(default)]
    pub srtp: Option<SrtpPolicy>,
}

/// Never prints the password.
impl std::fmt::Debug for TrunkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrunkConfig")
            .field("name", &self.name)
            .field("sources", &self.sources)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .field("digest_algorithms", &self.digest_algorithms)
            .field("transport", &self.transport)
            .field("max_calls", &self.max_calls)
            .field("max_cps", &self.max_cps)
            .field("codecs", &self.codecs)
            .field("country", &self.country)
            .field("strip_prefix", &self.strip_prefix)
            .field("trust_pai", &self.trust_pai)
            .field("srtp", &self.srtp)
            .finish()
    }
}

/// User agents of SIP scanners seen on the internet (sipvicious and its forks, sipcli,
/// sip-scan, VaxSIP, iWar...).
pub fn default_scanners() -> Vec<String> {
    [
        "friendly-scanner",
        "sipvicious",
        "sipcli",
        "sip-scan",
        "sipsak-scan",
        "vaxsipuseragent",
        "iwar",
        "sivus",
        "pplsip",
        "sundayddr",
        "smap",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The default of `sip.allow_unknown`: loopback only, so the quick start works and nothing
/// else does.
pub fn loopback_only() -> Vec<Cidr> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|c| Cidr::parse(c).ok())
        .collect()
}

/// Checks the trunks: `(index key, message)` of the first problem.
pub fn validate(trunks: &[TrunkConfig]) -> Result<(), (String, String)> {
    let mut names = std::collections::HashSet::new();
    let mut users = std::collections::HashSet::new();
    for (i, t) in trunks.iter().enumerate() {
        let key = |k: &str| format!("trunks[{i}].{k}");
        if t.name.is_empty() || !t.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err((
                key("name"),
                format!("trunk {}: a name of letters, digits, - _ .", i + 1),
            ));
        }
        if !names.insert(t.name.clone()) {
            return Err((key("name"), format!("`{}` names two trunks", t.name)));
        }
        match (&t.username, &t.password) {
            (Some(u), Some(p)) => {
                if u.is_empty() || u.contains(['"', '\\']) {
                    return Err((
                        key("username"),
                        format!("trunk `{}`: an empty or quoted username", t.name),
                    ));
                }
                if p.len() < 8 {
                    return Err((key("password"), format!("trunk `{}`: at least 8 characters", t.name)));
                }
                if !users.insert(u.clone()) {
                    return Err((
                        key("username"),
                        format!("trunk `{}`: another trunk has this username", t.name),
                    ));
                }
            }
            (None, None) => {}
            _ => {
                return Err((
                    key("password"),
                    format!("trunk `{}`: username and password go together", t.name),
                ));
            }
        }
        if t.digest_algorithms.is_empty() {
            return Err((
                key("digest_algorithms"),
                format!("trunk `{}`: SHA-256, MD5 or both", t.name),
            ));
        }
        if t.sources.is_empty() && t.username.is_none() {
            return Err((
                key("sources"),
                format!("trunk `{}` needs sources, or a username and password (or both)", t.name),
            ));
        }
        if let Some(c) = &t.country
            && crate::number::region(c).is_none()
        {
            return Err((
                key("country"),
                format!("trunk `{}`: `{c}` is not a country code like GB", t.name),
            ));
        }
        if t.strip_prefix.as_deref().is_some_and(|p| {
            p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '+' || c == '*' || c == '#')
        }) {
            return Err((key("strip_prefix"), format!("trunk `{}`: digits, + * or #", t.name)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_match_and_refuse_host_bits() {
        let c = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(c.contains("192.0.2.77".parse().unwrap()));
        assert!(!c.contains("192.0.3.1".parse().unwrap()));
        assert!(c.contains("::ffff:192.0.2.9".parse().unwrap()));
        let one = Cidr::parse("127.0.0.2").unwrap();
        assert_eq!(one.prefix, 32);
        assert!(one.contains("127.0.0.2".parse().unwrap()));
        assert!(!one.contains("127.0.0.3".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("192.0.2.1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("203.0.113.9".parse().unwrap())
        );
        assert!(Cidr::parse("::/0").unwrap().contains("::1".parse().unwrap()));
        assert!(
            Cidr::parse("192.0.2.1/24")
                .unwrap_err()
                .contains("did you mean 192.0.2.0/24")
        );
        assert!(Cidr::parse("192.0.2.0/33").is_err());
        assert!(Cidr::parse("example.com").is_err());
        assert_eq!(loopback_only().len(), 2);
    }
}
