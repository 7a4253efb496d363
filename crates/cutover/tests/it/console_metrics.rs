//! The console's metrics and alarms pages and the canary judge's section of the deployment page,
//! in the real headless Chromium of `console.rs` against a real `cutover up` and load balancer
//! under real traffic; and every page at phone width. Screenshots go to
//! `target/console-screenshots/`.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Browser, wait_until};
use crate::harness::*;

/// An alarm on blue's requests: under traffic it goes to ALARM, so the alarm pages have a state
/// change, datapoints and a threshold to show.
const BLUE_REQUESTS: &str = r#"alarms:
  - { name: blue-requests, metric: RequestCount, target_group: web-blue, statistic: Sum, period: 1s, evaluation_periods: 1, threshold: 1, comparison: ">=", treat_missing_data: notBreaching }
"#;

/// Clients calling production until dropped, even when the test fails.
struct Traffic(Option<Load>);

impl Drop for Traffic {
    fn drop(&mut self) {
        if let Some(load) = self.0.take() {
            load.finish();
        }
    }
}

impl Browser {
    /// The newest value a graph's legend shows for `line`, as a number (None: no datapoint).
    fn newest(&self, graph: &str, line: &str) -> Option<f64> {
        let text = self.run(&format!(
            "const f = document.querySelector('figure[data-graph={graph:?}] [data-newest={line:?}]');
             return f ? f.textContent : null;"
        ));
        text.as_str().and_then(|t| t.parse().ok())
    }

    /// Whether the page's body scrolls sideways (it must not: tables scroll inside their box).
    fn body_overflow(&self) -> serde_json::Value {
        self.run(
            "const b = document.body; return { scroll: b.scrollWidth, client: b.clientWidth,
               doc: document.documentElement.scrollWidth, view: window.innerWidth };",
        )
    }

    fn resize(&self, width: u32, height: u32) {
        self.runtime.block_on(self.client().set_window_size(width, height)).unwrap();
    }

    /// Tabs through the page as a keyboard user does, until the focus comes round again: each
    /// stop's element (its start), and whether it shows an outline.
    fn keyboard_stops(&self) -> Vec<serde_json::Value> {
        let mut stops = Vec::new();
        for _ in 0..80 {
            // A live part is replaced as it changes; the page gives the focus back to the same
            // link, but the element WebDriver found may be the one just replaced: ask again.
            let tab = || {
                self.runtime.block_on(async {
                    self.client().active_element().await?.send_keys("\u{e004}").await
                })
            };
            (0..3).find_map(|_| tab().ok()).expect("a Tab key sent to the page");
            let stop = self.run(
                "const el = document.activeElement; const s = getComputedStyle(el);
                 return { what: el.outerHTML.slice(0, 90), body: el === document.body,
                          outline: s.outlineStyle !== 'none' && s.outlineWidth !== '0px' };",
            );
            if stop["body"] == json!(true) || stops.contains(&stop) {
                break;
            }
            stops.push(stop);
        }
        stops
    }
}

