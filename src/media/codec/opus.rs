//! Opus (RFC 6716; RTP payload RFC 7587: `opus/48000/2`, the RTP clock is always 48 kHz)
//! through libopus. We encode mono VoIP at the room's rate with in-band FEC as the receiver's
//! reported loss asks, and decode
//! straight to the rate the consumer needs (8, 12, 16, 24 or 48 kHz), so no resampling is
//! done for Opus legs.

use super::{Decoder, Encoder};

/// The largest Opus packet we produce (RFC 6716 §3.4 recommends at most 1275 bytes a frame).
const MAX_PACKET: usize = 1275;

/// An Opus encoder for 20 ms mono frames.
pub struct OpusEncoder {
    inner: opus::Encoder,
    rate: u32,
    scratch: Vec<u8>,
}

impl OpusEncoder {
    /// `rate` is the PCM rate handed to `encode` (8000, 12000, 16000, 24000 or 48000).
    pub fn new(rate: u32) -> Result<Self, opus::Error> {
        let mut inner = opus::Encoder::new(rate, opus::Channels::Mono, opus::Application::Voip)?;
        // RFC 7587 §3.3: FEC lets the receiver rebuild a lost frame from the next packet.
        // libopus codes it only for an expected loss above 0, which the receiver's RTCP
        // reports set (`set_expected_loss`): a clean path costs no FEC bits or CPU (the
        // redundant LBRR encoding is a second SILK pass).
        inner.set_inband_fec(true)?;
        inner.set_packet_loss_perc(0)?;
        Ok(OpusEncoder {
            inner,
            rate,
            scratch: vec![0; MAX_PACKET],
        })
    }
}

impl OpusEncoder {
    /// libopus complexity 0-10 (default 9): lower costs less CPU per frame for a little
    /// quality; rooms encode at a lower one (`room.opus_complexity`).
    pub fn set_complexity(&mut self, complexity: i32) -> Result<(), opus::Error> {
        self.inner.set_complexity(complexity.clamp(0, 10))
    }
}

impl Encoder for OpusEncoder {
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) {
        // A frame size libopus refuses (not 2.5-60 ms) is a caller bug; send nothing for it.
        if let Ok(n) = self.inner.encode(pcm, &mut self.scratch) {
            out.extend_from_slice(&self.scratch[..n]);
        }
    }

    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn set_expected_loss(&mut self, percent: u8) {
        let _ = self.inner.set_packet_loss_perc(percent.min(100) as i32);
    }
}

/// An Opus decoder to mono PCM at a chosen rate, with PLC and FEC.
pub struct OpusDecoder {
    inner: opus::Decoder,
    rate: u32,
    scratch: Vec<i16>,
}

impl OpusDecoder {
    pub fn new(rate: u32) -> Result<Self, opus::Error> {
        Ok(OpusDecoder {
            inner: opus::Decoder::new(rate, opus::Channels::Mono)?,
            rate,
            // 120 ms at 48 kHz: the longest Opus packet.
            scratch: vec![0; 5760],
        })
    }
}

impl Decoder for OpusDecoder {
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) {
        match self.inner.decode(payload, &mut self.scratch, false) {
            Ok(n) => out.extend_from_slice(&self.scratch[..n]),
            // A corrupt packet is concealed like a lost one (20 ms).
            Err(_) => self.conceal((self.rate / 50) as usize, out),
        }
    }

    fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) {
        let want = samples.min(self.scratch.len());
        // An empty packet asks libopus for packet-loss concealment.
        match self.inner.decode(&[], &mut self.scratch[..want], false) {
            Ok(n) => out.extend_from_slice(&self.scratch[..n]),
            Err(_) => out.extend(std::iter::repeat_n(0, samples)),
        }
    }

    /// Rebuilds a lost frame from the FEC data in the packet that follows it (RFC 7587 §3.3).
    fn recover(&mut self, next_payload: &[u8], samples: usize, out: &mut Vec<i16>) {
        let want = samples.min(self.scratch.len());
        match self.inner.decode(next_payload, &mut self.scratch[..want], true) {
            Ok(n) => out.extend_from_slice(&self.scratch[..n]),
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
            enc.set_complexity(complexity).unwrap();
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
        // libopus codes LBRR for the frames it judges worth protecting (about half of these).
        assert!(n >= 8, "10% loss reported: LBRR in {n} of 25 packets");
    }
}
