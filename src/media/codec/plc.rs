//! Packet-loss concealment for waveform codecs in the spirit of ITU-T G.711 Appendix I:
//! the last pitch period (found by autocorrelation over 5-15 ms) is repeated, the first 10 ms
//! at full level, then attenuated by 20% per 10 ms, silent after 60 ms; when packets come back,
//! the concealment is cross-faded into the first good frame so there is no click. Works at any
//! rate (lags scale with it).
//!
//! Simplified from the appendix: one pitch period is repeated throughout (the appendix widens
//! to two and three periods after 10 and 20 ms), and the cross-fade is a fixed 1/4 period.

/// History kept: 48.75 ms, as in Appendix I.
const HISTORY_MS: usize = 49;

#[derive(Debug, Clone)]
pub struct PitchPlc {
    rate: usize,
    history: Vec<i16>,
    /// The pitch period being repeated while concealing.
    period: Vec<i16>,
    pos: usize,
    /// Samples concealed in the current loss run.
    concealed: usize,
}

impl PitchPlc {
    pub fn new(rate: u32) -> Self {
        let rate = rate.max(8000) as usize;
        PitchPlc {
            rate,
            history: Vec::with_capacity(2 * rate * HISTORY_MS / 1000 + rate / 50),
            period: Vec::new(),
            pos: 0,
            concealed: 0,
        }
    }

    /// A good frame: cross-fade from the concealment if one was running, remember it.
    pub fn good_frame(&mut self, frame: &mut [i16]) {
        if self.concealed > 0 && !self.period.is_empty() {
            let fade = (self.period.len() / 4).max(1).min(frame.len());
            let gain = self.gain();
            for (i, s) in frame.iter_mut().take(fade).enumerate() {
                let w = (i + 1) as f32 / (fade + 1) as f32;
                let c = self.period[self.pos % self.period.len()] as f32 * gain;
                self.pos += 1;
                *s = (c * (1.0 - w) + *s as f32 * w) as i16;
            }
        }
        self.concealed = 0;
        self.remember(frame);
    }

    /// Appends to the history. Everything reading it takes its last [`HISTORY_MS`], so it is
    /// cut back only once it holds twice that: a steady call moves the history once every few
    /// frames, not at every frame (it was 1.5% of a G.711 conference mixer thread).
    fn remember(&mut self, samples: &[i16]) {
        let cap = self.rate * HISTORY_MS / 1000;
        self.history.extend_from_slice(samples);
        if self.history.len() > 2 * cap {
            let drop = self.history.len() - cap;
            self.history.drain(..drop);
        }
    }

    fn gain(&self) -> f32 {
        let ms = self.concealed * 1000 / self.rate;
        if ms <= 10 {
            1.0
        } else {
            (1.0 - 0.2 * ((ms - 10) as f32 / 10.0)).max(0.0)
        }
    }

    /// The pitch period of the history: the lag in 5-15 ms with the best normalised
    /// autocorrelation over the last 20 ms.
    fn estimate_period(&self) -> usize {
        let h = &self.history;
        let (min_lag, max_lag) = (self.rate / 200, self.rate * 15 / 1000);
        let window = (self.rate / 50).min(h.len().saturating_sub(max_lag));
        if window < min_lag {
            return min_lag.max(1);
        }
        let end = h.len();
        let x = &h[end - window..];
        let mut best = (min_lag, f64::MIN);
        for lag in min_lag..=max_lag {
            let y = &h[end - window - lag..end - lag];
            let (mut xy, mut yy) = (0f64, 0f64);
            for (a, b) in x.iter().zip(y) {
                xy += *a as f64 * *b as f64;
                yy += *b as f64 * *b as f64;
            }
            let score = if yy > 0.0 { xy / yy.sqrt() } else { f64::MIN };
            if score > best.1 {
                best = (lag, score);
            }
        }
        best.0
    }

    /// Appends `samples` of concealment.
    pub fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) {
        if self.concealed == 0 {
            let p = self.estimate_period();
            self.period = if self.history.len() >= p {
                self.history[self.history.len() - p..].to_vec()
            } else {
                Vec::new()
            };
            self.pos = 0;
        }
        let start = out.len();
        for _ in 0..samples {
            let gain = self.gain();
            let v = if self.period.is_empty() || gain == 0.0 {
                0
            } else {
                let s = self.period[self.pos % self.period.len()];
                self.pos += 1;
                (s as f32 * gain) as i16
            };
            out.push(v);
            self.concealed += 1;
        }
        // The concealment becomes history, so a longer loss keeps its continuity.
        self.remember(&out[start..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A voiced-like signal: 125 Hz fundamental with harmonics (period 64 samples at 8 kHz).
    fn voiced(n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f64 / 8000.0;
                let v: f64 = (1..8)
                    .map(|h| (2.0 * std::f64::consts::PI * 125.0 * h as f64 * t).sin() / h as f64)
                    .sum();
                (v * 6000.0) as i16
            })
            .collect()
    }

    #[test]
    fn a_lost_frame_of_steady_voice_is_rebuilt_closely() {
        let x = voiced(8000);
        let mut plc = PitchPlc::new(8000);
        for f in x[..1600].chunks(160) {
            let mut f = f.to_vec();
            plc.good_frame(&mut f);
        }
        let mut out = Vec::new();
        plc.conceal(160, &mut out);
        let truth = &x[1600..1760];
        let sig: f64 = truth.iter().map(|&v| (v as f64).powi(2)).sum();
        let err: f64 = truth
            .iter()
            .zip(&out)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum();
        let snr = 10.0 * (sig / err).log10();
        assert!(snr > 15.0, "concealed frame SNR {snr:.1} dB");
    }

    #[test]
    fn long_losses_fade_to_silence_by_60_ms() {
        let mut plc = PitchPlc::new(8000);
        let mut f = voiced(800);
        plc.good_frame(&mut f);
        let mut out = Vec::new();
        for _ in 0..4 {
            plc.conceal(160, &mut out);
        }
        assert!(out[..80].iter().any(|&s| s.abs() > 1000), "full level at first");
        assert!(out[480..].iter().all(|&s| s == 0), "silent after 60 ms");
    }

    #[test]
    fn recovery_is_cross_faded_without_a_click() {
        let x = voiced(4000);
        let mut plc = PitchPlc::new(8000);
        let mut out: Vec<i16> = Vec::new();
        for (k, f) in x.chunks(160).enumerate() {
            if k == 10 {
                plc.conceal(160, &mut out);
            } else {
                let mut f = f.to_vec();
                plc.good_frame(&mut f);
                out.extend_from_slice(&f);
            }
        }
        // The largest sample-to-sample step stays near the signal's own largest step.
        let step = |v: &[i16]| v.windows(2).map(|w| (w[1] as i32 - w[0] as i32).abs()).max().unwrap();
        assert!(step(&out) < step(&x) * 2, "{} vs {}", step(&out), step(&x));
    }
}
