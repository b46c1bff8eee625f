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
#[path = "support/live_room.rs"]
mod live_room;
use live_room::{Far, Ticker, hush, voice};
use std::time::{Duration, Instant};
use tolk::media::codec::Encoder;
use tolk::media::codec::g711::{G711Encoder, Law};
use tolk::media::codec::opus::OpusEncoder;
use tolk::media::session::Codec;
use tolk::room::mixer::{MemberOptions, Mixer, MixerConfig};
use tolk::room::scheduler::LiveRoom;

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

fn room_with(members: usize, codec: Codec) -> (LiveRoom, Vec<Far>) {
    let mut room = LiveRoom::new("bench", MixerConfig::default());
    let now = Instant::now();
    let pt = if codec == Codec::Opus { 111 } else { 0 };
    let mut far = Vec::new();
    for call in 0..members as u64 {
        let (seat, f) = live_room::seat(call, codec, pt, now);
        room.join(seat, MemberOptions::default());
        far.push(f);
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
        let mut ticker = Ticker::new();
        g.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter_custom(|iters| {
                ticker.run(&mut room, &far, iters, |i| {
                    (if i < 3 { &voices[i][..] } else { &quiet[..] }, pt, ts_step)
                })
            })
        });
        eprintln!(
            "{name}/{members}: {:.2} encodes per tick",
            room.encodes() as f64 / ticker.ticks().max(1) as f64
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
