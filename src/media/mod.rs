//! Media processing, sans-IO: codecs, DTMF, the jitter buffer and the E-model quality
//! estimate, resampling, prompt playout and tones. Files (prompts read, recordings written)
//! are [`crate::media_files`].
//!
//! Owns: turning payloads into 20 ms PCM frames and back, and finding keypad digits in them.
//! Must not: read a clock, touch a socket, allocate per sample on the hot path, or log per
//! packet. Time, when needed, comes in as RTP timestamps or an `Instant` argument.

pub mod analysis;
pub mod codec;
pub mod dtmf;
pub mod jitter;
pub mod prompt;
pub mod quality;
pub mod resample;
pub mod session;
pub mod stream;
pub mod tone;
