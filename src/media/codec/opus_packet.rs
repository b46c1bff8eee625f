//! Reading an Opus packet's voice-activity flags without decoding it, so a mixer can leave
//! the packets of members who are not speaking undecoded (libopus decoding is most of an Opus
//! conference's cost, and most members are quiet most of the time).
//!
//! An Opus packet (RFC 6716 §3) is a TOC byte and one or more frames. In SILK-only and hybrid
//! frames the first symbols of the range-coded bit stream are the SILK "header bits"
//! (§4.2.3): one voice-activity (VAD) flag per 20 ms SILK frame, then the LBRR flag. The
//! encoder sets a VAD flag when it judged that frame to carry speech. Reading them needs the
//! range decoder's initialisation (§4.1.1), renormalisation (§4.1.2.1) and `ec_dec_bit_logp`
//! (§4.1.3.2), a few integer operations; CELT-only frames carry no VAD flag.

/// What a packet says about its speech activity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// At least one frame is flagged as speech.
    Active,
    /// Every frame is flagged as no speech, or is a DTX frame (no bytes: RFC 6716 §3.2.1).
    Inactive,
    /// The packet does not say (CELT-only frames) or is malformed: decode it to know.
    Unknown,
}

/// The range decoder of RFC 6716 §4.1, only as far as the first binary symbols.
struct RangeDecoder<'a> {
    buf: &'a [u8],
    pos: usize,
    rng: u32,
    val: u32,
    /// The low bit of the last byte read, which becomes the high bit of the next symbol.
    rem: u32,
}

impl<'a> RangeDecoder<'a> {
    /// §4.1.1: rng = 128, val = 127 - (b0 >> 1), then renormalise.
    fn new(buf: &'a [u8]) -> Self {
        let b0 = buf.first().copied().unwrap_or(0) as u32;
        let mut d = RangeDecoder {
            buf,
            pos: 1,
            rng: 128,
            val: 127 - (b0 >> 1),
            rem: b0,
        };
        d.normalize();
        d
    }

    fn next_byte(&mut self) -> u32 {
        let b = self.buf.get(self.pos).copied().unwrap_or(0) as u32;
        self.pos += 1;
        b
    }

    /// §4.1.2.1: until rng > 2^23, shift a byte in (the buffered low bit on top of the next
    /// byte's seven high bits); bytes past the end read as zero.
    fn normalize(&mut self) {
        while self.rng <= 1 << 23 {
            self.rng <<= 8;
            let b = self.next_byte();
            let sym = ((self.rem << 8) | b) >> 1 & 0xFF;
            self.rem = b;
            self.val = ((self.val << 8) + (255 - sym)) & 0x7FFF_FFFF;
        }
    }

    /// §4.1.3.2: a binary symbol whose probability of being 1 is 1/2^logp.
    fn bit_logp(&mut self, logp: u32) -> bool {
        let s = self.rng >> logp;
        let one = self.val < s;
        if one {
            self.rng = s;
        } else {
            self.val -= s;
            self.rng -= s;
        }
        self.normalize();
        one
    }
}

