//! Roles, bindings and the decision: a pure function of a credential's bindings and a request's
//! permission and resource.

use std::fmt;

use model::access::DeclaredRole;
use model::glob::Glob;
use serde::{Deserialize, Serialize};

use super::permissions::{Permission, Resource};

pub use model::access::{ROLES, Role, role};

/// What a binding grants: a role, or permissions listed one by one (an inline policy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grants {
    /// A role by name: a built-in, or one `cutover.yaml` declares (which [`resolve`] looks up
    /// when the caller is identified).
    Role(String),
    Permissions(Vec<Permission>),
    /// A declared role as it stood when the caller was identified: its permissions, or `None`
    /// when no role of that name is declared any more, as an IAM policy that was deleted: then
    /// it grants nothing, and a 403 says why. Never stored ([`Binding::stored`] turns it back
    /// into the name), so that a change of the role reaches every credential bound to it at
    /// once.
    #[serde(skip)]
    Declared {
        role: String,
        permissions: Option<Vec<Permission>>,
    },
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
    #[error("no role `{name}`; the roles are {known} (`docs/access.md`)")]
    UnknownRole { name: String, known: String },
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
    /// A checked binding of a built-in role or of permissions: see [`Binding::checked`].
    pub fn new(
        role_name: Option<&str>,
        permissions: &[String],
        scopes: &[String],
    ) -> Result<Binding, BindingError> {
        Binding::checked(role_name, permissions, scopes, &[])
    }

    /// A checked binding: the role (built in, or one of `declared`) and every permission exist,
    /// every scope is a valid glob.
    pub fn checked(
        role_name: Option<&str>,
        permissions: &[String],
        scopes: &[String],
        declared: &[DeclaredRole],
    ) -> Result<Binding, BindingError> {
        let grants = match role_name {
            Some(_) if !permissions.is_empty() => return Err(BindingError::RoleAndPermissions),
            Some(name) => {
                if role(name).is_none() && !declared.iter().any(|r| r.name == name) {
                    return Err(BindingError::UnknownRole {
                        name: name.to_string(),
                        known: role_names(declared),
                    });
                }
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
            model::access::check_scope(scope)
                .map_err(|problem| BindingError::Scope { scope: scope.clone(), problem })?;
        }
        Ok(Binding { grants, scopes })
    }

    pub fn admin() -> Binding {
        Binding { grants: Grants::Role("admin".into()), scopes: vec!["*".into()] }
    }

    /// As it is stored: a declared role by its name, whatever it grants now.
    pub fn stored(&self) -> Binding {
        match &self.grants {
            Grants::Declared { role, .. } => {
                Binding { grants: Grants::Role(role.clone()), scopes: self.scopes.clone() }
            }
            _ => self.clone(),
        }
    }

    /// The declared role it names that no longer exists, if so.
    pub fn gone_role(&self) -> Option<&str> {
        match &self.grants {
            Grants::Declared { role, permissions: None } => Some(role),
            _ => None,
        }
    }

    /// Whether it names a role that is not built in, which [`resolve`] must look up.
    pub fn names_declared_role(&self) -> bool {
        matches!(&self.grants, Grants::Role(name) if role(name).is_none())
    }

    fn has(&self, permission: Permission) -> bool {
        match &self.grants {
            Grants::Role(name) => role(name).is_some_and(|r| r.permissions.contains(&permission)),
            Grants::Permissions(permissions) => permissions.contains(&permission),
            Grants::Declared { permissions, .. } => {
                permissions.as_ref().is_some_and(|p| p.contains(&permission))
            }
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
            Grants::Role(name) | Grants::Declared { role: name, .. } => write!(f, "role {name}")?,
            Grants::Permissions(p) => write!(
                f,
                "permissions {}",
                p.iter().map(|p| p.name()).collect::<Vec<_>>().join(",")
            )?,
        }
        write!(f, " on {}", self.scopes.join(", "))
    }
}

/// The roles a binding may name, for messages: `viewer, deployer, admin and release-manager`.
fn role_names(declared: &[DeclaredRole]) -> String {
    let names: Vec<&str> =
        ROLES.iter().map(|r| r.name).chain(declared.iter().map(|r| r.name.as_str())).collect();
    match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// `bindings` with each role that is not built in looked up in `declared` (the roles
/// `cutover.yaml` declares now): its permissions, or none when it is no longer declared.
pub fn resolve(bindings: Vec<Binding>, declared: &[DeclaredRole]) -> Vec<Binding> {
    bindings
        .into_iter()
        .map(|binding| match &binding.grants {
            Grants::Role(name) if role(name).is_none() => {
                let permissions =
                    declared.iter().find(|r| r.name == *name).map(|r| r.permissions.clone());
                Binding {
                    grants: Grants::Declared { role: name.clone(), permissions },
                    scopes: binding.scopes,
                }
            }
            _ => binding,
        })
        .collect()
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
    use Permission as P;

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
            Err(BindingError::UnknownRole {
                name: "root".into(),
                known: "viewer, deployer and admin".into()
            })
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

    fn release_manager() -> DeclaredRole {
        DeclaredRole {
            name: "release-manager".into(),
            permissions: vec![P::Read, P::Logs, P::Deploy, P::Approve],
            description: None,
        }
    }

    #[test]
    fn a_declared_role_grants_exactly_its_permissions_on_its_scopes() {
        let declared = [release_manager()];
        let binding =
            Binding::checked(Some("release-manager"), &[], &["web/*".into()], &declared).unwrap();
        assert_eq!(binding.grants, Grants::Role("release-manager".into()));
        let resolved = resolve(vec![binding.clone()], &declared);
        assert_eq!(resolved[0].to_string(), "role release-manager on web/*");
        for permission in Permission::ALL {
            let allowed = decide(&resolved, permission, &group("web/web-prod")) == Decision::Allow;
            assert_eq!(allowed, declared[0].permissions.contains(&permission), "{permission}");
        }
        assert!(matches!(decide(&resolved, P::Deploy, &group("api/p")), Decision::Deny { .. }));
        // What is stored is the name, so that a change of the role reaches the credential.
        assert_eq!(resolved[0].stored(), binding);
        // Built-ins are never looked up.
        let viewer = binding_of("viewer");
        assert_eq!(resolve(vec![viewer.clone()], &declared), vec![viewer]);
    }

    fn binding_of(role: &str) -> Binding {
        binding(role, &["*"])
    }

    #[test]
    fn a_binding_to_a_role_no_longer_declared_grants_nothing_and_says_so() {
        let stored = Binding::checked(Some("release-manager"), &[], &[], &[release_manager()]);
        let resolved = resolve(vec![stored.unwrap()], &[]);
        assert_eq!(resolved[0].gone_role(), Some("release-manager"));
        for permission in Permission::ALL {
            assert!(
                matches!(decide(&resolved, permission, &Resource::Any), Decision::Deny { .. }),
                "{permission}"
            );
        }
        assert_eq!(not_held(&[Binding::admin()], &resolved[0]), None);
    }

    #[test]
    fn an_unknown_role_is_refused_naming_the_built_in_and_declared_ones() {
        let err = Binding::checked(Some("release"), &[], &[], &[release_manager()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no role `release`; the roles are viewer, deployer, admin and release-manager \
             (`docs/access.md`)"
        );
    }
}
