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
    // Printing adds Content-Length when the datagram had none (RFC 3261 §20.14: required on
    // streams), so a datagram at the header limit prints to one header more.
    let reparse = Limits { max_headers: limits.max_headers + 1, ..limits };
    let again = parse_message(&printed, Framing::Stream, &reparse).expect("printed message must parse");
    let reprinted = match &again {
        SipMessage::Request(r) => r.to_bytes(),
        SipMessage::Response(r) => r.to_bytes(),
    };
    assert_eq!(printed, reprinted, "print is not stable");
});
