//! Roles, bindings and the decision: a pure function of a credential's bindings and a request's
//! permission and resource.

use std::fmt;

use model::glob::Glob;
use serde::{Deserialize, Serialize};

use super::permissions::{Permission, Resource};

/// A built-in role, modelled on AWS's managed policies for CodeDeploy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Role {
    pub name: &'static str,
    pub permissions: &'static [Permission],
    pub description: &'static str,
}

use Permission as P;

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

pub fn role(name: &str) -> Option<&'static Role> {
    ROLES.iter().find(|r| r.name == name)
}

/// What a binding grants: a built-in role, or permissions listed one by one (an inline policy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grants {
    Role(String),
    Permissions(Vec<Permission>),
}

/// A role (or permissions) on the resources its scopes match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub grants: Grants,
    /// Globs over resource names (`web/*` for application web's deployment groups, `web` for
    /// the pipeline or repository web); `*` alone is everything.
    pub scopes: Vec<String>,
}

/// Why a binding cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BindingError {
    #[error("no role `{0}`; the roles are viewer, deployer and admin (`docs/access.md`)")]
    UnknownRole(String),
    #[error("no permission `{0}`; `docs/access.md` lists them")]
    UnknownPermission(String),
    #[error("a binding needs a role or at least one permission")]
    Empty,
    #[error("a binding has a role or permissions one by one, not both")]
    RoleAndPermissions,
    #[error("scope `{scope}`: {problem}")]
    Scope { scope: String, problem: String },
}

