//! Who may do what: the permissions, named after the API's actions, and the roles that group
//! them — the built-ins, modelled on AWS's managed policies, and those `cutover.yaml` declares
//! (`access.roles`). Shared by the file's parser (which checks names against these) and the
//! control plane's authorization (`control::access`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// One thing a caller can do, named after the API's actions (as IAM's `codedeploy:*` actions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    Read,
    Logs,
    Deploy,
    Continue,
    Stop,
    Rollback,
    ReportHook,
    Approve,
    Push,
    StartPipeline,
    StopPipeline,
    Apply,
    Credentials,
    Audit,
    Shutdown,
}

impl Permission {
    pub const ALL: [Permission; 15] = [
        Permission::Read,
        Permission::Logs,
        Permission::Deploy,
        Permission::Continue,
        Permission::Stop,
        Permission::Rollback,
        Permission::ReportHook,
        Permission::Approve,
        Permission::Push,
        Permission::StartPipeline,
        Permission::StopPipeline,
        Permission::Apply,
        Permission::Credentials,
        Permission::Audit,
        Permission::Shutdown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Logs => "logs",
            Permission::Deploy => "deploy",
            Permission::Continue => "continue",
            Permission::Stop => "stop",
            Permission::Rollback => "rollback",
            Permission::ReportHook => "report-hook",
            Permission::Approve => "approve",
            Permission::Push => "push",
            Permission::StartPipeline => "start-pipeline",
            Permission::StopPipeline => "stop-pipeline",
            Permission::Apply => "apply",
            Permission::Credentials => "credentials",
            Permission::Audit => "audit",
            Permission::Shutdown => "shutdown",
        }
    }

    pub fn from_name(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.name() == name)
    }

    /// What it allows, in a sentence, with its AWS counterpart.
    pub fn description(self) -> &'static str {
        match self {
            Permission::Read => {
                "Read everything but logs, the audit trail and credentials: status, services, \
                 tasks, target groups, task definitions, deployments and their events, alarms, \
                 metrics, repositories, pipelines, executions, builds; clone and fetch hosted \
                 repositories (AWS: `codedeploy:Get*`, `List*`, `BatchGet*`)."
            }
            Permission::Logs => {
                "Read task and build output, which may hold what programs print about their \
                 secrets (AWS: `logs:GetLogEvents`)."
            }
            Permission::Deploy => {
                "Start a deployment in a deployment group, with its task definition \
                 (`codedeploy:CreateDeployment`, `ecs:RegisterTaskDefinition`)."
            }
            Permission::Continue => {
                "End a deployment's ready wait or termination wait \
                 (`codedeploy:ContinueDeployment`)."
            }
            Permission::Stop => {
                "Stop a deployment; the group's auto-rollback decides what happens to traffic, \
                 unless the request says (`codedeploy:StopDeployment`)."
            }
            Permission::Rollback => {
                "Stop a deployment and put production and test traffic back on blue \
                 (`codedeploy:StopDeployment` with `autoRollbackEnabled`)."
            }
            Permission::ReportHook => {
                "Report a lifecycle hook's result \
                 (`codedeploy:PutLifecycleEventHookExecutionStatus`); a hook's own token \
                 reports its own execution without it."
            }
            Permission::Approve => {
                "Approve or reject a pipeline's manual approval \
                 (`codepipeline:PutApprovalResult`)."
            }
            Permission::Push => "Push to a hosted repository over HTTP (`codecommit:GitPush`).",
            Permission::StartPipeline => {
                "Start a pipeline, or retry a stage of one of its executions \
                 (`codepipeline:StartPipelineExecution`, `RetryStageExecution`)."
            }
            Permission::StopPipeline => {
                "Stop or abandon a pipeline's execution (`codepipeline:StopPipelineExecution`)."
            }
            Permission::Apply => {
                "Change the configuration: apply cutover.yaml (load balancers, services, groups, \
                 hooks, pipelines), register and deregister targets and task definitions, create \
                 and delete repositories (`codedeploy:CreateDeploymentGroup`, \
                 `elasticloadbalancing:*`, …)."
            }
            Permission::Credentials => {
                "Create, list and revoke named credentials (`iam:CreateAccessKey`, …)."
            }
            Permission::Audit => "Read the audit trail (`cloudtrail:LookupEvents`).",
            Permission::Shutdown => "Stop cutover: tasks, load balancer and control plane.",
        }
    }

    /// The CLI commands that need it.
    pub fn commands(self) -> &'static str {
        match self {
            Permission::Read => {
                "`status`, `services`, `tasks list`, `target-groups list|get`, \
                 `task-definitions list|get`, `deployment-configs`, `deployments list|get|watch`, \
                 `deploy --wait`, `alarms`, `metrics`, `repos list|get`, `pipelines \
                 list|get|executions|execution`, `builds get`, `git clone`/`fetch`"
            }
            Permission::Logs => "`logs`, `builds logs`",
            Permission::Deploy => "`deploy`",
            Permission::Continue => "`deployments continue`",
            Permission::Stop => "`deployments stop`",
            Permission::Rollback => "`deployments rollback`",
            Permission::ReportHook => "`hooks report`",
            Permission::Approve => "`approvals approve|reject`",
            Permission::Push => "`git push`",
            Permission::StartPipeline => "`pipelines start|retry`",
            Permission::StopPipeline => "`pipelines stop`",
            Permission::Apply => {
                "`apply`, `target-groups register|deregister`, `task-definitions \
                 register|deregister`, `repos create|delete`"
            }
            Permission::Credentials => "`tokens create|list|revoke`",
            Permission::Audit => "`audit`",
            Permission::Shutdown => "`down`",
        }
    }

    /// Whether a request it allows, other than a `GET`, changes something (and so goes to the
    /// audit trail): a `git fetch` is a `POST` that only reads.
    pub fn changes(self) -> bool {
        !matches!(self, Permission::Read | Permission::Logs | Permission::Audit)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

use Permission as P;

/// A built-in role, modelled on AWS's managed policies for CodeDeploy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Role {
    pub name: &'static str,
    pub permissions: &'static [Permission],
    pub description: &'static str,
}

