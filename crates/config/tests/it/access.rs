//! `access.roles`: roles a team declares beside the built-ins; a name that shadows a built-in,
//! an unknown or repeated permission and a repeated role are errors at their place.

use config::parse_cutover_file;
use expect_test::expect;
use model::access::{DeclaredGroup, DeclaredRole, GroupGrant, Permission};

use crate::check;

/// A file with only `access:` (any other section may sit beside it).
fn with_access(access: &str) -> String {
    format!("repositories:\n  - name: web\naccess:\n{access}")
}

#[test]
fn declared_roles_are_read_with_their_permissions_in_order() {
    let text = with_access(
        "  roles:\n    - name: release-manager\n      description: ships and approves\n      \
         permissions: [read, logs, deploy, approve]\n    - { name: auditor, permissions: [audit] }\n",
    );
    let file = parse_cutover_file("cutover.yaml", &text).unwrap().value;
    assert_eq!(
        file.access.roles,
        vec![
            DeclaredRole {
                name: "release-manager".into(),
                permissions: vec![
                    Permission::Read,
                    Permission::Logs,
                    Permission::Deploy,
                    Permission::Approve
                ],
                description: Some("ships and approves".into()),
            },
            DeclaredRole {
                name: "auditor".into(),
                permissions: vec![Permission::Audit],
                description: None
            },
        ]
    );
    let none = parse_cutover_file("cutover.yaml", "repositories: [{ name: web }]\n").unwrap();
    assert!(none.value.access.roles.is_empty());
}

#[test]
fn an_unknown_permission_is_an_error_at_its_place_listing_the_valid_ones() {
    check(
        "cutover.yaml",
        &with_access(
            "  roles:\n    - name: release-manager\n      permissions: [read, deplyo, root]\n",
        ),
        expect![[r#"
            cutover.yaml:6:27: access.roles[0].permissions[1]: no permission "deplyo"; did you mean `deploy`? the permissions are read, logs, deploy, continue, stop, rollback, report-hook, approve, push, start-pipeline, stop-pipeline, apply, credentials, audit, shutdown (`docs/access.md`)
            cutover.yaml:6:35: access.roles[0].permissions[2]: no permission "root"; the permissions are read, logs, deploy, continue, stop, rollback, report-hook, approve, push, start-pipeline, stop-pipeline, apply, credentials, audit, shutdown (`docs/access.md`)
        "#]],
    );
}

#[test]
fn a_role_may_not_shadow_a_built_in_nor_repeat_a_name_or_a_permission() {
    check(
        "cutover.yaml",
        &with_access(
            "  roles:\n    - { name: deployer, permissions: [read] }\n    - { name: ops, \
             permissions: [read, read] }\n    - { name: ops, permissions: [] }\n    - { name: x, \
             permisions: [read] }\n",
        ),
        expect![[r#"
            cutover.yaml:5:15: access.roles[0].name: role `deployer` is built in (viewer, deployer, admin); name yours differently, e.g. `deployer-web`
            cutover.yaml:6:40: access.roles[1].permissions[1]: permission `read` is listed twice
            cutover.yaml:7:15: access.roles[2].name: duplicate role name `ops` (first on line 6); names must be unique
            cutover.yaml:7:33: access.roles[2].permissions: a role needs at least one permission, e.g. [read]
            cutover.yaml:8:18: access.roles[3].permisions: unknown field `permisions`; did you mean `permissions`?
        "#]],
    );
}

#[test]
fn provider_groups_map_to_built_in_and_declared_roles_on_their_scopes() {
    let text = with_access(
        "  roles:\n    - { name: release-manager, permissions: [read, deploy] }\n  oidc:\n    \
         groups:\n      deployers: [{ role: deployer, scope: 'web/*' }]\n      release: [{ role: \
         release-manager, scope: ['web/*', web] }, { role: viewer }]\n",
    );
    let file = parse_cutover_file("cutover.yaml", &text).unwrap().value;
    let grant = |role: &str, scopes: &[&str]| GroupGrant {
        role: role.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(
        file.access.groups,
        vec![
            DeclaredGroup {
                group: "deployers".into(),
                grants: vec![grant("deployer", &["web/*"])]
            },
            DeclaredGroup {
                group: "release".into(),
                grants: vec![grant("release-manager", &["web/*", "web"]), grant("viewer", &[])],
            },
        ]
    );
}

#[test]
fn a_group_mapped_to_no_role_or_a_bad_scope_is_an_error_at_its_place() {
    check(
        "cutover.yaml",
        &with_access(
            "  oidc:\n    issuer: https://id.example.com\n    groups:\n      deployers: [{ role: \
             deployr, scope: 'web/*' }]\n      ops: [{ role: admin, scope: ['/abs'] }]\n      \
             none: []\n",
        ),
        expect![[r#"
            cutover.yaml:7:27: access.oidc.groups.deployers[0].role: no role "deployr"; did you mean `deployer`? the roles are viewer, deployer, admin (built in, or declared in access.roles)
            cutover.yaml:8:36: access.oidc.groups.ops[0].scope[0]: scope "/abs": `/abs` is not a pattern over resource names: a scope names deployment groups as `application/group`, pipelines and repositories by name (e.g. `web/*`, `web`, `*`)
            cutover.yaml:9:13: access.oidc.groups.none: give the group a role, e.g. [{ role: viewer }], or leave it out
        "#]],
    );
}
