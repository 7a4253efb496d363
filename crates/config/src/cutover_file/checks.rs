//! Checks across the items of a cutover.yaml, once each item has been read on its own: names
//! unique per kind, references that resolve, listener addresses that do not collide, and the
//! service a deployment group deploys against its target groups and listeners.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::{
    GroupMeta, ListenerMeta, ListenerRef, Loc, Meta, Named, ServiceSpec, is_url, monitoring,
    pipelines,
};
use crate::taskdef::TaskDefinition;
use syntax::decode::Cx;
use syntax::diag::{Diagnostic, Errors, Pos, suggest};
use syntax::tree::{self, Node, Syntax, Value, child_index, child_key};
/// Reports the second and later uses of a name, pointing at each.
pub(super) fn check_unique<'m>(
    cx: &mut Cx<'_>,
    what: &str,
    names: impl IntoIterator<Item = &'m Named>,
) {
    let mut first: HashMap<&str, u32> = HashMap::new();
    for (name, loc) in names {
        if let Some(line) = first.get(name.as_str()) {
            cx.error(
                loc.pos,
                &loc.path,
                format!(
                    "duplicate {what} name `{name}` (first on line {line}); names must be unique"
                ),
            );
        } else {
            first.insert(name, loc.pos.line());
        }
    }
}

/// "unknown {what} `x`; did you mean `y`?" or "…; declared: a, b".
pub(super) fn unknown(
    cx: &mut Cx<'_>,
    loc: &Loc,
    what: &str,
    name: &str,
    known: &[&str],
    section: &str,
) {
    let mut known = known.to_vec();
    known.sort_unstable();
    known.dedup();
    let mut message = format!("no {what} named `{name}`");
    match suggest(name, known.iter().copied()) {
        Some(s) => message.push_str(&format!("; did you mean `{s}`?")),
        None if known.is_empty() => message.push_str(&format!("; declare it under `{section}`")),
        None => message.push_str(&format!("; declared {what}s: {}", known.join(", "))),
    }
    cx.error(loc.pos, &loc.path, message);
}

pub(super) fn cross_check(cx: &mut Cx<'_>, meta: &Meta) {
    check_names_unique(cx, meta);
    check_binds(cx, meta);

    let target_groups: Vec<&str> = meta
        .target_groups
        .iter()
        .filter_map(|t| t.name.as_ref().map(|(n, _)| n.as_str()))
        .collect();
    let services: Vec<&str> =
        meta.services.iter().filter_map(|s| s.name.as_ref().map(|(n, _)| n.as_str())).collect();
    let hooks: Vec<&str> = meta.hooks.iter().map(|(n, _)| n.as_str()).collect();
    let mut configs: Vec<&str> = model::PREDEFINED_CONFIGS.iter().map(|(n, _)| *n).collect();
    configs.extend(meta.configs.iter().map(|(n, _)| n.as_str()));

    // Every rule's forward is looked up: a list scan would cost rules × target groups, a
    // million comparisons at ALB's quotas.
    let declared_target_groups: HashSet<&str> = target_groups.iter().copied().collect();
    for lb in &meta.load_balancers {
        for l in &lb.listeners {
            let rule_actions = l.rules.iter().filter_map(|r| r.action.as_ref());
            for (tg, loc) in l.action.iter().chain(rule_actions).flat_map(|a| &a.forward) {
                if !declared_target_groups.contains(tg.as_str()) {
                    unknown(cx, loc, "target group", tg, &target_groups, "target_groups");
                }
            }
        }
    }
    check_target_groups_per_load_balancer(cx, meta);
    for s in &meta.services {
        if let Some((tg, loc)) = &s.target_group
            && !declared_target_groups.contains(tg.as_str())
        {
            unknown(cx, loc, "target group", tg, &target_groups, "target_groups");
        }
    }

    // Which group (by index) manages each listener, target group and service, for the
    // one-owner rules.
    let mut owners = Owners::default();
    for (index, g) in meta.groups.iter().enumerate() {
        check_group_refs(cx, meta, g, &target_groups, &services, &hooks, &configs);
        owners.claim(cx, meta, index, g);
    }
    // A group whose listener reference is wrong most likely meant one of the unmanaged
    // listeners; reporting those as serving nothing would be the same mistake twice.
    let listeners = declared_listeners(meta);
    let refs_resolve = meta.groups.iter().all(|g| {
        g.listeners_valid
            && g.production
                .iter()
                .chain(g.test.iter())
                .all(|(r, _)| listeners.contains(&r.to_string()))
    });
    if refs_resolve {
        check_listener_actions(cx, meta, &owners.listeners);
    }
    monitoring::cross_check(
        cx,
        &meta.alarms,
        &meta.filters,
        &target_groups,
        &services,
        &meta.groups,
    );
    pipelines::cross_check(cx, &meta.repositories, &meta.pipelines, &meta.groups, &services);
    check_static_targets(cx, meta, &owners.target_groups);
    check_rule_forwards(cx, meta, &owners.target_groups);
    check_swarm_load_balancers(cx, meta);
    check_swarm_https(cx, meta);
}

