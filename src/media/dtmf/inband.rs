//! In-band DTMF detection for callers whose carrier sends keypad tones as audio (G.711 without
//! telephone-event), after ITU-T Q.23 (the frequencies) and Q.24 (acceptance limits).
//!
//! The signal at 8 kHz is analysed in blocks of 102 samples (12.75 ms) every 51 samples (half
//! a block); for each block the Goertzel algorithm measures the eight DTMF frequencies. A block
//! is a hit for a key when: the strongest row and column tone are each above the minimum level,
//! each is at least 6 dB above the other tones of its group, the twist is within the limits,
//! the two tones carry most of the block's energy, and the block is steady (its two halves
//! carry similar energy, so a block that is half tone and half silence is no hit).
//!
//! A key goes down after four hits in a row: they span 255 samples (32 ms), so a 40 ms tone
//! always counts whatever its alignment, and a tone shorter than 32 ms never does (Q.24 asks
//! to reject below 20-23 ms). It goes up after five blocks without it: a 40 ms pause always
//! separates two keys, a 10 ms drop-out never splits one.

const RATE: f32 = 8000.0;
/// Samples per Goertzel block.
pub const BLOCK: usize = 102;
/// A block is analysed every `HOP` samples.
const HOP: usize = BLOCK / 2;
/// Relative frequency offset probed around each nominal tone (Q.24's 1.5%).
const OFFSET_PROBE: f32 = 0.015;
/// Hits in a row before a key counts as pressed.
const PRESS_HITS: u32 = 4;
/// Misses in a row before a key counts as released.
const RELEASE_MISSES: u32 = 5;
const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Peak amplitude of a 0 dBm0 sine in 16-bit linear PCM (G.711's digital milliwatt).
pub const DBM0_PEAK: f32 = 22_770.0;

/// Tunable limits (defaults from Q.24's common values).
#[derive(Debug, Clone, Copy)]
pub struct InbandLimits {
    /// Lowest accepted level of each tone, dBm0.
    pub min_level_dbm0: f32,
    /// Column tone may be this many dB weaker than the row tone ("normal twist").
    pub normal_twist_db: f32,
    /// Column tone may be this many dB stronger ("reverse twist").
    pub reverse_twist_db: f32,
    /// Each tone must beat the others of its group by this much, dB.
    pub relative_peak_db: f32,
    /// Share of the block's energy the two tones must carry.
    pub min_tone_share: f32,
    /// Second harmonics of the two tones must stay this far below them, dB (speech, rich in
    /// harmonics, fails this).
    pub max_harmonic_db: f32,
}

impl Default for InbandLimits {
    fn default() -> Self {
        InbandLimits {
            min_level_dbm0: -30.0,
            // Q.24's 8 dB and 4 dB, plus 2 dB for the measurement error of a 102-sample
            // Goertzel at DTMF frequencies (they are not whole bins, so the measured level
            // swings with the phase of the block by up to about 1.5 dB).
            normal_twist_db: 10.0,
            reverse_twist_db: 6.0,
            relative_peak_db: 6.0,
            min_tone_share: 0.85,
            max_harmonic_db: -12.0,
        }
    }
}

/// The detector for one audio stream.
#[derive(Debug, Clone)]
pub struct InbandDetector {
    limits: InbandLimits,
    coeff_rows: [f32; 4],
    coeff_cols: [f32; 4],
    coeff_rows2: [f32; 4],
    coeff_cols2: [f32; 4],
    min_power: f32,
    /// The last `BLOCK` samples, circular.
    ring: [f32; BLOCK],
    pos: usize,
    /// Samples since the last analysed block.
    since: usize,
    seen: usize,
    candidate: Option<char>,
    candidate_blocks: u32,
    candidate_levels: Option<(f32, f32)>,
    down: Option<char>,
    misses: u32,
}

impl Default for InbandDetector {
    fn default() -> Self {
        Self::new(InbandLimits::default())
    }
}

impl InbandDetector {
    pub fn new(limits: InbandLimits) -> Self {
        let coeff = |f: f32| 2.0 * (2.0 * std::f32::consts::PI * f / RATE).cos();
        let amp = DBM0_PEAK * 10f32.powf(limits.min_level_dbm0 / 20.0);
        InbandDetector {
            limits,
            coeff_rows: ROWS.map(coeff),
            coeff_cols: COLS.map(coeff),
            coeff_rows2: ROWS.map(|f| coeff(2.0 * f)),
            coeff_cols2: COLS.map(|f| coeff(2.0 * f)),
            // Goertzel power of a sine of amplitude A over N samples is about (A N / 2)^2.
            min_power: (amp * BLOCK as f32 / 2.0).powi(2),
            ring: [0.0; BLOCK],
            pos: 0,
            since: 0,
            seen: 0,
            candidate: None,
            candidate_blocks: 0,
            candidate_levels: None,
            down: None,
            misses: 0,
        }
    }

    /// Feeds 8 kHz PCM; returns the keys that went down in it, in order.
    pub fn process(&mut self, pcm: &[i16]) -> Vec<char> {
        let mut keys = Vec::new();
        for &s in pcm {
            self.ring[self.pos] = s as f32;
            self.pos = (self.pos + 1) % BLOCK;
            self.since += 1;
            self.seen = self.seen.saturating_add(1);
            if self.since == HOP && self.seen >= BLOCK {
                self.since = 0;
                let mut block = [0.0f32; BLOCK];
                for (i, v) in block.iter_mut().enumerate() {
                    *v = self.ring[(self.pos + i) % BLOCK];
                }
                if let Some(k) = self.block(&block) {
                    keys.push(k);
                }
            } else if self.since == HOP {
                self.since = 0;
            }
        }
        keys
    }

    /// The key currently held down, if any.
    pub fn key_down(&self) -> Option<char> {
        self.down
    }

    fn block(&mut self, block: &[f32; BLOCK]) -> Option<char> {
        let measured = self.classify(block);
        let hit = measured.map(|(k, _, _)| k);
        // A key is a steady pair of tones: each hit of a candidate must measure within 3 dB of
        // its first hit, allowing for the ~1.5 dB block-phase swing of each measurement (speech
        // glides; its harmonics at a fixed frequency come and go).
        let steady = match (measured, self.candidate_levels) {
            (Some((_, rp, cp)), Some((r0, c0))) => within_db(rp, r0, 4.5) && within_db(cp, c0, 4.5),
            _ => false,
        };
        if hit.is_some() && hit == self.candidate && steady {
            self.candidate_blocks += 1;
        } else {
            self.candidate = hit;
            self.candidate_blocks = u32::from(hit.is_some());
            self.candidate_levels = measured.map(|(_, r, c)| (r, c));
        }
        match (self.down, hit) {
            (Some(d), Some(h)) if d == h => {
                self.misses = 0;
                None
            }
            (Some(_), _) => {
                self.misses += 1;
                if self.misses >= RELEASE_MISSES {
                    self.down = None;
                    self.misses = 0;
                }
                None
            }
            (None, Some(h)) if self.candidate_blocks >= PRESS_HITS => {
                self.down = Some(h);
                self.misses = 0;
                Some(h)
            }
            (None, _) => None,
        }
    }

    fn classify(&self, block: &[f32; BLOCK]) -> Option<(char, f32, f32)> {
        let first: f32 = block[..HOP].iter().map(|x| x * x).sum();
        let second: f32 = block[HOP..].iter().map(|x| x * x).sum();
        let energy = first + second;
        if energy <= 0.0 || first < second * 0.5 || second < first * 0.5 {
            return None;
        }
        // No tone in a block can measure more than N times the block's energy (|X(w)|^2 <=
        // (sum |x|)^2 <= N * sum x^2, Cauchy-Schwarz): a block too quiet to hold even one tone
        // at the minimum power (silence, line noise: most frames of most calls) needs no
        // Goertzel filters at all.
        if energy * BLOCK as f32 * 1.001 < self.min_power {
            return None;
        }
        let rows = self.coeff_rows.map(|c| goertzel(block, c));
        let cols = self.coeff_cols.map(|c| goertzel(block, c));
        let (ri, rp0) = strongest(&rows);
        let (ci, cp0) = strongest(&cols);
        // Q.24 allows the frequencies to be off by 1.5%; measure the chosen pair there too and
        // keep the best, so an off-frequency tone is not judged weaker than it is.
        let refine = |f: f32, p0: f32| {
            [1.0 - OFFSET_PROBE, 1.0 + OFFSET_PROBE]
                .iter()
                .map(|k| goertzel(block, 2.0 * (2.0 * std::f32::consts::PI * f * k / RATE).cos()))
                .fold(p0, f32::max)
        };
        let (rp, cp) = (refine(ROWS[ri], rp0), refine(COLS[ci], cp0));
        if rp < self.min_power || cp < self.min_power {
            return None;
        }
        let l = &self.limits;
        let twist_db = 10.0 * (cp / rp).log10();
        if twist_db < -l.normal_twist_db || twist_db > l.reverse_twist_db {
            return None;
        }
        let peak = 10f32.powf(l.relative_peak_db / 10.0);
        if rows.iter().enumerate().any(|(i, &p)| i != ri && p * peak > rp0)
            || cols.iter().enumerate().any(|(i, &p)| i != ci && p * peak > cp0)
        {
            return None;
        }
        // A pure tone's Goertzel power is energy * N / 2.
        let share = (rp + cp) / (energy * BLOCK as f32 / 2.0);
        if share < l.min_tone_share {
            return None;
        }
        let harmonic = 10f32.powf(l.max_harmonic_db / 10.0);
        // A row tone's second harmonic can sit within a bin of the column tone (2 x 697 Hz is
        // 58 Hz from 1336 Hz), where the column tone itself would be measured; check it only
        // when it is clear of the column.
        let row_harmonic_clear = (2.0 * ROWS[ri] - COLS[ci]).abs() > 1.5 * RATE / BLOCK as f32;
        if (row_harmonic_clear && goertzel(block, self.coeff_rows2[ri]) > rp * harmonic)
            || goertzel(block, self.coeff_cols2[ci]) > cp * harmonic
        {
            return None;
        }
        Some((KEYS[ri][ci], rp, cp))
    }
}

fn within_db(a: f32, b: f32, db: f32) -> bool {
    let r = 10f32.powf(db / 10.0);
    a <= b * r && b <= a * r
}

fn goertzel(x: &[f32], coeff: f32) -> f32 {
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &v in x {
        let s = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

fn strongest(p: &[f32; 4]) -> (usize, f32) {
    let mut best = (0, p[0]);
    for (i, &v) in p.iter().enumerate().skip(1) {
        if v > best.1 {
            best = (i, v);
        }
    }
    best
}

/// The row and column frequencies of a key (Q.23), `None` for anything else.
pub fn frequencies(key: char) -> Option<(f32, f32)> {
    (0..4)
        .flat_map(|r| (0..4).map(move |c| (r, c)))
        .find(|&(r, c)| KEYS[r][c] == key.to_ascii_uppercase())
        .map(|(r, c)| (ROWS[r], COLS[c]))
}

/// A `media::tone` specification that sends `digits` in-band: each key `on_ms` long, then
/// `off_ms` of silence (Q.24 asks receivers to accept 40 ms of each; we send more).
/// Characters that are not DTMF keys are skipped; `None` when none is left.
pub fn tone_spec(digits: &str, on_ms: u32, off_ms: u32) -> Option<String> {
    let parts: Vec<String> = digits
        .chars()
        .filter_map(frequencies)
        .map(|(r, c)| format!("{r}+{c}/{on_ms},0/{off_ms}"))
        .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

/// Generates a DTMF key as 8 kHz PCM: `level_dbm0` per tone, `twist_db` added to the column
/// tone, frequencies scaled by `1 + offset`. For tests and for sending in-band digits.
pub fn generate(key: char, ms: usize, level_dbm0: f32, twist_db: f32, offset: f32) -> Vec<i16> {
    let Some((r, c)) = (0..4)
        .flat_map(|r| (0..4).map(move |c| (r, c)))
        .find(|&(r, c)| KEYS[r][c] == key)
    else {
        return vec![0; ms * 8];
    };
    let a_row = DBM0_PEAK * 10f32.powf(level_dbm0 / 20.0);
    let a_col = a_row * 10f32.powf(twist_db / 20.0);
    let (fr, fc) = (ROWS[r] * (1.0 + offset), COLS[c] * (1.0 + offset));
    (0..ms * 8)
        .map(|i| {
            let t = i as f32 / RATE;
            let v = a_row * (2.0 * std::f32::consts::PI * fr * t).sin()
                + a_col * (2.0 * std::f32::consts::PI * fc * t).sin();
            v.clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &str = "123A456B789C*0#D";

    #[test]
    fn a_tone_spec_of_digits_is_detected_as_those_digits() {
        let spec = tone_spec("19#x", 80, 60).unwrap();
        assert_eq!(spec, "697+1209/80,0/60,852+1477/80,0/60,941+1477/80,0/60");
        let mut g = crate::media::tone::ToneGenerator::new(&spec, 8000, -10.0, false).unwrap();
        let mut pcm = Vec::new();
        let mut frame = Vec::new();
        while g.next_frame(160, &mut frame) {
            pcm.extend_from_slice(&frame);
            frame.clear();
        }
        pcm.extend_from_slice(&frame);
        assert_eq!(detect(&pcm), "19#");
        assert!(tone_spec("xyz", 80, 60).is_none());
    }

    fn detect(pcm: &[i16]) -> String {
        let mut d = InbandDetector::default();
        // Feed in 20 ms frames like the call path does.
        pcm.chunks(160).flat_map(|f| d.process(f)).collect()
    }

    fn sequence(keys: &str, on_ms: usize, off_ms: usize, level: f32, twist: f32, offset: f32) -> Vec<i16> {
        let mut pcm = vec![0; 8 * 30];
        for k in keys.chars() {
            pcm.extend(generate(k, on_ms, level, twist, offset));
            pcm.extend(std::iter::repeat_n(0, off_ms * 8));
        }
        pcm
    }

    #[test]
    fn all_sixteen_keys_are_detected() {
        assert_eq!(detect(&sequence(ALL, 80, 80, -10.0, 0.0, 0.0)), ALL);
    }

    #[test]
    fn q24_edges_are_accepted() {
        // 40 ms tones with 40 ms pauses; -25 dBm0 per tone; frequency off by ±1.5%; twist at
        // +4 dB (column stronger) and -8 dB (column weaker). Each alone and at every start
        // alignment against the 102-sample blocks.
        for (name, level, twist, offset) in [
            ("level", -25.0, 0.0, 0.0),
            ("+1.5%", -10.0, 0.0, 0.015),
            ("-1.5%", -10.0, 0.0, -0.015),
            ("reverse twist", -10.0, 4.0, 0.0),
            ("normal twist", -10.0, -8.0, 0.0),
        ] {
            for shift in [0usize, 17, 51, 88] {
                let mut pcm = vec![0i16; shift];
                pcm.extend(sequence(ALL, 40, 40, level, twist, offset));
                assert_eq!(detect(&pcm), ALL, "{name}, shifted {shift} samples");
            }
        }
    }

    #[test]
    fn too_short_too_quiet_or_too_twisted_is_rejected() {
        for (name, ms, level, twist) in [
            ("20 ms", 20, -10.0, 0.0),
            ("-40 dBm0", 80, -40.0, 0.0),
            ("twist +8 dB", 80, -10.0, 8.0),
            ("twist -13 dB", 80, -10.0, -13.0),
        ] {
            assert_eq!(detect(&sequence(ALL, ms, 80, level, twist, 0.0)), "", "{name}");
        }
    }

    #[test]
    fn a_single_tone_is_not_a_key() {
        let pcm: Vec<i16> = (0..8000)
            .map(|i| (8000.0 * (2.0 * std::f32::consts::PI * 770.0 * i as f32 / RATE).sin()) as i16)
            .collect();
        assert_eq!(detect(&pcm), "");
    }

    #[test]
    fn held_key_is_one_digit_and_repeats_after_a_pause() {
        let mut pcm = generate('5', 2000, -10.0, 0.0, 0.0);
        pcm.extend(vec![0; 8 * 60]);
        pcm.extend(generate('5', 60, -10.0, 0.0, 0.0));
        assert_eq!(detect(&pcm), "55");
    }

    /// A minute of speech-like sound: voiced segments with a gliding pitch (90-260 Hz) whose
    /// harmonics fall at 12 dB per octave (glottal source) and pass two moving formant
    /// resonances (bandwidths 80-160 Hz) that sweep through the DTMF bands; unvoiced noise
    /// bursts; background noise. Deterministic (seeded).
    fn speech_like(seconds: usize) -> Vec<i16> {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut out = Vec::with_capacity(seconds * 8000);
        let mut phase = 0.0f32;
        while out.len() < seconds * 8000 {
            let seg = rng.usize(800..3200);
            let voiced = rng.f32() < 0.7;
            let (p0, p1) = (90.0 + 170.0 * rng.f32(), 90.0 + 170.0 * rng.f32());
            let (f1a, f1b) = (300.0 + 700.0 * rng.f32(), 300.0 + 700.0 * rng.f32());
            let (f2a, f2b) = (900.0 + 1600.0 * rng.f32(), 900.0 + 1600.0 * rng.f32());
            let (b1, b2) = (80.0 + 80.0 * rng.f32(), 80.0 + 80.0 * rng.f32());
            let gain = 2000.0 + 9000.0 * rng.f32();
            for i in 0..seg {
                let t = i as f32 / seg as f32;
                let pitch = p0 + (p1 - p0) * t;
                let (f1, f2) = (f1a + (f1b - f1a) * t, f2a + (f2b - f2a) * t);
                phase += 2.0 * std::f32::consts::PI * pitch / RATE;
                let mut v = 0.0;
                if voiced {
                    let mut h = 1.0;
                    while h * pitch < 3800.0 {
                        let f = h * pitch;
                        // Resonance magnitude 1/sqrt(1 + ((f - F) / (B/2))^2) per formant.
                        let r1 = 1.0 / (1.0 + ((f - f1) / (b1 / 2.0)).powi(2)).sqrt();
                        let r2 = 1.0 / (1.0 + ((f - f2) / (b2 / 2.0)).powi(2)).sqrt();
                        v += (r1 + 0.7 * r2) / h * (h * phase).sin();
                        h += 1.0;
                    }
                } else {
                    v = (rng.f32() - 0.5) * 2.0;
                }
                v += (rng.f32() - 0.5) * 0.1;
                out.push((v * gain).clamp(-32768.0, 32767.0) as i16);
            }
        }
        out
    }

    #[test]
    fn a_minute_of_speech_like_sound_gives_no_digits() {
        assert_eq!(detect(&speech_like(60)), "");
    }

    #[test]
    fn a_minute_of_music_gives_no_digits() {
        // Q.24 also asks for immunity to music: a minute of the generated music on hold, made
        // at 8 kHz and made at 16 kHz then resampled.
        let moh = crate::media::tone::music_on_hold(8000);
        let minute: Vec<i16> = moh.iter().copied().cycle().take(8000 * 60).collect();
        assert_eq!(detect(&minute), "");
        let moh16 = crate::media::tone::music_on_hold(16_000);
        let mut r = crate::media::resample::Resampler::new(16_000, 8000);
        let mut down = Vec::new();
        r.process(
            &moh16.iter().copied().cycle().take(16_000 * 60).collect::<Vec<_>>(),
            &mut down,
        );
        assert_eq!(detect(&down), "");
    }

    #[test]
    fn white_noise_gives_no_digits() {
        let mut rng = fastrand::Rng::with_seed(11);
        let noise: Vec<i16> = (0..8000 * 60).map(|_| rng.i16(-12000..12000)).collect();
        assert_eq!(detect(&noise), "");
    }
}
