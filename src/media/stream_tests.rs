//! MediaStream over SRTP (RFC 3711): two streams keyed as offer/answer keys them talk to each
//! other through captured datagrams; forged, plain and replayed packets are dropped, counted,
//! and cannot latch.

use super::*;
use crate::rtp::srtp::{KeyMaterial, SrtpKeys, Suite};
use std::cell::RefCell;

/// Captures what a stream sends.
#[derive(Default)]
struct Capture(RefCell<Vec<(Vec<u8>, SocketAddr)>>);

impl Datagram for Capture {
    fn send_now(&self, buf: &[u8], dest: SocketAddr) -> bool {
        self.0.borrow_mut().push((buf.to_vec(), dest));
        true
    }
}

impl Capture {
    fn take(&self) -> Vec<(Vec<u8>, SocketAddr)> {
        std::mem::take(&mut self.0.borrow_mut())
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn media(remote: &str, srtp: Option<SrtpKeys>) -> NegotiatedMedia {
    NegotiatedMedia {
        remote_rtp: Some(addr(remote)),
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event: Some(101),
        ptime_ms: 20,
        direction: Direction::SendRecv,
        fmtp: None,
        srtp: srtp.map(Box::new),
    }
}

fn stream(now: Instant, id: u64, m: NegotiatedMedia) -> MediaStream {
    let start = StreamStart {
        id,
        local_port: 20000,
        now,
        ntp: 0,
        seed: id,
    };
    MediaStream::new(start, Some(m))
}

/// Keys as SDES settles them for both ends of one stream.
fn key_pair(suite: Suite) -> (SrtpKeys, SrtpKeys) {
    let ours = SrtpKeys {
        suite,
        tag: 1,
        ours: KeyMaterial::from_bytes([0x11; 46]).for_suite(suite),
        theirs: KeyMaterial::from_bytes([0x22; 46]).for_suite(suite),
    };
    let theirs = ours.far_end();
    (ours, theirs)
}

#[test]
fn an_srtp_stream_is_heard_by_its_peer_and_forgeries_are_dropped_and_counted() {
    for suite in [
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
        Suite::AeadAes128Gcm,
    ] {
        let t0 = crate::test_clock::epoch();
        let (ka, kb) = key_pair(suite);
        // The gateway's stream: the peer's SDP says a NATed address, so without SRTP any
        // source sending two packets in a row would latch.
        let mut gw = stream(t0, 1, media("10.0.0.5:4000", Some(ka)));
        let mut phone = stream(t0, 2, media("10.0.0.5:20000", Some(kb)));
        let phone_at = addr("203.0.113.7:31000");
        let wire = Capture::default();
        let tone = vec![1000i16; 160];

        // A stranger floods plain RTP (and garbage) from another address first.
        let mut plain = Vec::new();
        for seq in 0..6u16 {
            packet::build(&mut plain, 0, false, seq, seq as u32 * 160, 0xdead, &[0xff; 160]);
            assert_eq!(gw.on_rtp(t0, addr("198.51.100.66:5000"), &plain), Received::Ignored);
        }
        assert_eq!(gw.on_rtp(t0, addr("198.51.100.66:5000"), &[0x80; 7]), Received::Ignored);
        assert_eq!(gw.latch.peer(), None, "nothing unauthenticated may latch");

        // The phone's packets are protected: longer than plain RTP by the suite's tag, and
        // the payload is not the clear one.
        let mut sent = Vec::new();
        for i in 0..5u32 {
            let now = t0 + Duration::from_millis(20 * i as u64);
            phone.send_pcm(now, &tone, &wire);
            let (pkt, _) = wire.take().pop().expect("sent");
            let tag = match suite {
                Suite::AesCm128HmacSha1_32 => 4,
                Suite::AeadAes128Gcm => 16,
                _ => 10,
            };
            assert_eq!(pkt.len(), 12 + 160 + tag, "{suite:?}");
            // From an unsignalled address (NAT) the latch wants two packets in a row.
            let expected = if i == 0 { Received::Ignored } else { Received::Audio };
            assert_eq!(gw.on_rtp(now, phone_at, &pkt), expected, "{suite:?} packet {i}");
            sent.push(pkt);
        }
        assert_eq!(gw.latch.peer(), Some(phone_at));
        let clear = crate::media::codec::pair::codec_pair(Codec::Pcmu).map(|mut c| {
            let mut out = Vec::new();
            c.enc.encode(&tone, &mut out);
            out
        });
        assert_ne!(Some(sent[4][12..172].to_vec()), clear, "the payload is encrypted");

        // Replayed, tampered and plain packets from the latched source are dropped.
        let now = t0 + Duration::from_millis(200);
        assert_eq!(gw.on_rtp(now, phone_at, &sent[2]), Received::Ignored);
        let mut tampered = sent[4].clone();
        tampered[20] ^= 1;
        tampered[3] = tampered[3].wrapping_add(9);
        assert_eq!(gw.on_rtp(now, phone_at, &tampered), Received::Ignored);
        assert_eq!(gw.on_rtp(now, phone_at, &plain), Received::Ignored);

        // The gateway's answer reaches the phone protected, and RTCP is SRTCP both ways.
        gw.send_pcm(now, &tone, &wire);
        let (pkt, dest) = wire.take().pop().expect("sent");
        assert_eq!(dest, phone_at);
        assert_eq!(phone.on_rtp(now, addr("10.0.0.5:4000"), &pkt), Received::Audio);
        let bye_at = now + Duration::from_millis(20);
        let summary = gw.finish(bye_at, &wire);
        let (bye, _) = wire.take().pop().expect("an RTCP BYE");
        phone.on_rtcp(bye_at, addr("10.0.0.5:4001"), &bye);
        assert_eq!(phone.rtcp_received, 1, "the SRTCP BYE authenticated");
        let mut plain_rtcp = bye.clone();
        plain_rtcp.truncate(bye.len() - 4);
        phone.on_rtcp(bye_at, addr("10.0.0.5:4001"), &plain_rtcp);
        assert_eq!(phone.rtcp_received, 1, "a cut SRTCP packet is dropped");

        assert!(summary.srtp);
        // Four packets played; RFC 3550 A.1 counts a source from its second in sequence.
        assert_eq!(summary.packets_received, 3);
        let r = summary.srtp_rejected;
        assert_eq!(r.replay, 1, "{suite:?} {r:?}");
        // 6 stranger packets + 1 runt before latching, then the tampered and the plain one.
        assert_eq!(r.authentication, 9, "{suite:?} {r:?}");
    }
}

#[test]
fn new_keys_in_a_reinvite_make_a_new_session_and_keep_the_counts() {
    let t0 = crate::test_clock::epoch();
    let (ka, kb) = key_pair(Suite::AesCm128HmacSha1_80);
    let mut gw = stream(t0, 1, media("192.0.2.1:4000", Some(ka)));
    let mut phone = stream(t0, 2, media("192.0.2.9:20000", Some(kb.clone())));
    let wire = Capture::default();
    assert_eq!(gw.on_rtp(t0, addr("192.0.2.1:4000"), &[0x80; 40]), Received::Ignored);
    // Re-keyed by the far end (RFC 4568 §7.1.4): the old key no longer opens packets.
    let (ka2, _) = key_pair(Suite::AeadAes128Gcm);
    gw.set_media(Some(media("192.0.2.1:4000", Some(ka2))));
    phone.send_pcm(t0, &[0i16; 160], &wire);
    let (pkt, _) = wire.take().pop().unwrap();
    assert_eq!(gw.on_rtp(t0, addr("192.0.2.1:4000"), &pkt), Received::Ignored);
    // Back to plain RTP: nothing is protected any more, and the counts survive.
    gw.set_media(Some(media("192.0.2.1:4000", None)));
    let summary = gw.finish(t0, &wire);
    assert!(!summary.srtp);
    assert_eq!(summary.srtp_rejected.authentication, 2);
}
