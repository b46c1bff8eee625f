//! One call's RTP stream, both directions, sans-IO: source latching, RFC 3550 statistics,
//! the jitter buffer and codec, RFC 4733 and in-band digits, RTCP, and the RTP send state
//! (SSRC, sequence, media-clock timestamps). Whoever holds the stream drives it: the call's
//! leg task while the call is on its own (prompts, echo), a room's mixer thread while the
//! call is in a room. The stream moves between them whole, so the far end sees one continuous
//! RTP session (same SSRC, sequence numbers in order).
//!
//! Owns: the stream's state. Time comes in as an `Instant` argument (and the wallclock once,
//! as an NTP timestamp at creation, for RTCP), randomness from a seed; what the stream finds
//! (digits, digits sent) comes out through [`MediaStream::poll_event`]. Sockets are passed in
//! per call as a [`Datagram`]. Must not: read a clock, own a socket, or know about calls,
//! rooms or SIP.
//!
//! SRTP (RFC 3711), when negotiated, wraps the wire: what arrives is authenticated and
//! decrypted before anything else looks at it (latching included, so a stranger without the
//! key can neither latch nor inject), what leaves is protected last. Packets that fail are
//! dropped and counted ([`StreamSummary::srtp_rejected`]); nothing goes out in the clear on
//! a stream that negotiated SRTP.

use crate::media::codec::opus_packet::{self, Activity};
use crate::media::codec::pair::{CodecPair, codec_pair, opus_pair};
use crate::media::dtmf::inband::InbandDetector;
use crate::media::dtmf::rfc4733::{DigitEvent, DigitSequence, EventReceiver, SequenceTick};
use crate::media::jitter::{JitterBuffer, JitterConfig, Playout};
use crate::media::quality::{QualityInputs, mos, rating};
use crate::media::session::{Codec, Direction, NegotiatedMedia};
use crate::rtp::latch::{LatchVerdict, SourceLatch};
use crate::rtp::packet;
use crate::rtp::rtcp::RtcpSession;
use crate::rtp::srtp::{Layer, RejectCounts, SrtpSession};
use crate::rtp::stats::ReceiveStats;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

/// A socket a stream can send on without blocking (the I/O shells implement it for their
/// sockets).
pub trait Datagram {
    /// Sends one datagram; false if it could not be sent now (dropped, as RTP may be).
    fn send_now(&self, buf: &[u8], dest: SocketAddr) -> bool;
}

/// Where a digit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigitSource {
    /// An RFC 4733 telephone-event.
    Rfc4733,
    /// DTMF tones in the audio (G.711 callers without telephone-event).
    Inband,
    /// SIP INFO (`application/dtmf-relay`), found by the call, not the stream.
    SipInfo,
}

impl DigitSource {
    pub fn label(self) -> &'static str {
        match self {
            DigitSource::Rfc4733 => "rfc4733",
            DigitSource::Inband => "inband",
            DigitSource::SipInfo => "sip_info",
        }
    }
}

/// What a stream found, read out with [`MediaStream::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The far end pressed a key.
    Digit { digit: char, source: DigitSource },
    /// Digits queued with [`MediaStream::queue_digits`] have all been sent (empty: there
    /// were none to send).
    DigitsSent { digits: String },
}

/// Events kept for the driver at most; more are dropped (a driver polls every tick).
const MAX_EVENTS: usize = 64;

/// Quality of the received stream over the call (for logs and CDRs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamSummary {
    pub packets_received: u32,
    pub packets_lost: i32,
    pub jitter_ms: f64,
    pub mos: f64,
    pub foreign_packets: u64,
    /// Round-trip time from RTCP (RFC 3550 §6.4.1), when the peer reported one.
    pub rtt_ms: Option<f64>,
    /// RTCP compound packets received from the peer.
    pub rtcp_received: u32,
    /// Whether the stream ran SRTP, and the SRTP/SRTCP packets dropped (forged, replayed,
    /// plain RTP on a protected stream, too many unknown SSRCs).
    pub srtp: bool,
    pub srtp_rejected: RejectCounts,
}

