//! Tones: cadenced single and dual tones described the way telephony configurations describe
//! them (`"440+480/2000,0/4000"`: frequencies in Hz joined by `+`, a duration in ms after `/`,
//! segments separated by commas, repeating), the join and leave beeps, and a generated
//! music-on-hold loop (so no licensed recording is needed).

use std::f64::consts::PI;

/// Why a tone specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad tone `{spec}`: {reason}")]
pub struct ToneError {
    pub spec: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
struct Segment {
    freqs: Vec<f64>,
    samples: usize,
}

/// A tone source producing frames at a sample rate.
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    segments: Vec<Segment>,
    rate: u32,
    amplitude: f64,
    seg: usize,
    pos_in_seg: usize,
    t: u64,
    repeat: bool,
    done: bool,
}

/// Whether `spec` is a named tone or a tone specification this generator can play.
pub fn check(spec: &str) -> Result<(), ToneError> {
    ToneGenerator::new(named(spec).unwrap_or(spec), 16_000, -10.0, false).map(|_| ())
}

/// Named tones.
pub fn named(name: &str) -> Option<&'static str> {
    Some(match name {
        // A short high beep when someone joins, a lower double beep when someone leaves.
        "join" => "880/120",
        "leave" => "660/100,0/50,440/120",
        // North American ringback and busy (ANSI T1.401).
        "ringback" => "440+480/2000,0/4000",
        "busy" => "480+620/500,0/500",
        "beep" => "1000/200",
        _ => return None,
    })
}

impl ToneGenerator {
    /// Parses `spec` (or a name from [`named`]); `repeat` loops the cadence.
    pub fn new(spec: &str, rate: u32, level_dbfs: f64, repeat: bool) -> Result<Self, ToneError> {
        let text = named(spec).unwrap_or(spec);
        let bad = |reason| ToneError {
            spec: spec.to_string(),
            reason,
        };
        let mut segments = Vec::new();
        for part in text.split(',') {
            let (freqs, ms) = part.trim().split_once('/').ok_or(bad("segment without /duration"))?;
            let ms: u32 = ms.trim().parse().map_err(|_| bad("duration is not a number of ms"))?;
            if ms == 0 || ms > 60_000 {
                return Err(bad("duration must be 1-60000 ms"));
            }
            let mut fs = Vec::new();
            for f in freqs.split('+') {
                let f: f64 = f.trim().parse().map_err(|_| bad("frequency is not a number"))?;
                if !(0.0..=rate as f64 / 2.0).contains(&f) {
                    return Err(bad("frequency outside 0 to half the sample rate"));
                }
                if f > 0.0 {
                    fs.push(f);
                }
            }
            if fs.len() > 4 {
                return Err(bad("at most four frequencies"));
            }
            segments.push(Segment {
                freqs: fs,
                samples: (ms as u64 * rate as u64 / 1000) as usize,
            });
        }
        if segments.is_empty() || segments.len() > 32 {
            return Err(bad("1 to 32 segments"));
        }
        Ok(ToneGenerator {
            segments,
            rate,
            amplitude: 32767.0 * 10f64.powf(level_dbfs.min(0.0) / 20.0),
            seg: 0,
            pos_in_seg: 0,
            t: 0,
            repeat,
            done: false,
        })
    }

