//! SRTP and SRTCP (RFC 3711) for one stream, keyed by SDES (RFC 4568), over `rtc-srtp`.
//!
//! The crypto suites are the SDES names of RFC 4568 §6.2 (AES_CM_128_HMAC_SHA1_80/_32),
//! RFC 6188 (AES_256_CM_HMAC_SHA1_80/_32) and RFC 7714 §12 (AEAD_AES_128_GCM and _256_GCM).
//! A [`SrtpSession`] holds two one-way contexts: ours protects what we send under our master
//! key, theirs unprotects what arrives under the key the far end sent in its SDP.
//!
//! What arrives unauthenticated is dropped and counted, never an error of the call
//! (RFC 3711 §3.3 step 5). The library keeps per-SSRC state for any SSRC it is shown, before
//! the tag is checked; so that a flood of forged SSRCs cannot grow it, a session shows the
//! library at most [`MAX_STRANGER_SSRCS`] SSRCs that never authenticated.
//!
//! Keys never reach a log: [`MasterKey`] and [`KeyMaterial`] print as `(key)`.
//!
//! Must not: read a clock or touch a socket.

use bytes::BytesMut;
use rtc_crypto::RTCRandom;
use rtc_crypto::providers::{RingCrypto, RingRandom};
use rtc_shared::error::Error as SrtpLibError;
use rtc_srtp::context::Context;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;

/// Replay windows (RFC 3711 §3.3.2: at least 64).
const REPLAY_WINDOW: usize = 128;
/// SSRCs a session shows the library without one of them ever authenticating.
pub const MAX_STRANGER_SSRCS: usize = 16;
/// The longest master key plus salt of any suite (AES-256: 32 + 14).
const MAX_KEY_SALT: usize = 46;

/// An SDES crypto suite (RFC 4568 §6.2, RFC 6188 §7.1, RFC 7714 §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
    Aes256CmHmacSha1_80,
    Aes256CmHmacSha1_32,
    AeadAes128Gcm,
    AeadAes256Gcm,
}

impl Suite {
    /// What we offer, best first: the suite every SDES peer has, then GCM (one pass, a
    /// 16-byte tag), then the short tag.
    pub const OFFERED: [Suite; 3] = [
        Suite::AesCm128HmacSha1_80,
        Suite::AeadAes128Gcm,
        Suite::AesCm128HmacSha1_32,
    ];

    /// Every suite we run.
    pub const ALL: [Suite; 6] = [
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
        Suite::Aes256CmHmacSha1_80,
        Suite::Aes256CmHmacSha1_32,
        Suite::AeadAes128Gcm,
        Suite::AeadAes256Gcm,
    ];

    /// The suite's SDP name.
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::Aes256CmHmacSha1_80 => "AES_256_CM_HMAC_SHA1_80",
            Suite::Aes256CmHmacSha1_32 => "AES_256_CM_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            Suite::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// The suite an SDP name stands for (names are case-sensitive, RFC 4568 §9.1; we accept
    /// any case as peers differ).
    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.name().eq_ignore_ascii_case(name))
    }

    fn key_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 | Suite::AeadAes128Gcm => 16,
            Suite::Aes256CmHmacSha1_80 | Suite::Aes256CmHmacSha1_32 | Suite::AeadAes256Gcm => 32,
        }
    }

    fn salt_len(self) -> usize {
        match self {
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => 12,
            _ => 14,
        }
    }

    /// Bytes of the `inline:` value: master key then master salt (RFC 4568 §6.1).
    pub fn key_salt_len(self) -> usize {
        self.key_len() + self.salt_len()
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            Suite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            Suite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
            Suite::Aes256CmHmacSha1_80 => ProtectionProfile::Aes256CmHmacSha1_80,
            Suite::Aes256CmHmacSha1_32 => ProtectionProfile::Aes256CmHmacSha1_32,
            Suite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
            Suite::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
        }
    }
}

/// One master key and salt for one suite.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    bytes: [u8; MAX_KEY_SALT],
    len: u8,
}

