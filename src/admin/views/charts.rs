//! Charts as plain HTML and CSS: bars are elements whose heights are classes
//! of the stylesheet (`h0`..`h100`: the pages' policy allows no inline
//! style), so text is real text at the page's size at any width, columns
//! shrink with the screen, and every bar has its tooltip. No script.

use maud::{html, Markup};

/// Compact numbers for axes: 1234 -> "1,234", 12345 -> "12.3k", 3400000 -> "3.4M".
pub fn compact(v: i64) -> String {
    let a = v.unsigned_abs() as f64;
    let (n, suffix) = if a >= 1e9 {
        (v as f64 / 1e9, "G")
    } else if a >= 1e6 {
        (v as f64 / 1e6, "M")
    } else if a >= 1e4 {
        (v as f64 / 1e3, "k")
    } else {
        return thousands(v);
    };
    let s = format!("{n:.1}");
    format!("{}{suffix}", s.trim_end_matches(".0"))
}

/// Whole numbers with thousands separators: 1234567 -> "1,234,567".
pub fn thousands(v: i64) -> String {
    let digits = v.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if v < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The axis step: a 1, 2 or 5 x 10^n with 4 steps reaching `max`.
fn nice_step(max: i64) -> i64 {
    let mut step = 1i64;
    loop {
        for m in [1, 2, 5] {
            if step.saturating_mul(m).saturating_mul(4) >= max {
                return step.saturating_mul(m);
            }
        }
        step = step.saturating_mul(10);
    }
}

/// `v` of `max` as a whole percentage, at least 1 for any value above zero.
fn percent(v: i64, max: i64) -> i64 {
    if v <= 0 || max <= 0 {
        return 0;
    }
    ((v as f64 / max as f64 * 100.0).round() as i64).clamp(1, 100)
}

pub struct BarSeries<'a> {
    pub name: &'a str,
    pub values: &'a [i64],
    /// CSS class for the bars' fill.
    pub class: &'a str,
}

/// The x axis: short labels under the columns, a longer title for each
/// column's tooltip, and how often a label shows on a narrow screen.
pub struct Axis<'a> {
    pub labels: &'a [String],
    pub titles: &'a [String],
    pub every: usize,
}

/// Vertical bars, one column per label; several series stack. Nothing to
/// show: "No data yet", not an empty frame.
pub fn bar_chart(title: &str, unit: &str, axis: &Axis, series: &[BarSeries]) -> Markup {
    let n = axis.labels.len();
    let stack: Vec<i64> =
        (0..n).map(|i| series.iter().map(|s| s.values.get(i).copied().unwrap_or(0)).sum()).collect();
    let total: i64 = stack.iter().sum();
    let step = nice_step(stack.iter().copied().max().unwrap_or(0));
    let max = step * 4;
    html! {
        figure.chart {
            figcaption {
                strong { (title) }
                span.total { (thousands(total)) " " (unit) }
                @if series.len() > 1 {
                    span.legend { @for s in series { span { i class=(s.class) {} (s.name) } } }
                }
            }
            @if total == 0 {
                p.empty { "No data yet." }
            } @else {
                div.plot role="img" aria-label=(format!("{title}: {} {unit}", thousands(total))) {
                    div.yaxis {
                        @for t in 0..=4 { span class=(format!("b{}", t * 25)) { (compact(step * t)) } }
                    }
                    div.bars {
                        @for t in 1..=4 { i.tick class=(format!("b{}", t * 25)) {} }
                        @for i in 0..n {
                            div.col title=(column_title(axis.titles.get(i).unwrap_or(&axis.labels[i]), stack[i], unit, series, i)) {
                                // Last in the column is drawn lowest: the first series at the bottom.
                                @for s in series.iter().rev() {
                                    @let v = s.values.get(i).copied().unwrap_or(0);
                                    @if v > 0 { i class=(format!("{} h{}", s.class, percent(v, max))) {} }
                                }
                            }
                        }
                    }
                    div {}
                    div.xaxis {
                        @for (i, label) in axis.labels.iter().enumerate() {
                            span class=[(axis.every > 1 && i % axis.every != 0).then_some("minor")] { (label) }
                        }
                    }
                }
            }
        }
    }
}

