//! The media leg of a call (I/O shell around the sans-IO media parts): one RTP/RTCP socket
//! pair, source latching, RFC 3550 statistics, the jitter buffer, the codec, DTMF from RFC 4733 events and
//! (for G.711 without telephone-event) from in-band tones, and 20 ms frames out.
//!
//! Today the leg's consumer is the echo: every decoded frame is encoded again and sent back,
//! so the echo number exercises the whole receive and send path for every codec. The flow
//! engine and the rooms take the frames instead when they land.

use super::ports::RtpPort;
use crate::media::codec::g711::{G711Decoder, G711Encoder, Law};
use crate::media::codec::g722::{G722Decoder, G722Encoder};
use crate::media::codec::opus::{OpusDecoder, OpusEncoder};
use crate::media::codec::{Decoder, Encoder};
use crate::media::dtmf::inband;
use crate::media::dtmf::inband::InbandDetector;
use crate::media::dtmf::rfc4733::{DigitEvent, EventReceiver};
use crate::media::dtmf::rfc4733::{DigitSequence, SequenceTick};
use crate::media::jitter::{JitterBuffer, JitterConfig, Playout};
use crate::media::prompt::{PromptCatalog, PromptPlayer};
use crate::media::quality::{CodecImpairment, QualityInputs, mos, rating};
use crate::media::record::{RecordFormat, Recorder};
use crate::media::tone::ToneGenerator;
use crate::rtp::latch::{LatchVerdict, SourceLatch};
use crate::rtp::packet;
use crate::rtp::rtcp::RtcpSession;
use crate::rtp::stats::ReceiveStats;
use crate::sip::dialog::CallRef;
use crate::sip::sdp::{Codec, Direction, NegotiatedMedia};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// A leg with no packet for this long and nothing to play stops ticking until one arrives.
const IDLE_AFTER: Duration = Duration::from_millis(500);

/// Where a digit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigitSource {
    Rfc4733,
    Inband,
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

/// What a leg reports to the gateway.
#[derive(Debug, Clone)]
pub enum LegReport {
    Digit {
        call: CallRef,
        digit: char,
        source: DigitSource,
    },
    /// No RTP for the configured time.
    TimedOut { call: CallRef },
    /// A prompt or tone finished (or could not start: `ok` false).
    PlaybackDone { call: CallRef, what: String, ok: bool },
    /// Digits asked for with [`LegCommand::SendDigits`] have all been sent.
    DigitsSent { call: CallRef, digits: String },
    /// A recording was finalised (on [`LegCommand::StopRecording`], a new recording, or the
    /// end of the call), or could not be written (`error`).
    RecordingDone {
        call: CallRef,
        path: PathBuf,
        seconds: f64,
        error: Option<String>,
    },
    /// The leg ended; its quality summary.
    Summary { call: CallRef, summary: LegSummary },
}

/// Quality of the received stream over the call (for logs now, CDRs later).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LegSummary {
    pub packets_received: u32,
    pub packets_lost: i32,
    pub jitter_ms: f64,
    pub mos: f64,
    pub foreign_packets: u64,
    /// Round-trip time from RTCP (RFC 3550 §6.4.1), when the peer reported one.
    pub rtt_ms: Option<f64>,
    /// RTCP compound packets received from the peer.
    pub rtcp_received: u32,
}

/// The gateway's handle on a leg: media updates and commands in; dropping it ends the leg.
pub struct LegHandle {
    pub media: watch::Sender<Option<NegotiatedMedia>>,
    pub commands: mpsc::Sender<LegCommand>,
}

/// What the caller hears while no prompt or tone plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegMode {
    /// Their own audio back (the echo test).
    Echo,
    /// Nothing.
    Silence,
}

/// Commands to a leg (the flow engine's `play`, `tone` verbs will send these).
#[derive(Debug, Clone)]
pub enum LegCommand {
    /// Play a prompt from the catalog (or a `.wav` under the sounds directory).
    Play(String),
    /// Play PCM tolk made itself (text-to-speech), already at the leg's PCM rate
    /// ([`pcm_rate`]); `what` names it in the `PlaybackDone` report.
    PlayPcm {
        pcm: Arc<[i16]>,
        what: String,
    },
    /// Play a tone specification or a named tone (`media::tone`).
    Tone(String),
    /// Stop what is playing.
    Stop,
    Mode(LegMode),
    /// Send digits to the caller: RFC 4733 events when telephone-event was negotiated, else
    /// in-band DTMF tones (which replace any prompt playing).
    SendDigits(String),
    /// Record the call (what the caller says plus the prompts and tones they hear, not the
    /// echo) to `path`, a new file; `.ogg`/`.opus` is Ogg Opus, anything else WAV.
    Record(PathBuf),
    /// Finalise the recording.
    StopRecording,
}

