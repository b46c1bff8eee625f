//! Media hot paths per 20 ms frame: G.711 encode/decode, in-band DTMF detection, RFC 4733
//! receive, RTP parse and RFC 3550 statistics.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tolk::media::codec::g711::{G711Decoder, G711Encoder, Law};
use tolk::media::codec::g722::{G722Decoder, G722Encoder};
use tolk::media::codec::opus::{OpusDecoder, OpusEncoder};
use tolk::media::codec::{Decoder, Encoder};
use tolk::media::dtmf::inband::{InbandDetector, generate};
use tolk::media::dtmf::rfc4733::EventReceiver;
use tolk::media::jitter::{JitterBuffer, JitterConfig};
use tolk::rtp::{packet, stats::ReceiveStats};

fn bench(c: &mut Criterion) {
    let pcm: Vec<i16> = (0..160).map(|i| (9000.0 * (i as f32 * 0.37).sin()) as i16).collect();
    let mut g = c.benchmark_group("media_per_20ms_frame");
    for law in [Law::Ulaw, Law::Alaw] {
        let mut enc = G711Encoder::new(law);
        let mut dec = G711Decoder::new(law);
        let mut payload = Vec::with_capacity(160);
        enc.encode(&pcm, &mut payload);
        let mut out = Vec::with_capacity(160);
        g.bench_function(format!("g711_encode/{law:?}"), |b| {
            b.iter(|| {
                payload.clear();
                enc.encode(black_box(&pcm), &mut payload);
            })
        });
        g.bench_function(format!("g711_decode/{law:?}"), |b| {
            b.iter(|| {
                out.clear();
                dec.decode(black_box(&payload), &mut out);
            })
        });
    }
    // G.722: 20 ms at 16 kHz.
    let pcm16: Vec<i16> = (0..320).map(|i| (9000.0 * (i as f32 * 0.19).sin()) as i16).collect();
    let mut enc = G722Encoder::default();
    let mut dec = G722Decoder::default();
    let mut payload = Vec::with_capacity(160);
    enc.encode(&pcm16, &mut payload);
    let mut out = Vec::with_capacity(320);
    g.bench_function("g722_encode", |b| {
        b.iter(|| {
            payload.clear();
            enc.encode(black_box(&pcm16), &mut payload);
        })
    });
    g.bench_function("g722_decode", |b| {
        b.iter(|| {
            out.clear();
            dec.decode(black_box(&payload), &mut out);
        })
    });
    // Opus: 20 ms mono at 16 and 48 kHz.
    for rate in [16_000u32, 48_000] {
        let n = (rate / 50) as usize;
        let frame: Vec<i16> = (0..n)
            .map(|i| (9000.0 * (i as f32 * 2.0 * 440.0 * std::f32::consts::PI / rate as f32).sin()) as i16)
            .collect();
        let mut enc = OpusEncoder::new(rate).unwrap();
        let mut dec = OpusDecoder::new(rate).unwrap();
        let mut payload = Vec::with_capacity(400);
        enc.encode(&frame, &mut payload);
        let mut out = Vec::with_capacity(n);
        g.bench_function(format!("opus_encode/{rate}"), |b| {
            b.iter(|| {
                payload.clear();
                enc.encode(black_box(&frame), &mut payload);
            })
        });
        enc.encode(&frame, &mut payload);
        let packet = payload.clone();
        g.bench_function(format!("opus_decode/{rate}"), |b| {
            b.iter(|| {
                out.clear();
                dec.decode(black_box(&packet), &mut out);
            })
        });
    }
    // Opus encoding of a voice-like signal (glottal-like harmonics, syllable envelope) at
    // 16 kHz by complexity: what `room.opus_complexity` buys. libopus switches the SILK
    // noise-shaping quantiser from the plain one to the delayed-decision one above 1.
    let voice: Vec<i16> = {
        let mut phase = 0.0f32;
        (0..32_000)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                let pitch = 170.0 + 50.0 * (2.0 * std::f32::consts::PI * 0.7 * t).sin();
                phase += 2.0 * std::f32::consts::PI * pitch / 16_000.0;
                let v: f32 = (1..20).map(|h| (h as f32 * phase).sin() / h as f32).sum();
                let env = 0.6 + 0.4 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
                (v * env * 6000.0) as i16
            })
            .collect()
    };
    for complexity in [0, 1, 2, 3, 5, 9] {
        let mut enc = OpusEncoder::new(16_000).unwrap();
        enc.set_complexity(complexity);
        let mut frames = voice.chunks_exact(320).cycle();
        g.bench_function(format!("opus_encode_voice_16k/complexity_{complexity}"), |b| {
            b.iter(|| {
                payload.clear();
                enc.encode(black_box(frames.next().unwrap()), &mut payload);
            })
        });
    }
    // Jitter buffer: one push and one pop per 20 ms, steady stream.
    let mut jb = JitterBuffer::new(JitterConfig::new(8000));
    let t0 = std::time::Instant::now();
    let mut k = 0u32;
    let frame_payload = [0u8; 160];
    g.bench_function("jitter_push_pop", |b| {
        b.iter(|| {
            k += 1;
            let at = t0 + std::time::Duration::from_millis(20 * k as u64);
            jb.push(at, k * 160, black_box(&frame_payload));
            if let tolk::media::jitter::Playout::Frame(p) = jb.pop(at + std::time::Duration::from_millis(20)) {
                jb.recycle(black_box(p));
            }
        })
    });
    let speech = pcm.clone();
    let tone = generate('5', 20, -10.0, 0.0, 0.0);
    let mut det = InbandDetector::default();
    g.bench_function("dtmf_inband/speech", |b| b.iter(|| det.process(black_box(&speech))));
    let mut det = InbandDetector::default();
    g.bench_function("dtmf_inband/tone", |b| b.iter(|| det.process(black_box(&tone))));
    // Line noise (a quiet caller, most frames of most calls): too little energy for a tone.
    let noise: Vec<i16> = (0..160).map(|i| ((i * 7919) % 41) as i16 - 20).collect();
    let mut det = InbandDetector::default();
    g.bench_function("dtmf_inband/line_noise", |b| b.iter(|| det.process(black_box(&noise))));
    let mut rx = EventReceiver::new();
    let event = [5u8, 10, 0x01, 0x40];
    g.bench_function("rfc4733_receive", |b| {
        b.iter(|| rx.receive(black_box(1000), false, black_box(&event)))
    });
    let mut pkt = Vec::new();
    packet::build(&mut pkt, 0, false, 1, 160, 7, &[0xffu8; 160]);
    g.bench_function("rtp_parse", |b| b.iter(|| packet::parse(black_box(&pkt))));
    let mut st = ReceiveStats::new(1);
    let mut seq = 1u16;
    g.bench_function("rtp_stats_update", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            st.update_seq(black_box(seq));
            st.update_jitter(seq as u32 * 160 + 3, seq as u32 * 160);
        })
    });
    srtp(&mut g);
    g.finish();
}

