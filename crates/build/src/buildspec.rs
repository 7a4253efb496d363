//! `buildspec.yml` version 0.2, parsed strictly: every key CodeBuild defines is read or accepted
//! with a note that says what cutover does instead; anything else is an error with the closest
//! known name. Pure: takes text, returns a [`BuildSpec`] or diagnostics.

use std::fmt;

use spec::syntax::{
    Cx, Field, Fields, Format, Node, Other, Pos, Value, YamlOptions, child_key, quote,
};
use spec::{Diagnostic, Errors, Parsed};

use model::glob::Glob;

/// `spec`'s YAML reader with a buildspec's advice, and without hex, octal, `.inf` and `.nan`
/// numbers: CodeBuild reads those as text.
pub(crate) const YAML: YamlOptions = YamlOptions {
    one_document: "a buildspec is one document",
    nesting: "a buildspec needs far fewer",
    colon_hint: "a command containing `: ` must be quoted (wrap the whole command in '…'), or \
                 the indentation is off",
    recursion_hint: None,
    block_scalar_hint: None,
    tag_advice: "write plain YAML values",
    alias_aside: "",
    hex_octal_inf: false,
    path_steps_max: usize::MAX,
};

/// A decoding context that reads values as CodeBuild does (`TAG: 1.10` is the text `1.10`).
pub(crate) fn cx(file: &str) -> Cx<'_> {
    let mut cx = Cx::new(file, Format::Yaml);
    cx.as_written = true;
    cx
}

/// A parsed buildspec.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildSpec {
    /// `run-as`: accepted and kept; commands run as the user that runs cutover.
    pub run_as: Option<String>,
    pub env: Env,
    pub phases: Phases,
    pub artifacts: Option<Artifacts>,
}

/// The `env` section.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Env {
    pub shell: Shell,
    /// `env.variables`, in file order, values exactly as written (`$PATH` is not expanded).
    pub variables: Vec<(String, String)>,
    /// `env.parameter-store`: names the build expects; cutover cannot read AWS Systems Manager,
    /// so the caller supplies these as secret variables.
    pub parameter_store: Vec<(String, String)>,
    /// `env.secrets-manager`: as `parameter_store`.
    pub secrets_manager: Vec<(String, String)>,
    /// `env.exported-variables`: captured at the end of the build.
    pub exported_variables: Vec<String>,
    pub git_credential_helper: bool,
}

impl Env {
    /// Names whose values come from a secret store in AWS; the runner masks them in logs.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.parameter_store.iter().chain(&self.secrets_manager).map(|(k, _)| k.as_str())
    }
}

/// `env.shell`. CodeBuild's Linux images run `/bin/sh` as bash, so bash is the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Shell {
    #[default]
    Bash,
    Sh,
}

impl Shell {
    pub fn program(self) -> &'static str {
        match self {
            Shell::Bash => "bash",
            Shell::Sh => "sh",
        }
    }
}

/// The phases of a build, in the order they run. UPLOAD_ARTIFACTS is not written in a buildspec
/// but is a phase of every build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PhaseType {
    Install,
    PreBuild,
    Build,
    PostBuild,
    UploadArtifacts,
}

impl PhaseType {
    /// The phases that run commands, in order.
    pub const COMMAND_PHASES: [PhaseType; 4] =
        [PhaseType::Install, PhaseType::PreBuild, PhaseType::Build, PhaseType::PostBuild];
    pub const ALL: [PhaseType; 5] = [
        PhaseType::Install,
        PhaseType::PreBuild,
        PhaseType::Build,
        PhaseType::PostBuild,
        PhaseType::UploadArtifacts,
    ];

    /// CodeBuild's name: `INSTALL`, `PRE_BUILD`, …, `UPLOAD_ARTIFACTS`.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseType::Install => "INSTALL",
            PhaseType::PreBuild => "PRE_BUILD",
            PhaseType::Build => "BUILD",
            PhaseType::PostBuild => "POST_BUILD",
            PhaseType::UploadArtifacts => "UPLOAD_ARTIFACTS",
        }
    }

    /// The key under `phases:`; `None` for UPLOAD_ARTIFACTS.
    pub fn key(self) -> Option<&'static str> {
        match self {
            PhaseType::Install => Some("install"),
            PhaseType::PreBuild => Some("pre_build"),
            PhaseType::Build => Some("build"),
            PhaseType::PostBuild => Some("post_build"),
            PhaseType::UploadArtifacts => None,
        }
    }
}

