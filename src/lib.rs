//! # tolk: a telephony gateway
//!
//! Carriers deliver calls over SIP trunks; tolk answers them, runs the business client's
//! flow, bridges callers into rooms and accounts for every call. The crate is split into
//! sans-IO cores (state in, time in, actions out) and a thin I/O shell:
//!
//! | module | owns | does not |
//! |---|---|---|
//! | [`config`] | `tolk.toml` + `TOLK_*` overrides, validated with errors naming file, line and key | open sockets |
//! | [`sip::msg`] | parsing and printing SIP messages within size limits; TCP framing | keep state |
//! | [`sip::txn`] | RFC 3261 §17 transactions and their timers, in virtual time | read a clock |
//! | [`sip::dialog`] | the UAS core: dialogs, CANCEL, re-INVITE, session timers, PRACK | do I/O |
//! | [`sip::sdp`] | RFC 3264 offer/answer over RFC 4566 SDP | do I/O |
//! | [`sip::transport`] | UDP and TCP sockets (I/O shell) | decide anything about calls |
//! | [`call`] | the call path: RTP port pairs and the media leg task (echo consumer today) | signalling |
//! | [`admin`] | the admin HTTP listener and `/metrics` | touch SIP state |
//! | [`gateway`] | wiring: runtime, sockets, the SIP core task, graceful shutdown | protocol logic |
//! | [`media`] | codecs, jitter buffer, DTMF, E-model, resampler, prompts, tones, recording, sans-IO | read a clock or a socket |
//! | [`rtp`] | RTP packets, RFC 3550 statistics, RTCP, source latching, sans-IO | read a clock or a socket |
//! | [`cdr`] | call detail records: journal (the spool), COPY writer, schema, private PostgreSQL, pseudonyms | block the SIP core on the database |
//! | [`privacy`] | masking numbers for logs | |

pub mod admin;
pub mod call;
pub mod cdr;
pub mod config;
pub mod dialplan;
pub mod file_text;
pub mod flow;
pub mod gateway;
pub mod media;
pub mod metrics;
pub mod number;
pub mod privacy;
pub mod room;
pub mod rtp;
pub mod sip;
#[cfg(test)]
pub(crate) mod test_clock;
