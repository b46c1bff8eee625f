//! Media hot paths per 20 ms frame: G.711 encode/decode, in-band DTMF detection, RFC 4733
//! receive, RTP parse and RFC 3550 statistics.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tolk::media::codec::g711::{G711Decoder, G711Encoder, Law};
use tolk::media::codec::{Decoder, Encoder};
use tolk::media::dtmf::inband::{InbandDetector, generate};
use tolk::media::dtmf::rfc4733::EventReceiver;
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
    let speech = pcm.clone();
    let tone = generate('5', 20, -10.0, 0.0, 0.0);
    let mut det = InbandDetector::default();
    g.bench_function("dtmf_inband/speech", |b| b.iter(|| det.process(black_box(&speech))));
    let mut det = InbandDetector::default();
    g.bench_function("dtmf_inband/tone", |b| b.iter(|| det.process(black_box(&tone))));
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
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