impl fmt::Display for PhaseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The four command phases; a phase not written is `None`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Phases {
    pub install: Option<Phase>,
    pub pre_build: Option<Phase>,
    pub build: Option<Phase>,
    pub post_build: Option<Phase>,
}

impl Phases {
    pub fn get(&self, phase: PhaseType) -> Option<&Phase> {
        match phase {
            PhaseType::Install => self.install.as_ref(),
            PhaseType::PreBuild => self.pre_build.as_ref(),
            PhaseType::Build => self.build.as_ref(),
            PhaseType::PostBuild => self.post_build.as_ref(),
            PhaseType::UploadArtifacts => None,
        }
    }

    fn slot(&mut self, phase: PhaseType) -> Option<&mut Option<Phase>> {
        match phase {
            PhaseType::Install => Some(&mut self.install),
            PhaseType::PreBuild => Some(&mut self.pre_build),
            PhaseType::Build => Some(&mut self.build),
            PhaseType::PostBuild => Some(&mut self.post_build),
            PhaseType::UploadArtifacts => None,
        }
    }
}

/// One phase.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Phase {
    pub commands: Vec<Command>,
    /// Run after `commands`, even when one of them failed.
    pub finally: Vec<Command>,
    /// `None`: CodeBuild's default transition for this phase (see the runner).
    pub on_failure: Option<OnFailure>,
    pub run_as: Option<String>,
    /// `install.runtime-versions`: kept for display; cutover uses the host's tools.
    pub runtime_versions: Vec<(String, String)>,
}

/// One command, with the line it was written on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub text: String,
    pub line: usize,
}

/// `on-failure`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// Abort the build after this phase: no later phase, no artifact upload.
    Abort,
    /// Go on to the next phase as if this one succeeded (the build still ends FAILED).
    Continue,
    /// Run the phase again, up to `count` more times, while the failed attempt's output matches
    /// `pattern` (`RETRY` = 3 times, `.*`). Once retries are used up, the default transition of
    /// the phase applies.
    Retry { count: u32, pattern: String },
}

/// Most retries `RETRY-<count>` may ask for (CodeBuild's bound).
pub const RETRY_COUNT_MAX: u32 = 100;

/// `artifacts` (and each entry of `secondary-artifacts`).
#[derive(Clone, Debug, PartialEq)]
pub struct Artifacts {
    /// At least one pattern, relative to `base_directory` (or the source directory).
    pub files: Vec<Glob>,
    /// Written as in the file; the runner expands it in the build's shell (`app-$(date +%F)`).
    pub name: Option<String>,
    /// Relative to the source directory; a pattern matches several directories.
    pub base_directory: Option<Glob>,
    pub discard_paths: bool,
    pub exclude_paths: Vec<Glob>,
    /// Identifier → artifact, in file order. Always empty inside a secondary artifact.
    pub secondary: Vec<(String, Artifacts)>,
}

/// True when a variable name looks like it holds a secret (`DB_PASSWORD`, `GITHUB_TOKEN`,
/// `API_KEY`…); the runner masks such values in logs.
pub fn looks_secret(name: &str) -> bool {
    const WORDS: [&str; 10] = [
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "PASSPHRASE",
        "TOKEN",
        "API_KEY",
        "APIKEY",
        "PRIVATE_KEY",
        "ACCESS_KEY",
        "CREDENTIAL",
    ];
    let upper = name.to_ascii_uppercase();
    WORDS.iter().any(|w| upper.contains(w))
}

/// Parses a buildspec. `file` names it in diagnostics; notes report keys that are accepted but
/// change nothing in cutover (`run-as`, `parameter-store`, `cache`, `reports`…).
pub fn parse_buildspec(file: &str, text: &str) -> Result<Parsed<BuildSpec>, Errors> {
    let one = |pos: Pos, path: &str, message: String| {
        Errors::one(Diagnostic::error(file, pos, path, message))
    };
    spec::check_file_size(file, text.len() as u64)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(one(
            Pos::new(1, 1),
            "",
            "the file is empty; a buildspec starts with `version: 0.2` and has `phases:`".into(),
        ));
    }
    let root =
        spec::syntax::parse_yaml_with(text, &YAML).map_err(|e| one(e.pos, &e.path, e.message))?;
    let mut cx = cx(file);
    let spec = read_root(&mut cx, &root);
    cx.finish(spec)
}

const TOP_KEYS: [&str; 7] = ["version", "run-as", "env", "phases", "artifacts", "cache", "reports"];