/// The frames of a packet (RFC 6716 §3.2), as byte ranges; None when malformed.
fn frames(packet: &[u8]) -> Option<([(usize, usize); 48], usize)> {
    let mut out = [(0usize, 0usize); 48];
    let toc = *packet.first()?;
    let body = packet.len() - 1;
    match toc & 3 {
        // §3.2.2: one frame.
        0 => {
            out[0] = (1, body);
            Some((out, 1))
        }
        // §3.2.3: two frames of equal size.
        1 => {
            if !body.is_multiple_of(2) {
                return None;
            }
            out[0] = (1, body / 2);
            out[1] = (1 + body / 2, body / 2);
            Some((out, 2))
        }
        // §3.2.4: two frames, the first one's length coded first (§3.2.1).
        2 => {
            let (len, used) = frame_length(&packet[1..])?;
            let start = 1 + used;
            let rest = packet.len().checked_sub(start + len)?;
            out[0] = (start, len);
            out[1] = (start + len, rest);
            Some((out, 2))
        }
        // §3.2.5: a frame count byte, optional padding, then CBR or VBR frames.
        _ => {
            let count_byte = *packet.get(1)?;
            let vbr = count_byte & 0x80 != 0;
            let padded = count_byte & 0x40 != 0;
            let m = (count_byte & 0x3F) as usize;
            if m == 0 || m > out.len() {
                return None;
            }
            let mut pos = 2;
            let mut padding = 0usize;
            if padded {
                loop {
                    let p = *packet.get(pos)? as usize;
                    pos += 1;
                    padding += if p == 255 { 254 } else { p };
                    if p != 255 {
                        break;
                    }
                }
            }
            let end = packet.len().checked_sub(padding)?;
            if pos > end {
                return None;
            }
            if vbr {
                let mut lens = [0usize; 48];
                for len in lens.iter_mut().take(m - 1) {
                    let (l, used) = frame_length(packet.get(pos..end)?)?;
                    *len = l;
                    pos += used;
                }
                for (i, &len) in lens.iter().take(m - 1).enumerate() {
                    out[i] = (pos, len);
                    pos += len;
                }
                out[m - 1] = (pos, end.checked_sub(pos)?);
            } else {
                let total = end - pos;
                if !total.is_multiple_of(m) {
                    return None;
                }
                let len = total / m;
                for (i, f) in out.iter_mut().take(m).enumerate() {
                    *f = (pos + i * len, len);
                }
            }
            Some((out, m))
        }
    }
}

/// §3.2.1: a frame length in one byte (0-251) or two (252-1275); (length, bytes used).
fn frame_length(b: &[u8]) -> Option<(usize, usize)> {
    let first = *b.first()? as usize;
    if first < 252 {
        Some((first, 1))
    } else {
        Some((first + 4 * *b.get(1)? as usize, 2))
    }
}

/// The SILK header bits of a packet's frames (RFC 6716 §4.2.3): whether any VAD flag is set
/// and whether any frame carries LBRR (in-band FEC) data. None for CELT-only or malformed
/// packets; zero-byte (DTX) frames say nothing.
fn header_flags(packet: &[u8]) -> Option<(bool, bool)> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let stereo = toc & 0x04 != 0;
    // §3.1 Table 2: configs 0-11 SILK-only (10/20/40/60 ms: one, one, two or three 20 ms
    // SILK frames), 12-15 hybrid (10/20 ms), 16-31 CELT-only.
    let silk_frames = match config {
        0..=11 => match config % 4 {
            0 | 1 => 1,
            2 => 2,
            _ => 3,
        },
        12..=15 => 1,
        _ => return None,
    };
    let (frames, n) = frames(packet)?;
    let (mut vad, mut lbrr) = (false, false);
    for &(start, len) in &frames[..n] {
        // A frame of zero bytes is DTX or a lost frame (§3.2.1): nothing was said.
        if len == 0 {
            continue;
        }
        let mut rd = RangeDecoder::new(&packet[start..start + len]);
        // Mid channel: VAD flags then the LBRR flag; for stereo the side channel's follow.
        for _ in 0..if stereo { 2 } else { 1 } {
            for _ in 0..silk_frames {
                vad |= rd.bit_logp(1);
            }
            lbrr |= rd.bit_logp(1);
        }
    }
    Some((vad, lbrr))
}

/// The speech activity an Opus packet declares (RFC 6716 §4.2.3), without decoding audio.
pub fn activity(packet: &[u8]) -> Activity {
    match header_flags(packet) {
        None => Activity::Unknown,
        Some((true, _)) => Activity::Active,
        Some((false, _)) => Activity::Inactive,
    }
}

