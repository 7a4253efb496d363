//! Single sign-on in the web console (issues 15 and 16): a real headless Chromium signs in on
//! the console's `/login` through a real OpenID provider's login page (`tests/oidc/provider.js`,
//! started with its login form) against a real `cutover up`, at the API's own address and behind
//! a reverse proxy at the console's public address (`--console-url`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::access_oidc::{Provider, start_provider_with};
use crate::console::{Browser, wait_until};
use crate::harness::*;

fn cluster_with_sso(provider: &Provider) -> Cluster {
    Cluster::start(Options {
        env: vec![("CUTOVER_TOKEN", "console-sso-bootstrap-secret".into())],
        up_env: vec![
            ("CUTOVER_OIDC_ISSUER", provider.issuer.clone()),
            ("CUTOVER_OIDC_CLIENT_ID", "cutover".into()),
            ("CUTOVER_OIDC_GROUPS", "deployers=deployer:web/*".into()),
        ],
        ..Options::default()
    })
}

/// Opens the console's sign-in page, follows "Sign in with …" and signs in as `user` on the
/// provider's login page; the URL the browser ends on.
fn sign_in_through_the_provider(browser: &Browser, cluster: &Cluster, user: &str) -> String {
    browser.goto(&format!("{}/history", cluster.api_url()));
    assert!(browser.url().contains("/login?next=/history"), "{}", browser.url());
    let button =
        browser.run("return document.querySelector('a[href^=\"/login/sso\"]').textContent");
    assert_eq!(button, "Sign in with 127.0.0.1");
    browser.click("a[href^='/login/sso']");
    wait_until(
        "the provider's login page",
        Duration::from_secs(30),
        || browser.url(),
        |url| url.contains("/interaction/"),
    );
    browser.fill("#login", user);
    browser.click("#signin");
    wait_until(
        "back on the console",
        Duration::from_secs(30),
        || browser.url(),
        |url| url.starts_with(&cluster.api_url()) && !url.contains("/login/sso"),
    )
}

