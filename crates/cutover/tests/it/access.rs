//! Team access (issue 15) end to end: every endpoint of the permission map admits a credential
//! with its permission and refuses one without it (changing nothing), scoped bindings, expiry
//! and revocation at once, secrets only as hashes on disk, and the audit trail.

use std::time::Duration;

use control::access::permissions::{ENDPOINTS, Endpoint, Permission, Rule};
use reqwest::Method;

use crate::harness::*;

/// One request with `secret` as its bearer token: (status, JSON answer or `Null`).
fn call(
    cluster: &Cluster,
    secret: &str,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = reqwest::blocking::Client::new()
        .request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", cluster.api_url()),
        )
        .bearer_auth(secret)
        .json(body)
        .timeout(Duration::from_secs(60))
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(serde_json::Value::Null))
}

/// Creates a credential with `args` (e.g. `--role deployer --scope web/*`) and returns its
/// secret.
fn create_token(cluster: &Cluster, name: &str, args: &[&str]) -> String {
    let mut all = vec!["tokens", "create", name];
    all.extend_from_slice(args);
    let created = cluster.json(&all);
    created["secret"].as_str().unwrap().to_string()
}

/// The endpoint's path with its parameters filled in, and a body that would change something
/// were the request allowed.
fn request_for(endpoint: &Endpoint) -> (String, serde_json::Value) {
    let mut path = endpoint
        .path
        .replace("{id}", "d-0")
        .replace("{execution}", "web-1")
        .replace("{name}", "intruder")
        .replace("{repo}", "intruder")
        .replace("{pipeline}", "web");
    if path == "/v1/target-groups/intruder/targets" {
        path = "/v1/target-groups/web-blue/targets".into();
    }
    if let Some(query) = endpoint.query {
        path = format!("{path}?{query}");
    }
    let body = match (endpoint.method, endpoint.path) {
        ("POST", "/v1/tokens") => {
            serde_json::json!({ "name": "intruder", "permissions": ["credentials"] })
        }
        ("POST", "/v1/repos") => serde_json::json!({ "name": "intruder" }),
        (_, "/v1/target-groups/{name}/targets") => serde_json::json!({ "addr": "127.0.0.1:9" }),
        ("POST", "/v1/deployments") => serde_json::json!({
            "group": "web/web-prod",
            "appspec": { "name": "appspec.yaml", "text": appspec("") },
        }),
        (_, p) if p.ends_with("/lifecycle-hooks/{execution}") => {
            serde_json::json!({ "status": "Succeeded" })
        }
        _ => serde_json::json!({}),
    };
    (path, body)
}

/// What a denied request could have changed. (Presenting a credential records its last use,
/// which is not a change the request made.)
fn fingerprint(cluster: &Cluster) -> Vec<serde_json::Value> {
    let mut tokens = cluster.json(&["tokens", "list"]);
    for token in tokens.as_array_mut().unwrap() {
        token.as_object_mut().unwrap().remove("last_used_at");
    }
    [
        vec!["deployments", "list"],
        vec!["repos", "list"],
        vec!["task-definitions", "list"],
        vec!["services", "list"],
        vec!["pipelines", "list"],
    ]
    .iter()
    .map(|args| cluster.json(args))
    .chain([tokens, cluster.json(&["target-groups", "get", "web-blue"])["manual_targets"].clone()])
    .collect()
}

