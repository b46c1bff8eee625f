//! Opus (RFC 6716; RTP payload RFC 7587: `opus/48000/2`, the RTP clock is always 48 kHz)
//! through `opus-rs`, a pure-Rust port of libopus 1.6 (no C build, and memory-safe on the
//! packets the network hands us). We encode mono VoIP at the room's rate with in-band FEC as
//! the receiver's reported loss asks, and decode straight to the rate the consumer needs
//! (8, 12, 16, 24 or 48 kHz), so no resampling is done for Opus legs.

use super::{Decoder, Encoder};

/// The largest Opus packet we produce (RFC 6716 §3.4 recommends at most 1275 bytes a frame).
const MAX_PACKET: usize = 1275;

/// The longest Opus packet (RFC 6716 §3.2.5: 120 ms) at the highest rate, in samples.
const MAX_PACKET_SAMPLES: usize = 5760;

/// The rates an Opus encoder or decoder runs at (RFC 6716 §2: 8, 12, 16, 24 or 48 kHz).
const RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, 48_000];

/// Why an Opus encoder or decoder could not be made.
#[derive(Debug, thiserror::Error)]
#[error("opus: {0}")]
pub struct OpusError(&'static str);

/// The bit rate we encode speech at, by the rate of the PCM handed in. The encoder has no
/// automatic choice; these sit a little above what libopus picks for mono VoIP (measured:
/// 10 kb/s narrowband, 17 kb/s wideband) and below RFC 7587 §3.1.1's fullband ceiling, so a
/// room's shared encode stays clear speech without spending more than a G.711 leg's bytes.
fn speech_bitrate(rate: u32) -> i32 {
    match rate {
        8_000 => 12_000,
        12_000 => 16_000,
        16_000 => 20_000,
        24_000 => 24_000,
        _ => 32_000,
    }
}

/// An Opus encoder for 20 ms mono frames.
pub struct OpusEncoder {
    inner: opus_rs::OpusEncoder,
    rate: u32,
    scratch: Vec<u8>,
}

impl OpusEncoder {
    /// `rate` is the PCM rate handed to `encode` (8000, 12000, 16000, 24000 or 48000).
    pub fn new(rate: u32) -> Result<Self, OpusError> {
        if !RATES.contains(&rate) {
            return Err(OpusError("unsupported sample rate"));
        }
        let mut inner = opus_rs::OpusEncoder::new(rate as i32, 1, opus_rs::Application::Voip).map_err(OpusError)?;
        inner.bitrate_bps = speech_bitrate(rate);
        // RFC 7587 §3.3: FEC lets the receiver rebuild a lost frame from the next packet.
        // The encoder codes it only for an expected loss above 0, which the receiver's RTCP
        // reports set (`set_expected_loss`): a clean path costs no FEC bits or CPU (the
        // redundant LBRR encoding is a second SILK pass).
        inner.use_inband_fec = true;
        inner.packet_loss_perc = 0;
        Ok(OpusEncoder {
            inner,
            rate,
            scratch: vec![0; MAX_PACKET],
        })
    }
}

impl OpusEncoder {
    /// Encoder complexity 0-10 (default 9): lower costs less CPU per frame for a little
    /// quality; rooms encode at a lower one (`room.opus_complexity`).
    pub fn set_complexity(&mut self, complexity: i32) {
        self.inner.complexity = complexity.clamp(0, 10);
    }
}

impl Encoder for OpusEncoder {
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) {
        // A frame size the encoder refuses (not 2.5-60 ms) is a caller bug; send nothing.
        if let Ok(n) = self.inner.encode_i16(pcm, pcm.len(), &mut self.scratch) {
            out.extend_from_slice(&self.scratch[..n]);
        }
    }

    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn set_expected_loss(&mut self, percent: u8) {
        self.inner.packet_loss_perc = i32::from(percent.min(100));
    }
}

/// An Opus decoder to mono PCM at a chosen rate, with PLC and FEC.
pub struct OpusDecoder {
    inner: opus_rs::OpusDecoder,
    rate: u32,
    scratch: Vec<f32>,
}

impl OpusDecoder {
    pub fn new(rate: u32) -> Result<Self, OpusError> {
        if !RATES.contains(&rate) {
            return Err(OpusError("unsupported sample rate"));
        }
        Ok(OpusDecoder {
            inner: opus_rs::OpusDecoder::new(rate as i32, 1).map_err(OpusError)?,
            rate,
            scratch: vec![0.0; MAX_PACKET_SAMPLES],
        })
    }

    /// Appends `n` decoded samples as PCM16 (the decoder's float scale: 1.0 is 32768).
    fn push_decoded(&self, n: usize, out: &mut Vec<i16>) {
        out.extend(
            self.scratch[..n]
                .iter()
                .map(|s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16),
        );
    }
}

