//! The permission map: every endpoint of the API (the control plane's and the pipelines' router,
//! which `serve` merges) with the permission it needs and where the resource it acts on comes
//! from. The authorization layer, `docs/access.md` and the end-to-end table test all read
//! [`ENDPOINTS`], so an endpoint missing here is refused to everyone and fails those tests.

use std::fmt;

pub use model::access::Permission;

/// What a request acts on, for scoped bindings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// Not scoped: reads, which any binding with the permission grants wherever it is scoped
    /// (a team reads the others' services).
    Any,
    /// The whole installation (configuration, credentials, shutdown): only a binding scoped to
    /// `*` grants it.
    Global,
    /// A deployment group, `application/group`.
    DeploymentGroup(String),
    Pipeline(String),
    Repository(String),
}

impl Resource {
    /// The name a binding's scope is matched against.
    pub fn name(&self) -> Option<&str> {
        match self {
            Resource::Any | Resource::Global => None,
            Resource::DeploymentGroup(n) | Resource::Pipeline(n) | Resource::Repository(n) => {
                Some(n)
            }
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Any | Resource::Global => f.write_str("*"),
            Resource::DeploymentGroup(n) => write!(f, "deployment group {n}"),
            Resource::Pipeline(n) => write!(f, "pipeline {n}"),
            Resource::Repository(n) => write!(f, "repository {n}"),
        }
    }
}

/// Where an endpoint's resource comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceFrom {
    Any,
    Global,
    /// The `group` field of the JSON body (`POST /v1/deployments`).
    GroupInBody,
    /// The deployment group of the deployment `{id}` (looked up in the store).
    GroupOfDeployment,
    /// The pipeline `{name}`.
    Pipeline,
    /// The pipeline of the execution or build `{id}`/`{execution}` (`web-3`, `web-b3`).
    PipelineOfRun,
    /// The repository `{name}`, or `{repo}` of a git path.
    Repository,
}

/// Who may call an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Authenticated otherwise (a webhook's signature).
    Public,
    /// Single sign-on: open to everyone; the OpenID provider authenticates the user.
    SignIn,
    Needs(Permission, ResourceFrom),
}

/// One endpoint: a method, a path pattern (axum's `{param}` segments; `{repo}.git` matches a
/// segment ending in `.git`), and optionally the query that tells it apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub query: Option<&'static str>,
    pub rule: Rule,
}

const fn needs(
    method: &'static str,
    path: &'static str,
    permission: Permission,
    from: ResourceFrom,
) -> Endpoint {
    Endpoint { method, path, query: None, rule: Rule::Needs(permission, from) }
}

use Permission as P;
use ResourceFrom as R;

