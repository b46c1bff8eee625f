//! SDP offers from peers: parsing and answering never panic, and an answer always parses.
//! The first byte picks the SRTP policy (off, optional, required), so crypto lines and
//! RTP/SAVP are reached; an SRTP answer carries exactly the one crypto line it chose.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tolk::sip::sdes::{KeyMaterial, LocalSrtp};
use tolk::sip::sdp::{Codec, LocalMedia, SessionDescription, answer};

fuzz_target!(|data: &[u8]| {
    let Some((&policy, body)) = data.split_first() else { return };
    let Ok(offer) = SessionDescription::parse(body) else { return };
    let srtp = match policy % 3 {
        0 => None,
        p => Some(LocalSrtp {
            required: p == 2,
            material: KeyMaterial::from_bytes([7; 46]),
        }),
    };
    let local = LocalMedia {
        rtp: "127.0.0.1:20000".parse().unwrap(),
        codecs: vec![Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus],
        session_id: 1,
        session_version: 1,
        srtp,
    };
    if let Ok((text, neg)) = answer(&offer, &local) {
        let parsed = SessionDescription::parse(text.as_bytes()).expect("our answer must parse");
        let audio = parsed.media.iter().find(|m| m.port != 0).expect("one stream taken");
        match &neg.srtp {
            Some(keys) => {
                assert_eq!(audio.crypto.len(), 1);
                assert_eq!(audio.crypto[0].tag, keys.tag);
                assert_eq!(audio.crypto[0].key, keys.ours);
            }
            None => assert!(audio.crypto.is_empty()),
        }
    }
});
