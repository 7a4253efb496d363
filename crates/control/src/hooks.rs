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

/// What a hook gets to know about the deployment it validates.
#[derive(Clone, Debug)]
pub struct HookContext {
    pub deployment_id: String,
    pub execution_id: String,
    pub event: String,
    pub test_url: Option<String>,
    pub production_url: Option<String>,
    pub api_url: String,
    pub callback_url: String,
    /// This execution's own token ([`HookTokens::grant`]).
    pub token: String,
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
    if let Some(url) = &ctx.test_url {
        set("CUTOVER_TEST_URL", url);
    }
    if let Some(url) = &ctx.production_url {
        set("CUTOVER_PRODUCTION_URL", url);
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
        "TestUrl": ctx.test_url,
        "ProductionUrl": ctx.production_url,
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