/// Every endpoint, in the order they are matched (a more specific one first).
pub const ENDPOINTS: &[Endpoint] = &[
    needs("GET", "/v1/status", P::Read, R::Any),
    needs("POST", "/v1/apply", P::Apply, R::Global),
    needs("GET", "/v1/services", P::Read, R::Any),
    needs("GET", "/v1/services/{name}", P::Read, R::Any),
    needs("GET", "/v1/tasks", P::Read, R::Any),
    needs("GET", "/v1/tasks/{id}/logs", P::Logs, R::Any),
    needs("GET", "/v1/target-groups", P::Read, R::Any),
    needs("GET", "/v1/certificates", P::Read, R::Any),
    needs("GET", "/v1/target-groups/{name}", P::Read, R::Any),
    needs("POST", "/v1/target-groups/{name}/targets", P::Apply, R::Global),
    needs("DELETE", "/v1/target-groups/{name}/targets", P::Apply, R::Global),
    needs("GET", "/v1/task-definitions", P::Read, R::Any),
    needs("POST", "/v1/task-definitions", P::Apply, R::Global),
    needs("GET", "/v1/task-definitions/{id}", P::Read, R::Any),
    needs("DELETE", "/v1/task-definitions/{id}", P::Apply, R::Global),
    needs("GET", "/v1/deployment-configs", P::Read, R::Any),
    needs("GET", "/v1/deployment-configs/{name}/preview", P::Read, R::Any),
    needs("GET", "/v1/deployments", P::Read, R::Any),
    needs("POST", "/v1/deployments", P::Deploy, R::GroupInBody),
    needs("GET", "/v1/deployments/{id}", P::Read, R::Any),
    needs("GET", "/v1/deployments/{id}/events", P::Read, R::Any),
    needs("GET", "/v1/deployments/{id}/stream", P::Read, R::Any),
    needs("POST", "/v1/deployments/{id}/stop", P::Stop, R::GroupOfDeployment),
    needs("POST", "/v1/deployments/{id}/rollback", P::Rollback, R::GroupOfDeployment),
    needs("POST", "/v1/deployments/{id}/continue", P::Continue, R::GroupOfDeployment),
    needs(
        "PUT",
        "/v1/deployments/{id}/lifecycle-hooks/{execution}",
        P::ReportHook,
        R::GroupOfDeployment,
    ),
    needs("GET", "/v1/alarms", P::Read, R::Any),
    needs("GET", "/v1/alarms/{name}", P::Read, R::Any),
    needs("GET", "/v1/metrics/query", P::Read, R::Any),
    needs("POST", "/v1/shutdown", P::Shutdown, R::Global),
    needs("GET", "/v1/metrics", P::Read, R::Any),
    needs("GET", "/metrics", P::Read, R::Any),
    // Credentials and the audit trail (`access`).
    needs("GET", "/v1/tokens", P::Credentials, R::Global),
    needs("POST", "/v1/tokens", P::Credentials, R::Global),
    needs("DELETE", "/v1/tokens/{name}", P::Credentials, R::Global),
    needs("GET", "/v1/audit", P::Audit, R::Global),
    // The pipelines' router.
    needs("GET", "/v1/repos", P::Read, R::Any),
    needs("POST", "/v1/repos", P::Apply, R::Global),
    needs("GET", "/v1/repos/{name}", P::Read, R::Any),
    needs("DELETE", "/v1/repos/{name}", P::Apply, R::Global),
    Endpoint {
        method: "GET",
        path: "/git/{repo}.git/info/refs",
        query: Some("service=git-receive-pack"),
        rule: Rule::Needs(P::Push, R::Repository),
    },
    needs("GET", "/git/{repo}.git/info/refs", P::Read, R::Any),
    needs("POST", "/git/{repo}.git/git-upload-pack", P::Read, R::Any),
    needs("POST", "/git/{repo}.git/git-receive-pack", P::Push, R::Repository),
    needs("GET", "/v1/pipelines", P::Read, R::Any),
    needs("GET", "/v1/pipelines/{name}", P::Read, R::Any),
    needs("POST", "/v1/pipelines/{name}/start", P::StartPipeline, R::Pipeline),
    needs("GET", "/v1/pipelines/{name}/executions", P::Read, R::Any),
    needs("GET", "/v1/pipelines/{name}/stream", P::Read, R::Any),
    needs("GET", "/v1/services/{name}/stream", P::Read, R::Any),
    needs("GET", "/v1/target-groups/{name}/stream", P::Read, R::Any),
    needs("GET", "/v1/pipelines/{name}/executions/{id}", P::Read, R::Any),
    needs("POST", "/v1/pipelines/{name}/executions/{id}/stop", P::StopPipeline, R::Pipeline),
    needs("POST", "/v1/pipelines/{name}/executions/{id}/retry", P::StartPipeline, R::Pipeline),
    needs("POST", "/v1/approvals/{execution}/approve", P::Approve, R::PipelineOfRun),
    needs("POST", "/v1/approvals/{execution}/reject", P::Approve, R::PipelineOfRun),
    needs("GET", "/v1/builds/{id}", P::Read, R::Any),
    needs("GET", "/v1/builds/{id}/logs", P::Logs, R::Any),
    Endpoint { method: "POST", path: "/v1/webhooks/{pipeline}", query: None, rule: Rule::Public },
    Endpoint { method: "GET", path: "/v1/login/oidc", query: None, rule: Rule::SignIn },
    Endpoint { method: "POST", path: "/v1/login/oidc", query: None, rule: Rule::SignIn },
    // The web console (the `console` crate): its pages read, its sign-in page and the files it
    // loads are open, and its actions are the API's own endpoints above.
    needs("GET", "/", P::Read, R::Any),
    needs("GET", "/deployments/{id}", P::Read, R::Any),
    needs("GET", "/pipelines", P::Read, R::Any),
    needs("GET", "/pipelines/{name}", P::Read, R::Any),
    needs("GET", "/pipelines/{name}/executions/{id}", P::Read, R::Any),
    needs("GET", "/builds/{id}", P::Read, R::Any),
    needs("GET", "/task-definitions/{family}", P::Read, R::Any),
    needs("GET", "/services/{name}", P::Read, R::Any),
    needs("GET", "/tasks/{id}", P::Read, R::Any),
    needs("GET", "/history", P::Read, R::Any),
    needs("GET", "/target-groups/{name}/metrics", P::Read, R::Any),
    needs("GET", "/target-groups/{name}", P::Read, R::Any),
    needs("GET", "/alarms", P::Read, R::Any),
    needs("GET", "/alarms/{name}", P::Read, R::Any),
    needs("POST", "/logout", P::Read, R::Any),
    Endpoint { method: "GET", path: "/login", query: None, rule: Rule::SignIn },
    Endpoint { method: "POST", path: "/login", query: None, rule: Rule::SignIn },
    Endpoint { method: "GET", path: "/login/sso", query: None, rule: Rule::SignIn },
    Endpoint { method: "GET", path: "/login/callback", query: None, rule: Rule::SignIn },
    Endpoint { method: "GET", path: "/console/{file}", query: None, rule: Rule::SignIn },
];

