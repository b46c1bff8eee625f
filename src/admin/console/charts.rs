//! The console's charts, drawn on the server as inline SVG: bars for a report's groups,
//! lines for a quantity over time. No chart library reaches the browser (nothing to vendor
//! or fetch, and a page draws even with scripts off); the figures are in the page as text
//! too (`<title>` per bar and point, and the tables beside each chart).

use std::fmt::Write;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 36.0;
/// Line colours, one per series (the palette of docs/console's screenshots).
const COLOURS: [&str; 4] = ["#2563eb", "#16a34a", "#d97706", "#9333ea"];

/// Text for SVG/HTML: `&`, `<`, `>`, `"` and `'` escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A round upper bound for an axis: 1, 2 or 5 times a power of ten, at least `max`.
fn axis_top(max: f64) -> f64 {
    if !max.is_finite() || max <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if step * power >= max {
            return step * power;
        }
    }
    10.0 * power
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The frame every chart shares: title, the value axis with three grid lines, and
/// `labels` under the x positions `xs` (at most `max_labels` of them shown).
fn frame(out: &mut String, title: &str, unit: &str, top: f64, labels: &[(f64, &str)], max_labels: usize) {
    let _ = write!(
        out,
        "<svg class=\"chart\" data-chart=\"{t}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{t}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <text class=\"chart-title\" x=\"{LEFT}\" y=\"16\">{t}</text>",
        t = escape(title)
    );
    let plot_h = HEIGHT - TOP - BOTTOM;
    for i in 0..=2 {
        let v = top * i as f64 / 2.0;
        let y = TOP + plot_h - plot_h * i as f64 / 2.0;
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"axis\" x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\">{v}{u}</text>",
            x2 = WIDTH - RIGHT,
            lx = LEFT - 4.0,
            ty = y + 4.0,
            v = number(v),
            u = escape(unit)
        );
    }
    let every = labels.len().div_ceil(max_labels.max(1)).max(1);
    for (i, (x, label)) in labels.iter().enumerate() {
        if i % every == 0 || i + 1 == labels.len() && labels.len() <= max_labels {
            let _ = write!(
                out,
                "<text class=\"axis\" x=\"{x:.1}\" y=\"{y}\" text-anchor=\"middle\">{l}</text>",
                y = HEIGHT - BOTTOM + 16.0,
                l = escape(label)
            );
        }
    }
}

fn empty(title: &str) -> String {
    format!(
        "<svg class=\"chart empty\" data-chart=\"{t}\" viewBox=\"0 0 {WIDTH} 60\" role=\"img\" aria-label=\"{t}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <text class=\"chart-title\" x=\"{LEFT}\" y=\"16\">{t}</text><text class=\"axis\" x=\"{LEFT}\" y=\"42\">no data yet</text></svg>",
        t = escape(title)
    )
}

/// A bar per group: `bars[i] = (label, value)`.
pub fn bars(title: &str, unit: &str, bars: &[(String, f64)]) -> String {
    if bars.is_empty() {
        return empty(title);
    }
    let top = axis_top(bars.iter().map(|b| b.1).fold(0.0, f64::max));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / bars.len() as f64;
    let labels: Vec<(f64, &str)> = bars
        .iter()
        .enumerate()
        .map(|(i, b)| (LEFT + slot * (i as f64 + 0.5), b.0.as_str()))
        .collect();
    let mut out = String::new();
    frame(&mut out, title, unit, top, &labels, 12);
    for (i, (label, v)) in bars.iter().enumerate() {
        let h = (v.max(0.0) / top * plot_h).max(if *v > 0.0 { 1.0 } else { 0.0 });
        let _ = write!(
            out,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\"><title>{l}: {v}{u}</title></rect>",
            x = LEFT + slot * i as f64 + slot * 0.15,
            y = TOP + plot_h - h,
            w = slot * 0.7,
            l = escape(label),
            v = number(*v),
            u = escape(unit)
        );
    }
    out.push_str("</svg>");
    out
}

