//! SDP (RFC 4566) and the offer/answer model (RFC 3264), for audio.
//!
//! Owns: parsing session descriptions from peers without trusting them (huge payload
//! numbers, NUL bytes, missing `c=` lines, absurd lengths are errors or ignored, never
//! panics), choosing a codec in our preference order, and writing the answer.
//!
//! Must not: open sockets or allocate ports; the caller passes the local RTP address in.

use crate::media::session::SrtpKeys;
pub use crate::media::session::{Codec, Direction, NegotiatedMedia};
pub use crate::sip::sdes::LocalSrtp;
use crate::sip::sdes::{self, CryptoAttribute};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// Largest SDP body we parse.
pub const MAX_SDP_BYTES: usize = 16 * 1024;

impl Codec {
    fn static_pt(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::G722 => Some(9),
            Codec::Opus => None,
        }
    }

    fn rtpmap_clock(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            _ => 8_000,
        }
    }
}

/// `rtp.codecs` as negotiation offers them.
impl From<crate::config::CodecName> for Codec {
    fn from(name: crate::config::CodecName) -> Codec {
        use crate::config::CodecName;
        match name {
            CodecName::Pcmu => Codec::Pcmu,
            CodecName::Pcma => Codec::Pcma,
            CodecName::G722 => Codec::G722,
            CodecName::Opus => Codec::Opus,
        }
    }
}

impl Direction {
    fn attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// Why a description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is not valid UTF-8 text")]
    NotText,
    #[error("SDP too large")]
    TooLarge,
    #[error("SDP malformed at line {line}: {reason}")]
    Malformed { line: usize, reason: &'static str },
    #[error("no acceptable audio stream (codecs or transport)")]
    NoCommonCodec,
    #[error("no connection address for the audio stream")]
    NoConnection,
    /// RFC 4568: SRTP was required and not offered usably, or offered (RTP/SAVP) and off.
    #[error("no audio stream meets the SRTP policy")]
    SrtpPolicy,
}

impl SdpError {
    /// The SIP status that answers this error (RFC 3261 §21.4.26: 488; 400 when unparseable).
    pub fn status(&self) -> u16 {
        match self {
            SdpError::NoCommonCodec | SdpError::NoConnection | SdpError::SrtpPolicy => 488,
            _ => 400,
        }
    }
}

/// An `a=rtpmap` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: u8,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    pub media: String,
    pub port: u16,
    pub proto: String,
    /// Formats as listed, payload types 0-127 only (others are ignored).
    pub payload_types: Vec<u8>,
    /// Raw format tokens as offered (echoed when rejecting the stream).
    pub raw_formats: Vec<String>,
    pub connection: Option<IpAddr>,
    pub rtpmaps: Vec<(u8, RtpMap)>,
    pub fmtps: Vec<(u8, String)>,
    pub direction: Option<Direction>,
    pub ptime: Option<u32>,
    /// Usable `a=crypto` attributes in offered order (RFC 4568 §9.1; others are ignored).
    pub crypto: Vec<CryptoAttribute>,
}

impl MediaSection {
    fn rtpmap(&self, pt: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|(p, _)| *p == pt).map(|(_, m)| m)
    }

    fn fmtp(&self, pt: u8) -> Option<&str> {
        self.fmtps.iter().find(|(p, _)| *p == pt).map(|(_, f)| f.as_str())
    }
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin_session_id: String,
    pub origin_version: u64,
    pub connection: Option<IpAddr>,
    pub direction: Option<Direction>,
    pub media: Vec<MediaSection>,
}

