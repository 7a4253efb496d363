//! A target group's metrics page (`/target-groups/{name}/metrics`): the load balancer's own
//! metrics of the group over the last hour, as CloudWatch's ALB graphs show them — requests,
//! target 4xx and 5xx, the load balancer's own 5xx, latency p50 and p99 — and the alarms that
//! watch it. The page asks for its `live` part again every second, so a graph follows traffic.

use std::time::Duration;

use alarms::{Datapoint, MetricId, Period, Statistic};
use control::ApiError;
use control::api::AlarmView;
use control::http::AppState;
use maud::{Markup, html};

use crate::graph::{self, Graph, Line};
use crate::layout::{self, Viewer};

/// The windows a page can show, `(name in the URL, window, one datapoint per)`: about 300
/// datapoints each, fine enough to see a canary step. The metric store keeps 3 hours.
pub const RANGES: [(&str, Duration, u32); 3] = [
    ("5m", Duration::from_secs(300), 1),
    ("1h", Duration::from_secs(3600), 10),
    ("3h", Duration::from_secs(3 * 3600), 30),
];

/// A window the graphs show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub name: &'static str,
    pub window: Duration,
    pub step_secs: u32,
}

impl Range {
    /// `?range=5m|1h|3h`; the last hour, as issue and CloudWatch default, for anything else.
    pub fn named(name: Option<&str>) -> Range {
        let (name, window, step_secs) =
            RANGES.into_iter().find(|(n, _, _)| Some(*n) == name).unwrap_or(RANGES[1]);
        Range { name, window, step_secs }
    }

    fn step_ms(self) -> u64 {
        u64::from(self.step_secs) * 1000
    }
}

/// Everything the page shows, read before rendering.
pub struct MetricsPage {
    pub target_group: String,
    pub range: Range,
    pub graphs: Vec<Graph>,
    /// The alarms whose metric is one of this target group's.
    pub alarms: Vec<AlarmView>,
}

/// What the graphs draw: `(line, metric, statistic, as a rate per second or as it is (× 1000
/// for seconds shown in ms))`.
const COUNTS: [(&str, &str); 4] = [
    ("requests", "RequestCount"),
    ("target 4xx", "HTTPCode_Target_4XX_Count"),
    ("target 5xx", "HTTPCode_Target_5XX_Count"),
    ("load balancer 5xx", "HTTPCode_ELB_5XX_Count"),
];
const PERCENTILES: [(&str, &str); 2] = [("p50", "p50"), ("p99", "p99")];

pub fn read(state: &AppState, name: &str, range: Range) -> Result<MetricsPage, ApiError> {
    if !control::http::target_group_names(state)?.iter().any(|n| n == name) {
        return Err(ApiError::not_found(format!(
            "no target group `{name}`; the overview lists each group's target groups"
        )));
    }
    let id = |metric: &str| MetricId::new(metric).with("target_group", name);
    let mut queries: Vec<(MetricId, Statistic)> =
        COUNTS.iter().map(|(_, metric)| (id(metric), Statistic::Sum)).collect();
    for (_, percentile) in PERCENTILES {
        let statistic = percentile.parse().expect("invariant: p50 and p99 are statistics");
        queries.push((id("TargetResponseTime"), statistic));
    }
    let period = Period::from_secs(range.step_secs).expect("invariant: RANGES' periods are valid");
    let (now, mut series) = control::http::recent_datapoints(state, &queries, period, range.window);
    let latencies = series.split_off(COUNTS.len());
    let alarms = control::http::alarm_views(state)?
        .into_iter()
        .filter(|a| watches(&a.metric, name))
        .collect();
    Ok(MetricsPage {
        target_group: name.to_string(),
        range,
        graphs: graphs(now.as_millis(), range, &series, &latencies),
        alarms,
    })
}

/// Whether an alarm on `metric` (`RequestCount{target_group=web-blue}`) watches `target_group`.
fn watches(metric: &str, target_group: &str) -> bool {
    metric.contains(&format!("target_group={target_group}}}"))
        || metric.contains(&format!("target_group={target_group},"))
}

/// The page's three graphs from the datapoints read at `now`: counts as rates per second,
/// latencies in milliseconds.
pub fn graphs(
    now: u64,
    range: Range,
    counts: &[Vec<Datapoint>],
    latencies: &[Vec<Datapoint>],
) -> Vec<Graph> {
    let step_ms = range.step_ms();
    let from = now.saturating_sub(range.window.as_millis() as u64);
    let rates =
        |i: usize| per_second(counts.get(i).map(Vec::as_slice).unwrap_or_default(), range, now);
    let millis = |i: usize| {
        latencies
            .get(i)
            .into_iter()
            .flatten()
            .filter(|d| d.sample_count > 0 && d.value.is_finite())
            .map(|d| (d.start.as_millis(), d.value * 1000.0))
            .collect()
    };
    let graph = |title, unit, lines| Graph { title, unit, from, to: now, step_ms, lines };
    vec![
        graph(
            "Requests",
            "per second",
            vec![Line { label: COUNTS[0].0, class: "l1", points: rates(0) }],
        ),
        graph(
            "Errors",
            "per second",
            vec![
                Line { label: COUNTS[1].0, class: "l2", points: rates(1) },
                Line { label: COUNTS[2].0, class: "l3", points: rates(2) },
                Line { label: COUNTS[3].0, class: "l4", points: rates(3) },
            ],
        ),
        graph(
            "Latency",
            "ms",
            vec![
                Line { label: PERCENTILES[0].0, class: "l1", points: millis(0) },
                Line { label: PERCENTILES[1].0, class: "l3", points: millis(1) },
            ],
        ),
    ]
}

