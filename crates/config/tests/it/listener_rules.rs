//! Listener rules in cutover.yaml: what a valid file gives, and every rule ALB would refuse
//! reported at its line and column.

use config::{ListenerAction, parse_cutover_file};
use expect_test::expect;
use routes::{Condition, QueryValue};

use crate::check;

const RULES: &str = "
load_balancers:
  - name: edge
    listeners:
      - name: http
        port: 8080
        default_action: { fixed_response: { status_code: 404, body: no such site } }
        rules:
          - priority: 20
            conditions:
              - host_header: [api.example.com, '*.api.example.com']
              - path_pattern: ['/v1/*']
            action: { forward: [{ target_group: api-blue, weight: 9 }, { target_group: api-green, weight: 1 }] }
          - priority: 10
            conditions:
              - http_header: { name: X-Canary, values: ['yes'] }
              - query_string: [{ key: version, value: v2 }, { value: '*beta*' }]
            action: { forward: api-green }
          - priority: 30
            conditions: [{ http_request_method: [GET, HEAD] }, { source_ip: [10.0.0.0/8, '2001:db8::/32'] }]
            action: { redirect: { host: 'www.#{host}', path: '/#{path}', query: '#{query}&from=edge', status_code: 301 } }
target_groups:
  - { name: api-blue, targets: [127.0.0.1:9000] }
  - { name: api-green, targets: [127.0.0.1:9001] }
";

#[test]
fn listener_rules_parse_into_alb_s_conditions_and_actions() {
    check("cutover.yaml", RULES, expect!["ok\n"]);
    let parsed = parse_cutover_file("cutover.yaml", RULES).unwrap().value;
    let rules = &parsed.load_balancers[0].listeners[0].rules;
    assert_eq!(rules.iter().map(|r| r.priority).collect::<Vec<_>>(), [20, 10, 30]);
    assert_eq!(
        rules[1].conditions,
        vec![
            Condition::HttpHeader { name: "X-Canary".into(), values: vec!["yes".into()] },
            Condition::QueryString {
                values: vec![
                    QueryValue { key: Some("version".into()), value: "v2".into() },
                    QueryValue { key: None, value: "*beta*".into() },
                ]
            },
        ]
    );
    assert!(matches!(&rules[0].action, ListenerAction::Forward(f) if f.len() == 2));
    let ListenerAction::Redirect(r) = &rules[2].action else { panic!("a redirect") };
    assert_eq!(r.query.as_deref(), Some("#{query}&from=edge"));
}

