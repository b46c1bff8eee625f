//! SDP offers from peers: parsing and answering never panic, and an answer always parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tolk::sip::sdp::{Codec, LocalMedia, SessionDescription, answer};

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = SessionDescription::parse(data) else { return };
    let local = LocalMedia {
        rtp: "127.0.0.1:20000".parse().unwrap(),
        codecs: vec![Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus],
        session_id: 1,
        session_version: 1,
    };
    if let Ok((text, _)) = answer(&offer, &local) {
        SessionDescription::parse(text.as_bytes()).expect("our answer must parse");
    }
});
