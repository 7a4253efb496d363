//! `access:`, who may do what: the roles a team declares beside the built-in viewer, deployer
//! and admin (`roles:`), each a name and the permissions it groups, as an IAM customer-managed
//! policy or a role of Argo CD's `policy.csv`. Credentials bind them by name
//! (`cutover tokens create ci --role release-manager`); and the roles the groups of the team's
//! OpenID provider map to (`oidc.groups`), the file's alternative to `cutover up --oidc-group`.
//! `docs/access.md` is the reference.

use model::access::{
    DeclaredGroup, DeclaredRole, GroupGrant, Permission, ROLES, check_scope, role,
};
use syntax::decode::{Cx, quote};
use syntax::diag::suggest;
use syntax::tree::{Node, Value, child_index, child_key};

use super::{Loc, Named, check_unique, name};

/// What `access:` declares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessDecl {
    pub roles: Vec<DeclaredRole>,
    /// `oidc.groups`, in the order written.
    pub groups: Vec<DeclaredGroup>,
}

const ACCESS_FIELDS: &[&str] = &["roles", "oidc"];
const OIDC_FIELDS: &[&str] = &["groups"];
/// What `cutover up` takes, because the API needs it before any file is applied.
const OIDC_FLAGS: &[(&str, &str)] = &[
    ("issuer", "set with `cutover up --oidc-issuer`: the API needs it before any file is applied"),
    ("client_id", "set with `cutover up --oidc-client-id`"),
];
const GRANT_FIELDS: &[&str] = &["role", "scope"];
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
    check_unique(cx, "role", &names);
    let declared: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
    let groups = match f.get(cx, "oidc") {
        Some(field) => oidc(cx, field.node, &field.path, &declared),
        None => Some(Vec::new()),
    };
    f.finish(cx, ACCESS_FIELDS, &[]);
    Some(AccessDecl { roles: roles?, groups: groups? })
}

/// `oidc: { groups: { GROUP: [{ role, scope }] } }`.
fn oidc(cx: &mut Cx<'_>, node: &Node, path: &str, declared: &[&str]) -> Option<Vec<DeclaredGroup>> {
    let mut f = cx.map(node, path)?;
    let groups = match f.get(cx, "groups") {
        Some(field) => {
            let Some(entries) = field.node.entries() else {
                cx.error(
                    field.node.pos,
                    &field.path,
                    "expected a map of provider groups to the roles their members get, e.g. \
                     { deployers: [{ role: deployer, scope: 'web/*' }] }",
                );
                return None;
            };
            let mut out = Some(Vec::new());
            for entry in entries {
                let grants_path = child_key(&field.path, &entry.key);
                let grants = grants(cx, &entry.value, &grants_path, declared);
                match (grants, out.as_mut()) {
                    (Some(grants), Some(out)) => {
                        out.push(DeclaredGroup { group: entry.key.clone(), grants })
                    }
                    _ => out = None,
                }
            }
            out
        }
        None => Some(Vec::new()),
    };
    f.finish(cx, OIDC_FIELDS, OIDC_FLAGS);
    groups
}

/// A group's list of `{ role, scope }`.
fn grants(cx: &mut Cx<'_>, node: &Node, path: &str, declared: &[&str]) -> Option<Vec<GroupGrant>> {
    let items = cx.list(node, path)?;
    if items.is_empty() {
        cx.error(node.pos, path, "give the group a role, e.g. [{ role: viewer }], or leave it out");
        return None;
    }
    let mut out = Some(Vec::new());
    for (i, item) in items.iter().enumerate() {
        let grant = grant(cx, item, &child_index(path, i), declared);
        match (grant, out.as_mut()) {
            (Some(grant), Some(out)) => out.push(grant),
            _ => out = None,
        }
    }
    out
}

fn grant(cx: &mut Cx<'_>, node: &Node, path: &str, declared: &[&str]) -> Option<GroupGrant> {
    let mut f = cx.map(node, path)?;
    let role_name = f.require(cx, "role", "name the role its members get, e.g. role: deployer");
    let role_name = role_name.and_then(|field| {
        let name = cx.nonempty(field.node, &field.path)?;
        if role(&name).is_none() && !declared.contains(&name.as_str()) {
            let known: Vec<&str> =
                ROLES.iter().map(|r| r.name).chain(declared.iter().copied()).collect();
            let hint = suggest(&name, known.iter().copied())
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            cx.error(
                field.node.pos,
                &field.path,
                format!(
                    "no role {}; {hint}the roles are {} (built in, or declared in access.roles)",
                    quote(&name),
                    known.join(", ")
                ),
            );
            return None;
        }
        Some(name)
    });
    let scopes = match f.get(cx, "scope") {
        Some(field) => scopes(cx, field.node, &field.path),
        None => Some(Vec::new()),
    };
    f.finish(cx, GRANT_FIELDS, &[]);
    Some(GroupGrant { role: role_name?, scopes: scopes? })
}

/// `scope: 'web/*'` or `scope: ['web/*', web]`: globs over resource names.
fn scopes(cx: &mut Cx<'_>, node: &Node, path: &str) -> Option<Vec<String>> {
    let (texts, paths): (Vec<String>, Vec<String>) = match &node.value {
        Value::Seq(_) => {
            let texts = cx.strings(node, path)?;
            let paths = (0..texts.len()).map(|i| child_index(path, i)).collect();
            (texts, paths)
        }
        _ => (vec![cx.nonempty(node, path)?], vec![path.to_string()]),
    };
    let items: Vec<&Node> = match &node.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    let mut ok = true;
    for ((text, item_path), item) in texts.iter().zip(&paths).zip(items) {
        if let Err(problem) = check_scope(text) {
            cx.error(item.pos, item_path, format!("scope {}: {problem}", quote(text)));
            ok = false;
        }
    }
    ok.then_some(texts)
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
