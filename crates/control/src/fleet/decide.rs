//! The decisions about the data plane on every node of a swarm, pure: which part of the routing
//! table the nodes serve and which the manager's own data plane serves, which instance needs a
//! push, and what the control plane reads as one data plane (health merged, metrics summed).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

use routes::{
    Action, HealthReport, Histogram, ListenerMetrics, MetricsSnapshot, MirroredMetrics,
    RequestCounters, RouteTable, TargetGroupMetrics, TargetHealth, TargetMetrics, TargetState,
};

use serde::Serialize;

use crate::declared::{DeploymentGroupDoc, ServiceDoc};

/// The routing table cut in two: what the manager's data plane serves, and what every node's
/// instance serves (`None` when no swarm service has a load balancer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub local: RouteTable,
    pub cluster: Option<RouteTable>,
}

/// The load balancers whose listeners the swarm serves: those a `runtime: swarm` service's
/// deployment group routes through (its production or test listener).
pub fn cluster_load_balancers(
    services: &[ServiceDoc],
    groups: &[DeploymentGroupDoc],
) -> BTreeSet<String> {
    let swarm: BTreeSet<&str> = services
        .iter()
        .filter(|s| s.runtime == "swarm" && s.load_balancer.is_some())
        .map(|s| s.name.as_str())
        .collect();
    groups
        .iter()
        .filter(|g| swarm.contains(g.service.as_str()))
        .flat_map(|g| std::iter::once(&g.production_listener).chain(&g.test_listener))
        .map(|l| l.load_balancer.clone())
        .collect()
}

/// Cuts `table` so that the listeners of `cluster` load balancers (keys `lb/listener`) and the
/// target groups they forward to go to every node, the rest to the manager. A node's instance
/// binds every address of its container (Swarm publishes the port on the node's address), so
/// its listeners bind `0.0.0.0` on their port. Both halves keep the table's version.
pub fn split(table: &RouteTable, cluster: &BTreeSet<String>) -> Split {
    let on_nodes = |key: &str| key.split_once('/').is_some_and(|(lb, _)| cluster.contains(lb));
    if !table.listeners.keys().any(|k| on_nodes(k)) {
        return Split { local: table.clone(), cluster: None };
    }
    let mut local = RouteTable { version: table.version, ..RouteTable::default() };
    let mut nodes = RouteTable { version: table.version, ..RouteTable::default() };
    for (key, listener) in &table.listeners {
        if on_nodes(key) {
            let mut listener = listener.clone();
            listener.bind = SocketAddr::from((Ipv4Addr::UNSPECIFIED, listener.bind.port()));
            nodes.listeners.insert(key.clone(), listener);
        } else {
            local.listeners.insert(key.clone(), listener.clone());
        }
    }
    let forwarded: BTreeSet<String> = nodes
        .listeners
        .values()
        .flat_map(|l| std::iter::once(&l.action).chain(l.rules.iter().map(|r| &r.action)))
        .flat_map(target_groups_of)
        .map(str::to_string)
        .collect();
    for (name, group) in &table.target_groups {
        let half = if forwarded.contains(name) { &mut nodes } else { &mut local };
        half.target_groups.insert(name.clone(), group.clone());
    }
    Split { local, cluster: Some(nodes) }
}

/// The ports the swarm's instances must publish: their listeners'.
pub fn listener_ports(cluster: &RouteTable) -> BTreeSet<u16> {
    cluster.listeners.values().map(|l| l.bind.port()).collect()
}

fn target_groups_of(action: &Action) -> Vec<&str> {
    match action {
        Action::Forward(forward) => forward
            .target_groups
            .iter()
            .map(|g| g.name.as_str())
            .chain(forward.retry.as_ref().map(|r| r.target_group.as_str()))
            .collect(),
        Action::FixedResponse(_) | Action::Redirect(_) => Vec::new(),
    }
}

/// Whether an instance serving `served` (None: it has not answered since it was last pushed to,
/// or ever) must be sent `wanted`. A restarted instance serves version 0 and is sent the table
/// again; one ahead of `wanted` (a table from before a control-plane restart) is sent it too,
/// since the data plane only refuses tables older than its own when they differ in version.
pub fn needs_push(served: Option<u64>, wanted: u64) -> bool {
    served != Some(wanted)
}