#[test]
fn rules_alb_would_refuse_are_errors_at_their_place() {
    check(
        "cutover.yaml",
        "
load_balancers:
  - name: edge
    listeners:
      - name: http
        port: 8080
        default_action: { fixed_response: { status_code: 404 } }
        rules:
          - priority: 10
            conditions: [{ host_header: [api.example.com] }]
            action: { forward: api-blu }
          - priority: 10
            conditions: [{ host_header: [localhost] }, { path_pattern: [a/b] }]
            action: { fixed_response: { status_code: 200 } }
          - priority: 50001
            conditions: [{ host_header: [a.com] }, { host_header: [b.com] }]
            action: { forward: api }
          - priority: 40
            conditions: [{ host_header: [a.com, b.com, c.com] }, { path_pattern: ['/a', '/b', '/c'] }]
            action: { forward: api, redirect: { status_code: 301, path: /x } }
          - priority: 41
            conditions: [{ host_header: ['*.*.*.com'] }, { path_pattern: ['/*/*/*'] }, { source_ip: [10.0.0.0/33] }]
            action: { redirect: { path: '/#{paths}', status_code: 301 } }
          - priority: 42
            conditions: []
            action: { forward: api }
          - priority: 43
            conditions: [{ host_header: [a.com], path_pattern: ['/'] }, { cookie: [x] }, { http_header: { name: Host, values: [a.com] } }]
            action: { forward: api }
          - priority: 44
            conditions: [{ http_request_method: [get] }, { query_string: [{ key: a }] }]
            action: { forward: api }
target_groups:
  - { name: api, targets: [127.0.0.1:9000] }
",
        expect![[r#"
            cutover.yaml:11:32: load_balancers[0].listeners[0].rules[0].action.forward: no target group named `api-blu`; declared target groups: api
            cutover.yaml:12:23: load_balancers[0].listeners[0].rules[1].priority: priority 10 is also the priority of rules[0]; priorities are unique per listener, give this rule another one
            cutover.yaml:13:42: load_balancers[0].listeners[0].rules[1].conditions[0].host_header[0]: host-header value "localhost" needs a `.`, like example.com or *.example.com
            cutover.yaml:13:73: load_balancers[0].listeners[0].rules[1].conditions[1].path_pattern[0]: path-pattern value "a/b" must start with / (or a wildcard)
            cutover.yaml:15:23: load_balancers[0].listeners[0].rules[2].priority: 50001 is out of range: a priority must be 1 to 50000
            cutover.yaml:16:67: load_balancers[0].listeners[0].rules[2].conditions[1].host_header: host-header appears twice; a rule may have one host-header condition (list its values together)
            cutover.yaml:19:25: load_balancers[0].listeners[0].rules[3].conditions: the rule's conditions have 6 values together; at most 5 per rule
            cutover.yaml:20:21: load_balancers[0].listeners[0].rules[3].action: an action has exactly one of `forward`, `fixed_response` or `redirect`
            cutover.yaml:22:102: load_balancers[0].listeners[0].rules[4].conditions[2].source_ip[0]: source-ip value "10.0.0.0/33" is not a CIDR block like 10.0.0.0/8 or 2001:db8::/32
            cutover.yaml:23:41: load_balancers[0].listeners[0].rules[4].action.redirect.path: #{paths} is not a placeholder; use #{protocol}, #{host}, #{port}, #{path}, #{query}
            cutover.yaml:25:25: load_balancers[0].listeners[0].rules[5].conditions: a rule needs at least one condition; the listener's default action is the rule without any
            cutover.yaml:28:26: load_balancers[0].listeners[0].rules[6].conditions[0]: a condition has exactly one of host_header, path_pattern, http_header, http_request_method, query_string, source_ip
            cutover.yaml:28:75: load_balancers[0].listeners[0].rules[6].conditions[1].cookie: unknown field `cookie`; expected one of: host_header, path_pattern, http_header, http_request_method, query_string, source_ip
            cutover.yaml:28:113: load_balancers[0].listeners[0].rules[6].conditions[2].http_header.name: http-header value "Host" is the host: use a host-header condition
            cutover.yaml:31:50: load_balancers[0].listeners[0].rules[7].conditions[0].http_request_method[0]: http-request-method value "get" may hold only uppercase letters, - and _ (methods are compared exactly)
            cutover.yaml:31:75: load_balancers[0].listeners[0].rules[7].conditions[1].query_string[0].value: missing required field `value`; add `value: v1` (and optionally `key: version`)
        "#]],
    );
}

const SHARED: &str = "
load_balancers:
  - name: edge
    listeners:
      - name: http
        port: 8080
        default_action: { fixed_response: { status_code: 404 } }
        rules:
          - { priority: 10, conditions: [{ host_header: [api.example.com] }], action: { forward: api-blue } }
          - { priority: 20, conditions: [{ host_header: [www.example.com] }], action: { forward: www-blue } }
target_groups:
  - { name: api-blue }
  - { name: api-green }
  - { name: www-blue }
  - { name: www-green }
services:
  - { name: api, task_definition: api:1, load_balancer: { target_group: api-blue, container_name: api, container_port: 80 } }
  - { name: www, task_definition: www:1, load_balancer: { target_group: www-blue, container_name: www, container_port: 80 } }
deployment_groups:
  - { application: api, name: api-prod, service: api, target_groups: [api-blue, api-green], production_listener: edge/http }
  - { application: www, name: www-prod, service: www, target_groups: [www-blue, www-green], production_listener: edge/http }
";

#[test]
fn deployment_groups_share_a_listener_each_by_its_own_rule() {
    check("cutover.yaml", SHARED, expect!["ok\n"]);
}

#[test]
fn a_rule_is_one_group_s_traffic_on_that_group_s_listener() {
    let mixed = SHARED
        .replace("action: { forward: www-blue }", "action: { forward: [www-blue, api-green] }");
    let no_default =
        SHARED.replace("        default_action: { fixed_response: { status_code: 404 } }\n", "");
    let without_api_rule = SHARED.replace(
        "          - { priority: 10, conditions: [{ host_header: [api.example.com] }], action: { forward: api-blue } }\n",
        "",
    );
    let elsewhere = format!(
        "{}      - name: other\n        port: 8081\n        default_action: {{ fixed_response: {{ status_code: 404 }} }}\n        rules: [{{ priority: 1, conditions: [{{ path_pattern: ['/api/*'] }}], action: {{ forward: api-green }} }}]\n",
        SHARED.split_once("target_groups:").unwrap().0
    ) + "target_groups:"
        + SHARED.split_once("target_groups:").unwrap().1;
    let all = [mixed, no_default, without_api_rule, elsewhere]
        .iter()
        .map(|text| crate::render(config::validate("cutover.yaml", text)))
        .collect::<Vec<_>>()
        .join("--\n");
    expect![[r#"
        cutover.yaml:7:25: load_balancers[0].listeners[0].default_action: listener edge/http is managed by deployment group `www-prod`, which sets its forward; remove this default_action, or give the group a rule that forwards to its target groups
        cutover.yaml:10:109: load_balancers[0].listeners[0].rules[1].action.forward[1]: target group `api-green` belongs to deployment group `api-prod`, but this rule forwards to `www-prod`'s; a rule is one group's traffic, give each group a rule of its own
        --
        cutover.yaml:5:15: load_balancers[0].listeners[0].name: listener edge/http has no default_action, so a request none of its rules takes would get nothing; add one, like `default_action: { fixed_response: { status_code: 404 } }`
        --
        cutover.yaml:7:25: load_balancers[0].listeners[0].default_action: listener edge/http is managed by deployment group `api-prod`, which sets its forward; remove this default_action, or give the group a rule that forwards to its target groups
        --
        cutover.yaml:14:95: load_balancers[0].listeners[1].rules[0].action.forward: target group `api-green` belongs to deployment group `api-prod`, which does not route listener edge/other; a rule forwarding to it goes on that group's production_listener or test_listener
    "#]]
    .assert_eq(&all);
}

#[test]
fn an_https_listener_takes_more_certificates_chosen_by_sni() {
    let text = "
load_balancers:
  - name: edge
    listeners:
      - name: https
        port: 8443
        protocol: HTTPS
        certificate_file: certs/default.pem
        key_file: certs/default.key
        certificates:
          - { certificate_file: certs/api.pem, key_file: certs/api.key }
        default_action: { fixed_response: { status_code: 404 } }
      - name: http
        port: 8080
        certificates: [{ certificate_file: a.pem, key_file: a.key }]
        default_action: { fixed_response: { status_code: 404 } }
      - name: half
        port: 8444
        protocol: HTTPS
        certificate_file: d.pem
        key_file: d.key
        certificates: [{ certificate_file: a.pem }]
        default_action: { fixed_response: { status_code: 404 } }
";
    check(
        "cutover.yaml",
        text,
        expect![[r#"
            cutover.yaml:15:23: load_balancers[0].listeners[1].certificates: `certificates` is only used with `protocol: HTTPS`; add `protocol: HTTPS` with a default certificate_file and key_file, or remove them
            cutover.yaml:22:24: load_balancers[0].listeners[2].certificates[0].key_file: missing required field `key_file`; the PEM private key's path
        "#]],
    );
    let references: Vec<String> =
        config::file_references(text).iter().map(|r| format!("{} {}", r.field, r.path)).collect();
    assert!(
        references.contains(
            &"load_balancers[0].listeners[0].certificates[0].key_file certs/api.key".to_string()
        ),
        "{references:?}"
    );
    let valid = text.split("      - name: http\n").next().unwrap();
    let parsed = parse_cutover_file("cutover.yaml", valid).unwrap().value;
    let tls = parsed.load_balancers[0].listeners[0].tls.clone().unwrap();
    assert_eq!(tls.certificate_file, "certs/default.pem");
    assert_eq!(
        tls.certificates,
        [routes::CertificateFiles {
            certificate_file: "certs/api.pem".into(),
            key_file: "certs/api.key".into()
        }]
    );
}

/// A file with load balancers at and over ALB's per-load-balancer quotas: `a` has 51 listeners,
/// `b` 101 rules over two listeners, `c` 26 more certificates over two listeners, `d` rules
/// forwarding to 101 target groups; `e` routes to 100 target groups of its own, as many as `d`,
/// and is valid: the quotas are per load balancer, not per installation.
fn over_quotas() -> String {
    let rule = |priority: usize, forward: String| {
        format!(
            "          - {{ priority: {priority}, conditions: [{{ path_pattern: ['/{priority}'] }}], \
             action: {{ forward: {forward} }} }}\n"
        )
    };
    let listener = |name: &str, port: usize| {
        format!(
            "      - {{ name: {name}, port: {port}, default_action: {{ fixed_response: {{ status_code: 404 }} }} }}\n"
        )
    };
    let with_rules = |name: &str, port: usize, rules: &str| {
        format!(
            "      - name: {name}\n        port: {port}\n        \
             default_action: {{ fixed_response: {{ status_code: 404 }} }}\n        rules:\n{rules}"
        )
    };
    let https = |name: &str, port: usize, count: usize| {
        let more: Vec<String> = (0..count)
            .map(|i| format!("{{ certificate_file: c{i}.pem, key_file: c{i}.key }}"))
            .collect();
        format!(
            "      - name: {name}\n        port: {port}\n        protocol: HTTPS\n        \
             certificate_file: default.pem\n        key_file: default.key\n        \
             default_action: {{ fixed_response: {{ status_code: 404 }} }}\n        \
             certificates: [{}]\n",
            more.join(", ")
        )
    };
    let mut yaml = String::from("load_balancers:\n  - name: a\n    listeners:\n");
    for i in 0..51 {
        yaml += &listener(&format!("l{i}"), 10_000 + i);
    }
    yaml += "  - name: b\n    listeners:\n";
    let rules =
        |range: std::ops::Range<usize>| range.map(|p| rule(p, "d0".into())).collect::<String>();
    yaml += &with_rules("first", 11_000, &rules(1..61));
    yaml += &with_rules("second", 11_001, &rules(61..102));
    yaml += "  - name: c\n    listeners:\n";
    yaml += &https("first", 12_000, 20);
    yaml += &https("second", 12_001, 6);
    yaml += "  - name: d\n    listeners:\n";
    let pairs = (0..51)
        .map(|i| {
            rule(
                i + 1,
                format!("[{{ target_group: d{} }}, {{ target_group: d{} }}]", 2 * i, 2 * i + 1),
            )
        })
        .collect::<String>();
    yaml += &with_rules("http", 13_000, &pairs);
    yaml += "  - name: e\n    listeners:\n";
    let pairs = (0..50)
        .map(|i| {
            rule(
                i + 1,
                format!("[{{ target_group: e{} }}, {{ target_group: e{} }}]", 2 * i, 2 * i + 1),
            )
        })
        .collect::<String>();
    yaml += &with_rules("http", 14_000, &pairs);
    yaml += "target_groups:\n";
    for prefix in ["d", "e"] {
        for i in 0..102 {
            yaml += &format!("  - {{ name: {prefix}{i}, targets: [127.0.0.1:9000] }}\n");
        }
    }
    yaml
}

#[test]
fn alb_s_quotas_per_load_balancer_are_errors_at_their_place() {
    check(
        "cutover.yaml",
        &over_quotas(),
        expect![[r#"
            cutover.yaml:4:7: load_balancers[0].listeners: 51 listeners; a load balancer has at most 50 (ALB's quota): put the others on another load balancer
            cutover.yaml:125:11: load_balancers[1].listeners[1].rules: load balancer `b` has 101 rules on its listeners up to this one; at most 100 per load balancer besides the default actions (ALB's quota): put this listener on another load balancer
            cutover.yaml:181:23: load_balancers[2].listeners[1].certificates: load balancer `c` has 26 certificates on its listeners up to this one; at most 25 per load balancer besides each listener's default certificate_file (ALB's quota): put this listener on another load balancer
            cutover.yaml:238:106: load_balancers[3].listeners[0].rules[50].action.forward[0].target_group: `d100` is load balancer `d`'s target group number 101; a load balancer routes to at most 100 (ALB's quota): serve this one from a listener of another load balancer
        "#]],
    );
}