impl MasterKey {
    /// A key of exactly `suite`'s length, else None.
    pub fn new(suite: Suite, key_salt: &[u8]) -> Option<MasterKey> {
        if key_salt.len() != suite.key_salt_len() {
            return None;
        }
        let mut bytes = [0u8; MAX_KEY_SALT];
        bytes[..key_salt.len()].copy_from_slice(key_salt);
        Some(MasterKey {
            bytes,
            len: key_salt.len() as u8,
        })
    }

    /// Master key then salt, as `inline:` carries them.
    pub fn key_salt(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    fn split(&self, suite: Suite) -> (&[u8], &[u8]) {
        self.key_salt().split_at(suite.key_len())
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(key)")
    }
}

/// A call's own key material: random, made once per call, cut to each suite's length. Every
/// offer and answer of the call gives the same key for a suite, so re-INVITEs keep the
/// session's keys (RFC 4568 §7.1.4 allows either) and descriptions compare equal.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial([u8; MAX_KEY_SALT]);

impl KeyMaterial {
    /// Fresh material from the operating system's random source; None if it failed.
    pub fn random() -> Option<KeyMaterial> {
        let mut bytes = [0u8; MAX_KEY_SALT];
        RingRandom.fill(&mut bytes).ok()?;
        Some(KeyMaterial(bytes))
    }

    /// Fixed material, for tests.
    pub fn from_bytes(bytes: [u8; MAX_KEY_SALT]) -> KeyMaterial {
        KeyMaterial(bytes)
    }

    /// Our master key for `suite`.
    pub fn for_suite(&self, suite: Suite) -> MasterKey {
        let n = suite.key_salt_len();
        let mut bytes = [0u8; MAX_KEY_SALT];
        bytes[..n].copy_from_slice(&self.0[..n]);
        MasterKey { bytes, len: n as u8 }
    }
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(key)")
    }
}

/// What offer/answer settled for SRTP (RFC 4568 §7): the suite, the tag of the chosen
/// crypto attribute, our key and the far end's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    pub suite: Suite,
    pub tag: u32,
    pub ours: MasterKey,
    pub theirs: MasterKey,
}

impl SrtpKeys {
    /// The same session seen from the far end (its key is ours): tests and benches run
    /// both ends of one stream.
    pub fn far_end(&self) -> SrtpKeys {
        SrtpKeys {
            ours: self.theirs.clone(),
            theirs: self.ours.clone(),
            ..self.clone()
        }
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Too short, or its tag did not verify (forged, corrupt, or plain RTP).
    Authentication,
    /// Seen before or behind the replay window (RFC 3711 §3.3.2).
    Replay,
    /// From one more SSRC that never authenticated, past [`MAX_STRANGER_SSRCS`].
    StrangerSsrc,
}

impl Rejected {
    pub fn label(self) -> &'static str {
        match self {
            Rejected::Authentication => "auth",
            Rejected::Replay => "replay",
            Rejected::StrangerSsrc => "stranger_ssrc",
        }
    }
}

/// Dropped packets of one session, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RejectCounts {
    pub authentication: u64,
    pub replay: u64,
    pub stranger_ssrc: u64,
}

impl RejectCounts {
    pub fn total(&self) -> u64 {
        self.authentication + self.replay + self.stranger_ssrc
    }

    /// Each reason with its count.
    pub fn by_reason(&self) -> [(Rejected, u64); 3] {
        [
            (Rejected::Authentication, self.authentication),
            (Rejected::Replay, self.replay),
            (Rejected::StrangerSsrc, self.stranger_ssrc),
        ]
    }

    /// Adds another session's counts (a re-keyed stream keeps its history).
    pub fn add(&mut self, other: RejectCounts) {
        self.authentication += other.authentication;
        self.replay += other.replay;
        self.stranger_ssrc += other.stranger_ssrc;
    }

    fn count(&mut self, r: Rejected) {
        match r {
            Rejected::Authentication => self.authentication += 1,
            Rejected::Replay => self.replay += 1,
            Rejected::StrangerSsrc => self.stranger_ssrc += 1,
        }
    }
}