#[test]
fn every_endpoint_admits_a_credential_with_its_permission_and_refuses_one_without_it_changing_nothing()
 {
    let cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();
    let mut has = std::collections::BTreeMap::new();
    let mut lacks = std::collections::BTreeMap::new();
    for permission in Permission::ALL {
        let name = permission.name();
        has.insert(
            permission,
            create_token(&cluster, &format!("has-{name}"), &["--permission", name]),
        );
        let others: Vec<&str> = Permission::ALL
            .iter()
            .filter(|p| **p != permission)
            .flat_map(|p| ["--permission", p.name()])
            .collect();
        lacks.insert(permission, create_token(&cluster, &format!("lacks-{name}"), &others));
    }

    let before = fingerprint(&cluster);
    let mut checked = 0;
    for endpoint in ENDPOINTS {
        let Rule::Needs(permission, _) = endpoint.rule else { continue };
        let (path, body) = request_for(endpoint);
        let (status, answer) = call(&cluster, &lacks[&permission], endpoint.method, &path, &body);
        let what = format!("{} {path} without {permission}", endpoint.method);
        assert_eq!(status, 403, "{what}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!(
                "token:lacks-{permission} lacks the permission `{permission}` on "
            )),
            "{what}: {message}"
        );
        assert!(message.contains("cutover tokens create NAME --role "), "{what}: {message}");
        checked += 1;
    }
    assert_eq!(fingerprint(&cluster), before, "a refused request changed something");
    assert!(checked > 40, "only {checked} endpoints in the map");

    // With the permission, each passes authorization (the handler may still refuse the made-up
    // names with 404 or 400); shutdown last, since it stops cutover.
    for endpoint in ENDPOINTS {
        let Rule::Needs(permission, _) = endpoint.rule else { continue };
        if permission == Permission::Shutdown {
            continue;
        }
        let (path, body) = request_for(endpoint);
        let (status, answer) = call(&cluster, &has[&permission], endpoint.method, &path, &body);
        assert!(
            status != 401 && status != 403,
            "{} {path} with {permission} answered {status}: {answer}",
            endpoint.method
        );
    }
    let (status, answer) =
        call(&cluster, &has[&Permission::Shutdown], "POST", "/v1/shutdown", &serde_json::json!({}));
    assert_eq!(status, 200, "{answer}");
    wait_for("cutover to stop after an allowed shutdown", Duration::from_secs(30), || {
        (!cluster.cli(&["status"]).status.success()).then_some(())
    });
}

#[test]
fn a_scoped_deployer_deploys_its_group_another_team_is_refused_and_the_audit_trail_keeps_both_across_a_restart()
 {
    let mut cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();
    let web = create_token(&cluster, "ci-web", &["--role", "deployer", "--scope", "web/*"]);
    let api = create_token(&cluster, "ci-api", &["--role", "deployer", "--scope", "api/*"]);

    let refused = cluster.cli_with_env(
        &[("CUTOVER_TOKEN", &api)],
        &deploy_args("taskdef-v2.json", "appspec.yaml", &[]),
    );
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        format!(
            "error: cutover at {} refused this credential (403 Forbidden): token:ci-api lacks the \
             permission `deploy` on deployment group web/web-prod; a binding of role deployer on \
             web/web-prod grants it (an admin runs `cutover tokens create NAME --role deployer \
             --scope 'web/web-prod'`; docs/access.md lists what each role may do)\n",
            cluster.api_url()
        )
    );
    assert_eq!(cluster.json(&["deployments", "list"]), serde_json::json!([]));

    let mut deploy = deploy_args("taskdef-v2.json", "appspec.yaml", &[]);
    deploy.extend(["--output", "json"]);
    let output = cluster.cli_with_env(&[("CUTOVER_TOKEN", &web)], &deploy);
    assert!(output.status.success(), "{output:?}");
    let id = serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The other team reads it, but may not roll it back.
    let (status, _) =
        call(&cluster, &api, "GET", &format!("/v1/deployments/{id}"), &serde_json::json!({}));
    assert_eq!(status, 200);
    let (status, answer) = call(
        &cluster,
        &api,
        "POST",
        &format!("/v1/deployments/{id}/rollback"),
        &serde_json::json!({}),
    );
    assert_eq!(status, 403, "{answer}");
    // A viewer of everything cannot apply.
    let viewer = create_token(&cluster, "auditor", &["--role", "viewer"]);
    let denied_apply =
        cluster.cli_with_env(&[("CUTOVER_TOKEN", &viewer)], &["apply", "-f", "cutover.yaml"]);
    assert_eq!(denied_apply.status.code(), Some(2), "{denied_apply:?}");

    // Reads are not changes: listing credentials or the trail records nothing.
    cluster.cli_ok(&["tokens", "list"]);
    cluster.cli_ok(&["audit"]);
    cluster.kill_control_plane();
    cluster.up();
    let trail = cluster.json(&["audit"]);
    let entries: Vec<String> = trail
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!("{} {} {} {}", e["actor"], e["action"], e["resource"], e["outcome"])
                .replace('"', "")
        })
        .collect();
    assert_eq!(
        entries,
        [
            "local apply * succeeded",
            "local credentials * succeeded",
            "local credentials * succeeded",
            "token:ci-api deploy deployment group web/web-prod denied",
            "token:ci-web deploy deployment group web/web-prod succeeded",
            "token:ci-api rollback deployment group web/web-prod denied",
            "local credentials * succeeded",
            "token:auditor apply * denied",
        ]
    );
    let deploy_entry =
        trail.as_array().unwrap().iter().find(|e| e["actor"] == "token:ci-web").unwrap();
    let detail = &deploy_entry["detail"];
    assert_eq!(detail["deployment"], id.as_str());
    assert_eq!(detail["request"], "POST /v1/deployments");
    let apply_entry = &trail[0];
    assert_eq!(apply_entry["source"], "127.0.0.1");
    let plan = &apply_entry["detail"];
    assert!(
        plan["plan"].as_array().unwrap().iter().any(|item| item["kind"] == "service"
            && item["name"] == "web"
            && item["action"] == "create"),
        "{plan}"
    );
    assert_eq!(plan["applied"], true);

    // Filters, and JSON lines for a log pipeline.
    let denied = cluster.json(&["audit", "--actor", "token:ci-api", "--action", "rollback"]);
    assert_eq!(denied.as_array().unwrap().len(), 1, "{denied}");
    let lines = cluster.cli_ok(&["audit", "--action", "deploy", "--since", "1h", "--jsonl"]);
    let actors: Vec<String> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["actor"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(actors, ["token:ci-api", "token:ci-web"]);
}

