//! G.711 (ITU-T G.711 (11/88)): µ-law (PCMU, RTP payload type 0) and A-law (PCMA, 8), both
//! at 8 kHz (RFC 3551 §4.5.14).
//!
//! Decoding is a 256-entry table built at compile time from the G.711 reconstruction rule;
//! encoding is the segment search of the recommendation, on 14-bit (µ-law) or 13-bit (A-law)
//! magnitudes. Loss concealment is the pitch-repetition PLC of [`super::plc`], after G.711
//! Appendix I.

use super::{Decoder, Encoder};

/// µ-law bias (G.711 Table 2: 33 in 14-bit units, 0x84 in 16-bit).
const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

const fn ulaw_decode_const(code: u8) -> i16 {
    let u = !code;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0f) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn alaw_decode_const(code: u8) -> i16 {
    let a = code ^ 0x55;
    let exponent = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0f) as i32;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_decode_const(i as u8)
        } else {
            ulaw_decode_const(i as u8)
        };
        i += 1;
    }
    t
}

/// PCMU code -> linear PCM16.
pub static ULAW_TO_LINEAR: [i16; 256] = build_table(false);
/// PCMA code -> linear PCM16.
pub static ALAW_TO_LINEAR: [i16; 256] = build_table(true);

/// Linear PCM16 -> µ-law code.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut pcm = sample as i32;
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    pcm = pcm.min(ULAW_CLIP) + ULAW_BIAS;
    // Segment: position of the highest set bit above bit 7.
    let exponent = (31 - (pcm >> 7).max(1).leading_zeros()) as i32;
    let mantissa = (pcm >> (exponent + 3)) & 0x0f;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// Linear PCM16 -> A-law code.
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut pcm = sample as i32;
    let sign = if pcm >= 0 {
        0x80
    } else {
        pcm = -pcm - 1;
        0
    };
    let pcm = pcm.min(0x7fff);
    let code = if pcm < 256 {
        pcm >> 4
    } else {
        let exponent = (31 - (pcm >> 8).leading_zeros()) as i32 + 1;
        (exponent << 4) | ((pcm >> (exponent + 3)) & 0x0f)
    };
    ((sign | code) as u8) ^ 0x55
}

/// Which G.711 law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    Ulaw,
    Alaw,
}

/// A G.711 encoder.
#[derive(Debug, Clone)]
pub struct G711Encoder {
    law: Law,
}

impl G711Encoder {
    pub fn new(law: Law) -> Self {
        G711Encoder { law }
    }
}

impl Encoder for G711Encoder {
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) {
        out.reserve(pcm.len());
        match self.law {
            Law::Ulaw => out.extend(pcm.iter().map(|&s| linear_to_ulaw(s))),
            Law::Alaw => out.extend(pcm.iter().map(|&s| linear_to_alaw(s))),
        }
    }

    fn sample_rate(&self) -> u32 {
        8000
    }
}

/// A G.711 decoder with pitch-repetition concealment for lost frames.
#[derive(Debug, Clone)]
pub struct G711Decoder {
    table: &'static [i16; 256],
    plc: super::plc::PitchPlc,
}

impl G711Decoder {
    pub fn new(law: Law) -> Self {
        G711Decoder {
            table: match law {
                Law::Ulaw => &ULAW_TO_LINEAR,
                Law::Alaw => &ALAW_TO_LINEAR,
            },
            plc: super::plc::PitchPlc::new(8000),
        }
    }
}