/// What the control plane knows of one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceView {
    pub node: String,
    pub admin: SocketAddr,
    /// The routing-table version the instance acknowledged last (None: none yet).
    pub acknowledged: Option<u64>,
    /// Its latest answer was an answer.
    pub answering: bool,
    /// Why its latest push or poll failed.
    pub error: Option<String>,
}

/// Whether `version` is applied across the swarm: every instance that answers has acknowledged
/// it (one that does not answer is retried in the background, and never holds this up). With no
/// instance answering, nothing is applied.
pub fn applied(instances: &[InstanceView], version: u64) -> bool {
    let answering: Vec<&InstanceView> = instances.iter().filter(|i| i.answering).collect();
    !answering.is_empty() && answering.iter().all(|i| i.acknowledged == Some(version))
}

/// How bad a target's state is, for merging what several load balancers see: the worst wins,
/// so green is healthy only once every answering node's load balancer finds it healthy.
fn severity(state: TargetState) -> u8 {
    match state {
        TargetState::Unused => 0,
        TargetState::Healthy => 1,
        TargetState::Draining => 2,
        TargetState::Initial => 3,
        TargetState::Unavailable => 4,
        TargetState::Unhealthy => 5,
    }
}

/// One health report for the control plane from the manager's data plane and every answering
/// node's: target groups of both, a target's worst state across the nodes (its description
/// naming the node that sees it so), requests in flight summed, and the oldest version served.
pub fn merge_health(local: HealthReport, nodes: &[(String, HealthReport)]) -> HealthReport {
    let mut merged = local;
    for (node, report) in nodes {
        merged.version = merged.version.min(report.version);
        for (group, targets) in &report.target_groups {
            let into = merged.target_groups.entry(group.clone()).or_default();
            for target in targets {
                merge_target(into, node, target);
            }
        }
    }
    merged
}

fn merge_target(into: &mut Vec<TargetHealth>, node: &str, target: &TargetHealth) {
    let on_node = |t: &TargetHealth| TargetHealth {
        description: t.description.as_ref().map(|d| format!("{d} (seen from {node})")),
        ..t.clone()
    };
    match into.iter_mut().find(|t| t.addr == target.addr) {
        None => into.push(on_node(target)),
        Some(seen) => {
            let in_flight = seen.in_flight + target.in_flight;
            if severity(target.state) > severity(seen.state) {
                *seen = on_node(target);
            }
            seen.in_flight = in_flight;
        }
    }
}

/// The metrics of the manager's data plane and of every answering node's instance as one
/// snapshot, which alarms read like a single load balancer's: every counter and gauge summed.
///
/// Counters are cumulative per process, so the sum is continuous only while the same processes
/// answer: its counter epoch (`started_at_unix_ms`) is a fingerprint of which instances answer
/// and when each started, placed before any reading. When one stops answering or restarts, the
/// next reading is a new baseline (one period of missing data, never a false burst from a sum
/// that went down).
pub fn sum_metrics(parts: &[(String, MetricsSnapshot)]) -> MetricsSnapshot {
    let mut sum = MetricsSnapshot {
        version: parts.iter().map(|(_, p)| p.version).min().unwrap_or(0),
        ..MetricsSnapshot::default()
    };
    let mut fingerprint = Fnv::default();
    for (name, part) in parts {
        fingerprint.add(name.as_bytes());
        fingerprint.add(&part.started_at_unix_ms.to_le_bytes());
        sum.taken_at_unix_ms = sum.taken_at_unix_ms.max(part.taken_at_unix_ms);
        sum.client_connections += part.client_connections;
        sum.max_client_connections += part.max_client_connections;
        sum.accept_errors += part.accept_errors;
        for (key, listener) in &part.listeners {
            match sum.listeners.get_mut(key) {
                Some(seen) => add_listener(seen, listener),
                None => drop(sum.listeners.insert(key.clone(), listener.clone())),
            }
        }
        for (key, group) in &part.target_groups {
            match sum.target_groups.get_mut(key) {
                Some(seen) => add_group(seen, group),
                None => drop(sum.target_groups.insert(key.clone(), group.clone())),
            }
        }
    }
    // Before 2001-09-09 (10^12 ms): earlier than any reading, so a change is a baseline.
    sum.started_at_unix_ms = match parts {
        [(_, only)] => only.started_at_unix_ms,
        _ => fingerprint.0 % 1_000_000_000_000,
    };
    sum
}

