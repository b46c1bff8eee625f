//! Sample-rate conversion between the rates a leg and a room use (8, 16, 48 kHz, and any
//! other, such as 22.05 kHz TTS output): a polyphase windowed-sinc filter, stateful across
//! 20 ms frames so frame boundaries leave no trace.
//!
//! The low-pass cut-off sits at 0.45 of the lower rate (below its Nyquist frequency), the
//! Kaiser-windowed kernel has 32 taps per phase at the input rate and 512 phases; stopband
//! attenuation is about 60 dB. Opus legs do not need it (libopus decodes to the rate asked for).

use std::f64::consts::PI;

const TAPS: usize = 32;
const PHASES: usize = 512;

/// A resampler from `from` Hz to `to` Hz.
#[derive(Debug, Clone)]
pub struct Resampler {
    from: u32,
    to: u32,
    /// `PHASES` kernels of `TAPS` coefficients (shared by every resampler of the same rates:
    /// a room's members would otherwise each compute it when they join).
    table: std::sync::Arc<[f32]>,
    /// The last `TAPS` input samples.
    history: Vec<f32>,
    /// Position of the next output sample: `base` input samples into the history plus
    /// `j / to_g` of one (exact, so framing cannot change the result; kept as two integers so
    /// the loop divides nothing).
    base: usize,
    j: u32,
    /// `from` and `to` divided by their greatest common divisor.
    from_g: u32,
    to_g: u32,
    /// The kernel phase for each `j`.
    phases: Vec<u16>,
}

fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    for k in 1..50 {
        term *= (x / (2.0 * k as f64)).powi(2);
        sum += term;
        if term < 1e-12 * sum {
            break;
        }
    }
    sum
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The kernel table for `from` -> `to`, computed once per pair of rates.
fn kernel_table(from: u32, to: u32) -> std::sync::Arc<[f32]> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Tables = Mutex<HashMap<(u32, u32), Arc<[f32]>>>;
    static TABLES: OnceLock<Tables> = OnceLock::new();
    let tables = TABLES.get_or_init(Mutex::default);
    if let Some(t) = tables.lock().unwrap_or_else(|p| p.into_inner()).get(&(from, to)) {
        return t.clone();
    }
    let table: Arc<[f32]> = Arc::from(compute_table(from, to));
    tables
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((from, to))
        .or_insert(table)
        .clone()
}

fn compute_table(from: u32, to: u32) -> Vec<f32> {
    // Cut-off as a fraction of the input rate; scaled down when decimating.
    let cutoff = 0.45 * (to.min(from) as f64) / from as f64;
    let beta = 6.0;
    let half = TAPS as f64 / 2.0;
    let mut table = vec![0f32; TAPS * PHASES];
    for phase in 0..PHASES {
        let frac = phase as f64 / PHASES as f64;
        let mut sum = 0.0;
        let mut row = [0f64; TAPS];
        for (k, c) in row.iter_mut().enumerate() {
            // Distance from the output position to input tap k (taps centred on the output).
            let x = k as f64 - (half - 1.0) - frac;
            let sinc = if x.abs() < 1e-9 {
                1.0
            } else {
                (2.0 * PI * cutoff * x).sin() / (PI * x) / (2.0 * cutoff)
            };
            let w = bessel_i0(beta * (1.0 - (x / half).powi(2)).max(0.0).sqrt()) / bessel_i0(beta);
            *c = sinc * w;
            sum += *c;
        }
        for (k, c) in row.iter().enumerate() {
            table[phase * TAPS + k] = (c / sum) as f32;
        }
    }
    table
}

impl Resampler {
    pub fn new(from: u32, to: u32) -> Self {
        let from = from.max(1);
        let to = to.max(1);
        let g = gcd(from, to);
        let (from_g, to_g) = (from / g, to / g);
        Resampler {
            from,
            to,
            table: kernel_table(from, to),
            history: vec![0.0; TAPS],
            base: 0,
            j: 0,
            from_g,
            to_g,
            phases: (0..to_g as u64)
                .map(|j| (j * PHASES as u64 / to_g as u64) as u16)
                .collect(),
        }
    }

    pub fn rates(&self) -> (u32, u32) {
        (self.from, self.to)
    }

    /// Forgets the input so far, as if new: for a stream that resumes after a gap (a member
    /// who starts talking after frames that were not resampled), whose old history would
    /// otherwise be joined to the new audio.
    pub fn restart(&mut self) {
        self.history.clear();
        self.history.resize(TAPS, 0.0);
        self.base = 0;
        self.j = 0;
    }

    /// Converts `input`, appending to `out`. Output length follows the rate ratio; the
    /// fractional remainder carries over to the next call.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if self.from == self.to {
            out.extend_from_slice(input);
            return;
        }
        self.history.extend(input.iter().map(|&s| s as f32));
        // The next output sample needs history[base .. base + TAPS].
        while self.base + TAPS <= self.history.len() {
            let phase = self.phases[self.j as usize] as usize;
            let kernel = &self.table[phase * TAPS..(phase + 1) * TAPS];
            let acc = dot(&self.history[self.base..self.base + TAPS], kernel);
            // Round half away from zero without a libm call; `as` saturates to i16's range.
            out.push((acc + 0.5f32.copysign(acc)) as i16);
            self.j += self.from_g;
            while self.j >= self.to_g {
                self.j -= self.to_g;
                self.base += 1;
            }
        }
        // Keep what the next output still needs.
        let consumed = self.base.min(self.history.len());
        self.history.drain(..consumed);
        self.base -= consumed;
    }
}

