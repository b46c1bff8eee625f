//! Signal measures used to check audio: the power of one frequency (Goertzel) and RMS level.
//! Quality checks and tests use them; the DTMF detector has its own block-wise version.

/// Power at `freq` Hz of `samples` at `rate` Hz (Goertzel), normalised by length.
pub fn tone_power(samples: &[i16], freq: f64, rate: u32) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / rate as f64).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in samples {
        let s = v as f64 + k * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - k * s1 * s2) / samples.len().max(1) as f64
}

/// Root-mean-square level.
pub fn rms(samples: &[i16]) -> f64 {
    (samples.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / samples.len().max(1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_shows_at_its_frequency_only() {
        let x: Vec<i16> = (0..8000)
            .map(|i| (10_000.0 * (2.0 * std::f64::consts::PI * 697.0 * i as f64 / 8000.0).sin()) as i16)
            .collect();
        assert!(tone_power(&x, 697.0, 8000) > 10_000.0 * tone_power(&x, 1209.0, 8000));
        assert!((rms(&x) - 10_000.0 / 2f64.sqrt()).abs() < 20.0);
        assert_eq!(rms(&[]), 0.0);
    }
}