#[test]
fn the_metrics_page_of_a_target_group_under_traffic_draws_its_request_line_rising_live() {
    let cluster = Cluster::start(Options { top_extra: BLUE_REQUESTS.into(), ..Options::default() });
    cluster.apply_and_wait_for_v1();
    let browser = Browser::start();
    browser.goto(&format!("{}/target-groups/web-blue/metrics?range=5m", cluster.api_url()));
    wait_until(
        "the page to follow its metrics",
        Duration::from_secs(30),
        || browser.run("return document.body.dataset.live || null;"),
        |live| live == &json!("following"),
    );
    browser.run("window.sameDocument = true;");
    // Before the load: at most the few requests `apply_and_wait_for_v1` made.
    let before = browser.newest("Requests", "requests").unwrap_or(0.0);
    assert!(before < 10.0, "{before} requests/s before any load");

    let started = Instant::now();
    let _traffic = Traffic(Some(Load::start(cluster.prod, 2)));
    let rate = wait_until(
        "the request line to rise on the open page",
        Duration::from_secs(30),
        || browser.newest("Requests", "requests"),
        |rate| rate.is_some_and(|r| r >= 50.0),
    );
    eprintln!(
        "the page showed {rate:?} requests/s {:?} after the traffic started",
        started.elapsed()
    );
    assert_eq!(browser.run("return window.sameDocument === true;"), json!(true), "reloaded");
    let drawn = browser
        .run("return document.querySelectorAll('figure[data-graph=\"Requests\"] path.l1').length;");
    assert!(drawn.as_u64().unwrap() >= 1, "no request line drawn: {drawn}");
    browser.screenshot("metrics");

    // The alarm on blue's requests went to ALARM; its page shows why and the change.
    browser.goto(&format!("{}/alarms", cluster.api_url()));
    wait_until(
        "the alarm list to show blue-requests in ALARM",
        Duration::from_secs(30),
        || {
            browser.run("const s = document.querySelector('a[href=\"/alarms/blue-requests\"]')?.closest('tr')?.querySelector('[data-state]'); return s ? s.dataset.state : null;")
        },
        |state| state == &json!("ALARM"),
    );
    browser.screenshot("alarms");
    browser.goto(&format!("{}/alarms/blue-requests", cluster.api_url()));
    let detail = browser.run("return document.querySelector('main').innerText;");
    let detail = detail.as_str().unwrap();
    for shown in ["RequestCount Sum ≥ 1 for 1 of 1 periods of 1 s", "OK → ALARM"] {
        assert!(detail.contains(shown), "{shown:?} not on the alarm's page: {detail}");
    }
    // Its metric against its threshold: both lines drawn.
    let lines = browser.run(
        "return [...document.querySelectorAll('figure[data-graph=\"Recent datapoints\"] path')]
           .map(p => p.getAttribute('class'));",
    );
    assert_eq!(lines, json!(["l1", "l3"]), "the datapoints and the threshold");
    browser.screenshot("alarm");

    // The overview links to each target group's metrics.
    browser.goto(&format!("{}/", cluster.api_url()));
    let linked = browser
        .run("return !!document.querySelector('a[href=\"/target-groups/web-blue/metrics\"]');");
    assert_eq!(linked, json!(true), "no link to web-blue's metrics on the overview");

    // At phone width no page scrolls sideways; wide tables scroll inside their own box.
    browser.resize(390, 844);
    for page in ["/target-groups/web-blue/metrics", "/alarms", "/alarms/blue-requests", "/"] {
        browser.goto(&format!("{}{page}", cluster.api_url()));
        let seen = browser.body_overflow();
        assert!(
            seen["scroll"].as_u64() <= seen["client"].as_u64(),
            "{page} scrolls sideways: {seen}"
        );
        assert!(seen["doc"].as_u64() <= seen["view"].as_u64(), "{page} scrolls sideways: {seen}");
    }
    browser.goto(&format!("{}/target-groups/web-blue/metrics?range=5m", cluster.api_url()));
    browser.screenshot("metrics-phone");

    // Each page with everything it loads (the style sheet, the script) weighs under 300 KB, the
    // longest window of the metrics page included.
    let weight = |path: &str| {
        let url = format!("{}{path}", cluster.api_url());
        reqwest::blocking::get(url).unwrap().bytes().unwrap().len()
    };
    let assets = weight("/console/console.css") + weight("/console/console.js");
    for page in ["/target-groups/web-blue/metrics?range=3h", "/alarms", "/alarms/blue-requests"] {
        let total = weight(page) + assets;
        assert!(total < 300 * 1024, "{page} weighs {total} bytes with its assets");
        eprintln!("{page}: {total} bytes with its style sheet and script");
    }
}

