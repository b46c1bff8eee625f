//! Audio codecs behind one pair of traits. PCM is 16-bit signed, mono, at the codec's own
//! sample rate; a 20 ms frame of G.711 is 160 samples.

pub mod g711;
pub mod g722;
pub mod opus;
pub mod opus_packet;
pub mod pair;
pub mod plc;

/// Encodes PCM frames into RTP payloads.
pub trait Encoder: Send {
    /// Appends the payload for `pcm` to `out`.
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>);
    /// PCM sample rate, Hz.
    fn sample_rate(&self) -> u32;
    /// The loss the receiver reports (percent, from RTCP): codecs with in-band forward error
    /// correction spend bits on it accordingly (Opus); others ignore it.
    fn set_expected_loss(&mut self, _percent: u8) {}
}

/// Decodes RTP payloads into PCM.
pub trait Decoder: Send {
    /// Appends the PCM of `payload` to `out`.
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>);
    /// Appends `samples` of concealment for a lost frame (packet-loss concealment).
    fn conceal(&mut self, samples: usize, out: &mut Vec<i16>);
    /// Appends a lost frame rebuilt from the packet that follows it, for codecs with in-band
    /// forward error correction (Opus, RFC 7587 §3.3); others conceal.
    fn recover(&mut self, _next_payload: &[u8], samples: usize, out: &mut Vec<i16>) {
        self.conceal(samples, out);
    }
    /// PCM sample rate, Hz.
    fn sample_rate(&self) -> u32;
}

/// Test signals and measures shared by the codec tests.
#[cfg(test)]
pub(crate) mod test_signal {
    /// A voice-like test signal: a gliding 120-220 Hz harmonic series with a falling spectrum,
    /// amplitude-modulated at a syllable rate.
    pub fn speechy(rate: u32, seconds: f32) -> Vec<i16> {
        let n = (rate as f32 * seconds) as usize;
        let mut phase = 0.0f32;
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let pitch = 170.0 + 50.0 * (2.0 * std::f32::consts::PI * 0.7 * t).sin();
                phase += 2.0 * std::f32::consts::PI * pitch / rate as f32;
                let mut v = 0.0;
                let mut h = 1.0;
                while h * pitch < (rate as f32 / 2.0).min(4000.0) {
                    v += (h * phase).sin() / h;
                    h += 1.0;
                }
                let env = 0.6 + 0.4 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
                (v * env * 6000.0) as i16
            })
            .collect()
    }

    /// SNR in dB of `out` against `reference`, after finding the codec delay (0..max_lag
    /// samples) that lines them up best.
    pub fn snr_db_aligned(reference: &[i16], out: &[i16], max_lag: usize) -> f64 {
        let mut best = f64::MIN;
        for lag in 0..max_lag.min(out.len()) {
            let n = reference.len().min(out.len() - lag);
            let (mut sig, mut noise) = (0.0f64, 0.0f64);
            for i in 0..n {
                let r = reference[i] as f64;
                let o = out[i + lag] as f64;
                sig += r * r;
                noise += (r - o) * (r - o);
            }
            if noise > 0.0 {
                best = best.max(10.0 * (sig / noise).log10());
            } else {
                return f64::INFINITY;
            }
        }
        best
    }
}
