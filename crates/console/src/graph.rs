//! Line graphs as inline SVG, drawn on the server: no chart library, nothing fetched. Where to
//! put each line, tick and label is decided by [`plot`], a pure function of the datapoints and the
//! window; [`svg`] only writes the result out.
//!
//! A period with no datapoint (the control plane was not running, the series did not exist yet)
//! is a gap in the line, never a zero: a graph must not claim that nothing failed when nothing
//! was measured.

use maud::{Markup, html};

/// Drawing size in SVG units; the element scales to its box's width.
pub const WIDTH: f64 = 600.0;
pub const HEIGHT: f64 = 170.0;
/// Room for the value labels on the left and the time labels below.
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 18.0;
const TOP: f64 = 6.0;
const RIGHT: f64 = 6.0;

/// One line of a graph: its datapoints as `(period start in Unix ms, value)`, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub label: &'static str,
    /// The CSS class that colours it (`l1`…`l3`).
    pub class: &'static str,
    pub points: Vec<(u64, f64)>,
}

/// A graph to draw: lines over the window `[from, to)` whose datapoints are `step_ms` apart.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub title: &'static str,
    /// What the values are in (`req/s`, `ms`), for the labels.
    pub unit: &'static str,
    pub from: u64,
    pub to: u64,
    pub step_ms: u64,
    pub lines: Vec<Line>,
}