#[test]
fn expiry_and_revocation_take_effect_at_once_and_only_hashes_of_secrets_reach_the_disk() {
    let cluster = Cluster::start(Options::default());
    let secret = create_token(&cluster, "ci-web", &["--role", "viewer"]);
    let brief = create_token(&cluster, "brief", &["--role", "viewer", "--expires", "2s"]);
    let as_ci = [("CUTOVER_TOKEN", secret.as_str())];
    assert!(cluster.cli_with_env(&as_ci, &["status"]).status.success());
    let listed = cluster.json(&["tokens", "list"]);
    let ci = listed.as_array().unwrap().iter().find(|t| t["name"] == "ci-web").unwrap();
    assert!(ci["last_used_at"].is_u64(), "{listed}");
    assert_eq!(ci["bindings"], serde_json::json!(["role viewer on *"]));
    assert!(ci.get("secret").is_none() && ci.get("secret_hash").is_none(), "{ci}");

    // Nothing under the data directory (the database, its WAL, the logs) holds the secrets.
    for file in walk(&cluster.data_dir()).into_iter().chain([cluster.path("up.log")]) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        for s in [&secret, &brief] {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{} holds a secret",
                file.display()
            );
        }
    }

    cluster.cli_ok(&["tokens", "revoke", "ci-web"]);
    let (status, answer) = call(&cluster, &secret, "GET", "/v1/status", &serde_json::json!({}));
    assert_eq!(status, 401, "{answer}");
    assert_eq!(
        answer["error"],
        "this token is not valid (revoked, expired or mistyped): sign in again with `cutover \
         login`, or pass a valid token with --token or CUTOVER_TOKEN"
    );
    wait_for("the 2s credential to expire", Duration::from_secs(10), || {
        let (status, answer) = call(&cluster, &brief, "GET", "/v1/status", &serde_json::json!({}));
        (status == 401).then_some(answer)
    });
    let (_, answer) = call(&cluster, &brief, "GET", "/v1/status", &serde_json::json!({}));
    let message = answer["error"].as_str().unwrap();
    assert!(message.starts_with("the credential brief expired at "), "{message}");
    assert!(message.ends_with("ask an admin for a new one (`cutover tokens create`), then pass it with --token or CUTOVER_TOKEN"), "{message}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.is_file() {
            files.push(path);
        }
    }
    files
}

/// A private CA and a certificate it signed for 127.0.0.1, as PEM files in `dir`: (ca, cert,
/// key).
fn private_ca(dir: &std::path::Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let path = |name: &str| dir.join(name).display().to_string();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("api.pem"), cert.pem()).unwrap();
    std::fs::write(path("api.key"), key.serialize_pem()).unwrap();
    (path("ca.pem"), path("api.pem"), path("api.key"))
}

