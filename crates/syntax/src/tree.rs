//! A document tree that remembers where every value and key was written, built from JSON or YAML
//! under the crate's limits, so that semantic errors found after parsing still point at a line.

use crate::diag::{Diagnostic, Errors, Pos};
use crate::{json, yaml};

/// Files larger than this are refused before any parsing.
pub const FILE_SIZE_MAX: usize = 1024 * 1024;
/// Deepest nesting of lists and maps accepted; the files cutover reads need fewer than ten.
pub const DEPTH_MAX: usize = 64;
/// Most nodes that YAML aliases may add to a document in total. Bounds "billion laughs" files,
/// whose aliases of aliases expand exponentially.
pub const ALIAS_NODES_MAX: usize = 10_000;

/// The syntax a document was written in; messages name lists and maps as it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// A value and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
    /// A scalar as written (after unquoting), so `1.10` can be read as the text `1.10` where a
    /// file format wants that; empty for lists and maps.
    pub raw: String,
}

/// A value resolved with the YAML 1.2 core schema (JSON's values are a subset).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One key of a map, where the key was written, and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

#[derive(Clone, Debug)]
pub struct Document {
    pub format: Format,
    pub root: Node,
}

impl Node {
    pub fn is_scalar(&self) -> bool {
        !matches!(self.value, Value::Seq(_) | Value::Map(_))
    }

    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value of `key` in a map, matched exactly or ignoring ASCII case.
    pub fn get(&self, key: &str, ignore_case: bool) -> Option<&Node> {
        self.entries()?
            .iter()
            .find(|e| if ignore_case { e.key.eq_ignore_ascii_case(key) } else { e.key == key })
            .map(|e| &e.value)
    }
}

/// Which syntaxes a file may be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    /// JSON only (task definitions, as ECS reads them).
    Json,
    /// JSON when the text starts with `{` or `[`, YAML otherwise.
    JsonOrYaml,
}

/// Checks the size limit first (so a huge input costs nothing), then parses.
pub fn parse(file: &str, text: &str, syntax: Syntax) -> Result<Document, Errors> {
    check_size(file, text.len())?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first = text.trim_start().chars().next();
    if first.is_none() {
        return Err(Errors::one(Diagnostic::error(file, Pos::new(1, 1), "", "the file is empty")));
    }
    let as_json = syntax == Syntax::Json || matches!(first, Some('{' | '['));
    let (format, root) = if as_json {
        (Format::Json, json::parse(text).map_err(|e| e.into_errors(file))?)
    } else {
        (Format::Yaml, yaml::parse(text).map_err(|e| e.into_errors(file))?)
    };
    if matches!(root.value, Value::Null) {
        return Err(Errors::one(Diagnostic::error(
            file,
            root.pos,
            "",
            "the file has no content (only comments or `null`)",
        )));
    }
    Ok(Document { format, root })
}

/// Refuses a file over [`FILE_SIZE_MAX`], saying its real size: call it with the length on disk
/// before reading (a reader that stops one byte past the limit would otherwise report that).
pub fn check_file_size(file: &str, len: u64) -> Result<(), Errors> {
    if len <= FILE_SIZE_MAX as u64 {
        return Ok(());
    }
    Err(Errors::one(Diagnostic::error(
        file,
        Pos::START,
        "",
        format!(
            "the file is {} ({len} bytes), more than the 1 MiB ({FILE_SIZE_MAX}-byte) limit; is \
             this the right file?",
            human_size(len)
        ),
    )))
}

pub fn check_size(file: &str, len: usize) -> Result<(), Errors> {
    check_file_size(file, len as u64)
}

/// Raw file bytes as text: refuses files over the size limit without looking at them, UTF-16
/// files by their byte-order mark, and invalid UTF-8 with the line and column of the first bad
/// byte.
pub fn text_from_bytes<'b>(file: &str, bytes: &'b [u8]) -> Result<&'b str, Errors> {
    check_size(file, bytes.len())?;
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(Errors::one(Diagnostic::error(
            file,
            Pos::new(1, 1),
            "",
            "the file is UTF-16; save it as UTF-8",
        )));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        // The prefix is valid UTF-8 by definition of valid_up_to.
        let prefix = std::str::from_utf8(valid).unwrap_or_default();
        let line = prefix.matches('\n').count() + 1;
        let column = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let byte = bytes.get(e.valid_up_to()).copied().unwrap_or_default();
        Errors::one(Diagnostic::error(
            file,
            Pos::new(line, column),
            "",
            format!(
                "the file is not valid UTF-8 (byte 0x{byte:02X} at offset {}); save it as UTF-8",
                e.valid_up_to()
            ),
        ))
    })
}

/// `1.0 MiB`, `50.0 MiB`, `2.5 GiB`: sizes above the limit, for a message.
fn human_size(len: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = len as f64 / MIB;
    if mib >= 1024.0 { format!("{:.1} GiB", mib / 1024.0) } else { format!("{mib:.1} MiB") }
}

/// A syntax error with the path of the innermost container being parsed when it happened.
#[derive(Debug)]
pub struct SyntaxError {
    pub pos: Pos,
    pub path: String,
    pub message: String,
}

impl SyntaxError {
    pub fn into_errors(self, file: &str) -> Errors {
        Errors::one(Diagnostic::error(file, self.pos, &self.path, self.message))
    }
}

/// One step of a field path.
#[derive(Clone, Debug)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Most steps of a field path shown in this crate's messages; no real file nests deeper.
pub const PATH_STEPS_SHOWN_MAX: usize = 12;

/// Renders `a.b[0].c`; keys that are not identifiers are quoted: `dockerLabels["com.x"]`.
/// Paths deeper than any real file are cut short with `…`.
pub fn render_path(segments: &[Seg], shown_max: usize) -> String {
    let mut out = String::new();
    for (i, seg) in segments.iter().enumerate() {
        if i == shown_max {
            out.push('…');
            break;
        }
        match seg {
            Seg::Key(k) => push_key(&mut out, k),
            Seg::Index(i) => push_index(&mut out, *i),
        }
    }
    out
}

/// Appends `.key` (or `key` at the root) to a rendered path.
pub fn push_key(path: &mut String, key: &str) {
    let plain =
        !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push_str(&format!("[{key:?}]"));
    }
}

/// Appends `[index]` to a rendered path.
fn push_index(path: &mut String, index: usize) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(path, "[{index}]");
}

/// `path` extended by `key`: `a.b`, or `a["b c"]` for a key that is not a plain name.
pub fn child_key(path: &str, key: &str) -> String {
    // Sized for the usual plain key at once: paths are built for every field read.
    let mut out = String::with_capacity(path.len() + key.len() + 1);
    out.push_str(path);
    push_key(&mut out, key);
    out
}

/// `path` extended by a list index: `a[3]`.
pub fn child_index(path: &str, index: usize) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    out.push_str(path);
    push_index(&mut out, index);
    out
}