/// The dot product of one kernel with the history (`TAPS` samples each). On x86-64, four
/// lanes of SSE (part of the x86-64 baseline, so always present): LLVM leaves the plain loop
/// scalar (32 mulss + 32 addss measured), and this loop is most of a mixer tick.
#[cfg(target_arch = "x86_64")]
#[inline]
fn dot(x: &[f32], k: &[f32]) -> f32 {
    use std::arch::x86_64::{_mm_add_ps, _mm_loadu_ps, _mm_mul_ps, _mm_setzero_ps, _mm_storeu_ps};
    let (x, k) = (&x[..TAPS], &k[..TAPS]);
    let mut lanes = [0f32; 4];
    // SAFETY: SSE is enabled on every x86-64 target; every load reads 4 floats at offsets
    // c..c+8 < TAPS of slices just checked to hold TAPS floats; the store writes 4 floats
    // into a [f32; 4].
    unsafe {
        let mut a = _mm_setzero_ps();
        let mut b = _mm_setzero_ps();
        for c in (0..TAPS).step_by(8) {
            a = _mm_add_ps(
                a,
                _mm_mul_ps(_mm_loadu_ps(x.as_ptr().add(c)), _mm_loadu_ps(k.as_ptr().add(c))),
            );
            b = _mm_add_ps(
                b,
                _mm_mul_ps(_mm_loadu_ps(x.as_ptr().add(c + 4)), _mm_loadu_ps(k.as_ptr().add(c + 4))),
            );
        }
        _mm_storeu_ps(lanes.as_mut_ptr(), _mm_add_ps(a, b));
    }
    (lanes[0] + lanes[2]) + (lanes[1] + lanes[3])
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn dot(x: &[f32], k: &[f32]) -> f32 {
    x.iter().zip(k).map(|(x, k)| x * k).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::analysis::tone_power as power_at;

    fn tone(freq: f64, rate: u32, n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (2.0 * PI * freq * i as f64 / rate as f64).sin()) as i16)
            .collect()
    }

    fn run(r: &mut Resampler, x: &[i16], frame: usize) -> Vec<i16> {
        let mut out = Vec::new();
        for c in x.chunks(frame) {
            r.process(c, &mut out);
        }
        out
    }

    #[test]
    fn a_restarted_resampler_is_a_fresh_one() {
        for (from, to) in [(8000u32, 16000u32), (16000, 8000), (48000, 16000)] {
            let mut used = Resampler::new(from, to);
            run(&mut used, &tone(700.0, from, 777, 9000.0), 333);
            used.restart();
            let input = tone(300.0, from, 1000, 6000.0);
            let frame = (from / 50) as usize;
            assert_eq!(
                run(&mut used, &input, frame),
                run(&mut Resampler::new(from, to), &input, frame),
                "{from}->{to}"
            );
        }
    }

    #[test]
    fn lengths_follow_the_ratio() {
        for (from, to) in [
            (8000u32, 16000u32),
            (16000, 8000),
            (8000, 48000),
            (48000, 16000),
            (22050, 8000),
        ] {
            let mut r = Resampler::new(from, to);
            let out = run(&mut r, &vec![0; from as usize], (from / 50) as usize);
            let expected = to as i64;
            assert!(
                (out.len() as i64 - expected).abs() <= TAPS as i64,
                "{from}->{to}: {}",
                out.len()
            );
        }
    }

    #[test]
    fn a_tone_keeps_its_frequency_and_level() {
        for (from, to) in [
            (8000u32, 16000u32),
            (16000, 8000),
            (8000, 48000),
            (48000, 8000),
            (22050, 8000),
        ] {
            let x = tone(1000.0, from, from as usize, 10_000.0);
            let mut r = Resampler::new(from, to);
            let y = run(&mut r, &x, (from / 50) as usize);
            let tail = &y[y.len() / 4..];
            let at = power_at(tail, 1000.0, to);
            let off = power_at(tail, 1500.0, to);
            assert!(at > 10_000.0 * off, "{from}->{to}");
            let rms = (tail.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / tail.len() as f64).sqrt();
            let expected = 10_000.0 / 2f64.sqrt();
            assert!(
                (rms / expected - 1.0).abs() < 0.05,
                "{from}->{to}: rms {rms:.0}, expected {expected:.0}"
            );
        }
    }

    #[test]
    fn decimation_removes_what_would_alias() {
        // 5 kHz at 16 kHz cannot exist at 8 kHz: it must be filtered, not folded to 3 kHz.
        let x = tone(5000.0, 16_000, 16_000, 10_000.0);
        let mut r = Resampler::new(16_000, 8000);
        let y = run(&mut r, &x, 320);
        let rms = (y.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / y.len() as f64).sqrt();
        // More than 40 dB down from 7071.
        assert!(rms < 71.0, "residual rms {rms:.1}");
    }

    #[test]
    fn frame_boundaries_leave_no_trace() {
        let x = tone(700.0, 8000, 8000, 8000.0);
        let whole = run(&mut Resampler::new(8000, 48000), &x, 8000);
        let framed = run(&mut Resampler::new(8000, 48000), &x, 160);
        let odd = run(&mut Resampler::new(8000, 48000), &x, 37);
        assert_eq!(whole, framed);
        assert_eq!(whole, odd);
    }
}
