//! The mixer's tests: pure, frames in and frames out.

use super::*;
use crate::media::analysis::tone_power;

const RATE: u32 = 16_000;

fn tone(freq: f64, amplitude: f64, tick: usize) -> Vec<i16> {
    let n = (RATE / 50) as usize;
    (0..n)
        .map(|i| {
            let t = (tick * n + i) as f64 / RATE as f64;
            (amplitude * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
        })
        .collect()
}

fn mixer() -> Mixer {
    Mixer::new(MixerConfig {
        rate: RATE,
        ..MixerConfig::default()
    })
}

#[test]
fn each_member_hears_the_others_and_not_itself() {
    let mut m = mixer();
    let freqs = [(1, 440.0), (2, 620.0), (3, 1000.0)];
    for (id, _) in freqs {
        m.add(id, MemberOptions::default());
    }
    let mut heard: Vec<Vec<i16>> = vec![Vec::new(); 4];
    for tick in 0..10 {
        for (id, f) in freqs {
            m.push(id, &tone(f, 6000.0, tick));
        }
        m.mix();
        for (id, _) in freqs {
            heard[id as usize].extend_from_slice(m.output_of(id).unwrap());
        }
    }
    for (id, own) in freqs {
        let out = &heard[id as usize];
        let own_power = tone_power(out, own, RATE);
        for (other, f) in freqs {
            if other != id {
                let p = tone_power(out, f, RATE);
                assert!(
                    p > 1000.0 * own_power.max(1e-9),
                    "member {id}: {f} Hz {p} vs own {own_power}"
                );
            }
        }
    }
    // Below the limiter's knee the N-1 mix is exact: each output is the sum of the other
    // two inputs, sample for sample (what leaks into the own-tone bin above is spectral
    // leakage of the others' tones, not the member's voice).
    for (id, _) in freqs {
        let expect: Vec<i32> = (0..10)
            .flat_map(|tick| {
                let parts: Vec<Vec<i16>> = freqs
                    .iter()
                    .filter(|(o, _)| *o != id)
                    .map(|(_, f)| tone(*f, 6000.0, tick))
                    .collect();
                (0..parts[0].len()).map(move |k| parts.iter().map(|p| p[k] as i32).sum::<i32>())
            })
            .collect();
        let got: Vec<i32> = heard[id as usize].iter().map(|&s| s as i32).collect();
        assert_eq!(got, expect, "member {id}");
    }
}

#[test]
fn a_mixer_moved_to_another_rate_keeps_who_is_talking() {
    let mut m = mixer();
    m.add(1, MemberOptions::default());
    m.add(2, MemberOptions::default());
    m.push(1, &tone(440.0, 6000.0, 0));
    m.mix();
    assert!(m.talk_changes().iter().any(|c| c.member == 1 && c.talking));
    let mut m8 = m.at_rate(MixerConfig {
        rate: 8000,
        ..MixerConfig::default()
    });
    assert_eq!(m8.config().frame_len(), 160);
    assert!(m8.is_talking(1) && !m8.is_talking(2));
    // Still talking at the new rate: no second "started talking".
    let loud: Vec<i16> = (0..160).map(|i| if i % 2 == 0 { 6000 } else { -6000 }).collect();
    m8.push(1, &loud);
    m8.mix();
    assert!(m8.talk_changes().is_empty(), "{:?}", m8.talk_changes());
    assert_eq!(m8.output_of(2).map(<[i16]>::len), Some(160));
}

#[test]
fn saturation_is_compressed_not_wrapped() {
    let mut m = mixer();
    for id in 0..10 {
        m.add(id, MemberOptions::default());
    }
    m.add(99, MemberOptions::default()); // a listener
    for tick in 0..5 {
        for id in 0..10 {
            m.push(id, &tone(300.0, 30_000.0, tick));
        }
        m.mix();
        let out = m.output_of(99).unwrap();
        let reference = tone(300.0, 30_000.0, tick);
        for (o, r) in out.iter().zip(&reference) {
            // Same sign as the (ten times too loud) input, and bounded.
            assert!(*r == 0 || (*o as i32).signum() == (*r as i32).signum(), "{o} vs {r}");
            assert!(o.unsigned_abs() <= 32_767);
        }
        assert!(out.iter().any(|&s| s.unsigned_abs() > 30_000), "loud stays loud");
    }
    // The limiter is monotonic and transparent below its knee.
    let mut last = i16::MIN;
    for x in (-400_000..400_000).step_by(997) {
        let y = limit(x);
        assert!(y >= last, "{x}");
        last = y;
    }
    assert_eq!(limit(12_345), 12_345);
    assert_eq!(limit(-20_000), -20_000);
}

#[test]
fn silent_listeners_share_one_encoding_per_codec() {
    let mut m = mixer();
    for id in 1..=3 {
        m.add(id, MemberOptions::default());
    }
    for id in 10..17 {
        m.add(id, MemberOptions::default());
    }
    for tick in 0..3 {
        for id in 1..=3 {
            m.push(id, &tone(300.0 + 100.0 * id as f64, 5000.0, tick));
        }
        m.mix();
        // 3 talkers each hear their own mix; 7 listeners share one: 4 encodings, not 10.
        assert_eq!(m.groups().len(), 4);
        let shared = m.groups().iter().find(|g| g.members.len() == 7).expect("shared group");
        assert!(shared.members.iter().all(|id| (10..17).contains(id)));
    }
    // Listeners on a second codec get their own shared encoding.
    for id in 13..17 {
        m.set(id, |o| o.codec = 1);
    }
    for id in 1..=3 {
        m.push(id, &tone(300.0 + 100.0 * id as f64, 5000.0, 3));
    }
    m.mix();
    assert_eq!(m.groups().len(), 5);
    // A listener with another listen gain hears a different frame.
    m.set(10, |o| o.listen_gain = 0.5);
    for id in 1..=3 {
        m.push(id, &tone(300.0 + 100.0 * id as f64, 5000.0, 4));
    }
    m.mix();
    assert_eq!(m.groups().len(), 6);
    let louder = crate::media::analysis::rms(m.output_of(11).unwrap());
    let quieter = crate::media::analysis::rms(m.output_of(10).unwrap());
    assert!((quieter / louder - 0.5).abs() < 0.02, "{quieter} / {louder}");
}

#[test]
fn muted_members_are_not_heard_and_deaf_members_hear_nothing() {
    let mut m = mixer();
    m.add(1, MemberOptions::default());
    m.add(
        2,
        MemberOptions {
            muted: true,
            ..MemberOptions::default()
        },
    );
    m.add(
        3,
        MemberOptions {
            deaf: true,
            ..MemberOptions::default()
        },
    );
    let mut out1 = Vec::new();
    let mut out2 = Vec::new();
    for tick in 0..5 {
        m.push(1, &tone(440.0, 6000.0, tick));
        m.push(2, &tone(620.0, 6000.0, tick));
        m.push(3, &tone(1000.0, 6000.0, tick));
        m.mix();
        out1.extend_from_slice(m.output_of(1).unwrap());
        out2.extend_from_slice(m.output_of(2).unwrap());
        assert!(m.output_of(3).is_none(), "deaf: no frame to send");
    }
    assert!(tone_power(&out1, 620.0, RATE) < 1e-3, "the muted member is not heard");
    assert!(tone_power(&out1, 1000.0, RATE) > 1.0, "the deaf member still is");
    assert!(tone_power(&out2, 440.0, RATE) > 1.0, "the muted member hears the room");
}

#[test]
fn the_recording_leaves_out_members_who_opted_out_but_they_are_heard_live() {
    let mut m = mixer();
    m.add(1, MemberOptions::default());
    m.add(
        2,
        MemberOptions {
            recorded: false,
            ..MemberOptions::default()
        },
    );
    m.add(3, MemberOptions::default());
    m.set_recording(true);
    let (mut recorded, mut heard_by_3) = (Vec::new(), Vec::new());
    for tick in 0..10 {
        m.push(1, &tone(440.0, 6000.0, tick));
        m.push(2, &tone(1000.0, 6000.0, tick));
        m.mix();
        recorded.extend_from_slice(m.record_frame());
        heard_by_3.extend_from_slice(m.output_of(3).unwrap());
    }
    let p = |x: &[i16], f| tone_power(x, f, RATE);
    assert!(
        p(&recorded, 440.0) > 1000.0 * p(&recorded, 1000.0).max(1.0),
        "2 is not recorded"
    );
    assert!(
        p(&heard_by_3, 1000.0) > 1000.0 * p(&heard_by_3, 2000.0).max(1.0),
        "2 is heard live"
    );
}

#[test]
fn quiet_lines_do_not_contribute_and_talk_has_a_hangover() {
    let mut m = Mixer::new(MixerConfig {
        rate: RATE,
        talk_threshold_dbfs: -45.0,
        hangover_frames: 3,
        ..MixerConfig::default()
    });
    m.add(1, MemberOptions::default());
    m.add(2, MemberOptions::default());
    // Line noise at about -66 dBFS: below the threshold, left out of the mix.
    m.push(1, &tone(200.0, 20.0, 0));
    m.mix();
    assert!(!m.is_talking(1));
    assert!(m.output_of(2).unwrap().iter().all(|&s| s == 0));
    // Speech starts: heard at once; a talk event.
    m.push(1, &tone(200.0, 5000.0, 1));
    m.mix();
    assert_eq!(
        m.talk_changes(),
        &[TalkChange {
            member: 1,
            talking: true
        }]
    );
    // It stops: still "talking" (and mixed) for the hangover, then not.
    for _ in 0..3 {
        m.push(1, &tone(200.0, 20.0, 2));
        m.mix();
        assert!(m.is_talking(1));
        assert!(m.talk_changes().is_empty());
    }
    m.push(1, &tone(200.0, 20.0, 3));
    m.mix();
    assert!(!m.is_talking(1));
    assert_eq!(
        m.talk_changes(),
        &[TalkChange {
            member: 1,
            talking: false
        }]
    );
}