impl SessionDescription {
    /// Parses SDP text (RFC 4566 §5). Unknown lines and attributes are ignored; lines that
    /// we use are validated.
    pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
        if body.len() > MAX_SDP_BYTES {
            return Err(SdpError::TooLarge);
        }
        let text = std::str::from_utf8(body).map_err(|_| SdpError::NotText)?;
        // RFC 4566 §5: no field may hold a NUL (nor a lone CR, but CRs end lines here).
        if let Some(at) = body.iter().position(|b| *b == 0) {
            let line = body[..at].iter().filter(|b| **b == b'\n').count() + 1;
            return Err(SdpError::Malformed {
                line,
                reason: "NUL byte",
            });
        }
        let mut sd = SessionDescription {
            origin_session_id: String::new(),
            origin_version: 0,
            connection: None,
            direction: None,
            media: Vec::new(),
        };
        let mut saw_version = false;
        for (idx, raw) in text.split('\n').enumerate() {
            let line_no = idx + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.is_empty() {
                continue;
            }
            let bad = |reason| SdpError::Malformed { line: line_no, reason };
            let (kind, value) = line.split_once('=').ok_or(bad("no '='"))?;
            if kind.len() != 1 {
                return Err(bad("type is not one character"));
            }
            match kind {
                "v" => {
                    if value.trim() != "0" {
                        return Err(bad("version is not 0"));
                    }
                    saw_version = true;
                }
                "o" => {
                    let f: Vec<&str> = value.split_whitespace().collect();
                    if f.len() != 6 {
                        return Err(bad("o= needs 6 fields"));
                    }
                    sd.origin_session_id = f[1].to_string();
                    sd.origin_version = f[2].parse().unwrap_or(0);
                }
                "c" => {
                    let addr = parse_connection(value).ok_or(bad("bad c= line"))?;
                    match sd.media.last_mut() {
                        Some(m) => m.connection = Some(addr),
                        None => sd.connection = Some(addr),
                    }
                }
                "m" => {
                    let f: Vec<&str> = value.split_whitespace().collect();
                    if f.len() < 4 {
                        return Err(bad("m= needs media, port, proto and formats"));
                    }
                    let port_field = f[1].split('/').next().unwrap_or("");
                    let port: u16 = port_field.parse().map_err(|_| bad("bad port"))?;
                    let mut payload_types = Vec::new();
                    for fmt in &f[3..] {
                        if let Ok(pt) = fmt.parse::<u32>()
                            && pt <= 127
                            && !payload_types.contains(&(pt as u8))
                        {
                            payload_types.push(pt as u8);
                        }
                    }
                    if sd.media.len() >= 16 {
                        return Err(bad("too many media sections"));
                    }
                    sd.media.push(MediaSection {
                        media: f[0].to_string(),
                        port,
                        proto: f[2].to_string(),
                        payload_types,
                        raw_formats: f[3..].iter().take(64).map(|s| s.to_string()).collect(),
                        connection: None,
                        rtpmaps: Vec::new(),
                        fmtps: Vec::new(),
                        direction: None,
                        ptime: None,
                        crypto: Vec::new(),
                    });
                }
                "a" => {
                    let (name, val) = match value.split_once(':') {
                        Some((n, v)) => (n, Some(v)),
                        None => (value, None),
                    };
                    let dir = match name {
                        "sendrecv" => Some(Direction::SendRecv),
                        "sendonly" => Some(Direction::SendOnly),
                        "recvonly" => Some(Direction::RecvOnly),
                        "inactive" => Some(Direction::Inactive),
                        _ => None,
                    };
                    let Some(m) = sd.media.last_mut() else {
                        if dir.is_some() {
                            sd.direction = dir;
                        }
                        continue;
                    };
                    if dir.is_some() {
                        m.direction = dir;
                        continue;
                    }
                    match (name, val) {
                        ("rtpmap", Some(v)) => {
                            if let Some((pt, map)) = parse_rtpmap(v)
                                && m.rtpmaps.len() < 64
                            {
                                m.rtpmaps.push((pt, map));
                            }
                        }
                        ("fmtp", Some(v)) => {
                            if let Some((pt, params)) = v.split_once(' ') {
                                let ok = params.bytes().all(|b| b >= b' ' && b != 0x7f);
                                if let (Ok(pt), true) = (pt.parse::<u8>(), ok)
                                    && pt <= 127
                                    && m.fmtps.len() < 64
                                {
                                    m.fmtps.push((pt, params.trim().to_string()));
                                }
                            }
                        }
                        ("crypto", Some(v)) => sdes::push_crypto(&mut m.crypto, v),
                        ("ptime", Some(v)) => {
                            m.ptime = v.trim().parse().ok().filter(|p| (10..=120).contains(p));
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if !saw_version {
            return Err(SdpError::Malformed {
                line: 1,
                reason: "missing v=0",
            });
        }
        Ok(sd)
    }
}

fn parse_connection(value: &str) -> Option<IpAddr> {
    let f: Vec<&str> = value.split_whitespace().collect();
    if f.len() != 3 || f[0] != "IN" {
        return None;
    }
    // Multicast TTL and count suffixes (`/127/3`) are not for us.
    let addr = f[2].split('/').next()?;
    match f[1] {
        "IP4" | "IP6" => addr.parse().ok(),
        _ => None,
    }
}

fn parse_rtpmap(v: &str) -> Option<(u8, RtpMap)> {
    let (pt, rest) = v.trim().split_once(' ')?;
    let pt: u8 = pt.parse().ok().filter(|p| *p <= 127)?;
    let mut parts = rest.trim().split('/');
    let encoding = parts.next()?.to_string();
    let clock_rate: u32 = parts.next()?.parse().ok()?;
    let channels: u8 = match parts.next() {
        Some(c) => c.parse().ok()?,
        None => 1,
    };
    if encoding.is_empty() || encoding.len() > 32 {
        return None;
    }
    Some((
        pt,
        RtpMap {
            encoding,
            clock_rate,
            channels,
        },
    ))
}

/// Our side of the media: where we receive RTP and which codecs we prefer, best first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    pub rtp: SocketAddr,
    pub codecs: Vec<Codec>,
    /// `o=` session id and version (RFC 4566 §5.2; the version grows with every change).
    pub session_id: u64,
    pub session_version: u64,
    /// SRTP policy and keys; None when SRTP is off (then RTP/SAVP offers are refused).
    pub srtp: Option<LocalSrtp>,
}

/// The profiles of RFC 3551 (plain) and RFC 3711 §12 (SRTP) that we speak.
const PLAIN: &str = "RTP/AVP";
const SECURE: &str = "RTP/SAVP";

/// Which side of offer/answer we are when a description comes in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// It is an offer; we answer it.
    Answerer,
    /// It answers our offer (RFC 3264 §7): the crypto tag must be one we offered.
    Offerer,
}

/// The SRTP keys a stream gets under our policy (None: plain RTP), or Err when the stream
/// cannot be taken: RTP/SAVP without a key we can use or with SRTP off, plain RTP where SRTP
/// is required. Crypto attributes in an RTP/AVP offer are taken when SRTP is on (the "best
/// effort" SRTP many SBCs and phones offer): the answer's crypto line tells the offerer.
fn stream_srtp(m: &MediaSection, local: &LocalMedia, role: Role) -> Result<Option<SrtpKeys>, ()> {
    let secure = m.proto.eq_ignore_ascii_case(SECURE);
    let Some(policy) = &local.srtp else {
        return if secure { Err(()) } else { Ok(None) };
    };
    let keys = match role {
        Role::Answerer => sdes::choose(&m.crypto, policy),
        Role::Offerer => sdes::accept_answer(&m.crypto, policy),
    };
    match keys {
        Some(k) => Ok(Some(k)),
        None if secure || policy.required => Err(()),
        None => Ok(None),
    }
}

/// Answers an offer (RFC 3264 §6): the first audio stream over RTP/AVP or RTP/SAVP with a
/// codec we share that meets the SRTP policy is accepted, every other stream is rejected with
/// port 0 (§6, §8.2). The answer keeps the offered profile and carries our key for the
/// chosen crypto attribute (RFC 4568 §7.1.2).
pub fn answer(offer: &SessionDescription, local: &LocalMedia) -> Result<(String, NegotiatedMedia), SdpError> {
    let (index, neg) = negotiate(offer, local, Role::Answerer)?;
    let mut sdp = session_header(local);
    for (i, m) in offer.media.iter().enumerate() {
        if i == index {
            write_audio_section(&mut sdp, local.rtp.port(), &m.proto, &neg);
        } else {
            // Rejected stream: same media and proto, port 0, formats echoed (RFC 3264 §6).
            let fmts: Vec<String> = m
                .raw_formats
                .iter()
                .map(|f| token(f))
                .filter(|f| !f.is_empty())
                .collect();
            let fmts = if fmts.is_empty() {
                "0".to_string()
            } else {
                fmts.join(" ")
            };
            let _ = write!(
                sdp,
                "m={} 0 {} {fmts}\r\n",
                or_dash(token(&m.media)),
                or_dash(token(&m.proto))
            );
        }
    }
    Ok((sdp, neg))
}

/// Reads the answer to an offer of ours (RFC 3264 §7, RFC 4568 §7.1.3).
pub fn accept_answer(answer: &SessionDescription, local: &LocalMedia) -> Result<NegotiatedMedia, SdpError> {
    negotiate(answer, local, Role::Offerer).map(|(_, neg)| neg)
}

/// Picks the stream to use and what it settles.
fn negotiate(sd: &SessionDescription, local: &LocalMedia, role: Role) -> Result<(usize, NegotiatedMedia), SdpError> {
    let mut saw_connectionless = false;
    let mut refused_by_srtp = false;
    for (i, m) in sd.media.iter().enumerate() {
        let profile_known = m.proto.eq_ignore_ascii_case(PLAIN) || m.proto.eq_ignore_ascii_case(SECURE);
        if m.media != "audio" || m.port == 0 || !profile_known {
            continue;
        }
        let Some((codec, pt)) = pick_codec(m, &local.codecs) else {
            continue;
        };
        let Ok(srtp) = stream_srtp(m, local, role) else {
            refused_by_srtp = true;
            continue;
        };
        let Some(conn) = m.connection.or(sd.connection) else {
            saw_connectionless = true;
            continue;
        };
        let offered_dir = m.direction.or(sd.direction).unwrap_or(Direction::SendRecv);
        // RFC 3264 §8.4: c=0.0.0.0 is the RFC 2543 way of putting a call on hold.
        let remote_rtp = (!conn.is_unspecified()).then(|| SocketAddr::new(conn, m.port));
        let telephone_event = m.payload_types.iter().copied().find(|pt| {
            m.rtpmap(*pt).is_some_and(|r| {
                r.encoding.eq_ignore_ascii_case("telephone-event") && r.clock_rate == codec_event_clock(codec)
            })
        });
        // Our direction mirrors theirs (§6.1), in an offer or an answer alike.
        let direction = if remote_rtp.is_none() && offered_dir == Direction::SendRecv {
            Direction::RecvOnly
        } else {
            offered_dir.answer_to()
        };
        return Ok((
            i,
            NegotiatedMedia {
                remote_rtp,
                codec,
                payload_type: pt,
                telephone_event,
                ptime_ms: m.ptime.unwrap_or(20),
                direction,
                fmtp: m.fmtp(pt).map(str::to_string),
                srtp: srtp.map(Box::new),
            },
        ));
    }
    Err(if refused_by_srtp {
        SdpError::SrtpPolicy
    } else if saw_connectionless {
        SdpError::NoConnection
    } else {
        SdpError::NoCommonCodec
    })
}

/// Writes an offer with every local codec (for a re-INVITE that arrived without SDP, RFC 3261
/// §14.2, or an outbound call). SRTP "required" offers RTP/SAVP, "optional" offers RTP/AVP
/// with crypto attributes (best effort), so a peer without SRTP still answers.
pub fn offer(local: &LocalMedia, direction: Direction) -> String {
    let mut sdp = session_header(local);
    let mut pts = Vec::new();
    let mut maps = String::new();
    for codec in &local.codecs {
        let pt = codec.static_pt().unwrap_or(111);
        pts.push(pt.to_string());
        let _ = write!(maps, "a=rtpmap:{pt} {}/{}", codec.encoding_name(), codec.rtpmap_clock());
        if *codec == Codec::Opus {
            maps.push_str("/2\r\na=fmtp:111 useinbandfec=1\r\n");
        } else {
            maps.push_str("\r\n");
        }
    }
    pts.push("101".to_string());
    let proto = match &local.srtp {
        Some(p) if p.required => SECURE,
        _ => PLAIN,
    };
    let _ = write!(sdp, "m=audio {} {proto} {}\r\n{maps}", local.rtp.port(), pts.join(" "));
    let _ = write!(
        sdp,
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na={}\r\n",
        direction.attr()
    );
    if let Some(policy) = &local.srtp {
        sdes::write_offer(&mut sdp, policy);
    }
    sdp
}

fn codec_event_clock(codec: Codec) -> u32 {
    match codec {
        Codec::Opus => 48_000,
        _ => 8_000,
    }
}

fn pick_codec(m: &MediaSection, prefs: &[Codec]) -> Option<(Codec, u8)> {
    for codec in prefs {
        for &pt in &m.payload_types {
            let matches = match m.rtpmap(pt) {
                Some(map) => {
                    map.encoding.eq_ignore_ascii_case(codec.encoding_name())
                        && map.clock_rate == codec.rtpmap_clock()
                        && (*codec != Codec::Opus || map.channels == 2)
                }
                // RFC 3551 static payload types need no rtpmap.
                None => codec.static_pt() == Some(pt),
            };
            if matches {
                return Some((*codec, pt));
            }
        }
    }
    None
}

fn session_header(local: &LocalMedia) -> String {
    let ip = local.rtp.ip();
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no=tolk {} {} IN {family} {ip}\r\ns=tolk\r\nc=IN {family} {ip}\r\nt=0 0\r\n",
        local.session_id, local.session_version
    )
}

fn write_audio_section(sdp: &mut String, port: u16, offered_proto: &str, neg: &NegotiatedMedia) {
    let mut fmts = neg.payload_type.to_string();
    if let Some(te) = neg.telephone_event {
        let _ = write!(fmts, " {te}");
    }
    let proto = if offered_proto.eq_ignore_ascii_case(SECURE) {
        SECURE
    } else {
        PLAIN
    };
    let _ = write!(sdp, "m=audio {port} {proto} {fmts}\r\n");
    let channels = if neg.codec == Codec::Opus { "/2" } else { "" };
    let _ = write!(
        sdp,
        "a=rtpmap:{} {}/{}{channels}\r\n",
        neg.payload_type,
        neg.codec.encoding_name(),
        neg.codec.rtpmap_clock()
    );
    if neg.codec == Codec::Opus {
        let _ = write!(sdp, "a=fmtp:{} useinbandfec=1\r\n", neg.payload_type);
    }
    if let Some(te) = neg.telephone_event {
        let _ = write!(
            sdp,
            "a=rtpmap:{te} telephone-event/{}\r\na=fmtp:{te} 0-16\r\n",
            codec_event_clock(neg.codec)
        );
    }
    let _ = write!(sdp, "a=ptime:{}\r\na={}\r\n", neg.ptime_ms, neg.direction.attr());
    if let Some(keys) = &neg.srtp {
        sdes::write_answer(sdp, keys);
    }
}

/// Keeps an echoed token printable, single-line and without spaces (a peer's control
/// characters would otherwise leave an empty field and an `m=` line that does not parse:
/// found by the `sdp` fuzz target).
fn token(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_graphic()).take(64).collect()
}