/// A load balancer a `runtime: swarm` service's group routes through runs on every node of the
/// swarm, from an image holding nothing but `cutover`: the certificate and key files an HTTPS
/// listener names are on the manager's disk, not in the nodes' containers.
fn check_swarm_https(cx: &mut Cx<'_>, meta: &Meta) {
    let mut swarm_lbs: HashMap<&str, &str> = HashMap::new();
    for g in &meta.groups {
        let Some((service, _)) = &g.service else { continue };
        let on_swarm = meta
            .services
            .iter()
            .any(|s| s.swarm && s.name.as_ref().is_some_and(|(n, _)| n == service));
        if on_swarm {
            for (listener, _) in g.production.iter().chain(g.test.iter()) {
                swarm_lbs.entry(listener.load_balancer.as_str()).or_insert(service.as_str());
            }
        }
    }
    for lb in &meta.load_balancers {
        let Some((lb_name, _)) = &lb.name else { continue };
        let Some(service) = swarm_lbs.get(lb_name.as_str()) else { continue };
        for listener in &lb.listeners {
            let (Some(loc), Some((name, _))) = (&listener.https, &listener.name) else { continue };
            cx.error(
                loc.pos,
                &loc.path,
                format!(
                    "listener `{lb_name}/{name}` is HTTPS, but load balancer `{lb_name}` serves \
                     service `{service}` (`runtime: swarm`) and so runs on every node of the \
                     swarm, where its certificate and key files cannot be read: serve \
                     `{lb_name}` over HTTP and terminate TLS in front of the nodes, or give the \
                     HTTPS listener a load balancer of its own for services not on the swarm"
                ),
            );
        }
    }
}

/// A load balancer routed by a `runtime: swarm` service's group runs on the swarm's nodes, where
/// the tasks of a process or Docker service (on the manager's own addresses and networks)
/// cannot be reached: one load balancer serves swarm services only, or none.
fn check_swarm_load_balancers(cx: &mut Cx<'_>, meta: &Meta) {
    // The first group routing through each load balancer: its service, whether that runs on
    // the swarm, and the line of the group's listener.
    let mut first: HashMap<&str, (&str, bool, u32)> = HashMap::new();
    for g in &meta.groups {
        let Some((service, _)) = &g.service else { continue };
        let Some(s) =
            meta.services.iter().find(|s| s.name.as_ref().is_some_and(|(n, _)| n == service))
        else {
            continue;
        };
        for (listener, loc) in g.production.iter().chain(g.test.iter()) {
            let lb = listener.load_balancer.as_str();
            let Some(&(other, other_swarm, line)) = first.get(lb) else {
                first.insert(lb, (service, s.swarm, loc.pos.line()));
                continue;
            };
            if other_swarm == s.swarm || other == service {
                continue;
            }
            let (swarm_service, local_service) =
                if s.swarm { (service.as_str(), other) } else { (other, service.as_str()) };
            cx.error(
                loc.pos,
                &loc.path,
                format!(
                    "load balancer `{lb}` also serves service `{other}` (line {line}); service \
                     `{swarm_service}` runs on the swarm, so `{lb}` runs on the swarm's nodes, \
                     where the tasks of service `{local_service}` (not `runtime: swarm`) cannot \
                     be reached: give `{local_service}`'s deployment group a load balancer of \
                     its own, or run `{local_service}` with `runtime: swarm` too"
                ),
            );
        }
    }
}