/// SRTP per packet (RFC 3711): protect one 20 ms PCMU packet, and protect + unprotect it
/// (each iteration a new sequence number, as the replay window wants).
fn srtp(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    use tolk::rtp::srtp::{KeyMaterial, SrtpKeys, SrtpSession, Suite};
    for suite in Suite::OFFERED {
        let keys = SrtpKeys {
            suite,
            tag: 1,
            ours: KeyMaterial::from_bytes([1; 46]).for_suite(suite),
            theirs: KeyMaterial::from_bytes([2; 46]).for_suite(suite),
        };
        let mut sender = SrtpSession::new(&keys).unwrap();
        let mut receiver = SrtpSession::new(&keys.far_end()).unwrap();
        let mut pkt = Vec::with_capacity(200);
        // The round trip below must measure a packet that authenticates, not a refusal.
        packet::build(&mut pkt, 0, false, 1, 160, 11, &[0xffu8; 160]);
        let wire = sender.protect_rtp(&pkt).unwrap();
        assert_eq!(receiver.unprotect_rtp(&wire).unwrap()[..], pkt[..]);
        let mut seq = 0u16;
        g.bench_function(format!("srtp_protect/{}", suite.name()), |bn| {
            bn.iter(|| {
                seq = seq.wrapping_add(1);
                packet::build(&mut pkt, 0, false, seq, seq as u32 * 160, 7, &[0xffu8; 160]);
                black_box(sender.protect_rtp(&pkt))
            })
        });
        let mut seq = 0u16;
        g.bench_function(format!("srtp_protect_and_unprotect/{}", suite.name()), |bn| {
            bn.iter(|| {
                seq = seq.wrapping_add(1);
                packet::build(&mut pkt, 0, false, seq, seq as u32 * 160, 9, &[0xffu8; 160]);
                let wire = sender.protect_rtp(&pkt).unwrap();
                black_box(receiver.unprotect_rtp(&wire).is_ok())
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
