//! RTP from the network: parsing never panics; what parses feeds the RFC 3550 statistics and
//! the RFC 4733 receiver without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tolk::media::dtmf::rfc4733::EventReceiver;
use tolk::rtp::{packet, stats::ReceiveStats};

fuzz_target!(|data: &[u8]| {
    let mut stats: Option<ReceiveStats> = None;
    let mut events = EventReceiver::new();
    for chunk in data.chunks(64) {
        if let Ok(p) = packet::parse(chunk) {
            let s = stats.get_or_insert_with(|| ReceiveStats::new(p.sequence));
            s.update_seq(p.sequence);
            s.update_jitter(p.timestamp.wrapping_add(chunk.len() as u32), p.timestamp);
            let _ = s.fraction_lost();
            let _ = events.receive(p.timestamp, p.marker, p.payload);
        }
    }
});
