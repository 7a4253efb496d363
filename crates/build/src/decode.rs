//! Typed reading of a positioned tree: each getter checks one value, reports a diagnostic at its
//! position with its field path when it is wrong, and lets the caller go on, so one parse reports
//! every mistake in a file.

use spec::{Diagnostic, Errors, Parsed, Severity};

use crate::yaml::{Entry, Node, Pos, Value, child_key};

/// Most errors reported for one file; the rest are counted in a last line.
pub const ERRORS_MAX: usize = 50;

pub(crate) struct Cx<'f> {
    pub file: &'f str,
    errors: Vec<Diagnostic>,
    notes: Vec<Diagnostic>,
}

pub(crate) fn diagnostic(
    severity: Severity,
    file: &str,
    pos: Pos,
    path: &str,
    message: impl Into<String>,
) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        line: pos.line,
        column: pos.column,
        path: path.to_string(),
        message: message.into(),
        severity,
    }
}

impl<'f> Cx<'f> {
    pub fn new(file: &'f str) -> Cx<'f> {
        Cx { file, errors: Vec::new(), notes: Vec::new() }
    }

    pub fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.errors.push(diagnostic(Severity::Error, self.file, pos, path, message));
    }

    pub fn note(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.notes.push(diagnostic(Severity::Note, self.file, pos, path, message));
    }

    pub fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// The value with its notes, or every error in file order.
    pub fn finish<T>(self, value: Option<T>) -> Result<Parsed<T>, Errors> {
        let Cx { file, mut errors, mut notes } = self;
        match value {
            Some(value) if errors.is_empty() => {
                notes.sort_by_key(|d| (d.line, d.column));
                Ok(Parsed { value, notes })
            }
            _ => {
                if errors.is_empty() {
                    errors.push(diagnostic(
                        Severity::Error,
                        file,
                        Pos::UNKNOWN,
                        "",
                        "invalid file",
                    ));
                }
                errors.sort_by_key(|d| (d.line, d.column));
                errors.dedup();
                if errors.len() > ERRORS_MAX {
                    let more = errors.len() - ERRORS_MAX;
                    errors.truncate(ERRORS_MAX);
                    errors.push(diagnostic(
                        Severity::Error,
                        file,
                        Pos::UNKNOWN,
                        "",
                        format!("{more} more errors not shown; fix these first"),
                    ));
                }
                Err(Errors(errors))
            }
        }
    }

    /// How a value reads in a message: `string "x"`, `integer 3`, `list`, `nothing (null)`.
    pub fn describe(node: &Node) -> String {
        match &node.value {
            Value::Null => "nothing (null)".to_string(),
            Value::Bool(b) => format!("boolean {b}"),
            Value::Int(i) => format!("integer {i}"),
            Value::Float(_) => format!("number {}", node.raw),
            Value::Str(s) => format!("string {}", quote(s)),
            Value::Seq(_) => "list".to_string(),
            Value::Map(_) => "map".to_string(),
        }
    }

    pub fn type_error(&mut self, node: &Node, path: &str, expected: &str) {
        let message = format!("expected {expected}, found {}", Cx::describe(node));
        self.error(node.pos, path, message);
    }

    /// A string value; numbers and booleans are taken as written (`TAG: 1.10` is `"1.10"`), as
    /// CodeBuild reads them.
    pub fn text(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(_) | Value::Int(_) | Value::Float(_) => Some(node.raw.clone()),
            _ => {
                self.type_error(node, path, "a string");
                None
            }
        }
    }

    /// A string that is not blank.
    pub fn nonempty(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.text(node, path)?;
        if s.trim().is_empty() {
            self.error(node.pos, path, "must not be empty");
            return None;
        }
        Some(s)
    }

    pub fn list<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.type_error(node, path, "a list");
                None
            }
        }
    }

    /// A list of non-empty strings, or one string standing for a list of one (CodeBuild reads
    /// `files: imageDetail.json` that way). Each item comes with its position and path.
    pub fn texts_or_one(&mut self, node: &Node, path: &str) -> Option<Vec<(String, Pos, String)>> {
        if node.is_scalar() && !matches!(node.value, Value::Null) {
            return self.nonempty(node, path).map(|s| vec![(s, node.pos, path.to_string())]);
        }
        let items = self.list(node, path)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            match self.nonempty(item, &item_path) {
                Some(s) => out.push((s, item.pos, item_path)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `yes`/`no` (CodeBuild's spelling) or `true`/`false`.
    pub fn yes_no(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) => match s.to_ascii_lowercase().as_str() {
                "yes" | "true" | "on" => Some(true),
                "no" | "false" | "off" => Some(false),
                _ => {
                    self.error(node.pos, path, format!("expected yes or no, found {}", quote(s)));
                    None
                }
            },
            _ => {
                self.type_error(node, path, "yes or no");
                None
            }
        }
    }

    pub fn map<'n>(&mut self, node: &'n Node, path: &str) -> Option<Fields<'n>> {
        match &node.value {
            Value::Map(entries) => Some(Fields {
                pos: node.pos,
                path: path.to_string(),
                entries,
                used: vec![false; entries.len()],
            }),
            _ => {
                self.type_error(node, path, "a map");
                None
            }
        }
    }
}