fn read_root(cx: &mut Cx<'_>, root: &Node) -> Option<BuildSpec> {
    if matches!(root.value, Value::Null) {
        cx.error(root.pos, "", "the file has no content; a buildspec starts with `version: 0.2`");
        return None;
    }
    let mut f = cx.map(root, "")?;
    let version_ok = read_version(cx, &mut f);
    let run_as = f.field(cx, "run-as").and_then(|field| noted_text(cx, &field, RUN_AS_NOTE));
    let env = match f.field(cx, "env") {
        Some(field) if !matches!(field.node.value, Value::Null) => read_env(cx, &field),
        _ => Some(Env::default()),
    };
    let phases = match f.require(cx, "phases", "add `phases:` with at least a `build:` phase") {
        Some(field) => read_phases(cx, &field),
        None => None,
    };
    let artifacts = match f.field(cx, "artifacts") {
        Some(field) => read_artifacts(cx, &field, true).map(Some),
        None => Some(None),
    };
    if let Some(field) = f.field(cx, "cache") {
        read_cache(cx, &field);
    }
    if let Some(field) = f.field(cx, "reports") {
        read_reports(cx, &field);
    }
    f.finish_with(
        cx,
        &TOP_KEYS,
        &[
            Other::Noted("proxy", "ignored: cutover uploads artifacts and keeps logs itself"),
            Other::Noted(
                "batch",
                "ignored: batch builds are not supported; the phases run as one build",
            ),
            Other::Misplaced("install", PHASE_ADVICE),
            Other::Misplaced("pre_build", PHASE_ADVICE),
            Other::Misplaced("build", PHASE_ADVICE),
            Other::Misplaced("post_build", PHASE_ADVICE),
            Other::Misplaced("commands", "commands go under a phase, such as `phases:` → `build:`"),
            Other::Misplaced("finally", "`finally` goes under a phase, next to its `commands`"),
            Other::Misplaced("on-failure", "`on-failure` goes under a phase"),
            Other::Misplaced("files", ARTIFACTS_ADVICE),
            Other::Misplaced("base-directory", ARTIFACTS_ADVICE),
            Other::Misplaced("discard-paths", ARTIFACTS_ADVICE),
            Other::Misplaced("exclude-paths", ARTIFACTS_ADVICE),
            Other::Misplaced("secondary-artifacts", ARTIFACTS_ADVICE),
            Other::Misplaced("name", ARTIFACTS_ADVICE),
            Other::Misplaced("variables", ENV_ADVICE),
            Other::Misplaced("shell", ENV_ADVICE),
            Other::Misplaced("exported-variables", ENV_ADVICE),
            Other::Misplaced("parameter-store", ENV_ADVICE),
            Other::Misplaced("secrets-manager", ENV_ADVICE),
        ],
    );
    if !version_ok {
        return None;
    }
    Some(BuildSpec { run_as, env: env?, phases: phases?, artifacts: artifacts? })
}

const PHASE_ADVICE: &str = "phases go under `phases:` (indent it below `phases:`)";
const ARTIFACTS_ADVICE: &str =
    "it belongs under `artifacts:`; indent it below `artifacts:` (two spaces)";
const ENV_ADVICE: &str = "it belongs under `env:`; indent it below `env:`";
const RUN_AS_NOTE: &str = "ignored: commands run as the user that runs cutover";

fn read_version(cx: &mut Cx<'_>, f: &mut Fields<'_>) -> bool {
    let Some(field) = f.require(cx, "version", "add `version: 0.2` at the top") else {
        return false;
    };
    let raw = match &field.node.value {
        Value::Float(_) | Value::Str(_) => field.node.raw.trim().to_string(),
        _ => {
            cx.type_error(field.node, &field.path, "0.2");
            return false;
        }
    };
    match raw.as_str() {
        "0.2" => true,
        "0.1" => {
            cx.error(
                field.node.pos,
                &field.path,
                "version 0.1 runs every command in its own shell and is not supported; write \
                 `version: 0.2` (variables and `cd` then carry over between commands)",
            );
            false
        }
        other => {
            cx.error(
                field.node.pos,
                &field.path,
                format!("unsupported buildspec version {}; write `version: 0.2`", quote(other)),
            );
            false
        }
    }
}

/// A text value that is accepted and noted (`run-as`).
fn noted_text(cx: &mut Cx<'_>, field: &Field<'_>, note: &str) -> Option<String> {
    let value = cx.nonempty_text(field.node, &field.path)?;
    cx.note(field.key_pos, &field.path, format!("accepted, {note}"));
    Some(value)
}