/// The stream's SRTP state.
enum Wire {
    /// Plain RTP (RFC 3551 RTP/AVP without keys).
    Plain,
    Protected(Box<SrtpSession>),
    /// Keys were negotiated but no context could be made from them: nothing is sent or
    /// taken, rather than falling back to the clear.
    Broken,
}

impl Wire {
    fn for_media(media: Option<&NegotiatedMedia>) -> Wire {
        match media.and_then(|m| m.srtp.as_ref()) {
            None => Wire::Plain,
            Some(keys) => match SrtpSession::new(keys) {
                Ok(s) => Wire::Protected(Box::new(s)),
                Err(_) => Wire::Broken,
            },
        }
    }

    fn rejected(&self) -> RejectCounts {
        match self {
            Wire::Protected(s) => s.rejected(),
            _ => RejectCounts::default(),
        }
    }
}

/// The plain packet of what arrived: `bytes` itself on a plain stream, else its decrypted
/// copy kept in `plain`; None when it is dropped (and counted by the SRTP session).
fn open_on<'a>(
    wire: &mut Wire,
    bytes: &'a [u8],
    layer: Layer,
    plain: &'a mut Option<bytes::BytesMut>,
) -> Option<&'a [u8]> {
    match wire {
        Wire::Plain => Some(bytes),
        Wire::Protected(s) => Some(&plain.insert(s.unprotect(layer, bytes).ok()?)[..]),
        Wire::Broken => None,
    }
}

/// Sends one packet on `socket`, protected first when the stream runs SRTP.
fn send_on(wire: &mut Wire, socket: &impl Datagram, packet: &[u8], dest: SocketAddr, layer: Layer) -> bool {
    match wire {
        Wire::Plain => socket.send_now(packet, dest),
        Wire::Protected(s) => s.protect(layer, packet).is_some_and(|p| socket.send_now(&p, dest)),
        Wire::Broken => false,
    }
}

/// How a stream starts: who it is, the wallclock, and its randomness.
#[derive(Debug, Clone, Copy)]
pub struct StreamStart {
    /// Names the stream in its RTCP CNAME (`tolk-ID@PORT`).
    pub id: u64,
    pub local_port: u16,
    pub now: Instant,
    /// The wallclock at `now` as an NTP timestamp ([`ntp_timestamp`]); RTCP sender reports
    /// carry it forward on the monotonic clock.
    pub ntp: u64,
    /// Seeds the SSRC, first sequence number and first timestamp (RFC 3550 §5.1: random).
    pub seed: u64,
}

/// A wallclock time as a 64-bit NTP timestamp (RFC 3550 §4: seconds since 1900 . fraction).
pub fn ntp_timestamp(at: SystemTime) -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let d = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    ((d.as_secs() + NTP_UNIX_OFFSET) << 32).wrapping_add(ntp_fraction(d.subsec_nanos()))
}

fn ntp_fraction(nanos: u32) -> u64 {
    ((nanos as u64) << 32) / 1_000_000_000
}

/// A duration in NTP's 32.32 fixed point.
fn ntp_duration(d: Duration) -> u64 {
    (d.as_secs() << 32).wrapping_add(ntp_fraction(d.subsec_nanos()))
}

/// A quiet member's inactive Opus packets are decoded anyway one tick in this many (see
/// [`MediaStream::pull_for_mix`]): a talker whose far-end VAD calls them inactive is
/// found within 320 ms.
pub const QUIET_CHECK_EVERY: u64 = 16;

/// What [`MediaStream::pull_for_mix`] did with this tick's frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pull {
    /// No frame to play out.
    Nothing,
    /// Decoded (or concealed) into [`MediaStream::pcm`].
    Decoded,
    /// A quiet member's frame left undecoded: silence.
    Skipped,
}

