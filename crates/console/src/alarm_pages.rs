//! The alarms pages: `/alarms` lists every alarm instance with its state and reason, as
//! CloudWatch's alarm list does; `/alarms/{name}` shows one alarm (each instance, for an alarm
//! on the green target group of several deployments): its definition, the datapoints that
//! decided its state against the threshold, and its state history. Both follow the alarms
//! every second.

use std::time::Duration;

use alarms::{MetricId, Period, ReasonData, Statistic, Treatment};
use control::ApiError;
use control::api::AlarmView;
use control::http::AppState;
use maud::{Markup, html};

use crate::decide;
use crate::graph::{self, Graph, Line};
use crate::layout::{self, Viewer};

/// The most state changes the page lists per alarm (the newest).
const HISTORY_SHOWN: usize = 50;

/// Every alarm instance.
pub fn read_all(state: &AppState) -> Result<Vec<AlarmView>, ApiError> {
    control::http::alarm_views(state)
}

/// The instances of alarm `name` (its name or `name@deployment`), each with a graph of its
/// metric's recent datapoints against its threshold.
pub fn read_one(state: &AppState, name: &str) -> Result<Vec<(AlarmView, Graph)>, ApiError> {
    let views: Vec<AlarmView> =
        read_all(state)?.into_iter().filter(|v| v.name == name || v.key == name).collect();
    if views.is_empty() {
        return Err(ApiError::not_found(format!(
            "no alarm `{name}`; /alarms lists them (declare alarms under `alarms:` in cutover.yaml)"
        )));
    }
    Ok(views
        .into_iter()
        .map(|view| {
            let graph = recent(state, &view);
            (view, graph)
        })
        .collect())
}

/// The alarm's metric over its last 60 periods (5 minutes to 3 hours), as it evaluates it.
fn recent(state: &AppState, view: &AlarmView) -> Graph {
    let period_secs = u32::try_from(view.period_secs).unwrap_or(u32::MAX);
    let period = Period::from_secs(period_secs).unwrap_or(Period::from_secs(60).expect("60 s"));
    let window = Duration::from_secs((view.period_secs * 60).clamp(300, 3 * 3600));
    let statistic = view.statistic.parse().unwrap_or(Statistic::Sum);
    let (now, mut series) = control::http::recent_datapoints(
        state,
        &[(metric_id(&view.metric), statistic)],
        period,
        window,
    );
    let points = series.pop().unwrap_or_default();
    let from = now.as_millis().saturating_sub(window.as_millis() as u64);
    graph_against_threshold(view, from, now.as_millis(), &points)
}

/// `points` and the alarm's threshold as the two lines of one graph over `[from, to]`.
pub fn graph_against_threshold(
    view: &AlarmView,
    from: u64,
    to: u64,
    points: &[alarms::Datapoint],
) -> Graph {
    let period_ms = view.period_secs.max(1) * 1000;
    let threshold = (0..)
        .map(|i| from + i * period_ms)
        .take_while(|&t| t <= to)
        .map(|t| (t, view.threshold))
        .collect();
    Graph {
        title: "Recent datapoints",
        unit: "the alarm's statistic",
        from,
        to,
        step_ms: period_ms,
        lines: vec![
            Line {
                label: "datapoint",
                class: "l1",
                points: points.iter().map(|d| (d.start.as_millis(), d.value)).collect(),
            },
            Line { label: "threshold", class: "l3", points: threshold },
        ],
    }
}

/// The metric an alarm view names (`RequestCount{target_group=web-blue}`).
pub fn metric_id(text: &str) -> MetricId {
    let (name, dimensions) = match text.split_once('{') {
        Some((name, rest)) => (name, rest.trim_end_matches('}')),
        None => (text, ""),
    };
    dimensions
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .fold(MetricId::new(name), |id, (key, value)| id.with(key, value))
}

