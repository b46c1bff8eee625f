//! The dashboard's recent history: every [`INTERVAL`] the console reads the gateway's own
//! `/metrics` text and keeps what the charts need (the last [`KEPT`] samples, 6 hours).
//! Sans-IO: the text and the time are passed in. Kept in memory only: a restart starts the
//! history again (Prometheus, with `contrib/`'s dashboard, is the long-term record).

use std::collections::{HashMap, VecDeque};

/// How often a sample is taken.
pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// Samples kept: 6 hours at one a minute.
pub const KEPT: usize = 360;

/// One moment of the gateway, as the dashboard shows it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Unix seconds.
    pub at: i64,
    /// SIP dialogs up (`sip_dialogs_active`).
    pub active_calls: f64,
    pub flows: f64,
    pub rooms: f64,
    pub members: f64,
    /// Calls that ended per minute since the sample before (`calls_total`); NaN for the first.
    pub calls_per_minute: f64,
    /// The 99th percentile of mixer tick lateness since the sample before, milliseconds (the
    /// upper bound of its histogram bucket); NaN when no tick ran.
    pub tick_lateness_p99_ms: f64,
    /// How far the CDR writer is behind (`cdr_write_lag_seconds`); NaN with CDRs off.
    pub cdr_lag_seconds: f64,
}

/// The metrics of one `/metrics` text: each name's series summed over their labels, and
/// histogram buckets by their bound.
#[derive(Debug, Default)]
pub struct Reading {
    sums: HashMap<String, f64>,
    buckets: HashMap<String, Vec<(f64, f64)>>,
}

impl Reading {
    /// Parses the Prometheus text exposition format (comments and unparsable lines skipped).
    pub fn parse(text: &str) -> Reading {
        let mut r = Reading::default();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = match line.rsplit_once(' ') {
                Some((s, v)) => (s.trim(), v.trim()),
                None => continue,
            };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            if let Some(base) = name.strip_suffix("_bucket") {
                let le = labels
                    .split(',')
                    .find_map(|kv| kv.trim().strip_prefix("le=\""))
                    .map(|v| v.trim_end_matches('"'));
                let bound = match le {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => match v.parse() {
                        Ok(b) => b,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                let list = r.buckets.entry(base.to_string()).or_default();
                match list.iter_mut().find(|(b, _)| *b == bound) {
                    Some(entry) => entry.1 += value,
                    None => list.push((bound, value)),
                }
                continue;
            }
            *r.sums.entry(name.to_string()).or_default() += value;
        }
        for list in r.buckets.values_mut() {
            list.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        r
    }

    /// The sum of a metric's series; NaN when the gateway does not report it.
    pub fn value(&self, name: &str) -> f64 {
        self.sums.get(name).copied().unwrap_or(f64::NAN)
    }

    /// The sum, or 0 when absent (counters and gauges not yet touched).
    fn count(&self, name: &str) -> f64 {
        self.sums.get(name).copied().unwrap_or(0.0)
    }
}

/// The bucket bound under which `q` of what was counted between `before` and `now` fell.
fn quantile(before: Option<&[(f64, f64)]>, now: &[(f64, f64)], q: f64) -> f64 {
    let earlier = |bound: f64| {
        before
            .and_then(|b| b.iter().find(|(x, _)| *x == bound))
            .map(|(_, c)| *c)
            .unwrap_or(0.0)
    };
    let deltas: Vec<(f64, f64)> = now.iter().map(|&(b, c)| (b, (c - earlier(b)).max(0.0))).collect();
    let total = deltas.last().map(|d| d.1).unwrap_or(0.0);
    if total <= 0.0 {
        return f64::NAN;
    }
    deltas
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(b, _)| *b)
        .unwrap_or(f64::INFINITY)
}

/// A histogram's cumulative counts by upper bound.
type Buckets = Vec<(f64, f64)>;

/// The kept samples.
#[derive(Debug, Default)]
pub struct Samples {
    kept: VecDeque<Sample>,
    /// The sample before: when, `calls_total`, and the lateness buckets.
    last: Option<(i64, f64, Buckets)>,
}

impl Samples {
    /// Takes a sample at `at` (Unix seconds) from the `/metrics` text.
    pub fn push(&mut self, at: i64, metrics: &str) -> Sample {
        let r = Reading::parse(metrics);
        let calls = r.count("calls_total");
        let lateness = r
            .buckets
            .get("mixer_tick_lateness_seconds")
            .cloned()
            .unwrap_or_default();
        let (per_minute, p99) = match &self.last {
            Some((t, c, b)) if at > *t => (
                (calls - c).max(0.0) * 60.0 / (at - t) as f64,
                quantile(Some(b), &lateness, 0.99) * 1000.0,
            ),
            _ => (f64::NAN, f64::NAN),
        };
        let sample = Sample {
            at,
            active_calls: r.count("sip_dialogs_active"),
            flows: r.count("flows_active"),
            rooms: r.count("mixer_rooms"),
            members: r.count("mixer_members"),
            calls_per_minute: per_minute,
            tick_lateness_p99_ms: p99,
            cdr_lag_seconds: r.value("cdr_write_lag_seconds"),
        };
        self.last = Some((at, calls, lateness));
        self.kept.push_back(sample);
        while self.kept.len() > KEPT {
            self.kept.pop_front();
        }
        sample
    }

