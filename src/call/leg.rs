//! The media leg of a call: the I/O shell that drives the call's [`MediaStream`] (sans-IO,
//! [`crate::media::stream`]) on one RTP/RTCP socket pair while the call is on its own, and
//! hands it to a room's mixer thread while the call is in a room. It plays prompts and tones,
//! records, sends digits, and echoes for the echo flow; what it finds goes to the gateway as
//! [`LegReport`]s.

use super::ports::RtpPort;
pub use crate::media::codec::pair::pcm_rate;
use crate::media::dtmf::inband;
use crate::media::prompt::PromptPlayer;
pub use crate::media::stream::DigitSource;
use crate::media::stream::{Datagram, MediaStream, Received, StreamEvent, StreamStart, StreamSummary};
use crate::media::tone::ToneGenerator;
use crate::media_files::prompts::PromptCatalog;
use crate::media_files::recorder::{RecordFormat, Recorder};
use crate::room::mixer::MemberOptions;
use crate::room::scheduler::{Command, MemberReport, Seat, Shard};
use crate::sip::dialog::CallRef;
use crate::sip::sdp::NegotiatedMedia;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// A leg with no packet for this long and nothing to play stops ticking until one arrives.
const IDLE_AFTER: Duration = Duration::from_millis(500);

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
    /// A member started or stopped talking in its room.
    Talking { call: CallRef, talking: bool },
    /// The room gave the stream back (the member left or was taken out).
    LeftRoom { call: CallRef },
    /// The room's mixer thread could not take the member (queue full or gone).
    RoomRefused { call: CallRef },
    /// The leg ended; its quality summary.
    Summary { call: CallRef, summary: StreamSummary },
}

impl LegReport {
    /// What a room said about `call`'s member, as the gateway hears it from a leg.
    pub fn from_room(call: CallRef, report: MemberReport) -> LegReport {
        match report {
            MemberReport::Stream(event) => LegReport::from_stream(call, event),
            MemberReport::PlaybackDone { what, ok } => LegReport::PlaybackDone { call, what, ok },
            MemberReport::Talking(talking) => LegReport::Talking { call, talking },
            MemberReport::TimedOut => LegReport::TimedOut { call },
        }
    }

    fn from_stream(call: CallRef, event: StreamEvent) -> LegReport {
        match event {
            StreamEvent::Digit { digit, source } => LegReport::Digit { call, digit, source },
            StreamEvent::DigitsSent { digits } => LegReport::DigitsSent { call, digits },
        }
    }
}

/// Passes on what the stream found.
fn forward_events(stream: &mut MediaStream, call: CallRef, reports: &mpsc::Sender<LegReport>) {
    while let Some(e) = stream.poll_event() {
        let _ = reports.try_send(LegReport::from_stream(call, e));
    }
}

impl Datagram for tokio::net::UdpSocket {
    fn send_now(&self, buf: &[u8], dest: SocketAddr) -> bool {
        self.try_send_to(buf, dest).is_ok()
    }
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
    /// Hand the call's stream to a room's mixer thread (`rate`: the room's mixing rate).
    /// While in the room, `Play` and `Stop` reach the member through the room; other
    /// commands are refused until it leaves.
    JoinRoom {
        shard: Shard,
        room: Arc<str>,
        opts: MemberOptions,
        rate: u32,
        /// The room waits for a moderator (members hear music).
        waiting: bool,
    },
    /// Take the stream back from the room.
    LeaveRoom,
}

enum Playback {
    Prompt(PromptPlayer),
    Tone(ToneGenerator),
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
        let _ = reports.try_send(done_report(call, what));
    }
}

fn done_report(call: CallRef, what: String) -> LegReport {
    match what.strip_prefix("digits:") {
        Some(d) => LegReport::DigitsSent {
            call,
            digits: d.to_string(),
        },
        None => LegReport::PlaybackDone { call, what, ok: true },
    }
}