/// From least to most: the first role that has a permission is the one a 403 suggests.
pub const ROLES: &[Role] = &[
    Role {
        name: "viewer",
        permissions: &[P::Read],
        description: "Reads everything but logs, the audit trail and credentials \
                      (AWSCodeDeployReadOnlyAccess). Logs are left out because programs print \
                      what they should not.",
    },
    Role {
        name: "deployer",
        permissions: &[
            P::Read,
            P::Logs,
            P::Deploy,
            P::Continue,
            P::Stop,
            P::Rollback,
            P::ReportHook,
            P::Approve,
            P::Push,
            P::StartPipeline,
            P::StopPipeline,
        ],
        description: "Releases: deploys, continues, stops and rolls back deployments, reports \
                      hooks, approves, pushes, starts and stops pipelines, reads logs \
                      (AWSCodeDeployDeployerAccess). Changes no configuration.",
    },
    Role {
        name: "admin",
        permissions: &Permission::ALL,
        description: "Everything, including `apply`, credentials, the audit trail and \
                      shutting cutover down (AWSCodeDeployFullAccess). The bootstrap token \
                      (`--token`, `DATA_DIR/token`) is an admin on `*`.",
    },
];

/// The built-in role of that name.
pub fn role(name: &str) -> Option<&'static Role> {
    ROLES.iter().find(|r| r.name == name)
}

/// A role `cutover.yaml` declares (`access.roles`), beside the built-ins: a team's own grouping
/// of permissions (`release-manager: read, logs, deploy, approve`), as an IAM customer-managed
/// policy or an Argo CD `policy.csv` role. Its name is never a built-in's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredRole {
    pub name: String,
    pub permissions: Vec<Permission>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A role the members of an OpenID provider's group get, on some scopes, as `access.oidc.groups`
/// declares it (the file's alternative to `cutover up --oidc-group`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupGrant {
    /// A built-in role or a declared one.
    pub role: String,
    /// Globs over resource names; none is `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

/// A provider's group and what its members get.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredGroup {
    pub group: String,
    pub grants: Vec<GroupGrant>,
}

/// Who made an authenticated request, as the audit trail names them (`user:alice`,
/// `token:ci-web`, `bootstrap`, `local`). The control plane's access layer puts it in every
/// allowed request's extensions, so a handler that records who did something (an approval's
/// `by`, as CodePipeline records the IAM identity that approved) takes it from there and no
/// request body can claim another name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal(pub String);

/// Why `scope` cannot be a binding's scope (`web/*`, `web`), in the words of resource names: a
/// glob's own messages speak of files and directories.
pub fn check_scope(scope: &str) -> Result<(), String> {
    use crate::glob::{Glob, Problem};
    if scope == "*" {
        return Ok(());
    }
    Glob::new(scope).map(drop).map_err(|err| match err.problem {
        Problem::BackwardsRange { .. } | Problem::UnclosedClass => err.to_string(),
        _ => format!(
            "`{scope}` is not a pattern over resource names: a scope names deployment groups as \
             `application/group`, pipelines and repositories by name (e.g. `web/*`, `web`, `*`)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_patterns_over_resource_names() {
        for ok in ["*", "web", "web/*", "web/web-prod", "api-[0-9]/*"] {
            assert_eq!(check_scope(ok), Ok(()), "{ok}");
        }
        for bad in ["/abs", "", "../up", "a\\b"] {
            let err = check_scope(bad).unwrap_err();
            assert!(err.contains("is not a pattern over resource names"), "{bad}: {err}");
        }
        assert!(check_scope("[z-a]").unwrap_err().contains("backwards"));
    }
}