/// Where everything of a graph goes, in SVG units.
#[derive(Clone, Debug, PartialEq)]
pub struct Plot {
    /// The value at the top of the plot area: the largest value rounded up to 1, 2 or 5 × 10ⁿ.
    pub top_value: f64,
    /// Horizontal grid lines: `(y, label)`, bottom to top.
    pub value_ticks: Vec<(f64, String)>,
    /// Time labels: `(x, HH:MM)`, left to right.
    pub time_ticks: Vec<(f64, String)>,
    /// Each line's SVG path (`M x y L x y … M …`: a new `M` after each gap), with its class.
    pub paths: Vec<(&'static str, String)>,
    /// Whether any line has a datapoint at all.
    pub has_data: bool,
}

/// Where the graph's lines, ticks and labels go.
pub fn plot(graph: &Graph) -> Plot {
    let largest =
        graph.lines.iter().flat_map(|l| &l.points).map(|&(_, v)| v).fold(0.0_f64, f64::max);
    let top_value = nice_ceiling(largest);
    let span = graph.to.saturating_sub(graph.from).max(1) as f64;
    let x = |at: u64| LEFT + (at.saturating_sub(graph.from) as f64 / span) * (WIDTH - LEFT - RIGHT);
    let y = |value: f64| TOP + (1.0 - value / top_value) * (HEIGHT - TOP - BOTTOM);
    let paths = graph
        .lines
        .iter()
        .map(|line| {
            let mut d = String::new();
            let mut previous: Option<u64> = None;
            for &(at, value) in line.points.iter().filter(|(at, _)| *at >= graph.from) {
                let joined = previous.is_some_and(|p| at.saturating_sub(p) <= graph.step_ms);
                let command = if joined { 'L' } else { 'M' };
                d.push_str(&format!("{command}{:.1} {:.1}", x(at), y(value)));
                if !joined {
                    // A lone datapoint between two gaps is still seen: a dot-long stroke.
                    d.push_str("h0.1");
                }
                previous = Some(at);
            }
            (line.class, d)
        })
        .collect::<Vec<_>>();
    let value_ticks =
        [0.0, 0.5, 1.0].iter().map(|f| (y(top_value * f), number(top_value * f))).collect();
    Plot {
        top_value,
        value_ticks,
        time_ticks: time_ticks(graph.from, graph.to)
            .into_iter()
            .map(|t| (x(t), hh_mm(t)))
            .collect(),
        has_data: paths.iter().any(|(_, d)| !d.is_empty()),
        paths,
    }
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `value`; 1 for nothing at all, so an idle graph
/// has a scale.
pub fn nice_ceiling(value: f64) -> f64 {
    if value.is_nan() || value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&nice| nice >= value * (1.0 - 1e-12))
        .unwrap_or(10.0 * magnitude)
}

/// Round times of the clock within `[from, to]`, at most 7: every 1, 2, 5, 10, 15, 30 or 60
/// minutes, whichever is the finest that fits.
fn time_ticks(from: u64, to: u64) -> Vec<u64> {
    let span = to.saturating_sub(from);
    let every = [1, 2, 5, 10, 15, 30, 60]
        .into_iter()
        .map(|minutes| minutes * 60_000)
        .find(|every| span / every <= 6)
        .unwrap_or(span.div_ceil(6).max(1));
    let first = from.div_ceil(every) * every;
    (0..).map(|i| first + i * every).take_while(|&t| t <= to).collect()
}

fn hh_mm(ms: u64) -> String {
    let minutes = ms / 60_000;
    format!("{:02}:{:02}", (minutes / 60) % 24, minutes % 60)
}

/// A value as a label: no more digits than a person reads at a glance.
pub fn number(value: f64) -> String {
    match value.abs() {
        0.0 => "0".to_string(),
        v if v >= 100.0 => format!("{value:.0}"),
        v if v >= 10.0 => format!("{value:.1}").trim_end_matches(".0").to_string(),
        v if v >= 0.01 => {
            format!("{value:.2}").trim_end_matches('0').trim_end_matches('.').to_string()
        }
        _ => format!("{value:.1e}"),
    }
}

/// The graph as a figure: title, legend with each line's newest value, and the SVG.
pub fn svg(graph: &Graph) -> Markup {
    let plot = plot(graph);
    let newest = |line: &Line| line.points.last().map(|&(_, v)| number(v));
    let label = format!(
        "{} from {} to {}, in {}; newest: {}",
        graph.title,
        hh_mm(graph.from),
        hh_mm(graph.to),
        graph.unit,
        graph
            .lines
            .iter()
            .map(|l| format!("{} {}", l.label, newest(l).unwrap_or_else(|| "none".into())))
            .collect::<Vec<_>>()
            .join(", ")
    );
    html! {
        figure.graph data-graph=(graph.title) {
            figcaption {
                strong { (graph.title) } " " span.muted { "(" (graph.unit) ")" }
                @for line in &graph.lines {
                    " " span.key { i class=(format!("sw {}", line.class)) {} (line.label) " "
                        strong data-newest=(line.label) { (newest(line).unwrap_or_else(|| "—".into())) } }
                }
            }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(label) {
                @for (y, text) in &plot.value_ticks {
                    line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(format!("{y:.1}")) y2=(format!("{y:.1}")) {}
                    text.tick x=(LEFT - 4.0) y=(format!("{:.1}", y + 3.5)) text-anchor="end" { (text) }
                }
                @for (x, text) in &plot.time_ticks {
                    text.tick x=(format!("{x:.1}")) y=(HEIGHT - 4.0) text-anchor="middle" { (text) }
                }
                @for (class, d) in &plot.paths {
                    @if !d.is_empty() { path class=(class) d=(d) {} }
                }
                @if !plot.has_data {
                    text.tick x=(WIDTH / 2.0) y=(HEIGHT / 2.0) text-anchor="middle" { "no datapoints in this window" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(points: Vec<(u64, f64)>) -> Graph {
        Graph {
            title: "Requests",
            unit: "req/s",
            from: 0,
            to: 100_000,
            step_ms: 10_000,
            lines: vec![Line { label: "requests", class: "l1", points }],
        }
    }

    #[test]
    fn the_scale_rounds_the_largest_value_up_to_one_two_or_five() {
        assert_eq!(nice_ceiling(0.0), 1.0, "an idle graph still has a scale");
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(1.2), 2.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(20.0), 20.0);
        assert_eq!(nice_ceiling(0.031), 0.05);
        assert_eq!(nice_ceiling(512.0), 1000.0);
    }

    #[test]
    fn values_map_from_the_bottom_of_the_plot_to_its_top_and_times_from_left_to_right() {
        let twenty_seconds =
            Graph { to: 20_000, ..graph(vec![(0, 0.0), (10_000, 5.0), (20_000, 10.0)]) };
        let plot = plot(&twenty_seconds);
        assert_eq!(plot.top_value, 10.0);
        let bottom = HEIGHT - BOTTOM;
        let right = WIDTH - RIGHT;
        assert_eq!(
            plot.paths,
            [("l1", format!("M{LEFT:.1} {bottom:.1}h0.1L319.0 79.0L{right:.1} {TOP:.1}"))]
        );
        assert_eq!(
            plot.value_ticks,
            [(bottom, "0".into()), (79.0, "5".into()), (TOP, "10".into())]
        );
    }

    #[test]
    fn a_missing_datapoint_breaks_the_line_instead_of_drawing_a_zero() {
        // 20 s and 30 s are missing: the line stops at 10 s and starts again at 40 s.
        let plot = plot(&graph(vec![(0, 1.0), (10_000, 1.0), (40_000, 1.0), (50_000, 1.0)]));
        let d = &plot.paths[0].1;
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert_eq!(d.matches('L').count(), 2, "{d}");
        assert!(!d.contains(&format!(" {:.1}", HEIGHT - BOTTOM)), "no point at zero: {d}");
    }

    #[test]
    fn a_graph_without_datapoints_says_so() {
        let plot = plot(&graph(Vec::new()));
        assert!(!plot.has_data);
        let markup = svg(&graph(Vec::new())).into_string();
        assert!(markup.contains("no datapoints in this window"), "{markup}");
        assert!(!markup.contains("<path"), "{markup}");
    }

    #[test]
    fn time_labels_fall_on_round_minutes_of_the_clock_as_many_as_fit() {
        let hour = Graph { from: 1_800_000_000_000, to: 1_800_003_600_000, ..graph(Vec::new()) };
        let labels: Vec<String> = plot(&hour).time_ticks.into_iter().map(|(_, t)| t).collect();
        // 1_800_000_000_000 ms is 08:00:00 UTC.
        assert_eq!(labels, ["08:00", "08:10", "08:20", "08:30", "08:40", "08:50", "09:00"]);
        let later = Graph { from: 1_800_000_000_000 + 61_000, ..hour };
        let labels: Vec<String> = plot(&later).time_ticks.into_iter().map(|(_, t)| t).collect();
        assert_eq!(labels.first().map(String::as_str), Some("08:10"), "none before the window");
        let five_minutes =
            Graph { from: 1_800_000_000_000, to: 1_800_000_300_000, ..graph(Vec::new()) };
        let labels: Vec<String> =
            plot(&five_minutes).time_ticks.into_iter().map(|(_, t)| t).collect();
        assert_eq!(labels, ["08:00", "08:01", "08:02", "08:03", "08:04", "08:05"]);
    }

    #[test]
    fn labels_keep_only_the_digits_a_glance_reads() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(1234.6), "1235");
        assert_eq!(number(12.0), "12");
        assert_eq!(number(12.34), "12.3");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(2.25), "2.25");
        assert_eq!(number(0.001), "1.0e-3");
    }
}