#[test]
fn every_stop_of_the_keyboard_on_the_new_pages_shows_where_the_focus_is() {
    let cluster = Cluster::start(Options { top_extra: BLUE_REQUESTS.into(), ..Options::default() });
    cluster.apply_and_wait_for_v1();
    let browser = Browser::start();
    // Each page, with a link of its content the keyboard must reach (the alarm's own page has
    // none: its links are the navigation's).
    let pages = [
        ("/alarms", Some("href=\"/alarms/blue-requests")),
        ("/alarms/blue-requests", None),
        ("/target-groups/web-blue/metrics", Some("href=\"?range=")),
    ];
    for (page, content_link) in pages {
        browser.goto(&format!("{}{page}", cluster.api_url()));
        let stops = browser.keyboard_stops();
        assert!(stops.len() >= 3, "{page}: too few stops for its links: {stops:?}");
        if let Some(link) = content_link {
            let reached =
                stops.iter().any(|s| s["what"].as_str().unwrap_or_default().contains(link));
            assert!(reached, "{page}: the keyboard never reached {link}: {stops:?}");
        }
        let unseen: Vec<_> = stops.iter().filter(|s| s["outline"] != json!(true)).collect();
        assert!(unseen.is_empty(), "{page}: no visible focus on {unseen:?}");
    }
}

#[test]
fn a_link_focused_in_a_part_that_refreshes_every_second_keeps_the_focus() {
    let cluster = Cluster::start(Options { top_extra: BLUE_REQUESTS.into(), ..Options::default() });
    cluster.apply_and_wait_for_v1();
    let browser = Browser::start();
    browser.goto(&format!("{}/alarms", cluster.api_url()));
    let link = "a[href=\"/alarms/blue-requests\"]";
    browser.run(&format!(
        "const a = document.querySelector('{link}'); a.dataset.before = 'yes'; a.focus();"
    ));
    // The live part is rendered again: the marked link is gone, a new one stands in its place.
    let focused = wait_until(
        "the alarm list to be refreshed",
        Duration::from_secs(30),
        || {
            browser.run(&format!(
                "const a = document.querySelector('{link}');
                 return {{ replaced: !!a && !a.dataset.before, focused: document.activeElement === a }};"
            ))
        },
        |seen| seen["replaced"] == json!(true),
    );
    assert_eq!(focused["focused"], json!(true), "the refresh took the keyboard's focus away");
}

