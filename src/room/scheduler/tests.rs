//! The mixer threads' tests: tick scheduling in virtual time, rooms ticked by hand over
//! real loopback sockets.

use super::*;
use crate::media::codec::g711::{G711Encoder, Law};
use crate::media::session::Direction;
use crate::media::stream::{MediaStream, StreamStart};
use crate::rtp::packet;

#[test]
fn a_slow_tick_is_caught_up_on_and_a_thread_far_behind_skips_to_the_present() {
    const P: u64 = 20_000_000;
    // On time: the next deadline stands.
    assert_eq!(after_tick(2 * P, 2 * P - 5, P), (2 * P, 0));
    // A tick that ran 5 ms past the next deadline: that tick runs at once, late.
    assert_eq!(after_tick(2 * P, 2 * P + 5_000_000, P), (2 * P, 0));
    // Three deadlines passed: still caught up on, back to back.
    assert_eq!(after_tick(2 * P, 4 * P + 1, P), (2 * P, 0));
    // Four passed: the thread is overloaded; it skips them and waits for the fifth.
    assert_eq!(after_tick(2 * P, 5 * P + 1, P), (6 * P, 4));
    // Simulated ticks in virtual time: one tick of 50 ms among 12 ms ticks loses no
    // tick (each deadline still gets its tick), and the schedule is back on time after.
    let mut next = P;
    let mut ticks = Vec::new();
    for n in 0..10u64 {
        let start = next.max(ticks.last().map_or(0, |&(_, end): &(u64, u64)| end));
        let end = start + if n == 3 { 50_000_000 } else { 12_000_000 };
        ticks.push((start, end));
        let (deadline, skipped) = after_tick(next + P, end, P);
        assert_eq!(skipped, 0, "tick {n}");
        next = deadline;
    }
    assert_eq!(next, 11 * P, "every deadline had its tick");
    let (last_start, _) = ticks[9];
    assert_eq!(last_start, 10 * P, "back on time after catching up");
}

/// A member's far end: the socket it sends from and receives the mix on.
struct Phone {
    sock: UdpSocket,
    to: std::net::SocketAddr,
    seq: u16,
    /// The leg's end of the stream's way back (a member whose leg is gone is dropped).
    _back: oneshot::Receiver<Box<MediaStream>>,
}

fn member(room: &mut LiveRoom, call: u64, codec: Codec, now: Instant) -> Phone {
    let gw = UdpSocket::bind("127.0.0.1:0").unwrap();
    gw.set_nonblocking(true).unwrap();
    let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtcp.set_nonblocking(true).unwrap();
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    phone.set_nonblocking(true).unwrap();
    let media = NegotiatedMedia {
        remote_rtp: Some(phone.local_addr().unwrap()),
        codec,
        payload_type: match codec {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::G722 => 9,
            Codec::Opus => 111,
        },
        telephone_event: None,
        ptime_ms: 20,
        direction: Direction::SendRecv,
        fmtp: None,
        srtp: None,
    };
    let to = gw.local_addr().unwrap();
    let start = StreamStart {
        id: call,
        local_port: to.port(),
        now,
        ntp: 0,
        seed: call,
    };
    let stream = MediaStream::new(start, Some(media));
    let (give_back, back) = oneshot::channel();
    let seat = Seat {
        call,
        stream: Box::new(stream),
        rtp: gw,
        rtcp,
        give_back,
        reports: Box::new(|_| true),
        rtp_timeout: Duration::from_secs(60),
    };
    room.join(Box::new(seat), MemberOptions::default());
    Phone {
        sock: phone,
        to,
        seq: 0,
        _back: back,
    }
}