/// Names unique per kind (listeners per load balancer, deployment groups per application).
fn check_names_unique(cx: &mut Cx<'_>, meta: &Meta) {
    let lb_names: Vec<&Named> =
        meta.load_balancers.iter().filter_map(|lb| lb.name.as_ref()).collect();
    check_unique(cx, "load balancer", lb_names.iter().copied());
    for lb in &meta.load_balancers {
        check_unique(cx, "listener", lb.listeners.iter().filter_map(|l| l.name.as_ref()));
    }
    check_unique(cx, "target group", meta.target_groups.iter().filter_map(|t| t.name.as_ref()));
    check_unique(cx, "service", meta.services.iter().filter_map(|s| s.name.as_ref()));
    check_unique(cx, "deployment config", &meta.configs);
    check_unique(cx, "hook", &meta.hooks);
    let mut first_group: HashMap<(String, String), u32> = HashMap::new();
    for g in &meta.groups {
        if let (Some(app), Some((name, loc))) = (&g.application, &g.name) {
            let key = (app.clone(), name.clone());
            if let Some(line) = first_group.get(&key) {
                cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "duplicate deployment group `{name}` in application `{app}` (first on line \
                         {line})"
                    ),
                );
            } else {
                first_group.insert(key, loc.pos.line());
            }
        }
    }
}

/// Static `targets` only in a target group no service fills and no deployment group uses.
fn check_static_targets(cx: &mut Cx<'_>, meta: &Meta, group_owned: &HashMap<String, Owner>) {
    for t in &meta.target_groups {
        if let (Some((name, _)), Some(loc)) = (&t.name, &t.targets) {
            let used_by_service = meta
                .services
                .iter()
                .any(|s| s.target_group.as_ref().is_some_and(|(n, _)| n == name));
            if used_by_service || group_owned.contains_key(name) {
                cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "target group `{name}` gets its targets from a service; remove `targets` \
                         (static targets are for groups no service uses)"
                    ),
                );
            }
        }
    }
}

/// The deployment group that manages each listener, target group and service: one at most.
#[derive(Default)]
struct Owners {
    listeners: HashMap<ListenerRef, Owner>,
    target_groups: HashMap<String, Owner>,
    services: HashMap<String, Owner>,
}

impl Owners {
    /// Claims what group `index` manages, reporting what another group claimed first.
    fn claim(&mut self, cx: &mut Cx<'_>, meta: &Meta, index: usize, g: &GroupMeta) {
        let group = g.name.as_ref().map_or_else(|| "?".to_string(), |(n, _)| n.clone());
        let owner = |loc: &Loc| Owner { index, group: group.clone(), line: loc.pos.line() };
        if let Some((service, loc)) = &g.service {
            claim_one(cx, &mut self.services, service.clone(), owner(loc), loc, |o| {
                format!(
                    "service `{service}` is already deployed by deployment group `{}` (line {}); \
                     a service belongs to at most one group",
                    o.group, o.line
                )
            });
        }
        for (tg, loc) in g.target_groups.iter().flat_map(|(names, _)| names) {
            claim_one(cx, &mut self.target_groups, tg.clone(), owner(loc), loc, |o| {
                format!(
                    "target group `{tg}` is already used by deployment group `{}` (line {}); \
                     each group needs its own pair",
                    o.group, o.line
                )
            });
        }
        let pair: Vec<&str> = g
            .target_groups
            .iter()
            .flat_map(|(names, _)| names.iter().map(|(n, _)| n.as_str()))
            .collect();
        for (r, loc) in g.production.iter().chain(g.test.iter()) {
            // A group whose traffic is a rule of the listener shares it with other groups'
            // rules; only a group that routes the default action owns the listener.
            if routes_by_rule(meta, r, &pair) {
                continue;
            }
            claim_one(cx, &mut self.listeners, r.clone(), owner(loc), loc, |o| {
                format!(
                    "listener {r} is already managed by deployment group `{}` (line {}); a \
                     listener belongs to at most one group",
                    o.group, o.line
                )
            });
        }
    }
}

/// Whether listener `r` has a rule that forwards to (some of) `pair` only: a deployment group
/// with that pair routes that rule, as CodeDeploy updates the listener rules that forward to its
/// target groups, and leaves the listener's default action alone.
fn routes_by_rule(meta: &Meta, r: &ListenerRef, pair: &[&str]) -> bool {
    let Some(listener) = find_listener(meta, r) else { return false };
    listener.rules.iter().filter_map(|rule| rule.action.as_ref()).any(|a| {
        !a.forward.is_empty() && a.forward.iter().all(|(tg, _)| pair.contains(&tg.as_str()))
    })
}

