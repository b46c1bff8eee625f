//! DTMF: keypad digits from RFC 4733 telephone-events ([`rfc4733`]) and from in-band tones
//! ([`inband`]). SIP INFO digits come from the dialog layer (`sip::dialog::UasEvent::InfoDtmf`);
//! the call merges the three into one digit stream.

pub mod inband;
pub mod rfc4733;