    /// Appends `frame` samples; false (and nothing appended) once a non-repeating tone ended.
    pub fn next_frame(&mut self, frame: usize, out: &mut Vec<i16>) -> bool {
        if self.done {
            return false;
        }
        for _ in 0..frame {
            let s = &self.segments[self.seg];
            let n = s.freqs.len().max(1) as f64;
            let v: f64 = s
                .freqs
                .iter()
                .map(|f| (2.0 * PI * f * self.t as f64 / self.rate as f64).sin())
                .sum::<f64>()
                / n;
            // 2 ms ramps at segment edges avoid clicks.
            let ramp = (self.rate as usize / 500).max(1);
            let edge = self.pos_in_seg.min(s.samples.saturating_sub(self.pos_in_seg + 1));
            let env = if edge < ramp { edge as f64 / ramp as f64 } else { 1.0 };
            out.push((v * env * self.amplitude) as i16);
            self.t += 1;
            self.pos_in_seg += 1;
            if self.pos_in_seg >= s.samples {
                self.pos_in_seg = 0;
                self.seg += 1;
                if self.seg == self.segments.len() {
                    self.seg = 0;
                    if !self.repeat {
                        self.done = true;
                        // Pad the rest of this frame with silence.
                        let missing = frame - (out.len() % frame.max(1)).min(frame);
                        if missing < frame {
                            out.extend(std::iter::repeat_n(0, missing));
                        }
                        return true;
                    }
                }
            }
        }
        true
    }
}

/// Generated music on hold: a slow arpeggio (C major, A minor, F major, G major) of soft
/// decaying notes, 8 s long, looping.
pub fn music_on_hold(rate: u32) -> Vec<i16> {
    let chords: [[f64; 3]; 4] = [
        [261.63, 329.63, 392.0],
        [220.0, 261.63, 329.63],
        [174.61, 220.0, 261.63],
        [196.0, 246.94, 293.66],
    ];
    let note = rate as usize / 4; // 250 ms per note, 8 notes per chord pass
    let mut out = Vec::with_capacity(rate as usize * 8);
    for chord in chords {
        for k in 0..8 {
            let f = chord[k % 3] * if (3..6).contains(&k) { 2.0 } else { 1.0 };
            for i in 0..note {
                let t = i as f64 / rate as f64;
                let env = (-3.0 * t).exp() * (1.0 - (-200.0 * t).exp());
                let v = (2.0 * PI * f * t).sin() + 0.3 * (2.0 * PI * 2.0 * f * t).sin();
                out.push((v * env * 6000.0) as i16);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::analysis::tone_power as power_at;

    fn render(spec: &str, rate: u32, ms: usize, repeat: bool) -> Vec<i16> {
        let mut g = ToneGenerator::new(spec, rate, -10.0, repeat).unwrap();
        let frame = rate as usize / 50;
        let mut out = Vec::new();
        for _ in 0..ms / 20 {
            if !g.next_frame(frame, &mut out) {
                break;
            }
        }
        out
    }

    #[test]
    fn ringback_has_its_two_frequencies_and_cadence() {
        let x = render("ringback", 8000, 6000, true);
        let on = &x[800..15_200];
        let off = &x[16_800..47_200];
        assert!(power_at(on, 440.0, 8000) > 1000.0 * power_at(on, 1000.0, 8000));
        assert!(power_at(on, 480.0, 8000) > 1000.0 * power_at(on, 1000.0, 8000));
        assert!(off.iter().all(|&s| s == 0), "silent for 4 s");
    }

    #[test]
    fn beeps_end_and_pad_the_last_frame() {
        let x = render("join", 16_000, 1000, false);
        assert_eq!(x.len() % 320, 0);
        assert!(x.len() >= 120 * 16 && x.len() < 120 * 16 + 320);
        assert!(power_at(&x, 880.0, 16_000) > 100.0 * power_at(&x, 440.0, 16_000));
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        for bad in ["", "440", "440/abc", "99999/100", "440/0", "1+2+3+4+5/100"] {
            assert!(ToneGenerator::new(bad, 8000, -10.0, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn music_on_hold_is_eight_seconds_of_sound() {
        let m = music_on_hold(16_000);
        assert_eq!(m.len(), 16_000 * 8);
        let rms = (m.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / m.len() as f64).sqrt();
        assert!(rms > 500.0 && rms < 8000.0, "rms {rms:.0}");
        assert!(power_at(&m[..4000], 261.63, 16_000) > power_at(&m[..4000], 3000.0, 16_000));
    }
}
