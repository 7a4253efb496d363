//! Single sign-on (issue 15) end to end against a real OpenID provider: the certified
//! `oidc-provider` of npm, run by `crates/cutover/tests/oidc/provider.js` on loopback (its
//! dependencies are installed by `npm ci` in that folder, as `.ci/run` does). The "browser" is
//! curl with a cookie jar, following the provider's redirects.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use control::access::oidc::{Expected, IdTokenError, LoginSecrets, verify_id_token};

use crate::harness::*;

/// The provider's process, stopped when the test ends.
pub(crate) struct Provider {
    child: Child,
    pub(crate) issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Starts the provider on a free loopback port and waits for its `ready ISSUER` line.
fn start_provider() -> Provider {
    start_provider_with(&[])
}

/// [`start_provider`] with `args` after its port (`form`: a login page asking who signs in).
pub(crate) fn start_provider_with(args: &[&str]) -> Provider {
    let dir = provider_dir();
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "the OpenID provider's packages are missing: run `npm ci` in {}",
        dir.display()
    );
    let mut child = Command::new("node")
        .arg("provider.js")
        .arg(free_port().to_string())
        .args(args)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("running node (the tests need Node.js)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let issuer = loop {
        let line = lines.next().expect("the provider exited before it was ready").unwrap();
        if let Some(issuer) = line.strip_prefix("ready ") {
            break issuer.to_string();
        }
    };
    // Keep reading what it prints: a closed pipe would fail its next write (and the request).
    std::thread::spawn(move || lines.for_each(drop));
    Provider { child, issuer }
}

/// The browser: follows the provider's redirects (its session cookie in a jar) from `url` to
/// the end, which is the redirect URI; the last page's body and the URL it ended at.
fn browse(jar: &Path, url: &str) -> (String, String) {
    let output = Command::new("curl")
        .args(["-sS", "-L", "--max-redirs", "10", "--max-time", "30", "-w", "\n%{url_effective}"])
        .arg("-c")
        .arg(jar)
        .arg("-b")
        .arg(jar)
        .arg(url)
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
    (body.to_string(), last.to_string())
}

