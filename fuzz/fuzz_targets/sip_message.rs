//! The message wrapper: any datagram parses or is refused without panicking, and whatever
//! parses prints to bytes that parse again to the same print (hickory's round-trip property).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tolk::sip::msg::{Framing, Limits, SipMessage, parse_datagram, parse_message};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok(msg) = parse_datagram(data, &limits) else { return };
    let printed = match &msg {
        SipMessage::Request(r) => r.to_bytes(),
        SipMessage::Response(r) => r.to_bytes(),
    };
    let again = parse_message(&printed, Framing::Stream, &limits).expect("printed message must parse");
    let reprinted = match &again {
        SipMessage::Request(r) => r.to_bytes(),
        SipMessage::Response(r) => r.to_bytes(),
    };
    assert_eq!(printed, reprinted, "print is not stable");
});
