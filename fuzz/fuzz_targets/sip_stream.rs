//! TCP framing: arbitrary bytes in arbitrary chunks never panic, never loop, and the buffer
//! stays bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tolk::sip::msg::stream::{StreamFramer, StreamItem};
use tolk::sip::msg::{Framing, Limits, parse_message};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_message_bytes: 4096, max_header_bytes: 1024, ..Limits::default() };
    let mut framer = StreamFramer::new(limits);
    let chunk = (data.first().copied().unwrap_or(1) as usize).max(1);
    for piece in data.chunks(chunk) {
        framer.push(piece);
        let mut n = 0;
        while let Some(item) = framer.next_item() {
            n += 1;
            assert!(n <= data.len() + 1, "framer does not make progress");
            if let StreamItem::Message(m) = item {
                let _ = parse_message(&m, Framing::Stream, &limits);
            }
        }
        assert!(framer.buffered() <= limits.max_message_bytes + chunk);
    }
});