#[test]
fn a_deployer_signs_in_to_the_console_through_the_provider_and_the_audit_trail_names_the_provider()
{
    let provider = start_provider_with(&["form"]);
    let cluster = cluster_with_sso(&provider);
    let browser = Browser::start();
    sign_in_through_the_provider(&browser, &cluster, "alice");
    let holds = wait_until(
        "the page asked for, signed in",
        Duration::from_secs(30),
        || {
            browser.run("const h = document.querySelector('.holds'); return [location.pathname, h && h.textContent];")
        },
        |seen| seen[0] == "/history" && !seen[1].is_null(),
    );
    assert_eq!(holds[1], "role deployer on web/*", "{holds}");
    browser.screenshot("sso-deployer");
    let cookie = browser.cookie("cutover_session").expect("a session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    assert!(browser.cookie("cutover_sso_login").is_none(), "the login's cookie is removed");

    let logins = cluster.json(&["audit", "--action", "login", "--actor", "user:alice"]);
    assert_eq!(logins[0]["outcome"], "succeeded", "{logins}");
    assert_eq!(logins[0]["detail"]["via"], provider.issuer.as_str(), "{logins}");
    assert_eq!(logins[0]["detail"]["request"], "GET /login/callback", "{logins}");
    let sessions = cluster.json(&["tokens", "list"]);
    let listed = sessions.to_string();
    assert!(listed.contains("\"user\":\"alice\""), "{listed}");
}

#[test]
fn a_user_of_no_mapped_group_is_refused_with_the_reason_and_gets_no_session() {
    let provider = start_provider_with(&["form"]);
    let cluster = cluster_with_sso(&provider);
    let browser = Browser::start();
    let ended_at = sign_in_through_the_provider(&browser, &cluster, "bob");
    assert!(ended_at.contains("/login/callback?code="), "{ended_at}");
    let said = browser.run("return document.querySelector('.why').textContent");
    assert_eq!(
        said,
        "bob signed in, but none of their groups (contractors) is given a role here; an admin \
         maps groups to roles in cutover.yaml's access.oidc.groups (or with `cutover up \
         --oidc-group GROUP=ROLE[:SCOPES]`)"
    );
    let status = browser.run("return performance.getEntriesByType('navigation')[0].responseStatus");
    assert_eq!(status, 403);
    browser.screenshot("sso-refused");
    assert!(browser.cookie("cutover_session").is_none(), "no session for bob");
    let status =
        reqwest::blocking::get(format!("{}/login/callback", cluster.api_url())).unwrap().status();
    assert_eq!(status.as_u16(), 400, "a callback of no login started here");
    let denied = cluster.json(&["audit", "--action", "login", "--actor", "user:bob"]);
    assert_eq!(denied[0]["outcome"], "denied", "{denied}");
    assert_eq!(denied[0]["detail"]["via"], provider.issuer.as_str(), "{denied}");
}

/// A reverse proxy in front of the API, as people put one: it listens on a port of its own,
/// reached by the name `localhost`, and passes each connection through to the API unchanged, so
/// the browser's `Host` is `localhost:PORT` — not the address cutover listens on. It accepts no
/// more connections once dropped.
struct Proxy {
    port: u16,
    to: Arc<OnceLock<SocketAddr>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (to, stop) =
            (Arc::new(OnceLock::<SocketAddr>::new()), Arc::new(AtomicBool::new(false)));
        let (target, stopped) = (to.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    // Nothing to accept yet: look again shortly, and whether to stop.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let Some(api) = target.get() else { continue };
                let Ok(upstream) = TcpStream::connect(api) else { continue };
                client.set_nonblocking(false).unwrap();
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Proxy { port, to, stop }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn behind_a_reverse_proxy_the_console_signs_in_through_the_provider_at_its_public_address() {
    let provider = start_provider_with(&["form"]);
    let proxy = Proxy::start();
    let public = format!("http://localhost:{}", proxy.port);
    let cluster = Cluster::start(Options {
        env: vec![("CUTOVER_TOKEN", "console-sso-bootstrap-secret".into())],
        up_env: vec![
            ("CUTOVER_OIDC_ISSUER", provider.issuer.clone()),
            ("CUTOVER_OIDC_CLIENT_ID", "cutover".into()),
            ("CUTOVER_OIDC_GROUPS", "deployers=deployer:web/*".into()),
            ("CUTOVER_CONSOLE_URL", public.clone()),
        ],
        ..Options::default()
    });
    let api = cluster.api_url();
    proxy.to.set(api.trim_start_matches("http://").parse().unwrap()).unwrap();
    let browser = Browser::start();
    browser.goto(&format!("{public}/history"));
    assert!(
        browser.url().starts_with(&format!("{public}/login?next=/history")),
        "{}",
        browser.url()
    );
    browser.click("a[href^='/login/sso']");
    let at_provider = wait_until(
        "the provider's login page",
        Duration::from_secs(30),
        || browser.url(),
        |url| url.contains("/interaction/"),
    );
    browser.fill("#login", "alice");
    browser.click("#signin");
    let back = wait_until(
        "back on the console at its public address, signed in",
        Duration::from_secs(30),
        || {
            browser.run(
                "const h = document.querySelector('.holds');
                 return [location.origin + location.pathname, h && h.textContent];",
            )
        },
        |seen| seen[0] == format!("{public}/history").as_str() && !seen[1].is_null(),
    );
    assert_eq!(back[1], "role deployer on web/*", "{back} (the provider's page was {at_provider})");
    browser.screenshot("sso-behind-a-proxy");
    let logins = cluster.json(&["audit", "--action", "login", "--actor", "user:alice"]);
    assert_eq!(logins[0]["outcome"], "succeeded", "{logins}");

    // A Host that is neither the public address nor the API's is refused, naming the public one.
    let forged = reqwest::blocking::Client::new()
        .get(format!("{api}/login/sso"))
        .header("Host", "evil.test")
        .send()
        .unwrap();
    assert_eq!(forged.status().as_u16(), 400);
    let said = forged.text().unwrap();
    assert!(
        said.contains(&format!("single sign-on works at this console's own address, {public}")),
        "{said}"
    );
}

#[test]
fn a_console_url_in_clear_beyond_loopback_is_refused_before_anything_starts() {
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(CUTOVER)
        .args(["--data-dir", &data.path().display().to_string(), "up", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(["--console-url", "http://cutover.example.com"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains(
            "invalid value 'http://cutover.example.com' for '--console-url <CONSOLE_URL>': \
             `http://cutover.example.com`: use https:// (plain http only at a loopback address, \
             like http://localhost:7400): the session cookie would cross the network in clear"
        ),
        "{said}"
    );
    let left: Vec<_> = std::fs::read_dir(data.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing is written to the data directory: {left:?}");
}
