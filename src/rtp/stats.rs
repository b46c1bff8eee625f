//! Receiver statistics of RFC 3550: sequence tracking with wrap-around and source validation
//! (Appendix A.1), packets expected and lost, fraction lost per interval (A.3), and the
//! interarrival jitter estimate (A.8, §6.4.1).

/// A source is valid after this many packets in sequence (A.1 `MIN_SEQUENTIAL`).
const MIN_SEQUENTIAL: u32 = 2;
/// A.1 `MAX_DROPOUT`: a forward jump up to this is loss, beyond it a restart.
const MAX_DROPOUT: u32 = 3000;
/// A.1 `MAX_MISORDER`: a backward step up to this is a late packet.
const MAX_MISORDER: u32 = 100;
const RTP_SEQ_MOD: u32 = 1 << 16;

/// What a received packet was, as far as sequencing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOutcome {
    /// In sequence (or after a gap of lost packets).
    Accepted,
    /// Still on probation: the source is not validated yet.
    Probation,
    /// A duplicate or late packet (already counted or too old).
    Late,
    /// A large jump: the source may have restarted; a second packet in sequence confirms it.
    BadSequence,
}

/// Per-source receive statistics.
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    probation: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Interarrival jitter in timestamp units, scaled by 16 (A.8's integer form).
    jitter_q4: u32,
    transit: Option<i32>,
}