/// Lines over shared x `labels`: `series[k] = (name, values)`, one value per label (NaN:
/// no value there).
pub fn lines(title: &str, unit: &str, labels: &[String], series: &[(&str, Vec<f64>)]) -> String {
    let any = series.iter().any(|(_, v)| v.iter().any(|x| x.is_finite()));
    if labels.is_empty() || !any {
        return empty(title);
    }
    let top = axis_top(
        series
            .iter()
            .flat_map(|(_, v)| v.iter().copied().filter(|x| x.is_finite()))
            .fold(0.0, f64::max),
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let step = if labels.len() > 1 {
        plot_w / (labels.len() - 1) as f64
    } else {
        0.0
    };
    let x_of = |i: usize| {
        if labels.len() > 1 {
            LEFT + step * i as f64
        } else {
            LEFT + plot_w / 2.0
        }
    };
    let positions: Vec<(f64, &str)> = labels.iter().enumerate().map(|(i, l)| (x_of(i), l.as_str())).collect();
    let mut out = String::new();
    frame(&mut out, title, unit, top, &positions, 8);
    for (k, (name, values)) in series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let mut d = String::new();
        let mut pen_down = false;
        for (i, v) in values.iter().enumerate().take(labels.len()) {
            if !v.is_finite() {
                pen_down = false;
                continue;
            }
            let y = TOP + plot_h - v.max(0.0) / top * plot_h;
            let _ = write!(d, "{}{:.1},{:.1} ", if pen_down { "L" } else { "M" }, x_of(i), y);
            pen_down = true;
            let _ = write!(
                out,
                "<circle class=\"point\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{colour}\"><title>{n} {l}: {v}{u}</title></circle>",
                x = x_of(i),
                n = escape(name),
                l = escape(&labels[i]),
                v = number(*v),
                u = escape(unit)
            );
        }
        let _ = write!(
            out,
            "<path class=\"line\" d=\"{d}\" stroke=\"{colour}\" fill=\"none\" stroke-width=\"2\"/>\
             <text class=\"legend\" x=\"{x}\" y=\"16\" fill=\"{colour}\">{n}</text>",
            d = d.trim_end(),
            x = WIDTH - RIGHT - 120.0 * (series.len() - k) as f64,
            n = escape(name)
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_draw_one_rect_per_group_scaled_to_a_round_top() {
        let svg = bars(
            "Calls by day",
            "",
            &[("2026-12-06".into(), 40.0), ("2026-12-07".into(), 80.0)],
        );
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 2);
        // 80 -> an axis of 100: the taller bar is 80% of the plot's height.
        let plot_h = HEIGHT - TOP - BOTTOM;
        assert!(svg.contains(&format!("height=\"{:.1}\"", 0.8 * plot_h)), "{svg}");
        assert!(svg.contains("<title>2026-12-07: 80</title>"));
        assert!(svg.contains(">100<"));
    }

    #[test]
    fn lines_skip_gaps_and_label_every_point() {
        let labels: Vec<String> = (0..4).map(|i| format!("{i}:00")).collect();
        let svg = lines("Calls", "/min", &labels, &[("calls", vec![1.0, f64::NAN, 3.0, 4.0])]);
        assert_eq!(svg.matches("<circle").count(), 3);
        // The gap lifts the pen: two moves.
        let d = svg.split(" d=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert!(svg.contains("<title>calls 3:00: 4/min</title>"));
    }

    #[test]
    fn nothing_to_draw_says_so_and_text_is_escaped() {
        assert!(bars("<b>", "", &[]).contains("no data yet"));
        assert!(lines("x", "", &["a".into()], &[("s", vec![f64::NAN])]).contains("no data yet"));
        let svg = bars("R&D", "", &[("<script>".into(), 1.0)]);
        assert!(svg.contains("R&amp;D") && svg.contains("&lt;script&gt;") && !svg.contains("<script>"));
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(axis_top(0.0), 1.0);
        assert_eq!(axis_top(3.2), 5.0);
        assert_eq!(axis_top(12.0), 20.0);
        assert_eq!(axis_top(100.0), 100.0);
        assert_eq!(axis_top(0.004), 0.005);
    }
}