/// `GET /v1/metrics` when the swarm's nodes run load balancers: the figures alarms and the
/// canary judge read (the sum over the manager's data plane and every answering node, as
/// [`sum_metrics`] makes them), and beside them each part's own, labelled by node (`manager`
/// for the manager's data plane).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FleetMetrics {
    #[serde(flatten)]
    pub sum: MetricsSnapshot,
    pub nodes: BTreeMap<String, MetricsSnapshot>,
}

/// The manager's snapshot and the answering nodes', as `GET /v1/metrics` shows them.
pub fn fleet_metrics(
    manager: MetricsSnapshot,
    nodes: Vec<(String, MetricsSnapshot)>,
) -> FleetMetrics {
    let mut parts = vec![(MANAGER.to_string(), manager)];
    parts.extend(nodes);
    FleetMetrics { sum: sum_metrics(&parts), nodes: parts.into_iter().collect() }
}

/// The label of the manager's own data plane among the nodes' metrics.
pub const MANAGER: &str = "manager";

/// How one node's load balancer answered a check of a new table (`POST /v1/routes/validate`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeCheck {
    Valid,
    /// It answered, and refused the table: why, in its words.
    Refused(String),
    /// It did not answer (down, cut off, restarting): it holds nothing up, and is sent the table
    /// once it answers, as after any silence.
    Silent(String),
}

/// What the nodes' checks of a new table come to: refused when any node that answered refused
/// it (its reasons, by node), else valid, with a note for each node that did not answer.
pub fn judge_node_checks(checks: &[(String, NodeCheck)]) -> Result<Vec<String>, String> {
    let refused: Vec<String> = checks
        .iter()
        .filter_map(|(node, check)| match check {
            NodeCheck::Refused(why) => Some(format!("the load balancer on {node}: {why}")),
            _ => None,
        })
        .collect();
    if !refused.is_empty() {
        return Err(refused.join("; "));
    }
    Ok(checks
        .iter()
        .filter_map(|(node, check)| match check {
            NodeCheck::Silent(why) => Some(format!(
                "the load balancer on {node} did not answer, so it did not check the new \
                 routing table ({why}); it is sent the table when it answers"
            )),
            _ => None,
        })
        .collect())
}

/// FNV-1a: a fingerprint stable across processes and versions (std's hasher promises neither).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn add_listener(sum: &mut ListenerMetrics, part: &ListenerMetrics) {
    sum.bind = sum.bind.or(part.bind);
    sum.requests += part.requests;
    sum.active_connections += part.active_connections;
    sum.fixed_responses += part.fixed_responses;
    sum.redirects += part.redirects;
    sum.elb_4xx += part.elb_4xx;
    sum.elb_503_no_group += part.elb_503_no_group;
    sum.rejected_connections_per_client += part.rejected_connections_per_client;
    sum.rejected_connections_at_capacity += part.rejected_connections_at_capacity;
    sum.shed_connections += part.shed_connections;
    sum.header_timeouts += part.header_timeouts;
}

fn add_group(sum: &mut TargetGroupMetrics, part: &TargetGroupMetrics) {
    // Destructured whole, so that a field added to the data plane's metrics cannot be left out
    // of the swarm's sum without this failing to compile.
    let TargetGroupMetrics {
        counters,
        unhealthy_routing_requests,
        healthy_host_count,
        unhealthy_host_count,
        active_connections,
        retries,
        retry_budget_exhausted,
        hedged_connects,
        hedges_won,
        passive_ejections,
        mirrored,
        targets,
        response_time_fine,
    } = part;
    add_counters(&mut sum.counters, counters);
    sum.unhealthy_routing_requests += unhealthy_routing_requests;
    // Every node counts the same targets: the group has as many healthy hosts as the node that
    // sees the fewest, and as many unhealthy ones as the node that sees the most.
    sum.healthy_host_count = sum.healthy_host_count.min(*healthy_host_count);
    sum.unhealthy_host_count = sum.unhealthy_host_count.max(*unhealthy_host_count);
    sum.active_connections += active_connections;
    sum.retries += retries;
    sum.retry_budget_exhausted += retry_budget_exhausted;
    sum.hedged_connects += hedged_connects;
    sum.hedges_won += hedges_won;
    sum.passive_ejections += passive_ejections;
    add_mirrored(&mut sum.mirrored, mirrored);
    for target in targets {
        match sum.targets.iter_mut().find(|t| t.addr == target.addr) {
            Some(seen) => add_target(seen, target),
            None => sum.targets.push(target.clone()),
        }
    }
    add_fine(&mut sum.response_time_fine, response_time_fine);
}

