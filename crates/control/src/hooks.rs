//! Runs lifecycle hooks: a command, or an HTTP call, in place of CodeDeploy's Lambda functions.
//!
//! A command hook reports by its exit status (0 = Succeeded), or earlier through the API
//! (`PUT /v1/deployments/{id}/lifecycle-hooks/{execution}`), whichever comes first. An HTTP hook
//! receives CodeDeploy's payload (`DeploymentId`, `LifecycleEventHookExecutionId`) plus cutover's
//! URLs; a non-2xx answer fails it at once, otherwise the result must come through the API, as with
//! `PutLifecycleEventHookExecutionStatus`. An answer whose JSON body carries `"status":
//! "Succeeded"` or `"Failed"` settles it directly. The per-hook timeout is enforced by the
//! deployment state machine.
//!
//! Each execution gets its own token ([`HookTokens`]): it authorizes that one report, and only
//! while the execution is pending, so a hook never needs (nor sees) the API token.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::declared::{DeploymentGroupDoc, ListenerRefDoc};
use crate::state::Snapshot;

/// What a hook gets to know about the deployment it validates.
#[derive(Clone, Debug)]
pub struct HookContext {
    pub deployment_id: String,
    pub execution_id: String,
    pub event: String,
    pub listeners: GroupListeners,
    pub api_url: String,
    pub callback_url: String,
    /// This execution's own token ([`HookTokens::grant`]).
    pub token: String,
}

/// How a hook reaches its deployment group through the group's listeners.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupListeners {
    pub test_url: Option<String>,
    pub production_url: Option<String>,
    /// The `Host` a request to `test_url` needs to reach the group, when the group's traffic on
    /// its test listener is a listener rule chosen by host (several services on one port).
    pub test_host: Option<String>,
    /// The same for `production_url`.
    pub production_host: Option<String>,
}

impl GroupListeners {
    /// Where `group`'s test and production listeners are, and the host names their rules for
    /// the group take.
    pub fn of(snapshot: &Snapshot, group: &DeploymentGroupDoc) -> GroupListeners {
        let host = |listener: &ListenerRefDoc| {
            let lb = snapshot.load_balancers.iter().find(|lb| lb.name == listener.load_balancer)?;
            let doc = lb.listeners.iter().find(|l| l.name == listener.listener)?;
            rule_host(&doc.rules, &group.target_groups)
        };
        let test = group.test_listener.as_ref();
        GroupListeners {
            test_url: test.and_then(|l| snapshot.listener_url(l)),
            production_url: snapshot.listener_url(&group.production_listener),
            test_host: test.and_then(host),
            production_host: host(&group.production_listener),
        }
    }
}

/// A host name that the listener rule routing a deployment group's `target_groups` (the lowest
/// priority one, which a request meets first) takes by its `host_header` condition: its first
/// value without wildcards, else its first value with each `*` written `hook` and each `?` `h`
/// (`*.example.com` → `hook.example.com`). `None` when no rule forwards to the group (it routes
/// the listener's default action) or the rule takes any host.
pub fn rule_host(rules: &[routes::Rule], target_groups: &[String; 2]) -> Option<String> {
    let rule = rules
        .iter()
        .filter(|r| crate::routing::forwards_to(&r.action, target_groups))
        .min_by_key(|r| r.priority)?;
    let hosts = rule.conditions.iter().find_map(|c| match c {
        routes::Condition::HostHeader { values } => Some(values),
        _ => None,
    })?;
    let literal = hosts.iter().find(|h| !h.contains(['*', '?']));
    let host = literal.or(hosts.first())?;
    Some(host.replace('*', "hook").replace('?', "h"))
}

/// The tokens of pending hook executions, in memory only: a restart forgets them all, and the
/// hooks it runs again (hooks are at-least-once across a restart) get new ones.
#[derive(Default)]
pub struct HookTokens {
    /// (deployment, execution) -> token.
    grants: Mutex<HashMap<(String, String), String>>,
}

/// What a hook token allows: reporting this one execution's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookGrant {
    pub deployment_id: String,
    pub execution_id: String,
}

impl HookGrant {
    /// The one request this grant authorizes: `PUT` of this path.
    pub fn report_path(&self) -> String {
        format!("/v1/deployments/{}/lifecycle-hooks/{}", self.deployment_id, self.execution_id)
    }
}