/// A count per period as a rate per second. The newest period is still filling: it is divided
/// by the time it has run so far (at least a second), so a rise shows at once instead of looking
/// like a fall until the period ends.
pub fn per_second(points: &[Datapoint], range: Range, now: u64) -> Vec<(u64, f64)> {
    let step_ms = range.step_ms();
    points
        .iter()
        .map(|d| {
            let start = d.start.as_millis();
            let elapsed = now.saturating_sub(start).clamp(1000, step_ms);
            (start, d.value / (elapsed as f64 / 1000.0))
        })
        .collect()
}

/// The whole page.
pub fn whole(page: &MetricsPage, viewer: &Viewer) -> Markup {
    let name = &page.target_group;
    let main = html! {
        div.title {
            h1 { "Target group " a href=(format!("/target-groups/{name}")) { code { (name) } } " · metrics" }
            p.sub { "The load balancer's metrics of " code { (name) } ", one datapoint per "
                (page.range.step_secs) " s, following as requests arrive: the series "
                code { "GET /v1/metrics/query?target_group=" (name) } " answers and alarms evaluate." }
            nav.ranges aria-label="Window" {
                @for (range, _, _) in RANGES {
                    a href=(format!("?range={range}")) aria-current=[(range == page.range.name).then_some("page")] { "last " (range) }
                }
            }
        }
        div #live data-part=(format!("/target-groups/{name}/metrics?part=live&range={}", page.range.name)) data-every="1000" {
            (live(page))
        }
    };
    layout::page(&format!("Metrics of {name}"), Some(viewer), main)
}

/// The part that follows the traffic.
pub fn live(page: &MetricsPage) -> Markup {
    html! {
        div.graphs {
            @for graph in &page.graphs { (graph::svg(graph)) }
        }
        section aria-labelledby="alarms-h" {
            h2 #alarms-h { "Alarms on " code { (page.target_group) } }
            @if page.alarms.is_empty() {
                p.muted { "No alarm watches this target group." }
            } @else {
                (crate::alarm_pages::table(&page.alarms))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Timestamp;

    fn point(start: u64, value: f64) -> Datapoint {
        Datapoint { start: Timestamp(start), value, sample_count: 1 }
    }

    #[test]
    fn counts_become_rates_and_the_filling_period_is_divided_by_the_time_it_has_run() {
        let now = 1_000_025_000;
        let points = [point(1_000_010_000, 50.0), point(1_000_020_000, 25.0)];
        let hour = Range::named(Some("1h"));
        assert_eq!(per_second(&points, hour, now), [(1_000_010_000, 5.0), (1_000_020_000, 5.0)]);
        // 200 ms into a period: divided by a second, not by 0.2 s (a spike) nor 10 s (a dip).
        let filling = per_second(&[point(1_000_030_000, 3.0)], hour, 1_000_030_200);
        assert_eq!(filling, [(1_000_030_000, 3.0)]);
    }

    #[test]
    fn latencies_show_in_milliseconds_and_periods_without_an_answer_are_gaps() {
        let now = 2_000_000_000;
        let empty = Datapoint { start: Timestamp(now - 10_000), value: f64::NAN, sample_count: 0 };
        let latencies = [vec![point(now - 20_000, 0.025), empty], vec![]];
        let graphs = graphs(now, Range::named(None), &[], &latencies);
        let titles: Vec<&str> = graphs.iter().map(|g| g.title).collect();
        assert_eq!(titles, ["Requests", "Errors", "Latency"]);
        assert_eq!(graphs[2].lines[0].points, [(now - 20_000, 25.0)]);
        assert!(graphs[2].lines[1].points.is_empty());
        assert_eq!((graphs[0].from, graphs[0].to), (now - 3_600_000, now));
    }

    #[test]
    fn the_window_is_the_last_hour_unless_another_known_one_is_asked_for() {
        assert_eq!(Range::named(None).name, "1h");
        assert_eq!(Range::named(Some("2d")).name, "1h");
        let five = Range::named(Some("5m"));
        assert_eq!((five.window, five.step_secs), (Duration::from_secs(300), 1));
        for (_, window, step) in RANGES {
            assert!(window.as_secs() / u64::from(step) <= 360, "at most 360 datapoints a line");
        }
    }

    #[test]
    fn an_alarm_watches_a_target_group_by_its_exact_name() {
        assert!(watches("RequestCount{target_group=web-blue}", "web-blue"));
        assert!(watches("X{service=a,target_group=web-blue}", "web-blue"));
        assert!(watches("X{target_group=web-blue,z=1}", "web-blue"));
        assert!(!watches("RequestCount{target_group=web-blue-2}", "web-blue"));
        assert!(!watches("RequestCount{target_group=web-green}", "web-blue"));
    }
}