#[test]
fn the_cli_talks_to_an_https_api_trusting_a_private_ca_and_refuses_an_untrusted_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(certs.path());
    let cluster = Cluster::start(Options {
        env: vec![
            ("CUTOVER_TLS_CERT", cert),
            ("CUTOVER_TLS_KEY", key),
            ("CUTOVER_CA_CERT", ca.clone()),
        ],
        ..Options::default()
    });
    assert!(cluster.api_url().starts_with("https://"));
    let status = cluster.json(&["status"]);
    assert_eq!(status["api"], cluster.api_url());
    cluster.apply_and_wait_for_v1();
    let secret = create_token(&cluster, "ci-web", &["--role", "viewer"]);
    assert!(
        cluster.cli_with_env(&[("CUTOVER_TOKEN", &secret)], &["services", "list"]).status.success()
    );

    // Without the CA, the CLI refuses the certificate and says how to trust it.
    let mut untrusting = std::process::Command::new(CUTOVER);
    untrusting
        .args(["status"])
        .env("CUTOVER_API", cluster.api_url())
        .env("CUTOVER_DATA_DIR", cluster.data_dir());
    let output = untrusting.output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: cutover at {} answers with a certificate this CLI does not trust (",
            cluster.api_url()
        )) && stderr.contains("UnknownIssuer")
            && stderr.ends_with(
                "); give the CA that signed it with --ca-cert FILE or CUTOVER_CA_CERT\n"
            ),
        "{stderr}"
    );
    // Plain HTTP to the HTTPS port gets nothing.
    let plain = reqwest::blocking::Client::new()
        .get(cluster.api_url().replace("https://", "http://") + "/v1/status")
        .timeout(Duration::from_secs(10))
        .send();
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

#[test]
fn up_refuses_to_listen_beyond_loopback_over_plain_http_unless_told_so_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let output = std::process::Command::new(CUTOVER)
        .args(["up", "--listen", &format!("0.0.0.0:{port}")])
        .env("CUTOVER_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "error: --listen 0.0.0.0:{port}: beyond loopback the API needs TLS, or its tokens \
             cross the network in clear text: give --tls-cert and --tls-key (docs/access.md), or \
             --allow-plaintext-beyond-loopback if something in front of cutover terminates TLS\n"
        )
    );
    assert!(!dir.path().join("data").exists(), "something was started or created");
}