#[test]
fn a_user_in_deployers_logs_in_through_the_provider_deploys_but_may_not_apply_and_the_audit_trail_names_user_and_provider()
 {
    let provider = start_provider();
    let cluster = Cluster::start(Options {
        up_env: vec![
            ("CUTOVER_OIDC_ISSUER", provider.issuer.clone()),
            ("CUTOVER_OIDC_CLIENT_ID", "cutover".into()),
            ("CUTOVER_OIDC_GROUPS", "deployers=deployer:web/*;platform=admin".into()),
        ],
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let config_home = cluster.path("home/.config");
    let user_env = [("XDG_CONFIG_HOME", config_home.to_str().unwrap())];

    let mut login = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["login", "--no-browser"])
        .env("CUTOVER_API", cluster.api_url())
        .env("CUTOVER_DATA_DIR", cluster.data_dir())
        .envs(user_env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(login.stderr.take().unwrap()).lines();
    let url = loop {
        let line = stderr.next().expect("login exited before printing the URL").unwrap();
        if let Some(url) = line.trim().strip_prefix(&format!("{}/auth?", provider.issuer)) {
            break format!("{}/auth?{url}", provider.issuer);
        }
    };
    assert!(url.contains("code_challenge_method=S256") && url.contains("nonce="), "{url}");
    let (page, ended_at) = browse(&cluster.path("cookies"), &url);
    assert!(ended_at.starts_with("http://127.0.0.1:"), "{ended_at}");
    assert!(ended_at.contains("/callback?code="), "{ended_at}");
    assert_eq!(page, "Signed in to cutover; you can close this window.");
    let login = login.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&login.stdout);
    assert!(login.status.success(), "{login:?}");
    assert!(
        said.starts_with(&format!(
            "logged in to {} as alice (role deployer on web/*) until ",
            cluster.api_url()
        )),
        "{said}"
    );
    // The session is kept where only its owner reads it.
    let sessions = config_home.join("cutover/sessions.json");
    let mode = std::fs::metadata(&sessions).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::metadata(sessions.parent().unwrap()).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let deploy = deploy_args("taskdef-v2.json", "appspec.yaml", &["--output", "json"]);
    let deployed = cluster.cli_with_env(&user_env, &deploy);
    assert!(deployed.status.success(), "{deployed:?}");
    let id = serde_json::from_slice::<serde_json::Value>(&deployed.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let refused = cluster.cli_with_env(&user_env, &["apply", "-f", "cutover.yaml"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        format!(
            "error: cutover at {} refused this credential (403 Forbidden): user:alice lacks the \
             permission `apply` on *; a binding of role admin on * grants it (an admin runs \
             `cutover tokens create NAME --role admin --scope '*'`; docs/access.md lists what \
             each role may do)\n",
            cluster.api_url()
        )
    );

    // An admin ends the session (sessions are listed with the credentials); the CLI then says
    // so in the API's words, with how to sign in again.
    let tokens = cluster.json(&["tokens", "list"]);
    let session = tokens.as_array().unwrap().iter().find(|t| t["user"] == "alice").unwrap();
    assert!(session["name"].as_str().unwrap().starts_with("sso-"), "{session}");
    assert_eq!(session["via"], provider.issuer.as_str());
    cluster.cli_ok(&["tokens", "revoke", session["name"].as_str().unwrap()]);
    let ended = cluster.cli_with_env(&user_env, &["status"]);
    assert_eq!(ended.status.code(), Some(2), "{ended:?}");
    assert_eq!(
        String::from_utf8_lossy(&ended.stderr),
        format!(
            "error: cutover at {} refused the session of `cutover login` (401 Unauthorized): this \
             token is not valid (revoked, expired or mistyped): sign in again with `cutover \
             login`, or pass a valid token with --token or CUTOVER_TOKEN\n",
            cluster.api_url()
        )
    );

    // A code that the provider did not issue opens no session.
    let (status, answer) = cluster.api(
        reqwest::Method::POST,
        "/v1/login/oidc",
        &serde_json::json!({
            "code": "forged", "code_verifier": "v".repeat(43),
            "redirect_uri": "http://127.0.0.1:9/callback", "nonce": "n",
        }),
    );
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"].as_str().unwrap().starts_with("the provider refused the code: 400"));

    let trail = cluster.json(&["audit", "--actor", "user:alice"]);
    let entries: Vec<String> = trail
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {} via {}",
                e["actor"], e["action"], e["resource"], e["outcome"], e["detail"]["via"]
            )
            .replace('"', "")
        })
        .collect();
    let via = &provider.issuer;
    assert_eq!(
        entries,
        [
            format!("user:alice login * succeeded via {via}"),
            format!("user:alice deploy deployment group web/web-prod succeeded via {via}"),
            format!("user:alice apply * denied via {via}"),
        ]
    );
    assert_eq!(trail[1]["detail"]["deployment"], id.as_str());
    let forged = cluster.json(&["audit", "--action", "login", "--actor", "anonymous"]);
    assert_eq!(forged[0]["outcome"], "unauthenticated", "{forged}");
    assert_eq!(forged[0]["detail"]["via"], via.as_str());
}

