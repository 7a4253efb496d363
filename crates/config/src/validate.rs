//! `cutover validate`'s core: tell which kind of file a text is, check it, and turn raw bytes into
//! text with the size and UTF-8 checks done before anything else.

use crate::cutover_file;
use crate::{parse_appspec, parse_cutover_file, parse_task_definition};
use syntax::diag::{Diagnostic, Errors, Pos};
use syntax::tree::{self, Syntax, Value, check_size};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    TaskDefinition,
    AppSpec,
    CutoverFile,
    /// Recognised but not validated yet (a note says so).
    Buildspec,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::TaskDefinition => "task definition",
            FileKind::AppSpec => "AppSpec",
            FileKind::CutoverFile => "cutover file",
            FileKind::Buildspec => "buildspec",
        }
    }
}

/// What kind of file this is: by content first (`containerDefinitions`; `Resources` with
/// `version` 0.0; `load_balancers`/`services`/`deployment_groups`…; buildspec `version` 0.2 with
/// `phases`), then by name (`taskdef*.json`, `appspec.*`, `cutover.yaml`, `buildspec*.yml`).
pub fn detect_kind(file_name: &str, text: &str) -> Option<FileKind> {
    by_content(text).or_else(|| by_name(file_name))
}

fn by_content(text: &str) -> Option<FileKind> {
    let doc = tree::parse("", text, Syntax::JsonOrYaml).ok()?;
    let root = &doc.root;
    let has = |key: &str| root.get(key, false).is_some();
    let has_ci = |key: &str| root.get(key, true).is_some();
    let version = root.get("version", true).map(|n| &n.value);
    if has("containerDefinitions") {
        return Some(FileKind::TaskDefinition);
    }
    let is_zero = |v: &Value| {
        matches!(v, Value::Float(f) if *f == 0.0) || matches!(v, Value::Str(s) if s == "0.0")
    };
    if has_ci("Resources") && (version.is_none_or(is_zero)) {
        return Some(FileKind::AppSpec);
    }
    if cutover_file::TOP_FIELDS.iter().any(|k| has(k)) {
        return Some(FileKind::CutoverFile);
    }
    let is_buildspec_version = |v: &Value| {
        matches!(v, Value::Float(f) if (*f - 0.2).abs() < 1e-9 || (*f - 0.1).abs() < 1e-9)
            || matches!(v, Value::Str(s) if s == "0.2" || s == "0.1")
    };
    if has("phases") && version.is_some_and(is_buildspec_version) {
        return Some(FileKind::Buildspec);
    }
    None
}

fn by_name(file_name: &str) -> Option<FileKind> {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name).to_ascii_lowercase();
    let (stem, ext) = base.rsplit_once('.').unwrap_or((&base, ""));
    let yaml = matches!(ext, "yaml" | "yml");
    if ext == "json"
        && (stem.contains("taskdef") || stem.contains("task-def") || stem.contains("task_def"))
    {
        return Some(FileKind::TaskDefinition);
    }
    if stem == "appspec" && (yaml || ext == "json") {
        return Some(FileKind::AppSpec);
    }
    if stem == "cutover" && yaml {
        return Some(FileKind::CutoverFile);
    }
    if stem.starts_with("buildspec") && yaml {
        return Some(FileKind::Buildspec);
    }
    None
}

/// Checks a file of any kind cutover knows; returns its notes.
pub fn validate(file_name: &str, text: &str) -> Result<Vec<Diagnostic>, Errors> {
    check_size(file_name, text.len())?;
    let Some(kind) = detect_kind(file_name, text) else {
        // A file that does not parse says so more usefully than "unknown kind".
        tree::parse(file_name, text, Syntax::JsonOrYaml)?;
        return Err(Errors::one(Diagnostic::error(
            file_name,
            Pos::new(1, 1),
            "",
            "cannot tell what kind of file this is; cutover validates task definitions \
             (containerDefinitions), AppSpecs (Resources, version 0.0) and cutover.yaml files \
             (load_balancers, services, deployment_groups…); name the file taskdef.json, \
             appspec.yaml or cutover.yaml",
        )));
    };
    match kind {
        FileKind::TaskDefinition => parse_task_definition(file_name, text).map(|p| p.notes),
        FileKind::AppSpec => parse_appspec(file_name, text).map(|p| p.notes),
        FileKind::CutoverFile => parse_cutover_file(file_name, text).map(|p| p.notes),
        FileKind::Buildspec => {
            let doc = tree::parse(file_name, text, Syntax::JsonOrYaml)?;
            Ok(vec![Diagnostic::note(
                file_name,
                doc.root.pos,
                "",
                "buildspec files are recognised but not validated yet",
            )])
        }
    }
}