impl Phone {
    /// Sends tick `tick`'s 20 ms of a tone (`rate` Hz PCM, RTP clock 8000 as for G.711
    /// and G.722), encoded with `enc`, as payload type `pt`.
    #[allow(clippy::too_many_arguments)]
    fn send_tone(&mut self, enc: &mut dyn Encoder, pt: u8, tick: u64, rate: u32, freq: f64, amp: f64, ssrc: u32) {
        let n = rate as usize / 50;
        let pcm: Vec<i16> = (0..n)
            .map(|k| {
                let t = (tick as usize * n + k) as f64 / rate as f64;
                (amp * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
            })
            .collect();
        let mut payload = Vec::new();
        enc.encode(&pcm, &mut payload);
        let mut pkt = Vec::new();
        packet::build(&mut pkt, pt, tick == 0, self.seq, tick as u32 * 160, ssrc, &payload);
        self.seq += 1;
        self.sock.send_to(&pkt, self.to).unwrap();
    }
}

/// Received RTP payloads, oldest first.
fn drain(p: &Phone) -> Vec<Vec<u8>> {
    let mut buf = [0u8; 2048];
    let mut out = Vec::new();
    while let Ok(n) = p.sock.recv(&mut buf) {
        out.push(packet::parse(&buf[..n]).unwrap().payload.to_vec());
    }
    out
}

#[test]
fn listeners_of_one_codec_share_one_encoding_and_talkers_get_their_own() {
    let cfg = MixerConfig::default();
    let mut room = LiveRoom::new("r", cfg);
    let start = Instant::now();
    // Three talkers and five listeners on PCMU, two listeners on Opus.
    let mut phones: Vec<Phone> = (0..8).map(|i| member(&mut room, i, Codec::Pcmu, start)).collect();
    phones.extend((8..10).map(|i| member(&mut room, i, Codec::Opus, start)));
    let mut enc = G711Encoder::new(Law::Ulaw);
    let mut scratch = Scratch::default();
    let mut per_tick = Vec::new();
    for tick in 0..30u64 {
        let now = start + TICK * tick as u32;
        for (i, p) in phones.iter_mut().take(3).enumerate() {
            p.send_tone(
                &mut enc,
                0,
                tick,
                8000,
                400.0 + 300.0 * i as f64,
                8000.0,
                1000 + i as u32,
            );
        }
        std::thread::sleep(Duration::from_millis(1));
        let before = room.encodes();
        room.tick(now, tick, &mut scratch);
        per_tick.push(room.encodes() - before);
    }
    // Once the jitter buffers play out and the talkers are detected: 3 own encodings, one
    // shared PCMU encoding, one shared Opus encoding.
    assert_eq!(per_tick[20..], [5; 10], "{per_tick:?}");
    // Listeners of one codec received the same payloads; talkers did not.
    let heard: Vec<Vec<Vec<u8>>> = phones.iter().map(drain).collect();
    assert!(
        heard.iter().all(|h| h.len() >= 20),
        "{:?}",
        heard.iter().map(|h| h.len()).collect::<Vec<_>>()
    );
    let last = |i: usize| heard[i][heard[i].len() - 1].clone();
    for i in 4..8 {
        assert_eq!(last(3), last(i), "PCMU listeners {i} and 3 share a payload");
    }
    assert_eq!(last(8), last(9), "Opus listeners share a payload");
    assert_ne!(last(0), last(1));
    assert_ne!(last(0), last(3));
}

#[test]
fn a_g722_member_who_stops_talking_joins_the_shared_encoding_in_a_quiet_moment() {
    use crate::media::codec::g722::G722Encoder;
    let mut room = LiveRoom::new("r", MixerConfig::default());
    let start = Instant::now();
    let mut phones: Vec<Phone> = (0..3).map(|i| member(&mut room, i, Codec::G722, start)).collect();
    let mut encoders: Vec<G722Encoder> = (0..3).map(|_| G722Encoder::default()).collect();
    let mut scratch = Scratch::default();
    let mut per_tick = Vec::new();
    // Member 0 talks until tick 40, member 1 until tick 80, member 2 never.
    let talks = |i: usize, tick: u64| (i == 0 && tick < 40) || (i == 1 && tick < 80);
    for tick in 0..130u64 {
        let now = start + TICK * tick as u32;
        for (i, p) in phones.iter_mut().enumerate() {
            let amp = if talks(i, tick) { 8000.0 } else { 0.0 };
            let freq = 400.0 + 300.0 * i as f64;
            p.send_tone(&mut encoders[i], 9, tick, 16_000, freq, amp, 2000 + i as u32);
        }
        std::thread::sleep(Duration::from_millis(1));
        let before = room.encodes();
        room.tick(now, tick, &mut scratch);
        per_tick.push(room.encodes() - before);
    }
    // Both talking: each its own mix, member 2 the shared one.
    assert_eq!(per_tick[25..35], [3; 10], "{per_tick:?}");
    // Member 0 has stopped (hangover over) while member 1 talks on: the mix member 0
    // hears is loud, so it keeps its own encoder rather than jump to the shared stream.
    assert_eq!(per_tick[65..75], [3; 10], "{per_tick:?}");
    // Nobody talks: everyone on the one shared encoding.
    assert_eq!(per_tick[115..], [1; 15], "{per_tick:?}");
    let heard: Vec<Vec<Vec<u8>>> = phones.iter().map(drain).collect();
    let last = |i: usize| heard[i][heard[i].len() - 1].clone();
    assert_eq!(last(0), last(2));
    assert_eq!(last(1), last(2));
}

#[test]
fn a_room_of_g711_callers_mixes_at_8_khz_until_a_wideband_member_joins() {
    use crate::media::analysis::tone_power;
    use crate::media::codec::Decoder;
    use crate::media::codec::g711::G711Decoder;
    use crate::media::codec::g722::{G722Decoder, G722Encoder};
    let cfg = MixerConfig::default();
    assert_eq!(cfg.rate, 16_000);
    let mut rooms = vec![LiveRoom::new("r", cfg)];
    let start = Instant::now();
    let mut phones: Vec<Phone> = (0..2).map(|i| member(&mut rooms[0], i, Codec::Pcmu, start)).collect();
    assert_eq!(rooms[0].rate(), 8000, "only narrowband members: no resampling at all");
    let mut ulaw = [G711Encoder::new(Law::Ulaw), G711Encoder::new(Law::Ulaw)];
    let mut wide = G722Encoder::default();
    let mut scratch = Scratch::default();
    let tones = [500.0, 1100.0, 1700.0];
    let mut run = |rooms: &mut Vec<LiveRoom>, phones: &mut Vec<Phone>, ticks: std::ops::Range<u64>| {
        for tick in ticks {
            for (i, p) in phones.iter_mut().enumerate() {
                match i {
                    2 => p.send_tone(&mut wide, 9, tick, 16_000, tones[2], 8000.0, 3002),
                    _ => p.send_tone(&mut ulaw[i], 0, tick, 8000, tones[i], 8000.0, 3000 + i as u32),
                }
            }
            std::thread::sleep(Duration::from_millis(1));
            rooms[0].tick(start + TICK * tick as u32, tick, &mut scratch);
        }
    };
    // What a phone heard in its last 10 frames, decoded; the power of each tone in it.
    let heard = |p: &Phone, dec: &mut dyn Decoder, rate: u32| -> Vec<f64> {
        let mut pcm = Vec::new();
        for payload in drain(p) {
            dec.decode(&payload, &mut pcm);
        }
        let tail = &pcm[pcm.len() - 10 * rate as usize / 50..];
        tones.iter().map(|&f| tone_power(tail, f, rate)).collect()
    };
    run(&mut rooms, &mut phones, 0..30);
    let p1 = heard(&phones[1], &mut G711Decoder::new(Law::Ulaw), 8000);
    assert!(p1[0] > 100.0 * p1[1], "caller 1 hears caller 0, not itself: {p1:?}");
    // A G.722 caller joins: the room mixes at 16 kHz from now on.
    phones.push(member(&mut rooms[0], 2, Codec::G722, start + TICK * 30));
    assert_eq!(rooms[0].rate(), 16_000);
    run(&mut rooms, &mut phones, 30..60);
    let p1 = heard(&phones[1], &mut G711Decoder::new(Law::Ulaw), 8000);
    assert!(p1[0] > 100.0 * p1[1], "{p1:?}");
    let p2 = heard(&phones[2], &mut G722Decoder::default(), 16_000);
    assert!(
        p2[0] > 100.0 * p2[2] && p2[1] > 100.0 * p2[2],
        "the G.722 caller hears both others, not itself: {p2:?}"
    );
    // Caller 1 hears the wideband caller too (below its 4 kHz band: 1700 Hz passes).
    assert!(p1[2] > 100.0 * p1[1], "{p1:?}");
    // It leaves: back to 8 kHz, and the two still hear each other.
    apply(Command::Leave { call: 2 }, &mut rooms, cfg);
    assert_eq!(rooms[0].rate(), 8000);
    phones.pop();
    run(&mut rooms, &mut phones, 60..90);
    let p0 = heard(&phones[0], &mut G711Decoder::new(Law::Ulaw), 8000);
    assert!(p0[1] > 100.0 * p0[0], "{p0:?}");
}

#[test]
fn quiet_opus_members_are_not_decoded_and_a_tone_their_vad_calls_inactive_is_still_heard() {
    use crate::media::codec::opus::{OpusDecoder, OpusEncoder};
    use crate::media::codec::opus_packet::{Activity, activity};
    use crate::media::codec::{Decoder, Encoder};
    let mut room = LiveRoom::new("r", MixerConfig::default());
    let start = Instant::now();
    // 0 sends a steady 700 Hz tone, 1 near-silence, 2 listens.
    let mut phones: Vec<Phone> = (0..3).map(|i| member(&mut room, i, Codec::Opus, start)).collect();
    let encode = |signal: &dyn Fn(usize) -> i16| -> Vec<Vec<u8>> {
        let mut enc = OpusEncoder::new(16_000).unwrap();
        (0..200)
            .map(|f| {
                let pcm: Vec<i16> = (0..320).map(|k| signal(f * 320 + k)).collect();
                let mut out = Vec::new();
                enc.encode(&pcm, &mut out);
                out
            })
            .collect()
    };
    let tone = encode(&|n| (6000.0 * (2.0 * std::f64::consts::PI * 700.0 * n as f64 / 16_000.0).sin()) as i16);
    let quiet = encode(&|n| ((n * 7919) % 41) as i16 - 20);
    // libopus's VAD adapts to a steady tone and calls it inactive after about a second:
    // from then on the tone's packets say "no speech".
    let tone = &tone[100..];
    let quiet = &quiet[100..];
    assert!(tone.iter().chain(quiet).all(|p| activity(p) == Activity::Inactive));
    let mut scratch = Scratch::default();
    let mut pkt = Vec::new();
    for tick in 0..100u64 {
        for (i, frames) in [tone, quiet].iter().enumerate() {
            let p = &mut phones[i];
            packet::build(
                &mut pkt,
                111,
                tick == 0,
                p.seq,
                tick as u32 * 960,
                50 + i as u32,
                &frames[tick as usize],
            );
            p.seq += 1;
            p.sock.send_to(&pkt, p.to).unwrap();
        }
        std::thread::sleep(Duration::from_millis(1));
        room.tick(start + TICK * tick as u32, tick, &mut scratch);
    }
    // The quiet member was decoded one frame in QUIET_CHECK_EVERY; the tone's member only
    // until the first check found it loud.
    let skipped = room.decodes_skipped();
    assert!((80..=110).contains(&skipped), "{skipped} frames left undecoded");
    // The listener hears the tone.
    let mut dec = OpusDecoder::new(16_000).unwrap();
    let mut heard = Vec::new();
    for f in drain(&phones[2]) {
        dec.decode(&f, &mut heard);
    }
    let tail = &heard[heard.len() - 16_000..];
    let p700 = crate::media::analysis::tone_power(tail, 700.0, 16_000);
    let p1100 = crate::media::analysis::tone_power(tail, 1100.0, 16_000);
    assert!(p700 > 1000.0 * p1100.max(1.0), "700 Hz {p700} vs 1100 Hz {p1100}");
}

#[test]
fn a_waiting_room_plays_everyone_the_same_music_and_then_the_mix() {
    let mut room = LiveRoom::new("r", MixerConfig::default());
    let start = Instant::now();
    let mut phones: Vec<Phone> = (0..2).map(|i| member(&mut room, i, Codec::Pcmu, start)).collect();
    room.set_waiting(true);
    let mut enc = G711Encoder::new(Law::Ulaw);
    let mut scratch = Scratch::default();
    let mut pkt = Vec::new();
    let mut run = |room: &mut LiveRoom, phones: &mut [Phone], ticks: std::ops::Range<u64>| {
        for tick in ticks {
            // Member 0 talks (a 1 kHz tone), member 1 is silent.
            let pcm: Vec<i16> = (0..160)
                .map(|k| (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * k as f64 / 8000.0).sin()) as i16)
                .collect();
            let mut payload = Vec::new();
            enc.encode(&pcm, &mut payload);
            packet::build(&mut pkt, 0, tick == 0, phones[0].seq, tick as u32 * 160, 7, &payload);
            phones[0].seq += 1;
            phones[0].sock.send_to(&pkt, phones[0].to).unwrap();
            std::thread::sleep(Duration::from_millis(1));
            room.tick(start + TICK * tick as u32, tick, &mut scratch);
        }
    };
    run(&mut room, &mut phones, 0..20);
    let waiting: Vec<Vec<Vec<u8>>> = phones.iter().map(drain).collect();
    // Both hear the same frames (one encoding), and they are music, not silence.
    assert_eq!(waiting[0].last(), waiting[1].last());
    let decode = |frames: &[Vec<u8>]| -> Vec<i16> {
        let mut dec = crate::media::codec::g711::G711Decoder::new(Law::Ulaw);
        let mut out = Vec::new();
        for f in frames {
            crate::media::codec::Decoder::decode(&mut dec, f, &mut out);
        }
        out
    };
    let music = decode(&waiting[1][10..]);
    let energy = music.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / music.len() as f64;
    assert!(energy > 1e5, "music, not silence: {energy}");
    let tone_while_waiting = crate::media::analysis::tone_power(&music, 1000.0, 8000);
    room.set_waiting(false);
    run(&mut room, &mut phones, 20..40);
    let live: Vec<Vec<Vec<u8>>> = phones.iter().map(drain).collect();
    let heard = decode(&live[1][10..]);
    let tone_live = crate::media::analysis::tone_power(&heard, 1000.0, 8000);
    assert!(
        tone_live > 100.0 * tone_while_waiting.max(1.0),
        "the talker is heard once the room is live: {tone_live} vs {tone_while_waiting}"
    );
}