/// Every node's copies of a mirror count: a shadow phase's alarms read the swarm's.
fn add_mirrored(sum: &mut MirroredMetrics, part: &MirroredMetrics) {
    let MirroredMetrics { counters, mismatches, dropped, response_time_fine } = part;
    add_counters(&mut sum.counters, counters);
    sum.mismatches += mismatches;
    sum.dropped += dropped;
    add_fine(&mut sum.response_time_fine, response_time_fine);
}

/// Adds fine response-time buckets (`(bucket, answers)`, ascending) into `sum`'s.
fn add_fine(sum: &mut Vec<(u32, u64)>, part: &[(u32, u64)]) {
    let mut fine: BTreeMap<u32, u64> = sum.iter().copied().collect();
    for (bucket, answers) in part {
        *fine.entry(*bucket).or_default() += answers;
    }
    *sum = fine.into_iter().collect();
}

fn add_target(sum: &mut TargetMetrics, part: &TargetMetrics) {
    add_counters(&mut sum.counters, &part.counters);
    if severity(part.state) > severity(sum.state) {
        sum.state = part.state;
    }
    sum.in_flight += part.in_flight;
    sum.active_connections += part.active_connections;
    sum.long_lived_connections += part.long_lived_connections;
}

fn add_counters(sum: &mut RequestCounters, part: &RequestCounters) {
    sum.requests += part.requests;
    sum.target_1xx += part.target_1xx;
    sum.target_2xx += part.target_2xx;
    sum.target_3xx += part.target_3xx;
    sum.target_4xx += part.target_4xx;
    sum.target_5xx += part.target_5xx;
    sum.elb_502 += part.elb_502;
    sum.elb_503 += part.elb_503;
    sum.elb_504 += part.elb_504;
    sum.target_connection_errors += part.target_connection_errors;
    add_histogram(&mut sum.response_time, &part.response_time);
}

