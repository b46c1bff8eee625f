//! The conference mixer per 20 ms tick (16 kHz rooms, three members talking, the rest
//! sending near-silence: a realistic meeting), in rooms of 3, 10, 100 and 1,000 members.
//! Divide by the member count for the cost per member.
//!
//! - `mixer_tick_16k`: the pure mix (sum, N-1, limiter, talk detection, groups).
//! - `room_tick_pcmu` / `room_tick_opus`: a whole room tick as a mixer thread runs it, over
//!   real loopback sockets: read every member's RTP packet, jitter buffer, decode, resample
//!   to the room, mix, encode once per group, resample back, packetise and send. The packets
//!   the members send are written before each timed tick and not counted.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::net::UdpSocket;
use std::time::{Duration, Instant};
use tolk::media::codec::Encoder;
use tolk::media::codec::g711::{G711Encoder, Law};
use tolk::media::codec::opus::OpusEncoder;
use tolk::media::session::{Codec, Direction, NegotiatedMedia};
use tolk::media::stream::{MediaStream, StreamStart};
use tolk::room::mixer::{MemberOptions, Mixer, MixerConfig};
use tolk::room::scheduler::{LiveRoom, Scratch, Seat, TICK};

fn voice(v: usize, n: usize, rate: f64) -> Vec<i16> {
    (0..n)
        .map(|i| (6000.0 * (2.0 * std::f64::consts::PI * (300.0 + 170.0 * v as f64) * i as f64 / rate).sin()) as i16)
        .collect()
}

fn hush(n: usize) -> Vec<i16> {
    (0..n).map(|i| ((i * 7919) % 41) as i16 - 20).collect()
}

fn pure_mix(c: &mut Criterion) {
    let cfg = MixerConfig::default();
    let n = cfg.frame_len();
    let voices: Vec<Vec<i16>> = (0..3).map(|v| voice(v, n, cfg.rate as f64)).collect();
    let hush = hush(n);
    let mut g = c.benchmark_group("mixer_tick_16k");
    for members in [3usize, 10, 100, 1000] {
        let mut m = Mixer::new(cfg);
        for id in 0..members as u64 {
            m.add(id, MemberOptions::default());
        }
        g.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, &members| {
            b.iter(|| {
                for id in 0..members as u64 {
                    let frame = if (id as usize) < 3 { &voices[id as usize] } else { &hush };
                    m.push(id, frame);
                }
                m.mix();
                std::hint::black_box(m.groups().len())
            })
        });
    }
    g.finish();
}

/// A member's far end: where it sends from (and where the mix goes, unread).
struct Far {
    sock: UdpSocket,
    to: std::net::SocketAddr,
    /// Held so the member counts as having a leg (the room drops members whose leg is gone).
    _back: tokio::sync::oneshot::Receiver<Box<MediaStream>>,
}

fn room_with(members: usize, codec: Codec) -> (LiveRoom, Vec<Far>) {
    let mut room = LiveRoom::new("bench", MixerConfig::default());
    let now = Instant::now();
    let mut far = Vec::new();
    for call in 0..members as u64 {
        let gw = UdpSocket::bind("127.0.0.1:0").unwrap();
        gw.set_nonblocking(true).unwrap();
        let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
        rtcp.set_nonblocking(true).unwrap();
        let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let media = NegotiatedMedia {
            remote_rtp: Some(phone.local_addr().unwrap()),
            codec,
            payload_type: if codec == Codec::Opus { 111 } else { 0 },
            // Trunks offer RFC 4733 events, so no in-band DTMF detector runs.
            telephone_event: Some(101),
            ptime_ms: 20,
            direction: Direction::SendRecv,
            fmtp: None,
            srtp: None,
        };
        let to = gw.local_addr().unwrap();
        let (give_back, back) = tokio::sync::oneshot::channel();
        let start = StreamStart {
            id: call,
            local_port: to.port(),
            now,
            ntp: 0,
            seed: call,
        };
        let seat = Seat {
            call,
            stream: Box::new(MediaStream::new(start, Some(media))),
            rtp: gw,
            rtcp,
            give_back,
            reports: Box::new(|_| true),
            rtp_timeout: Duration::from_secs(3600),
        };
        room.join(Box::new(seat), MemberOptions::default());
        far.push(Far {
            sock: phone,
            to,
            _back: back,
        });
    }
    (room, far)
}

/// RTP payloads the members send: three voices, and near-silence for the rest. Each is the
/// sixth frame of its own encoder fed the same signal (steady state: no lookahead from another
/// signal leaks into it).
fn payloads(codec: Codec) -> (Vec<Vec<u8>>, Vec<u8>) {
    let (rate, n) = if codec == Codec::Opus {
        (48_000.0, 960)
    } else {
        (8_000.0, 160)
    };
    let steady = |pcm: &[i16]| {
        let mut enc: Box<dyn Encoder> = match codec {
            Codec::Opus => Box::new(OpusEncoder::new(48_000).unwrap()),
            _ => Box::new(G711Encoder::new(Law::Ulaw)),
        };
        let mut out = Vec::new();
        for _ in 0..6 {
            out.clear();
            enc.encode(pcm, &mut out);
        }
        out
    };
    let voices = (0..3).map(|v| steady(&voice(v, n, rate))).collect();
    (voices, steady(&hush(n)))
}

fn room_tick(c: &mut Criterion, codec: Codec, name: &str) {
    let (voices, quiet) = payloads(codec);
    let ts_step = if codec == Codec::Opus { 960 } else { 160 };
    let pt = if codec == Codec::Opus { 111 } else { 0 };
    let mut g = c.benchmark_group(name);
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    for members in [3usize, 10, 100, 1000] {
        let (mut room, far) = room_with(members, codec);
        let mut scratch = Scratch::default();
        let start = Instant::now();
        let mut tick = 0u64;
        let mut pkt = Vec::new();
        g.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    for (i, f) in far.iter().enumerate() {
                        let payload = if i < 3 { &voices[i] } else { &quiet };
                        tolk::rtp::packet::build(
                            &mut pkt,
                            pt,
                            tick == 0,
                            tick as u16,
                            (tick as u32).wrapping_mul(ts_step),
                            i as u32,
                            payload,
                        );
                        let _ = f.sock.send_to(&pkt, f.to);
                    }
                    let now = start + TICK * tick as u32;
                    let t = Instant::now();
                    room.tick(now, tick, &mut scratch);
                    spent += t.elapsed();
                    tick += 1;
                }
                spent
            })
        });
        eprintln!(
            "{name}/{members}: {:.2} encodes per tick",
            room.encodes() as f64 / tick.max(1) as f64
        );
    }
    g.finish();
}

fn rooms(c: &mut Criterion) {
    room_tick(c, Codec::Pcmu, "room_tick_pcmu");
    room_tick(c, Codec::Opus, "room_tick_opus");
}

criterion_group!(benches, pure_mix, rooms);
criterion_main!(benches);