impl HookTokens {
    /// A new random token for this execution, replacing any earlier one.
    pub fn grant(&self, deployment_id: &str, execution_id: &str) -> String {
        let token = format!("{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>());
        self.lock().insert((deployment_id.to_string(), execution_id.to_string()), token.clone());
        token
    }

    /// The execution is no longer pending: its token authorizes nothing from now on.
    pub fn revoke(&self, deployment_id: &str, execution_id: &str) {
        self.lock().remove(&(deployment_id.to_string(), execution_id.to_string()));
    }

    /// Revokes every token of a deployment (it finished).
    pub fn revoke_deployment(&self, deployment_id: &str) {
        self.lock().retain(|(deployment, _), _| deployment != deployment_id);
    }

    /// The grant of a presented token, compared in constant time against each pending one.
    pub fn lookup(&self, presented: &str) -> Option<HookGrant> {
        self.lock().iter().find_map(|((deployment_id, execution_id), token)| {
            crate::http::constant_time_eq(token.as_bytes(), presented.as_bytes()).then(|| {
                HookGrant {
                    deployment_id: deployment_id.clone(),
                    execution_id: execution_id.clone(),
                }
            })
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        // A panic elsewhere while holding the map leaves it consistent (single inserts/removes).
        self.grants.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Clone, Debug)]
pub enum HookTarget {
    Command(Vec<String>),
    Http(String),
}

/// The result of running a hook, when the hook itself settles it.
#[derive(Debug)]
pub enum HookRun {
    Done {
        succeeded: bool,
        message: String,
    },
    /// An HTTP hook accepted the call; its result comes through the API.
    AwaitingCallback,
}

/// Bound on the hook output kept in the deployment's history.
const OUTPUT_TAIL_BYTES: usize = 2048;

pub async fn run(target: HookTarget, ctx: HookContext, timeout: Duration) -> HookRun {
    match target {
        HookTarget::Command(argv) => run_command(argv, &ctx, timeout).await,
        HookTarget::Http(url) => run_http(&url, &ctx).await,
    }
}

async fn run_command(argv: Vec<String>, ctx: &HookContext, timeout: Duration) -> HookRun {
    let Some((program, args)) = argv.split_first() else {
        return HookRun::Done { succeeded: false, message: "hook command is empty".into() };
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        // A hook's output ends up in the deployment's history: it must never see `cutover up`'s
        // secrets (API token, webhook secrets), so it starts from the environment tasks get.
        .env_clear()
        .envs(hook_env(ctx))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A cancelled hook (the deployment stopped) must not keep running.
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            return HookRun::Done {
                succeeded: false,
                message: format!("could not start hook command `{program}`: {err}"),
            };
        }
    };
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let read_all = async move {
        let mut out = Vec::new();
        let mut err = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(1 << 20).read_to_end(&mut out).await;
        }
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(1 << 20).read_to_end(&mut err).await;
        }
        out.extend_from_slice(&err);
        out
    };
    // The state machine owns the timeout; this one only keeps a runaway hook from living forever.
    let waited = tokio::time::timeout(timeout + Duration::from_secs(5), async {
        let (output, status) = tokio::join!(read_all, child.wait());
        (output, status)
    })
    .await;
    match waited {
        Ok((output, Ok(status))) => {
            // The output is kept in the deployment's history: the token is not.
            let tail = tail(&output).replace(&ctx.token, "[CUTOVER_HOOK_TOKEN]");
            let succeeded = status.success();
            let message = match (succeeded, tail.is_empty()) {
                (true, _) => format!("hook command exited 0{}", prefixed(&tail)),
                (false, _) => format!("hook command failed ({status}){}", prefixed(&tail)),
            };
            HookRun::Done { succeeded, message }
        }
        Ok((_, Err(err))) => {
            HookRun::Done { succeeded: false, message: format!("hook command: {err}") }
        }
        Err(_) => HookRun::Done {
            succeeded: false,
            message: format!(
                "hook command did not finish within {}",
                model::format_duration(timeout)
            ),
        },
    }
}

