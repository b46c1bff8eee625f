//! One interpretation event per 20 ms tick: a speaker on the floor, 4 booths each with a
//! live interpreter (all five talking), and 1,000 listeners spread over the floor and the
//! four channels, a third each on G.711, G.722 and Opus (16 kHz room).
//!
//! - `interpretation_mix/1000`: the pure mix (buses, bleed, groups) for the whole event.
//! - `interpretation_tick/1000`: the whole room tick as a mixer thread runs it, over real
//!   loopback sockets (read, jitter buffer, decode, mix, encode once per group, send). The
//!   packets the members send are written before each timed tick and not counted. Encodes
//!   per tick are printed: one per (mix, codec) heard, not one per listener.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
#[path = "support/live_room.rs"]
mod live_room;
use live_room::{Ticker, hush, voice};
use std::time::{Duration, Instant};
use tolk::media::codec::Encoder;
use tolk::media::codec::pair::encoder;
use tolk::media::session::Codec;
use tolk::room::interpretation::{Channel, Interpretation, Layout, Role};
use tolk::room::mixer::{Bus, MemberOptions, Mixer, MixerConfig};
use tolk::room::scheduler::LiveRoom;

const BOOTHS: u8 = 4;
const LISTENERS: usize = 1000;
/// The speaker and the interpreters.
const TALKERS: usize = 1 + BOOTHS as usize;
const CODECS: [Codec; 3] = [Codec::Pcmu, Codec::G722, Codec::Opus];

fn layout() -> Layout {
    Layout {
        floor_language: "English".into(),
        floor_prompt: None,
        channels: (1..=BOOTHS)
            .map(|n| Channel {
                number: n,
                language: format!("language {n}"),
                prompt: None,
                announce: None,
                retour: None,
            })
            .collect(),
        bleed_db: -18,
    }
}

/// Each member's options as the model places it: call 0 the speaker, 1..=4 the booths'
/// interpreters, the rest listeners (listener i hears bus i % 5 and uses codec i % 3).
fn event() -> Vec<(u64, Codec, MemberOptions)> {
    let mut model = Interpretation::new(layout());
    let mut members = Vec::new();
    for call in 0..(TALKERS + LISTENERS) as u64 {
        let i = call as usize;
        let (role, codec) = match i {
            0 => (Role::Speaker, Codec::Pcmu),
            i if i < TALKERS => (Role::Interpreter { booth: i as u8 }, Codec::Pcmu),
            i => (Role::Listener, CODECS[i % 3]),
        };
        model.join(call, role).unwrap();
        if role == Role::Listener {
            let bus = match i % 5 {
                0 => Bus::Floor,
                c => Bus::Channel(c as u8),
            };
            model.choose(call, bus).unwrap();
        }
        let p = model.placement(call).unwrap();
        let opts = MemberOptions {
            talk: p.talk,
            hear: p.hear,
            codec: tolk::room::scheduler::codec_id(codec),
            ..MemberOptions::default()
        };
        members.push((call, codec, opts));
    }
    members
}

fn pure_mix(c: &mut Criterion) {
    let cfg = MixerConfig::default();
    let n = cfg.frame_len();
    let members = event();
    let mut m = Mixer::new(cfg);
    for (call, _, opts) in &members {
        m.add(*call, *opts);
    }
    let voices: Vec<Vec<i16>> = (0..TALKERS).map(|v| voice(v, n, cfg.rate as f64)).collect();
    let quiet = hush(n);
    let mut g = c.benchmark_group("interpretation_mix");
    g.bench_with_input(BenchmarkId::from_parameter(LISTENERS), &LISTENERS, |b, _| {
        b.iter(|| {
            for (call, _, _) in &members {
                let i = *call as usize;
                m.push(*call, if i < TALKERS { &voices[i] } else { &quiet });
            }
            m.mix();
            std::hint::black_box(m.groups().len())
        })
    });
    g.finish();
    eprintln!("interpretation_mix/{LISTENERS}: {} groups a tick", m.groups().len());
}

fn payload_type(codec: Codec) -> u8 {
    match codec {
        Codec::Pcmu => 0,
        Codec::G722 => 9,
        _ => 111,
    }
}

/// (samples per frame at the codec's rate, RTP timestamp step).
fn framing(codec: Codec) -> (usize, u32) {
    match codec {
        Codec::Pcmu | Codec::Pcma => (160, 160),
        Codec::G722 => (320, 160),
        Codec::Opus => (960, 960),
    }
}

/// The sixth frame of a fresh encoder fed `pcm` (steady state).
fn steady(codec: Codec, pcm: &[i16]) -> Vec<u8> {
    let rate = if codec == Codec::Opus { 48_000 } else { 16_000 };
    let mut enc: Box<dyn Encoder> = encoder(codec, rate, None).unwrap();
    let mut out = Vec::new();
    for _ in 0..6 {
        out.clear();
        enc.encode(pcm, &mut out);
    }
    out
}

fn room_tick(c: &mut Criterion) {
    let members = event();
    let mut room = LiveRoom::new("summit", MixerConfig::default());
    let now = Instant::now();
    let mut far = Vec::new();
    let mut payloads = Vec::new();
    for (call, codec, opts) in &members {
        let (seat, f) = live_room::seat(*call, *codec, payload_type(*codec), now);
        room.join(seat, *opts);
        let (n, _) = framing(*codec);
        let rate = if *codec == Codec::Opus { 48_000.0 } else { 16_000.0 };
        let i = *call as usize;
        let pcm = if i < TALKERS { voice(i, n, rate) } else { hush(n) };
        payloads.push((steady(*codec, &pcm), *codec));
        far.push(f);
    }
    let mut ticker = Ticker::new();
    let mut g = c.benchmark_group("interpretation_tick");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    g.bench_with_input(BenchmarkId::from_parameter(LISTENERS), &LISTENERS, |b, _| {
        b.iter_custom(|iters| {
            ticker.run(&mut room, &far, iters, |i| {
                let (payload, codec) = &payloads[i];
                (&payload[..], payload_type(*codec), framing(*codec).1)
            })
        })
    });
    g.finish();
    eprintln!(
        "interpretation_tick/{LISTENERS}: {:.2} encodes per tick",
        room.encodes() as f64 / ticker.ticks().max(1) as f64
    );
}

criterion_group!(benches, pure_mix, room_tick);
criterion_main!(benches);
