//! RTCP for one leg (RFC 3550 §6), sans-IO, over `rtc-rtcp`'s packet types: when to send
//! (§6.2, §6.3: a 5 s minimum interval randomised to [0.5, 1.5] times it, the first report at
//! half the minimum), what to send (an SR while we send media, else an RR, always with an SDES
//! CNAME, §6.1), what the peer's reports say (the round-trip time from LSR and DLSR, §6.4.1),
//! and the BYE at the end (§6.6).
//!
//! Time comes in twice: `now` (monotonic, for scheduling and DLSR) and `ntp_now` (the 64-bit
//! NTP wallclock of RFC 3550 §4, for SR timestamps and RTT), both read by the I/O shell.

use super::stats::ReceiveStats;
use bytes::Bytes;
use rtc_rtcp::goodbye::Goodbye;
use rtc_rtcp::packet::{Packet, marshal, unmarshal};
use rtc_rtcp::receiver_report::ReceiverReport;
use rtc_rtcp::reception_report::ReceptionReport;
use rtc_rtcp::sender_report::SenderReport;
use rtc_rtcp::source_description::{SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem};
use std::time::{Duration, Instant};

/// RFC 3550 §6.2: the minimum report interval.
const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// Why an RTCP datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed RTCP packet")]
pub struct RtcpError;

/// What a received compound packet told us.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtcpInfo {
    /// The peer left (BYE).
    pub bye: bool,
    /// The peer's report about our stream: fraction lost (1/256) and its jitter estimate.
    pub peer_fraction_lost: Option<u8>,
    pub peer_jitter: Option<u32>,
}

/// The RTCP state of one leg.
#[derive(Debug, Clone)]
pub struct RtcpSession {
    ssrc: u32,
    cname: Bytes,
    peer_ssrc: Option<u32>,
    /// Middle 32 bits of the peer's last SR timestamp, and when it arrived.
    last_sr: Option<(u32, Instant)>,
    packets_sent: u32,
    octets_sent: u32,
    sent_since_report: bool,
    next_report: Instant,
    rtt: Option<Duration>,
    rng: fastrand::Rng,
}