impl ReceiveStats {
    /// Starts with the first packet's sequence number (A.1 `init_seq` with probation).
    pub fn new(seq: u16) -> Self {
        let mut s = ReceiveStats {
            max_seq: seq.wrapping_sub(1),
            cycles: 0,
            base_seq: 0,
            bad_seq: RTP_SEQ_MOD + 1,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter_q4: 0,
            transit: None,
        };
        s.init_seq(seq);
        s.max_seq = seq.wrapping_sub(1);
        s.probation = MIN_SEQUENTIAL;
        s
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = seq as u32;
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    /// A.1 `update_seq`.
    pub fn update_seq(&mut self, seq: u16) -> SeqOutcome {
        let udelta = seq.wrapping_sub(self.max_seq) as u32;
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                    return SeqOutcome::Accepted;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return SeqOutcome::Probation;
        } else if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += RTP_SEQ_MOD;
            }
            self.max_seq = seq;
        } else if udelta <= RTP_SEQ_MOD - MAX_MISORDER {
            if seq as u32 == self.bad_seq {
                // Two sequential packets after a jump: the source restarted.
                self.init_seq(seq);
            } else {
                self.bad_seq = (seq as u32 + 1) & (RTP_SEQ_MOD - 1);
                return SeqOutcome::BadSequence;
            }
        } else {
            // Duplicate or reordered packet.
            self.received += 1;
            return SeqOutcome::Late;
        }
        self.received += 1;
        SeqOutcome::Accepted
    }

    /// A.8: `arrival` is the arrival time in RTP timestamp units, `rtp_ts` the packet's.
    pub fn update_jitter(&mut self, arrival: u32, rtp_ts: u32) {
        let transit = arrival.wrapping_sub(rtp_ts) as i32;
        if let Some(prev) = self.transit {
            let d = transit.wrapping_sub(prev).unsigned_abs();
            // J += (|D| - J) / 16, kept scaled by 16.
            self.jitter_q4 = self.jitter_q4.wrapping_add(d).wrapping_sub((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// Interarrival jitter in timestamp units (the value RTCP reports, §6.4.1).
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    /// Extended highest sequence number received (§6.4.1).
    pub fn extended_max(&self) -> u32 {
        self.cycles + self.max_seq as u32
    }

    /// Packets expected so far (A.3).
    pub fn expected(&self) -> u32 {
        self.extended_max().wrapping_sub(self.base_seq).wrapping_add(1)
    }

    pub fn received(&self) -> u32 {
        self.received
    }

    /// Cumulative packets lost (A.3), clamped to the 24-bit signed range RTCP carries.
    pub fn cumulative_lost(&self) -> i32 {
        let lost = self.expected() as i64 - self.received as i64;
        lost.clamp(-0x80_0000, 0x7f_ffff) as i32
    }

    /// Fraction lost since the last call, in 1/256 (A.3); starts a new interval.
    pub fn fraction_lost(&mut self) -> u8 {
        let expected = self.expected();
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A validated source: `first` and `first + 1` received; statistics start at `first + 1`
    /// (A.1: `init_seq` on the packet that ends probation).
    fn validated(first: u16) -> ReceiveStats {
        let mut s = ReceiveStats::new(first);
        assert_eq!(s.update_seq(first), SeqOutcome::Probation);
        assert_eq!(s.update_seq(first.wrapping_add(1)), SeqOutcome::Accepted);
        s
    }

    #[test]
    fn probation_needs_two_packets_in_sequence() {
        let mut s = ReceiveStats::new(100);
        assert_eq!(s.update_seq(100), SeqOutcome::Probation);
        assert_eq!(
            s.update_seq(200),
            SeqOutcome::Probation,
            "out of sequence restarts probation"
        );
        assert_eq!(s.update_seq(201), SeqOutcome::Accepted);
        assert_eq!(s.expected(), 1);
        assert_eq!(s.received(), 1);
    }

    #[test]
    fn loss_and_fraction_match_hand_computed_values() {
        // Validated at 1000; then 1001..=1100 sent with every seq ending in 3 lost (10 lost).
        let mut s = validated(999);
        for seq in 1001u16..=1100 {
            if seq % 10 != 3 {
                s.update_seq(seq);
            }
        }
        // Expected 1000..=1100 = 101 packets; received 1 + 90.
        assert_eq!(s.expected(), 101);
        assert_eq!(s.received(), 91);
        assert_eq!(s.cumulative_lost(), 10);
        // 10 lost of 101 expected: floor(10 * 256 / 101) = 25.
        assert_eq!(s.fraction_lost(), 25);
        // The next interval has no packets and no loss.
        assert_eq!(s.fraction_lost(), 0);
    }

    #[test]
    fn sequence_wrap_adds_a_cycle() {
        let mut s = validated(65_530);
        for seq in (65_532u32..65_546).map(|x| (x % 65_536) as u16) {
            assert_eq!(s.update_seq(seq), SeqOutcome::Accepted);
        }
        assert_eq!(s.extended_max(), 65_536 + 9);
        // 65531 ..= 65536 + 9.
        assert_eq!(s.expected(), 15);
        assert_eq!(s.cumulative_lost(), 0);
    }

    #[test]
    fn late_packets_are_flagged_and_duplicates_make_loss_negative() {
        let mut s = validated(10);
        s.update_seq(12);
        assert_eq!(s.update_seq(9), SeqOutcome::Late);
        // A.1 counts a repeat of the newest packet as received (it cannot tell): expected
        // 11..=12 = 2, received 4, so the cumulative loss is -2 (§6.4.1 allows negative).
        s.update_seq(12);
        assert_eq!(s.expected(), 2);
        assert_eq!(s.cumulative_lost(), -2);
    }

    #[test]
    fn a_big_jump_then_a_second_packet_is_a_restart() {
        let mut s = validated(10);
        assert_eq!(s.update_seq(40_000), SeqOutcome::BadSequence);
        assert_eq!(s.update_seq(40_001), SeqOutcome::Accepted);
        assert_eq!(s.expected(), 1, "statistics restart with the new sequence");
    }

    #[test]
    fn jitter_follows_the_rfc3550_estimator() {
        // 20 ms packets (160 units at 8 kHz); arrivals alternate 0 and +80 units late, so
        // |D| = 80 every packet after the first. J converges to 80 by J += (|D| - J)/16:
        // after n updates J = 80 * (1 - (15/16)^n).
        let mut s = validated(1);
        for i in 0..200u32 {
            let ts = i * 160;
            let arrival = ts + if i % 2 == 1 { 80 } else { 0 } + 1_000;
            s.update_jitter(arrival, ts);
        }
        assert!((78..=80).contains(&s.jitter()), "jitter {}", s.jitter());
        // After exactly 16 updates of |D| = 80: 80 * (1 - (15/16)^16) = 51.7.
        let mut s = validated(1);
        for i in 0..17u32 {
            let ts = i * 160;
            s.update_jitter(ts + if i % 2 == 1 { 80 } else { 0 }, ts);
        }
        assert!((50..=52).contains(&s.jitter()), "jitter {}", s.jitter());
    }

    #[test]
    fn steady_arrivals_have_zero_jitter() {
        let mut s = validated(1);
        for i in 0..50u32 {
            s.update_jitter(i * 160 + 12_345, i * 160);
        }
        assert_eq!(s.jitter(), 0);
    }
}