impl Decoder for G711Decoder {
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) {
        let start = out.len();
        out.extend(payload.iter().map(|&c| self.table[c as usize]));
        self.plc.good_frame(&mut out[start..]);
    }

    fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) {
        self.plc.conceal(samples, out);
    }

    fn sample_rate(&self) -> u32 {
        8000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent G.711 reconstruction per the recommendation's tables: µ-law segment end
    /// points 0, 31, 95, 223, 479, 991, 2015, 4063, 8159 (14-bit units, step 2^(seg+1)).
    fn ulaw_reference(code: u8) -> i16 {
        let u = !code;
        let seg = ((u >> 4) & 7) as i32;
        let step = (u & 0x0f) as i32;
        // Decision interval midpoint in 14-bit units: (2 * step + 33) * 2^seg - 33, then x4.
        let value14 = ((2 * step + 33) << seg) - 33;
        let v = (value14 * 4) as i16;
        if u & 0x80 != 0 { -v } else { v }
    }

    /// A-law per G.711: 13-bit reconstruction values, x8 to 16-bit.
    fn alaw_reference(code: u8) -> i16 {
        let a = code ^ 0x55;
        let seg = ((a >> 4) & 7) as i32;
        let step = (a & 0x0f) as i32;
        let value13 = if seg == 0 {
            2 * step + 1
        } else {
            (2 * step + 33) << (seg - 1)
        };
        let v = (value13 * 8) as i16;
        if a & 0x80 != 0 { v } else { -v }
    }

    #[test]
    fn ulaw_table_matches_the_recommendation_for_all_256_codes() {
        for c in 0..=255u8 {
            assert_eq!(ULAW_TO_LINEAR[c as usize], ulaw_reference(c), "code {c:#04x}");
        }
        assert_eq!(ULAW_TO_LINEAR[0x00], -32124);
        assert_eq!(ULAW_TO_LINEAR[0x80], 32124);
        assert_eq!(ULAW_TO_LINEAR[0xff], 0);
        assert_eq!(ULAW_TO_LINEAR[0x7f], 0);
    }

    #[test]
    fn alaw_table_matches_the_recommendation_for_all_256_codes() {
        for c in 0..=255u8 {
            assert_eq!(ALAW_TO_LINEAR[c as usize], alaw_reference(c), "code {c:#04x}");
        }
        assert_eq!(ALAW_TO_LINEAR[0xd5], 8);
        assert_eq!(ALAW_TO_LINEAR[0x55], -8);
        assert_eq!(ALAW_TO_LINEAR[0xaa], 32256);
        assert_eq!(ALAW_TO_LINEAR[0x2a], -32256);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for c in 0..=255u8 {
            let u = linear_to_ulaw(ULAW_TO_LINEAR[c as usize]);
            // µ-law has two zeros (0x7f and 0xff); the encoder picks the positive one.
            if c == 0x7f {
                assert_eq!(u, 0xff);
            } else {
                assert_eq!(u, c, "ulaw {c:#04x}");
            }
            assert_eq!(linear_to_alaw(ALAW_TO_LINEAR[c as usize]), c, "alaw {c:#04x}");
        }
    }

    #[test]
    fn encoding_is_monotonic_and_within_half_a_step_for_every_input() {
        // Exhaustive over all 65,536 inputs. G.711 places its decision values at segment end
        // points (not always the midpoint of two levels), so the bound is half the step of
        // the chosen segment: 8 << segment (µ-law), 16 << (segment - 1) (A-law, segment >= 1).
        for law in [Law::Ulaw, Law::Alaw] {
            let (enc, table): (fn(i16) -> u8, &[i16; 256]) = match law {
                Law::Ulaw => (linear_to_ulaw, &ULAW_TO_LINEAR),
                Law::Alaw => (linear_to_alaw, &ALAW_TO_LINEAR),
            };
            let mut previous = i32::MIN;
            for x in i16::MIN..=i16::MAX {
                let code = enc(x);
                let level = table[code as usize] as i32;
                assert!(level >= previous, "{law:?}: not monotonic at {x}");
                previous = level;
                let segment = match law {
                    Law::Ulaw => ((!code >> 4) & 7) as i32,
                    Law::Alaw => (((code ^ 0x55) >> 4) & 7) as i32,
                };
                let step = match law {
                    Law::Ulaw => 8 << segment,
                    Law::Alaw => 16 << (segment - 1).max(0),
                };
                let err = (level - x as i32).abs();
                let clipped = (x as i32).abs() > 32_000;
                assert!(
                    clipped || err <= step / 2 + 4,
                    "{law:?} x={x}: level {level}, err {err}, step {step}"
                );
            }
        }
    }

    #[test]
    fn a_tone_survives_a_round_trip_with_g711_snr() {
        for law in [Law::Ulaw, Law::Alaw] {
            let pcm: Vec<i16> = (0..8000).map(|i| (10_000.0 * (i as f64 * 0.3).sin()) as i16).collect();
            let mut payload = Vec::new();
            G711Encoder::new(law).encode(&pcm, &mut payload);
            assert_eq!(payload.len(), pcm.len());
            let mut back = Vec::new();
            G711Decoder::new(law).decode(&payload, &mut back);
            let signal: f64 = pcm.iter().map(|&s| (s as f64).powi(2)).sum();
            let noise: f64 = pcm
                .iter()
                .zip(&back)
                .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                .sum();
            let snr = 10.0 * (signal / noise).log10();
            // G.711's companding keeps SNR near 38 dB over its range.
            assert!(snr > 33.0, "{law:?}: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn concealment_fades_to_silence() {
        let mut d = G711Decoder::new(Law::Ulaw);
        let mut out = Vec::new();
        d.decode(&[0x80; 160], &mut out);
        let mut frame = Vec::new();
        d.conceal(160, &mut frame);
        assert!(frame[0] > 0, "the first lost frame continues the signal");
        for _ in 0..3 {
            frame.clear();
            d.conceal(160, &mut frame);
        }
        assert!(frame.iter().all(|&s| s == 0), "silent after 60 ms");
    }
}
