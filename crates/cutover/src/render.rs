//! How the CLI shows things: aligned tables for people, JSON (`--output json`) for programs, and
//! the live view of `deployments watch` / `deploy --wait`.

// The renderers are passed to `print` as `Fn(&T)` for the very type the API returned (often a
// `Vec`), so they take `&Vec<…>` rather than a slice.
#![allow(clippy::ptr_arg)]

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use control::api::*;
use serde::Serialize;

use crate::client::Client;

pub fn print<T: Serialize>(
    json: bool,
    value: &T,
    text: impl Fn(&T) -> String,
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        let out = text(value);
        print!("{out}");
        if !out.ends_with('\n') {
            println!();
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect(), &mut out);
    for row in rows {
        line(row, &mut out);
    }
    out
}

fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn time(ms: u64) -> String {
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}", ms % 1000)
}

pub fn status(s: &StatusView) -> String {
    let mut out = format!(
        "cutover {}\napi: {}\ndata dir: {}\nload balancer admin: {} (routing table v{})\nruntimes: {}\n",
        s.version,
        s.api,
        s.data_dir,
        s.lb_admin,
        s.routes_version,
        s.runtimes.join(", ")
    );
    for lb in &s.node_load_balancers {
        let version = lb.acknowledged_version.map_or("-".to_string(), |v| format!("v{v}"));
        let state = match (&lb.error, lb.answering) {
            (_, true) => "answering".to_string(),
            (Some(error), false) => format!("not answering: {error}"),
            (None, false) => "not answering yet".to_string(),
        };
        let _ = writeln!(out, "node load balancer {} at {}: {version}, {state}", lb.node, lb.admin);
    }
    for warning in &s.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
}

pub fn apply(response: &ApplyResponse) -> String {
    // Terraform's markers: what is created, changed and destroyed stands out at a glance.
    let marker = |action: &str| match action {
        "create" => "+",
        "update" | "update-pending" => "~",
        "delete" => "-",
        _ => "",
    };
    let mut out = table(
        &["", "KIND", "NAME", "ACTION", "DETAIL"],
        response
            .plan
            .iter()
            .map(|p| {
                vec![
                    marker(&p.action).to_string(),
                    p.kind.clone(),
                    p.name.clone(),
                    p.action.clone(),
                    p.detail.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
    for note in &response.notes {
        // Notes from file validation already carry their `note:` prefix.
        if note.starts_with("note:") {
            let _ = writeln!(out, "{note}");
        } else {
            let _ = writeln!(out, "note: {note}");
        }
    }
    let count = |actions: &[&str]| {
        response.plan.iter().filter(|p| actions.contains(&p.action.as_str())).count()
    };
    let (create, update, delete) =
        (count(&["create"]), count(&["update", "update-pending"]), count(&["delete"]));
    let _ = writeln!(out, "plan: {create} to create, {update} to update, {delete} to delete");
    let changes = create + update + delete;
    let _ = writeln!(
        out,
        "{}",
        match (response.applied, changes) {
            (_, 0) => "no changes".to_string(),
            (true, n) => format!("applied {n} change(s)"),
            (false, n) => format!("{n} change(s) planned; run without --dry-run to apply"),
        }
    );
    out
}

pub fn services(list: &Vec<ServiceView>) -> String {
    table(
        &["NAME", "RUNTIME", "DESIRED", "RUNNING", "TASK DEFINITION", "DEPLOYMENT GROUP"],
        list.iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.runtime.clone(),
                    s.desired_count.to_string(),
                    s.running_count.to_string(),
                    or_dash(s.task_definition.as_ref()),
                    or_dash(s.deployment_group.as_ref()),
                ]
            })
            .collect(),
    )
}

pub fn service(s: &ServiceView) -> String {
    let mut out = services(&vec![s.clone()]);
    out.push('\n');
    out.push_str(&table(
        &["TASK SET", "STATUS", "TASK DEFINITION", "TARGET GROUP", "DESIRED", "RUNNING", "HEALTHY"],
        s.task_sets
            .iter()
            .map(|t| {
                vec![
                    t.id.clone(),
                    t.status.clone(),
                    t.task_definition.clone(),
                    or_dash(t.target_group.as_ref()),
                    t.desired_count.to_string(),
                    t.running_count.to_string(),
                    t.healthy_count.to_string(),
                ]
            })
            .collect(),
    ));
    out
}

pub fn tasks(list: &Vec<TaskView>) -> String {
    table(
        &[
            "TASK",
            "SERVICE",
            "TASK DEFINITION",
            "STATUS",
            "HEALTH",
            "ADDRESS",
            "TARGET GROUP",
            "STOPPED",
            "STOPPED REASON",
        ],
        list.iter()
            .map(|t| {
                vec![
                    t.id.clone(),
                    t.service.clone(),
                    t.task_definition.clone(),
                    t.last_status.clone(),
                    t.health.clone(),
                    or_dash(t.addr.as_ref()),
                    or_dash(t.target_group.as_ref()),
                    t.stopped_at.map_or("-".into(), time),
                    or_dash(t.stopped_reason.as_ref()),
                ]
            })
            .collect(),
    )
}

pub fn certificates(list: &Vec<control::certificates::CertificateStatus>) -> String {
    let date = |at: model::Timestamp| {
        jiff::Timestamp::from_millisecond(at.as_millis() as i64)
            .map_or_else(|_| "-".to_string(), |t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
    };
    table(
        &["NAME", "STATE", "NOT AFTER", "NEXT ATTEMPT", "FAILURES", "LISTENERS", "LAST ERROR"],
        list.iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.state.clone(),
                    c.not_after.map_or_else(|| "-".to_string(), date),
                    date(c.next_attempt),
                    c.failures.to_string(),
                    c.listeners.join(","),
                    or_dash(c.last_error.as_ref()),
                ]
            })
            .collect(),
    )
}

