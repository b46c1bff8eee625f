//! SDES: SRTP keys in SDP `a=crypto` attributes (RFC 4568).
//!
//! Owns: reading the far end's crypto attributes without trusting them (unknown suites,
//! wrong key lengths, MKIs, several keys, session parameters: that attribute is ignored, as
//! §6 says of what a party does not understand), choosing one for an answer, and writing
//! ours. The keys are only as secret as the signalling that carries them (§8.3): use TLS.
//!
//! Must not: print keys (they print as `(key)`), or decide the policy (the caller passes
//! whether SRTP is required).

pub use crate::media::session::{KeyMaterial, MasterKey, SrtpKeys, Suite};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use std::fmt::Write as _;

/// Crypto attributes kept per media section (more are ignored).
const MAX_CRYPTO_ATTRIBUTES: usize = 16;

/// One usable `a=crypto` attribute (RFC 4568 §9.1): a tag, a suite and one inline key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttribute {
    pub tag: u32,
    pub suite: Suite,
    pub key: MasterKey,
}

/// Our SRTP side of a call: the policy and the call's key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSrtp {
    /// Refuse streams without SRTP (policy "required"); else SRTP when offered ("optional").
    pub required: bool,
    pub material: KeyMaterial,
}

/// Parses the value of one `a=crypto:` attribute; None when we cannot use it.
///
/// `crypto:<tag> <crypto-suite> <key-params> [<session-params>]` (§9.1), with key-params
/// `inline:<key||salt base64>[|<lifetime>][|<MKI:length>]` (§6.1). We use one key per
/// attribute and no MKI (an MKI changes the packet format), and no session parameters: an
/// unknown session parameter makes the attribute unusable (§6.3), and the known ones
/// (UNENCRYPTED_SRTP, KDR, ...) weaken or change what we check.
pub fn parse_crypto(value: &str) -> Option<CryptoAttribute> {
    let mut fields = value.split_ascii_whitespace();
    let tag_text = fields.next()?;
    // tag = 1*9DIGIT (§9.1).
    if tag_text.is_empty() || tag_text.len() > 9 || !tag_text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let tag: u32 = tag_text.parse().ok()?;
    let suite = Suite::from_name(fields.next()?)?;
    let key_params = fields.next()?;
    if fields.next().is_some() || key_params.contains(';') {
        return None;
    }
    let inline = key_params.strip_prefix("inline:")?;
    let mut parts = inline.split('|');
    let encoded = parts.next()?;
    for extra in parts {
        // A lifetime ("2^31" or digits) is fine; an MKI ("1:4") is not for us.
        let lifetime = extra.strip_prefix("2^").unwrap_or(extra);
        if extra.contains(':') || lifetime.is_empty() || !lifetime.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    if encoded.len() > 128 {
        return None;
    }
    // Some peers drop the base64 padding.
    let bytes = STANDARD
        .decode(encoded)
        .or_else(|_| STANDARD_NO_PAD.decode(encoded))
        .ok()?;
    let key = MasterKey::new(suite, &bytes)?;
    Some(CryptoAttribute { tag, suite, key })
}

/// Reads one attribute into a media section's list, bounded.
pub fn push_crypto(list: &mut Vec<CryptoAttribute>, value: &str) {
    if list.len() < MAX_CRYPTO_ATTRIBUTES
        && let Some(attr) = parse_crypto(value)
        && !list.iter().any(|a| a.tag == attr.tag)
    {
        list.push(attr);
    }
}

/// The answerer's choice (§7.1.2): the first offered attribute we can use, with our key for
/// its suite. Every suite we parse is one we run, so the first usable one wins.
pub fn choose(offered: &[CryptoAttribute], local: &LocalSrtp) -> Option<SrtpKeys> {
    let first = offered.first()?;
    Some(SrtpKeys {
        suite: first.suite,
        tag: first.tag,
        ours: local.material.for_suite(first.suite),
        theirs: first.key.clone(),
    })
}

/// The offerer's view of an answer to our offer (§7.1.3): the answer's attribute must carry
/// one of the tags we offered, with the suite we offered under that tag.
pub fn accept_answer(answered: &[CryptoAttribute], local: &LocalSrtp) -> Option<SrtpKeys> {
    let a = answered.first()?;
    let (_, suite) = offered_tags().find(|(tag, _)| *tag == a.tag)?;
    (suite == a.suite).then(|| SrtpKeys {
        suite,
        tag: a.tag,
        ours: local.material.for_suite(suite),
        theirs: a.key.clone(),
    })
}

/// The tags of our offers: 1, 2, ... for [`Suite::OFFERED`] in order.
fn offered_tags() -> impl Iterator<Item = (u32, Suite)> {
    Suite::OFFERED.into_iter().zip(1u32..).map(|(s, t)| (t, s))
}

/// Writes `a=crypto` lines: one per suite we offer, or the one chosen in an answer.
pub fn write_offer(sdp: &mut String, local: &LocalSrtp) {
    for (tag, suite) in offered_tags() {
        write_line(sdp, tag, suite, &local.material.for_suite(suite));
    }
}

/// Writes the answer's single `a=crypto` line (§7.1.2: the offered tag, our key).
pub fn write_answer(sdp: &mut String, keys: &SrtpKeys) {
    write_line(sdp, keys.tag, keys.suite, &keys.ours);
}

fn write_line(sdp: &mut String, tag: u32, suite: Suite, key: &MasterKey) {
    let _ = write!(
        sdp,
        "a=crypto:{tag} {} inline:{}\r\n",
        suite.name(),
        STANDARD.encode(key.key_salt())
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material(fill: u8) -> KeyMaterial {
        KeyMaterial::from_bytes([fill; 46])
    }

    // RFC 4568 §9.1's example key (30 bytes: AES-128 key and salt).
    const RFC_KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    #[test]
    fn the_rfc_example_parses_with_its_lifetime_but_not_with_an_mki() {
        let with_lifetime = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20");
        let attr = parse_crypto(&with_lifetime).unwrap();
        assert_eq!((attr.tag, attr.suite), (1, Suite::AesCm128HmacSha1_80));
        assert_eq!(attr.key.key_salt().len(), 30);
        // RFC 4568 §9.1 itself writes "|2^20|1:4": an MKI, which we do not use.
        assert_eq!(parse_crypto(&format!("{with_lifetime}|1:4")), None);
    }

    #[test]
    fn unusable_attributes_are_ignored_not_errors() {
        for bad in [
            "",
            "1",
            "x AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
            "1234567890 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
            "1 F8_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
            "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=",
            "1 AES_CM_128_HMAC_SHA1_80 inline:***",
            "1 AES_CM_128_HMAC_SHA1_80 key:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz UNENCRYPTED_SRTP",
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz;inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
            // 46 bytes is an AES-256 key, not an AES-128 one.
            "1 AES_CM_128_HMAC_SHA1_80 inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(parse_crypto(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_answer_takes_the_first_usable_offer_and_answers_with_its_tag_and_our_key() {
        let mut offered = Vec::new();
        push_crypto(&mut offered, "7 NO_SUCH_SUITE inline:AAAA");
        push_crypto(&mut offered, &format!("3 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY}"));
        push_crypto(&mut offered, &format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}"));
        let local = LocalSrtp {
            required: true,
            material: material(9),
        };
        let keys = choose(&offered, &local).unwrap();
        assert_eq!((keys.tag, keys.suite), (3, Suite::AesCm128HmacSha1_32));
        assert_eq!(keys.ours.key_salt(), &[9u8; 30][..]);
        let mut line = String::new();
        write_answer(&mut line, &keys);
        assert_eq!(
            parse_crypto(line.trim_end().strip_prefix("a=crypto:").unwrap())
                .unwrap()
                .tag,
            3
        );
        assert!(!format!("{keys:?}").contains("CQkJ"), "keys print as (key)");
    }

    fn crypto_lines(sdp: &str) -> Vec<CryptoAttribute> {
        sdp.lines()
            .filter_map(|l| l.strip_prefix("a=crypto:").and_then(parse_crypto))
            .collect()
    }

    #[test]
    fn our_offer_round_trips_through_the_far_ends_answer() {
        let ours = LocalSrtp {
            required: false,
            material: material(1),
        };
        let mut offer = String::new();
        write_offer(&mut offer, &ours);
        let offered = crypto_lines(&offer);
        assert_eq!(offered.len(), Suite::OFFERED.len());
        let theirs = LocalSrtp {
            required: false,
            material: material(2),
        };
        let their_keys = choose(&offered, &theirs).unwrap();
        let mut answer = String::new();
        write_answer(&mut answer, &their_keys);
        let answered = crypto_lines(&answer);
        let our_keys = accept_answer(&answered, &ours).unwrap();
        assert_eq!(our_keys.ours, their_keys.theirs);
        assert_eq!(our_keys.theirs, their_keys.ours);
        // An answer under a tag we never offered, or with another suite, is not accepted.
        let mut forged = answered.clone();
        forged[0].tag = 9;
        assert_eq!(accept_answer(&forged, &ours), None);
        forged[0].tag = 1;
        forged[0].suite = Suite::AesCm128HmacSha1_32;
        assert_eq!(accept_answer(&forged, &ours), None);
    }
}