impl Binding {
    /// A checked binding: the role and every permission exist, every scope is a valid glob.
    pub fn new(
        role_name: Option<&str>,
        permissions: &[String],
        scopes: &[String],
    ) -> Result<Binding, BindingError> {
        let grants = match role_name {
            Some(_) if !permissions.is_empty() => return Err(BindingError::RoleAndPermissions),
            Some(name) => {
                role(name).ok_or_else(|| BindingError::UnknownRole(name.to_string()))?;
                Grants::Role(name.to_string())
            }
            None if permissions.is_empty() => return Err(BindingError::Empty),
            None => Grants::Permissions(
                permissions
                    .iter()
                    .map(|p| {
                        Permission::from_name(p)
                            .ok_or_else(|| BindingError::UnknownPermission(p.clone()))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let scopes = if scopes.is_empty() { vec!["*".to_string()] } else { scopes.to_vec() };
        for scope in &scopes {
            if scope != "*" {
                Glob::new(scope).map_err(|err| BindingError::Scope {
                    scope: scope.clone(),
                    problem: err.to_string(),
                })?;
            }
        }
        Ok(Binding { grants, scopes })
    }

    pub fn admin() -> Binding {
        Binding { grants: Grants::Role("admin".into()), scopes: vec!["*".into()] }
    }

    fn has(&self, permission: Permission) -> bool {
        match &self.grants {
            Grants::Role(name) => role(name).is_some_and(|r| r.permissions.contains(&permission)),
            Grants::Permissions(permissions) => permissions.contains(&permission),
        }
    }

    fn covers(&self, resource: &Resource) -> bool {
        let everything = self.scopes.iter().any(|s| s == "*");
        match resource {
            Resource::Any => true,
            Resource::Global => everything,
            _ => {
                let name = resource.name().unwrap_or_default();
                everything
                    || self
                        .scopes
                        .iter()
                        .filter_map(|s| Glob::new(s).ok())
                        .any(|glob| glob.matches_path(name))
            }
        }
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.grants {
            Grants::Role(name) => write!(f, "role {name}")?,
            Grants::Permissions(p) => write!(
                f,
                "permissions {}",
                p.iter().map(|p| p.name()).collect::<Vec<_>>().join(",")
            )?,
        }
        write!(f, " on {}", self.scopes.join(", "))
    }
}

/// A permission `binding` grants that `holder` does not hold on `*`: a credential may create
/// only credentials that can do no more than itself, whatever their scopes.
pub fn not_held(holder: &[Binding], binding: &Binding) -> Option<Permission> {
    Permission::ALL.into_iter().find(|p| {
        binding.has(*p) && !matches!(decide(holder, *p, &Resource::Global), Decision::Allow)
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny {
        missing: Permission,
        resource: Resource,
        /// The least built-in role with the permission, scoped to the resource.
        would_grant: Binding,
    },
}

/// Whether `bindings` grant `permission` on `resource`.
pub fn decide(bindings: &[Binding], permission: Permission, resource: &Resource) -> Decision {
    if bindings.iter().any(|b| b.has(permission) && b.covers(resource)) {
        return Decision::Allow;
    }
    let role = ROLES
        .iter()
        .find(|r| r.permissions.contains(&permission))
        .expect("invariant: admin has every permission");
    let scope = resource.name().unwrap_or("*").to_string();
    Decision::Deny {
        missing: permission,
        resource: resource.clone(),
        would_grant: Binding { grants: Grants::Role(role.name.to_string()), scopes: vec![scope] },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(role: &str, scopes: &[&str]) -> Binding {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        Binding::new(Some(role), &[], &scopes).unwrap()
    }

    fn group(name: &str) -> Resource {
        Resource::DeploymentGroup(name.into())
    }

    #[test]
    fn a_scoped_deployer_deploys_its_own_groups_and_reads_the_others() {
        let team = [binding("deployer", &["web/*", "web"])];
        assert_eq!(decide(&team, P::Deploy, &group("web/web-prod")), Decision::Allow);
        assert_eq!(decide(&team, P::Rollback, &group("web/web-staging")), Decision::Allow);
        assert_eq!(decide(&team, P::Push, &Resource::Repository("web".into())), Decision::Allow);
        assert_eq!(decide(&team, P::Read, &Resource::Any), Decision::Allow);
        assert_eq!(
            decide(&team, P::Rollback, &group("api/api-prod")),
            Decision::Deny {
                missing: P::Rollback,
                resource: group("api/api-prod"),
                would_grant: binding("deployer", &["api/api-prod"]),
            }
        );
        // `*` stays within one part of a name: `web/*` is not `web-admin/…` nor `web/a/b`.
        assert!(matches!(decide(&team, P::Deploy, &group("web-admin/x")), Decision::Deny { .. }));
        assert!(matches!(
            decide(&team, P::StartPipeline, &Resource::Pipeline("webshop".into())),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn only_a_binding_on_everything_changes_the_configuration() {
        let scoped_admin = [binding("admin", &["web/*"])];
        let denied = decide(&scoped_admin, P::Apply, &Resource::Global);
        assert_eq!(
            denied,
            Decision::Deny {
                missing: P::Apply,
                resource: Resource::Global,
                would_grant: binding("admin", &["*"]),
            }
        );
        assert_eq!(decide(&[Binding::admin()], P::Apply, &Resource::Global), Decision::Allow);
        assert_eq!(decide(&[Binding::admin()], P::Deploy, &group("a/b")), Decision::Allow);
    }

    #[test]
    fn a_viewer_reads_but_changes_nothing_and_sees_no_logs() {
        let viewer = [binding("viewer", &[])];
        assert_eq!(decide(&viewer, P::Read, &Resource::Any), Decision::Allow);
        for permission in Permission::ALL.into_iter().filter(|p| *p != P::Read) {
            let Decision::Deny { missing, would_grant, .. } =
                decide(&viewer, permission, &group("web/web-prod"))
            else {
                panic!("viewer has {permission}");
            };
            assert_eq!(missing, permission);
            let expected =
                if matches!(permission, P::Apply | P::Credentials | P::Audit | P::Shutdown) {
                    "admin"
                } else {
                    "deployer"
                };
            assert_eq!(would_grant.grants, Grants::Role(expected.into()), "{permission}");
        }
    }

    #[test]
    fn a_credential_creates_only_credentials_that_can_do_no_more_than_itself() {
        let keeper = Binding::new(None, &["credentials".into(), "read".into()], &[]).unwrap();
        let admin = binding("admin", &["web/*"]);
        assert_eq!(not_held(std::slice::from_ref(&keeper), &admin), Some(P::Logs));
        assert_eq!(not_held(std::slice::from_ref(&keeper), &binding("viewer", &["web/*"])), None);
        assert_eq!(not_held(&[Binding::admin()], &admin), None);
        // Held only on some scope is not held: scopes cannot be compared, `*` can.
        let scoped = binding("deployer", &["web/*"]);
        assert_eq!(not_held(&[keeper, scoped], &binding("deployer", &["web/*"])), Some(P::Logs));
    }

    #[test]
    fn permissions_listed_one_by_one_grant_those_only() {
        let b = Binding::new(None, &["rollback".into()], &["web/*".into()]).unwrap();
        assert_eq!(decide(std::slice::from_ref(&b), P::Rollback, &group("web/p")), Decision::Allow);
        assert!(matches!(decide(&[b], P::Deploy, &group("web/p")), Decision::Deny { .. }));
        assert_eq!(
            Binding::new(Some("viewer"), &["deploy".into()], &[]),
            Err(BindingError::RoleAndPermissions)
        );
        assert_eq!(
            Binding::new(Some("root"), &[], &[]),
            Err(BindingError::UnknownRole("root".into()))
        );
        assert_eq!(
            Binding::new(None, &["delete-everything".into()], &[]),
            Err(BindingError::UnknownPermission("delete-everything".into()))
        );
        assert!(matches!(
            Binding::new(Some("viewer"), &[], &["/abs".into()]),
            Err(BindingError::Scope { .. })
        ));
    }
}