/// A string for a message, shortened if long.
pub(crate) fn quote(s: &str) -> String {
    const SHOWN_MAX: usize = 60;
    if s.chars().count() > SHOWN_MAX {
        let head: String = s.chars().take(SHOWN_MAX).collect();
        format!("{head:?}…")
    } else {
        format!("{s:?}")
    }
}

/// The fields of a map being read; keys not taken by the end are reported by [`Fields::finish`].
pub(crate) struct Fields<'n> {
    pub pos: Pos,
    pub path: String,
    entries: &'n [Entry],
    used: Vec<bool>,
}

/// One field: its value, the path of that value and where its key was written.
pub(crate) struct Field<'n> {
    pub node: &'n Node,
    pub path: String,
    pub key_pos: Pos,
}

/// How to treat a key that is not among the fields a map reads.
pub(crate) enum Other<'a> {
    /// Accepted, with a note saying why it changes nothing.
    Noted(&'a str, &'a str),
    /// Known to belong elsewhere; the advice says where.
    Misplaced(&'a str, &'a str),
}

impl<'n> Fields<'n> {
    /// The field `key`, if written (an explicit `null` included).
    pub fn get(&mut self, key: &str) -> Option<Field<'n>> {
        let i = self.entries.iter().position(|e| e.key == key)?;
        self.used[i] = true;
        let e = &self.entries[i];
        Some(Field { node: &e.value, path: child_key(&self.path, &e.key), key_pos: e.key_pos })
    }

    /// The field `key`, or an error at the map saying it is missing (unless a misspelling of it
    /// is there, which `finish` reports with a suggestion).
    pub fn require(&mut self, cx: &mut Cx<'_>, key: &str, advice: &str) -> Option<Field<'n>> {
        let field = self.get(key);
        let misspelt = self
            .entries
            .iter()
            .zip(&self.used)
            .any(|(e, used)| !used && suggest(&e.key, [key]).is_some());
        if field.is_none() && !misspelt {
            let mut message = format!("missing required field `{key}`");
            if !advice.is_empty() {
                message.push_str("; ");
                message.push_str(advice);
            }
            cx.error(self.pos, &child_key(&self.path, key), message);
        }
        field
    }

    /// Reports every key not read: notes for the accepted-but-ignored ones, errors with a
    /// suggestion for the rest.
    pub fn finish(self, cx: &mut Cx<'_>, known: &[&str], others: &[Other<'_>]) {
        for (entry, used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let path = child_key(&self.path, &entry.key);
            let other = others.iter().find(|o| match o {
                Other::Noted(k, _) | Other::Misplaced(k, _) => *k == entry.key,
            });
            match other {
                Some(Other::Noted(_, reason)) => {
                    cx.note(entry.key_pos, &path, format!("accepted, {reason}"));
                    continue;
                }
                Some(Other::Misplaced(_, advice)) => {
                    cx.error(
                        entry.key_pos,
                        &path,
                        format!("unknown field `{}` here; {advice}", entry.key),
                    );
                    continue;
                }
                None => {}
            }
            let noted = others.iter().filter_map(|o| match o {
                Other::Noted(k, _) => Some(*k),
                Other::Misplaced(..) => None,
            });
            let candidates: Vec<&str> = known.iter().copied().chain(noted).collect();
            let mut message = format!("unknown field `{}`", entry.key);
            match suggest(&entry.key, candidates.iter().copied()) {
                Some(s) if s.eq_ignore_ascii_case(&entry.key) => message
                    .push_str(&format!("; did you mean `{s}`? (field names are case-sensitive)")),
                Some(s) => message.push_str(&format!("; did you mean `{s}`?")),
                None => message.push_str(&format!("; expected one of: {}", candidates.join(", "))),
            }
            cx.error(entry.key_pos, &path, message);
        }
    }
}

/// The closest candidate to a misspelt name, if one is close enough to be what was meant:
/// equal ignoring case and `_`/`-` (`pre-build` → `pre_build`), else within a small edit
/// distance.
pub(crate) fn suggest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let normal = |s: &str| -> String {
        s.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
    };
    let word_normal = normal(word);
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        if candidate == word {
            continue;
        }
        let distance = if normal(candidate) == word_normal {
            0
        } else {
            edit_distance(&word.to_lowercase(), &candidate.to_lowercase())
        };
        if best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    let threshold = (word.chars().count() / 3).max(1);
    best.filter(|(d, _)| *d <= threshold).map(|(_, c)| c)
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Field names are short; anything long is not a typo of one.
    if a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

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
