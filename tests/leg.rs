//! The media leg's commands over real loopback sockets: sending digits (RFC 4733 events and
//! in-band tones), playing a catalog prompt, and recording the call. A peer socket plays the
//! caller; what it receives is decoded and checked, not just counted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use tolk::call::leg::LegCommand;
use tolk::call::{LegReport, PortPool, spawn_leg};
use tolk::media::analysis::{rms, tone_power};
use tolk::media::codec::Decoder;
use tolk::media::codec::Encoder;
use tolk::media::codec::g711::{G711Decoder, G711Encoder, Law};
use tolk::media::dtmf::inband::InbandDetector;
use tolk::media::dtmf::rfc4733::{DigitEvent, EventReceiver};
use tolk::media_files::prompts::{PromptCatalog, read_mono_wav};
use tolk::rtp::packet;
use tolk::sip::dialog::CallRef;
use tolk::sip::sdp::{Codec, Direction, NegotiatedMedia};

const TE: u8 = 101;

struct Peer {
    socket: UdpSocket,
    reports: mpsc::Receiver<LegReport>,
    commands: mpsc::Sender<LegCommand>,
    leg_addr: SocketAddr,
    // Dropping the media sender ends the leg; keep it alive for the test.
    _media: tokio::sync::watch::Sender<Option<NegotiatedMedia>>,
}

async fn start(first_port: u16, telephone_event: Option<u8>) -> Peer {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let pool = PortPool::new("127.0.0.1".parse().unwrap(), first_port, first_port + 40);
    let port = pool.allocate().expect("a free RTP port on loopback");
    let leg_addr: SocketAddr = format!("127.0.0.1:{}", port.port).parse().unwrap();
    let media = NegotiatedMedia {
        remote_rtp: Some(socket.local_addr().unwrap()),
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event,
        ptime_ms: 20,
        direction: Direction::SendRecv,
        fmtp: None,
        srtp: None,
    };
    let prompts = PromptCatalog::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sounds")).unwrap();
    let (tx, reports) = mpsc::channel(64);
    let handle = spawn_leg(
        CallRef(7),
        port,
        Some(media),
        Duration::from_secs(30),
        Some(Arc::new(prompts)),
        tx,
    );
    Peer {
        socket,
        reports,
        commands: handle.commands,
        leg_addr,
        _media: handle.media,
    }
}

/// Receives RTP until `stop` says so or `limit` passes; returns (payload type, marker,
/// timestamp, payload) per packet.
async fn receive_until(
    socket: &UdpSocket,
    limit: Duration,
    mut stop: impl FnMut(&[(u8, bool, u32, Vec<u8>)]) -> bool,
) -> Vec<(u8, bool, u32, Vec<u8>)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline && !stop(&got) {
        if let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_millis(100), socket.recv_from(&mut buf)).await
            && let Ok(p) = packet::parse(&buf[..n])
        {
            got.push((p.payload_type, p.marker, p.timestamp, p.payload.to_vec()));
        }
    }
    got
}

async fn report(peer: &mut Peer, want: impl Fn(&LegReport) -> bool) -> LegReport {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = tokio::time::timeout_at(deadline, peer.reports.recv())
            .await
            .expect("the leg reports in time")
            .expect("the leg is alive");
        if want(&r) {
            return r;
        }
    }
}

