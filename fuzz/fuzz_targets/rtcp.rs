//! RTCP from the network: any compound packet is accepted or refused without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tolk::rtp::rtcp::RtcpSession;

fuzz_target!(|data: &[u8]| {
    let now = std::time::Instant::now();
    let mut s = RtcpSession::new(0x1111_1111, "fuzz", now);
    let _ = s.on_rtcp(now, 0x0000_b710_8000_0000, data);
    let _ = s.rtt();
});