/// RTCP's fraction lost (1/256 units, RFC 3550 §6.4.1) as a percentage, rounded up so any
/// reported loss counts.
fn loss_percent(fraction: u8) -> u8 {
    ((fraction as u32 * 100).div_ceil(256)) as u8
}

/// What [`MediaStream::on_rtp`] made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Not for us (unparsable, rejected by latching, no media yet, wrong payload type).
    Ignored,
    /// Audio, queued for playout.
    Audio,
    /// An RFC 4733 event packet.
    Event,
}

/// One call's RTP stream (see the module doc).
pub struct MediaStream {
    media: Option<NegotiatedMedia>,
    latch: SourceLatch,
    codec: Option<CodecPair>,
    jitter: Option<JitterBuffer>,
    stats: Option<ReceiveStats>,
    current_ssrc: Option<u32>,
    rfc4733: EventReceiver,
    inband: InbandDetector,
    started: Instant,
    /// The wallclock (NTP) at `started`.
    ntp_start: u64,
    last_packet: Instant,
    rtcp: RtcpSession,
    rtcp_peer: Option<SocketAddr>,
    rtcp_received: u32,
    ssrc: u32,
    out_seq: u16,
    out_ts: u32,
    first_send: bool,
    /// The send timestamp follows the media clock (RFC 3550 §5.1: it reflects the sampling
    /// instant), so after a pause it jumps by the time that passed and the marker starts the
    /// talkspurt (RFC 3551 §4.1); it never repeats or goes backwards.
    ts_origin: Instant,
    ts_base: u32,
    digits_out: DigitSequence,
    /// This tick's decoded audio (valid after [`MediaStream::pull`] returned true).
    pcm: Vec<i16>,
    payload: Vec<u8>,
    pkt: Vec<u8>,
    /// The last Opus packet [`MediaStream::pull_for_mix`] left undecoded (empty: none).
    undecoded: Vec<u8>,
    peer_loss_percent: u8,
    events: VecDeque<StreamEvent>,
    wire: Wire,
    /// SRTP/SRTCP drops of sessions replaced by a re-INVITE's new keys.
    srtp_rejected_before: RejectCounts,
}

impl MediaStream {
    pub fn new(start: StreamStart, media: Option<NegotiatedMedia>) -> MediaStream {
        let StreamStart {
            id,
            local_port,
            now,
            ntp,
            seed,
        } = start;
        let mut rng = fastrand::Rng::with_seed(seed);
        let ssrc: u32 = rng.u32(..);
        let out_ts = rng.u32(..);
        let codec = media.as_ref().and_then(|m| codec_pair(m.codec));
        let wire = Wire::for_media(media.as_ref());
        MediaStream {
            wire,
            srtp_rejected_before: RejectCounts::default(),
            latch: SourceLatch::new(media.as_ref().and_then(|m| m.remote_rtp)),
            jitter: codec.as_ref().map(|c| JitterBuffer::new(JitterConfig::new(c.clock))),
            codec,
            media,
            stats: None,
            current_ssrc: None,
            rfc4733: EventReceiver::new(),
            inband: InbandDetector::default(),
            started: now,
            ntp_start: ntp,
            last_packet: now,
            rtcp: RtcpSession::new(ssrc, &format!("tolk-{id}@{local_port}"), now),
            rtcp_peer: None,
            rtcp_received: 0,
            ssrc,
            out_seq: rng.u16(..),
            out_ts,
            first_send: true,
            ts_origin: now,
            ts_base: out_ts,
            digits_out: DigitSequence::default(),
            pcm: Vec::with_capacity(1920),
            payload: Vec::with_capacity(1500),
            pkt: Vec::with_capacity(1500),
            undecoded: Vec::with_capacity(1500),
            peer_loss_percent: 0,
            events: VecDeque::new(),
        }
    }