enum Playback {
    Prompt(PromptPlayer),
    Tone(ToneGenerator),
}

struct CodecPair {
    enc: Box<dyn Encoder>,
    dec: Box<dyn Decoder>,
    /// RTP clock rate.
    clock: u32,
    /// PCM samples per 20 ms at the codec's PCM rate.
    frame_samples: usize,
    /// RTP timestamp units per 20 ms.
    frame_ts: u32,
    impairment: CodecImpairment,
}

/// The PCM rate a leg of `codec` decodes to and encodes from.
pub fn pcm_rate(codec: Codec) -> u32 {
    match codec {
        Codec::Pcmu | Codec::Pcma => 8_000,
        Codec::G722 => 16_000,
        Codec::Opus => 48_000,
    }
}

fn codec_pair(codec: Codec) -> Option<CodecPair> {
    Some(match codec {
        Codec::Pcmu | Codec::Pcma => {
            let law = if codec == Codec::Pcmu { Law::Ulaw } else { Law::Alaw };
            CodecPair {
                enc: Box::new(G711Encoder::new(law)),
                dec: Box::new(G711Decoder::new(law)),
                clock: 8000,
                frame_samples: 160,
                frame_ts: 160,
                impairment: CodecImpairment::G711_PLC,
            }
        }
        Codec::G722 => CodecPair {
            enc: Box::new(G722Encoder::default()),
            dec: Box::new(G722Decoder::default()),
            clock: 8000,
            frame_samples: 320,
            frame_ts: 160,
            impairment: CodecImpairment::WIDEBAND,
        },
        Codec::Opus => CodecPair {
            enc: Box::new(OpusEncoder::new(48_000).ok()?),
            dec: Box::new(OpusDecoder::new(48_000).ok()?),
            clock: 48_000,
            frame_samples: 960,
            frame_ts: 960,
            impairment: CodecImpairment::WIDEBAND,
        },
    })
}

/// Spawns the leg task.
pub fn spawn_leg(
    call: CallRef,
    port: RtpPort,
    media: Option<NegotiatedMedia>,
    rtp_timeout: Duration,
    prompts: Option<Arc<PromptCatalog>>,
    reports: mpsc::Sender<LegReport>,
) -> LegHandle {
    let (tx, rx) = watch::channel(media);
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    tokio::spawn(run_leg(call, port, rx, cmd_rx, rtp_timeout, prompts, reports));
    LegHandle {
        media: tx,
        commands: cmd_tx,
    }
}