/// The leg while its stream is in a room: the room's thread has it.
struct InRoom {
    shard: Shard,
    /// The room's mixing rate (prompts to the member are made at it).
    rate: u32,
    back: oneshot::Receiver<Box<MediaStream>>,
}

/// Duplicates of the port's sockets for a mixer thread (the same open sockets).
fn dup_sockets(port: &RtpPort) -> std::io::Result<(std::net::UdpSocket, std::net::UdpSocket)> {
    Ok((port.socket.try_clone()?, port.rtcp.try_clone()?))
}

/// The port's sockets registered with the gateway's reactor while the leg drives the stream;
/// dropped (deregistered) while a room has it.
struct Registered {
    rtp: tokio::net::UdpSocket,
    rtcp: tokio::net::UdpSocket,
}

fn register(port: &RtpPort) -> std::io::Result<Registered> {
    let (rtp, rtcp) = dup_sockets(port)?;
    Ok(Registered {
        rtp: tokio::net::UdpSocket::from_std(rtp)?,
        rtcp: tokio::net::UdpSocket::from_std(rtcp)?,
    })
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
    let mut buf = vec![0u8; 2048];
    let mut rtcp_buf = vec![0u8; 1500];
    let initial = media_rx.borrow().clone();
    let start = StreamStart {
        id: call.0,
        local_port: port.port,
        now: Instant::now(),
        ntp: crate::media::stream::ntp_timestamp(std::time::SystemTime::now()),
        seed: fastrand::u64(..),
    };
    let mut stream = Some(Box::new(MediaStream::new(start, initial)));
    let mut in_room: Option<InRoom> = None;
    let mut recording: Option<(Recorder, PathBuf, u64)> = None;
    let mut record_frame: Vec<i16> = Vec::with_capacity(960);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut ended = false;
    let mut sockets = match register(&port) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(call = call.0, error = %e, "cannot register the RTP sockets; the leg ends");
            None
        }
    };
    while !ended {
        // While a room has the stream the leg only relays commands and session changes, and
        // waits for the stream to come back.
        if let Some(room) = in_room.as_mut() {
            tokio::select! {
                back = &mut room.back => {
                    in_room = None;
                    match back {
                        Ok(s) => {
                            stream = Some(s);
                            sockets = register(&port).ok();
                            tick.reset();
                            // The flow waits for this: it must not be lost.
                            let _ = reports.send(LegReport::LeftRoom { call }).await;
                        }
                        Err(_) => {
                            // The mixer thread is gone: without media the call must end.
                            let _ = reports.send(LegReport::TimedOut { call }).await;
                            break;
                        }
                    }
                }
                changed = media_rx.changed() => {
                    let media = if changed.is_err() { None } else { Some(media_rx.borrow().clone()) };
                    let cmd = match media {
                        Some(media) => Command::Media { call: call.0, media },
                        None => {
                            ended = true;
                            Command::Leave { call: call.0 }
                        }
                    };
                    let _ = room.shard.send(cmd);
                    if ended {
                        // The call ended: take the stream back for RTCP BYE and the summary.
                        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), &mut room.back).await {
                            stream = Some(s);
                        }
                    }
                }
                Some(cmd) = commands.recv() => {
                    let room_rate = room.rate;
                    match cmd {
                        LegCommand::LeaveRoom => { let _ = room.shard.send(Command::Leave { call: call.0 }); }
                        // Prompts to a member in a room are the room's (announcements), not the
                        // flow's: reported as `room:NAME`.
                        LegCommand::Play(name) => match prompts.as_ref().map(|p| p.pcm(&name, room_rate)) {
                            Some(Ok(pcm)) => { let _ = room.shard.send(Command::PlayTo { call: call.0, pcm, what: format!("room:{name}") }); }
                            _ => { let _ = reports.try_send(LegReport::PlaybackDone { call, what: format!("room:{name}"), ok: false }); }
                        },
                        LegCommand::Stop => { let _ = room.shard.send(Command::StopTo { call: call.0 }); }
                        _ => {
                            // Anything else is refused until the member leaves the room.
                            let _ = reports.try_send(LegReport::PlaybackDone { call, what: "room:refused".into(), ok: false });
                        }
                    }
                }
            }
            continue;
        }
        let (Some(st), Some(sock)) = (stream.as_mut(), sockets.as_ref()) else {
            break;
        };
        // What the stream found on the last turn (digits pressed or sent), before waiting.
        forward_events(st, call, &reports);
        // An idle leg (nothing received lately, nothing to play) does not tick: thousands of
        // silent or held calls cost no wake-ups. It wakes for a packet, a command, the end of
        // the call, or the RTP timeout. A recording keeps the leg ticking so that silence is
        // recorded in real time.
        let idle = st.last_packet().elapsed() >= IDLE_AFTER;
        let active = playback.is_some() || recording.is_some() || st.sending_digits() || !idle;
        let timeout_at = tokio::time::Instant::from_std(st.last_packet() + rtp_timeout);
        tokio::select! {
            Some(cmd) = commands.recv() => {
                let rate = st.pcm_rate();
                // Something to play wakes an idle leg: restart the tick instead of bursting.
                let wake = |tick: &mut tokio::time::Interval, playing: bool| if idle && !playing { tick.reset() };
                match cmd {
                    LegCommand::Play(name) => {
                        match prompts.as_ref().map(|p| p.pcm(&name, rate)) {
                            Some(Ok(pcm)) => {
                                wake(&mut tick, playback.is_some() || recording.is_some());
                                end_playback(&mut playback, call, &reports);
                                playback = Some((Playback::Prompt(PromptPlayer::new(pcm)), name));
                            }
                            _ => { let _ = reports.try_send(LegReport::PlaybackDone { call, what: name, ok: false }); }
                        }
                    }
                    LegCommand::PlayPcm { pcm, what } => {
                        wake(&mut tick, playback.is_some() || recording.is_some());
                        end_playback(&mut playback, call, &reports);
                        playback = Some((Playback::Prompt(PromptPlayer::new(pcm)), what));
                    }
                    LegCommand::Tone(spec) => match ToneGenerator::new(&spec, rate, -10.0, false) {
                        Ok(g) => {
                            wake(&mut tick, playback.is_some() || recording.is_some());
                            end_playback(&mut playback, call, &reports);
                            playback = Some((Playback::Tone(g), spec));
                        }
                        Err(_) => { let _ = reports.try_send(LegReport::PlaybackDone { call, what: spec, ok: false }); }
                    },
                    LegCommand::Stop => end_playback(&mut playback, call, &reports),
                    LegCommand::Mode(m) => mode = m,
                    LegCommand::SendDigits(digits) => {
                        wake(&mut tick, playback.is_some() || recording.is_some());
                        if !st.queue_digits(&digits) {
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
                                wake(&mut tick, playback.is_some());
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
                    LegCommand::JoinRoom { shard, room, opts, rate: room_rate, waiting } => {
                        // The stream moves to the room's mixer thread; what plays here stops.
                        end_playback(&mut playback, call, &reports);
                        if let Some((r, path, samples)) = recording.take() {
                            let _ = reports.try_send(finish_recording(call, r, path, samples, rate));
                        }
                        match dup_sockets(&port) {
                            Ok((rtp, rtcp)) => {
                                let (give_back, back) = oneshot::channel();
                                let to_gateway = reports.clone();
                                let seat = Box::new(Seat {
                                    call: call.0,
                                    stream: stream.take().expect("the leg holds its stream"),
                                    rtp,
                                    rtcp,
                                    give_back,
                                    reports: Box::new(move |r| to_gateway.try_send(LegReport::from_room(call, r)).is_ok()),
                                    rtp_timeout,
                                });
                                match shard.send(Command::Join { room, seat, opts, waiting }) {
                                    Ok(()) => {
                                        in_room = Some(InRoom { shard, back, rate: room_rate });
                                        // Out of the reactor while the room reads the sockets.
                                        sockets = None;
                                    }
                                    Err(Command::Join { seat, .. }) => {
                                        stream = Some(seat.stream);
                                        let _ = reports.send(LegReport::RoomRefused { call }).await;
                                    }
                                    Err(_) => {}
                                }
                            }
                            Err(_) => { let _ = reports.send(LegReport::RoomRefused { call }).await; }
                        }
                    }
                    LegCommand::LeaveRoom => {}
                }
            }
            changed = media_rx.changed() => {
                if changed.is_err() { break; } // the call ended
                let new = media_rx.borrow().clone();
                st.set_media(new);
            }
            got = sock.rtp.recv_from(&mut buf) => {
                let Ok((n, from)) = got else { continue };
                if st.on_rtp(Instant::now(), from, &buf[..n]) != Received::Ignored && idle {
                    // Waking from idle: restart the tick instead of bursting the missed ones.
                    tick.reset();
                }
            }
            got = sock.rtcp.recv_from(&mut rtcp_buf) => {
                let Ok((n, from)) = got else { continue };
                st.on_rtcp(Instant::now(), from, &rtcp_buf[..n]);
            }
            _ = tokio::time::sleep_until(timeout_at), if !active => {
                let _ = reports.send(LegReport::TimedOut { call }).await;
                break;
            }
            _ = tick.tick(), if active => {
                let now = Instant::now();
                st.poll_rtcp(now, &sock.rtcp);
                if st.last_packet().elapsed() > rtp_timeout {
                    let _ = reports.send(LegReport::TimedOut { call }).await;
                    break;
                }
                if st.codec().is_none() { continue }
                let frame_samples = st.frame_samples();
                let received = st.pull(now);
                // What goes out: a prompt or tone if one plays, else the echo (or nothing).
                out_frame.clear();
                if let Some((pb, what)) = playback.as_mut() {
                    let more = match pb {
                        Playback::Prompt(p) => p.next_frame(frame_samples, &mut out_frame),
                        Playback::Tone(t) => t.next_frame(frame_samples, &mut out_frame),
                    };
                    if !more {
                        let _ = reports.try_send(done_report(call, std::mem::take(what)));
                        playback = None;
                    }
                }
                // The recording: the caller plus what we play them (not their own echo).
                if let Some((r, path, samples)) = recording.as_mut() {
                    record_frame.clear();
                    record_frame.resize(frame_samples, 0);
                    if received {
                        record_frame.iter_mut().zip(st.pcm()).for_each(|(o, s)| *o = *s);
                    }
                    record_frame.iter_mut().zip(&out_frame).for_each(|(o, s)| *o = o.saturating_add(*s));
                    *samples += frame_samples as u64;
                    if let Err(e) = r.write(&record_frame) {
                        let _ = reports.try_send(LegReport::RecordingDone { call, path: path.clone(), seconds: 0.0, error: Some(e.to_string()) });
                        recording = None;
                    }
                }
                // RFC 4733 digits replace the audio while a press is in progress.
                if st.send_digit_events(&sock.rtp) {
                    continue;
                }
                if out_frame.is_empty() && received && mode == LegMode::Echo {
                    out_frame.extend_from_slice(st.pcm());
                }
                if !out_frame.is_empty() {
                    st.send_pcm(now, &out_frame, &sock.rtp);
                }
            }
        }
    }
    if let Some((r, path, samples)) = recording.take() {
        let rate = stream.as_ref().map(|s| s.pcm_rate()).unwrap_or(8000);
        let _ = reports.try_send(finish_recording(call, r, path, samples, rate));
    }
    let summary = match stream {
        Some(mut s) => {
            forward_events(&mut s, call, &reports);
            s.finish(Instant::now(), &port.rtcp)
        }
        None => StreamSummary::default(),
    };
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
