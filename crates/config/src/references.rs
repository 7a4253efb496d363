//! The files a cutover.yaml names — services' task definitions, HTTPS listeners' certificates and
//! keys — with where it names them, so that a file that is not there is reported at the field that
//! names it, by `cutover validate` before anything runs and by `apply` on the server alike.
//!
//! Pure like the rest of the crate: this finds the references and words the errors; the caller
//! looks at the disk.

use syntax::diag::{Diagnostic, Pos};
use syntax::tree::{self, Node, Syntax, Value, child_index, child_key};

/// What a referenced file is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferenceKind {
    /// `services[].task_definition` naming a `taskdef.json`.
    TaskDefinition,
    /// `load_balancers[].listeners[].certificate_file` (and `certificates[].certificate_file`).
    Certificate,
    /// `load_balancers[].listeners[].key_file` (and `certificates[].key_file`).
    PrivateKey,
}

/// One file a cutover.yaml names: the path as written (relative to the cutover.yaml's directory
/// unless absolute), and the field that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReference {
    pub path: String,
    pub kind: ReferenceKind,
    pub pos: Pos,
    /// `services[0].task_definition`.
    pub field: String,
}

/// Whether a service's `task_definition` names a file (`taskdef.json`, `deploy/web.json`) rather
/// than a registered task definition (`web`, `web:3`).
pub fn names_a_file(task_definition: &str) -> bool {
    task_definition.to_ascii_lowercase().ends_with(".json") || task_definition.contains('/')
}

/// The files the cutover.yaml `text` names, in file order; empty when it does not parse (its
/// parse errors come first). A task definition named by family is not a file.
pub fn file_references(text: &str) -> Vec<FileReference> {
    let Ok(doc) = tree::parse("", text, Syntax::JsonOrYaml) else { return Vec::new() };
    let mut out = Vec::new();
    for (i, service) in items(&doc.root, "services") {
        let path = child_index("services", i);
        if let Some(node) = service.get("task_definition", false)
            && let Some(s) = node.as_str()
            && names_a_file(s)
        {
            out.push(reference(s, ReferenceKind::TaskDefinition, node, &path, "task_definition"));
        }
    }
    for (i, lb) in items(&doc.root, "load_balancers") {
        for (j, listener) in items(lb, "listeners") {
            let path = child_index(&child_key(&child_index("load_balancers", i), "listeners"), j);
            for (key, kind) in [
                ("certificate_file", ReferenceKind::Certificate),
                ("key_file", ReferenceKind::PrivateKey),
            ] {
                if let Some(node) = listener.get(key, false)
                    && let Some(s) = node.as_str()
                {
                    out.push(reference(s, kind, node, &path, key));
                }
            }
            // The roots a private ACME CA's directory is checked against.
            if let Some(acme) = listener.get("acme", false)
                && let Some(node) = acme.get("ca_bundle", false)
                && let Some(s) = node.as_str()
            {
                let at = child_key(&path, "acme");
                out.push(reference(s, ReferenceKind::Certificate, node, &at, "ca_bundle"));
            }
            // The certificates chosen by SNI, besides the default one.
            for (k, certificate) in items(listener, "certificates") {
                let path = child_index(&child_key(&path, "certificates"), k);
                for (key, kind) in [
                    ("certificate_file", ReferenceKind::Certificate),
                    ("key_file", ReferenceKind::PrivateKey),
                ] {
                    if let Some(node) = certificate.get(key, false)
                        && let Some(s) = node.as_str()
                    {
                        out.push(reference(s, kind, node, &path, key));
                    }
                }
            }
        }
    }
    out.sort_by_key(|r| r.pos);
    out
}