/// Every prompt or tone started is reported done exactly once: when it ends, when it is
/// stopped, or when another replaces it (the flow engine counts on it).
fn end_playback(playback: &mut Option<(Playback, String)>, call: CallRef, reports: &mpsc::Sender<LegReport>) {
    if let Some((_, what)) = playback.take() {
        let report = match what.strip_prefix("digits:") {
            Some(d) => LegReport::DigitsSent {
                call,
                digits: d.to_string(),
            },
            None => LegReport::PlaybackDone { call, what, ok: true },
        };
        let _ = reports.try_send(report);
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_leg(
    call: CallRef,
    port: RtpPort,
    mut media_rx: watch::Receiver<Option<NegotiatedMedia>>,
    mut commands: mpsc::Receiver<LegCommand>,
    rtp_timeout: Duration,
    prompts: Option<Arc<PromptCatalog>>,
    reports: mpsc::Sender<LegReport>,
) {
    let mut mode = LegMode::Echo;
    let mut playback: Option<(Playback, String)> = None;
    let mut out_frame: Vec<i16> = Vec::with_capacity(960);
    let ssrc: u32 = fastrand::u32(..);
    let mut out_seq: u16 = fastrand::u16(..);
    let mut out_ts: u32 = fastrand::u32(..);
    let mut buf = vec![0u8; 2048];
    let mut pkt = Vec::with_capacity(1500);
    let mut pcm = Vec::with_capacity(1920);
    let mut payload = Vec::with_capacity(1500);
    let mut media = media_rx.borrow().clone();
    let mut latch = SourceLatch::new(media.as_ref().and_then(|m| m.remote_rtp));
    let mut codec = media.as_ref().and_then(|m| codec_pair(m.codec));
    let mut jitter = codec.as_ref().map(|c| JitterBuffer::new(JitterConfig::new(c.clock)));
    let mut stats: Option<ReceiveStats> = None;
    let mut current_ssrc: Option<u32> = None;
    let mut events = EventReceiver::new();
    let mut inband = InbandDetector::default();
    let started = Instant::now();
    let mut last_packet = started;
    let mut rtcp = RtcpSession::new(ssrc, &format!("tolk-{}@{}", call.0, port.port), started);
    let mut rtcp_buf = vec![0u8; 1500];
    let mut rtcp_peer: Option<SocketAddr> = None;
    let mut rtcp_received = 0u32;
    let mut first_send = true;
    // The send timestamp follows the media clock (RFC 3550 §5.1: it reflects the sampling
    // instant), so after a pause it jumps by the time that passed and the marker starts the
    // talkspurt (RFC 3551 §4.1); it never repeats or goes backwards.
    let ts_origin = Instant::now();
    let ts_base = out_ts;
    let mut digits_out = DigitSequence::default();
    let mut recording: Option<(Recorder, PathBuf, u64)> = None;
    let mut record_frame: Vec<i16> = Vec::with_capacity(960);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        // An idle leg (nothing received lately, nothing to play) does not tick: thousands of
        // silent or held calls cost no wake-ups. It wakes for a packet, a command, the end of
        // the call, or the RTP timeout.
        // A recording keeps the leg ticking so that silence is recorded in real time.
        let active =
            playback.is_some() || recording.is_some() || !digits_out.is_idle() || last_packet.elapsed() < IDLE_AFTER;
        let timeout_at = tokio::time::Instant::from_std(last_packet + rtp_timeout);
        tokio::select! {
            Some(cmd) = commands.recv() => {
                let rate = codec.as_ref().map(|c| c.dec.sample_rate()).unwrap_or(8000);
                match cmd {
                    LegCommand::Play(name) => {
                        let pcm = prompts.as_ref().map(|p| p.pcm(&name, rate));
                        match pcm {
                            Some(Ok(pcm)) => {
                                end_playback(&mut playback, call, &reports);
                                playback = Some((Playback::Prompt(PromptPlayer::new(pcm)), name));
                            }
                            _ => { let _ = reports.try_send(LegReport::PlaybackDone { call, what: name, ok: false }); }
                        }
                    }
                    LegCommand::PlayPcm { pcm, what } => {
                        end_playback(&mut playback, call, &reports);
                        if last_packet.elapsed() >= IDLE_AFTER {
                            tick.reset();
                        }
                        playback = Some((Playback::Prompt(PromptPlayer::new(pcm)), what));
                    }
                    LegCommand::Tone(spec) => match ToneGenerator::new(&spec, rate, -10.0, false) {
                        Ok(g) if playback.is_none() && last_packet.elapsed() >= IDLE_AFTER => {
                            tick.reset();
                            playback = Some((Playback::Tone(g), spec));
                        }
                        Ok(g) => {
                            end_playback(&mut playback, call, &reports);
                            playback = Some((Playback::Tone(g), spec));
                        }
                        Err(_) => { let _ = reports.try_send(LegReport::PlaybackDone { call, what: spec, ok: false }); }
                    },
                    LegCommand::Stop => end_playback(&mut playback, call, &reports),
                    LegCommand::Mode(m) => mode = m,
                    LegCommand::SendDigits(digits) => {
                        if last_packet.elapsed() >= IDLE_AFTER && playback.is_none() && recording.is_none() {
                            tick.reset();
                        }
                        if media.as_ref().is_some_and(|m| m.telephone_event.is_some()) {
                            if digits_out.push(&digits) == 0 {
                                let _ = reports.try_send(LegReport::DigitsSent { call, digits: String::new() });
                            }
                        } else {
                            // No telephone-event: DTMF tones in the audio.
                            match inband::tone_spec(&digits, 100, 60).map(|s| ToneGenerator::new(&s, rate, -8.0, false)) {
                                Some(Ok(g)) => {
                                    end_playback(&mut playback, call, &reports);
                                    playback = Some((Playback::Tone(g), format!("digits:{digits}")));
                                }
                                _ => { let _ = reports.try_send(LegReport::DigitsSent { call, digits: String::new() }); }
                            }
                        }
                    }
                    LegCommand::Record(path) => {
                        if let Some((old, old_path, samples)) = recording.take() {
                            let _ = reports.try_send(finish_recording(call, old, old_path, samples, rate));
                        }
                        match Recorder::create(&path, RecordFormat::from_path(&path), rate) {
                            Ok(r) => {
                                if last_packet.elapsed() >= IDLE_AFTER && playback.is_none() {
                                    tick.reset();
                                }
                                recording = Some((r, path, 0));
                            }
                            Err(e) => {
                                let _ = reports.try_send(LegReport::RecordingDone { call, path, seconds: 0.0, error: Some(e.to_string()) });
                            }
                        }
                    }
                    LegCommand::StopRecording => {
                        if let Some((r, path, samples)) = recording.take() {
                            let _ = reports.try_send(finish_recording(call, r, path, samples, rate));
                        }
                    }
                }
            }
            changed = media_rx.changed() => {
                if changed.is_err() { break; } // the call ended
                let new = media_rx.borrow().clone();
                // A new remote address (re-INVITE) re-opens latching (RFC 4961 §5 symmetric RTP
                // follows the signalled change); a new codec resets the codec state.
                if new.as_ref().map(|m| m.remote_rtp) != media.as_ref().map(|m| m.remote_rtp) {
                    latch.resignal(new.as_ref().and_then(|m| m.remote_rtp));
                }
                if new.as_ref().map(|m| (m.codec, m.payload_type)) != media.as_ref().map(|m| (m.codec, m.payload_type)) {
                    codec = new.as_ref().and_then(|m| codec_pair(m.codec));
                    jitter = codec.as_ref().map(|c| JitterBuffer::new(JitterConfig::new(c.clock)));
                    stats = None;
                }
                media = new;
            }
            got = port.socket.recv_from(&mut buf) => {
                let Ok((n, from)) = got else { continue };
                let Some(m) = media.as_ref() else { continue };
                let Ok(p) = packet::parse(&buf[..n]) else { continue };
                // Source latching against RTP bleed and injection (rtp::latch).
                if latch.on_packet(from) == LatchVerdict::Reject {
                    continue;
                }
                if last_packet.elapsed() >= IDLE_AFTER {
                    // Waking from idle: restart the tick instead of bursting the missed ones.
                    tick.reset();
                }
                last_packet = Instant::now();
                if Some(p.payload_type) == m.telephone_event {
                    for e in events.receive(p.timestamp, p.marker, p.payload) {
                        if let DigitEvent::Pressed { digit, .. } = e {
                            let _ = reports.try_send(LegReport::Digit { call, digit, source: DigitSource::Rfc4733 });
                        }
                    }
                    continue;
                }
                if p.payload_type != m.payload_type {
                    continue;
                }
                // A new SSRC is a new source (RFC 3550 §8.2): fresh statistics and playout.
                if current_ssrc.is_some_and(|ssrc| ssrc != p.ssrc) {
                    stats = None;
                    if let Some(jb) = jitter.as_mut() {
                        jb.reset();
                    }
                }
                current_ssrc = Some(p.ssrc);
                rtcp.set_peer_ssrc(p.ssrc);
                let s = stats.get_or_insert_with(|| ReceiveStats::new(p.sequence));
                s.update_seq(p.sequence);
                if let (Some(jb), Some(c)) = (jitter.as_mut(), codec.as_ref()) {
                    // Arrival on the RTP clock, for the RFC 3550 jitter estimate.
                    let arrival = (last_packet.duration_since(started).as_micros() as u64 * c.clock as u64 / 1_000_000) as u32;
                    s.update_jitter(arrival, p.timestamp);
                    jb.push(last_packet, p.timestamp, p.payload);
                }
            }
            got = port.rtcp.recv_from(&mut rtcp_buf) => {
                let Ok((n, from)) = got else { continue };
                // RTCP from the latched peer's address only (same host as its RTP).
                if latch.peer().is_some_and(|l| l.ip() == from.ip())
                    && rtcp.on_rtcp(Instant::now(), ntp_now(), &rtcp_buf[..n]).is_ok() {
                        rtcp_peer = Some(from);
                        rtcp_received += 1;
                    }
            }
            _ = tokio::time::sleep_until(timeout_at), if !active => {
                let _ = reports.send(LegReport::TimedOut { call }).await;
                break;
            }
            _ = tick.tick(), if active => {
                if let Some(dest) = rtcp_peer.or(latch.peer().map(|l| SocketAddr::new(l.ip(), l.port().wrapping_add(1))))
                    && let Some(report) = rtcp.poll_report(Instant::now(), ntp_now(), out_ts, stats.as_mut()) {
                        let _ = port.rtcp.try_send_to(&report, dest);
                    }
                if last_packet.elapsed() > rtp_timeout {
                    let _ = reports.send(LegReport::TimedOut { call }).await;
                    break;
                }
                let (Some(m), Some(c), Some(jb)) = (media.as_ref(), codec.as_mut(), jitter.as_mut()) else { continue };
                pcm.clear();
                let now = Instant::now();
                let received = match jb.pop(now) {
                    Playout::Frame(p) => { c.dec.decode(&p, &mut pcm); jb.recycle(p); true }
                    // Opus rebuilds the lost frame from the next packet's FEC (RFC 7587 §3.3).
                    Playout::Lost { next: Some(next) } => { c.dec.recover(&next, c.frame_samples, &mut pcm); true }
                    Playout::Lost { next: None } => { c.dec.conceal(c.frame_samples, &mut pcm); true }
                    Playout::Empty => false,
                };
                // In-band DTMF for G.711 callers without telephone-event.
                if received && m.telephone_event.is_none() && c.clock == 8000 && c.frame_samples == 160 {
                    for digit in inband.process(&pcm) {
                        let _ = reports.try_send(LegReport::Digit { call, digit, source: DigitSource::Inband });
                    }
                }
                // What goes out: a prompt or tone if one plays, else the echo (or nothing).
                out_frame.clear();
                if let Some((pb, what)) = playback.as_mut() {
                    let more = match pb {
                        Playback::Prompt(p) => p.next_frame(c.frame_samples, &mut out_frame),
                        Playback::Tone(t) => t.next_frame(c.frame_samples, &mut out_frame),
                    };
                    if !more {
                        let report = match what.strip_prefix("digits:") {
                            Some(d) => LegReport::DigitsSent { call, digits: d.to_string() },
                            None => LegReport::PlaybackDone { call, what: what.clone(), ok: true },
                        };
                        let _ = reports.try_send(report);
                        playback = None;
                    }
                }
                // The recording: the caller plus what we play them (not their own echo).
                if let Some((r, path, samples)) = recording.as_mut() {
                    record_frame.clear();
                    record_frame.resize(c.frame_samples, 0);
                    if received {
                        record_frame.iter_mut().zip(&pcm).for_each(|(o, s)| *o = *s);
                    }
                    record_frame.iter_mut().zip(&out_frame).for_each(|(o, s)| *o = o.saturating_add(*s));
                    *samples += c.frame_samples as u64;
                    if let Err(e) = r.write(&record_frame) {
                        let _ = reports.try_send(LegReport::RecordingDone { call, path: path.clone(), seconds: 0.0, error: Some(e.to_string()) });
                        recording = None;
                    }
                }
                // RFC 4733 digits replace the audio while a press is in progress.
                let mut sent_event = false;
                if let Some(te) = m.telephone_event
                    && !digits_out.is_idle()
                {
                    match digits_out.tick(out_ts, c.clock) {
                        SequenceTick::Idle => {}
                        SequenceTick::Done(d) => { let _ = reports.try_send(LegReport::DigitsSent { call, digits: d }); }
                        SequenceTick::Event(packets) => {
                            sent_event = true;
                            if let Some(dest) = latch.peer().or(m.remote_rtp) {
                                for e in packets {
                                    packet::build(&mut pkt, te, e.marker, out_seq, e.timestamp, ssrc, &e.payload);
                                    out_seq = out_seq.wrapping_add(1);
                                    if port.socket.try_send_to(&pkt, dest).is_ok() {
                                        rtcp.on_rtp_sent(e.payload.len());
                                    }
                                }
                            }
                        }
                    }
                }
                if sent_event {
                    out_ts = out_ts.wrapping_add(c.frame_ts);
                    continue;
                }
                if out_frame.is_empty() && received && mode == LegMode::Echo {
                    out_frame.extend_from_slice(&pcm);
                }
                if out_frame.is_empty() {
                    continue;
                }
                let Some(dest) = latch.peer().or(m.remote_rtp) else { continue };
                if matches!(m.direction, Direction::RecvOnly | Direction::Inactive) {
                    continue; // on hold: receive, do not send (RFC 3264 §8.4)
                }
                payload.clear();
                c.enc.encode(&out_frame, &mut payload);
                if payload.is_empty() {
                    continue;
                }
                let frames = (ts_origin.elapsed().as_millis() as u64 / 20) as u32;
                let clock_ts = ts_base.wrapping_add(frames.wrapping_mul(c.frame_ts));
                // How far the media clock is ahead of the next timestamp in sequence.
                let ahead = clock_ts.wrapping_sub(out_ts);
                let talkspurt = first_send || (ahead < 0x8000_0000 && ahead > c.frame_ts);
                if ahead < 0x8000_0000 {
                    out_ts = clock_ts;
                }
                packet::build(&mut pkt, m.payload_type, talkspurt, out_seq, out_ts, ssrc, &payload);
                first_send = false;
                out_seq = out_seq.wrapping_add(1);
                out_ts = out_ts.wrapping_add(c.frame_ts);
                if port.socket.try_send_to(&pkt, dest).is_ok() {
                    rtcp.on_rtp_sent(payload.len());
                }
            }
        }
    }
    // RFC 3550 §6.6: say goodbye.
    if let Some(dest) = rtcp_peer.or(latch.peer().map(|l| SocketAddr::new(l.ip(), l.port().wrapping_add(1)))) {
        let bye = rtcp.bye(Instant::now(), ntp_now(), out_ts, stats.as_mut());
        let _ = port.rtcp.try_send_to(&bye, dest);
    }
    if let Some((r, path, samples)) = recording.take() {
        let rate = codec.as_ref().map(|c| c.dec.sample_rate()).unwrap_or(8000);
        let _ = reports.try_send(finish_recording(call, r, path, samples, rate));
    }
    let rtt = rtcp.rtt();
    let mut summary = summarise(stats.as_ref(), jitter.as_ref(), codec.as_ref(), latch.rejected(), rtt);
    summary.rtt_ms = rtt.map(|d| d.as_secs_f64() * 1000.0);
    summary.rtcp_received = rtcp_received;
    let _ = reports.try_send(LegReport::Summary { call, summary });
}

/// Finalises a recording and says how it went.
fn finish_recording(call: CallRef, recorder: Recorder, path: PathBuf, samples: u64, rate: u32) -> LegReport {
    let seconds = samples as f64 / rate.max(1) as f64;
    let error = recorder.finish().err().map(|e| e.to_string());
    LegReport::RecordingDone {
        call,
        path,
        seconds,
        error,
    }
}

/// The wallclock as a 64-bit NTP timestamp (RFC 3550 §4: seconds since 1900 . fraction).
fn ntp_now() -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ((d.as_secs() + NTP_UNIX_OFFSET) << 32) | (((d.subsec_nanos() as u64) << 32) / 1_000_000_000)
}

fn summarise(
    stats: Option<&ReceiveStats>,
    jitter: Option<&JitterBuffer>,
    codec: Option<&CodecPair>,
    foreign: u64,
    rtt: Option<Duration>,
) -> LegSummary {
    let (Some(s), Some(c)) = (stats, codec) else {
        return LegSummary {
            foreign_packets: foreign,
            ..LegSummary::default()
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
    LegSummary {
        packets_received: s.received(),
        packets_lost: lost,
        jitter_ms,
        mos: mos(r),
        foreign_packets: foreign,
        rtt_ms: None,
        rtcp_received: 0,
    }
}
