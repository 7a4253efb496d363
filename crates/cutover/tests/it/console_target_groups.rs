//! The console's target group page (`/target-groups/{name}`) in the real headless Chromium of
//! `console.rs` against a real `cutover up`, real tasks and the real load balancer's health
//! checks. Screenshots go to `target/console-screenshots/`.

use std::time::Duration;

use serde_json::json;

use super::{Browser, wait_until};
use crate::harness::*;

/// A task's process held with SIGSTOP: alive, but answering no health check. Let go (SIGCONT)
/// when dropped, even when the test fails, so `down` stops it as any other.
struct Frozen(u32);

impl Frozen {
    fn task(cluster: &Cluster, task_id: &str) -> Frozen {
        let root = cluster.dir.path().canonicalize().unwrap();
        let wanted = format!("CUTOVER_TASK_ID={task_id}");
        let pid = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
                let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                exe.is_ok_and(|p| p.starts_with(&root))
                    && environ.split(|b| *b == 0).any(|var| var == wanted.as_bytes())
            })
            .unwrap_or_else(|| panic!("no process of task {task_id}"));
        assert!(signal("STOP", pid), "SIGSTOP to {pid}");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // The process may be gone already.
        signal("CONT", self.0);
    }
}

/// `kill -SIGNAL pid`; whether it was sent.
fn signal(name: &str, pid: u32) -> bool {
    std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// The targets' rows as the page shows them now: address, state, reason, task.
fn targets(browser: &Browser) -> serde_json::Value {
    browser.run(
        "return [...document.querySelectorAll('#targets tbody tr')].map(r => ({
           addr: r.dataset.target, state: r.dataset.state, task: r.dataset.task || null,
           reason: r.children[2].textContent, description: r.children[3].textContent }));",
    )
}

#[test]
fn the_target_group_page_shows_a_target_turn_unhealthy_live_when_its_task_stops_answering() {
    let cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();
    let browser = Browser::start();
    browser.goto(&format!("{}/target-groups/web-blue", cluster.api_url()));
    wait_until(
        "the page to follow the target group's stream",
        Duration::from_secs(30),
        || browser.run("return document.body.dataset.live || null;"),
        |live| live == &json!("following"),
    );
    browser.run("window.sameDocument = true;");
    let healthy = wait_until(
        "both targets healthy, each with its task",
        Duration::from_secs(30),
        || targets(&browser),
        |rows| {
            rows.as_array().is_some_and(|r| {
                r.len() == 2 && r.iter().all(|t| t["state"] == "healthy" && t["task"].is_string())
            })
        },
    );
    let main = browser.run("return document.querySelector('main').innerText;");
    let main = main.as_str().unwrap();
    // The listener that forwards to it, all of it, and the health check it is judged by.
    for shown in ["load balancer web", "web/prod", "default action", "100%", "GET /health"] {
        assert!(main.contains(shown), "{shown:?} not on the page: {main}");
    }
    browser.screenshot("target-group");

    let victim = &healthy[0];
    let _frozen = Frozen::task(&cluster, victim["task"].as_str().unwrap());
    let seen = wait_until(
        "the frozen task's target to show unhealthy on the open page",
        Duration::from_secs(30),
        || targets(&browser),
        |rows| {
            rows.as_array().is_some_and(|r| {
                r.iter().any(|t| t["addr"] == victim["addr"] && t["state"] == "unhealthy")
            })
        },
    );
    let row = seen.as_array().unwrap().iter().find(|t| t["addr"] == victim["addr"]).unwrap();
    assert_eq!(row["reason"], "Target.Timeout", "{seen}");
    assert_eq!(row["task"], victim["task"], "{seen}");
    let other = seen.as_array().unwrap().iter().find(|t| t["addr"] != victim["addr"]).unwrap();
    assert_eq!(other["state"], "healthy", "the other target: {seen}");
    assert_eq!(browser.run("return window.sameDocument === true;"), json!(true), "reloaded");
    browser.screenshot("target-group-unhealthy");

    // At phone width the page does not scroll sideways: its tables scroll in their own box.
    browser.runtime.block_on(browser.client().set_window_size(390, 844)).unwrap();
    browser.goto(&format!("{}/target-groups/web-blue", cluster.api_url()));
    let widths = browser
        .run("return { doc: document.documentElement.scrollWidth, view: window.innerWidth };");
    assert!(widths["doc"].as_u64() <= widths["view"].as_u64(), "scrolls sideways: {widths}");
    browser.screenshot("target-group-phone");

    // The service's page and the target group's metrics link to it.
    for page in ["/services/web", "/target-groups/web-blue/metrics"] {
        browser.goto(&format!("{}{page}", cluster.api_url()));
        let linked =
            browser.run("return !!document.querySelector('a[href=\"/target-groups/web-blue\"]');");
        assert_eq!(linked, json!(true), "{page} does not link to the target group's page");
    }
}