#[test]
fn the_deployment_page_of_a_judged_canary_shows_both_versions_numbers_side_by_side() {
    let cluster = crate::judge::cluster(&[crate::judge::BLUE_LATENCY_MS]);
    let _traffic = Traffic(Some(Load::start(cluster.prod, 4)));
    let taskdef = format!("taskdef-v2-{}.json", crate::judge::BLUE_LATENCY_MS);
    let created = cluster.json(&deploy_args(&taskdef, "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    let browser = Browser::start();
    browser.goto(&format!("{}/deployments/{id}", cluster.api_url()));
    let judged = wait_until(
        "the page to show a judged period with both versions' requests",
        Duration::from_secs(120),
        || {
            browser.run(
                "const j = document.querySelector('[data-judge=\"latency-judge\"]');
                 if (!j) return null;
                 const row = (what) => [...j.querySelectorAll(`tr[data-row=\"${what}\"] td`)].map(td => td.textContent);
                 return { verdict: j.dataset.verdict, requests: row('requests'), p99: row('p99'),
                          text: j.innerText };",
            )
        },
        |j| j["verdict"] == "not worse",
    );
    let numbers =
        |what: &str| -> Vec<String> { serde_json::from_value(judged[what].clone()).unwrap() };
    let requests = numbers("requests");
    assert_eq!(requests.len(), 2, "green and blue: {judged}");
    assert!(requests.iter().all(|r| r.parse::<u64>().unwrap() >= 50), "{judged}");
    assert!(numbers("p99").iter().all(|p| p.ends_with("ms")), "{judged}");
    let text = judged["text"].as_str().unwrap();
    for shown in ["Mann–Whitney U", "99% confidence", "Retry on blue: 0 retried on blue"] {
        assert!(text.contains(shown), "{shown:?} not in the judge's section: {text}");
    }
    browser.screenshot("deployment-judge");
}

/// Every page of the console with something on it — a canary moving traffic, a pipeline waiting
/// at an approval, an alarm, a task definition with two revisions — at 1280 px and at phone
/// width (390 px): none scrolls sideways, every keyboard stop shows its focus, and each is
/// written to `target/console-screenshots/NAME-WIDTH.png` for people to look at.
#[test]
fn every_page_at_desktop_and_phone_width_scrolls_no_sideways_and_shows_each_keyboard_stop() {
    let bootstrap = "console-screens-bootstrap";
    let cluster = Cluster::start(Options {
        config: "{ name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 30m }",
        top_extra: format!("{BLUE_REQUESTS}{}", crate::console_pipelines::APPROVAL_ONLY),
        env: vec![("CUTOVER_TOKEN", bootstrap.into())],
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let remote = cluster.json(&["repos", "get", "web"])["clone_url"].as_str().unwrap().to_string();
    let authenticated = remote.replacen("http://", &format!("http://ci:{bootstrap}@"), 1);
    let execution = crate::console_pipelines::push_v2(&cluster, &authenticated);
    let _traffic = Traffic(Some(Load::start(cluster.prod, 1)));
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_until(
        "the canary at 20% and the approval waiting",
        Duration::from_secs(90),
        || {
            let d = cluster.deployment(&id);
            let e = cluster.json(&["pipelines", "execution", "web", &execution]);
            (d["traffic"]["production_green_percent"].clone(), e["status"].clone())
        },
        |(green, execution)| green == &json!(20) && execution == &json!("InProgress"),
    );
    let task = cluster.json(&["tasks", "list"]).as_array().unwrap()[0]["id"].clone();
    let pages = [
        ("overview", "/".to_string()),
        ("deployment", format!("/deployments/{id}")),
        ("pipeline", "/pipelines/web".into()),
        ("execution", format!("/pipelines/web/executions/{execution}")),
        ("service", "/services/web".into()),
        ("task", format!("/tasks/{}", task.as_str().unwrap())),
        ("task-definitions", "/task-definitions/web".into()),
        ("metrics", "/target-groups/web-blue/metrics".into()),
        ("alarms", "/alarms".into()),
        ("alarm", "/alarms/blue-requests".into()),
        ("history", "/history".into()),
    ];
    let browser = Browser::start();
    browser.goto(&format!("{}/login", cluster.api_url()));
    browser.screenshot("login-1280");
    browser.resize(390, 844);
    browser.screenshot("login-390");
    browser.resize(1280, 1000);
    browser.fill("#token", bootstrap);
    browser.click("form[action='/login'] button[type=submit]");
    wait_until("signed in", Duration::from_secs(30), || browser.url(), |u| !u.contains("/login"));
    for (width, height) in [(1280, 1000), (390, 844)] {
        browser.resize(width, height);
        for (name, path) in &pages {
            browser.goto(&format!("{}{path}", cluster.api_url()));
            let seen = browser.body_overflow();
            assert!(
                seen["scroll"].as_u64() <= seen["client"].as_u64()
                    && seen["doc"].as_u64() <= seen["view"].as_u64(),
                "{path} scrolls sideways at {width} px: {seen}"
            );
            browser.screenshot(&format!("{name}-{width}"));
            if width == 1280 {
                let stops = browser.keyboard_stops();
                assert!(stops.len() >= 5, "{path}: too few keyboard stops: {stops:?}");
                let unseen: Vec<_> = stops.iter().filter(|s| s["outline"] != json!(true)).collect();
                assert!(unseen.is_empty(), "{path}: no visible focus on {unseen:?}");
            }
        }
    }
}
