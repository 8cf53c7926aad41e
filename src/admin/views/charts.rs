//! Charts drawn by the server as inline SVG: readable without hovering (axes,
//! labels, totals), with a `<title>` tooltip on every bar. No script.

use maud::{html, Markup, PreEscaped};

/// Compact numbers for axes and labels: 1234 -> "1.2k", 3400000 -> "3.4M".
pub fn compact(v: i64) -> String {
    let a = v.unsigned_abs() as f64;
    let (n, suffix) = if a >= 1e9 {
        (v as f64 / 1e9, "G")
    } else if a >= 1e6 {
        (v as f64 / 1e6, "M")
    } else if a >= 1e4 {
        (v as f64 / 1e3, "k")
    } else {
        return v.to_string();
    };
    let s = format!("{n:.1}");
    format!("{}{suffix}", s.trim_end_matches(".0"))
}

/// A "nice" axis maximum at or above `max`: 1, 2, 5 x 10^n.
fn nice_max(max: i64) -> i64 {
    if max <= 0 {
        return 1;
    }
    let mut step = 1i64;
    loop {
        for m in [1, 2, 5] {
            if step.saturating_mul(m) >= max {
                return step.saturating_mul(m);
            }
        }
        step = step.saturating_mul(10);
    }
}

pub struct BarSeries<'a> {
    pub name: &'a str,
    pub values: &'a [i64],
    /// CSS class for the bars' fill.
    pub class: &'a str,
}

/// Vertical bars, one group per label; several series stack.
pub fn bar_chart(title: &str, unit: &str, labels: &[String], series: &[BarSeries]) -> Markup {
    let (w, h) = (720.0_f64, 220.0_f64);
    let (left, right, top, bottom) = (48.0, 8.0, 12.0, 28.0);
    let n = labels.len().max(1);
    let stack: Vec<i64> =
        (0..n).map(|i| series.iter().map(|s| s.values.get(i).copied().unwrap_or(0)).sum()).collect();
    let total: i64 = stack.iter().sum();
    let max = nice_max(stack.iter().copied().max().unwrap_or(0));
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let slot = plot_w / n as f64;
    let bar_w = (slot * 0.7).max(1.0);
    let y = |v: i64| top + plot_h - (v as f64 / max as f64) * plot_h;
    let label_every = if n > 16 { 2 } else { 1 };
    // Each bar's stacked segments: (class, value, value below it).
    let segments: Vec<Vec<(&str, i64, i64)>> = (0..n)
        .map(|i| {
            let mut base = 0;
            let mut out = Vec::new();
            for s in series {
                let v = s.values.get(i).copied().unwrap_or(0);
                if v > 0 {
                    out.push((s.class, v, base));
                }
                base += v;
            }
            out
        })
        .collect();
    html! {
        figure.chart {
            figcaption {
                strong { (title) }
                span.total { "total " (compact(total)) " " (unit) }
                @if series.len() > 1 {
                    span.legend {
                        @for s in series { span { i class=(s.class) {} (s.name) } }
                    }
                }
            }
            svg viewBox=(format!("0 0 {w} {h}")) role="img" aria-label=(format!("{title}: total {total} {unit}")) {
                // Grid and y axis: 0, half, max.
                @for frac in [0.0, 0.5, 1.0] {
                    @let v = (max as f64 * frac).round() as i64;
                    line.grid x1=(left) x2=(w - right) y1=(y(v)) y2=(y(v)) {}
                    text.axis x=(left - 6.0) y=(y(v) + 4.0) text-anchor="end" { (compact(v)) }
                }
                @for (i, label) in labels.iter().enumerate() {
                    @let x = left + slot * i as f64 + (slot - bar_w) / 2.0;
                    g {
                        title { (label) ": " (stack[i]) " " (unit)
                            @for s in series { (PreEscaped("&#10;")) (s.name) ": " (s.values.get(i).copied().unwrap_or(0)) } }
                        @for (class, v, base) in &segments[i] {
                            rect class=(class) x=(format!("{x:.1}")) y=(format!("{:.1}", y(base + v))) width=(format!("{bar_w:.1}"))
                                height=(format!("{:.1}", (y(*base) - y(base + v)).max(0.5))) {}
                        }
                        // An invisible full-height target, so the tooltip works on empty slots too.
                        rect.hit x=(format!("{:.1}", left + slot * i as f64)) y=(top) width=(format!("{slot:.1}")) height=(plot_h) {}
                    }
                    @if i % label_every == 0 {
                        text.axis x=(format!("{:.1}", left + slot * i as f64 + slot / 2.0)) y=(h - 10.0) text-anchor="middle" { (label) }
                    }
                }
                line.axisline x1=(left) x2=(w - right) y1=(top + plot_h) y2=(top + plot_h) {}
            }
        }
    }
}

/// Horizontal bars for rankings (tokens by model, calls by key).
pub fn hbar_chart(title: &str, unit: &str, items: &[(String, i64)]) -> Markup {
    let row_h = 22.0_f64;
    let (w, label_w, value_w) = (720.0_f64, 260.0_f64, 70.0_f64);
    let h = (items.len().max(1) as f64) * row_h + 8.0;
    let max = items.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let total: i64 = items.iter().map(|(_, v)| *v).sum();
    let bar_space = w - label_w - value_w;
    html! {
        figure.chart {
            figcaption { strong { (title) } span.total { "total " (compact(total)) " " (unit) } }
            @if items.is_empty() {
                p.empty { "No calls yet." }
            } @else {
                svg viewBox=(format!("0 0 {w} {h}")) role="img" aria-label=(title) {
                    @for (i, (label, v)) in items.iter().enumerate() {
                        @let y0 = 4.0 + row_h * i as f64;
                        @let short: String = if label.chars().count() > 38 { format!("{}…", label.chars().take(37).collect::<String>()) } else { label.clone() };
                        g {
                            title { (label) ": " (v) " " (unit) }
                            text.axis x=(label_w - 8.0) y=(y0 + 15.0) text-anchor="end" { (short) }
                            rect.bar1 x=(label_w) y=(y0 + 3.0) height=(row_h - 6.0)
                                width=(format!("{:.1}", (*v as f64 / max as f64 * bar_space).max(1.0))) {}
                            text.value x=(format!("{:.1}", label_w + (*v as f64 / max as f64 * bar_space).max(1.0) + 6.0)) y=(y0 + 15.0) { (compact(*v)) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_axes_are_readable() {
        assert_eq!(compact(999), "999");
        assert_eq!(compact(12_345), "12.3k");
        assert_eq!(compact(3_400_000), "3.4M");
        assert_eq!(compact(20_000), "20k");
        assert_eq!(nice_max(0), 1);
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(11), 20);
        assert_eq!(nice_max(450), 500);
    }

    #[test]
    fn charts_carry_titles_totals_and_escape_labels() {
        let labels: Vec<String> = vec!["00".into(), "01".into()];
        let svg = bar_chart(
            "Calls",
            "calls",
            &labels,
            &[BarSeries { name: "calls", values: &[3, 4], class: "bar1" }],
        )
        .into_string();
        assert!(svg.contains("<svg") && svg.contains("total 7 calls") && svg.contains("<title>01: 4 calls"));
        let svg = hbar_chart("Models", "tokens", &[("<script>".into(), 5)]).into_string();
        assert!(!svg.contains("<script>") && svg.contains("&lt;script&gt;"));
    }
}