/// `/alarms`.
pub fn list_page(alarms: &[AlarmView], viewer: &Viewer) -> Markup {
    let main = html! {
        h1 { "Alarms" }
        p.sub { "Every alarm of cutover.yaml, one row per instance (an alarm on " code { "green" }
            " has one per deployment that watches it, named " code { "alarm@deployment" } ")." }
        div #live data-part="/alarms?part=live" data-every="1000" { (table(alarms)) }
    };
    layout::page("Alarms", Some(viewer), main)
}

/// The alarms as a table: state first, as people scan for ALARM.
pub fn table(alarms: &[AlarmView]) -> Markup {
    html! {
        @if alarms.is_empty() {
            p.muted { "No alarm is declared." }
        } @else {
            table.grid.alarms {
                thead { tr { th { "Alarm" } th { "State" } th { "Since" } th { "Condition" } th { "Reason" } } }
                tbody {
                    @for a in alarms {
                        tr {
                            td { a href=(format!("/alarms/{}", a.key)) { (a.key) } }
                            td { span class=(format!("badge {}", state_class(&a.state))) data-state=(a.state) { (a.state) } }
                            td { @if a.state_since > 0 { (time(a.state_since)) } }
                            td { (condition(a)) }
                            td.msg { (a.reason) }
                        }
                    }
                }
            }
        }
    }
}

/// `/alarms/{name}`.
pub fn detail_page(name: &str, alarms: &[(AlarmView, Graph)], viewer: &Viewer) -> Markup {
    let main = html! {
        h1 { "Alarm " code { (name) } }
        div #live data-part=(format!("/alarms/{name}?part=live")) data-every="1000" { (detail(alarms)) }
    };
    layout::page(&format!("Alarm {name}"), Some(viewer), main)
}

