//! Call quality: the ITU-T G.107 E-model, simplified to the inputs a gateway measures (one-way
//! delay, packet loss and its burstiness, codec), giving the transmission rating R and an
//! estimated MOS (G.107 Annex B). All other parameters take G.107's default values (Table 3),
//! for which R0 - Is = 93.2.

/// G.107 default basic signal-to-noise ratio minus simultaneous impairments (R0 - Is).
const R_DEFAULT: f64 = 93.2;

/// Codec constants: equipment impairment Ie and packet-loss robustness Bpl (G.113 Appendix I).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodecImpairment {
    pub ie: f64,
    pub bpl: f64,
}

impl CodecImpairment {
    /// G.711 with packet-loss concealment (G.113 Appendix I: Ie 0, Bpl 25.1).
    pub const G711_PLC: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 25.1 };
    /// G.711 without concealment (Bpl 4.3).
    pub const G711: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 4.3 };
    /// Wideband codecs rated on the narrowband scale, conservatively like G.711 with PLC
    /// (G.107.1's wideband scale is not used here).
    pub const WIDEBAND: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 25.1 };
}

/// Inputs to the E-model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityInputs {
    /// Mouth-to-ear one-way delay, ms (network + jitter buffer + codec).
    pub one_way_delay_ms: f64,
    /// Packet loss, percent (0-100).
    pub loss_percent: f64,
    /// Burst ratio (1 for random loss; above 1 for bursty loss).
    pub burst_ratio: f64,
    pub codec: CodecImpairment,
}

/// The delay impairment Id for one-way delay `ta` ms (G.107 simplified form, used when echo
/// is controlled: Idd only).
pub fn delay_impairment(ta: f64) -> f64 {
    let ta = ta.max(0.0);
    0.024 * ta + if ta > 177.3 { 0.11 * (ta - 177.3) } else { 0.0 }
}

/// The effective equipment impairment Ie,eff (G.107 §7.6).
pub fn effective_equipment_impairment(codec: CodecImpairment, loss_percent: f64, burst_ratio: f64) -> f64 {
    let ppl = loss_percent.clamp(0.0, 100.0);
    let burst = burst_ratio.max(1.0);
    codec.ie + (95.0 - codec.ie) * ppl / (ppl / burst + codec.bpl)
}

/// The rating R (0-100).
pub fn rating(q: &QualityInputs) -> f64 {
    let r = R_DEFAULT
        - delay_impairment(q.one_way_delay_ms)
        - effective_equipment_impairment(q.codec, q.loss_percent, q.burst_ratio);
    r.clamp(0.0, 100.0)
}

/// MOS from R (G.107 Annex B).
pub fn mos(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn defaults_give_r_93_2_and_mos_4_41() {
        // G.107: with all parameters at their defaults R = 93.2 (MOS 4.41).
        let q = QualityInputs {
            one_way_delay_ms: 0.0,
            loss_percent: 0.0,
            burst_ratio: 1.0,
            codec: CodecImpairment::G711_PLC,
        };
        assert!(close(rating(&q), 93.2, 1e-9));
        assert!(close(mos(93.2), 4.41, 0.005), "{}", mos(93.2));
    }

    #[test]
    fn mos_curve_points() {
        // G.107 Annex B: R 80 -> 4.02, 70 -> 3.60, 50 -> 2.58; clamps at the ends.
        assert!(close(mos(80.0), 4.02, 0.005));
        assert!(close(mos(70.0), 3.60, 0.005));
        assert!(close(mos(50.0), 2.58, 0.005));
        assert_eq!(mos(-5.0), 1.0);
        assert_eq!(mos(120.0), 4.5);
    }

    #[test]
    fn delay_impairment_has_its_knee_at_177_ms() {
        assert!(close(delay_impairment(100.0), 2.4, 1e-9));
        assert!(close(delay_impairment(177.3), 4.2552, 1e-4));
        assert!(close(delay_impairment(300.0), 7.2 + 0.11 * 122.7, 1e-9));
    }

    #[test]
    fn two_percent_random_loss_on_g711_with_plc() {
        // Ie,eff = 95 * 2 / (2 + 25.1) = 7.01; R = 86.19; MOS 4.24.
        let q = QualityInputs {
            one_way_delay_ms: 0.0,
            loss_percent: 2.0,
            burst_ratio: 1.0,
            codec: CodecImpairment::G711_PLC,
        };
        assert!(close(effective_equipment_impairment(q.codec, 2.0, 1.0), 7.011, 0.001));
        assert!(close(rating(&q), 86.19, 0.01));
        assert!(close(mos(rating(&q)), 4.24, 0.01));
    }

    #[test]
    fn bursty_loss_hurts_more_than_random_loss() {
        let base = QualityInputs {
            one_way_delay_ms: 80.0,
            loss_percent: 3.0,
            burst_ratio: 1.0,
            codec: CodecImpairment::G711_PLC,
        };
        let bursty = QualityInputs {
            burst_ratio: 2.0,
            ..base
        };
        assert!(rating(&bursty) < rating(&base));
        let no_plc = QualityInputs {
            codec: CodecImpairment::G711,
            ..base
        };
        assert!(rating(&no_plc) < rating(&base));
    }
}
