//! `access.roles`: roles a team declares beside the built-ins; a name that shadows a built-in,
//! an unknown or repeated permission and a repeated role are errors at their place.

use config::parse_cutover_file;
use expect_test::expect;
use model::access::{DeclaredRole, Permission};

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
