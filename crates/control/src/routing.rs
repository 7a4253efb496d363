//! Computes the load balancer's routing table from the control plane's state.
//!
//! Pure: the same state always gives the same table, so after a restart the control plane sends
//! the data plane exactly what it already serves, and nothing moves.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use routes::{
    Action, ForwardAction, Listener, Mirror, Preview, RouteTable, Target, TargetGroup,
    WeightedTargetGroup,
};

use config::PreviewSpec;

use crate::declared::{DeploymentGroupDoc, LoadBalancerDoc, TargetGroupDoc};

/// How one deployment group routes right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRouting {
    pub group: DeploymentGroupDoc,
    /// The target group blue (the primary task set) is in.
    pub blue_target_group: String,
    pub production_green_percent: u8,
    pub test_to_green: bool,
    /// The share of production copied to green: a deployment's shadow phase.
    pub mirror_percent: u8,
    /// A deployment of the group is in progress. One that ended without rolling back (stopped
    /// with `--no-rollback`, or failed without auto-rollback) leaves its traffic where it was,
    /// but no longer offers preview routing: a preview belongs to a deployment under way.
    pub deployment_in_progress: bool,
}

impl GroupRouting {
    pub fn green_target_group(&self) -> &str {
        let [a, b] = &self.group.target_groups;
        if *a == self.blue_target_group { b } else { a }
    }
}

/// Listener name in the table: `load_balancer/listener`.
pub fn listener_key(load_balancer: &str, listener: &str) -> String {
    format!("{load_balancer}/{listener}")
}

pub fn compute(
    version: u64,
    load_balancers: &[LoadBalancerDoc],
    target_groups: &[TargetGroupDoc],
    groups: &[GroupRouting],
    task_targets: &BTreeMap<String, Vec<SocketAddr>>,
) -> RouteTable {
    let mut table = RouteTable { version, ..RouteTable::default() };
    for tg in target_groups {
        let mut targets: Vec<Target> =
            tg.manual_targets().map(|addr| Target { addr: *addr }).collect();
        if let Some(addrs) = task_targets.get(&tg.name) {
            targets.extend(addrs.iter().map(|addr| Target { addr: *addr }));
        }
        targets.sort();
        targets.dedup();
        table.target_groups.insert(
            tg.name.clone(),
            TargetGroup {
                health_check: tg.health_check.clone(),
                deregistration_delay_ms: tg.deregistration_delay_ms,
                algorithm: tg.algorithm,
                targets,
            },
        );
    }
    for lb in load_balancers {
        for listener in &lb.listeners {
            let key = listener_key(&lb.name, &listener.name);
            let (action, rules) = managed_routes(&lb.name, listener, groups);
            table.listeners.insert(
                key,
                Listener {
                    bind: listener.bind,
                    tls: listener.tls.clone(),
                    idle_timeout_ms: None,
                    limits: lb.connections,
                    action,
                    rules,
                },
            );
        }
    }
    table
}

/// The default action and the rules of a listener, with the forwards of the deployment groups
/// that name it as their production or test listener set to where their deployments are. As
/// CodeDeploy updates an ALB listener: a group's traffic is every rule of the listener that
/// forwards to the group's target groups, or, when none does, the listener's default action. A
/// group's routing never touches another group's rule.
fn managed_routes(
    lb: &str,
    listener: &crate::declared::ListenerDoc,
    groups: &[GroupRouting],
) -> (Action, Vec<routes::Rule>) {
    let mut default = None;
    let mut rules = listener.rules.clone();
    for routing in groups {
        let is = |r: &crate::declared::ListenerRefDoc| {
            r.load_balancer == lb && r.listener == listener.name
        };
        let is_production = is(&routing.group.production_listener);
        if !is_production && !routing.group.test_listener.as_ref().is_some_and(is) {
            continue;
        }
        let forward = group_forward(routing, is_production);
        let mut on_rules = false;
        for (rule, declared) in rules.iter_mut().zip(&listener.rules) {
            if forwards_to(&declared.action, &routing.group.target_groups) {
                rule.action = forward.clone();
                on_rules = true;
            }
        }
        if !on_rules && default.is_none() {
            default = Some(forward);
        }
    }
    (default.unwrap_or_else(|| listener.action.clone()), rules)
}

