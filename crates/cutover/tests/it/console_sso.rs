//! Single sign-on in the web console (issues 15 and 16): a real headless Chromium signs in on
//! the console's `/login` through a real OpenID provider's login page (`tests/oidc/provider.js`,
//! started with its login form) against a real `cutover up`.

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