/// Signs alice in at the provider and redeems the code as cutover would: her raw ID token.
fn id_token_of_alice(provider: &Provider, jar: &Path, secrets: &LoginSecrets) -> String {
    let redirect_uri = format!("http://127.0.0.1:{}/callback", free_port());
    let url = reqwest::Url::parse_with_params(
        &format!("{}/auth", provider.issuer),
        [
            ("response_type", "code"),
            ("client_id", "cutover"),
            ("redirect_uri", redirect_uri.as_str()),
            ("scope", "openid profile groups"),
            ("state", secrets.state.as_str()),
            ("nonce", secrets.nonce.as_str()),
            ("code_challenge", secrets.challenge().as_str()),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap();
    let (_, ended_at) = browse(jar, url.as_str());
    let ended_at = reqwest::Url::parse(&ended_at).unwrap();
    let code = ended_at.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let answer: serde_json::Value = reqwest::blocking::Client::new()
        .post(format!("{}/token", provider.issuer))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", &secrets.verifier),
            ("client_id", "cutover"),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    answer["id_token"].as_str().unwrap_or_else(|| panic!("{answer}")).to_string()
}

#[test]
fn the_real_providers_id_token_verifies_against_its_jwks_and_tampered_or_expired_it_is_refused() {
    let provider = start_provider();
    let dir = tempfile::tempdir().unwrap();
    let secrets = LoginSecrets::generate();
    let raw = id_token_of_alice(&provider, &dir.path().join("cookies"), &secrets);
    let jwks = reqwest::blocking::get(format!("{}/jwks", provider.issuer)).unwrap().json().unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = raw.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    // Read at the moment the provider issued it (its own clock, not this test's).
    let now = claims["iat"].as_u64().unwrap();
    let expected = Expected {
        issuer: &provider.issuer,
        client_id: "cutover",
        nonce: &secrets.nonce,
        groups_claim: "groups",
        now,
    };
    let identity = verify_id_token(&raw, &jwks, &expected).unwrap();
    assert_eq!((identity.subject.as_str(), identity.user.as_str()), ("alice", "alice"));
    assert_eq!(identity.groups, ["deployers"]);

    // Tampered: alice's groups rewritten to `platform`, the provider's signature kept.
    claims["groups"] = serde_json::json!(["platform"]);
    let tampered = format!("{}.{}.{}", parts[0], b64.encode(claims.to_string()), parts[2]);
    assert_eq!(
        verify_id_token(&tampered, &jwks, &expected),
        Err(IdTokenError::Invalid("InvalidSignature".into()))
    );
    // Expired: the same token read after its `exp` (and the clock skew allowed).
    let exp = claims["exp"].as_u64().unwrap();
    let later = Expected { now: exp + 60, ..expected.clone() };
    assert_eq!(verify_id_token(&raw, &jwks, &later), Err(IdTokenError::Expired(exp)));
    // Another login's: its nonce is not this one's.
    let replayed = Expected { nonce: "another-login", ..expected };
    assert_eq!(verify_id_token(&raw, &jwks, &replayed), Err(IdTokenError::Nonce));
}

/// Runs `cutover login --no-browser` as the user whose config lives in `config_home`, and
/// completes the provider's side with the browser: what the CLI printed and how it ended.
fn log_in(cluster: &Cluster, provider: &Provider, config_home: &Path) -> std::process::Output {
    let mut login = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["login", "--no-browser"])
        .env("CUTOVER_API", cluster.api_url())
        .env("CUTOVER_DATA_DIR", cluster.data_dir())
        .env("XDG_CONFIG_HOME", config_home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(login.stderr.take().unwrap()).lines();
    let mut said = String::new();
    let url = loop {
        let line = stderr.next().expect("login exited before printing the URL").unwrap();
        if let Some(url) = line.trim().strip_prefix(&format!("{}/auth?", provider.issuer)) {
            break format!("{}/auth?{url}", provider.issuer);
        }
        said.push_str(&line);
        said.push('\n');
    };
    browse(&cluster.path("cookies"), &url);
    let mut output = login.wait_with_output().unwrap();
    for line in stderr.map_while(Result::ok) {
        said.push_str(&line);
        said.push('\n');
    }
    output.stderr = said.into_bytes();
    output
}

#[test]
fn groups_mapped_in_cutover_yaml_give_their_members_roles_and_a_group_apply_unmaps_is_refused() {
    let provider = start_provider();
    let mapping =
        "access:\n  oidc:\n    groups:\n      deployers: [{ role: deployer, scope: 'web/*' }]\n";
    let cluster = Cluster::start(Options {
        up_env: vec![
            ("CUTOVER_OIDC_ISSUER", provider.issuer.clone()),
            ("CUTOVER_OIDC_CLIENT_ID", "cutover".into()),
        ],
        top_extra: mapping.to_string(),
        ..Options::default()
    });
    cluster.apply_and_wait_for_v1();
    let config_home = cluster.path("home/.config");

    let signed_in = log_in(&cluster, &provider, &config_home);
    assert!(signed_in.status.success(), "{signed_in:?}");
    let said = String::from_utf8_lossy(&signed_in.stdout);
    let expected =
        format!("logged in to {} as alice (role deployer on web/*) until ", cluster.api_url());
    assert!(said.starts_with(&expected), "{said}");

    // The file now maps another group: alice's is no longer given a role.
    let yaml = std::fs::read_to_string(cluster.path("cutover.yaml")).unwrap();
    let remapped = yaml.replace(mapping, &mapping.replace("deployers:", "platform:"));
    std::fs::write(cluster.path("cutover.yaml"), remapped).unwrap();
    let applied = cluster.json(&["apply", "-f", "cutover.yaml"]);
    let groups: Vec<String> = applied["plan"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["kind"] == "oidc_group")
        .map(|item| format!("{} {}", item["action"], item["name"]).replace('"', ""))
        .collect();
    assert_eq!(groups, ["create platform", "delete deployers"], "{applied}");

    let refused = log_in(&cluster, &provider, &cluster.path("other/.config"));
    assert!(!refused.status.success(), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains(
            "alice signed in, but none of their groups (deployers) is given a role here; an admin \
             maps groups to roles in cutover.yaml's access.oidc.groups"
        ),
        "{said}"
    );
    let logins = cluster.json(&["audit", "--action", "login", "--actor", "user:alice"]);
    let outcomes: Vec<&str> =
        logins.as_array().unwrap().iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["succeeded", "denied"], "{logins}");
}
