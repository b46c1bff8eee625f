//! SIP signalling: messages, transactions, dialogs and the UAS core, SDP, transports.
//!
//! Everything here except [`transport`] is sans-IO: it takes bytes and `now` and returns what to
//! send and when to wake up.

pub mod auth;
pub mod dialog;
pub mod flood;
pub mod msg;
pub mod sdes;
pub mod sdp;
pub mod transport;
pub mod trunk;
pub mod txn;