pub fn target_groups(list: &Vec<TargetGroupView>) -> String {
    table(
        &["NAME", "HEALTHY", "TARGETS", "HEALTH CHECK", "DEREGISTRATION DELAY"],
        list.iter()
            .map(|t| {
                let healthy =
                    t.targets.iter().filter(|x| x.state == routes::TargetState::Healthy).count();
                vec![
                    t.name.clone(),
                    healthy.to_string(),
                    t.targets.len().to_string(),
                    format!("GET {} every {}ms", t.health_check.path, t.health_check.interval_ms),
                    format!("{}ms", t.deregistration_delay_ms),
                ]
            })
            .collect(),
    )
}

pub fn target_group(t: &TargetGroupView) -> String {
    let mut out = target_groups(&vec![t.clone()]);
    out.push('\n');
    out.push_str(&table(
        &["TARGET", "STATE", "REASON", "IN FLIGHT", "DESCRIPTION"],
        t.targets
            .iter()
            .map(|x| {
                vec![
                    x.addr.to_string(),
                    format!("{:?}", x.state).to_lowercase(),
                    or_dash(x.reason.as_ref()),
                    x.in_flight.to_string(),
                    or_dash(x.description.as_ref()),
                ]
            })
            .collect(),
    ));
    out
}

pub fn task_definitions(list: &Vec<TaskDefinitionView>) -> String {
    table(
        &["TASK DEFINITION", "STATUS", "ARN"],
        list.iter()
            .map(|t| vec![format!("{}:{}", t.family, t.revision), t.status.clone(), t.arn.clone()])
            .collect(),
    )
}

pub fn deployment_configs(list: &Vec<DeploymentConfigView>) -> String {
    table(
        &["NAME", "ROUTING", "KIND"],
        list.iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.routing.clone(),
                    if c.predefined { "predefined" } else { "custom" }.to_string(),
                ]
            })
            .collect(),
    )
}

pub fn preview(p: &PreviewView) -> String {
    let mut out = format!("{} ({})\n", p.name, p.routing);
    out.push_str(&table(
        &["AT", "STEP"],
        p.steps.iter().map(|s| vec![format!("+{}", fmt_ms(s.at_ms)), s.what.clone()]).collect(),
    ));
    let _ = writeln!(out, "total: {} when hooks and health checks are instant", fmt_ms(p.total_ms));
    out
}

fn fmt_ms(ms: u64) -> String {
    let secs = ms / 1000;
    match (secs / 60, secs % 60, ms % 1000) {
        (0, s, 0) => format!("{s}s"),
        (0, s, r) => format!("{s}.{r:03}s"),
        (m, 0, 0) => format!("{m}m"),
        (m, s, _) => format!("{m}m{s}s"),
    }
}

pub fn deployments(list: &Vec<DeploymentView>) -> String {
    table(
        &["DEPLOYMENT", "GROUP", "STATUS", "TASK DEFINITION", "CONFIG", "CREATED", "ERROR"],
        list.iter()
            .map(|d| {
                vec![
                    d.id.clone(),
                    format!("{}/{}", d.application, d.deployment_group),
                    d.status.clone(),
                    d.task_definition.clone(),
                    d.deployment_config.clone(),
                    time(d.created_at),
                    or_dash(d.error_code.as_ref()),
                ]
            })
            .collect(),
    )
}

fn traffic_line(d: &DeploymentView) -> String {
    let green = d.traffic.production_green_percent;
    format!(
        "production: blue {}% / green {}%   test: {}",
        100 - u32::from(green),
        green,
        if d.traffic.test_to_green { "green" } else { "blue" }
    )
}

