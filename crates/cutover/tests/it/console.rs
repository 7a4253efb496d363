//! The web console in a real headless Chromium (Debian's `chromium`, driven over WebDriver by
//! Debian's `chromedriver`) against a real `cutover up`, real tasks and the real load balancer.
//! Every page a test opens is also written to `target/console-screenshots/` for people to look at.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::harness::*;

/// A Chromium of its own (fresh profile) behind a chromedriver of its own, on loopback.
pub(crate) struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub(crate) fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let driver = Command::new("chromedriver")
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; .ci/run installs it)");
        let url = format!("http://127.0.0.1:{port}");
        wait_for("chromedriver to answer", Duration::from_secs(30), || {
            get(format!("127.0.0.1:{port}").parse().unwrap(), "/status").ok().map(drop)
        });
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
            "unhandledPromptBehavior": "ignore",
        });
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = runtime
            .block_on(
                ClientBuilder::new(connector)
                    .capabilities(capabilities.as_object().unwrap().clone())
                    .connect(&url),
            )
            .expect("a Chromium session");
        Browser { runtime, client: Some(client), driver, _profile: profile }
    }

    pub(crate) fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    pub(crate) fn goto(&self, url: &str) {
        self.runtime.block_on(self.client().goto(url)).unwrap();
    }

    pub(crate) fn url(&self) -> String {
        self.runtime.block_on(self.client().current_url()).unwrap().to_string()
    }

    /// Runs `script` in the page and returns what it returns.
    pub(crate) fn run(&self, script: &str) -> serde_json::Value {
        self.runtime.block_on(self.client().execute(script, vec![])).unwrap()
    }

    /// Runs `script` in the page, which calls `done(value)` when it is finished.
    pub(crate) fn run_async(&self, script: &str) -> serde_json::Value {
        let script = format!("const done = arguments[arguments.length - 1]; {script}");
        self.runtime.block_on(self.client().execute_async(&script, vec![])).unwrap()
    }

    /// What the page shows now, as `(status, green percent, labels of action buttons)`.
    fn deployment_state(&self) -> serde_json::Value {
        self.run(
            "const t = document.getElementById('traffic'); const s = document.getElementById('status');
             return { status: s && s.dataset.status, green: t && t.dataset.greenPercent,
                      actions: [...document.querySelectorAll('button[data-action]')].map(b => b.textContent),
                      live: document.body.dataset.live || null };",
        )
    }

    pub(crate) fn click(&self, css: &str) {
        self.runtime
            .block_on(async { self.client().find(Locator::Css(css)).await?.click().await })
            .unwrap_or_else(|err| panic!("clicking {css}: {err}"));
    }

    /// Clicks the action button labelled `label`, then Confirm in the dialog it opens.
    fn act(&self, label: &str) {
        let clicked = self.run(&format!(
            "const b = [...document.querySelectorAll('button[data-action]')].find(b => b.textContent === {label:?});
             if (!b) return false; b.click(); return document.getElementById('confirm').open;"
        ));
        assert_eq!(
            clicked,
            json!(true),
            "no {label:?} button opening the confirmation: {}",
            self.deployment_state()
        );
        self.click("#confirm-ok");
    }

    pub(crate) fn fill(&self, css: &str, text: &str) {
        self.runtime
            .block_on(async { self.client().find(Locator::Css(css)).await?.send_keys(text).await })
            .unwrap_or_else(|err| panic!("typing into {css}: {err}"));
    }

    /// Writes the page as `target/console-screenshots/NAME.png`.
    pub(crate) fn screenshot(&self, name: &str) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.runtime.block_on(self.client().screenshot()).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub(crate) fn cookie(&self, name: &str) -> Option<fantoccini::cookies::Cookie<'static>> {
        let cookies = self.runtime.block_on(self.client().get_all_cookies()).unwrap();
        cookies.into_iter().find(|c| c.name() == name)
    }

    /// Waits until the page shows what `predicate` wants of [`Browser::deployment_state`]; the
    /// timeout's message says what it showed last.
    #[track_caller]
    fn wait_for_page(
        &self,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&serde_json::Value) -> bool,
    ) {
        let mut last = serde_json::Value::Null;
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            last = self.deployment_state();
            if predicate(&last) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out after {timeout:?} waiting for the page to show {what}; it showed {last}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A deployment of v2 through a 20% canary whose second step is far away, held in its ready wait.
fn ready_canary(env: Vec<(&'static str, String)>) -> (Cluster, String) {
    let cluster = Cluster::start(Options {
        config: "{ name: quick-canary, type: TimeBasedCanary, percentage: 20, interval: 30m }",
        group_extra: "    ready_wait: 30m",
        env,
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    wait_until(
        "the deployment's ready wait",
        Duration::from_secs(90),
        || cluster.deployment(&id),
        |d| d["status"] == "Ready",
    );
    (cluster, id)
}

/// Probes until `done` holds for what `probe` returns, and returns that; the timeout's message
/// carries the last thing probed.
#[track_caller]
pub(crate) fn wait_until<T: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let last = probe();
        if done(&last) {
            return last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_deployment_page_shows_the_canary_split_move_live_and_stop_and_roll_back_puts_production_back_on_blue()
 {
    let (cluster, id) = ready_canary(Vec::new());
    let browser = Browser::start();
    browser.goto(&format!("{}/deployments/{id}", cluster.api_url()));
    browser.wait_for_page(
        "the ready wait with no traffic on green",
        Duration::from_secs(30),
        |s| s["status"] == "Ready" && s["green"] == "0" && s["live"] == "following",
    );
    browser.screenshot("deployment-ready");
    // Set in this page only: a reload would lose it.
    browser.run("window.sameDocument = true;");

    browser.act("Reroute traffic");
    browser.wait_for_page(
        "20% of production on green, without a reload",
        Duration::from_secs(60),
        |s| s["status"] == "InProgress" && s["green"] == "20",
    );
    assert_eq!(
        browser.run("return window.sameDocument === true;"),
        json!(true),
        "the page was reloaded"
    );
    browser.screenshot("deployment-canary");

    browser.act("Stop and roll back");
    browser.wait_for_page("the deployment stopped and rolled back", Duration::from_secs(60), |s| {
        s["status"] == "Stopped" && s["green"] == "0" && s["actions"] == json!([])
    });
    assert_eq!(
        browser.run("return window.sameDocument === true;"),
        json!(true),
        "the page was reloaded"
    );
    browser.screenshot("deployment-rolled-back");
    // The load balancer itself serves blue (v1) again, every request.
    wait_until(
        "production to serve only v1",
        Duration::from_secs(30),
        || (0..20).map(|_| get(cluster.prod, "/").map(|(_, body)| body)).collect::<Vec<_>>(),
        |answers| answers.iter().all(|a| a.as_ref().is_ok_and(|body| body == "v1")),
    );
    let stopped = cluster.deployment(&id);
    assert_eq!(
        (stopped["status"].as_str(), stopped["rolled_back"].as_bool()),
        (Some("Stopped"), Some(true))
    );

    browser.goto(&format!("{}/", cluster.api_url()));
    let overview = browser.run("return document.querySelector('main').innerText;");
    assert!(overview.as_str().unwrap().contains("web/web-prod"), "{overview}");
    browser.screenshot("overview");

    // The history lists it among the stopped deployments of its group, and not among the
    // succeeded ones; the filter's form keeps what was chosen.
    let history = |query: &str| {
        browser.goto(&format!("{}/history?{query}", cluster.api_url()));
        let rows = browser.run(
            "return [...document.querySelectorAll('main tbody tr td:first-child')].map(td => td.innerText);",
        );
        let chosen = browser.run("return document.querySelector('select[name=status]').value;");
        (rows, chosen)
    };
    let (stopped_rows, chosen) = history("group=web%2Fweb-prod&status=Stopped&within=1h");
    assert_eq!((stopped_rows, chosen), (json!([id]), json!("Stopped")));
    browser.screenshot("history");
    let (succeeded_rows, _) = history("group=web%2Fweb-prod&status=Succeeded");
    assert!(!succeeded_rows.as_array().unwrap().contains(&json!(id)), "{succeeded_rows}");
}

#[test]
fn a_viewer_signs_in_and_sees_no_action_buttons_and_forged_actions_are_refused() {
    let (cluster, id) = ready_canary(vec![("CUTOVER_TOKEN", "console-bootstrap-secret".into())]);
    let secret_of = |name: &str, role: &str| {
        let created = cluster.json(&["tokens", "create", name, "--role", role]);
        created["secret"].as_str().unwrap().to_string()
    };
    let viewer = secret_of("alice", "viewer");
    let deployer = secret_of("bob", "deployer");
    let page = format!("{}/deployments/{id}", cluster.api_url());
    let browser = Browser::start();

    // Without a session the page sends the browser to sign in, and back once signed in.
    browser.goto(&page);
    assert!(browser.url().contains("/login?next=/deployments/"), "{}", browser.url());
    browser.screenshot("login");
    let sign_in = |secret: &str| {
        browser.fill("#token", secret);
        browser.click("form[action='/login'] button[type=submit]");
    };
    sign_in(&viewer);
    browser.wait_for_page("the deployment, for the viewer", Duration::from_secs(30), |s| {
        s["status"] == "Ready"
    });
    assert_eq!(browser.url(), page, "back on the page asked for, with no token in its URL");
    assert_eq!(browser.deployment_state()["actions"], json!([]), "a viewer gets no button");
    browser.screenshot("deployment-viewer");
    let cookie = browser.cookie("cutover_session").expect("a session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");

    // The viewer forges the action the page does not offer, with the session's own CSRF token.
    let forged = browser.run_async(&format!(
        "fetch('/v1/deployments/{id}/continue', {{ method: 'POST', body: '{{\"wait\":\"READY_WAIT\"}}',
           headers: {{ 'Content-Type': 'application/json',
                      'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content }} }})
         .then(async r => done([r.status, (await r.json()).error]));"
    ));
    assert_eq!(forged[0], 403, "{forged}");
    assert!(forged[1].as_str().unwrap().contains("lacks the permission `continue`"), "{forged}");

    // A deployer's session gets the buttons; its cookie alone, without the page's CSRF token
    // (another site's form, a script elsewhere), acts on nothing.
    browser.click("[data-logout]");
    wait_until(
        "the sign-in page",
        Duration::from_secs(30),
        || browser.url(),
        |url| url.contains("/login"),
    );
    browser.goto(&page);
    sign_in(&deployer);
    browser.wait_for_page("the deployer's buttons", Duration::from_secs(30), |s| {
        s["actions"] == json!(["Reroute traffic", "Stop deployment", "Stop and roll back"])
    });
    let session = browser.cookie("cutover_session").unwrap().value().to_string();
    let http = reqwest::blocking::Client::new();
    let continue_with = |csrf: Option<&str>| {
        let mut request = http
            .post(format!("{}/v1/deployments/{id}/continue", cluster.api_url()))
            .header("Cookie", format!("cutover_session={session}"))
            .json(&json!({"wait": "READY_WAIT"}));
        if let Some(csrf) = csrf {
            request = request.header("X-CSRF-Token", csrf);
        }
        let response = request.send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    for csrf in [None, Some("0000"), Some(viewer.as_str())] {
        let (status, body) = continue_with(csrf);
        assert_eq!(status, 403, "{csrf:?}: {body}");
        assert!(body.contains("without its CSRF token"), "{csrf:?}: {body}");
    }
    assert_eq!(cluster.deployment(&id)["status"], "Ready", "no forged request changed anything");

    // Signing out ends the session on the server: the cookie, wherever it was copied, opens
    // nothing any more.
    browser.click("[data-logout]");
    wait_until(
        "the sign-in page",
        Duration::from_secs(30),
        || browser.url(),
        |url| url.contains("/login"),
    );
    let after = http
        .get(format!("{}/v1/deployments/{id}", cluster.api_url()))
        .header("Cookie", format!("cutover_session={session}"))
        .send()
        .unwrap();
    assert_eq!(after.status().as_u16(), 401);
    // No secret in the control plane's log.
    let log = std::fs::read_to_string(cluster.path("up.log")).unwrap();
    for secret in [&viewer, &deployer, &session] {
        assert!(!log.contains(secret.as_str()), "a secret in up.log");
    }
}

/// The metrics, alarms and judge pages, with this module's browser.
#[path = "console_metrics.rs"]
mod metrics;

/// The target group page, with this module's browser.
#[path = "console_target_groups.rs"]
mod target_groups;
