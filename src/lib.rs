//! # tolk: a telephony gateway
//!
//! Carriers deliver calls over SIP trunks; tolk answers them, runs the business client's
//! flow, bridges callers into rooms and accounts for every call. The crate is split into
//! sans-IO cores (state in, time in, actions out) and a thin I/O shell:
//!
//! Layers, top to bottom (`docs/ARCHITECTURE.md`; `scripts/check-layers.sh` checks that
//! imports only point down):
//!
//! | module | owns | does not |
//! |---|---|---|
//! | [`gateway`] | wiring: runtime, sockets, threads, the SIP core task, graceful shutdown | protocol logic |
//! | [`admin`] | the admin HTTP listener, CDR reports, room control, `/metrics` | touch SIP state |
//! | [`call`] | one call's life: the flow's requests, the media leg, room membership, accounting | parse SIP |
//! | [`dialplan`] | numbers.toml, the flows and rooms.toml: which flow a dialled number runs | run flows |
//! | [`flow`] | Rhai flows: engine, runner threads, the port a flow talks to a call through | reach sip, call or room |
//! | [`room`] | conference rooms: registry, PINs, mixer threads, recording | reach call, cdr or flow |
//! | [`cdr`] | call detail records: journal (the spool), COPY writer, schema, private PostgreSQL, pseudonyms | block the SIP core on the database |
//! | [`sip`] | RFC 3261 messages, transactions, the UAS dialog core, SDP (sans-IO) and the transports | know about flows or rooms |
//! | [`media_files`] | prompt files read and cached, recordings written and repaired | keep call state |
//! | [`media`] | codecs, jitter buffer, DTMF, E-model, resampler, the RTP stream, prompts and tones, sans-IO | read a clock, a file or a socket |
//! | [`rtp`] | RTP packets, RFC 3550 statistics, RTCP, source latching, sans-IO | read a clock or a socket |
//! | [`config`] | `tolk.toml` + `TOLK_*` overrides, parsed once into typed values, errors naming file, line and key | import any layer |
//! | [`number`], [`clock`], [`file_text`], [`privacy`], [`keys`], [`metrics`] | helpers every layer may use: E.164 numbers, wall-clock micros, file:line errors, masking numbers for logs, secret key files and HMAC, counters | import anything from the crate |

pub mod admin;
pub mod call;
pub mod cdr;
pub mod clock;
pub mod config;
pub mod dialplan;
pub mod file_text;
pub mod flow;
pub mod gateway;
pub mod keys;
pub mod media;
pub mod media_files;
pub mod metrics;
pub mod number;
pub mod privacy;
pub mod private_files;
pub mod room;
pub mod rtp;
pub mod sip;
#[cfg(test)]
pub(crate) mod test_clock;