#[test]
fn git_push_over_http_takes_the_same_credentials_scoped_to_the_repository_and_no_credential_mints_more_than_it_holds()
 {
    let cluster = Cluster::start(Options {
        env: vec![("CUTOVER_TOKEN", "bootstrap-secret".to_string())],
        ..Options::default()
    });
    cluster.cli_ok(&["repos", "create", "web"]);
    let clone_url =
        cluster.json(&["repos", "get", "web"])["clone_url"].as_str().unwrap().to_string();
    let web = create_token(&cluster, "ci-web", &["--role", "deployer", "--scope", "web"]);
    let api = create_token(&cluster, "ci-api", &["--role", "deployer", "--scope", "api"]);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q"]);
    std::fs::write(work.path().join("README"), "hello\n").unwrap();
    git(work.path(), &["add", "-A"]);
    git(work.path(), &["commit", "-q", "-m", "first"]);
    let with_secret =
        |secret: &str| clone_url.replacen("http://", &format!("http://ci:{secret}@"), 1);
    let push = |secret: &str| {
        std::process::Command::new("git")
            .args(["push", "-q", &with_secret(secret), "main"])
            .current_dir(work.path())
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .unwrap()
    };
    let refused = push(&api);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("403"), "{refused:?}");
    assert_eq!(cluster.json(&["repos", "get", "web"])["branches"], serde_json::json!([]));
    let pushed = push(&web);
    assert!(pushed.status.success(), "{pushed:?}");
    assert_eq!(cluster.json(&["repos", "get", "web"])["branches"][0][0], "main");
    let pushes: Vec<String> = cluster
        .json(&["audit", "--action", "push"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {} {}", e["actor"], e["resource"], e["outcome"]).replace('"', ""))
        .collect();
    assert!(pushes.contains(&"token:ci-api repository web denied".to_string()), "{pushes:?}");
    assert!(pushes.contains(&"token:ci-web repository web succeeded".to_string()), "{pushes:?}");

    // A webhook authenticates by its signature, not a credential; one without goes to the trail.
    let (status, _) = cluster.api(Method::POST, "/v1/webhooks/web", &serde_json::json!({}));
    assert_eq!(status, 401);
    let hooks = cluster.json(&["audit", "--action", "webhook"]);
    let hook = &hooks[0];
    assert_eq!(
        (&hook["actor"], &hook["resource"], &hook["outcome"], &hooks[1]),
        (
            &"webhook".into(),
            &"pipeline web".into(),
            &"unauthenticated".into(),
            &serde_json::Value::Null
        ),
        "{hooks}"
    );

    // A credential that may manage credentials mints none that can do more than itself.
    let keeper =
        create_token(&cluster, "keeper", &["--permission", "credentials", "--permission", "read"]);
    let escalate = cluster.cli_with_env(
        &[("CUTOVER_TOKEN", &keeper)],
        &["tokens", "create", "root", "--role", "admin"],
    );
    assert_eq!(escalate.status.code(), Some(2), "{escalate:?}");
    assert_eq!(
        String::from_utf8_lossy(&escalate.stderr),
        format!(
            "error: cutover at {} refused this credential (403 Forbidden): a credential grants \
             only what its creator holds everywhere, and this one lacks `logs` on *; leave it \
             out, or have an admin create the credential\n",
            cluster.api_url()
        )
    );
    let allowed = cluster.cli_with_env(
        &[("CUTOVER_TOKEN", &keeper)],
        &["tokens", "create", "reader", "--role", "viewer"],
    );
    assert!(allowed.status.success(), "{allowed:?}");
    let names: Vec<String> = cluster
        .json(&["tokens", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["ci-api", "ci-web", "keeper", "reader"]);
}

/// A request as a browser would send it to a loopback API that needs no token: no credential,
/// and the headers a page cannot leave out.
fn browser_request(
    cluster: &Cluster,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::blocking::Response {
    let mut request = reqwest::blocking::Client::new()
        .request(method, format!("{}{path}", cluster.api_url()))
        .timeout(Duration::from_secs(60));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().unwrap()
}

#[test]
fn a_web_page_cannot_act_on_or_read_a_loopback_api_that_needs_no_token() {
    // No token: the operator of this machine is an admin without one, through the CLI.
    let cluster = Cluster::start(Options::default());
    cluster.apply_and_wait_for_v1();
    let created = cluster.json(&deploy_args("taskdef-v2.json", "appspec.yaml", &[]));
    let id = created["id"].as_str().unwrap().to_string();
    let stop = format!("/v1/deployments/{id}/stop");

    // Any page the operator's browser has open may post to 127.0.0.1 (no body needed).
    let forged = browser_request(
        &cluster,
        Method::POST,
        &stop,
        &[("Origin", "http://attacker.example"), ("Sec-Fetch-Site", "cross-site")],
    );
    assert_eq!(forged.status().as_u16(), 403);
    let message = forged.text().unwrap();
    assert!(
        message.contains("http://attacker.example") && message.contains("--token"),
        "{message}"
    );
    // A browser that sends no Sec-Fetch-Site still sends the Origin of a cross-site POST.
    let forged = browser_request(&cluster, Method::POST, &stop, &[("Origin", "null")]);
    assert_eq!(forged.status().as_u16(), 403);

    // DNS rebinding: a page's own name, resolved to 127.0.0.1, is a same-origin request to it.
    let port = cluster.api_url().rsplit(':').next().unwrap().to_string();
    let rebound = format!("attacker.example:{port}");
    let read = browser_request(&cluster, Method::GET, "/v1/deployments", &[("Host", &rebound)]);
    assert_eq!(read.status().as_u16(), 403);
    let origin = format!("http://{rebound}");
    let acted = browser_request(
        &cluster,
        Method::POST,
        &stop,
        &[("Host", &rebound), ("Origin", &origin), ("Sec-Fetch-Site", "same-origin")],
    );
    assert_eq!(acted.status().as_u16(), 403);

    // The console's own pages, served from the API's address, still act.
    let own = format!("http://127.0.0.1:{port}");
    let read = browser_request(
        &cluster,
        Method::GET,
        "/v1/deployments",
        &[("Origin", &own), ("Sec-Fetch-Site", "same-origin")],
    );
    assert_eq!(read.status().as_u16(), 200);

    // Nothing was stopped: the release goes on to the end.
    wait_for("the deployment to succeed", Duration::from_secs(90), || {
        let status = cluster.deployment(&id)["status"].clone();
        assert_ne!(status, "Stopped", "a forged request stopped the deployment");
        (status == "Succeeded").then_some(())
    });
}

/// The role the next test declares, with the permissions cutover.yaml gives it.
const RELEASE_MANAGER: [Permission; 4] =
    [Permission::Read, Permission::Logs, Permission::Deploy, Permission::Approve];

#[test]
fn a_credential_bound_to_a_declared_role_can_do_exactly_its_permissions_and_nothing_once_apply_removes_the_role()
 {
    let names: Vec<&str> = RELEASE_MANAGER.iter().map(|p| p.name()).collect();
    let access = format!(
        "access:\n  roles:\n    - {{ name: release-manager, permissions: [{}] }}\n",
        names.join(", ")
    );
    let cluster = Cluster::start(Options { top_extra: access.clone(), ..Options::default() });
    let applied = cluster.json(&["apply", "-f", "cutover.yaml"]);
    let created =
        serde_json::json!({"kind": "role", "name": "release-manager", "action": "create"});
    assert!(
        applied["plan"]
            .as_array()
            .unwrap()
            .iter()
            .any(|item| { ["kind", "name", "action"].iter().all(|k| item[k] == created[k]) }),
        "{applied}"
    );
    cluster.apply_and_wait_for_v1();
    let secret = create_token(&cluster, "rm", &["--role", "release-manager"]);
    let listed = cluster.json(&["tokens", "list"]);
    assert_eq!(listed[0]["bindings"], serde_json::json!(["role release-manager on *"]));

    // Every endpoint of the permission map: refused without the role's permissions (changing
    // nothing), past authorization with them; shutdown is not among them.
    let before = fingerprint(&cluster);
    let endpoints = ENDPOINTS.iter().filter_map(|e| match e.rule {
        Rule::Needs(permission, _) => Some((e, permission)),
        _ => None,
    });
    for (endpoint, permission) in endpoints.clone().filter(|(_, p)| !RELEASE_MANAGER.contains(p)) {
        let (path, body) = request_for(endpoint);
        let (status, answer) = call(&cluster, &secret, endpoint.method, &path, &body);
        let message = answer["error"].as_str().unwrap_or_default();
        assert_eq!(status, 403, "{} {path}: {answer}", endpoint.method);
        assert!(
            message.starts_with(&format!("token:rm lacks the permission `{permission}` on ")),
            "{message}"
        );
    }
    assert_eq!(fingerprint(&cluster), before, "a refused request changed something");
    for (endpoint, permission) in endpoints.filter(|(_, p)| RELEASE_MANAGER.contains(p)) {
        let (path, body) = request_for(endpoint);
        let (status, answer) = call(&cluster, &secret, endpoint.method, &path, &body);
        assert!(
            status != 401 && status != 403,
            "{} {path} with {permission} answered {status}: {answer}",
            endpoint.method
        );
    }

    // `apply` of the file without the role deletes it, and says which credentials it leaves
    // with nothing; from the next request on, the credential may do nothing, and is told why.
    let yaml = std::fs::read_to_string(cluster.path("cutover.yaml")).unwrap();
    std::fs::write(cluster.path("cutover.yaml"), yaml.replace(&access, "")).unwrap();
    let applied = cluster.json(&["apply", "-f", "cutover.yaml"]);
    let deleted = applied["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["kind"] == "role")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        deleted,
        serde_json::json!({
            "kind": "role", "name": "release-manager", "action": "delete",
            "detail": "the credentials bound to it grant nothing until it is declared again: rm",
        })
    );
    let (status, answer) = call(&cluster, &secret, "GET", "/v1/status", &serde_json::json!({}));
    assert_eq!(status, 403, "{answer}");
    assert_eq!(
        answer["error"],
        "token:rm lacks the permission `read` on * (its role release-manager is no longer \
         declared in cutover.yaml's access.roles, so it grants nothing); a binding of role \
         viewer on * grants it (an admin runs `cutover tokens create NAME --role viewer --scope \
         '*'`; docs/access.md lists what each role may do)"
    );
    let refused = cluster.cli(&["tokens", "create", "rm2", "--role", "release-manager"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("no role `release-manager`; the roles are viewer, deployer and admin"),
        "{refused:?}"
    );
}