/// The task definitions `cutover apply` sends along with the cutover.yaml `text` (`file`): those
/// its services name that `is_file` says are files, when the whole file is valid; none otherwise
/// (the server then reports the file's errors). The file is checked whole only when a service
/// names a file: a file of thousands of targets and no such service costs its parse alone.
pub fn task_definition_files(
    file: &str,
    text: &str,
    is_file: impl Fn(&str) -> bool,
) -> Vec<String> {
    let Ok(doc) = tree::parse(file, text, Syntax::JsonOrYaml) else { return Vec::new() };
    // Every service's value, path or not: the check below keeps whatever the services of a
    // valid file name that is a file.
    let names_one = items(&doc.root, "services").any(|(_, service)| {
        service.get("task_definition", false).and_then(Node::as_str).is_some_and(&is_file)
    });
    if !names_one {
        return Vec::new();
    }
    let Ok(parsed) = crate::cutover_file::cutover_file_of(file, &doc, text) else {
        return Vec::new();
    };
    let mut out: Vec<String> =
        parsed.value.services.into_iter().map(|s| s.task_definition).collect();
    out.retain(|task_definition| is_file(task_definition));
    out
}

/// Where `services[index].task_definition` is written in the cutover.yaml `text`, when it parses:
/// for errors about a task definition named by family (`web:3` not registered).
pub fn task_definition_pos(text: &str, index: usize) -> Option<Pos> {
    let doc = tree::parse("", text, Syntax::JsonOrYaml).ok()?;
    let (_, service) = items(&doc.root, "services").nth(index)?;
    service.get("task_definition", false).map(|node| node.pos)
}

fn items<'n>(node: &'n Node, key: &str) -> impl Iterator<Item = (usize, &'n Node)> {
    let list = match node.get(key, false).map(|n| &n.value) {
        Some(Value::Seq(list)) => list.as_slice(),
        _ => &[],
    };
    list.iter().enumerate()
}

fn reference(path: &str, kind: ReferenceKind, node: &Node, at: &str, key: &str) -> FileReference {
    FileReference { path: path.to_string(), kind, pos: node.pos, field: child_key(at, key) }
}

impl FileReference {
    /// The error for a referenced file that is there but cannot be read as text (`reason`).
    pub fn unreadable(&self, cutover_file: &str, reason: &str) -> Diagnostic {
        let what = match self.kind {
            ReferenceKind::TaskDefinition => "task definition file",
            ReferenceKind::Certificate => "certificate file",
            ReferenceKind::PrivateKey => "key file",
        };
        Diagnostic::error(
            cutover_file,
            self.pos,
            &self.field,
            format!("{what} `{}` cannot be read: {reason}", self.path),
        )
    }

    /// The error for a relative path in a cutover.yaml that came without the directory it is
    /// relative to (sent to the API by something other than `cutover apply -f`).
    pub fn relative_without_directory(&self, cutover_file: &str) -> Diagnostic {
        let what = match self.kind {
            ReferenceKind::TaskDefinition => "task definition file",
            ReferenceKind::Certificate => "certificate file",
            ReferenceKind::PrivateKey => "key file",
        };
        Diagnostic::error(
            cutover_file,
            self.pos,
            &self.field,
            format!(
                "{what} `{}` is relative, and {cutover_file} was sent without its directory; give \
                 an absolute path, or apply with `cutover apply -f`, which sends the file's \
                 directory",
                self.path
            ),
        )
    }

    /// The error for a reference whose file is not there; `looked_at` is where it was looked for
    /// (the path resolved against the cutover.yaml's directory).
    pub fn missing(&self, cutover_file: &str, looked_at: &str) -> Diagnostic {
        let (what, advice) = match self.kind {
            ReferenceKind::TaskDefinition => (
                "task definition file",
                "fix the path (relative to this file), or name a registered task definition \
                 like `web:3` (`cutover task-definitions list`)",
            ),
            ReferenceKind::Certificate => {
                ("certificate file", "fix the path (relative to this file) to the PEM certificate")
            }
            ReferenceKind::PrivateKey => {
                ("key file", "fix the path (relative to this file) to the PEM private key")
            }
        };
        Diagnostic::error(
            cutover_file,
            self.pos,
            &self.field,
            format!("{what} `{}` does not exist (looked for {looked_at}); {advice}", self.path),
        )
    }
}