/// A request matched to its endpoint, with the path's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matched {
    pub endpoint: &'static Endpoint,
    pub params: Vec<(&'static str, String)>,
}

impl Matched {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// The endpoint a request is for; `None` when no endpoint has that method and path.
pub fn endpoint_of(method: &str, path: &str, query: Option<&str>) -> Option<Matched> {
    ENDPOINTS.iter().find_map(|endpoint| {
        if endpoint.method != method {
            return None;
        }
        if let Some(wanted) = endpoint.query
            && !query.is_some_and(|q| q.split('&').any(|pair| pair == wanted))
        {
            return None;
        }
        let params = match_path(endpoint.path, path)?;
        Some(Matched { endpoint, params })
    })
}

/// The parameters of `path` when it has the shape of `pattern`.
fn match_path(pattern: &'static str, path: &str) -> Option<Vec<(&'static str, String)>> {
    let mut wanted = pattern.split('/');
    let mut given = path.split('/');
    let mut params = Vec::new();
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) => {
                if let Some(rest) = w.strip_prefix('{') {
                    let (name, suffix) = rest.split_once('}')?;
                    let value = g.strip_suffix(suffix)?;
                    if value.is_empty() {
                        return None;
                    }
                    params.push((name, value.to_string()));
                } else if w != g {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// The pipeline of an execution (`web-3`) or a build (`web-b3`): what precedes the last `-`.
pub fn pipeline_of_run(id: &str) -> &str {
    id.rsplit_once('-').map_or(id, |(pipeline, _)| pipeline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_match_their_endpoint_with_its_parameters() {
        let m = endpoint_of("POST", "/v1/deployments/d-7/rollback", None).unwrap();
        assert_eq!(m.endpoint.rule, Rule::Needs(P::Rollback, R::GroupOfDeployment));
        assert_eq!(m.param("id"), Some("d-7"));
        let push = endpoint_of("GET", "/git/web.git/info/refs", Some("service=git-receive-pack"));
        assert_eq!(push.unwrap().endpoint.rule, Rule::Needs(P::Push, R::Repository));
        let fetch = endpoint_of("GET", "/git/web.git/info/refs", Some("service=git-upload-pack"));
        let fetch = fetch.unwrap();
        assert_eq!(fetch.endpoint.rule, Rule::Needs(P::Read, R::Any));
        assert_eq!(fetch.param("repo"), Some("web"));
        assert_eq!(endpoint_of("GET", "/v1/deployments/d-7/rollback", None), None);
        assert_eq!(endpoint_of("POST", "/v1/deployments/d-7/rollback/", None), None);
        assert_eq!(endpoint_of("GET", "/git/.git/info/refs", None), None);
        assert_eq!(pipeline_of_run("web-api-12"), "web-api");
        assert_eq!(pipeline_of_run("web-b3"), "web");
    }

    /// The routes the two routers declare, read from their source: each method of each
    /// `.route("PATH", get(…).post(…))`.
    fn declared_routes() -> Vec<(String, String)> {
        let sources = [
            include_str!("../http.rs"),
            include_str!("../../../pipelines/src/routes.rs"),
            include_str!("../../../console/src/lib.rs"),
        ];
        let mut routes = Vec::new();
        for source in sources {
            for call in source.split(".route(\"").skip(1) {
                let Some((path, rest)) = call.split_once('"') else { continue };
                // The handlers: up to the parenthesis that closes `.route(`.
                let mut depth = 1;
                let end = rest
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '(' => 1,
                            ')' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .map_or(rest.len(), |(i, _)| i);
                let args = &rest[..end];
                for (method, call) in
                    [("GET", "get("), ("POST", "post("), ("PUT", "put("), ("DELETE", "delete(")]
                {
                    if args.contains(call) {
                        routes.push((method.to_string(), path.to_string()));
                    }
                }
                if args.contains("any(") {
                    routes.push(("ANY".to_string(), path.to_string()));
                }
            }
        }
        routes
    }

    #[test]
    fn every_route_of_both_routers_has_an_entry_in_the_permission_map() {
        let routes = declared_routes();
        assert!(routes.len() > 40, "found only {routes:?}");
        for (method, path) in routes {
            if path == "/git/{*rest}" {
                // git's smart HTTP protocol: its three endpoints are listed one by one.
                assert!(ENDPOINTS.iter().filter(|e| e.path.starts_with("/git/")).count() == 4);
                continue;
            }
            assert!(
                ENDPOINTS.iter().any(|e| e.method == method && e.path == path),
                "{method} {path} is routed but has no entry in access::permissions::ENDPOINTS: \
                 add one with the permission it needs (and run UPDATE_EXPECT=1 for docs/access.md)"
            );
        }
    }
}