#[tokio::test]
async fn digits_go_out_as_rfc4733_events_when_negotiated() {
    let mut peer = start(47000, Some(TE)).await;
    peer.commands.send(LegCommand::SendDigits("159#".into())).await.unwrap();
    let packets = receive_until(&peer.socket, Duration::from_secs(5), |got| {
        got.iter()
            .filter(|p| p.0 == TE && p.3.len() == 4 && p.3[1] & 0x80 != 0)
            .count()
            >= 12
    })
    .await;
    let mut rx = EventReceiver::new();
    let mut digits = String::new();
    for (pt, marker, ts, payload) in &packets {
        assert_eq!(
            *pt, TE,
            "only telephone-events while digits are sent and nothing else plays"
        );
        for e in rx.receive(*ts, *marker, payload) {
            if let DigitEvent::Pressed { digit, .. } = e {
                digits.push(digit);
            }
        }
    }
    assert_eq!(digits, "159#");
    // Each press is its own event (its own timestamp) and starts with the marker bit.
    let starts: Vec<u32> = packets.iter().filter(|p| p.1).map(|p| p.2).collect();
    assert_eq!(starts.len(), 4);
    assert!(starts.windows(2).all(|w| w[0] != w[1]));
    match report(&mut peer, |r| matches!(r, LegReport::DigitsSent { .. })).await {
        LegReport::DigitsSent { digits, .. } => assert_eq!(digits, "159#"),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn digits_go_out_as_tones_without_telephone_event() {
    let mut peer = start(47100, None).await;
    peer.commands.send(LegCommand::SendDigits("42".into())).await.unwrap();
    let done = report(&mut peer, |r| matches!(r, LegReport::DigitsSent { .. })).await;
    let packets = receive_until(&peer.socket, Duration::from_millis(300), |_| false).await;
    assert!(matches!(done, LegReport::DigitsSent { ref digits, .. } if digits == "42"));
    let mut dec = G711Decoder::new(Law::Ulaw);
    let mut pcm = Vec::new();
    let mut detector = InbandDetector::default();
    let mut heard = String::new();
    // Packets sent before the report arrived are queued in the socket already.
    for (pt, _, _, payload) in &packets {
        assert_eq!(*pt, 0);
        pcm.clear();
        dec.decode(payload, &mut pcm);
        heard.extend(detector.process(&pcm));
    }
    assert_eq!(heard, "42");
}

#[tokio::test]
async fn a_prompt_plays_and_the_recording_holds_caller_and_prompt() {
    let mut peer = start(47200, Some(TE)).await;
    let dir = std::env::temp_dir().join(format!("tolk-leg-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("call.wav");
    let _ = std::fs::remove_file(&path);
    peer.commands
        .send(LegCommand::Mode(tolk::call::leg::LegMode::Silence))
        .await
        .unwrap();
    peer.commands.send(LegCommand::Record(path.clone())).await.unwrap();
    peer.commands.send(LegCommand::Play("goodbye".into())).await.unwrap();

    // The caller sends a 1 kHz tone for 1.5 s while listening.
    let mut enc = G711Encoder::new(Law::Ulaw);
    let mut heard = Vec::new();
    let mut dec = G711Decoder::new(Law::Ulaw);
    let mut buf = [0u8; 2048];
    let mut pkt = Vec::new();
    let mut payload = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for i in 0..75u32 {
        tick.tick().await;
        let frame: Vec<i16> = (0..160)
            .map(|n| {
                let t = (i * 160 + n) as f64 / 8000.0;
                (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
            })
            .collect();
        payload.clear();
        enc.encode(&frame, &mut payload);
        packet::build(&mut pkt, 0, i == 0, i as u16, i * 160, 0x1234, &payload);
        peer.socket.send_to(&pkt, peer.leg_addr).await.unwrap();
        while let Ok((n, _)) = peer.socket.try_recv_from(&mut buf) {
            if let Ok(p) = packet::parse(&buf[..n]) {
                dec.decode(p.payload, &mut heard);
            }
        }
    }
    match report(&mut peer, |r| matches!(r, LegReport::PlaybackDone { .. })).await {
        LegReport::PlaybackDone { what, ok, .. } => assert!(ok && what == "goodbye"),
        _ => unreachable!(),
    }
    let tail = receive_until(&peer.socket, Duration::from_millis(200), |_| false).await;
    for (_, _, _, p) in &tail {
        dec.decode(p, &mut heard);
    }
    peer.commands.send(LegCommand::StopRecording).await.unwrap();
    let (rec_path, seconds) = match report(&mut peer, |r| matches!(r, LegReport::RecordingDone { .. })).await {
        LegReport::RecordingDone {
            path, seconds, error, ..
        } => {
            assert!(error.is_none(), "{error:?}");
            (path, seconds)
        }
        _ => unreachable!(),
    };
    assert_eq!(rec_path, path);

    // The caller heard the prompt: the catalog's audio, at a level, and none of their tone.
    let catalog = PromptCatalog::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sounds")).unwrap();
    let prompt = catalog.pcm("goodbye", 8000).unwrap();
    assert!(
        heard.len() >= prompt.len() * 9 / 10,
        "{} of {} samples",
        heard.len(),
        prompt.len()
    );
    assert!(rms(&heard) > 0.3 * rms(&prompt), "{} vs {}", rms(&heard), rms(&prompt));
    assert!(share_at(&heard, 1000.0) < 0.02, "{}", share_at(&heard, 1000.0));

    // The recording holds both the caller's tone and the prompt, in real time.
    let (rec, rate) = read_mono_wav(&path).unwrap();
    assert_eq!(rate, 8000);
    assert!((1.0..3.0).contains(&seconds), "{seconds}");
    assert_eq!(rec.len() as f64 / 8000.0, seconds);
    // The caller's tone is a large part of it, and the rest (the prompt) is there too.
    let share = share_at(&rec, 1000.0);
    assert!((0.2..0.95).contains(&share), "share of the recording at 1 kHz: {share}");
    let residual = rms(&rec).powi(2) * (1.0 - share);
    assert!(
        residual > 0.05 * rms(&prompt).powi(2),
        "prompt energy in the recording: {residual}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The share of a signal's energy at `freq` (Goertzel power over mean square; a pure tone
/// phase-continuous over the whole signal gives 1).
fn share_at(samples: &[i16], freq: f64) -> f64 {
    2.0 * tone_power(samples, freq, 8000) / samples.len().max(1) as f64 / rms(samples).powi(2).max(1.0)
}

#[tokio::test]
async fn a_recording_that_cannot_be_created_is_reported_not_silently_dropped() {
    let mut peer = start(47300, None).await;
    let path = PathBuf::from("/nonexistent-dir/tolk/call.wav");
    peer.commands.send(LegCommand::Record(path.clone())).await.unwrap();
    match report(&mut peer, |r| matches!(r, LegReport::RecordingDone { .. })).await {
        LegReport::RecordingDone { path: p, error, .. } => {
            assert_eq!(p, path);
            assert!(error.unwrap().contains("nonexistent-dir"));
        }
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn after_a_pause_the_timestamp_follows_the_clock_and_the_marker_starts_the_talkspurt() {
    let peer = start(47400, None).await;
    peer.commands.send(LegCommand::Tone("440/200".into())).await.unwrap();
    let first = receive_until(&peer.socket, Duration::from_secs(2), |g| g.len() >= 10).await;
    // The tone is 200 ms: ten packets, then nothing for a while.
    let quiet = receive_until(&peer.socket, Duration::from_millis(400), |_| false).await;
    assert!(quiet.len() <= 1, "{} packets after the tone", quiet.len());
    let started = std::time::Instant::now();
    peer.commands.send(LegCommand::Tone("440/100".into())).await.unwrap();
    let second = receive_until(&peer.socket, Duration::from_secs(2), |g| !g.is_empty()).await;
    let pause_ms = 400.0 + started.elapsed().as_secs_f64() * 1000.0;
    assert!(first[0].1, "the first packet carries the marker");
    assert!(first[1..].iter().all(|p| !p.1));
    for w in first.windows(2) {
        assert_eq!(w[1].2.wrapping_sub(w[0].2), 160, "consecutive frames are 160 apart");
    }
    let last = quiet.last().unwrap_or(first.last().unwrap());
    assert!(second[0].1, "a new talkspurt carries the marker");
    let jump_ms = second[0].2.wrapping_sub(last.2) as f64 / 8.0;
    assert!(
        jump_ms >= 300.0 && jump_ms <= pause_ms + 100.0,
        "timestamp moved {jump_ms} ms over a pause of about {pause_ms} ms"
    );
}
