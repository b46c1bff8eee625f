//! Opus payloads from the network (RFC 6716 §3): any bytes decode, conceal or recover from
//! FEC without panicking, at every rate a leg or room decodes to, and the packet reader that
//! decides whether a member is heard (`opus_packet`) agrees not to panic on them either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tolk::media::codec::Decoder;
use tolk::media::codec::opus::OpusDecoder;
use tolk::media::codec::opus_packet;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let rate = [8_000, 12_000, 16_000, 24_000, 48_000][usize::from(selector) % 5];
    let mut dec = OpusDecoder::new(rate).expect("a supported rate");
    let mut out = Vec::new();
    dec.decode(payload, &mut out);
    dec.recover(payload, (rate / 50) as usize, &mut out);
    dec.decode(payload, &mut out);
    let _ = opus_packet::carries_fec(payload);
    let _ = opus_packet::activity(payload);
});