    /// The next thing the stream found (a digit, digits sent), oldest first.
    pub fn poll_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    fn emit(&mut self, event: StreamEvent) {
        if self.events.len() < MAX_EVENTS {
            self.events.push_back(event);
        }
    }

    /// The wallclock at `now`, carried forward from the start on the monotonic clock.
    fn ntp_at(&self, now: Instant) -> u64 {
        self.ntp_start
            .wrapping_add(ntp_duration(now.saturating_duration_since(self.started)))
    }

    pub fn media(&self) -> Option<&NegotiatedMedia> {
        self.media.as_ref()
    }

    /// The negotiated codec, once there is one.
    pub fn codec(&self) -> Option<Codec> {
        self.media.as_ref().map(|m| m.codec)
    }

    /// PCM rate of the codec (8 kHz before negotiation).
    pub fn pcm_rate(&self) -> u32 {
        self.codec.as_ref().map(|c| c.dec.sample_rate()).unwrap_or(8000)
    }

    /// PCM samples in one 20 ms frame at [`MediaStream::pcm_rate`].
    pub fn frame_samples(&self) -> usize {
        self.codec.as_ref().map(|c| c.frame_samples).unwrap_or(160)
    }

    /// Opus only: decode to and encode from `rate` from now on, at encoder `complexity`
    /// (None: libopus's default). A room mixing at 16 kHz saves resampling both ways and
    /// encodes at a lower complexity; the leg uses 48 kHz and the default. The codec state
    /// starts afresh, as after a re-INVITE. Other codecs are left alone.
    pub fn set_opus_rate(&mut self, rate: u32, complexity: Option<i32>) {
        // Only when the rate changes: rebuilding resets the codec state (audible).
        if self.codec().is_some_and(|c| c == Codec::Opus)
            && self.pcm_rate() != rate
            && let Some(mut pair) = opus_pair(rate, complexity)
        {
            pair.enc.set_expected_loss(self.peer_loss_percent);
            self.codec = Some(pair);
            self.undecoded.clear();
        }
    }

    /// When the last accepted packet arrived.
    pub fn last_packet(&self) -> Instant {
        self.last_packet
    }

    /// Whether the far end asked us not to send (we are held: RFC 3264 §8.4 recvonly or
    /// inactive on our side).
    pub fn held(&self) -> bool {
        self.media.as_ref().is_some_and(|m| m.on_hold())
    }

    /// Whether digits are queued or being sent as RFC 4733 events.
    pub fn sending_digits(&self) -> bool {
        !self.digits_out.is_idle()
    }

    /// A re-INVITE or UPDATE changed the session. A new remote address re-opens latching
    /// (RFC 4961 §5: symmetric RTP follows the signalled change); a new codec resets the
    /// codec state.
    pub fn set_media(&mut self, new: Option<NegotiatedMedia>) {
        if new.as_ref().map(|m| m.remote_rtp) != self.media.as_ref().map(|m| m.remote_rtp) {
            self.latch.resignal(new.as_ref().and_then(|m| m.remote_rtp));
        }
        let codec_of = |m: &Option<NegotiatedMedia>| m.as_ref().map(|m| (m.codec, m.payload_type));
        if codec_of(&new) != codec_of(&self.media) {
            self.codec = new.as_ref().and_then(|m| codec_pair(m.codec));
            if let Some(c) = self.codec.as_mut() {
                c.enc.set_expected_loss(self.peer_loss_percent);
            }
            self.undecoded.clear();
            self.jitter = self
                .codec
                .as_ref()
                .map(|c| JitterBuffer::new(JitterConfig::new(c.clock)));
            self.stats = None;
        }
        if new.as_ref().and_then(|m| m.srtp.as_deref()) != self.media.as_ref().and_then(|m| m.srtp.as_deref()) {
            // New keys (RFC 4568 §7.1.4): a new session; what the old one dropped is kept.
            self.srtp_rejected_before.add(self.wire.rejected());
            self.wire = Wire::for_media(new.as_ref());
        }
        self.media = new;
    }