fn add_histogram(sum: &mut Histogram, part: &Histogram) {
    if sum.buckets.len() < part.buckets.len() {
        sum.buckets.resize(part.buckets.len(), 0);
    }
    for (into, count) in sum.buckets.iter_mut().zip(&part.buckets) {
        *into += count;
    }
    sum.sum_us += part.sum_us;
    sum.count += part.count;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use routes::{ForwardAction, Listener, TargetGroup, WeightedTargetGroup};

    use super::*;
    use crate::declared::{ListenerRefDoc, ServiceLbDoc};

    fn forward(groups: &[(&str, u16)]) -> Action {
        Action::Forward(ForwardAction::weighted(
            groups
                .iter()
                .map(|(n, w)| WeightedTargetGroup { name: n.to_string(), weight: *w })
                .collect(),
        ))
    }

    fn listener(port: u16, action: Action) -> Listener {
        serde_json::from_value(serde_json::json!({
            "bind": format!("127.0.0.1:{port}"),
            "action": action,
        }))
        .unwrap()
    }

    fn table() -> RouteTable {
        let group = |addr: &str| TargetGroup {
            health_check: routes::HealthCheck::default(),
            deregistration_delay_ms: 0,
            algorithm: routes::Algorithm::default(),
            targets: vec![routes::Target { addr: addr.parse().unwrap() }],
        };
        RouteTable {
            version: 7,
            listeners: BTreeMap::from([
                (
                    "web/prod".to_string(),
                    listener(8080, forward(&[("api-blue", 80), ("api-green", 20)])),
                ),
                ("local/prod".to_string(), listener(9090, forward(&[("shop-blue", 100)]))),
            ]),
            target_groups: BTreeMap::from([
                ("api-blue".to_string(), group("10.98.0.5:8080")),
                ("api-green".to_string(), group("10.98.0.6:8080")),
                ("shop-blue".to_string(), group("127.0.0.9:8000")),
            ]),
        }
    }

    #[test]
    fn the_swarm_s_listeners_and_their_target_groups_go_to_the_nodes_bound_on_every_address() {
        let split = split(&table(), &BTreeSet::from(["web".to_string()]));
        let cluster = split.cluster.expect("the swarm serves web");
        assert_eq!(cluster.version, 7);
        assert_eq!(split.local.version, 7);
        assert_eq!(cluster.listeners.keys().collect::<Vec<_>>(), ["web/prod"]);
        assert_eq!(cluster.listeners["web/prod"].bind, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(cluster.target_groups.keys().collect::<Vec<_>>(), ["api-blue", "api-green"]);
        assert_eq!(split.local.listeners.keys().collect::<Vec<_>>(), ["local/prod"]);
        assert_eq!(split.local.listeners["local/prod"].bind, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(split.local.target_groups.keys().collect::<Vec<_>>(), ["shop-blue"]);
        assert_eq!(listener_ports(&cluster), BTreeSet::from([8080]));
    }

    #[test]
    fn without_swarm_load_balancers_the_whole_table_stays_on_the_manager() {
        let split = split(&table(), &BTreeSet::new());
        assert_eq!(split, Split { local: table(), cluster: None });
    }

    #[test]
    fn a_load_balancer_is_the_swarm_s_when_a_swarm_service_s_group_routes_through_it() {
        let service = |name: &str, runtime: &str| ServiceDoc {
            name: name.into(),
            runtime: runtime.into(),
            task_definition: "web:1".into(),
            desired_count: 2,
            load_balancer: Some(ServiceLbDoc {
                target_group: format!("{name}-blue"),
                container_name: "web".into(),
                container_port: 8080,
            }),
            network: None,
        };
        let group = |service: &str, lb: &str| -> DeploymentGroupDoc {
            let mut g: DeploymentGroupDoc = serde_json::from_value(serde_json::json!({
                "application": "app", "name": service, "service": service,
                "deployment_config": "c", "target_groups": ["a", "b"],
                "production_listener": { "load_balancer": lb, "listener": "prod" },
                "test_listener": null, "termination_wait_ms": 0,
                "auto_rollback": { "on_failure": false, "on_alarm": false, "on_stop_request": false }, "hook_timeout_ms": 0, "hooks": {}, "alarms": [],
            }))
            .unwrap_or_else(|e| panic!("{e}"));
            g.test_listener =
                Some(ListenerRefDoc { load_balancer: format!("{lb}-test"), listener: "t".into() });
            g
        };
        let found = cluster_load_balancers(
            &[service("api", "swarm"), service("shop", "docker")],
            &[group("api", "web"), group("shop", "local")],
        );
        assert_eq!(found, BTreeSet::from(["web".to_string(), "web-test".to_string()]));
    }

    #[test]
    fn an_instance_is_pushed_to_until_it_serves_the_wanted_version() {
        assert!(needs_push(None, 3));
        assert!(needs_push(Some(0), 3), "a restarted instance starts empty");
        assert!(needs_push(Some(2), 3));
        assert!(needs_push(Some(4), 3), "a table from before a control-plane restart");
        assert!(!needs_push(Some(3), 3));
    }

    fn instance(node: &str, acknowledged: Option<u64>, answering: bool) -> InstanceView {
        InstanceView {
            node: node.into(),
            admin: "10.99.0.11:9900".parse().unwrap(),
            acknowledged,
            answering,
            error: None,
        }
    }

    #[test]
    fn a_version_is_applied_once_every_answering_instance_acknowledged_it_whatever_the_silent_ones()
    {
        let up = [instance("node1", Some(5), true), instance("node2", Some(5), true)];
        assert!(applied(&up, 5));
        let one_behind = [instance("node1", Some(5), true), instance("node2", Some(4), true)];
        assert!(!applied(&one_behind, 5));
        let one_dead = [instance("node1", Some(5), true), instance("node3", Some(2), false)];
        assert!(applied(&one_dead, 5), "a dead node holds nothing up");
        assert!(!applied(&[instance("node3", Some(5), false)], 5), "nobody answers");
    }

    #[test]
    fn a_table_any_answering_node_refuses_is_refused_naming_it_and_a_silent_node_is_only_noted() {
        let check = |node: &str, check: NodeCheck| (node.to_string(), check);
        let all_valid = [check("node1", NodeCheck::Valid), check("node2", NodeCheck::Valid)];
        assert_eq!(judge_node_checks(&all_valid), Ok(Vec::new()));
        let one_silent = [
            check("node1", NodeCheck::Valid),
            check("node3", NodeCheck::Silent("operation timed out".into())),
        ];
        assert_eq!(
            judge_node_checks(&one_silent),
            Ok(vec![
                "the load balancer on node3 did not answer, so it did not check the new routing \
                 table (operation timed out); it is sent the table when it answers"
                    .to_string()
            ]),
            "a silent node holds nothing up"
        );
        let refused = [
            check("node1", NodeCheck::Refused("listener edge/prod: port 80 is in use".into())),
            check("node2", NodeCheck::Valid),
            check("node3", NodeCheck::Silent("connection refused".into())),
        ];
        assert_eq!(
            judge_node_checks(&refused),
            Err("the load balancer on node1: listener edge/prod: port 80 is in use".to_string())
        );
        assert_eq!(judge_node_checks(&[]), Ok(Vec::new()), "no node runs one yet");
    }

    fn health(addr: &str, state: TargetState, in_flight: u64) -> TargetHealth {
        TargetHealth {
            addr: addr.parse().unwrap(),
            state,
            reason: None,
            description: Some(format!("{state:?}")),
            in_flight,
        }
    }

    #[test]
    fn a_target_is_as_healthy_as_the_node_that_sees_it_worst_and_its_in_flight_requests_add_up() {
        let local = HealthReport {
            version: 9,
            target_groups: BTreeMap::from([(
                "shop".into(),
                vec![health("127.0.0.9:80", TargetState::Healthy, 1)],
            )]),
        };
        let node = |version, state, in_flight| HealthReport {
            version,
            target_groups: BTreeMap::from([(
                "api".into(),
                vec![health("10.98.0.5:8080", state, in_flight)],
            )]),
        };
        let merged = merge_health(
            local,
            &[
                ("node1".into(), node(9, TargetState::Healthy, 2)),
                ("node2".into(), node(8, TargetState::Unhealthy, 3)),
                ("node3".into(), node(9, TargetState::Initial, 0)),
            ],
        );
        assert_eq!(merged.version, 8, "the oldest version any answering node serves");
        assert_eq!(merged.target_groups["shop"][0].state, TargetState::Healthy);
        let api = &merged.target_groups["api"];
        assert_eq!(api.len(), 1);
        assert_eq!(api[0].state, TargetState::Unhealthy);
        assert_eq!(api[0].description.as_deref(), Some("Unhealthy (seen from node2)"));
        assert_eq!(api[0].in_flight, 5);
    }

    fn snapshot(started: u64, requests: u64, target_5xx: u64, healthy: u64) -> MetricsSnapshot {
        let counters = RequestCounters {
            requests,
            target_5xx,
            response_time: Histogram {
                buckets: vec![requests, requests],
                sum_us: 10 * requests,
                count: requests,
            },
            ..RequestCounters::default()
        };
        MetricsSnapshot {
            version: 3,
            started_at_unix_ms: started,
            taken_at_unix_ms: 1_800_000_000_000 + started,
            client_connections: 1,
            target_groups: BTreeMap::from([(
                "api-green".into(),
                TargetGroupMetrics {
                    counters,
                    healthy_host_count: healthy,
                    response_time_fine: vec![(4, requests)],
                    ..TargetGroupMetrics::default()
                },
            )]),
            ..MetricsSnapshot::default()
        }
    }

    #[test]
    fn metrics_of_every_answering_instance_add_up_as_one_load_balancer_s() {
        let parts = [
            ("node1".to_string(), snapshot(1_700_000_000_000, 10, 1, 2)),
            ("node2".to_string(), snapshot(1_700_000_000_500, 30, 2, 1)),
        ];
        let sum = sum_metrics(&parts);
        let green = &sum.target_groups["api-green"];
        assert_eq!(green.counters.requests, 40);
        assert_eq!(green.counters.target_5xx, 3);
        assert_eq!(
            green.counters.response_time,
            Histogram { buckets: vec![40, 40], sum_us: 400, count: 40 }
        );
        assert_eq!(green.response_time_fine, [(4, 40)]);
        assert_eq!(green.healthy_host_count, 1, "as many as the node that sees the fewest");
        assert_eq!(sum.client_connections, 2);
        assert_eq!(sum.taken_at_unix_ms, 1_800_000_000_000 + 1_700_000_000_500);
    }

    #[test]
    fn the_copies_a_mirror_sent_from_every_node_add_up_so_shadow_alarms_see_the_swarm_s() {
        let mirrored = |requests: u64, target_5xx: u64, mismatches: u64, dropped: u64| {
            let mut part = snapshot(1_700_000_000_000, 0, 0, 2);
            part.target_groups.get_mut("api-green").unwrap().mirrored = MirroredMetrics {
                counters: RequestCounters { requests, target_5xx, ..RequestCounters::default() },
                mismatches,
                dropped,
                response_time_fine: vec![(3, requests), (9, 1)],
            };
            part
        };
        let parts = [
            ("node1".to_string(), mirrored(10, 4, 4, 1)),
            ("node2".to_string(), mirrored(30, 6, 5, 2)),
        ];
        let sum = &sum_metrics(&parts).target_groups["api-green"].mirrored;
        assert_eq!(sum.counters.requests, 40);
        assert_eq!(sum.counters.target_5xx, 10);
        assert_eq!((sum.mismatches, sum.dropped), (9, 3));
        assert_eq!(sum.response_time_fine, [(3, 40), (9, 2)]);
    }

    #[test]
    fn the_api_s_metrics_are_the_sum_alarms_read_with_each_node_s_own_beside_it() {
        let manager = snapshot(1_700_000_000_000, 0, 0, 0);
        let nodes = vec![
            ("node1".to_string(), snapshot(1_700_000_000_100, 10, 1, 2)),
            ("node2".to_string(), snapshot(1_700_000_000_200, 30, 2, 2)),
        ];
        let mut parts = vec![(MANAGER.to_string(), manager.clone())];
        parts.extend(nodes.clone());
        let view = fleet_metrics(manager, nodes);
        assert_eq!(view.sum, sum_metrics(&parts), "what alarms read");
        assert_eq!(view.sum.target_groups["api-green"].counters.requests, 40);
        assert_eq!(view.nodes.keys().collect::<Vec<_>>(), ["manager", "node1", "node2"]);
        assert_eq!(view.nodes["node2"].target_groups["api-green"].counters.requests, 30);
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["target_groups"]["api-green"]["requests"], 40, "{json}");
        assert_eq!(json["nodes"]["node1"]["target_groups"]["api-green"]["requests"], 10);
    }

    #[test]
    fn the_sum_s_counter_epoch_changes_when_an_instance_stops_answering_or_restarts_and_predates_every_reading()
     {
        let a = ("node1".to_string(), snapshot(1_700_000_000_000, 10, 0, 1));
        let b = ("node2".to_string(), snapshot(1_700_000_000_500, 30, 0, 1));
        let b_restarted = ("node2".to_string(), snapshot(1_700_000_900_000, 1, 0, 1));
        let both = sum_metrics(&[a.clone(), b.clone()]).started_at_unix_ms;
        assert_eq!(both, sum_metrics(&[a.clone(), b.clone()]).started_at_unix_ms, "stable");
        assert!(both < 1_000_000_000_000, "before any reading: a change is a baseline");
        let without_b =
            sum_metrics(&[a.clone(), ("node3".to_string(), snapshot(1_700_000_000_500, 0, 0, 1))]);
        assert_ne!(both, without_b.started_at_unix_ms);
        assert_ne!(both, sum_metrics(&[a.clone(), b_restarted]).started_at_unix_ms);
        assert_eq!(
            sum_metrics(std::slice::from_ref(&a)).started_at_unix_ms,
            a.1.started_at_unix_ms
        );
        // The alarms' counter rule reads the change as a baseline, not as a restart's increase.
        let reading = |started: u64, taken: u64| alarms::counter::Reading {
            source_started: model::Timestamp::from_millis(started),
            taken: model::Timestamp::from_millis(taken),
        };
        let previous = reading(both, 1_800_000_000_000);
        let next = reading(without_b.started_at_unix_ms, 1_800_000_000_250);
        assert_eq!(
            alarms::counter::continuity(Some(previous), next),
            alarms::counter::Continuity::Baseline
        );
    }
}
