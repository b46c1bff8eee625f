//! One codec's encoder and decoder with its RTP framing (clock rate, samples and timestamp
//! units per 20 ms), and the PCM rates codecs work at alone and in a room.

use super::g711::{G711Decoder, G711Encoder, Law};
use super::g722::{G722Decoder, G722Encoder};
use super::opus::{OpusDecoder, OpusEncoder};
use super::{Decoder, Encoder};
use crate::media::quality::CodecImpairment;
use crate::media::session::Codec;

/// The encoder and decoder of one codec with its RTP framing.
pub struct CodecPair {
    pub enc: Box<dyn Encoder>,
    pub dec: Box<dyn Decoder>,
    /// RTP clock rate.
    pub clock: u32,
    /// PCM samples per 20 ms at the codec's PCM rate.
    pub frame_samples: usize,
    /// RTP timestamp units per 20 ms.
    pub frame_ts: u32,
    pub impairment: CodecImpairment,
}

/// The PCM rate a leg of `codec` decodes to and encodes from.
pub fn pcm_rate(codec: Codec) -> u32 {
    match codec {
        Codec::Pcmu | Codec::Pcma => 8_000,
        Codec::G722 => 16_000,
        Codec::Opus => 48_000,
    }
}

/// A fresh encoder for `codec` taking PCM at `rate` (the mixer keeps one per codec for shared
/// mixes). `rate` matters for Opus only, which libopus encodes from 8, 12, 16, 24 or 48 kHz;
/// the other codecs take their own rate ([`pcm_rate`]).
pub fn encoder(codec: Codec, rate: u32, opus_complexity: Option<i32>) -> Option<Box<dyn Encoder>> {
    Some(match codec {
        Codec::Pcmu => Box::new(G711Encoder::new(Law::Ulaw)),
        Codec::Pcma => Box::new(G711Encoder::new(Law::Alaw)),
        Codec::G722 => Box::new(G722Encoder::default()),
        Codec::Opus => Box::new(opus_encoder(rate, opus_complexity)?),
    })
}

fn opus_encoder(rate: u32, complexity: Option<i32>) -> Option<OpusEncoder> {
    let mut enc = OpusEncoder::new(rate).ok()?;
    if let Some(c) = complexity {
        enc.set_complexity(c);
    }
    Some(enc)
}

/// The PCM rate `codec` is worked at in a room mixing at `room_rate`: Opus at the room's
/// rate (libopus decodes and encodes at it, so nothing is resampled), others at their own.
pub fn rate_in_room(codec: Codec, room_rate: u32) -> u32 {
    match codec {
        Codec::Opus => room_rate,
        _ => pcm_rate(codec),
    }
}

/// An Opus pair whose PCM is at `rate` (the RTP clock stays 48 kHz, RFC 7587 §4.1).
pub fn opus_pair(rate: u32, complexity: Option<i32>) -> Option<CodecPair> {
    Some(CodecPair {
        enc: Box::new(opus_encoder(rate, complexity)?),
        dec: Box::new(OpusDecoder::new(rate).ok()?),
        clock: 48_000,
        frame_samples: rate as usize / 50,
        frame_ts: 960,
        impairment: CodecImpairment::WIDEBAND,
    })
}

pub fn codec_pair(codec: Codec) -> Option<CodecPair> {
    if codec == Codec::Opus {
        return opus_pair(48_000, None);
    }
    let enc = encoder(codec, pcm_rate(codec), None)?;
    Some(match codec {
        Codec::Pcmu | Codec::Pcma => {
            let law = if codec == Codec::Pcmu { Law::Ulaw } else { Law::Alaw };
            CodecPair {
                enc,
                dec: Box::new(G711Decoder::new(law)),
                clock: 8000,
                frame_samples: 160,
                frame_ts: 160,
                impairment: CodecImpairment::G711_PLC,
            }
        }
        Codec::G722 => CodecPair {
            enc,
            dec: Box::new(G722Decoder::default()),
            clock: 8000,
            frame_samples: 320,
            frame_ts: 160,
            impairment: CodecImpairment::WIDEBAND,
        },
        Codec::Opus => return opus_pair(48_000, None),
    })
}