    /// Oldest first.
    pub fn all(&self) -> impl Iterator<Item = &Sample> {
        self.kept.iter()
    }

    /// The newest.
    pub fn latest(&self) -> Option<&Sample> {
        self.kept.back()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(calls: u64, le1ms: u64, le5ms: u64, inf: u64) -> String {
        format!(
            "# TYPE calls_total counter\ncalls_total{{outcome=\"answered\"}} {calls}\ncalls_total{{outcome=\"failed\"}} 1\n\
             sip_dialogs_active 3\nflows_active 2\nmixer_rooms 1\nmixer_members 3\n\
             mixer_tick_lateness_seconds_bucket{{le=\"0.001\"}} {le1ms}\n\
             mixer_tick_lateness_seconds_bucket{{le=\"0.005\"}} {le5ms}\n\
             mixer_tick_lateness_seconds_bucket{{le=\"+Inf\"}} {inf}\n\
             mixer_tick_lateness_seconds_sum 0.5\nmixer_tick_lateness_seconds_count {inf}\n"
        )
    }

    #[test]
    fn rates_and_percentiles_come_from_the_interval_between_samples() {
        let mut s = Samples::default();
        let first = s.push(1000, &text(10, 100, 100, 100));
        assert!(first.calls_per_minute.is_nan() && first.tick_lateness_p99_ms.is_nan());
        assert_eq!(
            (first.active_calls, first.flows, first.rooms, first.members),
            (3.0, 2.0, 1.0, 3.0)
        );
        assert!(first.cdr_lag_seconds.is_nan());
        // 30 more calls in 2 minutes; of 100 new ticks, 98 under 1 ms and 2 under 5 ms.
        let second = s.push(1120, &text(40, 198, 200, 200));
        assert_eq!(second.calls_per_minute, 15.0);
        assert_eq!(second.tick_lateness_p99_ms, 5.0);
        // No tick in the next minute: no percentile.
        let third = s.push(1180, &text(40, 198, 200, 200));
        assert!(third.tick_lateness_p99_ms.is_nan());
        assert_eq!(third.calls_per_minute, 0.0);
        assert_eq!(s.all().count(), 3);
    }

    #[test]
    fn at_most_six_hours_are_kept_and_junk_lines_are_skipped() {
        let mut s = Samples::default();
        for i in 0..(KEPT as i64 + 5) {
            s.push(i * 60, "garbage line\ncdr_write_lag_seconds 0.25\nbad{le=\"x\"} y\n");
        }
        assert_eq!(s.all().count(), KEPT);
        assert_eq!(s.latest().unwrap().cdr_lag_seconds, 0.25);
        assert_eq!(s.all().next().unwrap().at, 5 * 60);
    }
}
