//! Prompt audio played out in 20 ms frames, and the resampling every prompt goes through.
//! Sans-IO: the files (the shipped catalog in `sounds/`, any WAV path) are read by
//! [`crate::media_files::prompts`], which hands PCM here.

use super::resample::Resampler;
use std::sync::Arc;

/// A G.711 law, for the payload cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum G711Law {
    Ulaw,
    Alaw,
}

/// Mono PCM converted from `from` to `to` Hz, with the resampler's tail flushed so the end is
/// heard (also for audio tolk makes itself, such as text-to-speech).
pub fn resampled(samples: &[i16], from: u32, to: u32) -> Arc<[i16]> {
    let mut out = Vec::with_capacity(samples.len() * to as usize / from.max(1) as usize + 64);
    let mut r = Resampler::new(from, to);
    r.process(samples, &mut out);
    r.process(&[0; 64], &mut out);
    out.into()
}

/// Plays PCM out in frames.
#[derive(Debug, Clone)]
pub struct PromptPlayer {
    pcm: Arc<[i16]>,
    pos: usize,
}

impl PromptPlayer {
    pub fn new(pcm: Arc<[i16]>) -> Self {
        PromptPlayer { pcm, pos: 0 }
    }

    /// Appends the next `frame` samples (the last frame padded with silence); false when done.
    pub fn next_frame(&mut self, frame: usize, out: &mut Vec<i16>) -> bool {
        if self.pos >= self.pcm.len() {
            return false;
        }
        let end = (self.pos + frame).min(self.pcm.len());
        out.extend_from_slice(&self.pcm[self.pos..end]);
        out.extend(std::iter::repeat_n(0, frame - (end - self.pos)));
        self.pos = end;
        true
    }

    pub fn is_done(&self) -> bool {
        self.pos >= self.pcm.len()
    }

    /// What is left to play.
    pub fn remaining(&self) -> &[i16] {
        &self.pcm[self.pos.min(self.pcm.len())..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn player_yields_whole_frames_then_stops() {
        let pcm: Arc<[i16]> = (0..1000).map(|i| i as i16).collect();
        let mut p = PromptPlayer::new(pcm);
        let mut frames = 0;
        let mut out = Vec::new();
        while p.next_frame(160, &mut out) {
            frames += 1;
        }
        assert_eq!(frames, 7);
        assert_eq!(out.len(), 7 * 160);
        assert_eq!(out[999], 999);
        assert!(out[1000..].iter().all(|&s| s == 0));
    }
}