fn find_listener<'m>(meta: &'m Meta, r: &ListenerRef) -> Option<&'m ListenerMeta> {
    let lb = meta
        .load_balancers
        .iter()
        .find(|lb| lb.name.as_ref().is_some_and(|(n, _)| *n == r.load_balancer))?;
    lb.listeners.iter().find(|l| l.name.as_ref().is_some_and(|(n, _)| *n == r.listener))
}

/// A rule that forwards to a deployment group's target groups is that group's traffic: it must
/// be on the group's production or test listener and forward to that group's pair only.
fn check_rule_forwards(cx: &mut Cx<'_>, meta: &Meta, target_groups: &HashMap<String, Owner>) {
    for lb in &meta.load_balancers {
        let Some((lb_name, _)) = &lb.name else { continue };
        for l in &lb.listeners {
            let Some((listener, _)) = &l.name else { continue };
            let r = ListenerRef { load_balancer: lb_name.clone(), listener: listener.clone() };
            for action in l.rules.iter().filter_map(|rule| rule.action.as_ref()) {
                let mut owner_of_rule: Option<&Owner> = None;
                for (tg, loc) in &action.forward {
                    let owner = target_groups.get(tg);
                    if let (Some(o), Some(first)) = (owner, owner_of_rule)
                        && o.index != first.index
                    {
                        cx.error(
                            loc.pos,
                            &loc.path,
                            format!(
                                "target group `{tg}` belongs to deployment group `{}`, but this rule forwards to `{}`'s; a rule is one group's traffic, give each group a rule of its own",
                                o.group, first.group
                            ),
                        );
                        continue;
                    }
                    let Some(o) = owner else { continue };
                    owner_of_rule = Some(o);
                    let g = &meta.groups[o.index];
                    let on_group_listener =
                        g.production.iter().chain(g.test.iter()).any(|(gr, _)| *gr == r);
                    if !on_group_listener {
                        cx.error(
                            loc.pos,
                            &loc.path,
                            format!(
                                "target group `{tg}` belongs to deployment group `{}`, which does not route listener {r}; a rule forwarding to it goes on that group's production_listener or test_listener",
                                o.group
                            ),
                        );
                    }
                }
                if let Some(first) = owner_of_rule
                    && let Some((tg, loc)) =
                        action.forward.iter().find(|(tg, _)| !target_groups.contains_key(tg))
                {
                    cx.error(
                        loc.pos,
                        &loc.path,
                        format!(
                            "target group `{tg}` is not deployment group `{}`'s, but this rule forwards to that group's; a rule is one group's traffic",
                            first.group
                        ),
                    );
                }
            }
        }
    }
}

/// Records `owner` for `key` unless another group has it: then reports `taken` at `loc`.
fn claim_one<K: std::hash::Hash + Eq>(
    cx: &mut Cx<'_>,
    owners: &mut HashMap<K, Owner>,
    key: K,
    owner: Owner,
    loc: &Loc,
    taken: impl FnOnce(&Owner) -> String,
) {
    match owners.get(&key) {
        Some(o) if o.index != owner.index => cx.error(loc.pos, &loc.path, taken(o)),
        Some(_) => {}
        None => {
            owners.insert(key, owner);
        }
    }
}

/// The deployment group that claimed a listener, target group or service first.
struct Owner {
    index: usize,
    group: String,
    line: u32,
}

fn check_binds(cx: &mut Cx<'_>, meta: &Meta) {
    let mut seen: Vec<(SocketAddr, String, u32)> = Vec::new();
    for lb in &meta.load_balancers {
        let lb_name = lb.name.as_ref().map_or("?", |(n, _)| n.as_str());
        for l in &lb.listeners {
            let Some((addr, loc)) = &l.bind else { continue };
            let listener_name = l.name.as_ref().map_or("?", |(n, _)| n.as_str());
            let clash = seen.iter().find(|(other, _, _)| {
                other.port() == addr.port()
                    && (other.ip() == addr.ip()
                        || other.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            });
            if let Some((other, name, line)) = clash {
                cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "{addr} clashes with listener {name} on {other} (line {line}); each \
                         listener needs its own port"
                    ),
                );
            } else {
                seen.push((*addr, format!("{lb_name}/{listener_name}"), loc.pos.line()));
            }
        }
    }
}