impl Decoder for OpusDecoder {
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) {
        // An empty payload has no ToC to say how long it lasts: conceal 20 ms. (A ToC-only
        // one, DTX, is concealed by the decoder for the duration its ToC gives.)
        if payload.is_empty() {
            return self.conceal((self.rate / 50) as usize, out);
        }
        match self.inner.decode(payload, MAX_PACKET_SAMPLES, &mut self.scratch) {
            Ok(n) => self.push_decoded(n.min(MAX_PACKET_SAMPLES), out),
            // A corrupt packet is concealed like a lost one (20 ms).
            Err(_) => self.conceal((self.rate / 50) as usize, out),
        }
    }

    fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) {
        let want = samples.min(MAX_PACKET_SAMPLES);
        // An empty packet asks the decoder for packet-loss concealment (RFC 6716 §4.4).
        match self.inner.decode(&[], want, &mut self.scratch) {
            Ok(n) => self.push_decoded(n.min(want), out),
            Err(_) => out.extend(std::iter::repeat_n(0, samples)),
        }
    }

    /// Rebuilds a lost frame from the FEC data in the packet that follows it (RFC 7587 §3.3).
    fn recover(&mut self, next_payload: &[u8], samples: usize, out: &mut Vec<i16>) {
        let want = samples.min(MAX_PACKET_SAMPLES);
        match self.inner.decode_fec(next_payload, want, &mut self.scratch) {
            Ok(n) => self.push_decoded(n.min(want), out),
            Err(_) => self.conceal(samples, out),
        }
    }

    fn sample_rate(&self) -> u32 {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::test_signal::{snr_db_aligned, speechy};

    #[test]
    fn opus_round_trip_keeps_snr_above_the_floor() {
        for rate in [16_000u32, 48_000] {
            let frame = (rate / 50) as usize;
            let pcm = speechy(rate, 2.0);
            let mut enc = OpusEncoder::new(rate).unwrap();
            let mut dec = OpusDecoder::new(rate).unwrap();
            let mut back = Vec::new();
            let mut payload = Vec::new();
            for chunk in pcm.chunks_exact(frame) {
                payload.clear();
                enc.encode(chunk, &mut payload);
                assert!(!payload.is_empty() && payload.len() < 400);
                dec.decode(&payload, &mut back);
            }
            // Opus is perceptual: it does not aim at the waveform, so its waveform SNR on this
            // voice-like signal is modest (measured 2026-11-22: 6.1 dB at 16 kHz). The floor
            // guards against a broken path (wrong rate, wrong channel count: SNR near 0 or
            // negative), not against perceptual quality.
            let snr = snr_db_aligned(&pcm, &back, 2000);
            eprintln!("opus {rate} Hz: SNR {snr:.1} dB");
            assert!(snr > 4.0, "{rate} Hz: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn every_room_complexity_keeps_the_snr_floor() {
        // SILK below complexity 2 quantises without delayed decision (half the CPU per frame,
        // PERFORMANCE.md); its waveform SNR on a voice-like signal stays near the others'.
        let rate = 16_000;
        let pcm = speechy(rate, 2.0);
        let mut snrs = Vec::new();
        for complexity in [0, 1, 3, 9] {
            let mut enc = OpusEncoder::new(rate).unwrap();
            enc.set_complexity(complexity);
            let mut dec = OpusDecoder::new(rate).unwrap();
            let mut back = Vec::new();
            let mut payload = Vec::new();
            for chunk in pcm.chunks_exact(320) {
                payload.clear();
                enc.encode(chunk, &mut payload);
                dec.decode(&payload, &mut back);
            }
            let snr = snr_db_aligned(&pcm, &back, 2000);
            snrs.push((complexity, snr));
            assert!(snr > 4.0, "complexity {complexity}: SNR {snr:.1} dB");
        }
        eprintln!("SNR by complexity: {snrs:?}");
    }

    #[test]
    fn lost_frames_are_concealed_or_rebuilt_from_fec() {
        let rate = 16_000;
        let frame = 320;
        let pcm = speechy(rate, 1.0);
        let mut enc = OpusEncoder::new(rate).unwrap();
        let mut dec = OpusDecoder::new(rate).unwrap();
        let packets: Vec<Vec<u8>> = pcm
            .chunks_exact(frame)
            .map(|c| {
                let mut p = Vec::new();
                enc.encode(c, &mut p);
                p
            })
            .collect();
        let mut out = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            if i == 10 {
                dec.recover(&packets[11], frame, &mut out);
            } else if i == 20 {
                dec.conceal(frame, &mut out);
            } else {
                dec.decode(p, &mut out);
            }
            assert_eq!(out.len(), (i + 1) * frame, "every frame yields 20 ms");
        }
        dec.decode(&[0xff, 0xff, 0xff], &mut out);
        assert_eq!(out.len() % frame, 0, "junk is concealed, not a panic");
    }

    #[test]
    fn fec_is_coded_only_when_the_receiver_reports_loss() {
        use crate::media::codec::opus_packet::carries_fec;
        let rate = 16_000;
        let pcm = speechy(rate, 1.0);
        let mut enc = OpusEncoder::new(rate).unwrap();
        let with_fec = |enc: &mut OpusEncoder, chunks: &[i16]| {
            chunks
                .chunks_exact(320)
                .filter(|c| {
                    let mut p = Vec::new();
                    enc.encode(c, &mut p);
                    carries_fec(&p)
                })
                .count()
        };
        let (first, second) = pcm.split_at(pcm.len() / 2);
        assert_eq!(with_fec(&mut enc, first), 0, "no loss reported: no LBRR");
        enc.set_expected_loss(10);
        let n = with_fec(&mut enc, second);
        // The encoder codes LBRR for the frames it judges worth protecting (about half of these).
        assert!(n >= 8, "10% loss reported: LBRR in {n} of 25 packets");
    }
}