/// A command hook's whole environment: [`runtime::host_env`] and the hook protocol's variables.
fn hook_env(ctx: &HookContext) -> Vec<(String, String)> {
    let mut env = runtime::host_env(&[]);
    let mut set = |name: &str, value: &str| env.push((name.to_string(), value.to_string()));
    set("CUTOVER_DEPLOYMENT_ID", &ctx.deployment_id);
    set("CUTOVER_HOOK_EXECUTION_ID", &ctx.execution_id);
    set("CUTOVER_LIFECYCLE_EVENT", &ctx.event);
    set("CUTOVER_API_URL", &ctx.api_url);
    set("CUTOVER_HOOK_CALLBACK_URL", &ctx.callback_url);
    set("CUTOVER_HOOK_TOKEN", &ctx.token);
    // CodeDeploy's payload names, for scripts ported from Lambda hooks.
    set("DeploymentId", &ctx.deployment_id);
    set("LifecycleEventHookExecutionId", &ctx.execution_id);
    let listeners = &ctx.listeners;
    for (name, value) in [
        ("CUTOVER_TEST_URL", &listeners.test_url),
        ("CUTOVER_PRODUCTION_URL", &listeners.production_url),
        ("CUTOVER_TEST_HOST", &listeners.test_host),
        ("CUTOVER_PRODUCTION_HOST", &listeners.production_host),
    ] {
        if let Some(value) = value {
            set(name, value);
        }
    }
    env
}

fn prefixed(tail: &str) -> String {
    if tail.is_empty() { String::new() } else { format!(": {tail}") }
}

fn tail(output: &[u8]) -> String {
    let start = output.len().saturating_sub(OUTPUT_TAIL_BYTES);
    String::from_utf8_lossy(&output[start..]).trim().replace('\n', " | ")
}

async fn run_http(url: &str, ctx: &HookContext) -> HookRun {
    let client =
        match reqwest::Client::builder().timeout(Duration::from_secs(30)).no_proxy().build() {
            Ok(client) => client,
            Err(err) => {
                return HookRun::Done { succeeded: false, message: format!("HTTP client: {err}") };
            }
        };
    let payload = serde_json::json!({
        "DeploymentId": ctx.deployment_id,
        "LifecycleEventHookExecutionId": ctx.execution_id,
        "LifecycleEvent": ctx.event,
        "TestUrl": ctx.listeners.test_url,
        "ProductionUrl": ctx.listeners.production_url,
        "TestHost": ctx.listeners.test_host,
        "ProductionHost": ctx.listeners.production_host,
        "CallbackUrl": ctx.callback_url,
        "HookToken": ctx.token,
    });
    let response = match client.post(url).json(&payload).send().await {
        Ok(response) => response,
        Err(err) => {
            return HookRun::Done {
                succeeded: false,
                message: format!("calling hook {url}: {err}"),
            };
        }
    };
    let status = response.status();
    if !status.is_success() {
        return HookRun::Done {
            succeeded: false,
            message: format!("hook {url} answered {status}"),
        };
    }
    let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
    match body.get("status").and_then(|s| s.as_str()) {
        Some("Succeeded") => {
            HookRun::Done { succeeded: true, message: format!("hook {url} answered Succeeded") }
        }
        Some("Failed") => {
            HookRun::Done { succeeded: false, message: format!("hook {url} answered Failed") }
        }
        _ => HookRun::AwaitingCallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routes::{Action, Condition, ForwardAction, Rule, WeightedTargetGroup};

    fn rule(priority: u32, conditions: Vec<Condition>, target_group: &str) -> Rule {
        Rule {
            priority,
            conditions,
            action: Action::Forward(ForwardAction::weighted(vec![WeightedTargetGroup {
                name: target_group.to_string(),
                weight: 1,
            }])),
        }
    }

    fn hosts(values: &[&str]) -> Condition {
        Condition::HostHeader { values: values.iter().map(|v| v.to_string()).collect() }
    }

    #[test]
    fn a_hook_gets_the_host_of_the_lowest_priority_rule_routing_its_group() {
        let pair = ["web-blue".to_string(), "web-green".to_string()];
        let path = Condition::PathPattern { values: vec!["/v1/*".into()] };
        let rules = [
            rule(30, vec![hosts(&["late.example.com"])], "web-green"),
            rule(10, vec![hosts(&["api.example.com"])], "api-blue"),
            rule(
                20,
                vec![path.clone(), hosts(&["*.web.example.com", "web.example.com"])],
                "web-blue",
            ),
        ];
        assert_eq!(rule_host(&rules, &pair).as_deref(), Some("web.example.com"));

        // Only wildcards: a name the first one takes.
        let wildcards =
            [rule(1, vec![hosts(&["*.web.example.?om", "w*.example.com"])], "web-blue")];
        assert_eq!(rule_host(&wildcards, &pair).as_deref(), Some("hook.web.example.hom"));

        // A rule for the group that takes any host, and no rule for it at all: no host to send.
        assert_eq!(rule_host(&[rule(1, vec![path], "web-blue")], &pair), None);
        assert_eq!(rule_host(&rules[1..2], &pair), None);
    }
}
