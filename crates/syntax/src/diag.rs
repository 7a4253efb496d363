//! Diagnostics: what a parse reports, where (file, line, column, field path), and how it prints.

use std::fmt;
use std::num::NonZeroU32;

/// How serious a diagnostic is. Errors make a parse fail; notes only inform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Note,
}

/// One finding about a file.
///
/// `pos` is where in the file, always a real line and column (a [`Pos`] cannot be 0:0), so a
/// reader can always jump to it. `path` is the field path inside the document, like
/// `containerDefinitions[0].portMappings[0].containerPort`; empty when the finding is about the
/// whole file (then `pos` is where the problem shows, or 1:1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    pub file: String,
    pub pos: Pos,
    pub path: String,
    pub message: String,
    pub severity: Severity,
}

impl Diagnostic {
    /// An error about `file` at `pos`, on the field at `path` (empty for the whole file).
    pub fn error(file: &str, pos: Pos, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Error, file, pos, path, message.into())
    }

    /// A note: something accepted that the reader should know about.
    pub fn note(file: &str, pos: Pos, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Note, file, pos, path, message.into())
    }

    fn new(severity: Severity, file: &str, pos: Pos, path: &str, message: String) -> Diagnostic {
        Diagnostic { file: file.to_string(), pos, path: path.to_string(), message, severity }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// 1-based, never 0.
    pub fn line(&self) -> usize {
        self.pos.line() as usize
    }

    /// 1-based, in characters, never 0.
    pub fn column(&self) -> usize {
        self.pos.column() as usize
    }
}

impl fmt::Display for Diagnostic {
    /// `{file}:{line}:{column}: {path}: {message}`, with `note: ` in front for notes. The path
    /// segment is left out when the path is empty (a finding about the whole file).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Note {
            f.write_str("note: ")?;
        }
        write!(f, "{}:{}:{}: ", self.file, self.pos.line(), self.pos.column())?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// The errors that made a parse fail, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Errors(pub Vec<Diagnostic>);

impl Errors {
    pub fn one(diagnostic: Diagnostic) -> Errors {
        Errors(vec![diagnostic])
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

/// A parsed value and the notes (ignored fields, cutover-specific leniencies) found on the way.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed<T> {
    pub value: T,
    pub notes: Vec<Diagnostic>,
}

/// A place in a file: a 1-based line and column (in characters, as editors count them).
///
/// Neither can be 0, by construction: every diagnostic is built from a `Pos`, so none can lack a
/// position. A finding about the whole file (its size, its encoding) is at [`Pos::START`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    line: NonZeroU32,
    column: NonZeroU32,
}

impl Pos {
    /// 1:1, the start of the file.
    pub const START: Pos = Pos { line: NonZeroU32::MIN, column: NonZeroU32::MIN };

    /// Line and column from 1-based counts. Parsers count from 1; a 0 (which none produces) is
    /// taken as 1 rather than making a position that points nowhere.
    pub fn new(line: usize, column: usize) -> Pos {
        let one_based = |n: usize| {
            NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
        };
        Pos { line: one_based(line), column: one_based(column) }
    }

    pub fn line(self) -> u32 {
        self.line.get()
    }

    pub fn column(self) -> u32 {
        self.column.get()
    }
}

impl Default for Pos {
    fn default() -> Pos {
        Pos::START
    }
}

/// The closest candidate to a misspelt name, if one is close enough to be what was meant.
///
/// Matches ignoring case and `_`/`-` first (`ContainerPort`, `container_port` → `containerPort`),
/// then by edit distance: at most one edit for short names, a third of the length for longer ones.
pub fn suggest<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
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
    // Names compared here are field names; anything long is not a typo of one.
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
    fn suggestions_catch_typos_case_and_separators() {
        let known = ["containerPort", "hostPort", "protocol"];
        assert_eq!(suggest("contianerPort", known), Some("containerPort"));
        assert_eq!(suggest("ContainerPort", known), Some("containerPort"));
        assert_eq!(suggest("container_port", known), Some("containerPort"));
        assert_eq!(suggest("protocl", known), Some("protocol"));
        assert_eq!(suggest("memory", known), None);
    }

    #[test]
    fn notes_and_empty_paths_render() {
        let note = Diagnostic::note("a.json", Pos::new(2, 5), "x", "ignored");
        assert_eq!(note.to_string(), "note: a.json:2:5: x: ignored");
        let whole = Diagnostic::error("a.json", Pos::START, "", "too big");
        assert_eq!(whole.to_string(), "a.json:1:1: too big");
        assert_eq!(Pos::new(0, 0), Pos::START);
    }
}