    /// An RTP packet arrived from `from`. Digits it carries are reported.
    pub fn on_rtp(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Received {
        if self.media.is_none() {
            return Received::Ignored;
        }
        let mut plain = None;
        let Some(bytes) = open_on(&mut self.wire, bytes, Layer::Rtp, &mut plain) else {
            return Received::Ignored;
        };
        let Some(m) = self.media.as_ref() else {
            return Received::Ignored;
        };
        let Ok(p) = packet::parse(bytes) else {
            return Received::Ignored;
        };
        // Source latching against RTP bleed and injection (rtp::latch).
        if self.latch.on_packet(from) == LatchVerdict::Reject {
            return Received::Ignored;
        }
        self.last_packet = now;
        if Some(p.payload_type) == m.telephone_event {
            for e in self.rfc4733.receive(p.timestamp, p.marker, p.payload) {
                if let DigitEvent::Pressed { digit, .. } = e {
                    self.emit(StreamEvent::Digit {
                        digit,
                        source: DigitSource::Rfc4733,
                    });
                }
            }
            return Received::Event;
        }
        if p.payload_type != m.payload_type {
            return Received::Ignored;
        }
        // A new SSRC is a new source (RFC 3550 §8.2): fresh statistics and playout.
        if self.current_ssrc.is_some_and(|ssrc| ssrc != p.ssrc) {
            self.stats = None;
            if let Some(jb) = self.jitter.as_mut() {
                jb.reset();
            }
        }
        self.current_ssrc = Some(p.ssrc);
        self.rtcp.set_peer_ssrc(p.ssrc);
        let s = self.stats.get_or_insert_with(|| ReceiveStats::new(p.sequence));
        s.update_seq(p.sequence);
        if let (Some(jb), Some(c)) = (self.jitter.as_mut(), self.codec.as_ref()) {
            // Arrival on the RTP clock, for the RFC 3550 jitter estimate.
            let arrival = (now.duration_since(self.started).as_micros() as u64 * c.clock as u64 / 1_000_000) as u32;
            s.update_jitter(arrival, p.timestamp);
            jb.push(now, p.timestamp, p.payload);
        }
        Received::Audio
    }

    /// An RTCP packet arrived; accepted only from the latched peer's host.
    pub fn on_rtcp(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if self.latch.peer().is_none_or(|l| l.ip() != from.ip()) {
            return;
        }
        let mut plain = None;
        let Some(bytes) = open_on(&mut self.wire, bytes, Layer::Rtcp, &mut plain) else {
            return;
        };
        let ntp = self.ntp_at(now);
        if let Ok(info) = self.rtcp.on_rtcp(now, ntp, bytes) {
            self.rtcp_peer = Some(from);
            self.rtcp_received += 1;
            // The far end's loss of our stream drives how much in-band FEC we spend on it
            // (libopus codes LBRR only for an expected loss above 0; RFC 7587 §3.3).
            if let Some(fraction) = info.peer_fraction_lost {
                self.peer_loss_percent = loss_percent(fraction);
                if let Some(c) = self.codec.as_mut() {
                    c.enc.set_expected_loss(self.peer_loss_percent);
                }
            }
        }
    }

    /// The loss of our stream the far end last reported (RTCP, percent; 0 before any report).
    pub fn peer_loss_percent(&self) -> u8 {
        self.peer_loss_percent
    }

    fn rtcp_dest(&self) -> Option<SocketAddr> {
        self.rtcp_peer.or(self
            .latch
            .peer()
            .map(|l| SocketAddr::new(l.ip(), l.port().wrapping_add(1))))
    }

    /// Sends an RTCP report when the RFC 3550 §6.2 schedule says one is due.
    pub fn poll_rtcp(&mut self, now: Instant, rtcp: &impl Datagram) {
        let ntp = self.ntp_at(now);
        if let Some(dest) = self.rtcp_dest()
            && let Some(report) = self.rtcp.poll_report(now, ntp, self.out_ts, self.stats.as_mut())
        {
            let _ = send_on(&mut self.wire, rtcp, &report, dest, Layer::Rtcp);
        }
    }

    /// Plays out this tick's frame: decoded, concealed or rebuilt from FEC into
    /// [`MediaStream::pcm`]; false when nothing was received (no frame). In-band digits of
    /// G.711 callers without telephone-event become events.
    pub fn pull(&mut self, now: Instant) -> bool {
        self.pcm.clear();
        let (Some(m), Some(c), Some(jb)) = (self.media.as_ref(), self.codec.as_mut(), self.jitter.as_mut()) else {
            return false;
        };
        let received = match jb.pop(now) {
            Playout::Frame(p) => {
                c.dec.decode(&p, &mut self.pcm);
                jb.recycle(p);
                true
            }
            // Opus rebuilds the lost frame from the next packet's FEC (RFC 7587 §3.3).
            Playout::Lost { next: Some(next) } => {
                c.dec.recover(&next, c.frame_samples, &mut self.pcm);
                true
            }
            Playout::Lost { next: None } => {
                c.dec.conceal(c.frame_samples, &mut self.pcm);
                true
            }
            Playout::Empty => false,
        };
        if received && inband_keys(m, c) {
            for digit in self.inband.process(&self.pcm) {
                self.emit(StreamEvent::Digit {
                    digit,
                    source: DigitSource::Inband,
                });
            }
        }
        received
    }

    /// [`MediaStream::pull`] for a member of a room. `quiet` is None while the member may be
    /// talking: every frame is decoded or concealed. For a member who is not talking it is
    /// `Some(check)`: an Opus packet whose voice-activity flags say nothing was said (RFC
    /// 6716 §4.2.3) is not decoded, and a lost frame is not concealed, since the mixer would
    /// drop the result as silence; decoding is most of an Opus room's cost. With `check` an
    /// inactive packet is decoded anyway: the caller asks for it now and then (the mixer: one
    /// tick in [`QUIET_CHECK_EVERY`], staggered across members so the checks do not all fall
    /// on one tick), so a loud sound the far end's VAD calls inactive (libopus's VAD adapts to
    /// a steady tone or music within a second) still makes the member a talker. When speech
    /// starts, the last undecoded packet is decoded first (its audio unused) so the decoder's
    /// state runs on from the packet before. Other codecs (cheap to decode, or stateful like
    /// G.722) decode as usual.
    pub fn pull_for_mix(&mut self, now: Instant, quiet: Option<bool>) -> Pull {
        let check = match quiet {
            Some(check) if self.codec() == Some(Codec::Opus) => check,
            _ => {
                return if self.pull(now) { Pull::Decoded } else { Pull::Nothing };
            }
        };
        self.pcm.clear();
        let (Some(c), Some(jb)) = (self.codec.as_mut(), self.jitter.as_mut()) else {
            return Pull::Nothing;
        };
        match jb.pop(now) {
            Playout::Frame(p) => {
                let act = opus_packet::activity(&p);
                if act == Activity::Inactive && !check {
                    // Kept (buffers swapped, not copied) to warm the decoder at speech onset.
                    jb.recycle(std::mem::replace(&mut self.undecoded, p));
                    return Pull::Skipped;
                }
                if act != Activity::Inactive && !self.undecoded.is_empty() {
                    c.dec.decode(&self.undecoded, &mut self.pcm);
                    self.pcm.clear();
                }
                self.undecoded.clear();
                c.dec.decode(&p, &mut self.pcm);
                jb.recycle(p);
                Pull::Decoded
            }
            Playout::Lost { .. } => Pull::Skipped,
            Playout::Empty => Pull::Nothing,
        }
    }

    /// [`MediaStream::pull`] for a member nobody hears (an interpretation room's
    /// listener): the frame is played out of the jitter buffer (so loss and jitter are still
    /// measured) and dropped undecoded, unless the member's keys come in band (G.711
    /// without telephone-event), which needs the audio. Most of a 1,000-listener event's
    /// decoding is saved.
    pub fn pull_unheard(&mut self, now: Instant) -> Pull {
        let in_band = matches!((&self.media, &self.codec), (Some(m), Some(c)) if inband_keys(m, c));
        if in_band {
            return if self.pull(now) { Pull::Decoded } else { Pull::Nothing };
        }
        self.pcm.clear();
        let Some(jb) = self.jitter.as_mut() else {
            return Pull::Nothing;
        };
        match jb.pop(now) {
            Playout::Frame(p) => {
                jb.recycle(p);
                Pull::Skipped
            }
            Playout::Lost { .. } => Pull::Skipped,
            Playout::Empty => Pull::Nothing,
        }
    }

    /// This tick's decoded audio.
    pub fn pcm(&self) -> &[i16] {
        &self.pcm
    }

    /// Queues digits to send as RFC 4733 events; false when telephone-event was not
    /// negotiated (the caller must play in-band tones instead).
    pub fn queue_digits(&mut self, digits: &str) -> bool {
        if self.media.as_ref().is_none_or(|m| m.telephone_event.is_none()) {
            return false;
        }
        if self.digits_out.push(digits) == 0 {
            self.emit(StreamEvent::DigitsSent { digits: String::new() });
        }
        true
    }

    /// Sends this tick's RFC 4733 event packets, if a press is in progress; true when the
    /// events replace this tick's audio.
    pub fn send_digit_events(&mut self, rtp: &impl Datagram) -> bool {
        let (Some(m), Some(c)) = (self.media.as_ref(), self.codec.as_ref()) else {
            return false;
        };
        let Some(te) = m.telephone_event else { return false };
        if self.digits_out.is_idle() {
            return false;
        }
        let dest = self.latch.peer().or(m.remote_rtp);
        match self.digits_out.tick(self.out_ts, c.clock) {
            SequenceTick::Idle => false,
            SequenceTick::Done(digits) => {
                self.emit(StreamEvent::DigitsSent { digits });
                false
            }
            SequenceTick::Event(packets) => {
                if let Some(dest) = dest {
                    for e in packets {
                        packet::build(
                            &mut self.pkt,
                            te,
                            e.marker,
                            self.out_seq,
                            e.timestamp,
                            self.ssrc,
                            &e.payload,
                        );
                        self.out_seq = self.out_seq.wrapping_add(1);
                        if send_on(&mut self.wire, rtp, &self.pkt, dest, Layer::Rtp) {
                            self.rtcp.on_rtp_sent(e.payload.len());
                        }
                    }
                }
                self.out_ts = self.out_ts.wrapping_add(c.frame_ts);
                true
            }
        }
    }

    /// Encodes one frame of PCM at the codec's rate with this stream's own encoder and sends it.
    pub fn send_pcm(&mut self, now: Instant, pcm: &[i16], rtp: &impl Datagram) {
        let Some(c) = self.codec.as_mut() else { return };
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        c.enc.encode(pcm, &mut payload);
        self.send_payload(now, &payload, rtp);
        self.payload = payload;
    }

    /// Sends one 20 ms payload already encoded for this stream's codec (a mix shared by
    /// several members). Nothing is sent while we are held (RFC 3264 §8.4).
    pub fn send_payload(&mut self, now: Instant, payload: &[u8], rtp: &impl Datagram) {
        let (Some(m), Some(c)) = (self.media.as_ref(), self.codec.as_ref()) else {
            return;
        };
        if payload.is_empty() || matches!(m.direction, Direction::RecvOnly | Direction::Inactive) {
            return;
        }
        let Some(dest) = self.latch.peer().or(m.remote_rtp) else {
            return;
        };
        let frames = (now.saturating_duration_since(self.ts_origin).as_millis() as u64 / 20) as u32;
        let clock_ts = self.ts_base.wrapping_add(frames.wrapping_mul(c.frame_ts));
        // How far the media clock is ahead of the next timestamp in sequence.
        let ahead = clock_ts.wrapping_sub(self.out_ts);
        let talkspurt = self.first_send || (ahead < 0x8000_0000 && ahead > c.frame_ts);
        if ahead < 0x8000_0000 {
            self.out_ts = clock_ts;
        }
        packet::build(
            &mut self.pkt,
            m.payload_type,
            talkspurt,
            self.out_seq,
            self.out_ts,
            self.ssrc,
            payload,
        );
        self.first_send = false;
        self.out_seq = self.out_seq.wrapping_add(1);
        self.out_ts = self.out_ts.wrapping_add(c.frame_ts);
        if send_on(&mut self.wire, rtp, &self.pkt, dest, Layer::Rtp) {
            self.rtcp.on_rtp_sent(payload.len());
        }
    }

    /// RFC 3550 §6.6: says goodbye and summarises the received stream's quality.
    pub fn finish(mut self, now: Instant, rtcp: &impl Datagram) -> StreamSummary {
        if let Some(dest) = self.rtcp_dest() {
            let ntp = self.ntp_at(now);
            let bye = self.rtcp.bye(now, ntp, self.out_ts, self.stats.as_mut());
            let _ = send_on(&mut self.wire, rtcp, &bye, dest, Layer::Rtcp);
        }
        let rtt = self.rtcp.rtt();
        let mut summary = summarise(
            self.stats.as_ref(),
            self.jitter.as_ref(),
            self.codec.as_ref(),
            self.latch.rejected(),
            rtt,
        );
        summary.rtt_ms = rtt.map(|d| d.as_secs_f64() * 1000.0);
        summary.rtcp_received = self.rtcp_received;
        summary.srtp = !matches!(self.wire, Wire::Plain);
        summary.srtp_rejected = self.srtp_rejected_before;
        summary.srtp_rejected.add(self.wire.rejected());
        summary
    }
}

/// Whether a caller's keys come in band and must be found in its decoded audio: G.711
/// (8 kHz, 20 ms frames) without telephone-event (RFC 4733).
fn inband_keys(media: &NegotiatedMedia, codec: &CodecPair) -> bool {
    media.telephone_event.is_none() && codec.clock == 8000 && codec.frame_samples == 160
}

fn summarise(
    stats: Option<&ReceiveStats>,
    jitter: Option<&JitterBuffer>,
    codec: Option<&CodecPair>,
    foreign: u64,
    rtt: Option<Duration>,
) -> StreamSummary {
    let (Some(s), Some(c)) = (stats, codec) else {
        return StreamSummary {
            foreign_packets: foreign,
            ..StreamSummary::default()
        };
    };
    let expected = s.expected().max(1) as f64;
    let lost = s.cumulative_lost();
    let jitter_ms = s.jitter() as f64 * 1000.0 / c.clock as f64;
    let buffer_ms = jitter.map(|j| j.target_delay().as_secs_f64() * 1000.0).unwrap_or(20.0);
    let r = rating(&QualityInputs {
        // Mouth-to-ear delay: jitter buffer, one frame, and half the RTCP round trip (a
        // nominal 40 ms when the peer sent no RTCP).
        one_way_delay_ms: buffer_ms + 20.0 + rtt.map(|r| r.as_secs_f64() * 500.0).unwrap_or(40.0),
        loss_percent: (lost.max(0) as f64 / expected * 100.0).min(100.0),
        burst_ratio: 1.0,
        codec: c.impairment,
    });
    StreamSummary {
        packets_received: s.received(),
        packets_lost: lost,
        jitter_ms,
        mos: mos(r),
        foreign_packets: foreign,
        rtt_ms: None,
        rtcp_received: 0,
        srtp: false,
        srtp_rejected: RejectCounts::default(),
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
