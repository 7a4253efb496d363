//! The alarms pages: `/alarms` lists every alarm instance with its state and reason, as
//! CloudWatch's alarm list does; `/alarms/{name}` shows one alarm (each instance, for an alarm
//! on the green target group of several deployments): its definition, the datapoints that
//! decided its state against the threshold, and its state history. Both follow the alarms
//! every second.

use alarms::{ReasonData, Treatment};
use control::ApiError;
use control::api::AlarmView;
use control::http::AppState;
use maud::{Markup, html};

use crate::decide;
use crate::graph::{self, Graph, Line};
use crate::layout::{self, Viewer};

/// The most state changes the page lists per alarm (the newest).
const HISTORY_SHOWN: usize = 50;

/// Every alarm instance, or those of alarm `name` (its name or `name@deployment`).
pub fn read(state: &AppState, name: Option<&str>) -> Result<Vec<AlarmView>, ApiError> {
    let views = control::http::alarm_views(state)?;
    let Some(name) = name else { return Ok(views) };
    let views: Vec<AlarmView> =
        views.into_iter().filter(|v| v.name == name || v.key == name).collect();
    if views.is_empty() {
        return Err(ApiError::not_found(format!(
            "no alarm `{name}`; /alarms lists them (declare alarms under `alarms:` in cutover.yaml)"
        )));
    }
    Ok(views)
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
pub fn detail_page(name: &str, alarms: &[AlarmView], viewer: &Viewer) -> Markup {
    let main = html! {
        h1 { "Alarm " code { (name) } }
        div #live data-part=(format!("/alarms/{name}?part=live")) data-every="1000" { (detail(alarms)) }
    };
    layout::page(&format!("Alarm {name}"), Some(viewer), main)
}

/// Each instance of one alarm: state, reason, the datapoints that decided, the history.
pub fn detail(alarms: &[AlarmView]) -> Markup {
    html! {
        @for a in alarms {
            section.alarm aria-label=(a.key) {
                h2 { code { (a.key) } " " span class=(format!("badge {}", state_class(&a.state))) data-state=(a.state) { (a.state) } }
                p { (condition(a)) }
                p.muted { "Metric " code { (a.metric) } " · " (a.statistic) " over " (a.period_secs) " s · missing data: " (a.treat_missing_data) }
                div.why.calm role="note" { (a.reason) }
                @match a.reason_data.clone().map(serde_json::from_value::<ReasonData>) {
                    Some(Ok(data)) => (datapoints(&data)),
                    _ => p.muted { "Not evaluated yet: no datapoints." },
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

/// The datapoints that decided against the threshold: a graph of the evaluation range with the
/// threshold drawn beside them, and the window's datapoints with how each counted.
fn datapoints(data: &ReasonData) -> Markup {
    let period_ms = data.period.millis();
    let graph = Graph {
        title: "Datapoints",
        unit: "value",
        from: data.range_start.as_millis(),
        to: data.range_end.as_millis(),
        step_ms: period_ms,
        lines: vec![
            Line {
                label: "datapoint",
                class: "l1",
                points: data
                    .recent_datapoints
                    .iter()
                    .map(|d| (d.start.as_millis(), d.value))
                    .collect(),
            },
            Line { label: "threshold", class: "l3", points: threshold_line(data) },
        ],
    };
    html! {
        p { (data.breaching) " of the last " (data.window.len()) " datapoints breach ("
            (data.datapoints_to_alarm) " needed) · decided by " (format!("{:?}", data.decision)) }
        (graph::svg(&graph))
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

/// The threshold as a line across the evaluation range, one point per period.
fn threshold_line(data: &ReasonData) -> Vec<(u64, f64)> {
    let period_ms = data.period.millis().max(1);
    let (from, to) = (data.range_start.as_millis(), data.range_end.as_millis());
    (0..)
        .map(|i| from + i * period_ms)
        .take_while(|&t| t <= to)
        .map(|t| (t, data.threshold))
        .collect()
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
    fn the_condition_reads_as_cloudwatch_states_it() {
        assert_eq!(
            condition(&view("GreaterThanThreshold")),
            "HTTPCode_Target_5XX_Count Sum > 5 for 2 of 3 periods of 10 s"
        );
        assert!(condition(&view("LessThanOrEqualToThreshold")).contains(" ≤ 5 "));
    }

    #[test]
    fn an_alarm_never_evaluated_says_so_instead_of_drawing_an_empty_graph() {
        let markup = detail(&[view("GreaterThanThreshold")]).into_string();
        assert!(markup.contains("Not evaluated yet"), "{markup}");
        assert!(markup.contains(r#"data-state="ALARM""#), "{markup}");
        assert!(markup.contains("No state change yet."), "{markup}");
    }
}