/// The SSRCs shown to one direction of the library: those that authenticated, and strangers.
#[derive(Default)]
struct SsrcGate {
    known: Vec<u32>,
    strangers: Vec<u32>,
}

impl SsrcGate {
    /// May a packet from `ssrc` be tried?
    fn admit(&mut self, ssrc: u32) -> bool {
        if self.known.contains(&ssrc) || self.strangers.contains(&ssrc) {
            return true;
        }
        if self.strangers.len() >= MAX_STRANGER_SSRCS {
            return false;
        }
        self.strangers.push(ssrc);
        true
    }

    fn authenticated(&mut self, ssrc: u32) {
        if let Some(i) = self.strangers.iter().position(|s| *s == ssrc) {
            self.strangers.swap_remove(i);
            self.known.push(ssrc);
        }
    }
}

/// SRTP for one stream, both ways (see the module doc).
pub struct SrtpSession {
    keys: SrtpKeys,
    ours: Context,
    theirs: Context,
    rtp_gate: SsrcGate,
    rtcp_gate: SsrcGate,
    rejected: RejectCounts,
}

/// A context could not be made (a key of the wrong length: never from [`SrtpKeys`] built
/// by SDP, which checks lengths).
#[derive(Debug, thiserror::Error)]
#[error("SRTP context: {0}")]
pub struct SrtpSetupError(String);

impl SrtpSession {
    pub fn new(keys: &SrtpKeys) -> Result<SrtpSession, SrtpSetupError> {
        let context = |key: &MasterKey, replay: bool| {
            let (k, s) = key.split(keys.suite);
            let (rtp, rtcp) = if replay {
                (
                    Some(srtp_replay_protection(REPLAY_WINDOW)),
                    Some(srtcp_replay_protection(REPLAY_WINDOW)),
                )
            } else {
                (None, None)
            };
            Context::new(k, s, keys.suite.profile(), rtp, rtcp, &RingCrypto).map_err(|e| SrtpSetupError(e.to_string()))
        };
        Ok(SrtpSession {
            ours: context(&keys.ours, false)?,
            theirs: context(&keys.theirs, true)?,
            keys: keys.clone(),
            rtp_gate: SsrcGate::default(),
            rtcp_gate: SsrcGate::default(),
            rejected: RejectCounts::default(),
        })
    }

    /// The keys this session was made from (a re-INVITE with the same keys keeps it).
    pub fn keys(&self) -> &SrtpKeys {
        &self.keys
    }

    /// Packets dropped so far.
    pub fn rejected(&self) -> RejectCounts {
        self.rejected
    }

    /// An SRTP packet arrived: the plain RTP packet, or why it was dropped (and counted).
    pub fn unprotect_rtp(&mut self, packet: &[u8]) -> Result<BytesMut, Rejected> {
        self.unprotect(Layer::Rtp, packet)
    }

    /// An SRTCP packet arrived (RFC 3711 §3.4): the plain compound packet, or why not.
    pub fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<BytesMut, Rejected> {
        self.unprotect(Layer::Rtcp, packet)
    }

    /// A packet of `layer` arrived: the plain packet, or why it was dropped (and counted).
    pub fn unprotect(&mut self, layer: Layer, packet: &[u8]) -> Result<BytesMut, Rejected> {
        let result = self.try_unprotect(layer, packet);
        if let Err(r) = result {
            self.rejected.count(r);
        }
        result
    }

    fn try_unprotect(&mut self, layer: Layer, packet: &[u8]) -> Result<BytesMut, Rejected> {
        // The SSRC: after the RTP header's first 8 bytes, or the RTCP header's first 4.
        let at = match layer {
            Layer::Rtp => 8,
            Layer::Rtcp => 4,
        };
        let gate = gate_of(&mut self.rtp_gate, &mut self.rtcp_gate, layer);
        let ssrc = be32(packet, at).ok_or(Rejected::Authentication)?;
        if !gate.admit(ssrc) {
            return Err(Rejected::StrangerSsrc);
        }
        let plain = match layer {
            Layer::Rtp => self.theirs.decrypt_rtp(packet),
            Layer::Rtcp => self.theirs.decrypt_rtcp(packet),
        }
        .map_err(classify)?;
        gate.authenticated(ssrc);
        Ok(plain)
    }