#[test]
fn commands_sent_before_the_member_arrives_wait_for_it() {
    // The registry acts before the call's leg hands its stream over: a recording (with
    // its notice) and a mute for the joining call must not be lost.
    let cfg = MixerConfig::default();
    let mut rooms = Vec::new();
    let mut pending = PendingRecords::new();
    let dir = std::env::temp_dir().join(format!("tolk-pending-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let notice: Arc<[i16]> = (0..16_000)
        .map(|k| (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * k as f64 / 16_000.0).sin()) as i16)
        .collect();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    handle(
        Command::Record {
            room: Arc::from("r"),
            path: dir.join("r.wav"),
            on_done: Box::new(move |secs, err| {
                let _ = done_tx.send((secs, err));
            }),
            notice: Some(notice),
        },
        &mut rooms,
        &mut pending,
        cfg,
    );
    handle(
        Command::Change {
            call: 5,
            change: MemberChange::Muted(true),
        },
        &mut rooms,
        &mut pending,
        cfg,
    );
    assert!(rooms.is_empty());
    assert_eq!(pending.len(), 2);
    // The member arrives: the room starts recording, plays the notice, the mute applies.
    let start = Instant::now();
    let mut staging = LiveRoom::new("staging", cfg);
    let phone = member(&mut staging, 5, Codec::Pcmu, start);
    let seat = staging.members.pop().unwrap().seat;
    handle(
        Command::Join {
            room: Arc::from("r"),
            seat,
            opts: MemberOptions::default(),
            waiting: false,
        },
        &mut rooms,
        &mut pending,
        cfg,
    );
    assert!(pending.is_empty());
    assert!(rooms[0].recorder.is_some());
    assert!(rooms[0].members[0].muted);
    let mut scratch = Scratch::default();
    for tick in 0..10 {
        rooms[0].tick(start + TICK * tick, tick as u64, &mut scratch);
    }
    let heard: Vec<Vec<u8>> = drain(&phone);
    let mut dec = crate::media::codec::g711::G711Decoder::new(Law::Ulaw);
    let mut pcm = Vec::new();
    for f in &heard {
        crate::media::codec::Decoder::decode(&mut dec, f, &mut pcm);
    }
    let tone = crate::media::analysis::tone_power(&pcm, 1000.0, 8000);
    let off = crate::media::analysis::tone_power(&pcm, 1500.0, 8000);
    assert!(tone > 100.0 * off.max(1.0), "the notice is heard: {tone} vs {off}");
    rooms.clear();
    let (secs, err) = done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(err, None);
    assert!(secs > 0.0);
    let _ = std::fs::remove_dir_all(dir);
}
