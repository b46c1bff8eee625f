//! The conference mixer per 20 ms tick (16 kHz), rooms of 3, 10, 100 and 1,000 members of
//! whom three talk (a realistic meeting) - per tick; divide by the member count for the cost
//! per member. Encoding is not included (see `media` for per-codec costs and the mixer's
//! shared groups for how many encodings a tick needs).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tolk::room::mixer::{MemberOptions, Mixer, MixerConfig};

fn bench(c: &mut Criterion) {
    let cfg = MixerConfig::default();
    let n = cfg.frame_len();
    let voices: Vec<Vec<i16>> = (0..3)
        .map(|v| {
            (0..n)
                .map(|i| (6000.0 * (i as f64 * (0.05 + 0.02 * v as f64)).sin()) as i16)
                .collect()
        })
        .collect();
    let hush: Vec<i16> = (0..n).map(|i| ((i * 7919) % 41) as i16 - 20).collect();
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

criterion_group!(benches, bench);
criterion_main!(benches);