fn column_title(label: &str, total: i64, unit: &str, series: &[BarSeries], i: usize) -> String {
    let mut t = format!("{label}: {} {unit}", thousands(total));
    if series.len() > 1 {
        for s in series {
            t.push_str(&format!("\n{}: {}", s.name, thousands(s.values.get(i).copied().unwrap_or(0))));
        }
    }
    t
}

/// Horizontal bars for rankings (tokens by model, calls by key); rows of
/// zero are left out.
pub fn hbar_chart(title: &str, unit: &str, items: &[(String, i64)]) -> Markup {
    let items: Vec<&(String, i64)> = items.iter().filter(|(_, v)| *v > 0).collect();
    let max = items.iter().map(|(_, v)| *v).max().unwrap_or(0);
    let total: i64 = items.iter().map(|(_, v)| *v).sum();
    html! {
        figure.chart {
            figcaption { strong { (title) } span.total { (thousands(total)) " " (unit) } }
            @if items.is_empty() {
                p.empty { "No data yet." }
            } @else {
                div.ranking role="img" aria-label=(title) {
                    @for (label, v) in &items {
                        div.row title=(format!("{label}: {} {unit}", thousands(*v))) {
                            span.name { (label) }
                            span.track { i class=(format!("bar1 w{}", percent(*v, max))) {} }
                            span.value { (compact(*v)) }
                        }
                    }
                }
            }
        }
    }
}

/// The stylesheet rules the charts' classes need: heights, widths and
/// positions in whole percents.
pub fn css_rules() -> String {
    let mut css = String::with_capacity(101 * 60);
    for p in 0..=100 {
        css.push_str(&format!(".h{p}{{height:{p}%}}.w{p}{{width:{p}%}}.b{p}{{bottom:{p}%}}\n"));
    }
    css
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_axes_are_readable() {
        assert_eq!(compact(999), "999");
        assert_eq!(compact(9_999), "9,999");
        assert_eq!(compact(12_345), "12.3k");
        assert_eq!(compact(3_400_000), "3.4M");
        assert_eq!(compact(20_000), "20k");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-1_000), "-1,000");
        assert_eq!(thousands(12), "12");
        assert_eq!(nice_step(0), 1);
        assert_eq!(nice_step(7), 2, "0, 2, 4, 6, 8");
        assert_eq!(nice_step(11), 5);
        assert_eq!(nice_step(450), 200);
        assert_eq!(percent(1, 1000), 1, "a bar above zero is seen");
        assert_eq!(percent(0, 1000), 0);
    }

    #[test]
    fn charts_carry_titles_totals_and_escape_labels() {
        let labels: Vec<String> = vec!["00".into(), "01".into()];
        let titles: Vec<String> = vec!["2026-12-02 00:00".into(), "2026-12-02 01:00".into()];
        let axis = Axis { labels: &labels, titles: &titles, every: 1 };
        let html = bar_chart(
            "Calls",
            "calls",
            &axis,
            &[BarSeries { name: "calls", values: &[3, 1234], class: "bar1" }],
        )
        .into_string();
        assert!(
            html.contains("1,237 calls") && html.contains(r#"title="2026-12-02 01:00: 1,234 calls""#),
            "{html}"
        );
        assert!(html.contains("bar1 h62"), "1,234 of an axis to 2,000: {html}");
        let empty = bar_chart(
            "Calls",
            "calls",
            &axis,
            &[BarSeries { name: "calls", values: &[0, 0], class: "bar1" }],
        )
        .into_string();
        assert!(empty.contains("No data yet.") && !empty.contains("div class=\"plot\""));
        let html =
            hbar_chart("Models", "tokens", &[("<script>".into(), 5), ("idle".into(), 0)]).into_string();
        assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"));
        assert!(!html.contains("idle"), "no zero rows");
    }
}