/// The middle 32 bits of a 64-bit NTP timestamp (RFC 3550 §4).
pub fn ntp_mid32(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

fn units_65536(d: Duration) -> u32 {
    (d.as_micros() as u64 * 65_536 / 1_000_000).min(u32::MAX as u64) as u32
}

impl RtcpSession {
    pub fn new(ssrc: u32, cname: &str, now: Instant) -> Self {
        let mut rng = fastrand::Rng::with_seed(ssrc as u64);
        let first = MIN_INTERVAL.mul_f64(0.5 * (0.5 + rng.f64()));
        RtcpSession {
            ssrc,
            cname: Bytes::copy_from_slice(cname.as_bytes()),
            peer_ssrc: None,
            last_sr: None,
            packets_sent: 0,
            octets_sent: 0,
            sent_since_report: false,
            next_report: now + first,
            rtt: None,
            rng,
        }
    }

    /// Counts an RTP packet we sent (for the SR's packet and octet counts).
    pub fn on_rtp_sent(&mut self, payload_len: usize) {
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload_len as u32);
        self.sent_since_report = true;
    }

    /// The SSRC of the stream we receive (the reception report is about it).
    pub fn set_peer_ssrc(&mut self, ssrc: u32) {
        self.peer_ssrc = Some(ssrc);
    }

    /// The round-trip time from the peer's last report about us.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// When the next report is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_report
    }

    /// A compound packet from the peer.
    pub fn on_rtcp(&mut self, now: Instant, ntp_now: u64, data: &[u8]) -> Result<RtcpInfo, RtcpError> {
        let mut buf = data;
        let packets = unmarshal(&mut buf).map_err(|_| RtcpError)?;
        let mut info = RtcpInfo::default();
        for p in &packets {
            let any = p.as_any();
            if let Some(sr) = any.downcast_ref::<SenderReport>() {
                self.last_sr = Some((ntp_mid32(sr.ntp_time), now));
                self.peer_ssrc.get_or_insert(sr.ssrc);
                self.read_blocks(&sr.reports, ntp_now, &mut info);
            } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                self.read_blocks(&rr.reports, ntp_now, &mut info);
            } else if any.downcast_ref::<Goodbye>().is_some() {
                info.bye = true;
            }
        }
        Ok(info)
    }

    fn read_blocks(&mut self, blocks: &[ReceptionReport], ntp_now: u64, info: &mut RtcpInfo) {
        for b in blocks.iter().filter(|b| b.ssrc == self.ssrc) {
            info.peer_fraction_lost = Some(b.fraction_lost);
            info.peer_jitter = Some(b.jitter);
            // §6.4.1: RTT = A - LSR - DLSR, in 1/65536 s; LSR 0 means no SR seen yet.
            if b.last_sender_report != 0 {
                let a = ntp_mid32(ntp_now);
                let rtt = a.wrapping_sub(b.last_sender_report).wrapping_sub(b.delay);
                // A negative (wrapped) or absurd value means clock trouble: ignore it.
                if rtt < 60 * 65_536 {
                    self.rtt = Some(Duration::from_micros(rtt as u64 * 1_000_000 / 65_536));
                }
            }
        }
    }

    fn reception_block(&self, now: Instant, recv: &mut ReceiveStats) -> Option<ReceptionReport> {
        let ssrc = self.peer_ssrc?;
        let (lsr, dlsr) = match self.last_sr {
            Some((mid, at)) => (mid, units_65536(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        Some(ReceptionReport {
            ssrc,
            fraction_lost: recv.fraction_lost(),
            total_lost: (recv.cumulative_lost() as u32) & 0x00ff_ffff,
            last_sequence_number: recv.extended_max(),
            jitter: recv.jitter(),
            last_sender_report: lsr,
            delay: dlsr,
        })
    }

    fn sdes(&self) -> SourceDescription {
        SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: self.ssrc,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: self.cname.clone(),
                }],
            }],
        }
    }

    fn report(&mut self, now: Instant, ntp_now: u64, rtp_now: u32, recv: Option<&mut ReceiveStats>) -> Box<dyn Packet> {
        let reports: Vec<ReceptionReport> = recv.and_then(|r| self.reception_block(now, r)).into_iter().collect();
        if self.sent_since_report {
            Box::new(SenderReport {
                ssrc: self.ssrc,
                ntp_time: ntp_now,
                rtp_time: rtp_now,
                packet_count: self.packets_sent,
                octet_count: self.octets_sent,
                reports,
                profile_extensions: Bytes::new(),
            })
        } else {
            Box::new(ReceiverReport {
                ssrc: self.ssrc,
                reports,
                profile_extensions: Bytes::new(),
            })
        }
    }

    /// The report due at `now`, if one is (SR or RR, then SDES CNAME: §6.1 compound order).
    /// `rtp_now` is our RTP timestamp corresponding to `ntp_now` (for the SR).
    pub fn poll_report(
        &mut self,
        now: Instant,
        ntp_now: u64,
        rtp_now: u32,
        recv: Option<&mut ReceiveStats>,
    ) -> Option<Vec<u8>> {
        if now < self.next_report {
            return None;
        }
        let first = self.report(now, ntp_now, rtp_now, recv);
        self.sent_since_report = false;
        self.next_report = now + MIN_INTERVAL.mul_f64(0.5 + self.rng.f64());
        let packets: Vec<Box<dyn Packet>> = vec![first, Box::new(self.sdes())];
        marshal(&packets).ok().map(|b| b.to_vec())
    }

    /// The compound packet that ends the session: a report, SDES and BYE (§6.6).
    pub fn bye(&mut self, now: Instant, ntp_now: u64, rtp_now: u32, recv: Option<&mut ReceiveStats>) -> Vec<u8> {
        let first = self.report(now, ntp_now, rtp_now, recv);
        let packets: Vec<Box<dyn Packet>> = vec![
            first,
            Box::new(self.sdes()),
            Box::new(Goodbye {
                sources: vec![self.ssrc],
                reason: Bytes::new(),
            }),
        ];
        marshal(&packets).map(|b| b.to_vec()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u32 = 0x1111_1111;
    const PEER: u32 = 0x2222_2222;

    fn ntp(secs: u64, frac: u32) -> u64 {
        (secs << 32) | frac as u64
    }

    fn peer_rr(lsr: u32, dlsr: u32) -> Vec<u8> {
        let rr: Box<dyn Packet> = Box::new(ReceiverReport {
            ssrc: PEER,
            reports: vec![ReceptionReport {
                ssrc: US,
                fraction_lost: 12,
                total_lost: 3,
                last_sequence_number: 1000,
                jitter: 40,
                last_sender_report: lsr,
                delay: dlsr,
            }],
            profile_extensions: Bytes::new(),
        });
        marshal(&[rr]).unwrap().to_vec()
    }

    #[test]
    fn rtt_matches_the_rfc3550_worked_example() {
        // RFC 3550 §6.4.1, Figure 2: A = 0xb710:8000 (46864.500 s), LSR = 0xb705:2000
        // (46853.125 s), DLSR = 0x0005:4000 (5.250 s): RTT = 6.125 s.
        let now = crate::test_clock::epoch();
        let mut s = RtcpSession::new(US, "tolk@test", now);
        let a = ntp(0xb710, 0x8000_0000);
        assert_eq!(ntp_mid32(a), 0xb710_8000);
        let info = s.on_rtcp(now, a, &peer_rr(0xb705_2000, 0x0005_4000)).unwrap();
        assert_eq!(s.rtt(), Some(Duration::from_millis(6125)));
        assert_eq!(info.peer_fraction_lost, Some(12));
        assert_eq!(info.peer_jitter, Some(40));
    }

    #[test]
    fn our_report_carries_hand_computed_reception_statistics() {
        let t0 = crate::test_clock::epoch();
        let mut s = RtcpSession::new(US, "tolk@test", t0);
        // The peer's SR at t0 with NTP 0x0000_1234_5678_0000 -> LSR 0x12345678.
        let sr: Box<dyn Packet> = Box::new(SenderReport {
            ssrc: PEER,
            ntp_time: 0x0000_1234_5678_0000,
            rtp_time: 0,
            packet_count: 1,
            octet_count: 160,
            reports: vec![],
            profile_extensions: Bytes::new(),
        });
        s.on_rtcp(t0, 0, &marshal(&[sr]).unwrap()).unwrap();
        // Receive statistics: validated at 1000, 1001..=1100 with ten lost.
        let mut recv = ReceiveStats::new(999);
        recv.update_seq(999);
        recv.update_seq(1000);
        for seq in 1001u16..=1100 {
            if seq % 10 != 3 {
                recv.update_seq(seq);
            }
        }
        // 1.5 s after the SR: DLSR = 1.5 * 65536 = 0x0001_8000.
        let due = s.poll_timeout().max(t0 + Duration::from_millis(1500));
        let at = t0 + Duration::from_millis(1500);
        assert!(due >= at);
        let bytes = s.poll_report(due, 0, 0, Some(&mut recv)).expect("a report is due");
        let mut b = &bytes[..];
        let packets = unmarshal(&mut b).unwrap();
        let rr = packets[0]
            .as_any()
            .downcast_ref::<ReceiverReport>()
            .expect("RR first: we sent no media");
        assert!(
            packets[1].as_any().downcast_ref::<SourceDescription>().is_some(),
            "SDES CNAME second"
        );
        let block = &rr.reports[0];
        assert_eq!(block.ssrc, PEER);
        assert_eq!(block.fraction_lost, 25, "10 of 101: floor(10*256/101)");
        assert_eq!(block.total_lost, 10);
        assert_eq!(block.last_sequence_number, 1100);
        assert_eq!(block.last_sender_report, 0x1234_5678);
        let expected_dlsr = units_65536(due - t0);
        assert_eq!(block.delay, expected_dlsr);
        assert_eq!(units_65536(Duration::from_millis(1500)), 0x0001_8000);
    }

    #[test]
    fn sender_report_while_sending_media() {
        let t0 = crate::test_clock::epoch();
        let mut s = RtcpSession::new(US, "tolk@test", t0);
        for _ in 0..50 {
            s.on_rtp_sent(160);
        }
        let bytes = s
            .poll_report(t0 + Duration::from_secs(10), ntp(100, 0), 8000, None)
            .unwrap();
        let mut b = &bytes[..];
        let packets = unmarshal(&mut b).unwrap();
        let sr = packets[0].as_any().downcast_ref::<SenderReport>().expect("SR");
        assert_eq!((sr.packet_count, sr.octet_count, sr.rtp_time), (50, 8000, 8000));
        assert_eq!(sr.ntp_time, ntp(100, 0));
    }

    #[test]
    fn reports_follow_the_randomised_rfc3550_schedule() {
        let t0 = crate::test_clock::epoch();
        for ssrc in 1..50u32 {
            let mut s = RtcpSession::new(ssrc, "x", t0);
            let first = s.poll_timeout() - t0;
            assert!(
                first >= Duration::from_millis(1250) && first <= Duration::from_millis(3750),
                "{first:?}"
            );
            assert!(
                s.poll_report(t0 + first - Duration::from_millis(1), 0, 0, None)
                    .is_none()
            );
            let at = t0 + first;
            s.poll_report(at, 0, 0, None).unwrap();
            let gap = s.poll_timeout() - at;
            assert!(
                gap >= Duration::from_millis(2500) && gap <= Duration::from_millis(7500),
                "{gap:?}"
            );
        }
    }

    #[test]
    fn bye_is_a_compound_ending_with_goodbye_and_is_recognised() {
        let t0 = crate::test_clock::epoch();
        let mut ours = RtcpSession::new(US, "tolk@test", t0);
        let bye = ours.bye(t0, 0, 0, None);
        let mut peer = RtcpSession::new(PEER, "peer", t0);
        assert!(peer.on_rtcp(t0, 0, &bye).unwrap().bye);
    }

    #[test]
    fn junk_is_an_error_not_a_panic() {
        let t0 = crate::test_clock::epoch();
        let mut s = RtcpSession::new(US, "x", t0);
        for junk in [
            &[][..],
            &[0x80][..],
            &[0x81, 201, 0, 200, 1, 2, 3, 4][..],
            &[0xff; 64][..],
        ] {
            assert!(s.on_rtcp(t0, 0, junk).is_err());
        }
    }
}
