//! libopus against opus-rs on the same speech: encode time, bit rate, waveform SNR of each
//! encoder through each decoder, decode time, and the opus-rs decoder on random packets.

use std::time::Instant;

fn load(rate: u32) -> Vec<i16> {
    let b = std::fs::read(format!(
        "{}/s{rate}.raw",
        std::env::args().nth(1).expect("speech folder")
    ))
    .unwrap();
    let mut v: Vec<i16> = b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
    // repeat to ~10 s
    let n = v.len();
    while v.len() < rate as usize * 10 {
        let c = v[..n].to_vec();
        v.extend(c);
    }
    v
}

fn snr(a: &[i16], b: &[i16]) -> (f64, usize) {
    // best lag 0..1000
    let mut best = (-100.0, 0);
    for lag in 0..1000usize {
        let n = a.len().min(b.len().saturating_sub(lag));
        if n < 1000 {
            break;
        }
        let (mut s, mut e) = (0f64, 0f64);
        for i in 0..n {
            let x = a[i] as f64;
            let y = b[i + lag] as f64;
            s += x * x;
            e += (x - y) * (x - y);
        }
        let r = 10.0 * (s / e.max(1.0)).log10();
        if r > best.0 {
            best = (r, lag);
        }
    }
    best
}

fn f2i(v: &[f32]) -> Vec<i16> {
    v.iter()
        .map(|x| (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

fn main() {
    for rate in [8000u32, 16000, 48000] {
        let pcm = load(rate);
        let frame = (rate / 50) as usize;
        let frames: Vec<&[i16]> = pcm.chunks_exact(frame).collect();
        for cx in [9, 2, 0] {
            // libopus encode
            let mut e = opus::Encoder::new(rate, opus::Channels::Mono, opus::Application::Voip).unwrap();
            e.set_complexity(cx).unwrap();
            e.set_inband_fec(true).unwrap();
            let mut buf = vec![0u8; 1275];
            let t = Instant::now();
            let c_pk: Vec<Vec<u8>> = frames
                .iter()
                .map(|f| {
                    let n = e.encode(f, &mut buf).unwrap();
                    buf[..n].to_vec()
                })
                .collect();
            let c_enc = t.elapsed().as_secs_f64() / frames.len() as f64 * 1e6;
            // opus-rs encode
            let mut r = opus_rs::OpusEncoder::new(rate as i32, 1, opus_rs::Application::Voip).unwrap();
            r.complexity = cx;
            r.use_inband_fec = true;
            // The bit rates tolk encodes speech at (media::codec::opus).
            r.bitrate_bps = match rate {
                8000 => 12_000,
                16000 => 20_000,
                _ => 32_000,
            };
            let t = Instant::now();
            let r_pk: Vec<Vec<u8>> = frames
                .iter()
                .map(|f| {
                    let n = r.encode_i16(f, frame, &mut buf).unwrap();
                    buf[..n].to_vec()
                })
                .collect();
            let r_enc = t.elapsed().as_secs_f64() / frames.len() as f64 * 1e6;
            let kbps = |p: &Vec<Vec<u8>>| {
                p.iter().map(|x| x.len()).sum::<usize>() as f64 * 8.0 / (p.len() as f64 * 0.02) / 1000.0
            };
            // decode each by each
            let mut out = vec![0i16; 5760];
            let mut outf = vec![0f32; 5760];
            let dec_c = |pk: &Vec<Vec<u8>>, out: &mut Vec<i16>| {
                let mut d = opus::Decoder::new(rate, opus::Channels::Mono).unwrap();
                let t = Instant::now();
                let mut v = Vec::new();
                for p in pk {
                    let n = d.decode(p, out, false).unwrap();
                    v.extend_from_slice(&out[..n]);
                }
                (v, t.elapsed().as_secs_f64() / pk.len() as f64 * 1e6)
            };
            let dec_r = |pk: &Vec<Vec<u8>>, outf: &mut Vec<f32>| {
                let mut d = opus_rs::OpusDecoder::new(rate as i32, 1).unwrap();
                let t = Instant::now();
                let mut v = Vec::new();
                for p in pk {
                    let n = d.decode(p, frame, outf).unwrap();
                    v.extend(f2i(&outf[..n]));
                }
                (v, t.elapsed().as_secs_f64() / pk.len() as f64 * 1e6)
            };
            let (cc, tcc) = dec_c(&c_pk, &mut out);
            let (cr, tcr) = dec_r(&c_pk, &mut outf);
            let (rc, trc) = dec_c(&r_pk, &mut out);
            let (rr, trr) = dec_r(&r_pk, &mut outf);
            println!("rate {rate} cx {cx}: enc us C {c_enc:.1} R {r_enc:.1} | kbps C {:.1} R {:.1} | SNR(lag) Cenc->Cdec {:?} Cenc->Rdec {:?} Renc->Cdec {:?} Renc->Rdec {:?} | dec us C {tcc:.1} R(Cpk) {tcr:.1} C(Rpk) {trc:.1} R {trr:.1}",
                kbps(&c_pk), kbps(&r_pk), snr(&pcm, &cc), snr(&pcm, &cr), snr(&pcm, &rc), snr(&pcm, &rr));
        }
    }
    // 48k fullband audio-mode (CELT/hybrid) packets from libopus decoded by opus-rs
    let pcm = load(48000);
    for (app, name) in [
        (opus::Application::Audio, "audio"),
        (opus::Application::LowDelay, "lowdelay"),
    ] {
        let mut e = opus::Encoder::new(48000, opus::Channels::Mono, app).unwrap();
        e.set_bitrate(opus::Bitrate::Bits(32000)).unwrap();
        let mut buf = vec![0u8; 1275];
        let pk: Vec<Vec<u8>> = pcm
            .chunks_exact(960)
            .map(|f| {
                let n = e.encode(f, &mut buf).unwrap();
                buf[..n].to_vec()
            })
            .collect();
        let mut d = opus_rs::OpusDecoder::new(48000, 1).unwrap();
        let mut dc = opus::Decoder::new(48000, opus::Channels::Mono).unwrap();
        let mut outf = vec![0f32; 5760];
        let mut out = vec![0i16; 5760];
        let (mut v, mut w) = (Vec::new(), Vec::new());
        for p in &pk {
            let n = d.decode(p, 960, &mut outf).unwrap();
            v.extend(f2i(&outf[..n]));
            let n = dc.decode(p, &mut out, false).unwrap();
            w.extend_from_slice(&out[..n]);
        }
        println!(
            "48k {name}: C dec SNR {:?}, R dec SNR {:?}, R vs C {:?}",
            snr(&pcm, &w),
            snr(&pcm, &v),
            snr(&w, &v)
        );
    }
    // robustness: random packets
    let mut seed = 0x12345678u64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut panics = 0;
    let mut errs = 0;
    std::panic::set_hook(Box::new(|_| {}));
    for i in 0..200_000 {
        let len = (rnd() % 400) as usize + 1;
        let p: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        let rate = [8000, 16000, 48000][i % 3];
        let r = std::panic::catch_unwind(|| {
            let mut d = opus_rs::OpusDecoder::new(rate, 1).unwrap();
            let mut o = vec![0f32; 5760];
            d.decode(&p, (rate / 50) as usize, &mut o).is_err()
        });
        match r {
            Err(_) => panics += 1,
            Ok(true) => errs += 1,
            _ => {}
        }
    }
    println!("random packets: 200000, errors {errs}, panics {panics}");
}