fn set_line(label: &str, set: &Option<TaskSetView>) -> String {
    match set {
        Some(s) => format!(
            "{label}: {} {} in {} — {}/{} running, {} healthy",
            s.id,
            s.task_definition,
            s.target_group.as_deref().unwrap_or("-"),
            s.running_count,
            s.desired_count,
            s.healthy_count
        ),
        None => format!("{label}: -"),
    }
}

pub fn deployment(d: &DeploymentView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "deployment {}  {}/{}  {}",
        d.id, d.application, d.deployment_group, d.status
    );
    let _ = writeln!(
        out,
        "task definition: {}   config: {} ({})",
        d.task_definition, d.deployment_config, d.routing
    );
    let _ = writeln!(out, "{}", traffic_line(d));
    let _ = writeln!(out, "{}", set_line("blue ", &d.blue));
    let _ = writeln!(out, "{}", set_line("green", &d.green));
    if let Some(code) = &d.error_code {
        let _ = writeln!(out, "error: {code}: {}", d.error_message.as_deref().unwrap_or(""));
    }
    if d.rolled_back {
        let _ = writeln!(out, "rolled back: production and test traffic are on blue");
    }
    if !d.judges.is_empty() {
        out.push('\n');
        out.push_str(&judges(&d.judges));
    }
    if let Some(mirrored) = &d.mirrored {
        out.push('\n');
        out.push_str(&shadow_traffic(mirrored));
    }
    out.push('\n');
    out.push_str(&table(
        &["LIFECYCLE EVENT", "STATUS", "START", "END", "MESSAGE"],
        d.lifecycle_events
            .iter()
            .map(|e| {
                vec![
                    e.event.clone(),
                    e.status.clone(),
                    e.start_time.map_or("-".into(), time),
                    e.end_time.map_or("-".into(), time),
                    or_dash(e.message.as_ref()),
                ]
            })
            .collect(),
    ));
    out
}

/// What each canary judge saw in its newest judged period: green's and blue's numbers side by
/// side, the verdict and the test's result.
pub fn judges(list: &[JudgeView]) -> String {
    let mut rows = Vec::new();
    for j in list {
        let period = format!("{} +{}s", clock(j.period_start), j.period_secs);
        let criteria = &j.judgement.criteria;
        let judged = match criteria.source {
            judge::JudgedSource::Served => criteria.metric.to_string(),
            source => format!("{}, {source}", criteria.metric),
        };
        let mut lines = j.side_by_side();
        lines.push(("retried on blue", j.retries.retries.to_string(), "-".to_string()));
        lines.push(("budget exhausted", j.retries.budget_exhausted.to_string(), "-".to_string()));
        if let Some(m) = &j.mirrored {
            lines.push(("copies sent", m.copies.to_string(), "-".to_string()));
            lines.push(("class mismatches", m.mismatches.to_string(), "-".to_string()));
            lines.push(("copies dropped", m.dropped.to_string(), "-".to_string()));
        }
        for (i, (what, green, blue)) in lines.into_iter().enumerate() {
            let first = |text: String| if i == 0 { text } else { String::new() };
            rows.push(vec![
                first(format!("{} ({judged})", j.alarm)),
                first(period.clone()),
                what.to_string(),
                green,
                blue,
                first(j.verdict().to_string()),
                first(j.test_result()),
            ]);
        }
    }
    table(&["CANARY JUDGE", "PERIOD", "", "GREEN", "BLUE", "VERDICT", "TEST"], rows)
}

/// A shadow phase's copies to green, green's answers next to what blue served its clients in
/// the same seconds.
pub fn shadow_traffic(m: &MirroredView) -> String {
    let rows = m
        .side_by_side()
        .into_iter()
        .map(|(what, green, blue)| vec![what.to_string(), green, blue])
        .collect();
    table(&["SHADOW TRAFFIC", "GREEN (COPIES)", "BLUE (CLIENTS)"], rows)
}