fn or_dash(t: String) -> String {
    if t.is_empty() { "-".into() } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalMedia {
        LocalMedia {
            rtp: "127.0.0.1:20000".parse().unwrap(),
            codecs: vec![Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus],
            session_id: 42,
            session_version: 1,
            srtp: None,
        }
    }

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n\
m=audio 30000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n";

    fn sd(s: &str) -> SessionDescription {
        SessionDescription::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn answer_uses_our_preference_order() {
        let (text, neg) = answer(&sd(OFFER), &local()).unwrap();
        assert_eq!(
            neg.codec,
            Codec::Pcmu,
            "PCMU is our first choice even though offered second"
        );
        assert_eq!(neg.telephone_event, Some(101));
        assert_eq!(neg.remote_rtp, Some("192.0.2.5:30000".parse().unwrap()));
        assert!(text.contains("m=audio 20000 RTP/AVP 0 101\r\n"), "{text}");
        assert!(text.contains("a=sendrecv"));
        // The answer parses back.
        sd(&text);
    }

    #[test]
    fn opus_needs_two_channels_in_rtpmap() {
        let offer = "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\na=fmtp:96 minptime=10;useinbandfec=1\r\n";
        let (text, neg) = answer(&sd(offer), &local()).unwrap();
        assert_eq!(neg.codec, Codec::Opus);
        assert_eq!(neg.payload_type, 96);
        assert_eq!(neg.fmtp.as_deref(), Some("minptime=10;useinbandfec=1"));
        assert!(text.contains("a=rtpmap:96 opus/48000/2"));
        let mono = offer.replace("opus/48000/2", "opus/48000");
        assert_eq!(answer(&sd(&mono), &local()).unwrap_err(), SdpError::NoCommonCodec);
    }

    #[test]
    fn g722_matches_on_its_8000_clock() {
        let offer = OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 9");
        let local = LocalMedia {
            codecs: vec![Codec::G722],
            ..local()
        };
        assert_eq!(answer(&sd(&offer), &local).unwrap().1.codec, Codec::G722);
    }

    #[test]
    fn nothing_in_common_is_488() {
        let offer = OFFER
            .replace("RTP/AVP 8 0 101", "RTP/AVP 18")
            .replace("a=rtpmap:101 telephone-event/8000\r\n", "");
        let err = answer(&sd(&offer), &local()).unwrap_err();
        assert_eq!(err.status(), 488);
    }

    #[test]
    fn hold_directions_are_answered_per_rfc3264() {
        for (offered, answered) in [
            ("sendonly", "recvonly"),
            ("recvonly", "sendonly"),
            ("inactive", "inactive"),
        ] {
            let offer = format!("{OFFER}a={offered}\r\n");
            let (text, neg) = answer(&sd(&offer), &local()).unwrap();
            assert!(text.contains(&format!("a={answered}")), "{offered}: {text}");
            assert_eq!(neg.direction.attr(), answered);
        }
    }

    #[test]
    fn zero_address_is_old_style_hold() {
        // RFC 3264 §8.4
        let offer = OFFER.replace("c=IN IP4 192.0.2.5", "c=IN IP4 0.0.0.0");
        let (_, neg) = answer(&sd(&offer), &local()).unwrap();
        assert!(neg.on_hold());
        assert_eq!(neg.remote_rtp, None);
    }

    #[test]
    fn other_streams_are_rejected_with_port_zero() {
        let offer = format!("{OFFER}m=video 30002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n");
        let (text, _) = answer(&sd(&offer), &local()).unwrap();
        assert!(text.contains("m=video 0 RTP/AVP 96"), "{text}");
    }

    #[test]
    fn known_crash_inputs_are_errors_not_panics() {
        // Huge payload numbers are ignored; nothing else offered: 488.
        let huge = OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 4294967296 99999999999999999999 256");
        assert!(answer(&sd(&huge), &local()).is_err());
        // A NUL byte anywhere (RFC 4566 §5): malformed, 400, with its line.
        let nul = OFFER.replace("a=fmtp:101 0-15", "a=fmtp:101 0-15\0\0");
        let err = SessionDescription::parse(nul.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            SdpError::Malformed {
                line: 8,
                reason: "NUL byte"
            }
        );
        assert_eq!(err.status(), 400);
        // Missing c= everywhere: 488, not a panic.
        let noc = OFFER.replace("c=IN IP4 192.0.2.5\r\n", "");
        assert_eq!(answer(&sd(&noc), &local()).unwrap_err(), SdpError::NoConnection);
        // Garbage.
        assert!(SessionDescription::parse(b"\xff\xfe").is_err());
        assert!(SessionDescription::parse(b"hello").is_err());
        assert!(SessionDescription::parse(b"v=0\r\nm=audio\r\n").is_err());
        assert!(SessionDescription::parse(b"v=0\r\nm=audio 99999 RTP/AVP 0\r\n").is_err());
        assert!(SessionDescription::parse(&vec![b'a'; MAX_SDP_BYTES + 1]).is_err());
    }

    #[test]
    fn a_rejected_stream_of_control_characters_is_echoed_as_a_line_that_parses() {
        // From the sdp fuzz target: a second m= line whose proto is a lone U+0001.
        let offer = format!("{OFFER}m=aud 1 \u{1} 192.0.2.5\r\nm=video 2 \u{1} \u{1}\r\n");
        let (text, _) = answer(&sd(&offer), &local()).unwrap();
        let parsed = sd(&text);
        assert_eq!(parsed.media.len(), 3, "{text}");
        assert!(
            text.contains("m=aud 0 - 192.0.2.5\r\n") && text.contains("m=video 0 - 0\r\n"),
            "{text}"
        );
    }

    #[test]
    fn offer_lists_every_local_codec() {
        let text = offer(&local(), Direction::SendRecv);
        let parsed = sd(&text);
        assert_eq!(parsed.media[0].payload_types, vec![0, 8, 9, 111, 101]);
    }

    // --- SRTP (RFC 4568) ---

    const KEY30: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    fn with_srtp(required: bool) -> LocalMedia {
        LocalMedia {
            srtp: Some(LocalSrtp {
                required,
                material: crate::sip::sdes::KeyMaterial::from_bytes([5; 46]),
            }),
            ..local()
        }
    }

    fn savp_offer(crypto: &str) -> String {
        OFFER.replace("RTP/AVP 8 0 101", "RTP/SAVP 8 0 101") + crypto
    }

    #[test]
    fn an_savp_offer_is_answered_in_savp_with_the_offered_tag_and_our_key() {
        let offer = savp_offer(&format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^20|1:4\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}\r\n"
        ));
        for required in [false, true] {
            let (text, neg) = answer(&sd(&offer), &with_srtp(required)).unwrap();
            assert!(text.contains("m=audio 20000 RTP/SAVP 0 101\r\n"), "{text}");
            // Tag 1 carries an MKI, which we do not use: tag 2 is chosen.
            let keys = neg.srtp.expect("SRTP negotiated");
            assert_eq!((keys.tag, keys.suite.name()), (2, "AES_CM_128_HMAC_SHA1_32"));
            let answered = sd(&text);
            assert_eq!(answered.media[0].crypto.len(), 1);
            assert_eq!(answered.media[0].crypto[0].tag, 2);
            assert_eq!(answered.media[0].crypto[0].key, keys.ours);
            assert_ne!(keys.ours, keys.theirs);
        }
    }

    #[test]
    fn srtp_policy_refusals_are_488() {
        let savp = savp_offer(&format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}\r\n"));
        // SRTP off: RTP/SAVP cannot be taken.
        let err = answer(&sd(&savp), &local()).unwrap_err();
        assert_eq!((err.clone(), err.status()), (SdpError::SrtpPolicy, 488));
        // RTP/SAVP with no usable key (only an MKI one) is refused even when SRTP is on.
        let mki = savp_offer(&format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^20|1:4\r\n"
        ));
        assert_eq!(answer(&sd(&mki), &with_srtp(false)).unwrap_err(), SdpError::SrtpPolicy);
        // SRTP required: plain RTP is refused.
        assert_eq!(answer(&sd(OFFER), &with_srtp(true)).unwrap_err(), SdpError::SrtpPolicy);
    }

    #[test]
    fn optional_srtp_answers_plain_offers_plainly_and_best_effort_offers_with_keys() {
        let (text, neg) = answer(&sd(OFFER), &with_srtp(false)).unwrap();
        assert_eq!(neg.srtp, None);
        assert!(!text.contains("a=crypto"), "{text}");
        assert!(text.contains("RTP/AVP 0 101"), "{text}");
        // Crypto in RTP/AVP (best-effort SRTP): taken, answered in RTP/AVP with our key.
        let best_effort = format!("{OFFER}a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}\r\n");
        let (text, neg) = answer(&sd(&best_effort), &with_srtp(false)).unwrap();
        assert_eq!(neg.srtp.map(|k| k.tag), Some(3));
        assert!(text.contains("RTP/AVP 0 101") && text.contains("a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:"));
        // With SRTP off, the crypto line of a plain offer is ignored.
        assert_eq!(answer(&sd(&best_effort), &local()).unwrap().1.srtp, None);
    }

    #[test]
    fn our_srtp_offer_and_the_answer_to_it_agree_on_keys() {
        let ours = with_srtp(true);
        let text = offer(&ours, Direction::SendRecv);
        assert!(text.contains("m=audio 20000 RTP/SAVP "), "{text}");
        let offered = sd(&text);
        assert_eq!(offered.media[0].crypto.len(), 3);
        // The far end answers it with its own key material.
        let far = LocalMedia {
            rtp: "192.0.2.9:4000".parse().unwrap(),
            srtp: Some(LocalSrtp {
                required: true,
                material: crate::sip::sdes::KeyMaterial::from_bytes([6; 46]),
            }),
            ..local()
        };
        let (their_answer, theirs) = answer(&offered, &far).unwrap();
        let mine = accept_answer(&sd(&their_answer), &ours).unwrap();
        let (a, b) = (mine.srtp.unwrap(), theirs.srtp.unwrap());
        assert_eq!((a.ours, a.theirs), (b.theirs, b.ours));
        // Optional SRTP offers RTP/AVP with the same crypto lines.
        let text = offer(&with_srtp(false), Direction::SendRecv);
        assert!(text.contains("RTP/AVP ") && text.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80"));
        // An answer without crypto to a required offer is not accepted.
        let plain_answer = their_answer.replace("RTP/SAVP", "RTP/AVP");
        let plain_answer: String = plain_answer
            .lines()
            .filter(|l| !l.starts_with("a=crypto"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        assert_eq!(
            accept_answer(&sd(&plain_answer), &ours).unwrap_err(),
            SdpError::SrtpPolicy
        );
    }
}