/// `lb/listener` for every declared listener.
/// ALB's quota of target groups per load balancer: those its listeners' actions and rules forward
/// to, and the pairs of the deployment groups on its listeners. Reported at the reference that
/// brings in one too many.
fn check_target_groups_per_load_balancer(cx: &mut Cx<'_>, meta: &Meta) {
    use super::load_balancing::TARGET_GROUPS_PER_LOAD_BALANCER_MAX as MAX;
    for lb in &meta.load_balancers {
        let Some((lb_name, _)) = &lb.name else { continue };
        let mut references: Vec<&Named> = Vec::new();
        for l in &lb.listeners {
            let rule_actions = l.rules.iter().filter_map(|r| r.action.as_ref());
            references.extend(l.action.iter().chain(rule_actions).flat_map(|a| &a.forward));
        }
        for g in &meta.groups {
            let on_lb =
                g.production.iter().chain(g.test.iter()).any(|(r, _)| r.load_balancer == *lb_name);
            if let (true, Some((pair, _))) = (on_lb, &g.target_groups) {
                references.extend(pair);
            }
        }
        let mut seen: HashSet<&str> = HashSet::new();
        for (name, loc) in references {
            if !seen.insert(name) {
                continue;
            }
            if seen.len() > MAX {
                cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "`{name}` is load balancer `{lb_name}`'s target group number {}; a load \
                         balancer routes to at most {MAX} (ALB's quota): serve this one from a \
                         listener of another load balancer",
                        seen.len()
                    ),
                );
                break;
            }
        }
    }
}

fn declared_listeners(meta: &Meta) -> Vec<String> {
    meta.load_balancers
        .iter()
        .flat_map(|lb| {
            let lb_name = lb.name.as_ref().map(|(n, _)| n.clone());
            lb.listeners
                .iter()
                .filter_map(move |l| Some(format!("{}/{}", lb_name.clone()?, l.name.as_ref()?.0)))
        })
        .collect()
}

/// What one deployment group names: its target-group pair, service, listeners, deployment
/// config and hooks.
fn check_group_refs(
    cx: &mut Cx<'_>,
    meta: &Meta,
    g: &GroupMeta,
    target_groups: &[&str],
    services: &[&str],
    hooks: &[&str],
    configs: &[&str],
) {
    check_group_pair(cx, g, target_groups);
    check_group_service(cx, meta, g, services);
    check_group_listeners(cx, meta, g);
    check_group_config(cx, g, configs);
    check_group_hooks(cx, g, hooks);
    if let Some(loc) = &g.on_alarm
        && g.alarms_empty
    {
        cx.note(
            loc.pos,
            &loc.path,
            "this group watches no alarms, so DEPLOYMENT_STOP_ON_ALARM never fires; add `alarms`",
        );
    }
}

/// Two different target groups, both declared.
fn check_group_pair(cx: &mut Cx<'_>, g: &GroupMeta, target_groups: &[&str]) {
    if let Some((names, _)) = &g.target_groups {
        for (tg, loc) in names {
            if !target_groups.contains(&tg.as_str()) {
                unknown(cx, loc, "target group", tg, target_groups, "target_groups");
            }
        }
        if names.len() == 2 && names[0].0 == names[1].0 {
            let loc = &names[1].1;
            cx.error(
                loc.pos,
                &loc.path,
                format!(
                    "`{}` is named twice; a deployment group needs two different target groups \
                     (blue and green take turns)",
                    names[1].0
                ),
            );
        }
    }
}