    /// Protects an RTP packet we built; None only when the packet is not RTP or the key is
    /// spent (2^48 packets, RFC 3711 §9.2): nothing is sent then.
    pub fn protect_rtp(&mut self, packet: &[u8]) -> Option<BytesMut> {
        self.ours.encrypt_rtp(packet).ok()
    }

    /// Protects a compound RTCP packet we built (SRTCP, E flag set).
    pub fn protect_rtcp(&mut self, packet: &[u8]) -> Option<BytesMut> {
        self.ours.encrypt_rtcp(packet).ok()
    }

    /// Protects a packet of `layer` we built.
    pub fn protect(&mut self, layer: Layer, packet: &[u8]) -> Option<BytesMut> {
        match layer {
            Layer::Rtp => self.protect_rtp(packet),
            Layer::Rtcp => self.protect_rtcp(packet),
        }
    }
}

/// Which protocol a packet is (they keep separate SSRC state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Rtp,
    Rtcp,
}

fn gate_of<'a>(rtp: &'a mut SsrcGate, rtcp: &'a mut SsrcGate, layer: Layer) -> &'a mut SsrcGate {
    match layer {
        Layer::Rtp => rtp,
        Layer::Rtcp => rtcp,
    }
}

fn classify(e: SrtpLibError) -> Rejected {
    match e {
        SrtpLibError::SrtpSsrcDuplicated(..) | SrtpLibError::SrtcpSsrcDuplicated(..) => Rejected::Replay,
        _ => Rejected::Authentication,
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::packet;

    fn keys(suite: Suite, a: u8, b: u8) -> (SrtpKeys, SrtpKeys) {
        let ours = SrtpKeys {
            suite,
            tag: 1,
            ours: KeyMaterial::from_bytes([a; MAX_KEY_SALT]).for_suite(suite),
            theirs: KeyMaterial::from_bytes([b; MAX_KEY_SALT]).for_suite(suite),
        };
        let peer = ours.far_end();
        (ours, peer)
    }

    fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut pkt = Vec::new();
        packet::build(&mut pkt, 0, false, seq, seq as u32 * 160, ssrc, payload);
        pkt
    }

    #[test]
    fn every_suite_round_trips_rtp_and_rtcp_both_ways() {
        for suite in Suite::ALL {
            let (a, b) = keys(suite, 1, 2);
            let mut us = SrtpSession::new(&a).unwrap();
            let mut peer = SrtpSession::new(&b).unwrap();
            let plain = rtp(7, 0xabc, &[0x55; 160]);
            let wire = us.protect_rtp(&plain).unwrap();
            assert_ne!(&wire[12..172], &plain[12..], "{suite:?}: the payload is encrypted");
            assert_eq!(&peer.unprotect_rtp(&wire).unwrap()[..], &plain[..], "{suite:?}");
            let back = peer.protect_rtp(&rtp(9, 0xdef, b"hello")).unwrap();
            assert_eq!(&us.unprotect_rtp(&back).unwrap()[12..], b"hello");
            // A receiver report with no blocks: V=2, PT=201, length 1, SSRC.
            let rr = [0x80, 201, 0, 1, 0, 0, 0x0a, 0xbc];
            let srtcp = us.protect_rtcp(&rr).unwrap();
            assert_eq!(&peer.unprotect_rtcp(&srtcp).unwrap()[..], &rr[..], "{suite:?}");
            assert_eq!(us.rejected().total() + peer.rejected().total(), 0);
        }
    }

    #[test]
    fn forged_plain_and_replayed_packets_are_dropped_and_counted_and_the_stream_goes_on() {
        let (a, b) = keys(Suite::AesCm128HmacSha1_80, 3, 4);
        let mut us = SrtpSession::new(&a).unwrap();
        let mut peer = SrtpSession::new(&b).unwrap();
        let first = peer.protect_rtp(&rtp(100, 5, &[1; 160])).unwrap();
        assert!(us.unprotect_rtp(&first).is_ok());
        // Plain RTP where SRTP was agreed.
        assert_eq!(us.unprotect_rtp(&rtp(101, 5, &[1; 170])), Err(Rejected::Authentication));
        // One bit flipped.
        let mut forged = peer.protect_rtp(&rtp(102, 5, &[1; 160])).unwrap();
        forged[20] ^= 1;
        assert_eq!(us.unprotect_rtp(&forged), Err(Rejected::Authentication));
        // The same packet again.
        assert_eq!(us.unprotect_rtp(&first), Err(Rejected::Replay));
        // Truncated below the header.
        assert_eq!(us.unprotect_rtp(&first[..6]), Err(Rejected::Authentication));
        // A key of the wrong peer.
        let (_, other) = keys(Suite::AesCm128HmacSha1_80, 3, 9);
        let mut stranger = SrtpSession::new(&other).unwrap();
        let foreign = stranger.protect_rtp(&rtp(103, 5, &[1; 160])).unwrap();
        assert_eq!(us.unprotect_rtp(&foreign), Err(Rejected::Authentication));
        // The real stream still decrypts.
        let next = peer.protect_rtp(&rtp(104, 5, &[2; 160])).unwrap();
        assert_eq!(&us.unprotect_rtp(&next).unwrap()[12..], &[2; 160][..]);
        assert_eq!(
            us.rejected(),
            RejectCounts {
                authentication: 4,
                replay: 1,
                stranger_ssrc: 0
            }
        );
    }

    #[test]
    fn forged_ssrcs_are_bounded_but_the_real_one_keeps_flowing() {
        let (a, b) = keys(Suite::AeadAes128Gcm, 5, 6);
        let mut us = SrtpSession::new(&a).unwrap();
        let mut peer = SrtpSession::new(&b).unwrap();
        assert!(
            us.unprotect_rtp(&peer.protect_rtp(&rtp(1, 77, &[0; 160])).unwrap())
                .is_ok()
        );
        for ssrc in 0..1000u32 {
            let _ = us.unprotect_rtp(&rtp(1, 1_000 + ssrc, &[0; 180]));
        }
        let counts = us.rejected();
        assert_eq!(counts.authentication, MAX_STRANGER_SSRCS as u64);
        assert_eq!(counts.stranger_ssrc, 1000 - MAX_STRANGER_SSRCS as u64);
        assert!(
            us.unprotect_rtp(&peer.protect_rtp(&rtp(2, 77, &[0; 160])).unwrap())
                .is_ok()
        );
    }

    #[test]
    fn keys_never_print() {
        let (a, _) = keys(Suite::AesCm128HmacSha1_80, 0x41, 0x42);
        let text = format!("{a:?} {:?}", KeyMaterial::from_bytes([0x41; MAX_KEY_SALT]));
        assert!(
            !text.contains("65") && !text.contains("41") && text.contains("(key)"),
            "{text}"
        );
    }

    #[test]
    fn material_is_random_and_cut_to_each_suite() {
        let a = KeyMaterial::random().unwrap();
        let b = KeyMaterial::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.for_suite(Suite::AeadAes128Gcm).key_salt().len(), 28);
        assert_eq!(a.for_suite(Suite::Aes256CmHmacSha1_80).key_salt().len(), 46);
        assert_eq!(
            a.for_suite(Suite::AesCm128HmacSha1_80).key_salt(),
            &a.for_suite(Suite::Aes256CmHmacSha1_80).key_salt()[..30]
        );
        assert_eq!(
            Suite::from_name("aes_cm_128_hmac_sha1_32"),
            Some(Suite::AesCm128HmacSha1_32)
        );
        assert_eq!(Suite::from_name("F8_128_HMAC_SHA1_80"), None);
    }
}