/// Whether a packet carries in-band FEC (LBRR) data for the frame before it.
pub fn carries_fec(packet: &[u8]) -> bool {
    header_flags(packet).is_some_and(|(_, lbrr)| lbrr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::Encoder;
    use crate::media::codec::opus::OpusEncoder;

    fn encode(rate: u32, frames: &[Vec<i16>]) -> Vec<Vec<u8>> {
        let mut enc = OpusEncoder::new(rate).unwrap();
        frames
            .iter()
            .map(|f| {
                let mut out = Vec::new();
                enc.encode(f, &mut out);
                out
            })
            .collect()
    }

    fn tone(rate: u32, n: usize, f: f64, amp: f64, offset: usize) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (2.0 * std::f64::consts::PI * f * (i + offset) as f64 / rate as f64).sin()) as i16)
            .collect()
    }

    #[test]
    fn speech_is_flagged_active_and_near_silence_inactive() {
        let rate = 16_000;
        let n = 320;
        // One second of near-silence, one of a voice-like signal, one of near-silence.
        let mut frames = Vec::new();
        for i in 0..50 {
            frames.push((0..n).map(|j| (((i * n + j) * 7919) % 41) as i16 - 20).collect());
        }
        let voice = crate::media::codec::test_signal::speechy(rate, 1.0);
        for c in voice.chunks_exact(n) {
            frames.push(c.to_vec());
        }
        for i in 0..50 {
            frames.push((0..n).map(|j| (((i * n + j) * 104_729) % 41) as i16 - 20).collect());
        }
        let acts: Vec<Activity> = encode(rate, &frames).iter().map(|p| activity(p)).collect();
        // libopus's VAD needs a few frames to settle at the start and has a hangover after
        // speech: judge the steady parts.
        assert!(acts[10..50].iter().all(|a| *a == Activity::Inactive), "{acts:?}");
        assert!(acts[55..100].iter().all(|a| *a == Activity::Active), "{acts:?}");
        assert!(acts[120..150].iter().all(|a| *a == Activity::Inactive), "{acts:?}");
    }

    #[test]
    fn a_tone_starts_active() {
        // A tone's onset is speech to the VAD (it later adapts to a steady tone and calls it
        // inactive: the mixer checks such members now and then, see MediaStream).
        let frames: Vec<Vec<i16>> = (0..15).map(|i| tone(16_000, 320, 700.0, 6000.0, i * 320)).collect();
        let acts: Vec<Activity> = encode(16_000, &frames).iter().map(|p| activity(p)).collect();
        assert!(acts.iter().all(|a| *a == Activity::Active), "{acts:?}");
    }

    #[test]
    fn framing_follows_rfc_6716_section_3_2() {
        // Code 0, DTX: a TOC byte alone (SILK WB 20 ms, config 9).
        assert_eq!(activity(&[9 << 3]), Activity::Inactive);
        // CELT-only says nothing.
        assert_eq!(activity(&[(28 << 3), 0xFF, 0x00]), Activity::Unknown);
        // Empty input, odd CBR split, truncated code 2/3 packets: Unknown, never a panic.
        assert_eq!(activity(&[]), Activity::Unknown);
        assert_eq!(activity(&[(9 << 3) | 1, 1, 2, 3]), Activity::Unknown);
        assert_eq!(activity(&[(9 << 3) | 2, 200, 1]), Activity::Unknown);
        assert_eq!(activity(&[(9 << 3) | 3]), Activity::Unknown);
        assert_eq!(activity(&[(9 << 3) | 3, 0x40 | 2, 255]), Activity::Unknown);
        // A first symbol decoded as 1 needs val < rng/2 after initialisation: a first byte
        // of 0xFF gives val = 127 - 127 = 0 -> VAD flag set.
        assert_eq!(activity(&[9 << 3, 0xFF, 0xFF]), Activity::Active);
        assert_eq!(activity(&[9 << 3, 0x00, 0x00]), Activity::Inactive);
        // The same frames packed as code 1, 2 and 3 (CBR and VBR, with padding) read alike.
        let active = [0xFFu8, 0xFF];
        let quiet = [0x00u8, 0x00];
        assert_eq!(activity(&[(9 << 3) | 1, 0, 0, 0xFF, 0xFF]), Activity::Active);
        assert_eq!(activity(&[(9 << 3) | 1, 0, 0, 0, 0]), Activity::Inactive);
        let mut code2 = vec![(9 << 3) | 2, 2];
        code2.extend_from_slice(&quiet);
        code2.extend_from_slice(&active);
        assert_eq!(activity(&code2), Activity::Active);
        let mut code3 = vec![(9 << 3) | 3, 0x80 | 0x40 | 3, 2, 2, 2];
        code3.extend_from_slice(&quiet);
        code3.extend_from_slice(&quiet);
        code3.extend_from_slice(&quiet);
        code3.extend_from_slice(&[0, 0]);
        assert_eq!(activity(&code3), Activity::Inactive);
        code3[7] = 0xFF;
        assert_eq!(activity(&code3), Activity::Active);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for len in 0..2000usize {
            let p: Vec<u8> = (0..len % 300)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = activity(&p);
        }
    }
}