fn read_env(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<Env> {
    let mut f = cx.map(field.node, &field.path)?;
    let errors_before = cx.error_count();
    let mut env = Env::default();
    if let Some(field) = f.field(cx, "shell") {
        env.shell = read_shell(cx, &field).unwrap_or_default();
    }
    if let Some(field) = f.field(cx, "variables") {
        env.variables = read_variables(cx, &field, true);
    }
    for (key, store) in [
        ("parameter-store", "AWS Systems Manager Parameter Store"),
        ("secrets-manager", "AWS Secrets Manager"),
    ] {
        let Some(field) = f.field(cx, key) else { continue };
        let vars = read_variables(cx, &field, false);
        if !vars.is_empty() {
            let names: Vec<String> = vars.iter().map(|(k, _)| format!("`{k}`")).collect();
            cx.note(
                field.key_pos,
                &field.path,
                format!(
                    "accepted, but {store} is not available in cutover: give {} to cutover as \
                     secret build variables (same names); they are masked in the log",
                    names.join(", ")
                ),
            );
        }
        if key == "parameter-store" {
            env.parameter_store = vars;
        } else {
            env.secrets_manager = vars;
        }
    }
    if let Some(field) = f.field(cx, "exported-variables") {
        env.exported_variables = read_exported(cx, &field, &env);
    }
    if let Some(field) = f.field(cx, "git-credential-helper")
        && let Some(on) = cx.yes_no(field.node, &field.path)
    {
        env.git_credential_helper = on;
        if on {
            cx.note(
                field.key_pos,
                &field.path,
                "accepted, ignored: git runs with the credentials of the user that runs cutover",
            );
        }
    }
    f.finish_with(
        cx,
        &[
            "shell",
            "variables",
            "parameter-store",
            "secrets-manager",
            "exported-variables",
            "git-credential-helper",
        ],
        &[],
    );
    (cx.error_count() == errors_before).then_some(env)
}

fn read_shell(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<Shell> {
    let s = cx.nonempty_text(field.node, &field.path)?;
    match s.as_str() {
        "bash" | "/bin/bash" => Some(Shell::Bash),
        "sh" | "/bin/sh" => Some(Shell::Sh),
        "powershell.exe" | "cmd.exe" | "pwsh.exe" => {
            cx.error(
                field.node.pos,
                &field.path,
                format!(
                    "`{s}` is a Windows shell; cutover runs builds on Linux: write `shell: bash` \
                     or `shell: /bin/sh`"
                ),
            );
            None
        }
        _ => {
            cx.error(
                field.node.pos,
                &field.path,
                format!("unsupported shell {}; write `bash` or `/bin/sh`", quote(&s)),
            );
            None
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_name(cx: &mut Cx<'_>, name: &str, pos: Pos, path: &str) -> bool {
    if !valid_name(name) {
        cx.error(
            pos,
            path,
            format!(
                "{} is not a shell variable name; use letters, digits and `_`, not starting with \
                 a digit",
                quote(name)
            ),
        );
        return false;
    }
    for prefix in ["CODEBUILD_", "CUTOVER_"] {
        if name.starts_with(prefix) {
            cx.error(
                pos,
                path,
                format!(
                    "names starting with `{prefix}` are reserved for the variables the build \
                     runner sets; rename `{name}`"
                ),
            );
            return false;
        }
    }
    true
}

/// `env.variables` (`plain`: values are plain text) or a secret store's name → reference map.
fn read_variables(cx: &mut Cx<'_>, field: &Field<'_>, plain: bool) -> Vec<(String, String)> {
    let Some(entries) = (match &field.node.value {
        Value::Map(entries) => Some(entries),
        _ => {
            cx.type_error(field.node, &field.path, "a map of NAME: value");
            None
        }
    }) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let path = child_key(&field.path, &entry.key);
        if !check_name(cx, &entry.key, entry.key_pos, &path) {
            continue;
        }
        if matches!(entry.value.value, Value::Null) {
            cx.error(
                entry.key_pos,
                &path,
                format!(
                    "`{}` has no value; write `{}: \"\"` for an empty one",
                    entry.key, entry.key
                ),
            );
            continue;
        }
        let Some(value) = cx.text(&entry.value, &path) else { continue };
        if plain && looks_secret(&entry.key) && !value.is_empty() {
            cx.note(
                entry.key_pos,
                &path,
                format!(
                    "`{}` looks like a secret, but env.variables is plain text in the repository; \
                     give it to cutover as a secret build variable instead (its value is masked \
                     in the log either way)",
                    entry.key
                ),
            );
        }
        out.push((entry.key.clone(), value));
    }
    out
}

fn read_exported(cx: &mut Cx<'_>, field: &Field<'_>, env: &Env) -> Vec<String> {
    let Some(items) = cx.list(field.node, &field.path) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("{}[{i}]", field.path);
        let Some(name) = cx.nonempty_text(item, &path) else { continue };
        if !valid_name(&name) {
            check_name(cx, &name, item.pos, &path);
            continue;
        }
        if name.starts_with("AWS_") {
            cx.error(
                item.pos,
                &path,
                format!("variables starting with `AWS_` cannot be exported; rename `{name}`"),
            );
            continue;
        }
        if env.secret_names().any(|s| s == name) {
            cx.error(
                item.pos,
                &path,
                format!(
                    "`{name}` comes from a secret store and secrets cannot be exported; export a \
                     value derived from it under another name if a later stage needs one"
                ),
            );
            continue;
        }
        if out.contains(&name) {
            cx.error(item.pos, &path, format!("`{name}` is listed twice; keep one"));
            continue;
        }
        out.push(name);
    }
    out
}

fn read_phases(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<Phases> {
    if matches!(field.node.value, Value::Null) {
        cx.error(
            field.key_pos,
            &field.path,
            "`phases` is empty; add a `build:` phase with `commands:`",
        );
        return None;
    }
    let mut f = cx.map(field.node, &field.path)?;
    let errors_before = cx.error_count();
    let mut phases = Phases::default();
    for phase in PhaseType::COMMAND_PHASES {
        let Some(key) = phase.key() else { continue };
        let Some(field) = f.field(cx, key) else { continue };
        let parsed = read_phase(cx, &field, phase);
        if let Some(slot) = phases.slot(phase) {
            *slot = parsed;
        }
    }
    f.finish_with(cx, &["install", "pre_build", "build", "post_build"], &[]);
    (cx.error_count() == errors_before).then_some(phases)
}

fn read_phase(cx: &mut Cx<'_>, field: &Field<'_>, phase: PhaseType) -> Option<Phase> {
    let needs_commands = phase != PhaseType::Install;
    if matches!(field.node.value, Value::Null) {
        cx.error(
            field.key_pos,
            &field.path,
            "the phase is empty; add `commands:` with a list of commands, or remove the phase",
        );
        return None;
    }
    let mut f = cx.map(field.node, &field.path)?;
    f.pos = field.key_pos;
    let errors_before = cx.error_count();
    let mut out = Phase::default();
    if let Some(field) = f.field(cx, "run-as") {
        out.run_as = noted_text(cx, &field, RUN_AS_NOTE);
    }
    if let Some(field) = f.field(cx, "on-failure") {
        out.on_failure = read_on_failure(cx, &field);
    }
    if phase == PhaseType::Install
        && let Some(field) = f.field(cx, "runtime-versions")
    {
        out.runtime_versions = read_runtime_versions(cx, &field);
    }
    let commands = if needs_commands {
        f.require(cx, "commands", "add `commands:` with a list of commands")
    } else {
        f.field(cx, "commands")
    };
    if let Some(field) = commands {
        out.commands = read_commands(cx, &field);
    }
    if let Some(field) = f.field(cx, "finally") {
        out.finally = read_commands(cx, &field);
    }
    let mut others = vec![];
    if phase != PhaseType::Install {
        others.push(Other::Misplaced(
            "runtime-versions",
            "only the `install` phase has `runtime-versions`",
        ));
    }
    f.finish_with(
        cx,
        &["run-as", "on-failure", "runtime-versions", "commands", "finally"],
        &others,
    );
    (cx.error_count() == errors_before).then_some(out)
}

fn read_runtime_versions(cx: &mut Cx<'_>, field: &Field<'_>) -> Vec<(String, String)> {
    let Value::Map(entries) = &field.node.value else {
        cx.type_error(field.node, &field.path, "a map of runtime: version");
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = child_key(&field.path, &entry.key);
        if let Some(v) = cx.text(&entry.value, &path) {
            out.push((entry.key.clone(), v));
        }
    }
    let list: Vec<String> = out.iter().map(|(k, v)| format!("{k} {v}")).collect();
    cx.note(
        field.key_pos,
        &field.path,
        format!(
            "accepted, ignored: cutover builds with the tools installed on the host ({}); \
             install what the build needs in install.commands",
            if list.is_empty() { "none named".to_string() } else { list.join(", ") }
        ),
    );
    out
}

fn read_on_failure(cx: &mut Cx<'_>, field: &Field<'_>) -> Option<OnFailure> {
    let s = cx.nonempty_text(field.node, &field.path)?;
    match parse_on_failure(&s) {
        Ok(v) => Some(v),
        Err(err) => {
            cx.error(field.node.pos, &field.path, err.to_string());
            None
        }
    }
}

/// An `on-failure` value the buildspec cannot have.
#[derive(Debug, thiserror::Error)]
enum OnFailureError {
    #[error("{} must be written in capitals: `{upper}`", quote(written))]
    Lowercase { written: String, upper: String },
    #[error(
        "expected ABORT, CONTINUE, RETRY, RETRY-<count>, RETRY-<regex> or RETRY-<count>-<regex>, \
         found {}",
        quote(.0)
    )]
    Unknown(String),
    #[error("RETRY-{0} asks for {0} retries; the most is {RETRY_COUNT_MAX}")]
    TooManyRetries(String),
    #[error("the retry pattern {} is not a valid regular expression: {reason}", quote(pattern))]
    BadPattern { pattern: String, reason: String },
}

/// `ABORT`, `CONTINUE`, `RETRY`, `RETRY-<count>`, `RETRY-<regex>`, `RETRY-<count>-<regex>`.
fn parse_on_failure(s: &str) -> Result<OnFailure, OnFailureError> {
    match s {
        "ABORT" => return Ok(OnFailure::Abort),
        "CONTINUE" => return Ok(OnFailure::Continue),
        _ => {}
    }
    let Some(rest) = s.strip_prefix("RETRY") else {
        let upper = s.to_ascii_uppercase();
        if upper == "ABORT" || upper == "CONTINUE" || upper.starts_with("RETRY") {
            return Err(OnFailureError::Lowercase { written: s.to_string(), upper });
        }
        return Err(OnFailureError::Unknown(s.to_string()));
    };
    if rest.is_empty() {
        return Ok(OnFailure::Retry { count: 3, pattern: ".*".to_string() });
    }
    let Some(rest) = rest.strip_prefix('-') else {
        return Err(OnFailureError::Unknown(s.to_string()));
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let after = &rest[digits.len()..];
    let (count, pattern) = if !digits.is_empty() && (after.is_empty() || after.starts_with('-')) {
        let count: u32 = digits.parse().unwrap_or(u32::MAX);
        if count > RETRY_COUNT_MAX {
            return Err(OnFailureError::TooManyRetries(digits));
        }
        let pattern = after.strip_prefix('-').unwrap_or("");
        (count, if pattern.is_empty() { ".*" } else { pattern })
    } else {
        (3, rest)
    };
    if let Err(e) = regex::RegexBuilder::new(pattern).size_limit(1 << 20).build() {
        let reason = e.to_string().lines().last().unwrap_or("invalid").trim().to_string();
        return Err(OnFailureError::BadPattern { pattern: pattern.to_string(), reason });
    }
    Ok(OnFailure::Retry { count, pattern: pattern.to_string() })
}

fn read_commands(cx: &mut Cx<'_>, field: &Field<'_>) -> Vec<Command> {
    if matches!(field.node.value, Value::Null) {
        cx.error(
            field.key_pos,
            &field.path,
            "no commands; write them as a list: `- echo hello` on the next lines",
        );
        return Vec::new();
    }
    let Value::Seq(items) = &field.node.value else {
        if field.node.is_scalar() {
            cx.error(
                field.node.pos,
                &field.path,
                format!(
                    "expected a list of commands, found {}; write each command on its own line \
                     starting with `- `",
                    cx.describe(field.node)
                ),
            );
        } else {
            cx.type_error(field.node, &field.path, "a list of commands");
        }
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("{}[{i}]", field.path);
        match &item.value {
            Value::Null => cx.error(
                item.pos,
                &path,
                "an empty command; write the command after `- ` or remove the line",
            ),
            Value::Map(entries) => {
                let key = entries.first().map(|e| e.key.as_str()).unwrap_or("");
                cx.error(
                    item.pos,
                    &path,
                    format!(
                        "this command was read as a map because it contains `: ` (after {}); \
                         put the whole command in quotes",
                        quote(key)
                    ),
                );
            }
            Value::Seq(_) => cx.type_error(item, &path, "a command (a string)"),
            _ => {
                let text = item.raw.clone();
                if text.trim().is_empty() {
                    cx.error(
                        item.pos,
                        &path,
                        "an empty command; write a command or remove the line",
                    );
                } else {
                    out.push(Command { text, line: item.pos.line() as usize });
                }
            }
        }
    }
    out
}

const ARTIFACT_KEYS: [&str; 8] = [
    "files",
    "name",
    "base-directory",
    "discard-paths",
    "exclude-paths",
    "enable-symlinks",
    "s3-prefix",
    "secondary-artifacts",
];

fn read_artifacts(cx: &mut Cx<'_>, field: &Field<'_>, primary: bool) -> Option<Artifacts> {
    if matches!(field.node.value, Value::Null) {
        let what = if primary { "`artifacts`" } else { "this artifact" };
        cx.error(
            field.key_pos,
            &field.path,
            format!("{what} is empty; add `files:` below it (indented), or remove it"),
        );
        return None;
    }
    let mut f = cx.map(field.node, &field.path)?;
    f.pos = field.key_pos;
    let errors_before = cx.error_count();
    let advice = if primary {
        "add `files:` with the paths to keep (CodeBuild requires it even when only \
         secondary-artifacts are used)"
    } else {
        "add `files:` with the paths to keep"
    };
    let files = f.require(cx, "files", advice).map(|field| globs(cx, &field)).unwrap_or_default();
    let name = f.field(cx, "name").and_then(|field| cx.nonempty_text(field.node, &field.path));
    let base_directory = f.field(cx, "base-directory").and_then(|field| {
        let s = cx.nonempty_text(field.node, &field.path)?;
        match Glob::new(&s) {
            Ok(g) => Some(g),
            Err(err) => {
                cx.error(field.node.pos, &field.path, err.to_string());
                None
            }
        }
    });
    let discard_paths = f
        .field(cx, "discard-paths")
        .and_then(|field| cx.yes_no(field.node, &field.path))
        .unwrap_or(false);
    let exclude_paths =
        f.field(cx, "exclude-paths").map(|field| globs(cx, &field)).unwrap_or_default();
    if let Some(field) = f.field(cx, "enable-symlinks")
        && cx.yes_no(field.node, &field.path).is_some()
    {
        cx.note(
            field.key_pos,
            &field.path,
            "accepted, ignored: artifacts are plain directories, not ZIP files; a symlink to a \
             file inside the source directory is copied as that file",
        );
    }
    if let Some(field) = f.field(cx, "s3-prefix")
        && cx.text(field.node, &field.path).is_some()
    {
        cx.note(
            field.key_pos,
            &field.path,
            "accepted, ignored: cutover keeps artifacts itself, not in S3",
        );
    }
    let mut secondary = Vec::new();
    if let Some(field) = f.field(cx, "secondary-artifacts") {
        if primary {
            secondary = read_secondary(cx, &field);
        } else {
            cx.error(
                field.key_pos,
                &field.path,
                "a secondary artifact cannot have its own `secondary-artifacts`",
            );
        }
    }
    f.finish_with(cx, &ARTIFACT_KEYS, &[]);
    if cx.error_count() != errors_before {
        return None;
    }
    Some(Artifacts { files, name, base_directory, discard_paths, exclude_paths, secondary })
}

fn read_secondary(cx: &mut Cx<'_>, field: &Field<'_>) -> Vec<(String, Artifacts)> {
    let Some(entries) = (match &field.node.value {
        Value::Map(entries) => Some(entries),
        _ => {
            cx.type_error(field.node, &field.path, "a map of artifact identifier: artifact");
            None
        }
    }) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = child_key(&field.path, &entry.key);
        let id_ok = entry.key.len() <= 100
            && !entry.key.is_empty()
            && entry.key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !id_ok {
            cx.error(
                entry.key_pos,
                &path,
                format!(
                    "{} is not an artifact identifier; use up to 100 letters, digits, `_` and `-`",
                    quote(&entry.key)
                ),
            );
            continue;
        }
        let sub = Field { node: &entry.value, path, key_pos: entry.key_pos };
        if let Some(a) = read_artifacts(cx, &sub, false) {
            out.push((entry.key.clone(), a));
        }
    }
    out
}

fn globs(cx: &mut Cx<'_>, field: &Field<'_>) -> Vec<Glob> {
    let Some(items) = cx.texts_or_one(field.node, &field.path) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for (text, pos, path) in items {
        match Glob::new(&text) {
            Ok(g) => out.push(g),
            Err(err) => cx.error(pos, &path, err.to_string()),
        }
    }
    out
}

fn read_cache(cx: &mut Cx<'_>, field: &Field<'_>) {
    let Some(mut f) = cx.map(field.node, &field.path) else { return };
    f.pos = field.key_pos;
    if let Some(paths) = f.require(cx, "paths", "add `paths:` with the directories to cache") {
        let _ = cx.texts_or_one(paths.node, &paths.path);
    }
    if let Some(key) = f.field(cx, "key") {
        cx.nonempty_text(key.node, &key.path);
    }
    if let Some(keys) = f.field(cx, "fallback-keys") {
        let _ = cx.texts_or_one(keys.node, &keys.path);
    }
    if let Some(action) = f.field(cx, "action")
        && let Some(a) = cx.nonempty_text(action.node, &action.path)
        && a != "restore"
        && a != "save"
    {
        cx.error(
            action.node.pos,
            &action.path,
            format!("expected restore or save, found {}", quote(&a)),
        );
    }
    f.finish_with(cx, &["paths", "key", "fallback-keys", "action"], &[]);
    cx.note(
        field.key_pos,
        &field.path,
        "accepted, ignored: every build starts from a fresh workspace and cutover does not cache \
         paths between builds yet",
    );
}

const REPORT_FORMATS: [&str; 10] = [
    "JUNITXML",
    "CUCUMBERJSON",
    "NUNITXML",
    "NUNIT3XML",
    "TESTNGXML",
    "VISUALSTUDIOTRX",
    "CLOVERXML",
    "COBERTURAXML",
    "JACOCOXML",
    "SIMPLECOV",
];

fn read_reports(cx: &mut Cx<'_>, field: &Field<'_>) {
    let Value::Map(entries) = &field.node.value else {
        cx.type_error(field.node, &field.path, "a map of report group: report");
        return;
    };
    for entry in entries {
        let path = child_key(&field.path, &entry.key);
        let Some(mut f) = cx.map(&entry.value, &path) else { continue };
        f.pos = entry.key_pos;
        if let Some(files) = f.require(cx, "files", "add `files:` with the report files") {
            let _ = globs(cx, &files);
        }
        if let Some(dir) = f.field(cx, "base-directory") {
            cx.nonempty_text(dir.node, &dir.path);
        }
        if let Some(d) = f.field(cx, "discard-paths") {
            cx.yes_no(d.node, &d.path);
        }
        if let Some(format) = f.field(cx, "file-format")
            && let Some(s) = cx.nonempty_text(format.node, &format.path)
            && !REPORT_FORMATS.contains(&s.as_str())
        {
            cx.error(
                format.node.pos,
                &format.path,
                format!(
                    "unknown report format {}; expected one of: {}",
                    quote(&s),
                    REPORT_FORMATS.join(", ")
                ),
            );
        }
        f.finish_with(cx, &["files", "base-directory", "discard-paths", "file-format"], &[]);
    }
    cx.note(
        field.key_pos,
        &field.path,
        "accepted, ignored: test reports are not collected; list the report files under \
         `artifacts` to keep them",
    );
}

/// Renders diagnostics one per line (errors and notes), as `cutover validate` prints them.
pub fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(|d| format!("{d}\n")).collect()
}

#[cfg(test)]
mod tests {
    use spec::syntax::{Node, SyntaxError, suggest};

    use super::*;

    fn parse(text: &str) -> Result<Node, SyntaxError> {
        spec::syntax::parse_yaml_with(text, &YAML)
    }

    #[test]
    fn raw_text_survives_number_resolution() {
        let root = parse("a: 1.10\nb: '007'\nc: 0x1F\n").unwrap();
        let Value::Map(entries) = root.value else { panic!("not a map") };
        assert_eq!(entries[0].value.value, Value::Float(1.1));
        assert_eq!(entries[0].value.raw, "1.10");
        assert_eq!(entries[1].value.value, Value::Str("007".into()));
        assert_eq!(entries[1].key_pos, Pos::new(2, 1));
        // CodeBuild has no hex numbers: `0x1F` stays text.
        assert_eq!(entries[2].value.value, Value::Str("0x1F".into()));
    }

    #[test]
    fn duplicates_and_second_documents_are_errors() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.pos, Pos::new(3, 1));
        assert_eq!(e.message, "duplicate key `a` (first written on line 1); keep one");
        assert_eq!(
            parse("a: 1\n---\nb: 2\n").unwrap_err().message,
            "a second YAML document (after `---`); a buildspec is one document"
        );
    }

    #[test]
    fn suggestions_catch_separators_and_typos() {
        let phases = ["install", "pre_build", "build", "post_build"];
        assert_eq!(suggest("pre-build", phases), Some("pre_build"));
        assert_eq!(suggest("prebuild", phases), Some("pre_build"));
        assert_eq!(suggest("postbuild", phases), Some("post_build"));
        assert_eq!(suggest("instal", phases), Some("install"));
        assert_eq!(suggest("deploy", phases), None);
    }
}
