//! Media files: the file I/O beside the sans-IO [`crate::media`] core.
//!
//! | module | owns |
//! |---|---|
//! | [`prompts`] | the prompt catalog (`sounds/catalog.toml`), WAV files read and cached as PCM |
//! | [`recorder`] | recordings written as WAV or Ogg Opus (RFC 7845), and their repair after a crash |
//!
//! Callers are the I/O shell: room threads, call legs, the flow simulator and the gateway's
//! start-up repair. Nothing here keeps call state or reads a socket.

pub mod prompts;
pub mod recorder;
