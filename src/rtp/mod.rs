//! RTP (RFC 3550), sans-IO: packet parsing and building ([`packet`], over `rtp-rs`) and the
//! receiver statistics of RFC 3550 Appendix A ([`stats`]), RTCP reports ([`rtcp`]) and symmetric
//! RTP source latching ([`latch`]) and SRTP/SRTCP keyed by SDES ([`srtp`]).
//!
//! Must not: read a clock or touch a socket; arrival times come in as arguments.

pub mod latch;
pub mod packet;
pub mod rtcp;
pub mod srtp;
pub mod stats;
