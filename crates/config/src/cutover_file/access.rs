//! `access:`, who may do what: the roles a team declares beside the built-in viewer, deployer
//! and admin (`roles:`), each a name and the permissions it groups, as an IAM customer-managed
//! policy or a role of Argo CD's `policy.csv`. Credentials bind them by name
//! (`cutover tokens create ci --role release-manager`); `docs/access.md` is the reference.

use model::access::{DeclaredRole, Permission, ROLES, role};
use syntax::decode::{Cx, quote};
use syntax::diag::suggest;
use syntax::tree::{Node, child_index};

use super::{Loc, Named, check_unique, name};

/// What `access:` declares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessDecl {
    pub roles: Vec<DeclaredRole>,
}

const ACCESS_FIELDS: &[&str] = &["roles"];
const ROLE_FIELDS: &[&str] = &["name", "permissions", "description"];

pub(super) fn access(cx: &mut Cx<'_>, node: &Node, path: &str) -> Option<AccessDecl> {
    let mut f = cx.map(node, path)?;
    let mut roles = Some(Vec::new());
    let mut names: Vec<Named> = Vec::new();
    if let Some(field) = f.get(cx, "roles") {
        let items = cx.list(field.node, &field.path)?;
        for (i, item) in items.iter().enumerate() {
            let (declared, named) = declared_role(cx, item, &child_index(&field.path, i));
            names.extend(named);
            match (declared, roles.as_mut()) {
                (Some(declared), Some(roles)) => roles.push(declared),
                _ => roles = None,
            }
        }
    }
    f.finish(cx, ACCESS_FIELDS, &[]);
    check_unique(cx, "role", &names);
    Some(AccessDecl { roles: roles? })
}

fn declared_role(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
) -> (Option<DeclaredRole>, Option<Named>) {
    let Some(mut f) = cx.map(node, path) else { return (None, None) };
    let named = name(cx, &mut f, "role").and_then(|(n, loc)| {
        // A role of a built-in's name would change what every `--role deployer` credential
        // may do, unseen: built-ins mean the same on every cutover.
        if role(&n).is_some() {
            cx.error(
                loc.pos,
                &loc.path,
                format!(
                    "role `{n}` is built in ({}); name yours differently, e.g. `{n}-web`",
                    builtin_names()
                ),
            );
            return None;
        }
        Some((n, loc))
    });
    let permissions = f
        .require(cx, "permissions", "list what the role may do, e.g. [read, deploy]")
        .and_then(|field| permissions(cx, field.node, &field.path));
    let description = f.get(cx, "description").and_then(|d| cx.string(d.node, &d.path));
    f.finish(cx, ROLE_FIELDS, &[]);
    let declared = match (&named, permissions) {
        (Some((name, _)), Some(permissions)) => {
            Some(DeclaredRole { name: name.clone(), permissions, description })
        }
        _ => None,
    };
    (declared, named)
}

/// A non-empty list of permission names, each once.
fn permissions(cx: &mut Cx<'_>, node: &Node, path: &str) -> Option<Vec<Permission>> {
    let items = cx.list(node, path)?;
    if items.is_empty() {
        cx.error(node.pos, path, "a role needs at least one permission, e.g. [read]");
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let item_path = child_index(path, i);
        let Some(text) = cx.string(item, &item_path) else {
            ok = false;
            continue;
        };
        let loc = Loc::node(item, &item_path);
        match Permission::from_name(&text) {
            Some(p) if out.contains(&p) => {
                cx.error(loc.pos, &loc.path, format!("permission `{text}` is listed twice"));
                ok = false;
            }
            Some(p) => out.push(p),
            None => {
                let valid = Permission::ALL.map(Permission::name);
                let hint = suggest(&text, valid)
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                cx.error(
                    loc.pos,
                    &loc.path,
                    format!(
                        "no permission {}; {hint}the permissions are {} (`docs/access.md`)",
                        quote(&text),
                        valid.join(", ")
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn builtin_names() -> String {
    ROLES.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
}