/// Each instance of one alarm: state, reason, the datapoints that decided, the history.
pub fn detail(alarms: &[(AlarmView, Graph)]) -> Markup {
    html! {
        @for (a, recent) in alarms {
            section.alarm aria-label=(a.key) {
                h2 { code { (a.key) } " " span class=(format!("badge {}", state_class(&a.state))) data-state=(a.state) { (a.state) } }
                p { (condition(a)) }
                p.muted { "Metric " code { (a.metric) } " · " (a.statistic) " over " (a.period_secs) " s · missing data: " (a.treat_missing_data) }
                div.why.calm role="note" { (a.reason) }
                (graph::svg(recent))
                @match a.reason_data.clone().map(serde_json::from_value::<ReasonData>) {
                    Some(Ok(data)) => (datapoints(&data)),
                    _ => p.muted { "No evaluated window is recorded with this state (see its reason)." },
                }
                h3 { "State history" }
                @if a.history.is_empty() {
                    p.muted { "No state change yet." }
                } @else {
                    table.grid {
                        thead { tr { th { "At" } th { "Change" } th { "Reason" } } }
                        tbody {
                            @for t in a.history.iter().take(HISTORY_SHOWN) {
                                tr {
                                    td { (time(t.at)) }
                                    td { span class=(state_class(&t.from)) { (t.from) } " → " span class=(state_class(&t.to)) { (t.to) } }
                                    td.msg { (t.reason) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The datapoints that decided against the threshold, with how each counted.
fn datapoints(data: &ReasonData) -> Markup {
    html! {
        p { (data.breaching) " of the last " (data.window.len()) " datapoints breach ("
            (data.datapoints_to_alarm) " needed) · decided by " (format!("{:?}", data.decision)) }
        table.grid {
            thead { tr { th { "Period" } th.num { "Value" } th.num { "Samples" } th { "Counted as" } } }
            tbody {
                @for point in data.window.iter().rev() {
                    tr {
                        td { (time(point.start.as_millis())) }
                        td.num { @if let Some(v) = point.value { (graph::number(v)) } @else { span.muted { "missing" } } }
                        td.num { (point.sample_count) }
                        td { span class=(treatment_class(point.treated_as)) { (treatment(point.treated_as)) } }
                    }
                }
            }
        }
    }
}

/// `RequestCount Sum > 5 for 2 of 3 periods of 10 s`.
fn condition(a: &AlarmView) -> String {
    format!(
        "{} {} {} {} for {} of {} periods of {} s",
        a.metric.split('{').next().unwrap_or(&a.metric),
        a.statistic,
        operator(&a.comparison),
        graph::number(a.threshold),
        a.datapoints_to_alarm,
        a.evaluation_periods,
        a.period_secs
    )
}

/// CloudWatch's comparison operator as its sign.
fn operator(comparison: &str) -> &str {
    match comparison {
        "GreaterThanThreshold" => ">",
        "GreaterThanOrEqualToThreshold" => "≥",
        "LessThanThreshold" => "<",
        "LessThanOrEqualToThreshold" => "≤",
        other => other,
    }
}

fn treatment(t: Treatment) -> &'static str {
    match t {
        Treatment::Breaching => "breaching",
        Treatment::NotBreaching => "not breaching",
        Treatment::Missing => "missing (not counted)",
    }
}

fn treatment_class(t: Treatment) -> &'static str {
    match t {
        Treatment::Breaching => "bad",
        Treatment::NotBreaching => "ok",
        Treatment::Missing => "muted",
    }
}

pub fn state_class(state: &str) -> &'static str {
    match state {
        "ALARM" => "bad",
        "OK" => "ok",
        _ => "muted",
    }
}

fn time(ms: u64) -> Markup {
    html! { time datetime=(ms) title=(control::access::utc_text(ms)) { (decide::clock_time(ms)) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(comparison: &str) -> AlarmView {
        AlarmView {
            key: "errors@d-1".into(),
            name: "errors".into(),
            metric: "HTTPCode_Target_5XX_Count{target_group=web-green}".into(),
            statistic: "Sum".into(),
            period_secs: 10,
            evaluation_periods: 3,
            datapoints_to_alarm: 2,
            comparison: comparison.into(),
            threshold: 5.0,
            treat_missing_data: "notBreaching".into(),
            state: "ALARM".into(),
            reason: "2 of 3 breached".into(),
            state_since: 1,
            reason_data: None,
            history: Vec::new(),
        }
    }

    #[test]
    fn the_threshold_is_drawn_across_the_window_beside_the_datapoints() {
        let a = view("GreaterThanThreshold");
        let points =
            [alarms::Datapoint { start: model::Timestamp(20_000), value: 7.0, sample_count: 3 }];
        let graph = graph_against_threshold(&a, 0, 30_000, &points);
        assert_eq!(graph.lines[0].points, [(20_000, 7.0)]);
        assert_eq!(graph.lines[1].points, [(0, 5.0), (10_000, 5.0), (20_000, 5.0), (30_000, 5.0)]);
        assert_eq!(graph.step_ms, 10_000);
    }

    #[test]
    fn an_alarm_names_its_metric_as_the_store_keys_it() {
        let id = metric_id("RequestCount{service=web,target_group=web-blue}");
        assert_eq!(
            id,
            MetricId::new("RequestCount").with("service", "web").with("target_group", "web-blue")
        );
        assert_eq!(metric_id("AppErrors"), MetricId::new("AppErrors"));
    }

    #[test]
    fn the_condition_reads_as_cloudwatch_states_it() {
        assert_eq!(
            condition(&view("GreaterThanThreshold")),
            "HTTPCode_Target_5XX_Count Sum > 5 for 2 of 3 periods of 10 s"
        );
        assert!(condition(&view("LessThanOrEqualToThreshold")).contains(" ≤ 5 "));
    }

    #[test]
    fn an_alarm_never_evaluated_says_so_instead_of_drawing_an_empty_graph() {
        let a = view("GreaterThanThreshold");
        let graph = graph_against_threshold(&a, 0, 60_000, &[]);
        let markup = detail(&[(a, graph)]).into_string();
        assert!(markup.contains("No evaluated window"), "{markup}");
        assert!(markup.contains(r#"data-state="ALARM""#), "{markup}");
        assert!(markup.contains("No state change yet."), "{markup}");
    }
}
