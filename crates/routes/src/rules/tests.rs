//! Table-driven against the examples of ALB's "Condition types for listener rules".

use super::*;

struct Req {
    host: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    method: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    source: IpAddr,
}

fn req(host: &'static str, target: &'static str) -> Req {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    Req {
        host,
        path,
        query,
        method: "GET",
        headers: Vec::new(),
        source: "10.0.0.1".parse().unwrap(),
    }
}

impl RequestView for Req {
    fn host(&self) -> &[u8] {
        self.host.as_bytes()
    }
    fn path(&self) -> &[u8] {
        self.path.as_bytes()
    }
    fn query(&self) -> Option<&[u8]> {
        self.query.map(str::as_bytes)
    }
    fn method(&self) -> &[u8] {
        self.method.as_bytes()
    }
    fn source_ip(&self) -> IpAddr {
        self.source
    }
    fn any_header(&self, name: &[u8], matches: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
            .any(|(_, v)| matches(v.as_bytes()))
    }
}

fn values(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn matcher(conditions: Vec<Condition>) -> Matcher {
    Matcher::of_conditions(&conditions).expect("ALB accepts these conditions")
}

#[test]
fn host_conditions_match_case_insensitively_with_wildcards_and_ignore_the_port() {
    let cases: &[(&[&str], &str, bool)] = &[
        (&["example.com"], "example.com", true),
        (&["example.com"], "EXAMPLE.Com", true),
        (&["example.com"], "example.com:8080", true),
        (&["example.com"], "www.example.com", false),
        // ALB: *.example.com matches test.example.com but not example.com.
        (&["*.example.com"], "test.example.com", true),
        (&["*.example.com"], "a.b.example.com", true),
        (&["*.example.com"], "example.com", false),
        (&["*.example.com"], "test.example.com:443", true),
        (&["api?.example.com"], "api2.example.com", true),
        (&["api?.example.com"], "api.example.com", false),
        (&["api?.example.com"], "api22.example.com", false),
        (&["www.example.com", "example.com"], "example.com", true),
        (&["www.example.com", "example.com"], "example.org", false),
    ];
    for (patterns, host, expected) in cases {
        let m = matcher(vec![Condition::HostHeader { values: values(patterns) }]);
        assert_eq!(m.matches(&req(host, "/")), *expected, "{patterns:?} against {host}");
    }
}

#[test]
fn path_patterns_are_case_sensitive_and_see_the_path_only() {
    let cases: &[(&str, &str, bool)] = &[
        ("/img/*", "/img/picture.jpg", true),
        ("/img/*", "/img/", true),
        ("/img/*", "/img", false),
        ("/img/*", "/IMG/picture.jpg", false),
        ("/img/*/pics", "/img/2024/pics", true),
        ("/img/*/pics", "/img/a/b/pics", true),
        ("/img/*/pics", "/img/a/pics/x", false),
        ("/js/*", "/js/app.js?v=2", true),
        ("/item/?", "/item/7", true),
        ("/item/?", "/item/77", false),
        ("*.jpg", "/a/b.jpg", true),
        ("/", "/", true),
        ("/", "/a", false),
        ("/a*b*c*d", "/aXbXcXd", true),
        ("/a*b*c*d", "/aXbXcX", false),
        // The literal start and end of a pattern never overlap in the text.
        ("/ab*ba", "/aba", false),
        ("/ab*ba", "/abba", true),
        ("/ab?ba", "/abXba", true),
    ];
    for (pattern, target, expected) in cases {
        let m = matcher(vec![Condition::PathPattern { values: values(&[pattern]) }]);
        assert_eq!(m.matches(&req("example.com", target)), *expected, "{pattern} against {target}");
    }
}

#[test]
fn header_method_query_and_source_ip_conditions_match_as_alb_documents() {
    let chrome = Condition::HttpHeader {
        name: "User-Agent".into(),
        values: values(&["*Chrome*", "*Safari*"]),
    };
    let mut r = req("example.com", "/");
    r.headers = vec![("user-agent", "Mozilla/5.0 (X11) CHROME/120")];
    assert!(matcher(vec![chrome.clone()]).matches(&r), "header values are case-insensitive");
    r.headers = vec![("User-Agent", "curl/8"), ("user-agent", "x Safari y")];
    assert!(matcher(vec![chrome.clone()]).matches(&r), "any field of the name may match");
    r.headers = vec![("user-agent", "curl/8")];
    assert!(!matcher(vec![chrome.clone()]).matches(&r));
    r.headers = vec![];
    assert!(!matcher(vec![chrome]).matches(&r), "an absent header matches nothing");

    let method = matcher(vec![Condition::HttpRequestMethod { values: values(&["GET", "HEAD"]) }]);
    for (m, expected) in [("GET", true), ("HEAD", true), ("get", false), ("POST", false)] {
        let mut r = req("example.com", "/");
        r.method = m;
        assert_eq!(method.matches(&r), expected, "method {m} is compared exactly");
    }

    // ALB's example: version=v1, or any parameter whose value holds `example`.
    let query = matcher(vec![Condition::QueryString {
        values: vec![
            QueryValue { key: Some("version".into()), value: "v1".into() },
            QueryValue { key: None, value: "*example*".into() },
        ],
    }]);
    for (target, expected) in [
        ("/?version=v1", true),
        ("/?a=b&VERSION=V1", true),
        ("/?version=v2", false),
        ("/?q=an-example-here", true),
        ("/?v1=version", false),
        ("/", false),
        ("/version=v1", false),
    ] {
        assert_eq!(query.matches(&req("example.com", target)), expected, "{target}");
    }

    let source = matcher(vec![Condition::SourceIp {
        values: values(&["192.0.2.0/24", "2001:db8::/32", "198.51.100.10/32"]),
    }]);
    for (ip, expected) in [
        ("192.0.2.77", true),
        ("192.0.3.1", false),
        ("198.51.100.10", true),
        ("198.51.100.11", false),
        ("2001:db8:1::5", true),
        ("2001:db9::1", false),
        ("::ffff:192.0.2.9", true),
    ] {
        let mut r = req("example.com", "/");
        r.source = ip.parse().unwrap();
        assert_eq!(source.matches(&r), expected, "{ip}");
    }
    let everyone = matcher(vec![Condition::SourceIp { values: values(&["0.0.0.0/0"]) }]);
    assert!(everyone.matches(&req("example.com", "/")));
}

#[test]
fn conditions_are_anded_values_ored_and_the_lowest_priority_wins() {
    let api = matcher(vec![
        Condition::HostHeader { values: values(&["api.example.com"]) },
        Condition::PathPattern { values: values(&["/v1/*", "/v2/*"]) },
    ]);
    assert!(api.matches(&req("api.example.com", "/v2/users")));
    assert!(!api.matches(&req("api.example.com", "/v3/users")), "a path neither value takes");
    assert!(!api.matches(&req("www.example.com", "/v1/users")), "the host condition fails");

    let mut rules: Vec<(u32, Matcher, &str)> = vec![
        (20, matcher(vec![Condition::HostHeader { values: values(&["*.example.com"]) }]), "any"),
        (5, matcher(vec![Condition::PathPattern { values: values(&["/admin/*"]) }]), "admin"),
        (10, api, "api"),
    ];
    rules.sort_by_key(|(p, _, _)| *p);
    let rules: Vec<(Matcher, &str)> = rules.into_iter().map(|(_, m, a)| (m, a)).collect();
    let chosen = |host, target| first_match(&rules, &req(host, target)).copied();
    assert_eq!(chosen("api.example.com", "/admin/x"), Some("admin"));
    assert_eq!(chosen("api.example.com", "/v1/x"), Some("api"));
    assert_eq!(chosen("api.example.com", "/other"), Some("any"));
    assert_eq!(chosen("example.org", "/other"), None, "no rule: the default action");
}

#[test]
fn rules_alb_would_refuse_are_refused_with_the_reason() {
    let refused = |conditions: Vec<Condition>| {
        Matcher::of_conditions(&conditions).expect_err("ALB refuses this").to_string()
    };
    let host = |v: &[&str]| Condition::HostHeader { values: values(v) };
    let path = |v: &[&str]| Condition::PathPattern { values: values(v) };
    assert_eq!(
        refused(vec![]),
        "a rule needs at least one condition; the listener's default action is the rule without any"
    );
    assert_eq!(
        refused(vec![host(&["a.com"]), host(&["b.com"])]),
        "host-header appears twice; a rule may have one host-header condition (list its values together)"
    );
    assert_eq!(
        refused(vec![host(&["a.com", "b.com", "c.com", "d.com"])]),
        "host-header has 4 values; at most 3 per condition (add another rule)"
    );
    assert_eq!(
        refused(vec![host(&["a.com", "b.com", "c.com"]), path(&["/a", "/b", "/c"])]),
        "the rule's conditions have 6 values together; at most 5 per rule"
    );
    assert_eq!(
        refused(vec![host(&["*.*.*.com"]), path(&["/*/*/*"])]),
        "the rule's values hold 6 wildcards (* and ?) together; at most 5 per rule"
    );
    assert_eq!(
        refused(vec![host(&["localhost"])]),
        "host-header value \"localhost\" needs a `.`, like example.com or *.example.com"
    );
    assert_eq!(
        refused(vec![host(&["example.com:8080"])]),
        "host-header value \"example.com:8080\" must end in letters after its last `.` (ports are ignored: leave them out)"
    );
    assert_eq!(
        refused(vec![path(&["img/*"])]),
        "path-pattern value \"img/*\" must start with / (or a wildcard)"
    );
    assert_eq!(
        refused(vec![path(&["/a b"])]),
        "path-pattern value \"/a b\" may hold only letters, digits, _-.$/~\"'@:+& and the wildcards * and ?"
    );
    assert_eq!(
        refused(vec![Condition::HttpHeader { name: "Host".into(), values: values(&["a.com"]) }]),
        "http-header value \"Host\" is the host: use a host-header condition"
    );
    assert_eq!(
        refused(vec![Condition::HttpRequestMethod { values: values(&["get"]) }]),
        "http-request-method value \"get\" may hold only uppercase letters, - and _ (methods are compared exactly)"
    );
    assert_eq!(
        refused(vec![Condition::SourceIp { values: values(&["10.0.0.0/33"]) }]),
        "source-ip value \"10.0.0.0/33\" is not a CIDR block like 10.0.0.0/8 or 2001:db8::/32"
    );
    assert_eq!(
        refused(vec![Condition::PathPattern { values: vec![] }]),
        "path-pattern has no values; give 1-3"
    );
    let long = format!("/{}", "a".repeat(128));
    assert_eq!(
        refused(vec![Condition::PathPattern { values: vec![long.clone()] }]),
        format!("path-pattern value {long:?} must be 1-128 characters")
    );
    // Header and query-string conditions may repeat, to AND several of them.
    let header = |v: &str| Condition::HttpHeader { name: "X-A".into(), values: values(&[v]) };
    assert!(Matcher::of_conditions(&[header("1"), header("2")]).is_ok());
    let rule = Rule {
        priority: 50_001,
        conditions: vec![host(&["a.com"])],
        action: crate::Action::FixedResponse(crate::FixedResponse {
            status_code: 200,
            content_type: None,
            body: String::new(),
        }),
    };
    assert_eq!(Matcher::new(&rule).unwrap_err().to_string(), "priority 50001 is not 1-50000");
}

#[test]
fn a_pathological_wildcard_is_matched_in_linear_time() {
    let pattern = format!("/{}b", "*a".repeat(4));
    let m = matcher(vec![Condition::PathPattern { values: vec![pattern] }]);
    let text: &'static str = Box::leak(format!("/{}", "a".repeat(100_000)).into_boxed_str());
    assert!(!m.matches(&req("example.com", text)));
}

#[test]
fn rules_round_trip_through_json_with_alb_s_field_names() {
    let rule = Rule {
        priority: 10,
        conditions: vec![
            Condition::HostHeader { values: values(&["*.example.com"]) },
            Condition::QueryString { values: vec![QueryValue { key: None, value: "x".into() }] },
        ],
        action: crate::Action::FixedResponse(crate::FixedResponse {
            status_code: 404,
            content_type: None,
            body: String::new(),
        }),
    };
    let json = serde_json::to_string(&rule).unwrap();
    assert!(json.contains(r#"{"field":"host-header","values":["*.example.com"]}"#), "{json}");
    assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), rule);
}