/// How long `watch` keeps asking a control plane that went away (a restart) before giving up.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// Follows a deployment until it ends; exit 0 only if it succeeded. It reads the deployment's
/// event stream, as the console's deployment page does, so a change prints as soon as the engine
/// writes it; a dropped stream (`cutover up` restarted) is followed again from the last event
/// printed, so no line is printed twice.
pub fn watch(client: &Client, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let mut printer = WatchPrinter { json, ..WatchPrinter::default() };
    let path = format!("/v1/deployments/{id}/stream");
    let mut lost_since: Option<std::time::Instant> = None;
    loop {
        let resume = (printer.after > 0).then_some(printer.after);
        let response = match client.get_events(&path, resume) {
            Ok(response) => response,
            Err(err) if err.is_connection_lost() => {
                let since = *lost_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > RECONNECT_FOR {
                    return Err(err.into());
                }
                // Not a wait for a condition: the pause between two attempts to reconnect.
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        lost_since = None;
        if let Some(exit) = printer.follow(response)? {
            return Ok(exit);
        }
        eprintln!("the stream of {id} ended (was cutover up restarted?); following it again");
    }
}

/// What `watch` has printed, so a reconnect prints nothing twice.
#[derive(Default)]
struct WatchPrinter {
    json: bool,
    /// The last event printed (its sequence number).
    after: i64,
    last_line: String,
    /// Each judged period printed, `(alarm, period start)`.
    judged: std::collections::BTreeSet<(String, u64)>,
    /// A shadow phase is under way: its figures are printed once it ends.
    shadow_phase: bool,
}

impl WatchPrinter {
    /// Prints what `stream` says until the deployment ends (its exit code) or the stream does.
    fn follow(&mut self, stream: impl std::io::Read) -> anyhow::Result<Option<ExitCode>> {
        use std::io::BufRead as _;
        let mut parser = crate::sse::SseParser::default();
        for line in std::io::BufReader::new(stream).lines() {
            // A read error is the connection dropping: the caller reconnects.
            let Ok(line) = line else { break };
            let Some(event) = parser.line(&line) else { continue };
            match event.kind.as_str() {
                "event" => self.event(&serde_json::from_str(&event.data)?)?,
                "deployment" => {
                    if let Some(exit) = self.deployment(&serde_json::from_str(&event.data)?)? {
                        return Ok(Some(exit));
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }

    fn event(&mut self, event: &EventView) -> anyhow::Result<()> {
        if event.seq <= self.after {
            return Ok(());
        }
        self.after = event.seq;
        if self.json {
            println!("{}", serde_json::to_string(event)?);
        } else {
            println!("{}  {}", time(event.at), event.message);
        }
        Ok(())
    }

    /// Prints what changed in the deployment; its exit code once it has ended.
    fn deployment(&mut self, view: &DeploymentView) -> anyhow::Result<Option<ExitCode>> {
        if !self.json {
            for judge in &view.judges {
                // Each judged period once, as it is judged.
                if self.judged.insert((judge.alarm.clone(), judge.period_start)) {
                    let shadow = judge
                        .mirrored
                        .as_ref()
                        .map_or(String::new(), |m| format!("; shadow traffic: {}", m.text()));
                    println!(
                        "{}  canary judge {}: {}; {}{shadow}",
                        time(now_ms()),
                        judge.alarm,
                        judge.reason,
                        judge.retries_text()
                    );
                }
            }
            if let Some(line) = self.shadow_phase_ended(view) {
                println!("{}  {line}", time(now_ms()));
            }
        }
        // A line is printed when what it says changes, not when its countdown ticks.
        let line = watch_line(view, None);
        if line != self.last_line && !self.json && view.completed_at.is_none() {
            println!("{}", watch_line(view, Some(now_ms())));
            self.last_line = line;
        }
        if view.completed_at.is_none() {
            return Ok(None);
        }
        if self.json {
            println!("{}", serde_json::to_string(view)?);
        } else {
            println!("{}", outcome_line(view));
        }
        Ok(Some(if view.status == "Succeeded" { ExitCode::SUCCESS } else { ExitCode::from(1) }))
    }
}

impl WatchPrinter {
    /// What the shadow phase's copies got from green, once the phase has ended (the shift
    /// began, or the deployment ended).
    fn shadow_phase_ended(&mut self, view: &DeploymentView) -> Option<String> {
        let under_way = view.traffic.mirror_percent > 0 && view.completed_at.is_none();
        let ended = std::mem::replace(&mut self.shadow_phase, under_way) && !under_way;
        let mirrored = view.mirrored.as_ref().filter(|_| ended)?;
        Some(format!("shadow phase ended: {}", mirrored.text()))
    }
}

// The CLI shows how long ago the control plane's timestamps were, by this machine's clock; it
// has no store of its own.
#[allow(clippy::disallowed_methods)]
fn now_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since_epoch.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where a running deployment is, in words for someone who has never read cutover's code: what
/// it is doing, where production and test traffic go, what comes next and when, and what to run
/// when it waits for a person. With `now`, a due time also says how far away it is.
pub fn watch_line(d: &DeploymentView, now: Option<u64>) -> String {
    let (blue, green) = (&d.traffic.blue_target_group, &d.traffic.green_target_group);
    let green_percent = d.traffic.production_green_percent.min(100);
    let due = |at: u64| match now {
        Some(now) => format!("{} (in {})", clock(at), fmt_ms(at.saturating_sub(now) / 1000 * 1000)),
        None => clock(at),
    };
    let tasks = match &d.green {
        Some(g) => format!("green tasks {}/{} healthy", g.healthy_count, g.desired_count),
        None => "green tasks not started yet".to_string(),
    };
    match d.status.as_str() {
        "Ready" => {
            let wait = match d.next_step_at {
                Some(at) => format!("; it waits until {}, then stops the deployment", due(at)),
                None => String::new(),
            };
            format!(
                "Ready: green ({green}) serves the test listener, production stays on blue \
                 ({blue}); run `cutover deployments continue {}` to move production traffic{wait}",
                d.id
            )
        }
        "Baking" => {
            let until = match d.next_step_at {
                Some(at) => format!(" until {}", due(at)),
                None => String::new(),
            };
            format!(
                "Baking: green ({green}) serves {green_percent}% of production; blue ({blue}) \
                 stays running for an instant rollback{until}; `cutover deployments continue {}` \
                 ends the wait now",
                d.id
            )
        }
        _ => {
            let split = format!(
                "{green_percent}% on green ({green}), {}% on blue ({blue})",
                100 - green_percent
            );
            let test = if d.traffic.test_to_green { "green" } else { "blue" };
            match (d.current_event.as_deref(), d.next_step_at) {
                (Some("AllowTraffic"), next) if d.traffic.mirror_percent > 0 => {
                    let next = next.map_or(String::new(), |at| format!("; shift at {}", due(at)));
                    format!(
                        "Shadow traffic: a copy of {}% of production's requests goes to green \
                         ({green}), whose answers are measured and discarded; production {split}; \
                         test listener on {test}; {tasks}{next}",
                        d.traffic.mirror_percent
                    )
                }
                (Some("AllowTraffic"), next) => {
                    let next =
                        next.map_or(String::new(), |at| format!("; next step at {}", due(at)));
                    format!(
                        "Moving production traffic: {split}; test listener on {test}; {tasks}{next}"
                    )
                }
                (event, _) => {
                    let doing = match event {
                        Some("Install") => "Installing green".to_string(),
                        Some(event) => format!("{event} in progress"),
                        None => d.status.clone(),
                    };
                    format!("{doing}: production {split}; test listener on {test}; {tasks}")
                }
            }
        }
    }
}

/// `HH:MM:SS` (UTC), for times a person waits for.
fn clock(ms: u64) -> String {
    time(ms)[..8].to_string()
}

pub fn outcome_line(d: &DeploymentView) -> String {
    match d.status.as_str() {
        "Succeeded" => format!(
            "deployment {} succeeded: {} now serves 100% of production from {}",
            d.id, d.task_definition, d.traffic.green_target_group
        ),
        status => format!(
            "deployment {} {}: {}{}",
            d.id,
            status.to_lowercase(),
            d.error_message.as_deref().unwrap_or("no reason recorded"),
            if d.rolled_back { "; rolled back: all traffic is on blue" } else { "" }
        ),
    }
}

pub fn alarms(list: &Vec<AlarmView>) -> String {
    table(
        &["ALARM", "STATE", "METRIC", "CONDITION", "SINCE"],
        list.iter()
            .map(|a| {
                vec![
                    a.key.clone(),
                    a.state.clone(),
                    a.metric.clone(),
                    condition(a),
                    if a.state_since == 0 { "-".into() } else { time(a.state_since) },
                ]
            })
            .collect(),
    )
}

fn condition(a: &AlarmView) -> String {
    format!(
        "{} {} {} for {} of {} × {}s (missing data: {})",
        a.statistic,
        a.comparison,
        a.threshold,
        a.datapoints_to_alarm,
        a.evaluation_periods,
        a.period_secs,
        a.treat_missing_data
    )
}

pub fn alarm_details(list: &Vec<AlarmView>) -> String {
    let mut out = String::new();
    for a in list {
        let _ = writeln!(
            out,
            "{}  {}\n  {} {}\n  reason: {}",
            a.key,
            a.state,
            a.metric,
            condition(a),
            a.reason
        );
    }
    out
}

pub fn alarm_history(list: &Vec<AlarmView>) -> String {
    table(
        &["ALARM", "AT", "FROM", "TO", "REASON"],
        list.iter()
            .flat_map(|a| {
                a.history.iter().map(|t| {
                    vec![a.key.clone(), time(t.at), t.from.clone(), t.to.clone(), t.reason.clone()]
                })
            })
            .collect(),
    )
}

pub fn metric(m: &MetricQueryView) -> String {
    let mut out = format!("{} ({} per {}s)\n", m.metric, m.statistic, m.period_secs);
    out.push_str(&table(
        &["PERIOD START", "VALUE", "SAMPLES"],
        m.datapoints
            .iter()
            .map(|d| vec![time(d.start), format!("{}", d.value), d.sample_count.to_string()])
            .collect(),
    ));
    out
}

pub fn repositories(list: &Vec<pipelines::api::Repository>) -> String {
    table(
        &["REPOSITORY", "CLONE URL"],
        list.iter().map(|r| vec![r.name.clone(), r.clone_url.clone()]).collect(),
    )
}

pub fn pipelines(list: &Vec<pipelines::api::PipelineSummary>) -> String {
    table(
        &["PIPELINE", "SOURCE", "BRANCH", "MODE", "STAGES", "LATEST"],
        list.iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.source.clone(),
                    p.branch.clone(),
                    p.execution_mode.clone(),
                    p.stages.join(" → "),
                    p.latest_execution
                        .as_ref()
                        .map_or("-".into(), |e| format!("{} {}", e.id, e.status)),
                ]
            })
            .collect(),
    )
}

/// What `approvals approve|reject` prints once the decision is taken.
pub fn approval_decided(approved: bool, execution: &str) -> String {
    if approved {
        format!("approved {execution}: it moves on to its next action")
    } else {
        format!("rejected {execution}: its approval stage fails and nothing after it runs")
    }
}

/// Who started an execution: the pusher of its commit, or `started manually [by USER]`.
fn started_by(pushed_by: &str) -> String {
    if pushed_by.starts_with("started manually") {
        pushed_by.to_string()
    } else {
        format!("pushed by {pushed_by}")
    }
}

pub fn executions(list: &Vec<pipelines::api::ExecutionSummary>) -> String {
    table(
        &["EXECUTION", "STATUS", "COMMIT", "STARTED BY", "STARTED", "MESSAGE"],
        list.iter()
            .map(|e| {
                vec![
                    e.id.clone(),
                    e.status.clone(),
                    e.commit.chars().take(10).collect(),
                    started_by(&e.pushed_by),
                    time(e.started_at),
                    e.status_message.clone().unwrap_or_else(|| e.message.clone()),
                ]
            })
            .collect(),
    )
}

pub fn execution(e: &pipelines::api::Execution) -> String {
    let s = &e.summary;
    let mut out = format!(
        "{} {}  commit {} on {}, {}\n",
        s.id,
        s.status,
        s.commit,
        s.branch,
        started_by(&s.pushed_by)
    );
    let rows = e
        .stages
        .iter()
        .flat_map(|stage| {
            stage.actions.iter().map(move |a| {
                vec![
                    stage.name.clone(),
                    a.name.clone(),
                    a.status.clone().unwrap_or_else(|| "-".into()),
                    a.duration_ms.map_or("-".into(), fmt_ms),
                    a.external_ref.clone().unwrap_or_else(|| "-".into()),
                    a.message.clone().unwrap_or_default(),
                ]
            })
        })
        .collect();
    out.push_str(&table(&["STAGE", "ACTION", "STATUS", "DURATION", "REF", "MESSAGE"], rows));
    out
}

pub fn build(b: &pipelines::api::Build) -> String {
    let mut out = format!(
        "build {} ({} #{}) {}  commit {}\n",
        b.id, b.pipeline, b.build_number, b.status, b.commit
    );
    out.push_str(&table(
        &["PHASE", "STATUS", "DURATION", "CONTEXT"],
        b.phases
            .iter()
            .map(|p| {
                vec![
                    p.phase.clone(),
                    p.status.clone(),
                    fmt_ms(p.duration_ms),
                    p.contexts.join("; "),
                ]
            })
            .collect(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    const NOON: u64 = 12 * 3600 * 1000;

    fn deployment(status: &str, event: Option<&str>, green_percent: u8) -> DeploymentView {
        let set = |id: &str, healthy| TaskSetView {
            id: id.into(),
            status: "ACTIVE".into(),
            task_definition: "web:2".into(),
            target_group: Some("web-green".into()),
            deployment_id: Some("d-1a2b".into()),
            desired_count: 2,
            running_count: 2,
            healthy_count: healthy,
        };
        DeploymentView {
            id: "d-1a2b".into(),
            application: "web".into(),
            deployment_group: "web-prod".into(),
            status: status.into(),
            deployment_config: "CodeDeployDefault.ECSCanary10Percent5Minutes".into(),
            routing: "TimeBasedCanary".into(),
            task_definition: "web:2".into(),
            description: None,
            created_at: NOON,
            updated_at: NOON,
            completed_at: None,
            current_event: event.map(str::to_string),
            lifecycle_events: Vec::new(),
            traffic: TrafficView {
                blue_target_group: "web-blue".into(),
                green_target_group: "web-green".into(),
                production_green_percent: green_percent,
                test_to_green: event != Some("Install"),
                mirror_percent: 0,
            },
            blue: None,
            green: Some(set("ts-green", if event == Some("Install") { 0 } else { 2 })),
            error_code: None,
            error_message: None,
            rolled_back: false,
            next_step_at: None,
            judges: Vec::new(),
            mirrored: None,
        }
    }

    #[test]
    fn a_judged_period_shows_both_versions_side_by_side_with_the_verdict_and_the_test() {
        use control::api::judge::{JudgeCriteria, JudgedMetric, Observed};
        let criteria = JudgeCriteria {
            metric: JudgedMetric::Latency,
            source: Default::default(),
            tolerance: 0.1,
            confidence: 0.99,
            min_samples: 50,
        };
        let blue =
            Observed { requests: 400, errors: 2, latencies: vec![(0.020, 300), (0.024, 100)] };
        let green =
            Observed { requests: 380, errors: 1, latencies: vec![(0.026, 300), (0.030, 80)] };
        let judgement = judge::judge(&criteria, &blue, &green);
        let mut view = deployment("InProgress", Some("AllowTraffic"), 50);
        view.judges.push(JudgeView {
            alarm: "latency-judge".into(),
            period_start: NOON + 10_000,
            period_secs: 5,
            blue_target_group: "web-blue".into(),
            green_target_group: "web-green".into(),
            reason: judgement.reason(),
            judgement,
            retries: control::judging::RetriesSpent { retries: 12, budget_exhausted: 3 },
            mirrored: None,
        });
        expect![[r#"
            CANARY JUDGE             PERIOD                          GREEN   BLUE    VERDICT  TEST
            latency-judge (latency)  12:00:10 +5s  requests          380     400     WORSE    Mann–Whitney U z=15.56 p=6.43e-55
                                                   error rate        0.26%   0.50%
                                                   p50               26.0ms  20.0ms
                                                   p90               30.0ms  24.0ms
                                                   p99               30.0ms  24.0ms
                                                   retried on blue   12      -
                                                   budget exhausted  3       -
        "#]].assert_eq(&judges(&view.judges));
    }

    /// A shadow phase of 1,200 copies, all answered 500 by green where blue answered 200, 20 of
    /// them by the load balancer (green reset the connection), 3 dropped.
    fn broken_green_s_shadow_phase() -> MirroredView {
        MirroredView::of(&control::judging::MirroredTally {
            copies: 1200,
            green_5xx: 1180,
            green_lb_5xx: 20,
            mismatches: 1200,
            dropped: 3,
            green_response_times_us: vec![(1023, 1000), (2047, 180)],
            blue_requests: 2400,
            blue_response_times_us: vec![(20479, 2000), (24575, 400)],
            ..Default::default()
        })
    }

    #[test]
    fn a_shadow_phase_shows_green_s_answers_to_copies_next_to_blue_s_clients() {
        let mut view = deployment("Stopped", Some("AllowTraffic"), 0);
        view.mirrored = Some(broken_green_s_shadow_phase());
        let text = super::deployment(&view);
        let table = &text[text.find("SHADOW TRAFFIC").unwrap()..text.find("LIFECYCLE").unwrap()];
        expect![[r#"
            SHADOW TRAFFIC     GREEN (COPIES)  BLUE (CLIENTS)
            requests           1200            2400
            answered 2xx       0               -
            answered 3xx       0               -
            answered 4xx       0               -
            answered 5xx       1180            -
            load balancer 5xx  20              -
            class mismatches   1200            -
            dropped            3               -
            p50                1.0ms           20.5ms
            p99                2.0ms           24.6ms

        "#]]
        .assert_eq(table);

        // `watch` says what the phase got once it ends, and where it was meanwhile.
        let mut printer = WatchPrinter::default();
        let mut shadow = deployment("InProgress", Some("AllowTraffic"), 0);
        shadow.traffic.mirror_percent = 50;
        shadow.next_step_at = Some(NOON + 60_000);
        shadow.mirrored = Some(broken_green_s_shadow_phase());
        assert_eq!(printer.shadow_phase_ended(&shadow), None, "the phase is under way");
        let mut stopped = shadow.clone();
        stopped.traffic.mirror_percent = 0;
        stopped.completed_at = Some(NOON + 20_000);
        let text = format!(
            "{}\n{}\n",
            watch_line(&shadow, Some(NOON + 1000)),
            printer.shadow_phase_ended(&stopped).unwrap()
        );
        expect![[r#"
            Shadow traffic: a copy of 50% of production's requests goes to green (web-green), whose answers are measured and discarded; production 0% on green (web-green), 100% on blue (web-blue); test listener on green; green tasks 2/2 healthy; shift at 12:01:00 (in 59s)
            shadow phase ended: 1200 copies: 0 2xx, 0 3xx, 0 4xx, 1180 5xx, 20 load balancer 5xx; 1200 differed from blue's status class; 3 dropped; green p50 1.0ms p99 2.0ms vs blue p50 20.5ms p99 24.6ms
        "#]]
        .assert_eq(&text);
        assert_eq!(printer.shadow_phase_ended(&stopped), None, "once");
    }

    #[test]
    fn a_judge_of_mirrored_traffic_shows_green_s_copies_against_blue_s_clients() {
        use control::api::judge::{JudgeCriteria, JudgedMetric, JudgedSource, Observed};
        let criteria = JudgeCriteria {
            metric: JudgedMetric::Latency,
            source: JudgedSource::Mirrored,
            tolerance: 0.1,
            confidence: 0.99,
            min_samples: 50,
        };
        let blue =
            Observed { requests: 400, errors: 0, latencies: vec![(0.020, 300), (0.024, 100)] };
        let green =
            Observed { requests: 200, errors: 0, latencies: vec![(0.026, 150), (0.030, 50)] };
        let judgement = judge::judge(&criteria, &blue, &green);
        let view = JudgeView {
            alarm: "shadow-judge".into(),
            period_start: NOON + 10_000,
            period_secs: 5,
            blue_target_group: "web-blue".into(),
            green_target_group: "web-green".into(),
            reason: judgement.reason(),
            judgement,
            retries: control::judging::RetriesSpent::default(),
            mirrored: Some(MirroredView {
                copies: 200,
                green_2xx: 200,
                mismatches: 0,
                dropped: 0,
                ..MirroredView::default()
            }),
        };
        expect![[r#"
            CANARY JUDGE                      PERIOD                          GREEN   BLUE    VERDICT  TEST
            shadow-judge (latency, mirrored)  12:00:10 +5s  requests          200     400     WORSE    Mann–Whitney U z=13.51 p=6.51e-42
                                                            error rate        0.00%   0.00%
                                                            p50               26.0ms  20.0ms
                                                            p90               30.0ms  24.0ms
                                                            p99               30.0ms  24.0ms
                                                            retried on blue   0       -
                                                            budget exhausted  0       -
                                                            copies sent       200     -
                                                            class mismatches  0       -
                                                            copies dropped    0       -
        "#]]
        .assert_eq(&judges(&[view]));
    }

    #[test]
    fn the_watch_line_says_what_happens_where_traffic_goes_and_what_comes_next() {
        let now = Some(NOON + 1000);
        let install = deployment("InProgress", Some("Install"), 0);
        let mut ready = deployment("Ready", None, 0);
        ready.next_step_at = Some(NOON + 30 * 60 * 1000);
        let mut canary = deployment("InProgress", Some("AllowTraffic"), 20);
        canary.next_step_at = Some(NOON + 5 * 60 * 1000);
        let hook = deployment("InProgress", Some("AfterAllowTestTraffic"), 0);
        let mut baking = deployment("Baking", Some("AfterAllowTraffic"), 100);
        baking.next_step_at = Some(NOON + 10 * 60 * 1000 + 500);
        let text: String = [install, hook, ready, canary.clone(), baking]
            .iter()
            .map(|d| format!("{}\n", watch_line(d, now)))
            .collect();
        expect![[r#"
            Installing green: production 0% on green (web-green), 100% on blue (web-blue); test listener on blue; green tasks 0/2 healthy
            AfterAllowTestTraffic in progress: production 0% on green (web-green), 100% on blue (web-blue); test listener on green; green tasks 2/2 healthy
            Ready: green (web-green) serves the test listener, production stays on blue (web-blue); run `cutover deployments continue d-1a2b` to move production traffic; it waits until 12:30:00 (in 29m59s), then stops the deployment
            Moving production traffic: 20% on green (web-green), 80% on blue (web-blue); test listener on green; green tasks 2/2 healthy; next step at 12:05:00 (in 4m59s)
            Baking: green (web-green) serves 100% of production; blue (web-blue) stays running for an instant rollback until 12:10:00 (in 9m59s); `cutover deployments continue d-1a2b` ends the wait now
        "#]].assert_eq(&text);
        // Without a clock, the line has no countdown: `watch` prints it again only when it
        // says something new.
        expect!["Moving production traffic: 20% on green (web-green), 80% on blue (web-blue); test listener on green; green tasks 2/2 healthy; next step at 12:05:00"].assert_eq(&watch_line(&canary, None));
    }

    #[test]
    fn approvals_say_what_the_decision_does() {
        let text =
            format!("{}\n{}\n", approval_decided(true, "web-3"), approval_decided(false, "web-4"));
        expect![[r#"
            approved web-3: it moves on to its next action
            rejected web-4: its approval stage fails and nothing after it runs
        "#]]
        .assert_eq(&text);
    }

    #[test]
    fn an_execution_says_who_pushed_it_or_that_it_was_started_by_hand() {
        let text =
            ["tester", "started manually", "started manually by alice"].map(started_by).join("\n");
        expect![[r#"
            pushed by tester
            started manually
            started manually by alice"#]]
        .assert_eq(&text);
    }
}