/// Whether `action` is a forward to (some of) `pair`: a rule a deployment group routes.
pub(crate) fn forwards_to(action: &Action, pair: &[String; 2]) -> bool {
    matches!(action, Action::Forward(f)
        if !f.target_groups.is_empty() && f.target_groups.iter().all(|t| pair.contains(&t.name)))
}

/// A deployment group's forward on its production or test listener (or rule). Both target groups
/// stay in it, the idle one at weight 0, as CodeDeploy leaves an ALB rule: the idle group stays
/// referenced and health-checked, ready for the next deployment.
fn group_forward(routing: &GroupRouting, is_production: bool) -> Action {
    let green_percent = if is_production {
        routing.production_green_percent
    } else if routing.test_to_green {
        100
    } else {
        0
    };
    let green_percent = u16::from(green_percent.min(100));
    let (blue, green) = (&routing.blue_target_group, routing.green_target_group());
    // Preview routing follows the test listener: from the moment green may be tested until
    // the deployment ends (however it ends) or rolls back, a tester can pin production
    // requests to either side.
    let previewing = is_production && routing.test_to_green && routing.deployment_in_progress;
    let preview = routing.group.preview.as_ref().filter(|_| previewing);
    // Retry on blue stays on the production forward whatever the weights: it acts only on a
    // request green took, and a rollback must not strand green's requests still in flight
    // when it takes green's weight away. Never on the test listener, whose testers want
    // green's answers.
    let retry = routing.group.retry_on_blue.as_ref().filter(|_| is_production).map(|r| r.to(blue));
    // A shadow phase copies production's requests to green; the test listener's already go
    // there.
    let mirror = (is_production && routing.mirror_percent > 0).then(|| Mirror {
        methods: routing.group.mirror_methods.clone(),
        ..Mirror::to(green, routing.mirror_percent)
    });
    Action::Forward(ForwardAction {
        target_groups: vec![
            WeightedTargetGroup { name: blue.clone(), weight: 100 - green_percent },
            WeightedTargetGroup { name: green.to_string(), weight: green_percent },
        ],
        preview: preview.map(|p| Preview {
            from: p.from,
            name: p.name.clone(),
            target_groups: [
                (PreviewSpec::GREEN.to_string(), green.to_string()),
                (PreviewSpec::BLUE.to_string(), blue.clone()),
            ]
            .into(),
        }),
        retry,
        mirror,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declared::{AutoRollbackDoc, ListenerDoc, ListenerRefDoc};

    fn group() -> DeploymentGroupDoc {
        DeploymentGroupDoc {
            application: "web".into(),
            name: "prod".into(),
            service: "web".into(),
            deployment_config: "CodeDeployDefault.ECSAllAtOnce".into(),
            target_groups: ["blue".into(), "green".into()],
            production_listener: ListenerRefDoc {
                load_balancer: "lb".into(),
                listener: "prod".into(),
            },
            test_listener: Some(ListenerRefDoc {
                load_balancer: "lb".into(),
                listener: "test".into(),
            }),
            ready_wait_ms: None,
            termination_wait_ms: 0,
            auto_rollback: AutoRollbackDoc::default(),
            hook_timeout_ms: 60_000,
            hooks: BTreeMap::new(),
            alarms: Vec::new(),
            preview: None,
            install_timeout_ms: None,
            retry_on_blue: None,
            mirror_methods: crate::declared::default_mirror_methods(),
        }
    }

    fn lb() -> LoadBalancerDoc {
        let listener = |name: &str, port: u16| ListenerDoc {
            name: name.into(),
            bind: SocketAddr::from(([127, 0, 0, 1], port)),
            tls: None,
            action: Action::Forward(ForwardAction::weighted(Vec::new())),
            rules: Vec::new(),
        };
        LoadBalancerDoc {
            name: "lb".into(),
            listeners: vec![listener("prod", 8000), listener("test", 8001)],
            connections: routes::ConnectionLimits::default(),
        }
    }

    #[test]
    fn a_load_balancers_connection_limits_reach_each_of_its_listeners() {
        let limits =
            routes::ConnectionLimits { max_per_client: Some(20), header_timeout_ms: Some(5_000) };
        let lb = LoadBalancerDoc { connections: limits, ..lb() };
        let table = compute(1, &[lb], &[], &[], &BTreeMap::new());
        for name in ["lb/prod", "lb/test"] {
            assert_eq!(table.listeners[name].limits, limits, "{name}");
        }
    }

    fn weights(table: &RouteTable, listener: &str) -> Vec<(String, u16)> {
        match &table.listeners[listener].action {
            Action::Forward(f) => {
                f.target_groups.iter().map(|t| (t.name.clone(), t.weight)).collect()
            }
            other => panic!("not a forward: {other:?}"),
        }
    }

    #[test]
    fn a_shift_keeps_both_target_groups_in_the_production_forward() {
        let routing = GroupRouting {
            group: group(),
            blue_target_group: "green".into(),
            production_green_percent: 10,
            mirror_percent: 0,
            test_to_green: true,
            deployment_in_progress: true,
        };
        let table = compute(3, &[lb()], &[], &[routing], &BTreeMap::new());
        assert_eq!(table.version, 3);
        // Blue is in the group's second target group this time: roles alternate.
        assert_eq!(
            weights(&table, "lb/prod"),
            [("green".to_string(), 90), ("blue".to_string(), 10)]
        );
        assert_eq!(
            weights(&table, "lb/test"),
            [("green".to_string(), 0), ("blue".to_string(), 100)]
        );
    }

    #[test]
    fn without_a_deployment_blue_takes_everything_and_tasks_become_targets() {
        let routing = GroupRouting {
            group: group(),
            blue_target_group: "blue".into(),
            production_green_percent: 0,
            mirror_percent: 0,
            test_to_green: false,
            deployment_in_progress: false,
        };
        let tg = TargetGroupDoc {
            name: "blue".into(),
            health_check: routes::HealthCheck::default(),
            deregistration_delay_ms: 1000,
            algorithm: routes::Algorithm::RoundRobin,
            targets: vec![SocketAddr::from(([10, 0, 0, 9], 80))],
            registered: vec![SocketAddr::from(([10, 0, 0, 7], 80))],
        };
        let tasks =
            BTreeMap::from([("blue".to_string(), vec![SocketAddr::from(([127, 77, 0, 2], 8080))])]);
        let table = compute(1, &[lb()], &[tg], &[routing], &tasks);
        assert_eq!(
            weights(&table, "lb/prod"),
            [("blue".to_string(), 100), ("green".to_string(), 0)]
        );
        let targets: Vec<String> =
            table.target_groups["blue"].targets.iter().map(|t| t.addr.to_string()).collect();
        assert_eq!(targets, ["10.0.0.7:80", "10.0.0.9:80", "127.77.0.2:8080"]);
    }

    fn retries(table: &RouteTable) -> (Option<routes::Retry>, Option<routes::Retry>) {
        let retry = |listener: &str| match &table.listeners[listener].action {
            Action::Forward(f) => f.retry.clone(),
            other => panic!("not a forward: {other:?}"),
        };
        (retry("lb/prod"), retry("lb/test"))
    }

    #[test]
    fn a_shadow_phase_mirrors_production_to_green_with_the_groups_methods_and_nothing_else() {
        let mut group = group();
        group.mirror_methods = vec!["GET".into(), "POST".into()];
        let shadowing = GroupRouting {
            group,
            blue_target_group: "blue".into(),
            production_green_percent: 0,
            test_to_green: true,
            mirror_percent: 50,
            deployment_in_progress: true,
        };
        let table = compute(1, &[lb()], &[], std::slice::from_ref(&shadowing), &BTreeMap::new());
        let mirror = |listener: &str| match &table.listeners[listener].action {
            Action::Forward(f) => f.mirror.clone(),
            other => panic!("not a forward: {other:?}"),
        };
        let expected =
            Mirror { methods: vec!["GET".into(), "POST".into()], ..Mirror::to("green", 50) };
        assert_eq!(mirror("lb/prod"), Some(expected));
        assert_eq!(mirror("lb/test"), None, "the test listener's requests go to green already");
        let after = GroupRouting { mirror_percent: 0, production_green_percent: 25, ..shadowing };
        let table = compute(2, &[lb()], &[], &[after], &BTreeMap::new());
        match &table.listeners["lb/prod"].action {
            Action::Forward(f) => assert_eq!(f.mirror, None, "the shift ends the shadow phase"),
            other => panic!("not a forward: {other:?}"),
        }
    }

    #[test]
    fn retry_on_blue_names_blue_on_the_production_forward_only_at_any_weight() {
        let mut group = group();
        group.retry_on_blue = crate::declared::RetryOnBlueDoc::default_on();
        // Blue is the group's second target group this time: roles alternate.
        let at = |percent: u8, in_progress: bool| GroupRouting {
            group: group.clone(),
            blue_target_group: "green".into(),
            production_green_percent: percent,
            mirror_percent: 0,
            test_to_green: in_progress,
            deployment_in_progress: in_progress,
        };
        for routing in [at(10, true), at(100, true), at(0, false)] {
            let table = compute(1, &[lb()], &[], std::slice::from_ref(&routing), &BTreeMap::new());
            let (production, test) = retries(&table);
            assert_eq!(production, Some(routes::Retry::to("green")), "{routing:?}");
            assert_eq!(test, None, "the test listener serves green's own answers");
        }
        let off = GroupRouting { group: self::group(), ..at(10, true) };
        let table = compute(1, &[lb()], &[], &[off], &BTreeMap::new());
        assert_eq!(retries(&table), (None, None), "`retry_on_blue: false` retries nothing");
    }

    /// The previews of the production and the test listener for one group's routing.
    fn previews(routing: GroupRouting) -> (Option<Preview>, Option<Preview>) {
        let table = compute(1, &[lb()], &[], &[routing], &BTreeMap::new());
        let preview = |listener: &str| match &table.listeners[listener].action {
            Action::Forward(f) => f.preview.clone(),
            other => panic!("not a forward: {other:?}"),
        };
        (preview("lb/prod"), preview("lb/test"))
    }

    fn previewing_group_routing(
        test_to_green: bool,
        production_green_percent: u8,
        deployment_in_progress: bool,
    ) -> GroupRouting {
        let mut group = group();
        group.preview = Some(crate::declared::PreviewDoc {
            from: routes::PreviewFrom::Header,
            name: "X-Deploy-Version".into(),
        });
        GroupRouting {
            group,
            blue_target_group: "green".into(),
            production_green_percent,
            test_to_green,
            mirror_percent: 0,
            deployment_in_progress,
        }
    }

    #[test]
    fn preview_routing_is_on_the_production_listener_only_while_green_serves_the_test_listener() {
        let preview = |test_to_green, production_green_percent| {
            previews(previewing_group_routing(test_to_green, production_green_percent, true))
        };
        // During a deployment: the value `green` names green's target group, which this time is
        // the group's `blue` (roles alternate), and `blue` names blue's.
        let (production, test) = preview(true, 10);
        let production = production.expect("preview on the production listener");
        assert_eq!(production.name, "X-Deploy-Version");
        assert_eq!(
            production.target_groups,
            BTreeMap::from([
                (PreviewSpec::GREEN.to_string(), "blue".to_string()),
                (PreviewSpec::BLUE.to_string(), "green".to_string())
            ])
        );
        assert_eq!(test, None, "the test listener already serves green");
        // Before test traffic, and after the deployment rolls back: no preview.
        assert_eq!(preview(false, 0), (None, None));
    }

    #[test]
    fn a_deployment_that_ended_without_rollback_keeps_its_weights_but_ends_preview_routing() {
        // Stopped with `--no-rollback` at 80/20: green still serves the test listener and 20% of
        // production, but the deployment is over, and so is the preview.
        let routing = previewing_group_routing(true, 20, false);
        let table = compute(1, &[lb()], &[], std::slice::from_ref(&routing), &BTreeMap::new());
        assert_eq!(
            weights(&table, "lb/prod"),
            [("green".to_string(), 80), ("blue".to_string(), 20)]
        );
        assert_eq!(previews(routing), (None, None));
    }

    /// One listener for two services by host name, each service's traffic a rule, as CodeDeploy
    /// deployment groups share an ALB listener.
    fn shared_listener() -> (LoadBalancerDoc, [DeploymentGroupDoc; 2]) {
        let host_rule = |priority: u32, host: &str, tg: &str| routes::Rule {
            priority,
            conditions: vec![routes::Condition::HostHeader { values: vec![host.into()] }],
            action: Action::Forward(ForwardAction::weighted(vec![WeightedTargetGroup {
                name: tg.into(),
                weight: 1,
            }])),
        };
        let not_found = Action::FixedResponse(routes::FixedResponse {
            status_code: 404,
            content_type: None,
            body: String::new(),
        });
        let lb = LoadBalancerDoc {
            name: "edge".into(),
            listeners: vec![ListenerDoc {
                name: "http".into(),
                bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
                tls: None,
                action: not_found,
                rules: vec![
                    host_rule(10, "api.example.com", "api-blue"),
                    host_rule(20, "www.example.com", "www-blue"),
                ],
            }],
            connections: routes::ConnectionLimits::default(),
        };
        let on_edge = |name: &str, pair: [&str; 2]| DeploymentGroupDoc {
            name: name.into(),
            service: name.into(),
            target_groups: pair.map(String::from),
            production_listener: ListenerRefDoc {
                load_balancer: "edge".into(),
                listener: "http".into(),
            },
            test_listener: None,
            ..group()
        };
        (lb, [on_edge("api", ["api-blue", "api-green"]), on_edge("www", ["www-blue", "www-green"])])
    }

    fn rule_weights(table: &RouteTable, priority: u32) -> Vec<(String, u16)> {
        let rule = table.listeners["edge/http"].rules.iter().find(|r| r.priority == priority);
        match &rule.expect("the rule is served").action {
            Action::Forward(f) => {
                f.target_groups.iter().map(|t| (t.name.clone(), t.weight)).collect()
            }
            other => panic!("not a forward: {other:?}"),
        }
    }

    #[test]
    fn a_group_on_a_listener_rule_shifts_that_rule_only() {
        let (lb, [api, www]) = shared_listener();
        let routing = |group: &DeploymentGroupDoc, percent: u8| GroupRouting {
            group: group.clone(),
            blue_target_group: group.target_groups[0].clone(),
            production_green_percent: percent,
            mirror_percent: 0,
            test_to_green: percent > 0,
            deployment_in_progress: percent > 0,
        };
        let canary = compute(
            2,
            std::slice::from_ref(&lb),
            &[],
            &[routing(&api, 10), routing(&www, 0)],
            &BTreeMap::new(),
        );
        let pair =
            |a: &str, wa: u16, b: &str, wb: u16| vec![(a.to_string(), wa), (b.to_string(), wb)];
        assert_eq!(rule_weights(&canary, 10), pair("api-blue", 90, "api-green", 10));
        assert_eq!(rule_weights(&canary, 20), pair("www-blue", 100, "www-green", 0));
        assert_eq!(
            canary.listeners["edge/http"].action, lb.listeners[0].action,
            "the default action is no group's"
        );
        let rolled_back = compute(
            3,
            std::slice::from_ref(&lb),
            &[],
            &[routing(&api, 0), routing(&www, 0)],
            &BTreeMap::new(),
        );
        assert_eq!(rule_weights(&rolled_back, 10), pair("api-blue", 100, "api-green", 0));
        assert_eq!(
            rolled_back.listeners["edge/http"].rules[1], canary.listeners["edge/http"].rules[1],
            "a rollback of api leaves www's rule as it was"
        );
        assert_eq!(rule_weights(&rolled_back, 20), pair("www-blue", 100, "www-green", 0));
    }

    #[test]
    fn preview_routing_works_on_a_group_s_rule() {
        let (lb, [mut api, www]) = shared_listener();
        api.preview = Some(crate::declared::PreviewDoc {
            from: routes::PreviewFrom::Header,
            name: "X-Deploy-Version".into(),
        });
        let routing = |group: &DeploymentGroupDoc, previewing: bool| GroupRouting {
            group: group.clone(),
            blue_target_group: group.target_groups[0].clone(),
            production_green_percent: 0,
            mirror_percent: 0,
            test_to_green: previewing,
            deployment_in_progress: previewing,
        };
        let table = compute(
            1,
            std::slice::from_ref(&lb),
            &[],
            &[routing(&api, true), routing(&www, false)],
            &BTreeMap::new(),
        );
        let preview = |priority: u32| {
            let rules = &table.listeners["edge/http"].rules;
            match &rules.iter().find(|r| r.priority == priority).unwrap().action {
                Action::Forward(f) => f.preview.clone(),
                other => panic!("not a forward: {other:?}"),
            }
        };
        let api_preview = preview(10).expect("api's rule previews green");
        assert_eq!(api_preview.target_groups[PreviewSpec::GREEN], "api-green");
        assert_eq!(preview(20), None, "www's rule has no preview of api's");
    }
}