/// The service exists, has a load balancer, and starts its tasks in one of the group's pair.
fn check_group_service(cx: &mut Cx<'_>, meta: &Meta, g: &GroupMeta, services: &[&str]) {
    let pair: Vec<&str> = g
        .target_groups
        .iter()
        .flat_map(|(names, _)| names.iter().map(|(n, _)| n.as_str()))
        .collect();
    if let Some((service, loc)) = &g.service {
        if !services.contains(&service.as_str()) {
            unknown(cx, loc, "service", service, services, "services");
        } else if let Some(s) =
            meta.services.iter().find(|s| s.name.as_ref().is_some_and(|(n, _)| n == service))
        {
            match (&s.target_group, &s.lb_loc) {
                (None, None) => cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "service `{service}` has no \
                                                                      load_balancer; a deployment \
                                                                      group moves traffic between \
                                                                      target groups, so give the \
                                                                      service `load_balancer: {{ \
                                                                      target_group: …, \
                                                                      container_name: …, \
                                                                      container_port: … }}`"
                    ),
                ),
                (Some((tg, _)), _) if pair.len() == 2 && !pair.contains(&tg.as_str()) => {
                    if let Some((_, pair_loc)) = &g.target_groups {
                        cx.error(
                            pair_loc.pos,
                            &pair_loc.path,
                            format!(
                                "service `{service}` starts \
                                                                        its tasks in target group \
                                                                        `{tg}`, which is not one \
                                                                        of this pair; put `{tg}` \
                                                                        in target_groups"
                            ),
                        );
                    }
                }
                _ => {}
            }
        }
    }
}

/// Production and test listeners exist, differ, and are on one load balancer.
fn check_group_listeners(cx: &mut Cx<'_>, meta: &Meta, g: &GroupMeta) {
    let listeners = declared_listeners(meta);
    let listener_names: Vec<&str> = listeners.iter().map(String::as_str).collect();
    for (r, loc) in g.production.iter().chain(g.test.iter()) {
        if !listener_names.contains(&r.to_string().as_str()) {
            unknown(
                cx,
                loc,
                "listener",
                &r.to_string(),
                &listener_names,
                "load_balancers[].listeners",
            );
        }
    }
    if let (Some((prod, _)), Some((test, test_loc))) = (&g.production, &g.test) {
        if prod == test {
            cx.error(
                test_loc.pos,
                &test_loc.path,
                format!(
                    "the test listener is the production listener {prod}; use a second listener \
                     for test traffic"
                ),
            );
        } else if prod.load_balancer != test.load_balancer {
            cx.error(
                test_loc.pos,
                &test_loc.path,
                format!(
                    "the test listener is on load balancer `{}` but production is on `{}`; both \
                     must be on the same load balancer",
                    test.load_balancer, prod.load_balancer
                ),
            );
        }
    }
}

fn check_group_config(cx: &mut Cx<'_>, g: &GroupMeta, configs: &[&str]) {
    if let Some((config, loc)) = &g.config
        && !configs.contains(&config.as_str())
    {
        let mut message = format!("no deployment config named `{config}`");
        match suggest(config, configs.iter().copied()) {
            Some(s) => message.push_str(&format!("; did you mean `{s}`?")),
            None => message.push_str(&format!(
                "; use a built-in one ({}) or declare it under `deployment_configs`",
                model::PREDEFINED_CONFIGS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            )),
        }
        cx.error(loc.pos, &loc.path, message);
    }
}

fn check_group_hooks(cx: &mut Cx<'_>, g: &GroupMeta, hooks: &[&str]) {
    for (hook, loc) in &g.hooks {
        if !is_url(hook) && !hooks.contains(&hook.as_str()) {
            let mut message = format!("no hook named `{hook}`");
            match suggest(hook, hooks.iter().copied()) {
                Some(s) => message.push_str(&format!("; did you mean `{s}`?")),
                None => message
                    .push_str("; declare it under `hooks`, or give an http:// or https:// URL"),
            }
            cx.error(loc.pos, &loc.path, message);
        }
    }
}

