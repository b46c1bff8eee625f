//! Audio codecs behind one pair of traits. PCM is 16-bit signed, mono, at the codec's own
//! sample rate; a 20 ms frame of G.711 is 160 samples.

pub mod g711;

/// Encodes PCM frames into RTP payloads.
pub trait Encoder: Send {
    /// Appends the payload for `pcm` to `out`.
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>);
    /// PCM sample rate, Hz.
    fn sample_rate(&self) -> u32;
}

/// Decodes RTP payloads into PCM.
pub trait Decoder: Send {
    /// Appends the PCM of `payload` to `out`.
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>);
    /// Appends `samples` of concealment for a lost frame (packet-loss concealment).
    fn conceal(&mut self, samples: usize, out: &mut Vec<i16>);
    /// PCM sample rate, Hz.
    fn sample_rate(&self) -> u32;
}