/// A listener either has a default action or is managed by a deployment group; a managed one may
/// start forwarding to its group's target groups, nothing else.
fn check_listener_actions(cx: &mut Cx<'_>, meta: &Meta, owners: &HashMap<ListenerRef, Owner>) {
    for lb in &meta.load_balancers {
        let Some((lb_name, _)) = &lb.name else { continue };
        for l in &lb.listeners {
            let Some((listener, name_loc)) = &l.name else { continue };
            let r = ListenerRef { load_balancer: lb_name.clone(), listener: listener.clone() };
            match (&l.action, owners.get(&r)) {
                (None, None) if !l.rules.is_empty() => cx.error(
                    name_loc.pos,
                    &name_loc.path,
                    format!(
                        "listener {r} has no default_action, so a request none of its rules takes \
                         would get nothing; add one, like `default_action: {{ fixed_response: \
                         {{ status_code: 404 }} }}`"
                    ),
                ),
                (None, None) => cx.error(
                    name_loc.pos,
                    &name_loc.path,
                    format!(
                        "listener {r} has no default_action and no deployment group uses it, \
                             so it would serve nothing; add a default_action or name it in a \
                             deployment group"
                    ),
                ),
                (Some(action), Some(owner)) if !action.is_forward => cx.error(
                    action.loc.pos,
                    &action.loc.path,
                    format!(
                        "listener {r} is managed by deployment group `{}`, which sets its \
                             forward; remove this default_action{}",
                        owner.group,
                        if l.rules.is_empty() {
                            ""
                        } else {
                            ", or give the group a rule that forwards to its target groups"
                        }
                    ),
                ),
                (Some(action), Some(owner)) => {
                    let pair: Vec<&str> = meta.groups[owner.index]
                        .target_groups
                        .iter()
                        .flat_map(|(names, _)| names.iter().map(|(n, _)| n.as_str()))
                        .collect();
                    for (tg, loc) in &action.forward {
                        if !pair.is_empty() && !pair.contains(&tg.as_str()) {
                            cx.error(
                                loc.pos,
                                &loc.path,
                                format!(
                                    "listener {r} is managed by \
                                                                  deployment group `{}`, which \
                                                                  only forwards to its own target \
                                                                  groups ({}); remove \
                                                                  `{tg}`",
                                    owner.group,
                                    pair.join(", ")
                                ),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Checks a service's `load_balancer` against the task definition it runs: the container exists
/// and maps `container_port`. Errors point at the service's fields in the cutover.yaml text.
pub fn check_service_against(
    cutover_file: &str,
    cutover_text: &str,
    service: &ServiceSpec,
    td: &TaskDefinition,
) -> Result<(), Errors> {
    let Some(lb) = &service.load_balancer else { return Ok(()) };
    let at = |key: &str| locate_service_field(cutover_text, &service.name, key);
    let names: Vec<&str> = td.container_definitions.iter().map(|c| c.name.as_str()).collect();
    let error = match td.container(&lb.container_name) {
        None => {
            let (pos, path) = at("container_name");
            let mut message = format!(
                "task definition `{}` has no container named `{}`",
                td.family, lb.container_name
            );
            match suggest(&lb.container_name, names.iter().copied()) {
                Some(s) => message.push_str(&format!("; did you mean `{s}`?")),
                None => message.push_str(&format!("; its containers are: {}", names.join(", "))),
            }
            Diagnostic::error(cutover_file, pos, &path, message)
        }
        Some(c) if !c.port_mappings.iter().any(|m| m.container_port == lb.container_port) => {
            let (pos, path) = at("container_port");
            let ports: Vec<String> =
                c.port_mappings.iter().map(|m| m.container_port.to_string()).collect();
            let advice = if ports.is_empty() {
                format!(
                    "it has no portMappings; add {{ \"containerPort\": {} }} to it in the task \
                     definition",
                    lb.container_port
                )
            } else {
                format!("use one of its containerPorts: {}", ports.join(", "))
            };
            Diagnostic::error(
                cutover_file,
                pos,
                &path,
                format!("container `{}` does not map port {}; {advice}", c.name, lb.container_port),
            )
        }
        Some(_) => return Ok(()),
    };
    Err(Errors(vec![error]))
}

fn locate_service_field(text: &str, service: &str, key: &str) -> (Pos, String) {
    let fallback = (Pos::START, format!("services[?].load_balancer.{key}"));
    let Ok(doc) = tree::parse("", text, Syntax::JsonOrYaml) else { return fallback };
    let Some(Value::Seq(items)) = doc.root.get("services", false).map(|n| &n.value) else {
        return fallback;
    };
    for (i, item) in items.iter().enumerate() {
        if item.get("name", false).and_then(Node::as_str) != Some(service) {
            continue;
        }
        let path = child_key(&child_index("services", i), "load_balancer");
        let Some(lb) = item.get("load_balancer", false) else { return (item.pos, path) };
        return match lb.get(key, false) {
            Some(n) => (n.pos, child_key(&path, key)),
            None => (lb.pos, child_key(&path, key)),
        };
    }
    fallback
}
